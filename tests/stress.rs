//! Stress: the gateway under churn, slow and hostile clients, producers that
//! never read, and SIGTERM under load — bounded in count and time, talking
//! only to 127.0.0.1. The assertions are on correctness and on resources
//! coming back (connections, users, open files, memory, tasks), never on
//! timing; the figures are printed (`-- --nocapture`).
//!
//! Short form (CI, `cargo test --test stress`): well under three minutes on a
//! two-core machine. `PUSHGATE_STRESS_SECS=60` runs the churn that long and
//! scales the other scenarios' counts with it. The soak (`scripts/soak`)
//! is the churn scenario run for a long time at a fraction of full speed,
//! sampling the gateway each minute into a CSV (README, "Stress and soak").
//!
//! The scenarios run one at a time (each takes the [`serial`] lock): they
//! share two cores and one open-file limit. Those that count the gateway's
//! open files or memory run the real binary as a child process, so its
//! sockets are its own.

#[path = "stress/clients.rs"]
mod clients;
mod common;

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clients::{Leave, Pace, PushStream, eventually, leave, open, register, text_push};
use common::WAIT;
use common::process::{GatewayProcess as Gateway, Proc, Reading};
use futures_util::StreamExt as _;
use pushgate::proto::push_service_client::PushServiceClient;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------- budget

/// One scenario at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `scenario` on a two-thread runtime of its own, one scenario at a
/// time.
fn serially<F: std::future::Future>(scenario: F) -> F::Output {
    let _serial = serial();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    runtime.expect("runtime").block_on(scenario)
}

fn env_number(name: &str) -> Option<f64> {
    let value = std::env::var(name).ok()?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("{name}={value}: not a number")))
}

/// The run's size: the short form unless `PUSHGATE_STRESS_SECS` is set.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// How long the churn runs.
    churn: Duration,
    /// The most churn cycles it may make.
    churn_cycles: u64,
    /// How much larger than the short form the other scenarios are.
    scale: u64,
}

/// The short form's churn time.
const SHORT_CHURN: Duration = Duration::from_secs(12);

/// Longest run `PUSHGATE_STRESS_SECS` may ask for: 12 h.
const MAX_SECS: f64 = 12.0 * 3600.0;

fn budget() -> Budget {
    match env_number("PUSHGATE_STRESS_SECS") {
        None => Budget { churn: SHORT_CHURN, churn_cycles: 15_000, scale: 1 },
        Some(secs) => {
            let secs = secs.clamp(1.0, MAX_SECS);
            let scale = (secs / SHORT_CHURN.as_secs_f64()).ceil().max(1.0) as u64;
            Budget { churn: Duration::from_secs_f64(secs), churn_cycles: secs as u64 * 2_000, scale }
        }
    }
}

/// `wanted` sockets held at once, or fewer when the open-file limit (of this
/// process, which the gateway child shares) has no room for them; says so.
/// `scripts/test` raises the limit to the hard limit, where they fit.
fn fit(wanted: usize, what: &str) -> usize {
    let room = common::process::open_file_limit().saturating_sub(256);
    if wanted <= room {
        return wanted;
    }
    println!("NOTE: {what}: {room} instead of {wanted}, for the open-file limit (ulimit -n; scripts/test raises it)");
    room
}

// ---------------------------------------------------------------- 1. churn

/// Users the churn spreads its connections over.
const POOL: u64 = 256;

/// Connections opening and closing at once.
const CHURNERS: u64 = 64;

/// Pushes a producer has sent but not yet seen answered.
const PUSH_WINDOW: usize = 64;

/// Pushes per second under the churn in its full-speed form: enough to race
/// fan-outs against joins and leaves, without taking the churn's CPU.
const CHURN_PUSH_RATE: f64 = 2_000.0;

/// What the churn did.
#[derive(Debug, Default)]
struct Tally {
    cycles: AtomicU64,
    pushes: AtomicU64,
    delivered: AtomicU64,
    /// Pushes the residents read.
    read: AtomicU64,
    /// Residents the gateway closed (and that came back), by close code.
    closed: Mutex<std::collections::BTreeMap<String, u64>>,
}

/// A connection that stays for the whole run, one per user of the pool,
/// reading every push; closed by the gateway (a slow consumer while the
/// soak calibrates at full speed), it comes back, as a browser would.
async fn resident(gw: Arc<Gateway>, u: u64, tally: Arc<Tally>, stop: CancellationToken) -> Result<()> {
    while !stop.is_cancelled() {
        let mut ws = clients::tab(gw.public, &format!("c{u}"), "e", false).await?;
        let ending = loop {
            tokio::select! {
                () = stop.cancelled() => return leave(ws, Leave::Clean).await,
                frame = ws.next() => match frame {
                    Some(Ok(tungstenite::Message::Text(_))) => {
                        tally.read.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ok(tungstenite::Message::Close(frame))) => break format!("{:?}", frame.map(|f| u16::from(f.code))),
                    Some(Ok(_)) => {}
                    Some(Err(error)) => break error.to_string(),
                    None => break "end of stream".to_owned(),
                },
            }
        };
        *tally.closed.lock().unwrap_or_else(|e| e.into_inner()).entry(ending).or_default() += 1;
    }
    Ok(())
}

/// One churn cycle: open, register, leave — envelope or wserver mode, and a
/// clean close, a reset or a bare FIN, by turns.
async fn cycle(gw: &Gateway, n: u64) -> Result<()> {
    let envelope = n % 2 == 0;
    let how = Leave::ALL[(n / 2 % 3) as usize];
    let user = format!("c{}", n % POOL);
    let mut ws = open(gw.public, envelope).await?;
    register(&mut ws, &user, "e", envelope).await?;
    leave(ws, how).await.with_context(|| format!("leave {how:?}"))
}

/// Runs `cycle` on [`CHURNERS`] tasks until `stop`, `cap` cycles, or the
/// first failure, each paced by `pace`.
async fn churn(gw: &Arc<Gateway>, tally: &Arc<Tally>, cap: u64, stop: Instant, pace: Pace) -> Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..CHURNERS)
        .map(|_| {
            let (gw, tally, next) = (Arc::clone(gw), Arc::clone(tally), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= cap || Instant::now() >= stop {
                        return Ok::<(), anyhow::Error>(());
                    }
                    pace.wait(n).await;
                    cycle(&gw, n).await.with_context(|| format!("cycle {n}"))?;
                    tally.cycles.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("churn worker")?;
    }
    Ok(())
}

/// Pushes to the churn's users on one `PushStream` until `stop`, keeping
/// [`PUSH_WINDOW`] unanswered; every reply must be an acceptance.
async fn push_load(gw: &Gateway, tally: &Arc<Tally>, stop: Instant, pace: Pace) -> Result<()> {
    let PushStream { tx, mut replies, .. } = PushStream::open(gw.grpc().await, PUSH_WINDOW).await;
    let counted = Arc::clone(tally);
    let answers = tokio::spawn(async move {
        while let Some(reply) = tokio::time::timeout(WAIT, replies.message()).await.context("a reply in time")?? {
            anyhow::ensure!(reply.error.is_none(), "push refused: {:?}", reply.error);
            counted.pushes.fetch_add(1, Ordering::Relaxed);
            counted.delivered.fetch_add(u64::from(reply.delivered), Ordering::Relaxed);
        }
        Ok(())
    });
    let mut n = 0;
    while Instant::now() < stop && !answers.is_finished() {
        pace.wait(n).await;
        let request = text_push(&format!("c{}", n % POOL), "e", format!("churn push {n}"));
        if tx.send(request).await.is_err() {
            break;
        }
        n += 1;
    }
    drop(tx);
    answers.await.expect("reply reader")
}

/// One row of the churn's time series.
#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: f64,
    gateway: Reading,
    connections: u64,
    cycles: u64,
    pushes: u64,
}

