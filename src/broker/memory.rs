//! The in-process broker (`--broker memory`, the default): one node, so the
//! cluster is this process. The user's stream position, history and
//! idempotency keys live in the hub's entry for the user, under the same
//! shard lock as the fan-out, so a push costs one lock and every call is
//! answered at once, with no allocation for the future.

use std::sync::Arc;

use crate::core::{
    Broker, BrokerError, Control, Hub, JoinError, Pending, Published, Push, PushError, UserId, write_through,
};

/// One node's broker over its hub.
#[derive(Debug)]
pub struct MemoryBroker {
    hub: Arc<Hub>,
    node_id: String,
}

impl MemoryBroker {
    /// The broker of `hub`, for a node called `node_id`.
    pub fn new(hub: Arc<Hub>, node_id: String) -> Self {
        Self { hub, node_id }
    }
}

impl Broker for MemoryBroker {
    /// `delivered` counts the connections the push was queued to.
    fn publish(&self, push: Push) -> Pending<'_, Result<Published, PushError>> {
        Pending::ready(self.hub.publish(push))
    }

    /// The hub checks `--max-connections-per-user` itself when the
    /// connection joins, atomically with the join.
    fn joining(&self, _user: &UserId) -> Pending<'_, Result<(), JoinError>> {
        Pending::ready(Ok(()))
    }

    fn left(&self, _user: &UserId) {}

    fn online(&self, users: &[String]) -> Pending<'_, Result<Vec<u32>, BrokerError>> {
        Pending::ready(Ok(self.hub.online(users)))
    }

    fn control(&self, control: Control) -> Pending<'_, Result<u32, PushError>> {
        Pending::ready(match control {
            Control::Broadcast { event, payload, users } => {
                write_through(|| self.hub.broadcast(&event, payload, &users))
            }
            Control::Disconnect { user, event } => Ok(self.hub.disconnect(&user, event.as_deref())),
        })
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn shutdown(&self) -> Pending<'_, ()> {
        Pending::ready(())
    }
}
