//! `pushgate`: parse the configuration, start tracing, bind, run. Also the
//! `push` ops client and `check-config`.

use std::process::ExitCode;

mod cli;

/// jemalloc, not the C library's malloc. A push's payload stays in its
/// user's history until that user's 64th push after it (`--history-size`),
/// so what a push frees is cold by then, and glibc's malloc walks such
/// freed small blocks again whenever a larger request comes (its fastbin
/// consolidation); the allocations that follow are handed cold memory too.
/// With jemalloc, the same bursts of pushes cost about a quarter less CPU per
/// delivery and an idle connection no more memory (BENCHMARKS.md, "jemalloc,
/// and the history budget's pause").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pushgate::config::{Config, LogFormat, Settings};
use pushgate::server;

#[derive(Parser)]
#[command(name = "pushgate", version, about = "A push gateway: gRPC in, WebSocket out.")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve(Settings),
    /// Check the configuration and print it resolved; exit 1 if invalid.
    CheckConfig(Settings),
    /// Push one message over gRPC (an ops client).
    Push(cli::PushArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.settings),
        Some(Command::Serve(settings)) => serve(settings),
        Some(Command::CheckConfig(settings)) => check_config(settings),
        Some(Command::Push(args)) => runtime().and_then(|rt| rt.block_on(cli::push(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn check_config(settings: Settings) -> anyhow::Result<()> {
    let config = settings.resolve()?;
    println!("{config:#?}");
    Ok(())
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    let config = settings.resolve()?;
    init_tracing(&config)?;
    runtime()?.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    report_open_file_limit(config.public.max_connections);
    let auth = pushgate::authenticators::from_config(&config.auth)?;
    let listeners = server::Listeners::bind(&config).context("binding the listeners")?;
    let running = server::start(config, listeners, auth, shutdown_signal()).await?;
    running.wait().await;
    Ok(())
}

fn init_tracing(config: &Config) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => EnvFilter::try_new(f),
        _ => EnvFilter::try_new(&config.log),
    }
    .context("log filter")?;
    // Colours only on a terminal: a log file or a journal gets plain text
    // (and each connection's span fields are formatted without escapes).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Reports the open-file limit against --max-connections at start-up.
fn report_open_file_limit(max_connections: usize) {
    let limit = std::fs::read_to_string("/proc/self/limits").ok().and_then(|text| {
        text.lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3).and_then(|n| n.parse::<usize>().ok()))
    });
    match limit {
        Some(limit) if limit < max_connections + 64 => tracing::warn!(
            open_file_limit = limit,
            max_connections,
            "the open-file limit is below --max-connections: connections will be refused before the limit"
        ),
        Some(limit) => tracing::info!(open_file_limit = limit, max_connections, "open-file limit"),
        None => tracing::info!(max_connections, "open-file limit unknown"),
    }
}
