//! What a push carries to connections: one [`Delivery`] per push, shared by
//! every connection it is queued to.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::event::EventName;

/// A pushed payload. Cloning shares the buffer (reference count), never copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Text, delivered as a WebSocket text frame. Always valid UTF-8: it is
    /// built from a `String` or a `&str` (see [`Text`]).
    Text(Text),
    /// Bytes, delivered as a WebSocket binary frame.
    Binary(Bytes),
}

/// UTF-8 text held in [`Bytes`]. The invariant (valid UTF-8) is kept by its
/// constructors, so adapters may hand it to a WebSocket library unchecked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(Bytes);

impl Text {
    /// The text as a string slice.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor takes a `String` or a `&str`, or bytes
        // its caller vouches for (`from_utf8_unchecked`), so the bytes are
        // valid UTF-8, and `Bytes` is immutable.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The UTF-8 bytes, shared.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// Text from bytes taken out of a `Text` earlier ([`Payload::into_parts`]),
    /// which history keeps apart from the payload's kind to save the enum's tag.
    ///
    /// # Safety
    /// `bytes` must be valid UTF-8.
    pub(crate) unsafe fn from_utf8_unchecked(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Text(bytes)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text(Bytes::from(s))
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Self {
        Text(Bytes::from_static(s.as_bytes()))
    }
}

impl Payload {
    /// A text payload.
    pub fn text(s: impl Into<Text>) -> Self {
        Payload::Text(s.into())
    }

    /// Payload size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Payload::Text(t) => t.0.len(),
            Payload::Binary(b) => b.len(),
        }
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same payload in an allocation of exactly its size that nothing
    /// else holds, for keeping in history: a buffer with spare capacity (a
    /// `String` grown while parsing) or a slice of a larger one (a gRPC
    /// frame's decode buffer, which a kept slice would pin whole) is copied
    /// once; an exact, unshared one (prost's decoded `String`) is kept as it
    /// is, with no copy and no allocation.
    pub(crate) fn exact(self) -> Self {
        match self {
            Payload::Text(Text(bytes)) => Payload::Text(Text(exact(bytes))),
            Payload::Binary(bytes) => Payload::Binary(exact(bytes)),
        }
    }

    /// The buffer, and whether it is text.
    pub(crate) fn into_parts(self) -> (Bytes, bool) {
        match self {
            Payload::Text(Text(bytes)) => (bytes, true),
            Payload::Binary(bytes) => (bytes, false),
        }
    }
}

/// `bytes` alone in an allocation of exactly its length (see [`Payload::exact`]).
fn exact(bytes: Bytes) -> Bytes {
    match bytes.try_into_mut() {
        // Unshared and without spare capacity: back to `Bytes` without a copy.
        Ok(alone) if alone.capacity() == alone.len() => alone.freeze(),
        Ok(spare) => Bytes::copy_from_slice(&spare),
        Err(shared) => Bytes::copy_from_slice(&shared),
    }
}

/// One accepted push as connections see it. Built once per push and shared
/// (`Arc<Delivery>`) by every connection queue and by the user's history.
#[derive(Debug)]
pub struct Delivery {
    /// The event it was pushed on.
    pub event: EventName,
    /// The user's sequence number; `None` for a broadcast, which takes none.
    pub seq: Option<u64>,
    /// Acceptance time, Unix milliseconds.
    pub ts_ms: u64,
    /// Acceptance time on the monotonic clock, for the push→write latency.
    pub accepted: Instant,
    /// The payload.
    pub payload: Payload,
    /// After this instant the delivery is not replayed from history.
    pub replay_until: Option<Instant>,
    /// The envelope-mode frame, encoded at most once by whichever session
    /// writes it first (the core does not know the wire format). A
    /// [`Payload`], so a text frame keeps `Text`'s UTF-8 guarantee and no
    /// connection has to check it again.
    encoded: OnceLock<Payload>,
}

impl Delivery {
    /// A delivery accepted now.
    pub fn new(event: EventName, seq: Option<u64>, payload: Payload, replay_until: Option<Instant>) -> Self {
        Self::from_parts(Instant::now(), event, seq, unix_ms(), payload, replay_until)
    }

    /// A delivery accepted at `accepted` (a clock reading the caller already
    /// has) and at `ts_ms` on the wall clock.
    pub(crate) fn from_parts(
        accepted: Instant,
        event: EventName,
        seq: Option<u64>,
        ts_ms: u64,
        payload: Payload,
        replay_until: Option<Instant>,
    ) -> Self {
        Self { event, seq, ts_ms, accepted, payload, replay_until, encoded: OnceLock::new() }
    }

    /// The frame encoded by `encode`, computed on first use and then shared by
    /// every connection that writes this delivery.
    pub fn encoded(&self, encode: impl FnOnce(&Delivery) -> Payload) -> &Payload {
        self.encoded.get_or_init(|| encode(self))
    }

    /// Bytes this delivery counts against a connection's send queue: the
    /// payload plus a fixed allowance for the envelope.
    pub fn queue_cost(&self) -> usize {
        queue_cost(self.payload.len(), &self.event)
    }
}

/// What a delivery of a `payload_len`-byte payload on `event` counts against
/// a send queue or the history budget: the payload plus a fixed allowance
/// for the envelope.
pub(crate) fn queue_cost(payload_len: usize, event: &str) -> usize {
    payload_len + 64 + event.len()
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the payload's bytes are.
    fn at(payload: &Payload) -> *const u8 {
        payload.clone().into_parts().0.as_ptr()
    }

    #[test]
    fn an_exact_unshared_buffer_is_kept_without_a_copy() {
        let payload = Payload::text("x".repeat(100));
        let before = at(&payload);
        let after = payload.exact();
        assert_eq!(at(&after), before);
        assert_eq!(after, Payload::text("x".repeat(100)));
    }

    #[test]
    fn spare_capacity_or_a_shared_buffer_is_copied_exactly() {
        let mut grown = String::with_capacity(4096);
        grown.push_str("héllo");
        let text = Payload::text(grown);
        let before = at(&text);
        let after = text.exact();
        assert_ne!(at(&after), before);
        assert_eq!(after, Payload::text("héllo"), "still the same text");

        // A slice of a gRPC frame's decode buffer, which the frame still holds.
        let frame = Bytes::from(vec![7u8; 8192]);
        let data = Payload::Binary(frame.slice(10..110));
        let before = at(&data);
        let after = data.exact();
        assert_ne!(at(&after), before);
        assert_eq!(after, Payload::Binary(Bytes::from(vec![7u8; 100])));
    }
}
