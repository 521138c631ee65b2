//! The reference of P7: a bare tonic server implementing the gateway's own
//! `pushgate.v1.PushService` (the generated types of `pushgate::proto`) whose
//! `Push` answers a fixed reply at once. It runs as a child process,
//! `pushgate-bench echo --addr 127.0.0.1:0`, so its CPU time is read from
//! `/proc` exactly like the gateway's; it prints `listening ADDR` on stdout
//! and exits when its stdin closes (the load generator is gone) or it is
//! killed.
//!
//! Under `cargo test` the same server runs inside the test process instead
//! (the test harness is not `pushgate-bench`, so it cannot be re-executed).

use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use futures_util::{Stream, StreamExt as _};
use pushgate::proto::push_service_server::{PushService, PushServiceServer};
use pushgate::proto::{
    BroadcastReply, BroadcastRequest, DisconnectReply, DisconnectRequest, OnlineReply, OnlineRequest, PushBatchReply,
    PushBatchRequest, PushReply, PushRequest, StatsReply, StatsRequest,
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming};

/// The first argument that runs this program as the echo server.
const SUBCOMMAND: &str = "echo";

/// The reply every push gets: as if queued to one connection, seq 1.
fn reply(request_id: String) -> PushReply {
    PushReply { delivered: 1, seq: 1, request_id, ..Default::default() }
}

/// `PushService` with nothing behind it: the cost of tonic, HTTP/2 and prost
/// alone. Only `Push` and `PushStream` are served; the rest is UNIMPLEMENTED.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

type Replies = Pin<Box<dyn Stream<Item = Result<PushReply, Status>> + Send>>;

#[tonic::async_trait]
impl PushService for Echo {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushReply>, Status> {
        Ok(Response::new(reply(request.into_inner().request_id)))
    }

    type PushStreamStream = Replies;

    async fn push_stream(&self, request: Request<Streaming<PushRequest>>) -> Result<Response<Replies>, Status> {
        let replies = request.into_inner().map(|next| next.map(|r| reply(r.request_id)));
        Ok(Response::new(Box::pin(replies)))
    }

    async fn push_batch(&self, _: Request<PushBatchRequest>) -> Result<Response<PushBatchReply>, Status> {
        Err(Status::unimplemented("echo serves Push and PushStream only"))
    }

    async fn broadcast(&self, _: Request<BroadcastRequest>) -> Result<Response<BroadcastReply>, Status> {
        Err(Status::unimplemented("echo serves Push and PushStream only"))
    }

    async fn disconnect(&self, _: Request<DisconnectRequest>) -> Result<Response<DisconnectReply>, Status> {
        Err(Status::unimplemented("echo serves Push and PushStream only"))
    }

    async fn online(&self, _: Request<OnlineRequest>) -> Result<Response<OnlineReply>, Status> {
        Err(Status::unimplemented("echo serves Push and PushStream only"))
    }

    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<StatsReply>, Status> {
        Err(Status::unimplemented("echo serves Push and PushStream only"))
    }
}

/// Serves [`Echo`] on `listener` until the process ends.
pub async fn serve(listener: TcpListener) -> anyhow::Result<()> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(PushServiceServer::new(Echo))
        .serve_with_incoming(incoming)
        .await
        .context("echo server")
}

/// Runs the echo server when the command line asks for it
/// (`pushgate-bench echo [--addr ADDR]`); `None` otherwise.
pub fn main_if_asked() -> Option<ExitCode> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some(SUBCOMMAND) {
        return None;
    }
    let addr = match (args.next().as_deref(), args.next()) {
        (None, _) => "127.0.0.1:0".to_string(),
        (Some("--addr"), Some(addr)) => addr,
        _ => {
            eprintln!("usage: pushgate-bench echo [--addr 127.0.0.1:PORT]");
            return Some(ExitCode::FAILURE);
        }
    };
    match run_child(&addr) {
        Ok(()) => Some(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("pushgate-bench echo: {e:#}");
            Some(ExitCode::FAILURE)
        }
    }
}

/// The child's life: bind, say where, serve until stdin closes.
fn run_child(addr: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let addr: SocketAddr = addr.parse().with_context(|| format!("--addr `{addr}`"))?;
        if !addr.ip().is_loopback() {
            return Err(anyhow!("the echo server listens on loopback only, not {addr}"));
        }
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {}", listener.local_addr()?)?;
        out.flush()?;
        drop(out);
        // The parent holds our stdin: its end means the parent is gone.
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            std::process::exit(0);
        });
        serve(listener).await
    })
}

/// A running echo server: the child process (or, under test, a task of
/// this process) and where it listens.
pub struct EchoServer {
    pub addr: SocketAddr,
    /// Whose `/proc` entry counts its CPU time.
    pub pid: u32,
    child: Option<tokio::process::Child>,
    #[cfg(test)]
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl EchoServer {
    /// Starts `pushgate-bench echo` as a child and waits (10 s at most) for
    /// the address it prints. The child is killed on drop.
    #[cfg(not(test))]
    pub async fn start() -> anyhow::Result<Self> {
        use tokio::io::AsyncBufReadExt as _;
        let exe = std::env::current_exe().context("locating this executable")?;
        let mut child = tokio::process::Command::new(exe)
            .args([SUBCOMMAND, "--addr", "127.0.0.1:0"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the echo server")?;
        let pid = child.id().ok_or_else(|| anyhow!("the echo server exited at once"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout of the echo server"))?;
        let mut line = String::new();
        let mut stdout = tokio::io::BufReader::new(stdout);
        let read = stdout.read_line(&mut line);
        tokio::time::timeout(std::time::Duration::from_secs(10), read)
            .await
            .map_err(|_| anyhow!("the echo server said nothing within 10 s"))??;
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| anyhow!("the echo server said {line:?}, not `listening ADDR`"))?;
        Ok(Self { addr, pid, child: Some(child) })
    }

    /// Under test: the echo server as a task of this process.
    #[cfg(test)]
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(serve(listener));
        Ok(Self { addr, pid: std::process::id(), child: None, task })
    }

    /// Fails when the echo process has gone.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            return Err(anyhow!("the echo server exited ({status})"));
        }
        Ok(())
    }

    /// Kills the child (or ends the task) and reaps it.
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        #[cfg(test)]
        self.task.abort();
    }
}