impl Sample {
    const HEADER: &str = "elapsed_s,rss_kib,fds,threads,connections,cycles,pushes";

    fn csv(&self) -> String {
        let Sample { secs, gateway: g, connections, cycles, pushes } = self;
        format!("{secs:.0},{},{},{},{connections},{cycles},{pushes}", g.rss_kib, g.fds, g.threads)
    }
}

/// Samples the gateway every `every` until `stop`, printing each row and
/// appending it to the CSV at `csv` when given.
async fn sample(gw: &Gateway, tally: &Tally, every: Duration, stop: Instant, csv: Option<&str>) -> Vec<Sample> {
    let mut file = csv.map(|path| {
        let mut file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        writeln!(file, "{}", Sample::HEADER).expect("csv");
        file
    });
    println!("{}", Sample::HEADER);
    let mut client = gw.grpc().await;
    let started = Instant::now();
    let mut tick = tokio::time::interval(every);
    let mut samples = Vec::new();
    loop {
        tick.tick().await;
        let connections = gw.stats(&mut client).await.connections;
        let sample = Sample {
            secs: started.elapsed().as_secs_f64(),
            gateway: gw.proc().read(),
            connections,
            cycles: tally.cycles.load(Ordering::Relaxed),
            pushes: tally.pushes.load(Ordering::Relaxed),
        };
        println!("{}", sample.csv());
        if let Some(file) = &mut file {
            writeln!(file, "{}", sample.csv()).expect("csv");
            file.flush().expect("csv");
        }
        samples.push(sample);
        if Instant::now() >= stop {
            return samples;
        }
    }
}

/// Waits until the gateway has no connection, user or subscription left.
async fn drained(gw: &Gateway) {
    let mut client = gw.grpc().await;
    eventually("Stats shows no connection, user or subscription", WAIT, async || {
        let s = gw.stats(&mut client).await;
        (s.connections == 0 && s.users == 0 && s.subscriptions == 0).then_some(())
    })
    .await;
}

/// Many connections opening, registering and closing (clean, reset, bare
/// FIN; both modes) among 256 that stay and read, under a push load: afterwards the gateway has no
/// connection or user left, and its open files and memory are back near
/// where they were.
///
/// Soak mode (`scripts/soak`): `PUSHGATE_SOAK_LOAD=0.5` runs the first tenth
/// (at most 60 s) with churn and pushes both at full speed, then paces each
/// at that fraction of what it measured; `PUSHGATE_SOAK_CSV` names the CSV file;
/// `PUSHGATE_SOAK_SAMPLE_SECS` the sampling period (default: a twelfth of the
/// run, from 1 s to 60 s).
#[test]
fn churn_returns_connections_users_fds_and_memory() {
    serially(scenario_churn_returns_connections_users_fds_and_memory());
}

async fn scenario_churn_returns_connections_users_fds_and_memory() {
    let budget = budget();
    let gw = Arc::new(Gateway::spawn(&[]));
    let load = env_number("PUSHGATE_SOAK_LOAD").map(|l| l.clamp(0.05, 1.0));
    let csv = std::env::var("PUSHGATE_SOAK_CSV").ok();
    let every = env_number("PUSHGATE_SOAK_SAMPLE_SECS")
        .map(Duration::from_secs_f64)
        .unwrap_or((budget.churn / 12).clamp(Duration::from_secs(1), Duration::from_secs(60)));

    // Warm-up: the allocator's and the runtime's first growth is not a leak.
    let warm = Arc::new(Tally::default());
    churn(&gw, &warm, 2 * CHURNERS * 4, Instant::now() + WAIT, Pace::full_speed()).await.expect("warm-up churn");
    drained(&gw).await;
    let base = gw.proc().read();
    let me = Proc::me().fds();
    println!("churn for {:?} (at most {} cycles); gateway baseline {base:?}", budget.churn, budget.churn_cycles);

    let tally = Arc::new(Tally::default());
    let leaving = CancellationToken::new();
    let residents: Vec<_> =
        (0..POOL).map(|u| tokio::spawn(resident(Arc::clone(&gw), u, Arc::clone(&tally), leaving.clone()))).collect();
    let started = Instant::now();
    let stop = started + budget.churn;
    let sampler = {
        let (gw, tally) = (Arc::clone(&gw), Arc::clone(&tally));
        tokio::spawn(async move { sample(&gw, &tally, every, stop, csv.as_deref()).await })
    };
    // Full speed, or a calibration at full speed then the soak's pace.
    let calibrate = load.map(|_| (budget.churn / 10).min(Duration::from_secs(60)));
    let first_stop = calibrate.map_or(stop, |c| started + c);
    let pushes = {
        let (gw, tally) = (Arc::clone(&gw), Arc::clone(&tally));
        let pace = Pace { per_sec: load.is_none().then_some(CHURN_PUSH_RATE), ..Pace::full_speed() };
        tokio::spawn(async move { push_load(&gw, &tally, first_stop, pace).await })
    };
    churn(&gw, &tally, budget.churn_cycles, first_stop, Pace::full_speed()).await.expect("churn");
    pushes.await.expect("push load").expect("push load");
    if let (Some(load), Some(calibration)) = (load, calibrate) {
        let took = started.elapsed().as_secs_f64();
        let cycles_per_sec = tally.cycles.load(Ordering::Relaxed) as f64 / took * load;
        let pushes_per_sec = tally.pushes.load(Ordering::Relaxed) as f64 / took * load;
        println!(
            "calibrated over {calibration:?}: pacing at {:.0}% = {cycles_per_sec:.0} cycles/s, {pushes_per_sec:.0} pushes/s",
            load * 100.0
        );
        let now = tokio::time::Instant::now();
        let (churn_pace, push_pace) =
            (Pace { start: now, per_sec: Some(cycles_per_sec) }, Pace { start: now, per_sec: Some(pushes_per_sec) });
        let pushes = {
            let (gw, tally) = (Arc::clone(&gw), Arc::clone(&tally));
            tokio::spawn(async move { push_load(&gw, &tally, stop, push_pace).await })
        };
        churn(&gw, &tally, budget.churn_cycles, stop, churn_pace).await.expect("paced churn");
        pushes.await.expect("push load").expect("push load");
    }
    let took = started.elapsed();
    let samples = sampler.await.expect("sampler");
    leaving.cancel();
    for r in residents {
        r.await.expect("resident").expect("a resident connects, registers and leaves");
    }

    drained(&gw).await;
    let after = eventually("the gateway's open files back to the baseline", WAIT, async || {
        let now = gw.proc().read();
        (now.fds <= base.fds + 50).then_some(now)
    })
    .await;
    let (cycles, pushes) = (tally.cycles.load(Ordering::Relaxed), tally.pushes.load(Ordering::Relaxed));
    let peak = samples.iter().map(|s| s.gateway.rss_kib).max().unwrap_or(0);
    println!(
        "churn: {cycles} cycles in {took:.1?} ({:.0}/s) around {POOL} residents, {pushes} pushes ({} deliveries, {} read by residents; residents closed by the gateway: {:?}); gateway RSS {} -> peak {} -> {} KiB, fds {} -> {}, threads {} -> {}; test process fds {me} -> {}",
        cycles as f64 / took.as_secs_f64(),
        tally.delivered.load(Ordering::Relaxed),
        tally.read.load(Ordering::Relaxed),
        tally.closed.lock().unwrap_or_else(|e| e.into_inner()),
        base.rss_kib,
        peak,
        after.rss_kib,
        base.fds,
        after.fds,
        base.threads,
        after.threads,
        Proc::me().fds(),
    );
    gw.print_warnings();
    assert!(cycles > 0 && pushes > 0, "the churn ran");
    assert!(after.threads <= base.threads + 4, "threads {} -> {}", base.threads, after.threads);
    match calibrate {
        // Full speed all along: back near the baseline.
        None => {
            let rss_bound = base.rss_kib + base.rss_kib / 2 + 32 * 1024;
            assert!(after.rss_kib <= rss_bound, "RSS {} KiB after the churn, over {rss_bound} KiB", after.rss_kib);
            assert_flat(&samples, base);
        }
        // The calibration's full speed fills the residents' queues; the
        // allocator keeps that high-water mark. Judged from then on: no
        // growth while paced, none after.
        Some(calibration) => {
            let paced: Vec<Sample> = samples.iter().filter(|s| s.secs >= calibration.as_secs_f64()).copied().collect();
            assert!(after.rss_kib <= peak + 1024, "RSS {} KiB after the soak, over its peak {peak} KiB", after.rss_kib);
            assert_flat(&paced, base);
        }
    }
}

