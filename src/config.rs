//! Configuration: command-line flags beat `PUSHGATE_*` environment variables,
//! which beat the TOML file given by `--config`, which beats the defaults.
//!
//! [`Settings`] is what a user can write (every field optional, the same
//! names as flags in kebab-case in the file); [`Config`] is the resolved,
//! validated result with one sub-struct per part of the gateway.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::core::{HubConfig, SlowPolicy};
use crate::tls::TlsFiles;

/// How browser tokens become users (SPEC §6).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum AuthMode {
    /// `none`: the token is the user id (wserver's default). Loopback only unless --insecure.
    #[default]
    None,
    /// `tokens`: a static table of `TOKEN USER_ID` lines (--auth-tokens FILE).
    Tokens,
    /// `jwt`: JWTs checked with --jwt-secret, --jwt-public-key or --jwks.
    Jwt,
    /// `webhook=URL`: the backend at URL answers for each token.
    Webhook(String),
}

impl TryFrom<String> for AuthMode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        parse_auth_mode(&s)
    }
}

/// Parses `none`, `tokens`, `jwt` or `webhook=URL`.
pub fn parse_auth_mode(s: &str) -> Result<AuthMode, String> {
    match s {
        "none" => Ok(AuthMode::None),
        "tokens" => Ok(AuthMode::Tokens),
        "jwt" => Ok(AuthMode::Jwt),
        _ => match s.strip_prefix("webhook=") {
            Some(url) if !url.is_empty() => Ok(AuthMode::Webhook(url.to_owned())),
            _ => Err(format!("`{s}`: expected none, tokens, jwt or webhook=URL")),
        },
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Every setting, as given by flags, environment or file. `None` means "not
/// given here"; [`Settings::resolve`] applies the documented defaults.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// TOML configuration file (keys are the flag names).
    #[arg(long, env = "PUSHGATE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Browser listener: /ws, /healthz, /readyz. [default: 127.0.0.1:8080]
    #[arg(long, env = "PUSHGATE_PUBLIC_ADDR")]
    pub public_addr: Option<SocketAddr>,
    /// Producer listener: gRPC and HTTP. [default: 127.0.0.1:50051]
    #[arg(long, env = "PUSHGATE_INTERNAL_ADDR")]
    pub internal_addr: Option<SocketAddr>,
    /// WebSocket upgrade path. [default: /ws]
    #[arg(long, env = "PUSHGATE_WS_PATH")]
    pub ws_path: Option<String>,
    /// Allowed browser origins, comma-separated; exact or `*.example.com`.
    /// [default: any origin when the public listener is on loopback]
    #[arg(long, env = "PUSHGATE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Connection authentication: none, tokens, jwt or webhook=URL. [default: none]
    #[arg(long, env = "PUSHGATE_AUTH", value_parser = parse_auth_mode)]
    pub auth: Option<AuthMode>,
    /// Token table for `--auth tokens`: `TOKEN USER_ID` per line.
    #[arg(long, env = "PUSHGATE_AUTH_TOKENS")]
    pub auth_tokens: Option<PathBuf>,
    /// HS256/384/512 secret for `--auth jwt`.
    #[arg(long, env = "PUSHGATE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key (RSA, EC or Ed25519) for `--auth jwt`.
    #[arg(long, env = "PUSHGATE_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// JWKS file for `--auth jwt`.
    #[arg(long, env = "PUSHGATE_JWKS")]
    pub jwks: Option<PathBuf>,
    /// How long the auth webhook may take before the connection is refused (1011). [default: 2s]
    #[arg(long, env = "PUSHGATE_AUTH_TIMEOUT", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub auth_timeout: Option<Duration>,
    /// How long auth webhook answers are cached. [default: 30s]
    #[arg(long, env = "PUSHGATE_AUTH_CACHE_TTL", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub auth_cache_ttl: Option<Duration>,
    /// Producer API key (repeatable; env: comma-separated). [default: none]
    #[arg(long = "api-key", env = "PUSHGATE_API_KEYS", value_delimiter = ',')]
    #[serde(rename = "api-keys")]
    pub api_keys: Option<Vec<String>>,
    /// File of producer API keys, one per line.
    #[arg(long, env = "PUSHGATE_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// PEM certificate chain for TLS on the internal (producer) listener.
    #[arg(long, env = "PUSHGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "PUSHGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA: producers must present a client certificate it signed (mutual TLS).
    #[arg(long, env = "PUSHGATE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// PEM certificate chain for TLS on the public listener (wss://).
    #[arg(long, env = "PUSHGATE_PUBLIC_TLS_CERT", requires = "public_tls_key")]
    pub public_tls_cert: Option<PathBuf>,
    /// PEM private key for --public-tls-cert.
    #[arg(long, env = "PUSHGATE_PUBLIC_TLS_KEY", requires = "public_tls_cert")]
    pub public_tls_key: Option<PathBuf>,
    /// Also serve wserver's `POST /push` on the public listener (needs --api-key).
    #[arg(long, env = "PUSHGATE_PUSH_ON_PUBLIC")]
    pub push_on_public: Option<bool>,
    /// Allow non-loopback binds without auth or producer keys.
    #[arg(long, env = "PUSHGATE_INSECURE")]
    pub insecure: Option<bool>,
    /// Seconds to wait for a register message. [default: 10s]
    #[arg(long, env = "PUSHGATE_REGISTER_TIMEOUT", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub register_timeout: Option<Duration>,
    /// Time allowed for the HTTP upgrade request. [default: 5s]
    #[arg(long, env = "PUSHGATE_HANDSHAKE_TIMEOUT", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub handshake_timeout: Option<Duration>,
    /// Interval between server pings. [default: 25s]
    #[arg(long, env = "PUSHGATE_PING_INTERVAL", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub ping_interval: Option<Duration>,
    /// A connection that has not answered a ping within this is closed. [default: 10s]
    #[arg(long, env = "PUSHGATE_PONG_TIMEOUT", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub pong_timeout: Option<Duration>,
    /// Longest shutdown. [default: 10s]
    #[arg(long, env = "PUSHGATE_DRAIN_TIMEOUT", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub drain_timeout: Option<Duration>,
    /// Most WebSocket connections on this node. [default: 10000]
    #[arg(long, env = "PUSHGATE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most WebSocket connections from one IP address; 0: no limit. [default: 0]
    #[arg(long, env = "PUSHGATE_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Refuse new upgrades (503 + Retry-After) while the process's resident
    /// memory is above this, e.g. 2GiB or 512MiB; 0: no limit. [default: 0]
    #[arg(long, env = "PUSHGATE_MAX_MEMORY", value_parser = parse_size)]
    #[serde(default, deserialize_with = "de_size")]
    pub max_memory: Option<u64>,
    /// Most connections of one user. [default: 64]
    #[arg(long, env = "PUSHGATE_MAX_CONNECTIONS_PER_USER")]
    pub max_connections_per_user: Option<usize>,
    /// Largest push payload in bytes. [default: 65536]
    #[arg(long, env = "PUSHGATE_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Most events one connection may subscribe to. [default: 64]
    #[arg(long, env = "PUSHGATE_MAX_EVENTS_PER_CONN")]
    pub max_events_per_conn: Option<usize>,
    /// Largest client frame in bytes; larger closes with 1009. [default: 4096]
    #[arg(long, env = "PUSHGATE_MAX_CLIENT_FRAME_BYTES")]
    pub max_client_frame_bytes: Option<usize>,
    /// Send-queue cap per connection in bytes. [default: 262144]
    #[arg(long, env = "PUSHGATE_CONN_QUEUE_BYTES")]
    pub conn_queue_bytes: Option<usize>,
    /// What a full send queue does: close (4000) or drop-oldest. [default: close]
    #[arg(long, env = "PUSHGATE_SLOW_POLICY", value_enum)]
    pub slow_policy: Option<SlowPolicy>,
    /// Messages kept per user for resume; 0 disables history. [default: 64]
    #[arg(long, env = "PUSHGATE_HISTORY_SIZE")]
    pub history_size: Option<usize>,
    /// How long history is kept. [default: 5m]
    #[arg(long, env = "PUSHGATE_HISTORY_TTL", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub history_ttl: Option<Duration>,
    /// Kernel accept-queue length for both listeners. [default: 1024]
    #[arg(long, env = "PUSHGATE_LISTEN_BACKLOG")]
    pub listen_backlog: Option<u32>,
    /// Log format. [default: text]
    #[arg(long, env = "PUSHGATE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, RUST_LOG syntax (RUST_LOG is read too). [default: info]
    #[arg(long, env = "PUSHGATE_LOG")]
    pub log: Option<String>,
}

/// Why the configuration was refused. Each message names the key and, for
/// file errors, the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub public: PublicConfig,
    pub internal: InternalConfig,
    pub hub: HubConfig,
    pub auth: AuthConfig,
    pub heartbeat: HeartbeatConfig,
    /// Longest shutdown (default 10 s).
    pub drain_timeout: Duration,
    /// Kernel accept queue (default 1024).
    pub listen_backlog: u32,
    pub log_format: LogFormat,
    /// Log filter (default `info`).
    pub log: String,
}

