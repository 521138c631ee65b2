//! What travels through NATS: the subjects and the bytes of a push.
//!
//! Subjects (every one starts with `--broker-prefix`):
//! ```text
//! {prefix}.user.{token}   a user's pushes; {token} is the user id in
//!                         base64url without padding (see user_token)
//! {prefix}.control        broadcasts and disconnects, to every node
//! {prefix}.sync           nobody subscribes: a request to it is a round trip
//!                         that proves the server has this node's subscriptions
//! ```
//!
//! A push, version 1 (integers big-endian):
//! ```text
//! u8 version = 1 | u8 origin length | origin (node id) | u8 flags
//! [u64 ttl_ms, when flags & 1] | [u16 key length | idempotency key, when flags & 2]
//! u8 kind (0 text, 1 binary) | u8 event length | event | payload (the rest)
//! ```
//! The user is not in the message: it is the subject's. A control message
//! is the Redis broker's encoding with the sender's node id in front
//! ([`encode_control_from`](crate::broker::redis::codec::encode_control_from)).
//!
//! Decoding checks every length, the event grammar and UTF-8 of text and
//! ids: bad bytes are an error, never a panic.

use std::time::Duration;

use bytes::Bytes;

pub use crate::broker::redis::codec::{DecodeError, EncodeError};
use crate::broker::redis::codec::{Reader, len_u8, len_u16, payload_parts};
use crate::core::{Push, validate_event};

const VERSION: u8 = 1;
const HAS_TTL: u8 = 1;
const HAS_KEY: u8 = 2;

