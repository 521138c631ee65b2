//! The registry of users, their connections and subscriptions, and the one
//! place a push fans out from.
//!
//! Users are spread over shards, each behind a `std::sync::Mutex`: nothing
//! awaits while a shard is locked, so an async mutex would only add cost.
//! Everything that must be atomic per user — the next `seq`, the fan-out to
//! every connection, the history, and a registration with its replay —
//! happens under that user's shard lock, which is what keeps per-user order.

mod membership;
mod remote;

pub use remote::{Arrival, Numbered};
#[cfg(test)]
mod proptests;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use smallvec::SmallVec;

use super::budget::Budget;
use super::close::{CloseCode, CloseReason};
use super::delivery::{Delivery, Payload, unix_ms};
use super::event::{EventError, EventName, validate_event};
use super::history::{History, Kept, Replay};
use super::idempotency::RecentKeys;
use super::metrics::{DropReason, Metrics, PushResult, StatsSnapshot};
use super::outbox::{Offer, Outbox, SlowPolicy};

/// A user id, shared by reference count.
pub type UserId = Arc<str>;

/// The hub's limits and policies. The defaults are the documented defaults
/// of the matching flags (README, "Configuration").
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Bytes a connection may have queued (default 256 KiB).
    pub conn_queue_bytes: usize,
    /// What an overflowing queue does (default: close with 4000).
    pub slow_policy: SlowPolicy,
    /// Events one connection may subscribe to (default 64).
    pub max_events_per_conn: usize,
    /// Live connections one user may have (default 64).
    pub max_connections_per_user: usize,
    /// Largest payload accepted (default 64 KiB).
    pub max_message_bytes: usize,
    /// Deliveries kept per user for resume (default 64; 0 turns history off).
    pub history_size: usize,
    /// How long history is kept (default 5 min).
    pub history_ttl: Duration,
    /// How long a user's stream position (seq and epoch) is kept after its
    /// last push (default 30 days), so seq never restarts for a user who was
    /// away longer than the history.
    pub history_meta_ttl: Duration,
    /// What all users' histories may hold together, in bytes (default
    /// 256 MiB); past it the oldest deliveries are evicted first, whoever
    /// they belong to.
    pub history_max_bytes: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            conn_queue_bytes: 256 * 1024,
            slow_policy: SlowPolicy::Close,
            max_events_per_conn: 64,
            max_connections_per_user: 64,
            max_message_bytes: 64 * 1024,
            history_size: 64,
            history_ttl: Duration::from_secs(300),
            history_meta_ttl: Duration::from_secs(30 * 24 * 3600),
            history_max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// One push as a producer asks for it.
#[derive(Debug, Clone)]
pub struct Push {
    /// The user whose connections receive it.
    pub user_id: String,
    /// The event those connections subscribed to.
    pub event: String,
    /// Text or binary.
    pub payload: Payload,
    /// Not replayed from history after this long.
    pub ttl: Option<Duration>,
    /// A repeat of this key for the same user within the history TTL is
    /// acknowledged with the first push's seq and not delivered again.
    pub idempotency_key: Option<String>,
}