/// The browser listener.
#[derive(Debug, Clone)]
pub struct PublicConfig {
    /// Default 127.0.0.1:8080.
    pub addr: SocketAddr,
    /// Default `/ws`.
    pub ws_path: String,
    /// Empty: any origin (only allowed on loopback binds or with --insecure).
    pub allowed_origins: Vec<String>,
    /// Default 10 s.
    pub register_timeout: Duration,
    /// Default 5 s.
    pub handshake_timeout: Duration,
    /// Default 10 000.
    pub max_connections: usize,
    /// Default 0: no per-IP limit.
    pub max_connections_per_ip: usize,
    /// Bytes of resident memory above which upgrades are refused; 0: off.
    pub max_memory: u64,
    /// Default 4096.
    pub max_client_frame_bytes: usize,
    /// TLS (`wss://`); default none.
    pub tls: Option<TlsFiles>,
    /// Serve wserver's `POST /push` here too (default off; needs a key).
    pub push_on_public: bool,
}

/// The producer listener.
#[derive(Debug, Clone)]
pub struct InternalConfig {
    /// Default 127.0.0.1:50051.
    pub addr: SocketAddr,
    /// Producer API keys; empty: none required (loopback only).
    pub api_keys: Vec<String>,
    /// TLS, optionally mutual; default none.
    pub tls: Option<TlsFiles>,
}

