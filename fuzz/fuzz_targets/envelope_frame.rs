//! The frames that carry a push (docs/protocol.md, "Envelope mode" and
//! "wserver-compatible mode"), read back the way a client reads them.
//!
//! Invariants:
//! - wserver-compatible mode: the frame is the payload, byte for byte;
//! - envelope mode, text: one JSON object `{"type":"push","event","seq"?,
//!   "ts","data"}` whose fields are the delivery's (no `seq` for a
//!   broadcast), whatever characters the event and message hold;
//! - envelope mode, binary: a 2-byte big-endian length N, N bytes of UTF-8
//!   JSON header `{"event","seq"?,"ts"}`, then the raw payload;
//! - the encoding is done once per delivery: every later frame is the same.
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pushgate::core::{Delivery, Payload, event_name};
use pushgate::fuzzing::{Frame, delivery_frame};
use serde_json::{Map, Value};

#[derive(Arbitrary, Debug)]
struct Input {
    /// Any text: the encoder must not rely on the hub's event-name check.
    event: String,
    seq: Option<u64>,
    text: bool,
    payload: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let payload = if input.text {
        Payload::text(String::from_utf8_lossy(&input.payload).into_owned())
    } else {
        Payload::Binary(Bytes::from(input.payload))
    };
    let valid = event_name(&input.event).is_ok();
    let delivery = Delivery::new(Arc::from(input.event.as_str()), input.seq, payload.clone(), None);
    let envelope = delivery_frame(true, &delivery);
    match (&envelope, &payload) {
        (Frame::Text(frame), Payload::Text(text)) => {
            let value: Value = serde_json::from_str(frame).unwrap_or_else(|e| panic!("{frame:?} is not JSON: {e}"));
            let Value::Object(map) = value else { panic!("{frame} is not an object") };
            let data = header(&map, &delivery, &["type", "event", "seq", "ts", "data"]);
            assert_eq!(map["type"], "push");
            assert_eq!(data.as_deref(), Some(text.as_str()));
        }
        (Frame::Binary(frame), Payload::Binary(raw)) => {
            assert!(frame.len() >= 2, "no length");
            let n = usize::from(u16::from_be_bytes([frame[0], frame[1]]));
            assert!(frame.len() >= 2 + n, "length {n} past the frame's {} bytes", frame.len());
            if valid {
                assert!(n <= 512, "a header of {n} bytes for a valid event name");
            }
            let head: Value = serde_json::from_slice(&frame[2..2 + n]).expect("the header is UTF-8 JSON");
            let Value::Object(map) = head else { panic!("the header is not an object") };
            assert_eq!(header(&map, &delivery, &["event", "seq", "ts"]), None);
            assert_eq!(&frame[2 + n..], &raw[..], "the payload follows the header unchanged");
        }
        _ => panic!("{payload:?} carried as {envelope:?}"),
    }
    assert_eq!(delivery_frame(true, &delivery), envelope, "encoded once, shared");
    let compat = delivery_frame(false, &delivery);
    match (&compat, &payload) {
        (Frame::Text(frame), Payload::Text(text)) => assert_eq!(frame.as_str(), text.as_str()),
        (Frame::Binary(frame), Payload::Binary(raw)) => assert_eq!(frame, raw),
        _ => panic!("{payload:?} carried as {compat:?} in the compatible mode"),
    }
});

/// Checks `event`, `seq` and `ts` of an envelope against the delivery and
/// that no other key than `keys` is there; returns `data` if present.
fn header(map: &Map<String, Value>, d: &Delivery, keys: &[&str]) -> Option<String> {
    for key in map.keys() {
        assert!(keys.contains(&key.as_str()), "unexpected key {key}");
    }
    assert_eq!(map.get("event").and_then(Value::as_str), Some(&*d.event), "event");
    assert_eq!(map.get("seq").map(|s| s.as_u64().expect("seq is a u64")), d.seq, "seq");
    assert_eq!(map.get("ts").and_then(Value::as_u64), Some(d.ts_ms), "ts");
    map.get("data").map(|v| v.as_str().expect("data is a string").to_owned())
}
