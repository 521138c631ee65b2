//! The producer side end to end: gRPC PushService, wserver's `POST /push`, the
//! `/v1/*` JSON mirror, health and reflection — against the real server on
//! 127.0.0.1:0, with real tonic, HTTP and WebSocket clients.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::uri::PathAndQuery;
use bytes::Bytes;
use common::http::{http, http_to};
use common::ws::{Ws, close_code, next_json, next_text, send_text};
use common::{Gateway, PushClient, WAIT, text_push};
use pushgate::config::Settings;
use pushgate::core::Payload;
use pushgate::proto::{
    BroadcastRequest, DisconnectRequest, OnlineRequest, PushBatchRequest, PushReply, PushRequest, StatsRequest,
    broadcast_request, push_request,
};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tonic::Code;

// ---------------------------------------------------------------- helpers

fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {key}").parse().expect("header value");
    request.metadata_mut().insert("authorization", value);
    request
}

/// Four tabs: two of u1 on `e` (a, b), one of u2 on `e`, one of u1 on `other`.
struct Tabs {
    a: Ws,
    b: Ws,
    other_user: Ws,
    other_event: Ws,
    round: u32,
}

impl Tabs {
    async fn open(gw: &Gateway) -> Self {
        let a = gw.compat_tab("u1", "e").await;
        let b = gw.compat_tab("u1", "e").await;
        let other_user = gw.compat_tab("u2", "e").await;
        let other_event = gw.compat_tab("u1", "other").await;
        Self { a, b, other_user, other_event, round: 0 }
    }

    /// Checks that `message` reached exactly the tabs in `got` (by name) and
    /// none of the others: each other tab's next frame must be a marker pushed
    /// to its (user, event) after the push under test, which a wrongly
    /// delivered message would precede.
    async fn check(&mut self, gw: &Gateway, message: &str, got: &[&str]) {
        self.round += 1;
        let round = self.round;
        let marker = |user: &str, event: &str| format!("marker {round} {user}/{event}");
        let mut marked = Vec::new();
        for (name, user, event) in TABS {
            if !got.contains(&name) && !marked.contains(&(user, event)) {
                gw.push(user, event, Payload::text(marker(user, event)));
                marked.push((user, event));
            }
        }
        for (name, user, event) in TABS {
            let ws = match name {
                "a" => &mut self.a,
                "b" => &mut self.b,
                "other_user" => &mut self.other_user,
                _ => &mut self.other_event,
            };
            let expected = if got.contains(&name) { message.to_owned() } else { marker(user, event) };
            assert_eq!(next_text(ws).await, expected, "tab {name}");
        }
    }
}

/// Tab name, user, event.
const TABS: [(&str, &str, &str); 4] =
    [("a", "u1", "e"), ("b", "u1", "e"), ("other_user", "u2", "e"), ("other_event", "u1", "other")];

/// The tabs of u1 on `e`: what a push to (u1, e) must reach.
const U1_E: &[&str] = &["a", "b"];

// ------------------------------------------------------------------ delivery

#[tokio::test]
async fn unary_push_reaches_the_users_tabs_on_the_event_only() {
    let gw = common::start(common::settings()).await;
    let mut tabs = Tabs::open(&gw).await;
    let mut client = gw.grpc().await;
    let mut request = text_push("u1", "e", "hello ✓ \"quoted\"");
    request.request_id = "req-1".into();
    let reply = client.push(request).await.expect("push").into_inner();
    assert_eq!((reply.delivered, reply.request_id.as_str(), reply.error), (2, "req-1", None));
    assert!(reply.seq > 0);
    tabs.check(&gw, "hello ✓ \"quoted\"", U1_E).await;

    let reply = client.push(text_push("nobody", "e", "x")).await.expect("push").into_inner();
    assert_eq!(reply.delivered, 0);

    let mut keyed = text_push("u1", "e", "once");
    keyed.idempotency_key = "k-1".into();
    let first = client.push(keyed.clone()).await.expect("push").into_inner();
    let again = client.push(keyed).await.expect("push").into_inner();
    assert_eq!((first.delivered, first.duplicate), (2, false));
    assert_eq!((again.delivered, again.seq, again.duplicate), (0, first.seq, true));
    tabs.check(&gw, "once", U1_E).await; // and only once: the next frame is the marker below
    tabs.check(&gw, "after", &[]).await;
}

