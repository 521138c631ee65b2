//! Delivery guarantees end to end (docs/protocol.md, "Delivery semantics"): the send-queue
//! cap and the slow-consumer policies, the write delay, resume with `since`, TTL and
//! idempotency keys, and what `/metrics` tells a scraper — against the real
//! server on 127.0.0.1:0, with real WebSocket clients and every push sent by
//! the real gRPC client.
//!
//! Waits are on events (a frame, a reply, a counter in the hub) bounded by
//! [`WAIT`]; the only sleep lets a 50 ms TTL pass, checked against the clock.
//! It is a real one: the history times TTLs with `std::time::Instant`, which
//! tokio's paused clock does not move.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::metrics::scrape;
use common::ws::{Ws, next_json, next_text, texts_until_close};
use common::{Gateway, PushClient, WAIT, text_push};
use futures_util::StreamExt as _;
use pushgate::config::Settings;
use pushgate::core::{Delivery, Outbox, Payload, SlowPolicy};
use pushgate::proto::{DisconnectRequest, PushReply, PushRequest};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

// ---------------------------------------------------------------- helpers

/// One unary push; fails the test on an error status.
async fn push(client: &mut PushClient, request: PushRequest) -> PushReply {
    let reply = timeout(WAIT, client.push(request)).await.expect("reply in time");
    reply.expect("push accepted").into_inner()
}

/// The next `push` envelope: its seq and data.
async fn next_push(ws: &mut Ws) -> (u64, String) {
    let frame = next_json(ws).await;
    assert_eq!(frame["type"], "push", "{frame}");
    (frame["seq"].as_u64().expect("seq"), frame["data"].as_str().expect("data").to_owned())
}

/// Closes the client side and reads to the end; the frames still in flight
/// are thrown away, as a client that leaves would.
async fn leave(gw: &Gateway, user: &str, mut ws: Ws) {
    let before = gw.online(user);
    ws.close(None).await.expect("close");
    let _ = timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    gw.wait_online(user, before - 1).await;
}

// ---------------------------------------------------------------- slow consumers

/// Payload size of the slow-consumer tests.
const MSG_BYTES: usize = 1024;

/// `--conn-queue-bytes` of the slow-consumer tests.
const QUEUE_CAP: usize = 64 * 1024;

/// How many rounds the producer may run ahead of the slowest fast reader:
/// 16 KiB per reader, well under [`QUEUE_CAP`], so no fast reader can
/// overflow however the scheduler runs its session — a fast reader closed
/// with 4000 would be the gateway's fault, not the test's.
const LEAD: u64 = 16;

/// Enough rounds to fill any loopback socket buffer (tcp_wmem's 4 MiB max)
/// many times over.
const MAX_ROUNDS: u64 = 40_000;

/// Users that read at full rate while `slow` does not.
const FAST: [&str; 3] = ["fast0", "fast1", "fast2"];

/// Message `i`: its number, then padding up to [`MSG_BYTES`].
fn numbered(i: u64) -> String {
    let head = format!("{i:08}|");
    let pad = MSG_BYTES - head.len();
    head + &"x".repeat(pad)
}

fn number_of(text: &str) -> u64 {
    text.get(..8).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("not a numbered message: {text:.40}"))
}

/// What one numbered message counts against a queue, as the hub computes it.
fn queue_cost(event: &str) -> usize {
    Delivery::new(Arc::from(event), Some(1), Payload::text(numbered(0)), None).queue_cost()
}

/// The queue must hold one message of `--max-message-bytes`: 8 KiB here.
/// Pings are far apart: a client that reads nothing answers none, and these
/// tests are about its queue, not its heartbeat.
fn slow_settings(policy: SlowPolicy) -> Settings {
    Settings {
        conn_queue_bytes: Some(QUEUE_CAP),
        max_message_bytes: Some(8 * 1024),
        ping_interval: Some(Duration::from_secs(600)),
        pong_timeout: Some(Duration::from_secs(60)),
        slow_policy: Some(policy),
        ..common::settings()
    }
}

/// The outbox of the only connection joined so far.
fn sole_outbox(gw: &Gateway) -> Arc<Outbox> {
    let mut all = gw.running.hub.outboxes();
    assert_eq!(all.len(), 1, "exactly one connection joined");
    all.remove(0)
}

