//! Browser-like clients over a TCP stream the test owns (so it can reset
//! it), producers, and the small tools the scenarios share: a clock shared
//! by producers and clients, pacing, percentiles, polling.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use pushgate::proto::{PushReply, PushRequest, push_request};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::common::PushClient;
use crate::common::WAIT;

/// A WebSocket client on a plain TCP stream.
pub type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket to `public`/ws, offering `pushgate.v1` when `envelope`.
pub async fn open(public: SocketAddr, envelope: bool) -> Result<Ws> {
    let mut request = format!("ws://{public}/ws").into_client_request()?;
    if envelope {
        request.headers_mut().insert("sec-websocket-protocol", "pushgate.v1".parse()?);
    }
    let opened = async {
        let stream = TcpStream::connect(public).await.context("connect")?;
        stream.set_nodelay(true)?;
        let (ws, _) = tokio_tungstenite::client_async(request, stream).await.context("upgrade")?;
        Ok::<_, anyhow::Error>(ws)
    };
    timeout(WAIT, opened).await.context("upgrade in time")?
}

/// Registers `user` on `event`. In the envelope mode it waits for the
/// `registered` answer; the wserver-compatible mode has none.
pub async fn register(ws: &mut Ws, user: &str, event: &str, envelope: bool) -> Result<()> {
    let message = serde_json::json!({"token": user, "event": event}).to_string();
    ws.send(Message::text(message)).await.context("send register")?;
    if envelope {
        let text = next_text(ws).await?;
        if !text.contains(r#""type":"registered""#) {
            bail!("expected registered, got {text}");
        }
    }
    Ok(())
}

/// Opens and registers.
pub async fn tab(public: SocketAddr, user: &str, event: &str, envelope: bool) -> Result<Ws> {
    let mut ws = open(public, envelope).await?;
    register(&mut ws, user, event, envelope).await?;
    Ok(ws)
}

/// The next text frame (pings and pongs skipped); an error on a close.
pub async fn next_text(ws: &mut Ws) -> Result<String> {
    loop {
        match timeout(WAIT, ws.next()).await.context("a frame in time")? {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(other)) => bail!("expected a text frame, got {other:?}"),
            Some(Err(error)) => bail!("read failed: {error}"),
            None => bail!("the stream ended"),
        }
    }
}

/// How a client goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// A close frame, then reading to the end (the server answers and closes).
    Clean,
    /// `SO_LINGER` 0 and drop: the kernel sends RST.
    Reset,
    /// Drop without a close frame: a bare FIN.
    Abandon,
}

impl Leave {
    pub const ALL: [Leave; 3] = [Leave::Clean, Leave::Reset, Leave::Abandon];
}

pub async fn leave(mut ws: Ws, how: Leave) -> Result<()> {
    match how {
        Leave::Clean => {
            ws.close(None).await.context("send close")?;
            let drained = async {
                while let Some(frame) = ws.next().await {
                    if let Err(error) = frame {
                        return Err(anyhow!("after our close: {error}"));
                    }
                }
                Ok(())
            };
            timeout(WAIT, drained).await.context("the server answers our close in time")??;
        }
        Leave::Reset => ws.get_ref().set_zero_linger().context("SO_LINGER 0")?,
        Leave::Abandon => {}
    }
    Ok(())
}

/// How a read to the end finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The server's close frame, with its code and reason.
    Closed(u16, String),
    /// The stream ended (or was reset) without a close frame.
    Cut(String),
}

impl Ending {
    pub fn code(&self) -> Option<u16> {
        match self {
            Ending::Closed(code, _) => Some(*code),
            Ending::Cut(_) => None,
        }
    }
}

/// Reads text frames until the server's close frame (or the end of the
/// stream), handing each to `each`; at most `limit` in all.
pub async fn read_to_end(ws: &mut Ws, limit: Duration, mut each: impl FnMut(&str)) -> Result<Ending> {
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => each(text.as_str()),
                Some(Ok(Message::Close(Some(frame)))) => {
                    break Ending::Closed(frame.code.into(), frame.reason.as_str().to_owned());
                }
                Some(Ok(Message::Close(None))) => break Ending::Closed(1005, String::new()),
                Some(Ok(_)) => {}
                Some(Err(error)) => break Ending::Cut(error.to_string()),
                None => break Ending::Cut("end of stream".into()),
            }
        }
    };
    let ending = timeout(limit, read).await.context("the server ends the connection in time")?;
    // Answer the close and read on to the server's FIN.
    let _ = timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    Ok(ending)
}

// ------------------------------------------------------------- producers

pub fn text_push(user: &str, event: &str, message: String) -> PushRequest {
    PushRequest {
        user_id: user.into(),
        event: event.into(),
        payload: Some(push_request::Payload::Message(message)),
        ..Default::default()
    }
}

/// A `PushStream` with its request sender and reply stream.
pub struct PushStream {
    pub tx: mpsc::Sender<PushRequest>,
    pub replies: tonic::Streaming<PushReply>,
    _client: PushClient,
}

impl PushStream {
    /// Opens a stream on `client`; at most `window` requests wait in the
    /// sender before tonic takes them.
    pub async fn open(mut client: PushClient, window: usize) -> Self {
        let (tx, rx) = mpsc::channel::<PushRequest>(window);
        let outbound = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        let opened = timeout(WAIT, client.push_stream(outbound)).await.expect("push stream in time");
        let replies = opened.expect("push stream").into_inner();
        Self { tx, replies, _client: client }
    }
}

// ------------------------------------------------------------- small tools

/// Nanoseconds since a process-wide instant: producers stamp messages with
/// it and clients subtract it from their own reading.
pub fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The `p`-th percentile (0..=100) of `values`, sorted in place.
pub fn percentile(values: &mut [u64], p: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let i = ((values.len() - 1) as f64 * p / 100.0).round() as usize;
    values[i]
}

/// Polls `check` every 20 ms until it returns `Some`, at most `limit`;
/// panics naming `what` otherwise.
pub async fn eventually<T>(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Paces work item `n` to start no earlier than `start + n / per_sec`
/// (no pacing when `per_sec` is `None`).
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub start: tokio::time::Instant,
    pub per_sec: Option<f64>,
}

impl Pace {
    pub fn full_speed() -> Self {
        Self { start: tokio::time::Instant::now(), per_sec: None }
    }

    pub async fn wait(&self, n: u64) {
        if let Some(rate) = self.per_sec {
            tokio::time::sleep_until(self.start + Duration::from_secs_f64(n as f64 / rate)).await;
        }
    }
}
