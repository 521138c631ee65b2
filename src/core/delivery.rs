//! What a push carries to connections: one [`Delivery`] per push, shared by
//! every connection it is queued to.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::event::EventName;

/// A pushed payload. Cloning shares the buffer (reference count), never copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Text, delivered as a WebSocket text frame. Always valid UTF-8: the only
    /// constructor is [`Payload::text`].
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
        // SAFETY: every constructor takes a `String` or a `&str`, so the bytes
        // are valid UTF-8, and `Bytes` is immutable.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The UTF-8 bytes, shared.
    pub fn bytes(&self) -> &Bytes {
        &self.0
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
        queue_cost(&self.payload, &self.event)
    }
}

/// What a delivery of `payload` on `event` counts against a send queue or
/// the history budget: the payload plus a fixed allowance for the envelope.
pub(crate) fn queue_cost(payload: &Payload, event: &EventName) -> usize {
    payload.len() + 64 + event.len()
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
