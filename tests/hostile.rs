//! Clients that try to make the gateway hold memory or sockets: a ping flood
//! from a client that never reads. Against the real server on 127.0.0.1:0
//! with raw TCP clients.

mod common;

use std::time::Duration;

use common::ws::{next_text, upgrade_raw};
use common::{Gateway, WAIT};
use futures_util::StreamExt;
use pushgate::config::Settings;
use pushgate::core::{Payload, Push};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;

/// The flooding client's socket buffer sizes (the kernel doubles them).
const CLIENT_BUFFER: usize = 4096;

/// A raw TCP connection with a small receive buffer that has completed an
/// upgrade: its 101 answer is read byte by byte, so nothing after it is.
async fn upgraded(gw: &Gateway) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    // Before connect, so the window the client advertises stays small; a
    // small send buffer keeps the client's own share of the flood small.
    socket.set_recv_buffer_size(CLIENT_BUFFER as u32).expect("SO_RCVBUF");
    socket.set_send_buffer_size(CLIENT_BUFFER as u32).expect("SO_SNDBUF");
    let mut tcp = socket.connect(gw.public()).await.expect("connect");
    upgrade_raw(&mut tcp).await;
    tcp
}

/// A client frame (masked with the zero key) of `opcode` carrying `payload`
/// (at most 125 bytes).
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    frame
}

/// Pings sent per write of the flood.
const PINGS_PER_WRITE: usize = 64;

/// Sends 125-byte pings, reading nothing, until a write fails (the gateway
/// dropped the connection) or `most` were sent. The number of pings sent
/// when a write failed; `None` if the gateway never dropped the connection.
async fn flood_pings(tcp: &mut TcpStream, most: usize) -> Option<usize> {
    let burst = frame(0x9, &[b'p'; 125]).repeat(PINGS_PER_WRITE);
    let mut sent = 0;
    while sent < most {
        match timeout(WAIT, tcp.write_all(&burst)).await {
            Ok(Ok(())) => sent += PINGS_PER_WRITE,
            Ok(Err(_)) => return Some(sent),
            // The gateway neither reads nor drops the connection.
            Err(_) => return None,
        }
    }
    None
}

/// Proves the gateway still serves others: a fresh client gets its push.
async fn still_healthy(gw: &Gateway) {
    let mut client = gw.compat_tab("healthy", "h").await;
    let push = Push::new("healthy", "h", Payload::text("still here"));
    assert_eq!(gw.running.hub.publish(push).expect("push").delivered, 1);
    assert_eq!(next_text(&mut client).await, "still here");
}

/// The third (largest) value of a `tcp_rmem`/`tcp_wmem` sysctl: how far the
/// kernel lets a socket's buffer grow.
fn kernel_max(name: &str) -> usize {
    let text = std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).unwrap_or_default();
    text.split_whitespace().nth(2).and_then(|v| v.parse().ok()).unwrap_or(32 << 20)
}

/// The most pings a client can get sent before the gateway drops it when the
/// gateway reads on only while its pongs leave: its pongs fill the gateway's
/// send buffer and the client's receive buffer, 32 more pings are allowed,
/// and what the client sent meanwhile sits in the gateway's receive buffer
/// and the client's send buffer — each socket buffer at most the kernel's
/// maximum. A gateway that keeps a pong for every ping (in memory), or reads
/// pings forever, never drops the client.
fn most_pings_before_drop() -> usize {
    const PING: usize = 6 + 125;
    const PONG: usize = 2 + 125;
    let pongs = (kernel_max("tcp_wmem") + 2 * CLIENT_BUFFER) / PONG + 32;
    let pings_in_flight = (kernel_max("tcp_rmem") + 2 * CLIENT_BUFFER) / PING;
    pongs + pings_in_flight + 2 * PINGS_PER_WRITE
}

