//! Brokers: how the nodes of one cluster share each user's stream (seq,
//! epoch, history, idempotency keys), fan pushes out to each other, count
//! connections and pass control messages. The core's in-process hub is the
//! single-node case; [`redis`] is the transport for several nodes.

pub mod redis;
