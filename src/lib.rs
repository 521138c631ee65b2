//! pushgate — a push gateway. Backends push `{user_id, event, message}` over
//! gRPC or HTTP; browsers connected over WebSocket receive it in real time.
//!
//! # Layout
//! - [`core`]: the transport-free hub — users, connections, subscriptions,
//!   per-user `seq` and history, send queues, authentication seam, close codes.
//! - [`ws`]: the public listener — WebSocket handshake, browser sessions.
//! - [`api`]: the producer API over the proto types, shared by the gRPC and
//!   HTTP adapters (convert → call the hub → convert).
//! - [`grpc`]: the `pushgate.v1.PushService` tonic service, health, reflection.
//! - [`http`]: the internal HTTP routes — wserver's `POST /push`, the `/v1/*`
//!   JSON mirror, health.
//! - [`server`]: the one place that wires the adapters to the hub, binds the
//!   listeners and owns shutdown.
//! - [`auth`]: the `--auth` modes beyond the core's (JWT, webhook).
//! - [`tls`]: rustls acceptors for both listeners, mutual TLS for producers.
//! - [`config`]: flags, environment and TOML file resolved into one `Config`.
//! - [`proto`]: the generated `pushgate.v1` types and stubs.
//!
//! A push takes two hops: an adapter converts the request and calls
//! [`core::Hub::publish`], which queues one shared delivery to each matching
//! connection without waiting; each connection's session task wakes and
//! writes everything queued in one go.

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod core;
pub mod grpc;
pub mod http;
pub mod server;
pub mod tls;
pub mod ws;

/// The generated `pushgate.v1` protobuf types, gRPC stubs and proto3-JSON
/// serde implementations.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("pushgate.v1");
    include!(concat!(env!("OUT_DIR"), "/pushgate.v1.serde.rs"));

    /// The encoded file descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pushgate_descriptor.bin"));
}