/// Resident memory of this process (where the gateway runs), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or_default();
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Pings sit in no queue of the gateway's: a client that floods them without
/// reading is dropped, whether it has registered or not, after no more pings
/// than the sockets' buffers hold.
#[tokio::test]
async fn a_ping_flood_from_a_client_that_never_reads_is_dropped() {
    let settings = Settings {
        // The heartbeat must not be what ends the flood.
        ping_interval: Some(Duration::from_secs(600)),
        pong_timeout: Some(Duration::from_secs(60)),
        register_timeout: Some(Duration::from_secs(600)),
        ..common::settings()
    };
    let gw = common::start(settings).await;
    let most = most_pings_before_drop();
    let rss_before = rss_kib();

    // Before registering: the register phase reads frames too.
    let mut unregistered = upgraded(&gw).await;
    let sent = flood_pings(&mut unregistered, most).await;
    assert!(sent.is_some(), "the gateway kept a client that sent {most} pings and read nothing");
    println!("unregistered: dropped after {sent:?} pings (bound {most})");

    // After registering.
    let mut registered = upgraded(&gw).await;
    let register = br#"{"token":"mute","event":"e"}"#;
    registered.write_all(&frame(0x1, register)).await.expect("register");
    gw.wait_online("mute", 1).await;
    let sent = flood_pings(&mut registered, most).await;
    assert!(sent.is_some(), "the gateway kept a joined client that sent {most} pings and read nothing");
    println!("registered: dropped after {sent:?} pings (bound {most})");
    gw.wait_online("mute", 0).await;
    println!("RSS {rss_before} KiB before the floods, {} KiB after", rss_kib());

    still_healthy(&gw).await;
    // Both flooders' tasks have ended: the only connection left is the healthy one.
    let open = async {
        while gw.running.public_listener().open_connections > 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    timeout(WAIT, open).await.expect("the flooders' connections are released");
}

// ---------------------------------------------------------------- slow consumers

/// The send buffer of the gateway's public sockets in the slow-consumer
/// tests (set on the listener, which accepted sockets inherit; the kernel
/// doubles it), so that what the kernel holds is small and known.
const GATEWAY_SNDBUF: usize = 8 * 1024;

/// Payload of the slow-consumer pushes.
const MESSAGE: usize = 1000;

/// A gateway whose public sockets have a [`GATEWAY_SNDBUF`] send buffer,
/// a 64 KiB send queue per connection and 1 KiB messages.
async fn small_buffer_gateway() -> Gateway {
    let settings = Settings {
        socket_send_buffer: Some(GATEWAY_SNDBUF),
        conn_queue_bytes: Some(64 * 1024),
        ..quiet_kib_messages()
    };
    common::start(settings).await
}

/// 1 KiB messages and no ping while a test runs.
fn quiet_kib_messages() -> Settings {
    Settings {
        max_message_bytes: Some(1024),
        ping_interval: Some(Duration::from_secs(600)),
        pong_timeout: Some(Duration::from_secs(60)),
        ..common::settings()
    }
}

/// With the default send buffer (64 KiB per socket, doubled by the kernel)
/// and send queue (256 KiB), a client that stops reading is closed with 4000
/// once both are full, not after the megabytes the kernel's own sizing
/// would let it hold.
#[tokio::test]
async fn a_client_that_stops_reading_is_shed_once_its_send_buffer_and_queue_are_full() {
    let gw = common::start(quiet_kib_messages()).await;
    let stalled = gw.compat_tab("stalled", "e").await; // never read again
    let accepted = push_until_overflow(&gw, "stalled").await * MESSAGE;
    // The queue, the gateway's send buffer and the client's receive buffer
    // (131 072 by default on Linux, doubled), with room to spare.
    let most = 256 * 1024 + 2 * 64 * 1024 + 2 * 131_072 + 64 * 1024;
    println!("{accepted} bytes accepted for the stalled client before its close; at most {most} expected");
    assert!(accepted <= most, "{accepted} bytes accepted for a client that reads nothing, more than {most}");
    gw.wait_online("stalled", 0).await;
    drop(stalled);
    still_healthy(&gw).await;
}

/// A compat client over a socket with a small receive buffer, registered as
/// `user` on event `e`.
async fn small_window_tab(gw: &Gateway, user: &str) -> common::ws::Ws {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(CLIENT_BUFFER as u32).expect("SO_RCVBUF");
    let tcp = socket.connect(gw.public()).await.expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async(gw.ws_url(), MaybeTlsStream::Plain(tcp)).await.expect("upgrade");
    common::ws::send_json(&mut ws, serde_json::json!({"token": user, "event": "e"})).await;
    gw.wait_online(user, 1).await;
    ws
}

/// Pushes bursts of 60 messages to `user`, letting its session run between
/// bursts, until its queue overflows; returns how many were queued.
async fn push_until_overflow(gw: &Gateway, user: &str) -> usize {
    let message = "x".repeat(MESSAGE);
    let mut queued = 0;
    loop {
        // 60 messages cost just under the 64 KiB queue: the session drains
        // them as one batch while it can write.
        for _ in 0..60 {
            let push = Push::new(user, "e", Payload::text(message.clone()));
            if gw.running.hub.publish(push).expect("push").delivered == 0 {
                return queued;
            }
            queued += 1;
            assert!(queued < 100_000, "the queue never overflowed");
        }
        tokio::task::yield_now().await;
    }
}

/// Reads data frames up to the close frame: the bytes and frames read, and
/// the close code.
async fn read_to_close(ws: &mut common::ws::Ws) -> (usize, usize, u16) {
    let (mut bytes, mut frames) = (0, 0);
    loop {
        match timeout(WAIT, ws.next()).await.expect("a frame in time") {
            Some(Ok(Message::Text(text))) => {
                bytes += text.len();
                frames += 1;
            }
            Some(Ok(Message::Close(Some(frame)))) => return (bytes, frames, frame.code.into()),
            other => panic!("expected data or a close frame, got {other:?}"),
        }
    }
}

/// A slow consumer is closed with 4000 and its queue freed — the frames not
/// yet handed to its socket too, so the close frame is not stuck behind
/// them: a client that reads again soon gets it after at most what the
/// kernel held plus the gateway's 16 KiB write budget and one frame.
#[tokio::test]
async fn a_slow_consumer_gets_its_4000_close_before_the_rest_of_its_backlog() {
    let gw = small_buffer_gateway().await;
    let mut slow = small_window_tab(&gw, "slow").await;
    let queued = push_until_overflow(&gw, "slow").await;
    gw.wait_online("slow", 0).await;
    let (bytes, frames, code) = read_to_close(&mut slow).await;
    assert_eq!(code, 4000);
    // What the kernel may hold: both buffers, doubled by the kernel.
    let kernel = 2 * GATEWAY_SNDBUF + 2 * CLIENT_BUFFER;
    let most = kernel + 16 * 1024 + MESSAGE;
    println!("queued {queued}, read {frames} frames ({bytes} bytes) before the close; at most {most} expected");
    assert!(bytes <= most, "{bytes} bytes came before the close frame, more than {most}");
    // The overflow dropped the queue (at most 61 messages of 1065 queue
    // bytes); the frames waiting behind the socket were dropped too.
    assert!(frames + 61 < queued, "every drained frame came before the close ({frames} of {queued})");
    still_healthy(&gw).await;
}

/// What a slow consumer stalled for longer than the close linger is
/// guaranteed (docs/protocol.md, "Slow consumers"): the gateway lets go of
/// the connection within the linger, and the client, once it reads again,
/// gets what was in flight and then the end of the stream — a 4000 close
/// frame only if it fitted behind that data.
#[tokio::test]
async fn a_slow_consumer_stalled_past_the_linger_reads_an_end() {
    let gw = small_buffer_gateway().await;
    let mut stalled = small_window_tab(&gw, "stalled").await;
    push_until_overflow(&gw, "stalled").await;
    let closed_at = std::time::Instant::now();
    gw.wait_online("stalled", 0).await;
    let released = async {
        while gw.running.public_listener().open_connections > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    timeout(WAIT, released).await.expect("the gateway lets go of a stalled connection");
    let linger = closed_at.elapsed();
    assert!(linger < Duration::from_secs(5), "released after {linger:?}");
    let mut data = 0;
    let end = loop {
        match timeout(WAIT, stalled.next()).await.expect("the stream ends in time") {
            Some(Ok(Message::Text(_))) => data += 1,
            Some(Ok(Message::Close(frame))) => break format!("close {:?}", frame.map(|f| u16::from(f.code))),
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            Some(Err(error)) => break format!("error: {error}"),
            None => break "end".to_owned(),
        }
    };
    println!("released after {linger:?}; the client read {data} frames, then {end}");
    still_healthy(&gw).await;
}

// ---------------------------------------------------------------- --max-memory

/// Fails unless an upgrade is refused with 503 and `Retry-After`.
fn assert_shed(result: Result<common::ws::Ws, tokio_tungstenite::tungstenite::Error>) {
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            assert!(response.headers().contains_key("retry-after"), "{:?}", response.headers());
        }
        Err(other) => panic!("expected HTTP 503, got {other:?}"),
        Ok(_) => panic!("expected HTTP 503, the upgrade was accepted"),
    }
}

