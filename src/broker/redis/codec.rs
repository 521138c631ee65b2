//! The binary encoding of what travels through Redis: a [`Stamped`] push (a
//! history entry and a pub/sub message are the same bytes) and a [`Control`]
//! message. Both start with a version byte; integers are big-endian.
//!
//! A push, version 1:
//! ```text
//! u8 version = 1 | u64 seq | u64 ts_ms | u64 expires_at_ms (0 = none)
//! u8 epoch length | epoch | u8 kind (0 text, 1 binary) | u8 event length | event | payload (the rest)
//! ```
//! The publish script writes the head (version to epoch, what only Redis
//! knows: seq, time, epoch) in front of the tail (kind to payload) the node
//! encoded, so the payload is copied into Redis once and never re-encoded.
//!
//! A control message, version 1:
//! ```text
//! u8 version = 1 | u8 tag
//! tag 1 broadcast:  u8 kind | u8 event length | event | u32 user count | (u16 length | user)* | payload (the rest)
//! tag 2 disconnect: u16 user length | user | u8 event length (0 = every event) | event
//! ```
//! Decoding checks every length, the event grammar and UTF-8 of text and
//! ids: bad bytes are an error, never a panic.

use std::sync::Arc;

use bytes::Bytes;

use crate::core::{EventName, Payload, PushError, event::EventError, event_name, validate_event};

const VERSION: u8 = 1;
const KIND_TEXT: u8 = 0;
const KIND_BINARY: u8 = 1;
const TAG_BROADCAST: u8 = 1;
const TAG_DISCONNECT: u8 = 2;

/// A push as the broker carries it: numbered and timed by Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    /// The event it was pushed on.
    pub event: EventName,
    /// The user's seq, given by the publish script.
    pub seq: u64,
    /// Acceptance time, Unix milliseconds on Redis's clock.
    pub ts_ms: u64,
    /// The payload.
    pub payload: Payload,
    /// Not replayed from history after this time (Unix ms, Redis's clock).
    pub expires_at_ms: Option<u64>,
    /// The epoch of the user's stream the seq belongs to.
    pub epoch: Arc<str>,
}

/// A message to every node, sent with [`super::RedisBroker::control`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Deliver `payload` on `event` to every connection subscribed to it
    /// (only those of `user_ids` when it is not empty). No seq, no history.
    Broadcast {
        /// The event.
        event: EventName,
        /// The payload.
        payload: Payload,
        /// The users it is limited to; empty means everyone.
        user_ids: Vec<String>,
    },
    /// Close the user's connections (only those subscribed to `event`).
    Disconnect {
        /// The user.
        user: String,
        /// Only connections subscribed to this event; `None` for all.
        event: Option<EventName>,
    },
}

impl Control {
    /// The core's control message in this encoding's terms (event names
    /// checked).
    pub fn from_core(control: &crate::core::Control) -> Result<Self, PushError> {
        use crate::core::Control as Core;
        Ok(match control {
            Core::Broadcast { event, payload, users } => Control::Broadcast {
                event: event_name(event).map_err(PushError::BadEvent)?,
                payload: payload.clone(),
                user_ids: users.clone(),
            },
            Core::Disconnect { user, event } => Control::Disconnect {
                user: user.clone(),
                event: event.as_deref().map(event_name).transpose().map_err(PushError::BadEvent)?,
            },
        })
    }

    /// The core's control message.
    pub fn into_core(self) -> crate::core::Control {
        use crate::core::Control as Core;
        match self {
            Control::Broadcast { event, payload, user_ids } => {
                Core::Broadcast { event: event.to_string(), payload, users: user_ids }
            }
            Control::Disconnect { user, event } => Core::Disconnect { user, event: event.map(|e| e.to_string()) },
        }
    }
}

