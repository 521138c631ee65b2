//! The floor's WebSocket listener: `GET /ws` upgrades (offering
//! `pushgate.v1` selects the envelope mode, as in pushgate), the register
//! message `{"token":"<user>","event":"<event>"}` (the token is the user, as
//! pushgate's `--auth none`), the `registered` frame in envelope mode; and
//! `GET /readyz`, answered 200, for the bench's readiness poll.
//!
//! After the register, the connection's task only reads and discards.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::{Conn, Floor, put_text_frame};
use crate::http1::header;

/// Longest upgrade request head read.
const MAX_HEAD: usize = 8192;
/// Longest client frame read (the register message).
const MAX_FRAME: u64 = 4096;
/// Time allowed from accept to register.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until the process ends, one task each.
pub async fn serve(listener: TcpListener, floor: Arc<Floor>) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            // Out of file descriptors, most likely: let some close.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let floor = Arc::clone(&floor);
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            if let Ok(Ok(Some(registered))) = tokio::time::timeout(REGISTER_TIMEOUT, upgrade(stream, &floor)).await {
                read_until_end(registered, &floor).await;
            }
        });
    }
}

/// A connection past its register, and who it belongs to.
struct Registered {
    conn: Arc<Conn>,
    user: String,
}

/// The register message; other keys are ignored.
#[derive(Deserialize)]
struct Register {
    token: String,
    event: String,
}

/// Upgrade and register; `None` for a `/readyz` or a request that is not an
/// upgrade (answered and closed).
async fn upgrade(mut stream: TcpStream, floor: &Floor) -> io::Result<Option<Registered>> {
    let head = read_head(&mut stream).await?;
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let Some(key) = header(&head, "sec-websocket-key").filter(|_| path.starts_with("/ws")) else {
        let status = if path == "/readyz" { "200 OK" } else { "404 Not Found" };
        let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        stream.write_all(answer.as_bytes()).await?;
        return Ok(None);
    };
    let envelope =
        header(&head, "sec-websocket-protocol").is_some_and(|p| p.split(',').any(|p| p.trim() == "pushgate.v1"));
    let protocol = if envelope { "Sec-WebSocket-Protocol: pushgate.v1\r\n" } else { "" };
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {}\r\n{protocol}\r\n",
        derive_accept_key(key.as_bytes())
    );
    stream.write_all(answer.as_bytes()).await?;
    let payload = read_client_frame(&mut stream).await?;
    let Ok(register) = serde_json::from_slice::<Register>(&payload) else { return Ok(None) };
    let id = floor.next_conn.fetch_add(1, Relaxed);
    let conn = Arc::new(Conn {
        stream,
        event: register.event.as_str().into(),
        envelope,
        writing: tokio::sync::Mutex::new(()),
        dead: AtomicBool::new(false),
    });
    // Joined before the `registered` frame: a push sent after the client
    // saw it must reach it.
    floor.join(&register.token, &conn);
    let registered = Registered { conn, user: register.token };
    if envelope {
        let json = format!(
            r#"{{"type":"registered","user":"{}","conn":"{id}","events":["{}"],"seq":0,"epoch":"floor"}}"#,
            registered.user, register.event
        );
        let mut frame = Vec::new();
        put_text_frame(&mut frame, json.as_bytes());
        if super::write_all(&registered.conn, &frame).await.is_err() {
            floor.leave(&registered.user, &registered.conn);
            return Ok(None);
        }
    }
    Ok(Some(registered))
}

/// Reads the request head, up to the blank line (the client sends nothing
/// more before the answer).
async fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Err(io::ErrorKind::InvalidData.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

/// Reads one masked client frame and returns its unmasked payload.
async fn read_client_frame(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await?;
    let len = match head[1] & 0x7f {
        126 => u64::from(stream.read_u16().await?),
        127 => stream.read_u64().await?,
        n => u64::from(n),
    };
    if len > MAX_FRAME || head[1] & 0x80 == 0 {
        return Err(io::ErrorKind::InvalidData.into());
    }
    let mut mask = [0u8; 4];
    stream.read_exact(&mut mask).await?;
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload).await?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok(payload)
}

/// Reads and discards until the client goes, then removes the connection.
async fn read_until_end(registered: Registered, floor: &Floor) {
    let mut buf = [0u8; 512];
    loop {
        if registered.conn.stream.readable().await.is_err() {
            break;
        }
        match registered.conn.stream.try_read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    floor.leave(&registered.user, &registered.conn);
}
