//! Client → server messages (docs/protocol.md, "Client messages"): JSON text frames parsed into
//! [`ClientMessage`]. Keys are matched ASCII-case-insensitively, as Go's
//! `encoding/json` does for wserver's `{"token","event"}`; a `null` value is
//! the same as a missing key, and of two keys that match, the later one in
//! the message counts, as in Go.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::core::event::EventError;
use crate::core::{EventName, Since, event_name};

/// A parsed client message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ClientMessage {
    /// wserver's register message (no `type`, or `"type":"register"`).
    Register(Register),
    /// `{"type":"subscribe","events":[..],"since":N?,"epoch":E?}` (envelope mode).
    Subscribe { events: Vec<EventName>, since: Option<Since> },
    /// `{"type":"unsubscribe","events":[..]}` (envelope mode).
    Unsubscribe(Vec<EventName>),
    /// `{"type":"refresh","token":".."}` (envelope mode).
    Refresh(String),
    /// `{"type":"ping"}` (envelope mode), answered with `{"type":"pong"}`.
    Ping,
}

/// `{"token": "...", "event": "...", "events": [...], "since": N, "epoch":
/// E}`; every key optional. `event` and `events` are merged, duplicates
/// removed; `epoch` counts only with `since`.
#[derive(Debug, PartialEq, Eq, Default)]
pub(super) struct Register {
    pub token: Option<String>,
    pub events: Vec<EventName>,
    pub since: Option<Since>,
}

/// Why a client message was refused. Each has the `code` of the envelope
/// error message that reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum BadRequest {
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("a message must be a JSON object")]
    NotObject,
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("`{field}` must be {expected}")]
    BadField { field: &'static str, expected: &'static str },
    #[error("event `{name}`: {error}")]
    BadEvent { name: String, error: EventError },
}

impl BadRequest {
    /// The `code` field of the envelope error message.
    pub(super) fn code(&self) -> &'static str {
        match self {
            BadRequest::Json(_) | BadRequest::NotObject => "bad_json",
            BadRequest::UnknownType(_) => "unknown_type",
            BadRequest::BadField { .. } => "bad_request",
            BadRequest::BadEvent { .. } => "bad_event",
        }
    }
}

/// Parses one text frame.
pub(super) fn parse(text: &str) -> Result<ClientMessage, BadRequest> {
    let Ok(members) = serde_json::from_str::<Members>(text) else {
        // Read again on this rare path, for the reason: the error of reading
        // an object quotes whatever else it found (a whole string, say); a
        // syntax error does not.
        return Err(match serde_json::from_str::<de::IgnoredAny>(text) {
            Ok(_) => BadRequest::NotObject,
            Err(e) => BadRequest::Json(e.to_string()),
        });
    };
    let fields = Fields(&members.0);
    match fields.string("type")? {
        None | Some("register") => Ok(ClientMessage::Register(Register {
            token: fields.string("token")?.map(str::to_owned),
            events: fields.events()?,
            since: fields.since()?,
        })),
        Some("subscribe") => Ok(ClientMessage::Subscribe { events: fields.events()?, since: fields.since()? }),
        Some("unsubscribe") => Ok(ClientMessage::Unsubscribe(fields.events()?)),
        Some("refresh") => match fields.string("token")? {
            Some(token) => Ok(ClientMessage::Refresh(token.to_owned())),
            None => Err(BadRequest::BadField { field: "token", expected: "a string" }),
        },
        Some("ping") => Ok(ClientMessage::Ping),
        Some(other) => Err(BadRequest::UnknownType(other.chars().take(64).collect())),
    }
}

/// A JSON object's members in the message's order; keys are borrowed from
/// the text unless they hold escapes. (A map would cost a node and a key
/// allocation per member, for the two or three members a message has.)
struct Members<'a>(Vec<(Cow<'a, str>, Value)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(4).min(16));
                while let Some(Key(key)) = map.next_key()? {
                    members.push((key, map.next_value()?));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Object)
    }
}

