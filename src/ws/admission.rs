//! The public listener's admission limits (docs/protocol.md, "Limits"):
//! connections on this node and per IP address (over either, the upgrade
//! completes and the session closes with 4003), handshakes in flight (over
//! `--max-handshakes`, new sockets wait in the kernel's accept queue), and
//! memory shedding (over `--max-memory`, new upgrades get HTTP 503 with
//! `Retry-After`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::core::Hub;

/// The count of upgraded connections, overall and per IP.
pub(super) struct Sessions {
    live: AtomicUsize,
    max: usize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// 0: no per-IP limit.
    max_per_ip: usize,
}

/// One counted session; uncounted when dropped.
pub(super) struct SessionSlot<'a> {
    sessions: &'a Sessions,
    ip: Option<IpAddr>,
}

impl Sessions {
    pub(super) fn new(max: usize, max_per_ip: usize) -> Self {
        Self { live: AtomicUsize::new(0), max, per_ip: Mutex::new(HashMap::new()), max_per_ip }
    }

    /// A slot for a connection from `ip`, or `None` when a limit is reached.
    pub(super) fn acquire(&self, ip: IpAddr) -> Option<SessionSlot<'_>> {
        let before = self.live.fetch_add(1, Ordering::AcqRel);
        let mut slot = SessionSlot { sessions: self, ip: None };
        if before >= self.max {
            tracing::debug!(max = self.max, "connection refused: --max-connections reached");
            return None;
        }
        if self.max_per_ip > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = per_ip.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                tracing::debug!(%ip, max = self.max_per_ip, "connection refused: --max-connections-per-ip reached");
                return None;
            }
            *n += 1;
            slot.ip = Some(ip);
        }
        Some(slot)
    }
}

impl Drop for SessionSlot<'_> {
    fn drop(&mut self) {
        self.sessions.live.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut per_ip = self.sessions.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

/// What one open connection is counted as holding for `--max-memory`: its
/// task, socket state and buffers. Measured at 2.6 KiB once idle after
/// registering (BENCHMARKS.md, P6); a handshake holds its request's buffer
/// on top (1 KiB for a browser's upgrade, doubling to 16 KiB at most for a
/// head near `MAX_HEADER_BYTES`; hyper's for a request that is not an
/// upgrade), hence the margin.
pub(super) const CONNECTION_BYTES: u64 = 8 * 1024;

/// How often the bytes queued in outboxes are summed (it visits every
/// joined connection, so not on each upgrade).
const QUEUE_SAMPLE: Duration = Duration::from_millis(250);

/// What the public listener holds, by its own accounting, against
/// `--max-memory` (docs/protocol.md, "Limits"): every open connection at
/// [`CONNECTION_BYTES`], the bytes queued in the outboxes of joined
/// connections (summed every [`QUEUE_SAMPLE`]) and the frames waiting in the
/// sessions' write backlogs. It follows connections as they come and go, so
/// new upgrades are let in again as soon as the load is gone — unlike the
/// process's resident size, which the allocator keeps high after a spike.
pub(super) struct MemoryWatch {
    /// Accepted connections whose task has not ended (handshakes, sessions
    /// and closing ones).
    open: AtomicU64,
    /// Bytes of frames waiting in write backlogs.
    backlog: AtomicU64,
    /// Bytes queued in outboxes at the last sample.
    queued: AtomicU64,
    max: u64,
}

/// One open connection, counted until dropped.
pub(super) struct OpenConnection<'a>(&'a MemoryWatch);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl MemoryWatch {
    /// A watch with cap `max` bytes (0: never over).
    pub(super) fn new(max: u64) -> Self {
        Self { open: AtomicU64::new(0), backlog: AtomicU64::new(0), queued: AtomicU64::new(0), max }
    }