/// Why bytes from the broker (Redis, or NATS's push encoding) are not a
/// message of their encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than a length or field says.
    #[error("message is truncated")]
    Truncated,
    /// A version this node does not know.
    #[error("unknown message version {0}")]
    Version(u8),
    /// A payload kind other than text or binary.
    #[error("unknown payload kind {0}")]
    Kind(u8),
    /// Flags this node does not know (NATS's push encoding).
    #[error("unknown flags {0:#x}")]
    Flags(u8),
    /// A control tag other than broadcast or disconnect.
    #[error("unknown control tag {0}")]
    Tag(u8),
    /// The event name breaks the grammar.
    #[error("event: {0}")]
    Event(EventError),
    /// Text, an epoch or a user id that is not UTF-8.
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
    /// Bytes after a message that has no open-ended tail.
    #[error("trailing bytes after the message")]
    Trailing,
}

/// Why a value cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A field is longer than its length prefix allows.
    #[error("{field} is {size} bytes, more than the {max} the encoding allows")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        size: usize,
        /// The most the encoding allows.
        max: usize,
    },
}

impl From<EncodeError> for PushError {
    fn from(error: EncodeError) -> Self {
        match error {
            EncodeError::TooLong { field, size, max } => PushError::TooLong { field, size, max },
        }
    }
}

pub(crate) fn len_u8(field: &'static str, bytes: &[u8]) -> Result<u8, EncodeError> {
    u8::try_from(bytes.len()).map_err(|_| EncodeError::TooLong { field, size: bytes.len(), max: 255 })
}

pub(crate) fn len_u16(field: &'static str, bytes: &[u8]) -> Result<u16, EncodeError> {
    u16::try_from(bytes.len()).map_err(|_| EncodeError::TooLong { field, size: bytes.len(), max: 65535 })
}

pub(crate) fn payload_parts(payload: &Payload) -> (u8, &[u8]) {
    match payload {
        Payload::Text(t) => (KIND_TEXT, t.bytes()),
        Payload::Binary(b) => (KIND_BINARY, b),
    }
}

/// The tail of a push (kind, event, payload): what the node hands the
/// publish script, which prepends [`head`].
pub(crate) fn tail(event: &str, payload: &Payload) -> Result<Vec<u8>, EncodeError> {
    let (kind, bytes) = payload_parts(payload);
    let mut out = Vec::with_capacity(2 + event.len() + bytes.len());
    out.push(kind);
    out.push(len_u8("event", event.as_bytes())?);
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(bytes);
    Ok(out)
}

/// The head of a push, as the publish script writes it.
fn head(seq: u64, ts_ms: u64, expires_at_ms: Option<u64>, epoch: &str) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(26 + epoch.len());
    out.push(VERSION);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&ts_ms.to_be_bytes());
    out.extend_from_slice(&expires_at_ms.unwrap_or(0).to_be_bytes());
    out.push(len_u8("epoch", epoch.as_bytes())?);
    out.extend_from_slice(epoch.as_bytes());
    Ok(out)
}

/// The whole encoding of a push, as the publish script would produce it.
pub fn encode_stamped(m: &Stamped) -> Result<Vec<u8>, EncodeError> {
    let mut out = head(m.seq, m.ts_ms, m.expires_at_ms, &m.epoch)?;
    out.extend_from_slice(&tail(&m.event, &m.payload)?);
    Ok(out)
}

/// Decodes a push (a history entry or a pub/sub message). Copies the
/// payload once.
pub fn decode_stamped(bytes: &[u8]) -> Result<Stamped, DecodeError> {
    let mut r = Reader(bytes);
    r.version()?;
    let seq = r.u64()?;
    let ts_ms = r.u64()?;
    let expires_at_ms = Some(r.u64()?).filter(|&t| t != 0);
    let epoch_len = r.u8()?;
    let epoch = Arc::from(r.str(usize::from(epoch_len), "epoch")?);
    let kind = r.u8()?;
    let event = r.event()?;
    let payload = r.payload(kind)?;
    Ok(Stamped { event, seq, ts_ms, payload, expires_at_ms, epoch })
}

