//! The producer API expressed over the `pushgate.v1` proto types, shared by
//! the gRPC and the HTTP adapters so each call's logic exists once: convert the
//! request into core terms, call the [`Broker`] (or, for `Stats`, the
//! [`Hub`]), convert the result back.
//!
//! A call awaits only the broker: the in-process broker answers at once.
//! Nothing here knows tonic or axum; an adapter turns [`ApiError::code`] into
//! its own status.

mod error;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use error::{ApiError, Code};

use crate::core::hub::{MAX_REQUEST_ID_BYTES, MAX_USER_ID_BYTES, check_length};
use crate::core::{Broker, Control, Hub, Payload, Pending, Published, Push, PushError, validate_event, write_through};
use crate::proto::{
    BroadcastReply, BroadcastRequest, DisconnectReply, DisconnectRequest, OnlineReply, OnlineRequest, PushBatchReply,
    PushBatchRequest, PushReply, PushRequest, StatsReply, StatsRequest, broadcast_request, push_request,
};

/// What the producer API works on: this node's hub and the broker it shares
/// the cluster through.
#[derive(Clone)]
pub struct Node {
    /// This node's connections.
    pub hub: Arc<Hub>,
    /// What is cluster-wide.
    pub broker: Arc<dyn Broker>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("node_id", &self.broker.node_id()).finish_non_exhaustive()
    }
}

/// Bytes a single push may take on the wire beyond its payload (user id,
/// event, request id, idempotency key, framing).
pub const PUSH_OVERHEAD_BYTES: usize = 16 * 1024;

/// Pushes one batch may carry at full payload size before its decoded size
/// limit is reached; smaller pushes fit in greater numbers.
pub const BATCH_PUSHES_AT_MAX_SIZE: usize = 64;

/// The largest encoded `PushRequest` worth decoding: a payload at the
/// `--max-message-bytes` limit plus [`PUSH_OVERHEAD_BYTES`]. A payload just
/// over the limit still decodes, so it is refused by validation with a message
/// naming the field rather than by the decoder.
pub fn max_push_bytes(hub: &Hub) -> usize {
    hub.config().max_message_bytes.saturating_add(PUSH_OVERHEAD_BYTES)
}

/// The largest encoded `PushBatchRequest` worth decoding (at least 4 MiB).
pub fn max_batch_bytes(hub: &Hub) -> usize {
    max_push_bytes(hub).saturating_mul(BATCH_PUSHES_AT_MAX_SIZE).max(4 << 20)
}

/// Publishes one core push: the one place every producer path (gRPC, the
/// `/v1` mirror, wserver's `/push`) validates and publishes. Costs one broker
/// publish; never waits on a connection. A broker that fans out on this node
/// at once (the in-process one) does so inside a
/// [`write_through`](crate::core::write_through) run: the frames are written
/// to idle connections from this thread, without waking their tasks.
pub fn publish(node: &Node, push: Push) -> Pending<'_, Result<Published, ApiError>> {
    write_through(|| node.broker.publish(push)).map(|published| published.map_err(|e| refused("push", e)))
}

/// `Push`: queues one message to the user's connections subscribed to its
/// event.
pub async fn push(node: &Node, mut request: PushRequest) -> Result<PushReply, ApiError> {
    let request_id = std::mem::take(&mut request.request_id);
    check_request_id("push", &request_id)?;
    publish(node, to_push(request)).await.map(|published| reply(published, request_id))
}

/// One push of a `PushStream` or `PushBatch`: like [`push`], but a failure
/// becomes the reply's `error` (with the request id echoed, unless it is the
/// id that is too long) instead of ending the call. The reply is ready at
/// once when the broker answers at once.
pub fn push_reply(node: &Node, mut request: PushRequest) -> Pending<'_, PushReply> {
    let request_id = std::mem::take(&mut request.request_id);
    if let Err(e) = check_request_id("push", &request_id) {
        return Pending::ready(PushReply { error: Some(e.to_proto()), ..Default::default() });
    }
    publish(node, to_push(request)).map(|published| match published {
        Ok(published) => reply(published, request_id),
        Err(e) => PushReply { request_id, error: Some(e.to_proto()), ..Default::default() },
    })
}

