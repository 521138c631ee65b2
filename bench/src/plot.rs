//! Latency against offered load: pushgate and the floor each on a fresh
//! fleet of `--connections` (one per user, `--mode`), pushed round-robin at
//! each rate of `--sweep` for `--sweep-duration`; push→receive p50 and p99
//! per rate, drawn as a hand-written SVG (log latency axis, linear load axis).

use std::fmt::{self, Formatter, Write as _};
use std::path::Path;
use std::time::Instant;

use crate::Args;
use crate::compare::Server;
use crate::phases::measure;
use crate::producer::Load;
use crate::scenarios::fleet_on;

/// One rate of the sweep on one server.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    /// Pushes per second offered.
    pub offered: f64,
    /// Deliveries per second received.
    pub achieved: f64,
    pub p50_ns: u64,
    pub p99_ns: u64,
}

/// The sweep on both servers (the floor's empty without it).
#[derive(Debug, Default)]
pub struct Sweep {
    pub gateway: Vec<Point>,
    pub floor: Vec<Point>,
    /// What was measured, under the chart's title.
    pub caption: String,
}

/// The offered rates: fractions of pushgate's P1 figure, or pushes/s.
fn rates(args: &Args, p1: Option<f64>) -> Vec<f64> {
    let base = p1.unwrap_or(50_000.0);
    args.sweep.iter().map(|&x| if x <= 1.0 { x * base } else { x }).filter(|r| *r >= 1.0).collect()
}

/// Runs the sweep on pushgate, then on the floor.
pub async fn sweep(args: &Args, p1: Option<f64>, with_floor: bool) -> anyhow::Result<Sweep> {
    let rates = rates(args, p1);
    let caption = format!(
        "{} connections ({:?} mode, one user each), round-robin gRPC PushStream pushes, {:?} per rate; {}",
        args.connections,
        args.mode,
        args.sweep_duration,
        crate::report::utc_now()
    );
    let mut out = Sweep { gateway: on(args, Server::Gateway, &rates).await?, floor: Vec::new(), caption };
    if with_floor {
        out.floor = on(args, Server::Floor, &rates).await?;
    }
    Ok(out)
}

async fn on(args: &Args, server: Server, rates: &[f64]) -> anyhow::Result<Vec<Point>> {
    let (mut target, shared, _) = fleet_on(args, server, args.connections, args.mode, &[]).await?;
    let producer = crate::producer::Producer::for_fleet(args, target.internal, &shared).await?;
    let mut points = Vec::with_capacity(rates.len());
    for &rate in rates {
        eprintln!("sweep ({server}): {rate:.0} pushes/s for {:?} ...", args.sweep_duration);
        let secs = args.sweep_duration.as_secs_f64();
        let deadline = Instant::now() + args.sweep_duration * 2;
        let load = Load::paced(args, rate, secs, deadline);
        let m = measure("sweep", &mut target, &producer, producer.run(load)).await?;
        points.push(Point {
            offered: rate,
            achieved: m.deliveries_per_sec(),
            p50_ns: m.latency.p50,
            p99_ns: m.latency.p99,
        });
    }
    crate::scenarios::finish(target, &shared).await;
    Ok(points)
}

impl Sweep {
    /// The points as a table.
    pub fn table(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(f, "| server | offered pushes/s | received/s | p50 µs | p99 µs |")?;
        writeln!(f, "|---|---:|---:|---:|---:|")?;
        for (server, points) in [("pushgate", &self.gateway), ("floor", &self.floor)] {
            for p in points {
                let (p50, p99) = (p.p50_ns as f64 / 1e3, p.p99_ns as f64 / 1e3);
                writeln!(f, "| {server} | {:.0} | {:.0} | {p50:.0} | {p99:.0} |", p.offered, p.achieved)?;
            }
        }
        Ok(())
    }
}

/// Writes the sweep as an SVG.
pub fn write_svg(path: &Path, sweep: &Sweep) -> std::io::Result<()> {
    std::fs::write(path, svg(sweep))
}

const W: f64 = 760.0;
const H: f64 = 460.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 180.0;
const TOP: f64 = 48.0;
const BOTTOM: f64 = 60.0;

