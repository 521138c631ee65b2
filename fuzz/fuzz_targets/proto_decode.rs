//! Protobuf decoding of `PushRequest` and `PushBatchRequest` (prost), as the
//! gRPC service receives them, then the batch call over a hub. The first byte
//! picks the message.
//!
//! Invariants:
//! - a message that decodes re-encodes to at most the input's size (the
//!   canonical form drops nothing the message holds) and decodes back to the
//!   same value, and so it does through the proto3 JSON mapping (pbjson);
//! - the hub answers a batch with one reply per push, in order, each echoing
//!   its `request_id`; a push the docs call invalid gets `error` with code 3
//!   (INVALID_ARGUMENT) and a message naming its field, and no `seq`; a valid
//!   one gets a `seq` and no error.
#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use pushgate::core::{Hub, HubConfig};
use pushgate::fuzzing::push_batch;
use pushgate::proto::{PushBatchRequest, PushRequest, push_request};
use pushgate_fuzz::is_event_name;

const MAX_MESSAGE: usize = 64;

/// Idempotency keys and history are forgotten at each `sweep`, so the hub
/// keeps nothing between runs.
static HUB: LazyLock<Arc<Hub>> = LazyLock::new(|| {
    Hub::new(HubConfig { history_ttl: Duration::ZERO, max_message_bytes: MAX_MESSAGE, ..HubConfig::default() })
});

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    let batch = if which & 1 == 0 {
        let Some(push) = round_trip::<PushRequest>(bytes) else { return };
        PushBatchRequest { pushes: vec![push] }
    } else {
        let Some(batch) = round_trip::<PushBatchRequest>(bytes) else { return };
        batch
    };
    let reply = push_batch(&HUB, batch.clone());
    assert_eq!(reply.replies.len(), batch.pushes.len());
    for (push, reply) in batch.pushes.iter().zip(&reply.replies) {
        assert_eq!(reply.request_id, push.request_id);
        match (&reply.error, invalid_field(push)) {
            (None, None) => assert!(reply.seq > 0, "{push:?} -> {reply:?}"),
            (Some(error), Some(field)) => {
                assert_eq!(error.code, 3, "{error:?}");
                assert!(error.message.starts_with(field), "{push:?} refused with {error:?}, not naming {field}");
                assert_eq!((reply.seq, reply.delivered, reply.duplicate), (0, 0, false));
            }
            (error, field) => panic!("{push:?}: error {error:?}, docs say invalid field {field:?}"),
        }
    }
    HUB.sweep();
});

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Option<M> {
    let message = M::decode(bytes).ok()?;
    let encoded = message.encode_to_vec();
    assert!(encoded.len() <= bytes.len(), "{} bytes re-encoded as {}", bytes.len(), encoded.len());
    assert_eq!(M::decode(&encoded[..]).expect("re-decodes"), message);
    let json = serde_json::to_vec(&message).expect("serializes");
    let from_json: M = serde_json::from_slice(&json)
        .unwrap_or_else(|e| panic!("{message:?} as {} does not decode: {e}", String::from_utf8_lossy(&json)));
    assert_eq!(from_json, message, "proto3 JSON round trip");
    Some(message)
}

/// The field docs/api.md ("Errors") says a push is refused for, if any.
fn invalid_field(p: &PushRequest) -> Option<&'static str> {
    let (field, size) = match &p.payload {
        Some(push_request::Payload::Message(m)) => ("message", m.len()),
        Some(push_request::Payload::Data(d)) => ("data", d.len()),
        None => ("message", 0),
    };
    if p.user_id.is_empty() {
        Some("user_id")
    } else if !is_event_name(&p.event) {
        Some("event")
    } else if size > MAX_MESSAGE {
        Some(field)
    } else {
        None
    }
}