/// A reader task that checks every message as it comes and reports how many
/// it has, until the message `end`.
struct FastReader {
    progress: watch::Receiver<u64>,
    task: JoinHandle<u64>,
}

fn spawn_fast_reader(mut ws: Ws, envelope: bool) -> FastReader {
    let (tx, progress) = watch::channel(0);
    let task = tokio::spawn(async move {
        let mut n = 0;
        loop {
            let data = if envelope {
                let (seq, data) = next_push(&mut ws).await;
                assert_eq!(seq, n + 1, "envelope reader: seq");
                data
            } else {
                next_text(&mut ws).await
            };
            if data == "end" {
                return n;
            }
            assert_eq!(number_of(&data), n, "a fast reader missed a message or got one out of order");
            assert_eq!(data, numbered(n), "payload intact");
            n += 1;
            tx.send_replace(n);
        }
    });
    FastReader { progress, task }
}

/// The fast users: two wserver-compatible tabs and one envelope tab.
struct Fleet {
    readers: Vec<FastReader>,
}

impl Fleet {
    async fn open(gw: &Gateway) -> Self {
        let mut readers = Vec::new();
        for (i, user) in FAST.iter().enumerate() {
            let envelope = i == FAST.len() - 1;
            let ws =
                if envelope { gw.envelope_tab(user, &["e"], None).await.0 } else { gw.compat_tab(user, "e").await };
            readers.push(spawn_fast_reader(ws, envelope));
        }
        Self { readers }
    }

    /// Waits until every reader has read all rounds before `round - LEAD`.
    async fn pace(&mut self, round: u64) {
        for reader in &mut self.readers {
            let caught_up = reader.progress.wait_for(|&n| n + LEAD >= round);
            let caught_up = timeout(WAIT, caught_up).await.expect("fast readers keep up");
            caught_up.expect("a fast reader failed (its panic is above)");
        }
    }

    /// Round `round`: message `round` to `slow`, then to each fast user.
    fn round(round: u64) -> Vec<PushRequest> {
        let text = numbered(round);
        std::iter::once("slow").chain(FAST).map(|user| text_push(user, "e", &text)).collect()
    }

    /// Ends each reader with `end` and checks it read exactly `rounds`
    /// messages, all in order (the reader checked each).
    async fn finish(self, stream: &mut PushStream, rounds: u64) {
        let ends = FAST.iter().map(|user| text_push(user, "e", "end")).collect();
        stream.round(ends).await;
        for reader in self.readers {
            let read = timeout(WAIT, reader.task).await.expect("reader done in time").expect("reader passed");
            assert_eq!(read, rounds, "a fast reader got every message");
        }
    }
}

/// A `PushStream` driven in lock-step: each round's replies are read before
/// the next round is sent.
struct PushStream {
    _client: PushClient,
    tx: mpsc::Sender<PushRequest>,
    replies: tonic::Streaming<PushReply>,
}

impl PushStream {
    async fn open(gw: &Gateway) -> Self {
        let mut client = gw.grpc().await;
        let (tx, rx) = mpsc::channel::<PushRequest>(64);
        let outbound = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        let replies = client.push_stream(outbound).await.expect("stream").into_inner();
        Self { _client: client, tx, replies }
    }

    async fn round(&mut self, requests: Vec<PushRequest>) -> Vec<PushReply> {
        let n = requests.len();
        for request in requests {
            self.tx.send(request).await.expect("stream open");
        }
        let mut replies = Vec::with_capacity(n);
        for _ in 0..n {
            let reply = timeout(WAIT, self.replies.message()).await.expect("reply in time");
            let reply = reply.expect("reply").expect("stream open");
            assert_eq!(reply.error, None, "push accepted");
            replies.push(reply);
        }
        replies
    }
}

