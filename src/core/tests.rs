//! Unit tests of the hub's bookkeeping; the end-to-end behaviour is tested in
//! `tests/` against the real server.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::*;

fn hub(config: HubConfig) -> Arc<Hub> {
    Hub::new(config)
}

fn text(user: &str, event: &str, msg: &str) -> Push {
    Push::new(user, event, Payload::text(msg.to_owned()))
}

fn drain(outbox: &Outbox) -> (Vec<Arc<Delivery>>, Drained) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut items = Vec::new();
    match outbox.poll_drain(&mut cx, &mut items, false) {
        Poll::Ready(d) => (items, d),
        Poll::Pending => (items, Drained::default()),
    }
}

fn events(names: &[&str]) -> Vec<EventName> {
    names.iter().map(|n| event_name(n).expect("valid")).collect()
}

#[test]
fn publish_reaches_subscribed_members_only_in_order() {
    let hub = hub(HubConfig::default());
    let u1: UserId = Arc::from("u1");
    let (a, b, other) = (hub.new_outbox(), hub.new_outbox(), hub.new_outbox());
    hub.join(&u1, 1, Arc::clone(&a), &events(&["e"]), None).expect("join");
    hub.join(&u1, 2, Arc::clone(&b), &events(&["e", "f"]), None).expect("join");
    hub.join(&u1, 3, Arc::clone(&other), &events(&["g"]), None).expect("join");
    for i in 1..=3 {
        let p = hub.publish(text("u1", "e", &i.to_string())).expect("publish");
        assert_eq!(p, Published { delivered: 2, seq: i, duplicate: false, nodes: 0 });
    }
    assert_eq!(hub.publish(text("u1", "f", "x")).expect("publish").delivered, 1);
    let (got, _) = drain(&a);
    let seqs: Vec<_> = got.iter().map(|d| d.seq).collect();
    assert_eq!(seqs, vec![Some(1), Some(2), Some(3)]);
    assert_eq!(drain(&b).0.len(), 4);
    assert!(drain(&other).0.is_empty());
    assert_eq!(hub.stats().connections, 3);
    assert_eq!(hub.stats().users, 1);
    hub.leave("u1", 1);
    hub.leave("u1", 2);
    hub.leave("u1", 3);
    assert_eq!(hub.stats().users, 0);
    assert_eq!(hub.online(&["u1".into()]), vec![0]);
}

#[test]
fn validation_names_the_field() {
    let hub = hub(HubConfig { max_message_bytes: 4, ..HubConfig::default() });
    assert_eq!(hub.publish(text("", "e", "x")), Err(PushError::EmptyUser));
    let err = hub.publish(text("u", "", "x")).expect_err("empty event");
    assert!(err.to_string().starts_with("event"), "{err}");
    let err = hub.publish(text("u", "e", "12345")).expect_err("too large");
    assert!(err.to_string().starts_with("message"), "{err}");
}

#[test]
fn idempotency_key_acknowledges_without_delivering_again() {
    let hub = hub(HubConfig::default());
    let u: UserId = Arc::from("u");
    let o = hub.new_outbox();
    hub.join(&u, 1, Arc::clone(&o), &events(&["e"]), None).expect("join");
    let mut push = text("u", "e", "once");
    push.idempotency_key = Some("k".into());
    let first = hub.publish(push.clone()).expect("first");
    let again = hub.publish(push).expect("again");
    assert_eq!(again, Published { delivered: 0, seq: first.seq, duplicate: true, nodes: 0 });
    assert_eq!(drain(&o).0.len(), 1);
}

#[test]
fn replay_is_exact_and_says_when_incomplete() {
    let hub = hub(HubConfig { history_size: 5, ..HubConfig::default() });
    for i in 1..=4 {
        hub.publish(text("u", if i % 2 == 0 { "e" } else { "f" }, &i.to_string())).expect("publish");
    }
    let u: UserId = Arc::from("u");
    let joined = hub.join(&u, 1, hub.new_outbox(), &events(&["e"]), Some(&Since::seq(1))).expect("join");
    let replay = joined.replay.expect("replay");
    let seqs: Vec<_> = replay.deliveries.iter().map(|d| d.seq).collect();
    assert_eq!(seqs, vec![Some(2), Some(4)], "only its events, after since");
    assert!(replay.complete);
    assert_eq!((replay.from, replay.to), (1, 4));
    for i in 5..=10 {
        hub.publish(text("u", "e", &i.to_string())).expect("publish");
    }
    let joined = hub.join(&u, 2, hub.new_outbox(), &events(&["e"]), Some(&Since::seq(1))).expect("join");
    assert!(!joined.replay.expect("replay").complete, "history no longer reaches back");
}

