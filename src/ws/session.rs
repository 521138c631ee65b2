//! A connection's life after the upgrade, in its one task: open the
//! WebSocket, register (the only phase with a timer), live, close.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Sink, SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::handshake::Accepted;
use super::protocol::BadRequest;
use super::{Mode, WsContext, close, envelope, live, register};
use crate::core::{CloseCode, CloseReason, ConnId};
use crate::net::tls::Socket;

/// The WebSocket over the upgraded stream, TCP or TLS (hyper's wrapper removed).
pub(super) type Ws = WebSocketStream<Socket>;

/// Bytes tungstenite allocates up front for reading. Client frames are small
/// (a register message is ~60 bytes); the 128 KiB default would alone break
/// the goal of a few KiB per idle connection (BENCHMARKS.md, P6).
const READ_BUFFER_BYTES: usize = 1024;

/// Frames are gathered up to this many bytes before a write to the socket;
/// each drained batch ends with one flush anyway. Bounds what the write
/// buffer keeps allocated after a burst.
const WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// The longest a closing connection waits to flush its close frame and read
/// the client's answering close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(3);

/// Bad requests a connection may make; the last one closes it with 4503.
const MAX_STRIKES: u8 = 3;

/// How a session ends.
#[derive(Debug)]
pub(super) enum End {
    /// The server closes with this reason.
    Close(CloseReason),
    /// The client sent a close frame (with this code); tungstenite has
    /// queued the answer.
    PeerClosed(Option<u16>),
    /// The socket failed or ended: nothing more can be written.
    Gone,
}

impl From<CloseCode> for End {
    fn from(code: CloseCode) -> Self {
        End::Close(CloseReason::new(code))
    }
}

impl End {
    /// A close with `code` and a reason that says more than its label.
    pub(super) fn close(code: CloseCode, reason: impl Into<String>) -> Self {
        End::Close(CloseReason { code, reason: reason.into().into() })
    }
}

/// The WebSocket of a session and what every phase needs with it.
pub(super) struct Session<'a> {
    pub ctx: &'a WsContext,
    pub ws: Ws,
    pub mode: Mode,
    pub id: ConnId,
    /// Frames were queued since the last completed flush.
    pub unflushed: bool,
    strikes: u8,
}

impl Session<'_> {
    /// Queues `message` in the socket's write buffer without waiting; a
    /// flush (the live loop's, or [`Session::flush`]) writes it out. This is
    /// `Sink::start_send` without `poll_ready`: tokio-tungstenite accepts a
    /// frame even while the socket is blocked (it stays buffered), so a batch
    /// is never interrupted halfway by a slow socket, and the live loop keeps
    /// watching the socket and the outbox while the flush is pending.
    pub(super) fn queue(&mut self, message: Message) -> Result<(), End> {
        Pin::new(&mut self.ws).start_send(message).map_err(|error| {
            tracing::debug!(%error, "write failed");
            End::Gone
        })?;
        self.unflushed = true;
        Ok(())
    }

    /// Writes out everything queued.
    pub(super) async fn flush(&mut self) -> Result<(), End> {
        if self.unflushed {
            self.ws.flush().await.map_err(|error| {
                tracing::debug!(%error, "flush failed");
                End::Gone
            })?;
            self.unflushed = false;
        }
        Ok(())
    }

    /// Counts a bad request (docs/protocol.md, "Client messages"): the envelope mode gets an error
    /// message; the third bad request closes with 4503 in both modes.
    pub(super) fn bad_request(&mut self, bad: &BadRequest) -> Result<(), End> {
        self.strikes += 1;
        tracing::debug!(strikes = self.strikes, %bad, "bad request");
        if self.strikes >= MAX_STRIKES {
            return Err(End::close(CloseCode::ProtocolViolation, bad.to_string()));
        }
        self.error(bad.code(), &bad.to_string())
    }

    /// Reports a refused request that does not end the connection (envelope
    /// mode only; the wserver-compatible mode has no way to say it).
    pub(super) fn error(&mut self, code: &str, message: &str) -> Result<(), End> {
        match self.mode {
            Mode::Envelope => self.queue(envelope::error(code, message)),
            Mode::Compat => Ok(()),
        }
    }
}

/// What a frame from the client means to a session.
pub(super) enum Incoming {
    /// A text message to parse.
    Text(Utf8Bytes),
    /// A ping, pong or other frame: only a sign of life.
    Alive,
}