/// Refuses a `request_id` over [`MAX_REQUEST_ID_BYTES`]: the gateway echoes
/// it, so it is bounded like the other ids.
fn check_request_id(call: &'static str, request_id: &str) -> Result<(), ApiError> {
    check_length("request_id", request_id, MAX_REQUEST_ID_BYTES).map_err(|e| refused(call, e))
}

/// The reply to an accepted push.
fn reply(published: Published, request_id: String) -> PushReply {
    PushReply {
        delivered: published.delivered,
        seq: published.seq,
        request_id,
        error: None,
        duplicate: published.duplicate,
        nodes: published.nodes,
    }
}

/// `PushBatch`: one reply per push, in order; a failing push does not stop
/// the others.
pub async fn push_batch(node: &Node, request: PushBatchRequest) -> PushBatchReply {
    let mut replies = Vec::with_capacity(request.pushes.len());
    for push in request.pushes {
        replies.push(push_reply(node, push).await);
    }
    PushBatchReply { replies }
}

/// `Broadcast`: one delivery, shared by every connection subscribed to the
/// event (only those of `user_ids` when given). Without `user_ids` it walks
/// every user of the hub.
pub async fn broadcast(node: &Node, request: BroadcastRequest) -> Result<BroadcastReply, ApiError> {
    check_request_id("broadcast", &request.request_id)?;
    for user in &request.user_ids {
        check_length("user_ids", user, MAX_USER_ID_BYTES).map_err(|e| refused("broadcast", e))?;
    }
    let payload = match request.payload {
        Some(broadcast_request::Payload::Message(text)) => Payload::text(text),
        Some(broadcast_request::Payload::Data(data)) => Payload::Binary(data),
        None => Payload::text(""),
    };
    validate_event(&request.event).map_err(|e| refused("broadcast", PushError::BadEvent(e)))?;
    node.hub.validate_payload(&payload).map_err(|e| refused("broadcast", e))?;
    let control = Control::Broadcast { event: request.event, payload, users: request.user_ids };
    match node.broker.control(control).await {
        Ok(delivered) => Ok(BroadcastReply { delivered, request_id: request.request_id }),
        Err(e) => Err(refused("broadcast", e)),
    }
}

/// `Disconnect`: closes the user's connections (only those subscribed to
/// `event` when set) with 4502. An explicitly empty `event` is refused rather
/// than taken as "all events".
pub async fn disconnect(node: &Node, request: DisconnectRequest) -> Result<DisconnectReply, ApiError> {
    if request.user_id.is_empty() {
        return Err(refused("disconnect", PushError::EmptyUser));
    }
    check_length("user_id", &request.user_id, MAX_USER_ID_BYTES).map_err(|e| refused("disconnect", e))?;
    if let Some(event) = &request.event {
        validate_event(event).map_err(|e| refused("disconnect", PushError::BadEvent(e)))?;
    }
    let control = Control::Disconnect { user: request.user_id, event: request.event };
    let closed = node.broker.control(control).await.map_err(|e| refused("disconnect", e))?;
    Ok(DisconnectReply { closed })
}

/// `Online`: live connections of each requested user (0 for none).
pub async fn online(node: &Node, request: OnlineRequest) -> Result<OnlineReply, ApiError> {
    for user in &request.user_ids {
        check_length("user_ids", user, MAX_USER_ID_BYTES).map_err(|e| refused("online", e))?;
    }
    let counts = node.broker.online(&request.user_ids).await.map_err(|e| refused("online", e.into()))?;
    Ok(OnlineReply { connections: request.user_ids.into_iter().zip(counts).collect::<HashMap<_, _>>() })
}

/// `Stats`: this node's counters, read without locking.
pub fn stats(node: &Node, _request: StatsRequest) -> StatsReply {
    let s = node.hub.stats();
    StatsReply {
        connections: s.connections,
        users: s.users,
        subscriptions: s.subscriptions,
        pushes: s.pushes,
        deliveries: s.deliveries,
        drops: s.drops,
        broadcasts: s.broadcasts,
        node_id: node.broker.node_id().to_owned(),
    }
}

/// The core push a request asks for. Moves the payload: a `message` becomes
/// text without copying, `data` stays the same `Bytes`.
pub fn to_push(request: PushRequest) -> Push {
    let payload = match request.payload {
        Some(push_request::Payload::Message(text)) => Payload::text(text),
        Some(push_request::Payload::Data(data)) => Payload::Binary(data),
        None => Payload::text(""),
    };
    let ttl = (request.ttl_ms > 0).then(|| Duration::from_millis(request.ttl_ms));
    let idempotency_key = (!request.idempotency_key.is_empty()).then_some(request.idempotency_key);
    Push { user_id: request.user_id, event: request.event, payload, ttl, idempotency_key }
}