#[test]
fn overflow_closes_with_4000_or_drops_oldest() {
    let cost = Delivery::new(event_name("e").expect("ok"), Some(1), Payload::text("x".repeat(100)), None).queue_cost();
    let close = hub(HubConfig { conn_queue_bytes: cost * 3, max_message_bytes: 100, ..HubConfig::default() });
    let u: UserId = Arc::from("u");
    let o = close.new_outbox();
    close.join(&u, 1, Arc::clone(&o), &events(&["e"]), None).expect("join");
    for _ in 0..4 {
        close.publish(text("u", "e", &"x".repeat(100))).expect("publish");
    }
    let (items, drained) = drain(&o);
    assert!(items.is_empty(), "queue released on overflow");
    assert_eq!(drained.close.map(|c| c.code), Some(CloseCode::SlowConsumer));
    assert_eq!(close.stats().drops, 4);

    let drop = hub(HubConfig {
        conn_queue_bytes: cost * 3,
        max_message_bytes: 100,
        slow_policy: SlowPolicy::DropOldest,
        ..HubConfig::default()
    });
    let o = drop.new_outbox();
    drop.join(&u, 1, Arc::clone(&o), &events(&["e"]), None).expect("join");
    for _ in 0..5 {
        drop.publish(text("u", "e", &"x".repeat(100))).expect("publish");
    }
    let (items, drained) = drain(&o);
    assert_eq!(items.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![Some(3), Some(4), Some(5)]);
    assert!(drained.close.is_none());
    assert_eq!(drop.stats().drops, 2);
    assert!(o.queued_bytes() == 0);
}

#[test]
fn user_limit_and_disconnect() {
    let hub = hub(HubConfig { max_connections_per_user: 2, ..HubConfig::default() });
    let u: UserId = Arc::from("u");
    let (a, b) = (hub.new_outbox(), hub.new_outbox());
    hub.join(&u, 1, Arc::clone(&a), &events(&["e"]), None).expect("join");
    hub.join(&u, 2, Arc::clone(&b), &events(&["f"]), None).expect("join");
    assert_eq!(hub.join(&u, 3, hub.new_outbox(), &events(&["e"]), None).err(), Some(JoinError::UserLimit(2)));
    assert_eq!(hub.disconnect("u", Some("f")), 1);
    assert_eq!(drain(&b).1.close.map(|c| c.code), Some(CloseCode::Disconnected));
    assert!(drain(&a).1.close.is_none());
    assert_eq!(hub.online(&["u".into()]), vec![1]);
}

/// Connections of one user that name the same event hold one copy of the
/// name (the fan-out then compares pointers), on join and on subscribe;
/// pushes reach them as before.
#[test]
fn a_users_connections_share_the_names_of_their_events() {
    let hub = hub(HubConfig::default());
    let u: UserId = Arc::from("u");
    let (a, b) = (hub.new_outbox(), hub.new_outbox());
    let first = hub.join(&u, 1, Arc::clone(&a), &events(&["e", "f"]), None).expect("join");
    let second = hub.join(&u, 2, Arc::clone(&b), &events(&["g", "e"]), None).expect("join");
    assert!(Arc::ptr_eq(&first.events[0], &second.events[1]), "`e` is shared");
    let added = hub.subscribe("u", 2, &events(&["f"]), None).expect("subscribe");
    assert!(Arc::ptr_eq(&first.events[1], &added.events[2]), "`f` is shared");
    assert_eq!(hub.publish(text("u", "e", "1")).expect("publish").delivered, 2);
    assert_eq!(hub.publish(text("u", "f", "2")).expect("publish").delivered, 2);
    assert_eq!(hub.publish(text("u", "g", "3")).expect("publish").delivered, 1);
    let texts = |outbox| drain(outbox).0.iter().map(|d| d.payload.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&a), [Payload::text("1"), Payload::text("2")]);
    assert_eq!(texts(&b), [Payload::text("1"), Payload::text("2"), Payload::text("3")]);
}

