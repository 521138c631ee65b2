//! Server → client frames: the envelope mode's JSON messages (docs/protocol.md) and
//! how a delivery becomes a frame in each mode.
//!
//! # Binary pushes in envelope mode
//! A binary push arrives as one binary frame laid out as:
//!
//! ```text
//! +----------------+------------------------------+-----------------+
//! | N: u16, big    | N bytes: UTF-8 JSON header   | the raw payload |
//! | endian         | {"event":"a","seq":42,       | (rest of frame) |
//! |                |  "ts":1764300000123}         |                 |
//! +----------------+------------------------------+-----------------+
//! ```
//!
//! The header has the same `event`, `seq` and `ts` as a text push's
//! envelope; `seq` is absent for a broadcast. N is at most a few hundred
//! (event names are at most 128 bytes).

use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};
use serde_json::json;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::Mode;
use crate::core::{ConnId, Delivery, EventName, Joined, Payload, Replay};

/// The frame that carries `delivery` to a connection in `mode`. In envelope
/// mode the frame is encoded once per delivery and shared by every connection
/// (`Delivery::encoded`); in the wserver-compatible mode it is the payload
/// itself. Neither copies the payload per connection.
pub(super) fn delivery(mode: Mode, delivery: &Delivery) -> Message {
    match body(mode, delivery) {
        // SAFETY: `core::Text` holds valid UTF-8 by construction (its only
        // constructors take `String` or `&str`, and `Bytes` is immutable),
        // see src/core/delivery.rs.
        Payload::Text(text) => Message::Text(unsafe { Utf8Bytes::from_bytes_unchecked(text.bytes().clone()) }),
        Payload::Binary(bytes) => Message::Binary(bytes.clone()),
    }
}

/// The body of the frame that carries `delivery` in `mode`, borrowed: what
/// [`delivery`] wraps in a message, for a writer that frames it itself.
pub(super) fn body(mode: Mode, delivery: &Delivery) -> &Payload {
    match mode {
        Mode::Compat => &delivery.payload,
        Mode::Envelope => delivery.encoded(encode),
    }
}

