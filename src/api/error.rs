//! Why a producer call failed, and which gRPC status code that is. The tonic
//! `Status` and the HTTP status are derived from [`Code`] in their adapters.

use crate::core::PushError;

/// The gRPC status codes the producer API answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// 3: a field is missing, malformed or too large.
    InvalidArgument,
    /// 8: the request is larger than the gateway reads.
    ResourceExhausted,
    /// 16: missing or wrong producer key.
    Unauthenticated,
    /// 14: the gateway is shutting down.
    Unavailable,
}

impl Code {
    /// The gRPC status code number, as carried in `PushError.code`.
    pub const fn number(self) -> i32 {
        match self {
            Code::InvalidArgument => 3,
            Code::ResourceExhausted => 8,
            Code::Unauthenticated => 16,
            Code::Unavailable => 14,
        }
    }

    /// The gRPC status code name (`INVALID_ARGUMENT`), as in the HTTP mirror's
    /// JSON errors.
    pub const fn name(self) -> &'static str {
        match self {
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::Unavailable => "UNAVAILABLE",
        }
    }
}

/// Why a producer call was refused. The message names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The hub refused the push, broadcast or disconnect.
    #[error(transparent)]
    Push(#[from] PushError),
    /// The call carried no valid producer key.
    #[error("missing or invalid producer key: send `authorization: Bearer <key>`")]
    Unauthenticated,
}

impl ApiError {
    /// The gRPC status code of this error.
    pub const fn code(&self) -> Code {
        match self {
            ApiError::Push(
                PushError::EmptyUser | PushError::BadEvent(_) | PushError::TooLarge { .. } | PushError::TooLong { .. },
            ) => Code::InvalidArgument,
            ApiError::Push(PushError::ShuttingDown | PushError::Unavailable(_)) => Code::Unavailable,
            ApiError::Unauthenticated => Code::Unauthenticated,
        }
    }

    /// This error as the `error` field of a stream or batch reply.
    pub fn to_proto(&self) -> crate::proto::PushError {
        crate::proto::PushError { code: self.code().number(), message: self.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::EventError;

    #[test]
    fn codes_and_messages() {
        let empty_event = ApiError::from(PushError::BadEvent(EventError::Empty));
        assert_eq!(empty_event.code(), Code::InvalidArgument);
        assert!(empty_event.to_string().starts_with("event"), "{empty_event}");
        assert_eq!(ApiError::from(PushError::ShuttingDown).code().number(), 14);
        assert_eq!(ApiError::Unauthenticated.code().name(), "UNAUTHENTICATED");
        let proto = ApiError::from(PushError::EmptyUser).to_proto();
        assert_eq!((proto.code, proto.message.contains("user_id")), (3, true));
    }
}
