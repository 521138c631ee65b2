//! P7 and P8: what taking a push costs when nobody is connected to receive
//! it, so the figure is the producer API alone (gRPC, validation, the hub's
//! numbering and history), not the WebSocket fan-out.
//!
//! - P7, unary `Push`: `--unary-concurrency` calls in flight over
//!   `--streams` HTTP/2 connections, `--unary-pushes` calls, first against a
//!   bare tonic server implementing the same service ([`crate::echo`], a
//!   child process measured from `/proc` like the gateway), then against the
//!   gateway. The ratio of the two per-push CPU costs is the goal's figure.
//! - P8, `PushStream`: `--pushes` over `--streams` streams with `--window`
//!   in flight each, as P1 but to users with no connection.
//!
//! Both push round-robin to users `o0..o{N-1}` (N = `--connections`), which
//! have no connection: the fleet of P9 stays connected but receives nothing.

use std::fmt::{self, Display, Formatter};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use pushgate::proto::push_service_client::PushServiceClient;
use pushgate::proto::{PushRequest, push_request};
use tonic::transport::Channel;

use crate::Args;
use crate::cost::{Cost, Meter};
use crate::echo::EchoServer;
use crate::fleet::{EVENT, Shared};
use crate::producer::{Load, Producer, Tally, channels, endpoint};
use crate::target::Target;

/// P7's goal: gateway pushes per CPU-second at least this share of the echo's.
const P7_GOAL: f64 = 0.9;
/// P8's goals: pushes/s, and times P7's unary pushes/s.
const P8_GOAL_RATE: f64 = 400_000.0;
const P8_GOAL_RATIO: f64 = 6.0;

/// One server's figures for one load.
pub struct Row {
    pub name: String,
    pub pushes: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub cost: Cost,
}

impl Row {
    fn per_sec(&self) -> f64 {
        self.pushes as f64 / self.cost.elapsed.as_secs_f64().max(1e-9)
    }

    fn server_us_per_push(&self) -> f64 {
        self.cost.server_cpu_us as f64 / self.pushes.max(1) as f64
    }

    fn bench_us_per_push(&self) -> f64 {
        self.cost.bench_cpu_us as f64 / self.pushes.max(1) as f64
    }
}

/// The printed section of P7 and P8.
#[derive(Default)]
pub struct Ingest {
    pub setup: String,
    pub echo: Option<Row>,
    pub unary: Option<Row>,
    pub stream: Option<Row>,
}

/// P7: the echo server, then the gateway, under the same unary load.
pub async fn unary(args: &Args, target: &mut Target, section: &mut Ingest) -> anyhow::Result<()> {
    let (n, c) = (args.more.unary_pushes, args.more.unary_concurrency.max(1));
    let users = Producer::users("o", args.connections);
    let message: Arc<str> = "x".repeat(args.message_bytes).into();
    let work = UnaryLoad { pushes: n, concurrency: c, users, message, cap: args.duration_cap };
    eprintln!("P7: {n} unary pushes, {c} in flight over {} connections, to the echo server ...", args.streams);
    let mut echo = EchoServer::start().await?;
    let measured = async {
        let channels = channels(&endpoint(echo.addr)?, echo.addr, args.streams).await?;
        let row = work.run("P7 unary, bare tonic echo", &channels, target, echo.pid).await;
        echo.check_alive()?;
        row
    }
    .await;
    echo.stop().await;
    section.echo = Some(measured?);
    eprintln!("P7: the same to the gateway ...");
    target.check_alive()?;
    let channels = channels(&endpoint(target.internal)?, target.internal, args.streams).await?;
    section.unary = Some(work.run("P7 unary, gateway", &channels, target, target.pid).await?);
    target.check_alive()
}

/// P8: `PushStream`s to users with no connection.
pub async fn stream(args: &Args, target: &mut Target, producer: &Producer, section: &mut Ingest) -> anyhow::Result<()> {
    eprintln!("P8: {} streamed pushes to users with no connection ...", args.pushes);
    let offline = Producer::users("o", args.connections);
    let producer = Arc::new(producer.retarget(offline, args.message_bytes, Shared::new()));
    let load = Load::flat_out(args, 1);
    target.check_alive()?;
    let meter = Meter::start(target, target.pid)?;
    let tally = producer.run(load).await?;
    let cost = meter.stop(target)?;
    target.check_alive()?;
    section.stream = Some(row("P8 PushStream, gateway", tally, cost));
    Ok(())
}

fn row(name: &str, tally: Tally, cost: Cost) -> Row {
    Row { name: name.into(), pushes: tally.replies, failed: tally.failed, first_error: tally.first_error, cost }
}

