//! P10: do slow consumers hurt the others? The loaded latency of P4, twice,
//! each time with a feeder beside the paced load that pushes
//! `--slow-message-bytes` messages at `--slow-rate` per second to each of
//! `--slow-percent` (1 %) of `--connections` extra users:
//!
//! 1. **without**: those users have no connection (the gateway takes, keeps
//!    and numbers the pushes, and delivers them to nobody);
//! 2. **with**: each has one connection that registers, then never reads
//!    its socket again. Its kernel buffers and then its send queue fill
//!    within the phase, and the gateway should shed it (close 4000,
//!    docs/protocol.md) without slowing anyone else.
//!
//! The pushes are the same in both runs; only the slow connections differ.
//! The fleet's push→receive p99 of the two runs, and their ratio, is the
//! figure; how the slow connections ended, and the gateway's own count of
//! 4000 closes, say whether the policy did its work.

use std::fmt::{self, Display, Formatter};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use futures_util::future::join_all;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::Args;
use crate::fleet::{self, Shared, Ws};
use crate::metrics;
use crate::phases::measure;
use crate::producer::{Load, Producer, Tally};
use crate::report::Measured;
use crate::target::Target;

/// P10's goal: the others' p99 with slow consumers at most this times without.
const GOAL_RATIO: f64 = 1.2;
/// How long the stalled clients are given, at the end, to read what reached them.
const DRAIN: Duration = Duration::from_secs(5);

/// One of the two runs.
pub struct Run {
    pub name: String,
    pub p99_ns: u64,
    /// What the feeder's replies said: pushes to the extra users.
    pub feed: Tally,
    /// How the slow connections ended, e.g. `close 4000 ×100`; empty without them.
    pub ended: String,
    /// `pushgate_disconnects_total{code="4000"}` over the run and its drain.
    pub gw_4000: Option<f64>,
}

/// The printed section of P10.
pub struct Slow {
    pub rate: f64,
    pub extra: usize,
    pub feed_rate: f64,
    pub feed_bytes: usize,
    pub runs: Vec<Run>,
}

/// Runs P10 at `rate` base pushes/s; its two rows go to `rows`.
pub async fn run(
    args: &Args,
    target: &mut Target,
    producer: &Arc<Producer>,
    rate: f64,
    rows: &mut Vec<Measured>,
) -> anyhow::Result<Slow> {
    let extra = extra_connections(args);
    let mut section = Slow {
        rate,
        extra,
        feed_rate: args.more.slow_rate * extra as f64,
        feed_bytes: args.more.slow_message_bytes,
        runs: Vec::new(),
    };
    for (prefix, slow) in [("sa", false), ("sb", true)] {
        let label = if slow { "connected, not reading" } else { "with no connection" };
        let name = format!("P10 at {rate:.0}/s, {extra} fed users {label}");
        eprintln!("{name}: {:.0} pushes/s of {} bytes to them ...", section.feed_rate, section.feed_bytes);
        let (row, run) = one_run(args, target, producer, &section, prefix, slow, name).await?;
        rows.push(row);
        section.runs.push(run);
    }
    Ok(section)
}

/// The extra connections of each run: `--slow-percent` of `--connections`, at least one.
pub fn extra_connections(args: &Args) -> usize {
    ((args.connections as f64 * args.more.slow_percent / 100.0).ceil() as usize).max(1)
}

/// One run: the extra clients, the paced load with the feeder beside it.
async fn one_run(
    args: &Args,
    target: &mut Target,
    producer: &Arc<Producer>,
    section: &Slow,
    prefix: &str,
    slow: bool,
    name: String,
) -> anyhow::Result<(Measured, Run)> {
    let shared = Shared::new();
    let users = Producer::users(prefix, section.extra);
    // Registered, then never read until the phase is over.
    let stalled = if slow { open(target, &users, args.mode).await? } else { Vec::new() };
    let feeder = Arc::new(producer.retarget(users, section.feed_bytes, Arc::clone(&shared)));
    let secs = args.load_duration.as_secs_f64();
    let deadline = Instant::now() + (args.load_duration * 2).min(args.duration_cap);
    let base = Load::paced(args, section.rate, secs, deadline);
    let feed = Load::paced(args, section.feed_rate, secs, deadline);
    let before = metrics::scrape(target.internal).await;
    let mut feed_tally = Tally::default();
    let work = async {
        let (base, fed) = tokio::join!(producer.run(base), feeder.run(feed));
        feed_tally = fed?;
        base
    };
    let row = measure(&name, target, producer, work).await?;
    // Now read whatever reached the slow clients, to see how each ended.
    let ended = if slow { stalled_ending(stalled, &shared).await } else { String::new() };
    let after = metrics::scrape(target.internal).await;
    let gw_4000 = closes_4000(before.as_deref(), after.as_deref());
    let run = Run { name, p99_ns: row.latency.p99, feed: feed_tally, ended, gw_4000 };
    Ok((row, run))
}

