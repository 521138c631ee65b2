//! Graceful shutdown of the real binary on a real SIGTERM (docs/api.md, "Shutdown"): not-ready,
//! browsers closed with 1001, a push accepted before the signal delivered, exit
//! 0 within the drain timeout.

mod common;

use std::time::{Duration, Instant};

use common::clock::still;
use common::process::GatewayProcess;
use common::text_push;
use common::ws::{closed, next_text, send_text, until_close};

fn spawn_gateway(drain: &str) -> GatewayProcess {
    GatewayProcess::spawn(&["--drain-timeout", drain])
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let mut gw = spawn_gateway("3s");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.public)).await.expect("ws connect");
    send_text(&mut ws, r#"{"token":"u1","event":"e"}"#).await;
    let mut grpc = gw.grpc().await;
    let online = async {
        while gw.online(&mut grpc, "u1").await != 1 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(common::WAIT, online).await.expect("client registered");
    assert_eq!(grpc.push(text_push("u1", "e", "before the signal")).await.expect("push").into_inner().delivered, 1);

    let signalled = Instant::now();
    gw.sigterm();

    assert_eq!(next_text(&mut ws).await, "before the signal");
    let (data, (code, reason)) = until_close(&mut ws).await;
    assert!(data.is_empty(), "expected a close frame, got {data:?}");
    assert_eq!(code, 1001, "1001 going away");
    assert!(reason.contains("reconnect_after_ms="), "reason: {reason}");

    let exit = gw.exited(Duration::from_secs(3) + common::WAIT).await.expect("exited");
    assert!(exit.success(), "exit status {exit}");
    assert!(signalled.elapsed() < Duration::from_secs(3) + Duration::from_secs(2), "exit within the drain timeout");
}

/// Browser sockets are closed spread over the drain period (half of it), each
/// with a `reconnect_after_ms` hint, so the next node does not take every
/// reconnect at once. On tokio's paused clock (`common::clock`): time passes
/// in steps of 1 ms and the gateway's closes are timed on its side, then each
/// tab reads its close with the clock held.
#[tokio::test(start_paused = true)]
async fn drain_spreads_the_closes_over_the_drain_period() {
    let drain = Duration::from_secs(2);
    let settings = pushgate::config::Settings { drain_timeout: Some(drain), ..common::settings() };
    let gw = common::start(settings).await;
    let mut tabs = Vec::new();
    for i in 0..20 {
        tabs.push(still(gw.compat_tab(&format!("u{i}"), "e")).await);
    }
    let outboxes = gw.running.hub.outboxes();
    assert_eq!(outboxes.len(), tabs.len());
    let started = tokio::time::Instant::now();
    gw.running.shutdown();
    let mut times = Vec::new();
    let mut open = outboxes;
    let closing = async {
        while !open.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let closed = open.iter().filter(|outbox| outbox.is_closing()).count();
            times.extend(std::iter::repeat_n(started.elapsed(), closed));
            open.retain(|outbox| !outbox.is_closing());
        }
    };
    tokio::time::timeout(common::WAIT, closing).await.expect("every connection closed in time");
    for tab in &mut tabs {
        let (code, reason) = still(closed(tab)).await;
        assert_eq!(code, 1001, "{reason}");
        assert!(reason.contains("reconnect_after_ms="), "{reason}");
    }
    let spread = times[times.len() - 1] - times[0];
    assert!(spread >= drain / 2 * 8 / 10, "closes spread over {spread:?}, not about half of {drain:?}");
    let last = times[times.len() - 1];
    assert!(last <= drain / 2, "the last closed after {last:?}, not within half of {drain:?}");
    tokio::time::timeout(common::WAIT, gw.running.wait()).await.expect("shutdown completes");
}

/// A producer's idle keep-alive HTTP/1.1 connection does not hold the
/// drain: it is closed at the signal (not when it has been idle for the
/// handshake timeout) and the process exits long before the drain timeout.
#[tokio::test]
async fn an_idle_producer_connection_is_closed_at_the_signal() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut gw = GatewayProcess::spawn(&["--drain-timeout", "60s", "--handshake-timeout", "60s"]);
    let mut producer = tokio::net::TcpStream::connect(gw.internal).await.expect("connect");
    let body = r#"{"userId":"u1","event":"e","message":"m"}"#;
    let push = format!("POST /push HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}", body.len());
    producer.write_all(push.as_bytes()).await.expect("write");
    let mut answer = [0u8; 512];
    let n = tokio::time::timeout(common::WAIT, producer.read(&mut answer)).await.expect("in time").expect("read");
    assert!(answer[..n].starts_with(b"HTTP/1.1 200 OK"), "{:?}", String::from_utf8_lossy(&answer[..n]));

    let signalled = Instant::now();
    gw.sigterm();
    let mut rest = Vec::new();
    tokio::time::timeout(common::WAIT, producer.read_to_end(&mut rest)).await.expect("closed in time").expect("read");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    let exit = gw.exited(common::WAIT).await.expect("exited");
    assert!(exit.success(), "exit status {exit}");
    assert!(signalled.elapsed() < Duration::from_secs(30), "exited after {:?}", signalled.elapsed());
}