#[test]
fn a_refused_subscribe_changes_nothing_and_replays_only_new_events() {
    let hub = hub(HubConfig { max_events_per_conn: 3, ..HubConfig::default() });
    let u: UserId = Arc::from("u");
    hub.join(&u, 1, hub.new_outbox(), &events(&["a"]), None).expect("join");
    let refused = hub.subscribe("u", 1, &events(&["b", "c", "d"]), None);
    assert_eq!(refused.err(), Some(JoinError::TooManyEvents(3)));
    assert_eq!(hub.stats().subscriptions, 1, "nothing half-added");
    hub.publish(text("u", "a", "1")).expect("publish");
    hub.publish(text("u", "b", "2")).expect("publish");
    let joined = hub.subscribe("u", 1, &events(&["a", "b", "b"]), Some(&Since::seq(0))).expect("subscribe");
    assert_eq!(joined.events, events(&["a", "b"]));
    assert_eq!(hub.stats().subscriptions, 2);
    let replayed: Vec<_> = joined.replay.expect("replay").deliveries.iter().map(|d| d.seq).collect();
    assert_eq!(replayed, vec![Some(2)], "only the newly added event: `a` was live already");
}

#[test]
fn seq_outlives_history_and_a_new_stream_has_a_new_epoch() {
    let config = HubConfig { history_ttl: Duration::ZERO, ..HubConfig::default() };
    let hub = hub(config);
    let publish = |hub: &Hub| hub.publish(Push::new("u", "e", Payload::text("m"))).expect("publish").seq;
    assert_eq!((publish(&hub), publish(&hub), publish(&hub)), (1, 2, 3));
    hub.sweep(); // history (TTL 0) is gone; the position is kept
    assert_eq!(publish(&hub), 4, "seq continues after the history expired");

    // Without history at all, every push is still numbered.
    let bare = self::hub(HubConfig { history_size: 0, ..HubConfig::default() });
    assert_eq!((publish(&bare), publish(&bare)), (1, 2));

    // A position kept for no time is forgotten: seq restarts, under a new
    // epoch, and a resume from the old epoch is incomplete.
    let forgetful = HubConfig { history_ttl: Duration::ZERO, history_meta_ttl: Duration::ZERO, ..HubConfig::default() };
    let hub = self::hub(forgetful);
    let u: UserId = Arc::from("u");
    let first = hub.join(&u, 1, hub.new_outbox(), &events(&["e"]), None).expect("join");
    assert_eq!(publish(&hub), 1);
    hub.leave("u", 1);
    hub.sweep();
    assert_eq!(publish(&hub), 1, "forgotten after the meta TTL");
    let old = Since { seq: 1, epoch: Some(first.epoch.to_string()) };
    let again = hub.join(&u, 2, hub.new_outbox(), &events(&["e"]), Some(&old)).expect("join");
    assert_ne!(again.epoch, first.epoch, "a new stream, a new epoch");
    let replay = again.replay.expect("replay");
    assert!(!replay.complete, "the old epoch's seq says nothing about this stream");
    // The same epoch resumes completely.
    let same = Since { seq: 1, epoch: Some(again.epoch.to_string()) };
    let resumed = hub.join(&u, 3, hub.new_outbox(), &events(&["e"]), Some(&same)).expect("join");
    assert!(resumed.replay.expect("replay").complete);
}

#[test]
fn without_history_a_resume_from_the_past_is_incomplete() {
    // Found by the hub's property test: with --history-size 0 a user keeps
    // its entry (and seq) while it has a connection or an idempotency key,
    // and a resume from an earlier seq was reported complete with nothing
    // replayed.
    let hub = hub(HubConfig { history_size: 0, ..HubConfig::default() });
    let u: UserId = Arc::from("u");
    hub.join(&u, 1, hub.new_outbox(), &events(&["e"]), None).expect("join");
    for i in 1..=3 {
        assert_eq!(hub.publish(text("u", "e", &i.to_string())).expect("publish").seq, i);
    }
    let joined = hub.join(&u, 2, hub.new_outbox(), &events(&["e"]), Some(&Since::seq(1))).expect("join");
    let replay = joined.replay.expect("replay");
    assert!(replay.deliveries.is_empty());
    assert!(!replay.complete, "seq 2 and 3 were not kept");
    let joined = hub.join(&u, 3, hub.new_outbox(), &events(&["e"]), Some(&Since::seq(3))).expect("join");
    assert!(joined.replay.expect("replay").complete, "nothing was missed after the latest seq");
}

