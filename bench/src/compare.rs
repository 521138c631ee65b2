//! A whole run: every selected scenario on pushgate and on the floor server
//! (`crate::floor`), started one after the other on the same machine, and
//! the ratio of each pushgate figure to the floor's next to the target.
//!
//! Order: pushgate's P9/P6/P1/P2/P4 (the report of earlier versions, printed
//! first and unchanged), the floor's on the same fleet shape (its loaded P4
//! at pushgate's rate, so both are measured at the same offered load), then
//! P3/P4a and P5 on each, then the plot's sweep when `--plot` is given.

use std::fmt::{self, Display, Formatter};
use std::path::PathBuf;

use anyhow::Context as _;

use crate::phases::{self, Phase};
use crate::plot::Sweep;
use crate::report::{Connect, Measured, Report};
use crate::scenarios::{self, Makespan, P4A_RATE, Scenarios};
use crate::target::{Spawn, Target};
use crate::{Args, Where};

/// Which server a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Gateway,
    Floor,
}

impl Display for Server {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Server::Gateway => "pushgate",
            Server::Floor => "floor",
        })
    }
}

/// Where `server` is started from: pushgate per `--server`, the floor as
/// this very executable's `serve` subcommand.
fn place(args: &Args, server: Server) -> anyhow::Result<Where> {
    match server {
        Server::Gateway => args.place(),
        Server::Floor => {
            let exe = std::env::current_exe().context("locating this executable")?;
            let writes = clap::ValueEnum::to_possible_value(&args.floor_writes).map(|v| v.get_name().to_string());
            let extra = ["--writes".to_string(), writes.unwrap_or_default()].to_vec();
            Ok(Where::Spawn { server: exe, extra })
        }
    }
}

/// Starts `server` (pushgate with `gateway_extra` added to its flags).
pub async fn spawn(args: &Args, server: Server, gateway_extra: &[String]) -> anyhow::Result<Target> {
    let Where::Spawn { server: path, mut extra } = place(args, server)? else {
        anyhow::bail!("the scenarios P3, P4a, P5 and the plot start their own servers: not with --attach");
    };
    if server == Server::Gateway {
        extra.extend_from_slice(gateway_extra);
    }
    Target::spawn(Spawn { server: &path, max_connections: args.connections + 64, extra_args: &extra }).await
}

/// Everything a run measured.
pub struct Outcome {
    pub gateway: Report,
    pub floor: Option<Report>,
    pub scenarios: Option<(Scenarios, Scenarios)>,
    pub sweep: Option<(PathBuf, Sweep)>,
    pub floor_writes: crate::floor::Writes,
}

/// Runs every selected scenario on pushgate, then the floor.
pub async fn run(args: &Args) -> anyhow::Result<Outcome> {
    let spawning = matches!(args.place()?, Where::Spawn { .. });
    let with_floor = args.floor && spawning;
    let mut gateway = phases::run(args, args.place()?).await?;
    if args.floor && !spawning {
        gateway.notes.push("the floor, P3, P4a, P5 and the plot need a gateway this program starts: skipped".into());
    }
    let floor = if with_floor {
        let mut floor_args = args.clone();
        floor_args.rate = gateway.loaded_rate;
        // The floor has no unary ingest, history or slow-consumer policy of
        // pushgate's, and one broker: only the fan-out shapes compare.
        floor_args.phases.retain(|p| matches!(p, Phase::P6 | Phase::P1 | Phase::P2 | Phase::P4));
        floor_args.more.broker_rows = false;
        let mut report = phases::run(&floor_args, place(args, Server::Floor)?).await?;
        report.gateway = format!("the floor server ({:?} writes), {}", args.floor_writes, report.gateway);
        Some(report)
    } else {
        None
    };
    let wanted = [Phase::P3, Phase::P4a, Phase::P5].iter().any(|p| args.phases.contains(p));
    let scenarios = if wanted && spawning {
        let on_gateway = scenarios::run(args, Server::Gateway).await?;
        let on_floor = if with_floor { scenarios::run(args, Server::Floor).await? } else { Scenarios::default() };
        Some((on_gateway, on_floor))
    } else {
        None
    };
    let sweep = match &args.plot {
        Some(path) => {
            let p1 = gateway.rows.iter().find(|m| m.name.starts_with("P1")).map(Measured::deliveries_per_sec);
            let sweep = crate::plot::sweep(args, p1, with_floor).await?;
            crate::plot::write_svg(path, &sweep).with_context(|| format!("writing {}", path.display()))?;
            Some((path.clone(), sweep))
        }
        None => None,
    };
    Ok(Outcome { gateway, floor, scenarios, sweep, floor_writes: args.floor_writes })
}

