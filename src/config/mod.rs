//! Configuration: command-line flags beat `PUSHGATE_*` environment variables,
//! which beat the TOML file given by `--config`, which beats the defaults.
//!
//! [`Settings`] is what a user can write (every field optional, the same
//! names as flags in kebab-case in the file); [`Config`] is the resolved,
//! validated result with one sub-struct per part of the gateway.

mod bounds;
mod cluster;
mod settings;
mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cluster::{BrokerUrl, ClusterConfig, check_name, parse_broker};
pub use settings::{AuthMode, LogFormat, Settings, parse_auth_mode};
pub use values::{parse_duration, parse_size};

use crate::core::HubConfig;

/// Why the configuration was refused. Each message names the key and, for
/// file errors, the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML, has an unknown key or a bad value.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A setting's value is refused.
    #[error("{key}: {message}")]
    Invalid {
        /// The flag's name, as in the file.
        key: &'static str,
        /// Why.
        message: String,
    },
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The browser listener.
    pub public: PublicConfig,
    /// The producer listener.
    pub internal: InternalConfig,
    /// The hub's limits, queues and history.
    pub hub: HubConfig,
    /// Browser authentication.
    pub auth: AuthConfig,
    /// Ping and pong timing.
    pub heartbeat: HeartbeatConfig,
    /// The broker and this node's place in the cluster.
    pub cluster: ClusterConfig,
    /// Longest shutdown (default 10 s).
    pub drain_timeout: Duration,
    /// Kernel accept queue (default 1024).
    pub listen_backlog: u32,
    /// Log line format (default text).
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
    /// Default 1024: connections in their handshake at once.
    pub max_handshakes: usize,
    /// Bytes held by connections (by the listener's own accounting) above
    /// which upgrades are refused; 0: off.
    pub max_memory: u64,
    /// Default 4096.
    pub max_client_frame_bytes: usize,
    /// SO_SNDBUF of each accepted socket; default 64 KiB, 0: the kernel's.
    pub socket_send_buffer: usize,
    /// How long a connection holds its first queued delivery before writing
    /// (coalescing what comes meanwhile); default 0: write at once.
    pub write_delay: Duration,
    /// TLS (`wss://`); default none.
    pub tls: Option<TlsFiles>,
    /// Serve wserver's `POST /push` here too (default off; needs a key).
    pub push_on_public: bool,
    /// Serve the demo page `GET /demo` (default off; loopback binds only).
    pub demo: bool,
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
    /// Time an HTTP/1.1 request has from the end of its head to be read and
    /// answered (default 30 s). Its head, like a TLS handshake, has
    /// `public.handshake_timeout`.
    pub request_body_timeout: Duration,
}

