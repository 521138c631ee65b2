//! The two `--auth` modes that need no key or backend: `none` (the token is
//! the user id) and `tokens` (a static table).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::core::{AuthError, AuthFuture, Authenticator, Identity, UserId};

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
    /// The table file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not a `TOKEN USER_ID` pair.
    #[error("{path}:{line}: expected `TOKEN USER_ID`")]
    Syntax {
        /// The file.
        path: String,
        /// The line number, from 1.
        line: usize,
    },
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
