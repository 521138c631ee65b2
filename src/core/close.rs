//! The close-code table (docs/protocol.md, "Close codes"): one enum, one
//! exhaustive mapping.

use std::borrow::Cow;

/// Why the gateway (or the client) ends a WebSocket connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: normal close.
    Normal,
    /// 1001: server going away (shutdown, drain). Reconnect after the advised delay.
    GoingAway,
    /// 1003: the client sent a binary frame.
    Unsupported,
    /// 1007: a text frame that is not UTF-8 (RFC 6455 §7.4.1).
    InvalidPayload,
    /// 1008: policy (origin).
    Policy,
    /// 1009: a client frame was too large.
    TooBig,
    /// 1011: internal error; reconnect with backoff.
    Internal,
    /// 4000: slow consumer, its send queue overflowed.
    SlowConsumer,
    /// 4001: no register message before the register timeout.
    RegisterTimeout,
    /// 4002: the token expired.
    TokenExpired,
    /// 4003: a connection limit was reached (global, per user or per IP).
    ConnectionLimit,
    /// 4004: the user's stream started over (the broker lost its data):
    /// reconnect and resume; the resume says it is incomplete.
    StreamReset,
    /// 4500: unauthorized.
    Unauthorized,
    /// 4501: event not allowed for this user.
    EventNotAllowed,
    /// 4502: disconnected by the server API.
    Disconnected,
    /// 4503: protocol violation.
    ProtocolViolation,
}

impl CloseCode {
    /// The numeric WebSocket close code.
    pub const fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::Unsupported => 1003,
            CloseCode::InvalidPayload => 1007,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::Internal => 1011,
            CloseCode::SlowConsumer => 4000,
            CloseCode::RegisterTimeout => 4001,
            CloseCode::TokenExpired => 4002,
            CloseCode::ConnectionLimit => 4003,
            CloseCode::StreamReset => 4004,
            CloseCode::Unauthorized => 4500,
            CloseCode::EventNotAllowed => 4501,
            CloseCode::Disconnected => 4502,
            CloseCode::ProtocolViolation => 4503,
        }
    }

    /// A short label, used in close reasons, logs and metrics.
    pub const fn label(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "going away",
            CloseCode::Unsupported => "binary frames are not accepted",
            CloseCode::InvalidPayload => "text frame is not UTF-8",
            CloseCode::Policy => "policy violation",
            CloseCode::TooBig => "frame too large",
            CloseCode::Internal => "internal error",
            CloseCode::SlowConsumer => "slow consumer",
            CloseCode::RegisterTimeout => "register timeout",
            CloseCode::TokenExpired => "token expired",
            CloseCode::ConnectionLimit => "connection limit reached",
            CloseCode::StreamReset => "stream reset: resume and reload",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::EventNotAllowed => "event not allowed",
            CloseCode::Disconnected => "disconnected by the server",
            CloseCode::ProtocolViolation => "protocol violation",
        }
    }
}

/// A close code with the reason string sent in the close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// The code.
    pub code: CloseCode,
    /// The reason text (at most 123 bytes reach the client).
    pub reason: Cow<'static, str>,
}

impl CloseReason {
    /// The code with its standard label as reason.
    pub fn new(code: CloseCode) -> Self {
        Self { code, reason: Cow::Borrowed(code.label()) }
    }

    /// The code with a reason that advises the client when to reconnect
    /// (`reconnect_after_ms=N`; docs/protocol.md, "Close codes").
    pub fn with_reconnect_after(code: CloseCode, ms: u64) -> Self {
        Self { code, reason: Cow::Owned(format!("{}; reconnect_after_ms={ms}", code.label())) }
    }
}

impl From<CloseCode> for CloseReason {
    fn from(code: CloseCode) -> Self {
        Self::new(code)
    }
}
