//! A user's recent deliveries, for resume with `since` (docs/protocol.md,
//! "Delivery semantics").
//!
//! A kept push costs its payload's buffer plus a 64-byte slot in the user's
//! ring: the slot names its event and kind by index into a small table per
//! user (a user with no connection would otherwise keep an event name per
//! push), and holds its acceptance instant in 8 bytes instead of 16.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::budget::{Footprint, Keeper};
use super::delivery::{Delivery, Payload, Text, queue_cost};
use super::event::EventName;
use super::hub::UserId;

/// The last `size` deliveries of one user, none older than `ttl`.
#[derive(Debug, Default)]
pub(crate) struct History {
    items: VecDeque<Slot>,
    /// The events and kinds (text or binary) of `items`, which name theirs
    /// by index. Entries no slot names any more are dropped when the table
    /// has grown to twice the slots (amortised O(1) per push).
    kinds: Vec<Kind>,
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

/// A push to keep, as the hub hands it over (and fans it out from): what a
/// replay needs to rebuild its delivery, and no more. The payload shares its
/// buffer with the delivery that goes out live; the envelope encoded for the
/// connections then is not kept (a replay encodes it again).
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
    /// The payload, in an allocation of its own size ([`Payload::exact`]).
    pub(crate) payload: Payload,
}

impl Kept {
    /// A push to keep. Its payload is made exact here, before the live
    /// delivery shares it, so that only a buffer with spare room or shared
    /// with something else is copied.
    pub(crate) fn new(
        seq: u64,
        ts_ms: u64,
        accepted: Instant,
        replay_ms: u32,
        event: EventName,
        payload: Payload,
    ) -> Self {
        Self { seq, ts_ms, accepted, replay_ms, event, payload: payload.exact() }
    }

    /// The delivery this was kept from (a fresh one, encoded on first use).
    pub(crate) fn delivery(&self) -> Delivery {
        let replay_until = replay_until(self.accepted, self.replay_ms);
        Delivery::from_parts(
            self.accepted,
            self.event.clone(),
            Some(self.seq),
            self.ts_ms,
            self.payload.clone(),
            replay_until,
        )
    }
}

/// One kept push as the ring holds it: 64 bytes.
#[derive(Debug)]
struct Slot {
    seq: u64,
    ts_ms: u64,
    accepted: Moment,
    /// The payload's buffer; text when its kind says so.
    bytes: Bytes,
    /// As [`Kept::replay_ms`].
    replay_ms: u32,
    /// Its entry in [`History::kinds`]. A history would need 2^31 slots
    /// (128 GiB of them) before the table outgrew a `u32`.
    kind: u32,
}

/// An event and whether its payloads are text, shared by the slots that
/// name it.
#[derive(Debug, Clone)]
struct Kind {
    event: EventName,
    text: bool,
}

/// An [`Instant`] in 8 bytes instead of 16: signed nanoseconds from one
/// reading of the clock per process. Exact within 292 years of it.
#[derive(Debug, Clone, Copy)]
struct Moment(i64);

impl Moment {
    fn of(instant: Instant) -> Self {
        let origin = origin();
        match instant.checked_duration_since(origin) {
            Some(after) => Moment(nanos(after)),
            None => Moment(-nanos(origin.duration_since(instant))),
        }
    }

    fn instant(self) -> Instant {
        let offset = Duration::from_nanos(self.0.unsigned_abs());
        if self.0 >= 0 { origin() + offset } else { origin() - offset }
    }
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// After this instant a push accepted at `accepted` is not replayed.
fn replay_until(accepted: Instant, replay_ms: u32) -> Option<Instant> {
    (replay_ms != u32::MAX).then(|| accepted + Duration::from_millis(u64::from(replay_ms)))
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
    /// A history that keeps nothing and knows of nothing not kept: what a
    /// user never pushed to has.
    pub(crate) const EMPTY: History =
        History { items: VecDeque::new(), kinds: Vec::new(), floor: 0, bytes: 0, keeper: None };

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
        self.bytes += queue_cost(kept.payload.len(), &kept.event);
        let (bytes, text) = kept.payload.into_parts();
        let kind = self.kind_of(&kept.event, text);
        self.make_room(size);
        let accepted = Moment::of(kept.accepted);
        self.items.push_back(Slot {
            seq: kept.seq,
            ts_ms: kept.ts_ms,
            accepted,
            bytes,
            replay_ms: kept.replay_ms,
            kind,
        });
    }

