//! `POST /v1/{push,push_batch,broadcast,disconnect,online,stats}`: the gRPC
//! calls as JSON, for curl users. Bodies and replies use the proto3 JSON
//! mapping (pbjson: `user_id` and `userId` both accepted, 64-bit integers as
//! strings, default values omitted); an empty body is the empty message.
//! Errors are `{"code":"INVALID_ARGUMENT","message":"..."}` with the HTTP
//! status matching the gRPC code.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use super::{Shared, guarded, single_push_limit};
use crate::api::{self, ApiError, Code};
use crate::proto::{BroadcastReply, DisconnectReply, OnlineReply, PushBatchReply, PushReply, StatsReply, StatsRequest};

/// Growth allowed for a whole batch written as JSON: base64 and ordinary
/// text stay well within it; a batch of control characters must be split.
const BATCH_JSON_FACTOR: usize = 2;

/// The `/v1/*` routes, behind the producer key. The key check is a route
/// layer of each method router, so a wrong method gets 405 without it.
pub(super) fn routes(shared: &Arc<Shared>) -> Router {
    let single = || single_push_limit(&shared.node.hub);
    let batch = DefaultBodyLimit::max(api::max_batch_bytes(&shared.node.hub).saturating_mul(BATCH_JSON_FACTOR));
    let guarded = |route: MethodRouter<Arc<Shared>>, limit| guarded(shared, route, limit, unauthenticated);
    Router::new()
        .route("/v1/push", guarded(post(push), single()))
        .route("/v1/push_batch", guarded(post(push_batch), batch))
        .route("/v1/broadcast", guarded(post(broadcast), single()))
        .route("/v1/disconnect", guarded(post(disconnect), single()))
        .route("/v1/online", guarded(post(online), single()))
        .route("/v1/stats", guarded(post(stats), single()))
        .with_state(Arc::clone(shared))
}

/// Why a `/v1/*` call failed.
#[derive(Debug, thiserror::Error)]
enum MirrorError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("request body: {0}")]
    Read(#[from] BytesRejection),
    #[error("request body: {0}")]
    Json(#[from] serde_json::Error),
}

impl MirrorError {
    fn code(&self) -> Code {
        match self {
            MirrorError::Api(e) => e.code(),
            MirrorError::Read(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Code::ResourceExhausted
            }
            MirrorError::Read(_) | MirrorError::Json(_) => Code::InvalidArgument,
        }
    }
}

/// The body of an error reply.
#[derive(serde::Serialize)]
struct ErrorBody {
    code: &'static str,
    message: String,
}

/// The HTTP status for a gRPC code, by exhaustive match.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::ResourceExhausted => StatusCode::PAYLOAD_TOO_LARGE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl IntoResponse for MirrorError {
    fn into_response(self) -> Response {
        match &self {
            MirrorError::Api(_) => {} // logged where it was refused
            MirrorError::Read(_) | MirrorError::Json(_) => tracing::debug!(error = %self, "/v1 body refused"),
        }
        let code = self.code();
        (http_status(code), Json(ErrorBody { code: code.name(), message: self.to_string() })).into_response()
    }
}

/// The JSON 401 of a call without a valid key.
fn unauthenticated() -> Response {
    MirrorError::Api(ApiError::Unauthenticated).into_response()
}

/// Decodes a proto3-JSON body; an empty (or blank) body is `T::default()`.
fn decode<T: DeserializeOwned + Default>(body: Result<Bytes, BytesRejection>) -> Result<T, MirrorError> {
    let body = body?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    Ok(serde_json::from_slice(&body)?)
}

type Body = Result<Bytes, BytesRejection>;
type Reply<T> = Result<Json<T>, MirrorError>;

async fn push(State(s): State<Arc<Shared>>, body: Body) -> Reply<PushReply> {
    Ok(Json(api::push(&s.node, decode(body)?).await?))
}

async fn push_batch(State(s): State<Arc<Shared>>, body: Body) -> Reply<PushBatchReply> {
    Ok(Json(api::push_batch(&s.node, decode(body)?).await))
}

async fn broadcast(State(s): State<Arc<Shared>>, body: Body) -> Reply<BroadcastReply> {
    Ok(Json(api::broadcast(&s.node, decode(body)?).await?))
}

async fn disconnect(State(s): State<Arc<Shared>>, body: Body) -> Reply<DisconnectReply> {
    Ok(Json(api::disconnect(&s.node, decode(body)?).await?))
}

async fn online(State(s): State<Arc<Shared>>, body: Body) -> Reply<OnlineReply> {
    Ok(Json(api::online(&s.node, decode(body)?).await?))
}

async fn stats(State(s): State<Arc<Shared>>, body: Body) -> Reply<StatsReply> {
    Ok(Json(api::stats(&s.node, decode::<StatsRequest>(body)?)))
}
