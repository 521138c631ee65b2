//! The client message parser (docs/protocol.md, "Client messages"), as both
//! modes use it. The first byte picks the mode; the rest is a text frame.
//!
//! Invariants:
//! - an accepted message holds only valid event names, each once;
//! - it round-trips: written back as JSON (the envelope's form, or wserver's
//!   `{"Token","Event"}` form in the compatible mode, keys in another case)
//!   it parses to the same message;
//! - a refused one has one of the documented `error` codes, matching an
//!   independent JSON reading (`bad_json` exactly when the text is not a JSON
//!   object), and an error message of bounded size whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgate::fuzzing::{ClientMessage, client_message};
use pushgate_fuzz::{CLIENT_ERROR_CODES, is_event_name};
use serde_json::{Value, json};

/// The longest error message a client may get back: names are cut at 140
/// characters and types at 64 before they are quoted.
const MAX_ERROR_MESSAGE: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, frame)) = data.split_first() else { return };
    // A text frame that is not UTF-8 is closed with 1007 before any parsing.
    let Ok(text) = std::str::from_utf8(frame) else { return };
    let envelope = mode & 1 == 1;
    match client_message(text) {
        Ok(message) => accepted(&message, envelope),
        Err(error) => {
            assert!(CLIENT_ERROR_CODES.contains(&error.code), "undocumented code {}", error.code);
            assert!(error.message.len() <= MAX_ERROR_MESSAGE, "error message of {} bytes", error.message.len());
            let is_object = matches!(serde_json::from_str::<Value>(text), Ok(Value::Object(_)));
            assert_eq!(error.code == "bad_json", !is_object, "{text:?} refused as {error:?}");
        }
    }
});

fn accepted(message: &ClientMessage, envelope: bool) {
    let events = match message {
        ClientMessage::Register { events, .. } | ClientMessage::Subscribe { events, .. } => events.as_slice(),
        ClientMessage::Unsubscribe(events) => events.as_slice(),
        ClientMessage::Refresh(_) | ClientMessage::Ping => &[],
    };
    for (i, e) in events.iter().enumerate() {
        assert!(is_event_name(e), "invalid event name accepted: {e:?}");
        assert!(!events[..i].contains(e), "duplicate event {e:?}");
    }
    let again = |value: Value| {
        let text = value.to_string();
        let parsed = client_message(&text).unwrap_or_else(|e| panic!("{text} refused: {e:?}"));
        assert_eq!(&parsed, message, "round trip through {text}");
    };
    again(write(message, str::to_owned));
    again(write(message, |k| k.to_ascii_uppercase()));
    // wserver's browsers send `{"token":..,"event":..}` with Go's field names.
    if let (false, ClientMessage::Register { token, events, since: None, .. }) = (envelope, message) {
        if let [event] = events.as_slice() {
            let mut go = serde_json::Map::new();
            go.insert("Event".into(), json!(event));
            if let Some(token) = token {
                go.insert("Token".into(), json!(token));
            }
            again(Value::Object(go));
        }
    }
}

/// `message` as JSON, each key passed through `key`.
fn write(message: &ClientMessage, key: impl Fn(&str) -> String) -> Value {
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(key(k), v);
    };
    match message {
        ClientMessage::Register { token, events, since, epoch } => {
            put("type", json!("register"));
            if let Some(token) = token {
                put("token", json!(token));
            }
            put("events", json!(events));
            if let Some(since) = since {
                put("since", json!(since));
            }
            if let Some(epoch) = epoch {
                put("epoch", json!(epoch));
            }
        }
        ClientMessage::Subscribe { events, since, epoch } => {
            put("type", json!("subscribe"));
            put("events", json!(events));
            if let Some(since) = since {
                put("since", json!(since));
            }
            if let Some(epoch) = epoch {
                put("epoch", json!(epoch));
            }
        }
        ClientMessage::Unsubscribe(events) => {
            put("type", json!("unsubscribe"));
            put("events", json!(events));
        }
        ClientMessage::Refresh(token) => {
            put("type", json!("refresh"));
            put("token", json!(token));
        }
        ClientMessage::Ping => put("type", json!("ping")),
    }
    Value::Object(m)
}
