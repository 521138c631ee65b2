//! The internal listener's accept loop: HTTP/1.1 and HTTP/2 with prior
//! knowledge (h2c, which is what gRPC clients speak) on one port. A
//! connection of wserver's plain `POST /push` requests is served without
//! hyper ([`http1`]); any other request goes, with the rest of its
//! connection, to hyper-util's `auto` builder, which tells HTTP/1.1 from
//! HTTP/2.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{Request, Response, Version};
use axum::middleware;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Either, Map};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tower::util::Oneshot;
use tracing::Instrument as _;

use super::deadlines::{Detecting, read_in_time};
use super::{Http1Push, http1};
use crate::net::prefixed::Prefixed;
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

/// What the internal port serves.
pub(crate) struct Services<D> {
    /// Every route, HTTP and gRPC.
    pub(crate) router: Router,
    /// wserver's `POST /push` over HTTP/1.1, served ahead of the router.
    pub(crate) push: Http1Push,
    /// The HTTP/2 calls it claims, served ahead of the router.
    pub(crate) direct: D,
}

/// Serves `services` on `listener` (HTTP/1.1 and h2c, so gRPC and curl share
/// the port) until `shutdown`; in-flight requests finish, each connection
/// task is on `tracker`. A producer has `timeouts.handshake` for its TLS
/// handshake, its first bytes and each HTTP/1.1 request head, and
/// `timeouts.request_body` for each HTTP/1.1 request body.
pub(crate) async fn serve<D: Direct>(
    listener: TcpListener,
    services: Services<D>,
    tls: Option<TlsAcceptor>,
    timeouts: Timeouts,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let Services { router, push, direct } = services;
    let body_timeout = timeouts.request_body;
    let timed =
        router.clone().layer(middleware::from_fn(move |request, next| read_in_time(body_timeout, request, next)));
    let service = Arc::new(Dispatch { direct, push, body_timeout, http2: router, http1: timed });
    let builder = connection_builder(timeouts.handshake);
    let graceful = GracefulShutdown::new();
    let tls_failures = Arc::new(LogThrottle::new(REPORT_INTERVAL));
    let setup = ConnSetup {
        builder: &builder,
        graceful: &graceful,
        tracker: &tracker,
        service: &service,
        tls: tls.as_ref(),
        tls_failures: &tls_failures,
        timeouts,
        shutdown: &shutdown,
    };
    accept_loop(&listener, "internal", &shutdown, |stream, peer| setup.spawn(stream, peer)).await;
    drop(listener);
    tracing::debug!(open = graceful.count(), "internal listener closed; finishing in-flight requests");
    graceful.shutdown().await;
}

/// A service the listener calls itself, ahead of the router, for the HTTP/2
/// requests it claims: PushService, the producers' hot path, so a push does
/// not pay for the router's matching, its per-route boxes and the HTTP/1
/// middleware it would pass through untouched. What it serves must also be
/// in the router, which answers the same calls over HTTP/1.1.
pub(crate) trait Direct: Send + Sync + 'static {
    /// The future of one call.
    type Future: Future<Output = Response<axum::body::Body>> + Send + 'static;
    /// Whether the request at `path` is this service's.
    fn claims(&self, path: &str) -> bool;
    /// Serves `request`; it is called only for requests it claims.
    fn call(&self, request: Request<Incoming>) -> Self::Future;
}

/// Every request of the internal port: HTTP/2 requests the direct service
/// claims go to it, other HTTP/2 requests to the router; HTTP/1 `POST /push`
/// to `push`, other HTTP/1 requests to the router behind the request body
/// deadline ([`read_in_time`]).
struct Dispatch<D> {
    direct: D,
    push: Http1Push,
    body_timeout: Duration,
    http2: Router,
    http1: Router,
}

/// A direct service's answer as the router's.
type Answered = fn(Response<axum::body::Body>) -> Result<Response<axum::body::Body>, Infallible>;

/// The future of a request served ahead of the router.
type Ahead<D> =
    Either<Map<<D as Direct>::Future, Answered>, Map<BoxFuture<'static, Response<axum::body::Body>>, Answered>>;

/// One connection's handle on the shared [`Dispatch`].
struct Served<D>(Arc<Dispatch<D>>);

impl<D: Direct> hyper::service::Service<Request<Incoming>> for Served<D> {
    type Response = Response<axum::body::Body>;
    type Error = Infallible;
    type Future = Either<Ahead<D>, Oneshot<Router, Request<axum::body::Body>>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let dispatch = &*self.0;
        let http2 = request.version() >= Version::HTTP_2;
        if http2 && dispatch.direct.claims(request.uri().path()) {
            return Either::Left(Either::Left(dispatch.direct.call(request).map(Ok as Answered)));
        }
        if !http2 && dispatch.push.claims(&request) {
            let answer = dispatch.push.call(request, dispatch.body_timeout);
            return Either::Left(Either::Right(answer.map(Ok as Answered)));
        }
        let router = if http2 { &dispatch.http2 } else { &dispatch.http1 };
        Either::Right(router.clone().oneshot(request.map(axum::body::Body::new)))
    }
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
struct ConnSetup<'a, D> {
    builder: &'a auto::Builder<TokioExecutor>,
    graceful: &'a GracefulShutdown,
    tracker: &'a TaskTracker,
    service: &'a Arc<Dispatch<D>>,
    tls: Option<&'a TlsAcceptor>,
    /// Failed handshakes are logged at most once per interval: anyone who
    /// reaches the port can fail one.
    tls_failures: &'a Arc<LogThrottle>,
    timeouts: Timeouts,
    /// Closes idle connections served without hyper (hyper's have `graceful`).
    shutdown: &'a CancellationToken,
}

impl<D: Direct> ConnSetup<'_, D> {
    /// Serves `stream` on its own task: wserver's plain `POST /push`
    /// requests without hyper ([`http1::serve`]), then (if anything else
    /// comes) with hyper, watched by the graceful shutdown.
    fn spawn(&self, stream: TcpStream, peer: std::net::SocketAddr) {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let span = tracing::debug_span!("producer_conn", id = NEXT_ID.fetch_add(1, Ordering::Relaxed), %peer);
        let service = Served(Arc::clone(self.service));
        let builder = self.builder.clone();
        let tls = self.tls.cloned();
        let timeouts = self.timeouts;
        let timeout = timeouts.handshake;
        let tls_failures = Arc::clone(self.tls_failures);
        let watcher = self.graceful.watcher();
        let shutdown = self.shutdown.clone();
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
                let (socket, read) = match http1::serve(socket, &service.0.push, timeouts, &shutdown).await {
                    http1::Outcome::Done => return,
                    http1::Outcome::Hyper(socket, read) => (socket, read),
                };
                // What was read holds the start of a request: unless it is
                // the start of HTTP/2's preface, the deadline is off at once.
                let socket = TokioIo::new(Detecting::new(Prefixed::new(read, socket), timeout));
                let connection = watcher.watch(builder.serve_connection(socket, service).into_owned());
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "producer connection ended with an error");
                }
            }
            .instrument(span),
        );
    }
}
