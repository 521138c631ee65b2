//! The real gateway binary as a child process, so its sockets are its own
//! (the test process holds only the client side) and it can be signalled or
//! killed (SIGTERM, `kill -9`, several nodes), and what `/proc` says about a
//! process: open files, resident memory, threads.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pushgate::proto::push_service_client::PushServiceClient;
use pushgate::proto::{OnlineRequest, StatsReply, StatsRequest};

use super::{PushClient, WAIT};

/// A process's readings from `/proc/<pid>`.
#[derive(Debug, Clone, Copy)]
pub struct Proc(pub u32);

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub fds: usize,
    pub rss_kib: u64,
    pub threads: u64,
}

impl Proc {
    /// The test process itself.
    pub fn me() -> Self {
        Self(std::process::id())
    }

    /// Open file descriptors (entries of `/proc/<pid>/fd`).
    pub fn fds(self) -> usize {
        let dir = format!("/proc/{}/fd", self.0);
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")).count()
    }

    fn status(self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.0);
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{path}: no {field}"));
        line[field.len()..].split_whitespace().next().and_then(|v| v.parse().ok()).expect("a number")
    }

    /// Resident memory in KiB (`VmRSS`).
    pub fn rss_kib(self) -> u64 {
        self.status("VmRSS:")
    }

    /// Threads (`Threads`).
    pub fn threads(self) -> u64 {
        self.status("Threads:")
    }

    pub fn read(self) -> Reading {
        Reading { fds: self.fds(), rss_kib: self.rss_kib(), threads: self.threads() }
    }
}

/// This process's soft limit on open files (the gateway child inherits it).
pub fn open_file_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("Max open files");
    line["Max open files".len()..].split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(usize::MAX)
}

/// `pushgate serve` started for one test, on loopback port 0, killed on drop.
pub struct GatewayProcess {
    child: Child,
    pub public: SocketAddr,
    pub internal: SocketAddr,
    /// Log lines at WARN and above (but the expected `--auth none` one),
    /// printed by [`GatewayProcess::print_warnings`].
    warnings: Arc<Mutex<Vec<String>>>,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GatewayProcess {
    /// Starts the binary with `args` after the loopback addresses, and waits
    /// for its "pushgate listening" line.
    // The child is reaped by `Drop` (or `kill_hard`), which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    pub fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .args(["--public-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pushgate");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&warnings);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str::<serde_json::Value>(&line).unwrap_or_default();
                let expected = value["fields"]["message"].as_str().is_some_and(|m| m.starts_with("--auth none"));
                if matches!(value["level"].as_str(), Some("WARN" | "ERROR")) && !expected {
                    kept.lock().unwrap_or_else(|e| e.into_inner()).push(line.clone());
                }
                let _ = tx.send(value);
            }
        });
        let deadline = Instant::now() + WAIT;
        let addrs = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(value) = rx.recv_timeout(left) else { break None };
            let fields = &value["fields"];
            if fields["message"] == "pushgate listening" {
                let addr = |name: &str| fields[name].as_str().and_then(|a| a.parse().ok());
                break addr("public_addr").zip(addr("internal_addr"));
            }
        };
        let Some((public, internal)) = addrs else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no listening line from the gateway");
        };
        // The reader thread goes on (a full pipe would stall the gateway),
        // keeping only the warnings.
        Self { child, public, internal, warnings }
    }

    /// `ws://127.0.0.1:PORT/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.public)
    }

    /// Sends SIGKILL: the process dies with no chance to clean up.
    pub fn kill_hard(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    pub fn proc(&self) -> Proc {
        Proc(self.child.id())
    }

    /// A gRPC client on its own HTTP/2 connection.
    pub async fn grpc(&self) -> PushClient {
        let connect = PushServiceClient::connect(format!("http://{}", self.internal));
        tokio::time::timeout(WAIT, connect).await.expect("grpc connect in time").expect("grpc connect")
    }

    pub async fn stats(&self, client: &mut PushClient) -> StatsReply {
        let reply = tokio::time::timeout(WAIT, client.stats(StatsRequest {})).await.expect("stats in time");
        reply.expect("stats").into_inner()
    }

    pub async fn online(&self, client: &mut PushClient, user: &str) -> u32 {
        let request = OnlineRequest { user_ids: vec![user.to_owned()] };
        let reply = tokio::time::timeout(WAIT, client.online(request)).await.expect("online in time");
        reply.expect("online").into_inner().connections.get(user).copied().unwrap_or(0)
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn exited(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            // A child's exit has no event to wait on here: poll it.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Prints what the gateway logged at WARN and above (at most 20 lines).
    pub fn print_warnings(&self) {
        let warnings = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
        if !warnings.is_empty() {
            println!("gateway warnings ({}):", warnings.len());
            for line in warnings.iter().take(20) {
                println!("  {line}");
            }
        }
    }
}
