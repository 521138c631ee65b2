//! NATS behind the core's [`Broker`] seam (`--broker nats://HOST:PORT`):
//! cross-node delivery over NATS core pub/sub, at most once. JetStream is
//! not used.
//!
//! - A push is taken by one node: its hub numbers it with this node's seq,
//!   keeps it in this node's history, checks the idempotency key against
//!   this node's keys and queues it to this node's connections (`delivered`
//!   counts those). The node then publishes it on the user's subject; every
//!   other node holding the user receives it and publishes it to its own
//!   hub. So `seq`, history, resume and idempotency are **per node**, and a
//!   push reaches another node at most once (NATS core does not retry).
//! - A node subscribes to a user's subject while it holds the user (its
//!   first connection's [`Broker::joining`] until the last
//!   [`Broker::left`]), never to all traffic. The first join waits for a
//!   round trip to the server, so pushes published after it reach this node.
//! - `Broadcast` and `Disconnect` run on the taking node and on every other
//!   node (a control subject); their counts are the taking node's.
//! - `Online` and `--max-connections-per-user` are per node: presence is not
//!   shared.
//! - While the client is not connected the node is not ready: pushes,
//!   control calls and new connections are refused with UNAVAILABLE, never
//!   acknowledged and left behind. The client reconnects by itself
//!   (unlimited attempts, exponential backoff) and subscribes again.
//!
//! Subjects and bytes are in `wire`.

mod wire;

use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event, RequestErrorKind, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::OnceCell;
use tokio_util::task::AbortOnDropHandle;

use super::holds::Holds;
use super::redis::codec::{self, decode_control_from, encode_control_from};
use crate::config::ClusterConfig;
use crate::core::{
    Broker, BrokerError, Control, Hub, JoinError, Pending, Published, Push, PushError, PushResult, UserId,
    write_through,
};
use wire::{Subjects, decode_push, encode_push};

/// How long one NATS call (a publish queued to the client, a subscribe, the
/// round trip of a first join) may take before it fails with UNAVAILABLE.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest pause between two reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why the NATS broker could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The URL is not one the client can use.
    #[error("--broker {url}: {reason}")]
    Url {
        /// The `--broker` value.
        url: String,
        /// What the client said.
        reason: String,
    },
    /// The client is not connected to the server.
    #[error("NATS is not connected")]
    Disconnected,
    /// A call did not finish within its time.
    #[error("NATS did not answer within {0:?}")]
    Timeout(Duration),
    /// The client refused the call.
    #[error("NATS: {0}")]
    Client(String),
}

/// One node's broker over NATS.
pub struct NatsCluster {
    hub: Arc<Hub>,
    client: Client,
    node_id: Arc<str>,
    subjects: Subjects,
    held: Holds<Held>,
    /// Takes the control subject's messages; stopped when the broker is dropped.
    _control: AbortOnDropHandle<()>,
}

/// A user with connections on this node.
struct Held {
    /// The task reading the user's subject, set once the subscription is
    /// known to the server; joins wait for it. Dropping it unsubscribes.
    following: Arc<OnceCell<AbortOnDropHandle<()>>>,
}

impl NatsCluster {
    /// Starts the NATS client for `hub` and subscribes to the control
    /// subject. Never waits for NATS: the client connects in the background
    /// and until it is connected the node is not ready. A URL the client
    /// cannot parse is an error naming `--broker`.
    pub async fn start(hub: &Arc<Hub>, cluster: &ClusterConfig, url: &str) -> Result<Arc<Self>, NatsError> {
        let node_id: Arc<str> = Arc::from(cluster.node_id.as_str());
        let subjects = Subjects::new(&cluster.prefix);
        let reconnects = hub.metrics().broker_reconnects.clone();
        let options = ConnectOptions::new()
            .name(format!("pushgate {node_id}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(backoff)
            // A node needs none of its own pushes back: it delivered them already.
            .no_echo()
            .event_callback(move |event| {
                let reconnects = reconnects.clone();
                async move { on_event(&event, &reconnects) }
            });
        let client =
            options.connect(url).await.map_err(|e| NatsError::Url { url: url.to_owned(), reason: e.to_string() })?;
        // Queued by the client until it connects, and sent again on every reconnect.
        let control = client.subscribe(subjects.control()).await.map_err(|e| NatsError::Client(e.to_string()))?;
        let receiving = tokio::spawn(take_control(Arc::clone(hub), Arc::clone(&node_id), control));
        Ok(Arc::new(Self {
            hub: Arc::clone(hub),
            client,
            node_id,
            subjects,
            held: Holds::default(),
            _control: AbortOnDropHandle::new(receiving),
        }))
    }

    fn connected(&self) -> Result<(), NatsError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            State::Pending | State::Disconnected => Err(NatsError::Disconnected),
        }
    }