#[test]
fn the_history_budget_evicts_the_oldest_deliveries_of_any_user_first() {
    // Each 1000-byte push costs 1000 + 64 + 1 bytes; the budget holds 10.
    let cost = 1000 + 64 + 1;
    let hub = hub(HubConfig { history_max_bytes: 10 * cost, ..HubConfig::default() });
    let body = "x".repeat(1000);
    for round in 0..4 {
        for user in ["a", "b", "c", "d", "e"] {
            hub.publish(text(user, "e", &body)).expect("publish");
            assert!(hub.budget.held() <= 10 * cost, "round {round}: over the budget");
        }
    }
    // 20 pushes, 10 kept: rounds 0 and 1 of every user were evicted, oldest first.
    assert_eq!(hub.budget.held(), 10 * cost);
    assert_eq!(hub.metrics().history_evictions.get(), 10);
    let replay_of = |user: &str, id| {
        let u: UserId = Arc::from(user);
        let joined = hub.join(&u, id, hub.new_outbox(), &events(&["e"]), Some(&Since::seq(0))).expect("join");
        let replay = joined.replay.expect("replay");
        (replay.deliveries.iter().filter_map(|d| d.seq).collect::<Vec<_>>(), replay.complete)
    };
    assert_eq!(replay_of("a", 1), (vec![3, 4], false), "the budget's evictions make a resume incomplete");
    assert_eq!(replay_of("e", 2), (vec![3, 4], false));

    // Histories that shrink by their own size or TTL give their bytes back,
    // and the records of what they dropped do not pile up.
    let small = hub_with_small_history();
    for i in 0..20_000 {
        small.publish(text(&format!("u{}", i % 7), "e", "m")).expect("publish");
    }
    assert_eq!(small.budget.held(), 7 * 2 * (1 + 64 + 1), "two per user kept, all counted");
    assert!(small.budget.records() <= 2 * 14 + 4096 + 1, "records compacted: {}", small.budget.records());
    small.sweep();
    assert_eq!(small.budget.held(), 0, "expired history is no longer counted");
}

#[test]
fn a_steady_stream_of_pushes_keeps_the_budgets_records_near_the_live_count() {
    // Two kept per user, seven users: each push evicts the user's push of
    // 14 pushes ago, whose record is then at the front of the list. Without
    // the front drops the list would grow to 2 × 14 + 4096 records and then
    // be compacted whole, stopping every publisher meanwhile.
    let hub = hub(HubConfig { history_size: 2, ..HubConfig::default() });
    for i in 0..10_000 {
        hub.publish(text(&format!("u{}", i % 7), "e", "m")).expect("publish");
        assert!(hub.budget.records() <= 14 + 2, "push {i}: {} records for 14 kept", hub.budget.records());
    }
    // The list still starts at the oldest kept delivery (push 9 986, u4's
    // 1 427th), the one the budget would evict first.
    let oldest = hub.budget.oldest().expect("a live record");
    assert_eq!((&*oldest.keeper.user, oldest.seq), ("u4", 1427));
}

#[test]
fn a_kept_push_costs_a_small_record_beside_its_payload() {
    // What history holds per kept push besides the payload's buffer
    // (BENCHMARKS.md, "Memory per idle connection and per kept message"):
    // the budget's record here, the ring's slot in history.rs.
    assert!(std::mem::size_of::<super::budget::Record>() <= 16, "{}", std::mem::size_of::<super::budget::Record>());
}

fn hub_with_small_history() -> Arc<Hub> {
    hub(HubConfig { history_size: 2, history_ttl: Duration::ZERO, ..HubConfig::default() })
}