/// Logs a refused call (at debug: a producer's bad request is its bug, and
/// logging each at a higher level would let it flood the log) and wraps it.
fn refused(call: &'static str, error: PushError) -> ApiError {
    let error = ApiError::from(error);
    tracing::debug!(call, code = error.code().name(), %error, "producer call refused");
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::HubConfig;
    use bytes::Bytes;
    use futures_util::FutureExt as _;

    /// The answer of a call through the in-process broker, which is ready
    /// when first polled.
    fn now<T>(call: impl std::future::Future<Output = T>) -> T {
        call.now_or_never().expect("the in-process broker answers at once")
    }

    fn request(user: &str, event: &str, message: &str) -> PushRequest {
        PushRequest {
            user_id: user.into(),
            event: event.into(),
            payload: Some(push_request::Payload::Message(message.into())),
            request_id: "r1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn converts_payloads_and_ttl() {
        let mut r = request("u", "e", "hi");
        r.ttl_ms = 1500;
        let p = to_push(r);
        assert_eq!((p.payload, p.ttl), (Payload::text("hi"), Some(Duration::from_millis(1500))));
        let r = PushRequest { payload: Some(push_request::Payload::Data(Bytes::from_static(b"\0\x01"))), ..r_empty() };
        assert_eq!(to_push(r).payload, Payload::Binary(Bytes::from_static(b"\0\x01")));
        assert_eq!(to_push(r_empty()).payload, Payload::text(""));
        assert_eq!(to_push(r_empty()).ttl, None);
    }

    fn r_empty() -> PushRequest {
        PushRequest { user_id: "u".into(), event: "e".into(), ..Default::default() }
    }

    #[test]
    fn failures_name_the_field() {
        let hub = Hub::new(HubConfig { max_message_bytes: 4, ..HubConfig::default() });
        let node = Node { hub: Arc::clone(&hub), broker: crate::broker::memory(&hub, "test".into()) };
        let err = |r| now(push(&node, r)).expect_err("refused");
        assert!(err(request("", "e", "x")).to_string().contains("user_id"));
        assert!(err(request("u", "", "x")).to_string().contains("event"));
        assert!(err(request("u", "a b", "x")).to_string().contains("event"));
        assert!(err(request("u", "e", "too long")).to_string().contains("message"));
        let reply = now(push_reply(&node, request("", "e", "x")));
        assert_eq!((reply.request_id.as_str(), reply.error.map(|e| e.code)), ("r1", Some(3)));
        let long = "x".repeat(257);
        assert!(err(request(&long, "e", "x")).to_string().contains("user_id"));
        let keyed = PushRequest { idempotency_key: long.clone(), ..request("u", "e", "x") };
        assert!(err(keyed).to_string().contains("idempotency_key"));
        let tagged = PushRequest { request_id: long.clone(), ..request("u", "e", "x") };
        assert!(err(tagged.clone()).to_string().contains("request_id"));
        let reply = now(push_reply(&node, tagged));
        assert_eq!((reply.request_id.as_str(), reply.error.map(|e| e.code)), ("", Some(3)));
        let at_limit = "x".repeat(256);
        let fits = PushRequest {
            idempotency_key: at_limit.clone(),
            request_id: at_limit.clone(),
            ..request(&at_limit, "e", "x")
        };
        assert!(now(push(&node, fits)).is_ok());
        let wide =
            BroadcastRequest { event: "e".into(), user_ids: vec!["u".into(), long.clone()], ..Default::default() };
        assert!(now(broadcast(&node, wide)).expect_err("refused").to_string().contains("user_ids"));
        let gone = DisconnectRequest { user_id: long, event: None };
        assert_eq!(now(disconnect(&node, gone)).map_err(|e| e.code()), Err(Code::InvalidArgument));
        let bad = DisconnectRequest { user_id: "u".into(), event: Some(String::new()) };
        assert_eq!(now(disconnect(&node, bad)).map_err(|e| e.code()), Err(Code::InvalidArgument));
        hub.begin_shutdown();
        assert_eq!(err(request("u", "e", "x")).code(), Code::Unavailable);
    }
}