    /// Subscribes to the user's subject and starts the task that hands what
    /// arrives there to the hub; returns once the server has the
    /// subscription (a round trip on the same connection).
    async fn follow(&self, user: &UserId) -> Result<AbortOnDropHandle<()>, NatsError> {
        let subject = self.subjects.user(user);
        let subscriber = within(self.client.subscribe(subject)).await?.map_err(|e| NatsError::Client(e.to_string()))?;
        let task =
            tokio::spawn(take_pushes(Arc::clone(&self.hub), Arc::clone(&self.node_id), Arc::clone(user), subscriber));
        let task = AbortOnDropHandle::new(task);
        self.round_trip().await?;
        Ok(task)
    }

    /// A request nobody answers: the server's "no responders" reply comes
    /// after it processed everything this connection sent before.
    async fn round_trip(&self) -> Result<(), NatsError> {
        match within(self.client.request(self.subjects.sync(), Bytes::new())).await? {
            Ok(_) => Ok(()),
            Err(error) if error.kind() == RequestErrorKind::NoResponders => Ok(()),
            Err(error) => Err(NatsError::Client(error.to_string())),
        }
    }

    /// Publishes `bytes` on `subject`; fails when the client does not take
    /// it within [`CALL_TIMEOUT`].
    async fn send(&self, subject: String, bytes: Bytes) -> Result<(), NatsError> {
        within(self.client.publish(subject, bytes)).await?.map_err(|e| NatsError::Client(e.to_string()))
    }

    /// Counts a push refused before it reached the hub, and returns the refusal.
    fn refused(&self, error: PushError) -> PushError {
        self.hub.metrics().push(match &error {
            PushError::ShuttingDown | PushError::Unavailable(_) => PushResult::Unavailable,
            PushError::EmptyUser | PushError::BadEvent(_) | PushError::TooLarge { .. } | PushError::TooLong { .. } => {
                PushResult::Invalid
            }
        });
        error
    }

    async fn publish_checked(&self, push: Push) -> Result<Published, PushError> {
        self.hub.validate(&push).map_err(|e| self.refused(e))?;
        if self.hub.is_shutting_down() {
            return Err(self.refused(PushError::ShuttingDown));
        }
        if let Err(error) = self.connected() {
            self.hub.metrics().broker_errors.inc();
            return Err(self.refused(unavailable(&error)));
        }
        let bytes = encode_push(&self.node_id, &push).map_err(|e| self.refused(e.into()))?;
        self.fits(&push, bytes.len()).map_err(|e| self.refused(e))?;
        let subject = self.subjects.user(&push.user_id);
        let published = write_through(|| self.hub.publish(push))?;
        if published.duplicate {
            return Ok(published);
        }
        if let Err(error) = self.send(subject, bytes).await {
            // Delivered here but not carried: the producer must not take it as done.
            self.hub.metrics().broker_errors.inc();
            return Err(unavailable(&error));
        }
        Ok(published)
    }

    /// Refuses a push whose message is over the server's `max_payload`
    /// (known once connected), before anything is delivered.
    fn fits(&self, push: &Push, size: usize) -> Result<(), PushError> {
        let max_payload = self.client.server_info().max_payload;
        if max_payload == 0 || size <= max_payload {
            return Ok(());
        }
        let field = match push.payload {
            crate::core::Payload::Text(_) => "message",
            crate::core::Payload::Binary(_) => "data",
        };
        let overhead = size - push.payload.len();
        Err(PushError::TooLarge { field, size: push.payload.len(), max: max_payload.saturating_sub(overhead) })
    }

    async fn control_checked(&self, control: Control) -> Result<u32, PushError> {
        if self.hub.is_shutting_down() {
            return Err(PushError::ShuttingDown);
        }
        let message = codec::Control::from_core(&control)?;
        if let Control::Broadcast { payload, .. } = &control {
            self.hub.validate_payload(payload)?;
        }
        self.connected().map_err(|e| unavailable(&e))?;
        let bytes = encode_control_from(&self.node_id, &message)?;
        self.send(self.subjects.control(), Bytes::from(bytes)).await.map_err(|e| unavailable(&e))?;
        run(&self.hub, control)
    }
}

/// The pause before reconnect attempt `attempts`: 0 for the first, then
/// doubling from 100 ms up to [`MAX_BACKOFF`], with up to a quarter of
/// jitter so nodes do not reconnect in step.
fn backoff(attempts: usize) -> Duration {
    use std::hash::BuildHasher as _;
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(16);
    let base = Duration::from_millis(100).saturating_mul(1 << exp).min(MAX_BACKOFF);
    let random = foldhash::fast::RandomState::default().hash_one(attempts);
    base + base.mul_f64((random % 1000) as f64 / 4000.0)
}

fn on_event(event: &Event, reconnects: &prometheus_client::metrics::counter::Counter) {
    match event {
        Event::Connected => {
            reconnects.inc();
            tracing::info!("nats broker connected");
        }
        Event::Disconnected => tracing::warn!("nats broker disconnected: not ready, pushes refused until it is back"),
        Event::SlowConsumer(sid) => {
            tracing::warn!(sid, "nats subscription too slow: messages from other nodes dropped")
        }
        Event::ServerError(error) => tracing::warn!(%error, "nats server error"),
        Event::ClientError(error) => tracing::warn!(%error, "nats client error"),
        Event::LameDuckMode | Event::Draining | Event::Closed => tracing::info!(%event, "nats broker"),
    }
}

