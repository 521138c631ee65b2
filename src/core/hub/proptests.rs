//! Property tests of the hub: any interleaving of join, register (a second
//! join of a user), subscribe, unsubscribe, leave, disconnect, push,
//! broadcast, drain and sweep over 3 users, 6 connection slots and 3 events,
//! under generated limits, checked step by step against a model written from
//! docs/protocol.md ("Delivery semantics", "Limits") and docs/api.md.
//!
//! After every step: the registry holds exactly the users the model says
//! (an entry is kept only while it has a connection, history, an
//! idempotency key or a stream position within the meta TTL), with the model's `seq`; history never exceeds
//! `history_size`; the gauges match. Each push or broadcast is `delivered`
//! to exactly the connections the model predicts, and what each outbox
//! yields is exactly what the model queued (slow-consumer policy included),
//! pushes in increasing `seq`. Joins and subscribes replay exactly the kept
//! history after `since` for their new events, and `complete` says whether
//! history reached back. At the end, when every connection has left, no
//! connection, subscription or outbox is left, the counters add up (what was
//! delivered was drained or counted as dropped), and a sweep past the TTL
//! leaves no user entry at all.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::{Hub, HubConfig, JoinError, Published, Push, PushError, UserId};
use crate::core::close::CloseCode;
use crate::core::delivery::{Delivery, Payload};
use crate::core::event::EventName;
use crate::core::history::Since;
use crate::core::outbox::{Outbox, SlowPolicy};

const USERS: [&str; 3] = ["u0", "u1", "u2"];
const EVENTS: [&str; 3] = ["a", "b", "c"];
const SLOTS: usize = 6;
const MAX_MESSAGE: usize = 160;

#[derive(Debug, Clone)]
enum Op {
    /// A session registers on `slot` (a second register when the slot is live).
    Join {
        slot: usize,
        user: usize,
        events: Vec<usize>,
        since: Option<u64>,
    },
    Subscribe {
        slot: usize,
        events: Vec<usize>,
        since: Option<u64>,
    },
    Unsubscribe {
        slot: usize,
        events: Vec<usize>,
    },
    Leave {
        slot: usize,
    },
    Disconnect {
        user: usize,
        event: Option<usize>,
    },
    Push {
        user: usize,
        event: usize,
        size: usize,
        key: Option<u8>,
    },
    Broadcast {
        event: usize,
        users: Vec<usize>,
        size: usize,
    },
    Drain {
        slot: usize,
    },
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let user = 0..USERS.len();
    let event = 0..EVENTS.len();
    let events = prop::collection::vec(0..EVENTS.len(), 0..4);
    let since = prop::option::of(0u64..12);
    let size = 8..MAX_MESSAGE + 24;
    prop_oneof![
        3 => (slot.clone(), user.clone(), events.clone(), since.clone())
            .prop_map(|(slot, user, events, since)| Op::Join { slot, user, events, since }),
        2 => (slot.clone(), events.clone(), since).prop_map(|(slot, events, since)| Op::Subscribe { slot, events, since }),
        1 => (slot.clone(), events.clone()).prop_map(|(slot, events)| Op::Unsubscribe { slot, events }),
        2 => slot.clone().prop_map(|slot| Op::Leave { slot }),
        1 => (user.clone(), prop::option::of(event.clone())).prop_map(|(user, event)| Op::Disconnect { user, event }),
        6 => (user, event.clone(), size.clone(), prop::option::of(0u8..3))
            .prop_map(|(user, event, size, key)| Op::Push { user, event, size, key }),
        1 => (event, prop::collection::vec(0..USERS.len(), 0..4), size)
            .prop_map(|(event, users, size)| Op::Broadcast { event, users, size }),
        3 => (0..SLOTS).prop_map(|slot| Op::Drain { slot }),
        1 => Just(Op::Sweep),
    ]
}

