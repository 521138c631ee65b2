//! Shared test harness: the real gateway on 127.0.0.1:0, real clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pushgate::config::{Config, Settings};
use pushgate::core::{Authenticator, TokenIsUser};
use pushgate::proto::push_service_client::PushServiceClient;
use pushgate::server::{self, Listeners, Running};

/// How long a test waits for any one event before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// A gateway started for one test.
pub struct Gateway {
    pub running: Running,
    pub config: Config,
}

impl Gateway {
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
    pub async fn grpc(&self) -> PushServiceClient<tonic::transport::Channel> {
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