fn numbered(seq: u64, epoch: &Arc<str>) -> Numbered {
    Numbered {
        event: event_name("e").expect("valid"),
        seq,
        epoch: Arc::clone(epoch),
        ts_ms: 0,
        payload: Payload::text(format!("m{seq}")),
        expires_at_ms: None,
    }
}

#[test]
fn pushes_numbered_by_a_broker_arrive_in_order_and_resume_from_the_hub() {
    let hub = hub(HubConfig::default());
    let u: UserId = Arc::from("u");
    let epoch: Arc<str> = Arc::from("e1");
    // The broker keeps 3..=5 (1 and 2 were evicted there).
    let pushes = (3..=5).map(|s| numbered(s, &epoch)).collect();
    assert_eq!(hub.catch_up(&u, &epoch, 5, pushes), 0);
    let replay = |since: u64, id| {
        let joined = hub
            .join(&u, id, hub.new_outbox(), &events(&["e"]), Some(&Since { seq: since, epoch: Some("e1".into()) }))
            .expect("join");
        let replay = joined.replay.expect("replay");
        (replay.deliveries.iter().filter_map(|d| d.seq).collect::<Vec<_>>(), replay.complete)
    };
    assert_eq!(replay(2, 1), (vec![3, 4, 5], true));
    assert_eq!(replay(1, 2), (vec![3, 4, 5], false), "2 is not kept anywhere");
    let live = hub.new_outbox();
    hub.join(&u, 3, Arc::clone(&live), &events(&["e"]), None).expect("join");

    assert_eq!(hub.deliver(&u, numbered(6, &epoch)), Arrival::Delivered(3));
    assert_eq!(hub.deliver(&u, numbered(6, &epoch)), Arrival::Duplicate);
    assert_eq!(hub.deliver(&u, numbered(8, &epoch)), Arrival::Gap { after: 6 });
    // The gap is filled from the broker's history, then the push goes out in order.
    hub.catch_up(&u, &epoch, 8, (3..=8).map(|s| numbered(s, &epoch)).collect());
    assert_eq!(hub.deliver(&u, numbered(8, &epoch)), Arrival::Duplicate);
    let (got, _) = drain(&live);
    assert_eq!(got.iter().filter_map(|d| d.seq).collect::<Vec<_>>(), vec![6, 7, 8]);

    // The broker lost its data: a new epoch closes the user's connections
    // with 4004, and a resume from the old epoch is incomplete.
    let fresh: Arc<str> = Arc::from("e2");
    assert_eq!(hub.catch_up(&u, &fresh, 0, Vec::new()), 3);
    assert_eq!(hub.online(&["u".to_owned()]), vec![0]);
    let (_, end) = drain(&live);
    assert_eq!(end.close.map(|c| c.code), Some(CloseCode::StreamReset));
    assert_eq!(hub.deliver(&u, numbered(1, &fresh)), Arrival::Delivered(0));
    assert_eq!(replay(8, 4), (vec![], false), "seq 8 belonged to the old stream");
}

/// A wire that records what it is given and takes at most `room` whole
/// deliveries, then cuts the next one short.
#[derive(Default)]
struct TestWire {
    room: std::sync::Mutex<usize>,
    written: std::sync::Mutex<Vec<u64>>,
}

impl Wire for Arc<TestWire> {
    fn write(&self, deliveries: &[Arc<Delivery>]) -> Wrote {
        let mut room = self.room.lock().expect("room");
        let whole = deliveries.len().min(*room);
        *room -= whole;
        self.written.lock().expect("written").extend(deliveries[..whole].iter().filter_map(|d| d.seq));
        if whole == deliveries.len() {
            return Wrote::All;
        }
        Wrote::Part { frames: whole, rest: Some(bytes::Bytes::from_static(b"tail")) }
    }

    /// Takes no pings: the connection's task sends them.
    fn ping(&self) -> Wrote {
        Wrote::Part { frames: 0, rest: None }
    }
}

fn woken_flag() -> (Arc<std::sync::atomic::AtomicBool>, Waker) {
    struct Flag(Arc<std::sync::atomic::AtomicBool>);
    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    (Arc::clone(&flag), Waker::from(Arc::new(Flag(flag))))
}

