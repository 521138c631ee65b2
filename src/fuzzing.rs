//! Entry points for the fuzz targets in `fuzz/` (docs: README, "Fuzzing and
//! property tests"). Hidden and not an API: it re-exports the pure parts of
//! the crate-private adapters, so a target can call them without a socket.

use std::sync::Arc;

use bytes::Bytes;

use crate::core::{Hub, ProducerKeys};
use crate::proto::{PushBatchReply, PushBatchRequest};

pub use crate::http::fuzzing::{PushHead, push_head, wserver_body};
pub use crate::ws::fuzzing::{
    ClaimedHead, ClientError, ClientMessage, Frame, Refused, Upgrade, client_message, delivery_frame, first_request,
    upgrade_checks,
};

/// The internal port's HTTP routes (`/push`, `/v1/*`, health, metrics) over
/// a hub, answered synchronously.
pub struct InternalHttp {
    router: axum::Router,
    runtime: tokio::runtime::Runtime,
}

impl InternalHttp {
    /// The routes over `hub`, requiring one of `keys` when any is given.
    pub fn new(hub: Arc<Hub>, keys: ProducerKeys) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a current-thread runtime");
        Self { router: crate::http::internal(Arc::new(memory_node(&hub)), keys).router, runtime }
    }

    /// Sends one request; returns the status, the `content-type` and the body.
    pub fn call(&self, method: &str, path: &str, authorization: Option<&str>, body: Vec<u8>) -> (u16, String, Bytes) {
        use http_body_util::BodyExt as _;
        use tower::ServiceExt as _;
        let mut request = axum::http::Request::builder().method(method).uri(path);
        if let Some(value) = authorization {
            request = request.header(axum::http::header::AUTHORIZATION, value);
        }
        let request = request.body(axum::body::Body::from(body)).expect("a valid request");
        self.runtime.block_on(async {
            let response = match self.router.clone().oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(axum::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let body = response.into_body().collect().await.expect("an in-memory body").to_bytes();
            (status, content_type, body)
        })
    }
}

/// `PushBatch` over `hub` with the in-process broker, as the gRPC service
/// and `/v1/push_batch` run it.
pub fn push_batch(hub: &Arc<Hub>, request: PushBatchRequest) -> PushBatchReply {
    use futures_util::FutureExt as _;
    let node = memory_node(hub);
    // The in-process broker answers at once: the future is ready when first polled.
    crate::api::push_batch(&node, request).now_or_never().expect("the in-process broker answers at once")
}

fn memory_node(hub: &Arc<Hub>) -> crate::api::Node {
    crate::api::Node { hub: Arc::clone(hub), broker: crate::broker::memory(hub, "fuzz".into()) }
}

/// The largest encoded `PushRequest` the gateway decodes for `hub`.
pub fn max_push_bytes(hub: &Hub) -> usize {
    crate::api::max_push_bytes(hub)
}
