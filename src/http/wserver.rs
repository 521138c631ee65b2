//! wserver's `POST /push`, byte for byte: request `{"userId","event","message"}`
//! (keys matched case-insensitively, unknown keys ignored, as Go's
//! `encoding/json` does), reply `message sent to N clients`; 400
//! `request data illegal` for any bad body, 413 for one over the size limit,
//! 401 without a valid key, 405 for
//! other methods (docs/api.md, "wserver's POST /push").

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer as _};

use super::deadlines::in_time;
use super::reply::Reply;
use super::{Shared, guarded, single_push_bytes, single_push_limit};
use crate::api::{self, Code};
use crate::core::{Payload, Push};

/// wserver's answer to any request it cannot use.
const ILLEGAL: &str = "request data illegal";

/// The route's path.
const PATH: &str = "/push";

/// `POST /push`, behind the producer key.
pub(super) fn routes(shared: &Arc<Shared>) -> Router {
    let refusal = || unauthorized().into_response();
    let push = guarded(shared, post(push), single_push_limit(&shared.node.hub), refusal);
    Router::new().route(PATH, push).with_state(Arc::clone(shared))
}

/// `POST /push` over HTTP/1.1 on the internal port, served ahead of the
/// router: wserver's producers' hot path. The listener's own HTTP/1.1 path
/// (`http1`) uses its key check and answer for plain requests; [`Self::call`]
/// serves those that reach hyper, without the router's matching, its
/// per-request boxes and the two middleware layers. The answers are the
/// route's, byte for byte (the route behind the request body deadline: the
/// producer key, then the body within its limit, then the push). Any other
/// method or path goes to the router as before.
pub(crate) struct Http1Push {
    shared: Arc<Shared>,
    /// The route's body limit ([`single_push_limit`]).
    limit: usize,
}

impl Http1Push {
    pub(super) fn new(shared: &Arc<Shared>) -> Self {
        Self { shared: Arc::clone(shared), limit: single_push_bytes(&shared.node.hub) }
    }

    /// Whether `request` is a `POST /push`, which [`Self::call`] answers.
    pub(crate) fn claims<B>(&self, request: &Request<B>) -> bool {
        request.method() == Method::POST && request.uri().path() == PATH
    }

    /// Answers `request`, read and answered within `timeout` of the end of
    /// its head, else 408 and the connection closes (as the router's
    /// HTTP/1 requests are, see `deadlines::read_in_time`).
    pub(crate) fn call(&self, request: Request<Incoming>, timeout: Duration) -> BoxFuture<'static, Response> {
        let shared = Arc::clone(&self.shared);
        let limit = self.limit;
        Box::pin(async move {
            if !shared.admits(request.headers()) {
                return unauthorized().into_response();
            }
            let answer = async {
                let reply = match Limited::new(request.into_body(), limit).collect().await {
                    Ok(body) => answer(&shared, &body.to_bytes()).await,
                    Err(error) if error.is::<LengthLimitError>() => too_large(),
                    Err(_) => illegal(),
                };
                reply.into_response()
            };
            in_time(timeout, answer).await
        })
    }

    /// The largest body a push may have.
    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    /// `Shared::admits_key` for the listener's own path, which has no
    /// `Shared` of its own: whether a request whose first `Authorization`
    /// header is `authorization` may push; a refusal is counted.
    pub(super) fn admits_key(&self, authorization: Option<&[u8]>) -> bool {
        self.shared.admits_key(authorization)
    }

    /// The answer to a push with this `body`, having made the push.
    pub(super) async fn answer(&self, body: &[u8]) -> Reply {
        answer(&self.shared, body).await
    }
}

/// The 401 of a push without a valid key: an empty body, as wserver's.
/// The key check answers it ahead of the handler.
pub(super) fn unauthorized() -> Reply {
    Reply::status(StatusCode::UNAUTHORIZED).with(header::WWW_AUTHENTICATE, "Bearer").length_last()
}

/// The route's handler.
async fn push(State(shared): State<Arc<Shared>>, body: Result<Bytes, BytesRejection>) -> Reply {
    match body {
        Ok(body) => answer(&shared, &body).await,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        Err(_) => illegal(),
    }
}

/// Converts wserver's body → `api::publish` → wserver's reply.
async fn answer(shared: &Shared, body: &[u8]) -> Reply {
    let Some(push) = parse(body) else {
        return illegal();
    };
    match api::publish(&shared.node, push).await {
        Ok(reply) => Reply::text(StatusCode::OK, format!("message sent to {} clients", reply.delivered)),
        Err(error) => match error.code() {
            Code::InvalidArgument => illegal(),
            Code::ResourceExhausted => Reply::status(StatusCode::PAYLOAD_TOO_LARGE),
            Code::Unauthenticated => Reply::status(StatusCode::UNAUTHORIZED),
            Code::Unavailable => Reply::text(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
        },
    }
}

fn too_large() -> Reply {
    Reply::text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
}

fn illegal() -> Reply {
    Reply::text(StatusCode::BAD_REQUEST, ILLEGAL)
}

/// The push a wserver body asks for, or `None` when wserver would answer
/// 400: not a JSON object, a field of the wrong type, or an empty message.
/// Like Go's decoder it reads the first JSON value and ignores what follows.
/// An empty `userId` or `event` is refused by the hub's validation, which
/// every producer path shares, and answered 400 the same way.
pub(super) fn parse(body: &[u8]) -> Option<Push> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let fields = (&mut de).deserialize_map(FieldsVisitor).ok()?;
    if fields.message.is_empty() {
        return None;
    }
    Some(Push::new(fields.user_id, fields.event, Payload::text(fields.message)))
}

/// wserver's `pushMessage`.
#[derive(Default)]
struct Fields {
    user_id: String,
    event: String,
    message: String,
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"{"userId","event","message"}"#)
    }

    /// Keys match case-insensitively; the last of duplicates wins; `null`
    /// leaves a field as it was — all as Go's `encoding/json`.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut fields = Fields::default();
        while let Some(Key(key)) = map.next_key()? {
            let slot = if key.eq_ignore_ascii_case("userId") {
                &mut fields.user_id
            } else if key.eq_ignore_ascii_case("event") {
                &mut fields.event
            } else if key.eq_ignore_ascii_case("message") {
                &mut fields.message
            } else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if let Some(value) = map.next_value::<Option<String>>()? {
                *slot = value;
            }
        }
        Ok(fields)
    }
}

/// A key, borrowed from the body unless it holds escapes.
#[derive(Deserialize)]
#[serde(transparent)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_go() {
        let r = parse(br#"{"USERID":"u","Event":"e","message":"m","extra":[1,{}]} trailing"#).expect("parses");
        assert_eq!((r.user_id.as_str(), r.event.as_str()), ("u", "e"));
        assert_eq!(r.payload, Payload::text("m"));
        assert!(parse(br#"{"userId":"u","event":"e","message":"m","userid":null}"#).is_some());
        let escaped = parse(br#"{"user\u0049d":"u","\u0065vent":"e","message":"m"}"#).expect("escaped keys");
        assert_eq!((escaped.user_id.as_str(), escaped.event.as_str()), ("u", "e"));
        assert!(parse(br#"{"userId":"u","event":"e","message":""}"#).is_none());
        assert!(parse(br#"{"userId":"u","event":"e"}"#).is_none());
        assert!(parse(br#"{"userId":1,"event":"e","message":"m"}"#).is_none());
        assert!(parse(br#"["u","e","m"]"#).is_none());
        assert!(parse(b"not json").is_none());
    }
}