/// Browser authentication.
#[derive(Clone)]
pub struct AuthConfig {
    pub mode: AuthMode,
    pub tokens_file: Option<PathBuf>,
    pub jwt_secret: Option<String>,
    pub jwt_public_key: Option<PathBuf>,
    pub jwks: Option<PathBuf>,
    /// Default 2 s.
    pub timeout: Duration,
    /// Default 30 s.
    pub cache_ttl: Duration,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("mode", &self.mode)
            .field("tokens_file", &self.tokens_file)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<secret>"))
            .field("jwt_public_key", &self.jwt_public_key)
            .field("jwks", &self.jwks)
            .field("timeout", &self.timeout)
            .field("cache_ttl", &self.cache_ttl)
            .finish()
    }
}

/// Ping/pong timing, driven by one task for all connections.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatConfig {
    /// Default 25 s.
    pub ping_interval: Duration,
    /// Default 10 s.
    pub pong_timeout: Duration,
}

impl Settings {
    /// Fills what flags and environment left unset from the `--config` file.
    pub fn with_file(self) -> Result<Self, ConfigError> {
        let Some(path) = self.config.clone() else { return Ok(self) };
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        let file: Settings =
            toml::from_str(&text).map_err(|e| ConfigError::Parse { path: shown, message: e.to_string() })?;
        Ok(self.or(file))
    }

    /// Each field from `self` when set, else from `other`.
    fn or(self, other: Settings) -> Settings {
        macro_rules! pick {
            ($($f:ident),*) => { Settings { config: self.config, $($f: self.$f.or(other.$f)),* } };
        }
        pick!(
            public_addr,
            internal_addr,
            ws_path,
            allowed_origins,
            auth,
            auth_tokens,
            jwt_secret,
            jwt_public_key,
            jwks,
            auth_timeout,
            auth_cache_ttl,
            api_keys,
            api_keys_file,
            tls_cert,
            tls_key,
            tls_client_ca,
            public_tls_cert,
            public_tls_key,
            push_on_public,
            insecure,
            register_timeout,
            handshake_timeout,
            ping_interval,
            pong_timeout,
            drain_timeout,
            max_connections,
            max_connections_per_ip,
            max_memory,
            max_connections_per_user,
            max_message_bytes,
            max_events_per_conn,
            max_client_frame_bytes,
            conn_queue_bytes,
            slow_policy,
            history_size,
            history_ttl,
            listen_backlog,
            log_format,
            log
        )
    }

