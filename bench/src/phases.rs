//! What each phase does and how it is measured.
//!
//! Every push phase is framed the same way ([`measure`]): read the gateway's
//! and this process's CPU time and RSS from `/proc`, run the pushes, wait
//! until the frames the gateway reported queued have arrived (or stop
//! arriving), read `/proc` again. Per-delivery figures divide by frames
//! actually received by the clients.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::anyhow;

use crate::cost::Meter;
use crate::fleet::{self, Shared};
use crate::metrics::WriteLatency;
use crate::producer::{Load, Producer, Tally};
use crate::report::{Connect, IdleMemory, Measured, Report};
use crate::target::{Spawn, Target};
use crate::{Args, Where, brokers, history, ingest, slow};

/// A phase selectable with `--phases`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Phase {
    /// Idle memory: gateway RSS per registered idle connection.
    P6,
    /// Fan-out throughput: round-robin pushes, one frame per delivery.
    P1,
    /// Bursts: `--burst` pushes per user back-to-back, frames coalesce.
    P2,
    /// Latency: one push at a time, then at `--rate`.
    P4,
    /// Unary `Push` ingest, no subscriber, against a bare tonic echo.
    P7,
    /// `PushStream` ingest, no subscriber.
    P8,
    /// Loaded latency without and with 1 % slow consumers.
    P10,
    /// Memory per message kept in history.
    P11,
    /// wserver's HTTP `/push` fan-out: 10 connections per user, 8 producers.
    P3,
    /// Push→receive at 2 000 HTTP pushes/s to users with 10 connections.
    P4a,
    /// One push to one user holding every connection: the makespan.
    P5,
}

/// How long a phase waits for frames that stopped arriving.
const QUIET: Duration = Duration::from_secs(2);

/// Starts (`place`) or attaches to the gateway, runs the phases, returns
/// the report. The gateway this started is killed on return, error or not.
pub async fn run(args: &Args, place: Where) -> anyhow::Result<Report> {
    let mut target = match place {
        Where::Spawn { server, extra } => {
            // Room for P10's slow consumers beside the fleet.
            let max_connections = args.connections + 64 + slow::extra_connections(args);
            let spawn = Spawn { server: &server, max_connections, extra_args: &extra };
            Target::spawn(spawn).await?
        }
        Where::Attach { public, internal, pid } => Target::attach(public, internal, pid).await?,
    };
    target.count_with(&args.cluster_pids);
    let result = match drive(args, &mut target).await {
        Ok(report) => Ok(report),
        Err(e) => match gone(&mut target).await {
            Some(dead) => Err(anyhow!("{e:#}\n{dead:#}")),
            None => Err(e),
        },
    };
    target.stop();
    let mut report = result?;
    if args.more.broker_rows {
        brokers::rows(args, &mut report).await?;
    }
    Ok(report)
}

