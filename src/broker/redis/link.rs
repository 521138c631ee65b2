//! The node's link to Redis: the state every call shares, and the background
//! tasks that (re)connect, read pub/sub, keep the node's lease and apply
//! subscription changes.
//!
//! One supervisor task owns the connection's life: it connects (a
//! multiplexed connection for commands, a dedicated RESP2 connection for
//! pub/sub), sets the lease, writes this node's presence again, subscribes
//! the control channel and every held user, and only then reports
//! [`Incoming::Up`]. It then reads pub/sub messages one by one, in the order
//! Redis sent them, until the connection is lost; it reports
//! [`Incoming::Down`] and retries with exponential backoff and full jitter.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use futures_util::StreamExt;
use futures_util::future::join_all;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::codec::{decode_control_from, decode_stamped};
use super::scripts::{Keys, Scripts};
use super::{Incoming, RedisConfig, RedisError};

/// First retry delay bound; doubled per failed attempt up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Largest retry delay bound.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often a quiet link is checked with PING (a silent network partition
/// ends no TCP stream).
const PING_EVERY: Duration = Duration::from_secs(3);
/// How long a presence hash lives without being written.
pub(crate) const PRESENCE_TTL: Duration = Duration::from_secs(3600);
/// How often this node writes all its presence counts again.
const PRESENCE_REFRESH: Duration = Duration::from_secs(1200);

/// A subscription change, applied in order by the subscription task.
pub(crate) enum SubOp {
    Hold(String, oneshot::Sender<Result<(), RedisError>>),
    Release(String),
}

/// What the broker's calls and tasks share.
pub(crate) struct Shared {
    pub(crate) config: RedisConfig,
    pub(crate) client: redis::Client,
    pub(crate) keys: Keys,
    pub(crate) scripts: Scripts,
    /// The command connection while the link is up.
    conn: Mutex<Option<MultiplexedConnection>>,
    /// The pub/sub connection's command half while it is open.
    sink: Mutex<Option<PubSubSink>>,
    up: AtomicBool,
    /// Users this node is subscribed to (or will be, once connected).
    pub(crate) held: Mutex<HashSet<String>>,
    /// This node's connections per user: what Redis should hold for it.
    pub(crate) counts: Mutex<HashMap<String, u32>>,
    /// A call saw the connection fail: the supervisor checks it at once.
    trouble: Notify,
    pub(crate) cancel: CancellationToken,
    incoming: mpsc::Sender<Incoming>,
}

/// Locks `m`; a poisoned lock still holds consistent data here (every
/// critical section is a single insert, remove or clone).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn new(config: RedisConfig, client: redis::Client, incoming: mpsc::Sender<Incoming>) -> Self {
        Self {
            keys: Keys::new(&config.prefix),
            config,
            client,
            scripts: Scripts::new(),
            conn: Mutex::new(None),
            sink: Mutex::new(None),
            up: AtomicBool::new(false),
            held: Mutex::new(HashSet::new()),
            counts: Mutex::new(HashMap::new()),
            trouble: Notify::new(),
            cancel: CancellationToken::new(),
            incoming,
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// The command connection, or [`RedisError::Unavailable`] while down.
    pub(crate) fn conn(&self) -> Result<MultiplexedConnection, RedisError> {
        if self.cancel.is_cancelled() {
            return Err(RedisError::Closed);
        }
        lock(&self.conn).clone().ok_or(RedisError::Unavailable)
    }

    /// Runs `call` within the call timeout; a connection failure makes the
    /// supervisor check the link at once.
    pub(crate) async fn bounded<T>(&self, call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, RedisError> {
        let limit = self.config.call_timeout;
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.is_timeout() => {
                self.trouble.notify_one();
                Err(RedisError::Timeout(limit))
            }
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    self.trouble.notify_one();
                }
                Err(RedisError::Redis(e))
            }
            Err(_) => {
                self.trouble.notify_one();
                Err(RedisError::Timeout(limit))
            }
        }
    }

    async fn report(&self, what: Incoming) {
        tokio::select! {
            _ = self.cancel.cancelled() => {}
            _ = self.incoming.send(what) => {}
        }
    }
}

/// Why a connected session ended.
enum Ended {
    Lost,
    Cancelled,
}