/// Over a long enough series, the second half may not hold more memory
/// than the first: a leak grows with the churn, a cache levels off.
fn assert_flat(samples: &[Sample], base: Reading) {
    if samples.len() < 6 {
        return;
    }
    let (first, second) = samples.split_at(samples.len() / 2);
    let max = |s: &[Sample]| s.iter().map(|s| s.gateway.rss_kib).max().unwrap_or(0);
    let (a, b) = (max(first), max(second));
    assert!(b <= a + a / 10 + 16 * 1024, "RSS grows: first half peak {a} KiB, second half {b} KiB (baseline {base:?})");
}

// ---------------------------------------------------------------- 2. slowloris and silent sockets

/// Upgrade requests whose headers never end (a header line now and then).
const HALF_OPEN: usize = 2_000;

/// Upgraded sockets that never register and never read.
const SILENT: usize = 2_000;

/// Attackers connecting at once.
const OPENING: usize = 128;

/// A slowloris: an upgrade request whose header block never ends, one more
/// header line every 250 ms, until the server ends the connection. Returns
/// how long that took; an error if it lasted past `give_up`.
async fn half_open(public: std::net::SocketAddr, opening: Arc<Semaphore>, give_up: Instant) -> Result<Duration> {
    let permit = opening.acquire_owned().await.expect("semaphore");
    let mut stream = TcpStream::connect(public).await.context("connect")?;
    let opened = Instant::now();
    let head = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    stream.write_all(head.as_bytes()).await.context("first lines")?;
    drop(permit);
    let mut trickle = tokio::time::interval(Duration::from_millis(250));
    let mut buf = [0u8; 256];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Ok(opened.elapsed()),
                Ok(_) => {} // an HTTP answer, then the end
            },
            _ = trickle.tick() => {
                anyhow::ensure!(Instant::now() < give_up, "a half-open handshake still open after {:?}", opened.elapsed());
                if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return Ok(opened.elapsed());
                }
            }
        }
    }
}

/// An upgraded WebSocket that never registers; the test does not read it
/// until the gateway had to deal with it alone.
async fn silent(public: std::net::SocketAddr, opening: Arc<Semaphore>) -> Result<clients::Ws> {
    let _permit = opening.acquire_owned().await.expect("semaphore");
    open(public, false).await
}

/// 2 000 slowloris handshakes and 2 000 upgraded-but-silent sockets while
/// real clients keep connecting: every real client registers, and the
/// gateway drops every attacker by itself (handshake timeout; register
/// timeout with 4001), giving its open files back.
#[test]
fn slowloris_and_silent_sockets_are_dropped_while_real_clients_register() {
    serially(scenario_slowloris_and_silent_sockets_are_dropped_while_real_clients_register());
}