/// Encodes a control message.
pub fn encode_control(c: &Control) -> Result<Vec<u8>, EncodeError> {
    let mut out = vec![VERSION];
    match c {
        Control::Broadcast { event, payload, user_ids } => {
            let (kind, bytes) = payload_parts(payload);
            out.extend_from_slice(&[TAG_BROADCAST, kind, len_u8("event", event.as_bytes())?]);
            out.extend_from_slice(event.as_bytes());
            let count = u32::try_from(user_ids.len()).map_err(|_| EncodeError::TooLong {
                field: "user_ids",
                size: user_ids.len(),
                max: u32::MAX as usize,
            })?;
            out.extend_from_slice(&count.to_be_bytes());
            for user in user_ids {
                out.extend_from_slice(&len_u16("user_id", user.as_bytes())?.to_be_bytes());
                out.extend_from_slice(user.as_bytes());
            }
            out.extend_from_slice(bytes);
        }
        Control::Disconnect { user, event } => {
            out.push(TAG_DISCONNECT);
            out.extend_from_slice(&len_u16("user_id", user.as_bytes())?.to_be_bytes());
            out.extend_from_slice(user.as_bytes());
            let event = event.as_deref().unwrap_or("");
            out.push(len_u8("event", event.as_bytes())?);
            out.extend_from_slice(event.as_bytes());
        }
    }
    Ok(out)
}

/// Encodes a control message sent by node `from`: its id (a `u8` length and
/// the bytes) before the message, so a node can tell its own.
pub fn encode_control_from(from: &str, c: &Control) -> Result<Vec<u8>, EncodeError> {
    let mut out = vec![len_u8("node_id", from.as_bytes())?];
    out.extend_from_slice(from.as_bytes());
    out.extend(encode_control(c)?);
    Ok(out)
}

/// Decodes a control message with the id of the node that sent it.
pub fn decode_control_from(bytes: &[u8]) -> Result<(String, Control), DecodeError> {
    let mut r = Reader(bytes);
    let len = r.u8()?;
    let from = r.str(usize::from(len), "node_id")?.to_owned();
    Ok((from, decode_control(r.0)?))
}

/// Decodes a control message.
pub fn decode_control(bytes: &[u8]) -> Result<Control, DecodeError> {
    let mut r = Reader(bytes);
    r.version()?;
    match r.u8()? {
        TAG_BROADCAST => {
            let kind = r.u8()?;
            let event = r.event()?;
            let count = r.u32()?;
            // Each user takes at least two bytes: a count beyond that is a lie,
            // and must not size an allocation.
            let mut user_ids = Vec::with_capacity((count as usize).min(r.0.len() / 2));
            for _ in 0..count {
                let len = r.u16()?;
                user_ids.push(r.str(usize::from(len), "user_id")?.to_owned());
            }
            let payload = r.payload(kind)?;
            Ok(Control::Broadcast { event, payload, user_ids })
        }
        TAG_DISCONNECT => {
            let len = r.u16()?;
            let user = r.str(usize::from(len), "user_id")?.to_owned();
            let event = match r.u8()? {
                0 => None,
                n => Some(r.event_of(usize::from(n))?),
            };
            if !r.0.is_empty() {
                return Err(DecodeError::Trailing);
            }
            Ok(Control::Disconnect { user, event })
        }
        tag => Err(DecodeError::Tag(tag)),
    }
}

