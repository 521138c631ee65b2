//! Producer authentication for PushService: `authorization: Bearer <key>`
//! metadata, checked in constant time by [`ApiKeys`].

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::service::status;
use crate::api::ApiError;
use crate::core::ApiKeys;

/// A tonic interceptor that refuses PushService calls without a valid
/// producer key with UNAUTHENTICATED. With no key configured every call
/// passes. Cloning shares the keys.
#[derive(Debug, Clone)]
pub struct ProducerAuth {
    keys: Arc<ApiKeys>,
}

impl ProducerAuth {
    /// Checks calls against `keys`.
    pub fn new(keys: ApiKeys) -> Self {
        Self { keys: Arc::new(keys) }
    }
}

impl Interceptor for ProducerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        if self.keys.check_header(header) {
            Ok(request)
        } else {
            tracing::warn!("gRPC producer call without a valid key refused");
            Err(status(&ApiError::Unauthenticated))
        }
    }
}