/// The chart: x = offered pushes/s (linear from 0), y = latency (log10 µs,
/// whole decades).
pub fn svg(sweep: &Sweep) -> String {
    let all: Vec<&Point> = sweep.gateway.iter().chain(&sweep.floor).collect();
    let x_max = nice_ceiling(all.iter().map(|p| p.offered).fold(1.0, f64::max));
    let lat = |ns: u64| (ns as f64 / 1e3).max(1.0);
    let lows = all.iter().map(|p| lat(p.p50_ns)).fold(f64::INFINITY, f64::min);
    let highs = all.iter().map(|p| lat(p.p99_ns)).fold(1.0, f64::max);
    let (d_lo, d_hi) = (lows.min(highs).log10().floor(), highs.log10().ceil().max(lows.log10().floor() + 1.0));
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |v: f64| LEFT + v / x_max * pw;
    let y = |us: f64| TOP + ph - (us.log10() - d_lo) / (d_hi - d_lo) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="14">push→receive latency against offered load (pushgate-bench)</text>
<text x="{}" y="34" text-anchor="middle" font-size="10" fill="#555">{}</text>
"##,
        LEFT + pw / 2.0,
        LEFT + pw / 2.0,
        sweep.caption
    );
    for d in (d_lo as i32)..=(d_hi as i32) {
        let yy = y(10f64.powi(d));
        let label = if d >= 3 { format!("{} ms", 10f64.powi(d - 3)) } else { format!("{} µs", 10f64.powi(d)) };
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            yy + 4.0
        );
    }
    for i in 0..=5 {
        let v = x_max * f64::from(i) / 5.0;
        let xx = x(v);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#eee"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 18.0,
            thousands(v)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">offered load, pushes/s (one delivery each)</text>
<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">latency (log scale)</text>"##,
        LEFT + pw / 2.0,
        H - 14.0,
        TOP + ph / 2.0
    );
    let series = [
        ("pushgate p99", &sweep.gateway, true, "#c0392b", ""),
        ("pushgate p50", &sweep.gateway, false, "#c0392b", r#" stroke-dasharray="6 4""#),
        ("floor p99", &sweep.floor, true, "#2c7fb8", ""),
        ("floor p50", &sweep.floor, false, "#2c7fb8", r#" stroke-dasharray="6 4""#),
    ];
    for (k, (name, points, p99, color, dash)) in series.into_iter().enumerate() {
        if points.is_empty() {
            continue;
        }
        let at = |p: &Point| (x(p.offered), y(lat(if p99 { p.p99_ns } else { p.p50_ns })));
        let line: Vec<String> = points.iter().map(at).map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
            line.join(" ")
        );
        for p in points.iter() {
            let (a, b) = at(p);
            let _ = writeln!(s, r#"<circle cx="{a:.1}" cy="{b:.1}" r="3" fill="{color}"/>"#);
        }
        let ly = TOP + 10.0 + k as f64 * 20.0;
        let lx = LEFT + pw + 16.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{name}</text>"#,
            lx + 28.0,
            lx + 34.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The smallest 1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 × 10^k at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    let decade = 10f64.powf(v.log10().floor());
    [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * decade)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * decade)
}

/// `45000` → `45k`.
fn thousands(v: f64) -> String {
    if v >= 1000.0 { format!("{}k", (v / 1000.0 * 10.0).round() / 10.0) } else { format!("{v:.0}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_both_servers() {
        let point = |offered, p50, p99| Point { offered, achieved: offered, p50_ns: p50, p99_ns: p99 };
        let sweep = Sweep {
            gateway: vec![point(5_000.0, 150_000, 900_000), point(40_000.0, 900_000, 4_000_000)],
            floor: vec![point(5_000.0, 80_000, 300_000), point(40_000.0, 200_000, 1_000_000)],
            caption: "test".into(),
        };
        let svg = svg(&sweep);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.contains("floor p99") && svg.contains("pushgate p50"));
        assert_eq!(nice_ceiling(42_000.0), 50_000.0);
    }
}
