//! The public listener: `GET /ws` upgrades (docs/protocol.md), `/healthz`,
//! `/readyz`.
//!
//! # Layout
//! - this file: the accept loop and the one task each connection gets;
//! - `head`: the first request's head, read here; an upgrade is answered
//!   without hyper, anything else goes to hyper with the bytes read;
//! - [`handshake`]: HTTP routing and the upgrade checks (origin, token,
//!   sub-protocol), all refused with an HTTP status before the upgrade;
//! - `session`: a connection's life after the upgrade — the register phase
//!   (the only one with a timer), then the live loop that reads the socket and
//!   drains the connection's outbox in one task;
//! - `protocol`: client messages; `envelope`: server frames; `close`: the one
//!   mapping from the core's close codes to close frames.
//!
//! Each connection costs one task. Until the upgrade it reads the first
//! request (and runs hyper's HTTP/1 connection if that is not an upgrade),
//! boxed so its memory is freed at the upgrade, and holds one of the
//! `--max-handshakes` permits; after it, the task holds only the WebSocket
//! stream, the session state and the outbox.

mod admission;
mod close;
mod demo;
mod envelope;
pub(crate) mod fuzzing;
mod handshake;
mod head;
mod live;
mod origin;
mod protocol;
mod register;
mod session;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::config::PublicConfig;
use crate::core::hub::{MAX_USER_ID_BYTES, check_length};
use crate::core::{AuthError, Authenticator, Broker, Hub, Identity};
use crate::net::accept_loop_gated;
use crate::net::prefixed::Prefixed;
use crate::net::tls::{self, Socket};
use admission::{Handshakes, MemoryWatch, Sessions};

pub(crate) use demo::Demo;

/// What the public listener needs, injected by `server`.
pub struct WsContext {
    pub hub: Arc<Hub>,
    /// What is cluster-wide: told of each connection that joins and leaves.
    pub broker: Arc<dyn Broker>,
    pub auth: Arc<dyn Authenticator>,
    pub config: PublicConfig,
    /// Cancelled when the gateway shuts down: stop accepting; sessions that
    /// have not joined the hub yet close with 1001.
    pub shutdown: CancellationToken,
    /// Every connection task is spawned on it, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// TLS (`wss://`) when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Answers `POST /push` on this listener (`--push-on-public`); injected
    /// by `server` so this adapter knows nothing of the producer API.
    pub push: Option<axum::Router>,
    /// `GET /demo` and its SDK file (`--demo`).
    pub demo: Option<Demo>,
    /// The admission limits' state, shared with `server` for its stats.
    pub admission: Arc<Admission>,
}

impl WsContext {
    /// Checks `token` with the configured authenticator. A user id that no
    /// producer could push to (empty, or longer than the API's limit) is an
    /// invalid token, so a browser cannot make the hub hold an oversized key.
    pub(crate) async fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let identity = self.auth.authenticate(token).await?;
        if identity.user.is_empty() {
            return Err(AuthError::Invalid("the token names an empty user id".into()));
        }
        check_length("user_id", &identity.user, MAX_USER_ID_BYTES).map_err(|e| AuthError::Invalid(e.to_string()))?;
        Ok(identity)
    }
}

/// The public listener's admission state: connection counts, handshakes in
/// flight, and what the connections hold (docs/protocol.md, "Limits").
pub struct Admission {
    sessions: Sessions,
    memory: MemoryWatch,
    handshakes: Handshakes,
}

impl Admission {
    /// Limits as configured.
    pub fn new(config: &PublicConfig) -> Self {
        Self {
            sessions: Sessions::new(config.max_connections, config.max_connections_per_ip),
            memory: MemoryWatch::new(config.max_memory),
            handshakes: Handshakes::new(config.max_handshakes),
        }
    }

    /// The figures now.
    pub fn stats(&self) -> ListenerStats {
        ListenerStats {
            open_connections: self.memory.open_connections(),
            handshakes_in_flight: self.handshakes.in_flight(),
            handshakes_peak: self.handshakes.peak(),
            held_bytes: self.memory.held(),
        }
    }
}

/// What the public listener holds at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerStats {
    /// Accepted connections whose task has not ended: handshakes, sessions
    /// and connections being closed.
    pub open_connections: u64,
    /// Connections that have not completed their upgrade (at most
    /// `--max-handshakes`).
    pub handshakes_in_flight: usize,
    /// The most handshakes in flight at once since start.
    pub handshakes_peak: usize,
    /// What `--max-memory` is checked against: 8 KiB per open connection,
    /// plus write backlogs, plus outbox queues (summed only when
    /// `--max-memory` is set).
    pub held_bytes: u64,
}

/// Which protocol a connection speaks, chosen by its sub-protocol offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `pushgate.v1`: JSON envelopes (docs/protocol.md, "Envelope mode").
    Envelope,
    /// No sub-protocol: exactly wserver's frames (docs/protocol.md,
    /// "wserver-compatible mode").
    Compat,
}

/// The most an upgrade request's header block may take (hyper's smallest
/// read buffer): a browser's is well under 2 KiB; beyond it hyper answers 431
/// and closes, so a client cannot make a connection hold more before the
/// upgrade.
const MAX_HEADER_BYTES: usize = 8 * 1024;

/// State shared by every connection of one listener.
struct Listener {
    ctx: Arc<WsContext>,
    http: http1::Builder,
}

impl Listener {
    fn admission(&self) -> &Admission {
        &self.ctx.admission
    }
}

