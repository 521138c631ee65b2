//! What a user can set: every field optional, the same names as the flags
//! (kebab-case keys in the TOML file). `None` means "not given here".

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use super::cluster::{BrokerUrl, de_broker, parse_broker};
use super::values::{de_duration, de_size, de_slow_policy, parse_duration, parse_size, parse_slow_policy};
use crate::core::SlowPolicy;

/// How browser tokens become users (docs/protocol.md, "Authentication").
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
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
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
    /// PEM CA certificates an https:// auth webhook must chain to. [default: the system's roots]
    #[arg(long, env = "PUSHGATE_AUTH_WEBHOOK_CA")]
    pub auth_webhook_ca: Option<PathBuf>,
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
    #[arg(long, env = "PUSHGATE_PUSH_ON_PUBLIC", num_args = 0..=1, default_missing_value = "true")]
    pub push_on_public: Option<bool>,
    /// Serve a demo page at /demo on the public listener (loopback binds only).
    #[arg(long, env = "PUSHGATE_DEMO", num_args = 0..=1, default_missing_value = "true")]
    pub demo: Option<bool>,
    /// Allow non-loopback binds without auth or producer keys.
    #[arg(long, env = "PUSHGATE_INSECURE", num_args = 0..=1, default_missing_value = "true")]
    pub insecure: Option<bool>,
    /// Seconds to wait for a register message. [default: 10s]
    #[arg(long, env = "PUSHGATE_REGISTER_TIMEOUT", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub register_timeout: Option<Duration>,
    /// Time allowed for a TLS handshake and an HTTP/1.1 request head, on
    /// both listeners (the upgrade request on the public one). [default: 5s]
    #[arg(long, env = "PUSHGATE_HANDSHAKE_TIMEOUT", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub handshake_timeout: Option<Duration>,
    /// Time an HTTP/1.1 request on the internal listener has, from the end of
    /// its head, to send its body and be answered; later it gets 408 and the
    /// connection closes. HTTP/2 (gRPC) streams have no such limit. [default: 30s]
    #[arg(long, env = "PUSHGATE_REQUEST_BODY_TIMEOUT", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub request_body_timeout: Option<Duration>,
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
    /// Most connections in their handshake (TLS and the upgrade request) at
    /// once; more wait in the kernel's accept queue. [default: 1024]
    #[arg(long, env = "PUSHGATE_MAX_HANDSHAKES")]
    pub max_handshakes: Option<usize>,
    /// Refuse new upgrades (503 + Retry-After) while what the connections
    /// hold — 8 KiB per open connection plus their queued bytes — is above
    /// this, e.g. 2GiB or 512MiB; 0: no limit. [default: 0]
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
    /// The kernel's send buffer of each browser socket in bytes (SO_SNDBUF;
    /// Linux doubles it for its bookkeeping); 0: the kernel sizes it itself,
    /// up to megabytes, which a client that stops reading fills before its
    /// send queue does. [default: 65536]
    #[arg(long, env = "PUSHGATE_SOCKET_SEND_BUFFER")]
    pub socket_send_buffer: Option<usize>,
    /// How long a connection holds its first queued delivery before it
    /// writes, so that what is pushed to it meanwhile goes out in the same
    /// write: fewer writes for connections that receive many messages, at
    /// up to this much added latency; 0: every delivery is written at once.
    /// [default: 0]
    #[arg(long, env = "PUSHGATE_WRITE_DELAY", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub write_delay: Option<Duration>,
    /// What a full send queue does: close (4000) or drop-oldest. [default: close]
    #[arg(long, env = "PUSHGATE_SLOW_POLICY", value_parser = parse_slow_policy)]
    #[serde(default, deserialize_with = "de_slow_policy")]
    pub slow_policy: Option<SlowPolicy>,
    /// Messages kept per user for resume; 0 disables history. [default: 64]
    #[arg(long, env = "PUSHGATE_HISTORY_SIZE")]
    pub history_size: Option<usize>,
    /// How long history is kept. [default: 5m]
    #[arg(long, env = "PUSHGATE_HISTORY_TTL", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub history_ttl: Option<Duration>,
    /// How long a user's stream position (seq, epoch) is kept after its last
    /// push, so seq never restarts for a user away longer than the history. [default: 30d]
    #[arg(long, env = "PUSHGATE_HISTORY_META_TTL", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub history_meta_ttl: Option<Duration>,
    /// What all users' histories may hold together, e.g. 256MiB; past it the
    /// oldest deliveries are evicted first, whoever they belong to. [default: 256MiB]
    #[arg(long, env = "PUSHGATE_HISTORY_MAX_BYTES", value_parser = parse_size)]
    #[serde(default, deserialize_with = "de_size")]
    pub history_max_bytes: Option<u64>,
    /// Where several nodes share pushes: memory (one node),
    /// redis://HOST:PORT[/DB] or nats://HOST:PORT. [default: memory]
    #[arg(long, env = "PUSHGATE_BROKER", value_parser = parse_broker)]
    #[serde(default, deserialize_with = "de_broker")]
    pub broker: Option<BrokerUrl>,
    /// Prefix of every Redis key and channel and NATS subject, so several
    /// clusters share one server. [default: pushgate]
    #[arg(long, env = "PUSHGATE_BROKER_PREFIX")]
    pub broker_prefix: Option<String>,
    /// This node's id in the cluster. [default: the host name and a random suffix]
    #[arg(long, env = "PUSHGATE_NODE_ID")]
    pub node_id: Option<String>,
    /// How long a node counts as alive after its last lease refresh (at least 1s). [default: 10s]
    #[arg(long, env = "PUSHGATE_NODE_LEASE", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub node_lease: Option<Duration>,
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
