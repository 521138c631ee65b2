//! The `--auth` modes, each an implementation of the core's
//! [`Authenticator`] seam (`none`, `tokens`, `jwt`, `webhook=URL`), and the
//! choice of one from the configuration. The contract of each mode is in
//! docs/protocol.md, "Authentication".

pub mod jwt;
mod tokens;
pub mod webhook;

use std::sync::Arc;

use crate::config::{AuthConfig, AuthMode};
use crate::core::Authenticator;

pub use jwt::JwtAuth;
pub use tokens::{TokenIsUser, TokenTable, TokenTableError};
pub use webhook::{WebhookAuth, WebhookTrust};

/// Why the configured authenticator could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// `--auth tokens`: the table could not be loaded.
    #[error("auth-tokens: {0}")]
    Tokens(#[from] TokenTableError),
    /// `--auth jwt`: the key could not be loaded.
    #[error("jwt: {0}")]
    Jwt(#[from] jwt::JwtKeyError),
    /// `--auth webhook=URL`: the URL or its TLS set-up was refused.
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
        AuthMode::Webhook(url) => {
            let trust = config.webhook_ca.as_deref().map_or(WebhookTrust::System, WebhookTrust::CaFile);
            Arc::new(WebhookAuth::new(url, trust, config.timeout, config.cache_ttl)?)
        }
    })
}
