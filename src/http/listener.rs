//! The internal listener's accept loop: HTTP/1.1 and HTTP/2 with prior
//! knowledge (h2c, which is what gRPC clients speak) on one port, detected
//! per connection by hyper-util's `auto` builder.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::net::{accept_loop, tls};

/// HTTP/2 receive window per stream: large enough that one `PushStream`
/// keeps a producer busy across a loopback or LAN round trip.
const STREAM_WINDOW: u32 = 1 << 20;
/// HTTP/2 receive window per connection, shared by its streams.
const CONNECTION_WINDOW: u32 = 2 << 20;

/// Serves `router` on `listener` (HTTP/1.1 and h2c, so gRPC and curl share the
/// port) until `shutdown`; in-flight requests finish, each connection task is
/// on `tracker`. A producer has `handshake_timeout` for its TLS handshake.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let builder = connection_builder();
    let graceful = GracefulShutdown::new();
    let setup = ConnSetup {
        builder: &builder,
        graceful: &graceful,
        tracker: &tracker,
        router: &router,
        tls: tls.as_ref(),
        handshake_timeout,
    };
    accept_loop(&listener, "internal", &shutdown, |stream, peer| setup.spawn(stream, peer)).await;
    drop(listener);
    tracing::debug!(open = graceful.count(), "internal listener closed; finishing in-flight requests");
    graceful.shutdown().await;
}

/// The connection settings shared by every producer connection.
fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
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
        let watcher = self.graceful.watcher();
        self.tracker.spawn(
            async move {
                let socket = match tls::accept(tls.as_ref(), stream, timeout).await {
                    Ok(socket) => socket,
                    Err(error) => {
                        tracing::info!(%error, "producer TLS handshake failed");
                        return;
                    }
                };
                let connection = watcher.watch(builder.serve_connection(TokioIo::new(socket), service).into_owned());
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "producer connection ended with an error");
                }
            }
            .instrument(span),
        );
    }
}