impl Push {
    /// A push of `payload` to `user_id` on `event`, with no TTL or key.
    pub fn new(user_id: impl Into<String>, event: impl Into<String>, payload: Payload) -> Self {
        Self { user_id: user_id.into(), event: event.into(), payload, ttl: None, idempotency_key: None }
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Published {
    /// Connections the delivery was queued to.
    pub delivered: u32,
    /// The user's seq given to it.
    pub seq: u64,
    /// True when the push repeated an idempotency key: not delivered again,
    /// `seq` is the first push's.
    pub duplicate: bool,
    /// Nodes the push was handed to for fan-out, when the broker counts
    /// them (Redis: every node holding the user); 0 otherwise (the
    /// in-process broker, whose push never leaves this node, and NATS).
    pub nodes: u32,
}

/// The longest `user_id` a push may name, in bytes.
pub const MAX_USER_ID_BYTES: usize = 256;
/// The longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;
/// The longest `request_id` a producer may attach to a call, in bytes; the
/// API, which echoes it, checks it with [`check_length`].
pub const MAX_REQUEST_ID_BYTES: usize = 256;

/// Refuses `value` of `field` when it is longer than `max` bytes.
pub fn check_length(field: &'static str, value: &str, max: usize) -> Result<(), PushError> {
    if value.len() > max {
        return Err(PushError::TooLong { field, size: value.len(), max });
    }
    Ok(())
}

/// Why a push (or broadcast) was refused. Each message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("user_id must not be empty")]
    /// `user_id` is empty.
    EmptyUser,
    #[error("event: {0}")]
    /// `event` is not a valid event name.
    BadEvent(EventError),
    #[error("{field} is {size} bytes, larger than the limit of {max} (--max-message-bytes)")]
    /// The payload is over `--max-message-bytes`.
    TooLarge {
        /// `message` or `data`.
        field: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    #[error("{field} is {size} bytes, longer than the limit of {max}")]
    /// An id (`user_id`, `idempotency_key`, `request_id`) is over its limit.
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The gateway is shutting down.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// The broker cannot take the push now (its server is away); nothing
    /// was delivered, the producer may retry.
    #[error("{0}")]
    Unavailable(String),
}

/// Why a connection could not join or subscribe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("user has {0} connections, the most allowed (--max-connections-per-user)")]
    /// The user has this many connections, the most allowed.
    UserLimit(usize),
    #[error("a connection may subscribe to at most {0} events (--max-events-per-conn)")]
    /// The connection would pass this many events.
    TooManyEvents(usize),
    #[error("the gateway is shutting down")]
    /// The gateway is shutting down (or the connection left meanwhile).
    ShuttingDown,
    /// The broker could not admit the connection now (its server is away).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// A connection's identity in the hub.
pub type ConnId = u64;

#[derive(Debug)]
struct Subscriber {
    id: ConnId,
    /// Held in place when there is one, as there usually is: the fan-out
    /// checks every connection of the user, and this spares it a read of
    /// memory elsewhere for each.
    events: SmallVec<[EventName; 1]>,
    outbox: Arc<Outbox>,
}

#[derive(Debug)]
struct UserEntry {
    /// The user, as the shard's key holds it (the history budget names it).
    user: UserId,
    seq: u64,
    /// The epoch of this user's stream: new whenever the entry is (a new
    /// process, or a position forgotten after the meta TTL), so a client's
    /// `since` from an earlier stream is never taken for this one.
    epoch: Arc<str>,
    /// Until when the stream position (`seq`) is kept with nothing else
    /// holding the entry; `None` before the first push.
    position_until: Option<Instant>,
    subscribers: Vec<Subscriber>,
    /// Made by the first delivery kept or the first seq not kept here: the
    /// table holds an entry per connected user, most of whom were never
    /// pushed to, and inline a history would be a third of each entry.
    history: Option<Box<History>>,
    /// Made by the first push with an idempotency key, dropped when its keys
    /// have all expired.
    keys: Option<Box<RecentKeys>>,
}

impl UserEntry {
    fn new(user: UserId) -> Self {
        Self {
            user,
            seq: 0,
            epoch: new_epoch(),
            position_until: None,
            subscribers: Vec::new(),
            history: None,
            keys: None,
        }
    }

    /// The user's history; an empty one if none was made.
    fn history(&self) -> &History {
        static NONE: History = History::EMPTY;
        self.history.as_deref().unwrap_or(&NONE)
    }

    /// The user's history, made if there was none.
    fn history_mut(&mut self) -> &mut History {
        self.history.get_or_insert_with(Box::default)
    }

    /// True when nothing needs the entry any more at `now`.
    fn is_idle(&self, now: Instant) -> bool {
        self.subscribers.is_empty()
            && self.history().is_empty()
            && self.keys.is_none()
            && self.position_until.is_none_or(|until| now >= until)
    }
}

/// Users of one shard. foldhash with a per-process random seed: several times
/// cheaper than SipHash on short ids, and still not predictable by a client.
type Shard = HashMap<UserId, UserEntry, RandomState>;

/// The result of a join or a subscribe.
#[derive(Debug)]
pub struct Joined {
    /// All events the connection is subscribed to now.
    pub events: Vec<EventName>,
    /// The user's latest seq.
    pub seq: u64,
    /// The epoch of the user's stream: seq numbers compare only within one.
    pub epoch: Arc<str>,
    /// The replay asked for with `since`.
    pub replay: Option<Replay>,
}

/// The registry. Share it as `Arc<Hub>`.
#[derive(Debug)]
pub struct Hub {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    config: HubConfig,
    next_conn: AtomicU64,
    closing: AtomicBool,
    metrics: Metrics,
    pub(crate) budget: Budget,
}

const SHARDS: usize = 64;

impl Hub {
    /// An empty hub.
    pub fn new(config: HubConfig) -> Arc<Self> {
        let metrics = Metrics::new();
        let budget = Budget::new(config.history_max_bytes, metrics.history_bytes.clone());
        Arc::new(Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::with_hasher(RandomState::default()))).collect(),
            hasher: RandomState::default(),
            config,
            next_conn: AtomicU64::new(1),
            closing: AtomicBool::new(false),
            metrics,
            budget,
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// A fresh connection id, unique in this process.
    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// An empty outbox with this hub's queue cap and slow policy.
    pub fn new_outbox(&self) -> Arc<Outbox> {
        Arc::new(Outbox::new(self.config.conn_queue_bytes, self.config.slow_policy))
    }

    fn shard(&self, user: &str) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(user) as usize) % self.shards.len();
        // See Outbox::lock: a poisoned shard is still consistent.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn each_shard(&self) -> impl Iterator<Item = MutexGuard<'_, Shard>> {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Counters and gauges of this hub.
    pub fn stats(&self) -> StatsSnapshot {
        self.metrics.snapshot()
    }

    /// The hub's Prometheus metrics; adapters record what only they see
    /// (close codes, write latency) here.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Refuses pushes and joins from now on (shutdown).
    pub fn begin_shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// True once shutdown began.
    pub fn is_shutting_down(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Checks a push's fields against the grammar and limits.
    pub(crate) fn validate(&self, push: &Push) -> Result<(), PushError> {
        if push.user_id.is_empty() {
            return Err(PushError::EmptyUser);
        }
        check_length("user_id", &push.user_id, MAX_USER_ID_BYTES)?;
        validate_event(&push.event).map_err(PushError::BadEvent)?;
        if let Some(key) = &push.idempotency_key {
            check_length("idempotency_key", key, MAX_IDEMPOTENCY_KEY_BYTES)?;
        }
        self.validate_payload(&push.payload)
    }

    pub(crate) fn validate_payload(&self, payload: &Payload) -> Result<(), PushError> {
        let max = self.config.max_message_bytes;
        if payload.len() > max {
            let field = match payload {
                Payload::Text(_) => "message",
                Payload::Binary(_) => "data",
            };
            return Err(PushError::TooLarge { field, size: payload.len(), max });
        }
        Ok(())
    }

    /// Numbers `push` with the user's next seq and queues it to every live
    /// connection of the user subscribed to its event. Never waits on a
    /// connection; costs one allocation plus one queue insert per connection.
    pub fn publish(&self, push: Push) -> Result<Published, PushError> {
        let result = self.publish_checked(push);
        self.metrics.push(match &result {
            Ok(published) if published.duplicate => PushResult::Duplicate,
            Ok(_) => PushResult::Ok,
            Err(PushError::ShuttingDown | PushError::Unavailable(_)) => PushResult::Unavailable,
            Err(
                PushError::EmptyUser | PushError::BadEvent(_) | PushError::TooLarge { .. } | PushError::TooLong { .. },
            ) => PushResult::Invalid,
        });
        result
    }

    fn publish_checked(&self, push: Push) -> Result<Published, PushError> {
        self.validate(&push)?;
        if self.is_shutting_down() {
            return Err(PushError::ShuttingDown);
        }
        let published = self.number_and_fan_out(push)?;
        self.enforce_budget();
        Ok(published)
    }

    /// The part of a publish under the user's shard lock.
    fn number_and_fan_out(&self, push: Push) -> Result<Published, PushError> {
        let now = Instant::now();
        let mut shard = self.shard(&push.user_id);
        let entry = match shard.get_mut(push.user_id.as_str()) {
            Some(entry) => entry,
            None => {
                let user: UserId = Arc::from(push.user_id);
                shard.entry(Arc::clone(&user)).or_insert_with(|| UserEntry::new(user))
            }
        };
        if let Some(seq) = push.idempotency_key.as_deref().and_then(|k| entry.keys.as_ref()?.get(k)) {
            return Ok(Published { delivered: 0, seq, duplicate: true, nodes: 0 });
        }
        entry.seq += 1;
        let seq = entry.seq;
        entry.position_until = now.checked_add(self.config.history_meta_ttl);
        let event = interned(&entry.subscribers, &push.event)
            .or_else(|| entry.history().event(&push.event))
            .unwrap_or_else(|| Arc::from(push.event));
        let replay_ms = push.ttl.map_or(u32::MAX, |ttl| replay_ms(ttl.as_millis()));
        let kept = Kept::new(seq, unix_ms(), now, replay_ms, event, push.payload);
        let delivered = self.fan_out_kept(&entry.subscribers, &kept);
        self.keep(entry, kept);
        if let Some(key) = push.idempotency_key {
            entry.keys.get_or_insert_with(Box::default).insert(key, seq, now);
        }
        Ok(Published { delivered, seq, duplicate: false, nodes: 0 })
    }

    /// Keeps `kept` in the user's history, within the gateway-wide budget.
    fn keep(&self, entry: &mut UserEntry, kept: Kept) {
        let history = entry.history.get_or_insert_with(Box::default);
        let before = history.footprint();
        if self.config.history_size > 0 {
            self.budget.kept(history.keeper(&entry.user), kept.seq);
        }
        history.remember(kept, self.config.history_size);
        self.budget.adjust(before, history.footprint());
    }

    /// Evicts what is over the history budget; call with no shard locked.
    fn enforce_budget(&self) {
        if self.budget.is_over() {
            self.evict_oldest_history();
        }
    }

    /// Evicts the oldest deliveries of any user's history until all
    /// histories together are within `--history-max-bytes` again.
    fn evict_oldest_history(&self) {
        while self.budget.is_over() {
            let Some(record) = self.budget.oldest() else { return };
            let user = &record.keeper.user;
            let mut shard = self.shard(user);
            let kept_there = shard.get_mut(user).and_then(|e| e.history.as_deref_mut());
            let Some(history) = kept_there.filter(|h| h.is_kept_by(&record.keeper)) else { continue };
            let before = history.footprint();
            let evicted = history.evict_through(record.seq);
            self.budget.adjust(before, history.footprint());
            self.metrics.history_evictions.inc_by(evicted as u64);
        }
    }

    /// Queues the delivery of `kept` to each member subscribed to its event;
    /// builds it only when there is one.
    fn fan_out_kept(&self, subscribers: &[Subscriber], kept: &Kept) -> u32 {
        let mut members = subscribers.iter().filter(|m| m.events.contains(&kept.event)).peekable();
        if members.peek().is_none() {
            return 0;
        }
        self.offer_each(members, &Arc::new(kept.delivery()))
    }

    /// Queues `delivery` to each member subscribed to its event.
    fn fan_out(&self, subscribers: &[Subscriber], delivery: &Arc<Delivery>) -> u32 {
        self.offer_each(subscribers.iter().filter(|m| m.events.contains(&delivery.event)), delivery)
    }

    /// Queues `delivery` to each of `members`; returns how many took it.
    fn offer_each<'m>(&self, members: impl Iterator<Item = &'m Subscriber>, delivery: &Arc<Delivery>) -> u32 {
        let mut delivered = 0;
        for member in members {
            match member.outbox.offer(Arc::clone(delivery)) {
                Offer::Queued { dropped } => {
                    delivered += 1;
                    self.metrics.dropped(DropReason::DropOldest, u64::from(dropped));
                }
                Offer::Overflowed { dropped } => {
                    self.metrics.dropped(DropReason::SlowConsumer, u64::from(dropped));
                }
                Offer::Closed => {}
            }
        }
        self.metrics.deliveries.inc_by(u64::from(delivered));
        delivered
    }

    /// Queues one delivery, encoded once and without a seq, to every
    /// connection subscribed to `event` — only those of `users` when it is not
    /// empty, each user once however often it is listed. Costs a walk over
    /// every user when `users` is empty.
    pub fn broadcast(&self, event: &str, payload: Payload, users: &[String]) -> Result<u32, PushError> {
        validate_event(event).map_err(PushError::BadEvent)?;
        self.validate_payload(&payload)?;
        if self.is_shutting_down() {
            return Err(PushError::ShuttingDown);
        }
        let delivery = Arc::new(Delivery::new(Arc::from(event), None, payload, None));
        let mut delivered = 0;
        if users.is_empty() {
            for shard in self.each_shard() {
                delivered += shard.values().map(|e| self.fan_out(&e.subscribers, &delivery)).sum::<u32>();
            }
        } else {
            // Each user once, however often the list names it.
            let mut seen = std::collections::HashSet::with_capacity(users.len());
            for user in users.iter().filter(|u| seen.insert(u.as_str())) {
                if let Some(entry) = self.shard(user).get(user.as_str()) {
                    delivered += self.fan_out(&entry.subscribers, &delivery);
                }
            }
        }
        self.metrics.broadcasts.inc();
        Ok(delivered)
    }

    /// Closes the user's connections (only those subscribed to `event` when
    /// given) with 4502 and removes them from the registry at once. Returns
    /// how many.
    pub fn disconnect(&self, user: &str, event: Option<&str>) -> u32 {
        let mut shard = self.shard(user);
        let Some(entry) = shard.get_mut(user) else { return 0 };
        let (gone, kept): (Vec<Subscriber>, Vec<Subscriber>) = std::mem::take(&mut entry.subscribers)
            .into_iter()
            .partition(|m| event.is_none_or(|e| m.events.iter().any(|x| &**x == e)));
        entry.subscribers = kept;
        for (i, member) in gone.iter().enumerate() {
            member.outbox.close(CloseReason::new(CloseCode::Disconnected));
            self.metrics.left(member.events.len(), i + 1 == gone.len() && entry.subscribers.is_empty());
        }
        Self::prune(&mut shard, user);
        gone.len() as u32
    }

    /// Live connections of each user, in the order given.
    pub fn online(&self, users: &[String]) -> Vec<u32> {
        users.iter().map(|u| self.shard(u).get(u.as_str()).map_or(0, |e| e.subscribers.len() as u32)).collect()
    }

    /// Expires history and idempotency keys older than the history TTL, and
    /// drops entries nothing needs any more (see `UserEntry::is_idle`).
    /// Called periodically by the heartbeat.
    pub fn sweep(&self) {
        let now = Instant::now();
        let ttl = self.config.history_ttl;
        for mut shard in self.each_shard() {
            shard.retain(|_, e| {
                if let Some(history) = e.history.as_deref_mut() {
                    let before = history.footprint();
                    history.expire(ttl, now);
                    self.budget.adjust(before, history.footprint());
                }
                if e.keys.as_deref_mut().is_some_and(|keys| keys.expire(ttl, now)) {
                    e.keys = None;
                }
                !e.is_idle(now)
            });
        }
    }

    /// How many groups [`Hub::slice_outboxes`] splits the connections into.
    pub(crate) fn slices(&self) -> usize {
        self.shards.len()
    }

    /// A snapshot of the outboxes of one group of connections (one shard's;
    /// `slice` below [`Hub::slices`]), so that work over every connection
    /// can be spread over time. Locks that one shard.
    pub(crate) fn slice_outboxes(&self, slice: usize) -> Vec<Arc<Outbox>> {
        let Some(shard) = self.shards.get(slice) else { return Vec::new() };
        let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        shard.values().flat_map(|e| e.subscribers.iter().map(|m| Arc::clone(&m.outbox))).collect()
    }

    /// A snapshot of every joined connection's outbox (for shutdown),
    /// taken shard by shard.
    pub fn outboxes(&self) -> Vec<Arc<Outbox>> {
        (0..self.slices()).flat_map(|slice| self.slice_outboxes(slice)).collect()
    }
}

/// The `EventName` a subscriber already holds for `event`, if any: sharing
/// it saves an allocation (and a free) per push.
fn interned(subscribers: &[Subscriber], event: &str) -> Option<EventName> {
    subscribers.iter().flat_map(|m| m.events.iter()).find(|e| &***e == event).cloned()
}

/// A push's TTL as a [`Kept::replay_ms`]. Beyond `u32::MAX - 1` ms
/// (~49 days, longer than the longest history TTL) it is cut to that.
fn replay_ms(ttl_ms: u128) -> u32 {
    u32::try_from(ttl_ms).unwrap_or(u32::MAX).min(u32::MAX - 1)
}

/// A fresh, unpredictable epoch: 16 hex digits from a randomly seeded hasher
/// over the process, the time and a counter (so two are never alike).
pub(super) fn new_epoch() -> Arc<str> {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    // Asked once: `process::id` is a system call each time, and a new
    // user's entry (each first connection of a user) makes an epoch.
    static PROCESS: OnceLock<u32> = OnceLock::new();
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let process = *PROCESS.get_or_init(std::process::id);
    let seed = RandomState::default().hash_one((process, Instant::now(), n));
    // By hand, not `format!`: the formatting machinery was most of a new
    // user's cost here (each first connection of a user pays it).
    let mut hex = [0u8; 16];
    for (i, digit) in hex.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[(seed >> (60 - 4 * i)) as usize & 0xf];
    }
    Arc::from(std::str::from_utf8(&hex).unwrap_or("0000000000000000"))
}