/// The supervisor: connect, serve, report, back off, again, until cancelled.
pub(crate) async fn supervise(shared: Arc<Shared>) {
    let mut attempt: u32 = 0;
    while !shared.cancel.is_cancelled() {
        match tokio::time::timeout(shared.config.call_timeout * 4, connect(&shared)).await {
            Ok(Ok(stream)) => {
                attempt = 0;
                tracing::info!(node = %shared.config.node_id, "redis broker up");
                shared.report(Incoming::Up).await;
                let ended = serve(&shared, stream).await;
                go_down(&shared);
                if let Ended::Cancelled = ended {
                    return;
                }
                tracing::warn!(node = %shared.config.node_id, "redis broker down: connection lost");
                shared.report(Incoming::Down).await;
            }
            Ok(Err(e)) => log_failure(attempt, &e),
            Err(_) => log_failure(attempt, &RedisError::Timeout(shared.config.call_timeout * 4)),
        }
        go_down(&shared);
        let delay = backoff(attempt);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

fn log_failure(attempt: u32, e: &RedisError) {
    // One warning per outage; the retries after it only at debug level.
    if attempt == 0 {
        tracing::warn!(error = %e, "redis broker cannot connect; retrying with backoff");
    } else {
        tracing::debug!(error = %e, attempt, "redis broker still cannot connect");
    }
}

fn go_down(shared: &Shared) {
    shared.up.store(false, Ordering::SeqCst);
    lock(&shared.conn).take();
    lock(&shared.sink).take();
}

/// A uniformly random delay in `[0, min(BACKOFF_MAX, BACKOFF_BASE · 2^attempt))`.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let bound = BACKOFF_BASE.saturating_mul(1u32 << attempt.min(16)).min(BACKOFF_MAX);
    let bound_ms = bound.as_millis().max(1) as u64;
    Duration::from_millis(random() % bound_ms)
}

/// A random number from a randomly seeded hasher over the time and a
/// counter: unpredictable enough for jitter and epochs, and no extra crate.
pub(crate) fn random() -> u64 {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    RandomState::default().hash_one((std::process::id(), Instant::now(), n))
}

/// Opens both connections and restores everything the node had in Redis.
async fn connect(shared: &Shared) -> Result<PubSubStream, RedisError> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(shared.config.call_timeout))
        .set_response_timeout(Some(shared.config.call_timeout));
    let mut conn = shared.client.get_multiplexed_async_connection_with_config(&config).await?;
    let (mut sink, stream) = shared.client.get_async_pubsub().await?.split();
    renew_lease(shared, &mut conn).await?;
    write_presence(shared, &mut conn).await?;
    sink.subscribe(shared.keys.control_channel()).await?;
    *lock(&shared.sink) = Some(sink.clone());
    // Taken after the sink is published: a user held from now on is
    // subscribed by its own hold, one held before is in this snapshot.
    let held: Vec<String> = lock(&shared.held).iter().cloned().collect();
    let subscribed = join_all(held.iter().map(|user| {
        let mut sink = sink.clone();
        let channel = shared.keys.push_channel(user);
        async move { sink.subscribe(channel).await }
    }))
    .await;
    subscribed.into_iter().collect::<Result<Vec<()>, _>>()?;
    *lock(&shared.conn) = Some(conn);
    shared.up.store(true, Ordering::SeqCst);
    Ok(stream)
}

/// Sets this node's lease for one `node_lease`.
async fn renew_lease(shared: &Shared, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
    let ms = millis(shared.config.node_lease);
    let mut cmd = redis::cmd("SET");
    cmd.arg(shared.keys.lease(&shared.config.node_id)).arg(1).arg("PX").arg(ms);
    shared.bounded(cmd.query_async::<()>(conn)).await
}

/// Writes this node's connection count of every user it has: after Redis
/// lost its data, and periodically, so the hashes outlive [`PRESENCE_TTL`].
async fn write_presence(shared: &Shared, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
    let counts: Vec<(String, u32)> = lock(&shared.counts).iter().map(|(u, c)| (u.clone(), *c)).collect();
    let ttl = millis(PRESENCE_TTL);
    for chunk in counts.chunks(512) {
        let mut pipe = redis::pipe();
        for (user, count) in chunk {
            let key = shared.keys.conns(user);
            pipe.hset(&key, &shared.config.node_id, count).ignore();
            pipe.pexpire(&key, ttl as i64).ignore();
        }
        shared.bounded(pipe.query_async::<()>(conn)).await?;
    }
    Ok(())
}

