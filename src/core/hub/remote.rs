//! Pushes numbered by a broker's server rather than by this hub: the half of
//! the hub a cluster broker drives. The hub keeps, per user it holds, the
//! last seq it fanned out and a copy of the recent history, so a join's
//! replay is still taken under the user's shard lock, atomically with the
//! registration, exactly as with the in-process broker.

use std::sync::Arc;
use std::time::Instant;

use super::{Hub, UserEntry, UserId};
use crate::core::close::{CloseCode, CloseReason};
use crate::core::delivery::{Payload, unix_ms};
use crate::core::event::EventName;
use crate::core::history::Kept;

/// One push as a broker's server numbered it.
#[derive(Debug, Clone)]
pub struct Numbered {
    /// The event it was pushed on.
    pub event: EventName,
    /// The user's seq, given by the broker.
    pub seq: u64,
    /// The epoch of the user's stream that seq belongs to.
    pub epoch: Arc<str>,
    /// Acceptance time, Unix milliseconds.
    pub ts_ms: u64,
    /// The payload.
    pub payload: Payload,
    /// Not replayed after this time, Unix milliseconds.
    pub expires_at_ms: Option<u64>,
}

/// What [`Hub::deliver`] did with a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Fanned out to this many connections.
    Delivered(u32),
    /// At or below the last seq fanned out here: already delivered.
    Duplicate,
    /// Pushes between the last seq fanned out here (`after`) and this one
    /// are missing: fetch them from the broker's history, [`Hub::catch_up`],
    /// then this push arrives in order.
    Gap {
        /// The last seq fanned out here.
        after: u64,
    },
}

impl Hub {
    /// Fans out a push the broker numbered, in seq order: a repeat is
    /// ignored, a gap is reported and nothing is delivered out of order. The
    /// first push of a stream this hub has not followed yet (or of a new
    /// epoch) is taken as it comes.
    pub fn deliver(&self, user: &UserId, push: Numbered) -> Arrival {
        let arrival = self.deliver_locked(user, push);
        self.enforce_budget();
        arrival
    }

    fn deliver_locked(&self, user: &UserId, push: Numbered) -> Arrival {
        let mut shard = self.shard(user);
        let entry = shard.entry(Arc::clone(user)).or_insert_with(|| UserEntry::new(Arc::clone(user)));
        let following = entry.seq > 0 && *entry.epoch == *push.epoch;
        if following && push.seq <= entry.seq {
            return Arrival::Duplicate;
        }
        if following && push.seq > entry.seq + 1 {
            return Arrival::Gap { after: entry.seq };
        }
        if !following {
            self.restart_stream(entry, &push.epoch, push.seq.saturating_sub(1));
        }
        Arrival::Delivered(self.fan_out_numbered(entry, push))
    }

    /// Brings the user's stream here up to date with the broker's history:
    /// `pushes` (oldest first, with seq above `floor`'s) are what the broker
    /// keeps, `current` its latest seq and `epoch` its stream. Pushes this hub
    /// has not fanned out yet are, in order; a stream that started over under
    /// a new epoch closes the user's connections here with 4004, so their
    /// clients resume and learn it. Returns how many connections were closed.
    pub fn catch_up(&self, user: &UserId, epoch: &Arc<str>, current: u64, pushes: Vec<Numbered>) -> u32 {
        let closed = self.catch_up_locked(user, epoch, current, pushes);
        self.enforce_budget();
        closed
    }

    fn catch_up_locked(&self, user: &UserId, epoch: &Arc<str>, current: u64, pushes: Vec<Numbered>) -> u32 {
        let mut shard = self.shard(user);
        let entry = shard.entry(Arc::clone(user)).or_insert_with(|| UserEntry::new(Arc::clone(user)));
        let mut closed = 0;
        if *entry.epoch != **epoch || entry.seq > current {
            if entry.seq > 0 {
                closed = self.reset_connections(entry);
            }
            let first = pushes.first().map_or(current, |p| p.seq.saturating_sub(1));
            self.restart_stream(entry, epoch, first);
        } else if entry.seq == 0 {
            // Following this stream from here on: what came before was not kept here.
            let first = pushes.first().map_or(current, |p| p.seq.saturating_sub(1));
            entry.history_mut().not_kept_through(first);
        }
        for push in pushes {
            if push.seq > entry.seq {
                if push.seq > entry.seq + 1 {
                    // The broker no longer keeps what lies between.
                    entry.history_mut().not_kept_through(push.seq - 1);
                }
                self.fan_out_numbered(entry, push);
            }
        }
        if current > entry.seq {
            entry.history_mut().not_kept_through(current);
            entry.seq = current;
        }
        closed
    }

    /// The stream position this hub follows for `user`: the last seq fanned
    /// out here and its epoch.
    pub fn position(&self, user: &str) -> Option<(u64, Arc<str>)> {
        self.shard(user).get(user).map(|e| (e.seq, Arc::clone(&e.epoch)))
    }

    /// Users with at least one connection here.
    pub fn users(&self) -> Vec<UserId> {
        let mut users = Vec::new();
        for shard in self.each_shard() {
            users.extend(shard.iter().filter(|(_, e)| !e.subscribers.is_empty()).map(|(u, _)| Arc::clone(u)));
        }
        users
    }

    /// Starts following a stream anew at `floor` (everything up to it was
    /// not seen here).
    fn restart_stream(&self, entry: &mut UserEntry, epoch: &Arc<str>, floor: u64) {
        let history = entry.history_mut();
        let before = history.footprint();
        history.clear();
        history.not_kept_through(floor);
        self.budget.adjust(before, history.footprint());
        entry.epoch = Arc::clone(epoch);
        entry.seq = floor;
    }

    /// Closes every connection of the user with 4004 (their stream started
    /// over) and removes them.
    fn reset_connections(&self, entry: &mut UserEntry) -> u32 {
        let gone = std::mem::take(&mut entry.subscribers);
        for (i, member) in gone.iter().enumerate() {
            member.outbox.close(CloseReason::new(CloseCode::StreamReset));
            self.metrics.left(member.events.len(), i + 1 == gone.len());
        }
        gone.len() as u32
    }

    /// Queues `push` to the user's matching connections and keeps it in the
    /// history copy; the entry now follows up to its seq.
    fn fan_out_numbered(&self, entry: &mut UserEntry, push: Numbered) -> u32 {
        let now = Instant::now();
        let replay_ms =
            push.expires_at_ms.map_or(u32::MAX, |at| super::replay_ms(u128::from(at.saturating_sub(unix_ms()))));
        let event = super::interned(&entry.subscribers, &push.event).unwrap_or(push.event);
        let kept = Kept::new(push.seq, push.ts_ms, now, replay_ms, event, push.payload);
        let delivered = self.fan_out_kept(&entry.subscribers, &kept);
        entry.seq = push.seq;
        entry.position_until = now.checked_add(self.config.history_meta_ttl);
        self.keep(entry, kept);
        delivered
    }
}