#[tokio::test]
async fn push_stream_replies_in_order_and_survives_a_bad_request() {
    let gw = common::start(common::settings()).await;
    let mut tabs = Tabs::open(&gw).await;
    let mut client = gw.grpc().await;
    let mut requests: Vec<PushRequest> = (0..6).map(|i| text_push("u1", "e", &format!("s{i}"))).collect();
    requests[2].event = String::new();
    requests[4].event = "no spaces".into();
    for (i, r) in requests.iter_mut().enumerate() {
        r.request_id = format!("r{i}");
    }
    let outbound = futures_util::stream::iter(requests);
    let mut replies = client.push_stream(outbound).await.expect("stream").into_inner();
    let mut got = Vec::new();
    while let Some(reply) = timeout(WAIT, replies.message()).await.expect("reply in time").expect("reply") {
        got.push(reply);
    }
    let ids: Vec<&str> = got.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, ["r0", "r1", "r2", "r3", "r4", "r5"]);
    for i in [2, 4] {
        let error = got[i].error.as_ref().expect("error set");
        assert_eq!((error.code, got[i].delivered, got[i].seq), (3, 0, 0));
        assert!(error.message.contains("event"), "{}", error.message);
    }
    let seqs: Vec<u64> = [0, 1, 3, 5].iter().map(|&i| got[i].seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs increase: {seqs:?}");
    assert!([0, 1, 3, 5].iter().all(|&i| got[i].delivered == 2 && got[i].error.is_none()));
    for message in ["s0", "s1", "s3", "s5"] {
        tabs.check(&gw, message, U1_E).await;
    }
}

/// The gateway reads the next request of a `PushStream` only as replies are
/// taken: a producer that sends 100 000 requests and reads no reply gets only
/// flow-control windows' worth of them pushed; reading the replies then
/// lets the rest through, in order.
#[tokio::test]
async fn push_stream_holds_back_a_producer_that_does_not_read() {
    const SENT: usize = 100_000;
    let gw = common::start(common::settings()).await;
    // A producer with HTTP/2's default 64 KiB receive windows (hyper's are
    // larger), so its unread replies fill them soon.
    let endpoint = tonic::transport::Endpoint::from_shared(gw.internal_url()).expect("url");
    let endpoint = endpoint.initial_stream_window_size(65_535).initial_connection_window_size(65_535);
    let mut client = PushClient::new(endpoint.connect().await.expect("connect"));
    let payload = "p".repeat(50);
    let requests: Vec<PushRequest> =
        (0..SENT).map(|i| PushRequest { request_id: i.to_string(), ..text_push("nobody", "e", &payload) }).collect();
    let mut replies = client.push_stream(futures_util::stream::iter(requests)).await.expect("stream").into_inner();

    // Wait until the gateway stops taking requests.
    let stalled_at = gw.until_pushes_stall().await;
    assert!(stalled_at < SENT as u64 / 2, "{stalled_at} of {SENT} pushed with no reply read");

    for i in 0..SENT {
        let reply = timeout(WAIT, replies.message()).await.expect("in time").expect("reply").expect("open");
        assert_eq!(reply.request_id, i.to_string());
    }
    assert!(timeout(WAIT, replies.message()).await.expect("in time").expect("clean end").is_none());
    assert_eq!(gw.running.hub.stats().pushes, SENT as u64);
}

#[tokio::test]
async fn push_batch_answers_each_push() {
    let gw = common::start(common::settings()).await;
    let mut tabs = Tabs::open(&gw).await;
    let mut client = gw.grpc().await;
    let mut pushes = vec![text_push("u1", "e", "b0"), text_push("", "e", "b1"), text_push("u1", "e", "b2")];
    for (i, p) in pushes.iter_mut().enumerate() {
        p.request_id = format!("b{i}");
    }
    let reply = client.push_batch(PushBatchRequest { pushes }).await.expect("batch").into_inner();
    let summary: Vec<(u32, &str, Option<i32>)> =
        reply.replies.iter().map(|r| (r.delivered, r.request_id.as_str(), r.error.as_ref().map(|e| e.code))).collect();
    assert_eq!(summary, [(2, "b0", None), (0, "b1", Some(3)), (2, "b2", None)]);
    let message = &reply.replies[1].error.as_ref().expect("error").message;
    assert!(message.contains("user_id"), "{message}");
    tabs.check(&gw, "b0", U1_E).await;
    tabs.check(&gw, "b2", U1_E).await;
}

#[tokio::test]
async fn broadcast_reaches_every_tab_on_the_event_or_only_listed_users() {
    let gw = common::start(common::settings()).await;
    let mut tabs = Tabs::open(&gw).await;
    let mut client = gw.grpc().await;
    let everyone = BroadcastRequest {
        event: "e".into(),
        payload: Some(broadcast_request::Payload::Message("all".into())),
        request_id: "bc".into(),
        ..Default::default()
    };
    let reply = client.broadcast(everyone).await.expect("broadcast").into_inner();
    assert_eq!((reply.delivered, reply.request_id.as_str()), (3, "bc"));
    tabs.check(&gw, "all", &["a", "b", "other_user"]).await;

    let listed = BroadcastRequest {
        event: "e".into(),
        payload: Some(broadcast_request::Payload::Message("listed".into())),
        user_ids: vec!["u1".into(), "absent".into(), "u1".into(), "u1".into()],
        ..Default::default()
    };
    // u1 is listed three times and still gets one copy on each of its tabs.
    assert_eq!(client.broadcast(listed).await.expect("broadcast").into_inner().delivered, 2);
    tabs.check(&gw, "listed", U1_E).await;

    let bad = BroadcastRequest { event: String::new(), ..Default::default() };
    let status = client.broadcast(bad).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("event"), "{}", status.message());
}

