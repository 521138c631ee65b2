//! Several nodes: which broker they share (`--broker`), the key prefix, this
//! node's id and its presence lease.

use std::time::Duration;

use serde::Deserialize;

/// Which broker the nodes share (`--broker`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum BrokerUrl {
    /// `memory`: one node, nothing shared (the default).
    #[default]
    Memory,
    /// `redis://HOST:PORT[/DB]`: seq, history, idempotency and presence
    /// cluster-wide.
    Redis(String),
    /// `nats://HOST:PORT`: cross-node delivery, at most once; seq and history
    /// per node.
    Nats(String),
}

impl TryFrom<String> for BrokerUrl {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        parse_broker(&s)
    }
}

/// Parses a `--broker` value, checking the URL's shape: a known scheme, a
/// host, a numeric port, and for Redis an optional numeric database.
pub fn parse_broker(s: &str) -> Result<BrokerUrl, String> {
    if s == "memory" {
        return Ok(BrokerUrl::Memory);
    }
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| format!("`{s}`: expected memory, redis://HOST:PORT[/DB] or nats://HOST:PORT"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    // A password may come before the host (redis://:secret@host:6379).
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (host, Some(port)),
        _ => (host_port, None),
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("`{s}`: no host"));
    }
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err(format!("`{s}`: the port must be a number from 0 to 65535"));
    }
    match scheme {
        "redis" | "rediss" => {
            if !path.is_empty() && path.parse::<u32>().is_err() {
                return Err(format!("`{s}`: the database after `/` must be a number"));
            }
            Ok(BrokerUrl::Redis(s.to_owned()))
        }
        "nats" | "tls" => {
            if !path.is_empty() {
                return Err(format!("`{s}`: a NATS URL has no path"));
            }
            Ok(BrokerUrl::Nats(s.to_owned()))
        }
        other => Err(format!("`{s}`: unknown scheme `{other}` (memory, redis://, rediss://, nats://)")),
    }
}

pub(super) fn de_broker<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<BrokerUrl>, D::Error> {
    BrokerUrl::deserialize(d).map(Some)
}

/// Checks a `--broker-prefix` or `--node-id`: 1 to 64 characters, letters,
/// digits and `-_.:` only (they become parts of Redis keys and NATS subjects).
pub fn check_name(s: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "-_.:".contains(c);
    if s.is_empty() || s.len() > 64 || !s.chars().all(ok) {
        return Err(format!("`{s}`: 1 to 64 characters of letters, digits and -_.: only"));
    }
    Ok(())
}

/// The nodes' shared broker and this node's place among them.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Default `memory`.
    pub broker: BrokerUrl,
    /// Prefix of every Redis key and channel and NATS subject (default
    /// `pushgate`).
    pub prefix: String,
    /// Default: generated from the host name and a random suffix.
    pub node_id: String,
    /// How long a node counts as alive after its last lease refresh (default
    /// 10 s, at least 1 s); refreshed every third of it.
    pub node_lease: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(parse_broker("memory"), Ok(BrokerUrl::Memory));
        assert_eq!(parse_broker("redis://127.0.0.1:6379"), Ok(BrokerUrl::Redis("redis://127.0.0.1:6379".into())));
        assert!(matches!(parse_broker("redis://localhost:6379/2"), Ok(BrokerUrl::Redis(_))));
        assert!(matches!(parse_broker("redis://:pw@localhost:6379/0"), Ok(BrokerUrl::Redis(_))));
        assert!(matches!(parse_broker("nats://127.0.0.1:4222"), Ok(BrokerUrl::Nats(_))));
        for bad in ["", "redis", "redis://", "redis://h:port", "redis://h:6379/x", "kafka://h:1", "nats://h:4222/x"] {
            assert!(parse_broker(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(check_name("pushgate").is_ok());
        assert!(check_name("test-1.a_b:c").is_ok());
        for bad in ["", "a b", "a*", "a>", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