/// pushgate's figure, the floor's, and their ratio.
struct Pair {
    gateway: f64,
    floor: Option<f64>,
}

impl Pair {
    /// `figure` of pushgate's row, and of the floor's when there is one.
    fn of(gateway: &Measured, floor: Option<&Measured>, figure: fn(&Measured) -> f64) -> Self {
        Self { gateway: figure(gateway), floor: floor.map(figure) }
    }

    fn ratio(&self) -> String {
        match self.floor {
            Some(f) if f > 0.0 => format!("{:.2}×", self.gateway / f),
            _ => "-".into(),
        }
    }

    fn floor_text(&self, decimals: usize) -> String {
        self.floor.map_or("-".into(), |f| format!("{f:.decimals$}"))
    }
}

fn p50_us(m: &Measured) -> f64 {
    us(m.latency.p50)
}

fn p99_us(m: &Measured) -> f64 {
    us(m.latency.p99)
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn find<'a>(report: Option<&'a Report>, prefix: &str) -> Option<&'a Measured> {
    report?.rows.iter().find(|m| m.name.starts_with(prefix))
}

impl Display for Outcome {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.gateway)?;
        if let Some(floor) = &self.floor {
            writeln!(f, "\nfloor server: {}", floor.gateway)?;
            if let Some(c) = &floor.connect {
                writeln!(
                    f,
                    "floor P9: {} in {:.2} s; floor {:.0} CPU-µs per connection",
                    c.connections,
                    c.elapsed.as_secs_f64(),
                    c.cpu_us_per_connection()
                )?;
            }
            floor.table(f)?;
        }
        if let Some((gateway, floor)) = &self.scenarios {
            writeln!(f, "\nP3 / P4a / P5 (each on its own fleet):")?;
            scenario_table(f, "pushgate", gateway)?;
            if self.floor.is_some() {
                scenario_table(f, "floor", floor)?;
            }
        }
        match self.floor {
            Some(_) => writeln!(f, "\nagainst the floor (same run, same machine; ratio = pushgate / floor):")?,
            None => writeln!(f, "\nagainst the targets (the floor was not measured):")?,
        }
        self.versus(f)?;
        if let Some((path, sweep)) = &self.sweep {
            writeln!(f, "\nlatency against offered load ({}):", path.display())?;
            sweep.table(f)?;
        }
        Ok(())
    }
}

