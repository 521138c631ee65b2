//! The browsers: N WebSocket connections, one task each, that register as
//! user `u{i}` on event `bench` and count and time every push they receive.
//!
//! Each pushed message begins with the nanoseconds since [`Shared::epoch`] at
//! which the producer built it, so a receiver computes push→receive latency
//! with no clock other than this process's monotonic one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::histogram::Histogram;

/// The event every connection subscribes to.
pub const EVENT: &str = "bench";
/// Digits of the send timestamp at the start of each message.
pub const STAMP_DIGITS: usize = 16;
/// Time allowed for one connection's TCP connect, upgrade and register.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Which browser protocol the connections speak (docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Sub-protocol `pushgate.v1`: a `registered` frame, then JSON push envelopes.
    Envelope,
    /// No sub-protocol (wserver mode): nothing after register, raw text pushes.
    Compat,
}

/// What every client task reports into. One instance for the whole run.
pub struct Shared {
    /// The clock both the producer's stamps and the receivers' reads use.
    pub epoch: Instant,
    /// Push frames received and timed, since start.
    pub received: AtomicU64,
    /// When the last of them arrived, nanoseconds since the epoch.
    pub last_nanos: AtomicU64,
    /// Push→receive latency of those frames, reset between phases.
    pub latency: Histogram,
    /// While set, each receive wakes [`Shared::notify`] (idle latency).
    pub watch: AtomicBool,
    pub notify: Notify,
    /// Text frames that were not a timed push (`registered`, errors, ...).
    pub other_frames: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Close codes received from the gateway, and read errors, by kind.
    pub closes: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            received: AtomicU64::new(0),
            last_nanos: AtomicU64::new(0),
            latency: Histogram::new(),
            watch: AtomicBool::new(false),
            notify: Notify::new(),
            other_frames: AtomicU64::new(0),
            open: AtomicU64::new(0),
            closes: Mutex::new(BTreeMap::new()),
        })
    }

    /// Nanoseconds since the epoch.
    pub fn now_nanos(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// How connections ended so far, e.g. `close 4000 ×3, read error ×1`.
    pub fn closes_text(&self) -> String {
        let closes = self.closes.lock().unwrap_or_else(|e| e.into_inner());
        closes.iter().map(|(k, n)| format!("{k} ×{n}")).collect::<Vec<_>>().join(", ")
    }

    pub fn count_close(&self, kind: String) {
        let mut closes = self.closes.lock().unwrap_or_else(|e| e.into_inner());
        *closes.entry(kind).or_default() += 1;
    }

    /// Takes a received text payload: times it when it carries a stamp.
    fn on_text(&self, mode: Mode, text: &str) {
        let message = match mode {
            Mode::Compat => Some(text),
            Mode::Envelope => text.rfind("\"data\":\"").map(|at| &text[at + 8..]),
        };
        match message.and_then(stamp) {
            Some(sent) => {
                let now = self.now_nanos();
                self.latency.record(now.saturating_sub(sent));
                self.last_nanos.store(now, Relaxed);
                self.received.fetch_add(1, Relaxed);
                if self.watch.load(Relaxed) {
                    self.notify.notify_one();
                }
            }
            None => {
                self.other_frames.fetch_add(1, Relaxed);
            }
        }
    }
}

/// The send stamp at the start of a message.
fn stamp(message: &str) -> Option<u64> {
    message.get(..STAMP_DIGITS)?.parse().ok()
}

/// The outcome of opening the fleet.
pub struct Opened {
    pub connections: usize,
    pub elapsed: Duration,
}

/// Opens `n` connections to `addr`, `concurrency` at a time, and returns once
/// each has registered (envelope mode: its `registered` frame arrived;
/// compat mode: its register message was written). Fails on the first
/// connection that cannot, naming it.
pub async fn open(
    addr: SocketAddr,
    n: usize,
    concurrency: usize,
    mode: Mode,
    shared: &Arc<Shared>,
) -> anyhow::Result<Opened> {
    open_users(addr, n, n, concurrency, mode, shared).await
}

