//! wserver's producers' HTTP/1.1 connections, served by the internal
//! listener itself: a keep-alive connection of plain `POST /push` requests
//! — wserver's producers' hot path — is read, pushed and answered here,
//! without hyper's connection, its request and header maps and its body
//! channel (about a third of such a push's cost before its fan-out,
//! BENCHMARKS.md "wserver's push without hyper").
//!
//! Only the plainest request is served here: `POST /push` over HTTP/1.1,
//! a `content-length` within the push body limit, no `transfer-encoding`,
//! `expect` or `upgrade`, a `connection` header (if any) of `close` or
//! `keep-alive`. At the first request that is anything else — another
//! path or method, HTTP/2's preface, a head httparse refuses — the
//! connection goes to hyper with the bytes read so far, and hyper serves it
//! from that request on, as it would have from the start. The answers are
//! the route's, byte for byte (`Reply::write_http1`), and the time limits
//! hyper's: a request head within the handshake timeout (which is also how
//! long an idle connection is kept), its body read and answered within the
//! request body timeout (else 408 and the connection closes). One limit is
//! added: the answer must be taken within the request body timeout too, so a
//! producer that never reads its answers does not hold the connection.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;

use super::Http1Push;
use super::deadlines::late;
use super::listener::Timeouts;
use super::reply::Reply;
use super::wserver::unauthorized;
use crate::net::tls::Socket;

/// The longest request head read here; a longer one goes to hyper.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Headers a request read here may have; a request with more goes to hyper.
const MAX_HEADERS: usize = 32;
/// Room kept for reading between requests; a larger buffer (grown for a
/// large body) is let go once its request is answered.
const KEPT_BUFFER: usize = 16 * 1024;

/// How a connection left [`serve`].
pub(super) enum Outcome {
    /// It is closed, or is to be.
    Done,
    /// It is hyper's from here: the socket, and the bytes read from it that
    /// hyper has to read first.
    Hyper(Socket, Bytes),
}

/// A `POST /push` this path serves: where its body starts and how long it
/// is, and what its head asks.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Head {
    pub(super) len: usize,
    pub(super) body: usize,
    /// `connection: close`.
    pub(super) close: bool,
    /// The first `authorization` header's value, where it is in the head.
    pub(super) authorization: Option<(usize, usize)>,
}

/// What the bytes read so far begin with.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Start {
    Push(Head),
    /// Not a whole head yet.
    Partial,
    /// A request (or anything) this path leaves to hyper.
    Other,
}

/// Serves `socket` until it closes, or until a request this path leaves to
/// hyper, to which the connection then belongs. `shutdown` closes it
/// between requests; a request read when it comes is answered with
/// `connection: close`.
pub(super) async fn serve(
    socket: Socket,
    push: &Http1Push,
    timeouts: Timeouts,
    shutdown: &CancellationToken,
) -> Outcome {
    let mut conn = Conn { socket, buf: Vec::with_capacity(1024), out: Vec::with_capacity(256) };
    loop {
        let head = match read_head(&mut conn.socket, &mut conn.buf, push.limit(), timeouts.handshake, shutdown).await {
            Ok(Some(head)) => head,
            Ok(None) => return Outcome::Hyper(conn.socket, Bytes::from(conn.buf)),
            Err(end) => {
                end.log();
                return Outcome::Done;
            }
        };
        let reply = match conn.answer(&head, push, timeouts.request_body).await {
            Ok(reply) => reply,
            Err(end) => {
                end.log();
                return Outcome::Done;
            }
        };
        let close = head.close || reply.closes() || shutdown.is_cancelled();
        match conn.respond(&reply, close, head.len + head.body, timeouts.request_body).await {
            Ok(()) if !close => {}
            Ok(()) => return Outcome::Done,
            Err(end) => {
                end.log();
                return Outcome::Done;
            }
        }
    }
}

