//! Several nodes over the real NATS on 127.0.0.1:4222, each node its own
//! `pushgate` process (README, "Running several nodes"). Every test uses its
//! own `--broker-prefix`, so tests run in parallel on one NATS server.

mod common;

use std::time::Duration;

use common::cluster::{
    OwnServer, free_port, next_push, node, prefix, readyz, require, scrape, tab, until_online, until_ready,
};
use common::text_push;
use common::ws::{closed, next_json};
use pushgate::proto::{BroadcastRequest, DisconnectRequest, broadcast_request};
use tokio::time::timeout;

const NATS: &str = "nats://127.0.0.1:4222";

/// Pushes counted by the node's hub: its own and those other nodes carried to it.
async fn pushes_ok(node: &common::process::GatewayProcess) -> f64 {
    scrape(node).await.get("pushgate_pushes_total", &[("result", "ok")])
}

#[tokio::test]
async fn two_nodes_carry_pushes_broadcasts_and_disconnects_to_each_other() {
    require("NATS", "127.0.0.1:4222");
    let p = prefix();
    let (a, b) = (node(NATS, &p, "a", &[]), node(NATS, &p, "b", &[]));
    until_ready(&a, 200).await;
    until_ready(&b, 200).await;
    let (mut on_a, _) = tab(&a, "u", None).await;
    let (mut on_b, _) = tab(&b, "u", None).await;
    let (mut solo, _) = tab(&a, "solo", None).await;
    let (mut client_a, mut client_b) = (a.grpc().await, b.grpc().await);
    until_online(&mut client_a, "u", 1).await;
    until_online(&mut client_b, "u", 1).await;

    // Through a: numbered and delivered by a (its one tab), carried to b,
    // which numbers it in its own stream.
    for i in 1..=10u64 {
        let reply = client_a.push(text_push("u", "e", &format!("m{i}"))).await.expect("push").into_inner();
        assert_eq!((reply.seq, reply.delivered), (i, 1), "a's seq, a's connections");
    }
    for tab in [&mut on_a, &mut on_b] {
        for i in 1..=10u64 {
            assert_eq!(next_push(tab).await, (i, format!("m{i}")), "every push once, in order");
        }
    }
    // Through b: the same the other way. (Only now: b numbers what it has
    // received, so a push through b while a's are on their way would take a
    // seq among them.)
    for i in 11..=20u64 {
        let reply = client_b.push(text_push("u", "e", &format!("m{i}"))).await.expect("push").into_inner();
        assert_eq!((reply.seq, reply.delivered), (i, 1), "b's seq, b's connections");
    }
    for tab in [&mut on_a, &mut on_b] {
        for i in 11..=20u64 {
            assert_eq!(next_push(tab).await, (i, format!("m{i}")), "every push once, in order");
        }
    }

    // A user held only on a: pushes through b reach a's tab (b delivers to
    // none of its own), and pushes through a never reach b.
    let before_b = pushes_ok(&b).await;
    let reply = client_b.push(text_push("solo", "e", "via b")).await.expect("push").into_inner();
    assert_eq!((reply.seq, reply.delivered), (1, 0), "b holds no connection of solo");
    assert_eq!(next_push(&mut solo).await, (1, "via b".into()));
    for i in 1..=5 {
        client_a.push(text_push("solo", "e", &format!("s{i}"))).await.expect("push");
    }
    for i in 1..=5u64 {
        assert_eq!(next_push(&mut solo).await, (i + 1, format!("s{i}")));
    }
    // A marker on u through a: once b has it, b has had whatever a sent before.
    client_a.push(text_push("u", "e", "marker")).await.expect("push");
    assert_eq!(next_push(&mut on_b).await, (21, "marker".into()));
    assert_eq!(next_push(&mut on_a).await, (21, "marker".into()));
    assert_eq!(
        pushes_ok(&b).await - before_b,
        2.0,
        "b counted its own push to solo and the marker: b never subscribed to solo"
    );

    // Broadcast from a reaches both nodes' tabs; the count is a's.
    let broadcast = BroadcastRequest {
        event: "e".into(),
        payload: Some(broadcast_request::Payload::Message("to all".into())),
        ..Default::default()
    };
    let reply = client_a.broadcast(broadcast).await.expect("broadcast").into_inner();
    assert_eq!(reply.delivered, 2, "a's tabs of u and solo");
    for tab in [&mut on_a, &mut on_b, &mut solo] {
        let frame = next_json(tab).await;
        assert_eq!((frame["data"].as_str(), frame.get("seq")), (Some("to all"), None), "{frame}");
    }

    // Disconnect through b closes a's tab (and b's).
    let disconnect = DisconnectRequest { user_id: "u".into(), event: None };
    client_b.disconnect(disconnect).await.expect("disconnect");
    assert_eq!(closed(&mut on_a).await.0, 4502);
    assert_eq!(closed(&mut on_b).await.0, 4502);
    until_online(&mut client_a, "u", 0).await;
}