/// The gateway's 4000 closes between two scrapes of `/metrics` (the series
/// appears with the first such close).
fn closes_4000(before: Option<&str>, after: Option<&str>) -> Option<f64> {
    let series = r#"pushgate_disconnects_total{code="4000"}"#;
    let count = |text: &str| metrics::sample(text, series).unwrap_or(0.0);
    before.zip(after).map(|(b, a)| count(a) - count(b))
}

/// Opens and registers one connection per user, all at once.
async fn open(target: &Target, users: &[String], mode: fleet::Mode) -> anyhow::Result<Vec<Ws>> {
    let addr = target.public;
    let connects = users.iter().map(|user| async move {
        let tcp = TcpStream::connect(addr).await.context("TCP connect")?;
        let ws = tokio::time::timeout(Duration::from_secs(15), fleet::upgrade(tcp, addr, user, mode)).await;
        ws.with_context(|| format!("connection {user}: no registration within 15 s"))?
            .with_context(|| format!("connection {user}"))
    });
    join_all(connects).await.into_iter().collect()
}

/// Reads each stalled connection to its end (at most [`DRAIN`] for all)
/// and tallies how they ended: `close 4000`, `eof`, a read error, or
/// `still open`.
async fn stalled_ending(clients: Vec<Ws>, shared: &Arc<Shared>) -> String {
    let give_up = tokio::time::Instant::now() + DRAIN;
    let endings = clients.into_iter().map(|mut ws| async move {
        let ending = async {
            while let Some(frame) = ws.next().await {
                match frame {
                    Ok(Message::Close(frame)) => {
                        return frame.map(|f| format!("close {}", u16::from(f.code))).unwrap_or("close".into());
                    }
                    Ok(_) => {}
                    Err(e) => return format!("read error ({})", fleet::kind(&e)),
                }
            }
            "eof".into()
        };
        tokio::time::timeout_at(give_up, ending).await.unwrap_or_else(|_| "still open".into())
    });
    for ending in join_all(endings).await {
        shared.count_close(ending);
    }
    shared.closes_text()
}

impl Display for Slow {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "P10 slow consumers: base load {:.0} pushes/s to the fleet; beside it {:.0} pushes/s of {} bytes to {} other users, in both runs",
            self.rate, self.feed_rate, self.feed_bytes, self.extra
        )?;
        for r in &self.runs {
            let gw = r.gw_4000.map_or("-".into(), |n| format!("{n:.0}"));
            let ended =
                if r.ended.is_empty() { String::new() } else { format!("; the slow connections ended: {}", r.ended) };
            writeln!(
                f,
                "  {}: fleet p99 {:.0} µs; feeder pushes {} acked, queued to {}{ended}; gateway 4000 closes {gw}",
                r.name,
                r.p99_ns as f64 / 1000.0,
                r.feed.replies,
                r.feed.delivered
            )?;
        }
        if let [without, with] = self.runs.as_slice() {
            let ratio = with.p99_ns as f64 / without.p99_ns.max(1) as f64;
            let ok = if ratio <= GOAL_RATIO { "met" } else { "MISSED" };
            writeln!(
                f,
                "  P10 others' p99 with slow consumers ≤ {GOAL_RATIO}× without: {:.0} / {:.0} µs = {ratio:.2}× ({ok})",
                with.p99_ns as f64 / 1000.0,
                without.p99_ns as f64 / 1000.0
            )?;
        }
        Ok(())
    }
}
