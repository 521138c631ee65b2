//! A user's recent deliveries, for resume with `since` (docs/protocol.md,
//! "Delivery semantics").

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::budget::{Footprint, Keeper};
use super::delivery::{Delivery, Payload, queue_cost};
use super::event::EventName;
use super::hub::UserId;

/// The last `size` deliveries of one user, none older than `ttl`.
#[derive(Debug, Default)]
pub(crate) struct History {
    items: VecDeque<Kept>,
    /// Every delivery with a seq above this one is still here (or was left
    /// out on purpose by its own `ttl_ms`): a resume from `since >= floor` is
    /// complete.
    floor: u64,
    /// What the kept deliveries cost ([`Delivery::queue_cost`] each), for the
    /// gateway-wide budget.
    bytes: usize,
    /// Shared with the budget's records of what is kept here; made when the
    /// first delivery is kept.
    keeper: Option<Arc<Keeper>>,
}

/// One kept delivery: what a replay needs to rebuild it, and no more. The
/// payload shares its buffer with the delivery that went out live; the
/// envelope encoded for the connections then is not kept (a replay encodes
/// it again). 88 bytes, against a delivery's 176 plus its envelope.
#[derive(Debug)]
pub(crate) struct Kept {
    /// The user's seq.
    pub(crate) seq: u64,
    /// Acceptance time, Unix milliseconds.
    pub(crate) ts_ms: u64,
    /// When it was accepted here: its age for the history TTL, and a
    /// replayed delivery's acceptance time, as the live one had.
    pub(crate) accepted: Instant,
    /// Milliseconds after `accepted` it may still be replayed; `u32::MAX`
    /// for no limit (a push's TTL, at most `u32::MAX - 1` ms, ~49 days).
    pub(crate) replay_ms: u32,
    /// The event.
    pub(crate) event: EventName,
    /// The payload.
    pub(crate) payload: Payload,
}

impl Kept {
    /// The delivery this was kept from (a fresh one, encoded on first use).
    pub(crate) fn delivery(&self) -> Delivery {
        Delivery::from_parts(
            self.accepted,
            self.event.clone(),
            Some(self.seq),
            self.ts_ms,
            self.payload.clone(),
            self.replay_until(),
        )
    }

    /// After this instant it is not replayed.
    pub(crate) fn replay_until(&self) -> Option<Instant> {
        (self.replay_ms != u32::MAX).then(|| self.accepted + Duration::from_millis(u64::from(self.replay_ms)))
    }

    /// What it costs, as [`Delivery::queue_cost`] counts it.
    fn cost(&self) -> usize {
        queue_cost(&self.payload, &self.event)
    }
}

/// Where a client resumes from: the last seq it saw and, when it knows it,
/// the epoch of the stream that seq belongs to (the `epoch` of its
/// `registered` message). A different epoch means the seq numbers were
/// reset (the gateway, or its broker, lost the stream), so the client's seq
/// says nothing about what it missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    /// The last seq the client saw.
    pub seq: u64,
    /// The epoch that seq belongs to; `None` when the client does not say.
    pub epoch: Option<String>,
}

impl Since {
    /// A resume after `seq`, with no epoch.
    pub fn seq(seq: u64) -> Self {
        Self { seq, epoch: None }
    }
}

/// What a resume replays, computed atomically with the registration it
/// belongs to, so nothing falls between the replay and the live stream.
#[derive(Debug)]
pub struct Replay {
    /// The deliveries after `from`, oldest first, on the connection's events.
    pub deliveries: Vec<Arc<Delivery>>,
    /// The `since` the client gave.
    pub from: u64,
    /// The user's seq when the replay was taken; live deliveries follow it.
    pub to: u64,
    /// False when history no longer reaches back to `from`.
    pub complete: bool,
}

impl History {
    /// Keeps `kept` (with a seq above every kept one's), evicting the
    /// oldest beyond `size`.
    pub(crate) fn remember(&mut self, kept: Kept, size: usize) {
        if size == 0 {
            // Not kept (history off): a resume from before it is incomplete.
            self.floor = self.floor.max(kept.seq);
            return;
        }
        while self.items.len() >= size {
            self.evict_front();
        }
        self.bytes += kept.cost();
        self.items.push_back(kept);
    }

    /// The keeper the budget's records of this history share.
    pub(crate) fn keeper(&mut self, user: &UserId) -> &Arc<Keeper> {
        self.keeper.get_or_insert_with(|| Keeper::new(Arc::clone(user)))
    }

    /// True when `keeper` is this history's.
    pub(crate) fn is_kept_by(&self, keeper: &Arc<Keeper>) -> bool {
        self.keeper.as_ref().is_some_and(|k| Arc::ptr_eq(k, keeper))
    }

    fn evict_front(&mut self) {
        if let Some(kept) = self.items.pop_front() {
            self.floor = self.floor.max(kept.seq);
            self.bytes -= kept.cost();
            if let Some(keeper) = &self.keeper {
                keeper.evicted(kept.seq);
            }
        }
    }

    /// Evicts every delivery up to and including `seq` (the budget's oldest
    /// first). Returns how many were evicted.
    pub(crate) fn evict_through(&mut self, seq: u64) -> usize {
        let mut evicted = 0;
        while self.items.front().is_some_and(|k| k.seq <= seq) {
            self.evict_front();
            evicted += 1;
        }
        evicted
    }

    /// Forgets everything: a new stream starts (its seq numbers are not
    /// comparable with the old ones).
    pub(crate) fn clear(&mut self) {
        self.items.clear();
        self.floor = 0;
        self.bytes = 0;
        if let Some(keeper) = self.keeper.take() {
            keeper.retire();
        }
    }

    /// Marks every seq up to `seq` as not kept here: a resume from before it
    /// is incomplete (a node that starts following a stream in its middle).
    pub(crate) fn not_kept_through(&mut self, seq: u64) {
        self.floor = self.floor.max(seq);
    }

    /// What the kept deliveries cost, and how many they are.
    pub(crate) fn footprint(&self) -> Footprint {
        Footprint { bytes: self.bytes, count: self.items.len() }
    }

    /// How many deliveries are kept.
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is kept.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Drops what is older than `ttl`. Returns true when nothing is left.
    pub(crate) fn expire(&mut self, ttl: Duration, now: Instant) -> bool {
        while self.items.front().is_some_and(|k| now.duration_since(k.accepted) > ttl) {
            self.evict_front();
        }
        self.items.is_empty()
    }

    /// The deliveries after `since` on any of `events`, with `current` the
    /// user's latest seq and `epoch` its stream's. From another epoch nothing
    /// is replayed and the replay is incomplete: the client must reload.
    pub(crate) fn replay(
        &self,
        since: &Since,
        current: u64,
        epoch: &str,
        events: &[EventName],
        now: Instant,
    ) -> Replay {
        // A client that saw nothing (seq 0) has nothing to lose to a new epoch.
        let same_epoch = since.seq == 0 || since.epoch.as_deref().is_none_or(|e| e == epoch);
        let since = since.seq;
        let complete = same_epoch && since >= self.floor && since <= current;
        let deliveries = if since > current || !same_epoch {
            Vec::new()
        } else {
            self.items
                .iter()
                .filter(|k| k.seq > since)
                .filter(|k| k.replay_until().is_none_or(|until| now < until))
                .filter(|k| events.contains(&k.event))
                .map(|k| Arc::new(k.delivery()))
                .collect()
        };
        Replay { deliveries, from: since, to: current, complete }
    }
}