async fn try_tab(gw: &Gateway) -> Result<common::ws::Ws, tokio_tungstenite::tungstenite::Error> {
    timeout(WAIT, tokio_tungstenite::connect_async(gw.ws_url())).await.expect("answered in time").map(|(ws, _)| ws)
}

/// `--max-memory` follows what the connections hold: over it upgrades get
/// 503; once those connections are gone, upgrades succeed again (however
/// much memory the allocator keeps).
#[tokio::test]
async fn memory_shedding_lets_clients_in_again_once_the_load_is_gone() {
    let gw = common::start(Settings { max_memory: Some(64 * 1024), ..common::settings() }).await;
    let mut tabs = Vec::new();
    let refused = loop {
        match try_tab(&gw).await {
            Ok(mut ws) => {
                let user = format!("u{}", tabs.len());
                common::ws::send_json(&mut ws, serde_json::json!({"token": user, "event": "e"})).await;
                gw.wait_online(&user, 1).await;
                tabs.push(ws);
                assert!(tabs.len() < 100, "never shed");
            }
            refused => break refused,
        }
    };
    let held = gw.running.public_listener().held_bytes;
    println!("{} connections let in, then shed; {held} bytes held", tabs.len());
    assert!(!tabs.is_empty(), "a 64 KiB cap lets a few idle connections in");
    assert_shed(refused);
    assert_shed(try_tab(&gw).await);

    drop(tabs);
    let readmitted = async {
        loop {
            match try_tab(&gw).await {
                Ok(ws) => return ws,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    let mut ws = timeout(WAIT, readmitted).await.expect("upgrades succeed again once the load is gone");
    common::ws::send_json(&mut ws, serde_json::json!({"token": "again", "event": "e"})).await;
    gw.wait_online("again", 1).await;
}

// ---------------------------------------------------------------- handshakes

/// A connection that sends the start of an upgrade request and stops.
async fn half_handshake(gw: &Gateway) -> TcpStream {
    let mut tcp = TcpStream::connect(gw.public()).await.expect("connect");
    tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n").await.expect("write");
    tcp
}

/// Polls until `check` holds of the public listener's figures, asserting on
/// each sample that no more than `max` handshakes are in flight.
async fn watch_handshakes(gw: &Gateway, max: usize, check: impl Fn(&pushgate::server::ListenerStats) -> bool) {
    let polled = async {
        loop {
            let stats = gw.running.public_listener();
            assert!(stats.handshakes_in_flight <= max, "{stats:?}");
            if check(&stats) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    timeout(WAIT, polled).await.expect("the listener reached the expected state");
}

/// `--max-handshakes` bounds the connections held before their upgrade:
/// the rest wait in the kernel's accept queue and are taken as handshakes
/// end — here as the half-sent ones give up.
#[tokio::test]
async fn handshakes_in_flight_are_bounded_and_freed_slots_are_reused() {
    const MAX: usize = 4;
    let gw = common::start(Settings { max_handshakes: Some(MAX), ..common::settings() }).await;
    let mut slowloris = Vec::new();
    for _ in 0..3 * MAX {
        slowloris.push(half_handshake(&gw).await);
    }
    watch_handshakes(&gw, MAX, |s| s.handshakes_in_flight == MAX).await;
    // A fresh client waits behind them in the accept queue.
    let fresh = tokio::spawn({
        let url = gw.ws_url();
        async move { tokio_tungstenite::connect_async(url).await.map(|(ws, _)| ws) }
    });
    watch_handshakes(&gw, MAX, |s| s.handshakes_in_flight == MAX).await;
    assert!(!fresh.is_finished(), "the fresh client waits while the limit is reached");
    drop(slowloris);
    let mut ws = timeout(WAIT, fresh).await.expect("upgraded in time").expect("task").expect("upgrade");
    common::ws::send_json(&mut ws, serde_json::json!({"token": "fresh", "event": "e"})).await;
    gw.wait_online("fresh", 1).await;
    // The last half-sent ones may still be winding down.
    watch_handshakes(&gw, MAX, |s| s.handshakes_in_flight == 0).await;
    assert_eq!(gw.running.public_listener().handshakes_peak, MAX);
}

/// The same with half-sent handshakes that hold on: each batch of them is
/// dropped at the handshake timeout, and a fresh client behind them gets
/// through after a few timeouts, the bound holding all along.
#[tokio::test]
async fn handshakes_past_the_limit_wait_for_the_slowloris_ones_to_time_out() {
    const MAX: usize = 4;
    let handshake_timeout = Duration::from_millis(200);
    let settings =
        Settings { max_handshakes: Some(MAX), handshake_timeout: Some(handshake_timeout), ..common::settings() };
    let gw = common::start(settings).await;
    let mut slowloris = Vec::new();
    for _ in 0..3 * MAX {
        slowloris.push(half_handshake(&gw).await);
    }
    watch_handshakes(&gw, MAX, |s| s.handshakes_in_flight == MAX).await;
    let started = std::time::Instant::now();
    let fresh = tokio::spawn({
        let url = gw.ws_url();
        async move { tokio_tungstenite::connect_async(url).await.map(|(ws, _)| ws) }
    });
    watch_handshakes(&gw, MAX, |_| fresh.is_finished()).await;
    let mut ws = fresh.await.expect("task").expect("upgrade");
    let waited = started.elapsed();
    common::ws::send_json(&mut ws, serde_json::json!({"token": "fresh", "event": "e"})).await;
    gw.wait_online("fresh", 1).await;
    println!("the fresh client was upgraded after {waited:?}");
    // Three batches of half-sent handshakes were ahead of it.
    assert!(waited >= handshake_timeout * 2, "{waited:?}");
    assert_eq!(gw.running.public_listener().handshakes_peak, MAX);
    // The slowloris sockets were closed by the gateway.
    for mut tcp in slowloris {
        let mut buf = [0u8; 512];
        let read = timeout(WAIT, tcp.read(&mut buf)).await.expect("closed in time");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
}

// ---------------------------------------------------------------- the write path's bounds

/// The write buffer's cap leaves room for the largest frame the gateway can
/// send — a push of `--max-message-bytes` whose every byte JSON escapes to
/// six — and a replay far larger than the cap goes out through the backlog,
/// in order.
#[tokio::test]
async fn the_largest_frames_and_a_large_replay_get_through() {
    let gw = common::start(common::settings()).await;
    let max = gw.config.hub.max_message_bytes;
    let worst = "\u{1}".repeat(max);
    for i in 0..8 {
        let push = Push::new("big", "e", Payload::text(format!("{i}{}", &worst[1..])));
        gw.running.hub.publish(push).expect("push");
    }
    let mut client = gw.envelope().await;
    common::ws::send_json(&mut client, serde_json::json!({"token": "big", "event": "e", "since": 0})).await;
    assert_eq!(common::ws::next_json(&mut client).await["type"], "registered");
    for i in 0..8 {
        let frame = common::ws::next_json(&mut client).await;
        let data = frame["data"].as_str().expect("data");
        assert_eq!(data.len(), max);
        assert!(data.starts_with(&i.to_string()), "replayed in order");
    }
    assert_eq!(common::ws::next_json(&mut client).await["type"], "recovered");
    let live = Push::new("big", "e", Payload::text(worst.clone()));
    assert_eq!(gw.running.hub.publish(live).expect("push").delivered, 1);
    assert_eq!(common::ws::next_json(&mut client).await["data"].as_str().map(str::len), Some(max));
}

// ---------------------------------------------------------------- bounded ids

/// A token naming a user id longer than any producer may push to is refused
/// like any invalid token, at the handshake (401) and in a register (4500),
/// so a browser cannot make the hub hold an oversized key.
#[tokio::test]
async fn an_oversized_user_id_from_a_token_is_refused() {
    let gw = common::start(common::settings()).await;
    let long = "u".repeat(pushgate::core::hub::MAX_USER_ID_BYTES + 1);
    match common::ws::try_connect(&format!("{}?token={long}", gw.ws_url()), &[]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected HTTP 401, got {:?}", other.map(|_| ())),
    }
    let mut tab = gw.compat().await;
    common::ws::send_text(&mut tab, &format!(r#"{{"token":"{long}","event":"e"}}"#)).await;
    assert_eq!(common::ws::closed(&mut tab).await.0, 4500);
    // The longest allowed id still works.
    let longest = "u".repeat(pushgate::core::hub::MAX_USER_ID_BYTES);
    let _tab = gw.compat_tab(&longest, "e").await;
    assert_eq!(gw.online(&longest), 1);
}

// ---------------------------------------------------------------- the history budget

/// Many offline users' history cannot hold more than `--history-max-bytes`:
/// the oldest deliveries go first, whoever they belong to, they are counted,
/// and a resume from before them says it is incomplete.
#[tokio::test]
async fn history_stays_within_its_budget_and_says_what_it_evicted() {
    const BUDGET: u64 = 64 * 1024;
    let gw = common::start(Settings { history_max_bytes: Some(BUDGET), ..common::settings() }).await;
    let mut grpc = gw.grpc().await;
    let body = "h".repeat(4000);
    for round in 0..8 {
        for user in 0..10 {
            grpc.push(common::text_push(&format!("offline{user}"), "e", &body)).await.expect("push");
        }
        let scrape = common::metrics::scrape(&gw).await;
        assert!(scrape.get("pushgate_history_bytes", &[]) <= BUDGET as f64, "round {round}: over the budget");
    }
    let scrape = common::metrics::scrape(&gw).await;
    // 80 pushes of ~4 KiB: about 15 fit, the rest were evicted oldest first.
    let evicted = scrape.get("pushgate_history_evictions_total", &[]);
    assert!((60.0..=70.0).contains(&evicted), "evicted {evicted}");
    // The first user's early pushes are gone: its resume is incomplete, and
    // what it replays is its newest only.
    let (mut first, _) = gw.envelope_tab("offline0", &["e"], Some(0)).await;
    let mut replayed = Vec::new();
    let recovered = loop {
        let frame = common::ws::next_json(&mut first).await;
        match frame["type"].as_str() {
            Some("recovered") => break frame,
            _ => replayed.push(frame["seq"].as_u64().expect("seq")),
        }
    };
    assert_eq!(recovered["complete"], false, "{recovered}");
    assert!(replayed.len() < 8 && replayed.iter().all(|&s| s > 8 - replayed.len() as u64), "newest kept: {replayed:?}");
    // Pushes keep working after evictions, live and numbered on.
    let reply = grpc.push(common::text_push("offline0", "e", "live")).await.expect("push").into_inner();
    assert_eq!((reply.seq, reply.delivered), (9, 1));
    assert_eq!(common::ws::next_json(&mut first).await["data"], "live");
}