/// Sorts what the socket's stream yielded: a text frame to handle, a sign of
/// life, or the end of the session (binary → 1003, oversize → 1009, text
/// that is not UTF-8 → 1007).
pub(super) fn incoming(item: Option<Result<Message, WsError>>) -> Result<Incoming, End> {
    match item {
        Some(Ok(Message::Text(text))) => Ok(Incoming::Text(text)),
        Some(Ok(Message::Binary(_))) => Err(CloseCode::Unsupported.into()),
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(Incoming::Alive),
        Some(Ok(Message::Close(frame))) => Err(End::PeerClosed(frame.map(|f| f.code.into()))),
        // tungstenite refuses the frame but leaves the close frame to us.
        Some(Err(WsError::Capacity(error))) => Err(End::close(CloseCode::TooBig, error.to_string())),
        Some(Err(WsError::Utf8(_))) => Err(CloseCode::InvalidPayload.into()),
        Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) | None => Err(End::Gone),
        Some(Err(WsError::Protocol(error))) => Err(End::close(CloseCode::ProtocolViolation, error.to_string())),
        Some(Err(error)) => {
            tracing::debug!(%error, "read failed");
            Err(End::Gone)
        }
    }
}

/// Runs the session of an accepted upgrade to its end.
pub(super) async fn run(ctx: &WsContext, accepted: Accepted<'_>, id: ConnId) {
    let Accepted { upgrade, mode, identity, slot } = accepted;
    let Some(ws) = open(upgrade, ctx).await else { return };
    let mut conn = Session { ctx, ws, mode, id, unflushed: false, strikes: 0 };
    let end = match slot {
        // Counted while the session runs; released before the close linger.
        Some(_slot) => serve(&mut conn, identity).await,
        // Over --max-connections or --max-connections-per-ip (logged where counted).
        None => CloseCode::ConnectionLimit.into(),
    };
    finish(&mut conn, end).await;
}

/// Register, then live. The register phase is boxed: its timer and
/// authentication futures are freed once the connection has joined.
async fn serve(conn: &mut Session<'_>, identity: Option<crate::core::Identity>) -> End {
    match Box::pin(register::register(conn, identity)).await {
        Ok(member) => live::run(conn, member).await,
        Err(end) => end,
    }
}

/// Takes the upgraded TCP stream back from hyper and wraps it.
async fn open(upgrade: hyper::upgrade::OnUpgrade, ctx: &WsContext) -> Option<Ws> {
    let upgraded = match upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(%error, "upgrade failed");
            return None;
        }
    };
    let Ok(parts) = upgraded.downcast::<TokioIo<Socket>>() else {
        tracing::error!("upgraded connection is not the TCP stream it was accepted as");
        return None;
    };
    let max = ctx.config.max_client_frame_bytes;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let stream = parts.io.into_inner();
    Some(if parts.read_buf.is_empty() {
        WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await
    } else {
        WebSocketStream::from_partially_read(stream, parts.read_buf.to_vec(), Role::Server, Some(config)).await
    })
}

/// Ends the session: sends the close frame (after everything already
/// queued) and waits, at most [`CLOSE_LINGER`], for the client's answer.
/// Counts the close by code (a client's own close as 1000 or 1001 when it
/// gave one of those).
async fn finish(conn: &mut Session<'_>, end: End) {
    let metrics = conn.ctx.hub.metrics();
    let linger = async {
        match end {
            End::Close(reason) => {
                tracing::debug!(code = reason.code.code(), reason = %reason.reason, "closing");
                metrics.disconnected(reason.code);
                conn.queue(Message::Close(Some(close::frame(&reason))))?;
                conn.flush().await?;
                while let Some(Ok(_)) = conn.ws.next().await {}
            }
            End::PeerClosed(code) => {
                tracing::debug!(code, "closed by the client");
                match code {
                    Some(1000) => metrics.disconnected(CloseCode::Normal),
                    Some(1001) => metrics.disconnected(CloseCode::GoingAway),
                    _ => {}
                }
                conn.unflushed = true; // the answering close frame
                conn.flush().await?;
            }
            End::Gone => tracing::debug!("connection lost"),
        }
        Ok::<(), End>(())
    };
    if tokio::time::timeout(CLOSE_LINGER, linger).await.is_err() {
        tracing::debug!("close linger expired");
    }
}