    /// Applies defaults and checks the result, including the secure-bind rule
    /// of SPEC §1.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let s = self.with_file()?;
        let hub = resolve_hub(&s);
        let mut api_keys = s.api_keys.unwrap_or_default();
        if let Some(path) = &s.api_keys_file {
            api_keys.extend(read_lines(path, "api-keys-file")?);
        }
        api_keys.retain(|k| !k.trim().is_empty());
        let config = Config {
            public: PublicConfig {
                addr: s.public_addr.unwrap_or(([127, 0, 0, 1], 8080).into()),
                ws_path: s.ws_path.unwrap_or_else(|| "/ws".into()),
                allowed_origins: s.allowed_origins.unwrap_or_default(),
                register_timeout: s.register_timeout.unwrap_or(Duration::from_secs(10)),
                handshake_timeout: s.handshake_timeout.unwrap_or(Duration::from_secs(5)),
                max_connections: s.max_connections.unwrap_or(10_000),
                max_connections_per_ip: s.max_connections_per_ip.unwrap_or(0),
                max_memory: s.max_memory.unwrap_or(0),
                max_client_frame_bytes: s.max_client_frame_bytes.unwrap_or(4096),
                tls: tls_files(s.public_tls_cert.clone(), s.public_tls_key.clone(), None, "public-tls-cert")?,
                push_on_public: s.push_on_public.unwrap_or(false),
            },
            internal: InternalConfig {
                addr: s.internal_addr.unwrap_or(([127, 0, 0, 1], 50051).into()),
                api_keys,
                tls: tls_files(s.tls_cert.clone(), s.tls_key.clone(), s.tls_client_ca.clone(), "tls-cert")?,
            },
            hub,
            auth: AuthConfig {
                mode: s.auth.unwrap_or_default(),
                tokens_file: s.auth_tokens,
                jwt_secret: s.jwt_secret,
                jwt_public_key: s.jwt_public_key,
                jwks: s.jwks,
                timeout: s.auth_timeout.unwrap_or(Duration::from_secs(2)),
                cache_ttl: s.auth_cache_ttl.unwrap_or(Duration::from_secs(30)),
            },
            heartbeat: HeartbeatConfig {
                ping_interval: s.ping_interval.unwrap_or(Duration::from_secs(25)),
                pong_timeout: s.pong_timeout.unwrap_or(Duration::from_secs(10)),
            },
            drain_timeout: s.drain_timeout.unwrap_or(Duration::from_secs(10)),
            listen_backlog: s.listen_backlog.unwrap_or(1024),
            log_format: s.log_format.unwrap_or_default(),
            log: s.log.unwrap_or_else(|| "info".into()),
        };
        config.check(s.insecure.unwrap_or(false))?;
        Ok(config)
    }
}

fn resolve_hub(s: &Settings) -> HubConfig {
    let d = HubConfig::default();
    HubConfig {
        conn_queue_bytes: s.conn_queue_bytes.unwrap_or(d.conn_queue_bytes),
        slow_policy: s.slow_policy.unwrap_or(d.slow_policy),
        max_events_per_conn: s.max_events_per_conn.unwrap_or(d.max_events_per_conn),
        max_connections_per_user: s.max_connections_per_user.unwrap_or(d.max_connections_per_user),
        max_message_bytes: s.max_message_bytes.unwrap_or(d.max_message_bytes),
        history_size: s.history_size.unwrap_or(d.history_size),
        history_ttl: s.history_ttl.unwrap_or(d.history_ttl),
    }
}

