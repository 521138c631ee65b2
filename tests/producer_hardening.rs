//! The producer port under hostile or careless producers: PushStream
//! back-pressure with small frames, floods of refused calls, oversized ids,
//! and slow request bodies — against the real server on 127.0.0.1:0.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Gateway, WAIT, text_push};
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pushgate::proto::push_service_client::PushServiceClient;
use pushgate::proto::{BroadcastRequest, DisconnectRequest, PushBatchRequest, PushReply, PushRequest};
use serde_json::json;
use tokio::time::timeout;
use tonic::transport::{Channel, Endpoint};

// ------------------------------------------------------------ back-pressure

/// A channel whose receive windows are sized as h2 clients should size them
/// for a stream whose replies they read late: a modest stream window, a
/// connection window with room for other calls.
async fn patient_channel(gw: &Gateway) -> Channel {
    let endpoint = Endpoint::from_shared(gw.internal_url()).expect("url");
    let endpoint = endpoint.initial_stream_window_size(64 * 1024).initial_connection_window_size(4 << 20);
    endpoint.connect().await.expect("connect")
}

/// Waits until the hub's push count holds still for 300 ms (bounded by
/// [`WAIT`]): the gateway has stopped reading the stream. Returns the count.
async fn until_pushes_stall(gw: &Gateway) -> u64 {
    let pushes = || gw.running.hub.stats().pushes;
    let stalled = timeout(WAIT, async {
        let mut last = pushes();
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = pushes();
            if now == last {
                return now;
            }
            last = now;
        }
    });
    stalled.await.expect("the gateway holds still while no reply is read")
}

/// A producer sending each request of a `PushStream` in its own small DATA
/// frame and reading no reply is held back by flow control, not cut off:
/// the connection stays up (a unary call on it succeeds meanwhile), and once
/// it reads, every request gets its reply, in order.
#[tokio::test]
async fn small_frames_on_a_stalled_push_stream_keep_the_connection() {
    const SENT: usize = 20_000;
    let gw = common::start(common::settings()).await;
    let channel = patient_channel(&gw).await;
    let mut client = PushServiceClient::new(channel.clone());

    // Each request is yielded after a pending poll, so tonic writes it as a
    // DATA frame of its own (~25 bytes) instead of coalescing ready ones.
    let handed = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&handed);
    let outbound = futures_util::stream::iter(0..SENT).then(move |i| {
        let counter = Arc::clone(&counter);
        async move {
            tokio::task::yield_now().await;
            counter.fetch_add(1, Ordering::Relaxed);
            PushRequest { request_id: i.to_string(), ..text_push("nobody", "e", "m") }
        }
    });
    let mut replies = client.push_stream(outbound).await.expect("stream").into_inner();

    let stalled_at = until_pushes_stall(&gw).await;
    assert!(stalled_at < SENT as u64, "{stalled_at} of {SENT} pushed with no reply read: nothing held back");

    // The connection is alive: another call on it is answered now.
    let mut other = PushServiceClient::new(channel);
    let unary = timeout(WAIT, other.push(text_push("nobody", "e", "unary"))).await.expect("unary in time");
    let unary = unary.expect("a unary call on the same connection succeeds");
    assert!(unary.into_inner().error.is_none());

    for i in 0..SENT {
        let reply = timeout(WAIT, replies.message()).await.expect("reply in time");
        let reply = reply.unwrap_or_else(|status| panic!("reply {i}: {status:?}")).expect("open");
        assert_eq!((reply.request_id.as_str(), &reply.error), (i.to_string().as_str(), &None));
    }
    assert!(timeout(WAIT, replies.message()).await.expect("in time").expect("clean end").is_none());
    assert_eq!(handed.load(Ordering::Relaxed), SENT);
    assert_eq!(gw.running.hub.stats().pushes, SENT as u64 + 1);
}

// ------------------------------------------------------------ length limits

/// One HTTP/1.1 POST to the internal port: (status, body).
async fn post(gw: &Gateway, path: &str, key: Option<&str>, body: String) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = hyper::Request::builder().method("POST").uri(format!("{}{path}", gw.internal_url()));
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let request = request.body(Full::new(Bytes::from(body))).expect("request");
    let response = timeout(WAIT, client.request(request)).await.expect("reply in time").expect("reply");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8(body.to_vec()).expect("utf-8"))
}