/// Write-through: an idle connection is written from the fan-out's thread
/// at the end of the run, without waking its task; one its task holds, or
/// any outside a run, is queued and woken as before; a cut frame's tail and
/// what was not written go back to the task, in order.
#[test]
fn write_through_writes_idle_connections_and_hands_back_what_the_socket_refuses() {
    let hub = hub(HubConfig::default());
    let user: UserId = Arc::from("w");
    let outbox = hub.new_outbox();
    hub.join(&user, 1, Arc::clone(&outbox), &events(&["e"]), None).expect("join");
    let wire = Arc::new(TestWire { room: std::sync::Mutex::new(3), ..TestWire::default() });
    outbox.attach_wire(Box::new(Arc::clone(&wire)));
    let (woken, waker) = woken_flag();
    let mut cx = Context::from_waker(&waker);
    let mut items = Vec::new();
    let idle = |cx: &mut Context<'_>, items: &mut Vec<Arc<Delivery>>| {
        assert!(outbox.poll_drain(cx, items, true).is_pending(), "nothing queued");
    };
    let publish = || hub.publish(text("w", "e", "m")).expect("publish");

    // Idle, inside a run: written at the run's end (both pushes in one
    // call), the task not woken, nothing left queued.
    idle(&mut cx, &mut items);
    write_through(|| {
        publish();
        publish();
        assert!(wire.written.lock().expect("written").is_empty(), "written before the run ended");
    });
    assert_eq!(*wire.written.lock().expect("written"), vec![1, 2]);
    assert!(!woken.load(std::sync::atomic::Ordering::SeqCst), "the task was woken");
    assert_eq!(outbox.queued_bytes(), 0);

    // Outside a run: queued and woken, as without a wire.
    publish();
    assert!(woken.swap(false, std::sync::atomic::Ordering::SeqCst), "not woken outside a run");
    let (got, _) = drain(&outbox);
    assert_eq!(got.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![Some(3)]);

    // Held by its task: a run queues and wakes, the wire is not used.
    idle(&mut cx, &mut items);
    assert_eq!(outbox.hold_wire(), None);
    write_through(publish);
    assert!(woken.swap(false, std::sync::atomic::Ordering::SeqCst), "a held connection was not woken");
    assert_eq!(drain(&outbox).0.len(), 1);
    assert_eq!(wire.written.lock().expect("written").len(), 2);

    // Room for one more whole frame: the next is cut, its tail and the
    // rest go back to the task, which is woken; the tail comes first.
    idle(&mut cx, &mut items);
    write_through(|| {
        for _ in 0..3 {
            publish();
        }
    });
    assert_eq!(*wire.written.lock().expect("written"), vec![1, 2, 5]);
    assert!(woken.swap(false, std::sync::atomic::Ordering::SeqCst), "a cut did not wake the task");
    let Poll::Ready(drained) = outbox.poll_drain(&mut cx, &mut items, true) else { panic!("nothing handed back") };
    assert_eq!(drained.rest.as_deref().map(|b| &b[..]), Some(&b"tail"[..]));
    assert_eq!(items.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![Some(7)], "the cut frame (6) is the tail");
    assert_eq!(outbox.queued_bytes(), 0);

    // Once detached, never written again.
    items.clear();
    *wire.room.lock().expect("room") = 100;
    outbox.detach_wire();
    idle(&mut cx, &mut items);
    write_through(publish);
    assert_eq!(wire.written.lock().expect("written").len(), 3);
    assert!(woken.swap(false, std::sync::atomic::Ordering::SeqCst));
}

/// A wire whose socket takes the two bytes of a ping whole, one of them,
/// or none, as `takes` says; counts the pings it is given.
struct PingWire {
    takes: usize,
    pings: std::sync::atomic::AtomicUsize,
}

impl Wire for Arc<PingWire> {
    fn write(&self, _: &[Arc<Delivery>]) -> Wrote {
        Wrote::All
    }

    fn ping(&self) -> Wrote {
        self.pings.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match self.takes {
            2 => Wrote::All,
            1 => Wrote::Part { frames: 0, rest: Some(bytes::Bytes::from_static(&[0])) },
            _ => Wrote::Part { frames: 0, rest: None },
        }
    }
}

