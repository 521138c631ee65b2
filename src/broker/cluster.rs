//! Redis behind the core's [`Broker`] seam (`--broker redis://...`): the
//! glue between this node's [`Hub`] and the [`RedisBroker`] transport.
//!
//! - A push is numbered, kept and published by Redis; every node holding the
//!   user (this one too) receives it on the user's channel and fans it out
//!   with [`Hub::deliver`], in seq order. A gap (a message lost while Redis
//!   was away) is filled from Redis's history before the push goes out.
//! - A node subscribes to a user's channel when the user's first connection
//!   joins here and unsubscribes after the last one left. Before that first
//!   join completes, the user's history is fetched and handed to the hub
//!   ([`Hub::catch_up`]), with what arrived live meanwhile, so the join's
//!   replay is served from the hub under its lock, with no gap and no
//!   duplicate, as with the in-process broker.
//! - Connections are counted per node in Redis: `Online` and
//!   `--max-connections-per-user` are cluster-wide.
//! - `Broadcast` and `Disconnect` run here and on every other node (a control
//!   channel); their counts are this node's.
//! - When Redis comes back after an outage, every held user is caught up from
//!   Redis's history from the last seq fanned out here.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{OnceCell, mpsc};

use super::holds::Holds;
use super::redis::{self as transport, Incoming, PublishRequest, RedisBroker, RedisConfig, RedisError, Stamped};
use crate::config::ClusterConfig;
use crate::core::{
    Arrival, Broker, BrokerError, Control, Hub, JoinError, Numbered, Pending, Published, Push, PushError, PushResult,
    Since, UserId, event_name, write_through,
};

/// How long one Redis call may take before it fails (and the producer's
/// push is refused with UNAVAILABLE).
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// One node's broker over Redis.
pub struct RedisCluster {
    hub: Arc<Hub>,
    redis: Arc<RedisBroker>,
    held: Holds<Held>,
}

/// What this broker keeps for a user with connections on this node.
struct Held {
    /// Set once the user's channel is subscribed and the hub caught up from
    /// Redis's history; joins wait for it.
    ready: Arc<OnceCell<()>>,
    /// Pushes that arrived live before the catch-up: handed to the hub with it.
    early: Vec<Stamped>,
    /// True once the catch-up has run: pushes then go to the hub directly.
    caught_up: bool,
}

impl RedisCluster {
    /// Starts the Redis transport for `hub` and the task that takes what
    /// Redis sends. Never waits for Redis: until it is reachable the node is
    /// not ready and pushes are refused with UNAVAILABLE. A malformed URL is
    /// an error naming `--broker`.
    pub fn start(hub: &Arc<Hub>, cluster: &ClusterConfig, url: &str) -> Result<Arc<Self>, RedisError> {
        let hub_config = hub.config();
        let config = RedisConfig {
            url: url.to_owned(),
            prefix: cluster.prefix.clone(),
            node_id: cluster.node_id.clone(),
            history_size: hub_config.history_size,
            history_ttl: hub_config.history_ttl,
            history_meta_ttl: hub_config.history_meta_ttl,
            node_lease: cluster.node_lease,
            call_timeout: CALL_TIMEOUT,
        };
        let (redis, incoming) = RedisBroker::start(config)?;
        let cluster = Arc::new(Self { hub: Arc::clone(hub), redis, held: Holds::default() });
        tokio::spawn(receive(Arc::downgrade(&cluster), incoming));
        Ok(cluster)
    }

