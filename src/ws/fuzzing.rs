//! The pure parts of the public listener, callable without a socket, for the
//! fuzz targets in `fuzz/` (re-exported as `pushgate::fuzzing`). Not an API:
//! the types here only mirror the private ones so a target can inspect them.

use bytes::Bytes;
use hyper::Request;
use tokio_tungstenite::tungstenite::Message;

use super::{Mode, envelope, handshake, head, protocol};
use crate::core::Delivery;

/// A parsed client message (docs/protocol.md, "Client messages"), with event
/// names as plain strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// A register (no `type`, or `"type":"register"`).
    Register {
        /// `token`.
        token: Option<String>,
        /// `event` and `events`, merged, without duplicates.
        events: Vec<String>,
        /// `since`.
        since: Option<u64>,
        /// `epoch`, kept only with `since`.
        epoch: Option<String>,
    },
    /// `{"type":"subscribe"}`.
    Subscribe {
        /// `events`.
        events: Vec<String>,
        /// `since`.
        since: Option<u64>,
        /// `epoch`, kept only with `since`.
        epoch: Option<String>,
    },
    /// `{"type":"unsubscribe"}`.
    Unsubscribe(Vec<String>),
    /// `{"type":"refresh"}`.
    Refresh(String),
    /// `{"type":"ping"}`.
    Ping,
}

/// A refused client message: the `code` and `message` of the envelope error
/// message that would report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// `bad_json`, `bad_request`, `bad_event` or `unknown_type`.
    pub code: &'static str,
    /// The error message's text.
    pub message: String,
}

/// Parses one client text frame as a session does.
pub fn client_message(text: &str) -> Result<ClientMessage, ClientError> {
    let names = |events: Vec<crate::core::EventName>| events.iter().map(|e| e.to_string()).collect();
    match protocol::parse(text) {
        Ok(protocol::ClientMessage::Register(r)) => {
            let (since, epoch) = split(r.since);
            Ok(ClientMessage::Register { token: r.token, events: names(r.events), since, epoch })
        }
        Ok(protocol::ClientMessage::Subscribe { events, since }) => {
            let (since, epoch) = split(since);
            Ok(ClientMessage::Subscribe { events: names(events), since, epoch })
        }
        Ok(protocol::ClientMessage::Unsubscribe(events)) => Ok(ClientMessage::Unsubscribe(names(events))),
        Ok(protocol::ClientMessage::Refresh(token)) => Ok(ClientMessage::Refresh(token)),
        Ok(protocol::ClientMessage::Ping) => Ok(ClientMessage::Ping),
        Err(bad) => Err(ClientError { code: bad.code(), message: bad.to_string() }),
    }
}

/// A resume position as plain values.
fn split(since: Option<crate::core::Since>) -> (Option<u64>, Option<String>) {
    match since {
        Some(since) => (Some(since.seq), since.epoch),
        None => (None, None),
    }
}

/// What the pure upgrade checks accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The `Sec-WebSocket-Key` the answer's `Sec-WebSocket-Accept` derives from.
    pub key: String,
    /// The token given at the handshake, if any.
    pub token: Option<String>,
    /// True for the envelope mode (`pushgate.v1` offered).
    pub envelope: bool,
}

/// What the pure upgrade checks refused, as the HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The HTTP status.
    pub status: u16,
    /// The text body.
    pub body: &'static str,
    /// The one extra header, if any (`Allow`, `Upgrade`, `Sec-WebSocket-Version`).
    pub header: Option<(String, &'static str)>,
}

/// Runs the upgrade checks that need nothing but the request, in the order
/// the handshake runs them: method, version, upgrade headers and key,
/// origin, then (after the shutdown and memory checks, left out here) the
/// token's syntax and the sub-protocol.
pub fn upgrade_checks<B>(req: &Request<B>, allowed_origins: &[String]) -> Result<Upgrade, Refused> {
    let refused = |r: handshake::Refusal| Refused {
        status: r.status.as_u16(),
        body: r.body,
        header: r.header.map(|(name, value)| (name.to_string(), value)),
    };
    let key = handshake::precheck(req, allowed_origins).map_err(refused)?;
    let token = handshake::token(req).map_err(refused)?;
    Ok(Upgrade { key, token, envelope: handshake::offers_envelope(req) })
}

/// A frame as the connection writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Bytes),
}

/// The frame that carries `delivery` in the envelope mode (`envelope`) or
/// the wserver-compatible mode.
pub fn delivery_frame(envelope: bool, delivery: &Delivery) -> Frame {
    let mode = if envelope { Mode::Envelope } else { Mode::Compat };
    match envelope::delivery(mode, delivery) {
        Message::Text(text) => Frame::Text(text.as_str().to_owned()),
        Message::Binary(bytes) => Frame::Binary(bytes),
        other => unreachable!("a delivery is a text or binary frame, not {other:?}"),
    }
}

/// A first request the listener answers itself (the upgrade path), as
/// `head` read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedHead {
    /// The request target, query included.
    pub target: String,
    /// The headers in order, names and values as sent (values without the
    /// blank space around them).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The bytes after the head, handed to the WebSocket.
    pub rest: Vec<u8>,
}

/// What the public listener makes of `bytes` as the first thing a
/// connection sends, once they hold a blank line: `Some` when it answers
/// the request itself (a `GET` of `/ws`), `None` when they go to hyper.
pub fn first_request(bytes: &[u8]) -> Option<ClaimedHead> {
    let head::First::Claimed(request) = head::sort(Bytes::copy_from_slice(bytes), |path| path == "/ws") else {
        return None;
    };
    let headers =
        request.headers().map(|(name, value)| (String::from_utf8_lossy(name).into_owned(), value.to_vec())).collect();
    Some(ClaimedHead { target: request.target().to_owned(), headers, rest: request.rest().to_vec() })
}
