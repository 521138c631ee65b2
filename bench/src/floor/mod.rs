//! The floor server: the least work a push gateway can do for the bench's
//! scenarios, measured on the same machine in the same run as pushgate so
//! every pushgate figure can be printed as a ratio to it.
//!
//! It speaks what the bench's clients and producers speak — the WebSocket
//! upgrade on `/ws` with the register message (and the `registered` frame in
//! envelope mode), gRPC `Push`/`PushStream`/`Stats`, and wserver's HTTP
//! `POST /push` — and nothing else: no auth, no history, no queues, no
//! per-connection writer task, no channel. The task that reads a push (the
//! HTTP/2 connection's task for gRPC, the HTTP/1 connection's task for
//! `/push`) encodes the frame once and writes it inline to every socket of the
//! user found in one map ([`Floor::deliver`]). Each connection's own task only
//! reads and discards what the client sends.
//!
//! Two write policies: `per-delivery` writes each push's frame with its own
//! `send`; `coalesced` (the default) writes the frames of consecutive pushes
//! to the same user that arrived together on one stream with one `send` per
//! connection. In the round-robin scenarios consecutive pushes go to
//! different users, so both policies make one write per delivery there.
//!
//! It runs as a child process (`pushgate-bench serve`, the same command line
//! as `pushgate serve`), so its CPU time and RSS are read from `/proc` apart
//! from the load generator's, exactly like the gateway's.
//!
//! - [`public`]: the WebSocket listener and `/readyz`.
//! - [`internal`]: gRPC and HTTP `/push`.

mod internal;
mod public;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasher as _, RandomState};
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use pushgate::core::delivery::unix_ms;
use tokio::net::TcpStream;

/// How long a write may wait for a socket that does not drain before the
/// connection is given up.
const WRITE_STALL: Duration = Duration::from_secs(5);
/// Shards of the user map, to keep the producer streams off one lock.
const SHARDS: usize = 16;

/// `pushgate-bench serve`: the floor server (not for use outside the bench).
#[derive(Debug, Parser)]
#[command(name = "pushgate-bench serve")]
pub struct FloorArgs {
    /// WebSocket listener (and `/readyz`).
    #[arg(long)]
    pub public_addr: SocketAddr,
    /// gRPC and HTTP `/push` listener.
    #[arg(long)]
    pub internal_addr: SocketAddr,
    /// How frames reach the sockets.
    #[arg(long, value_enum, default_value_t = Writes::Coalesced)]
    pub writes: Writes,
    /// Accepted for `pushgate serve`'s command line; not enforced.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Accepted for `pushgate serve`'s command line; the floor logs nothing.
    #[arg(long)]
    pub log: Option<String>,
}

/// How the frames of a push reach the sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Writes {
    /// One `send` per delivery.
    PerDelivery,
    /// One `send` per connection for a run of pushes to the same user.
    Coalesced,
}

