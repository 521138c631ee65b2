//! The printed result: the command line, the machine, one row per phase, and
//! the goals of BENCHMARKS.md next to the figures.

use std::fmt::{self, Display, Formatter};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::histogram::Summary;
use crate::metrics::Bounds;
use crate::producer::Tally;
use crate::target::Target;
use crate::{Args, Where};

/// The connect + register storm (P9).
pub struct Connect {
    pub connections: usize,
    pub elapsed: Duration,
    /// Gateway CPU time spent meanwhile (accept, upgrade, register).
    pub server_cpu_us: u64,
    /// This process's CPU time spent meanwhile (connect, handshake).
    pub bench_cpu_us: u64,
}

impl Connect {
    fn per_sec(&self) -> f64 {
        self.connections as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The server's CPU-µs per connection (P9).
    pub fn cpu_us_per_connection(&self) -> f64 {
        self.server_cpu_us as f64 / self.connections.max(1) as f64
    }
}

/// Gateway RSS before and after the connections registered (P6).
pub struct IdleMemory {
    pub before_kib: u64,
    pub after_kib: u64,
    /// This process's own growth, for scale.
    pub bench_delta_kib: u64,
    pub connections: usize,
}

impl IdleMemory {
    fn per_conn(&self) -> f64 {
        self.after_kib.saturating_sub(self.before_kib) as f64 / self.connections.max(1) as f64
    }
}

/// One push phase.
pub struct Measured {
    pub name: String,
    pub tally: Tally,
    /// Timed push frames the clients received.
    pub received: u64,
    /// From the first push to the last frame received.
    pub elapsed: Duration,
    pub server_cpu_us: u64,
    pub bench_cpu_us: u64,
    /// Cores other processes of the machine kept busy on average meanwhile.
    pub others_cores: f64,
    pub server_rss_kib: u64,
    /// The gateway's own `Stats.deliveries` delta, when it answers `Stats`.
    pub server_deliveries: Option<u64>,
    pub latency: Summary,
    /// The gateway's push→write latency over the phase (bucket bounds).
    pub gw_write: Option<Bounds>,
}

impl Measured {
    pub fn deliveries_per_sec(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn server_us_per_delivery(&self) -> f64 {
        self.server_cpu_us as f64 / self.received.max(1) as f64
    }

    fn per_server_core(&self) -> f64 {
        self.received as f64 / (self.server_cpu_us as f64 / 1e6).max(1e-9)
    }

    fn bench_us_per_delivery(&self) -> f64 {
        self.bench_cpu_us as f64 / self.received.max(1) as f64
    }
}

/// Everything printed at the end.
pub struct Report {
    pub command: String,
    pub date: String,
    pub machine: String,
    pub gateway: String,
    pub setup: String,
    pub connect: Option<Connect>,
    pub idle_memory: Option<IdleMemory>,
    pub rows: Vec<Measured>,
    pub loaded_rate: Option<f64>,
    pub closes: String,
    pub open_at_end: u64,
    pub other_frames: u64,
    pub notes: Vec<String>,
    /// The sections of P7/P8, P10 and P11, printed after the goals.
    pub sections: Vec<Box<dyn Display>>,
    /// `/proc/loadavg` when the report began.
    pub loadavg: String,
}

impl Report {
    pub fn new(args: &Args, target: &Target) -> Self {
        let gateway = match args.place() {
            Ok(Where::Spawn { server, .. }) => format!("started {} (pid {})", server.display(), target.pid),
            _ => format!("attached to pid {}", target.pid),
        };
        let setup = format!(
            "{} connections, {:?} mode, {}-byte messages, {} PushStreams × window {}",
            args.connections, args.mode, args.message_bytes, args.streams, args.window
        );
        Self {
            command: std::env::args().collect::<Vec<_>>().join(" "),
            date: utc_now(),
            machine: machine(),
            gateway: format!("{gateway}, public {}, internal {}", target.public, target.internal),
            setup,
            connect: None,
            idle_memory: None,
            rows: Vec::new(),
            loaded_rate: None,
            closes: String::new(),
            open_at_end: 0,
            other_frames: 0,
            notes: Vec::new(),
            sections: Vec::new(),
            loadavg: std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string(),
        }
    }