/// The unary load of P7, the same for both servers.
struct UnaryLoad {
    pushes: u64,
    concurrency: usize,
    users: Arc<[String]>,
    message: Arc<str>,
    cap: Duration,
}

impl UnaryLoad {
    /// Makes the calls over `channels` and measures server `pid`.
    async fn run(&self, name: &str, channels: &[Channel], target: &Target, pid: u32) -> anyhow::Result<Row> {
        let next = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + self.cap;
        let meter = Meter::start(target, pid)?;
        let mut tasks = Vec::with_capacity(self.concurrency);
        for k in 0..self.concurrency {
            let client = PushServiceClient::new(channels[k % channels.len()].clone());
            let (next, users, message, pushes) =
                (Arc::clone(&next), Arc::clone(&self.users), Arc::clone(&self.message), self.pushes);
            tasks.push(tokio::spawn(calls(client, next, users, message, pushes, deadline)));
        }
        let mut tally = Tally::default();
        for task in tasks {
            tally.add(task.await.context("unary task")?);
        }
        Ok(row(name, tally, meter.stop(target)?))
    }
}

/// One in-flight slot of the unary load: calls `Push` until `pushes` have
/// been taken by all slots together, or the deadline.
async fn calls(
    mut client: PushServiceClient<Channel>,
    next: Arc<AtomicU64>,
    users: Arc<[String]>,
    message: Arc<str>,
    pushes: u64,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let i = next.fetch_add(1, Relaxed);
        if i >= pushes || Instant::now() >= deadline {
            return tally;
        }
        let request = PushRequest {
            user_id: users[(i % users.len() as u64) as usize].clone(),
            event: EVENT.into(),
            payload: Some(push_request::Payload::Message(message.to_string())),
            ..Default::default()
        };
        match client.push(request).await {
            Ok(_) => tally.replies += 1,
            Err(status) => tally.fail(|| format!("{}: {}", status.code(), status.message())),
        }
    }
}

impl Display for Ingest {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let rows: Vec<&Row> = [&self.echo, &self.unary, &self.stream].into_iter().flatten().collect();
        if rows.is_empty() {
            return Ok(());
        }
        writeln!(f, "P7/P8 ingest, no subscriber ({})", self.setup)?;
        writeln!(
            f,
            "| phase | pushes acked | failed | s | pushes/s | server CPU-µs/push | pushes/s per server core | bench CPU-µs/push | server RSS MiB | other procs' cores |"
        )?;
        writeln!(f, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for r in &rows {
            writeln!(
                f,
                "| {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.0} | {:.2} | {:.1} | {:.2} |",
                r.name,
                r.pushes,
                r.failed,
                r.cost.elapsed.as_secs_f64(),
                r.per_sec(),
                r.server_us_per_push(),
                1e6 / r.server_us_per_push().max(1e-9),
                r.bench_us_per_push(),
                r.cost.server_rss_kib as f64 / 1024.0,
                r.cost.others_cores
            )?;
        }
        for r in rows.iter().filter(|r| r.failed > 0) {
            writeln!(f, "{}: {} calls failed, first: {}", r.name, r.failed, r.first_error.as_deref().unwrap_or("-"))?;
        }
        self.goals(f)
    }
}

impl Ingest {
    fn goals(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        if let (Some(echo), Some(gw)) = (&self.echo, &self.unary) {
            let cpu = echo.server_us_per_push() / gw.server_us_per_push().max(1e-9);
            let rate = gw.per_sec() / echo.per_sec().max(1e-9);
            writeln!(
                f,
                "  P7 gateway pushes per CPU-second ≥ {P7_GOAL}× the echo's: {cpu:.2}× ({:.2} vs {:.2} CPU-µs/push) ({}); pushes/s {rate:.2}× ({:.0} vs {:.0})",
                gw.server_us_per_push(),
                echo.server_us_per_push(),
                verdict(cpu >= P7_GOAL),
                gw.per_sec(),
                echo.per_sec()
            )?;
        }
        if let Some(s) = &self.stream {
            let rate = s.per_sec();
            writeln!(f, "  P8 ≥ {P8_GOAL_RATE:.0} streamed pushes/s: {rate:.0} ({})", verdict(rate >= P8_GOAL_RATE))?;
            if let Some(u) = &self.unary {
                let ratio = rate / u.per_sec().max(1e-9);
                let cpu = u.server_us_per_push() / s.server_us_per_push().max(1e-9);
                writeln!(
                    f,
                    "  P8 ≥ {P8_GOAL_RATIO}× P7's unary pushes/s: {ratio:.2}× ({}); per push {cpu:.2}× cheaper in gateway CPU",
                    verdict(ratio >= P8_GOAL_RATIO)
                )?;
            }
        }
        Ok(())
    }
}