/// Accepts browser connections on `listener` until shutdown. Each connection
/// is served by one task on `ctx.tracker`; at most `--max-handshakes` of them
/// are before their upgrade at once.
pub async fn serve(listener: TcpListener, ctx: Arc<WsContext>) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(ctx.config.handshake_timeout).max_buf_size(MAX_HEADER_BYTES);
    let shared = Arc::new(Listener { ctx: Arc::clone(&ctx), http });
    let sampler = Arc::clone(&ctx);
    tokio::spawn(async move { sampler.admission.memory.run(&sampler.hub, sampler.shutdown.clone()).await });
    let gate = ctx.admission.handshakes.gate();
    let send_buffer = ctx.config.socket_send_buffer;
    accept_loop_gated(&listener, "public", &ctx.shutdown, Some(gate), send_buffer, |stream, peer, permit| {
        ctx.tracker.spawn(connection(Arc::clone(&shared), stream, peer, permit));
    })
    .await;
}

/// A connection as accepted, before its upgrade. Boxed until then: an async
/// function keeps its arguments' room for its whole life, and these are
/// moved out at the upgrade.
struct Arrived {
    stream: TcpStream,
    peer: SocketAddr,
    /// Its `--max-handshakes` permit, given back at the upgrade.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Serves one TCP connection: HTTP/1 until an upgrade, then the session.
/// `permit` is its `--max-handshakes` permit, given back at the upgrade.
fn connection(
    listener: Arc<Listener>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> impl Future<Output = ()> {
    let id = listener.ctx.hub.next_conn_id();
    let span = tracing::info_span!("conn", id, user = tracing::field::Empty);
    let arrived = Box::new(Arrived { stream, peer, permit });
    async move {
        let _open = listener.admission().memory.open();
        // Boxed, so that the state of the TLS and HTTP/1 phase (hyper's
        // connection, the service, the shutdown watch) is freed at the
        // upgrade instead of sizing the task of every idle session.
        let Some(accepted) = Box::pin(upgrade(&listener, arrived)).await else { return };
        session::run(&listener.ctx, accepted, id).await;
    }
    .instrument(span)
}

/// TLS, then the first request's head: an upgrade is answered here
/// ([`direct`]), anything else by hyper's HTTP/1 until the connection ends
/// or is upgraded. The accepted upgrade, if any (boxed, like its arrival,
/// for the room it would keep).
async fn upgrade<'l>(listener: &'l Listener, arrived: Box<Arrived>) -> Option<Box<handshake::Accepted<'l>>> {
    let Arrived { stream, peer, permit } = *arrived;
    let _handshake = listener.admission().handshakes.begin(permit);
    let ctx = &listener.ctx;
    let mut stream = match tls::accept(ctx.tls.as_ref(), stream, ctx.config.handshake_timeout).await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return None;
        }
    };
    // The same bound as hyper's on a request head (`header_read_timeout`).
    let first = head::read(&mut stream, |path| handshake::is_upgrade_path(ctx, path));
    let first = tokio::select! {
        first = tokio::time::timeout(ctx.config.handshake_timeout, first) => first,
        () = ctx.shutdown.cancelled() => return None,
    };
    let accepted = match first {
        Ok(Ok(head::First::Claimed(request))) => direct(listener, peer, stream, request).await?,
        Ok(Ok(head::First::Other(read))) => with_hyper(listener, peer, Prefixed::new(read, stream)).await?,
        Ok(Ok(head::First::Closed)) => return None,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "reading the request failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "no request head within the handshake timeout");
            return None;
        }
    };
    tracing::debug!(%peer, mode = ?accepted.mode, "upgraded");
    Some(Box::new(accepted))
}

/// Checks and answers an upgrade request read by [`head::read`]: its 101, or
/// its refusal (and the connection is closed).
async fn direct<'l>(
    listener: &'l Listener,
    peer: SocketAddr,
    mut stream: Socket,
    request: head::Claimed,
) -> Option<handshake::Accepted<'l>> {
    let checked = handshake::check(listener, peer.ip(), &request).await;
    let rest = request.rest();
    drop(request);
    let answer = match &checked {
        Ok(checked) => checked.head(),
        Err(refusal) => refusal.head(),
    };
    // A few hundred bytes on a connection that has sent nothing but its
    // request: the socket's buffer takes them at once. (The flush is for
    // TLS, whose records may wait in its session.)
    let written = async {
        stream.write_all(&answer).await?;
        stream.flush().await
    };
    if let Err(error) = written.await {
        tracing::debug!(%peer, %error, "answering the upgrade failed");
        return None;
    }
    match checked {
        Ok(checked) => Some(checked.accepted(handshake::Upgrade::Direct(stream, rest))),
        Err(_) => {
            let _ = stream.shutdown().await;
            None
        }
    }
}

/// Serves the connection with hyper's HTTP/1 until it ends or is upgraded.
async fn with_hyper<'l>(listener: &'l Listener, peer: SocketAddr, stream: Prefixed) -> Option<handshake::Accepted<'l>> {
    let pending = handshake::Pending::default();
    {
        let service = service_fn(|req| handshake::respond(listener, &pending, peer.ip(), req));
        let mut conn = std::pin::pin!(listener.http.serve_connection(TokioIo::new(stream), service).with_upgrades());
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = listener.ctx.shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.as_mut().await
            }
        };
        if let Err(error) = result {
            tracing::debug!(%error, "http connection ended");
        }
    }
    pending.into_inner().unwrap_or_else(|e| e.into_inner())
}
