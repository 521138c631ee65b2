//! Writes from a producer's thread to idle connections (`core::wire`)
//! against a real server and real sockets that are kept full, so frames are
//! cut short and handed back to the connection's task again and again.

mod common;

use std::time::Duration;

use common::ws::{next_text, send_json};
use pushgate::config::Settings;
use pushgate::core::{Payload, Push, write_through};
use tokio::net::TcpSocket;
use tokio_tungstenite::MaybeTlsStream;

const PUSHES: usize = 2_000;

/// The `i`th message: its number, then a length that changes from push to
/// push, so the room a full socket has left rarely ends between two frames.
fn message(i: usize) -> String {
    format!("{i:06}:{}", "y".repeat(700 + (i * 37) % 500))
}

/// A client that reads slowly while pushes are written through to its full
/// socket (4 KiB buffers on both sides) from another thread gets every push
/// whole and in order: each frame the socket cut short is finished by the
/// connection's task before anything else, and the two never write at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_cut_by_a_full_socket_reach_a_slow_reader_whole_and_in_order() {
    let gw = common::start(Settings {
        socket_send_buffer: Some(4096),
        conn_queue_bytes: Some(8 << 20),
        max_message_bytes: Some(2048),
        ping_interval: Some(Duration::from_secs(600)),
        pong_timeout: Some(Duration::from_secs(60)),
        ..common::settings()
    })
    .await;
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = socket.connect(gw.public()).await.expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async(gw.ws_url(), MaybeTlsStream::Plain(tcp)).await.expect("upgrade");
    send_json(&mut ws, serde_json::json!({"token": "cut", "event": "e"})).await;
    gw.wait_online("cut", 1).await;

    let reader = tokio::spawn(async move {
        for i in 0..PUSHES {
            let text = next_text(&mut ws).await;
            assert_eq!(text, message(i), "push {i} arrived changed or out of order");
            if i % 64 == 0 {
                // Fall behind now and then: the socket fills and cuts frames.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        ws
    });
    for i in 0..PUSHES {
        let push = Push::new("cut", "e", Payload::text(message(i)));
        let published = write_through(|| gw.running.hub.publish(push)).expect("push");
        assert_eq!(published.delivered, 1, "push {i} was not queued");
        if i % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let _ws = tokio::time::timeout(Duration::from_secs(60), reader).await.expect("every push in time").expect("reader");
    assert_eq!(gw.online("cut"), 1, "the connection survived");
}
