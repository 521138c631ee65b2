//! P11: what the gateway's memory holds per message kept in history.
//!
//! `--history-messages` pushes of `--message-bytes` go round-robin to users
//! `h0..` that have no connection, `--history-depth` per user, so every
//! message is kept (history is per user, `--history-size` deep, for
//! `--history-ttl`) and none is delivered. The gateway's RSS is read before
//! and after (each after a pause for its allocator to settle), with its own
//! `pushgate_history_bytes` gauge for comparison; evictions past
//! `--history-max-bytes` are subtracted from the kept count.

use std::fmt::{self, Display, Formatter};
use std::sync::Arc;
use std::time::Duration;

use crate::Args;
use crate::cost::{Cost, Meter};
use crate::fleet::Shared;
use crate::metrics;
use crate::producer::{Load, Producer};
use crate::target::Target;

/// P11's goal: bytes of gateway memory per kept message.
const GOAL_BYTES: f64 = 250.0;
/// Pause before each RSS reading.
const SETTLE: Duration = Duration::from_millis(500);

/// The printed section of P11.
pub struct History {
    pub message_bytes: usize,
    pub users: usize,
    pub acked: u64,
    pub failed: u64,
    pub delivered: u64,
    /// Messages evicted by the budget meanwhile (`pushgate_history_evictions_total`).
    pub evicted: Option<f64>,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// `pushgate_history_bytes` before and after.
    pub gauge: Option<(f64, f64)>,
    pub cost: Cost,
}

impl History {
    fn kept(&self) -> f64 {
        (self.acked as f64 - self.evicted.unwrap_or(0.0)).max(1.0)
    }

    fn rss_per_kept(&self) -> f64 {
        (self.rss_after_kib as f64 - self.rss_before_kib as f64) * 1024.0 / self.kept()
    }
}

/// Runs P11 through `producer`'s connections.
pub async fn run(args: &Args, target: &mut Target, producer: &Producer) -> anyhow::Result<History> {
    let (m, depth) = (args.more.history_messages, args.more.history_depth.max(1));
    let users = m.div_ceil(depth).max(1) as usize;
    eprintln!("P11: {m} pushes to {users} users with no connection, {depth} each ...");
    let producer = Arc::new(producer.retarget(Producer::users("h", users), args.message_bytes, Shared::new()));
    let load = Load { pushes: m, ..Load::flat_out(args, 1) };
    target.check_alive()?;
    tokio::time::sleep(SETTLE).await;
    let (rss_before, scrape_before) = (target.sample()?.rss_kib, metrics::scrape(target.internal).await);
    let meter = Meter::start(target, target.pid)?;
    let tally = producer.run(load).await?;
    let cost = meter.stop(target)?;
    tokio::time::sleep(SETTLE).await;
    let (rss_after, scrape_after) = (target.sample()?.rss_kib, metrics::scrape(target.internal).await);
    target.check_alive()?;
    let read = |series: &str| {
        let before = scrape_before.as_deref().and_then(|t| metrics::sample(t, series));
        let after = scrape_after.as_deref().and_then(|t| metrics::sample(t, series));
        before.zip(after)
    };
    Ok(History {
        message_bytes: args.message_bytes,
        users,
        acked: tally.replies,
        failed: tally.failed,
        delivered: tally.delivered,
        evicted: read("pushgate_history_evictions_total").map(|(b, a)| a - b),
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        gauge: read("pushgate_history_bytes"),
        cost,
    })
}

impl Display for History {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "P11 history: {} pushes of {} bytes to {} users with no connection ({} failed, {} delivered) in {:.2} s, gateway {:.2} CPU-µs per push",
            self.acked,
            self.message_bytes,
            self.users,
            self.failed,
            self.delivered,
            self.cost.elapsed.as_secs_f64(),
            self.cost.server_cpu_us as f64 / self.acked.max(1) as f64
        )?;
        let evicted = self.evicted.map_or("unknown".into(), |e| format!("{e:.0}"));
        writeln!(
            f,
            "P11 gateway RSS {} KiB -> {} KiB = {:.0} B per kept message ({:.0} kept, {evicted} evicted)",
            self.rss_before_kib,
            self.rss_after_kib,
            self.rss_per_kept(),
            self.kept()
        )?;
        if let Some((before, after)) = self.gauge {
            writeln!(
                f,
                "P11 pushgate_history_bytes {before:.0} -> {after:.0} = {:.0} B per kept message (the gateway's own count)",
                (after - before) / self.kept()
            )?;
        }
        let b = self.rss_per_kept();
        let ok = if b <= GOAL_BYTES { "met" } else { "MISSED" };
        writeln!(f, "  P11 ≤ {GOAL_BYTES:.0} B of RSS per kept {}-byte message: {b:.0} B ({ok})", self.message_bytes)
    }
}
