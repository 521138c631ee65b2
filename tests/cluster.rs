//! Several nodes over the real Redis on 127.0.0.1:6379, each node its own
//! `pushgate` process (docs/architecture.md, "Several nodes"). Every test
//! uses its own `--broker-prefix`, so tests run in parallel on one Redis.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::cluster::{
    OwnServer, free_port, next_push, node, prefix, require, tab, tab_reconnecting, until_online, until_ready,
};
use common::ws::{ENVELOPE, closed, next_json, send_json, try_connect};
use common::{WAIT, text_push};
use pushgate::proto::{BroadcastRequest, DisconnectRequest, broadcast_request};
use serde_json::{Value, json};
use tokio::time::timeout;

const REDIS: &str = "redis://127.0.0.1:6379";

#[tokio::test]
async fn three_nodes_deliver_every_push_once_in_order_and_share_online_broadcast_and_disconnect() {
    require("Redis", "127.0.0.1:6379");
    let p = prefix();
    let nodes: Vec<_> = (0..3).map(|i| node(REDIS, &p, &format!("n{i}"), &[])).collect();
    for node in &nodes {
        until_ready(node, 200).await; // a join before the node reaches Redis is refused with 1011
    }
    let mut tabs = Vec::new();
    for node in &nodes {
        tabs.push(tab(node, "u", None).await.0);
    }
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(node.grpc().await);
    }
    for client in &mut clients {
        until_online(client, "u", 3).await;
    }

    // Pushes taken by alternating nodes: one stream, numbered by Redis.
    for i in 1..=30u64 {
        let reply = clients[(i % 3) as usize].push(text_push("u", "e", &format!("m{i}"))).await.expect("push");
        let reply = reply.into_inner();
        assert_eq!(reply.seq, i, "seq is cluster-wide");
        assert_eq!((reply.nodes, reply.delivered), (3, 0), "handed to the 3 nodes holding u; counted there");
    }
    for tab in &mut tabs {
        for i in 1..=30u64 {
            assert_eq!(next_push(tab).await, (i, format!("m{i}")), "every tab, every push, once, in order");
        }
    }

    // Broadcast and Disconnect reach every node.
    let broadcast = BroadcastRequest {
        event: "e".into(),
        payload: Some(broadcast_request::Payload::Message("to all".into())),
        ..Default::default()
    };
    let reply = clients[1].broadcast(broadcast).await.expect("broadcast").into_inner();
    assert_eq!(reply.delivered, 1, "the count is the taking node's");
    for tab in &mut tabs {
        let frame = next_json(tab).await;
        assert_eq!((frame["data"].as_str(), frame.get("seq")), (Some("to all"), None), "{frame}");
    }
    let disconnect = DisconnectRequest { user_id: "u".into(), event: None };
    clients[2].disconnect(disconnect).await.expect("disconnect");
    for tab in &mut tabs {
        assert_eq!(closed(tab).await.0, 4502);
    }
    until_online(&mut clients[0], "u", 0).await;
}