/// A connection on this path: its socket, what was read from it and not yet
/// served, and the buffer its answers are written from.
struct Conn {
    socket: Socket,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl Conn {
    /// Makes the push `head` asks for, once its body is read, and gives its
    /// answer: 401 without a valid key (the body is not waited for), 408 if
    /// the body is not read and answered within `timeout`.
    async fn answer(&mut self, head: &Head, push: &Http1Push, timeout: Duration) -> Result<Reply, End> {
        let authorization = head.authorization.map(|(start, end)| &self.buf[start..end]);
        if !push.admits_key(authorization) {
            return Ok(unauthorized());
        }
        let end = head.len + head.body;
        let answered = timeout_at(Instant::now() + timeout, async {
            fill(&mut self.socket, &mut self.buf, end).await?;
            Ok::<_, End>(push.answer(&self.buf[head.len..end]).await)
        });
        match answered.await {
            Ok(reply) => reply,
            Err(_) => {
                tracing::debug!(?timeout, "HTTP/1 push not read in time");
                Ok(late())
            }
        }
    }

    /// Writes `reply` within `timeout`, then either closes the connection
    /// (`close`) or makes it ready for the next request: the request's
    /// bytes (up to `end`) are dropped, the body of a refused push being
    /// read past first, as hyper does, to keep the connection.
    async fn respond(&mut self, reply: &Reply, close: bool, end: usize, timeout: Duration) -> Result<(), End> {
        self.out.clear();
        reply.write_http1(&mut self.out, close);
        let written = timeout_at(Instant::now() + timeout, async {
            self.socket.write_all(&self.out).await.map_err(End::Failed)?;
            self.socket.flush().await.map_err(End::Failed)?;
            if close {
                return self.socket.shutdown().await.map_err(End::Failed);
            }
            fill(&mut self.socket, &mut self.buf, end).await
        });
        written.await.map_err(|_| End::Slow)??;
        if !close {
            self.buf.drain(..end);
            if self.buf.capacity() > KEPT_BUFFER && self.buf.len() < KEPT_BUFFER {
                self.buf.shrink_to(KEPT_BUFFER);
            }
        }
        Ok(())
    }
}

/// Why a connection ended on this path.
enum End {
    /// The client closed it.
    Closed,
    /// A read or write failed.
    Failed(io::Error),
    /// No whole head within the handshake timeout.
    Late,
    /// An answer not taken, or a refused body not sent, within the request
    /// body timeout.
    Slow,
    /// Shutdown, between requests.
    ShuttingDown,
}

impl End {
    fn log(&self) {
        match self {
            End::Failed(error) => tracing::debug!(%error, "producer connection ended with an error"),
            End::Late => tracing::debug!("producer connection ended: no request head within the handshake timeout"),
            End::Slow => tracing::debug!("producer connection ended: its answer, or a refused body, took too long"),
            End::Closed | End::ShuttingDown => {}
        }
    }
}

/// Reads until `buf` holds a whole head: `Some` for a push this path
/// serves, `None` for anything else (hyper's from here). Within `timeout`
/// of the call; at `shutdown` while nothing of a head has come.
async fn read_head(
    socket: &mut Socket,
    buf: &mut Vec<u8>,
    limit: usize,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<Option<Head>, End> {
    let deadline = Instant::now() + timeout;
    loop {
        let idle = buf.is_empty();
        if !idle {
            match start(buf, limit) {
                Start::Push(head) => return Ok(Some(head)),
                Start::Other => return Ok(None),
                Start::Partial if buf.len() > MAX_HEAD_BYTES => return Ok(None),
                Start::Partial => {}
            }
        }
        let read = async {
            match timeout_at(deadline, read_more(socket, buf)).await {
                Ok(read) => read,
                Err(_) => Err(End::Late),
            }
        };
        if idle {
            tokio::select! {
                biased;
                read = read => read?,
                () = shutdown.cancelled() => return Err(End::ShuttingDown),
            }
        } else {
            read.await?;
        }
    }
}

/// Reads until `buf` holds `len` bytes.
async fn fill(socket: &mut Socket, buf: &mut Vec<u8>, len: usize) -> Result<(), End> {
    if buf.capacity() < len {
        buf.reserve(len - buf.len());
    }
    while buf.len() < len {
        read_more(socket, buf).await?;
    }
    Ok(())
}

/// Reads what the socket has into `buf` (at least one byte).
async fn read_more(socket: &mut Socket, buf: &mut Vec<u8>) -> Result<(), End> {
    if buf.len() == buf.capacity() {
        buf.reserve(1024);
    }
    match socket.read_buf(buf).await {
        Ok(0) => Err(End::Closed),
        Ok(_) => Ok(()),
        Err(error) => Err(End::Failed(error)),
    }
}

/// Sorts the bytes read so far: a push this path serves, a head not whole
/// yet, or anything else.
pub(super) fn start(buf: &[u8], limit: usize) -> Start {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Start::Partial,
        Err(_) => return Start::Other,
    };
    if request.method != Some("POST") || request.path != Some("/push") || request.version != Some(1) {
        return Start::Other;
    }
    let (mut body, mut close, mut authorization) = (None, false, None);
    for header in request.headers.iter() {
        let name = header.name;
        let value = header.value;
        if name.eq_ignore_ascii_case("content-length") {
            // One, of plain digits: hyper answers the others.
            match (body, content_length(value)) {
                (None, Some(length)) => body = Some(length),
                _ => return Start::Other,
            }
        } else if name.eq_ignore_ascii_case("connection") {
            match value.trim_ascii() {
                v if v.eq_ignore_ascii_case(b"close") => close = true,
                v if v.eq_ignore_ascii_case(b"keep-alive") => {}
                _ => return Start::Other,
            }
        } else if name.eq_ignore_ascii_case("authorization") {
            if authorization.is_none() {
                let start = value.as_ptr() as usize - buf.as_ptr() as usize;
                authorization = Some((start, start + value.len()));
            }
        } else if ["transfer-encoding", "expect", "upgrade"].iter().any(|n| name.eq_ignore_ascii_case(n)) {
            return Start::Other;
        }
    }
    match body {
        Some(body) if body <= limit => Start::Push(Head { len, body, close, authorization }),
        _ => Start::Other,
    }
}

/// A `content-length` of plain digits (hyper answers the others).
fn content_length(value: &[u8]) -> Option<usize> {
    if value.is_empty() || value.len() > 12 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUSH: &str = "POST /push HTTP/1.1\r\nhost: x\r\nauthorization: Bearer k\r\ncontent-length: 5\r\n\r\n";

    #[test]
    fn a_plain_push_is_read_here() {
        let Start::Push(head) = start(format!("{PUSH}hello").as_bytes(), 100) else { panic!("not read here") };
        assert_eq!((head.len, head.body, head.close), (PUSH.len(), 5, false));
        let (from, to) = head.authorization.expect("a key");
        assert_eq!(&PUSH[from..to], "Bearer k");
        let closing = PUSH.replace("host: x", "Connection: Close");
        assert!(matches!(start(closing.as_bytes(), 100), Start::Push(Head { close: true, .. })));
        let kept = PUSH.replace("host: x", "connection: keep-alive");
        assert!(matches!(start(kept.as_bytes(), 100), Start::Push(Head { close: false, .. })));
        assert_eq!(start(&PUSH.as_bytes()[..30], 100), Start::Partial);
        assert_eq!(start(b"", 100), Start::Partial);
    }

    #[test]
    fn everything_else_is_hypers() {
        let others = [
            PUSH.replace("POST", "PUT"),
            PUSH.replace("/push", "/push?x=1"),
            PUSH.replace("/push", "/v1/push"),
            PUSH.replace("HTTP/1.1", "HTTP/1.0"),
            PUSH.replace("content-length: 5", "content-length: 500"),
            PUSH.replace("content-length: 5", "content-length: +5"),
            PUSH.replace("content-length: 5", "transfer-encoding: chunked"),
            PUSH.replace("host: x", "content-length: 5"),
            PUSH.replace("host: x", "content-length: 5x"),
            PUSH.replace("host: x", "expect: 100-continue"),
            PUSH.replace("host: x", "connection: upgrade"),
            PUSH.replace("host: x", "upgrade: h2c"),
            PUSH.replace("host: x\r\n", &"x-a: b\r\n".repeat(MAX_HEADERS)),
            "POST /push HTTP/1.1\r\nhost: x\r\n\r\n".to_owned(),
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_owned(),
            "nonsense\r\n\r\n".to_owned(),
        ];
        for head in others {
            assert_eq!(start(head.as_bytes(), 100), Start::Other, "{head:?}");
        }
    }
}