    /// Subscribes to the user's channel and catches the hub up from Redis's
    /// history, with the pushes that arrived live meanwhile.
    async fn follow(&self, user: &UserId) -> Result<(), RedisError> {
        self.redis.hold(user).await?;
        let page = self.redis.history(user, &Since::seq(0)).await?;
        let mut held = self.held.lock();
        let Some(entry) = held.get_mut(user).map(|hold| &mut hold.state) else { return Ok(()) };
        let early = std::mem::take(&mut entry.early);
        entry.caught_up = true;
        let mut pushes = page.messages;
        pushes.extend(early.into_iter().filter(|m| m.epoch == page.epoch));
        pushes.sort_by_key(|m| m.seq);
        pushes.dedup_by_key(|m| m.seq);
        let current = pushes.last().map_or(page.seq, |m| m.seq.max(page.seq));
        // Under the map's lock, so no live push of this user overtakes these.
        self.hub.catch_up(user, &page.epoch, current, pushes.into_iter().map(numbered).collect());
        Ok(())
    }

    /// Catches the hub up on `user` from Redis's history (after a gap or an
    /// outage).
    async fn refill(&self, user: &UserId) {
        match self.redis.history(user, &Since::seq(0)).await {
            Ok(page) => {
                let pushes = page.messages.into_iter().map(numbered).collect();
                let closed = self.hub.catch_up(user, &page.epoch, page.seq, pushes);
                if closed > 0 {
                    tracing::warn!(
                        user = &**user,
                        closed,
                        "the user's stream started over in Redis: connections closed with 4004"
                    );
                }
            }
            Err(error) => tracing::warn!(user = &**user, %error, "catching up from Redis failed"),
        }
    }

    /// Takes a push from Redis: in order to the hub, or kept until the
    /// user's catch-up when it is still running.
    async fn arrived(&self, user: UserId, message: Stamped) {
        {
            let mut held = self.held.lock();
            let Some(entry) = held.get_mut(&user).map(|hold| &mut hold.state) else { return };
            if !entry.caught_up {
                entry.early.push(message);
                return;
            }
        }
        let push = numbered(message);
        // Written from this task to the user's idle connections, as on one node.
        if let Arrival::Gap { after } = write_through(|| self.hub.deliver(&user, push.clone())) {
            tracing::debug!(user = &*user, after, seq = push.seq, "gap in the user's stream: catching up from Redis");
            self.refill(&user).await;
            write_through(|| self.hub.deliver(&user, push));
        }
    }

    /// Runs a control message on this node; returns the connections it reached.
    fn run(&self, control: Control) -> Result<u32, PushError> {
        match control {
            Control::Broadcast { event, payload, users } => {
                write_through(|| self.hub.broadcast(&event, payload, &users))
            }
            Control::Disconnect { user, event } => Ok(self.hub.disconnect(&user, event.as_deref())),
        }
    }
}

/// A Redis failure as the producer sees it: UNAVAILABLE, retry later.
fn unavailable(error: &RedisError) -> PushError {
    PushError::Unavailable(format!("broker unavailable: {error}"))
}

fn numbered(m: Stamped) -> Numbered {
    Numbered {
        event: m.event,
        seq: m.seq,
        epoch: m.epoch,
        ts_ms: m.ts_ms,
        payload: m.payload,
        expires_at_ms: m.expires_at_ms,
    }
}

/// Takes what Redis sends, in order, until the cluster is dropped.
async fn receive(cluster: Weak<RedisCluster>, mut incoming: mpsc::Receiver<Incoming>) {
    while let Some(message) = incoming.recv().await {
        let Some(cluster) = cluster.upgrade() else { return };
        match message {
            Incoming::Push { user, message } => cluster.arrived(user, message).await,
            Incoming::Control { from, control } => {
                if from != cluster.redis.node_id() {
                    let _ = cluster.run(control.into_core());
                }
            }
            Incoming::Up => {
                tracing::info!("redis broker connected");
                cluster.hub.metrics().broker_reconnects.inc();
                let users: Vec<UserId> =
                    cluster.held.lock().iter().filter(|(_, h)| h.state.caught_up).map(|(u, _)| Arc::clone(u)).collect();
                for user in users {
                    cluster.refill(&user).await;
                }
            }
            Incoming::Down => tracing::warn!("redis broker disconnected: not ready, pushes refused until it is back"),
        }
    }
}

