//! One task drives the pings of every connection: no timer per connection.
//!
//! Every `ping_interval` it asks each joined connection's writer to send a
//! ping; `pong_timeout` later it closes those that showed no sign of life
//! since (any frame from the client counts). The same task expires history.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::hub::Hub;

/// Runs until `shutdown` is cancelled. `pong_timeout` is expected to be
/// shorter than `ping_interval` (the configuration checks it); if it is not,
/// pings simply follow each other with no pause.
pub async fn run(hub: Arc<Hub>, ping_interval: Duration, pong_timeout: Duration, shutdown: CancellationToken) {
    let pause = ping_interval.saturating_sub(pong_timeout);
    loop {
        if shutdown.run_until_cancelled(tokio::time::sleep(pause)).await.is_none() {
            return;
        }
        let outboxes = hub.outboxes();
        for outbox in &outboxes {
            outbox.request_ping();
        }
        if shutdown.run_until_cancelled(tokio::time::sleep(pong_timeout)).await.is_none() {
            return;
        }
        let dead = outboxes.iter().filter(|o| !o.check_pong()).count();
        if dead > 0 {
            tracing::info!(dead, "closed connections that did not answer a ping");
        }
        hub.sweep();
    }
}
