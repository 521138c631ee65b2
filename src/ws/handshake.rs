//! The HTTP side of the public listener: routing, and the WebSocket upgrade
//! with its checks (docs/protocol.md, "Handshake") — origin (403), token (401, or 503 when the
//! authenticator cannot decide), sub-protocol choice. Everything refused here
//! is refused before the upgrade, with a plain HTTP status.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Version};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::admission::SessionSlot;
use super::{Listener, Mode, WsContext, origin};
use crate::core::{AuthError, Identity};
use crate::net::tls::Socket;
use crate::net::{bearer, header_text as text};

/// The sub-protocol that selects the envelope mode.
pub const ENVELOPE_PROTOCOL: &str = "pushgate.v1";

/// An accepted upgrade, handed from the HTTP service to the connection task.
pub(super) struct Accepted<'a> {
    pub upgrade: Upgrade,
    pub mode: Mode,
    /// The identity of a token given at the handshake. Boxed: the
    /// connection's task keeps the room of what it is handed to its end.
    pub identity: Option<Box<Identity>>,
    /// `None` when `--max-connections` was reached: the session closes with
    /// 4003 right after the upgrade (docs/protocol.md, "Limits").
    pub slot: Option<SessionSlot<'a>>,
}

/// Where the upgraded stream is.
pub(super) enum Upgrade {
    /// With hyper, which hands it back once its 101 is written.
    Hyper(OnUpgrade),
    /// Here: the 101 is written; the bytes the client sent after its request.
    Direct(Socket, Bytes),
}

/// What the checks let through: the session's side of an upgrade, and the
/// `Sec-WebSocket-Accept` of its 101.
pub(super) struct Checked<'a> {
    mode: Mode,
    identity: Option<Box<Identity>>,
    slot: Option<SessionSlot<'a>>,
    accept: String,
}

impl<'a> Checked<'a> {
    /// The session's side, with the stream's way to it.
    pub fn accepted(self, upgrade: Upgrade) -> Accepted<'a> {
        Accepted { upgrade, mode: self.mode, identity: self.identity, slot: self.slot }
    }

    /// The 101 answer, for hyper.
    fn reply(&self) -> Reply {
        let mut reply = plain(StatusCode::SWITCHING_PROTOCOLS, "", &[]);
        let h = reply.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&self.accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if self.mode == Mode::Envelope {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(ENVELOPE_PROTOCOL));
        }
        reply
    }

    /// The same 101 answer as bytes, for the listener's own path.
    pub fn head(&self) -> Vec<u8> {
        const START: &[u8] =
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-accept: ";
        const PROTOCOL: &[u8] = b"\r\nsec-websocket-protocol: pushgate.v1";
        const END: &[u8] = b"\r\n\r\n";
        // Sized at once: growing it cost ~600 instructions per connection.
        let mut head = Vec::with_capacity(START.len() + self.accept.len() + PROTOCOL.len() + END.len());
        head.extend_from_slice(START);
        head.extend_from_slice(self.accept.as_bytes());
        if self.mode == Mode::Envelope {
            head.extend_from_slice(PROTOCOL);
        }
        head.extend_from_slice(END);
        head
    }
}

/// What the upgrade checks read of a request: hyper's, or the one the
/// listener read itself (`head::Claimed`).
pub(super) trait UpgradeRequest {
    /// The request's method.
    fn method(&self) -> &Method;
    /// The request's HTTP version.
    fn version(&self) -> Version;
    /// The target's query, without the `?`.
    fn query(&self) -> Option<&str>;
    /// The values of the `name` headers, in the request's order.
    fn values(&self, name: HeaderName) -> impl Iterator<Item = &[u8]>;

    /// The first `name` header's value.
    fn first(&self, name: HeaderName) -> Option<&[u8]> {
        self.values(name).next()
    }
}

impl<B> UpgradeRequest for Request<B> {
    fn method(&self) -> &Method {
        self.method()
    }

    fn version(&self) -> Version {
        self.version()
    }

    fn query(&self) -> Option<&str> {
        self.uri().query()
    }

