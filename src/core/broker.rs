//! The seam between what one node holds and what a cluster shares
//! (docs/architecture.md, "Several nodes").
//!
//! The [`Hub`](super::Hub) keeps what is local: connections, their
//! subscriptions and send queues, and the fan-out to them. A [`Broker`] owns
//! what is cluster-wide: the per-user stream position (seq and epoch),
//! history, idempotency keys, carrying a push to every node that holds its
//! user, and presence. Every producer call goes through the broker; the
//! in-process broker answers at once, a cluster's brokers talk to a server
//! (the implementations are listed in docs/architecture.md).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::delivery::Payload;
use super::hub::{JoinError, Published, Push, PushError, UserId};

/// What a broker call gives back: either at once, with no allocation (the
/// in-process broker), or after some I/O.
pub enum Pending<'a, T> {
    /// Answered already.
    Ready(Option<T>),
    /// Waiting on the broker's server.
    Waiting(Pin<Box<dyn Future<Output = T> + Send + 'a>>),
}

impl<'a, T> Pending<'a, T> {
    /// An answer available now.
    pub fn ready(value: T) -> Self {
        Pending::Ready(Some(value))
    }

    /// An answer `future` gives later.
    pub fn waiting(future: impl Future<Output = T> + Send + 'a) -> Self {
        Pending::Waiting(Box::pin(future))
    }

    /// The answer if it is here already, else `self` to wait on.
    pub fn now(self) -> Result<T, Self> {
        match self {
            Pending::Ready(Some(value)) => Ok(value),
            other => Err(other),
        }
    }

    /// The answer turned by `f`, without waiting when it is here already.
    pub fn map<U>(self, f: impl FnOnce(T) -> U + Send + 'a) -> Pending<'a, U>
    where
        T: 'a,
    {
        match self {
            Pending::Ready(value) => Pending::Ready(value.map(f)),
            Pending::Waiting(future) => Pending::waiting(async move { f(future.await) }),
        }
    }
}

// `Ready`'s value is moved out, never pinned, and `Waiting` is a pinned box
// already: the enum may move freely.
impl<T> Unpin for Pending<'_, T> {}

impl<T> Future for Pending<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.get_mut() {
            Pending::Ready(value) => match value.take() {
                Some(value) => Poll::Ready(value),
                None => Poll::Pending, // polled after completion: never again ready
            },
            Pending::Waiting(future) => future.as_mut().poll(cx),
        }
    }
}

/// Why the cluster could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The broker's server is unreachable or did not answer in time.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

impl From<BrokerError> for PushError {
    fn from(error: BrokerError) -> Self {
        PushError::Unavailable(error.to_string())
    }
}

/// A broadcast or a disconnect, carried to every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// One delivery without a seq to every connection subscribed to `event`
    /// (only those of `users` when it is not empty).
    Broadcast {
        /// The event.
        event: String,
        /// What is delivered.
        payload: Payload,
        /// The users it is for; empty for all.
        users: Vec<String>,
    },
    /// Close the user's connections (only those subscribed to `event` when
    /// given) with 4502.
    Disconnect {
        /// The user.
        user: String,
        /// Only connections subscribed to this event.
        event: Option<String>,
    },
}

/// What is cluster-wide (see the module documentation). Implementations must
/// deliver a user's pushes to this node's hub in seq order.
pub trait Broker: Send + Sync + 'static {
    /// Takes `push` for the cluster: refuses a repeated idempotency key, gives
    /// the push the user's next seq, keeps it in history and has every node
    /// holding the user fan it out. `delivered` in the answer is documented
    /// per broker (docs/api.md, "Several nodes").
    fn publish(&self, push: Push) -> Pending<'_, Result<Published, PushError>>;

    /// A connection of `user` is about to join this node: from now on the
    /// user's pushes reach this node, and its history is here for the join's
    /// replay. Refused past `--max-connections-per-user` when presence is
    /// cluster-wide. Each successful call is matched by one [`Broker::left`].
    fn joining(&self, user: &UserId) -> Pending<'_, Result<(), JoinError>>;

    /// A connection of `user` that [`Broker::joining`] admitted has left.
    fn left(&self, user: &UserId);

    /// Live connections of each user, in the order given.
    fn online(&self, users: &[String]) -> Pending<'_, Result<Vec<u32>, BrokerError>>;

    /// Carries `control` to every node (this one included). Answers the
    /// connections this node reached.
    fn control(&self, control: Control) -> Pending<'_, Result<u32, PushError>>;

    /// False while the broker cannot take pushes (its server is away).
    fn is_ready(&self) -> bool;

    /// This node's id in the cluster.
    fn node_id(&self) -> &str;

    /// Leaves the cluster at once (clean shutdown): this node's presence is
    /// removed.
    fn shutdown(&self) -> Pending<'_, ()>;
}