/// `user_id`, `idempotency_key` and `request_id` are at most 256 bytes: one
/// byte more is INVALID_ARGUMENT naming the field on every producer path, and
/// nothing is pushed.
#[tokio::test]
async fn ids_over_256_bytes_are_refused_on_every_path() {
    let gw = common::start(common::settings()).await;
    let mut client = gw.grpc().await;
    let long = "x".repeat(257);
    let fit = "x".repeat(256);
    let with = |user: &str, key: &str, id: &str| PushRequest {
        idempotency_key: key.into(),
        request_id: id.into(),
        ..text_push(user, "e", "m")
    };
    let cases = [
        (with(&long, "", ""), "user_id"),
        (with("u", &long, ""), "idempotency_key"),
        (with("u", "", &long), "request_id"),
    ];

    // Unary: a status naming the field; at the limit, accepted.
    for (request, field) in &cases {
        let status = client.push(request.clone()).await.expect_err("too long");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().contains(field), "{field}: {}", status.message());
    }
    let reply = client.push(with(&fit, &fit, &fit)).await.expect("256 bytes each fit").into_inner();
    assert_eq!(reply.request_id, fit);

    // Stream and batch: a reply with `error` naming the field; the others go on.
    let requests: Vec<PushRequest> = cases.iter().map(|(r, _)| r.clone()).chain([with("u", "", "ok")]).collect();
    let batch = client.push_batch(PushBatchRequest { pushes: requests.clone() }).await.expect("batch").into_inner();
    let stream = client.push_stream(futures_util::stream::iter(requests)).await.expect("stream").into_inner();
    let streamed: Vec<PushReply> = timeout(WAIT, stream.map(|r| r.expect("reply")).collect()).await.expect("in time");
    for replies in [&batch.replies, &streamed] {
        assert_eq!(replies.len(), 4);
        for ((_, field), reply) in cases.iter().zip(replies.iter()) {
            let error = reply.error.as_ref().unwrap_or_else(|| panic!("{field}: accepted"));
            assert_eq!(error.code, 3, "{field}");
            assert!(error.message.contains(field), "{field}: {}", error.message);
        }
        assert_eq!((replies[2].request_id.as_str(), replies[3].request_id.as_str()), ("", "ok"));
        assert!(replies[3].error.is_none());
    }

    // Broadcast and disconnect name users too.
    let wide = BroadcastRequest { event: "e".into(), user_ids: vec![long.clone()], ..Default::default() };
    let status = client.broadcast(wide).await.expect_err("too long");
    assert!(status.message().contains("user_ids"), "{}", status.message());
    let status = client.disconnect(DisconnectRequest { user_id: long.clone(), event: None }).await.expect_err("long");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // The JSON mirror: 400 INVALID_ARGUMENT naming the field.
    for (body, field) in [
        (json!({"user_id": long, "event": "e", "message": "m"}), "user_id"),
        (json!({"user_id": "u", "event": "e", "message": "m", "idempotency_key": long}), "idempotency_key"),
        (json!({"user_id": "u", "event": "e", "message": "m", "request_id": long}), "request_id"),
    ] {
        let (status, reply) = post(&gw, "/v1/push", None, body.to_string()).await;
        let reply: serde_json::Value = serde_json::from_str(&reply).expect("JSON");
        assert_eq!((status, reply["code"].as_str()), (400, Some("INVALID_ARGUMENT")), "{field}");
        assert!(reply["message"].as_str().is_some_and(|m| m.contains(field)), "{field}: {reply}");
        let batch = json!({"pushes": [body]}).to_string();
        let (status, reply) = post(&gw, "/v1/push_batch", None, batch).await;
        let reply: serde_json::Value = serde_json::from_str(&reply).expect("JSON");
        assert_eq!((status, reply["replies"][0]["error"]["code"].as_i64()), (200, Some(3)), "{field}: {reply}");
    }

    // wserver's /push: its 400.
    let body = json!({"userId": long, "event": "e", "message": "m"}).to_string();
    assert_eq!(post(&gw, "/push", None, body).await, (400, "request data illegal".to_owned()));

    // Nothing refused was pushed: only the unary push at the limit and the
    // stream's and batch's last requests.
    assert_eq!(gw.running.hub.stats().pushes, 3);
}