async fn scenario_slowloris_and_silent_sockets_are_dropped_while_real_clients_register() {
    let scale = budget().scale as usize;
    let attackers = fit((HALF_OPEN + SILENT) * scale.min(4), "attackers");
    let (half_open_n, silent_n) = (attackers / 2, attackers - attackers / 2);
    let gw = Arc::new(Gateway::spawn(&["--handshake-timeout", "2s", "--register-timeout", "2s"]));
    let base = gw.proc().read();
    let started = Instant::now();
    let over = Arc::new(AtomicBool::new(false));

    // The gateway's open files, sampled until the attack is over.
    let peak = {
        let (gw, over) = (Arc::clone(&gw), Arc::clone(&over));
        tokio::spawn(async move {
            let mut peak = 0;
            while !over.load(Ordering::Relaxed) {
                peak = peak.max(gw.proc().fds());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        })
    };
    // Real clients, one after the other, for as long as the attack lasts.
    let fresh = {
        let (gw, over) = (Arc::clone(&gw), Arc::clone(&over));
        tokio::spawn(async move {
            let mut took = Vec::new();
            for i in 0.. {
                if i > 0 && over.load(Ordering::Relaxed) {
                    break;
                }
                let t = Instant::now();
                let ws = clients::tab(gw.public, &format!("fresh{i}"), "e", true).await?;
                took.push(t.elapsed());
                leave(ws, Leave::Clean).await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok::<_, anyhow::Error>(took)
        })
    };

    let opening = Arc::new(Semaphore::new(OPENING));
    let give_up = started + 3 * WAIT;
    let mut silents = Vec::new();
    let mut slows = Vec::new();
    for i in 0..half_open_n.max(silent_n) {
        if i < silent_n {
            silents.push(tokio::spawn(silent(gw.public, Arc::clone(&opening))));
        }
        if i < half_open_n {
            slows.push(tokio::spawn(half_open(gw.public, Arc::clone(&opening), give_up)));
        }
    }
    let mut silent_ws = Vec::new();
    for s in silents {
        silent_ws.push(s.await.expect("silent task").expect("a silent socket upgrades"));
    }
    let opened = started.elapsed();
    let mut slow_lasted = Vec::new();
    for s in slows {
        slow_lasted.push(s.await.expect("slowloris task").expect("the gateway ends a half-open handshake"));
    }
    // The silent sockets are waiting out their register timeout; the test
    // reads nothing from them and polls the gateway's open files.
    eventually("the gateway closed every attacker", 2 * WAIT, async || {
        let fds = gw.proc().fds();
        (fds <= base.fds + 50).then_some(())
    })
    .await;
    let cleared = started.elapsed();
    over.store(true, Ordering::Relaxed);
    let took = fresh.await.expect("fresh clients").expect("every fresh client registers");
    let peak = peak.await.expect("sampler");

    // Each silent socket has its close frame waiting: 4001.
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for mut ws in silent_ws {
        let ending = clients::read_to_end(&mut ws, WAIT, |_| {}).await.expect("a silent socket ends");
        let key = ending.code().map_or_else(|| "no close frame".to_owned(), |c| c.to_string());
        *codes.entry(key).or_default() += 1;
    }
    let mut client = gw.grpc().await;
    let stats = gw.stats(&mut client).await;

    let mut took_ms: Vec<u64> = took.iter().map(|d| d.as_millis() as u64).collect();
    let mut lasted_ms: Vec<u64> = slow_lasted.iter().map(|d| d.as_millis() as u64).collect();
    println!(
        "slowloris+silent: {half_open_n} half-open + {silent_n} silent opened in {opened:.1?}; gateway fds {} -> peak {peak} -> {} (cleared after {cleared:.1?}); \
         half-open dropped after p50 {} ms, max {} ms; silent endings {codes:?}; {} fresh clients registered in p50 {} ms, max {} ms",
        base.fds,
        gw.proc().fds(),
        clients::percentile(&mut lasted_ms, 50.0),
        clients::percentile(&mut lasted_ms, 100.0),
        took_ms.len(),
        clients::percentile(&mut took_ms, 50.0),
        clients::percentile(&mut took_ms, 100.0),
    );
    gw.print_warnings();
    assert_eq!(codes.get("4001"), Some(&silent_n), "every silent socket closed with 4001: {codes:?}");
    let slowest = took.iter().max().expect("at least one fresh client");
    assert!(*slowest < Duration::from_secs(5), "a fresh client took {slowest:?} to register");
    assert!(peak >= base.fds + (half_open_n + silent_n) / 8, "the attack was on: peak {peak} fds");
    assert_eq!((stats.connections, stats.users), (0, 0), "{stats:?}");
}

// ---------------------------------------------------------------- 3. a consumer that never reads

/// Size of each flood push.
const FLOOD_BYTES: usize = 4096;

/// Flood pushes sent at least (160 MiB in all) and at most.
const FLOOD_MIN: u64 = 40_000;
const FLOOD_MAX: u64 = 1_000_000;

/// Pushes the reading user gets, one per millisecond, during the flood.
const READER_PUSHES: u64 = 2_000;

/// Flood message `n`: its number, then padding up to [`FLOOD_BYTES`].
fn flood_message(n: u64) -> String {
    let head = format!("{n:08}|");
    let pad = FLOOD_BYTES - head.len();
    head + &"x".repeat(pad)
}

fn flood_number(text: &str) -> u64 {
    text.get(..8).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("not a flood message: {text:.40}"))
}

/// What the flood's replies said.
#[derive(Debug, Default)]
struct Flood {
    sent: u64,
    queued: u64,
    not_queued: u64,
}

/// Pushes [`flood_message`]s to `slow` on one `PushStream` (256 in flight)
/// as fast as the gateway answers, until `enough` is set and
/// [`FLOOD_MIN`] were sent.
async fn flood(gw: &Gateway, enough: Arc<AtomicBool>) -> Result<Flood> {
    let PushStream { tx, mut replies, .. } = PushStream::open(gw.grpc().await, 256).await;
    let answers = tokio::spawn(async move {
        let mut flood = Flood::default();
        while let Some(reply) = tokio::time::timeout(WAIT, replies.message()).await.context("a reply in time")?? {
            anyhow::ensure!(reply.error.is_none(), "flood push refused: {:?}", reply.error);
            match reply.delivered {
                0 => flood.not_queued += 1,
                _ => flood.queued += 1,
            }
        }
        Ok(flood)
    });
    let mut n = 0;
    while n < FLOOD_MAX && !(n >= FLOOD_MIN && enough.load(Ordering::Relaxed)) {
        if tx.send(text_push("slow", "e", flood_message(n))).await.is_err() {
            break;
        }
        n += 1;
    }
    drop(tx);
    let mut flood = answers.await.expect("flood replies")?;
    flood.sent = n;
    anyhow::ensure!(flood.queued + flood.not_queued == n, "one reply per flood push: {flood:?}");
    Ok(flood)
}

/// One user's only connection never reads while a `PushStream` pushes to it
/// at full speed; another user gets a push every millisecond meanwhile.
/// The gateway's memory stays bounded (the queue cap, not the flood), the
/// other user gets every push in order, and the non-reader is closed with
/// 4000 and removed (`--slow-policy close`) or kept with its newest
/// messages (`drop-oldest`).
async fn non_reading_consumer(policy: &str) {
    let scale = budget().scale;
    let args = ["--slow-policy", policy, "--ping-interval", "10m", "--pong-timeout", "1m"];
    let gw = Arc::new(Gateway::spawn(&args));
    let mut slow = clients::tab(gw.public, "slow", "e", false).await.expect("slow tab");
    let mut reader = clients::tab(gw.public, "reader", "e", false).await.expect("reader tab");
    let mut client = gw.grpc().await;
    for user in ["slow", "reader"] {
        eventually("both tabs joined", WAIT, async || (gw.online(&mut client, user).await == 1).then_some(())).await;
    }
    let base = gw.proc().read();
    let done = Arc::new(AtomicBool::new(false));

    let n = READER_PUSHES * scale;
    let reading = tokio::spawn(async move {
        let mut latencies = Vec::new();
        for i in 0..n {
            let text = clients::next_text(&mut reader).await?;
            let (number, stamp) = text.split_once(' ').context("a reader message")?;
            anyhow::ensure!(number.parse::<u64>()? == i, "reader: expected push {i}, got {text}");
            latencies.push(clients::now_ns() - stamp.parse::<u64>()?);
        }
        Ok::<_, anyhow::Error>(latencies)
    });
    let rss_peak = {
        let (gw, done) = (Arc::clone(&gw), Arc::clone(&done));
        tokio::spawn(async move {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(gw.proc().rss_kib());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        })
    };
    let flooding = {
        let (gw, done) = (Arc::clone(&gw), Arc::clone(&done));
        tokio::spawn(async move { flood(&gw, done).await })
    };
    let started = Instant::now();
    let PushStream { tx, mut replies, .. } = PushStream::open(gw.grpc().await, 64).await;
    let answers = tokio::spawn(async move {
        for i in 0..n {
            let reply = tokio::time::timeout(WAIT, replies.message()).await.context("a reply in time")??;
            let reply = reply.context("a reply per push")?;
            anyhow::ensure!(reply.error.is_none() && reply.delivered == 1, "reader push {i}: {reply:?}");
        }
        Ok::<_, anyhow::Error>(())
    });
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for i in 0..n {
        tick.tick().await;
        tx.send(text_push("reader", "e", format!("{i} {}", clients::now_ns()))).await.expect("reader stream");
    }
    answers.await.expect("reader replies").expect("every reader push queued to its one tab");
    let mut latencies = reading.await.expect("reader").expect("the reader gets every push in order");
    done.store(true, Ordering::Relaxed);
    let flood = flooding.await.expect("flood").expect("the flood is answered");
    let took = started.elapsed();
    let peak = rss_peak.await.expect("sampler");

    let slow_online = gw.online(&mut client, "slow").await;
    let (ending, numbers) = match policy {
        "close" => {
            eventually("the gateway removed the non-reader", WAIT, async || {
                (gw.online(&mut client, "slow").await == 0).then_some(())
            })
            .await;
            let mut numbers = Vec::new();
            let ending = clients::read_to_end(&mut slow, WAIT, |t| numbers.push(flood_number(t))).await;
            (Some(ending.expect("the non-reader's socket ends")), numbers)
        }
        _ => {
            let mut stream = PushStream::open(gw.grpc().await, 1).await;
            stream.tx.send(text_push("slow", "e", "end".into())).await.expect("stream");
            let reply = stream.replies.message().await.expect("reply").expect("a reply");
            assert_eq!(reply.delivered, 1, "the drop-oldest non-reader is still there");
            let mut numbers = Vec::new();
            loop {
                let text = clients::next_text(&mut slow).await.expect("the non-reader reads its newest messages");
                if text == "end" {
                    break;
                }
                numbers.push(flood_number(&text));
            }
            (None, numbers)
        }
    };
    let stats = gw.stats(&mut client).await;
    let mut p = |q| clients::percentile(&mut latencies, q) as f64 / 1e6;
    println!(
        "non-reader ({policy}): flood of {} pushes ({} MiB) in {took:.1?}, {} queued to the non-reader, {} not; it read {} then {}; \
         gateway RSS {} KiB -> peak {peak} KiB; drops {}; the other user got {n} pushes in order, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        flood.sent,
        (flood.sent * FLOOD_BYTES as u64) >> 20,
        flood.queued,
        flood.not_queued,
        numbers.len(),
        ending.as_ref().map_or_else(|| "was still open".to_owned(), |e| format!("{e:?}")),
        base.rss_kib,
        stats.drops,
        p(50.0),
        p(99.0),
        p(100.0),
    );
    gw.print_warnings();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "the non-reader's messages in order");
    // The flood is at least five times this bound.
    let growth = peak.saturating_sub(base.rss_kib);
    assert!(growth < 32 * 1024, "the gateway grew by {growth} KiB under a {} MiB flood", (flood.sent * 4) >> 10);
    assert!(stats.drops > 0, "the non-reader's queue overflowed: {stats:?}");
    let read = numbers.len() as u64;
    match policy {
        "close" => {
            assert!(flood.not_queued > 0, "pushes after the close were not queued");
            let code = ending.as_ref().expect("closed").code();
            assert!(matches!(code, Some(4000) | None), "closed with 4000 (or cut): {ending:?}");
            assert_eq!(numbers, (0..read).collect::<Vec<_>>(), "a gap-free prefix, then the close");
            if code == Some(4000) {
                // Everything written came before the close frame; the drops
                // are what was queued plus the push that overflowed.
                assert_eq!(flood.queued, read + stats.drops - 1, "each queued push read or dropped");
            }
        }
        _ => {
            assert_eq!(slow_online, 1, "drop-oldest keeps the non-reader");
            assert_eq!(flood.not_queued, 0, "drop-oldest queues every push");
            assert_eq!(numbers.last(), Some(&(flood.sent - 1)), "the newest message is kept");
            assert_eq!(read + stats.drops, flood.sent, "each push read or dropped");
        }
    }
}

