//! Plumbing both listeners share, so each policy exists once: the accept loop
//! and the options of accepted sockets, TLS, the hand-over of a half-read
//! connection to hyper, the `Authorization: Bearer` parser and header text,
//! and the throttle of log lines a peer can cause.

pub(crate) mod options;
pub(crate) mod prefixed;
pub(crate) mod throttle;
pub(crate) mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// First pause after a failed accept (EMFILE, ENFILE, ENOBUFS...), doubled per
/// further failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts connections on `listener` until `shutdown`, handing each to
/// `accepted` with `TCP_NODELAY` set (pushes are small and latency matters;
/// see [`options`]).
/// A failed accept never ends the loop: it is logged and the loop pauses,
/// backing off from 10 ms to 1 s while failures repeat, so a full file table
/// neither spins the CPU nor stops the listener for long once it clears.
pub(crate) async fn accept_loop(
    listener: &TcpListener,
    name: &'static str,
    shutdown: &CancellationToken,
    mut accepted: impl FnMut(TcpStream, SocketAddr),
) {
    accept_loop_gated(listener, name, shutdown, None, 0, |stream, peer, _| accepted(stream, peer)).await;
}

/// [`accept_loop`], taking a permit of `gate` (when given) before each
/// accept and handing it over with the connection: while the gate has no
/// permit left, nothing is accepted and new connections wait in the kernel's
/// accept queue (`--listen-backlog`), costing this process nothing. Each
/// socket gets `send_buffer` as its `SO_SNDBUF` (0: the kernel's sizing).
pub(crate) async fn accept_loop_gated(
    listener: &TcpListener,
    name: &'static str,
    shutdown: &CancellationToken,
    gate: Option<&Arc<Semaphore>>,
    send_buffer: usize,
    mut accepted: impl FnMut(TcpStream, SocketAddr, Option<OwnedSemaphorePermit>),
) {
    let mut options = options::SocketOptions::on_listener(listener, send_buffer);
    let mut backoff = MIN_BACKOFF;
    loop {
        let next = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            next = accept(listener, gate) => next,
        };
        match next {
            Ok((stream, peer, permit)) => {
                backoff = MIN_BACKOFF;
                options.apply(&stream);
                accepted(stream, peer, permit);
            }
            Err(error) => {
                tracing::warn!(listener = name, %error, pause = ?backoff, "accept failed");
                if shutdown.run_until_cancelled(tokio::time::sleep(backoff)).await.is_none() {
                    break;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    tracing::debug!(listener = name, "stopped accepting");
}

/// A permit of `gate` (waiting for one), then the next connection.
async fn accept(
    listener: &TcpListener,
    gate: Option<&Arc<Semaphore>>,
) -> io::Result<(TcpStream, SocketAddr, Option<OwnedSemaphorePermit>)> {
    let permit = match gate {
        None => None,
        Some(gate) => Some(Arc::clone(gate).acquire_owned().await.map_err(io::Error::other)?),
    };
    let (stream, peer) = listener.accept().await?;
    Ok((stream, peer, permit))
}

/// A header value as text when it is visible ASCII (or tabs), as
/// `HeaderValue::to_str` reads it; `None` otherwise.
pub(crate) fn header_text(value: &[u8]) -> Option<&str> {
    let visible = value.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
    visible.then(|| std::str::from_utf8(value).ok()).flatten()
}

/// The credentials of an `Authorization: Bearer <credentials>` value. The
/// scheme is case-insensitive (RFC 9110 §11.1) and may be followed by any
/// amount of blank space; `None` for another scheme or empty credentials.
pub(crate) fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim().split_once([' ', '\t'])?;
    let credentials = credentials.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty()).then_some(credentials)
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for value in ["Bearer k", "bearer k", "BEARER k", "bEaReR   k ", " Bearer\tk"] {
            assert_eq!(bearer(value), Some("k"), "{value:?}");
        }
        for value in ["Basic k", "Bearer", "Bearer ", "Bearerk", "", "k"] {
            assert_eq!(bearer(value), None, "{value:?}");
        }
    }
}
