//! The `/v1/*` JSON mirror (docs/api.md, "The JSON mirror"): proto3-JSON
//! bodies decoded with pbjson into the proto types, then the whole route on
//! the internal port's router. The first byte picks the route.
//!
//! Invariants:
//! - a body that decodes round-trips: written back as JSON it decodes to the
//!   same message, and so it does through the protobuf binary encoding (the
//!   two mappings agree);
//! - the route answers 400 `{"code":"INVALID_ARGUMENT",..}` exactly for a
//!   body that does not decode or a request the docs call invalid (empty
//!   `user_id` or `event`, a bad event name, a payload over
//!   `--max-message-bytes`, an id over its length limit), and 200 with the reply message otherwise,
//!   echoing `request_id`; a batch answers each push, in order.
#![no_main]

use std::fmt::Debug;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use pushgate::core::hub::{MAX_IDEMPOTENCY_KEY_BYTES, MAX_REQUEST_ID_BYTES, MAX_USER_ID_BYTES};
use pushgate::core::{Hub, HubConfig, ProducerKeys};
use pushgate::fuzzing::InternalHttp;
use pushgate::proto::{
    BroadcastReply, BroadcastRequest, DisconnectRequest, OnlineReply, OnlineRequest, PushBatchReply, PushBatchRequest,
    PushReply, PushRequest, StatsReply, StatsRequest, broadcast_request, push_request,
};
use pushgate_fuzz::is_event_name;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const MAX_MESSAGE: usize = 64;

struct Fixture {
    hub: std::sync::Arc<Hub>,
    http: InternalHttp,
}

/// History off and keys forgotten at once (`sweep` after each run), so the
/// hub keeps nothing between runs.
static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let config = HubConfig {
        history_size: 0,
        history_ttl: std::time::Duration::ZERO,
        max_message_bytes: MAX_MESSAGE,
        ..HubConfig::default()
    };
    let hub = Hub::new(config);
    Fixture { http: InternalHttp::new(hub.clone(), ProducerKeys::default()), hub }
});

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else { return };
    let f = &*FIXTURE;
    match route % 6 {
        0 => call::<PushRequest, PushReply>(
            f,
            "push",
            body,
            |r| push_valid(r).then(|| r.request_id.clone()),
            |q, a| {
                assert_eq!(a.request_id, q.request_id);
            },
        ),
        1 => call::<PushBatchRequest, PushBatchReply>(
            f,
            "push_batch",
            body,
            |_| Some(String::new()),
            |q, a| {
                assert_eq!(a.replies.len(), q.pushes.len());
                for (push, reply) in q.pushes.iter().zip(&a.replies) {
                    // A request id over its limit is not echoed.
                    let echoed = if push.request_id.len() > MAX_REQUEST_ID_BYTES { "" } else { &push.request_id };
                    assert_eq!(reply.request_id, echoed);
                    assert_eq!(reply.error.as_ref().map(|e| e.code), (!push_valid(push)).then_some(3), "{push:?}");
                }
            },
        ),
        2 => call::<BroadcastRequest, BroadcastReply>(f, "broadcast", body, broadcast_valid, |q, a| {
            assert_eq!(a.request_id, q.request_id);
        }),
        3 => call::<DisconnectRequest, Value>(f, "disconnect", body, disconnect_valid, |_, _| {}),
        4 => call::<OnlineRequest, OnlineReply>(
            f,
            "online",
            body,
            |q| q.user_ids.iter().all(|u| u.len() <= MAX_USER_ID_BYTES).then(String::new),
            |q, a| {
                for user in &q.user_ids {
                    assert_eq!(a.connections.get(user), Some(&0), "{user:?}");
                }
            },
        ),
        _ => call::<StatsRequest, StatsReply>(f, "stats", body, |_| Some(String::new()), |_, _| {}),
    }
    f.hub.sweep();
});

fn push_valid(r: &PushRequest) -> bool {
    let size = match &r.payload {
        Some(push_request::Payload::Message(m)) => m.len(),
        Some(push_request::Payload::Data(d)) => d.len(),
        None => 0,
    };
    !r.user_id.is_empty()
        && r.user_id.len() <= MAX_USER_ID_BYTES
        && r.idempotency_key.len() <= MAX_IDEMPOTENCY_KEY_BYTES
        && r.request_id.len() <= MAX_REQUEST_ID_BYTES
        && is_event_name(&r.event)
        && size <= MAX_MESSAGE
}

fn broadcast_valid(r: &BroadcastRequest) -> Option<String> {
    let size = match &r.payload {
        Some(broadcast_request::Payload::Message(m)) => m.len(),
        Some(broadcast_request::Payload::Data(d)) => d.len(),
        None => 0,
    };
    let ids = r.request_id.len() <= MAX_REQUEST_ID_BYTES && r.user_ids.iter().all(|u| u.len() <= MAX_USER_ID_BYTES);
    (ids && is_event_name(&r.event) && size <= MAX_MESSAGE).then(|| r.request_id.clone())
}

fn disconnect_valid(r: &DisconnectRequest) -> Option<String> {
    let user = !r.user_id.is_empty() && r.user_id.len() <= MAX_USER_ID_BYTES;
    (user && r.event.as_deref().is_none_or(is_event_name)).then(String::new)
}

/// Decodes `body` as `Q` (the mirror's rule: a blank body is the empty
/// message), checks the round trips, then posts it to `/v1/{path}`. `valid`
/// says whether the gateway must take the request; `check` compares request
/// and reply when it does.
fn call<Q, A>(f: &Fixture, path: &str, body: &[u8], valid: impl Fn(&Q) -> Option<String>, check: impl Fn(&Q, &A))
where
    Q: DeserializeOwned + Serialize + Message + Default + PartialEq + Debug,
    A: DeserializeOwned,
{
    let decoded: Result<Q, _> =
        if body.iter().all(u8::is_ascii_whitespace) { Ok(Q::default()) } else { serde_json::from_slice(body) };
    if let Ok(request) = &decoded {
        let json = serde_json::to_vec(request).expect("a decoded message serializes");
        let again: Q = serde_json::from_slice(&json).unwrap_or_else(|e| {
            panic!("{request:?} written as {} does not decode: {e}", String::from_utf8_lossy(&json))
        });
        assert_eq!(&again, request, "JSON round trip");
        assert_eq!(&Q::decode(&request.encode_to_vec()[..]).expect("protobuf round trip"), request);
    }
    let (status, content_type, reply) = f.http.call("POST", &format!("/v1/{path}"), None, body.to_vec());
    assert_eq!(content_type, "application/json", "/v1/{path} answered {status} {reply:?}");
    let taken = decoded.as_ref().ok().and_then(&valid);
    match (&decoded, taken) {
        (Ok(request), Some(_)) => {
            assert_eq!(status, 200, "{request:?}: {reply:?}");
            let answer: A = serde_json::from_slice(&reply).expect("the reply is the proto3 JSON of the reply message");
            check(request, &answer);
        }
        _ => {
            assert_eq!(status, 400, "{decoded:?}: {reply:?}");
            let error: Value = serde_json::from_slice(&reply).expect("a JSON error");
            assert_eq!(error["code"], "INVALID_ARGUMENT", "{error}");
            assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
        }
    }
}