#[test]
fn a_non_reading_consumer_is_closed_4000_and_costs_only_its_queue() {
    serially(non_reading_consumer("close"));
}

#[test]
fn a_non_reading_consumer_under_drop_oldest_keeps_its_newest_and_costs_only_its_queue() {
    serially(non_reading_consumer("drop-oldest"));
}

// ---------------------------------------------------------------- 4. producers that never read replies

/// `PushStream`s whose producer never reads a reply, each on its own HTTP/2
/// connection.
const DEAF_PRODUCERS: u64 = 50;

/// The producers' HTTP/2 receive windows (stream and connection): HTTP/2's
/// initial 64 KiB. tonic's default is 2 MiB per stream: producers on it are
/// held the same way, only later (measured once, debug build: ~112 000
/// pushes per stream, 90 s for 50 of them), too long for CI.
const DEAF_WINDOW: u32 = 65_535;

/// Users they push to; none is connected: this is about the producers.
const DEAF_USERS: u64 = 10;

/// 50 `PushStream`s whose producers send an endless stream of pushes and
/// never read a reply: HTTP/2 flow control holds them (the gateway stops
/// accepting their pushes, and its memory stays flat while they wait), and
/// once they go away the gateway has no task left of them and still serves.
/// The gateway runs in-process on a runtime of its own, so its live tasks
/// can be counted.
#[test]
fn producers_that_never_read_replies_are_held_back_and_leave_no_task() {
    let _serial = serial();
    let runtime = |name: &str| {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(2).thread_name(name).enable_all().build().expect("runtime")
    };
    let server = runtime("gateway");
    let gw = server.block_on(common::start(common::settings()));
    // The producers' own runtime: shutting it down is their process dying.
    let producers = runtime("producers");
    runtime("clients").block_on(deaf_producers(&gw, server.handle(), producers));
}