/// Browser authentication.
#[derive(Clone)]
pub struct AuthConfig {
    /// How tokens become users (default `none`).
    pub mode: AuthMode,
    /// The table of `--auth tokens`.
    pub tokens_file: Option<PathBuf>,
    /// The HS256/384/512 secret of `--auth jwt`.
    pub jwt_secret: Option<String>,
    /// The PEM public key of `--auth jwt`.
    pub jwt_public_key: Option<PathBuf>,
    /// The JWKS file of `--auth jwt`.
    pub jwks: Option<PathBuf>,
    /// CA certificates an `https://` auth webhook must chain to; default:
    /// the system's roots.
    pub webhook_ca: Option<PathBuf>,
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
            .field("webhook_ca", &self.webhook_ca)
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

/// Where a listener's certificate, key and (optional) client CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates; when set, clients must present a certificate
    /// signed by one of them.
    pub client_ca: Option<PathBuf>,
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
            auth_webhook_ca,
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
            demo,
            insecure,
            register_timeout,
            handshake_timeout,
            request_body_timeout,
            ping_interval,
            pong_timeout,
            drain_timeout,
            max_connections,
            max_connections_per_ip,
            max_handshakes,
            max_memory,
            max_connections_per_user,
            max_message_bytes,
            max_events_per_conn,
            max_client_frame_bytes,
            conn_queue_bytes,
            socket_send_buffer,
            write_delay,
            slow_policy,
            history_size,
            history_ttl,
            history_meta_ttl,
            history_max_bytes,
            broker,
            broker_prefix,
            node_id,
            node_lease,
            listen_backlog,
            log_format,
            log
        )
    }

    /// Applies defaults and checks the result, including the secure-bind rule
    /// (docs/api.md, "Listeners").
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
                max_handshakes: s.max_handshakes.unwrap_or(1024),
                max_memory: s.max_memory.unwrap_or(0),
                max_client_frame_bytes: s.max_client_frame_bytes.unwrap_or(4096),
                socket_send_buffer: s.socket_send_buffer.unwrap_or(64 * 1024),
                write_delay: s.write_delay.unwrap_or(Duration::ZERO),
                tls: tls_files(s.public_tls_cert.clone(), s.public_tls_key.clone(), None, "public-tls-cert")?,
                push_on_public: s.push_on_public.unwrap_or(false),
                demo: s.demo.unwrap_or(false),
            },
            internal: InternalConfig {
                addr: s.internal_addr.unwrap_or(([127, 0, 0, 1], 50051).into()),
                api_keys,
                tls: tls_files(s.tls_cert.clone(), s.tls_key.clone(), s.tls_client_ca.clone(), "tls-cert")?,
                request_body_timeout: s.request_body_timeout.unwrap_or(Duration::from_secs(30)),
            },
            hub,
            auth: AuthConfig {
                mode: s.auth.unwrap_or_default(),
                tokens_file: s.auth_tokens,
                jwt_secret: s.jwt_secret,
                jwt_public_key: s.jwt_public_key,
                jwks: s.jwks,
                webhook_ca: s.auth_webhook_ca,
                timeout: s.auth_timeout.unwrap_or(Duration::from_secs(2)),
                cache_ttl: s.auth_cache_ttl.unwrap_or(Duration::from_secs(30)),
            },
            heartbeat: HeartbeatConfig {
                ping_interval: s.ping_interval.unwrap_or(Duration::from_secs(25)),
                pong_timeout: s.pong_timeout.unwrap_or(Duration::from_secs(10)),
            },
            cluster: ClusterConfig {
                broker: s.broker.unwrap_or_default(),
                prefix: s.broker_prefix.unwrap_or_else(|| "pushgate".into()),
                node_id: s.node_id.unwrap_or_else(crate::broker::generated_node_id),
                node_lease: s.node_lease.unwrap_or(Duration::from_secs(10)),
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
        history_meta_ttl: s.history_meta_ttl.unwrap_or(d.history_meta_ttl),
        history_max_bytes: s.history_max_bytes.map_or(d.history_max_bytes, saturating_usize),
    }
}

impl Config {
    fn check(&self, insecure: bool) -> Result<(), ConfigError> {
        self.check_bounds()?;
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
        if self.hub.history_meta_ttl < self.hub.history_ttl {
            return invalid("history-meta-ttl", "must be at least --history-ttl");
        }
        if self.hub.conn_queue_bytes < self.hub.max_message_bytes + 256 {
            return invalid("conn-queue-bytes", "must hold at least one message of --max-message-bytes");
        }
        check_name(&self.cluster.prefix).or_else(|m| invalid("broker-prefix", &m))?;
        check_name(&self.cluster.node_id).or_else(|m| invalid("node-id", &m))?;
        if self.public.push_on_public && self.internal.api_keys.is_empty() {
            return invalid("push-on-public", "--push-on-public needs at least one --api-key");
        }
        if self.public.demo && !self.public.addr.ip().is_loopback() {
            return invalid("demo", "--demo serves a development page: the public listener must be on loopback");
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
/// A size the operator gave as u64, as the hub holds it; past `usize` (a
/// 32-bit target) it saturates, which the bounds check then refuses.
fn saturating_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
