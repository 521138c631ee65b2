//! The internal listener's HTTP side: wserver's `POST /push`, the `/v1/*` JSON
//! mirror of the gRPC API, `/healthz`, `/readyz`; and the server loop that
//! serves HTTP/1.1 and HTTP/2 (gRPC) on one port.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::{ApiKeys, Hub};

/// The HTTP routes of the internal port.
pub fn router(hub: Arc<Hub>, keys: ApiKeys) -> axum::Router {
    let _ = (hub, keys);
    todo!("http adapter")
}

/// Serves `router` on `listener` (HTTP/1.1 and h2c, so gRPC and curl share the
/// port) until `shutdown`; in-flight requests finish, each connection task is
/// on `tracker`.
pub async fn serve(listener: TcpListener, router: axum::Router, shutdown: CancellationToken, tracker: TaskTracker) {
    let _ = (listener, router, shutdown, tracker);
    todo!("http serve")
}
