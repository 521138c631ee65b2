//! Shared test harness: the real gateway on 127.0.0.1:0, real clients.
#![allow(dead_code)]

pub mod pki;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pushgate::authenticators::TokenIsUser;
use pushgate::config::{Config, Settings};
use pushgate::core::Authenticator;
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

// ------------------------------------------------------------ shared clients

use futures_util::{SinkExt, StreamExt};
use pushgate::proto::{PushRequest, push_request};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A browser-like WebSocket client.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

impl Gateway {
    /// Polls the hub until `user` has `n` connections (registration and
    /// leaving are asynchronous); fails after [`WAIT`].
    pub async fn wait_online(&self, user: &str, n: u32) {
        let users = [user.to_owned()];
        let polled = timeout(WAIT, async {
            while self.running.hub.online(&users)[0] != n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        polled.await.unwrap_or_else(|_| panic!("{user} never had {n} connections"));
    }

    /// Opens a WebSocket, in envelope mode (`pushgate.v1`) or wserver's.
    pub async fn connect(&self, envelope: bool) -> Ws {
        let mut request = self.ws_url().into_client_request().expect("request");
        if envelope {
            request.headers_mut().insert("sec-websocket-protocol", "pushgate.v1".parse().expect("value"));
        }
        let (ws, _) =
            timeout(WAIT, tokio_tungstenite::connect_async(request)).await.expect("connect in time").expect("connect");
        ws
    }

    /// A wserver-compatible tab of `user` on `event`, joined to the hub.
    pub async fn compat_tab(&self, user: &str, event: &str) -> Ws {
        let before = self.running.hub.online(&[user.to_owned()])[0];
        let mut ws = self.connect(false).await;
        send_json(&mut ws, json!({"token": user, "event": event})).await;
        self.wait_online(user, before + 1).await;
        ws
    }
}

/// Sends `value` as a text frame.
pub async fn send_json<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, value: Value) {
    ws.send(Message::text(value.to_string())).await.expect("send");
}

/// The next data frame (pings and pongs skipped); fails on a close.
pub async fn next_frame<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Message {
    loop {
        let frame = timeout(WAIT, ws.next()).await.expect("a frame in time").expect("stream open").expect("frame");
        match frame {
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(close) => panic!("unexpected close {close:?}"),
            data => return data,
        }
    }
}

/// The next data frame, which must be text.
pub async fn next_text<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> String {
    match next_frame(ws).await {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The next data frame, which must be JSON text.
pub async fn next_json<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Value {
    serde_json::from_str(&next_text(ws).await).expect("a JSON frame")
}

/// Reads until the server's close frame (data frames skipped) and returns its
/// code and reason; then reads on, which answers the close, to the end.
pub async fn closed<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> (u16, String) {
    let result = loop {
        match timeout(WAIT, ws.next()).await.expect("close in time") {
            Some(Ok(Message::Close(Some(frame)))) => break (frame.code.into(), frame.reason.as_str().to_owned()),
            Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let _ = timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    result
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