/// Why the gateway is gone, if it is: a dying process closes its sockets
/// before it can be reaped, so a failure is given a moment to show as an exit.
async fn gone(target: &mut Target) -> Option<anyhow::Error> {
    for _ in 0..20 {
        if let Err(dead) = target.check_alive() {
            return Some(dead);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn drive(args: &Args, target: &mut Target) -> anyhow::Result<Report> {
    let shared = Shared::new();
    let mut report = Report::new(args, target);
    if let Some(node) = args.push_to {
        report.notes.push(format!("pushes sent to another node of the cluster at {node}"));
    }
    if !args.cluster_pids.is_empty() {
        report.notes.push(format!("gateway CPU counts the cluster: pids {:?} with the gateway's", args.cluster_pids));
    }
    let before = target.sample()?;
    let me_before = target.sample_self()?;
    eprintln!("opening {} {:?} connections to {} ...", args.connections, args.mode, target.public);
    let opened = fleet::open(target.public, args.connections, args.connect_concurrency, args.mode, &shared).await?;
    let (opened_at, me_opened) = (target.sample()?, target.sample_self()?);
    report.connect = Some(Connect {
        connections: opened.connections,
        elapsed: opened.elapsed,
        server_cpu_us: opened_at.cpu_us.saturating_sub(before.cpu_us),
        bench_cpu_us: me_opened.cpu_us.saturating_sub(me_before.cpu_us),
    });
    let producer = Arc::new(
        Producer::connect(
            args.push_to.unwrap_or(target.internal),
            target.internal,
            args.streams,
            args.connections,
            args.message_bytes,
            Arc::clone(&shared),
        )
        .await?,
    );
    if let Some(note) = wait_registered(&producer, args.connections).await? {
        report.notes.push(note);
    }
    target.check_alive()?;
    // Let the gateway's allocator settle after the storm before reading RSS.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (after, me_after) = (target.sample()?, target.sample_self()?);
    report.idle_memory = Some(IdleMemory {
        before_kib: before.rss_kib,
        after_kib: after.rss_kib,
        bench_delta_kib: me_after.rss_kib.saturating_sub(me_before.rss_kib),
        connections: opened.connections,
    });
    let phases = &args.phases;
    let mut p1_rate = None;
    if phases.contains(&Phase::P11) {
        report.sections.push(Box::new(history::run(args, target, &producer).await?));
    }
    if phases.contains(&Phase::P1) {
        eprintln!("P1: {} round-robin pushes over {} streams ...", args.pushes, args.streams);
        let load = Load::flat_out(args, 1);
        let m = measure("P1 fan-out", target, &producer, producer.run(load)).await?;
        p1_rate = Some(m.deliveries_per_sec());
        report.rows.push(m);
    }
    if phases.contains(&Phase::P2) {
        eprintln!("P2: {} pushes in bursts of {} per user ...", args.pushes, args.burst);
        let load = Load::flat_out(args, args.burst);
        let name = format!("P2 bursts of {}", args.burst);
        report.rows.push(measure(&name, target, &producer, producer.run(load)).await?);
    }
    if phases.contains(&Phase::P4) {
        eprintln!("P4: {} idle samples ...", args.idle_samples);
        let seed = shared.now_nanos();
        let idle = producer.one_at_a_time(args.idle_samples, seed);
        report.rows.push(measure("P4 idle (1 at a time)", target, &producer, idle).await?);
        loaded(args, target, &producer, p1_rate, &mut report).await?;
    }
    more_phases(args, target, &producer, p1_rate, &mut report).await?;
    report.closes = shared.closes_text();
    report.open_at_end = shared.open.load(Relaxed);
    report.other_frames = shared.other_frames.load(Relaxed);
    Ok(report)
}

/// P7, P8 and P10, in that order, when asked for.
async fn more_phases(
    args: &Args,
    target: &mut Target,
    producer: &Arc<Producer>,
    p1_rate: Option<f64>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut ingest = ingest::Ingest { setup: ingest_setup(args), ..Default::default() };
    if args.phases.contains(&Phase::P7) {
        ingest::unary(args, target, &mut ingest).await?;
    }
    if args.phases.contains(&Phase::P8) {
        ingest::stream(args, target, producer, &mut ingest).await?;
    }
    if ingest.echo.is_some() || ingest.stream.is_some() {
        report.sections.push(Box::new(ingest));
    }
    if args.phases.contains(&Phase::P10) {
        match loaded_rate(args, p1_rate) {
            Some(rate) => {
                let section = slow::run(args, target, producer, rate, &mut report.rows).await?;
                report.sections.push(Box::new(section));
            }
            None => report.notes.push("P10 skipped: it needs --rate or the p1 phase".into()),
        }
    }
    Ok(())
}

fn ingest_setup(args: &Args) -> String {
    format!(
        "users o0..o{} with no connection; P7: {} unary calls in flight over {} HTTP/2 connections; P8: {} PushStreams × window {}",
        args.connections.saturating_sub(1),
        args.more.unary_concurrency,
        args.streams,
        args.streams,
        args.window
    )
}

/// The rate of the loaded phases (P4, P10): `--rate`, else half the P1
/// figure; none below one push per second.
fn loaded_rate(args: &Args, p1_rate: Option<f64>) -> Option<f64> {
    args.rate.or(p1_rate.map(|r| r / 2.0)).filter(|r| *r >= 1.0)
}

/// P4 at a steady rate: `--rate`, else half the P1 figure.
async fn loaded(
    args: &Args,
    target: &mut Target,
    producer: &Arc<Producer>,
    p1_rate: Option<f64>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let Some(rate) = loaded_rate(args, p1_rate) else {
        report.notes.push("P4 loaded skipped: it needs --rate or the p1 phase".into());
        return Ok(());
    };
    let secs = args.load_duration.as_secs_f64();
    eprintln!("P4: {rate:.0} pushes/s for {secs:.1} s ...");
    let deadline = Instant::now() + (args.load_duration * 2).min(args.duration_cap);
    let load = Load::paced(args, rate, secs, deadline);
    let name = format!("P4 at {rate:.0}/s");
    report.loaded_rate = Some(rate);
    report.rows.push(measure(&name, target, producer, producer.run(load)).await?);
    Ok(())
}

/// Asks the gateway (`Stats`) until it counts `n` registered connections.
/// Returns a note when `Stats` is not available.
pub async fn wait_registered(producer: &Producer, n: usize) -> anyhow::Result<Option<String>> {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        match producer.stats().await {
            Ok(stats) if stats.connections >= n as u64 => return Ok(None),
            Ok(stats) if Instant::now() > give_up => {
                return Err(anyhow!(
                    "the gateway counts {} registered connections of {n} after 30 s",
                    stats.connections
                ));
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => return Ok(Some(format!("registrations not confirmed by the gateway ({e:#})"))),
        }
    }
}

/// Runs `work` between two readings of the gateway's and this process's
/// `/proc` figures and waits for its frames to arrive.
pub async fn measure(
    name: &str,
    target: &mut Target,
    producer: &Producer,
    work: impl Future<Output = anyhow::Result<Tally>>,
) -> anyhow::Result<Measured> {
    target.check_alive()?;
    let shared = producer.shared();
    shared.latency.reset();
    let received_before = shared.received.load(Relaxed);
    let stats_before = producer.stats().await.ok();
    let gw_before = WriteLatency::read(target.internal).await;
    let meter = Meter::target(target)?;
    let started = shared.now_nanos();
    let tally = work.await?;
    let received = drain(shared, received_before + tally.delivered).await - received_before;
    let ended = shared.last_nanos.load(Relaxed).max(started + 1);
    let cost = meter.stop(target)?;
    let stats_after = producer.stats().await.ok();
    let gw_after = WriteLatency::read(target.internal).await;
    target.check_alive()?;
    let server_deliveries = stats_before.zip(stats_after).map(|(b, a)| a.deliveries.saturating_sub(b.deliveries));
    Ok(Measured {
        name: name.to_string(),
        tally,
        received,
        elapsed: Duration::from_nanos(ended - started),
        server_cpu_us: cost.server_cpu_us,
        bench_cpu_us: cost.bench_cpu_us,
        others_cores: cost.others_cores,
        server_rss_kib: cost.server_rss_kib,
        server_deliveries,
        latency: shared.latency.summary(),
        gw_write: gw_before.zip(gw_after).and_then(|(b, a)| a.since(&b)),
    })
}

/// Waits until `target` frames have been received in total, or none arrived
/// for [`QUIET`]. Returns the total received.
async fn drain(shared: &Shared, target: u64) -> u64 {
    let mut last = shared.received.load(Relaxed);
    let mut changed = Instant::now();
    while last < target {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = shared.received.load(Relaxed);
        if now != last {
            (last, changed) = (now, Instant::now());
        } else if changed.elapsed() > QUIET {
            break;
        }
    }
    last
}
