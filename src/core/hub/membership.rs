//! Connections joining, changing their subscriptions and leaving: the half
//! of the hub the sessions use. A join and its replay happen under one shard
//! lock, which is what makes a resume gap-free.

use std::sync::Arc;
use std::time::Instant;

use super::{ConnId, Hub, JoinError, Joined, Shard, Subscriber, UserEntry, UserId, interned};
use crate::core::event::EventName;
use crate::core::history::Since;
use crate::core::outbox::Outbox;

impl Hub {
    /// Registers connection `id` of `user` with `events`, replaying history
    /// after `since` atomically with the registration.
    pub fn join(
        &self,
        user: &UserId,
        id: ConnId,
        outbox: Arc<Outbox>,
        events: &[EventName],
        since: Option<&Since>,
    ) -> Result<Joined, JoinError> {
        if self.is_shutting_down() {
            return Err(JoinError::ShuttingDown);
        }
        let mut subscribed = new_events(&[], events, self.config.max_events_per_conn)?;
        let mut shard = self.shard(user);
        let entry = shard.entry(Arc::clone(user)).or_insert_with(|| UserEntry::new(Arc::clone(user)));
        share_names(&entry.subscribers, &mut subscribed);
        if entry.subscribers.len() >= self.config.max_connections_per_user {
            let n = entry.subscribers.len();
            Self::prune(&mut shard, user);
            return Err(JoinError::UserLimit(n));
        }
        self.metrics.joined(subscribed.len(), entry.subscribers.is_empty());
        let replay = since.map(|s| entry.history().replay(s, entry.seq, &entry.epoch, &subscribed, Instant::now()));
        if entry.subscribers.capacity() == 0 {
            // Most users have one connection: room for exactly one, not four.
            entry.subscribers.reserve_exact(1);
        }
        entry.subscribers.push(Subscriber { id, events: subscribed.iter().cloned().collect(), outbox });
        Ok(Joined { events: subscribed, seq: entry.seq, epoch: Arc::clone(&entry.epoch), replay })
    }

    /// Adds `events` to a joined connection, all or none; replays after
    /// `since` for the newly added ones only (the others were live already).
    pub fn subscribe(
        &self,
        user: &str,
        id: ConnId,
        events: &[EventName],
        since: Option<&Since>,
    ) -> Result<Joined, JoinError> {
        let mut shard = self.shard(user);
        let entry = shard.get_mut(user).ok_or(JoinError::ShuttingDown)?;
        let seq = entry.seq;
        let at = entry.subscribers.iter().position(|m| m.id == id).ok_or(JoinError::ShuttingDown)?;
        let mut added = new_events(&entry.subscribers[at].events, events, self.config.max_events_per_conn)?;
        share_names(&entry.subscribers, &mut added);
        let member = &mut entry.subscribers[at];
        member.events.extend(added.iter().cloned());
        self.metrics.subscriptions.inc_by(added.len() as i64);
        let events = member.events.to_vec();
        let replay = since.map(|s| entry.history().replay(s, seq, &entry.epoch, &added, Instant::now()));
        Ok(Joined { events, seq, epoch: Arc::clone(&entry.epoch), replay })
    }

    /// Removes `events` from a joined connection; returns what it still has.
    pub fn unsubscribe(&self, user: &str, id: ConnId, events: &[EventName]) -> Vec<EventName> {
        let mut shard = self.shard(user);
        let Some(member) = shard.get_mut(user).and_then(|e| e.subscribers.iter_mut().find(|m| m.id == id)) else {
            return Vec::new();
        };
        let before = member.events.len();
        member.events.retain(|e| !events.contains(e));
        self.metrics.subscriptions.dec_by((before - member.events.len()) as i64);
        member.events.to_vec()
    }

    /// Removes connection `id` of `user`. Idempotent.
    pub fn leave(&self, user: &str, id: ConnId) {
        let mut shard = self.shard(user);
        let Some(entry) = shard.get_mut(user) else { return };
        if let Some(i) = entry.subscribers.iter().position(|m| m.id == id) {
            let member = entry.subscribers.swap_remove(i);
            self.metrics.left(member.events.len(), entry.subscribers.is_empty());
        }
        Self::prune(&mut shard, user);
    }

    /// Drops a user's entry once nothing needs it: no connection, no history,
    /// no idempotency key, and no stream position still worth keeping.
    pub(super) fn prune(shard: &mut Shard, user: &str) {
        let now = Instant::now();
        if shard.get_mut(user).is_some_and(|e| e.is_idle(now)) {
            shard.remove(user);
        }
    }
}

/// Makes each of `events` the name another connection of the user already
/// holds for it, where one does. The fan-out then finds a subscriber by
/// comparing pointers (`Arc`'s `==` does that first) instead of reading
/// each connection's own copy of the name, one cache miss per connection
/// and push; and a user's connections keep one copy of a name, not one each.
fn share_names(subscribers: &[Subscriber], events: &mut [EventName]) {
    for event in events {
        if let Some(held) = interned(subscribers, event) {
            *event = held;
        }
    }
}

/// The events of `new` not in `have`, each once — or `TooManyEvents` when
/// adding them would pass `max`. Changes nothing, so a refusal leaves the
/// connection's subscriptions as they were.
fn new_events(have: &[EventName], new: &[EventName], max: usize) -> Result<Vec<EventName>, JoinError> {
    let mut added: Vec<EventName> = Vec::new();
    for e in new {
        if !have.contains(e) && !added.contains(e) {
            added.push(Arc::clone(e));
        }
    }
    if have.len() + added.len() > max {
        return Err(JoinError::TooManyEvents(max));
    }
    Ok(added)
}