impl Config {
    fn check(&self, insecure: bool) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| Err(ConfigError::Invalid { key, message: message.into() });
        if self.auth.mode == AuthMode::Tokens && self.auth.tokens_file.is_none() {
            return invalid("auth-tokens", "--auth tokens needs --auth-tokens FILE");
        }
        let jwt_keys = [self.auth.jwt_secret.is_some(), self.auth.jwt_public_key.is_some(), self.auth.jwks.is_some()];
        if self.auth.mode == AuthMode::Jwt && jwt_keys.iter().filter(|k| **k).count() != 1 {
            return invalid("jwt-secret", "--auth jwt needs exactly one of --jwt-secret, --jwt-public-key, --jwks");
        }
        if !self.public.ws_path.starts_with('/') {
            return invalid("ws-path", "must start with /");
        }
        if self.heartbeat.pong_timeout >= self.heartbeat.ping_interval {
            return invalid("pong-timeout", "must be shorter than --ping-interval");
        }
        if self.hub.conn_queue_bytes < self.hub.max_message_bytes + 256 {
            return invalid("conn-queue-bytes", "must hold at least one message of --max-message-bytes");
        }
        if self.public.push_on_public && self.internal.api_keys.is_empty() {
            return invalid("push-on-public", "--push-on-public needs at least one --api-key");
        }
        if insecure {
            return Ok(());
        }
        if !self.public.addr.ip().is_loopback() && self.auth.mode == AuthMode::None {
            return invalid(
                "public-addr",
                "a non-loopback public listener needs real connection auth (--auth), or --insecure",
            );
        }
        if !self.public.addr.ip().is_loopback() && self.public.allowed_origins.is_empty() {
            return invalid("allowed-origins", "a non-loopback public listener needs --allowed-origins, or --insecure");
        }
        let mutual_tls = self.internal.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if !self.internal.addr.ip().is_loopback() && self.internal.api_keys.is_empty() && !mutual_tls {
            return invalid(
                "internal-addr",
                "a non-loopback internal listener needs --api-key or --tls-client-ca, or --insecure",
            );
        }
        Ok(())
    }
}

/// Cert and key come together (a file may give one without the other).
fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    name: &'static str,
) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key, client_ca })),
        (None, None) if client_ca.is_none() => Ok(None),
        _ => Err(ConfigError::Invalid { key: name, message: "certificate and key must both be given".into() }),
    }
}

fn read_lines(path: &Path, key: &'static str) -> Result<Vec<String>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Invalid { key, message: format!("cannot read {}: {e}", path.display()) })?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect())
}

/// Parses `250ms`, `10s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a duration such as 250ms, 10s, 5m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a byte size: `1048576`, `512KiB`, `64MiB`, `2GiB` (also KB/MB/GB
/// as powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size such as 512MiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("`{s}`: unknown unit `{other}` (KiB, MiB, GiB)")),
    };
    n.checked_mul(factor).ok_or_else(|| format!("`{s}` is too large"))
}

fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Number(n) => Ok(Some(n)),
        Size::Text(s) => parse_size(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map(Some).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("5x").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("1XB").is_err());
    }

    #[test]
    fn file_unknown_key_is_refused_with_its_name() {
        let err = toml::from_str::<Settings>("nonsense = 1").expect_err("unknown key");
        assert!(err.to_string().contains("nonsense"), "{err}");
    }

    #[test]
    fn flags_beat_file() {
        let flags = Settings { max_connections: Some(5), ..Default::default() };
        let file: Settings =
            toml::from_str("max-connections = 7\nhistory-size = 3\nping-interval = \"30s\"").expect("parses");
        let merged = flags.or(file).resolve().expect("valid");
        assert_eq!(merged.public.max_connections, 5);
        assert_eq!(merged.hub.history_size, 3);
        assert_eq!(merged.heartbeat.ping_interval, Duration::from_secs(30));
    }

    #[test]
    fn public_bind_without_auth_is_refused() {
        let s = Settings { public_addr: Some(([0, 0, 0, 0], 8080).into()), ..Default::default() };
        let err = s.resolve().expect_err("refused");
        assert!(err.to_string().contains("public-addr"), "{err}");
        let s = Settings { public_addr: Some(([0, 0, 0, 0], 8080).into()), insecure: Some(true), ..Default::default() };
        assert!(s.resolve().is_ok());
    }
}
