//! The scenarios that need a fleet of their own shape, each run on a fresh
//! server (the floor or pushgate) that is stopped afterwards:
//!
//! - **P3**, wserver's HTTP fan-out: N connections in compat mode, 10 per
//!   user (N/10 users), 8 producers doing `POST /push` round-robin over the
//!   users as fast as the answers come; `--pushes`/10 pushes, so about
//!   `--pushes` deliveries.
//! - **P4a**, the same fleet at a low load: 2 000 HTTP pushes/s (20 000
//!   deliveries/s) for `--load-duration`; push→receive percentiles.
//! - **P5**, one user holding all N connections (envelope mode, like P1):
//!   `--p5-pushes` unary gRPC `Push`es, one at a time, each waited for until
//!   all N connections received it; the makespan is the time from the push
//!   to the last connection's receipt.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use pushgate::proto::push_service_client::PushServiceClient;
use pushgate::proto::{PushRequest, push_request};

use crate::Args;
use crate::compare::{Server, spawn};
use crate::fleet::{self, EVENT, Mode, STAMP_DIGITS, Shared};
use crate::http_push::{self, HttpLoad};
use crate::phases::{Phase, measure, wait_registered};
use crate::producer::{Producer, Tally, endpoint};
use crate::report::Measured;
use crate::target::Target;

/// Connections per user in P3 and P4a (the seed's scenario).
pub const CONNS_PER_USER: usize = 10;
/// HTTP producers in P3 and P4a.
const HTTP_PRODUCERS: usize = 8;
/// Pushes per second of P4a.
pub const P4A_RATE: f64 = 2000.0;
/// How long a P5 push may take to reach every connection.
const P5_WAIT: Duration = Duration::from_secs(5);

/// What one server did in P3, P4a and P5.
#[derive(Default)]
pub struct Scenarios {
    pub p3: Option<Measured>,
    pub p4a: Option<Measured>,
    pub p5: Option<(Measured, Makespan)>,
}

/// P5's makespans, one per push.
#[derive(Debug, Clone, Default)]
pub struct Makespan {
    /// Nanoseconds, sorted.
    pub each: Vec<u64>,
}

impl Makespan {
    /// The median makespan, nanoseconds.
    pub fn p50(&self) -> u64 {
        self.each.get(self.each.len() / 2).copied().unwrap_or(0)
    }

    pub fn max(&self) -> u64 {
        self.each.last().copied().unwrap_or(0)
    }
}

/// Runs the selected ones of P3, P4a, P5 on `server`.
pub async fn run(args: &Args, server: Server) -> anyhow::Result<Scenarios> {
    let mut out = Scenarios::default();
    let has = |p| args.phases.contains(&p);
    if has(Phase::P3) || has(Phase::P4a) {
        let users = (args.connections / CONNS_PER_USER).max(1);
        let (mut target, shared, producer) = fleet_on(args, server, users, Mode::Compat, &[]).await?;
        let addr = target.internal;
        let http = |pushes, rate, deadline| HttpLoad {
            pushes,
            producers: HTTP_PRODUCERS,
            users,
            rate,
            deadline,
            message_bytes: args.message_bytes,
        };
        if has(Phase::P3) {
            eprintln!("P3 ({server}): {} HTTP pushes to {users} users × {CONNS_PER_USER} ...", args.pushes / 10);
            let load = http((args.pushes / 10).max(1), None, Instant::now() + args.duration_cap);
            let work = http_push::run(addr, load, &shared);
            out.p3 = Some(measure("P3 HTTP fan-out", &mut target, &producer, work).await?);
        }
        if has(Phase::P4a) {
            eprintln!("P4a ({server}): {P4A_RATE} HTTP pushes/s for {:?} ...", args.load_duration);
            let pushes = (P4A_RATE * args.load_duration.as_secs_f64()) as u64;
            let load = http(pushes, Some(P4A_RATE), Instant::now() + args.load_duration * 2);
            let work = http_push::run(addr, load, &shared);
            out.p4a = Some(measure("P4a at 2000/s", &mut target, &producer, work).await?);
        }
        finish(target, &shared).await;
    }
    if has(Phase::P5) {
        let extra = [format!("--max-connections-per-user={}", args.connections + 64)];
        let (mut target, shared, producer) = fleet_on(args, server, 1, args.mode, &extra).await?;
        eprintln!("P5 ({server}): {} pushes to one user with {} connections ...", args.p5_pushes, args.connections);
        let mut makespan = Makespan::default();
        let work = one_user(args, target.internal, &shared, &mut makespan);
        let m = measure("P5 one user", &mut target, &producer, work).await?;
        makespan.each.sort_unstable();
        out.p5 = Some((m, makespan));
        finish(target, &shared).await;
    }
    Ok(out)
}

/// Starts `server`, opens `--connections` connections as `users` users,
/// and connects a gRPC producer (for `Stats`, and P5's pushes).
pub async fn fleet_on(
    args: &Args,
    server: Server,
    users: usize,
    mode: Mode,
    gateway_extra: &[String],
) -> anyhow::Result<(Target, Arc<Shared>, Producer)> {
    let target = spawn(args, server, gateway_extra).await?;
    let shared = Shared::new();
    eprintln!("opening {} {mode:?} connections as {users} users to {server} ...", args.connections);
    fleet::open_users(target.public, args.connections, users, args.connect_concurrency, mode, &shared).await?;
    let producer =
        Producer::connect(target.internal, target.internal, 1, users, args.message_bytes, Arc::clone(&shared)).await?;
    if let Some(note) = wait_registered(&producer, args.connections).await? {
        return Err(anyhow!("{server}: {note}"));
    }
    Ok((target, shared, producer))
}

/// Stops the server and waits (a few seconds at most) for the fleet's
/// sockets to close, so the next fleet has the file descriptors.
pub async fn finish(mut target: Target, shared: &Shared) {
    target.stop();
    let give_up = Instant::now() + Duration::from_secs(5);
    while shared.open.load(Relaxed) > 0 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// P5: one push at a time to `u0`, each waited for until every connection
/// received it.
async fn one_user(
    args: &Args,
    internal: SocketAddr,
    shared: &Shared,
    makespan: &mut Makespan,
) -> anyhow::Result<Tally> {
    let channel = endpoint(internal)?.connect().await?;
    let mut client = PushServiceClient::new(channel);
    let padding = "x".repeat(args.message_bytes.saturating_sub(STAMP_DIGITS));
    let mut tally = Tally::default();
    for _ in 0..args.p5_pushes {
        let before = shared.received.load(Relaxed);
        let sent = shared.now_nanos();
        let request = PushRequest {
            user_id: "u0".into(),
            event: EVENT.into(),
            payload: Some(push_request::Payload::Message(format!("{sent:0width$}{padding}", width = STAMP_DIGITS))),
            ..Default::default()
        };
        tally.sent += 1;
        let reply = client.push(request).await.map_err(|s| anyhow!("Push: {}: {}", s.code(), s.message()))?;
        tally.replies += 1;
        let delivered = u64::from(reply.into_inner().delivered);
        tally.delivered += delivered;
        let give_up = Instant::now() + P5_WAIT;
        while shared.received.load(Relaxed) < before + delivered && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        makespan.each.push(shared.last_nanos.load(Relaxed).saturating_sub(sent));
    }
    Ok(tally)
}
