//! The gRPC adapter: `pushgate.v1.PushService`, `grpc.health.v1.Health` and
//! reflection (v1 and v1alpha). Handlers convert → call the hub → convert.

use std::sync::Arc;

use crate::core::{ApiKeys, Hub};

/// The gRPC services as routes to merge into the internal listener, and the
/// health reporter that shutdown flips to NOT_SERVING.
pub struct GrpcServices {
    pub routes: axum::Router,
    pub health: tonic_health::server::HealthReporter,
}

/// Builds the services over `hub`; PushService requires `keys` when any is set.
pub async fn services(hub: Arc<Hub>, keys: ApiKeys) -> GrpcServices {
    let _ = (hub, keys);
    todo!("grpc adapter")
}
