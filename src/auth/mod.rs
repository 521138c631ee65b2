//! Authenticators behind the core's [`Authenticator`] seam (SPEC §6): the
//! `--auth` modes that need more than the core offers (JWT, webhook), and the
//! choice of one from the configuration.

pub mod jwt;
pub mod webhook;

use std::sync::Arc;

use crate::config::{AuthConfig, AuthMode};
use crate::core::auth::TokenTableError;
use crate::core::{Authenticator, TokenIsUser, TokenTable};

pub use jwt::JwtAuth;
pub use webhook::WebhookAuth;

/// Why the configured authenticator could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("auth-tokens: {0}")]
    Tokens(#[from] TokenTableError),
    #[error("jwt: {0}")]
    Jwt(#[from] jwt::JwtKeyError),
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
}

/// The authenticator `config` asks for.
pub fn from_config(config: &AuthConfig) -> Result<Arc<dyn Authenticator>, AuthSetupError> {
    Ok(match &config.mode {
        AuthMode::None => {
            tracing::warn!("--auth none: the browser's token is taken as its user id; use only for development");
            Arc::new(TokenIsUser)
        }
        AuthMode::Tokens => {
            let path = config.tokens_file.as_deref().unwrap_or(std::path::Path::new(""));
            Arc::new(TokenTable::load(path)?)
        }
        AuthMode::Jwt => Arc::new(match (&config.jwt_secret, &config.jwt_public_key, &config.jwks) {
            (Some(secret), _, _) => JwtAuth::from_secret(secret.as_bytes())?,
            (None, Some(pem), _) => JwtAuth::load_pem(pem)?,
            (None, None, Some(jwks)) => JwtAuth::load_jwks(jwks)?,
            (None, None, None) => JwtAuth::from_secret(b"")?,
        }),
        AuthMode::Webhook(url) => Arc::new(WebhookAuth::new(url, config.timeout, config.cache_ttl)?),
    })
}