/// Runs `future` within [`CALL_TIMEOUT`].
async fn within<T>(future: impl Future<Output = T>) -> Result<T, NatsError> {
    tokio::time::timeout(CALL_TIMEOUT, future).await.map_err(|_| NatsError::Timeout(CALL_TIMEOUT))
}

/// A NATS failure as the producer sees it: UNAVAILABLE, retry later.
fn unavailable(error: &NatsError) -> PushError {
    PushError::Unavailable(format!("broker unavailable: {error}"))
}

/// Runs a control message on this node; returns the connections it reached.
fn run(hub: &Hub, control: Control) -> Result<u32, PushError> {
    match control {
        Control::Broadcast { event, payload, users } => write_through(|| hub.broadcast(&event, payload, &users)),
        Control::Disconnect { user, event } => Ok(hub.disconnect(&user, event.as_deref())),
    }
}

/// Hands the pushes other nodes publish for `user` to this node's hub, in
/// the order they arrive, until the subscription is dropped.
async fn take_pushes(hub: Arc<Hub>, node_id: Arc<str>, user: UserId, mut subscriber: Subscriber) {
    while let Some(message) = subscriber.next().await {
        let carried = match decode_push(&message.payload) {
            Ok(carried) => carried,
            Err(error) => {
                tracing::warn!(user = &*user, %error, "undecodable push from NATS dropped");
                continue;
            }
        };
        if *carried.origin == *node_id {
            continue; // this node's own push: delivered when it was taken
        }
        let push = Push { user_id: user.to_string(), ..carried.push };
        if let Err(error) = write_through(|| hub.publish(push)) {
            tracing::debug!(user = &*user, origin = carried.origin, %error, "push from another node not delivered");
        }
    }
}

/// Runs the broadcasts and disconnects other nodes send, until the
/// subscription is dropped.
async fn take_control(hub: Arc<Hub>, node_id: Arc<str>, mut subscriber: Subscriber) {
    while let Some(message) = subscriber.next().await {
        match decode_control_from(&message.payload) {
            Ok((from, _)) if *from == *node_id => {}
            Ok((from, control)) => {
                if let Err(error) = run(&hub, control.into_core()) {
                    tracing::debug!(from, %error, "control message from another node not run");
                }
            }
            Err(error) => tracing::warn!(%error, "undecodable control message from NATS dropped"),
        }
    }
}

impl Broker for NatsCluster {
    /// `delivered` and `seq` are this node's: the push is numbered and
    /// delivered here, then carried to the other nodes holding the user,
    /// which number it in their own streams (docs/api.md, "Several nodes").
    fn publish(&self, push: Push) -> Pending<'_, Result<Published, PushError>> {
        Pending::waiting(self.publish_checked(push))
    }

    /// Subscribes to the user's subject on the user's first connection
    /// here. The per-user limit is the hub's, per node.
    fn joining(&self, user: &UserId) -> Pending<'_, Result<(), JoinError>> {
        let user = Arc::clone(user);
        Pending::waiting(async move {
            if self.hub.is_shutting_down() {
                return Err(JoinError::ShuttingDown);
            }
            self.connected().map_err(|e| JoinError::Unavailable(e.to_string()))?;
            let new = || Held { following: Arc::new(OnceCell::new()) };
            let following = self.held.add(&user, new, |held| Arc::clone(&held.following));
            match following.get_or_try_init(|| self.follow(&user)).await {
                Ok(_) => Ok(()),
                Err(error) => {
                    self.left(&user);
                    Err(JoinError::Unavailable(error.to_string()))
                }
            }
        })
    }

    /// Unsubscribes from the user's subject after its last connection here.
    fn left(&self, user: &UserId) {
        let released = self.held.remove(user);
        drop(released); // outside the lock: stops the user's task, which unsubscribes
    }

    /// This node's connections only: presence is not shared over NATS.
    fn online(&self, users: &[String]) -> Pending<'_, Result<Vec<u32>, BrokerError>> {
        Pending::ready(Ok(self.hub.online(users)))
    }

    /// Sends `control` to the other nodes, then runs it here; the count is
    /// this node's.
    fn control(&self, control: Control) -> Pending<'_, Result<u32, PushError>> {
        Pending::waiting(self.control_checked(control))
    }

    fn is_ready(&self) -> bool {
        self.connected().is_ok()
    }

    fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Sends what the client still holds (bounded by `CALL_TIMEOUT`).
    fn shutdown(&self) -> Pending<'_, ()> {
        Pending::waiting(async move {
            if self.connected().is_ok() {
                let _ = within(self.client.flush()).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        assert_eq!(backoff(1), Duration::ZERO);
        let second = backoff(2);
        assert!((Duration::from_millis(100)..=Duration::from_millis(125)).contains(&second), "{second:?}");
        for attempts in [10, 100, usize::MAX] {
            let pause = backoff(attempts);
            assert!((MAX_BACKOFF..=MAX_BACKOFF + MAX_BACKOFF / 4).contains(&pause), "{attempts}: {pause:?}");
        }
    }
}
