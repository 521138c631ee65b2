//! The one place a [`CloseReason`] of the core becomes a WebSocket close frame.

use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WireCode;

use crate::core::{CloseCode, CloseReason};

/// A close frame's reason may hold at most 123 bytes (a control frame carries
/// 125, two of which are the code).
const MAX_REASON_BYTES: usize = 123;

/// The close frame for `reason`: its code (docs/protocol.md, "Close codes") and its reason string,
/// cut at a character boundary to fit a control frame.
pub(super) fn frame(reason: &CloseReason) -> CloseFrame {
    let text = truncate(&reason.reason, MAX_REASON_BYTES);
    CloseFrame { code: wire_code(reason.code), reason: text.into() }
}

/// The tungstenite code for `code`. Exhaustive: a new core close code does not
/// compile until it is mapped here.
fn wire_code(code: CloseCode) -> WireCode {
    match code {
        CloseCode::Normal => WireCode::Normal,
        CloseCode::GoingAway => WireCode::Away,
        CloseCode::Unsupported => WireCode::Unsupported,
        CloseCode::InvalidPayload => WireCode::Invalid,
        CloseCode::Policy => WireCode::Policy,
        CloseCode::TooBig => WireCode::Size,
        CloseCode::Internal => WireCode::Error,
        CloseCode::SlowConsumer
        | CloseCode::RegisterTimeout
        | CloseCode::TokenExpired
        | CloseCode::ConnectionLimit
        | CloseCode::StreamReset
        | CloseCode::Unauthorized
        | CloseCode::EventNotAllowed
        | CloseCode::Disconnected
        | CloseCode::ProtocolViolation => WireCode::Library(code.code()),
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_table() {
        let all = [
            CloseCode::Normal,
            CloseCode::GoingAway,
            CloseCode::Unsupported,
            CloseCode::InvalidPayload,
            CloseCode::Policy,
            CloseCode::TooBig,
            CloseCode::Internal,
            CloseCode::SlowConsumer,
            CloseCode::RegisterTimeout,
            CloseCode::TokenExpired,
            CloseCode::ConnectionLimit,
            CloseCode::StreamReset,
            CloseCode::Unauthorized,
            CloseCode::EventNotAllowed,
            CloseCode::Disconnected,
            CloseCode::ProtocolViolation,
        ];
        for code in all {
            assert_eq!(u16::from(wire_code(code)), code.code(), "{code:?}");
        }
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        let long = "é".repeat(100);
        let f = frame(&CloseReason { code: CloseCode::Normal, reason: long.into() });
        assert!(f.reason.len() <= MAX_REASON_BYTES);
        assert_eq!(f.reason.len(), 122);
    }
}