/// A cursor over bytes being decoded (also used by NATS's push encoding).
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn version(&mut self) -> Result<(), DecodeError> {
        match self.u8()? {
            VERSION => Ok(()),
            v => Err(DecodeError::Version(v)),
        }
    }

    pub(crate) fn str(&mut self, n: usize, what: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::Utf8(what))
    }

    fn event(&mut self) -> Result<EventName, DecodeError> {
        let n = self.u8()?;
        self.event_of(usize::from(n))
    }

    fn event_of(&mut self, n: usize) -> Result<EventName, DecodeError> {
        let name = self.str(n, "event")?;
        validate_event(name).map_err(DecodeError::Event)?;
        Ok(Arc::from(name))
    }

    /// The rest of the bytes as a payload of `kind`.
    pub(crate) fn payload(&mut self, kind: u8) -> Result<Payload, DecodeError> {
        let rest = std::mem::take(&mut self.0);
        match kind {
            KIND_TEXT => {
                let text = String::from_utf8(rest.to_vec()).map_err(|_| DecodeError::Utf8("text payload"))?;
                Ok(Payload::text(text))
            }
            KIND_BINARY => Ok(Payload::Binary(Bytes::copy_from_slice(rest))),
            k => Err(DecodeError::Kind(k)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(payload: Payload, expires_at_ms: Option<u64>) -> Stamped {
        Stamped {
            event: Arc::from("chat.v1"),
            seq: u64::MAX - 3,
            ts_ms: 1_764_300_000_123,
            payload,
            expires_at_ms,
            epoch: Arc::from("8f3a00c1d2e3f405"),
        }
    }

    #[test]
    fn stamped_round_trips() {
        for m in [
            stamped(Payload::text("héllo"), None),
            stamped(Payload::Binary(Bytes::from_static(&[0, 255, 7])), Some(1_764_300_060_000)),
            stamped(Payload::text(""), None),
        ] {
            let bytes = encode_stamped(&m).unwrap();
            assert_eq!(bytes[0], VERSION);
            assert_eq!(decode_stamped(&bytes).unwrap(), m);
        }
    }

    #[test]
    fn control_round_trips() {
        for c in [
            Control::Broadcast {
                event: Arc::from("news"),
                payload: Payload::text("hi"),
                user_ids: vec!["u1".into(), "ü2".into()],
            },
            Control::Broadcast { event: Arc::from("n"), payload: Payload::Binary(Bytes::new()), user_ids: vec![] },
            Control::Disconnect { user: "u1".into(), event: None },
            Control::Disconnect { user: "u:2".into(), event: Some(Arc::from("chat")) },
        ] {
            assert_eq!(decode_control(&encode_control(&c).unwrap()).unwrap(), c);
        }
    }

    #[test]
    fn every_truncation_of_a_push_is_an_error() {
        let bytes = encode_stamped(&stamped(Payload::text("x"), None)).unwrap();
        // The payload is the open-ended rest: cutting into the head is an error.
        let payload_start = bytes.len() - 1;
        for cut in 0..payload_start {
            assert!(decode_stamped(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn every_truncation_of_a_control_is_an_error() {
        let c = Control::Disconnect { user: "u1".into(), event: Some(Arc::from("chat")) };
        let bytes = encode_control(&c).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode_control(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let b = Control::Broadcast { event: Arc::from("e"), payload: Payload::text(""), user_ids: vec!["ab".into()] };
        let bytes = encode_control(&b).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode_control(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn bad_bytes_are_errors() {
        let good = encode_stamped(&stamped(Payload::text("x"), None)).unwrap();
        let mut v = good.clone();
        v[0] = 9;
        assert_eq!(decode_stamped(&v), Err(DecodeError::Version(9)));
        let kind_at = 1 + 24 + 1 + 16;
        let mut v = good.clone();
        v[kind_at] = 7;
        assert_eq!(decode_stamped(&v), Err(DecodeError::Kind(7)));
        let mut v = good.clone();
        v[kind_at + 2] = b' ';
        assert!(matches!(decode_stamped(&v), Err(DecodeError::Event(_))));
        let mut v = good.clone();
        *v.last_mut().unwrap() = 0xff;
        assert_eq!(decode_stamped(&v), Err(DecodeError::Utf8("text payload")));
        assert_eq!(decode_control(&[1, 3]), Err(DecodeError::Tag(3)));
        // A count of users far beyond the bytes: an error, not an allocation.
        assert_eq!(decode_control(&[1, 1, 0, 1, b'e', 0xff, 0xff, 0xff, 0xff]), Err(DecodeError::Truncated));
        assert_eq!(decode_control(&[1, 2, 0, 1, b'u', 0, 9]), Err(DecodeError::Trailing));
        assert!(decode_stamped(&[]).is_err());
    }

    #[test]
    fn too_long_fields_are_refused() {
        let mut m = stamped(Payload::text("x"), None);
        m.epoch = Arc::from("e".repeat(256));
        assert!(matches!(encode_stamped(&m), Err(EncodeError::TooLong { field: "epoch", .. })));
        let c = Control::Disconnect { user: "u".repeat(70_000), event: None };
        assert!(matches!(encode_control(&c), Err(EncodeError::TooLong { field: "user_id", .. })));
    }
}