impl Broker for RedisCluster {
    /// `delivered` is 0: the push reaches connections when each node holding
    /// the user receives it from Redis (docs/api.md, "Several nodes").
    fn publish(&self, push: Push) -> Pending<'_, Result<Published, PushError>> {
        Pending::waiting(async move {
            let result = self.publish_checked(push).await;
            self.hub.metrics().push(match &result {
                Ok(published) if published.duplicate => PushResult::Duplicate,
                Ok(_) => PushResult::Ok,
                Err(PushError::ShuttingDown | PushError::Unavailable(_)) => PushResult::Unavailable,
                Err(_) => PushResult::Invalid,
            });
            result
        })
    }

    fn joining(&self, user: &UserId) -> Pending<'_, Result<(), JoinError>> {
        let user = Arc::clone(user);
        Pending::waiting(async move {
            if self.hub.is_shutting_down() {
                return Err(JoinError::ShuttingDown);
            }
            let limit = self.hub.config().max_connections_per_user;
            match self.redis.add_connection(&user, limit).await {
                Ok(Ok(_)) => {}
                Ok(Err(count)) => return Err(JoinError::UserLimit(count as usize)),
                Err(error) => return Err(JoinError::Unavailable(error.to_string())),
            }
            let new = || Held { ready: Arc::new(OnceCell::new()), early: Vec::new(), caught_up: false };
            let ready = self.held.add(&user, new, |held| Arc::clone(&held.ready));
            match ready.get_or_try_init(|| self.follow(&user)).await {
                Ok(()) => Ok(()),
                Err(error) => {
                    self.left(&user);
                    Err(JoinError::Unavailable(error.to_string()))
                }
            }
        })
    }

    fn left(&self, user: &UserId) {
        if self.held.remove(user).is_some() {
            self.redis.release(user);
        }
        let (redis, user) = (Arc::clone(&self.redis), Arc::clone(user));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = redis.remove_connection(&user).await {
                    tracing::debug!(%error, "presence not updated; it is written again on reconnect");
                }
            });
        }
    }

    fn online(&self, users: &[String]) -> Pending<'_, Result<Vec<u32>, BrokerError>> {
        let users = users.to_vec();
        Pending::waiting(
            async move { self.redis.online(&users).await.map_err(|e| BrokerError::Unavailable(e.to_string())) },
        )
    }

    /// Sends `control` to the other nodes, then runs it here; the count is
    /// this node's.
    fn control(&self, control: Control) -> Pending<'_, Result<u32, PushError>> {
        Pending::waiting(async move {
            if self.hub.is_shutting_down() {
                return Err(PushError::ShuttingDown);
            }
            let message = transport::Control::from_core(&control)?;
            self.redis.control(&message).await.map_err(|e| unavailable(&e))?;
            self.run(control)
        })
    }

    fn is_ready(&self) -> bool {
        self.redis.is_up()
    }

    fn node_id(&self) -> &str {
        self.redis.node_id()
    }

    fn shutdown(&self) -> Pending<'_, ()> {
        Pending::waiting(self.redis.shutdown())
    }
}

impl RedisCluster {
    async fn publish_checked(&self, push: Push) -> Result<Published, PushError> {
        self.hub.validate(&push)?;
        if self.hub.is_shutting_down() {
            return Err(PushError::ShuttingDown);
        }
        let request = PublishRequest {
            event: event_name(&push.event).map_err(PushError::BadEvent)?,
            user: push.user_id,
            payload: push.payload,
            ttl: push.ttl,
            idempotency_key: push.idempotency_key,
        };
        match self.redis.publish(request).await {
            Ok(outcome) => {
                Ok(Published { delivered: 0, seq: outcome.seq, duplicate: outcome.duplicate, nodes: outcome.nodes })
            }
            Err(error) => {
                self.hub.metrics().broker_errors.inc();
                Err(unavailable(&error))
            }
        }
    }
}
