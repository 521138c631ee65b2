//! wserver's `POST /push` body (docs/api.md, "wserver's POST /push"): the
//! parser alone, then the whole route on the internal port's router.
//!
//! Invariants:
//! - the parser agrees with an independent reading of the body as Go's
//!   `encoding/json` would decode it into `{userId, event, message}`: the
//!   first JSON value must be an object; keys match case-insensitively;
//!   `null` leaves a field unset; another type refuses the body; an empty
//!   `message` is refused;
//! - the route answers 200 `message sent to 0 clients` for a push the hub
//!   takes and 400 `request data illegal` for anything else (bad body, empty
//!   user or event, a user id over 256 bytes, bad event name, payload over
//!   `--max-message-bytes`).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pushgate::core::hub::MAX_USER_ID_BYTES;
use pushgate::core::{Hub, HubConfig, Payload, ProducerKeys};
use pushgate::fuzzing::{InternalHttp, wserver_body};
use pushgate_fuzz::is_event_name;
use serde_json::Value;

const MAX_MESSAGE: usize = 64;

/// History off, so the hub keeps nothing between runs.
static HTTP: LazyLock<InternalHttp> = LazyLock::new(|| {
    let config = HubConfig { history_size: 0, max_message_bytes: MAX_MESSAGE, ..HubConfig::default() };
    InternalHttp::new(Hub::new(config), ProducerKeys::default())
});

fuzz_target!(|body: &[u8]| {
    let parsed = wserver_body(body);
    if let Some(expected) = oracle(body) {
        let got = parsed.as_ref().map(|p| {
            let Payload::Text(message) = &p.payload else { panic!("a wserver push is text") };
            (p.user_id.clone(), p.event.clone(), message.as_str().to_owned())
        });
        assert_eq!(got, expected, "body {:?}", String::from_utf8_lossy(body));
    }
    let (status, _, reply) = HTTP.call("POST", "/push", None, body.to_vec());
    let takes = parsed.is_some_and(|p| {
        let user = !p.user_id.is_empty() && p.user_id.len() <= MAX_USER_ID_BYTES;
        user && is_event_name(&p.event) && p.payload.len() <= MAX_MESSAGE
    });
    if takes {
        assert_eq!((status, &reply[..]), (200, &b"message sent to 0 clients"[..]));
    } else {
        assert_eq!((status, &reply[..]), (400, &b"request data illegal"[..]));
    }
});

/// What Go's decoder makes of `body`: `Some(None)` refused, `Some(Some(..))`
/// the fields, `None` when this oracle cannot tell (a field given more than
/// once, under one spelling or two: which one counts, and that a later
/// `null` leaves the earlier value, is the parser's own unit test; a body
/// that is not UTF-8).
fn oracle(body: &[u8]) -> Option<Option<(String, String, String)>> {
    // Go replaces invalid UTF-8 in strings; the gateway refuses it in the
    // three fields and skips it elsewhere. `Value` cannot hold it: no verdict.
    let text = std::str::from_utf8(body).ok()?;
    // A lone surrogate escape (`\ud800`) is replaced by Go and refused by
    // `serde_json::Value`: no verdict on a body with a `\uD...` escape.
    if text.to_ascii_lowercase().contains("\\ud") {
        return None;
    }
    let first = serde_json::Deserializer::from_slice(body).into_iter::<Entries>().next();
    let Some(Ok(Entries(entries))) = first else { return Some(None) };
    let mut fields = [String::new(), String::new(), String::new()];
    for (slot, name) in fields.iter_mut().zip(["userId", "event", "message"]) {
        let mut values = entries.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v);
        let Some(value) = values.next() else { continue };
        if values.next().is_some() {
            return None;
        }
        match value {
            Value::Null => {}
            Value::String(s) => *slot = s.clone(),
            _ => return Some(None),
        }
    }
    let [user, event, message] = fields;
    Some((!message.is_empty()).then_some((user, event, message)))
}

/// The members of a JSON object that name one of the three fields (in any
/// case), as they come, a key given twice kept twice (a `serde_json::Value`
/// keeps only the last). Other members are only checked for syntax, as Go
/// skips a field the struct lacks: `[1e400]` there is valid JSON that a
/// `Value` would refuse as out of range.
struct Entries(Vec<(String, Value)>);

/// Whether `key` names a field of wserver's push, as Go matches it.
fn is_field(key: &str) -> bool {
    ["userId", "event", "message"].iter().any(|name| key.eq_ignore_ascii_case(name))
}

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = Entries;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if is_field(&key) {
                        let value = map.next_value::<Value>()?;
                        entries.push((key, value));
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Members)
    }
}
