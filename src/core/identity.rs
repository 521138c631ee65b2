//! Connection authentication: a token becomes a user. The [`Authenticator`]
//! trait is the seam — wserver's `AuthToken` hook — that library users
//! implement to embed the gateway with their own check; the `--auth` modes
//! are implementations of it in `crate::authenticators`.

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use super::event::EventName;
use super::hub::UserId;

/// Who a token belongs to, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user the connection acts for.
    pub user: UserId,
    /// When set, the only events this connection may subscribe to (else 4501).
    pub allowed_events: Option<Vec<EventName>>,
    /// When set, the connection is closed with 4002 at this time unless it
    /// refreshes its token.
    pub expires_at: Option<SystemTime>,
}

impl Identity {
    /// An identity for `user` with no restriction and no expiry.
    pub fn user(user: impl Into<UserId>) -> Self {
        Self { user: user.into(), allowed_events: None, expires_at: None }
    }

    /// True when this identity may subscribe to `event`.
    pub fn allows(&self, event: &str) -> bool {
        self.allowed_events.as_ref().is_none_or(|list| list.iter().any(|e| &**e == event))
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token is not valid (unknown, bad signature, malformed): 401 / 4500.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token was valid but has expired: 401 / 4002.
    #[error("token expired")]
    Expired,
    /// The authenticator could not decide (backend down or slow): 1011.
    #[error("authentication unavailable: {0}")]
    Unavailable(String),
}

/// The future an [`Authenticator`] returns.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Identity, AuthError>> + Send + 'a>>;

/// Maps a connection token to an [`Identity`]. Called once per handshake or
/// register message (and per `refresh`); it must not hang — bound any I/O
/// with a timeout and answer [`AuthError::Unavailable`].
pub trait Authenticator: Send + Sync + 'static {
    /// Checks `token`.
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a>;
}
