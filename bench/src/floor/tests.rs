//! The floor server in-process, driven by the bench's own fleet and
//! producers: every frame a scenario pushes arrives. No timing assertions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use super::{Writes, serve};
use crate::fleet::{self, Mode, Shared};
use crate::http_push::{self, HttpLoad};
use crate::producer::{Load, Producer};

/// Starts the floor on two loopback ports; returns (public, internal).
async fn start(writes: Writes) -> (SocketAddr, SocketAddr) {
    let public = TcpListener::bind("127.0.0.1:0").await.expect("bind public");
    let internal = TcpListener::bind("127.0.0.1:0").await.expect("bind internal");
    let addrs = (public.local_addr().expect("addr"), internal.local_addr().expect("addr"));
    tokio::spawn(serve(public, internal, writes));
    addrs
}

/// Waits (10 s at most) until `n` frames arrived in total.
async fn received(shared: &Shared, n: u64) -> u64 {
    let give_up = Instant::now() + Duration::from_secs(10);
    while shared.received.load(Relaxed) < n && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shared.received.load(Relaxed)
}

async fn push_stream_delivers_everything(writes: Writes, burst: u64) {
    let (public, internal) = start(writes).await;
    let shared = Shared::new();
    fleet::open(public, 50, 10, Mode::Envelope, &shared).await.expect("50 connections register");
    let producer =
        Arc::new(Producer::connect(internal, internal, 2, 50, 100, Arc::clone(&shared)).await.expect("gRPC"));
    assert_eq!(producer.stats().await.expect("Stats").connections, 50);
    let deadline = Instant::now() + Duration::from_secs(10);
    let load = Load { pushes: 1000, burst, rate: None, deadline, window: 64 };
    let tally = producer.run(load).await.expect("pushes");
    assert_eq!((tally.replies, tally.delivered, tally.failed), (1000, 1000, 0));
    assert_eq!(received(&shared, 1000).await, 1000);
    assert_eq!(shared.other_frames.load(Relaxed), 0, "every frame after `registered` is a timed push");
    assert_eq!(producer.stats().await.expect("Stats").deliveries, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_pushes_reach_every_connection() {
    push_stream_delivers_everything(Writes::PerDelivery, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_bursts_reach_every_connection() {
    push_stream_delivers_everything(Writes::Coalesced, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_push_fans_out_to_ten_connections_per_user() {
    let (public, internal) = start(Writes::Coalesced).await;
    let shared = Shared::new();
    fleet::open_users(public, 50, 5, 10, Mode::Compat, &shared).await.expect("50 connections as 5 users");
    let producer = Producer::connect(internal, internal, 1, 5, 100, Arc::clone(&shared)).await.expect("gRPC");
    let give_up = Instant::now() + Duration::from_secs(10);
    while producer.stats().await.expect("Stats").connections < 50 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let load = HttpLoad { pushes: 40, producers: 4, users: 5, rate: None, deadline, message_bytes: 100 };
    let tally = http_push::run(internal, load, &shared).await.expect("HTTP pushes");
    assert_eq!((tally.replies, tally.delivered, tally.failed), (40, 400, 0));
    assert_eq!(received(&shared, 400).await, 400);
}
