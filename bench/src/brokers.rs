//! The broker rows (`--broker-rows`): P1 once more on a fresh single-node
//! gateway with `--broker memory`, and again with `--broker REDIS_URL` (a
//! key prefix of its own) when that Redis answers `PING` — so one table
//! shows what the Redis broker costs one node. Each row opens its own fleet
//! of `--connections` and the gateway is killed after its row.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::fleet::{self, Shared};
use crate::phases::{measure, wait_registered};
use crate::producer::{Load, Producer};
use crate::report::Report;
use crate::target::{Spawn, Target};
use crate::{Args, Where};

/// Adds a P1 row per broker to `report`; a Redis that does not answer is a
/// note, not a failure.
pub async fn rows(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let Where::Spawn { server, extra } = args.place()? else {
        report.notes.push("--broker-rows skipped: it starts gateways of its own, not with --attach".into());
        return Ok(());
    };
    if extra.iter().any(|a| a.starts_with("--broker")) {
        report.notes.push("--broker-rows: a --server-arg=--broker… is replaced in the broker rows".into());
    }
    let extra: Vec<String> = extra.into_iter().filter(|a| !a.starts_with("--broker")).collect();
    let url = &args.more.redis_url;
    let mut brokers = vec![("memory".to_string(), vec!["--broker=memory".to_string()])];
    match ping(url).await {
        Ok(()) => {
            let prefix = format!("--broker-prefix=pushgate-bench-{}-{}", std::process::id(), unique());
            brokers.push((url.clone(), vec![format!("--broker={url}"), prefix]));
        }
        Err(e) => report.notes.push(format!("broker row for {url} skipped: {e:#}")),
    }
    for (label, broker_args) in brokers {
        let args_of_row: Vec<String> = extra.iter().cloned().chain(broker_args).collect();
        let spawn = Spawn { server: &server, max_connections: args.connections + 64, extra_args: &args_of_row };
        let mut target = Target::spawn(spawn).await?;
        let row = one_row(args, &mut target, &label).await;
        target.stop();
        report.rows.push(row?);
    }
    Ok(())
}

/// Opens a fleet on `target` and measures P1 on it.
async fn one_row(args: &Args, target: &mut Target, label: &str) -> anyhow::Result<crate::report::Measured> {
    eprintln!("broker {label}: {} connections, then P1 ...", args.connections);
    let shared = Shared::new();
    fleet::open(target.public, args.connections, args.connect_concurrency, args.mode, &shared).await?;
    let producer = Producer::for_fleet(args, target.internal, &shared).await?;
    wait_registered(&producer, args.connections).await?;
    let load = Load::flat_out(args, 1);
    let name = format!("P1 fan-out, one node, broker {label}");
    // A cluster broker's reply counts no deliveries (they happen through the
    // broker after the reply): every push of P1 is one frame to one
    // connection, so the row waits for as many frames as pushes.
    let work = async {
        let mut tally = producer.run(load).await?;
        tally.delivered = tally.delivered.max(tally.replies - tally.failed);
        anyhow::Ok(tally)
    };
    measure(&name, target, &producer, work).await
}

/// Answers when the Redis at `url` (on loopback) says `+PONG` to `PING`.
async fn ping(url: &str) -> anyhow::Result<()> {
    let addr = redis_addr(url)?;
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).await?;
        anyhow::ensure!(buf[..n].starts_with(b"+PONG"), "answered {:?}", String::from_utf8_lossy(&buf[..n]));
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(2), attempt).await.map_err(|_| anyhow!("no answer from {addr}"))?
}

/// `redis://127.0.0.1:6379[/DB]` → 127.0.0.1:6379. Only loopback: every
/// byte of the benchmark stays on this machine.
fn redis_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.strip_prefix("redis://").ok_or_else(|| anyhow!("`{url}` is not a redis:// URL"))?;
    let host_port = rest.split('/').next().unwrap_or(rest);
    let host_port = host_port.replace("localhost", "127.0.0.1");
    let addr: SocketAddr = host_port.parse().map_err(|_| anyhow!("`{url}` needs an IP address and port"))?;
    if !addr.ip().is_loopback() {
        bail!("`{url}` is not on loopback: the benchmark talks to 127.0.0.1 only");
    }
    Ok(addr)
}

/// Nanoseconds of the wall clock, to tell one run's key prefix from another's.
fn unique() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_addresses() {
        assert_eq!(redis_addr("redis://127.0.0.1:6379/2").ok(), "127.0.0.1:6379".parse().ok());
        assert_eq!(redis_addr("redis://localhost:6380").ok(), "127.0.0.1:6380".parse().ok());
        assert!(redis_addr("redis://10.0.0.1:6379").is_err());
        assert!(redis_addr("nats://127.0.0.1:4222").is_err());
    }

    #[tokio::test]
    async fn unreachable_redis_is_an_error_not_a_hang() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a port");
        assert!(ping(&format!("redis://{free}")).await.is_err());
    }
}
