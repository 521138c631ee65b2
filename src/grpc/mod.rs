//! The gRPC adapter: `pushgate.v1.PushService`, `grpc.health.v1.Health` and
//! reflection (v1 and v1alpha). Handlers convert → call the node → convert;
//! the logic of each call lives once, in [`crate::api`].

mod decode_limits;
mod producer_key;
mod service;

use std::sync::Arc;

use tonic::service::Routes;
use tonic_health::ServingStatus;

use crate::api::Node;
use crate::core::{ProducerKeys, ProducerTransport};
use crate::net::throttle::KeyRefusals;
use crate::proto::push_service_server::SERVICE_NAME;

use producer_key::ProducerKeyCheck;

/// The gRPC services as routes to merge into the internal listener, and the
/// health reporter that shutdown flips to NOT_SERVING.
pub(crate) struct GrpcServices {
    /// PushService, health and reflection, routed by service name; its
    /// fallback answers gRPC UNIMPLEMENTED to gRPC requests and 404 to others.
    pub routes: axum::Router,
    /// PushService alone, for the listener to call without the router.
    pub push: PushCalls,
    /// Health status of `""` and `pushgate.v1.PushService`.
    pub health: tonic_health::server::HealthReporter,
}

/// Builds the services over `node`; PushService requires `keys` when any is set
/// (health and reflection never do). Health starts SERVING for `""` and
/// `pushgate.v1.PushService`.
pub(crate) async fn services(node: Arc<Node>, keys: ProducerKeys) -> GrpcServices {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;
    health.set_service_status(SERVICE_NAME, ServingStatus::Serving).await;
    let refusals = KeyRefusals::new(Arc::clone(&node.hub), ProducerTransport::Grpc);
    let push = decode_limits::SizedByMethod::new(node, ProducerKeyCheck::new(keys, refusals));
    let mut routes = Routes::new(push.clone()).add_service(health_service);
    routes = add_reflection(routes);
    GrpcServices { routes: routes.into_axum_router().fallback(unknown_path), push: PushCalls(push), health }
}

/// PushService's calls, which the internal listener makes without the
/// router in front (its hot path); the same service is also routed, for
/// whatever reaches it otherwise.
pub(crate) struct PushCalls(decode_limits::SizedByMethod);

impl crate::http::Direct for PushCalls {
    type Future = decode_limits::Answer;

    fn claims(&self, path: &str) -> bool {
        claims(path)
    }

    fn call(&self, request: axum::http::Request<hyper::body::Incoming>) -> Self::Future {
        self.0.answer(request.map(tonic::body::Body::new))
    }
}

/// Whether `path` names a method of PushService (`/pushgate.v1.PushService/…`).
fn claims(path: &str) -> bool {
    path.strip_prefix('/').and_then(|p| p.strip_prefix(SERVICE_NAME)).is_some_and(|p| p.starts_with('/'))
}

/// Any path no service serves: gRPC UNIMPLEMENTED for a gRPC request, a plain
/// 404 for anyone else (a curl user mistyping `/v1/push` should not get a gRPC
/// trailer back).
async fn unknown_path(request: axum::extract::Request) -> axum::response::Response {
    let grpc = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        let status = tonic::Status::unimplemented(format!("{} is not served here", request.uri().path()));
        status.into_http::<axum::body::Body>()
    } else {
        axum::response::IntoResponse::into_response((axum::http::StatusCode::NOT_FOUND, "not found"))
    }
}

/// Adds reflection v1 and v1alpha, listing every service this port serves:
/// PushService, health and reflection itself. The descriptor sets are
/// compiled in, so building can only fail on a build defect; it is then
/// logged and reflection left out rather than failing the gateway.
fn add_reflection(mut routes: Routes) -> Routes {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    match builder().build_v1() {
        Ok(v1) => routes = routes.add_service(v1),
        Err(error) => tracing::error!(%error, "gRPC reflection v1 unavailable"),
    }
    match builder().build_v1alpha() {
        Ok(v1alpha) => routes = routes.add_service(v1alpha),
        Err(error) => tracing::error!(%error, "gRPC reflection v1alpha unavailable"),
    }
    routes
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_direct_path_claims_push_service_methods_only() {
        use super::claims;
        assert!(claims("/pushgate.v1.PushService/Push"));
        assert!(claims("/pushgate.v1.PushService/Nothing"), "its own UNIMPLEMENTED answers unknown methods");
        assert!(!claims("/pushgate.v1.PushServiceX/Push"));
        assert!(!claims("/pushgate.v1.PushService"));
        assert!(!claims("/grpc.health.v1.Health/Check"));
        assert!(!claims("/v1/push"));
    }
}
