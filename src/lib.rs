//! pushgate — a push gateway. Backends push `{user_id, event, message}` over
//! gRPC or HTTP; browsers connected over WebSocket receive it in real time.
//!
//! # Embedding
//! A Rust program embeds the gateway with [`server::start`]: give it a
//! [`config::Config`] (from [`config::Settings::resolve`]), the bound
//! [`server::Listeners`], an [`core::Authenticator`] (your token check, which
//! returns an [`core::Identity`]) and a shutdown future. The producer contract
//! is the generated [`proto`] module; `examples/embed.rs` shows the whole of it.
//!
//! # Layout
//! - [`core`]: the transport-free hub — users, connections, subscriptions,
//!   per-user `seq` and history, send queues, the authentication seam,
//!   producer keys, metrics, close codes.
//! - [`authenticators`]: the `--auth` modes (none, tokens, JWT, webhook).
//! - [`broker`]: the transports that let several nodes share users' streams
//!   (Redis).
//! - [`config`]: flags, environment and TOML file resolved into one `Config`.
//! - [`server`]: the one place that wires the adapters to the hub, binds the
//!   listeners and owns shutdown.
//! - [`proto`]: the generated `pushgate.v1` types and stubs.
//! - `ws` (crate-private): the public listener — WebSocket handshake, browser
//!   sessions.
//! - `api`: the producer API over the proto types, shared by the gRPC and
//!   HTTP adapters (convert → call the hub → convert).
//! - `grpc`: the `pushgate.v1.PushService` tonic service, health, reflection.
//! - `http`: the internal HTTP routes — wserver's `POST /push`, the `/v1/*`
//!   JSON mirror, health, metrics.
//! - `net`: what both listeners share — the accept loop, TLS, the `Bearer`
//!   parser.
//!
//! A push takes two hops: an adapter converts the request and calls
//! [`core::Hub::publish`], which queues one shared delivery to each matching
//! connection without waiting; each connection's session task wakes and
//! writes everything queued in one go. docs/architecture.md follows a push
//! through the code.

#![warn(missing_docs)]

pub mod authenticators;
pub mod broker;
pub mod config;
pub mod core;
pub mod proto;
pub mod server;

#[doc(hidden)]
pub mod fuzzing;

pub(crate) mod api;
pub(crate) mod grpc;
pub(crate) mod http;
pub(crate) mod net;
pub(crate) mod ws;
