//! Shared test harness: the real gateway on 127.0.0.1:0, real clients.
#![allow(dead_code)]

pub mod clock;
pub mod cluster;
pub mod http;
pub mod metrics;
pub mod pki;
pub mod process;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pushgate::authenticators::TokenIsUser;
use pushgate::config::{Config, Settings};
use pushgate::core::{Authenticator, Payload, Published, Push};
use pushgate::proto::push_service_client::PushServiceClient;
use pushgate::proto::{PushRequest, push_request};
use pushgate::server::{self, Listeners, Running};
use serde_json::{Value, json};

use self::ws::{ENVELOPE, Ws, next_json, next_text, send_json, try_connect};

/// How long a test waits for any one event before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// A gRPC client of PushService.
pub type PushClient = PushServiceClient<tonic::transport::Channel>;

/// A gateway started for one test.
pub struct Gateway {
    pub running: Running,
    pub config: Config,
}

impl Gateway {
    /// Waits until the hub's push count holds still for 300 ms (bounded by
    /// [`WAIT`]): the gateway has stopped reading a producer's stream.
    /// Returns the count.
    pub async fn until_pushes_stall(&self) -> u64 {
        let pushes = || self.running.hub.stats().pushes;
        let stalled = tokio::time::timeout(WAIT, async {
            let mut last = pushes();
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let now = pushes();
                if now == last {
                    return now;
                }
                last = now;
            }
        });
        stalled.await.expect("the gateway holds still while no reply is read")
    }

    pub fn public(&self) -> SocketAddr {
        self.running.public_addr
    }
    pub fn internal(&self) -> SocketAddr {
        self.running.internal_addr
    }
    /// `ws://127.0.0.1:PORT/ws`
    pub fn ws_url(&self) -> String {
        format!("ws://{}{}", self.public(), self.config.public.ws_path)
    }
    /// `http://127.0.0.1:PORT` of the internal listener.
    pub fn internal_url(&self) -> String {
        format!("http://{}", self.internal())
    }
    /// A gRPC client of PushService.
    pub async fn grpc(&self) -> PushClient {
        PushServiceClient::connect(self.internal_url()).await.expect("grpc connect")
    }
}

/// Default settings for tests: loopback port 0 for both listeners.
pub fn settings() -> Settings {
    Settings {
        public_addr: Some("127.0.0.1:0".parse().expect("addr")),
        internal_addr: Some("127.0.0.1:0".parse().expect("addr")),
        ..Default::default()
    }
}

/// `settings` with a ping every 300 ms and 250 ms to answer it: a client
/// that keeps being pinged is still open.
pub fn fast_heartbeat(settings: Settings) -> Settings {
    Settings {
        ping_interval: Some(Duration::from_millis(300)),
        pong_timeout: Some(Duration::from_millis(250)),
        ..settings
    }
}

/// Starts a gateway with `settings` and `--auth none`.
pub async fn start(settings: Settings) -> Gateway {
    start_with(settings, Arc::new(TokenIsUser)).await
}

/// Starts a gateway with `settings` and a given authenticator.
pub async fn start_with(settings: Settings, auth: Arc<dyn Authenticator>) -> Gateway {
    let config = settings.resolve().expect("valid test config");
    let listeners = Listeners::bind(&config).expect("bind");
    let running = server::start(config.clone(), listeners, auth, std::future::pending()).await.expect("start");
    Gateway { running, config }
}

/// Polls `condition` every millisecond until it holds; fails after [`WAIT`]
/// naming `what`. Both are real time: the pauses are taken on a blocking
/// thread, so on a paused clock polling moves no time (see [`clock`]).
pub async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let started = std::time::Instant::now();
    while !condition() {
        assert!(started.elapsed() < WAIT, "never: {what}");
        let pause = tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(1)));
        pause.await.expect("a pause");
    }
}

/// A gRPC text push request.
pub fn text_push(user: &str, event: &str, message: &str) -> PushRequest {
    PushRequest {
        user_id: user.into(),
        event: event.into(),
        payload: Some(push_request::Payload::Message(message.into())),
        ..Default::default()
    }
}

// ------------------------------------------------------------ the hub

impl Gateway {
    /// Publishes `payload` to `user` on `event` straight to the hub.
    pub fn push(&self, user: &str, event: &str, payload: Payload) -> Published {
        self.running.hub.publish(Push::new(user, event, payload)).expect("publish")
    }

    /// Publishes `text` to `user` on `event` straight to the hub.
    pub fn push_text(&self, user: &str, event: &str, text: &str) -> Published {
        self.push(user, event, Payload::text(text.to_owned()))
    }

    /// How many connections `user` has joined to the hub.
    pub fn online(&self, user: &str) -> u32 {
        self.running.hub.online(&[user.to_owned()])[0]
    }

    /// Polls the hub until `user` has `n` connections (registration and
    /// leaving are asynchronous); fails after [`WAIT`].
    pub async fn wait_online(&self, user: &str, n: u32) {
        eventually(&format!("{user} has {n} connections"), || self.online(user) == n).await;
    }

    /// Proves the gateway still serves others: a fresh client gets its push.
    pub async fn still_healthy(&self) {
        let mut client = self.compat_tab("healthy", "h").await;
        assert_eq!(self.push_text("healthy", "h", "still here").delivered, 1);
        assert_eq!(next_text(&mut client).await, "still here");
    }
}

// ------------------------------------------------------------ browsers

impl Gateway {
    /// A wserver-compatible WebSocket (no sub-protocol), not registered.
    pub async fn compat(&self) -> Ws {
        try_connect(&self.ws_url(), &[]).await.expect("compat connect")
    }

    /// An envelope-mode WebSocket (`pushgate.v1`), not registered.
    pub async fn envelope(&self) -> Ws {
        try_connect(&self.ws_url(), &[ENVELOPE]).await.expect("envelope connect")
    }

    /// A wserver-compatible tab of `user` on `event`, joined to the hub.
    pub async fn compat_tab(&self, user: &str, event: &str) -> Ws {
        let before = self.online(user);
        let mut ws = self.compat().await;
        send_json(&mut ws, json!({"token": user, "event": event})).await;
        self.wait_online(user, before + 1).await;
        ws
    }

    /// An envelope-mode tab of `user` on `events`, resuming after `since`
    /// when given; returns it with its `registered` frame.
    pub async fn envelope_tab(&self, user: &str, events: &[&str], since: Option<u64>) -> (Ws, Value) {
        let mut ws = self.envelope().await;
        let mut register = json!({"token": user, "events": events});
        if let Some(since) = since {
            register["since"] = json!(since);
        }
        send_json(&mut ws, register).await;
        let registered = next_json(&mut ws).await;
        assert_eq!(registered["type"], "registered", "{registered}");
        (ws, registered)
    }
}