async fn deaf_producers(gw: &common::Gateway, server: &tokio::runtime::Handle, producers: tokio::runtime::Runtime) {
    let hub = &gw.running.hub;
    let started = Instant::now();
    let tasks_before = server.metrics().num_alive_tasks();
    let rss_before = Proc::me().rss_kib();

    // Replies echo the request id: long ids fill the producers' windows
    // after fewer pushes (the long form uses short ones).
    let id_bytes = if budget().scale > 1 { 8 } else { 256 };
    // Every stream is opened first, then all start at once.
    let (go, ready) = tokio::sync::watch::channel(false);
    let url = gw.internal_url();
    let opened = producers.spawn(async move {
        let mut streams = Vec::new();
        for p in 0..DEAF_PRODUCERS {
            let endpoint = tonic::transport::Endpoint::from_shared(url.clone()).expect("endpoint");
            let endpoint = endpoint.initial_stream_window_size(DEAF_WINDOW).initial_connection_window_size(DEAF_WINDOW);
            let channel = tokio::time::timeout(WAIT, endpoint.connect()).await.expect("connect in time");
            let mut client = PushServiceClient::new(channel.expect("connect"));
            let (user, pad) = (format!("h{}", p % DEAF_USERS), "x".repeat(200));
            let endless = futures_util::stream::unfold((ready.clone(), 0u64), move |(mut ready, k)| {
                let mut push = text_push(&user, "e", format!("{p}:{k}:{pad}"));
                push.request_id = format!("{p}:{k}:{:1$}", "", id_bytes);
                async move {
                    if k == 0 {
                        let _ = ready.wait_for(|&go| go).await;
                    }
                    Some((push, (ready, k + 1)))
                }
            });
            let replies = tokio::time::timeout(WAIT, client.push_stream(endless)).await;
            // Kept, never read.
            streams.push((client, replies.expect("stream in time").expect("push stream").into_inner()));
        }
        streams
    });
    let streams = opened.await.expect("producers");
    let all_open = started.elapsed();
    go.send_replace(true);
    // Held: no push accepted for a second.
    let mut last = (u64::MAX, Instant::now());
    let held = eventually("back-pressure holds the producers", 3 * WAIT, async || {
        let pushes = hub.stats().pushes;
        if pushes != last.0 {
            last = (pushes, Instant::now());
        }
        (last.1.elapsed() >= Duration::from_secs(1)).then_some(pushes)
    })
    .await;
    let held_at = started.elapsed();
    let (rss_held, tasks_held) = (Proc::me().rss_kib(), server.metrics().num_alive_tasks());
    // Still held a while later, and no bigger.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (still, rss_later) = (hub.stats().pushes, Proc::me().rss_kib());

    // The producers' process dies: its runtime and its sockets go.
    producers.shutdown_background();
    drop(streams);
    let tasks_after = eventually("the producers' tasks end", WAIT, async || {
        let n = server.metrics().num_alive_tasks();
        (n <= tasks_before).then_some(n)
    })
    .await;
    // The gateway still serves, and its counters add up.
    let mut tab = clients::tab(gw.public(), "witness", "e", true).await.expect("a fresh tab");
    let mut client = gw.grpc().await;
    let reply = client.push(text_push("witness", "e", "after".into())).await.expect("a fresh push").into_inner();
    let frame = clients::next_text(&mut tab).await.expect("the fresh push arrives");
    let stats = hub.stats();
    println!(
        "deaf producers: {DEAF_PRODUCERS} streams open after {all_open:.1?}, held after {held} pushes (~{} each, {id_bytes}-byte request ids) at {held_at:.1?}; \
         process RSS {rss_before} -> {rss_held} -> {rss_later} KiB (2 s later); gateway tasks {tasks_before} -> {tasks_held} held -> {tasks_after} after",
        held / DEAF_PRODUCERS,
    );
    assert_eq!(still, held, "no push accepted while every producer is held");
    assert!(rss_later <= rss_held + 8 * 1024, "memory grows while held: {rss_held} -> {rss_later} KiB");
    // Each held stream costs at most its HTTP/2 windows and send buffers, on
    // each side (this process holds both).
    let cost = rss_held.saturating_sub(rss_before) / DEAF_PRODUCERS;
    assert!(cost < 4 * 1024, "{cost} KiB per held stream");
    assert!(tasks_held > tasks_before, "the streams had tasks: {tasks_before} -> {tasks_held}");
    assert_eq!(reply.delivered, 1, "a fresh push reaches its tab");
    assert!(frame.contains(r#""data":"after""#), "{frame}");
    assert_eq!(stats.pushes, held + 1, "{stats:?}");
    assert_eq!((stats.connections, stats.users, stats.deliveries), (1, 1, 1), "{stats:?}");
    leave(tab, Leave::Clean).await.expect("leave");
    drop(client);
    eventually("the gateway back to its first tasks", WAIT, async || {
        (server.metrics().num_alive_tasks() <= tasks_before).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------- 5. SIGTERM under load

/// Users of the shutdown scenario, each with a wserver-compatible and an
/// envelope tab.
const TERM_USERS: u64 = 500;

/// Producers pushing through the signal, each on its own `PushStream`.
const TERM_PRODUCERS: u64 = 4;

/// What a push's reply said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Accepted, queued to this many connections.
    Queued(u32),
    /// Refused (the gateway is shutting down).
    Refused,
}

/// The message of push `k` of producer `p`, and its user.
fn term_push(p: u64, k: u64, users: u64) -> (u64, String) {
    ((k * TERM_PRODUCERS + p * 7) % users, format!("{p}:{k}"))
}

fn term_id(text: &str) -> (u64, u64) {
    let (p, k) = text.split_once(':').unwrap_or_else(|| panic!("not a shutdown push: {text}"));
    (p.parse().expect("producer"), k.parse().expect("number"))
}

/// One producer: pushes until its first refusal (then ends its stream, as a
/// producer told the gateway is going away would) or until the stream
/// breaks. Returns how many it sent and every answer, in order.
async fn term_producer(client: common::PushClient, p: u64, users: u64, answered: Arc<AtomicU64>) -> (u64, Vec<Answer>) {
    let PushStream { tx, mut replies, .. } = PushStream::open(client, 64).await;
    let refused = Arc::new(AtomicBool::new(false));
    let reading = {
        let refused = Arc::clone(&refused);
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while let Ok(Ok(Some(reply))) = tokio::time::timeout(WAIT, replies.message()).await {
                answers.push(match reply.error {
                    None => Answer::Queued(reply.delivered),
                    Some(_) => Answer::Refused,
                });
                refused.fetch_or(reply.error.is_some(), Ordering::Relaxed);
                answered.fetch_add(1, Ordering::Release);
            }
            answers
        })
    };
    let mut sent = 0;
    while !refused.load(Ordering::Relaxed) && !reading.is_finished() && sent < 10_000_000 {
        let (user, text) = term_push(p, sent, users);
        if tx.send(text_push(&format!("t{user}"), "e", text)).await.is_err() {
            break;
        }
        sent += 1;
    }
    drop(tx);
    (sent, reading.await.expect("reply reader"))
}

/// Pushes flowing to 1 000 connections when SIGTERM arrives: the gateway
/// exits 0 within `--drain-timeout`, every connection ends with 1001, and
/// each connection got exactly the pushes acknowledged as queued to it —
/// all of those acknowledged before the signal, in order, none twice.
#[test]
fn sigterm_under_load_delivers_every_acknowledged_push_then_exits() {
    serially(scenario_sigterm_under_load_delivers_every_acknowledged_push_then_exits());
}

async fn scenario_sigterm_under_load_delivers_every_acknowledged_push_then_exits() {
    let drain = Duration::from_secs(4);
    let users = fit(2 * TERM_USERS as usize, "shutdown tabs") as u64 / 2;
    let mut gw = Gateway::spawn(&["--drain-timeout", "4s"]);
    let opening = Arc::new(Semaphore::new(64));
    let mut tabs = Vec::new();
    for i in 0..2 * users {
        let (public, opening) = (gw.public, Arc::clone(&opening));
        let (user, envelope) = (i / 2, i % 2 == 1);
        tabs.push(tokio::spawn(async move {
            let permit = opening.acquire_owned().await.expect("semaphore");
            let mut ws = clients::tab(public, &format!("t{user}"), "e", envelope).await.expect("tab");
            drop(permit);
            let mut got = Vec::new();
            let ending = clients::read_to_end(&mut ws, 6 * WAIT, |text| {
                if !envelope {
                    got.push(term_id(text));
                } else if let Ok(frame) = serde_json::from_str::<serde_json::Value>(text) {
                    if frame["type"] == "push" {
                        got.push(term_id(frame["data"].as_str().expect("data")));
                    }
                }
            });
            (user, ending.await.expect("the tab ends"), got)
        }));
    }
    let mut client = gw.grpc().await;
    eventually("every tab joined", 3 * WAIT, async || {
        (gw.stats(&mut client).await.connections == 2 * users).then_some(())
    })
    .await;
    drop(client);

    let answered: Vec<_> = (0..TERM_PRODUCERS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut producers = Vec::new();
    for p in 0..TERM_PRODUCERS {
        let (client, answered) = (gw.grpc().await, Arc::clone(&answered[p as usize]));
        producers.push(tokio::spawn(term_producer(client, p, users, answered)));
    }
    let total = || answered.iter().map(|a| a.load(Ordering::Acquire)).sum::<u64>();
    // Every producer's stream open and answered before the signal: a stream
    // still opening when the gateway stops would be reset, not refused.
    let flowing = || answered.iter().all(|a| a.load(Ordering::Acquire) > 0) && total() >= 2_000;
    eventually("pushes flowing on every stream", WAIT, async || flowing().then_some(())).await;
    // Every reply counted here was read before the signal was sent.
    let before: Vec<u64> = answered.iter().map(|a| a.load(Ordering::Acquire)).collect();
    let signalled = Instant::now();
    gw.sigterm();
    let exit = gw.exited(drain + WAIT).await.expect("the gateway exits");
    let took = signalled.elapsed();

    let mut outcomes = Vec::new();
    for producer in producers {
        outcomes.push(producer.await.expect("producer"));
    }
    // (producer, k) -> tabs that received it; and each tab's checks.
    let mut received = std::collections::HashMap::<(u64, u64), u32>::new();
    let mut endings = std::collections::BTreeMap::<String, usize>::new();
    let mut frames = 0;
    for tab in tabs {
        let (user, ending, got) = tab.await.expect("tab");
        *endings.entry(format!("{:?}", ending.code())).or_default() += 1;
        frames += got.len();
        let mut last = vec![None; TERM_PRODUCERS as usize];
        for &(p, k) in &got {
            assert_eq!(term_push(p, k, users).0, user, "push {p}:{k} reached another user's tab");
            assert!(
                last[p as usize] < Some(k),
                "t{user}: push {p}:{k} after {:?}: out of order or twice",
                last[p as usize]
            );
            last[p as usize] = Some(k);
            *received.entry((p, k)).or_default() += 1;
        }
    }
    let (mut queued, mut refused, mut unanswered, mut after) = (0, 0, 0, 0);
    for (p, (sent, answers)) in outcomes.iter().enumerate() {
        let p = p as u64;
        for (k, answer) in answers.iter().enumerate() {
            let (k, got) = (k as u64, received.get(&(p, k as u64)).copied().unwrap_or(0));
            match *answer {
                Answer::Queued(delivered) => {
                    queued += 1;
                    after += u64::from(k >= before[p as usize]);
                    assert_eq!(
                        got, delivered,
                        "push {p}:{k} acknowledged as queued to {delivered} tabs, received by {got}"
                    );
                    if k < before[p as usize] {
                        assert_eq!(delivered, 2, "push {p}:{k}, acknowledged before the signal, queued to both tabs");
                    }
                }
                Answer::Refused => {
                    refused += 1;
                    assert_eq!(got, 0, "refused push {p}:{k} was delivered");
                }
            }
        }
        unanswered += sent - answers.len() as u64;
    }
    println!(
        "sigterm: {} tabs; {} pushes acknowledged before the signal, {after} more after it, {refused} refused, {unanswered} unanswered; \
         {frames} frames received; {exit} {took:.2?} after the signal (drain timeout {drain:?}); endings {endings:?}",
        2 * users,
        before.iter().sum::<u64>(),
    );
    gw.print_warnings();
    assert!(exit.success(), "exit status {exit}");
    assert!(took < drain + Duration::from_secs(1), "exited {took:?} after the signal, drain timeout {drain:?}");
    assert_eq!(endings.get("Some(1001)"), Some(&(2 * users as usize)), "every tab closed with 1001: {endings:?}");
    assert!(queued >= 2_000, "pushes flowed: {queued}");
}

// ---------------------------------------------------------------- 6. stable connections while others come and go

/// Users of the scenario, each with three stable tabs (two envelope, one
/// wserver-compatible) and tabs that come and go.
const STABLE_USERS: u64 = 10;
const STABLE_PER_USER: u64 = 3;

/// Tabs joining and leaving the same users, and how often each does (short
/// form: 20 × 150 = 3 000 cycles).
const COMERS: u64 = 20;
const COMER_CYCLES: u64 = 150;

/// Producers pushing to every user at once, each on its own `PushStream`.
const ORDER_PRODUCERS: u64 = 4;

/// A stable tab's reader: every push until the one whose data is `end`, as
/// (seq, data); the wserver-compatible mode has no seq (0).
fn stable_reader(
    mut ws: clients::Ws,
    envelope: bool,
    progress: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Result<Vec<(u64, String)>>> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            let text = clients::next_text(&mut ws).await?;
            let (seq, data) = if envelope {
                let frame: serde_json::Value = serde_json::from_str(&text)?;
                anyhow::ensure!(frame["type"] == "push", "expected a push: {text}");
                (frame["seq"].as_u64().context("seq")?, frame["data"].as_str().context("data")?.to_owned())
            } else {
                (0, text)
            };
            if data == "end" {
                leave(ws, Leave::Clean).await?;
                return Ok(got);
            }
            got.push((seq, data));
            progress.fetch_add(1, Ordering::Release);
        }
    })
}