impl Outcome {
    fn versus(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let floor = self.floor.as_ref();
        writeln!(f, "| scenario | figure | pushgate | floor | ratio | target |")?;
        writeln!(f, "|---|---|---:|---:|---:|---|")?;
        let mut line = |name: &str, figure: &str, p: Pair, decimals: usize, target: &str| {
            writeln!(
                f,
                "| {name} | {figure} | {:.decimals$} | {} | {} | {target} |",
                p.gateway,
                p.floor_text(decimals),
                p.ratio()
            )
        };
        if let Some(c) = &self.gateway.connect {
            let other = floor.and_then(|r| r.connect.as_ref()).map(Connect::cpu_us_per_connection);
            let p = Pair { gateway: c.cpu_us_per_connection(), floor: other };
            line("P9 connect", "CPU-µs per connection", p, 1, "≤ 25 µs")?;
        }
        if let Some(g) = find(Some(&self.gateway), "P1") {
            let fl = find(floor, "P1");
            line(
                "P1 fan-out",
                "CPU-µs per delivery",
                Pair::of(g, fl, Measured::server_us_per_delivery),
                2,
                "≤ 1.1× floor",
            )?;
            line("P1 fan-out", "deliveries/s", Pair::of(g, fl, Measured::deliveries_per_sec), 0, "")?;
        }
        if let Some(g) = find(Some(&self.gateway), "P2") {
            let writes = format!("≤ 2.0 µs (floor: {:?} writes)", self.floor_writes);
            line(
                "P2 bursts",
                "CPU-µs per delivery",
                Pair::of(g, find(floor, "P2"), Measured::server_us_per_delivery),
                2,
                &writes,
            )?;
        }
        if let Some(g) = find(Some(&self.gateway), "P4 idle") {
            let fl = find(floor, "P4 idle");
            line("P4 idle", "p50 µs", Pair::of(g, fl, p50_us), 0, "")?;
            line("P4 idle", "p99 µs", Pair::of(g, fl, p99_us), 0, "")?;
        }
        if let Some(g) = find(Some(&self.gateway), "P4 at") {
            let (fl, name) = (find(floor, "P4 at"), g.name.as_str());
            line(name, "p50 µs", Pair::of(g, fl, p50_us), 0, "")?;
            line(name, "p99 µs", Pair::of(g, fl, p99_us), 0, "≤ 2000 µs")?;
            line(name, "p99.9 µs", Pair::of(g, fl, |m| us(m.latency.p999)), 0, "≤ 10000 µs")?;
        }
        if let Some((g, fl)) = &self.scenarios {
            let has_floor = floor.is_some();
            if let Some(m) = &g.p3 {
                let p = Pair::of(m, fl.p3.as_ref().filter(|_| has_floor), Measured::server_us_per_delivery);
                line("P3 HTTP fan-out", "CPU-µs per delivery", p, 2, "≤ 1.1× floor")?;
            }
            if let Some(m) = &g.p4a {
                let other = fl.p4a.as_ref().filter(|_| has_floor);
                let name = format!("P4a at {P4A_RATE:.0} pushes/s");
                line(&name, "p50 µs", Pair::of(m, other, p50_us), 0, "≤ 1.2× floor")?;
                line(&name, "p99 µs", Pair::of(m, other, p99_us), 0, "≤ 1.2× floor")?;
            }
            if let Some((_, span)) = &g.p5 {
                let other = fl.p5.as_ref().filter(|_| has_floor).map(|(_, s)| s);
                let p = Pair { gateway: us(span.p50()), floor: other.map(|s| us(s.p50())) };
                line("P5 one user", "makespan p50 µs", p, 0, "≤ 1.1× floor")?;
                let p = Pair { gateway: us(span.max()), floor: other.map(|s| us(s.max())) };
                line("P5 one user", "makespan max µs", p, 0, "")?;
            }
        }
        Ok(())
    }
}

/// One server's P3 / P4a / P5 rows, in the report's table format.
fn scenario_table(f: &mut Formatter<'_>, server: &str, s: &Scenarios) -> fmt::Result {
    writeln!(f, "{server}:")?;
    writeln!(
        f,
        "| phase | pushes acked | queued | received | s | deliveries/s | server CPU-µs/delivery | p50 µs | p99 µs | p99.9 µs | max µs | makespan p50 / max µs |"
    )?;
    writeln!(f, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    let rows =
        [(s.p3.as_ref(), None), (s.p4a.as_ref(), None), (s.p5.as_ref().map(|(m, _)| m), s.p5.as_ref().map(|(_, k)| k))];
    for (m, span) in rows {
        let Some(m) = m else { continue };
        let l = &m.latency;
        let span = span.map_or("-".into(), |k: &Makespan| format!("{:.0} / {:.0}", us(k.p50()), us(k.max())));
        writeln!(
            f,
            "| {} | {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {span} |",
            m.name,
            m.tally.replies,
            m.tally.delivered,
            m.received,
            m.elapsed.as_secs_f64(),
            m.deliveries_per_sec(),
            m.server_us_per_delivery(),
            us(l.p50),
            us(l.p99),
            us(l.p999),
            us(l.max)
        )?;
        if m.tally.failed > 0 || m.received < m.tally.delivered {
            let error = m.tally.first_error.as_deref().unwrap_or("-");
            writeln!(
                f,
                "{}: failed {} ({error}), queued {} but received {}",
                m.name, m.tally.failed, m.tally.delivered, m.received
            )?;
        }
    }
    Ok(())
}
