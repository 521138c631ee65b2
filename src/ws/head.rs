//! The first request of a connection, read by the listener itself. Nearly
//! every connection opens with its WebSocket upgrade; that request is
//! checked and answered here, without hyper's HTTP/1 connection (its
//! buffers, header map and upgrade hand-off were about a third of the
//! gateway's work per connection, BENCHMARKS.md "The upgrade without
//! hyper"). Anything else — another path, another method, HTTP/1.0, a body,
//! a head hyper would refuse — goes to hyper with the bytes read so far, so
//! its answers stay hyper's.

use std::io;

use bytes::Bytes;
use hyper::header::HeaderName;
use hyper::{Method, Version};
use tokio::io::AsyncReadExt as _;

use super::MAX_HEADER_BYTES;
use super::handshake::UpgradeRequest;
use crate::net::tls::Socket;

/// Headers a claimed upgrade may have; a browser sends about fifteen. A
/// request with more goes to hyper (which takes up to a hundred).
const MAX_HEADERS: usize = 48;

/// What the first request turned out to be.
pub(super) enum First {
    /// A complete `GET` head for a path the caller claims, HTTP/1.1, without
    /// a body.
    Claimed(Claimed),
    /// Anything else, complete or not: the bytes read, for hyper.
    Other(Bytes),
    /// The client closed before sending a whole head.
    Closed,
}

/// Reads the head of the first request from `stream` (at most
/// [`MAX_HEADER_BYTES`]; more goes to hyper, which answers 431) and sorts it
/// by `claims(path)`. Bytes that can no longer begin a request go to hyper
/// as soon as they come (it answers 400 at once, as before), so a client
/// speaking something else is not held until the timeout. The caller bounds
/// the time it takes.
pub(super) async fn read(stream: &mut Socket, claims: impl Fn(&str) -> bool) -> io::Result<First> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let searched = buf.len().saturating_sub(3);
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(First::Closed);
        }
        // The usual case, a whole head in the first read, is parsed once.
        if buf[searched..].windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(sort(Bytes::from(buf), claims));
        }
        match status(&buf) {
            // A head whose lines end in a bare LF.
            Ok(httparse::Status::Complete(_)) => return Ok(sort(Bytes::from(buf), claims)),
            Ok(httparse::Status::Partial) if buf.len() <= MAX_HEADER_BYTES => {}
            _ => return Ok(First::Other(Bytes::from(buf))),
        }
        if buf.len() == buf.capacity() {
            buf.reserve(1024);
        }
    }
}

/// What httparse makes of the bytes so far: a whole head, the start of
/// one, or an error (not HTTP, or more headers than the listener takes),
/// for hyper to answer.
fn status(read: &[u8]) -> httparse::Result<usize> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    httparse::Request::new(&mut headers).parse(read)
}

/// Parses a buffer that holds a whole head; `Other` unless it is claimed.
pub(super) fn sort(bytes: Bytes, claims: impl Fn(&str) -> bool) -> First {
    match parse(&bytes, claims) {
        Some(claimed) => First::Claimed(claimed),
        None => First::Other(bytes),
    }
}

/// Where a part of the head is in the buffer (the head is at most
/// [`MAX_HEADER_BYTES`] long).
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u16,
    end: u16,
}

/// The claimed request in `bytes`, if it is one.
fn parse(bytes: &Bytes, claims: impl Fn(&str) -> bool) -> Option<Claimed> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = parsed.parse(bytes).ok()? else { return None };
    if len > MAX_HEADER_BYTES {
        return None;
    }
    let target = parsed.path?;
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    if parsed.method? != "GET" || parsed.version? != 1 || !claims(path) {
        return None;
    }
    // Within the head, which fits in a u16.
    let span = |part: &[u8]| {
        let start = part.as_ptr() as usize - bytes.as_ptr() as usize;
        Span { start: start as u16, end: (start + part.len()) as u16 }
    };
    let mut spans = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") || h.name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
        spans.push((span(h.name.as_bytes()), span(h.value)));
    }
    Some(Claimed { bytes: bytes.clone(), len, target: span(target.as_bytes()), headers: spans })
}

/// A first request the listener answers itself: the bytes read, with where
/// its target and headers are in them (as sent: the checks read them there,
/// with no header map).
pub(super) struct Claimed {
    bytes: Bytes,
    /// The head's length: what follows is the client's first frames.
    len: usize,
    target: Span,
    headers: Vec<(Span, Span)>,
}