#[tokio::test]
async fn a_client_resumes_on_another_node_while_pushes_keep_coming() {
    require("Redis", "127.0.0.1:6379");
    let p = prefix();
    let (a, b, c) = (node(REDIS, &p, "a", &[]), node(REDIS, &p, "b", &[]), node(REDIS, &p, "c", &[]));
    for node in [&a, &b, &c] {
        until_ready(node, 200).await;
    }
    const TOTAL: u64 = 300;
    let (mut first, registered) = tab(&a, "r", None).await;
    let epoch = registered["epoch"].as_str().expect("epoch").to_owned();
    let mut producer = b.grpc().await;
    let pushing = tokio::spawn(async move {
        for i in 1..=TOTAL {
            producer.push(text_push("r", "e", &format!("m{i}"))).await.expect("push");
            // Paced, so the resume below happens while pushes keep coming.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    // Read a few on node a, then leave in the middle of the stream.
    let mut seen = Vec::new();
    for _ in 0..20 {
        seen.push(next_push(&mut first).await.0);
    }
    drop(first);
    let last = *seen.last().expect("read some");
    // Resume on node c: exactly what was missed, then live.
    let (mut second, registered) = tab(&c, "r", Some((last, &epoch))).await;
    assert_eq!(registered["epoch"], epoch.as_str(), "one stream across nodes");
    while seen.len() < TOTAL as usize {
        let frame = next_json(&mut second).await;
        match frame["type"].as_str() {
            Some("recovered") => assert_eq!(frame["complete"], true, "{frame}"),
            _ => seen.push(frame["seq"].as_u64().unwrap_or_else(|| panic!("a push, got {frame}"))),
        }
    }
    timeout(WAIT, pushing).await.expect("producer done").expect("producer ok");
    let expected: Vec<u64> = (1..=TOTAL).collect();
    assert_eq!(seen, expected, "nothing lost, nothing twice, in order");
}

#[tokio::test]
async fn a_killed_node_leaves_online_within_its_lease_and_the_user_limit_is_cluster_wide() {
    require("Redis", "127.0.0.1:6379");
    let p = prefix();
    let limit = ["--node-lease", "1s", "--max-connections-per-user", "2"];
    let a = node(REDIS, &p, "a", &limit);
    let mut k = node(REDIS, &p, "k", &limit);
    let c = node(REDIS, &p, "c", &limit);
    for node in [&a, &k, &c] {
        until_ready(node, 200).await;
    }
    let mut client = a.grpc().await;
    let (_on_a, _) = tab(&a, "w", None).await;
    let (_on_k, _) = tab(&k, "w", None).await;
    until_online(&mut client, "w", 2).await;

    // A third connection anywhere is over the per-user limit.
    let mut third = try_connect(&c.ws_url(), &[ENVELOPE]).await.expect("connect");
    send_json(&mut third, json!({"token": "w", "events": ["e"]})).await;
    assert_eq!(closed(&mut third).await.0, 4003);

    k.kill_hard();
    until_online(&mut client, "w", 1).await;
    // The others keep working, and the freed place can be taken again.
    let (mut again, _) = tab(&c, "w", None).await;
    until_online(&mut client, "w", 2).await;
    client.push(text_push("w", "e", "after")).await.expect("push");
    assert_eq!(next_push(&mut again).await.1, "after");
}

#[tokio::test]
async fn nodes_survive_a_redis_outage_and_recover_by_themselves() {
    let port = free_port();
    let mut redis = OwnServer::redis(port);
    let p = prefix();
    let (a, b) = (node(&redis.url("redis"), &p, "a", &[]), node(&redis.url("redis"), &p, "b", &[]));
    until_ready(&a, 200).await;
    until_ready(&b, 200).await;
    let (mut watcher, _) = tab(&b, "o", None).await;
    let mut producer = a.grpc().await;
    until_online(&mut producer, "o", 1).await;
    let mut acknowledged = HashMap::new();
    for i in 1..=5u64 {
        let reply = producer.push(text_push("o", "e", &format!("before{i}"))).await.expect("push").into_inner();
        acknowledged.insert(reply.seq, format!("before{i}"));
    }
    for i in 1..=5u64 {
        assert_eq!(next_push(&mut watcher).await, (i, format!("before{i}")));
    }

    redis.stop();
    until_ready(&a, 503).await;
    until_ready(&b, 503).await;
    let refused = producer.push(text_push("o", "e", "during")).await.expect_err("no Redis, no push");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

    // Redis comes back empty (no persistence): the nodes reconnect, and the
    // user's stream starts over under a new epoch, which the tab learns by
    // a 4004 close.
    let _redis = OwnServer::redis(port);
    until_ready(&a, 200).await;
    until_ready(&b, 200).await;
    assert_eq!(closed(&mut watcher).await.0, 4004);
    let (mut back, registered) = tab_reconnecting(&b, "o", Some((5, "an epoch from before"))).await;
    let recovered = next_json(&mut back).await;
    assert_eq!((recovered["type"].as_str(), recovered["complete"].as_bool()), (Some("recovered"), Some(false)));
    assert_ne!(registered["epoch"], Value::Null);
    until_online(&mut producer, "o", 1).await;
    let reply = producer.push(text_push("o", "e", "after")).await.expect("push after recovery").into_inner();
    assert_eq!(next_push(&mut back).await, (reply.seq, "after".into()));
}