/// A member's key, borrowed when it can be (serde's `borrow` on a `Cow`).
#[derive(Deserialize)]
#[serde(transparent)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// A JSON object whose keys are looked up case-insensitively.
struct Fields<'a>(&'a [(Cow<'a, str>, Value)]);

impl<'a> Fields<'a> {
    /// The value of `key`, `None` when missing or `null`; the last one in
    /// the message when several keys match.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.iter().filter(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v).rfind(|v| !v.is_null())
    }

    fn string(&self, key: &'static str) -> Result<Option<&'a str>, BadRequest> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(BadRequest::BadField { field: key, expected: "a string" }),
        }
    }

    /// `since`, with the `epoch` it belongs to when given.
    fn since(&self) -> Result<Option<Since>, BadRequest> {
        let epoch = self.string("epoch")?.map(str::to_owned);
        match self.get("since") {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(seq) => Ok(Some(Since { seq, epoch })),
                None => Err(BadRequest::BadField { field: "since", expected: "a non-negative integer" }),
            },
        }
    }

    /// `event` and `events` merged, validated, without duplicates.
    fn events(&self) -> Result<Vec<EventName>, BadRequest> {
        let mut names: Vec<&str> = Vec::new();
        if let Some(one) = self.string("event")? {
            names.push(one);
        }
        match self.get("events") {
            None => {}
            Some(Value::Array(list)) => {
                for item in list {
                    let Value::String(name) = item else {
                        return Err(BadRequest::BadField { field: "events", expected: "an array of strings" });
                    };
                    names.push(name);
                }
            }
            Some(_) => return Err(BadRequest::BadField { field: "events", expected: "an array of strings" }),
        }
        let mut events: Vec<EventName> = Vec::with_capacity(names.len());
        for name in names {
            let event = event_name(name)
                .map_err(|error| BadRequest::BadEvent { name: name.chars().take(140).collect(), error })?;
            if !events.contains(&event) {
                events.push(event);
            }
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(events: &[EventName]) -> Vec<&str> {
        events.iter().map(|e| &**e).collect()
    }

    #[test]
    fn wserver_register_keys_are_case_insensitive() {
        let ClientMessage::Register(r) = parse(r#"{"Token":"t1","EVENT":"a"}"#).expect("parses") else {
            panic!("not a register")
        };
        assert_eq!(r.token.as_deref(), Some("t1"));
        assert_eq!(names(&r.events), ["a"]);
        assert_eq!(r.since, None);
    }

    #[test]
    fn register_merges_event_and_events_and_reads_since() {
        let m = parse(r#"{"type":"register","event":"a","events":["b","a"],"since":41,"token":null}"#);
        let Ok(ClientMessage::Register(r)) = m else { panic!("{m:?}") };
        assert_eq!(names(&r.events), ["a", "b"]);
        assert_eq!(r.since, Some(Since::seq(41)));
        assert_eq!(r.token, None);
    }

    #[test]
    fn of_two_matching_keys_the_later_non_null_one_counts_as_in_go() {
        let token = |s: &str| match parse(s) {
            Ok(ClientMessage::Register(r)) => r.token,
            other => panic!("{other:?}"),
        };
        assert_eq!(token(r#"{"token":"b","Token":"a"}"#).as_deref(), Some("a"));
        assert_eq!(token(r#"{"Token":"a","token":"b"}"#).as_deref(), Some("b"));
        assert_eq!(token(r#"{"token":"a","token":null}"#).as_deref(), Some("a"));
        assert_eq!(token(r#"{"to\u006ben":"escaped"}"#).as_deref(), Some("escaped"));
    }

    #[test]
    fn keys_without_escapes_are_borrowed_from_the_text() {
        let members: Members = serde_json::from_str(r#"{"token":"x","ev\u0065nt":"e"}"#).expect("an object");
        assert!(matches!(members.0[0].0, Cow::Borrowed("token")));
        assert!(matches!(&members.0[1].0, Cow::Owned(key) if key == "event"));
    }

    #[test]
    fn envelope_messages() {
        assert_eq!(parse(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
        assert_eq!(parse(r#"{"type":"refresh","token":"x"}"#), Ok(ClientMessage::Refresh("x".into())));
        let Ok(ClientMessage::Unsubscribe(e)) = parse(r#"{"TYPE":"unsubscribe","Events":["x"]}"#) else { panic!() };
        assert_eq!(names(&e), ["x"]);
        let Ok(ClientMessage::Subscribe { events, since: None }) = parse(r#"{"type":"subscribe","events":["y"]}"#)
        else {
            panic!()
        };
        assert_eq!(names(&events), ["y"]);
    }

    #[test]
    fn bad_requests_have_codes() {
        let code = |s: &str| parse(s).map(|_| ()).map_err(|e| e.code());
        assert_eq!(code("{nope"), Err("bad_json"));
        assert_eq!(code("[1]"), Err("bad_json"));
        assert_eq!(code(r#"{"type":"dance"}"#), Err("unknown_type"));
        assert_eq!(code(r#"{"event":"a b"}"#), Err("bad_event"));
        assert_eq!(code(r#"{"events":"a"}"#), Err("bad_request"));
        assert_eq!(code(r#"{"token":5}"#), Err("bad_request"));
        assert_eq!(code(r#"{"since":-1}"#), Err("bad_request"));
        assert_eq!(code(r#"{"type":"refresh"}"#), Err("bad_request"));
        // Not an object, and not JSON after it: the error does not quote the string.
        let long = format!(r#""{}"x"#, "t".repeat(5000));
        let Err(BadRequest::Json(message)) = parse(&long) else { panic!("{:?}", parse(&long)) };
        assert!(message.len() < 100, "{message}");
    }
}
