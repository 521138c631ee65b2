//! Admission limits (docs/protocol.md, "Limits") against the real server: per-IP connection
//! limit (4003, others unharmed), memory shedding (503 + Retry-After before
//! the upgrade), and the handshake timeout for a client that sends nothing.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::clock::{still, within};
use common::ws::{closed, next_text, send_text};
use futures_util::StreamExt;
use pushgate::config::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

type Client = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A compat-mode client connected from `local` (a loopback address).
async fn connect_from(gw: &common::Gateway, local: [u8; 4]) -> Client {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from((local, 0))).expect("bind a loopback source address");
    let tcp = socket.connect(gw.public()).await.expect("connect");
    let (ws, _) = tokio_tungstenite::client_async(gw.ws_url(), tcp).await.expect("upgrade");
    ws
}

async fn register(ws: &mut Client, user: &str) {
    send_text(ws, &format!(r#"{{"token":"{user}","event":"e"}}"#)).await;
}

#[tokio::test]
async fn per_ip_limit_closes_4003_and_spares_other_addresses() {
    let gw = common::start(Settings { max_connections_per_ip: Some(2), ..common::settings() }).await;
    let mut a = connect_from(&gw, [127, 0, 0, 1]).await;
    let mut b = connect_from(&gw, [127, 0, 0, 1]).await;
    register(&mut a, "a").await;
    register(&mut b, "b").await;
    let mut third = connect_from(&gw, [127, 0, 0, 1]).await;
    assert_eq!(closed(&mut third).await.0, 4003);
    let mut other = connect_from(&gw, [127, 0, 0, 2]).await;
    register(&mut other, "c").await;
    gw.wait_online("a", 1).await;
    gw.wait_online("c", 1).await;
    for user in ["a", "c"] {
        assert_eq!(gw.push_text(user, "e", &format!("to {user}")).delivered, 1);
    }
    assert_eq!(next_text(&mut a).await, "to a");
    assert_eq!(next_text(&mut other).await, "to c");
    // A slot is given back when its connection ends: after `b` goes, a new
    // connection from the same address joins (retried while the old
    // session is still winding down).
    drop(b);
    gw.wait_online("b", 0).await;
    let rejoin = async {
        loop {
            if let Some(ws) = try_join(&gw, [127, 0, 0, 1], "b2").await {
                return ws;
            }
        }
    };
    let _b2 = tokio::time::timeout(common::WAIT, rejoin).await.expect("a freed slot is reusable");
}

/// Connects from `local` and registers `user`: the client once joined, or
/// `None` when the server closed it instead.
async fn try_join(gw: &common::Gateway, local: [u8; 4], user: &str) -> Option<Client> {
    let mut ws = connect_from(gw, local).await;
    register(&mut ws, user).await;
    loop {
        if gw.online(user) == 1 {
            return Some(ws);
        }
        let frame = tokio::time::timeout(Duration::from_millis(20), ws.next()).await;
        if let Ok(None | Some(Ok(Message::Close(_)) | Err(_))) = frame {
            return None;
        }
    }
}

#[tokio::test]
async fn over_max_memory_upgrades_get_503_with_retry_after() {
    let gw = common::start(Settings { max_memory: Some(1), ..common::settings() }).await;
    let err = tokio_tungstenite::connect_async(gw.ws_url()).await.expect_err("shed");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status(), 503);
            assert!(response.headers().contains_key("retry-after"), "{:?}", response.headers());
        }
        other => panic!("expected HTTP 503, got {other:?}"),
    }
}

/// On tokio's paused clock (`common::clock`): the timeout is checked to the
/// millisecond without waiting for it.
#[tokio::test(start_paused = true)]
async fn a_silent_tcp_client_is_dropped_after_the_handshake_timeout() {
    const HANDSHAKE: Duration = Duration::from_secs(3);
    let gw = common::start(Settings { handshake_timeout: Some(HANDSHAKE), ..common::settings() }).await;
    // It connects with the clock held, and a client after it is served: the
    // gateway took it in first, so its timeout runs from `connected`.
    let connected = Instant::now();
    let mut silent = still(async {
        let silent = TcpStream::connect(gw.public()).await.expect("connect");
        gw.still_healthy().await;
        silent
    })
    .await;
    let mut buf = [0u8; 256];
    // A millisecond before the timeout it is open: nothing comes, not even
    // its end, in 20 ms of real time.
    tokio::time::sleep_until(connected + HANDSHAKE - Duration::from_millis(1)).await;
    let early = within(Duration::from_millis(20), silent.read(&mut buf)).await;
    assert!(early.is_none(), "{early:?} a millisecond before the timeout");
    // At it the server ends the connection.
    tokio::time::sleep_until(connected + HANDSHAKE).await;
    let read = still(silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "the server ends the connection: {read:?}");
    // Another client is unaffected.
    still(gw.still_healthy()).await;
    let _ = silent.shutdown().await;
}
