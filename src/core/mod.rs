//! The transport-free core: the hub (users → connections → events), per-user
//! sequence numbers and history, connection send queues and the writes a
//! producer's thread makes to an idle connection's socket, the authentication
//! seam, producer keys, metrics and the close-code table. Nothing here knows
//! tonic, prost, tungstenite or hyper, nor how the gateway is configured or
//! wired: adapters and `server` pass plain values in.

pub mod broker;
mod budget;
pub mod close;
pub mod delivery;
pub mod event;
pub mod heartbeat;
mod history;
pub mod hub;
mod idempotency;
pub mod identity;
mod metrics;
pub mod outbox;
mod producer_keys;
pub mod wire;

pub use broker::{Broker, BrokerError, Control, Pending};
pub use close::{CloseCode, CloseReason};
pub use delivery::{Delivery, Payload, Text};
pub use event::{EventName, event_name, event_names, validate_event};
pub use history::{Replay, Since};
pub use hub::{Arrival, ConnId, Hub, HubConfig, JoinError, Joined, Numbered, Published, Push, PushError, UserId};
pub use identity::{AuthError, AuthFuture, Authenticator, Identity};
pub use metrics::{DropReason, Metrics, ProducerTransport, PushResult, StatsSnapshot, WriteLatency};
pub use outbox::{Drained, Offer, Outbox, SlowPolicy};
pub use producer_keys::ProducerKeys;
pub use wire::{Wire, Wrote, write_through};

#[cfg(test)]
mod tests;
