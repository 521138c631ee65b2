//! Producer authentication for PushService: `authorization: Bearer <key>`
//! metadata, checked in constant time by [`ProducerKeys`].

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::service::status;
use crate::api::ApiError;
use crate::core::ProducerKeys;
use crate::net::bearer;

/// A tonic interceptor that refuses PushService calls without a valid
/// producer key with UNAUTHENTICATED. With no key configured every call
/// passes. Cloning shares the keys.
#[derive(Debug, Clone)]
pub(super) struct ProducerKeyCheck {
    keys: Arc<ProducerKeys>,
}

impl ProducerKeyCheck {
    /// Checks calls against `keys`.
    pub(super) fn new(keys: ProducerKeys) -> Self {
        Self { keys: Arc::new(keys) }
    }
}

impl Interceptor for ProducerKeyCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        if self.keys.check(header.and_then(bearer)) {
            Ok(request)
        } else {
            tracing::warn!("gRPC producer call without a valid key refused");
            Err(status(&ApiError::Unauthenticated))
        }
    }
}
