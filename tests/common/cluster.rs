//! Helpers of the several-node tests (`tests/cluster.rs` over Redis,
//! `tests/cluster_nats.rs` over NATS): nodes as processes, tabs, and
//! waiting on what a node reports.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use pushgate::proto::OnlineRequest;
use serde_json::{Value, json};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use super::metrics::{Scrape, parse_metrics};
use super::process::GatewayProcess;
use super::ws::{ENVELOPE, Ws, next_json, send_json, try_connect};
use super::{PushClient, WAIT};

/// A prefix no other test (or earlier run) uses.
pub fn prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("test-{}-{nanos:x}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Fails at once, with the reason, when `what` (the machine's Redis or
/// NATS) does not listen on `addr`.
pub fn require(what: &str, addr: &str) {
    let addr = addr.parse().expect("addr");
    if let Err(e) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        panic!("these tests need {what} on {addr} ({e}); it is started with the machine");
    }
}

/// A node of the cluster `prefix` on `broker`.
pub fn node(broker: &str, prefix: &str, id: &str, extra: &[&str]) -> GatewayProcess {
    let mut args = vec!["--broker", broker, "--broker-prefix", prefix, "--node-id", id];
    args.extend_from_slice(extra);
    GatewayProcess::spawn(&args)
}

/// An envelope-mode tab of `user` on event `e`, registered (with `since` and
/// `epoch` when given); returns it with its `registered` message.
pub async fn tab(node: &GatewayProcess, user: &str, since: Option<(u64, &str)>) -> (Ws, Value) {
    let mut ws = try_connect(&node.ws_url(), &[ENVELOPE]).await.expect("connect");
    send_json(&mut ws, register(user, since)).await;
    let registered = next_json(&mut ws).await;
    assert_eq!(registered["type"], "registered", "{registered}");
    (ws, registered)
}

/// The register message of a tab of `user` on event `e`, resuming after
/// `since` (seq, epoch) when given.
fn register(user: &str, since: Option<(u64, &str)>) -> Value {
    let mut register = json!({"token": user, "events": ["e"]});
    if let Some((seq, epoch)) = since {
        register["since"] = json!(seq);
        register["epoch"] = json!(epoch);
    }
    register
}

/// [`tab`], as a client that follows the close-code table: a 1011 (the
/// broker still recovering, e.g. a call that timed out just after Redis came
/// back) is answered by reconnecting after a short backoff, at most 5 times.
pub async fn tab_reconnecting(node: &GatewayProcess, user: &str, since: Option<(u64, &str)>) -> (Ws, Value) {
    for attempt in 1..=5u32 {
        let mut ws = try_connect(&node.ws_url(), &[ENVELOPE]).await.expect("connect");
        send_json(&mut ws, register(user, since)).await;
        match timeout(WAIT, ws.next()).await.expect("an answer in time") {
            Some(Ok(Message::Text(text))) => {
                let registered: Value = serde_json::from_str(&text).expect("json");
                assert_eq!(registered["type"], "registered", "{registered}");
                return (ws, registered);
            }
            Some(Ok(Message::Close(Some(close)))) if u16::from(close.code) == 1011 => {
                println!("attempt {attempt}: closed 1011 ({}); reconnecting", close.reason);
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            other => panic!("expected registered, got {other:?}"),
        }
    }
    panic!("still refused with 1011 after 5 attempts");
}

/// Polls `Online` on `client` until `user` has `n` connections (the count
/// may live in the broker: there is no event to wait on).
pub async fn until_online(client: &mut PushClient, user: &str, n: u32) {
    let polling = async {
        loop {
            let reply = client.online(OnlineRequest { user_ids: vec![user.into()] }).await.expect("online");
            if reply.into_inner().connections.get(user) == Some(&n) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    timeout(WAIT, polling).await.unwrap_or_else(|_| panic!("{user} never had {n} connections"));
}

/// The next push frame's (seq, data).
pub async fn next_push(ws: &mut Ws) -> (u64, String) {
    let frame = next_json(ws).await;
    let seq = frame["seq"].as_u64().unwrap_or_else(|| panic!("a push, got {frame}"));
    (seq, frame["data"].as_str().expect("text data").to_owned())
}

/// The status of the node's `/readyz`.
pub async fn readyz(node: &GatewayProcess) -> u16 {
    super::http::http_to(&format!("http://{}", node.internal), "GET", "/readyz", None, "").await.status
}

/// Polls `/readyz` until it answers `want`; fails after [`WAIT`].
pub async fn until_ready(node: &GatewayProcess, want: u16) {
    let polling = async {
        while readyz(node).await != want {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    timeout(WAIT, polling).await.unwrap_or_else(|_| panic!("/readyz never answered {want}"));
}

/// The node's `/metrics`, parsed.
pub async fn scrape(node: &GatewayProcess) -> Scrape {
    let reply = super::http::http_to(&format!("http://{}", node.internal), "GET", "/metrics", None, "").await;
    assert_eq!(reply.status, 200);
    parse_metrics(&reply.body)
}

/// A free port on 127.0.0.1: bound, then freed.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A `redis-server` or `nats-server` of the test's own on `port`, for the
/// outage tests: stopped (killed) and started again on the same port.
pub struct OwnServer {
    child: Child,
    port: u16,
}

impl OwnServer {
    /// A `redis-server` that keeps nothing on disk, so a restart comes back empty.
    pub fn redis(port: u16) -> Self {
        let port_arg = port.to_string();
        let args = ["--port", &port_arg, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
        Self::start("redis-server", &args, port)
    }

    /// A `nats-server` without JetStream.
    pub fn nats(port: u16) -> Self {
        Self::start("nats-server", &["-a", "127.0.0.1", "-p", &port.to_string()], port)
    }

    fn start(program: &str, args: &[&str], port: u16) -> Self {
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} is installed with the machine's services: {e}"));
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < WAIT, "{program} did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20)); // waiting for a port to open: nothing to await
        }
        Self { child, port }
    }

    /// The `--broker` URL of this server.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server: a server that stops
    /// answering without closing its connections.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal}");
    }

    /// Kills the server (an outage, not a clean shutdown).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop();
    }
}