/// The envelope-mode frame body of `d`: a JSON text for a text payload, the
/// binary layout of the module docs for a binary one.
fn encode(d: &Delivery) -> Payload {
    match &d.payload {
        Payload::Text(text) => {
            let mut out = String::with_capacity(text.as_str().len() + d.event.len() + 72);
            out.push_str(r#"{"type":"push","event":"#);
            push_json_str(&mut out, &d.event);
            push_seq_ts(&mut out, d);
            out.push_str(r#","data":"#);
            push_json_str(&mut out, text.as_str());
            out.push('}');
            Payload::text(out)
        }
        Payload::Binary(payload) => {
            let mut header = String::with_capacity(d.event.len() + 56);
            header.push_str(r#"{"event":"#);
            push_json_str(&mut header, &d.event);
            push_seq_ts(&mut header, d);
            header.push('}');
            // Event names are at most 128 bytes, so the header is far below 64 KiB.
            let len = u16::try_from(header.len()).unwrap_or(u16::MAX);
            let mut out = BytesMut::with_capacity(2 + header.len() + payload.len());
            out.put_u16(len);
            out.put_slice(header.as_bytes());
            out.put_slice(payload);
            Payload::Binary(out.freeze())
        }
    }
}

/// `,"seq":N` (omitted for a broadcast) and `,"ts":T`.
fn push_seq_ts(out: &mut String, d: &Delivery) {
    // `itoa`, not `write!`: the formatting machinery costs more than the
    // digits, twice for every delivery.
    let mut digits = itoa::Buffer::new();
    if let Some(seq) = d.seq {
        out.push_str(r#","seq":"#);
        out.push_str(digits.format(seq));
    }
    out.push_str(r#","ts":"#);
    out.push_str(digits.format(d.ts_ms));
}

/// Appends `s` as a JSON string literal. Runs of bytes that need no escape
/// (all but `"`, `\` and the control characters) are found eight at a time
/// and copied whole: this runs over every text push's payload.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        if let Some(word) = bytes.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok())
            && !needs_escape(u64::from_le_bytes(word))
        {
            i += 8;
            continue;
        }
        let escape = match bytes[i] {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => {
                i += 1;
                continue;
            }
        };
        // `i` is at an ASCII byte, and `start` just after one: both are
        // character boundaries.
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", bytes[i]); // writing into a String cannot fail
        } else {
            out.push_str(escape);
        }
        i += 1;
        start = i;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Whether any of the eight bytes in `word` is `"`, `\` or below 0x20:
/// the classic tests for a zero byte and for a byte below `n` (exact as a
/// yes or no for the whole word, which is all this needs).
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| (v.wrapping_sub(ONES) & !v & HIGH) != 0;
    let below_space = (word.wrapping_sub(ONES * 0x20) & !word & HIGH) != 0;
    below_space || has_zero(word ^ (ONES * u64::from(b'"'))) || has_zero(word ^ (ONES * u64::from(b'\\')))
}

fn text(value: serde_json::Value) -> Message {
    Message::Text(value.to_string().into())
}

/// `{"type":"registered","user":..,"conn":"<id>","events":[..],"seq":N,"epoch":..}`.
/// Written out directly, like a push's envelope: every connection gets one,
/// and a `json!` value (a map of owned strings) costs several times more.
pub(super) fn registered(user: &str, conn: ConnId, joined: &Joined) -> Message {
    let events_len: usize = joined.events.iter().map(|e| e.len() + 3).sum();
    let mut out = String::with_capacity(96 + user.len() + events_len + joined.epoch.len());
    // `itoa`, not `write!`, as in `push_seq_ts`.
    let mut digits = itoa::Buffer::new();
    out.push_str(r#"{"type":"registered","user":"#);
    push_json_str(&mut out, user);
    out.push_str(r#","conn":""#);
    out.push_str(digits.format(conn));
    out.push_str(r#"","events":["#);
    for (i, event) in joined.events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, event);
    }
    out.push_str(r#"],"seq":"#);
    out.push_str(digits.format(joined.seq));
    out.push_str(r#","epoch":"#);
    push_json_str(&mut out, &joined.epoch);
    out.push('}');
    Message::Text(out.into())
}

/// `{"type":"recovered","from":F,"to":T,"complete":bool}` after a replay.
pub(super) fn recovered(replay: &Replay) -> Message {
    text(json!({"type": "recovered", "from": replay.from, "to": replay.to, "complete": replay.complete}))
}

/// `{"type":"subscribed"|"unsubscribed","events":[all the connection has now]}`.
pub(super) fn subscriptions(kind: &'static str, events: &[EventName]) -> Message {
    let events: Vec<&str> = events.iter().map(|e| &**e).collect();
    text(json!({"type": kind, "events": events}))
}

/// `{"type":"refreshed"}`.
pub(super) fn refreshed() -> Message {
    Message::Text(Utf8Bytes::from_static(r#"{"type":"refreshed"}"#))
}

/// `{"type":"pong"}`.
pub(super) fn pong() -> Message {
    Message::Text(Utf8Bytes::from_static(r#"{"type":"pong"}"#))
}

/// `{"type":"error","code":..,"message":..}`: a bad request that does not end
/// the connection.
pub(super) fn error(code: &str, message: &str) -> Message {
    text(json!({"type": "error", "code": code, "message": message}))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;

    /// `s` as `push_json_str` writes it, read back by serde_json.
    fn round_trip(s: &str) -> String {
        let mut out = String::new();
        push_json_str(&mut out, s);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out:?} is not a JSON string: {e}"))
    }

    #[test]
    fn every_byte_that_needs_an_escape_is_escaped_wherever_it_falls_in_a_word() {
        let specials = ['"', '\\', '\n', '\r', '\t', '\u{0}', '\u{1f}', '\u{7f}', 'é', '€', '😀'];
        for len in 0..=24 {
            for at in 0..len.max(1) {
                for special in specials {
                    let s: String = (0..len).map(|i| if i == at { special } else { 'x' }).collect();
                    assert_eq!(round_trip(&s), s, "{s:?}");
                }
            }
        }
        let all_ascii: String = (0u8..128).map(char::from).collect();
        assert_eq!(round_trip(&all_ascii), all_ascii);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { failure_persistence: None, ..Default::default() })]

        #[test]
        fn any_text_reads_back_as_itself(s in "\\PC*|[\\x00-\\x7f]{0,40}") {
            proptest::prop_assert_eq!(round_trip(&s), s);
        }
    }

    fn push(payload: Payload, seq: Option<u64>) -> Delivery {
        Delivery::new(Arc::from("a"), seq, payload, None)
    }

    #[test]
    fn registered_is_json_with_escaped_strings() {
        let joined =
            Joined { events: vec![Arc::from("a\"b"), Arc::from("c")], seq: 7, epoch: Arc::from("00ff"), replay: None };
        let Message::Text(t) = registered("u\\\n1", 42, &joined) else { panic!("not text") };
        let v: serde_json::Value = serde_json::from_str(&t).expect("valid JSON");
        let expected = serde_json::json!({
            "type": "registered", "user": "u\\\n1", "conn": "42", "events": ["a\"b", "c"], "seq": 7, "epoch": "00ff"
        });
        assert_eq!(v, expected);
        let none = Joined { events: Vec::new(), ..joined };
        let Message::Text(t) = registered("u", 1, &none) else { panic!("not text") };
        let v: serde_json::Value = serde_json::from_str(&t).expect("valid JSON");
        assert_eq!(v["events"], serde_json::json!([]));
    }

    #[test]
    fn text_envelope_is_json_with_escaped_data() {
        let d = push(Payload::text("he said \"hi\"\n\u{1}é"), Some(42));
        let Message::Text(t) = delivery(Mode::Envelope, &d) else { panic!("not text") };
        let v: serde_json::Value = serde_json::from_str(&t).expect("valid JSON");
        assert_eq!(v["type"], "push");
        assert_eq!(v["event"], "a");
        assert_eq!(v["seq"], 42);
        assert_eq!(v["ts"], d.ts_ms);
        assert_eq!(v["data"], "he said \"hi\"\n\u{1}é");
    }

    #[test]
    fn broadcast_has_no_seq() {
        let d = push(Payload::text("x"), None);
        let Message::Text(t) = delivery(Mode::Envelope, &d) else { panic!("not text") };
        let v: serde_json::Value = serde_json::from_str(&t).expect("valid JSON");
        assert!(v.get("seq").is_none(), "{t}");
    }

    #[test]
    fn binary_layout() {
        let d = push(Payload::Binary(Bytes::from_static(&[0, 1, 2, 255])), Some(7));
        let Message::Binary(b) = delivery(Mode::Envelope, &d) else { panic!("not binary") };
        let n = usize::from(u16::from_be_bytes([b[0], b[1]]));
        let header: serde_json::Value = serde_json::from_slice(&b[2..2 + n]).expect("JSON header");
        assert_eq!(header["event"], "a");
        assert_eq!(header["seq"], 7);
        assert_eq!(&b[2 + n..], &[0, 1, 2, 255]);
    }

    #[test]
    fn compat_frames_are_the_payload() {
        let d = push(Payload::text("raw"), Some(1));
        assert_eq!(delivery(Mode::Compat, &d), Message::text("raw"));
    }
}
