//! The producer port under hostile or careless producers: PushStream
//! back-pressure with small frames, floods of refused calls, oversized ids,
//! and slow request bodies — against the real server on 127.0.0.1:0.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Gateway, WAIT, text_push};
use futures_util::StreamExt as _;
use pushgate::proto::PushRequest;
use pushgate::proto::push_service_client::PushServiceClient;
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
