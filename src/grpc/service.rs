//! `PushService` over the node: each handler converts → calls
//! [`crate::api`] → converts.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt as _, stream};
use tonic::{Request, Response, Status, Streaming};

use super::decode_limits::over_limit;
use crate::api::{self, ApiError, Code, Node};
use crate::core::{Pending, write_through};
use crate::proto::push_service_server::PushService;
use crate::proto::{
    BroadcastReply, BroadcastRequest, DisconnectReply, DisconnectRequest, OnlineReply, OnlineRequest, PushBatchReply,
    PushBatchRequest, PushReply, PushRequest, StatsReply, StatsRequest,
};

/// The `PushService` implementation: a handle on the node.
#[derive(Debug, Clone)]
pub(crate) struct NodePushService {
    node: Arc<Node>,
}

impl NodePushService {
    /// A service pushing through `node`.
    pub(super) fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

/// Requests of a `PushStream` published as one run at most.
const STREAM_RUN: usize = 64;

/// Where a run of a stream's requests stopped.
enum Stop<'a> {
    /// Every request of the run is answered, or the stream failed.
    End,
    /// The broker answers this one later: wait for it, then go on.
    Wait(Pending<'a, PushReply>),
}

/// Publishes a run of a stream's requests, in order. Those the broker takes
/// at once (the in-process broker: all of them) are fanned out in one
/// [`write_through`] run, so a connection several of them reach gets them
/// in one write, and an idle one is written from this task.
async fn push_run(node: &Node, run: Vec<Result<PushRequest, Status>>) -> Vec<Result<PushReply, Status>> {
    let mut replies = Vec::with_capacity(run.len());
    let mut requests = run.into_iter();
    loop {
        let stop = write_through(|| {
            for next in requests.by_ref() {
                let request = match next {
                    Ok(request) => request,
                    Err(status) => {
                        replies.push(Err(over_limit(status)));
                        return Stop::End;
                    }
                };
                match api::push_reply(node, request).now() {
                    Ok(reply) => replies.push(Ok(reply)),
                    Err(waiting) => return Stop::Wait(waiting),
                }
            }
            Stop::End
        });
        match stop {
            Stop::Wait(waiting) => replies.push(Ok(waiting.await)),
            Stop::End => return replies,
        }
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

    /// Maps the request stream lazily: requests are read (and pushed) only
    /// when the transport asks for the next reply — at most [`STREAM_RUN`]
    /// of those already received at a time — so a producer that stops
    /// reading replies is held back by HTTP/2 flow control. A transport or
    /// decode error on the request stream ends the reply stream with it (an
    /// oversized request as RESOURCE_EXHAUSTED).
    async fn push_stream(&self, request: Request<Streaming<PushRequest>>) -> Result<Response<Replies>, Status> {
        let node = Arc::clone(&self.node);
        let replies = request.into_inner().ready_chunks(STREAM_RUN).then(move |run| {
            let node = Arc::clone(&node);
            async move { stream::iter(push_run(&node, run).await) }
        });
        Ok(Response::new(Box::pin(replies.flatten())))
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
