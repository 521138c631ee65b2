//! One task drives the pings of every connection: no timer per connection.
//!
//! Every `ping_interval` it pings each joined connection — through the wire
//! from this task while the connection's own task is idle with nothing to
//! write (`core::wire`), else by asking that task to send it; `pong_timeout`
//! after that ping it closes the connection if it showed no sign of life
//! since (any frame from the client counts). The pings are
//! not sent all at once but one hub slice at a time, spread evenly over
//! `ping_interval - pong_timeout`: pinging 10 000 connections in one go wakes
//! 10 000 writers and then reads 10 000 pongs, a burst that held pushes back
//! by a few hundred milliseconds (BENCHMARKS.md, "The P4 tail"); a slice is
//! itself pinged a few connections at a time ([`PING_CHUNK`]). Each slice
//! is checked its own `pong_timeout` after its last ping. The same task expires
//! history once per interval.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::hub::Hub;
use super::outbox::Outbox;

/// Connections pinged at once. A slice (one hub shard's connections) is
/// pinged in chunks of this many, spread over its share of the interval:
/// each ping is a socket write (here, or by the connection's woken task)
/// and brings a pong to read, and a push arriving meanwhile waits behind
/// them. Pinging a whole slice (some 150 connections of 10 000) in one go
/// made the low-load latency's tail: P4a's p99 was 2.3 – 2.8× the floor
/// server's (which sends no pings), and 0.8 – 1.1× with pings turned off;
/// in chunks it is mostly 0.8 – 1.24× (BENCHMARKS.md).
pub(crate) const PING_CHUNK: usize = 16;

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
            // The slice's connections in chunks, spread over its share of
            // the interval; it is checked `pong_timeout` after its last chunk.
            let chunks = outboxes.len().div_ceil(PING_CHUNK).max(1) as u32;
            let step = pause / slices / chunks;
            let mut last = at;
            for (i, chunk) in outboxes.chunks(PING_CHUNK).enumerate() {
                last = at + step * i as u32;
                if !check_due(&mut pinged, Some(last), &shutdown).await || !wait_until(&shutdown, last).await {
                    return;
                }
                for outbox in chunk {
                    outbox.request_ping();
                }
            }
            pinged.push_back((last + pong_timeout, outboxes));
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