/// Pushes a user may have ahead of the slowest of its stable tabs: a few
/// KiB of queue, far under the cap, so a stable tab is never a slow consumer
/// however the scheduler runs it (that would be the test's fault, not the
/// gateway's).
const LEAD: u64 = 64;

/// Per user: pushes sent, and each stable tab's pushes read.
struct Pacing {
    sent: Vec<AtomicU64>,
    read: Vec<Vec<Arc<AtomicU64>>>,
}

impl Pacing {
    /// Waits until user `u` is less than [`LEAD`] pushes ahead of its
    /// slowest stable tab, then counts one more push to it.
    async fn next(&self, u: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let slowest = self.read[u].iter().map(|r| r.load(Ordering::Acquire)).min().unwrap_or(0);
            if self.sent[u].load(Ordering::Acquire).saturating_sub(slowest) < LEAD {
                break;
            }
            assert!(Instant::now() < deadline, "the stable tabs of s{u} stopped reading");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.sent[u].fetch_add(1, Ordering::AcqRel);
    }
}

/// 30 stable connections get every push of 4 concurrent producers exactly
/// once and in the order of the user's seq, while 20 other connections of
/// the same users join and leave over and over (clean, reset, bare FIN).
#[test]
fn stable_connections_get_every_push_once_in_order_while_others_come_and_go() {
    serially(scenario_stable_connections_get_every_push_once_in_order_while_others_come_and_go());
}

