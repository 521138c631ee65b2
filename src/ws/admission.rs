//! The public listener's admission limits (docs/protocol.md, "Limits"):
//! connections on this
//! node and per IP address (over either, the upgrade completes and the
//! session closes with 4003), and memory shedding (over `--max-memory`, new
//! upgrades get HTTP 503 with `Retry-After`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the resident memory is sampled for shedding.
const MEMORY_SAMPLE: Duration = Duration::from_millis(100);

/// The count of upgraded connections, overall and per IP.
pub(super) struct Sessions {
    live: AtomicUsize,
    max: usize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// 0: no per-IP limit.
    max_per_ip: usize,
}

/// One counted session; uncounted when dropped.
pub(super) struct SessionSlot<'a> {
    sessions: &'a Sessions,
    ip: Option<IpAddr>,
}

impl Sessions {
    pub(super) fn new(max: usize, max_per_ip: usize) -> Self {
        Self { live: AtomicUsize::new(0), max, per_ip: Mutex::new(HashMap::new()), max_per_ip }
    }

    /// A slot for a connection from `ip`, or `None` when a limit is reached.
    pub(super) fn acquire(&self, ip: IpAddr) -> Option<SessionSlot<'_>> {
        let before = self.live.fetch_add(1, Ordering::AcqRel);
        let mut slot = SessionSlot { sessions: self, ip: None };
        if before >= self.max {
            tracing::debug!(max = self.max, "connection refused: --max-connections reached");
            return None;
        }
        if self.max_per_ip > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = per_ip.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                tracing::debug!(%ip, max = self.max_per_ip, "connection refused: --max-connections-per-ip reached");
                return None;
            }
            *n += 1;
            slot.ip = Some(ip);
        }
        Some(slot)
    }
}

impl Drop for SessionSlot<'_> {
    fn drop(&mut self) {
        self.sessions.live.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut per_ip = self.sessions.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

/// The process's resident memory, sampled by one task, against a cap.
pub(super) struct MemoryWatch {
    rss: AtomicU64,
    max: u64,
}

impl MemoryWatch {
    /// A watch with cap `max` bytes (0: never over).
    pub(super) fn new(max: u64) -> Self {
        Self { rss: AtomicU64::new(resident_bytes().unwrap_or(0)), max }
    }

    /// True while the last sample is above the cap.
    pub(super) fn over(&self) -> bool {
        self.max > 0 && self.rss.load(Ordering::Relaxed) > self.max
    }

    /// Samples until `shutdown`; returns at once when there is no cap.
    pub(super) async fn run(&self, shutdown: CancellationToken) {
        if self.max == 0 {
            return;
        }
        let mut tick = tokio::time::interval(MEMORY_SAMPLE);
        while shutdown.run_until_cancelled(tick.tick()).await.is_some() {
            if let Some(rss) = resident_bytes() {
                self.rss.store(rss, Ordering::Relaxed);
            }
        }
    }
}

/// Resident set size of this process, from `/proc/self/status` (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_and_global_limits_release_on_drop() {
        let sessions = Sessions::new(3, 2);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let a1 = sessions.acquire(a).expect("a1");
        let a2 = sessions.acquire(a).expect("a2");
        assert!(sessions.acquire(a).is_none(), "third from one IP");
        let b1 = sessions.acquire(b).expect("b1");
        assert!(sessions.acquire(b).is_none(), "global limit");
        drop(a1);
        assert!(sessions.acquire(a).is_some(), "released");
        drop((a2, b1));
        assert!(sessions.per_ip.lock().expect("lock").is_empty());
    }

    #[test]
    fn memory_watch_reads_rss() {
        assert!(resident_bytes().is_some_and(|b| b > 0));
        assert!(MemoryWatch::new(1).over(), "any process is above one byte");
        assert!(!MemoryWatch::new(0).over(), "0 means no cap");
    }
}
