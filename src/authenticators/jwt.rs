//! `--auth jwt`: browser tokens are JWTs (docs/protocol.md, "Authentication").
//!
//! HS256/384/512 with a shared secret, RS256/ES256/EdDSA (and their siblings)
//! with a PEM public key, or any of those with a JWKS file. `sub` is the user;
//! `exp` is required and enforced with no leeway; an optional `events` claim
//! lists the only events the connection may subscribe to. `alg: none` and
//! any algorithm not matching the key are refused.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::core::{AuthError, AuthFuture, Authenticator, Identity, event_names};

/// Why a JWT key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwtKeyError {
    /// The key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no usable PEM public key.
    #[error("{path}: not a PEM RSA, EC or Ed25519 public key")]
    Pem {
        /// The file.
        path: String,
    },
    /// The file is not a usable JWKS document.
    #[error("{path}: not a JWKS document: {message}")]
    Jwks {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// `--jwt-secret` is empty.
    #[error("jwt-secret must not be empty")]
    EmptySecret,
}

/// One key and the algorithms it may verify.
struct Key {
    kid: Option<String>,
    key: DecodingKey,
    validation: Validation,
}

/// Verifies JWTs against one key or a key set.
pub struct JwtAuth {
    keys: Vec<Key>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    events: Option<Vec<String>>,
}

fn validation(algorithms: &[Algorithm]) -> Validation {
    let mut v = Validation::new(algorithms[0]);
    v.algorithms = algorithms.to_vec();
    v.leeway = 0;
    v.validate_nbf = true; // RFC 7519 §4.1.5: not before `nbf`
    v.validate_aud = false;
    v.set_required_spec_claims(&["exp", "sub"]);
    v
}

const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: &[Algorithm] =
    &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512];

impl JwtAuth {
    /// HS256/384/512 with a shared secret.
    pub fn from_secret(secret: &[u8]) -> Result<Self, JwtKeyError> {
        if secret.is_empty() {
            return Err(JwtKeyError::EmptySecret);
        }
        let key = DecodingKey::from_secret(secret).map_err(|_| JwtKeyError::EmptySecret)?;
        Ok(Self { keys: vec![Key { kid: None, key, validation: validation(HMAC) }] })
    }

    /// A PEM public key: RSA (RS*/PS*), EC P-256/P-384 (ES256/ES384) or
    /// Ed25519 (EdDSA), told apart by trying each.
    pub fn from_pem(pem: &[u8], path: &str) -> Result<Self, JwtKeyError> {
        let key = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
            Key { kid: None, key: k, validation: validation(RSA) }
        } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
            Key { kid: None, key: k, validation: validation(&[Algorithm::ES256, Algorithm::ES384]) }
        } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
            Key { kid: None, key: k, validation: validation(&[Algorithm::EdDSA]) }
        } else {
            return Err(JwtKeyError::Pem { path: path.to_owned() });
        };
        Ok(Self { keys: vec![key] })
    }

    /// A JWKS document: each key verifies the algorithm it names (or, when
    /// it names none, its family's).
    pub fn from_jwks(json: &[u8], path: &str) -> Result<Self, JwtKeyError> {
        let err = |message: String| JwtKeyError::Jwks { path: path.to_owned(), message };
        let set: JwkSet = serde_json::from_slice(json).map_err(|e| err(e.to_string()))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let key = DecodingKey::from_jwk(jwk).map_err(|e| err(e.to_string()))?;
            let algorithms = match jwk.common.key_algorithm.and_then(|a| Algorithm::try_from(a).ok()) {
                Some(alg) => vec![alg],
                None => family_algorithms(&key),
            };
            keys.push(Key { kid: jwk.common.key_id.clone(), key, validation: validation(&algorithms) });
        }
        if keys.is_empty() {
            return Err(err("no keys".into()));
        }
        Ok(Self { keys })
    }

    /// Loads a PEM public key file.
    pub fn load_pem(path: &Path) -> Result<Self, JwtKeyError> {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| JwtKeyError::Read { path: shown.clone(), source })?;
        Self::from_pem(&pem, &shown)
    }

    /// Loads a JWKS file.
    pub fn load_jwks(path: &Path) -> Result<Self, JwtKeyError> {
        let shown = path.display().to_string();
        let json = std::fs::read(path).map_err(|source| JwtKeyError::Read { path: shown.clone(), source })?;
        Self::from_jwks(&json, &shown)
    }

    /// Verifies `token` and maps its claims to an identity.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(e.kind()))?;
        let candidates = self.keys.iter().filter(|k| match (&header.kid, &k.kid) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        });
        let mut last = AuthError::Invalid("no key matches the token".into());
        for key in candidates.filter(|k| k.validation.algorithms.contains(&header.alg)) {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation) {
                Ok(data) => return identity(data.claims),
                Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => return Err(AuthError::Expired),
                Err(e) => last = invalid(e.kind()),
            }
        }
        Err(last)
    }
}

fn family_algorithms(key: &DecodingKey) -> Vec<Algorithm> {
    use jsonwebtoken::AlgorithmFamily;
    match key.family() {
        AlgorithmFamily::Hmac => HMAC.to_vec(),
        AlgorithmFamily::Rsa => RSA.to_vec(),
        AlgorithmFamily::Ec => vec![Algorithm::ES256, Algorithm::ES384],
        AlgorithmFamily::Ed => vec![Algorithm::EdDSA],
    }
}

fn invalid(kind: &ErrorKind) -> AuthError {
    AuthError::Invalid(format!("{kind:?}"))
}

fn identity(claims: Claims) -> Result<Identity, AuthError> {
    if claims.sub.is_empty() {
        return Err(AuthError::Invalid("empty sub".into()));
    }
    let allowed_events = claims
        .events
        .map(|list| event_names(&list))
        .transpose()
        .map_err(|e| AuthError::Invalid(format!("events claim: {e}")))?;
    Ok(Identity {
        user: Arc::from(claims.sub),
        allowed_events,
        // An exp beyond what the clock can hold is, in effect, no expiry (and
        // `UNIX_EPOCH + exp` would panic).
        expires_at: UNIX_EPOCH.checked_add(Duration::from_secs(claims.exp)),
    })
}

impl Authenticator for JwtAuth {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        Box::pin(std::future::ready(self.verify(token)))
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    fn now_secs() -> u64 {
        std::time::SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    fn hs(claims: serde_json::Value, secret: &[u8]) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret).expect("key"))
            .expect("encode")
    }

    #[test]
    fn hs256_accepts_and_refuses() {
        let auth = JwtAuth::from_secret(b"s3cret").expect("key");
        let exp = now_secs() + 60;
        let id = auth.verify(&hs(json!({"sub":"alice","exp":exp,"events":["a"]}), b"s3cret")).expect("valid");
        assert_eq!(&*id.user, "alice");
        assert!(id.allows("a") && !id.allows("b"));
        let wrong = auth.verify(&hs(json!({"sub":"alice","exp":exp}), b"other"));
        assert!(matches!(wrong, Err(AuthError::Invalid(_))), "{wrong:?}");
        let expired = auth.verify(&hs(json!({"sub":"alice","exp":now_secs() - 5}), b"s3cret"));
        assert_eq!(expired, Err(AuthError::Expired));
        let no_exp = auth.verify(&hs(json!({"sub":"alice"}), b"s3cret"));
        assert!(matches!(no_exp, Err(AuthError::Invalid(_))), "{no_exp:?}");
    }
}
