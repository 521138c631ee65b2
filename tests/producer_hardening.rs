//! The producer port under hostile or careless producers: PushStream
//! back-pressure with small frames, floods of refused calls, oversized ids,
//! and slow request bodies — against the real server on 127.0.0.1:0.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Gateway, WAIT, text_push};
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pushgate::config::Settings;
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

    let stalled_at = gw.until_pushes_stall().await;
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

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One HTTP/1.1 POST to the internal port: (status, body).
async fn post(gw: &Gateway, path: &str, key: Option<&str>, body: String) -> (u16, String) {
    post_to(&http_client(), &gw.internal_url(), path, key, body).await
}

/// One HTTP/1.1 POST to `base` (`http://ADDR`) with `client`: (status, body).
async fn post_to(client: &HttpClient, base: &str, path: &str, key: Option<&str>, body: String) -> (u16, String) {
    let mut request = hyper::Request::builder().method("POST").uri(format!("{base}{path}"));
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

// ------------------------------------------------------- refused-key floods

/// Log output kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().expect("log lock").clone();
        String::from_utf8(bytes).expect("utf-8").lines().map(str::to_owned).collect()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// The value of `pushgate_producer_auth_failures_total{transport}` scraped
/// from `/metrics`.
async fn auth_failures(gw: &Gateway, transport: &str) -> u64 {
    let client = http_client();
    let uri = format!("{}/metrics", gw.internal_url()).parse().expect("uri");
    let response = timeout(WAIT, client.get(uri)).await.expect("in time").expect("scrape");
    let body = response.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    let series = format!("pushgate_producer_auth_failures_total{{transport=\"{transport}\"}} ");
    let line = text.lines().find_map(|l| l.strip_prefix(series.as_str()));
    line.unwrap_or_else(|| panic!("no {series}in {text}")).parse().expect("a count")
}

/// Calls without a valid key, on every transport that takes one, are each
/// counted in `pushgate_producer_auth_failures_total{transport}`, but logged
/// at most once per 10 s per transport, with the count since the last line.
#[tokio::test]
async fn refused_keys_are_counted_and_their_log_lines_bounded() {
    const N: u64 = 1_000;
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt().with_writer(logs.clone()).with_max_level(tracing::Level::WARN);
    let _logging = tracing::subscriber::set_default(subscriber.with_ansi(false).finish());
    let settings = Settings { api_keys: Some(vec!["k1".into()]), push_on_public: Some(true), ..common::settings() };
    let gw = common::start(settings).await;
    let started = std::time::Instant::now();

    let mut grpc = gw.grpc().await;
    let http = http_client();
    let public = format!("http://{}", gw.public());
    let body = json!({"userId": "u", "event": "e", "message": "m"}).to_string();
    for i in 0..N {
        let key = (i % 2 == 0).then_some("wrong");
        let status = grpc.push(text_push("u", "e", "m")).await.expect_err("no key");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let path = if i % 2 == 0 { "/push" } else { "/v1/push" };
        assert_eq!(post_to(&http, &gw.internal_url(), path, key, body.clone()).await.0, 401);
        assert_eq!(post_to(&http, &public, "/push", key, body.clone()).await.0, 401);
    }
    // A valid key is neither counted nor refused.
    assert_eq!(post_to(&http, &gw.internal_url(), "/push", Some("k1"), body.clone()).await.0, 200);

    for transport in ["grpc", "http", "public_http"] {
        assert_eq!(auth_failures(&gw, transport).await, N, "{transport}");
    }
    let most = 1 + started.elapsed().as_secs() / 10;
    let lines = logs.lines();
    for transport in ["grpc", "http", "public_http"] {
        let label = format!("transport=\"{transport}\"");
        let mine: Vec<&String> =
            lines.iter().filter(|l| l.contains("without a valid key") && l.contains(&label)).collect();
        assert!(
            (1..=most as usize).contains(&mine.len()),
            "{transport}: {} lines, at most {most}: {mine:#?}",
            mine.len()
        );
        assert!(mine[0].contains("WARN") && mine[0].contains("refused=1"), "{}", mine[0]);
    }
    assert!(lines.len() <= 3 * most as usize, "{} lines: {lines:#?}", lines.len());
}

// ------------------------------------------------------------ slow requests

/// Connects to `addr`, writes `head`, then `trickled` one byte every 200 ms,
/// while reading what the gateway answers. Returns that answer and how long
/// after connecting the gateway ended the connection (closed or reset).
/// Fails when it has not after [`WAIT`].
async fn trickle(addr: std::net::SocketAddr, head: &'static [u8], trickled: &'static [u8]) -> (String, Duration) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let started = std::time::Instant::now();
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        writer.write_all(head).await?;
        for byte in trickled {
            tokio::time::sleep(Duration::from_millis(200)).await;
            writer.write_all(&[*byte]).await?;
        }
        std::io::Result::Ok(writer)
    });
    let mut answer = Vec::new();
    let read = timeout(WAIT, async {
        let mut buf = [0u8; 1024];
        // The end of the connection: EOF, or a reset when unread bytes remained.
        while let Ok(n @ 1..) = reader.read(&mut buf).await {
            answer.extend_from_slice(&buf[..n]);
        }
    });
    read.await.unwrap_or_else(|_| panic!("the gateway still holds the connection after {WAIT:?}"));
    let ended = started.elapsed();
    writing.abort();
    (String::from_utf8_lossy(&answer).into_owned(), ended)
}