/// Entry point of `pushgate-bench serve ...`.
pub fn main() -> ExitCode {
    let args = FloorArgs::parse_from(std::env::args().skip(1));
    let result =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(anyhow::Error::from).and_then(
            |runtime| {
                runtime.block_on(async {
                    let public = tokio::net::TcpListener::bind(args.public_addr).await?;
                    let internal = tokio::net::TcpListener::bind(args.internal_addr).await?;
                    serve(public, internal, args.writes).await
                })
            },
        );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushgate-bench serve: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Serves the floor on two bound listeners until the process ends.
pub async fn serve(
    public: tokio::net::TcpListener,
    internal: tokio::net::TcpListener,
    writes: Writes,
) -> anyhow::Result<()> {
    let floor = Arc::new(Floor::new(writes));
    tokio::spawn(public::serve(public, Arc::clone(&floor)));
    internal::serve(internal, floor).await
}

/// A registered WebSocket connection: the socket, shared by its reader task
/// and whichever producer task writes to it.
pub struct Conn {
    stream: TcpStream,
    event: Box<str>,
    /// Sub-protocol `pushgate.v1`: push frames are JSON envelopes.
    envelope: bool,
    /// Held across one whole frame (or run of frames) so two producer tasks
    /// never interleave their bytes. A tokio mutex: the holder may await
    /// writability.
    writing: tokio::sync::Mutex<()>,
    /// A write failed or stalled: later pushes skip it.
    dead: AtomicBool,
}

/// One user's connections and sequence number.
#[derive(Default)]
struct User {
    conns: Arc<[Arc<Conn>]>,
    seq: u64,
}

/// One shard of the user map. A std mutex: nothing awaits while it is held.
type Shard = Mutex<HashMap<Box<str>, User>>;

/// The whole state: users by id, and the counters `Stats` reports.
pub struct Floor {
    shards: Box<[Shard]>,
    hasher: RandomState,
    writes: Writes,
    connections: AtomicU64,
    pushes: AtomicU64,
    deliveries: AtomicU64,
    next_conn: AtomicU64,
}

/// What [`Floor::deliver`] did for a run of pushes.
pub struct Delivered {
    /// Connections each push reached.
    pub per_push: u32,
    /// The first push's sequence number.
    pub first_seq: u64,
}

impl Floor {
    fn new(writes: Writes) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            writes,
            connections: AtomicU64::new(0),
            pushes: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            next_conn: AtomicU64::new(0),
        }
    }

    fn shard(&self, user: &str) -> &Shard {
        &self.shards[self.hasher.hash_one(user) as usize % SHARDS]
    }

    fn join(&self, user: &str, conn: &Arc<Conn>) {
        let mut shard = self.shard(user).lock().unwrap_or_else(|e| e.into_inner());
        let entry = shard.entry(user.into()).or_default();
        entry.conns = entry.conns.iter().cloned().chain([Arc::clone(conn)]).collect();
        self.connections.fetch_add(1, Relaxed);
    }

    fn leave(&self, user: &str, conn: &Arc<Conn>) {
        let mut shard = self.shard(user).lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = shard.get_mut(user) else { return };
        let before = entry.conns.len();
        entry.conns = entry.conns.iter().filter(|c| !Arc::ptr_eq(c, conn)).cloned().collect();
        if entry.conns.len() < before {
            self.connections.fetch_sub(1, Relaxed);
        }
        if entry.conns.is_empty() {
            shard.remove(user);
        }
    }

    /// Delivers `messages` (text pushes, in order) to `user`'s connections
    /// on `event`: the frames are encoded once, then written inline to each
    /// socket — one write per frame, or one per connection for the whole run
    /// when coalescing. Waits only for sockets whose buffers are full.
    pub async fn deliver(&self, user: &str, event: &str, messages: &[&str]) -> Delivered {
        let (conns, first_seq) = {
            let mut shard = self.shard(user).lock().unwrap_or_else(|e| e.into_inner());
            match shard.get_mut(user) {
                Some(entry) => {
                    entry.seq += messages.len() as u64;
                    (Arc::clone(&entry.conns), entry.seq + 1 - messages.len() as u64)
                }
                None => (Arc::from([]), 0),
            }
        };
        self.pushes.fetch_add(messages.len() as u64, Relaxed);
        let targets: Vec<&Arc<Conn>> = conns.iter().filter(|c| &*c.event == event).collect();
        if targets.is_empty() {
            return Delivered { per_push: 0, first_seq };
        }
        let frames = Frames::encode(event, first_seq, messages, &targets);
        for conn in &targets {
            let encoded = if conn.envelope { &frames.envelope } else { &frames.compat };
            let result = match self.writes {
                Writes::Coalesced => write_all(conn, &encoded.bytes).await,
                Writes::PerDelivery => write_each(conn, encoded).await,
            };
            if result.is_err() {
                // Its reader task removes it when the socket ends.
                conn.dead.store(true, Relaxed);
            }
        }
        self.deliveries.fetch_add((targets.len() * messages.len()) as u64, Relaxed);
        Delivered { per_push: targets.len() as u32, first_seq }
    }
}

/// The frames of one run of pushes, encoded once for all its connections
/// in each mode they use: back to back in one buffer.
struct Frames {
    envelope: Encoded,
    compat: Encoded,
}

#[derive(Default)]
struct Encoded {
    bytes: Vec<u8>,
    /// Where each frame ends in `bytes`.
    ends: Vec<usize>,
}

impl Encoded {
    fn push(&mut self, payload: &[u8]) {
        put_text_frame(&mut self.bytes, payload);
        self.ends.push(self.bytes.len());
    }
}

impl Frames {
    fn encode(event: &str, first_seq: u64, messages: &[&str], targets: &[&Arc<Conn>]) -> Self {
        let mut frames = Self { envelope: Encoded::default(), compat: Encoded::default() };
        let ts = unix_ms();
        if targets.iter().any(|c| c.envelope) {
            let mut json = String::new();
            for (i, m) in messages.iter().enumerate() {
                json.clear();
                let seq = first_seq + i as u64;
                let _ = write!(json, r#"{{"type":"push","event":"{event}","seq":{seq},"ts":{ts},"data":""#);
                push_json_str(&mut json, m);
                json.push_str("\"}");
                frames.envelope.push(json.as_bytes());
            }
        }
        if targets.iter().any(|c| !c.envelope) {
            for m in messages {
                frames.compat.push(m.as_bytes());
            }
        }
        frames
    }
}

/// One write per frame.
async fn write_each(conn: &Conn, encoded: &Encoded) -> io::Result<()> {
    let mut start = 0;
    for &end in &encoded.ends {
        write_all(conn, &encoded.bytes[start..end]).await?;
        start = end;
    }
    Ok(())
}

/// Writes `bytes` to the connection's socket: a `send` straight away, and
/// only when the socket buffer is full, a wait for it to drain.
async fn write_all(conn: &Conn, mut bytes: &[u8]) -> io::Result<()> {
    if conn.dead.load(Relaxed) {
        return Ok(());
    }
    let _turn = match conn.writing.try_lock() {
        Ok(turn) => turn,
        Err(_) => conn.writing.lock().await,
    };
    while !bytes.is_empty() {
        match conn.stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::timeout(WRITE_STALL, conn.stream.writable())
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client not reading"))??;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Appends an unmasked server text frame holding `payload`.
pub fn put_text_frame(frame: &mut Vec<u8>, payload: &[u8]) {
    frame.push(0x81);
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= 0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
}

/// Appends `s` as the inside of a JSON string.
fn push_json_str(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests;