    /// Grows a full ring towards `size` but not past it: doubling would
    /// leave up to half of it unused for as long as the user keeps pushing.
    fn make_room(&mut self, size: usize) {
        let len = self.items.len();
        if len == self.items.capacity() {
            self.items.reserve_exact(len.max(4).min(size - len));
        }
    }

    /// The index of `event` with a text or binary payload in `kinds`, added
    /// when new.
    fn kind_of(&mut self, event: &EventName, text: bool) -> u32 {
        // The latest kinds first: a user's pushes tend to repeat the last.
        if let Some(i) = self.kinds.iter().rposition(|k| k.text == text && k.event == *event) {
            return i as u32;
        }
        if self.kinds.len() >= 2 * self.items.len() + 4 {
            self.drop_unused_kinds();
        }
        self.kinds.push(Kind { event: Arc::clone(event), text });
        (self.kinds.len() - 1) as u32
    }

    /// Drops the kinds no slot names, renumbering the slots.
    fn drop_unused_kinds(&mut self) {
        let mut renumbered = vec![u32::MAX; self.kinds.len()];
        let mut kinds = Vec::new();
        for slot in &mut self.items {
            let old = slot.kind as usize;
            if renumbered[old] == u32::MAX {
                renumbered[old] = kinds.len() as u32;
                kinds.push(self.kinds[old].clone());
            }
            slot.kind = renumbered[old];
        }
        self.kinds = kinds;
    }

    /// The event name this history already holds for `event`, if any:
    /// sharing it saves an allocation per push to a user with no connection.
    pub(crate) fn event(&self, event: &str) -> Option<EventName> {
        self.kinds.iter().rev().find(|k| &*k.event == event).map(|k| Arc::clone(&k.event))
    }

    /// What `slot` costs, as [`Delivery::queue_cost`] counts it.
    fn cost(&self, slot: &Slot) -> usize {
        queue_cost(slot.bytes.len(), &self.kinds[slot.kind as usize].event)
    }

    /// The delivery `slot` was kept from (a fresh one, encoded on first use).
    fn delivery(&self, slot: &Slot) -> Delivery {
        let kind = &self.kinds[slot.kind as usize];
        let payload = if kind.text {
            // SAFETY: a slot's kind is text only when its bytes came out of
            // a `Text` (`remember`), which holds valid UTF-8.
            Payload::Text(unsafe { Text::from_utf8_unchecked(slot.bytes.clone()) })
        } else {
            Payload::Binary(slot.bytes.clone())
        };
        let accepted = slot.accepted.instant();
        let replay_until = replay_until(accepted, slot.replay_ms);
        Delivery::from_parts(accepted, Arc::clone(&kind.event), Some(slot.seq), slot.ts_ms, payload, replay_until)
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
        if let Some(slot) = self.items.pop_front() {
            self.floor = self.floor.max(slot.seq);
            self.bytes -= self.cost(&slot);
            if let Some(keeper) = &self.keeper {
                keeper.evicted(slot.seq);
            }
            if self.items.is_empty() {
                self.kinds.clear();
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
        self.kinds.clear();
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
        while self.items.front().is_some_and(|k| now.duration_since(k.accepted.instant()) > ttl) {
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
                .filter(|k| replay_until(k.accepted.instant(), k.replay_ms).is_none_or(|until| now < until))
                .filter(|k| events.contains(&self.kinds[k.kind as usize].event))
                .map(|k| Arc::new(self.delivery(k)))
                .collect()
        };
        Replay { deliveries, from: since, to: current, complete }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_64_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
    }

    #[test]
    fn a_moment_is_the_instant_it_was_made_from() {
        let now = Instant::now();
        for t in [now, now + Duration::from_nanos(1), now - Duration::from_millis(1500), origin()] {
            assert_eq!(Moment::of(t).instant(), t);
        }
    }
}