/// Fails unless every joined connection's queue is within the cap.
fn assert_queues_within_cap(gw: &Gateway) {
    for outbox in gw.running.hub.outboxes() {
        let queued = outbox.queued_bytes();
        assert!(queued <= QUEUE_CAP, "a queue holds {queued} bytes, over the {QUEUE_CAP}-byte cap");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_4000_while_the_others_get_everything_in_order() {
    let gw = common::start(slow_settings(SlowPolicy::Close)).await;
    let cost = queue_cost("e");
    let slow = gw.compat_tab("slow", "e").await; // never read until it is closed
    let slow_outbox = sole_outbox(&gw);
    let mut fleet = Fleet::open(&gw).await;
    let mut stream = PushStream::open(&gw).await;

    let mut slow = Some(slow);
    let mut slow_reader = None;
    let (mut accepted, mut before_overflow) = (0u64, 0usize);
    let mut overflowed_at = None;
    let mut round = 0;
    // Push until the slow queue overflows, then 64 rounds more.
    while overflowed_at.is_none_or(|at| round <= at + 64) {
        assert!(round < MAX_ROUNDS, "the slow consumer's queue never overflowed");
        fleet.pace(round).await;
        let queued_before = slow_outbox.queued_bytes();
        let replies = stream.round(Fleet::round(round)).await;
        assert!(replies[1..].iter().all(|r| r.delivered == 1), "round {round}: a fast reader was dropped");
        match (replies[0].delivered, overflowed_at) {
            (1, None) => accepted += 1,
            (0, None) => {
                overflowed_at = Some(round);
                before_overflow = queued_before;
                // Read it now: the close frame waits behind the blocked write
                // for at most the server's close linger.
                slow_reader = slow.take().map(|mut ws| tokio::spawn(async move { texts_until_close(&mut ws).await }));
            }
            (0, Some(_)) => {}
            (n, _) => panic!("round {round}: pushed to slow after its close: delivered {n}"),
        }
        let queued = slow_outbox.queued_bytes();
        assert!(queued <= QUEUE_CAP, "round {round}: the slow queue holds {queued} bytes");
        assert_queues_within_cap(&gw);
        round += 1;
    }
    fleet.finish(&mut stream, round).await;

    let slow_reader = slow_reader.expect("the slow consumer overflowed");
    let (texts, code) = timeout(WAIT, slow_reader).await.expect("slow read in time").expect("slow reader");
    assert_eq!(code, 4000, "closed as a slow consumer");
    // It got a gap-free prefix of its messages, then the close.
    let numbers: Vec<u64> = texts.iter().map(|t| number_of(t)).collect();
    assert_eq!(numbers, (0..numbers.len() as u64).collect::<Vec<_>>(), "the slow consumer's frames in order");
    // The queue filled up to the cap while the socket was blocked, and no
    // further: the push that would have passed it closed the connection.
    assert!(before_overflow + cost > QUEUE_CAP, "the queue was at the cap: {before_overflow} bytes");
    // Every accepted message was either written (and read above) or dropped
    // with the queue; the drops are counted, the overflowing push included.
    let drops = gw.running.hub.stats().drops;
    assert_eq!(drops, (before_overflow / cost) as u64 + 1, "drops: what was queued plus the overflowing push");
    assert_eq!(slow_outbox.dropped(), drops);
    assert_eq!(numbers.len() as u64 + drops - 1, accepted, "each accepted message read or dropped");
    assert!(slow_outbox.is_closing() && slow_outbox.queued_bytes() == 0);
    gw.wait_online("slow", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_keeps_a_slow_consumer_and_its_newest_messages() {
    let gw = common::start(slow_settings(SlowPolicy::DropOldest)).await;
    let cost = queue_cost("e");
    let newest = (QUEUE_CAP / cost) as u64; // what a full queue holds
    let mut slow = gw.compat_tab("slow", "e").await;
    let slow_outbox = sole_outbox(&gw);
    let mut fleet = Fleet::open(&gw).await;
    let mut stream = PushStream::open(&gw).await;

    let mut round = 0;
    // Push until a few queues' worth have been dropped.
    while slow_outbox.dropped() < 3 * newest {
        assert!(round < MAX_ROUNDS, "the slow consumer's queue never overflowed");
        fleet.pace(round).await;
        let replies = stream.round(Fleet::round(round)).await;
        assert!(replies.iter().all(|r| r.delivered == 1), "round {round}: every push queued, the slow one's too");
        let queued = slow_outbox.queued_bytes();
        assert!(queued <= QUEUE_CAP, "round {round}: the slow queue holds {queued} bytes");
        assert_queues_within_cap(&gw);
        round += 1;
    }
    fleet.finish(&mut stream, round).await;
    let drops = gw.running.hub.stats().drops;
    assert_eq!(drops, slow_outbox.dropped(), "only the slow consumer dropped");
    let metrics = scrape(&gw).await;
    assert_eq!(metrics.get("pushgate_drops_total", &[("reason", "drop_oldest")]), drops as f64);
    assert_eq!(metrics.get("pushgate_drops_total", &[("reason", "slow_consumer")]), 0.0);
    assert!(!slow_outbox.is_closing(), "drop-oldest does not close");

    // It reads again: the oldest messages are gone, the newest all there.
    let mut numbers = Vec::new();
    while numbers.last() != Some(&(round - 1)) {
        numbers.push(number_of(&next_text(&mut slow).await));
    }
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "in order, no duplicate: {numbers:?}");
    let tail: Vec<u64> = (round - newest..round).collect();
    assert!(numbers.ends_with(&tail), "the newest {newest} messages, without a gap");
    assert_eq!(numbers.len() as u64 + drops, round, "each message read or counted as dropped");
    // Still connected and nothing else queued: the next push is the next frame.
    let reply = stream.round(vec![text_push("slow", "e", "after")]).await;
    assert_eq!(reply[0].delivered, 1);
    assert_eq!(next_text(&mut slow).await, "after");
    assert_eq!(gw.running.hub.online(&["slow".into()]), [1]);
}

// ---------------------------------------------------------------- resume

#[tokio::test]
async fn resume_replays_exactly_the_missed_pushes_then_goes_live() {
    let gw = common::start(common::settings()).await;
    let mut client = gw.grpc().await;
    let (mut first, registered) = gw.envelope_tab("r", &["a", "b"], None).await;
    assert_eq!(registered["seq"], 0);
    for (i, event) in ["a", "b", "a", "b", "a"].into_iter().enumerate() {
        let reply = push(&mut client, text_push("r", event, &format!("before {i}"))).await;
        assert_eq!(next_push(&mut first).await, (reply.seq, format!("before {i}")));
    }
    let since = 5;
    leave(&gw, "r", first).await;

    // 20 pushes while it is away, on a, b and c (which it never subscribed to).
    let mut missed = Vec::new();
    for i in 0..20 {
        let event = ["a", "b", "c", "a"][i % 4];
        let reply = push(&mut client, text_push("r", event, &format!("missed {i}"))).await;
        assert_eq!(reply.delivered, 0);
        if event != "c" {
            missed.push((reply.seq, format!("missed {i}")));
        }
    }
    let (mut second, registered) = gw.envelope_tab("r", &["a", "b"], Some(since)).await;
    assert_eq!(registered["seq"], 25);
    for expected in &missed {
        assert_eq!(&next_push(&mut second).await, expected, "replayed in seq order");
    }
    let recovered = next_json(&mut second).await;
    assert_eq!(recovered, json!({"type": "recovered", "from": since, "to": 25, "complete": true}));

    // Then live, no gap and no duplicate: the next frames are exactly these.
    for (event, seq) in [("c", 26), ("a", 27), ("b", 28)] {
        let reply = push(&mut client, text_push("r", event, &format!("live {seq}"))).await;
        assert_eq!((reply.seq, reply.delivered), (seq, u32::from(event != "c")));
    }
    assert_eq!(next_push(&mut second).await, (27, "live 27".into()));
    assert_eq!(next_push(&mut second).await, (28, "live 28".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_while_pushes_keep_coming_sees_each_seq_exactly_once() {
    // History large enough that the resume is complete however fast the
    // producer runs.
    let gw = common::start(Settings { history_size: Some(100_000), ..common::settings() }).await;
    let (mut first, _) = gw.envelope_tab("r", &["a", "b"], None).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (progress_tx, mut progress) = watch::channel(0usize);
    let mut client = gw.grpc().await;
    let producer = tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            let mut pushed = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let event = ["a", "b", "c"][pushed.len() % 3];
                let reply = push(&mut client, text_push("r", event, &format!("m{}", pushed.len()))).await;
                pushed.push((reply.seq, event));
                progress_tx.send_replace(pushed.len());
            }
            pushed
        }
    });

    let mut seen = Vec::new();
    while seen.len() < 10 {
        seen.push(next_push(&mut first).await.0);
    }
    let since = *seen.last().expect("seen");
    leave(&gw, "r", first).await;
    // Some pushes land while it is away.
    let at = *progress.borrow_and_update();
    timeout(WAIT, progress.wait_for(|&n| n >= at + 6)).await.expect("producer runs").expect("producer alive");

    let (mut second, registered) = gw.envelope_tab("r", &["a", "b"], Some(since)).await;
    let mut replayed = Vec::new();
    let recovered = loop {
        let frame = next_json(&mut second).await;
        match frame["type"].as_str() {
            Some("push") => replayed.push(frame["seq"].as_u64().expect("seq")),
            Some("recovered") => break frame,
            _ => panic!("unexpected {frame}"),
        }
    };
    let to = registered["seq"].as_u64().expect("seq");
    assert_eq!(recovered, json!({"type": "recovered", "from": since, "to": to, "complete": true}));
    assert!(!replayed.is_empty(), "pushes were missed while away");
    let mut live = Vec::new();
    while live.len() < 10 {
        live.push(next_push(&mut second).await.0);
    }
    stop.store(true, Ordering::Relaxed);
    let pushed = timeout(WAIT, producer).await.expect("producer stops").expect("producer");
    let expected: Vec<u64> = pushed.iter().filter(|(_, e)| *e != "c").map(|(seq, _)| *seq).collect();
    let last = *expected.last().expect("pushed");
    while live.last() != Some(&last) {
        live.push(next_push(&mut second).await.0);
    }

    assert!(replayed.iter().all(|&s| s > since && s <= to) && live[0] > to, "replay then live");
    let union: Vec<u64> = seen.into_iter().chain(replayed).chain(live).collect();
    assert_eq!(union, expected, "every seq of a and b exactly once, in order");
}

#[tokio::test]
async fn resume_from_beyond_the_history_says_incomplete() {
    let gw = common::start(Settings { history_size: Some(8), ..common::settings() }).await;
    let mut client = gw.grpc().await;
    let (mut first, _) = gw.envelope_tab("r", &["a", "b"], None).await;
    for event in ["a", "b"] {
        let reply = push(&mut client, text_push("r", event, "before")).await;
        assert_eq!(next_push(&mut first).await.0, reply.seq);
    }
    leave(&gw, "r", first).await;
    let mut seqs = Vec::new();
    for i in 0..20 {
        let event = ["a", "b", "c"][i % 3];
        seqs.push((push(&mut client, text_push("r", event, &format!("m{i}"))).await.seq, event));
    }
    let (mut second, _) = gw.envelope_tab("r", &["a", "b"], Some(2)).await;
    // What is left: the last 8, of which those on a and b.
    for &(seq, _) in seqs[12..].iter().filter(|(_, e)| *e != "c") {
        assert_eq!(next_push(&mut second).await.0, seq);
    }
    let recovered = next_json(&mut second).await;
    assert_eq!(recovered, json!({"type": "recovered", "from": 2, "to": 22, "complete": false}));
}

// ---------------------------------------------------------------- TTL, idempotency

#[tokio::test]
async fn an_expired_ttl_is_not_replayed_and_a_repeated_key_is_delivered_once() {
    let gw = common::start(common::settings()).await;
    let mut client = gw.grpc().await;
    let (mut live, _) = gw.envelope_tab("t", &["a"], None).await;

    const TTL: Duration = Duration::from_millis(50);
    let short = PushRequest { ttl_ms: 50, ..text_push("t", "a", "short") };
    let short = push(&mut client, short).await;
    let expires = Instant::now() + TTL; // the gateway's clock started before this reply
    let kept = push(&mut client, text_push("t", "a", "kept")).await;
    let long = push(&mut client, PushRequest { ttl_ms: 60_000, ..text_push("t", "a", "long") }).await;
    // A TTL limits only the replay: live, all three arrive.
    for (reply, data) in [(&short, "short"), (&kept, "kept"), (&long, "long")] {
        assert_eq!(next_push(&mut live).await, (reply.seq, data.into()));
    }

    tokio::time::sleep_until(expires.into()).await;
    assert!(Instant::now() >= expires, "the TTL has passed");
    let since = short.seq - 1;
    let (mut resumed, _) = gw.envelope_tab("t", &["a"], Some(since)).await;
    assert_eq!(next_push(&mut resumed).await, (kept.seq, "kept".into()), "the expired push is left out");
    assert_eq!(next_push(&mut resumed).await, (long.seq, "long".into()));
    let recovered = next_json(&mut resumed).await;
    assert_eq!(recovered, json!({"type": "recovered", "from": since, "to": long.seq, "complete": true}));
    leave(&gw, "t", resumed).await;

    // The same idempotency key twice: one seq, one delivery.
    let keyed = PushRequest { idempotency_key: "order-17".into(), ..text_push("t", "a", "once") };
    let first = push(&mut client, keyed.clone()).await;
    let again = push(&mut client, keyed).await;
    assert_eq!((first.delivered, first.duplicate), (1, false));
    assert_eq!((again.delivered, again.seq, again.duplicate), (0, first.seq, true));
    let marker = push(&mut client, text_push("t", "a", "marker")).await;
    assert_eq!(marker.seq, first.seq + 1, "the repeat took no seq");
    assert_eq!(next_push(&mut live).await, (first.seq, "once".into()));
    assert_eq!(next_push(&mut live).await, (marker.seq, "marker".into()), "delivered once");
    // Nor is it in the history twice.
    let (mut resumed, _) = gw.envelope_tab("t", &["a"], Some(long.seq)).await;
    assert_eq!(next_push(&mut resumed).await, (first.seq, "once".into()));
    assert_eq!(next_push(&mut resumed).await, (marker.seq, "marker".into()));
    assert_eq!(next_json(&mut resumed).await["type"], "recovered");
}

// ---------------------------------------------------------------- metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_their_counters_move() {
    let settings =
        Settings { conn_queue_bytes: Some(QUEUE_CAP), max_message_bytes: Some(32 * 1024), ..common::settings() };
    let gw = common::start(settings).await;
    let mut client = gw.grpc().await;
    let before = scrape(&gw).await;
    let latency = "pushgate_push_write_latency_seconds";

    let mut tab1 = gw.compat_tab("m1", "e").await;
    let mut tab2 = gw.compat_tab("m1", "e").await;
    let mut other = gw.compat_tab("m2", "e").await;
    let (mut ok, mut delivered) = (0u32, 0u32);
    for i in 0..10 {
        let reply = push(&mut client, text_push("m1", "e", &format!("to m1 {i}"))).await;
        let other_reply = push(&mut client, text_push("m2", "e", &format!("to m2 {i}"))).await;
        (ok, delivered) = (ok + 2, delivered + reply.delivered + other_reply.delivered);
    }
    assert_eq!(delivered, 30);
    for i in 0..10 {
        assert_eq!(next_text(&mut tab1).await, format!("to m1 {i}"));
        assert_eq!(next_text(&mut tab2).await, format!("to m1 {i}"));
        assert_eq!(next_text(&mut other).await, format!("to m2 {i}"));
    }
    let keyed = PushRequest { idempotency_key: "k".into(), ..text_push("nobody", "e", "x") };
    assert!(!push(&mut client, keyed.clone()).await.duplicate);
    assert!(push(&mut client, keyed).await.duplicate);
    ok += 1;
    let status = client.push(text_push("m1", "", "no event")).await.expect_err("invalid");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let middle = scrape(&gw).await;
    assert_eq!(middle.get("pushgate_connections", &[]), 3.0);
    assert_eq!(middle.get("pushgate_users", &[]), 2.0);

    // A Disconnect: 4502.
    let closed = client.disconnect(DisconnectRequest { user_id: "m2".into(), event: None }).await.expect("disconnect");
    assert_eq!(closed.into_inner().closed, 1);
    assert_eq!(texts_until_close(&mut other).await.1, 4502);

    // A slow consumer: big pushes until its queue overflows, then 4000.
    let mut slow = gw.compat_tab("slow", "e").await;
    let big = "s".repeat(30 * 1024);
    let mut pushes = 0;
    loop {
        let reply = push(&mut client, text_push("slow", "e", &big)).await;
        (ok, pushes) = (ok + 1, pushes + 1);
        assert!(pushes < 2_000, "the slow queue never overflowed");
        match reply.delivered {
            1 => delivered += 1,
            _ => break,
        }
    }
    let drops = gw.running.hub.stats().drops;
    assert!(drops > 0, "the overflow dropped what was queued");
    assert_eq!(texts_until_close(&mut slow).await.1, 4000);

    // The close frames above were sent after their close was counted.
    let after = scrape(&gw).await;
    let delta = |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    assert_eq!(delta("pushgate_pushes_total", &[("result", "ok")]), f64::from(ok));
    assert_eq!(delta("pushgate_pushes_total", &[("result", "duplicate")]), 1.0);
    assert_eq!(delta("pushgate_pushes_total", &[("result", "invalid")]), 1.0);
    assert_eq!(delta("pushgate_deliveries_total", &[]), f64::from(delivered));
    assert_eq!(delta("pushgate_drops_total", &[("reason", "slow_consumer")]), drops as f64);
    assert_eq!(delta("pushgate_drops_total", &[("reason", "drop_oldest")]), 0.0);
    assert_eq!(delta("pushgate_disconnects_total", &[("code", "4502")]), 1.0);
    assert_eq!(delta("pushgate_disconnects_total", &[("code", "4000")]), 1.0);
    assert_eq!(delta("pushgate_registrations_total", &[]), 4.0);
    // Two tabs of m1 are left.
    assert_eq!(after.get("pushgate_connections", &[]), 2.0);
    assert_eq!(gw.running.hub.stats().connections, 2);
    assert_eq!(after.get("pushgate_users", &[]), 1.0);
    assert_eq!(after.get("pushgate_subscriptions", &[]), 2.0);
    // One latency observation per batch written: at least one, at most one
    // per delivery.
    let writes = delta(&format!("{latency}_count"), &[]);
    assert!(writes >= 1.0 && writes <= f64::from(delivered), "{writes} latency observations");
    assert!(delta(&format!("{latency}_sum"), &[]) > 0.0);
    let buckets = after.buckets(latency);
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "buckets are cumulative");
    assert_eq!(buckets.last().copied(), Some((f64::INFINITY, after.get(&format!("{latency}_count"), &[]))));
    assert_eq!(after.get("pushgate_broker_publish_errors_total", &[]), 0.0);
}