    /// Counts an accepted connection until the guard is dropped.
    pub(super) fn open(&self) -> OpenConnection<'_> {
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenConnection(self)
    }

    /// Connections open now.
    pub(super) fn open_connections(&self) -> u64 {
        self.open.load(Ordering::Acquire)
    }

    /// `bytes` of frames entered a write backlog.
    pub(super) fn backlog_grew(&self, bytes: usize) {
        self.backlog.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// `bytes` of frames left a write backlog (written or discarded).
    pub(super) fn backlog_shrank(&self, bytes: usize) {
        self.backlog.fetch_sub(bytes as u64, Ordering::Relaxed);
    }

    /// The bytes the listener holds by its accounting.
    pub(super) fn held(&self) -> u64 {
        let connections = self.open.load(Ordering::Acquire).saturating_mul(CONNECTION_BYTES);
        connections
            .saturating_add(self.backlog.load(Ordering::Relaxed))
            .saturating_add(self.queued.load(Ordering::Relaxed))
    }

    /// True while what the listener holds is above the cap.
    pub(super) fn over(&self) -> bool {
        self.max > 0 && self.held() > self.max
    }

    /// Sums the outbox queues of `hub`'s connections until `shutdown`;
    /// returns at once when there is no cap.
    pub(super) async fn run(&self, hub: &Hub, shutdown: CancellationToken) {
        if self.max == 0 {
            return;
        }
        let mut tick = tokio::time::interval(QUEUE_SAMPLE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while shutdown.run_until_cancelled(tick.tick()).await.is_some() {
            let queued: usize = hub.outboxes().iter().map(|o| o.queued_bytes()).sum();
            self.queued.store(queued as u64, Ordering::Relaxed);
        }
    }
}

/// Connections that have not completed their upgrade yet (TLS and the HTTP
/// request), bounded by `--max-handshakes`: the accept loop takes a permit
/// before each accept, so past the bound new sockets wait in the kernel's
/// accept queue instead of each holding a task and buffers here.
pub(super) struct Handshakes {
    permits: Arc<Semaphore>,
    in_flight: AtomicUsize,
    /// The most in flight at once since start.
    peak: AtomicUsize,
}

/// One handshake in flight, holding its permit; counted until dropped.
pub(super) struct Handshake<'a> {
    handshakes: &'a Handshakes,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Handshake<'_> {
    fn drop(&mut self) {
        self.handshakes.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Handshakes {
    pub(super) fn new(max: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(max)), in_flight: AtomicUsize::new(0), peak: AtomicUsize::new(0) }
    }

    /// The permits the accept loop takes, one per connection until its
    /// upgrade.
    pub(super) fn gate(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    /// Counts a connection accepted with `permit` until its upgrade (or its
    /// end), when the returned guard is dropped with the permit.
    pub(super) fn begin(&self, permit: Option<OwnedSemaphorePermit>) -> Handshake<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        Handshake { handshakes: self, _permit: permit }
    }

    /// Handshakes in flight now.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The most handshakes in flight at once since start.
    pub(super) fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_and_global_limits_release_on_drop() {
        let sessions = Sessions::new(3, 2);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let a1 = sessions.acquire(a).expect("a1");
        let a2 = sessions.acquire(a).expect("a2");
        assert!(sessions.acquire(a).is_none(), "third from one IP");
        let b1 = sessions.acquire(b).expect("b1");
        assert!(sessions.acquire(b).is_none(), "global limit");
        drop(a1);
        assert!(sessions.acquire(a).is_some(), "released");
        drop((a2, b1));
        assert!(sessions.per_ip.lock().expect("lock").is_empty());
    }

    #[test]
    fn memory_watch_follows_what_is_held() {
        let watch = MemoryWatch::new(2 * CONNECTION_BYTES);
        let (a, b) = (watch.open(), watch.open());
        assert!(!watch.over(), "two connections fit");
        let c = watch.open();
        assert!(watch.over(), "a third does not");
        drop(c);
        assert!(!watch.over(), "room again once it is gone");
        watch.backlog_grew(10);
        assert!(watch.over(), "backlog bytes count");
        watch.backlog_shrank(10);
        assert!(!watch.over());
        drop((a, b));
        assert_eq!(watch.held(), 0);
        assert!(!MemoryWatch::new(0).over(), "0 means no cap");
    }

    #[test]
    fn handshakes_count_until_dropped() {
        let handshakes = Handshakes::new(2);
        let a = handshakes.begin(None);
        let b = handshakes.begin(None);
        assert_eq!((handshakes.in_flight(), handshakes.peak()), (2, 2));
        drop((a, b));
        let _c = handshakes.begin(None);
        assert_eq!((handshakes.in_flight(), handshakes.peak()), (1, 2));
    }
}