    fn values(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> {
        self.headers().get_all(name).into_iter().map(HeaderValue::as_bytes)
    }
}

/// Where the service leaves an accepted upgrade for its connection task.
pub(super) type Pending<'a> = Mutex<Option<Accepted<'a>>>;

type Reply = Response<Full<Bytes>>;

/// Answers one HTTP request of the public listener.
pub(super) async fn respond<'a>(
    listener: &'a Listener,
    pending: &Pending<'a>,
    peer: IpAddr,
    mut req: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let ctx = &listener.ctx;
    let path = req.uri().path();
    if let (Some(push), "/push") = (&ctx.push, path) {
        return Ok(delegate(push, req).await);
    }
    if let Some(reply) = ctx.demo.as_ref().and_then(|demo| demo.respond(req.method(), path)) {
        return Ok(reply);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let known = path == ctx.config.ws_path || path == "/healthz" || path == "/readyz";
        let status = if known { StatusCode::METHOD_NOT_ALLOWED } else { StatusCode::NOT_FOUND };
        return Ok(plain(status, "", &[(header::ALLOW, "GET")]));
    }
    let reply = if path == ctx.config.ws_path {
        match check(listener, peer, &req).await {
            Ok(checked) => {
                let reply = checked.reply();
                let accepted = checked.accepted(Upgrade::Hyper(hyper::upgrade::on(&mut req)));
                *pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(accepted);
                reply
            }
            Err(refusal) => refusal.reply(),
        }
    } else if path == "/healthz" {
        plain(StatusCode::OK, "ok", &[])
    } else if path == "/readyz" {
        match ctx.hub.is_shutting_down() {
            false => plain(StatusCode::OK, "ready", &[]),
            true => plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down", &[]),
        }
    } else {
        plain(StatusCode::NOT_FOUND, "not found", &[])
    };
    Ok(reply)
}

/// Whether a `GET` of `path` is an upgrade request, as [`respond`] routes
/// it: the listener answers such a request itself when it opens a connection.
pub(super) fn is_upgrade_path(ctx: &WsContext, path: &str) -> bool {
    path == ctx.config.ws_path
        && !(ctx.push.is_some() && path == "/push")
        && ctx.demo.as_ref().is_none_or(|demo| !demo.serves(path))
}

/// Checks an upgrade request: everything its 101 answer and its session need.
pub(super) async fn check<'a>(
    listener: &'a Listener,
    peer: IpAddr,
    req: &(impl UpgradeRequest + Sync),
) -> Result<Checked<'a>, Refusal> {
    let ctx = &listener.ctx;
    let key = precheck(req, &ctx.config.allowed_origins)?;
    if ctx.hub.is_shutting_down() {
        return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").with(header::RETRY_AFTER, "5"));
    }
    if listener.admission().memory.over() {
        let held = listener.admission().memory.held();
        tracing::warn!(
            held,
            max_memory = ctx.config.max_memory,
            "upgrade refused: connections hold more than --max-memory"
        );
        return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded").with(header::RETRY_AFTER, "5"));
    }
    let identity = match token(req)? {
        None => None,
        Some(token) => Some(Box::new(ctx.authenticate(&token).await.map_err(|e| refuse_token(&e))?)),
    };
    let mode = if offers_envelope(req) { Mode::Envelope } else { Mode::Compat };
    let accept = derive_accept_key(key.as_bytes());
    let slot = listener.admission().sessions.acquire(peer);
    Ok(Checked { mode, identity, slot, accept })
}

/// The checks of an upgrade request that need nothing but the request:
/// method (405), version (400), the upgrade headers and key (426, 400) and
/// the origin (403). Returns the `Sec-WebSocket-Key`.
pub(super) fn precheck(req: &impl UpgradeRequest, allowed_origins: &[String]) -> Result<String, Refusal> {
    if *req.method() != Method::GET {
        return Err(Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "").with(header::ALLOW, "GET"));
    }
    if req.version() != hyper::Version::HTTP_11 {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "a WebSocket upgrade needs HTTP/1.1"));
    }
    let key = websocket_key(req)?;
    let origin = req.first(header::ORIGIN).map(|v| text(v).unwrap_or("\u{0}"));
    if !origin::allowed(allowed_origins, origin) {
        tracing::debug!(origin, "origin refused");
        return Err(Refusal::new(StatusCode::FORBIDDEN, "origin not allowed"));
    }
    Ok(key)
}

