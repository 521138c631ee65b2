//! The transport-free core: the hub (users → connections → events), per-user
//! sequence numbers and history, connection send queues, authentication and
//! the close-code table. Nothing here knows tonic, prost, tungstenite or hyper.

pub mod auth;
pub mod close;
pub mod delivery;
pub mod event;
pub mod heartbeat;
mod history;
pub mod hub;
mod idempotency;
pub mod outbox;
mod stats;

pub use auth::{ApiKeys, AuthError, AuthFuture, Authenticator, Identity, TokenIsUser, TokenTable};
pub use close::{CloseCode, CloseReason};
pub use delivery::{Delivery, Payload, Text};
pub use event::{EventName, event_name, event_names, validate_event};
pub use history::Replay;
pub use hub::{ConnId, Hub, HubConfig, JoinError, Joined, Published, Push, PushError, UserId};
pub use outbox::{Drained, Offer, Outbox, SlowPolicy};
pub use stats::{DropReason, Metrics, PushResult, StatsSnapshot};

#[cfg(test)]
mod tests;
