//! One task drives the pings of every connection: no timer per connection.
//!
//! Every `ping_interval` it asks each joined connection's writer to send a
//! ping; `pong_timeout` after that ping it closes the connection if it showed
//! no sign of life since (any frame from the client counts). The pings are
//! not sent all at once but one hub slice at a time, spread evenly over
//! `ping_interval - pong_timeout`: pinging 10 000 connections in one go wakes
//! 10 000 writers and then reads 10 000 pongs, a burst that held pushes back
//! by a few hundred milliseconds (BENCHMARKS.md, "The P4 tail"). Each slice
//! is checked its own `pong_timeout` after its pings. The same task expires
//! history once per interval.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::hub::Hub;
use super::outbox::Outbox;

/// Runs until `shutdown` is cancelled. `pong_timeout` is expected to be
/// shorter than `ping_interval` (the configuration checks it); if it is not,
/// pings simply follow each other with no pause.
pub async fn run(hub: Arc<Hub>, ping_interval: Duration, pong_timeout: Duration, shutdown: CancellationToken) {
    let pause = ping_interval.saturating_sub(pong_timeout);
    let slices = hub.slices().max(1) as u32;
    loop {
        let start = Instant::now();
        // Pinged slices waiting for their check, in the order they are due.
        let mut pinged: VecDeque<(Instant, Vec<Arc<Outbox>>)> = VecDeque::new();
        for slice in 0..slices {
            let at = start + pause * (slice + 1) / slices;
            if !check_due(&mut pinged, Some(at), &shutdown).await || !wait_until(&shutdown, at).await {
                return;
            }
            let outboxes = hub.slice_outboxes(slice as usize);
            for outbox in &outboxes {
                outbox.request_ping();
            }
            pinged.push_back((at + pong_timeout, outboxes));
        }
        if !check_due(&mut pinged, None, &shutdown).await {
            return;
        }
        hub.sweep();
    }
}

/// Checks the pinged slices due by `until` (all of them when `None`), each
/// at its due time; false when `shutdown` came first.
async fn check_due(
    pinged: &mut VecDeque<(Instant, Vec<Arc<Outbox>>)>,
    until: Option<Instant>,
    shutdown: &CancellationToken,
) -> bool {
    while let Some(due) = pinged.front().map(|(due, _)| *due).filter(|due| until.is_none_or(|u| *due <= u)) {
        if !wait_until(shutdown, due).await {
            return false;
        }
        if let Some((_, outboxes)) = pinged.pop_front() {
            check(&outboxes);
        }
    }
    true
}

/// Sleeps until `at`; false when `shutdown` came first.
async fn wait_until(shutdown: &CancellationToken, at: Instant) -> bool {
    shutdown.run_until_cancelled(tokio::time::sleep_until(at)).await.is_some()
}

/// Closes the connections among `outboxes` that did not answer their ping.
fn check(outboxes: &[Arc<Outbox>]) {
    let dead = outboxes.iter().filter(|o| !o.check_pong()).count();
    if dead > 0 {
        tracing::info!(dead, "closed connections that did not answer a ping");
    }
}