#[tokio::test]
async fn http_push_and_v1_push_reach_the_right_tabs() {
    let gw = common::start(common::settings()).await;
    let mut tabs = Tabs::open(&gw).await;

    let reply = http(&gw, "POST", "/push", None, r#"{"userId":"u1","event":"e","message":"wserver"}"#).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "message sent to 2 clients"));
    assert!(reply.content_type.starts_with("text/plain"), "{}", reply.content_type);
    tabs.check(&gw, "wserver", U1_E).await;

    for (body, message) in [
        (r#"{"user_id":"u1","event":"e","message":"snake","request_id":"h1"}"#, "snake"),
        (r#"{"userId":"u1","event":"e","message":"camel","requestId":"h1"}"#, "camel"),
    ] {
        let reply = http(&gw, "POST", "/v1/push", None, body).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(reply.content_type.starts_with("application/json"), "{}", reply.content_type);
        let parsed: PushReply = serde_json::from_str(&reply.body).expect("proto3 JSON PushReply");
        assert_eq!((parsed.delivered, parsed.request_id.as_str()), (2, "h1"));
        assert!(parsed.seq > 0);
        tabs.check(&gw, message, U1_E).await;
    }

    let reply = http(&gw, "POST", "/v1/broadcast", None, r#"{"event":"e","message":"v1 all"}"#).await;
    assert_eq!((reply.status, reply.json()["delivered"].as_u64()), (200, Some(3)));
    tabs.check(&gw, "v1 all", &["a", "b", "other_user"]).await;
    let twice = r#"{"event":"e","message":"v1 listed","user_ids":["u1","u1"]}"#;
    let reply = http(&gw, "POST", "/v1/broadcast", None, twice).await;
    assert_eq!((reply.status, reply.json()["delivered"].as_u64()), (200, Some(2)), "u1 once");
    tabs.check(&gw, "v1 listed", U1_E).await;

    let batch = r#"{"pushes":[{"userId":"u1","event":"e","message":"v1 b0"},{"userId":"u1","event":"e"}]}"#;
    let reply = http(&gw, "POST", "/v1/push_batch", None, batch).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let replies = reply.json()["replies"].as_array().expect("replies").clone();
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[0]["delivered"].as_u64(), Some(2));
    tabs.check(&gw, "v1 b0", U1_E).await;
    tabs.check(&gw, "", U1_E).await; // no payload: empty text
}

#[tokio::test]
async fn envelope_tab_gets_the_push_with_the_replied_seq() {
    let gw = common::start(common::settings()).await;
    let mut ws = gw.envelope().await;
    send_text(&mut ws, r#"{"token":"env","event":"e"}"#).await;
    let registered = next_json(&mut ws).await;
    assert_eq!(registered["type"], "registered");
    gw.wait_online("env", 1).await;

    let reply = gw.grpc().await.push(text_push("env", "e", "enveloped")).await.expect("push").into_inner();
    assert_eq!(reply.delivered, 1);
    let frame = next_json(&mut ws).await;
    assert_eq!((frame["type"].as_str(), frame["event"].as_str()), (Some("push"), Some("e")));
    assert_eq!((frame["seq"].as_u64(), frame["data"].as_str()), (Some(reply.seq), Some("enveloped")));
}

// ------------------------------------------------------------ wserver's scenario

#[tokio::test]
async fn wserver_scenario_hundred_pushes_then_disconnect() {
    let gw = common::start(common::settings()).await;
    let mut ws = gw.compat_tab("alice", "news").await;
    let messages: Vec<String> =
        (0..100).map(|i| format!("#{i} {{\"json\":true}} ünïcødé\n\t\\ {}", "x".repeat(i))).collect();
    for message in &messages {
        let body = serde_json::json!({"userId": "alice", "event": "news", "message": message}).to_string();
        let reply = http(&gw, "POST", "/push", None, &body).await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "message sent to 1 clients"));
    }
    for message in &messages {
        assert_eq!(&next_text(&mut ws).await, message);
    }
    let request = DisconnectRequest { user_id: "alice".into(), event: None };
    let reply = gw.grpc().await.disconnect(request).await.expect("disconnect").into_inner();
    assert_eq!(reply.closed, 1);
    assert_eq!(close_code(&mut ws).await, 4502);
    assert_eq!(gw.running.hub.online(&["alice".into()]), [0]);
}

#[tokio::test]
async fn disconnect_only_the_tabs_on_one_event() {
    let gw = common::start(common::settings()).await;
    let mut on_e = gw.compat_tab("bob", "e").await;
    let mut on_f = gw.compat_tab("bob", "f").await;
    let reply = http(&gw, "POST", "/v1/disconnect", None, r#"{"userId":"bob","event":"e"}"#).await;
    assert_eq!((reply.status, reply.json()["closed"].as_u64()), (200, Some(1)));
    assert_eq!(close_code(&mut on_e).await, 4502);
    gw.push_text("bob", "f", "still");
    assert_eq!(next_text(&mut on_f).await, "still");
}

// ------------------------------------------------------------- concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_producers_keep_their_order() {
    const PRODUCERS: usize = 8;
    const EACH: usize = 200;
    let gw = Arc::new(common::start(common::settings()).await);
    let mut ws = gw.compat_tab("hot", "e").await;
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let gw = Arc::clone(&gw);
        tasks.push(tokio::spawn(async move {
            let mut client = gw.grpc().await;
            for n in 0..EACH {
                let reply = client.push(text_push("hot", "e", &format!("p{p}:{n}:{}", "·".repeat(n % 7)))).await;
                assert_eq!(reply.expect("push").into_inner().delivered, 1);
            }
        }));
    }
    let mut next = [0usize; PRODUCERS];
    for _ in 0..PRODUCERS * EACH {
        let text = next_text(&mut ws).await;
        let mut parts = text.splitn(3, ':');
        let p: usize = parts.next().and_then(|s| s.strip_prefix('p')).and_then(|s| s.parse().ok()).expect("producer");
        let n: usize = parts.next().and_then(|s| s.parse().ok()).expect("number");
        assert_eq!(n, next[p], "producer {p} out of order");
        assert_eq!(parts.next(), Some("·".repeat(n % 7).as_str()), "payload intact");
        next[p] += 1;
    }
    for task in tasks {
        task.await.expect("producer task");
    }
    assert_eq!(next, [EACH; PRODUCERS]);
}

// ---------------------------------------------------------------- bad input

/// After a refused request, the healthy tab still gets a push.
async fn still_healthy(client: &mut PushClient, tab: &mut Ws, round: &mut u32) {
    *round += 1;
    let message = format!("healthy {round}");
    let reply = client.push(with_key(text_push("ok", "e", &message), "k1")).await.expect("healthy push");
    assert_eq!(reply.into_inner().delivered, 1);
    assert_eq!(next_text(tab).await, message);
}

#[tokio::test]
async fn bad_input_is_refused_and_harms_no_one() {
    let settings = Settings { api_keys: Some(vec!["k1".into()]), max_message_bytes: Some(1024), ..common::settings() };
    let gw = common::start(settings).await;
    let mut tab = gw.compat_tab("ok", "e").await;
    let mut client = gw.grpc().await;
    let mut round = 0;

    // Producer key, gRPC.
    let status = client.push(text_push("ok", "e", "no key")).await.expect_err("no key");
    assert_eq!(status.code(), Code::Unauthenticated);
    still_healthy(&mut client, &mut tab, &mut round).await;
    let status = client.push(with_key(text_push("ok", "e", "bad key"), "k2")).await.expect_err("wrong key");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = client.stats(StatsRequest {}).await.expect_err("stats needs the key too");
    assert_eq!(status.code(), Code::Unauthenticated);
    still_healthy(&mut client, &mut tab, &mut round).await;

    // Producer key, HTTP.
    let body = r#"{"userId":"ok","event":"e","message":"m"}"#;
    assert_eq!(http(&gw, "POST", "/push", None, body).await.status, 401);
    assert_eq!(http(&gw, "POST", "/push", Some("k2"), body).await.status, 401);
    let reply = http(&gw, "POST", "/v1/push", Some("nope"), body).await;
    assert_eq!((reply.status, reply.json()["code"].as_str()), (401, Some("UNAUTHENTICATED")));
    still_healthy(&mut client, &mut tab, &mut round).await;

    // Validation, gRPC: each error names its field.
    let big = "x".repeat(1025);
    let binary = PushRequest {
        payload: Some(push_request::Payload::Data(Bytes::from(vec![0u8; 1025]))),
        ..text_push("ok", "e", "")
    };
    for (request, field) in [
        (text_push("", "e", "m"), "user_id"),
        (text_push("ok", "", "m"), "event"),
        (text_push("ok", "bad event!", "m"), "event"),
        (text_push("ok", &"e".repeat(129), "m"), "event"),
        (text_push("ok", "e", &big), "message"),
        (binary, "data"),
    ] {
        let status = client.push(with_key(request, "k1")).await.expect_err("invalid");
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {}", status.message());
        assert!(status.message().contains(field), "{field}: {}", status.message());
        still_healthy(&mut client, &mut tab, &mut round).await;
    }
    let status = client.disconnect(with_key(DisconnectRequest::default(), "k1")).await.expect_err("no user");
    assert_eq!(status.code(), Code::InvalidArgument);

    // Decode limits: a request far over --max-message-bytes is refused by the
    // decoder with RESOURCE_EXHAUSTED naming the flag — unary, batch, and a
    // request of a stream alike; a batch may be much larger than one push.
    let over_limit = |status: tonic::Status, call: &str| {
        assert_eq!(status.code(), Code::ResourceExhausted, "{call}: {}", status.message());
        assert!(status.message().contains("--max-message-bytes"), "{call}: {}", status.message());
    };
    let huge = text_push("ok", "e", &"x".repeat(64 * 1024));
    over_limit(client.push(with_key(huge.clone(), "k1")).await.expect_err("over the decode limit"), "push");
    still_healthy(&mut client, &mut tab, &mut round).await;
    let pushes = (0..5).map(|_| text_push("nobody", "e", &"x".repeat(1 << 20))).collect();
    let status = client.push_batch(with_key(PushBatchRequest { pushes }, "k1")).await.expect_err("5 MiB batch");
    over_limit(status, "push_batch");
    still_healthy(&mut client, &mut tab, &mut round).await;
    let requests = futures_util::stream::iter([text_push("nobody", "e", "fits"), huge]);
    let mut replies = client.push_stream(with_key(requests, "k1")).await.expect("stream opens").into_inner();
    let first = timeout(WAIT, replies.message()).await.expect("in time").expect("first reply").expect("one");
    assert!(first.error.is_none(), "the request that fits is pushed: {first:?}");
    let status = timeout(WAIT, replies.message()).await.expect("in time").expect_err("oversized request");
    over_limit(status, "push_stream");
    still_healthy(&mut client, &mut tab, &mut round).await;
    let pushes = (0..40).map(|_| text_push("nobody", "e", &"x".repeat(1000))).collect();
    let batch = client.push_batch(with_key(PushBatchRequest { pushes }, "k1")).await.expect("40 KB batch");
    assert!(batch.into_inner().replies.iter().all(|r| r.error.is_none()));
    still_healthy(&mut client, &mut tab, &mut round).await;

    // Validation, wserver's /push: always 400 "request data illegal".
    let oversize = serde_json::json!({"userId": "ok", "event": "e", "message": big}).to_string();
    for body in [
        "not json",
        r#"{"userId":"ok","event":"e"}"#,
        r#"{"userId":"","event":"e","message":"m"}"#,
        r#"{"userId":"ok","event":"bad event","message":"m"}"#,
        r#"{"userId":"ok","event":"e","message":42}"#,
        oversize.as_str(),
    ] {
        let reply = http(&gw, "POST", "/push", Some("k1"), body).await;
        assert_eq!((reply.status, reply.body.as_str()), (400, "request data illegal"), "{body}");
        still_healthy(&mut client, &mut tab, &mut round).await;
    }

    // Validation, /v1: JSON errors with the gRPC code's name.
    for (body, field) in [
        (r#"{"user_id":"ok","event":"","message":"m"}"#, "event"),
        (r#"{"user_id":"","event":"e","message":"m"}"#, "user_id"),
        (r#"{"user_id":"ok","event":"e","message":"#, "body"),
    ] {
        let reply = http(&gw, "POST", "/v1/push", Some("k1"), body).await;
        let json = reply.json();
        assert_eq!((reply.status, json["code"].as_str()), (400, Some("INVALID_ARGUMENT")), "{body}");
        assert!(json["message"].as_str().is_some_and(|m| m.contains(field)), "{body}: {json}");
    }
    still_healthy(&mut client, &mut tab, &mut round).await;

    // A body over the HTTP size limit: 413, on both families.
    let huge = serde_json::json!({"userId": "ok", "event": "e", "message": "x".repeat(200 * 1024)}).to_string();
    let reply = http(&gw, "POST", "/v1/push", Some("k1"), &huge).await;
    assert_eq!((reply.status, reply.json()["code"].as_str()), (413, Some("RESOURCE_EXHAUSTED")), "{}", reply.body);
    assert_eq!(http(&gw, "POST", "/push", Some("k1"), &huge).await.status, 413);
    still_healthy(&mut client, &mut tab, &mut round).await;

    // Wrong methods, before any key check.
    for path in ["/push", "/v1/push", "/v1/stats"] {
        assert_eq!(http(&gw, "GET", path, None, "").await.status, 405, "{path}");
        assert_eq!(http(&gw, "PUT", path, Some("k1"), "").await.status, 405, "{path}");
    }
    still_healthy(&mut client, &mut tab, &mut round).await;

    // Health and metrics need no key.
    assert_eq!(http(&gw, "GET", "/metrics", None, "").await.status, 200);
    assert_eq!(http(&gw, "GET", "/healthz", None, "").await.body, "ok");
    assert_eq!(http(&gw, "GET", "/readyz", None, "").await.body, "ready");
}

#[tokio::test]
async fn shutting_down_answers_unavailable() {
    let gw = common::start(common::settings()).await;
    gw.running.hub.begin_shutdown();
    let status = gw.grpc().await.push(text_push("u", "e", "m")).await.expect_err("unavailable");
    assert_eq!(status.code(), Code::Unavailable);
    let reply = http(&gw, "POST", "/v1/push", None, r#"{"userId":"u","event":"e"}"#).await;
    assert_eq!((reply.status, reply.json()["code"].as_str()), (503, Some("UNAVAILABLE")));
    assert_eq!(http(&gw, "POST", "/push", None, r#"{"userId":"u","event":"e","message":"m"}"#).await.status, 503);
    assert_eq!(http(&gw, "GET", "/readyz", None, "").await.status, 503);
    assert_eq!(http(&gw, "GET", "/healthz", None, "").await.status, 200);
}

/// Shutdown stops the internal listener, but a `PushStream` in flight goes
/// on: its pushes are answered UNAVAILABLE until the producer ends it.
#[tokio::test]
async fn shutdown_lets_an_open_push_stream_finish() {
    let gw = common::start(common::settings()).await;
    let mut client = gw.grpc().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<PushRequest>(1);
    let outbound = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    tx.send(text_push("u", "e", "before")).await.expect("send");
    let mut replies = client.push_stream(outbound).await.expect("stream").into_inner();
    let first = timeout(WAIT, replies.message()).await.expect("in time").expect("reply").expect("open");
    assert_eq!(first.error, None);

    gw.running.shutdown();
    let addr = gw.internal();
    timeout(WAIT, async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the internal listener stops accepting");

    tx.send(text_push("u", "e", "during")).await.expect("send");
    let second = timeout(WAIT, replies.message()).await.expect("in time").expect("reply").expect("open");
    assert_eq!(second.error.map(|e| e.code), Some(14));
    drop(tx);
    assert!(timeout(WAIT, replies.message()).await.expect("in time").expect("clean end").is_none());
    timeout(WAIT, gw.running.wait()).await.expect("shutdown completes once the stream ended");
}

// ------------------------------------------------------- health, reflection

#[tokio::test]
async fn health_and_reflection_answer_without_a_key() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let gw = common::start(Settings { api_keys: Some(vec!["k1".into()]), ..common::settings() }).await;
    let channel =
        tonic::transport::Endpoint::from_shared(gw.internal_url()).expect("url").connect().await.expect("connect");
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "pushgate.v1.PushService"] {
        let request = HealthCheckRequest { service: service.into() };
        let status = health.check(request).await.expect("health").into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }

    // Both reflection versions list every service served here, so
    // `grpcurl list` shows health too.
    let served = ["pushgate.v1.PushService", "grpc.health.v1.Health"];
    let names = list_services_v1(channel.clone()).await;
    for service in served {
        assert!(names.iter().any(|n| n == service), "v1 lists {service}: {names:?}");
    }
    let names = list_services_v1alpha(channel).await;
    for service in served {
        assert!(names.iter().any(|n| n == service), "v1alpha lists {service}: {names:?}");
    }
}

/// Generates a `ListServices` call for one version of the reflection API.
macro_rules! list_services {
    ($name:ident, $version:ident) => {
        async fn $name(channel: tonic::transport::Channel) -> Vec<String> {
            use tonic_reflection::pb::$version::ServerReflectionRequest;
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut replies = ServerReflectionClient::new(channel)
                .server_reflection_info(futures_util::stream::iter([request]))
                .await
                .expect("reflection")
                .into_inner();
            let reply = timeout(WAIT, replies.message()).await.expect("in time").expect("reply").expect("one reply");
            let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
                panic!("unexpected reflection reply {:?}", reply.message_response);
            };
            list.service.into_iter().map(|s| s.name).collect()
        }
    };
}
list_services!(list_services_v1, v1);
list_services!(list_services_v1alpha, v1alpha);

// ------------------------------------------------------------ online, stats

#[tokio::test]
async fn online_and_stats_report_what_is_connected() {
    let settings = Settings { node_id: Some("node-a".into()), ..common::settings() };
    let gw = common::start(settings).await;
    let mut client = gw.grpc().await;
    let before = client.stats(StatsRequest {}).await.expect("stats").into_inner();
    assert_eq!((before.connections, before.users, before.pushes), (0, 0, 0));
    assert_eq!(before.node_id, "node-a");

    let _tabs = Tabs::open(&gw).await; // u1: 3 connections, u2: 1
    let users = vec!["u1".to_owned(), "u2".to_owned(), "nobody".to_owned()];
    let online = client.online(OnlineRequest { user_ids: users }).await.expect("online").into_inner();
    let expected: HashMap<String, u32> = [("u1".into(), 3), ("u2".into(), 1), ("nobody".into(), 0)].into();
    assert_eq!(online.connections, expected);

    client.push(text_push("u1", "e", "counted")).await.expect("push");
    let stats = client.stats(StatsRequest {}).await.expect("stats").into_inner();
    assert_eq!((stats.connections, stats.users, stats.subscriptions), (4, 2, 4));
    assert_eq!((stats.pushes, stats.deliveries), (1, 2));

    let reply = http(&gw, "POST", "/v1/online", None, r#"{"user_ids":["u1","u2"]}"#).await;
    assert_eq!(reply.json()["connections"], serde_json::json!({"u1": 3, "u2": 1}));
    let metrics = http(&gw, "GET", "/metrics", None, "").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.content_type.starts_with("application/openmetrics-text"), "{}", metrics.content_type);
    assert!(metrics.body.contains("pushgate_connections 4"), "{}", metrics.body);
    assert!(metrics.body.contains(r#"pushgate_node{node_id="node-a"} 1"#), "{}", metrics.body);
    assert!(metrics.body.ends_with("# EOF\n"), "{}", metrics.body);

    let reply = http(&gw, "POST", "/v1/stats", None, "").await;
    let json = reply.json();
    assert_eq!((json["connections"].as_str(), json["users"].as_str()), (Some("4"), Some("2")), "{json}");
}

#[tokio::test]
async fn push_on_public_serves_wserver_push_with_a_key() {
    let settings = Settings { push_on_public: Some(true), api_keys: Some(vec!["k1".into()]), ..common::settings() };
    let gw = common::start(settings).await;
    let mut tab = gw.compat_tab("u1", "e").await;
    let public = format!("http://{}", gw.public());
    let body = r#"{"userId":"u1","event":"e","message":"via the public port"}"#;
    let refused = http_to(&public, "POST", "/push", None, body).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    let sent = http_to(&public, "POST", "/push", Some("k1"), body).await;
    assert_eq!((sent.status, sent.body.as_str()), (200, "message sent to 1 clients"));
    assert_eq!(next_text(&mut tab).await, "via the public port");
    // Without the flag the public port has no /push.
    let plain = common::start(Settings { api_keys: Some(vec!["k1".into()]), ..common::settings() }).await;
    let absent = http_to(&format!("http://{}", plain.public()), "POST", "/push", Some("k1"), body).await;
    assert_eq!(absent.status, 404);
    // And the flag needs a key.
    let err = Settings { push_on_public: Some(true), ..common::settings() }.resolve().expect_err("refused");
    assert!(err.to_string().contains("push-on-public"), "{err}");
}

/// One HTTP/1.1 request written by hand to `addr`, on a connection of its
/// own; the whole answer, without its `date` line (the only part that may
/// differ between two answers).
async fn raw_answer(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut answer)).await.expect("answer in time").expect("read");
    let answer = String::from_utf8(answer).expect("utf-8");
    answer.split("\r\n").filter(|line| !line.starts_with("date:")).collect::<Vec<_>>().join("\r\n")
}

/// The internal port answers HTTP/1.1 `POST /push` itself, ahead of its
/// router; the public port's `/push` (`--push-on-public`) is the router's
/// route. Both answer every kind of request alike, byte for byte: a push,
/// no key, a bad body, an empty message, a message or a body over its
/// limit, another method.
#[tokio::test]
async fn wserver_push_is_answered_alike_by_the_listener_and_by_the_route() {
    let settings = Settings {
        push_on_public: Some(true),
        api_keys: Some(vec!["k1".into()]),
        max_message_bytes: Some(1024),
        ..common::settings()
    };
    let gw = common::start(settings).await;
    let mut tab = gw.compat_tab("u1", "e").await;
    let request = |method: &str, key: Option<&str>, body: &str| {
        let auth = key.map(|k| format!("authorization: Bearer {k}\r\n")).unwrap_or_default();
        let head = format!("{method} /push HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{auth}");
        format!("{head}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len())
    };
    let push = r#"{"userId":"u1","event":"e","message":"alike"}"#;
    let long = format!(r#"{{"userId":"u1","event":"e","message":"{}"}}"#, "x".repeat(2048));
    let huge = format!(r#"{{"userId":"u1","event":"e","message":"{}"}}"#, "x".repeat(256 << 10));
    let cases = [
        ("a push", request("POST", Some("k1"), push), "HTTP/1.1 200 OK"),
        ("no key", request("POST", None, push), "HTTP/1.1 401"),
        ("a wrong key", request("POST", Some("k2"), push), "HTTP/1.1 401"),
        ("not JSON", request("POST", Some("k1"), "not json"), "HTTP/1.1 400"),
        (
            "an empty message",
            request("POST", Some("k1"), r#"{"userId":"u1","event":"e","message":""}"#),
            "HTTP/1.1 400",
        ),
        ("a bad event", request("POST", Some("k1"), r#"{"userId":"u1","event":"a b","message":"m"}"#), "HTTP/1.1 400"),
        ("a message over the limit", request("POST", Some("k1"), &long), "HTTP/1.1 400"),
        ("a body over the limit", request("POST", Some("k1"), &huge), "HTTP/1.1 413"),
        ("another method", request("PUT", Some("k1"), push), "HTTP/1.1 405"),
    ];
    for (name, request, status) in cases {
        let direct = raw_answer(gw.internal(), request.as_bytes()).await;
        let routed = raw_answer(gw.public(), request.as_bytes()).await;
        assert!(direct.starts_with(status), "{name}: {direct} / routed: {routed}");
        assert_eq!(direct, routed, "{name}: the listener's answer and the route's differ");
    }
    assert!(
        raw_answer(gw.internal(), request("POST", Some("k1"), push).as_bytes())
            .await
            .ends_with("message sent to 1 clients")
    );
    for _ in 0..3 {
        assert_eq!(next_text(&mut tab).await, "alike");
    }
}

#[tokio::test]
async fn unknown_paths_get_404_over_http_and_unimplemented_over_grpc() {
    let gw = common::start(common::settings()).await;
    let reply = http(&gw, "GET", "/no/such/path", None, "").await;
    assert_eq!((reply.status, reply.body.as_str()), (404, "not found"));
    let channel = tonic::transport::Channel::from_shared(gw.internal_url()).expect("url").connect().await.expect("c");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    // An unknown service (routed), an unknown method of PushService (served
    // without the router), and a service whose name only starts like it.
    for path in
        ["/pushgate.v1.NoSuchService/Nothing", "/pushgate.v1.PushService/Nothing", "/pushgate.v1.PushServiceX/Stats"]
    {
        let codec = tonic_prost::ProstCodec::<pushgate::proto::StatsRequest, pushgate::proto::StatsReply>::default();
        let status = grpc
            .unary(tonic::Request::new(pushgate::proto::StatsRequest {}), PathAndQuery::from_static(path), codec)
            .await
            .expect_err("no such method");
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{path}: {status:?}");
        grpc.ready().await.expect("ready");
    }
    // PushService's own methods answer on that path (Stats needs no setup).
    let codec = tonic_prost::ProstCodec::<pushgate::proto::StatsRequest, pushgate::proto::StatsReply>::default();
    let path = PathAndQuery::from_static("/pushgate.v1.PushService/Stats");
    grpc.unary(tonic::Request::new(pushgate::proto::StatsRequest {}), path, codec).await.expect("stats");
}

/// Reads `n` HTTP/1.1 answers from `stream`, each as its status line and
/// body (`"HTTP/1.1 200 OK | message sent to 1 clients"`).
async fn answers(stream: &mut TcpStream, n: usize) -> Vec<String> {
    use tokio::io::AsyncReadExt as _;
    let mut read = Vec::new();
    let mut answers = Vec::new();
    while answers.len() < n {
        let text = String::from_utf8_lossy(&read).into_owned();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .map_or(0, |n| n.parse::<usize>().expect("a length"));
            if rest.len() >= length {
                let status = head.lines().next().unwrap_or_default();
                answers.push(format!("{status} | {}", &rest[..length]));
                read.drain(..head.len() + 4 + length);
                continue;
            }
        }
        let mut buf = [0u8; 4096];
        let got = timeout(WAIT, stream.read(&mut buf)).await.expect("an answer in time").expect("read");
        assert!(got > 0, "closed after {answers:?}");
        read.extend_from_slice(&buf[..got]);
    }
    answers
}

/// wserver's producers keep their connection: several pushes on one
/// connection, sent one by one or all at once, a refused one among them
/// (its body is read past), then a request of another kind (after which
/// the connection is hyper's) and a push again — each answered in order,
/// and only the pushes with a key made.
#[tokio::test]
async fn wserver_pushes_share_a_kept_alive_connection() {
    use tokio::io::AsyncWriteExt as _;
    let settings = Settings { api_keys: Some(vec!["k1".into()]), ..common::settings() };
    let gw = common::start(settings).await;
    let mut tab = gw.compat_tab("u1", "e").await;
    let push = |key: &str, message: &str| {
        let body = format!(r#"{{"userId":"u1","event":"e","message":"{message}"}}"#);
        let head = format!("POST /push HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n");
        format!("{head}content-length: {}\r\n\r\n{body}", body.len())
    };
    let mut producer = TcpStream::connect(gw.internal()).await.expect("connect");
    let first = push("k1", "one");
    let (head, body) = first.split_at(first.find("\r\n\r\n").expect("a head") + 4);
    producer.write_all(head.as_bytes()).await.expect("write");
    producer.write_all(body.as_bytes()).await.expect("write");
    assert_eq!(answers(&mut producer, 1).await, ["HTTP/1.1 200 OK | message sent to 1 clients"]);
    let together = [push("k2", "refused"), push("k1", "two"), push("k1", "three")].concat();
    producer.write_all(together.as_bytes()).await.expect("write");
    assert_eq!(
        answers(&mut producer, 3).await,
        [
            "HTTP/1.1 401 Unauthorized | ",
            "HTTP/1.1 200 OK | message sent to 1 clients",
            "HTTP/1.1 200 OK | message sent to 1 clients",
        ]
    );
    let other = [&b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"[..], push("k1", "four").as_bytes()].concat();
    producer.write_all(&other).await.expect("write");
    assert_eq!(
        answers(&mut producer, 2).await,
        ["HTTP/1.1 200 OK | ok", "HTTP/1.1 200 OK | message sent to 1 clients"]
    );
    for expected in ["one", "two", "three", "four"] {
        assert_eq!(next_text(&mut tab).await, expected);
    }
    assert_eq!(gw.running.hub.stats().pushes, 4, "the refused push was not made");
}
