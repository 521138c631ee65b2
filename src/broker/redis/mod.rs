//! The Redis transport of several nodes: per-user seq, epoch, history and
//! idempotency keys kept atomically in Redis (one Lua script per
//! operation), pushes fanned out to nodes by pub/sub, connection counts
//! summed over the nodes whose lease is alive, and control messages
//! (broadcast, disconnect) to every node.
//!
//! A [`RedisBroker`] is one node's handle. [`RedisBroker::start`] never
//! waits for Redis: background tasks connect and reconnect (exponential
//! backoff with full jitter) and report on the [`Incoming`] channel, next to
//! the pushes and control messages this node receives. While Redis is
//! unreachable every call fails at once with [`RedisError::Unavailable`];
//! while it is reachable but slow, every call fails after
//! [`RedisConfig::call_timeout`]: no call ever hangs.
//!
//! The key layout is in `scripts`, the byte encoding in [`codec`].

pub mod codec;
mod link;
mod replay;
mod scripts;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use codec::{Control, DecodeError, EncodeError, Stamped};
pub use replay::HistoryPage;

use crate::core::{EventName, Payload, Since, UserId};
use link::{Shared, SubOp, lock, millis};

/// Where the broker's Redis is and how it keeps what it keeps.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host[:port][/db]` (or `unix://`, `redis+unix://`).
    pub url: String,
    /// Every key and channel starts with this and `:`; nodes of one cluster
    /// share it, other clusters (or tests) on the same Redis do not.
    pub prefix: String,
    /// This node's id, unique in the cluster while it lives.
    pub node_id: String,
    /// Pushes kept per user for resume (0 keeps none).
    pub history_size: usize,
    /// How long history and idempotency keys live after the user's last push.
    pub history_ttl: Duration,
    /// How long a user's seq and epoch live after the user's last push.
    pub history_meta_ttl: Duration,
    /// How long the node counts as alive without renewing its lease; it
    /// renews every third of it. A node that dies without
    /// [`RedisBroker::shutdown`] leaves the connection counts within this.
    pub node_lease: Duration,
    /// The longest a call waits for Redis (connecting included) before it
    /// fails with [`RedisError::Timeout`].
    pub call_timeout: Duration,
}

impl RedisConfig {
    /// A configuration with the hub's defaults: 64 pushes of history for
    /// 5 minutes, positions for 30 days, a 10 s lease, 2 s per call.
    pub fn new(url: impl Into<String>, prefix: impl Into<String>, node_id: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: prefix.into(),
            node_id: node_id.into(),
            history_size: 64,
            history_ttl: Duration::from_secs(300),
            history_meta_ttl: Duration::from_secs(30 * 24 * 3600),
            node_lease: Duration::from_secs(10),
            call_timeout: Duration::from_secs(2),
        }
    }
}

