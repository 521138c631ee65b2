//! The gateway under test: a child process this program starts and kills, or
//! an already running server given by `--attach`; and what it costs, read
//! from `/proc/<pid>/stat` (CPU) and `/proc/<pid>/status` (RSS).

use std::cell::Cell;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How long the gateway may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The gateway being measured.
pub struct Target {
    pub public: SocketAddr,
    pub internal: SocketAddr,
    pub pid: u32,
    /// Other processes of the cluster whose CPU counts with the gateway's.
    cluster: Vec<u32>,
    /// Set when this program started the gateway; killed on drop.
    child: Option<Child>,
    log: Option<PathBuf>,
    /// Set once the log was quoted in an error: it is then kept.
    keep_log: Cell<bool>,
    clk_tck: u64,
}

/// How to start the gateway.
pub struct Spawn<'a> {
    pub server: &'a Path,
    pub max_connections: usize,
    pub extra_args: &'a [String],
}

impl Target {
    /// Starts `pushgate serve` on two free loopback ports and waits until
    /// `/readyz` answers 200.
    pub async fn spawn(spec: Spawn<'_>) -> anyhow::Result<Self> {
        if !spec.server.is_file() {
            bail!(
                "gateway binary {} not found: build it with `cargo build --release` or pass --server PATH",
                spec.server.display()
            );
        }
        let public = free_port()?;
        let internal = free_port()?;
        let log = std::env::temp_dir().join(format!("pushgate-bench-{}.log", std::process::id()));
        let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(spec.server);
        cmd.arg("serve")
            .arg("--public-addr")
            .arg(public.to_string())
            .arg("--internal-addr")
            .arg(internal.to_string())
            .arg("--max-connections")
            .arg(spec.max_connections.to_string())
            .arg("--log")
            .arg("warn")
            .args(spec.extra_args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = cmd.spawn().with_context(|| format!("starting {}", spec.server.display()))?;
        let pid = child.id();
        let mut target = Target {
            public,
            internal,
            pid,
            cluster: Vec::new(),
            child: Some(child),
            log: Some(log),
            keep_log: Cell::new(false),
            clk_tck: clock_ticks(),
        };
        target.wait_ready().await?;
        Ok(target)
    }

    /// Measures a gateway started elsewhere.
    pub async fn attach(public: SocketAddr, internal: SocketAddr, pid: u32) -> anyhow::Result<Self> {
        let mut target = Target {
            public,
            internal,
            pid,
            cluster: Vec::new(),
            child: None,
            log: None,
            keep_log: Cell::new(false),
            clk_tck: clock_ticks(),
        };
        target.sample().with_context(|| format!("reading /proc/{pid}: is the gateway's pid right?"))?;
        target.wait_ready().await?;
        Ok(target)
    }

    /// Polls `GET /readyz` until 200, the child exits, or the timeout.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            self.check_alive()?;
            match readyz(self.public).await {
                Ok(200) => return Ok(()),
                Ok(status) => last = format!("HTTP {status}"),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("gateway at {} not ready after {READY_TIMEOUT:?} ({last}){}", self.public, self.log_tail())
    }

    /// Fails when the gateway process has gone.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait().context("waiting on the gateway")?
        {
            self.child = None;
            bail!("the gateway exited ({status}){}", self.log_tail());
        }
        if !Path::new(&format!("/proc/{}/stat", self.pid)).exists() {
            bail!("the gateway (pid {}) is gone{}", self.pid, self.log_tail());
        }
        Ok(())
    }

    /// Counts the CPU time of `pids` (other nodes, redis-server) with the
    /// gateway's from now on.
    pub fn count_with(&mut self, pids: &[u32]) {
        self.cluster = pids.to_vec();
    }

    /// CPU time (the gateway's plus the cluster's other processes') and RSS
    /// (the gateway's) now.
    pub fn sample(&self) -> anyhow::Result<ProcSample> {
        let mut sample = ProcSample::read(&self.pid.to_string(), self.clk_tck)?;
        for pid in &self.cluster {
            let other = ProcSample::read(&pid.to_string(), self.clk_tck)
                .with_context(|| format!("reading /proc/{pid} (--cluster-pid)"))?;
            sample.cpu_us += other.cpu_us;
        }
        Ok(sample)
    }

    /// CPU time and RSS of this load generator now.
    pub fn sample_self(&self) -> anyhow::Result<ProcSample> {
        ProcSample::read("self", self.clk_tck)
    }

    /// CPU time all processes of the machine have used since boot, in
    /// microseconds (the first line of `/proc/stat`: everything but idle
    /// and iowait). Shows how much of a phase's machine other programs took.
    pub fn machine_busy_us(&self) -> anyhow::Result<u64> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let line = stat.lines().next().filter(|l| l.starts_with("cpu ")).ok_or_else(|| anyhow!("odd /proc/stat"))?;
        let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let busy: u64 = ticks.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, t)| t).sum();
        Ok(busy * 1_000_000 / self.clk_tck)
    }

    /// The last lines of the child's log, for error messages.
    pub fn log_tail(&self) -> String {
        let Some(path) = &self.log else { return String::new() };
        self.keep_log.set(true);
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n  ");
        if tail.is_empty() {
            format!(" (gateway log {} is empty)", path.display())
        } else {
            format!("\n  gateway log {} ends with:\n  {tail}", path.display())
        }
    }

    /// Kills the child, if this program started it, and removes its log
    /// unless an error quoted it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(log) = self.log.take().filter(|_| !self.keep_log.get()) {
            let _ = std::fs::remove_file(log);
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One reading of a process's cost.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// utime + stime, in microseconds.
    pub cpu_us: u64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
}

impl ProcSample {
    /// Reads `/proc/<pid>` (`pid` may be `self`).
    pub fn read(pid: &str, clk_tck: u64) -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the parenthesised command name: state is field 3,
        // utime field 14, stime field 15 (1-based, proc(5)).
        let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        let (utime, stime) = tick(11).zip(tick(12)).ok_or_else(|| anyhow!("no utime/stime in /proc/{pid}/stat"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
        Ok(Self { cpu_us: (utime + stime) * 1_000_000 / clk_tck, rss_kib })
    }
}

/// `getconf CLK_TCK`, normally 100.
pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// A loopback port nobody listens on right now.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// The status code of `GET /readyz` on `addr`.
async fn readyz(addr: SocketAddr) -> anyhow::Result<u16> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await?;
        let mut buf = vec![0u8; 256];
        let mut len = 0;
        while len < 12 {
            let n = stream.read(&mut buf[len..]).await?;
            if n == 0 {
                break;
            }
            len += n;
        }
        let head = String::from_utf8_lossy(&buf[..len]);
        head.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("not an HTTP answer: {head:?}"))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt).await.map_err(|_| anyhow!("/readyz timed out"))?
}
