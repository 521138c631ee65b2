//! WebSocket clients: connecting, sending, and reading frames and closes.
//!
//! The readers take any stream of tungstenite messages: a plain or TLS
//! `WebSocketStream`, or a client whose socket a task of its own reads.

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::WAIT;

/// A browser-like WebSocket client.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The request header that offers the envelope mode's sub-protocol.
pub const ENVELOPE: (&str, &str) = ("sec-websocket-protocol", "pushgate.v1");

/// Opens a WebSocket to `url` with the given extra request headers; the
/// handshake's refusal is the error.
pub async fn try_connect(url: &str, headers: &[(&str, &str)]) -> Result<Ws, WsError> {
    let mut request = url.into_client_request().expect("request");
    for (name, value) in headers {
        let name = hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("header name");
        request.headers_mut().insert(name, value.parse().expect("header value"));
    }
    let (ws, _) = timeout(WAIT, tokio_tungstenite::connect_async(request)).await.expect("connect in time")?;
    Ok(ws)
}

/// Sends `text` as a text frame.
pub async fn send_text<S: Sink<Message, Error = WsError> + Unpin>(ws: &mut S, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// Sends `value` as a text frame.
pub async fn send_json<S: Sink<Message, Error = WsError> + Unpin>(ws: &mut S, value: Value) {
    send_text(ws, &value.to_string()).await;
}

/// The next data frame (pings and pongs skipped); fails on a close, or when
/// none comes within [`WAIT`] (pings or not).
pub async fn next_frame<S: Stream<Item = Result<Message, WsError>> + Unpin>(ws: &mut S) -> Message {
    let data = async {
        loop {
            match ws.next().await.expect("stream open").expect("frame") {
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                Message::Close(close) => panic!("unexpected close {close:?}"),
                data => return data,
            }
        }
    };
    timeout(WAIT, data).await.expect("a frame in time")
}

/// The next data frame, which must be text.
pub async fn next_text<S: Stream<Item = Result<Message, WsError>> + Unpin>(ws: &mut S) -> String {
    match next_frame(ws).await {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The next data frame, which must be JSON text.
pub async fn next_json<S: Stream<Item = Result<Message, WsError>> + Unpin>(ws: &mut S) -> Value {
    serde_json::from_str(&next_text(ws).await).expect("a JSON frame")
}

/// Reads up to the server's close frame and returns the data frames before it
/// (pings and pongs skipped) and the close's code and reason; fails when it
/// does not come within [`WAIT`]. Then reads on, which answers the close, to
/// the end.
pub async fn until_close<S: Stream<Item = Result<Message, WsError>> + Unpin>(
    ws: &mut S,
) -> (Vec<Message>, (u16, String)) {
    let mut data = Vec::new();
    let close = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return (frame.code.into(), frame.reason.as_str().to_owned()),
                Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(frame)) => data.push(frame),
                other => panic!("after {} data frames: expected a close frame, got {other:?}", data.len()),
            }
        }
    };
    let close = timeout(WAIT, close).await.expect("close in time");
    let _ = timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    (data, close)
}

/// The server's close code and reason; data frames before it are skipped.
pub async fn closed<S: Stream<Item = Result<Message, WsError>> + Unpin>(ws: &mut S) -> (u16, String) {
    until_close(ws).await.1
}

/// The server's close code, which must come before any other data frame.
pub async fn close_code<S: Stream<Item = Result<Message, WsError>> + Unpin>(ws: &mut S) -> u16 {
    let (data, (code, _)) = until_close(ws).await;
    assert!(data.is_empty(), "expected a close, got {data:?} before it");
    code
}

/// Every text frame up to the server's close frame, and its code; any other
/// data frame fails the test.
pub async fn texts_until_close<S: Stream<Item = Result<Message, WsError>> + Unpin>(ws: &mut S) -> (Vec<String>, u16) {
    let (data, (code, _)) = until_close(ws).await;
    let texts = data.into_iter().enumerate().map(|(i, frame)| match frame {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("after {i} frames: expected a text frame or a close frame, got {other:?}"),
    });
    (texts.collect(), code)
}

/// RFC 6455's example `Sec-WebSocket-Key`, valid for any upgrade.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Sends a plain upgrade request on `tcp` and reads the answer's head, which
/// must be a 101: the raw socket is then a WebSocket the test drives by hand.
pub async fn upgrade_raw(tcp: &mut TcpStream) {
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        timeout(WAIT, tcp.read_exact(&mut byte)).await.expect("101 in time").expect("read");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
}
