//! Log lines a peer can cause, bounded: [`LogThrottle`] lets one line through
//! per interval and carries the count of the events it held back, and
//! [`KeyRefusals`] applies it (and a counter) to refused producer keys, so
//! a flood of unauthenticated requests writes a line per interval, not one
//! per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::core::{Hub, ProducerTransport};

/// How often a refused producer key may be logged, per transport.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Lets the first event through, then at most one per `interval`; each event
/// let through reports how many events there were since the last one (itself
/// included). Lock-free; shared by reference count.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    interval: Duration,
    origin: Instant,
    /// When the next event may be let through, in ms since `origin`.
    next_ms: AtomicU64,
    /// Events since the last one let through.
    pending: AtomicU64,
}

impl LogThrottle {
    pub(crate) fn new(interval: Duration) -> Self {
        Self { interval, origin: Instant::now(), next_ms: AtomicU64::new(0), pending: AtomicU64::new(0) }
    }

    /// Records an event now: `Some(events since the last report)` when this
    /// one is to be reported, `None` when it is held back.
    pub(crate) fn hit(&self) -> Option<u64> {
        self.hit_at(Instant::now())
    }

    fn hit_at(&self, now: Instant) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let now_ms = millis(now.saturating_duration_since(self.origin));
        let next = self.next_ms.load(Ordering::Relaxed);
        if now_ms < next {
            return None;
        }
        let after = now_ms.saturating_add(millis(self.interval));
        // One caller wins the interval; the others count and go.
        self.next_ms.compare_exchange(next, after, Ordering::Relaxed, Ordering::Relaxed).ok()?;
        Some(self.pending.swap(0, Ordering::Relaxed))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Producer calls refused for a missing or wrong key on one transport: each
/// is counted in `pushgate_producer_auth_failures_total{transport}`, and a
/// WARN line is written at most once per [`REPORT_INTERVAL`] with the count
/// since the previous one. Cloning shares the throttle.
#[derive(Debug, Clone)]
pub(crate) struct KeyRefusals {
    hub: Arc<Hub>,
    transport: ProducerTransport,
    throttle: Arc<LogThrottle>,
}

impl KeyRefusals {
    pub(crate) fn new(hub: Arc<Hub>, transport: ProducerTransport) -> Self {
        Self { hub, transport, throttle: Arc::new(LogThrottle::new(REPORT_INTERVAL)) }
    }

    /// Counts one refusal, and logs it unless a line was written for this
    /// transport less than [`REPORT_INTERVAL`] ago.
    pub(crate) fn refused(&self) {
        self.hub.metrics().producer_auth_failed(self.transport);
        if let Some(refused) = self.throttle.hit() {
            tracing::warn!(
                transport = self.transport.label(),
                refused,
                "producer calls without a valid key refused since the last report \
                 (one report per 10 s at most; all are counted in pushgate_producer_auth_failures_total)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_report_per_interval_carrying_the_count() {
        let throttle = LogThrottle::new(Duration::from_secs(10));
        let t0 = throttle.origin;
        assert_eq!(throttle.hit_at(t0), Some(1), "the first event is reported at once");
        let held = (0..20_000).filter_map(|i| throttle.hit_at(t0 + Duration::from_micros(i * 400))).count();
        assert_eq!(held, 0, "nothing more within the interval");
        assert_eq!(throttle.hit_at(t0 + Duration::from_secs(10)), Some(20_001));
        assert_eq!(throttle.hit_at(t0 + Duration::from_secs(15)), None);
        assert_eq!(throttle.hit_at(t0 + Duration::from_secs(21)), Some(2));
    }

    #[test]
    fn concurrent_events_are_each_counted_once() {
        let throttle = Arc::new(LogThrottle::new(Duration::from_millis(1)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let throttle = Arc::clone(&throttle);
                std::thread::spawn(move || (0..10_000).filter_map(|_| throttle.hit()).sum::<u64>())
            })
            .collect();
        let reported: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
        let left = throttle.pending.load(Ordering::Relaxed);
        assert_eq!(reported + left, 40_000);
    }
}
