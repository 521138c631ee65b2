//! The flags of the phases P7, P8, P10, P11 and of the broker rows,
//! flattened into [`crate::Args`].

/// Sizes of the phases P7, P8, P10, P11 and the broker rows.
#[derive(Debug, Clone, clap::Args)]
pub struct PhaseOptions {
    /// P7: unary `Push` calls made to each server (the gateway, then the echo server).
    #[arg(long, default_value_t = 100_000)]
    pub unary_pushes: u64,
    /// P7: unary calls in flight at once, spread over `--streams` HTTP/2 connections.
    #[arg(long, default_value_t = 256)]
    pub unary_concurrency: usize,
    /// P11: 100-byte messages pushed to users with no connection, to be kept in history.
    #[arg(long, default_value_t = 100_000)]
    pub history_messages: u64,
    /// P11: messages per offline user (at most the gateway's `--history-size`, 64 by default).
    #[arg(long, default_value_t = 64)]
    pub history_depth: u64,
    /// P10: slow consumers, as a percentage of `--connections` (at least one).
    #[arg(long, default_value_t = 1.0)]
    pub slow_percent: f64,
    /// P10: size of the messages pushed to the slow consumers' users (at
    /// most the gateway's `--max-message-bytes`).
    #[arg(long, default_value_t = 65_536)]
    pub slow_message_bytes: usize,
    /// P10: pushes per second to each slow consumer's user. The default
    /// (1.6 MiB/s) overflows a stalled connection within a second: its
    /// 256 KiB send queue plus what the kernel buffers take first (the
    /// gateway's `--socket-send-buffer`, doubled, and the client's receive
    /// buffer; up to 4 MiB with `--socket-send-buffer 0`).
    #[arg(long, default_value_t = 25.0)]
    pub slow_rate: f64,
    /// After the phases, measure P1 again on a fresh single-node gateway
    /// with `--broker memory`, and with `--broker REDIS_URL` when Redis
    /// answers (a row each).
    #[arg(long)]
    pub broker_rows: bool,
    /// The Redis of `--broker-rows`.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
}
