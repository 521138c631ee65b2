//! The gateway binary as a child process (for SIGTERM, `kill -9` and
//! several-node tests), with the addresses it logged.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use super::{PushClient, WAIT};

/// A running `pushgate` process; killed when dropped.
pub struct GatewayProcess {
    pub child: Child,
    /// `127.0.0.1:PORT` of the public listener.
    pub public: String,
    /// `127.0.0.1:PORT` of the internal listener.
    pub internal: String,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GatewayProcess {
    /// Starts `pushgate` on 127.0.0.1:0 with `args` added, and waits for its
    /// "listening" log line.
    // The child is reaped by `Drop` (or `kill_hard`), which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    pub fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .args(["--public-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pushgate");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + WAIT;
        loop {
            let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("listening line");
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            let fields = &v["fields"];
            if fields["message"] == "pushgate listening" {
                let public = fields["public_addr"].as_str().expect("public_addr").to_owned();
                let internal = fields["internal_addr"].as_str().expect("internal_addr").to_owned();
                return GatewayProcess { child, public, internal };
            }
        }
    }

    /// `ws://127.0.0.1:PORT/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.public)
    }

    /// A gRPC client of its PushService.
    pub async fn grpc(&self) -> PushClient {
        PushClient::connect(format!("http://{}", self.internal)).await.expect("grpc connect")
    }

    /// Sends SIGKILL: the process dies with no chance to clean up.
    pub fn kill_hard(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }
}