/// The heartbeat pings an idle connection through its wire without waking
/// its task; a ping the socket takes in part leaves its tail to the task,
/// one it refuses (or any while the task holds the socket) is the task's to
/// send, as without a wire. Either way an unanswered ping closes it.
#[test]
fn an_idle_connection_is_pinged_through_its_wire_without_a_wake() {
    let hub = hub(HubConfig::default());
    let user: UserId = Arc::from("p");
    let (woken, waker) = woken_flag();
    let mut cx = Context::from_waker(&waker);
    let was_woken = || woken.swap(false, std::sync::atomic::Ordering::SeqCst);
    // A joined connection whose task is idle, its socket taking `takes` bytes.
    let idle = |takes: usize, cx: &mut Context<'_>| {
        let outbox = hub.new_outbox();
        hub.join(&user, hub.next_conn_id(), Arc::clone(&outbox), &events(&["e"]), None).expect("join");
        let wire = Arc::new(PingWire { takes, pings: 0.into() });
        outbox.attach_wire(Box::new(Arc::clone(&wire)));
        assert!(outbox.poll_drain(cx, &mut Vec::new(), true).is_pending(), "idle");
        (outbox, wire)
    };
    let pings = |wire: &PingWire| wire.pings.load(std::sync::atomic::Ordering::SeqCst);

    // Taken whole: nothing for the task, which is not woken.
    let (outbox, wire) = idle(2, &mut cx);
    outbox.request_ping();
    assert_eq!(pings(&wire), 1);
    assert!(!was_woken(), "woken for a ping the wire wrote");
    assert!(outbox.poll_drain(&mut cx, &mut Vec::new(), true).is_pending(), "the ping was left to the task");
    outbox.request_ping();
    assert_eq!(pings(&wire), 1, "pinged again before an answer");
    outbox.seen_alive();
    assert!(outbox.check_pong(), "an answered ping closed the connection");
    // Unanswered: closed at the check.
    outbox.request_ping();
    assert_eq!(pings(&wire), 2);
    assert!(!outbox.check_pong() && outbox.is_closing(), "an unanswered ping did not close it");

    // Taken in part: the tail goes to the task, woken for it, first.
    let (outbox, wire) = idle(1, &mut cx);
    outbox.request_ping();
    assert!(was_woken(), "a cut ping did not wake the task");
    let (_, drained) = drain(&outbox);
    assert_eq!((pings(&wire), drained.ping, drained.rest.as_deref().map(|b| &b[..])), (1, false, Some(&[0u8][..])));

    // Refused: the task sends the ping.
    let (outbox, wire) = idle(0, &mut cx);
    outbox.request_ping();
    assert!(was_woken(), "a refused ping did not wake the task");
    let (_, drained) = drain(&outbox);
    assert_eq!((pings(&wire), drained.ping, drained.rest), (1, true, None));

    // Held by its task: the wire is not used.
    let (outbox, wire) = idle(2, &mut cx);
    assert_eq!(outbox.hold_wire(), None);
    outbox.request_ping();
    assert!(was_woken(), "a busy task was not asked to ping");
    assert_eq!((pings(&wire), drain(&outbox).1.ping), (0, true));
    assert!(!outbox.check_pong(), "an unanswered ping did not close it");
}