    fn row(&self, name_prefix: &str) -> Option<&Measured> {
        self.rows.iter().find(|m| m.name.starts_with(name_prefix))
    }
}

impl Display for Report {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(f, "pushgate-bench  {}", self.date)?;
        writeln!(f, "command:  {}", self.command)?;
        writeln!(f, "machine:  {}", self.machine)?;
        writeln!(f, "gateway:  {}", self.gateway)?;
        writeln!(f, "setup:    {}", self.setup)?;
        if let Some(c) = &self.connect {
            let secs = c.elapsed.as_secs_f64();
            let n = c.connections.max(1) as f64;
            writeln!(
                f,
                "P9 connect+register: {} in {secs:.2} s = {:.0} conn/s; gateway {:.0} CPU-µs per connection, bench {:.0}",
                c.connections,
                c.per_sec(),
                c.cpu_us_per_connection(),
                c.bench_cpu_us as f64 / n
            )?;
        }
        if let Some(m) = &self.idle_memory {
            writeln!(
                f,
                "P6 idle memory: gateway RSS {} KiB -> {} KiB = {:.2} KiB per connection (bench grew {} KiB)",
                m.before_kib,
                m.after_kib,
                m.per_conn(),
                m.bench_delta_kib
            )?;
        }
        writeln!(f)?;
        self.table(f)?;
        writeln!(f)?;
        self.goals(f)?;
        for section in &self.sections {
            write!(f, "\n{section}")?;
        }
        let closes = if self.closes.is_empty() { "none" } else { &self.closes };
        writeln!(f, "\nconnections open at the end: {}; ended: {closes}", self.open_at_end)?;
        writeln!(f, "untimed text/binary frames (registered, errors, ...): {}", self.other_frames)?;
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        writeln!(f, "load average at the start: {}", self.loadavg)?;
        writeln!(f, "Figures are noisy: the gateway and this generator share the machine's cores.")
    }
}

impl Report {
    pub fn table(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "| phase | pushes acked | gateway queued | received | s | deliveries/s | gw CPU-µs/delivery | deliveries/s per gw core | bench CPU-µs/delivery | mean µs | p50 µs | p99 µs | p99.9 µs | max µs | gw push→write p50/p99 µs | gw RSS MiB | other procs' cores |"
        )?;
        writeln!(f, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for m in &self.rows {
            let us = |ns: u64| ns as f64 / 1000.0;
            let l = &m.latency;
            writeln!(
                f,
                "| {} | {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.1} | {:.2} |",
                m.name,
                m.tally.replies,
                m.tally.delivered,
                m.received,
                m.elapsed.as_secs_f64(),
                m.deliveries_per_sec(),
                m.server_us_per_delivery(),
                m.per_server_core(),
                m.bench_us_per_delivery(),
                us(l.mean),
                us(l.p50),
                us(l.p99),
                us(l.p999),
                us(l.max),
                m.gw_write.map_or("-".into(), |b| format!("{} / {}", bound(b.p50_us), bound(b.p99_us))),
                m.server_rss_kib as f64 / 1024.0,
                m.others_cores
            )?;
        }
        for m in &self.rows {
            if m.tally.failed > 0 || m.tally.sent != m.tally.replies || m.received < m.tally.delivered {
                writeln!(
                    f,
                    "{}: sent {}, replies {}, failed {} ({}), queued {} but received {}",
                    m.name,
                    m.tally.sent,
                    m.tally.replies,
                    m.tally.failed,
                    m.tally.first_error.as_deref().unwrap_or("-"),
                    m.tally.delivered,
                    m.received
                )?;
            }
            if let Some(d) = m.server_deliveries.filter(|d| *d != m.tally.delivered) {
                writeln!(f, "{}: the gateway's Stats counted {d} deliveries", m.name)?;
            }
        }
        Ok(())
    }

    /// The absolute goals; the goals relative to the floor are in the
    /// comparison's table.
    fn goals(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(f, "absolute goals (BENCHMARKS.md):")?;
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        if let Some(c) = &self.connect {
            let us = c.cpu_us_per_connection();
            writeln!(f, "  P9 ≤ 25 gateway CPU-µs per connection: {us:.1} ({})", verdict(us <= 25.0))?;
        }
        if let Some(m) = &self.idle_memory {
            let k = m.per_conn();
            writeln!(f, "  P6 ≤ 3 KiB RSS per idle connection: {k:.2} KiB ({})", verdict(k <= 3.0))?;
        }
        if let Some(m) = self.row("P2") {
            let us = m.server_us_per_delivery();
            writeln!(f, "  P2 ≤ 2.0 gateway CPU-µs per delivery: {us:.2} ({})", verdict(us <= 2.0))?;
        }
        if let (Some(m), Some(rate)) = (self.row("P4 at"), self.loaded_rate) {
            let (p99, p999) = (m.latency.p99 as f64 / 1000.0, m.latency.p999 as f64 / 1000.0);
            writeln!(f, "  P4 at {rate:.0}/s p99 ≤ 2 ms: {p99:.0} µs ({})", verdict(p99 <= 2000.0))?;
            writeln!(f, "  P4 at {rate:.0}/s p99.9 ≤ 10 ms: {p999:.0} µs ({})", verdict(p999 <= 10_000.0))?;
        }
        Ok(())
    }
}

/// A histogram bucket's upper bound in µs, `≤100`, or `>` the last finite one.
fn bound(us: f64) -> String {
    if us.is_finite() { format!("≤{us:.0}") } else { "> last bucket".into() }
}

/// `N cores, <model name>`.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim()))
        .unwrap_or("unknown CPU");
    format!("{cores} cores, {model}")
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}