// ---------------------------------------------------------------- write delay

/// With `--write-delay`, a connection holds its writes that long after the
/// first delivery queued, then writes everything that came meanwhile at once
/// (one observation of the write-latency histogram per write); a close does
/// not wait for the hold, and what was held is written before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_delay_sends_what_came_meanwhile_in_one_write_and_a_close_is_not_held() {
    // The longest delay allowed.
    const DELAY: Duration = Duration::from_secs(1);
    let gw = common::start(Settings { write_delay: Some(DELAY), ..common::settings() }).await;
    let mut client = gw.grpc().await;
    let mut tab = gw.compat_tab("held", "e").await;
    let writes = "pushgate_push_write_latency_seconds_count";
    let before = scrape(&gw).await.get(writes, &[]);

    let started = Instant::now();
    for i in 0..5 {
        assert_eq!(push(&mut client, text_push("held", "e", &format!("held {i}"))).await.delivered, 1);
    }
    let pushed_in = started.elapsed();
    assert_eq!(next_text(&mut tab).await, "held 0");
    let first_after = started.elapsed();
    for i in 1..5 {
        assert_eq!(next_text(&mut tab).await, format!("held {i}"));
    }
    assert!(first_after >= DELAY, "the first push arrived {first_after:?} after it was sent, within the delay");
    // Each hold ends in one write of all that came during it: the five
    // pushes took `pushed_in`, so at most one write per delay of it, plus one.
    let wrote = scrape(&gw).await.get(writes, &[]) - before;
    let most = (pushed_in.as_millis() / DELAY.as_millis() + 1) as f64;
    assert!(wrote >= 1.0 && wrote <= most, "{wrote} writes for 5 pushes sent in {pushed_in:?}");

    // A push, then a Disconnect during its hold: the push, then 4502, both
    // well before the hold would have ended (a second here is ample room
    // for two local calls and two frames).
    let started = Instant::now();
    assert_eq!(push(&mut client, text_push("held", "e", "last")).await.delivered, 1);
    let closed =
        client.disconnect(DisconnectRequest { user_id: "held".into(), event: None }).await.expect("disconnect");
    assert_eq!(closed.into_inner().closed, 1);
    assert_eq!(texts_until_close(&mut tab).await, (vec!["last".to_owned()], 4502));
    let closed_after = started.elapsed();
    assert!(closed_after < DELAY, "the close waited for the hold: {closed_after:?}");
}