/// Why a broker call failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The URL does not parse as a Redis URL (the message does not repeat
    /// it: it may hold a password).
    #[error("--broker: not a usable Redis URL (redis://[user:password@]host[:port][/db]): {0}")]
    BadUrl(#[source] redis::RedisError),
    /// A configuration value the broker cannot work with.
    #[error("--broker: {field} {problem}")]
    BadConfig {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Not connected to Redis now; the broker keeps reconnecting.
    #[error("the Redis broker is not connected")]
    Unavailable,
    /// Redis did not answer in time.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error, or the connection failed.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A value too long for the encoding.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Redis held bytes that are not this broker's encoding.
    #[error("malformed message from Redis: {0}")]
    Decode(#[from] DecodeError),
    /// The broker was shut down or dropped.
    #[error("the Redis broker was shut down")]
    Closed,
}

/// What the node receives from Redis, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A push to a user this node holds. Pushes of one user arrive in the
    /// order they were published (this node's own included).
    Push {
        /// The user.
        user: UserId,
        /// The push.
        message: Stamped,
    },
    /// A control message (this node's own included: `from` tells).
    Control {
        /// The node that sent it.
        from: String,
        /// The message.
        control: Control,
    },
    /// (Re)connected, and every held user subscribed again: pushes published
    /// while down are only in history, so catch each held user up from it.
    Up,
    /// The connection was lost (sent once per `Up`, never before the first);
    /// calls fail until the next `Up`.
    Down,
}

/// A push to number, keep and fan out.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// The user.
    pub user: String,
    /// The event.
    pub event: EventName,
    /// The payload.
    pub payload: Payload,
    /// Not replayed from history after this long.
    pub ttl: Option<Duration>,
    /// A repeat of this key for the user within `history_ttl` is not
    /// published again.
    pub idempotency_key: Option<String>,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOutcome {
    /// The user's seq given to the push (the first push's for a duplicate).
    pub seq: u64,
    /// The epoch of the user's stream.
    pub epoch: Arc<str>,
    /// True when the idempotency key was seen: nothing was published.
    pub duplicate: bool,
    /// Nodes subscribed to the user that received it (0 for a duplicate).
    pub nodes: u32,
}

/// One node's handle on the Redis broker. Share it as `Arc<RedisBroker>`.
/// Dropping it stops its tasks without removing its presence, as a crash
/// would: other nodes stop counting its connections when its lease lapses.
pub struct RedisBroker {
    shared: Arc<Shared>,
    subs: mpsc::UnboundedSender<SubOp>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Pushes and control messages the receiver may fall behind by before the
/// broker stops reading pub/sub.
const INCOMING_CAPACITY: usize = 4096;

impl RedisBroker {
    /// Checks the configuration and starts the background tasks (call it
    /// within a Tokio runtime). Does not wait for Redis: unreachable, it
    /// keeps retrying, and reports `Up` on the receiver once connected.
    pub fn start(config: RedisConfig) -> Result<(Arc<Self>, mpsc::Receiver<Incoming>), RedisError> {
        check(&config)?;
        let client = redis::Client::open(config.url.as_str()).map_err(RedisError::BadUrl)?;
        let (incoming, receiver) = mpsc::channel(INCOMING_CAPACITY);
        let (subs, ops) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(config, client, incoming));
        let tasks = vec![
            tokio::spawn(link::supervise(Arc::clone(&shared))),
            tokio::spawn(link::keep_lease(Arc::clone(&shared))),
            tokio::spawn(link::apply_subscriptions(Arc::clone(&shared), ops)),
        ];
        Ok((Arc::new(Self { shared, subs, tasks: Mutex::new(tasks) }), receiver))
    }

    /// True while connected (between `Up` and `Down`).
    pub fn is_up(&self) -> bool {
        self.shared.is_up()
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.shared.config.node_id
    }

    /// Numbers the push with the user's next seq, keeps it in the user's
    /// history and publishes it to the nodes holding the user, atomically
    /// (one script). A repeated idempotency key returns the first push's seq
    /// with `duplicate` and publishes nothing. One round trip.
    pub async fn publish(&self, p: PublishRequest) -> Result<PublishOutcome, RedisError> {
        let tail = codec::tail(&p.event, &p.payload)?;
        let keys = &self.shared.keys;
        let config = &self.shared.config;
        let mut conn = self.shared.conn()?;
        let mut call = self.shared.scripts.publish.prepare_invoke();
        call.key(keys.pos(&p.user)).key(keys.history(&p.user));
        if let Some(key) = &p.idempotency_key {
            call.key(keys.idempotency(&p.user, key));
        }
        call.arg(new_epoch())
            .arg(millis(config.history_meta_ttl))
            .arg(config.history_size)
            .arg(millis(config.history_ttl))
            .arg(keys.push_channel(&p.user))
            .arg(p.ttl.map_or(0, millis))
            .arg(tail);
        let (seq, epoch, duplicate, nodes): (u64, String, u8, u32) =
            self.shared.bounded(call.invoke_async(&mut conn)).await?;
        Ok(PublishOutcome { seq, epoch: Arc::from(epoch), duplicate: duplicate == 1, nodes })
    }

    /// The user's position and the kept pushes after `since` (see
    /// [`HistoryPage`]); mirrors the hub's own replay. Pushes older than
    /// `history_ttl` count as gone. One round trip, reading at most
    /// `history_size` entries.
    pub async fn history(&self, user: &str, since: &Since) -> Result<HistoryPage, RedisError> {
        let keys = &self.shared.keys;
        let mut conn = self.shared.conn()?;
        let mut call = self.shared.scripts.history.prepare_invoke();
        call.key(keys.pos(user)).key(keys.history(user)).arg(new_epoch()).arg(millis(self.shared.config.history_ttl));
        let (seq, epoch, now_ms, entries): (u64, String, u64, Vec<Vec<u8>>) =
            self.shared.bounded(call.invoke_async(&mut conn)).await?;
        let kept_from = now_ms.saturating_sub(millis(self.shared.config.history_ttl));
        Ok(replay::replay(since, seq, Arc::from(epoch), &entries, now_ms, kept_from))
    }

    /// Subscribes this node to the user's pushes. Resolves once Redis
    /// confirmed it, so a `history` call after it and the live pushes leave
    /// no gap between them. Call once per user (no reference count). Fails
    /// while down, but the user stays held: the next `Up` comes after it is
    /// subscribed.
    pub async fn hold(&self, user: &str) -> Result<(), RedisError> {
        lock(&self.shared.held).insert(user.to_owned());
        let (reply, answer) = oneshot::channel();
        self.subs.send(SubOp::Hold(user.to_owned(), reply)).map_err(|_| RedisError::Closed)?;
        answer.await.map_err(|_| RedisError::Closed)?
    }

    /// Stops receiving the user's pushes. The unsubscribe is sent in the
    /// background, after any earlier hold; a later `hold` of the user works.
    pub fn release(&self, user: &str) {
        lock(&self.shared.held).remove(user);
        let _ = self.subs.send(SubOp::Release(user.to_owned()));
    }

    /// Counts one more connection of `user` on this node, unless the users'
    /// live connections over all nodes are already `limit` or more:
    /// `Ok(Ok(count after))` or `Ok(Err(count))`. One round trip.
    pub async fn add_connection(&self, user: &str, limit: usize) -> Result<Result<u32, u32>, RedisError> {
        let mut conn = self.shared.conn()?;
        let keys = &self.shared.keys;
        let mut call = self.shared.scripts.add_connection.prepare_invoke();
        call.key(keys.conns(user))
            .arg(keys.lease_prefix())
            .arg(&self.shared.config.node_id)
            .arg(limit)
            .arg(millis(link::PRESENCE_TTL));
        let (admitted, count): (u8, u32) = self.shared.bounded(call.invoke_async(&mut conn)).await?;
        if admitted == 0 {
            return Ok(Err(count));
        }
        *lock(&self.shared.counts).entry(user.to_owned()).or_insert(0) += 1;
        Ok(Ok(count))
    }

    /// Counts one connection of `user` on this node less. The node's own
    /// count drops even when Redis cannot be told; it is written again on
    /// the next connection.
    pub async fn remove_connection(&self, user: &str) -> Result<(), RedisError> {
        {
            let mut counts = lock(&self.shared.counts);
            match counts.get_mut(user) {
                Some(n) if *n > 1 => *n -= 1,
                Some(_) => {
                    counts.remove(user);
                }
                None => return Ok(()),
            }
        }
        let mut conn = self.shared.conn()?;
        let mut call = self.shared.scripts.remove_connection.prepare_invoke();
        call.key(self.shared.keys.conns(user)).arg(&self.shared.config.node_id).arg(millis(link::PRESENCE_TTL));
        self.shared.bounded(call.invoke_async::<()>(&mut conn)).await
    }

    /// Live connections of each user over every node whose lease is alive,
    /// in the order given. One round trip.
    pub async fn online(&self, users: &[String]) -> Result<Vec<u32>, RedisError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.shared.conn()?;
        let mut call = self.shared.scripts.online.prepare_invoke();
        for user in users {
            call.key(self.shared.keys.conns(user));
        }
        call.arg(self.shared.keys.lease_prefix());
        self.shared.bounded(call.invoke_async(&mut conn)).await
    }

    /// Sends `c` to every node (this one included, when connected). Returns
    /// how many received it.
    pub async fn control(&self, c: &Control) -> Result<u32, RedisError> {
        let bytes = codec::encode_control_from(&self.shared.config.node_id, c)?;
        let mut conn = self.shared.conn()?;
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(self.shared.keys.control_channel()).arg(bytes);
        self.shared.bounded(cmd.query_async(&mut conn)).await
    }

    /// Removes this node's lease and connection counts from Redis at once
    /// (best effort, within one call timeout) and stops the background tasks.
    pub async fn shutdown(&self) {
        if let Ok(mut conn) = self.shared.conn() {
            let users: Vec<String> = lock(&self.shared.counts).drain().map(|(u, _)| u).collect();
            let mut pipe = redis::pipe();
            pipe.del(self.shared.keys.lease(&self.shared.config.node_id)).ignore();
            for user in &users {
                pipe.hdel(self.shared.keys.conns(user), &self.shared.config.node_id).ignore();
            }
            if let Err(e) = self.shared.bounded(pipe.query_async::<()>(&mut conn)).await {
                tracing::warn!(error = %e, "redis broker could not remove its presence");
            }
        }
        self.stop();
    }

    fn stop(&self) {
        self.shared.cancel.cancel();
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("node_id", &self.shared.config.node_id)
            .field("prefix", &self.shared.config.prefix)
            .field("up", &self.is_up())
            .finish()
    }
}

fn check(config: &RedisConfig) -> Result<(), RedisError> {
    let bad = |field, problem| Err(RedisError::BadConfig { field, problem });
    if config.prefix.is_empty() {
        return bad("prefix", "must not be empty");
    }
    if config.node_id.is_empty() {
        return bad("node_id", "must not be empty");
    }
    if config.node_lease < Duration::from_millis(30) {
        return bad("node_lease", "must be at least 30 ms");
    }
    if config.call_timeout.is_zero() {
        return bad("call_timeout", "must not be zero");
    }
    Ok(())
}

/// A fresh epoch candidate: 16 hex digits. The scripts keep it only when
/// they start a new stream.
fn new_epoch() -> String {
    format!("{:016x}", link::random())
}
