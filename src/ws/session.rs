//! A connection's life after the upgrade, in its one task: open the
//! WebSocket, register (the only phase with a timer), live, close.
//!
//! # Writes
//! Frames are queued without waiting ([`Session::queue`]) and written by
//! [`Session::poll_io`]. tungstenite's write buffer is handed at most
//! [`WRITE_BUDGET`] bytes (or one larger frame) between two completed
//! flushes; what does not fit waits in the session's backlog as the frames
//! themselves, which share their bytes with the delivery (no copy). So a
//! blocked socket pins at most one budget of copied bytes, and a slow
//! consumer's close frame skips the backlog. While the session is idle a
//! producer's thread may write deliveries to a plain TCP socket itself
//! (`core::wire`); the tail of a frame it could write only in part comes back
//! as [`Session::resume_cut`] and is written before anything else. The write
//! buffer also has a
//! hard cap (`max_write_buffer_size`): tungstenite queues a pong for every
//! ping it reads, on its own, and would otherwise buffer them without limit.
//!
//! # Clients that do not read
//! While our writes are blocked, the session reads at most
//! [`MAX_READS_WHILE_BLOCKED`] messages (then it waits for the writes, so a
//! client that sends but never reads cannot grow our replies), and at most
//! [`MAX_CONTROLS_WHILE_BLOCKED`] pings or pongs: one more means the client
//! keeps talking without reading — each ping asks for a pong we cannot
//! write — and the connection is closed with 1008 at once, with no linger.
//! Both phases (register and live) read through [`Session::poll_io`].

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::{FutureExt, Sink, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::handshake::{Accepted, Upgrade};
use super::protocol::BadRequest;
use super::{MAX_HEADER_BYTES, Mode, WsContext, close, envelope, live, register};
use crate::core::{CloseCode, CloseReason, ConnId, DropReason};
use crate::net::prefixed::Prefixed;
use crate::net::tls::Socket;

/// The WebSocket over the upgraded stream, TCP or TLS (hyper's wrapper removed).
pub(super) type Ws = WebSocketStream<Socket>;

/// Bytes tungstenite allocates up front for reading, and reads at most at a
/// time; an idle connection keeps this buffer. Client frames are small (a
/// register message is ~60 bytes, a ping 6); a larger one (a long token)
/// grows the buffer to its size and takes a few reads. The 128 KiB default
/// would alone break the goal of a few KiB per idle connection
/// (BENCHMARKS.md, P6).
const READ_BUFFER_BYTES: usize = 256;

/// tungstenite writes its buffer to the socket once it holds more than this;
/// each drained batch ends with one flush anyway.
const WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// Bytes handed to tungstenite's write buffer between two completed flushes
/// (a single larger frame is handed alone). The rest of a batch waits in the
/// session's backlog.
const WRITE_BUDGET: usize = 2 * WRITE_BUFFER_BYTES;

/// The longest a closing connection waits to flush its close frame and read
/// the client's answering close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(3);

/// Bad requests a connection may make; the last one closes it with 4503.
const MAX_STRIKES: u8 = 3;

/// Messages a client may send while its socket is not taking our writes;
/// past this the session stops reading until the writes complete, so a
/// client that sends but never reads cannot grow our replies.
const MAX_READS_WHILE_BLOCKED: u32 = 32;

/// Pings and pongs a client may send while its socket is not taking our
/// writes; the next one closes it with 1008. A browser sends one pong per
/// server ping, so a legitimate client never comes near.
const MAX_CONTROLS_WHILE_BLOCKED: u32 = 32;

/// How a session ends.
#[derive(Debug)]
pub(super) enum End {
    /// The server closes with this reason.
    Close(CloseReason),
    /// The client does not read what it is sent: the close frame is written
    /// only if it goes out at once, and the socket is dropped, with no linger.
    Abort(CloseReason),
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
    /// A second handle on a plain TCP socket, for writes from a producer's
    /// thread while the session is idle; `None` over TLS.
    pub tcp: Option<Arc<TcpStream>>,
    /// The tail of a frame a producer's thread wrote only in part: written
    /// before anything else, straight to the socket.
    cut: Option<Box<Bytes>>,
    /// Frames were queued since the last completed flush.
    pub unflushed: bool,
    strikes: u8,
    /// Frames queued but not yet handed to tungstenite, and their bytes.
    backlog: VecDeque<Message>,
    backlog_bytes: usize,
    /// Bytes handed to tungstenite since its buffer was last flushed out.
    handed: usize,
    /// Messages, and pings or pongs, read since the writes blocked.
    reads_while_blocked: u32,
    controls_while_blocked: u32,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.ctx.admission.memory.backlog_shrank(self.backlog_bytes);
    }
}