fn short_timeouts() -> Settings {
    Settings {
        handshake_timeout: Some(Duration::from_millis(500)),
        request_body_timeout: Some(Duration::from_millis(500)),
        ..common::settings()
    }
}

/// An HTTP/1.1 body sent at 5 bytes a second (13 s for all of it) is
/// answered 408 and its
/// connection closed once `--request-body-timeout` has passed, while other
/// producers are served meanwhile.
#[tokio::test]
async fn a_slow_http1_body_is_cut_off_and_others_are_served() {
    let gw = common::start(short_timeouts()).await;
    let head = b"POST /v1/push HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 65\r\n\r\n";
    let body = br#"{"user_id":"u","event":"e","message":"slow....................."}"#;
    let slow = tokio::spawn(trickle(gw.internal(), head, &body[..]));

    // Meanwhile, over HTTP/1.1 and gRPC.
    let fast = json!({"user_id": "u", "event": "e", "message": "fast"}).to_string();
    assert_eq!(post(&gw, "/v1/push", None, fast).await.0, 200);
    gw.grpc().await.push(text_push("u", "e", "grpc")).await.expect("gRPC push");

    let (answer, ended) = slow.await.expect("slow client");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(ended < Duration::from_secs(3), "held for {ended:?}");
    assert_eq!(gw.running.hub.stats().pushes, 2, "the slow push was not made");
}

/// The same for wserver's `POST /push`, which the listener answers itself
/// ahead of the router: 408 once `--request-body-timeout` has passed.
#[tokio::test]
async fn a_slow_wserver_push_body_is_cut_off_too() {
    let gw = common::start(short_timeouts()).await;
    let head = b"POST /push HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 64\r\n\r\n";
    let body = br#"{"userId":"u","event":"e","message":"slow....................."}"#;
    let (answer, ended) = trickle(gw.internal(), head, &body[..]).await;
    // Empty when the reset of the closed connection overtook the answer.
    let timed_out = answer.starts_with("HTTP/1.1 408") && answer.ends_with("request not received in time");
    assert!(answer.is_empty() || timed_out, "{answer}");
    assert!(ended < Duration::from_secs(3), "held for {ended:?}");
    assert_eq!(gw.running.hub.stats().pushes, 0, "the slow push was not made");
}

/// A connection that sends nothing, a head at 5 bytes a second, or part of
/// the HTTP/2 preface and then nothing is closed once `--handshake-timeout`
/// has passed.
#[tokio::test]
async fn silent_or_slow_heads_are_cut_off() {
    let gw = common::start(short_timeouts()).await;
    let cases: [(&str, &'static [u8], &'static [u8]); 3] = [
        ("silence", b"", b""),
        (
            "a slow head",
            b"POST /push HTTP/1.1\r\n",
            b"host: example.test\r\nx-padding: longer than 10 s at 5 bytes a second\r\n\r\n",
        ),
        ("part of the HTTP/2 preface", b"PRI * HTTP/2.0\r\n", b""),
    ];
    let runs = cases.map(|(name, head, trickled)| (name, tokio::spawn(trickle(gw.internal(), head, trickled))));
    for (name, run) in runs {
        let (answer, ended) = run.await.expect("client");
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{name}: {answer}");
        assert!(ended < Duration::from_secs(3), "{name}: held for {ended:?}");
    }
}

/// The HTTP/1 limits leave HTTP/2 alone: a `PushStream` idle for longer than
/// both timeouts goes on.
#[tokio::test]
async fn a_push_stream_outlives_the_http1_timeouts() {
    let gw = common::start(short_timeouts()).await;
    let mut client = gw.grpc().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<PushRequest>(1);
    let outbound = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    tx.send(text_push("u", "e", "first")).await.expect("send");
    let mut replies = client.push_stream(outbound).await.expect("stream").into_inner();
    let first = timeout(WAIT, replies.message()).await.expect("in time").expect("reply").expect("open");
    assert!(first.error.is_none());
    tokio::time::sleep(Duration::from_millis(1500)).await; // three times each limit
    tx.send(text_push("u", "e", "second")).await.expect("send");
    let second = timeout(WAIT, replies.message()).await.expect("in time").expect("the stream lives").expect("open");
    assert!(second.error.is_none() && second.seq > first.seq);
    drop(tx);
    assert!(timeout(WAIT, replies.message()).await.expect("in time").expect("clean end").is_none());
}
