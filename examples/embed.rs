//! Embedding pushgate in your own program with your own token check — the
//! equivalent of wserver's `AuthToken(token) -> (userId, ok)` hook.
//!
//! Run: `cargo run --example embed`, then connect a browser to
//! `ws://127.0.0.1:8080/ws` and register with `{"token":"demo-alice","event":"chat"}`.

use std::sync::Arc;

use pushgate::config::Settings;
use pushgate::core::{AuthError, AuthFuture, Authenticator, Identity};
use pushgate::server::{self, Listeners};

/// Accepts tokens of the form `demo-<user>`. A real hook would look the token
/// up in a session store; it must answer quickly or return
/// `AuthError::Unavailable` rather than hang.
struct DemoAuth;

impl Authenticator for DemoAuth {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        Box::pin(async move {
            match token.strip_prefix("demo-") {
                Some(user) if !user.is_empty() => Ok(Identity::user(user)),
                _ => Err(AuthError::Invalid("not a demo token".into())),
            }
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    // Defaults: browsers on 127.0.0.1:8080, producers on 127.0.0.1:50051.
    let config = Settings::default().resolve()?;
    let listeners = Listeners::bind(&config)?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let running = server::start(config, listeners, Arc::new(DemoAuth), shutdown).await?;
    println!("browsers: ws://{}/ws  producers: {}", running.public_addr, running.internal_addr);
    running.wait().await;
    Ok(())
}
