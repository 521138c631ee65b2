//! The configuration file: `Settings` from TOML, then `resolve()` (README,
//! "Configuration"; the ranges of `src/config/bounds.rs`).
//!
//! Invariants:
//! - a resolved configuration satisfies every documented bound and rule:
//!   each duration and size in its range, `pong-timeout` shorter than
//!   `ping-interval`, a send queue that holds one message, a `ws-path` that
//!   starts with `/`, the auth mode's required keys, cert and key together,
//!   `--push-on-public` only with a key, and the secure-bind rules unless
//!   `insecure`; no instant plus a configured duration overflows;
//! - a refused value names a real key (a flag name, as in the file).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use pushgate::config::{AuthMode, Config, ConfigError, Settings};

/// Every key of the file (the flag names).
const KEYS: &[&str] = &[
    "public-addr",
    "internal-addr",
    "ws-path",
    "allowed-origins",
    "auth",
    "auth-tokens",
    "jwt-secret",
    "jwt-public-key",
    "jwks",
    "auth-webhook-ca",
    "auth-timeout",
    "auth-cache-ttl",
    "api-keys",
    "api-keys-file",
    "tls-cert",
    "tls-key",
    "tls-client-ca",
    "public-tls-cert",
    "public-tls-key",
    "push-on-public",
    "insecure",
    "register-timeout",
    "handshake-timeout",
    "ping-interval",
    "pong-timeout",
    "drain-timeout",
    "max-connections",
    "max-connections-per-ip",
    "max-memory",
    "max-connections-per-user",
    "max-message-bytes",
    "max-events-per-conn",
    "max-client-frame-bytes",
    "conn-queue-bytes",
    "slow-policy",
    "history-size",
    "history-ttl",
    "listen-backlog",
    "log-format",
    "log",
];

const MS: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(mut settings) = toml::from_str::<Settings>(text) else { return };
    // The only file `resolve` reads; a fuzzed path could name a device.
    settings.api_keys_file = None;
    let insecure = settings.insecure.unwrap_or(false);
    match settings.resolve() {
        Ok(config) => holds(&config, insecure),
        Err(ConfigError::Invalid { key, message }) => {
            assert!(KEYS.contains(&key), "refusal names no key: {key}: {message}");
        }
        Err(error) => panic!("resolving parsed settings read a file: {error}"),
    }
});

fn within<T: PartialOrd + std::fmt::Debug>(key: &str, value: T, min: T, max: T) {
    assert!(min <= value && value <= max, "{key} = {value:?} outside {min:?}..={max:?}");
}

fn holds(c: &Config, insecure: bool) {
    let (p, h, a, b) = (&c.public, &c.hub, &c.auth, &c.heartbeat);
    within("register-timeout", p.register_timeout, MS, HOUR);
    within("handshake-timeout", p.handshake_timeout, MS, HOUR);
    within("ping-interval", b.ping_interval, 10 * MS, DAY);
    within("pong-timeout", b.pong_timeout, MS, DAY);
    within("drain-timeout", c.drain_timeout, Duration::ZERO, HOUR);
    within("auth-timeout", a.timeout, MS, 10 * 60 * 1000 * MS);
    within("auth-cache-ttl", a.cache_ttl, Duration::ZERO, DAY);
    within("history-ttl", h.history_ttl, Duration::ZERO, 30 * DAY);
    within("max-connections", p.max_connections, 1, 10_000_000);
    within("max-connections-per-ip", p.max_connections_per_ip, 0, 10_000_000);
    within("max-connections-per-user", h.max_connections_per_user, 1, 1_000_000);
    within("max-message-bytes", h.max_message_bytes, 1, 16 << 20);
    within("max-client-frame-bytes", p.max_client_frame_bytes, 64, 1 << 20);
    within("max-events-per-conn", h.max_events_per_conn, 1, 4096);
    within("conn-queue-bytes", h.conn_queue_bytes, 1 << 10, 1 << 30);
    within("history-size", h.history_size, 0, 100_000);
    within("listen-backlog", c.listen_backlog, 1, 65_535);
    within("max-memory", p.max_memory, 0, 1 << 50);
    assert!(b.pong_timeout < b.ping_interval, "pong-timeout not below ping-interval");
    assert!(h.conn_queue_bytes >= h.max_message_bytes + 256, "a queue that cannot hold one message");
    assert!(p.ws_path.starts_with('/'), "ws-path {:?}", p.ws_path);
    assert!(c.internal.api_keys.iter().all(|k| !k.trim().is_empty()), "a blank API key");
    assert!(!p.push_on_public || !c.internal.api_keys.is_empty(), "--push-on-public without a key");
    match &a.mode {
        AuthMode::Tokens => assert!(a.tokens_file.is_some(), "--auth tokens without a file"),
        AuthMode::Jwt => {
            let keys = [a.jwt_secret.is_some(), a.jwt_public_key.is_some(), a.jwks.is_some()];
            assert_eq!(keys.iter().filter(|k| **k).count(), 1, "--auth jwt needs exactly one key source");
        }
        AuthMode::Webhook(url) => assert!(!url.is_empty()),
        AuthMode::None => {}
    }
    if !insecure {
        assert!(p.addr.ip().is_loopback() || a.mode != AuthMode::None, "open public bind without auth");
        assert!(p.addr.ip().is_loopback() || !p.allowed_origins.is_empty(), "open public bind, any origin");
        let mtls = c.internal.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        assert!(c.internal.addr.ip().is_loopback() || !c.internal.api_keys.is_empty() || mtls, "open internal bind");
    }
    // What the gateway adds these durations to must not overflow.
    let now = Instant::now();
    for d in [p.register_timeout, p.handshake_timeout, b.ping_interval + b.pong_timeout, c.drain_timeout, a.timeout] {
        assert!(now.checked_add(d).is_some(), "now + {d:?} overflows");
    }
    assert!(now.checked_add(h.history_ttl).is_some() && now.checked_add(a.cache_ttl).is_some());
}