fn config() -> impl Strategy<Value = HubConfig> {
    (
        prop::sample::select(vec![0usize, 1, 3, 64]),
        prop::sample::select(vec![300usize, 700, 1 << 20]),
        prop::bool::ANY,
        1usize..=3,
        prop::sample::select(vec![1usize, 2, 6]),
        prop::bool::ANY,
    )
        .prop_map(|(history_size, conn_queue_bytes, drop_oldest, max_events, max_conns, ttl_zero)| HubConfig {
            conn_queue_bytes,
            slow_policy: if drop_oldest { SlowPolicy::DropOldest } else { SlowPolicy::Close },
            max_events_per_conn: max_events,
            max_connections_per_user: max_conns,
            max_message_bytes: MAX_MESSAGE,
            history_size,
            history_ttl: if ttl_zero { Duration::ZERO } else { Duration::from_secs(3600) },
            history_meta_ttl: if ttl_zero { Duration::ZERO } else { Duration::from_secs(3600) },
            // The model keeps no global budget; the default is never reached here.
            history_max_bytes: HubConfig::default().history_max_bytes,
        })
}

/// A delivery as the model knows it: seq (none for a broadcast), event and
/// the payload, which starts with a unique number.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    seq: Option<u64>,
    event: usize,
    body: String,
}

impl Item {
    fn of(d: &Delivery) -> Self {
        let Payload::Text(text) = &d.payload else { panic!("the model pushes text") };
        let event = EVENTS.iter().position(|e| **e == *d.event).expect("a model event");
        Item { seq: d.seq, event, body: text.as_str().to_owned() }
    }

    /// What it costs in an outbox (as `Delivery::queue_cost`).
    fn cost(&self) -> usize {
        self.body.len() + 64 + EVENTS[self.event].len()
    }
}

#[derive(Debug)]
struct Conn {
    user: usize,
    id: u64,
    /// In the hub's order: the join's, then each subscribe's additions.
    events: Vec<usize>,
    outbox: Arc<Outbox>,
    /// What the outbox holds, in order, and its close.
    queue: VecDeque<Item>,
    closed: Option<CloseCode>,
    /// False once the hub removed it (disconnect): the session still holds
    /// the slot until it leaves.
    joined: bool,
    /// Last push seq drained from the outbox.
    last_seq: u64,
}

#[derive(Debug, Default)]
struct User {
    seq: u64,
    history: VecDeque<Item>,
    /// Every push with a seq above this is in `history`.
    floor: u64,
    keys: HashMap<u8, u64>,
}

struct Model {
    config: HubConfig,
    hub: Arc<Hub>,
    slots: [Option<Conn>; SLOTS],
    users: [Option<User>; 3],
    next_id: u64,
    next_body: u64,
    delivered: u64,
    drained: u64,
    pushes_ok: u64,
    overflowed: u64,
    /// What the outboxes of finished sessions dropped.
    dropped: u64,
}

fn names(events: &[usize]) -> Vec<EventName> {
    events.iter().map(|&e| Arc::from(EVENTS[e])).collect()
}

/// The events of `new` not in `have`, each once, in order.
fn added(have: &[usize], new: &[usize]) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    for &e in new {
        if !have.contains(&e) && !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

fn drain(outbox: &Outbox) -> (Vec<Arc<Delivery>>, Option<CloseCode>) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut items = Vec::new();
    match outbox.poll_drain(&mut cx, &mut items, false) {
        Poll::Ready(d) => (items, d.close.map(|c| c.code)),
        Poll::Pending => (items, None),
    }
}

impl Model {
    fn new(config: HubConfig) -> Self {
        Self {
            hub: Hub::new(config.clone()),
            config,
            slots: Default::default(),
            users: Default::default(),
            next_id: 1,
            next_body: 0,
            delivered: 0,
            drained: 0,
            pushes_ok: 0,
            overflowed: 0,
            dropped: 0,
        }
    }

