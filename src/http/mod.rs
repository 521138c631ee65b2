//! The internal listener's HTTP side: wserver's `POST /push`, the `/v1/*` JSON
//! mirror of the gRPC API, `/metrics`, `/healthz`, `/readyz`; and the server
//! loop that serves HTTP/1.1 and HTTP/2 (gRPC) on one port.
//!
//! Producer routes need `authorization: Bearer <key>` when keys are
//! configured; `/metrics` and the health routes never do (scrapers and load
//! balancers; they reveal counts, no user data). A wrong method gets 405 before
//! the key is looked at, as in wserver.

mod deadlines;
pub(crate) mod fuzzing;
mod http1;
mod listener;
mod mirror;
mod reply;
mod wserver;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};

use crate::api::Node;
use crate::core::{Hub, ProducerKeys, ProducerTransport};
use crate::net::throttle::KeyRefusals;
use crate::net::{bearer, header_text};

pub(crate) use listener::{Direct, Services, Timeouts, serve};
pub(crate) use wserver::Http1Push;

/// What every route handler shares: the node, the producer keys, and the
/// count of calls refused for want of one.
#[derive(Debug)]
struct Shared {
    node: Arc<Node>,
    keys: ProducerKeys,
    refusals: KeyRefusals,
}

impl Shared {
    /// The routes' state for one listener (`transport` labels refusals).
    fn new(node: Arc<Node>, keys: ProducerKeys, transport: ProducerTransport) -> Arc<Self> {
        let refusals = KeyRefusals::new(Arc::clone(&node.hub), transport);
        Arc::new(Self { node, keys, refusals })
    }

    /// True when `headers` carry a valid producer key, or none is required;
    /// a refusal is counted (and logged at most once per interval,
    /// [`KeyRefusals`]). Constant time in the key (see [`ProducerKeys::check`]).
    fn admits(&self, headers: &HeaderMap) -> bool {
        self.admits_key(headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes))
    }

    /// [`Self::admits`], given the first `Authorization` header's value.
    fn admits_key(&self, authorization: Option<&[u8]>) -> bool {
        let admitted = self.keys.check(authorization.and_then(header_text).and_then(bearer));
        if !admitted {
            self.refusals.refused();
        }
        admitted
    }
}

/// Worst-case growth of a payload once written as a JSON string (`\u00XX`).
const JSON_ESCAPE_FACTOR: usize = 6;

/// The body limit of a route taking one push (or one request of its size).
fn single_push_limit(hub: &Hub) -> DefaultBodyLimit {
    DefaultBodyLimit::max(single_push_bytes(hub))
}

/// The largest body of one push written as JSON, in bytes.
fn single_push_bytes(hub: &Hub) -> usize {
    crate::api::max_push_bytes(hub).saturating_mul(JSON_ESCAPE_FACTOR)
}

/// `route` behind the producer key and a body `limit`. The key check is a
/// route layer of the method router, so a wrong method gets 405 before it (as
/// in wserver); a missing or wrong key is counted and logged at most once per
/// interval ([`KeyRefusals`]) and answered by `refusal`, which each route
/// family words its own way.
fn guarded(
    shared: &Arc<Shared>,
    route: MethodRouter<Arc<Shared>>,
    limit: DefaultBodyLimit,
    refusal: fn() -> Response,
) -> MethodRouter<Arc<Shared>> {
    let shared = Arc::clone(shared);
    let check = move |request: Request, next: Next| {
        let shared = Arc::clone(&shared);
        async move {
            if shared.admits(request.headers()) {
                return next.run(request).await;
            }
            refusal()
        }
    };
    route.route_layer(middleware::from_fn(check)).layer(limit)
}

/// The HTTP side of the internal port.
pub(crate) struct Internal {
    /// Every HTTP route. It sets no fallback, so it merges with the gRPC
    /// routes (whose fallback answers gRPC UNIMPLEMENTED).
    pub(crate) router: Router,
    /// wserver's `POST /push` over HTTP/1.1, which the listener serves
    /// ahead of the router.
    pub(crate) push: Http1Push,
}

/// The HTTP routes of the internal port.
pub(crate) fn internal(node: Arc<Node>, keys: ProducerKeys) -> Internal {
    let shared = Shared::new(node, keys, ProducerTransport::Http);
    let health =
        Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics));
    let router = health.with_state(Arc::clone(&shared)).merge(wserver::routes(&shared)).merge(mirror::routes(&shared));
    Internal { router, push: Http1Push::new(&shared) }
}

/// wserver's `POST /push` alone, for the public listener of a wserver
/// drop-in (`--push-on-public`); the key check is the same as on the
/// internal port, and the configuration makes a key mandatory there.
pub(crate) fn public_push_router(node: Arc<Node>, keys: ProducerKeys) -> Router {
    wserver::routes(&Shared::new(node, keys, ProducerTransport::PublicHttp))
}

/// `GET /healthz`: the process answers.
async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 `ready`, or 503 once shutdown has begun or while the
/// broker cannot take pushes.
async fn readyz(State(shared): State<Arc<Shared>>) -> (StatusCode, &'static str) {
    if shared.node.hub.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else if !shared.node.broker.is_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "broker unavailable")
    } else {
        (StatusCode::OK, "ready")
    }
}

/// `GET /metrics`: the hub's metrics in the OpenMetrics text format.
async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, shared.node.hub.metrics().registry()) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Err(error) => {
            tracing::error!(%error, "/metrics: encoding failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