/// [`open`] with `users` users: connection `i` is user `u{i mod users}`.
pub async fn open_users(
    addr: SocketAddr,
    n: usize,
    users: usize,
    concurrency: usize,
    mode: Mode,
    shared: &Arc<Shared>,
) -> anyhow::Result<Opened> {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::channel::<Result<(), String>>(1024);
    for i in 0..n {
        let gate = Arc::clone(&gate);
        let ready = ready_tx.clone();
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            let Ok(permit) = gate.acquire_owned().await else { return };
            let user = format!("u{}", i % users.max(1));
            let ws = match tokio::time::timeout(CONNECT_TIMEOUT, connect(addr, &user, mode)).await {
                Ok(Ok(ws)) => ws,
                Ok(Err(e)) => return drop(ready.send(Err(format!("connection {user}: {e:#}"))).await),
                Err(_) => {
                    let e = format!("connection {user}: no registration within {CONNECT_TIMEOUT:?}");
                    return drop(ready.send(Err(e)).await);
                }
            };
            drop(permit);
            shared.open.fetch_add(1, Relaxed);
            let _ = ready.send(Ok(())).await;
            drop(ready);
            read_loop(ws, mode, &shared).await;
            shared.open.fetch_sub(1, Relaxed);
        });
    }
    drop(ready_tx);
    let mut connections = 0;
    while connections < n {
        match ready_rx.recv().await {
            Some(Ok(())) => connections += 1,
            Some(Err(e)) => bail!("{e} (after {connections} connections had registered)"),
            None => bail!("connection tasks ended early after {connections} registrations"),
        }
    }
    Ok(Opened { connections, elapsed: started.elapsed() })
}

pub type Ws = WebSocketStream<TcpStream>;

/// TCP connect, upgrade to `/ws`, register as `user` on [`EVENT`].
async fn connect(addr: SocketAddr, user: &str, mode: Mode) -> anyhow::Result<Ws> {
    let tcp = TcpStream::connect(addr).await.context("TCP connect")?;
    upgrade(tcp, addr, user, mode).await
}

/// Upgrade `tcp` (connected to `addr`) to `/ws` and register as `user` on [`EVENT`].
pub async fn upgrade(tcp: TcpStream, addr: SocketAddr, user: &str, mode: Mode) -> anyhow::Result<Ws> {
    tcp.set_nodelay(true)?;
    let mut request = format!("ws://{addr}/ws").into_client_request()?;
    if mode == Mode::Envelope {
        request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("pushgate.v1"));
    }
    // Small buffers: 10 000 of these must fit beside the gateway.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20));
    let (mut ws, _response) =
        tokio_tungstenite::client_async_with_config(request, tcp, Some(config)).await.map_err(describe)?;
    let register = format!(r#"{{"token":"{user}","event":"{EVENT}"}}"#);
    ws.send(Message::text(register)).await.context("sending register")?;
    if mode == Mode::Envelope {
        expect_registered(&mut ws).await?;
    }
    Ok(ws)
}

/// Reads the first server frame, which must be `{"type":"registered",...}`.
async fn expect_registered(ws: &mut Ws) -> anyhow::Result<()> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str().contains(r#""type":"registered""#) => return Ok(()),
            Some(Ok(Message::Text(t))) => bail!("expected a registered frame, got {}", t.as_str()),
            Some(Ok(Message::Close(frame))) => bail!("closed before registering: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(describe(e)),
            None => bail!("connection ended before registering"),
        }
    }
}

/// Counts frames until the connection ends.
pub async fn read_loop(mut ws: Ws, mode: Mode, shared: &Shared) {
    while let Some(frame) = ws.next().await {
        match frame {
            Ok(Message::Text(t)) => shared.on_text(mode, t.as_str()),
            Ok(Message::Binary(_)) => {
                shared.other_frames.fetch_add(1, Relaxed);
            }
            Ok(Message::Close(frame)) => {
                let code = frame.map(|f| u16::from(f.code).to_string()).unwrap_or_else(|| "none".into());
                shared.count_close(format!("close {code}"));
                return;
            }
            Ok(_) => {}
            Err(e) => {
                shared.count_close(format!("read error ({})", kind(&e)));
                return;
            }
        }
    }
    shared.count_close("eof".into());
}

/// A short name for a read error, for the tally.
pub fn kind(e: &WsError) -> &'static str {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => "closed",
        WsError::Io(_) => "io",
        WsError::Protocol(_) => "protocol",
        WsError::Capacity(_) => "capacity",
        _ => "other",
    }
}

/// Names an upgrade failure, with the HTTP status when the gateway refused.
fn describe(e: WsError) -> anyhow::Error {
    match e {
        WsError::Http(response) => {
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
            anyhow!("upgrade refused: HTTP {} {body}", response.status())
        }
        other => anyhow!("websocket: {other}"),
    }
}