impl<'a> Session<'a> {
    fn new(ctx: &'a WsContext, (ws, tcp): (Ws, Option<Arc<TcpStream>>), mode: Mode, id: ConnId) -> Self {
        Session {
            ctx,
            ws,
            mode,
            id,
            tcp,
            cut: None,
            unflushed: false,
            strikes: 0,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            handed: 0,
            reads_while_blocked: 0,
            controls_while_blocked: 0,
        }
    }
}

impl Session<'_> {
    /// Queues `message` without waiting; [`Session::poll_io`] (the live
    /// loop's, or [`Session::flush`]) writes it out. It goes straight into
    /// tungstenite's write buffer while the budget allows (tokio-tungstenite
    /// accepts a frame even while the socket is blocked), else into the
    /// backlog, so a batch is never interrupted halfway by a slow socket and
    /// the live loop keeps watching the socket and the outbox meanwhile.
    pub(super) fn queue(&mut self, message: Message) -> Result<(), End> {
        self.unflushed = true;
        // tungstenite may write as it takes a frame: not before a cut frame's tail.
        if self.cut.is_none() && self.backlog.is_empty() && self.fits(message.len()) {
            match self.hand(message)? {
                None => return Ok(()),
                Some(refused) => return self.keep(refused),
            }
        }
        self.keep(message)
    }

    /// True when a frame of `len` bytes may be handed to tungstenite now.
    fn fits(&self, len: usize) -> bool {
        self.handed == 0 || self.handed + len <= WRITE_BUDGET
    }

    /// Hands `message` to tungstenite; gives it back if its buffer is full.
    fn hand(&mut self, message: Message) -> Result<Option<Message>, End> {
        let len = message.len();
        match Pin::new(&mut self.ws).start_send(message) {
            Ok(()) => {
                self.handed += len;
                Ok(None)
            }
            Err(WsError::WriteBufferFull(refused)) if self.handed > 0 => Ok(Some(*refused)),
            Err(WsError::WriteBufferFull(_)) => {
                tracing::warn!(len, "a frame larger than the write buffer's cap");
                Err(End::close(CloseCode::Internal, "frame too large to send"))
            }
            Err(error) => {
                tracing::debug!(%error, "write failed");
                Err(End::Gone)
            }
        }
    }

    /// Puts `message` at the end of the backlog.
    fn keep(&mut self, message: Message) -> Result<(), End> {
        let len = message.len();
        self.backlog_bytes += len;
        self.ctx.admission.memory.backlog_grew(len);
        self.backlog.push_back(message);
        Ok(())
    }

    /// Hands the backlog's frames to tungstenite while the budget allows.
    fn hand_over(&mut self) -> Result<(), End> {
        let before = self.backlog_bytes;
        let result = self.hand_over_frames();
        let memory = &self.ctx.admission.memory;
        match before.cmp(&self.backlog_bytes) {
            std::cmp::Ordering::Greater => memory.backlog_shrank(before - self.backlog_bytes),
            std::cmp::Ordering::Less => memory.backlog_grew(self.backlog_bytes - before),
            std::cmp::Ordering::Equal => {}
        }
        result
    }

    fn hand_over_frames(&mut self) -> Result<(), End> {
        while let Some(message) = self.backlog.pop_front() {
            let len = message.len();
            if !self.fits(len) {
                self.backlog.push_front(message);
                break;
            }
            self.backlog_bytes -= len;
            if let Some(refused) = self.hand(message)? {
                // Given back as a frame, whose length counts its header.
                self.backlog_bytes += refused.len();
                self.backlog.push_front(refused);
                break;
            }
        }
        Ok(())
    }

    /// Drops the frames not yet handed to tungstenite (a slow consumer's,
    /// or any once the connection is closing without them); returns how many
    /// data frames (pushes, in all but rare cases) were dropped.
    fn discard_backlog(&mut self) -> u64 {
        self.ctx.admission.memory.backlog_shrank(self.backlog_bytes);
        let data = self.backlog.iter().filter(|m| m.is_text() || m.is_binary()).count() as u64;
        self.backlog = VecDeque::new();
        self.backlog_bytes = 0;
        data
    }

    /// Takes back the tail of a frame a producer's thread wrote only in
    /// part (`core::wire`): it goes out before anything else. Only ever
    /// given while nothing else is waiting to be written.
    pub(super) fn resume_cut(&mut self, rest: Box<Bytes>) {
        self.cut = Some(rest);
        self.unflushed = true;
    }

    /// Writes a cut frame's tail straight to the socket (tungstenite's buffer
    /// is empty then: the socket was only lent while it was).
    fn poll_cut(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), End>> {
        while let Some(rest) = &mut self.cut {
            match ready!(Pin::new(self.ws.get_mut()).poll_write(cx, rest)) {
                Ok(0) | Err(_) => return Poll::Ready(Err(End::Gone)),
                Ok(n) if n == rest.len() => self.cut = None,
                Ok(n) => rest.as_mut().advance(n),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Writes out everything queued: `Ready(Ok)` once the backlog is empty
    /// and tungstenite's buffer flushed.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), End>> {
        ready!(self.poll_cut(cx))?;
        loop {
            self.hand_over()?;
            if let Err(error) = ready!(Pin::new(&mut self.ws).poll_flush(cx)) {
                tracing::debug!(%error, "flush failed");
                return Poll::Ready(Err(End::Gone));
            }
            self.handed = 0;
            if self.backlog.is_empty() {
                self.unflushed = false;
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Writes out everything queued.
    pub(super) async fn flush(&mut self) -> Result<(), End> {
        if self.unflushed {
            poll_fn(|cx| self.poll_write(cx)).await?;
        }
        Ok(())
    }

    /// Advances the pending writes, then reads the client's next frame —
    /// within the limits on what a client that does not read may send (see
    /// the module's docs). `Pending` when there is nothing to read, or while
    /// reading waits for the writes.
    pub(super) fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, End>> {
        if self.unflushed {
            match self.poll_write(cx) {
                Poll::Ready(Ok(())) => {
                    self.reads_while_blocked = 0;
                    self.controls_while_blocked = 0;
                }
                Poll::Ready(Err(end)) => return Poll::Ready(Err(end)),
                Poll::Pending => {}
            }
        }
        let blocked = self.unflushed;
        // Reading may have tungstenite write a pong: not before a cut frame's tail.
        if blocked && (self.reads_while_blocked >= MAX_READS_WHILE_BLOCKED || self.cut.is_some()) {
            return Poll::Pending;
        }
        let item = ready!(self.ws.poll_next_unpin(cx));
        match &item {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) if blocked => {
                self.controls_while_blocked += 1;
                if self.controls_while_blocked > MAX_CONTROLS_WHILE_BLOCKED {
                    tracing::debug!(frames = self.controls_while_blocked, "pings and pongs while not reading");
                    let reason = CloseReason { code: CloseCode::Policy, reason: "not reading".into() };
                    return Poll::Ready(Err(End::Abort(reason)));
                }
            }
            _ if blocked => self.reads_while_blocked += 1,
            _ => {}
        }
        if let Some(Ok(Message::Ping(_))) = &item {
            // tungstenite has queued the pong: have it written.
            self.unflushed = true;
        }
        Poll::Ready(incoming(item))
    }

    /// The client's next frame (see [`Session::poll_io`]).
    pub(super) async fn next(&mut self) -> Result<Incoming, End> {
        poll_fn(|cx| self.poll_io(cx)).await
    }

    /// Writes out what was queued, then the close frame.
    async fn close_with(&mut self, frame: CloseFrame) -> Result<(), End> {
        self.flush().await?;
        // After a completed flush the close frame fits in the write buffer.
        Pin::new(&mut self.ws).start_send(Message::Close(Some(frame))).map_err(|error| {
            tracing::debug!(%error, "close failed");
            End::Gone
        })?;
        self.unflushed = true;
        self.flush().await
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
pub(super) async fn run(ctx: &WsContext, accepted: Box<Accepted<'_>>, id: ConnId) {
    // Moved out in a block of its own, so the box is freed now rather than
    // when this function returns.
    let Accepted { upgrade, mode, identity, slot } = {
        let accepted = accepted;
        *accepted
    };
    // `open` and `finish` are boxed: their state exists only at the start
    // and the end, and inline it would be part of every idle connection's task.
    let Some(socket) = Box::pin(open(upgrade, ctx)).await else { return };
    let mut conn = Session::new(ctx, socket, mode, id);
    let end = if slot.is_some() {
        serve(&mut conn, identity).await
    } else {
        // Over --max-connections or --max-connections-per-ip (logged where counted).
        CloseCode::ConnectionLimit.into()
    };
    // Counted while the session runs; released before the close linger. (Not
    // bound by a `match`: its binding would take room of its own.)
    drop(slot);
    Box::pin(finish(&mut conn, end)).await;
}

/// Register, then live. The register phase is boxed: its timer and
/// authentication futures are freed once the connection has joined.
async fn serve(conn: &mut Session<'_>, identity: Option<Box<crate::core::Identity>>) -> End {
    // Not matched around the live phase's await: the `Result` would keep its room.
    let member = match Box::pin(register::register(conn, identity)).await {
        Ok(member) => member,
        Err(end) => return end,
    };
    live::run(conn, member).await
}

/// An upper bound of the largest frame the gateway sends: a push of
/// `--max-message-bytes` in the envelope mode (JSON escaping at most
/// sextuples a text), or a `registered` answer listing
/// `--max-events-per-conn` events for a user id as long as a token can be.
fn largest_frame(ctx: &WsContext) -> usize {
    let hub = ctx.hub.config();
    let push = 6 * hub.max_message_bytes;
    let token = ctx.config.max_client_frame_bytes.max(MAX_HEADER_BYTES);
    let registered = 131 * hub.max_events_per_conn + 6 * token;
    push.max(registered) + 1024
}

/// The upgraded stream (taken back from hyper if it answered the upgrade),
/// wrapped; a plain TCP stream is shared, its second handle returned.
async fn open(upgrade: Upgrade, ctx: &WsContext) -> Option<(Ws, Option<Arc<TcpStream>>)> {
    let (socket, read) = match upgrade {
        Upgrade::Direct(socket, read) => (socket, read),
        Upgrade::Hyper(upgrade) => from_hyper(upgrade).await?,
    };
    let max = ctx.config.max_client_frame_bytes;
    // The cap is never reached by our own frames (the budget hands one large
    // frame alone); it bounds the pongs tungstenite queues by itself. Above
    // WRITE_BUFFER_BYTES by construction, as tungstenite requires.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(WRITE_BUDGET + largest_frame(ctx))
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let (stream, tcp) = socket.share();
    let ws = if read.is_empty() {
        WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await
    } else {
        WebSocketStream::from_partially_read(stream, read.to_vec(), Role::Server, Some(config)).await
    };
    Some((ws, tcp))
}

/// The socket hyper upgraded, and what was read from it but not taken.
async fn from_hyper(upgrade: hyper::upgrade::OnUpgrade) -> Option<(Socket, Bytes)> {
    let upgraded = match upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(%error, "upgrade failed");
            return None;
        }
    };
    let Ok(parts) = upgraded.downcast::<TokioIo<Prefixed>>() else {
        tracing::error!("upgraded connection is not the TCP stream it was accepted as");
        return None;
    };
    let (socket, unread) = parts.io.into_inner().into_parts();
    // hyper reads what the listener had read before anything else.
    let read = if unread.is_empty() { parts.read_buf } else { [parts.read_buf, unread].concat().into() };
    Some((socket, read))
}

/// Ends the session: sends the close frame (after everything already
/// queued, except a slow consumer's backlog) and waits, at most
/// [`CLOSE_LINGER`], for the client's answer; a client that does not read
/// ([`End::Abort`]) gets one try and no wait. Counts the close by code (a
/// client's own close as 1000 or 1001 when it gave one of those).
async fn finish(conn: &mut Session<'_>, end: End) {
    let metrics = conn.ctx.hub.metrics();
    let end = match end {
        End::Abort(reason) => {
            tracing::debug!(code = reason.code.code(), reason = %reason.reason, "dropping");
            metrics.disconnected(reason.code);
            conn.discard_backlog();
            if conn.close_with(close::frame(&reason)).now_or_never().is_none() {
                tracing::debug!("close frame not written: the socket is full");
            }
            return;
        }
        other => other,
    };
    let linger = async {
        match end {
            End::Close(reason) => {
                tracing::debug!(code = reason.code.code(), reason = %reason.reason, "closing");
                metrics.disconnected(reason.code);
                if reason.code == CloseCode::SlowConsumer {
                    // Its queue is freed: so are the frames not yet handed to
                    // the socket, and the close frame goes next (docs/protocol.md,
                    // "Slow consumers"). They were taken from its queue, so
                    // they are counted as dropped like the rest of it.
                    let dropped = conn.discard_backlog();
                    metrics.dropped(DropReason::SlowConsumer, dropped);
                }
                conn.close_with(close::frame(&reason)).await?;
                while let Some(Ok(_)) = conn.ws.next().await {}
            }
            End::PeerClosed(code) => {
                tracing::debug!(code, "closed by the client");
                match code {
                    Some(1000) => metrics.disconnected(CloseCode::Normal),
                    Some(1001) => metrics.disconnected(CloseCode::GoingAway),
                    _ => {}
                }
                // Nothing but the answering close frame may follow its close.
                conn.discard_backlog();
                conn.unflushed = true;
                conn.flush().await?;
            }
            End::Abort(_) | End::Gone => tracing::debug!("connection lost"),
        }
        Ok::<(), End>(())
    };
    if tokio::time::timeout(CLOSE_LINGER, linger).await.is_err() {
        tracing::debug!("close linger expired");
    }
}
