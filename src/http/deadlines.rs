//! Time limits of the internal listener, so a client sending nothing, or
//! sending one byte at a time, cannot hold a connection indefinitely:
//!
//! - [`Detecting`]: a new connection has the handshake timeout to show which
//!   protocol it speaks (the HTTP/2 preface, or bytes that are not it);
//! - an HTTP/1.1 request head has the handshake timeout too (hyper's header
//!   read timeout, set in `listener`; it is also how long an idle
//!   keep-alive connection is kept);
//! - [`read_in_time`]: an HTTP/1.1 request has the request body timeout from
//!   the end of its head to be read and answered, else 408 and the connection
//!   closes.
//!
//! HTTP/2 connections and streams get none of the last two: a `PushStream`
//! may last as long as the producer wants, and idle HTTP/2 connections are
//! watched by keep-alive pings instead.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::reply::Reply;

/// The client preface every HTTP/2 connection starts with (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection whose reads fail with `TimedOut` once its deadline passes,
/// until it has shown its protocol: its first bytes differ from the HTTP/2
/// preface (HTTP/1, whose head has hyper's own timeout from then on), or
/// the whole preface has arrived (HTTP/2). Writes pass through.
#[derive(Debug)]
pub(super) struct Detecting<I> {
    io: I,
    /// `None` once the protocol is known.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Bytes of the preface matched so far.
    matched: usize,
}

impl<I> Detecting<I> {
    /// `io`, which has `timeout` from now to show its protocol.
    pub(super) fn new(io: I, timeout: Duration) -> Self {
        Self { io, deadline: Some(Box::pin(tokio::time::sleep(timeout))), matched: 0 }
    }

    /// Follows the preface through newly read `bytes`; disarms the deadline
    /// once they leave it or complete it.
    fn saw(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if self.matched == H2_PREFACE.len() || H2_PREFACE[self.matched] != byte {
                self.deadline = None;
                return;
            }
            self.matched += 1;
        }
        if self.matched == H2_PREFACE.len() {
            self.deadline = None;
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Detecting<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.deadline.is_some() {
                    let filled = buf.filled();
                    let new = filled.get(before..).unwrap_or_default();
                    if new.is_empty() {
                        this.deadline = None; // end of stream: nothing left to wait for
                    } else {
                        this.saw(new);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if let Some(deadline) = this.deadline.as_mut() {
                    ready!(deadline.as_mut().poll(cx));
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within the handshake timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Detecting<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Middleware: an HTTP/1.x request must be read and answered within
/// `timeout` of the end of its head, else it is answered 408 and its
/// connection closed (its body is not read further). The listener puts only
/// HTTP/1.x requests behind it: HTTP/2 streams are flow-controlled and a
/// `PushStream` lasts as long as its producer wants. The handlers of the
/// internal port never wait on anything but the request body, so the limit
/// is in effect one on reading the body.
pub(super) async fn read_in_time(timeout: Duration, request: Request, next: Next) -> Response {
    in_time(timeout, next.run(request)).await
}

/// `answer`, if it is ready within `timeout`; else 408, and the connection
/// closes.
pub(super) async fn in_time(timeout: Duration, answer: impl Future<Output = Response>) -> Response {
    match tokio::time::timeout(timeout, answer).await {
        Ok(response) => response,
        Err(_) => {
            tracing::debug!(?timeout, "HTTP/1 request not read in time");
            late().into_response()
        }
    }
}

/// The 408 of a request not read and answered in time, which closes its
/// connection.
pub(super) fn late() -> Reply {
    Reply::text(StatusCode::REQUEST_TIMEOUT, "request not received in time").with(header::CONNECTION, "close")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    const DEADLINE: Duration = Duration::from_millis(50);

    /// Reads `conn` to its end or first error.
    async fn drain(conn: &mut Detecting<tokio::io::DuplexStream>) -> io::Result<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            match conn.read(&mut buf).await? {
                0 => return Ok(got),
                n => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[tokio::test]
    async fn silence_or_a_slow_preface_times_out() {
        for sent in [&b""[..], b"PRI * HTTP/2.0"] {
            let (mut client, server) = tokio::io::duplex(1024);
            let mut conn = Detecting::new(server, DEADLINE);
            client.write_all(sent).await.expect("write");
            let error = drain(&mut conn).await.expect_err("times out");
            assert_eq!(error.kind(), io::ErrorKind::TimedOut, "after {sent:?}");
        }
    }

    #[tokio::test]
    async fn http1_bytes_or_the_whole_preface_disarm_it() {
        for sent in [&b"P"[..], b"POST /push HTTP/1.1\r\n", b"G", &H2_PREFACE[..]] {
            let (mut client, server) = tokio::io::duplex(1024);
            let mut conn = Detecting::new(server, DEADLINE);
            client.write_all(sent).await.expect("write");
            let mut buf = [0u8; 64];
            let n = conn.read(&mut buf).await.expect("read");
            if sent == b"P" {
                // Still a preface prefix: armed.
                assert!(conn.deadline.is_some());
                continue;
            }
            assert_eq!(&buf[..n], sent);
            assert!(conn.deadline.is_none(), "after {sent:?}");
            tokio::time::sleep(DEADLINE * 3).await;
            client.write_all(b"later").await.expect("write");
            drop(client);
            assert_eq!(drain(&mut conn).await.expect("no deadline any more"), b"later");
        }
    }
}
