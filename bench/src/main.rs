//! `pushgate-bench`: the load generator behind BENCHMARKS.md (P1 – P11, P4a),
//! and, as `pushgate-bench serve`, the floor server every scenario is also
//! measured on.
//!
//! It starts `pushgate serve` as a child (or attaches to a running gateway),
//! opens N WebSocket connections as users `u0..uN-1` on event `bench`, pushes
//! stamped messages over gRPC `PushStream`s, and reports deliveries/s, the
//! gateway's CPU time per delivery and RSS per idle connection (read from
//! `/proc/<pid>`), and push→receive latency. Every phase is bounded in count
//! and time; the program stops by itself and kills the gateway it started.
//!
//! - [`target`]: the gateway process and its `/proc` readings.
//! - [`fleet`]: the WebSocket clients.
//! - [`producer`]: the gRPC pushes.
//! - [`phases`]: what each phase does and measures.
//! - [`metrics`]: the gateway's own push→write latency histogram.
//! - [`report`]: the printed table.
//! - [`ingest`], [`echo`], [`slow`], [`history`], [`brokers`]: P7/P8 (and
//!   the bare tonic server P7 compares with), P10, P11, the broker rows;
//!   [`options`] their flags, [`cost`] their `/proc` readings.
//! - [`floor`]: the floor server (`pushgate-bench serve`, a child process).
//! - [`compare`]: each scenario on the floor and on pushgate, and the ratios.
//! - [`scenarios`]: P3 (HTTP fan-out), P4a (low-load latency), P5 (one user's
//!   10 000 connections).
//! - [`http_push`]: wserver's `POST /push` producers; [`http1`] the HTTP
//!   they and the floor read by hand.
//! - [`plot`]: latency against offered load, as an SVG.

mod brokers;
mod compare;
mod cost;
mod echo;
mod fleet;
mod floor;
mod histogram;
mod history;
mod http1;
mod http_push;
mod ingest;
mod metrics;
mod options;
mod phases;
mod plot;
mod producer;
mod report;
mod scenarios;
mod slow;
mod target;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use pushgate::config::parse_duration;

use crate::fleet::Mode;

