//! The sane range of every duration and size an operator sets. A value
//! outside it stops start-up with an error naming the flag, so no later
//! arithmetic (an instant plus a timeout, a limit plus an overhead) can
//! overflow and no limit can lock every client out.

use std::fmt::Debug;
use std::time::Duration;

use super::{Config, ConfigError};

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;

/// Refuses `value` unless `min <= value <= max`.
fn within<T: PartialOrd + Debug>(key: &'static str, value: T, min: T, max: T) -> Result<(), ConfigError> {
    if value < min || value > max {
        let message = format!("{value:?} is out of range: it must be between {min:?} and {max:?}");
        return Err(ConfigError::Invalid { key, message });
    }
    Ok(())
}

impl Config {
    /// Checks every duration and size against its range.
    pub(super) fn check_bounds(&self) -> Result<(), ConfigError> {
        let (public, hub, auth, beat) = (&self.public, &self.hub, &self.auth, &self.heartbeat);
        within("register-timeout", public.register_timeout, MS, HOUR)?;
        within("handshake-timeout", public.handshake_timeout, MS, HOUR)?;
        within("request-body-timeout", self.internal.request_body_timeout, MS, HOUR)?;
        within("ping-interval", beat.ping_interval, 10 * MS, DAY)?;
        within("pong-timeout", beat.pong_timeout, MS, DAY)?;
        within("drain-timeout", self.drain_timeout, Duration::ZERO, HOUR)?;
        within("auth-timeout", auth.timeout, MS, 10 * 60 * SECOND)?;
        within("auth-cache-ttl", auth.cache_ttl, Duration::ZERO, DAY)?;
        within("history-ttl", hub.history_ttl, Duration::ZERO, 30 * DAY)?;
        within("history-meta-ttl", hub.history_meta_ttl, Duration::ZERO, 365 * DAY)?;
        within("node-lease", self.cluster.node_lease, SECOND, HOUR)?;
        within("max-connections", public.max_connections, 1, 10_000_000)?;
        within("max-connections-per-ip", public.max_connections_per_ip, 0, 10_000_000)?;
        within("max-handshakes", public.max_handshakes, 1, 1_000_000)?;
        within("max-connections-per-user", hub.max_connections_per_user, 1, 1_000_000)?;
        within("max-message-bytes", hub.max_message_bytes, 1, 16 * MIB)?;
        within("max-client-frame-bytes", public.max_client_frame_bytes, 64, MIB)?;
        within("max-events-per-conn", hub.max_events_per_conn, 1, 4096)?;
        within("conn-queue-bytes", hub.conn_queue_bytes, KIB, GIB)?;
        within("socket-send-buffer", public.socket_send_buffer, 0, 64 * MIB)?;
        within("write-delay", public.write_delay, Duration::ZERO, SECOND)?;
        within("history-size", hub.history_size, 0, 100_000)?;
        within("history-max-bytes", hub.history_max_bytes, 0, 1 << 50)?;
        within("listen-backlog", self.listen_backlog, 1, 65_535)?;
        within("max-memory", public.max_memory, 0, 1 << 50)?;
        Ok(())
    }
}
