//! The brokers: implementations of the core's [`crate::core::Broker`]
//! seam, chosen with `--broker` (docs/architecture.md, "Several nodes").
//!
//! - [`memory`](mod@memory): one node, nothing shared (the default).
//! - [`redis`]: several nodes sharing each user's stream (seq, epoch,
//!   history, idempotency keys), presence and control messages through Redis;
//!   [`cluster`] puts it behind the seam.
//! - [`nats`]: several nodes carrying pushes, broadcasts and disconnects to
//!   each other over NATS core pub/sub, at most once; seq, history,
//!   idempotency keys and presence stay per node.

pub mod cluster;
mod holds;
pub mod memory;
pub mod nats;
pub mod redis;

use std::sync::Arc;

use crate::core::{Broker, Hub};

/// A node id for a node started without `--node-id`: the host's name when it
/// has one, and a random suffix, so two processes on one host differ.
pub fn generated_node_id() -> String {
    use std::hash::BuildHasher as _;
    let host: String = std::env::var("HOSTNAME")
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(40)
        .collect();
    let host = if host.is_empty() { "node".to_owned() } else { host };
    let seed = foldhash::fast::RandomState::default().hash_one((std::process::id(), std::time::SystemTime::now()));
    format!("{host}-{:08x}", seed as u32)
}

/// The in-process broker for `hub` (used by `server` for `--broker memory`).
pub fn memory(hub: &Arc<Hub>, node_id: String) -> Arc<dyn Broker> {
    Arc::new(memory::MemoryBroker::new(Arc::clone(hub), node_id))
}
