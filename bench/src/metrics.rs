//! The gateway's own view of latency: its `push_write_latency` histogram
//! (push accepted → frame written to the socket) from `GET /metrics` on the
//! internal port. Read before and after a phase, the difference tells how
//! much of the push→receive latency the clients saw was spent inside the
//! gateway rather than in the kernel, the scheduler or this generator.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Cumulative counts per bucket upper bound (seconds), `+Inf` last.
#[derive(Debug, Clone, Default)]
pub struct WriteLatency {
    buckets: Vec<(f64, u64)>,
}

/// Bucket upper bounds, in microseconds, under which half and 99 % of the
/// writes of a phase fell.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub p50_us: f64,
    pub p99_us: f64,
}

impl WriteLatency {
    /// Scrapes the gateway; `None` when it has no such histogram (yet).
    pub async fn read(internal: SocketAddr) -> Option<Self> {
        let text = scrape(internal).await?;
        let buckets: Vec<(f64, u64)> = text.lines().filter_map(bucket).collect();
        (!buckets.is_empty()).then_some(Self { buckets })
    }

    /// The percentile bounds of what was observed between `before` and `self`.
    pub fn since(&self, before: &WriteLatency) -> Option<Bounds> {
        let counts: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .map(|&(le, n)| {
                let was = before.buckets.iter().find(|(l, _)| *l == le).map_or(0, |(_, n)| *n);
                (le, n.saturating_sub(was))
            })
            .collect();
        let total = counts.iter().map(|(_, n)| *n).max()?;
        if total == 0 {
            return None;
        }
        let bound = |q: f64| {
            let rank = (q * total as f64).ceil() as u64;
            counts.iter().find(|(_, n)| *n >= rank).map_or(f64::INFINITY, |(le, _)| le * 1e6)
        };
        Some(Bounds { p50_us: bound(0.50), p99_us: bound(0.99) })
    }
}

/// `..._push_write_latency_seconds_bucket{le="0.0001"} 123` → (0.0001, 123).
fn bucket(line: &str) -> Option<(f64, u64)> {
    if line.starts_with('#') || !line.contains("push_write_latency") {
        return None;
    }
    let (_, rest) = line.split_once("_bucket{")?;
    let (_, after_le) = rest.split_once("le=\"")?;
    let (le, tail) = after_le.split_once('"')?;
    let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
    let count = tail.rsplit_once('}')?.1.split_whitespace().next()?.parse::<f64>().ok()?;
    Some((le, count as u64))
}

/// One sample of the gateway's `/metrics`: the value of the line naming
/// exactly `series` (with its labels, e.g. `pushgate_history_bytes` or
/// `pushgate_disconnects_total{code="4000"}`), `None` when absent.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.split_whitespace().next()?.parse().ok())
}

/// The text of `GET /metrics` on the internal port, or `None`.
pub async fn scrape(internal: SocketAddr) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(3), get_metrics(internal)).await.ok()?
}

async fn get_metrics(addr: SocketAddr) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut body = Vec::new();
    stream.read_to_end(&mut body).await.ok()?;
    let text = String::from_utf8_lossy(&body).into_owned();
    text.starts_with("HTTP/1.1 200").then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_diffs() {
        let at = |a: u64, b: u64, c: u64| WriteLatency { buckets: vec![(0.00005, a), (0.0001, b), (f64::INFINITY, c)] };
        assert_eq!(bucket(r#"pushgate_push_write_latency_seconds_bucket{le="0.0001"} 7"#), Some((0.0001, 7)));
        let b = at(10, 100, 100).since(&at(10, 10, 10)).expect("writes");
        assert_eq!((b.p50_us, b.p99_us), (100.0, 100.0));
    }

    #[test]
    fn finds_one_series() {
        let text = "# TYPE pushgate_history_bytes gauge\npushgate_history_bytes 1700\npushgate_history_bytes_x 3\n\
                    pushgate_disconnects_total{code=\"4000\"} 12\n";
        assert_eq!(sample(text, "pushgate_history_bytes"), Some(1700.0));
        assert_eq!(sample(text, r#"pushgate_disconnects_total{code="4000"}"#), Some(12.0));
        assert_eq!(sample(text, "pushgate_history_evictions_total"), None);
    }
}