    fn body(&mut self, size: usize) -> String {
        self.next_body += 1;
        let mut body = format!("{:08}", self.next_body);
        body.extend(std::iter::repeat_n('x', size.saturating_sub(8)));
        body
    }

    /// The model's outbox offer: `--conn-queue-bytes` and the slow policy.
    fn offer(config: &HubConfig, conn: &mut Conn, item: &Item, overflowed: &mut u64) -> bool {
        if conn.closed.is_some() {
            return false;
        }
        let bytes = |q: &VecDeque<Item>| q.iter().map(Item::cost).sum::<usize>();
        if bytes(&conn.queue) + item.cost() > config.conn_queue_bytes {
            match config.slow_policy {
                SlowPolicy::Close => {
                    conn.queue.clear();
                    conn.closed = Some(CloseCode::SlowConsumer);
                    *overflowed += 1;
                    return false;
                }
                SlowPolicy::DropOldest => {
                    while !conn.queue.is_empty() && bytes(&conn.queue) + item.cost() > config.conn_queue_bytes {
                        conn.queue.pop_front();
                    }
                }
            }
        }
        conn.queue.push_back(item.clone());
        true
    }

    /// The user's entry may go once nothing needs it: no connection, no
    /// history, no key, and no stream position kept (a position is kept for
    /// the meta TTL after a push; a zero TTL keeps none).
    fn prune(&mut self, user: usize) {
        let connected = self.slots.iter().flatten().any(|c| c.joined && c.user == user);
        let meta_zero = self.config.history_meta_ttl.is_zero();
        let idle = |u: &User| !connected && u.history.is_empty() && u.keys.is_empty() && (u.seq == 0 || meta_zero);
        if self.users[user].as_ref().is_some_and(idle) {
            self.users[user] = None;
        }
    }

    /// The replay of `user`'s history after `since` on `events`, and whether
    /// history reaches back to `since`.
    fn replay(&self, user: usize, since: u64, events: &[usize]) -> (Vec<Item>, bool, u64) {
        let u = self.users[user].as_ref().expect("an entry");
        let complete = since <= u.seq && since >= u.floor;
        let items = if since > u.seq {
            Vec::new()
        } else {
            u.history
                .iter()
                .filter(|i| i.seq.is_some_and(|s| s > since) && events.contains(&i.event))
                .cloned()
                .collect()
        };
        (items, complete, u.seq)
    }

