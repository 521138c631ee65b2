//! Decoded message size limits per method. tonic sets one limit per service,
//! so PushService is served by two instances over the same handler: one for
//! `PushBatch` with room for many pushes, one for every other method sized
//! for a single push (SPEC §4.1, `--max-message-bytes`).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http::Request;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;

use super::auth::ProducerAuth;
use super::service::Producer;
use crate::api;
use crate::core::Hub;
use crate::proto::push_service_server::{PushServiceServer, SERVICE_NAME};

type Authed = InterceptedService<PushServiceServer<Producer>, ProducerAuth>;

/// PushService with a per-method decode limit, routed by request path.
/// Cloning shares the handler (reference counts only).
#[derive(Clone)]
pub struct ByMethod {
    single: Authed,
    batch: Authed,
}

impl ByMethod {
    /// Both instances over one `Producer` for `hub`, behind `auth`.
    pub fn new(hub: Arc<Hub>, auth: ProducerAuth) -> Self {
        let single_limit = api::max_push_bytes(&hub);
        let batch_limit = api::max_batch_bytes(&hub);
        let producer = Arc::new(Producer::new(hub));
        let server = |limit| {
            let server = PushServiceServer::from_arc(Arc::clone(&producer)).max_decoding_message_size(limit);
            InterceptedService::new(server, auth.clone())
        };
        Self { single: server(single_limit), batch: server(batch_limit) }
    }
}

impl NamedService for ByMethod {
    const NAME: &'static str = SERVICE_NAME;
}

impl tower::Service<Request<Body>> for ByMethod {
    type Response = <Authed as tower::Service<Request<Body>>>::Response;
    type Error = Infallible;
    type Future = <Authed as tower::Service<Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both are always ready (generated servers and interceptors hold no
        // capacity); polled anyway so the contract holds if that changes.
        let single = tower::Service::<Request<Body>>::poll_ready(&mut self.single, cx);
        let batch = tower::Service::<Request<Body>>::poll_ready(&mut self.batch, cx);
        match (single, batch) {
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Poll::Ready(Ok(())),
            (Poll::Ready(Err(e)), _) | (_, Poll::Ready(Err(e))) => Poll::Ready(Err(e)),
            _ => Poll::Pending,
        }
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if request.uri().path() == PUSH_BATCH_PATH { self.batch.call(request) } else { self.single.call(request) }
    }
}

/// The request path of `PushBatch`.
const PUSH_BATCH_PATH: &str = "/pushgate.v1.PushService/PushBatch";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_path_names_the_service() {
        assert_eq!(PUSH_BATCH_PATH, format!("/{SERVICE_NAME}/PushBatch"));
    }
}