/// Hands `/push` to the injected wserver route (`--push-on-public`). Its
/// answers are a few bytes of text, collected into this listener's body type.
async fn delegate(push: &axum::Router, req: Request<Incoming>) -> Reply {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let response = match push.clone().oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (parts, body) = response.into_parts();
    match body.collect().await {
        Ok(body) => Response::from_parts(parts, Full::new(body.to_bytes())),
        Err(error) => {
            tracing::debug!(%error, "push on the public listener failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "", &[])
        }
    }
}

/// The `Sec-WebSocket-Key` of a valid version-13 upgrade request.
fn websocket_key(req: &impl UpgradeRequest) -> Result<String, Refusal> {
    let has_token = |name: HeaderName, token: &str| list_has(req, name, |t| t.eq_ignore_ascii_case(token.as_bytes()));
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        let refusal = Refusal::new(StatusCode::UPGRADE_REQUIRED, "this is a WebSocket endpoint");
        return Err(refusal.with(header::UPGRADE, "websocket"));
    }
    if req.first(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v != b"13") {
        let refusal = Refusal::new(StatusCode::UPGRADE_REQUIRED, "unsupported WebSocket version");
        return Err(refusal.with(header::SEC_WEBSOCKET_VERSION, "13"));
    }
    match req.first(header::SEC_WEBSOCKET_KEY).and_then(text).map(str::trim) {
        Some(key) if is_websocket_key(key) => Ok(key.to_owned()),
        Some(_) => Err(Refusal::new(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is not 16 bytes in base64")),
        None => Err(Refusal::new(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key")),
    }
}

/// True for the base64 form of 16 bytes (RFC 6455 §4.1): 22 characters of
/// the base64 alphabet, the last of which carries only 2 bits, then `==`.
fn is_websocket_key(key: &str) -> bool {
    let b = key.as_bytes();
    let alphabet = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    b.len() == 24 && b[..22].iter().all(alphabet) && matches!(b[21], b'A' | b'Q' | b'g' | b'w') && &b[22..] == b"=="
}

/// True when the client offers the `pushgate.v1` sub-protocol.
pub(super) fn offers_envelope(req: &impl UpgradeRequest) -> bool {
    list_has(req, header::SEC_WEBSOCKET_PROTOCOL, |p| p == ENVELOPE_PROTOCOL.as_bytes())
}

/// Whether an item of the comma-separated lists in the `name` headers
/// matches, with the whitespace around it trimmed; a value that is not
/// visible ASCII is not read.
fn list_has(req: &impl UpgradeRequest, name: HeaderName, matches: impl Fn(&[u8]) -> bool) -> bool {
    req.values(name)
        .filter(|v| text(v).is_some())
        .any(|v| v.split(|&b| b == b',').any(|item| matches(item.trim_ascii())))
}

/// The token given at the handshake: `Authorization: Bearer ...`, else
/// `?token=...` (percent-decoded; `+` is a space, as in a form).
pub(super) fn token(req: &impl UpgradeRequest) -> Result<Option<String>, Refusal> {
    let bad = || Refusal::new(StatusCode::UNAUTHORIZED, "malformed token");
    if let Some(value) = req.first(header::AUTHORIZATION) {
        let value = text(value).ok_or_else(bad)?;
        return bearer(value).map(|token| Some(token.to_owned())).ok_or_else(bad);
    }
    let query = req.query().unwrap_or("");
    let raw = query.split('&').find_map(|pair| pair.strip_prefix("token="));
    raw.map(|raw| percent_decode(raw).ok_or_else(bad)).transpose()
}

/// Decodes `%XX` escapes and `+`; `None` for a bad escape or non-UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                // Two hex digits; `from_str_radix` alone would also take a sign.
                let hex = bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// 401 for a refused token, 503 when the authenticator could not decide.
fn refuse_token(error: &AuthError) -> Refusal {
    tracing::debug!(%error, "handshake token refused");
    match error {
        AuthError::Invalid(_) => Refusal::new(StatusCode::UNAUTHORIZED, "invalid token"),
        AuthError::Expired => Refusal::new(StatusCode::UNAUTHORIZED, "token expired"),
        AuthError::Unavailable(_) => {
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "authentication unavailable").with(header::RETRY_AFTER, "5")
        }
    }
}

/// An upgrade refused before it happens: a status, a short text body and
/// at most one extra header.
pub(super) struct Refusal {
    pub status: StatusCode,
    pub body: &'static str,
    pub header: Option<(header::HeaderName, &'static str)>,
}

impl Refusal {
    fn new(status: StatusCode, body: &'static str) -> Self {
        Self { status, body, header: None }
    }

    fn with(self, name: header::HeaderName, value: &'static str) -> Self {
        Self { header: Some((name, value)), ..self }
    }

    fn reply(self) -> Reply {
        plain(self.status, self.body, self.header.as_slice())
    }

    /// The same answer as bytes, for the listener's own path, which closes
    /// the connection after it.
    pub fn head(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\ndate: {}\r\ncontent-length: {}\r\nconnection: close\r\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            httpdate::fmt_http_date(std::time::SystemTime::now()),
            self.body.len()
        );
        if let Some((name, value)) = &self.header {
            head += &format!("{name}: {value}\r\n");
        }
        if !self.body.is_empty() {
            head += "content-type: text/plain; charset=utf-8\r\n";
        }
        head += "\r\n";
        head += self.body;
        head.into_bytes()
    }
}

/// A response with a text body and the given headers.
fn plain(status: StatusCode, body: &'static str, headers: &[(header::HeaderName, &'static str)]) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *reply.status_mut() = status;
    for (name, value) in headers {
        reply.headers_mut().insert(name.clone(), HeaderValue::from_static(value));
    }
    if !body.is_empty() {
        reply.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_keys_are_16_bytes_of_base64() {
        assert!(is_websocket_key("dGhlIHNhbXBsZSBub25jZQ=="), "RFC 6455's example");
        for bad in ["", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZR==", "dGhlIHNhbXBsZSBub25j*Q==", "x==="] {
            assert!(!is_websocket_key(bad), "{bad:?}");
        }
        assert!(!is_websocket_key(&"A".repeat(2000)));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c%2Bd").as_deref(), Some("a b c+d"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%FF"), None);
        assert_eq!(percent_decode("%+F"), None, "a sign is not a hex digit");
    }
}
