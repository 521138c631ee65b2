//! What a stretch of work cost a server: its CPU time (`/proc/<pid>/stat`),
//! this generator's, and the cores all other processes took meanwhile — for
//! every push phase ([`crate::phases::measure`]), the comparison of the
//! gateway with the echo server (P7) and the phases that count pushes rather
//! than deliveries (P8, P11).

use std::time::{Duration, Instant};

use crate::target::{ProcSample, Target, clock_ticks};

/// One reading at the start of the work.
pub struct Meter {
    /// The measured process; `None`: the target with its cluster's processes.
    pid: Option<u32>,
    clk_tck: u64,
    server: ProcSample,
    bench: ProcSample,
    machine_us: u64,
    wall: Instant,
}

/// What the work cost.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    pub elapsed: Duration,
    /// CPU time of the measured server process.
    pub server_cpu_us: u64,
    /// CPU time of this load generator.
    pub bench_cpu_us: u64,
    /// Cores all other processes of the machine kept busy on average.
    pub others_cores: f64,
    /// The server's resident set at the end, KiB.
    pub server_rss_kib: u64,
}

impl Meter {
    /// Starts measuring process `pid` alone (the gateway, or the echo server).
    pub fn start(target: &Target, pid: u32) -> anyhow::Result<Self> {
        Self::begin(target, Some(pid))
    }

    /// Starts measuring the target: the gateway's CPU with that of the
    /// cluster's other processes (`--cluster-pid`), the gateway's RSS.
    pub fn target(target: &Target) -> anyhow::Result<Self> {
        Self::begin(target, None)
    }

    fn begin(target: &Target, pid: Option<u32>) -> anyhow::Result<Self> {
        let clk_tck = clock_ticks();
        let server = Self::read(target, pid, clk_tck)?;
        let bench = ProcSample::read("self", clk_tck)?;
        Ok(Self { pid, clk_tck, server, bench, machine_us: target.machine_busy_us()?, wall: Instant::now() })
    }

    fn read(target: &Target, pid: Option<u32>, clk_tck: u64) -> anyhow::Result<ProcSample> {
        match pid {
            Some(pid) => ProcSample::read(&pid.to_string(), clk_tck),
            None => target.sample(),
        }
    }

    /// Reads again; `elapsed` is the wall time since the start.
    pub fn stop(self, target: &Target) -> anyhow::Result<Cost> {
        let elapsed = self.wall.elapsed();
        let server = Self::read(target, self.pid, self.clk_tck)?;
        let bench = ProcSample::read("self", self.clk_tck)?;
        let machine_us = target.machine_busy_us()?.saturating_sub(self.machine_us);
        let server_cpu_us = server.cpu_us.saturating_sub(self.server.cpu_us);
        let bench_cpu_us = bench.cpu_us.saturating_sub(self.bench.cpu_us);
        // The echo server may be this very process under test: count it once.
        let own = if self.pid == Some(std::process::id()) { 0 } else { bench_cpu_us };
        let others_us = machine_us.saturating_sub(server_cpu_us + own);
        Ok(Cost {
            elapsed,
            server_cpu_us,
            bench_cpu_us,
            others_cores: others_us as f64 / elapsed.as_micros().max(1) as f64,
            server_rss_kib: server.rss_kib,
        })
    }
}