#[tokio::test]
async fn a_node_starts_without_nats_not_ready_and_refuses_pushes() {
    // A port nobody listens on.
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let lonely = node(&url, &prefix(), "lonely", &[]);
    assert_eq!(readyz(&lonely).await, 503, "not ready while NATS is unreachable");
    let mut client = lonely.grpc().await;
    let refused = client.push(text_push("u", "e", "nowhere")).await.expect_err("no NATS, no push");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let broadcast = BroadcastRequest {
        event: "e".into(),
        payload: Some(broadcast_request::Payload::Message("nowhere".into())),
        ..Default::default()
    };
    let refused = client.broadcast(broadcast).await.expect_err("no NATS, no broadcast");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
}

#[tokio::test]
async fn nodes_survive_a_nats_outage_and_carry_pushes_again_by_themselves() {
    let port = free_port();
    let mut nats = OwnServer::nats(port);
    let (url, p) = (nats.url("nats"), prefix());
    let (a, b) = (node(&url, &p, "a", &[]), node(&url, &p, "b", &[]));
    until_ready(&a, 200).await;
    until_ready(&b, 200).await;
    let (mut on_a, _) = tab(&a, "o", None).await;
    let (mut on_b, _) = tab(&b, "o", None).await;
    let mut producer = a.grpc().await;
    until_online(&mut producer, "o", 1).await;
    producer.push(text_push("o", "e", "before")).await.expect("push");
    assert_eq!(next_push(&mut on_a).await, (1, "before".into()));
    assert_eq!(next_push(&mut on_b).await, (1, "before".into()));

    nats.stop();
    until_ready(&a, 503).await;
    until_ready(&b, 503).await;
    let refused = producer.push(text_push("o", "e", "during")).await.expect_err("no NATS, no push");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

    let _nats = OwnServer::nats(port);
    until_ready(&a, 200).await;
    until_ready(&b, 200).await;
    // b's subscription comes back with its NATS client's reconnect, which
    // may finish a moment after a reports ready: probe until one arrives
    // (cross-node delivery is at most once, so an early probe may be lost).
    let mut last_a = 1;
    for probe in 1.. {
        let reply = producer.push(text_push("o", "e", "probe")).await.expect("push after recovery").into_inner();
        assert_eq!(next_push(&mut on_a).await, (reply.seq, "probe".into()), "a's own tab, a's seq");
        last_a = reply.seq;
        if let Ok((_, data)) = timeout(Duration::from_millis(500), next_push(&mut on_b)).await {
            assert_eq!(data, "probe");
            break;
        }
        assert!(probe < 20, "b got nothing through NATS after it came back");
    }
    // Then live again: every push once, in order, on both nodes (b may
    // still see a slow probe first).
    for i in 1..=10u64 {
        let reply = producer.push(text_push("o", "e", &format!("m{i}"))).await.expect("push").into_inner();
        assert_eq!(reply.seq, last_a + i);
        assert_eq!(next_push(&mut on_a).await, (last_a + i, format!("m{i}")));
    }
    let mut on_b_seen = Vec::new();
    while on_b_seen.len() < 10 {
        let (seq, data) = next_push(&mut on_b).await;
        if data != "probe" {
            on_b_seen.push((seq, data));
        }
    }
    let first = on_b_seen[0].0;
    let want: Vec<_> = (0..10u64).map(|i| (first + i, format!("m{}", i + 1))).collect();
    assert_eq!(on_b_seen, want, "b numbers what it receives: once each, in order");
}