/// The subjects of one cluster (one `--broker-prefix`).
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// The subjects under `prefix` (already checked by the configuration:
    /// letters, digits and `-_.:`).
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    /// The subject of `user`'s pushes.
    pub fn user(&self, user: &str) -> String {
        format!("{}.user.{}", self.prefix, user_token(user))
    }

    /// The subject of broadcasts and disconnects.
    pub fn control(&self) -> String {
        format!("{}.control", self.prefix)
    }

    /// A subject nobody subscribes to, for a round trip to the server.
    pub fn sync(&self) -> String {
        format!("{}.sync", self.prefix)
    }
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A user id as one NATS subject token: base64url without padding, so `.`,
/// `*`, `>`, whitespace or anything else in an id never changes the
/// subject's shape, and two ids never share a token. 4 characters per 3
/// bytes.
pub fn user_token(user: &str) -> String {
    let bytes = user.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        // A chunk of k bytes gives k + 1 characters.
        for i in 0..=chunk.len() {
            out.push(char::from(BASE64URL[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

/// A push as another node sends it: the push (its user is the subject's,
/// left empty here) and the node that took it.
#[derive(Debug, Clone)]
pub struct Carried {
    /// The node that took the push from its producer.
    pub origin: String,
    /// The push, with an empty `user_id`.
    pub push: Push,
}

/// Encodes `push` (all but its user) as sent by node `origin`. Copies the
/// payload once.
pub fn encode_push(origin: &str, push: &Push) -> Result<Bytes, EncodeError> {
    let (kind, payload) = payload_parts(&push.payload);
    let origin_len = len_u8("node_id", origin.as_bytes())?;
    let event_len = len_u8("event", push.event.as_bytes())?;
    let key = push.idempotency_key.as_deref();
    let mut out = Vec::with_capacity(16 + origin.len() + push.event.len() + payload.len() + key.map_or(0, str::len));
    out.push(VERSION);
    out.push(origin_len);
    out.extend_from_slice(origin.as_bytes());
    out.push(if push.ttl.is_some() { HAS_TTL } else { 0 } | if key.is_some() { HAS_KEY } else { 0 });
    if let Some(ttl) = push.ttl {
        out.extend_from_slice(&u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).to_be_bytes());
    }
    if let Some(key) = key {
        let len = len_u16("idempotency_key", key.as_bytes())?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(key.as_bytes());
    }
    out.push(kind);
    out.push(event_len);
    out.extend_from_slice(push.event.as_bytes());
    out.extend_from_slice(payload);
    Ok(Bytes::from(out))
}

/// Decodes a push sent by another node. Copies the payload once.
pub fn decode_push(bytes: &[u8]) -> Result<Carried, DecodeError> {
    let mut r = Reader(bytes);
    match r.u8()? {
        VERSION => {}
        v => return Err(DecodeError::Version(v)),
    }
    let origin_len = r.u8()?;
    let origin = r.str(usize::from(origin_len), "node_id")?.to_owned();
    let flags = r.u8()?;
    if flags & !(HAS_TTL | HAS_KEY) != 0 {
        return Err(DecodeError::Flags(flags));
    }
    let ttl = if flags & HAS_TTL != 0 { Some(Duration::from_millis(r.u64()?)) } else { None };
    let idempotency_key = if flags & HAS_KEY != 0 {
        let len = r.u16()?;
        Some(r.str(usize::from(len), "idempotency_key")?.to_owned())
    } else {
        None
    };
    let kind = r.u8()?;
    let event_len = r.u8()?;
    let event = r.str(usize::from(event_len), "event")?;
    validate_event(event).map_err(DecodeError::Event)?;
    let event = event.to_owned();
    let payload = r.payload(kind)?;
    let push = Push { user_id: String::new(), event, payload, ttl, idempotency_key };
    Ok(Carried { origin, push })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Payload;

    /// The inverse of `user_token`, for the tests only.
    fn untoken(token: &str) -> Vec<u8> {
        let value = |c: u8| BASE64URL.iter().position(|&a| a == c).expect("base64url") as u32;
        let mut out = Vec::new();
        for chunk in token.as_bytes().chunks(4) {
            let mut n = 0;
            for (i, &c) in chunk.iter().enumerate() {
                n |= value(c) << (18 - 6 * i);
            }
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&bytes[..chunk.len() - 1]);
        }
        out
    }

    #[test]
    fn user_tokens_are_single_subject_tokens_and_round_trip() {
        let users = ["u", "ab", "abc", "abcd", "a.b", "*", ">", "a b\t\n", "ü👍", "user.*.>", &"x".repeat(256)];
        for user in users {
            let token = user_token(user);
            assert!(!token.is_empty());
            assert!(token.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "{token}");
            assert_eq!(untoken(&token), user.as_bytes(), "{user:?}");
        }
        // Known values (RFC 4648, base64url alphabet, no padding).
        assert_eq!(user_token("f"), "Zg");
        assert_eq!(user_token("fo"), "Zm8");
        assert_eq!(user_token("foo"), "Zm9v");
        assert_eq!(user_token("\u{fb}\u{ff}"), "w7vDvw");
        let subjects = Subjects::new("p-1");
        assert_eq!(subjects.user("a.b"), "p-1.user.YS5i");
        assert_eq!(subjects.control(), "p-1.control");
    }

    fn push(payload: Payload, ttl: Option<Duration>, key: Option<&str>) -> Push {
        Push { user_id: String::new(), event: "chat.v1".into(), payload, ttl, idempotency_key: key.map(str::to_owned) }
    }

    fn same(a: &Push, b: &Push) -> bool {
        (&a.user_id, &a.event, &a.payload, a.ttl, &a.idempotency_key)
            == (&b.user_id, &b.event, &b.payload, b.ttl, &b.idempotency_key)
    }

    #[test]
    fn pushes_round_trip() {
        for p in [
            push(Payload::text("héllo"), None, None),
            push(Payload::Binary(Bytes::from_static(&[0, 255, 7])), Some(Duration::from_millis(1500)), None),
            push(Payload::text(""), Some(Duration::ZERO), Some("key-1")),
            push(Payload::Binary(Bytes::new()), None, Some("")),
        ] {
            let bytes = encode_push("node-a", &p).unwrap();
            assert_eq!(bytes[0], VERSION);
            let carried = decode_push(&bytes).unwrap();
            assert_eq!(carried.origin, "node-a");
            assert!(same(&carried.push, &p), "{p:?} came back as {:?}", carried.push);
        }
    }

    #[test]
    fn every_truncation_before_the_payload_is_an_error() {
        let bytes = encode_push("n", &push(Payload::text("x"), Some(Duration::from_secs(1)), Some("k"))).unwrap();
        // The payload is the open-ended rest: cutting into the head is an error.
        for cut in 0..bytes.len() - 1 {
            assert!(decode_push(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        let good = encode_push("n", &push(Payload::text("x"), None, None)).unwrap().to_vec();
        // version | 1 | "n" | flags | kind | 7 | "chat.v1" | "x"
        let (flags_at, kind_at) = (3, 4);
        let mut v = good.clone();
        v[0] = 9;
        assert_eq!(decode_push(&v).unwrap_err(), DecodeError::Version(9));
        let mut v = good.clone();
        v[flags_at] = 0x80;
        assert_eq!(decode_push(&v).unwrap_err(), DecodeError::Flags(0x80));
        let mut v = good.clone();
        v[kind_at] = 7;
        assert_eq!(decode_push(&v).unwrap_err(), DecodeError::Kind(7));
        let mut v = good.clone();
        v[kind_at + 2] = b' ';
        assert!(matches!(decode_push(&v), Err(DecodeError::Event(_))));
        let mut v = good.clone();
        *v.last_mut().unwrap() = 0xff;
        assert_eq!(decode_push(&v).unwrap_err(), DecodeError::Utf8("text payload"));
        let mut v = good;
        v[2] = 0xff;
        assert_eq!(decode_push(&v).unwrap_err(), DecodeError::Utf8("node_id"));
        assert!(decode_push(&[]).is_err());
        // Every short prefix of random-looking bytes decodes to an error or a push, never a panic.
        let noise: Vec<u8> = (0..64u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for cut in 0..noise.len() {
            let _ = decode_push(&noise[..cut]);
        }
    }

    #[test]
    fn too_long_fields_are_refused() {
        let p = push(Payload::text("x"), None, None);
        assert!(matches!(encode_push(&"n".repeat(256), &p), Err(EncodeError::TooLong { field: "node_id", .. })));
    }
}