    fn check_replay(&self, user: usize, since: Option<u64>, events: &[usize], got: Option<&super::Replay>) {
        match (since, got) {
            (None, None) => {}
            (Some(since), Some(r)) => {
                let (items, complete, to) = self.replay(user, since, events);
                let got: Vec<Item> = r.deliveries.iter().map(|d| Item::of(d)).collect();
                assert_eq!(got, items, "replay after {since} on {events:?}");
                assert_eq!((r.from, r.to, r.complete), (since, to, complete), "replay bounds after {since}");
                assert!(got.windows(2).all(|w| w[0].seq < w[1].seq), "replay out of order");
            }
            (since, got) => panic!("since {since:?} gave replay {got:?}"),
        }
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Join { slot, user, ref events, since } => match &self.slots[slot] {
                Some(conn) if conn.joined => {
                    // A second register on a live connection adds events.
                    let slot_user = conn.user;
                    self.subscribe(slot, slot_user, events, since);
                }
                Some(_) => {}
                None => self.join(slot, user, events, since),
            },
            Op::Subscribe { slot, ref events, since } => {
                if let Some(conn) = self.slots[slot].as_ref().filter(|c| c.joined) {
                    let user = conn.user;
                    self.subscribe(slot, user, events, since);
                }
            }
            Op::Unsubscribe { slot, ref events } => {
                let Some(conn) = self.slots[slot].as_mut() else { return };
                let got = self.hub.unsubscribe(USERS[conn.user], conn.id, &names(events));
                if conn.joined {
                    conn.events.retain(|e| !events.contains(e));
                    assert_eq!(got, names(&conn.events), "events after unsubscribe");
                } else {
                    assert!(got.is_empty(), "a removed connection has no events");
                }
            }
            Op::Leave { slot } => {
                let Some(conn) = self.slots[slot].take() else { return };
                self.hub.leave(USERS[conn.user], conn.id);
                self.finish(conn);
            }
            Op::Disconnect { user, event } => {
                let closed = self.hub.disconnect(USERS[user], event.map(|e| EVENTS[e]));
                let mut want = 0;
                for conn in self.slots.iter_mut().flatten() {
                    if conn.joined && conn.user == user && event.is_none_or(|e| conn.events.contains(&e)) {
                        conn.joined = false;
                        conn.closed.get_or_insert(CloseCode::Disconnected);
                        want += 1;
                    }
                }
                assert_eq!(closed, want, "disconnected connections");
                self.prune(user);
            }
            Op::Push { user, event, size, key } => self.push(user, event, size, key),
            Op::Broadcast { event, ref users, size } => self.broadcast(event, users, size),
            Op::Drain { slot } => {
                if let Some(conn) = self.slots[slot].as_mut() {
                    let drained = Self::drain_into(conn);
                    self.drained += drained;
                }
            }
            Op::Sweep => self.sweep(),
        }
        self.check_registry();
    }

    fn join(&mut self, slot: usize, user: usize, events: &[usize], since: Option<u64>) {
        let id = self.next_id;
        self.next_id += 1;
        let outbox = self.hub.new_outbox();
        let uid: UserId = Arc::from(USERS[user]);
        let since_seq = since.map(Since::seq);
        let got = self.hub.join(&uid, id, Arc::clone(&outbox), &names(events), since_seq.as_ref());
        let subscribed = added(&[], events);
        let live = self.slots.iter().flatten().filter(|c| c.joined && c.user == user).count();
        if subscribed.len() > self.config.max_events_per_conn {
            assert_eq!(got.err(), Some(JoinError::TooManyEvents(self.config.max_events_per_conn)));
            return;
        }
        if live >= self.config.max_connections_per_user {
            assert_eq!(got.err(), Some(JoinError::UserLimit(live)));
            return;
        }
        let joined = got.expect("the model admits this join");
        self.users[user].get_or_insert_with(User::default);
        assert_eq!(joined.events, names(&subscribed), "events after join");
        assert_eq!(joined.seq, self.users[user].as_ref().map_or(0, |u| u.seq), "seq at join");
        self.check_replay(user, since, &subscribed, joined.replay.as_ref());
        let conn = Conn {
            user,
            id,
            events: subscribed,
            outbox,
            queue: VecDeque::new(),
            closed: None,
            joined: true,
            last_seq: 0,
        };
        self.slots[slot] = Some(conn);
    }

    fn subscribe(&mut self, slot: usize, user: usize, events: &[usize], since: Option<u64>) {
        let conn = self.slots[slot].as_mut().expect("a live slot");
        let since_seq = since.map(Since::seq);
        let got = self.hub.subscribe(USERS[user], conn.id, &names(events), since_seq.as_ref());
        let new = added(&conn.events, events);
        if conn.events.len() + new.len() > self.config.max_events_per_conn {
            assert_eq!(got.err(), Some(JoinError::TooManyEvents(self.config.max_events_per_conn)));
            return;
        }
        let joined = got.expect("the model admits this subscribe");
        conn.events.extend(new.iter().copied());
        assert_eq!(joined.events, names(&conn.events), "events after subscribe");
        let seq = self.users[user].as_ref().expect("an entry").seq;
        assert_eq!(joined.seq, seq, "seq at subscribe");
        self.check_replay(user, since, &new, joined.replay.as_ref());
    }

    fn push(&mut self, user: usize, event: usize, size: usize, key: Option<u8>) {
        let body = self.body(size);
        let mut push = Push::new(USERS[user], EVENTS[event], Payload::text(body.clone()));
        push.idempotency_key = key.map(|k| format!("k{k}"));
        let got = self.hub.publish(push);
        if size > MAX_MESSAGE {
            assert_eq!(got, Err(PushError::TooLarge { field: "message", size, max: MAX_MESSAGE }));
            return;
        }
        let got = got.expect("a valid push");
        self.delivered += u64::from(got.delivered);
        // Every push is numbered: the entry (and its position) exists from here.
        let u = self.users[user].get_or_insert_with(User::default);
        if let Some(seq) = key.and_then(|k| u.keys.get(&k)) {
            assert_eq!(got, Published { delivered: 0, seq: *seq, duplicate: true, nodes: 0 }, "a repeated key");
            return;
        }
        self.pushes_ok += 1;
        u.seq += 1;
        let item = Item { seq: Some(u.seq), event, body };
        if self.config.history_size == 0 {
            u.floor = u.seq;
        } else {
            while u.history.len() >= self.config.history_size {
                let gone = u.history.pop_front().expect("not empty");
                u.floor = u.floor.max(gone.seq.expect("pushes have a seq"));
            }
            u.history.push_back(item.clone());
        }
        if let Some(k) = key {
            u.keys.insert(k, u.seq);
        }
        let seq = u.seq;
        let mut delivered = 0;
        for conn in self.slots.iter_mut().flatten() {
            if conn.joined && conn.user == user && conn.events.contains(&event) {
                delivered += u32::from(Self::offer(&self.config, conn, &item, &mut self.overflowed));
            }
        }
        assert_eq!(got, Published { delivered, seq, duplicate: false, nodes: 0 }, "push of {user}/{event}");
    }

    fn broadcast(&mut self, event: usize, users: &[usize], size: usize) {
        let body = self.body(size);
        let listed: Vec<String> = users.iter().map(|&u| USERS[u].to_owned()).collect();
        let got = self.hub.broadcast(EVENTS[event], Payload::text(body.clone()), &listed);
        if size > MAX_MESSAGE {
            assert!(matches!(got, Err(PushError::TooLarge { .. })), "{got:?}");
            return;
        }
        let item = Item { seq: None, event, body };
        let mut delivered = 0;
        for conn in self.slots.iter_mut().flatten() {
            let reached = users.is_empty() || users.contains(&conn.user);
            if conn.joined && reached && conn.events.contains(&event) {
                delivered += u32::from(Self::offer(&self.config, conn, &item, &mut self.overflowed));
            }
        }
        assert_eq!(got, Ok(delivered), "broadcast on {event} to {users:?}");
        self.delivered += u64::from(delivered);
    }

    /// Drains `conn`'s outbox and compares it with the model's queue.
    fn drain_into(conn: &mut Conn) -> u64 {
        let (items, close) = drain(&conn.outbox);
        let got: Vec<Item> = items.iter().map(|d| Item::of(d)).collect();
        let want: Vec<Item> = conn.queue.drain(..).collect();
        assert_eq!(got, want, "what outbox {} yields", conn.id);
        assert_eq!(close, conn.closed, "close of outbox {}", conn.id);
        for seq in got.iter().filter_map(|i| i.seq) {
            assert!(seq > conn.last_seq, "seq {seq} after {} on connection {}", conn.last_seq, conn.id);
            conn.last_seq = seq;
        }
        got.len() as u64
    }

    /// A session that has left: what it still held is drained.
    fn finish(&mut self, mut conn: Conn) {
        conn.joined = false;
        self.drained += Self::drain_into(&mut conn);
        self.dropped += conn.outbox.dropped();
        let user = conn.user;
        self.prune(user);
    }

    fn sweep(&mut self) {
        if self.config.history_ttl.is_zero() {
            // Let the clock pass every instant already recorded, so a TTL of
            // zero expires all of it.
            let t0 = Instant::now();
            while Instant::now() <= t0 {
                std::hint::spin_loop();
            }
            for u in self.users.iter_mut().flatten() {
                if let Some(last) = u.history.back() {
                    u.floor = u.floor.max(last.seq.expect("pushes have a seq"));
                }
                u.history.clear();
                u.keys.clear();
            }
        }
        self.hub.sweep();
        for user in 0..USERS.len() {
            self.prune(user);
        }
    }

    /// The registry, history bounds and gauges against the model.
    fn check_registry(&self) {
        let mut seen = [false; 3];
        for shard in self.hub.each_shard() {
            for (name, entry) in shard.iter() {
                let user = USERS.iter().position(|u| **u == **name).expect("a model user");
                seen[user] = true;
                let model = self.users[user].as_ref().unwrap_or_else(|| panic!("leaked entry of {name}"));
                // An entry may be idle between a push and the next sweep or
                // leave (a push never prunes); whether it exists is checked
                // against the model below.
                assert_eq!(entry.seq, model.seq, "seq of {name}");
                assert!(entry.history().count() <= self.config.history_size, "history of {name} over its size");
                assert_eq!(entry.history().count(), model.history.len(), "history of {name}");
                let mut ids: Vec<u64> = entry.subscribers.iter().map(|s| s.id).collect();
                let mut want: Vec<u64> =
                    self.slots.iter().flatten().filter(|c| c.joined && c.user == user).map(|c| c.id).collect();
                ids.sort_unstable();
                want.sort_unstable();
                assert_eq!(ids, want, "connections of {name}");
            }
        }
        for (user, model) in self.users.iter().enumerate() {
            assert_eq!(seen[user], model.is_some(), "entry of {} (model: {model:?})", USERS[user]);
        }
        let live: Vec<&Conn> = self.slots.iter().flatten().filter(|c| c.joined).collect();
        let stats = self.hub.stats();
        assert_eq!(stats.connections, live.len() as u64, "connections gauge");
        let users: std::collections::BTreeSet<usize> = live.iter().map(|c| c.user).collect();
        assert_eq!(stats.users, users.len() as u64, "users gauge");
        assert_eq!(stats.subscriptions, live.iter().map(|c| c.events.len() as u64).sum::<u64>(), "subscriptions");
        assert_eq!(self.hub.outboxes().len(), live.len(), "outboxes");
    }

    /// Every session leaves; then nothing but history and keys may remain,
    /// and a sweep past the TTL (when it is zero) removes those too.
    fn all_leave(mut self) {
        for slot in 0..SLOTS {
            if let Some(conn) = self.slots[slot].take() {
                self.hub.leave(USERS[conn.user], conn.id);
                self.finish(conn);
                self.check_registry();
            }
        }
        let stats = self.hub.stats();
        assert_eq!((stats.connections, stats.users, stats.subscriptions), (0, 0, 0), "{stats:?}");
        assert!(self.hub.outboxes().is_empty(), "outboxes left");
        assert_eq!(stats.deliveries, self.delivered, "deliveries counted");
        assert_eq!(stats.pushes, self.pushes_ok, "pushes counted");
        let dropped = self.dropped;
        assert_eq!(stats.drops, dropped, "drops counted");
        // Each delivery was drained, or dropped from its queue; an overflow
        // also counts the refused delivery, which was never delivered.
        assert_eq!(self.delivered + self.overflowed, self.drained + dropped, "delivered = drained + dropped");
        if self.config.history_ttl.is_zero() {
            self.sweep();
            self.check_registry();
            assert!(self.users.iter().all(Option::is_none), "entries left after the TTL");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_interleaving_keeps_the_hub_consistent(config in config(), ops in prop::collection::vec(op(), 1..80)) {
        let mut model = Model::new(config);
        for op in &ops {
            model.step(op);
        }
        model.all_leave();
    }
}
