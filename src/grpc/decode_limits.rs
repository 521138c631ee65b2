//! Decoded message size limits per method. tonic sets one limit per service,
//! so PushService is served by two instances over the same handler: one for
//! `PushBatch` with room for many pushes, one for every other method sized
//! for a single push (`--max-message-bytes`; docs/api.md, "Limits").
//!
//! A request over its limit is refused by tonic's decoder with OUT_OF_RANGE;
//! [`over_limit`] turns that into RESOURCE_EXHAUSTED, the gRPC convention for
//! a message over the receive limit, with a message that names the flag. Unary
//! and batch calls are rewritten here, on their trailers-only response;
//! `PushStream` maps the error of its request stream with the same function.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt as _;
use futures_util::future::Map;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::server::NamedService;
use tonic::service::interceptor::{InterceptedService, ResponseBody};
use tower::ServiceExt as _;
use tower::util::Oneshot;

use super::producer_key::ProducerKeyCheck;
use super::service::NodePushService;
use crate::api;
use crate::proto::push_service_server::{PushServiceServer, SERVICE_NAME};

type Authed = InterceptedService<PushServiceServer<NodePushService>, ProducerKeyCheck>;

/// PushService with a per-method decode limit, routed by request path.
/// Cloning shares the handler (reference counts only).
#[derive(Clone)]
pub(super) struct SizedByMethod {
    single: Authed,
    batch: Authed,
}

impl SizedByMethod {
    /// Both instances over one `NodePushService` for `node`, behind `auth`.
    pub(super) fn new(node: Arc<api::Node>, auth: ProducerKeyCheck) -> Self {
        let single_limit = api::max_push_bytes(&node.hub);
        let batch_limit = api::max_batch_bytes(&node.hub);
        let producer = Arc::new(NodePushService::new(node));
        let server = |limit| {
            let server = PushServiceServer::from_arc(Arc::clone(&producer)).max_decoding_message_size(limit);
            InterceptedService::new(server, auth.clone())
        };
        Self { single: server(single_limit), batch: server(batch_limit) }
    }

    /// Serves one call with the instance its path asks for (a clone of it,
    /// made ready and called once), the oversized refusal rewritten.
    fn sized(&self, request: Request<Body>) -> SizedCall {
        let instance = if request.uri().path() == PUSH_BATCH_PATH { &self.batch } else { &self.single };
        instance.clone().oneshot(request).map(refused_as_too_large)
    }

    /// [`Self::sized`], answering with the body type of the router's routes:
    /// for the listener's calls made without the router.
    pub(super) fn answer(&self, request: Request<Body>) -> Answer {
        self.sized(request).map(as_routed)
    }
}

/// The future of [`SizedByMethod::sized`].
type SizedCall = Map<Oneshot<Authed, Request<Body>>, fn(Reply) -> Reply>;

/// The future of [`SizedByMethod::answer`].
pub(super) type Answer = Map<SizedCall, fn(Reply) -> Response<axum::body::Body>>;

/// A reply with the router's body type.
fn as_routed(reply: Reply) -> Response<axum::body::Body> {
    let Ok(response) = reply;
    response.map(axum::body::Body::new)
}

impl NamedService for SizedByMethod {
    const NAME: &'static str = SERVICE_NAME;
}

impl tower::Service<Request<Body>> for SizedByMethod {
    type Response = <Authed as tower::Service<Request<Body>>>::Response;
    type Error = Infallible;
    type Future = SizedCall;

    /// Always ready: each call readies its own clone of an instance.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        self.sized(request)
    }
}

type Reply = Result<Response<ResponseBody<Body>>, Infallible>;

/// Rewrites a trailers-only OUT_OF_RANGE answer (the decoder's refusal of an
/// oversized request) with [`over_limit`]; any other answer passes untouched.
/// PushService itself never answers OUT_OF_RANGE.
fn refused_as_too_large(reply: Reply) -> Reply {
    let Ok(mut response) = reply;
    let out_of_range = response.headers().get("grpc-status").is_some_and(|v| v.as_bytes() == b"11");
    if let Some(status) = Status::from_header_map(response.headers()).filter(|_| out_of_range) {
        // `add_header` replaces grpc-status and grpc-message; it fails only
        // on a message that cannot be a header, which ours always can.
        if let Err(error) = over_limit(status).add_header(response.headers_mut()) {
            tracing::error!(%error, "could not rewrite an oversized request's status");
        }
    }
    Ok(response)
}

/// RESOURCE_EXHAUSTED naming `--max-message-bytes` for the decoder's
/// OUT_OF_RANGE refusal of an oversized request (whose message gives the
/// request's size and the limit in bytes); any other status is returned as
/// it is.
pub(super) fn over_limit(status: Status) -> Status {
    if status.code() != tonic::Code::OutOfRange {
        return status;
    }
    let detail = status.message().trim_start_matches("Error, ");
    Status::resource_exhausted(format!("request too large (--max-message-bytes bounds each push): {detail}"))
}

/// The request path of `PushBatch`.
const PUSH_BATCH_PATH: &str = "/pushgate.v1.PushService/PushBatch";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_decoder_refusal_is_rewritten() {
        let refused = over_limit(Status::out_of_range("Error, decoded message length too large: found 9 bytes"));
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("--max-message-bytes"), "{}", refused.message());
        assert_eq!(over_limit(Status::invalid_argument("x")).code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn batch_path_names_the_service() {
        assert_eq!(PUSH_BATCH_PATH, format!("/{SERVICE_NAME}/PushBatch"));
    }
}