/// On tokio's paused clock: one interval pings every joined connection
/// exactly once, a few at a time, and closes the one that never answers,
/// a pong timeout after its own ping.
#[tokio::test(start_paused = true)]
async fn the_heartbeat_pings_every_connection_once_a_few_at_a_time() {
    const USERS: usize = 5000;
    let (interval, pong) = (Duration::from_secs(25), Duration::from_secs(10));
    let hub = hub(HubConfig::default());
    let outboxes: Vec<_> = (0..USERS)
        .map(|i| {
            let outbox = hub.new_outbox();
            let user: UserId = Arc::from(format!("u{i}"));
            hub.join(&user, i as u64, Arc::clone(&outbox), &events(&["e"]), None).expect("join");
            outbox
        })
        .collect();
    let stop = tokio_util::sync::CancellationToken::new();
    let beat = tokio::spawn(heartbeat::run(Arc::clone(&hub), interval, pong, stop.clone()));
    // Drains what was pinged since the last look and answers, except the
    // first connection, which never does.
    let mut pinged = vec![0; USERS];
    let mut look = || {
        let mut now = 0;
        for (i, outbox) in outboxes.iter().enumerate() {
            if drain(outbox).1.ping {
                pinged[i] += 1;
                now += 1;
                if i > 0 {
                    outbox.seen_alive();
                }
            }
        }
        now
    };
    // Look every 20 ms (chunks of a slice are some 47 ms apart here) until
    // the last slice's last chunk, due before interval - pong + one slice's
    // share of it.
    let slice = (interval - pong) / hub.slices() as u32;
    let step = Duration::from_millis(20);
    let mut most = 0;
    for _ in 0..(interval - pong + slice).as_millis() / step.as_millis() + 1 {
        tokio::time::sleep(step).await;
        most = most.max(look());
    }
    assert!((1..=heartbeat::PING_CHUNK).contains(&most), "{most} pinged at once");
    let twice_or_never = pinged.iter().filter(|&&n| n != 1).count();
    assert_eq!(twice_or_never, 0, "connections not pinged exactly once");
    tokio::time::sleep(pong).await;
    assert!(outboxes[0].is_closing(), "the silent connection is closed");
    assert!(outboxes[1..].iter().all(|o| !o.is_closing()), "only the silent connection is closed");
    stop.cancel();
    beat.await.expect("the heartbeat ends");
}

/// A wire that notes the clock `wire::now` gives each write, then lets the
/// real clock pass that reading, so a fresh reading would differ.
#[derive(Default)]
struct ClockWire {
    stamps: std::sync::Mutex<Vec<std::time::Instant>>,
}

impl Wire for Arc<ClockWire> {
    fn write(&self, _: &[Arc<Delivery>]) -> Wrote {
        let stamp = wire::now();
        self.stamps.lock().expect("stamps").push(stamp);
        while std::time::Instant::now() <= stamp {
            std::hint::spin_loop();
        }
        Wrote::All
    }

    fn ping(&self) -> Wrote {
        Wrote::All
    }
}

/// The writes at the end of a run share one reading of the clock per
/// sixteen connections; outside a run's writes the clock is read afresh.
#[test]
fn a_runs_writes_share_a_clock_reading_per_sixteen_connections() {
    let hub = hub(HubConfig::default());
    let user: UserId = Arc::from("c");
    let wire = Arc::new(ClockWire::default());
    let (_woken, waker) = woken_flag();
    let mut cx = Context::from_waker(&waker);
    let mut outboxes = Vec::new();
    for id in 0..40 {
        let outbox = hub.new_outbox();
        hub.join(&user, id, Arc::clone(&outbox), &events(&["e"]), None).expect("join");
        outbox.attach_wire(Box::new(Arc::clone(&wire)));
        assert!(outbox.poll_drain(&mut cx, &mut Vec::new(), true).is_pending(), "idle");
        outboxes.push(outbox);
    }
    write_through(|| hub.publish(text("c", "e", "m")).expect("publish"));
    let stamps = wire.stamps.lock().expect("stamps").clone();
    assert_eq!(stamps.len(), 40);
    for (i, group) in stamps.chunks(16).enumerate() {
        assert!(group.iter().all(|s| *s == group[0]), "group {i} read the clock more than once");
        if i > 0 {
            assert!(group[0] > stamps[16 * i - 1], "group {i} kept the previous reading");
        }
    }
    let later = wire::now();
    assert!(later > stamps[39], "outside a run the clock is read afresh");
}

#[test]
fn an_epoch_is_sixteen_lowercase_hex_digits() {
    let epochs: std::collections::HashSet<_> = (0..1000).map(|_| super::hub::new_epoch()).collect();
    assert_eq!(epochs.len(), 1000, "no two alike");
    for epoch in &epochs {
        assert_eq!(epoch.len(), 16, "{epoch}");
        assert!(epoch.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{epoch}");
    }
    // Every digit position is used (a wrong shift would leave some at 0).
    for i in 0..16 {
        assert!(epochs.iter().any(|e| e.as_bytes()[i] != b'0'), "digit {i} is always 0");
    }
}
