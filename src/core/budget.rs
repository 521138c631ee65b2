//! The gateway-wide budget for history (`--history-max-bytes`): what all
//! users' histories hold together, and the order deliveries were kept in, so
//! that past the budget the oldest are evicted first whoever they belong to.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::metrics::gauge::Gauge;

use super::hub::UserId;

/// Records beyond this many plus twice the live ones make [`Budget::kept`]
/// drop the records of deliveries that are gone, wherever they are in the
/// list (amortised O(1) per push).
const SLACK: usize = 4096;

/// Records of deliveries that are gone [`Budget::kept`] drops from the
/// front of the list at most, before adding its own: more than the one it
/// adds, so the list shrinks back after a burst of evictions.
const FRONT_DROPS: usize = 2;

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
    /// the front or the list is compacted; its keeper then tells.
    order: Mutex<VecDeque<Record>>,
}

/// The budget's record of one kept delivery: 16 bytes, and it holds nothing
/// of the delivery itself.
#[derive(Debug)]
pub(crate) struct Record {
    /// The history that keeps it.
    pub(crate) keeper: Arc<Keeper>,
    /// Its seq.
    pub(crate) seq: u64,
}

impl Record {
    /// False once the delivery left its history.
    fn is_live(&self) -> bool {
        self.seq > self.keeper.evicted_through.load(Ordering::Relaxed)
    }
}

/// One user's history as the budget's records see it: whose it is, and how
/// far it has evicted. A history drops its deliveries oldest first, in seq
/// order, so a record is live exactly while its seq is above that mark.
/// Shared by the history (one allocation per user with history) and its
/// records.
#[derive(Debug)]
pub(crate) struct Keeper {
    /// The user whose history it is.
    pub(crate) user: UserId,
    /// Every delivery up to this seq has left the history; `u64::MAX` once
    /// the history started over or is gone.
    evicted_through: AtomicU64,
}

impl Keeper {
    /// The keeper of `user`'s history, which has evicted nothing yet.
    pub(crate) fn new(user: UserId) -> Arc<Self> {
        Arc::new(Self { user, evicted_through: AtomicU64::new(0) })
    }

    /// Notes that the history no longer holds anything up to `seq`.
    pub(crate) fn evicted(&self, seq: u64) {
        self.evicted_through.fetch_max(seq, Ordering::Relaxed);
    }

    /// Notes that the history holds none of its records' deliveries any more.
    pub(crate) fn retire(&self) {
        self.evicted(u64::MAX);
    }
}

impl Budget {
    /// A budget of `max` bytes.
    pub(crate) fn new(max: usize, held: Gauge<i64, AtomicI64>) -> Self {
        Self { max, held, live: AtomicUsize::new(0), order: Mutex::new(VecDeque::new()) }
    }

    fn order(&self) -> MutexGuard<'_, VecDeque<Record>> {
        // A poisoned list is still a list: at worst a record too many.
        self.order.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a change of one history from `before` to `after`.
    pub(crate) fn adjust(&self, before: Footprint, after: Footprint) {
        self.held.inc_by(after.bytes as i64 - before.bytes as i64);
        shift(&self.live, before.count, after.count);
    }

    /// Notes that the history of `keeper` now keeps the delivery `seq`.
    ///
    /// Under a steady stream of pushes the oldest records are those of
    /// deliveries their history has since evicted by size or TTL, so
    /// dropping them from the front here keeps the list near the live count.
    /// Only while a live record stays at the front (a user whose history
    /// outlives the others') do gone ones pile up behind it; past
    /// [`SLACK`] plus twice the live count the whole list is compacted, a
    /// pause of every publisher for as long as that takes (about 10 ms for
    /// 1.3 million records), which the front drops keep from ever being
    /// needed in the steady case.
    pub(crate) fn kept(&self, keeper: &Arc<Keeper>, seq: u64) {
        let mut order = self.order();
        for _ in 0..FRONT_DROPS {
            if order.front().is_none_or(Record::is_live) {
                break;
            }
            order.pop_front();
        }
        if order.len() > 2 * self.live.load(Ordering::Relaxed) + SLACK {
            order.retain(Record::is_live);
        }
        order.push_back(Record { keeper: Arc::clone(keeper), seq });
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
    pub(crate) fn oldest(&self) -> Option<Record> {
        let mut order = self.order();
        while let Some(kept) = order.pop_front() {
            if kept.is_live() {
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
