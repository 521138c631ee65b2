//! The gateway-wide budget for history (`--history-max-bytes`): what all
//! users' histories hold together, and the order deliveries were kept in, so
//! that past the budget the oldest are evicted first whoever they belong to.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Weak};

use prometheus_client::metrics::gauge::Gauge;

use super::delivery::Delivery;
use super::hub::UserId;

/// Records beyond this many plus twice the live ones make [`Budget::kept`]
/// drop the records of deliveries that are gone (amortised O(1) per push).
const SLACK: usize = 4096;

/// What one history holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Footprint {
    /// Bytes, as [`Delivery::queue_cost`] counts them.
    pub(crate) bytes: usize,
    /// Deliveries.
    pub(crate) count: usize,
}

fn shift(total: &AtomicUsize, before: usize, after: usize) {
    if after >= before {
        total.fetch_add(after - before, Ordering::Relaxed);
    } else {
        total.fetch_sub(before - after, Ordering::Relaxed);
    }
}

/// Bytes held by every history, against a maximum.
#[derive(Debug)]
pub(crate) struct Budget {
    max: usize,
    /// The sum of every user's `History::footprint` bytes (the
    /// `pushgate_history_bytes` gauge).
    held: Gauge<i64, AtomicI64>,
    /// The sum of their counts: deliveries kept in all histories.
    live: AtomicUsize,
    /// Deliveries kept in some history, oldest first. A record whose delivery
    /// left its history by another way (size, TTL) stays until it reaches
    /// the front or the list is compacted; its weak reference then tells.
    order: Mutex<VecDeque<Kept>>,
}

#[derive(Debug)]
pub(crate) struct Kept {
    /// The user whose history holds it.
    pub(crate) user: UserId,
    /// The delivery; dead once nothing holds it any more.
    pub(crate) delivery: Weak<Delivery>,
}

impl Budget {
    /// A budget of `max` bytes.
    pub(crate) fn new(max: usize, held: Gauge<i64, AtomicI64>) -> Self {
        Self { max, held, live: AtomicUsize::new(0), order: Mutex::new(VecDeque::new()) }
    }

    fn order(&self) -> MutexGuard<'_, VecDeque<Kept>> {
        // A poisoned list is still a list: at worst a record too many.
        self.order.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a change of one history from `before` to `after`.
    pub(crate) fn adjust(&self, before: Footprint, after: Footprint) {
        self.held.inc_by(after.bytes as i64 - before.bytes as i64);
        shift(&self.live, before.count, after.count);
    }

    /// Notes that `user`'s history now keeps `delivery`.
    pub(crate) fn kept(&self, user: &UserId, delivery: Weak<Delivery>) {
        let mut order = self.order();
        if order.len() > 2 * self.live.load(Ordering::Relaxed) + SLACK {
            order.retain(|k| k.delivery.strong_count() > 0);
        }
        order.push_back(Kept { user: UserId::clone(user), delivery });
    }

    /// Bytes held now.
    pub(crate) fn held(&self) -> usize {
        self.held.get().max(0) as usize
    }

    /// True while the histories hold more than the budget.
    pub(crate) fn is_over(&self) -> bool {
        self.held() > self.max
    }

    /// The oldest record whose delivery may still be in a history, if any.
    pub(crate) fn oldest(&self) -> Option<Kept> {
        let mut order = self.order();
        while let Some(kept) = order.pop_front() {
            if kept.delivery.strong_count() > 0 {
                return Some(kept);
            }
        }
        None
    }

    /// Records kept now (live or not), for tests.
    #[cfg(test)]
    pub(crate) fn records(&self) -> usize {
        self.order().len()
    }
}
