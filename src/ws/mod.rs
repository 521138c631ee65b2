//! The public listener: `GET /ws` upgrades (SPEC §3), `/healthz`, `/readyz`.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::PublicConfig;
use crate::core::{Authenticator, Hub};

/// What the public listener needs, injected by `server`.
pub struct WsContext {
    pub hub: Arc<Hub>,
    pub auth: Arc<dyn Authenticator>,
    pub config: PublicConfig,
    /// Cancelled when the gateway shuts down: stop accepting; sessions that
    /// have not joined the hub yet close with 1001.
    pub shutdown: CancellationToken,
    /// Every connection task is spawned on it, so shutdown can wait for them.
    pub tracker: TaskTracker,
}

/// Accepts browser connections on `listener` until shutdown.
pub async fn serve(listener: TcpListener, ctx: Arc<WsContext>) {
    let _ = (listener, ctx);
    todo!("ws adapter")
}
