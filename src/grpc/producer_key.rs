//! Producer authentication for PushService: `authorization: Bearer <key>`
//! metadata, checked in constant time by [`ProducerKeys`].

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::service::status;
use crate::api::ApiError;
use crate::core::ProducerKeys;
use crate::net::bearer;
use crate::net::throttle::KeyRefusals;

/// A tonic interceptor that refuses PushService calls without a valid
/// producer key with UNAUTHENTICATED, counting each and logging them at most
/// once per interval ([`KeyRefusals`]). With no key configured every call
/// passes. Cloning shares the keys and the count.
#[derive(Debug, Clone)]
pub(crate) struct ProducerKeyCheck {
    keys: Arc<ProducerKeys>,
    refusals: KeyRefusals,
}

impl ProducerKeyCheck {
    /// Checks calls against `keys`, reporting refusals to `refusals`.
    pub(super) fn new(keys: ProducerKeys, refusals: KeyRefusals) -> Self {
        Self { keys: Arc::new(keys), refusals }
    }
}

impl Interceptor for ProducerKeyCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        if self.keys.check(header.and_then(bearer)) {
            Ok(request)
        } else {
            self.refusals.refused();
            Err(status(&ApiError::Unauthenticated))
        }
    }
}