/// Load generator for pushgate (BENCHMARKS.md): fan-out throughput, CPU per
/// delivery, latency, memory per idle connection, connect rate.
#[derive(Debug, Clone, Parser)]
#[command(name = "pushgate-bench", version)]
pub struct Args {
    /// WebSocket connections, one user each (u0..uN-1).
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Pushes in the throughput phases (P1, P2).
    #[arg(long, default_value_t = 500_000)]
    pub pushes: u64,
    /// Size of each pushed message in bytes (at least 16: the send stamp).
    #[arg(long, default_value_t = 100)]
    pub message_bytes: usize,
    /// Concurrent gRPC PushStreams, each on its own HTTP/2 connection.
    #[arg(long, default_value_t = 4)]
    pub streams: usize,
    /// Pushes in flight per stream (sent, reply not yet read).
    #[arg(long, default_value_t = 512)]
    pub window: usize,
    /// Browser protocol: the `pushgate.v1` envelope, or wserver-compatible raw text.
    #[arg(long, value_enum, default_value_t = Mode::Envelope)]
    pub mode: Mode,
    /// Phases to run, comma-separated: p6 (idle memory), p11 (history
    /// memory), p1 (fan-out throughput), p2 (bursts), p4 (latency idle and
    /// loaded), p7 (unary ingest against a bare tonic echo), p8 (streamed
    /// ingest), p10 (slow consumers), then, each on its own fleet, p3 (HTTP
    /// fan-out), p4a (low-load latency), p5 (one user, every connection).
    /// They run in that order whatever the order given. The connect rate
    /// (P9) is always reported.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "p6,p1,p2,p4,p3,p4a,p5")]
    pub phases: Vec<phases::Phase>,
    /// The gateway binary. [default: `pushgate` next to this executable]
    #[arg(long, conflicts_with = "attach")]
    pub server: Option<PathBuf>,
    /// Extra argument for `pushgate serve` (repeatable), e.g. `--server-arg=--history-size=0`.
    #[arg(long = "server-arg", allow_hyphen_values = true, conflicts_with = "attach")]
    pub server_args: Vec<String>,
    /// Measure an already running gateway instead of starting one.
    #[arg(long, num_args = 3, value_names = ["PUBLIC_ADDR", "INTERNAL_ADDR", "PID"])]
    pub attach: Option<Vec<String>>,
    /// Longest time any one push phase may send for.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub duration_cap: Duration,
    /// Pushes per second of the loaded latency phase. [default: 50% of the P1 figure]
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long the loaded latency phase pushes for.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub load_duration: Duration,
    /// Samples of the idle latency phase (one push at a time).
    #[arg(long, default_value_t = 2000)]
    pub idle_samples: usize,
    /// Pushes per user back-to-back in the burst phase (P2).
    #[arg(long, default_value_t = 8)]
    pub burst: u64,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Send the pushes to this internal address (another node of the
    /// gateway's cluster) instead of the measured gateway's; `Stats` still
    /// comes from the measured gateway.
    #[arg(long)]
    pub push_to: Option<SocketAddr>,
    /// Another process of the cluster (a node, redis-server) whose CPU time
    /// counts with the gateway's (repeatable): per-delivery CPU is then the
    /// cluster's.
    #[arg(long = "cluster-pid")]
    pub cluster_pids: Vec<u32>,
    #[command(flatten)]
    pub more: options::PhaseOptions,
    /// Measure the floor server on the same scenarios and print the ratios
    /// (on/off; only when this program starts the gateway).
    #[arg(long, default_value = "on", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub floor: bool,
    /// The floor's write policy (P2 compares with `coalesced`).
    #[arg(long, value_enum, default_value_t = floor::Writes::Coalesced)]
    pub floor_writes: floor::Writes,
    /// Write an SVG of push→receive p50/p99 against offered load (pushgate
    /// and the floor, `--sweep` rates) to this path.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Offered loads of the plot's sweep, as fractions of pushgate's P1
    /// deliveries/s (or pushes/s when above 1).
    #[arg(long, value_delimiter = ',', default_value = "0.05,0.2,0.4,0.6,0.8")]
    pub sweep: Vec<f64>,
    /// How long each rate of the sweep pushes for.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub sweep_duration: Duration,
    /// Single pushes to the one user of P5.
    #[arg(long, default_value_t = 20)]
    pub p5_pushes: usize,
}

/// Where the gateway is.
#[derive(Clone)]
pub enum Where {
    Spawn { server: PathBuf, extra: Vec<String> },
    Attach { public: SocketAddr, internal: SocketAddr, pid: u32 },
}

impl Args {
    fn place(&self) -> anyhow::Result<Where> {
        if let Some(a) = &self.attach {
            let [public, internal, pid] = a.as_slice() else { bail!("--attach takes PUBLIC_ADDR INTERNAL_ADDR PID") };
            return Ok(Where::Attach {
                public: public.parse().with_context(|| format!("--attach public address `{public}`"))?,
                internal: internal.parse().with_context(|| format!("--attach internal address `{internal}`"))?,
                pid: pid.parse().with_context(|| format!("--attach pid `{pid}`"))?,
            });
        }
        let server = match &self.server {
            Some(path) => path.clone(),
            None => {
                let exe = std::env::current_exe().context("locating this executable")?;
                exe.with_file_name("pushgate")
            }
        };
        Ok(Where::Spawn { server, extra: self.server_args.clone() })
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.connections == 0 {
            bail!("--connections must be at least 1");
        }
        if self.message_bytes < fleet::STAMP_DIGITS {
            bail!("--message-bytes must be at least {} (the send stamp)", fleet::STAMP_DIGITS);
        }
        if self.burst == 0 || self.streams == 0 || self.window == 0 {
            bail!("--burst, --streams and --window must be at least 1");
        }
        if let Some(limit) = open_file_limit()
            && self.connections + 64 > limit
        {
            bail!("{} connections need more than this process's open-file limit of {limit}", self.connections);
        }
        Ok(())
    }
}

/// This process's soft limit on open files.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("serve") {
        return floor::main();
    }
    if let Some(code) = echo::main_if_asked() {
        return code;
    }
    let args = Args::parse();
    let result = args.check().and_then(|()| {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let result = runtime.block_on(compare::run(&args));
        // Client tasks still hold sockets; do not wait for them.
        runtime.shutdown_timeout(Duration::from_millis(200));
        result
    });
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pushgate-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