impl Claimed {
    #[inline]
    fn at(&self, span: Span) -> &[u8] {
        &self.bytes[usize::from(span.start)..usize::from(span.end)]
    }

    /// The request target, query included.
    pub fn target(&self) -> &str {
        // httparse takes only visible ASCII in a target.
        std::str::from_utf8(self.at(self.target)).unwrap_or_default()
    }

    /// The headers as sent, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers.iter().map(|&(name, value)| (self.at(name), self.at(value)))
    }

    /// What the client sent after the head.
    pub fn rest(&self) -> Bytes {
        self.bytes.slice(self.len..)
    }
}

impl UpgradeRequest for Claimed {
    fn method(&self) -> &Method {
        &Method::GET
    }

    fn version(&self) -> Version {
        Version::HTTP_11
    }

    fn query(&self) -> Option<&str> {
        self.target().split_once('?').map(|(_, query)| query)
    }

    fn values(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> {
        self.headers
            .iter()
            .filter(move |&&(n, _)| self.at(n).eq_ignore_ascii_case(name.as_str().as_bytes()))
            .map(|&(_, v)| self.at(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header;

    fn sorted(head: &[u8]) -> First {
        sort(Bytes::copy_from_slice(head), |path| path == "/ws")
    }

    const UPGRADE: &str = "GET /ws?token=a%20b HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                           Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn an_upgrade_head_is_claimed_with_its_headers_and_what_follows() {
        let First::Claimed(request) = sorted(&[UPGRADE.as_bytes(), b"\x81\x80"].concat()) else {
            panic!("not claimed")
        };
        assert_eq!(request.target(), "/ws?token=a%20b");
        assert_eq!(request.query(), Some("token=a%20b"));
        assert_eq!(request.first(header::UPGRADE), Some(&b"websocket"[..]));
        assert_eq!(request.first(header::SEC_WEBSOCKET_KEY), Some(&b"dGhlIHNhbXBsZSBub25jZQ=="[..]));
        assert_eq!(request.first(header::ORIGIN), None);
        let names: Vec<_> = request.headers().map(|(name, _)| String::from_utf8_lossy(name).into_owned()).collect();
        assert_eq!(names, ["Host", "Upgrade", "Connection", "Sec-WebSocket-Key"]);
        assert_eq!(&request.rest()[..], b"\x81\x80");
    }

    #[test]
    fn a_head_is_told_from_its_start_and_from_what_is_not_http() {
        for partial in [&b"\x16\x03\x01\x02\x00\x01"[..], b"GET /ws HTTP/1.1\r\nBad Header", b"SSH-2.0-x\r\n"] {
            assert!(status(partial).is_err(), "{partial:?}");
        }
        for partial in [&b"G"[..], b"GET /w", b"GET /ws HTTP/1.1\r\nHost: x\r\n"] {
            assert_eq!(status(partial), Ok(httparse::Status::Partial), "{partial:?}");
        }
        let bare_lf = UPGRADE.replace("\r\n", "\n");
        assert!(matches!(status(bare_lf.as_bytes()), Ok(httparse::Status::Complete(_))));
        assert!(matches!(sorted(bare_lf.as_bytes()), First::Claimed(_)), "a head with bare LFs is one too");
    }

    #[test]
    fn everything_else_goes_to_hyper_as_it_was_read() {
        let heads = [
            "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
            UPGRADE.replace("GET", "HEAD"),
            UPGRADE.replace("GET", "POST"),
            UPGRADE.replace("HTTP/1.1", "HTTP/1.0"),
            UPGRADE.replace("Host: x", "Content-Length: 0"),
            UPGRADE.replace("Host: x", "Transfer-Encoding: chunked"),
            UPGRADE.replace("Host: x", "Bad Header: x"),
            UPGRADE.replace("Host: x\r\n", &"X-A: b\r\n".repeat(MAX_HEADERS)),
            UPGRADE.replace("Host: x", &format!("X-A: {}", "b".repeat(MAX_HEADER_BYTES))),
            "GET /ws HTTP/1.1\r\nHost: \x01\r\n\r\n".to_owned(),
            "nonsense\r\n\r\n".to_owned(),
        ];
        for head in heads {
            let First::Other(bytes) = sorted(head.as_bytes()) else { panic!("claimed: {head:?}") };
            assert_eq!(&bytes[..], head.as_bytes());
        }
    }
}
