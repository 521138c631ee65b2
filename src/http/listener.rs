//! The internal listener's accept loop: HTTP/1.1 and HTTP/2 with prior
//! knowledge (h2c, which is what gRPC clients speak) on one port, detected
//! per connection by hyper-util's `auto` builder.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::middleware;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::deadlines::{Detecting, read_in_time};
use crate::net::throttle::{LogThrottle, REPORT_INTERVAL};
use crate::net::{accept_loop, tls};

/// HTTP/2 receive window per stream (the protocol's default size): what a
/// `PushStream` producer may have sent beyond the requests read so far. It
/// keeps a producer busy across a loopback or LAN round trip (64 KiB in
/// flight per round trip).
///
/// It is kept small against [`CONNECTION_WINDOW`] because of h2's guard
/// against floods of small DATA frames: every unread frame under 256 bytes is
/// charged `256 - len` against a per-connection budget of half the connection
/// window, and the connection is closed with `GOAWAY ENHANCE_YOUR_CALM`
/// (`too_many_data_frames`) once the budget is spent. A producer sending
/// each push in its own frame and reading replies late fills a stream window
/// with such frames while the gateway stops reading (the back-pressure of
/// `PushStream`); with a 1 MiB stream window such a producer was cut off
/// after a few thousand unread pushes, and every call on its connection died
/// instead of being held back.
const STREAM_WINDOW: u32 = 64 << 10;
/// HTTP/2 receive window per connection, shared by its streams: room for
/// other calls while streams are held back, and twice the DATA frame budget
/// (see [`STREAM_WINDOW`]).
const CONNECTION_WINDOW: u32 = 4 << 20;

/// The smallest DATA frame a producer's push plausibly comes in: the 5-byte
/// gRPC prefix and a `PushRequest` with one-byte `user_id`, `event` and
/// `message` and a short `request_id`.
const SMALLEST_PUSH_FRAME: u32 = 20;
/// Stalled `PushStream`s of such frames one connection holds without h2
/// closing it (of 100-byte pushes, about twenty).
const STALLED_STREAMS: u32 = 2;
// h2's DATA frame budget (half the connection window, see STREAM_WINDOW)
// covers that many full stream windows of the smallest pushes.
const _: () = assert!(
    STALLED_STREAMS * (STREAM_WINDOW / SMALLEST_PUSH_FRAME) * (256 - SMALLEST_PUSH_FRAME) <= CONNECTION_WINDOW / 2
);

/// The time limits of producer connections (see [`super::deadlines`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// For a TLS handshake, for the first bytes of a connection, and for an
    /// HTTP/1.1 request head (`--handshake-timeout`).
    pub handshake: Duration,
    /// For an HTTP/1.1 request from the end of its head to its answer
    /// (`--request-body-timeout`).
    pub request_body: Duration,
}

/// Serves `router` on `listener` (HTTP/1.1 and h2c, so gRPC and curl share the
/// port) until `shutdown`; in-flight requests finish, each connection task is
/// on `tracker`. A producer has `timeouts.handshake` for its TLS handshake,
/// its first bytes and each HTTP/1.1 request head, and `timeouts.request_body`
/// for each HTTP/1.1 request body.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    timeouts: Timeouts,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let body_timeout = timeouts.request_body;
    let router = router.layer(middleware::from_fn(move |request, next| read_in_time(body_timeout, request, next)));
    let handshake_timeout = timeouts.handshake;
    let builder = connection_builder(handshake_timeout);
    let graceful = GracefulShutdown::new();
    let tls_failures = Arc::new(LogThrottle::new(REPORT_INTERVAL));
    let setup = ConnSetup {
        builder: &builder,
        graceful: &graceful,
        tracker: &tracker,
        router: &router,
        tls: tls.as_ref(),
        tls_failures: &tls_failures,
        handshake_timeout,
    };
    accept_loop(&listener, "internal", &shutdown, |stream, peer| setup.spawn(stream, peer)).await;
    drop(listener);
    tracing::debug!(open = graceful.count(), "internal listener closed; finishing in-flight requests");
    graceful.shutdown().await;
}

/// The connection settings shared by every producer connection. An HTTP/1.1
/// request head must arrive within `header_timeout`, which is also how long
/// an idle keep-alive connection is kept.
fn connection_builder(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// What a new producer connection is served with.
struct ConnSetup<'a> {
    builder: &'a auto::Builder<TokioExecutor>,
    graceful: &'a GracefulShutdown,
    tracker: &'a TaskTracker,
    router: &'a Router,
    tls: Option<&'a TlsAcceptor>,
    /// Failed handshakes are logged at most once per interval: anyone who
    /// reaches the port can fail one.
    tls_failures: &'a Arc<LogThrottle>,
    handshake_timeout: Duration,
}

impl ConnSetup<'_> {
    /// Serves `stream` on its own task, watched by the graceful shutdown.
    fn spawn(&self, stream: TcpStream, peer: std::net::SocketAddr) {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let span = tracing::debug_span!("producer_conn", id = NEXT_ID.fetch_add(1, Ordering::Relaxed), %peer);
        let service = TowerToHyperService::new(self.router.clone());
        let builder = self.builder.clone();
        let tls = self.tls.cloned();
        let timeout = self.handshake_timeout;
        let tls_failures = Arc::clone(self.tls_failures);
        let watcher = self.graceful.watcher();
        self.tracker.spawn(
            async move {
                let socket = match tls::accept(tls.as_ref(), stream, timeout).await {
                    Ok(socket) => socket,
                    Err(error) => {
                        if let Some(failed) = tls_failures.hit() {
                            tracing::info!(%error, failed, "producer TLS handshakes failed since the last report");
                        }
                        return;
                    }
                };
                let socket = TokioIo::new(Detecting::new(socket, timeout));
                let connection = watcher.watch(builder.serve_connection(socket, service).into_owned());
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "producer connection ended with an error");
                }
            }
            .instrument(span),
        );
    }
}
