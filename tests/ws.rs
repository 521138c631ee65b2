//! The browser side end to end (docs/protocol.md): the real gateway on 127.0.0.1:0,
//! real tokio-tungstenite clients (and a raw TCP one where a client must
//! misbehave). Pushes go straight to the hub, so these tests need no producer
//! adapter.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::clock::{still, within};
use common::ws::{ENVELOPE, KEY, closed, next_frame, next_json, next_text, send_text, try_connect, upgrade_raw};
use common::{Gateway, WAIT, eventually, fast_heartbeat, settings};
use futures_util::{SinkExt, StreamExt};
use pushgate::authenticators::TokenTable;
use pushgate::config::Settings;
use pushgate::core::{AuthError, AuthFuture, Authenticator, Identity, Payload};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

// ---------------------------------------------------------------- wserver-compatible mode

#[tokio::test]
async fn compat_mode_delivers_each_push_byte_for_byte_in_order() {
    let gw = common::start(settings()).await;
    let mut client = gw.compat().await;
    send_text(&mut client, r#"{"Token":"u1","EVENT":"e"}"#).await;
    gw.wait_online("u1", 1).await;
    let messages: Vec<String> = (0..100).map(|i| format!("msg {i} \"quoted\" é ✓ {{json}}")).collect();
    for m in &messages {
        assert_eq!(gw.push_text("u1", "e", m).delivered, 1);
    }
    for m in &messages {
        assert_eq!(&next_text(&mut client).await, m);
    }
    gw.push("u1", "e", Payload::Binary(Bytes::from_static(&[0, 159, 255])));
    assert_eq!(next_frame(&mut client).await, Message::binary(vec![0u8, 159, 255]));

    assert_eq!(gw.running.hub.disconnect("u1", None), 1);
    assert_eq!(closed(&mut client).await.0, 4502);
    gw.wait_online("u1", 0).await;
}

#[tokio::test]
async fn a_push_reaches_every_tab_of_the_user_on_that_event_only() {
    let gw = common::start(settings()).await;
    let mut tab1 = gw.compat().await;
    let mut tab2 = gw.compat().await;
    send_text(&mut tab1, r#"{"token":"u1","event":"e"}"#).await;
    send_text(&mut tab2, r#"{"token":"u1","event":"e"}"#).await;
    gw.wait_online("u1", 2).await;
    let mut other_user = gw.compat_tab("u2", "e").await;
    let mut other_event = gw.compat().await;
    send_text(&mut other_event, r#"{"token":"u1","event":"f"}"#).await;
    gw.wait_online("u1", 3).await;

    assert_eq!(gw.push_text("u1", "e", "for u1 on e").delivered, 2);
    assert_eq!(next_text(&mut tab1).await, "for u1 on e");
    assert_eq!(next_text(&mut tab2).await, "for u1 on e");
    // Had the others received it, it would be their first frame.
    assert_eq!(gw.push_text("u2", "e", "for u2").delivered, 1);
    assert_eq!(gw.push_text("u1", "f", "for u1 on f").delivered, 1);
    assert_eq!(next_text(&mut other_user).await, "for u2");
    assert_eq!(next_text(&mut other_event).await, "for u1 on f");
}

#[tokio::test]
async fn a_second_register_adds_events() {
    let gw = common::start(settings()).await;
    let mut client = gw.compat_tab("u1", "a").await;
    send_text(&mut client, r#"{"token":"u1","event":"b"}"#).await;
    eventually("b subscribed", || gw.push_text("u1", "b", "on b").delivered > 0).await;
    assert_eq!(next_text(&mut client).await, "on b");
    assert_eq!(gw.push_text("u1", "a", "on a").delivered, 1);
    assert_eq!(next_text(&mut client).await, "on a");
}

// ---------------------------------------------------------------- envelope mode

#[tokio::test]
async fn envelope_mode_frames_and_messages() {
    let gw = common::start(settings()).await;
    let (mut client, response) = tokio_tungstenite::connect_async({
        let mut r = gw.ws_url().into_client_request().expect("request");
        r.headers_mut().insert("sec-websocket-protocol", "other, pushgate.v1".parse().expect("value"));
        r
    })
    .await
    .expect("connect");
    assert_eq!(response.headers()["sec-websocket-protocol"], "pushgate.v1");

    gw.push_text("u1", "z", "before: takes seq 1");
    send_text(&mut client, r#"{"token":"u1","events":["a","b"]}"#).await;
    let registered = next_json(&mut client).await;
    assert_eq!(registered["type"], "registered");
    assert_eq!(registered["user"], "u1");
    assert!(registered["conn"].as_str().expect("conn is a string").parse::<u64>().is_ok(), "{registered}");
    assert_eq!(registered["events"], json!(["a", "b"]));
    assert_eq!(registered["seq"], 1);

    let before = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("clock").as_millis() as u64;
    assert_eq!(gw.push_text("u1", "a", "hello \"there\"").seq, 2);
    let frame = next_json(&mut client).await;
    assert_eq!(frame["type"], "push");
    assert_eq!(frame["event"], "a");
    assert_eq!(frame["seq"], 2);
    assert_eq!(frame["data"], "hello \"there\"");
    let ts = frame["ts"].as_u64().expect("ts");
    assert!(ts >= before && ts < before + 10_000, "ts {ts} vs {before}");

    send_text(&mut client, r#"{"type":"subscribe","events":["c"]}"#).await;
    assert_eq!(next_json(&mut client).await, json!({"type": "subscribed", "events": ["a", "b", "c"]}));
    send_text(&mut client, r#"{"type":"unsubscribe","events":["a"]}"#).await;
    assert_eq!(next_json(&mut client).await, json!({"type": "unsubscribed", "events": ["b", "c"]}));
    assert_eq!(gw.push_text("u1", "a", "not any more").delivered, 0);
    send_text(&mut client, r#"{"type":"ping"}"#).await;
    assert_eq!(next_json(&mut client).await, json!({"type": "pong"}));

    // Binary push: u16 header length, JSON header, raw payload.
    assert_eq!(gw.push("u1", "b", Payload::Binary(Bytes::from_static(b"\x00\x01raw"))).seq, 4);
    let Message::Binary(b) = next_frame(&mut client).await else { panic!("expected a binary frame") };
    let n = usize::from(u16::from_be_bytes([b[0], b[1]]));
    let header: Value = serde_json::from_slice(&b[2..2 + n]).expect("JSON header");
    assert_eq!(header["event"], "b");
    assert_eq!(header["seq"], 4);
    assert!(header["ts"].is_u64());
    assert_eq!(&b[2 + n..], b"\x00\x01raw");

    // A broadcast takes no seq.
    assert_eq!(gw.running.hub.broadcast("c", Payload::text("to all"), &[]).expect("broadcast"), 1);
    let frame = next_json(&mut client).await;
    assert_eq!(frame["data"], "to all");
    assert!(frame.get("seq").is_none(), "{frame}");

    // A second register adds events and answers `registered` again.
    send_text(&mut client, r#"{"event":"d"}"#).await;
    let again = next_json(&mut client).await;
    assert_eq!(again["type"], "registered");
    assert_eq!(again["events"], json!(["b", "c", "d"]));
}

#[tokio::test]
async fn resume_replays_exactly_the_missed_pushes_then_goes_live() {
    let gw = common::start(settings()).await;
    for (event, text) in [("e", "one"), ("e", "two"), ("other", "skip"), ("e", "three")] {
        gw.push_text("u1", event, text);
    }
    let mut client = gw.envelope().await;
    send_text(&mut client, r#"{"token":"u1","event":"e","since":1}"#).await;
    assert_eq!(next_json(&mut client).await["seq"], 4);
    let replayed: Vec<(Value, Value)> = {
        let mut v = Vec::new();
        for _ in 0..2 {
            let f = next_json(&mut client).await;
            v.push((f["seq"].clone(), f["data"].clone()));
        }
        v
    };
    assert_eq!(replayed, [(json!(2), json!("two")), (json!(4), json!("three"))]);
    assert_eq!(next_json(&mut client).await, json!({"type": "recovered", "from": 1, "to": 4, "complete": true}));
    gw.push_text("u1", "e", "live");
    let live = next_json(&mut client).await;
    assert_eq!((live["seq"].clone(), live["data"].clone()), (json!(5), json!("live")));
}

#[tokio::test]
async fn resume_from_beyond_history_says_incomplete() {
    let gw = common::start(Settings { history_size: Some(4), ..settings() }).await;
    for i in 1..=10 {
        gw.push_text("u1", "e", &format!("m{i}"));
    }
    let mut client = gw.envelope().await;
    send_text(&mut client, r#"{"token":"u1","event":"e","since":2}"#).await;
    assert_eq!(next_json(&mut client).await["type"], "registered");
    for seq in 7..=10 {
        assert_eq!(next_json(&mut client).await["seq"], seq);
    }
    assert_eq!(next_json(&mut client).await, json!({"type": "recovered", "from": 2, "to": 10, "complete": false}));
}

#[tokio::test]
async fn seq_never_restarts_for_a_user_away_longer_than_the_history() {
    let ttl = Duration::from_millis(50);
    let gw = common::start(Settings { history_ttl: Some(ttl), ..settings() }).await;
    let mut client = gw.envelope().await;
    send_text(&mut client, r#"{"token":"u1","event":"e"}"#).await;
    let registered = next_json(&mut client).await;
    let epoch = registered["epoch"].as_str().expect("registered carries the epoch").to_owned();
    for seq in 1..=3 {
        assert_eq!(gw.push_text("u1", "e", "m").seq, seq);
        assert_eq!(next_json(&mut client).await["seq"], seq);
    }
    client.close(None).await.expect("close");
    gw.wait_online("u1", 0).await;
    // Away longer than the history TTL: the messages are gone, the position is not.
    tokio::time::sleep(ttl * 3).await;
    gw.running.hub.sweep();

    let mut back = gw.envelope().await;
    send_text(&mut back, &json!({"token": "u1", "event": "e", "since": 3, "epoch": epoch}).to_string()).await;
    let registered = next_json(&mut back).await;
    assert_eq!((&registered["seq"], &registered["epoch"]), (&json!(3), &json!(epoch)), "{registered}");
    assert_eq!(next_json(&mut back).await, json!({"type": "recovered", "from": 3, "to": 3, "complete": true}));
    assert_eq!(gw.push_text("u1", "e", "next").seq, 4, "seq continues");
    assert_eq!(next_json(&mut back).await["seq"], 4);

    // With no history at all, pushes are numbered too.
    let gw = common::start(Settings { history_size: Some(0), ..settings() }).await;
    assert_eq!((gw.push_text("u2", "e", "a").seq, gw.push_text("u2", "e", "b").seq), (1, 2));
}

#[tokio::test]
async fn a_resume_from_another_epoch_is_incomplete() {
    let gw = common::start(settings()).await;
    gw.push_text("u1", "e", "m1");
    let mut client = gw.envelope().await;
    send_text(&mut client, r#"{"token":"u1","event":"e","since":1,"epoch":"from-another-stream"}"#).await;
    assert_eq!(next_json(&mut client).await["type"], "registered");
    assert_eq!(next_json(&mut client).await, json!({"type": "recovered", "from": 1, "to": 1, "complete": false}));
}

// ---------------------------------------------------------------- authentication

fn token_table() -> Arc<TokenTable> {
    Arc::new(TokenTable::parse("t1 alice\nt2 bob\np@ss/1 carol\n", "test").expect("table"))
}

#[tokio::test]
async fn token_at_the_handshake_by_query_or_bearer() {
    let gw = common::start_with(settings(), token_table()).await;
    let url = format!("{}?x=1&token=p%40ss%2F1", gw.ws_url());
    let mut by_query = try_connect(&url, &[ENVELOPE]).await.expect("query token");
    send_text(&mut by_query, r#"{"event":"e"}"#).await;
    let registered = next_json(&mut by_query).await;
    assert_eq!(registered["user"], "carol");

    let mut by_header = try_connect(&gw.ws_url(), &[("authorization", "Bearer t2")]).await.expect("bearer token");
    send_text(&mut by_header, r#"{"event":"e"}"#).await;
    gw.wait_online("bob", 1).await;
    gw.push_text("bob", "e", "for bob");
    assert_eq!(next_text(&mut by_header).await, "for bob");
}

#[tokio::test]
async fn refused_tokens() {
    let gw = common::start_with(settings(), token_table()).await;
    for (url, headers) in
        [(format!("{}?token=nope", gw.ws_url()), vec![]), (gw.ws_url(), vec![("authorization", "Bearer nope")])]
    {
        match try_connect(&url, &headers).await {
            Err(WsError::Http(response)) => assert_eq!(response.status(), 401),
            other => panic!("expected HTTP 401, got {:?}", other.map(|_| ())),
        }
    }
    let mut bad = gw.compat().await;
    send_text(&mut bad, r#"{"token":"nope","event":"e"}"#).await;
    assert_eq!(closed(&mut bad).await.0, 4500);

    let url = format!("{}?token=t1", gw.ws_url());
    let mut other_user = try_connect(&url, &[]).await.expect("connect");
    send_text(&mut other_user, r#"{"token":"t2","event":"e"}"#).await;
    assert_eq!(closed(&mut other_user).await.0, 4500);
}

/// How long after it is authenticated the token `short` of [`TestAuth`]
/// expires.
const SHORT: Duration = Duration::from_secs(2);

/// Tokens for expiry, refresh and event restrictions.
struct TestAuth;

impl Authenticator for TestAuth {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        let soon = SystemTime::now() + SHORT;
        let result = match token {
            "short" => Ok(Identity { expires_at: Some(soon), ..Identity::user("u1") }),
            "fresh" => Ok(Identity::user("u1")),
            "limited" => Ok(Identity { allowed_events: Some(vec![Arc::from("a")]), ..Identity::user("u1") }),
            "other" => Ok(Identity::user("u2")),
            "down" => Err(AuthError::Unavailable("test".into())),
            _ => Err(AuthError::Invalid("unknown".into())),
        };
        Box::pin(std::future::ready(result))
    }
}

/// On tokio's paused clock (`common::clock`): the expiry is checked from both
/// sides without waiting for it.
#[tokio::test(start_paused = true)]
async fn an_expired_token_closes_4002_unless_refreshed() {
    let gw = common::start_with(settings(), Arc::new(TestAuth)).await;
    let (registering, wall) = (Instant::now(), SystemTime::now());
    let (mut expiring, mut refreshed) = still(async {
        let mut expiring = gw.envelope().await;
        send_text(&mut expiring, r#"{"token":"short","event":"e"}"#).await;
        assert_eq!(next_json(&mut expiring).await["type"], "registered");
        let mut refreshed = gw.envelope().await;
        send_text(&mut refreshed, r#"{"token":"short","event":"e"}"#).await;
        assert_eq!(next_json(&mut refreshed).await["type"], "registered");
        send_text(&mut refreshed, r#"{"type":"refresh","token":"fresh"}"#).await;
        assert_eq!(next_json(&mut refreshed).await, json!({"type": "refreshed"}));
        (expiring, refreshed)
    })
    .await;
    // The token expires SHORT after it was authenticated, by the wall clock,
    // and the gateway times what is left of it on tokio's clock, held still
    // while they registered: the close is due SHORT after `registering`,
    // less at most the real time the registration took.
    let took = wall.elapsed().expect("the wall clock goes on");
    let (earliest, latest) = (registering + SHORT - took, registering + SHORT);

    // A millisecond before that it is open: its ping is answered.
    tokio::time::sleep_until(earliest - Duration::from_millis(1)).await;
    still(async {
        send_text(&mut expiring, r#"{"type":"ping"}"#).await;
        assert_eq!(next_json(&mut expiring).await, json!({"type": "pong"}));
    })
    .await;
    // By then it is closed; the refreshed one is not: a push is the next
    // thing it gets.
    tokio::time::sleep_until(latest).await;
    assert_eq!(still(closed(&mut expiring)).await.0, 4002);
    gw.push_text("u1", "e", "after expiry");
    assert_eq!(still(next_json(&mut refreshed)).await["data"], "after expiry");
    send_text(&mut refreshed, r#"{"type":"refresh","token":"other"}"#).await;
    assert_eq!(still(closed(&mut refreshed)).await.0, 4500);
}

#[tokio::test]
async fn events_outside_the_token_close_4501_and_auth_outage_1011() {
    let gw = common::start_with(settings(), Arc::new(TestAuth)).await;
    let mut client = gw.compat().await;
    send_text(&mut client, r#"{"token":"limited","events":["a","b"]}"#).await;
    assert_eq!(closed(&mut client).await.0, 4501);
    let mut client = gw.compat().await;
    send_text(&mut client, r#"{"token":"down","event":"a"}"#).await;
    assert_eq!(closed(&mut client).await.0, 1011);
    match try_connect(&format!("{}?token=down", gw.ws_url()), &[]).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected HTTP 503, got {:?}", other.map(|_| ())),
    }
}

// ---------------------------------------------------------------- origin

#[tokio::test]
async fn origin_is_checked_before_the_upgrade() {
    let origins = vec!["https://app.example.com".to_owned(), "*.example.org".to_owned()];
    let gw = common::start(Settings { allowed_origins: Some(origins), ..settings() }).await;
    match try_connect(&gw.ws_url(), &[("origin", "https://evil.test")]).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected HTTP 403, got {:?}", other.map(|_| ())),
    }
    for origin in ["https://app.example.com", "https://tab.example.org"] {
        let mut client = try_connect(&gw.ws_url(), &[("origin", origin)]).await.expect(origin);
        send_text(&mut client, r#"{"token":"u1","event":"e"}"#).await;
        gw.wait_online("u1", 1).await;
        client.close(None).await.expect("close");
        gw.wait_online("u1", 0).await;
    }
}

// ---------------------------------------------------------------- bad input

#[tokio::test]
async fn malformed_json_gets_errors_then_4503_on_the_third() {
    let gw = common::start(settings()).await;
    let mut client = gw.envelope().await;
    send_text(&mut client, "{not json").await;
    assert_eq!(next_json(&mut client).await["code"], "bad_json");
    send_text(&mut client, "[1,2]").await;
    let error = next_json(&mut client).await;
    assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("error"), Some("bad_json")));
    send_text(&mut client, "nope").await;
    assert_eq!(closed(&mut client).await.0, 4503);

    let mut client = gw.compat().await;
    for _ in 0..3 {
        send_text(&mut client, "{{{").await;
    }
    assert_eq!(closed(&mut client).await.0, 4503);
    gw.still_healthy().await;
}

#[tokio::test]
async fn unknown_types_and_bad_event_names_get_error_messages() {
    let gw = common::start(settings()).await;
    let mut client = gw.envelope().await;
    send_text(&mut client, r#"{"token":"u1","event":"no spaces"}"#).await;
    assert_eq!(next_json(&mut client).await["code"], "bad_event");
    send_text(&mut client, r#"{"token":"u1","event":"ok"}"#).await;
    assert_eq!(next_json(&mut client).await["type"], "registered");
    send_text(&mut client, r#"{"type":"dance"}"#).await;
    assert_eq!(next_json(&mut client).await["code"], "unknown_type");
    send_text(&mut client, r#"{"type":"ping"}"#).await;
    assert_eq!(next_json(&mut client).await["type"], "pong");
    gw.still_healthy().await;
}

#[tokio::test]
async fn too_many_events_is_an_error_in_envelope_mode_and_4503_in_compat() {
    let gw = common::start(Settings { max_events_per_conn: Some(2), ..settings() }).await;
    let mut client = gw.envelope().await;
    send_text(&mut client, r#"{"token":"u1","events":["a","b","c"]}"#).await;
    assert_eq!(next_json(&mut client).await["code"], "too_many_events");
    send_text(&mut client, r#"{"token":"u1","events":["a","b"]}"#).await;
    assert_eq!(next_json(&mut client).await["type"], "registered");
    send_text(&mut client, r#"{"type":"subscribe","events":["c"]}"#).await;
    assert_eq!(next_json(&mut client).await["code"], "too_many_events");

    let mut client = gw.compat().await;
    send_text(&mut client, r#"{"token":"u2","events":["a","b","c"]}"#).await;
    assert_eq!(closed(&mut client).await.0, 4503);
    gw.still_healthy().await;
}

#[tokio::test]
async fn binary_frames_close_1003() {
    let gw = common::start(settings()).await;
    let mut client = gw.compat_tab("u1", "e").await;
    client.send(Message::binary(vec![1u8, 2, 3])).await.expect("send");
    assert_eq!(closed(&mut client).await.0, 1003);
    gw.wait_online("u1", 0).await;
    gw.still_healthy().await;
}

#[tokio::test]
async fn text_that_is_not_utf8_closes_1007() {
    let gw = common::start(settings()).await;
    let mut tcp = raw_upgrade(&gw).await;
    tcp.write_all(&masked_text(&[0xff, 0xfe])).await.expect("write");
    let seen = read_to_end(&mut tcp).await;
    let close = [0x88u8, 2 + "text frame is not UTF-8".len() as u8, 0x03, 0xEF];
    assert!(seen.windows(4).any(|w| w == close), "no 1007 close frame in {seen:?}");
    gw.still_healthy().await;
}

#[tokio::test]
async fn oversize_frames_close_1009() {
    let gw = common::start(settings()).await;
    let mut client = gw.compat().await;
    send_text(&mut client, &format!(r#"{{"token":"u1","event":"{}"}}"#, "x".repeat(5000))).await;
    assert_eq!(closed(&mut client).await.0, 1009);
    gw.still_healthy().await;
}

/// On tokio's paused clock (`common::clock`): the deadline is checked to the
/// millisecond without waiting for it.
#[tokio::test(start_paused = true)]
async fn no_register_within_the_timeout_closes_4001() {
    const REGISTER: Duration = Duration::from_secs(5);
    let gw = common::start(Settings { register_timeout: Some(REGISTER), ..settings() }).await;
    // They connect with the clock held: their deadline is REGISTER after `opened`.
    let opened = Instant::now();
    let (mut silent, mut prober) = still(async { (gw.compat().await, gw.envelope().await) }).await;
    // A millisecond before it they are open: a ping (which is no register) is answered.
    tokio::time::sleep_until(opened + REGISTER - Duration::from_millis(1)).await;
    still(async {
        send_text(&mut prober, r#"{"type":"ping"}"#).await;
        assert_eq!(next_json(&mut prober).await, json!({"type": "pong"}));
    })
    .await;
    // At it both are closed.
    tokio::time::sleep_until(opened + REGISTER).await;
    assert_eq!(still(closed(&mut silent)).await.0, 4001);
    assert_eq!(still(closed(&mut prober)).await.0, 4001);
    still(gw.still_healthy()).await;
}

// ---------------------------------------------------------------- limits

#[tokio::test]
async fn connection_limits_close_4003() {
    let s = Settings { max_connections: Some(2), max_connections_per_user: Some(1), ..settings() };
    let gw = common::start(s).await;
    let _first = gw.compat_tab("u1", "e").await;
    let mut second_tab = gw.compat().await;
    send_text(&mut second_tab, r#"{"token":"u1","event":"e"}"#).await;
    assert_eq!(closed(&mut second_tab).await.0, 4003);
    let _other = gw.compat_tab("u2", "e").await;
    let mut third = gw.compat().await;
    assert_eq!(closed(&mut third).await.0, 4003);
}

#[tokio::test]
async fn a_slow_consumer_is_closed_4000_even_while_its_socket_is_blocked() {
    let gw = common::start(settings()).await;
    let mut slow = gw.compat_tab("slow", "e").await;
    let big = "x".repeat(64 * 1024);
    // The client reads nothing: the kernel buffers fill, the session's flush
    // blocks, then the outbox overflows its 256 KiB cap.
    let mut pushes = 0;
    while gw.push_text("slow", "e", &big).delivered == 1 {
        pushes += 1;
        assert!(pushes < 4000, "the queue never overflowed");
        tokio::task::yield_now().await;
    }
    // The session notices the close while its write is still blocked.
    gw.wait_online("slow", 0).await;
    assert_eq!(closed(&mut slow).await.0, 4000);
    gw.still_healthy().await;
}

// ---------------------------------------------------------------- heartbeat and shutdown

/// On tokio's paused clock (`common::clock`): four ping intervals pass in
/// steps of 10 ms, each followed by 2 ms of real time with the clock held for
/// the pings and their answers to land; a step of 10 ms is far shorter than
/// the 250 ms a pong may take.
#[tokio::test(start_paused = true)]
async fn a_client_that_answers_pings_stays() {
    let gw = common::start(fast_heartbeat(settings())).await;
    let mut client = still(gw.compat_tab("u1", "e")).await;
    let mut pings = 0;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Reading answers the pings.
        let read = async {
            loop {
                match client.next().await {
                    Some(Ok(Message::Ping(_))) => pings += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
        };
        within(Duration::from_millis(2), read).await;
    }
    assert!(pings >= 3, "only {pings} pings");
    assert_eq!(gw.push_text("u1", "e", "alive").delivered, 1);
    assert_eq!(still(next_text(&mut client)).await, "alive");
}

/// On tokio's paused clock (`common::clock`): time passes in steps of 1 ms
/// and the close is timed on the gateway's side, without waiting for it.
#[tokio::test(start_paused = true)]
async fn a_client_that_never_answers_is_closed() {
    const PING: Duration = Duration::from_millis(2010);
    const PONG: Duration = Duration::from_secs(2);
    let heartbeat = Settings { ping_interval: Some(PING), pong_timeout: Some(PONG), ..settings() };
    let gw = common::start(heartbeat).await;
    let mut tcp = still(async {
        let mut tcp = raw_upgrade(&gw).await;
        tcp.write_all(&masked_text(br#"{"token":"mute","event":"e"}"#)).await.expect("write register");
        tcp
    })
    .await;
    gw.wait_online("mute", 1).await;
    let joined = Instant::now();
    let outbox = gw.running.hub.outboxes().pop().expect("the connection joined");
    // Read everything, answer nothing, until the gateway closes it; note when
    // the first bytes (its ping) come.
    let (mut seen, mut pinged) = (Vec::new(), None);
    let unanswered = async {
        let mut buf = [0u8; 1024];
        while !outbox.is_closing() {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if let Ok(n @ 1..) = tcp.try_read(&mut buf) {
                seen.extend_from_slice(&buf[..n]);
                pinged.get_or_insert(Instant::now());
            }
        }
    };
    timeout(WAIT, unanswered).await.expect("closed in time");
    // It is pinged within a ping interval of joining and closed a pong
    // timeout after the ping: not sooner after joining than that, nor later
    // after the ping came (which was no sooner than it was sent).
    let closed_after = joined.elapsed();
    assert!(closed_after >= PONG && closed_after <= PING + PONG, "closed {closed_after:?} after it joined");
    if let Some(pinged) = pinged {
        assert!(pinged.elapsed() <= PONG, "closed {:?} after the ping came", pinged.elapsed());
    }
    // What it read: a ping, then the close, 1011.
    let close = [0x88u8, 2 + 12, 0x03, 0xF3]; // close frame: code 1011, reason "pong timeout"
    let read_to_close = async {
        let mut buf = [0u8; 1024];
        while !seen.windows(4).any(|w| w == close) {
            match tcp.read(&mut buf).await {
                Ok(n @ 1..) => seen.extend_from_slice(&buf[..n]),
                end => panic!("no 1011 close frame in {seen:?} before {end:?}"),
            }
        }
    };
    still(read_to_close).await;
    assert_eq!(seen[..2], [0x89, 0x00], "an empty ping first: {seen:?}");
    // Then, the close never answered, the server ends the connection.
    read_to_end(&mut tcp).await;
    gw.wait_online("mute", 0).await;
}

/// On tokio's paused clock (`common::clock`): with one joined connection the
/// drain closes it at once, so no time needs to pass.
#[tokio::test(start_paused = true)]
async fn shutdown_closes_sessions_with_1001() {
    let gw = common::start(Settings { drain_timeout: Some(Duration::from_secs(2)), ..settings() }).await;
    let (mut joined, mut waiting) = still(async { (gw.compat_tab("u1", "e").await, gw.compat().await) }).await;
    gw.running.shutdown();
    let (code, reason) = still(closed(&mut joined)).await;
    assert_eq!(code, 1001);
    assert!(reason.contains("reconnect_after_ms="), "{reason}");
    assert_eq!(still(closed(&mut waiting)).await.0, 1001);
}

// ---------------------------------------------------------------- plain HTTP

/// A raw TCP connection that has completed an upgrade (its 101 read).
async fn raw_upgrade(gw: &Gateway) -> TcpStream {
    let mut tcp = TcpStream::connect(gw.public()).await.expect("tcp");
    upgrade_raw(&mut tcp).await;
    tcp
}

/// A client's text frame (masked, with mask 0) carrying `payload`, which
/// may be anything, UTF-8 or not; at most 125 bytes.
fn masked_text(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= 125, "a one-byte length");
    let mut frame = vec![0x81, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    frame
}

/// Reads until the server closes.
async fn read_to_end(tcp: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 1024];
        while let Ok(n @ 1..) = tcp.read(&mut buf).await {
            seen.extend_from_slice(&buf[..n]);
        }
    };
    timeout(WAIT, read_all).await.expect("server closed the connection");
    seen
}

/// Sends `request` as it is to the public port and returns the whole answer.
async fn exchange(gw: &Gateway, request: &str) -> String {
    let mut tcp = TcpStream::connect(gw.public()).await.expect("tcp");
    tcp.write_all(request.as_bytes()).await.expect("write");
    String::from_utf8_lossy(&read_to_end(&mut tcp).await).into_owned()
}

/// Sends `request` as it is and returns the status line of the answer.
async fn status_line(gw: &Gateway, request: &str) -> String {
    exchange(gw, request).await.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn malformed_upgrades_are_answered_by_the_standards() {
    let gw = common::start_with(settings(), token_table()).await;
    let upgrade = |method: &str, version: &str, key: &str, extra: &str| {
        format!(
            "{method} /ws {version}\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    };
    let head = status_line(&gw, &upgrade("HEAD", "HTTP/1.1", KEY, "")).await;
    assert!(head.starts_with("HTTP/1.1 405"), "HEAD: {head}");
    let head = status_line(&gw, &upgrade("GET", "HTTP/1.0", KEY, "")).await;
    assert!(head.starts_with("HTTP/1.0 400") || head.starts_with("HTTP/1.1 400"), "HTTP/1.0: {head}");
    let head = status_line(&gw, &upgrade("GET", "HTTP/1.1", &"*".repeat(2000), "")).await;
    assert!(head.starts_with("HTTP/1.1 400"), "a key that is not base64: {head}");
    let head = status_line(&gw, &upgrade("GET", "HTTP/1.1", "dGhlIHNhbXBsZSBub25jZR==", "")).await;
    assert!(head.starts_with("HTTP/1.1 400"), "a key that is not 16 bytes: {head}");
    // A header block over 8 KiB is refused before it is buffered any further.
    let bulky = format!("X-Filler: {}\r\n", "f".repeat(9 * 1024));
    let head = status_line(&gw, &upgrade("GET", "HTTP/1.1", KEY, &bulky)).await;
    assert!(head.starts_with("HTTP/1.1 431"), "oversized headers: {head}");

    // The Bearer scheme is case-insensitive (and the gateway still serves).
    for scheme in ["BEARER", "bearer", "Bearer"] {
        let value = format!("{scheme} t2");
        let mut client = try_connect(&gw.ws_url(), &[("authorization", &value)]).await.expect("accepted");
        send_text(&mut client, r#"{"event":"e"}"#).await;
        gw.wait_online("bob", 1).await;
        client.close(None).await.expect("close");
        gw.wait_online("bob", 0).await;
    }
}

/// An upgrade arrives however the client sends it: as the connection's
/// first request (answered by the listener itself) or after another request
/// on a kept-alive connection (answered by hyper), each time with its
/// register frame in the same write as its head. Either way the session
/// gets every byte the client sent after the head.
#[tokio::test]
async fn an_upgrade_first_or_after_another_request_keeps_what_came_with_it() {
    let gw = common::start(settings()).await;
    let upgrade = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let health = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    for (user, before) in [("first", ""), ("second", health)] {
        let mut tcp = TcpStream::connect(gw.public()).await.expect("tcp");
        let register = masked_text(format!(r#"{{"token":"{user}","event":"e"}}"#).as_bytes());
        tcp.write_all(&[before.as_bytes(), upgrade.as_bytes(), &register].concat()).await.expect("write");
        gw.wait_online(user, 1).await;
        assert_eq!(gw.push_text(user, "e", "hello").delivered, 1);
        let mut seen = Vec::new();
        let delivered = async {
            let mut buf = [0u8; 1024];
            while !seen.ends_with(b"\x81\x05hello") {
                let n = tcp.read(&mut buf).await.expect("read");
                assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
                seen.extend_from_slice(&buf[..n]);
            }
        };
        timeout(WAIT, delivered).await.expect("the push arrived");
        let seen = String::from_utf8_lossy(&seen);
        assert_eq!(seen.starts_with("HTTP/1.1 200"), !before.is_empty(), "{seen}");
        assert!(seen.contains("HTTP/1.1 101 Switching Protocols\r\n"), "{seen}");
    }
}

/// Bytes that never hold a CRLF blank line are answered at once, not after
/// the handshake timeout: something else than HTTP (here the start of a TLS
/// handshake) gets hyper's 400, and a head whose lines end in a bare LF is
/// a head.
#[tokio::test]
async fn bytes_without_a_crlf_blank_line_are_answered_at_once() {
    let gw = common::start(Settings { handshake_timeout: Some(Duration::from_secs(60)), ..settings() }).await;
    let answer = exchange(&gw, "\u{16}\u{3}\u{1}\u{2}\u{0}\u{1}\u{0}\u{1}\u{fc}").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    let answer = exchange(&gw, "GET /healthz HTTP/1.1\nHost: x\nConnection: close\n\n").await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"), "{answer:?}");
    gw.still_healthy().await;
}

/// The whole answer to a `GET` of `path` on the public port.
async fn http_get(gw: &Gateway, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    exchange(gw, &request).await
}

#[tokio::test]
async fn health_and_readiness() {
    let gw = common::start(settings()).await;
    let health = http_get(&gw, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200") && health.ends_with("ok"), "{health}");
    let ready = http_get(&gw, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200") && ready.ends_with("ready"), "{ready}");
    assert!(http_get(&gw, "/nope").await.starts_with("HTTP/1.1 404"));
    assert!(http_get(&gw, "/ws").await.starts_with("HTTP/1.1 426"));
}
