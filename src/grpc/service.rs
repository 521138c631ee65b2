//! `PushService` over the node: each handler converts → calls
//! [`crate::api`] → converts.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use super::decode_limits::over_limit;
use crate::api::{self, ApiError, Code, Node};
use crate::proto::push_service_server::PushService;
use crate::proto::{
    BroadcastReply, BroadcastRequest, DisconnectReply, DisconnectRequest, OnlineReply, OnlineRequest, PushBatchReply,
    PushBatchRequest, PushReply, PushRequest, StatsReply, StatsRequest,
};

/// The `PushService` implementation: a handle on the node.
#[derive(Debug, Clone)]
pub(super) struct NodePushService {
    node: Arc<Node>,
}

impl NodePushService {
    /// A service pushing through `node`.
    pub(super) fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

/// The tonic status for an API error, by exhaustive match on its code.
pub(super) fn status(error: &ApiError) -> Status {
    let code = match error.code() {
        Code::InvalidArgument => tonic::Code::InvalidArgument,
        Code::ResourceExhausted => tonic::Code::ResourceExhausted,
        Code::Unauthenticated => tonic::Code::Unauthenticated,
        Code::Unavailable => tonic::Code::Unavailable,
    };
    Status::new(code, error.to_string())
}

/// The reply stream of `PushStream`: the request stream mapped one to one.
type Replies = Pin<Box<dyn Stream<Item = Result<PushReply, Status>> + Send>>;

#[tonic::async_trait]
impl PushService for NodePushService {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushReply>, Status> {
        api::push(&self.node, request.into_inner()).await.map(Response::new).map_err(|e| status(&e))
    }

    type PushStreamStream = Replies;

    /// Maps the request stream lazily: a request is read (and pushed) only
    /// when the transport asks for the next reply, so a producer that stops
    /// reading replies is held back by HTTP/2 flow control. A transport or
    /// decode error on the request stream ends the reply stream with it (an
    /// oversized request as RESOURCE_EXHAUSTED).
    async fn push_stream(&self, request: Request<Streaming<PushRequest>>) -> Result<Response<Replies>, Status> {
        let node = Arc::clone(&self.node);
        let replies = request.into_inner().then(move |next| {
            let node = Arc::clone(&node);
            async move {
                match next {
                    Ok(request) => Ok(api::push_reply(&node, request).await),
                    Err(status) => Err(over_limit(status)),
                }
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn push_batch(&self, request: Request<PushBatchRequest>) -> Result<Response<PushBatchReply>, Status> {
        Ok(Response::new(api::push_batch(&self.node, request.into_inner()).await))
    }

    async fn broadcast(&self, request: Request<BroadcastRequest>) -> Result<Response<BroadcastReply>, Status> {
        api::broadcast(&self.node, request.into_inner()).await.map(Response::new).map_err(|e| status(&e))
    }

    async fn disconnect(&self, request: Request<DisconnectRequest>) -> Result<Response<DisconnectReply>, Status> {
        api::disconnect(&self.node, request.into_inner()).await.map(Response::new).map_err(|e| status(&e))
    }

    async fn online(&self, request: Request<OnlineRequest>) -> Result<Response<OnlineReply>, Status> {
        api::online(&self.node, request.into_inner()).await.map(Response::new).map_err(|e| status(&e))
    }

    async fn stats(&self, request: Request<StatsRequest>) -> Result<Response<StatsReply>, Status> {
        Ok(Response::new(api::stats(&self.node, request.into_inner())))
    }
}
