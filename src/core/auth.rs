//! Connection authentication: a token becomes a user (SPEC §6). The
//! [`Authenticator`] trait is the seam — wserver's `AuthToken` hook — that
//! library users implement to embed the gateway with their own check.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
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

/// `--auth none`: the token is the user id, as in wserver without a hook.
/// Anyone can claim to be anyone; for local development only.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenIsUser;

impl Authenticator for TokenIsUser {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        let result =
            if token.is_empty() { Err(AuthError::Invalid("empty token".into())) } else { Ok(Identity::user(token)) };
        Box::pin(std::future::ready(result))
    }
}

/// `--auth tokens`: a static table of `TOKEN USER_ID` lines.
#[derive(Debug, Clone, Default)]
pub struct TokenTable {
    users: HashMap<String, UserId>,
}

/// Why a token table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TokenTableError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}: expected `TOKEN USER_ID`")]
    Syntax { path: String, line: usize },
}

impl TokenTable {
    /// Parses the table format: one `TOKEN USER_ID` pair per line; blank
    /// lines and `#` comments are skipped.
    pub fn parse(text: &str, path: &str) -> Result<Self, TokenTableError> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(token), Some(user), None) => {
                    users.insert(token.to_owned(), Arc::from(user));
                }
                _ => return Err(TokenTableError::Syntax { path: path.to_owned(), line: n + 1 }),
            }
        }
        Ok(Self { users })
    }

    /// Reads and parses the table at `path`.
    pub fn load(path: &Path) -> Result<Self, TokenTableError> {
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| TokenTableError::Read { path: shown.clone(), source })?;
        Self::parse(&text, &shown)
    }
}

impl Authenticator for TokenTable {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        let result = match self.users.get(token) {
            Some(user) => Ok(Identity::user(Arc::clone(user))),
            None => Err(AuthError::Invalid("unknown token".into())),
        };
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_table_parses_and_refuses() {
        let t = TokenTable::parse("# c\nabc alice\n\n  def bob # trailing\n", "t").expect("parses");
        assert_eq!(t.users.get("abc").map(|u| &**u), Some("alice"));
        assert_eq!(t.users.get("def").map(|u| &**u), Some("bob"));
        assert!(matches!(TokenTable::parse("only-one\n", "t"), Err(TokenTableError::Syntax { line: 1, .. })));
    }
}

/// Producer API keys (SPEC §4.2), checked in constant time: each presented
/// key is hashed and compared with every configured key's hash, so neither
/// the length nor the content of a key leaks through timing.
#[derive(Clone, Default)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} configured)", self.digests.len())
    }
}

impl ApiKeys {
    /// The keys given; an empty list means producers need no key.
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(keys: I) -> Self {
        Self { digests: keys.into_iter().map(|k| digest(k.as_ref())).collect() }
    }

    /// True when at least one key is configured.
    pub fn required(&self) -> bool {
        !self.digests.is_empty()
    }

    /// Checks an `authorization` header value (`Bearer <key>`). Always true
    /// when no key is configured.
    pub fn check_header(&self, header: Option<&str>) -> bool {
        if !self.required() {
            return true;
        }
        let key = header.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")));
        let Some(key) = key else { return false };
        let presented = digest(key.trim());
        let mut ok = subtle::Choice::from(0);
        for d in &self.digests {
            ok |= subtle::ConstantTimeEq::ct_eq(&presented[..], &d[..]);
        }
        ok.into()
    }
}

fn digest(key: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).into()
}
