//! `--auth webhook=URL`: the backend decides (docs/protocol.md,
//! "Authentication").
//!
//! The gateway POSTs `{"token": "..."}` to the URL and expects 200 with
//! `{"user_id": "...", "events": [...]?, "expires_at": UNIX_SECONDS?}`, or
//! 401/403 to refuse. Any other answer, a connection error or no answer within
//! the timeout refuses the connection as unavailable (1011) — it never hangs.
//! Answers (accepts and refusals) are cached for the cache TTL, keyed by a
//! SHA-256 of the token so raw tokens are not kept in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use sha2::Digest;

use crate::core::{AuthError, AuthFuture, Authenticator, Identity, event_names};

/// Most cached answers; past it, expired ones are swept and, if still full,
/// the cache is cleared.
const CACHE_MAX: usize = 100_000;
/// Largest webhook answer read.
const BODY_MAX: usize = 64 * 1024;

/// A token's answer, by the SHA-256 of the token, and when it was taken.
type Cached = (Instant, Result<Identity, AuthError>);

/// Asks a backend over HTTP or HTTPS whose token a connection carries.
pub struct WebhookAuth {
    url: hyper::Uri,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    cache_ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

#[derive(Deserialize)]
struct Answer {
    user_id: String,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    expires_at: Option<u64>,
}

/// Why the webhook could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL is not an `http://` or `https://` URL with a host.
    #[error("auth webhook URL `{0}`: {1}")]
    Url(String, String),
    /// The CA file (`--auth-webhook-ca`) could not be read or holds no
    /// usable certificate.
    #[error("auth-webhook-ca {0}: {1}")]
    Ca(String, String),
    /// No trust roots: the system has none and no CA file was given.
    #[error("auth webhook: no trusted root certificates on this system; give --auth-webhook-ca")]
    NoRoots,
    /// rustls refused the client configuration.
    #[error("auth webhook TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// Where the webhook's server certificate must chain to.
#[derive(Debug, Clone, Copy)]
pub enum WebhookTrust<'a> {
    /// The system's root certificates.
    System,
    /// Only the CA certificates in this PEM file (`--auth-webhook-ca`).
    CaFile(&'a std::path::Path),
}

impl WebhookAuth {
    /// A webhook at `url` (`http://` or `https://`), answering within
    /// `timeout`, cached `cache_ttl`; an `https://` server's certificate must
    /// chain to `trust`. Setting up reads the trust roots once.
    pub fn new(
        url: &str,
        trust: WebhookTrust<'_>,
        timeout: Duration,
        cache_ttl: Duration,
    ) -> Result<Self, WebhookError> {
        let uri: hyper::Uri =
            url.parse().map_err(|e: hyper::http::uri::InvalidUri| WebhookError::Url(url.into(), e.to_string()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(WebhookError::Url(url.into(), "must be an http:// or https:// URL with a host".into()));
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_tls(trust, uri.scheme_str() == Some("https"))?)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { url: uri, client, timeout, cache_ttl, cache: Mutex::new(HashMap::new()) })
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Result<Identity, AuthError>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(key).filter(|(at, _)| at.elapsed() < self.cache_ttl).map(|(_, r)| r.clone())
    }

    fn remember(&self, key: [u8; 32], result: &Result<Identity, AuthError>) {
        if matches!(result, Err(AuthError::Unavailable(_))) {
            return; // a backend failure is not an answer about the token
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_MAX {
            let ttl = self.cache_ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), result.clone()));
    }

    async fn ask(&self, token: &str) -> Result<Identity, AuthError> {
        let body = serde_json::to_vec(&serde_json::json!({ "token": token }))
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let request = hyper::Request::post(self.url.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| AuthError::Unavailable(e.to_string()))?;
            let status = response.status();
            let limited = http_body_util::Limited::new(response.into_body(), BODY_MAX);
            let bytes = limited.collect().await.map_err(|e| AuthError::Unavailable(e.to_string()))?.to_bytes();
            Ok::<_, AuthError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| AuthError::Unavailable(format!("no answer within {:?}", self.timeout)))??;
        match status.as_u16() {
            200 => identity(&bytes),
            401 | 403 => Err(AuthError::Invalid(format!("refused by the auth webhook ({status})"))),
            _ => Err(AuthError::Unavailable(format!("auth webhook answered {status}"))),
        }
    }
}

/// The TLS client configuration for the webhook; roots are required when the
/// URL is `https://`.
fn client_tls(trust: WebhookTrust<'_>, https: bool) -> Result<rustls::ClientConfig, WebhookError> {
    let mut roots = rustls::RootCertStore::empty();
    match trust {
        WebhookTrust::System => {
            // Unreadable entries of the system store are skipped; what is
            // left must hold at least one root.
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
        WebhookTrust::CaFile(path) => {
            let shown = path.display().to_string();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| WebhookError::Ca(shown.clone(), e.to_string()))?;
            for cert in certs {
                roots.add(cert).map_err(|e| WebhookError::Ca(shown.clone(), e.to_string()))?;
            }
        }
    }
    if https && roots.is_empty() {
        return Err(WebhookError::NoRoots);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

fn identity(body: &[u8]) -> Result<Identity, AuthError> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| AuthError::Unavailable(format!("auth webhook answer: {e}")))?;
    if answer.user_id.is_empty() {
        return Err(AuthError::Invalid("auth webhook gave an empty user_id".into()));
    }
    let allowed_events = answer
        .events
        .map(|list| event_names(&list))
        .transpose()
        .map_err(|e| AuthError::Unavailable(format!("auth webhook events: {e}")))?;
    // Beyond what the clock can hold is, in effect, never (and `+` would panic).
    let expires_at = answer.expires_at.and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)));
    Ok(Identity { user: Arc::from(answer.user_id), allowed_events, expires_at })
}

impl Authenticator for WebhookAuth {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        Box::pin(async move {
            if token.is_empty() {
                return Err(AuthError::Invalid("empty token".into()));
            }
            let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
            let result = match self.cached(&key) {
                Some(result) => result,
                None => {
                    let result = self.ask(token).await;
                    self.remember(key, &result);
                    result
                }
            };
            // A cached answer may have expired since it was given.
            match result {
                Ok(id) if id.expires_at.is_some_and(|at| at <= std::time::SystemTime::now()) => Err(AuthError::Expired),
                other => other,
            }
        })
    }
}