async fn scenario_stable_connections_get_every_push_once_in_order_while_others_come_and_go() {
    let cycles = COMER_CYCLES * budget().scale;
    let gw = common::start(common::settings()).await;
    let (public, hub) = (gw.public(), Arc::clone(&gw.running.hub));
    let user = |u: u64| format!("s{u}");

    let mut stable = Vec::new();
    for u in 0..STABLE_USERS {
        for i in 0..STABLE_PER_USER {
            let envelope = i > 0;
            let ws = clients::tab(public, &user(u), "e", envelope).await.expect("stable tab");
            stable.push((u, envelope, ws));
        }
        let name = user(u);
        eventually("stable tabs joined", WAIT, async || {
            (hub.online(std::slice::from_ref(&name))[0] == 3).then_some(())
        })
        .await;
    }
    let mut pacing = Pacing {
        sent: (0..STABLE_USERS).map(|_| AtomicU64::new(0)).collect(),
        read: (0..STABLE_USERS).map(|_| Vec::new()).collect(),
    };
    let stable: Vec<_> = stable
        .into_iter()
        .map(|(u, envelope, ws)| {
            let progress = Arc::new(AtomicU64::new(0));
            pacing.read[u as usize].push(Arc::clone(&progress));
            (u, envelope, stable_reader(ws, envelope, progress))
        })
        .collect();
    let pacing = Arc::new(pacing);

    let done = Arc::new(AtomicBool::new(false));
    let comers: Vec<_> = (0..COMERS)
        .map(|c| {
            tokio::spawn(async move {
                for n in 0..cycles {
                    let envelope = (c + n) % 2 == 0;
                    let mut ws = open(public, envelope).await?;
                    register(&mut ws, &format!("s{}", (c + n) % STABLE_USERS), "e", envelope).await?;
                    leave(ws, Leave::ALL[((c + n) % 3) as usize]).await?;
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    // (user, seq) -> the push's data, from the replies.
    let producers: Vec<_> = (0..ORDER_PRODUCERS)
        .map(|p| {
            let (internal, done, pacing) = (gw.internal_url(), Arc::clone(&done), Arc::clone(&pacing));
            tokio::spawn(async move {
                let client = PushServiceClient::connect(internal).await.expect("grpc");
                let PushStream { tx, mut replies, .. } = PushStream::open(client, 16).await;
                let reading = tokio::spawn(async move {
                    let mut acked = Vec::new();
                    while let Some(reply) = replies.message().await.expect("a reply") {
                        assert!(reply.error.is_none() && reply.delivered >= 3, "{reply:?}");
                        acked.push(reply.seq);
                    }
                    acked
                });
                let mut k = 0;
                while !done.load(Ordering::Relaxed) && k < 1_000_000 {
                    let u = (k + p) % STABLE_USERS;
                    pacing.next(u as usize).await;
                    tx.send(text_push(&format!("s{u}"), "e", format!("{p}:{k}"))).await.expect("stream");
                    k += 1;
                }
                drop(tx);
                let acked = reading.await.expect("replies");
                assert_eq!(acked.len() as u64, k, "one reply per push");
                acked
                    .into_iter()
                    .enumerate()
                    .map(|(k, seq)| {
                        let k = k as u64;
                        ((k + p) % STABLE_USERS, seq, format!("{p}:{k}"))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let started = Instant::now();
    for comer in comers {
        comer.await.expect("comer").expect("a coming and going tab");
    }
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let mut expected = std::collections::HashMap::<(u64, u64), String>::new();
    for producer in producers {
        for (u, seq, data) in producer.await.expect("producer") {
            assert!(expected.insert((u, seq), data).is_none(), "seq {seq} of s{u} given twice");
        }
    }
    let pushes = expected.len();
    for u in 0..STABLE_USERS {
        let name = user(u);
        eventually("only the stable tabs left", WAIT, async || {
            (hub.online(std::slice::from_ref(&name))[0] == 3).then_some(())
        })
        .await;
        let reply = hub.publish(pushgate::core::Push::new(name, "e", pushgate::core::Payload::text("end")));
        assert_eq!(reply.expect("end").delivered, 3);
    }
    for (u, envelope, reader) in stable {
        let got = reader.await.expect("reader").expect("a stable tab reads to the end");
        let mut want: Vec<(u64, &String)> =
            expected.iter().filter(|((user, _), _)| *user == u).map(|((_, seq), data)| (*seq, data)).collect();
        want.sort();
        let datas: Vec<&String> = got.iter().map(|(_, data)| data).collect();
        assert_eq!(datas, want.iter().map(|(_, d)| *d).collect::<Vec<_>>(), "s{u}: every push once, in seq order");
        if envelope {
            let seqs: Vec<u64> = got.iter().map(|(seq, _)| *seq).collect();
            assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "s{u}: seqs 1, 2, 3...");
        }
    }
    println!(
        "stable+churn: {} join/leave cycles in {took:.1?} while {pushes} pushes reached {} stable tabs exactly once, in order",
        COMERS * cycles,
        STABLE_USERS * STABLE_PER_USER,
    );
    eventually("every tab gone", WAIT, async || (hub.stats().connections == 0).then_some(())).await;
    assert!(pushes >= 1_000, "pushes flowed during the churn: {pushes}");
}
