//! The Redis broker against a real Redis: the shared one on 127.0.0.1:6379
//! (each test under its own random prefix) and, for the outage, a
//! `redis-server` of the test's own that it kills and restarts.

mod common;

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{OwnServer, free_port};
use pushgate::broker::redis::{Control, Incoming, PublishRequest, RedisBroker, RedisConfig, RedisError};
use pushgate::core::{Payload, Since};
use tokio::sync::mpsc::Receiver;

const SHARED_REDIS: &str = "redis://127.0.0.1:6379";
/// How long any one expected event may take.
const WAIT: Duration = Duration::from_secs(10);

fn prefix() -> String {
    format!("pgtest:{:016x}", RandomState::new().hash_one(Instant::now()))
}

/// A node's configuration; positions live two minutes, not 30 days, so the
/// tests leave little behind in the shared Redis.
fn config(url: &str, prefix: &str, node: &str) -> RedisConfig {
    RedisConfig {
        history_ttl: Duration::from_secs(60),
        history_meta_ttl: Duration::from_secs(120),
        ..RedisConfig::new(url, prefix, node)
    }
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The next event that is not `Up`/`Down`.
async fn next_message(rx: &mut Receiver<Incoming>) -> Incoming {
    within("a message", async {
        loop {
            match rx.recv().await.expect("broker channel closed") {
                Incoming::Up | Incoming::Down => continue,
                other => return other,
            }
        }
    })
    .await
}

async fn until(rx: &mut Receiver<Incoming>, wanted: Incoming) {
    within(&format!("{wanted:?}"), async { while rx.recv().await.expect("broker channel closed") != wanted {} }).await
}

async fn node(config: RedisConfig) -> (Arc<RedisBroker>, Receiver<Incoming>) {
    let (broker, mut rx) = RedisBroker::start(config).unwrap();
    until(&mut rx, Incoming::Up).await;
    assert!(broker.is_up());
    (broker, rx)
}

fn push(user: &str, text: &str) -> PublishRequest {
    PublishRequest {
        user: user.into(),
        event: Arc::from("chat"),
        payload: Payload::text(text.to_owned()),
        ttl: None,
        idempotency_key: None,
    }
}

fn keyed(user: &str, text: &str, key: &str) -> PublishRequest {
    PublishRequest { idempotency_key: Some(key.into()), ..push(user, text) }
}

fn text_of(incoming: &Incoming) -> (String, u64, String) {
    match incoming {
        Incoming::Push { user, message } => match &message.payload {
            Payload::Text(t) => (user.to_string(), message.seq, t.as_str().to_owned()),
            Payload::Binary(_) => panic!("binary push"),
        },
        other => panic!("expected a push, got {other:?}"),
    }
}

#[tokio::test]
async fn seq_and_idempotency_are_shared_by_nodes() {
    let p = prefix();
    let (a, _ra) = node(config(SHARED_REDIS, &p, "a")).await;
    let (b, _rb) = node(config(SHARED_REDIS, &p, "b")).await;
    let first = a.publish(push("u1", "1")).await.unwrap();
    let second = b.publish(push("u1", "2")).await.unwrap();
    let third = a.publish(push("u1", "3")).await.unwrap();
    assert_eq!((first.seq, second.seq, third.seq), (1, 2, 3));
    assert!(first.epoch == second.epoch && second.epoch == third.epoch);
    assert_eq!(b.publish(push("u2", "x")).await.unwrap().seq, 1, "seq is per user");

    let keyed_a = a.publish(keyed("u1", "4", "k1")).await.unwrap();
    let again_b = b.publish(keyed("u1", "4", "k1")).await.unwrap();
    assert_eq!((keyed_a.seq, keyed_a.duplicate), (4, false));
    assert_eq!((again_b.seq, again_b.duplicate, again_b.nodes), (4, true, 0));
    assert_eq!(again_b.epoch, keyed_a.epoch);
    assert!(!b.publish(keyed("u2", "y", "k1")).await.unwrap().duplicate, "keys are per user");
    assert_eq!(a.publish(push("u1", "5")).await.unwrap().seq, 5);
}

#[tokio::test]
async fn history_replays_and_says_when_it_is_complete() {
    let p = prefix();
    let (a, _ra) = node(RedisConfig { history_size: 3, ..config(SHARED_REDIS, &p, "a") }).await;
    let fresh = a.history("u1", &Since::seq(0)).await.unwrap();
    assert_eq!((fresh.seq, fresh.messages.len(), fresh.complete), (0, 0, true));
    for i in 1..=5 {
        a.publish(push("u1", &i.to_string())).await.unwrap();
    }
    let seqs = |page: &pushgate::broker::redis::HistoryPage| page.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
    let page = a.history("u1", &Since::seq(0)).await.unwrap();
    assert_eq!(page.epoch, fresh.epoch, "the epoch told before the first push is the stream's");
    assert_eq!((page.seq, seqs(&page), page.complete), (5, vec![3, 4, 5], false));
    let page = a.history("u1", &Since { seq: 2, epoch: Some(page.epoch.to_string()) }).await.unwrap();
    assert_eq!((seqs(&page), page.complete), (vec![3, 4, 5], true));
    assert_eq!(page.messages[0].payload, Payload::text("3"));
    let page = a.history("u1", &Since::seq(5)).await.unwrap();
    assert_eq!((seqs(&page), page.complete), (vec![], true));
    let page = a.history("u1", &Since::seq(6)).await.unwrap();
    assert_eq!((seqs(&page), page.complete), (vec![], false), "since beyond the current seq");
    let page = a.history("u1", &Since { seq: 4, epoch: Some("another".into()) }).await.unwrap();
    assert_eq!((seqs(&page), page.complete), (vec![], false), "another epoch");

    // A push whose own ttl passed is left out without making the page incomplete.
    let short = PublishRequest { ttl: Some(Duration::from_millis(1)), ..push("u1", "6") };
    a.publish(short).await.unwrap();
    a.publish(push("u1", "7")).await.unwrap();
    let page = within("the ttl to pass", async {
        loop {
            let page = a.history("u1", &Since::seq(5)).await.unwrap();
            if !seqs(&page).contains(&6) {
                return page;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!((seqs(&page), page.complete), (vec![7], true));
}

#[tokio::test]
async fn history_size_zero_keeps_nothing() {
    let p = prefix();
    let (a, _ra) = node(RedisConfig { history_size: 0, ..config(SHARED_REDIS, &p, "a") }).await;
    a.publish(push("u1", "1")).await.unwrap();
    a.publish(push("u1", "2")).await.unwrap();
    let page = a.history("u1", &Since::seq(1)).await.unwrap();
    assert_eq!((page.seq, page.messages.len(), page.complete), (2, 0, false));
    let page = a.history("u1", &Since::seq(2)).await.unwrap();
    assert_eq!((page.messages.len(), page.complete), (0, true));
}

#[tokio::test]
async fn a_held_user_gets_the_other_nodes_pushes_in_order_until_released() {
    let p = prefix();
    let (a, mut ra) = node(config(SHARED_REDIS, &p, "a")).await;
    let (b, _rb) = node(config(SHARED_REDIS, &p, "b")).await;
    a.hold("u1").await.unwrap();
    let mut last_nodes = 0;
    for i in 1..=20 {
        last_nodes = b.publish(push("u1", &format!("m{i}"))).await.unwrap().nodes;
    }
    assert_eq!(last_nodes, 1, "node a holds u1");
    for i in 1..=20 {
        assert_eq!(text_of(&next_message(&mut ra).await), ("u1".into(), i, format!("m{i}")));
    }
    let binary = PublishRequest { payload: Payload::Binary(bytes::Bytes::from_static(&[0, 1, 255])), ..push("u1", "") };
    b.publish(binary).await.unwrap();
    match next_message(&mut ra).await {
        Incoming::Push { message, .. } => {
            assert_eq!(message.payload, Payload::Binary(bytes::Bytes::from_static(&[0, 1, 255])))
        }
        other => panic!("expected a push, got {other:?}"),
    }

    // Released u1, then held u2: u2's push, published after u1's, arrives
    // and nothing of u1's came before it.
    a.release("u1");
    a.hold("u2").await.unwrap();
    assert_eq!(b.publish(push("u1", "gone")).await.unwrap().nodes, 0);
    b.publish(push("u2", "here")).await.unwrap();
    assert_eq!(text_of(&next_message(&mut ra).await), ("u2".into(), 1, "here".into()));

    // Held again after the release: received again.
    a.hold("u1").await.unwrap();
    b.publish(push("u1", "back")).await.unwrap();
    assert_eq!(text_of(&next_message(&mut ra).await), ("u1".into(), 23, "back".into()));
}

#[tokio::test]
async fn presence_counts_live_nodes_only() {
    let p = prefix();
    let (a, _ra) = node(config(SHARED_REDIS, &p, "a")).await;
    let (b, _rb) = node(config(SHARED_REDIS, &p, "b")).await;
    let users = vec!["u1".to_owned(), "nobody".to_owned()];
    assert_eq!(a.add_connection("u1", 3).await.unwrap(), Ok(1));
    assert_eq!(b.add_connection("u1", 3).await.unwrap(), Ok(2));
    assert_eq!(a.online(&users).await.unwrap(), vec![2, 0]);
    assert_eq!(a.add_connection("u1", 3).await.unwrap(), Ok(3));
    assert_eq!(b.add_connection("u1", 3).await.unwrap(), Err(3), "the limit counts every node");
    b.remove_connection("u1").await.unwrap();
    assert_eq!(b.online(&users).await.unwrap(), vec![2, 0]);

    // A node that dies without shutdown: gone once its lease lapses.
    let lease = Duration::from_secs(1);
    let (c, _rc) = node(RedisConfig { node_lease: lease, ..config(SHARED_REDIS, &p, "c") }).await;
    assert_eq!(c.add_connection("u1", 10).await.unwrap(), Ok(3));
    assert_eq!(a.online(&users).await.unwrap(), vec![3, 0]);
    drop(c);
    let died = Instant::now();
    within("the dead node's lease to lapse", async {
        while a.online(&users).await.unwrap() != vec![2, 0] {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(died.elapsed() < lease + Duration::from_millis(500), "gone after {:?}", died.elapsed());

    // A node that shuts down: gone at once.
    let (d, _rd) = node(config(SHARED_REDIS, &p, "d")).await;
    assert_eq!(d.add_connection("u1", 10).await.unwrap(), Ok(3));
    d.shutdown().await;
    assert_eq!(a.online(&users).await.unwrap(), vec![2, 0]);
    assert!(matches!(d.online(&users).await, Err(RedisError::Closed)));
}

#[tokio::test]
async fn control_messages_reach_every_node() {
    let p = prefix();
    let (a, mut ra) = node(config(SHARED_REDIS, &p, "a")).await;
    let (_b, mut rb) = node(config(SHARED_REDIS, &p, "b")).await;
    let broadcast = Control::Broadcast {
        event: Arc::from("news"),
        payload: Payload::text("hello"),
        user_ids: vec!["u1".into(), "u2".into()],
    };
    assert_eq!(a.control(&broadcast).await.unwrap(), 2);
    let from_a = |control: &Control| Incoming::Control { from: "a".into(), control: control.clone() };
    assert_eq!(next_message(&mut ra).await, from_a(&broadcast), "a node sees its own, marked as its own");
    assert_eq!(next_message(&mut rb).await, from_a(&broadcast));
    let disconnect = Control::Disconnect { user: "u1".into(), event: Some(Arc::from("chat")) };
    assert_eq!(a.control(&disconnect).await.unwrap(), 2);
    assert_eq!(next_message(&mut rb).await, from_a(&disconnect));
}

#[tokio::test]
async fn bad_urls_name_the_flag_and_an_unreachable_redis_is_no_error() {
    for url in ["http://127.0.0.1:6379", "not a url", "redis://[::1"] {
        let err = RedisBroker::start(config(url, &prefix(), "a")).unwrap_err();
        assert!(matches!(err, RedisError::BadUrl(_)), "{url}: {err:?}");
        assert!(err.to_string().contains("--broker"), "{url}: {err}");
    }
    let (broker, _rx) = RedisBroker::start(config("redis://127.0.0.1:1", &prefix(), "a")).unwrap();
    assert!(!broker.is_up());
    assert!(matches!(broker.publish(push("u1", "x")).await, Err(RedisError::Unavailable)));
}

#[tokio::test]
async fn an_outage_is_reported_and_survived_with_a_new_epoch() {
    let port = free_port();
    let mut server = OwnServer::redis(port);
    let url = server.url("redis");
    let call_timeout = Duration::from_millis(500);
    let (a, mut ra) = node(RedisConfig { call_timeout, ..config(&url, &prefix(), "a") }).await;
    a.hold("u1").await.unwrap();
    assert_eq!(a.add_connection("u1", 10).await.unwrap(), Ok(1));
    let before = a.publish(push("u1", "before")).await.unwrap();
    assert_eq!(text_of(&next_message(&mut ra).await).2, "before");

    // A Redis that stops answering: calls time out, the link goes down.
    server.signal("STOP");
    let asked = Instant::now();
    assert!(matches!(a.publish(push("u1", "stalled")).await, Err(RedisError::Timeout(_))));
    assert!(asked.elapsed() < call_timeout * 2, "bounded by the call timeout: {:?}", asked.elapsed());
    until(&mut ra, Incoming::Down).await;
    server.signal("CONT");
    until(&mut ra, Incoming::Up).await;

    server.stop();
    until(&mut ra, Incoming::Down).await;
    assert!(!a.is_up());
    let asked = Instant::now();
    assert!(a.publish(push("u1", "lost")).await.is_err());
    assert!(a.history("u1", &Since::seq(0)).await.is_err());
    assert!(asked.elapsed() < call_timeout * 3, "calls fail, not hang: {:?}", asked.elapsed());

    let _server = OwnServer::redis(port);
    until(&mut ra, Incoming::Up).await;
    assert!(a.is_up());
    let after = a.publish(push("u1", "after")).await.unwrap();
    assert_eq!(after.seq, 1, "Redis lost the stream");
    assert_ne!(after.epoch, before.epoch, "a new stream has a new epoch");
    assert_eq!(after.nodes, 1, "u1 was subscribed again");
    loop {
        // The stalled push may have been run when Redis resumed, before the kill.
        match text_of(&next_message(&mut ra).await).2.as_str() {
            "after" => break,
            other => assert_eq!(other, "stalled"),
        }
    }
    assert_eq!(a.online(&["u1".to_owned()]).await.unwrap(), vec![1], "presence written again");
    let old = Since { seq: before.seq, epoch: Some(before.epoch.to_string()) };
    let page = a.history("u1", &old).await.unwrap();
    assert!(!page.complete);
}
