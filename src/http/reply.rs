//! A short answer of the internal port — a status, at most one header and
//! a plain-text body — which the router hands to hyper as a response and
//! the listener's own HTTP/1.1 path ([`super::http1`]) writes as bytes. Both
//! come out the same, byte for byte: the header order below is the one
//! axum and hyper give.

use std::borrow::Cow;
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The body's content type, whenever there is a body.
const TEXT: &str = "text/plain; charset=utf-8";

/// An answer: a status, a header, a text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reply {
    status: StatusCode,
    /// A header of its own, before `content-length`.
    header: Option<(HeaderName, &'static str)>,
    /// A text body, sent with a content type; none at all without one (as
    /// axum answers a bare status).
    body: Option<Cow<'static, str>>,
    /// Whether the response carries its `content-length` among its headers,
    /// as a handler's answer does (axum's router adds it); otherwise hyper
    /// writes it after all the others, `connection: close` included.
    sized: bool,
}

impl Reply {
    /// A bare status: no body, no content type.
    pub(super) fn status(status: StatusCode) -> Self {
        Self { status, header: None, body: None, sized: true }
    }

    /// A status with a text body.
    pub(super) fn text(status: StatusCode, body: impl Into<Cow<'static, str>>) -> Self {
        Self { status, header: None, body: Some(body.into()), sized: true }
    }

    /// The same with a header of its own.
    pub(super) fn with(self, name: HeaderName, value: &'static str) -> Self {
        Self { header: Some((name, value)), ..self }
    }

    /// The same without a `content-length` header of its own, for hyper to
    /// add last: an answer given outside a handler (a middleware's).
    pub(super) fn length_last(self) -> Self {
        Self { sized: false, ..self }
    }

    /// Whether the answer closes its connection (`connection: close`).
    pub(super) fn closes(&self) -> bool {
        matches!(&self.header, Some((name, value)) if name == header::CONNECTION && *value == "close")
    }

    /// Appends the answer to `out` as hyper writes it over HTTP/1.1: the
    /// status line, the content type, the header, `content-length` (last of
    /// all when [`Self::length_last`]), `connection: close` when `close` and the
    /// header does not say it already, `date`, then the body.
    pub(super) fn write_http1(&self, out: &mut Vec<u8>, close: bool) {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(self.status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        let body = self.body.as_deref().unwrap_or("");
        if self.body.is_some() {
            line(out, "content-type", TEXT);
        }
        if let Some((name, value)) = &self.header {
            line(out, name.as_str(), value);
        }
        let mut length = itoa::Buffer::new();
        let length = length.format(body.len());
        if self.sized {
            line(out, "content-length", length);
        }
        if close && !self.closes() {
            line(out, "connection", "close");
        }
        if !self.sized {
            line(out, "content-length", length);
        }
        out.extend_from_slice(b"date: ");
        with_date(|date| out.extend_from_slice(date.as_bytes()));
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body.as_bytes());
    }
}

/// `name: value\r\n`.
fn line(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let length = self.body.as_deref().map_or(0, str::len);
        let mut response = match self.body {
            Some(body) => (self.status, body).into_response(),
            None => self.status.into_response(),
        };
        let headers = response.headers_mut();
        if let Some((name, value)) = self.header {
            headers.insert(name, HeaderValue::from_static(value));
        }
        if self.sized {
            headers.insert(header::CONTENT_LENGTH, length.into());
        }
        response
    }
}

thread_local! {
    /// This thread's `date` header and the second it is for, formatted once
    /// a second (as hyper caches its own).
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Calls `f` with the current `date` header value (RFC 9110 §5.6.7).
fn with_date(f: impl FnOnce(&str)) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    DATE.with_borrow_mut(|(formatted_at, date)| {
        if *formatted_at != second {
            *date = httpdate::fmt_http_date(now);
            *formatted_at = second;
        }
        f(date);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(reply: &Reply, close: bool) -> String {
        let mut out = Vec::new();
        reply.write_http1(&mut out, close);
        let text = String::from_utf8(out).expect("text");
        // The date changes; its place does not.
        let (before, after) = text.split_once("date: ").expect("a date");
        let (_, after) = after.split_once("\r\n").expect("its end");
        format!("{before}date: D\r\n{after}")
    }

    #[test]
    fn answers_are_written_in_hypers_order() {
        let sent = Reply::text(StatusCode::OK, "message sent to 2 clients");
        assert_eq!(
            written(&sent, false),
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 25\r\n\
             date: D\r\n\r\nmessage sent to 2 clients"
        );
        let refused = Reply::status(StatusCode::UNAUTHORIZED).with(header::WWW_AUTHENTICATE, "Bearer");
        assert_eq!(
            written(&refused, true),
            "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer\r\ncontent-length: 0\r\nconnection: close\r\n\
             date: D\r\n\r\n"
        );
        assert_eq!(
            written(&refused.length_last(), true),
            "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer\r\nconnection: close\r\ncontent-length: 0\r\n\
             date: D\r\n\r\n"
        );
        let late = Reply::text(StatusCode::REQUEST_TIMEOUT, "late").with(header::CONNECTION, "close");
        assert!(late.closes());
        assert_eq!(
            written(&late, true),
            "HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n\
             content-length: 4\r\ndate: D\r\n\r\nlate"
        );
    }

    #[test]
    fn the_date_is_an_http_date() {
        let mut seen = String::new();
        with_date(|date| seen = date.to_owned());
        assert!(httpdate::parse_http_date(&seen).is_ok(), "{seen}");
        assert_eq!(seen.len(), 29);
    }
}