/// Whole milliseconds of `d`, at least 1 (Redis refuses a zero expiry).
pub(crate) fn millis(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

/// Reads pub/sub messages in order until the link is lost or cancelled.
async fn serve(shared: &Shared, mut stream: PubSubStream) -> Ended {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return Ended::Cancelled,
            msg = stream.next() => match msg {
                Some(msg) => forward(shared, &msg).await,
                None => return Ended::Lost,
            },
            _ = ping.tick() => if !healthy(shared).await { return Ended::Lost },
            _ = shared.trouble.notified() => if !healthy(shared).await { return Ended::Lost },
        }
    }
}

/// True when both connections answer PING in time.
async fn healthy(shared: &Shared) -> bool {
    let (Ok(mut conn), Some(mut sink)) = (shared.conn(), lock(&shared.sink).clone()) else { return false };
    let commands = shared.bounded(redis::cmd("PING").query_async::<()>(&mut conn)).await;
    let pubsub = shared.bounded(sink.ping::<()>()).await;
    commands.is_ok() && pubsub.is_ok()
}

/// Decodes one pub/sub message and hands it to the receiver (waiting while
/// its queue is full: Redis buffers meanwhile, and drops this connection if
/// the node falls too far behind, which the receiver sees as Down then Up).
async fn forward(shared: &Shared, msg: &redis::Msg) {
    let channel = msg.get_channel_name();
    let bytes = msg.get_payload_bytes();
    let incoming = if let Some(user) = shared.keys.user_of(channel) {
        decode_stamped(bytes).map(|message| Incoming::Push { user: Arc::from(user), message })
    } else {
        decode_control_from(bytes).map(|(from, control)| Incoming::Control { from, control })
    };
    match incoming {
        Ok(incoming) => shared.report(incoming).await,
        Err(e) => tracing::warn!(channel, error = %e, "redis broker dropped a malformed message"),
    }
}

/// Keeps the node's lease alive, and its presence written, while up.
pub(crate) async fn keep_lease(shared: Arc<Shared>) {
    let mut lease = tokio::time::interval(shared.config.node_lease / 3);
    let mut presence = tokio::time::interval(PRESENCE_REFRESH);
    presence.reset();
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = lease.tick() => {
                if let Ok(mut conn) = shared.conn()
                    && let Err(e) = renew_lease(&shared, &mut conn).await
                {
                    tracing::warn!(error = %e, "redis broker could not renew its lease");
                }
            }
            _ = presence.tick() => {
                if let Ok(mut conn) = shared.conn()
                    && let Err(e) = write_presence(&shared, &mut conn).await
                {
                    tracing::warn!(error = %e, "redis broker could not refresh its presence");
                }
            }
        }
    }
}

/// Applies holds and releases in the order they were asked for. A batch of
/// waiting requests is sent at once (pipelined, each SUBSCRIBE naming one
/// channel, so each reply answers exactly its request).
pub(crate) async fn apply_subscriptions(shared: Arc<Shared>, mut ops: mpsc::UnboundedReceiver<SubOp>) {
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            n = ops.recv_many(&mut batch, 256) => if n == 0 { return },
        }
        let sink = lock(&shared.sink).clone();
        join_all(batch.drain(..).map(|op| apply(&shared, sink.clone(), op))).await;
    }
}

async fn apply(shared: &Shared, sink: Option<PubSubSink>, op: SubOp) {
    match op {
        SubOp::Hold(user, reply) => {
            let result = match sink {
                Some(mut sink) => shared.bounded(sink.subscribe(shared.keys.push_channel(&user))).await,
                None => Err(RedisError::Unavailable),
            };
            let _ = reply.send(result);
        }
        SubOp::Release(user) => {
            // Held again since: keep the subscription.
            if lock(&shared.held).contains(&user) {
                return;
            }
            if let Some(mut sink) = sink
                && let Err(e) = shared.bounded(sink.unsubscribe(shared.keys.push_channel(&user))).await
            {
                tracing::debug!(error = %e, "redis broker could not unsubscribe; the next connection will not");
            }
        }
    }
}
