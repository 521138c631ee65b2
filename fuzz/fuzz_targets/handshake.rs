//! The WebSocket upgrade checks (docs/protocol.md, "Handshake") that need
//! nothing but the request: method, version, upgrade headers, key, origin,
//! the token's syntax and the sub-protocol, called without a socket.
//!
//! The request is built from structured input; each header's value is either
//! raw bytes or a well-formed value, so the fuzzer reaches every check. An
//! independent reading of docs/protocol.md predicts the answer, and the target
//! asserts the gateway gives exactly it: 405 (with `Allow: GET`), 400, 426
//! (with `Upgrade` or `Sec-WebSocket-Version`), 403, 401, or an upgrade with
//! the right key, token and mode.
#![no_main]

use arbitrary::Arbitrary;
use http::{HeaderName, HeaderValue, Method, Request, Version};
use libfuzzer_sys::fuzz_target;
use pushgate::fuzzing::{Refused, Upgrade, upgrade_checks};
use pushgate_fuzz::{base64_decode, form_decode};

#[derive(Arbitrary, Debug)]
struct Input {
    method: Meth,
    http10: bool,
    query: Vec<Pair>,
    headers: Vec<(Name, Val)>,
    allowed: Vec<Entry>,
}

#[derive(Arbitrary, Debug)]
enum Meth {
    Get,
    Head,
    Post,
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct Pair {
    token: bool,
    value: String,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Name {
    Connection,
    Upgrade,
    Version,
    Key,
    Origin,
    Authorization,
    Protocol,
    Other,
}

#[derive(Arbitrary, Debug)]
enum Val {
    /// What a browser sends for that header.
    Good([u8; 16]),
    Raw(Vec<u8>),
    Text(String),
}

/// An `--allowed-origins` entry.
#[derive(Arbitrary, Debug)]
enum Entry {
    Any,
    Exact(Host, Option<u16>),
    Wildcard(Option<bool>, Host),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Host {
    Example,
    Sub(String),
    Raw(String),
}

impl Host {
    fn text(&self) -> String {
        match self {
            Host::Example => "example.com".into(),
            Host::Sub(s) => format!("{s}.example.com"),
            Host::Raw(s) => s.clone(),
        }
    }
}

const ORIGINS: [&str; 4] = ["https://app.example.com", "http://example.com:8080", "https://evil.test", "null"];

fn header(name: Name, value: &Val) -> Option<(HeaderName, HeaderValue)> {
    let (header, good): (&str, String) = match name {
        Name::Connection => ("connection", "Upgrade".into()),
        Name::Upgrade => ("upgrade", "websocket".into()),
        Name::Version => ("sec-websocket-version", "13".into()),
        Name::Key => ("sec-websocket-key", String::new()),
        Name::Origin => ("origin", String::new()),
        Name::Authorization => ("authorization", String::new()),
        Name::Protocol => ("sec-websocket-protocol", "pushgate.v1".into()),
        Name::Other => ("x-other", "x".into()),
    };
    let value = match value {
        Val::Good(bytes) => match name {
            Name::Key => base64(bytes),
            Name::Origin => ORIGINS[usize::from(bytes[0]) % ORIGINS.len()].into(),
            Name::Authorization => format!("Bearer {}", hex(&bytes[..4])),
            _ => good,
        },
        Val::Raw(bytes) => return Some((HeaderName::from_static(header), HeaderValue::from_bytes(bytes).ok()?)),
        Val::Text(text) => text.clone(),
    };
    Some((HeaderName::from_static(header), HeaderValue::from_str(&value).ok()?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64(bytes: &[u8; 16]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out + "=="
}

fn entry(e: &Entry) -> String {
    match e {
        Entry::Any => "*".into(),
        Entry::Exact(host, port) => match port {
            Some(port) => format!("https://{}:{port}", host.text()),
            None => format!("https://{}", host.text()),
        },
        Entry::Wildcard(scheme, host) => {
            let scheme = match scheme {
                Some(true) => "https://",
                Some(false) => "http://",
                None => "",
            };
            format!("{scheme}*.{}", host.text())
        }
        Entry::Raw(s) => s.clone(),
    }
}

fuzz_target!(|input: Input| {
    let method = match &input.method {
        Meth::Get => Method::GET,
        Meth::Head => Method::HEAD,
        Meth::Post => Method::POST,
        Meth::Other(m) => match Method::from_bytes(m.as_bytes()) {
            Ok(m) => m,
            Err(_) => return,
        },
    };
    let query: Vec<String> =
        input.query.iter().map(|p| if p.token { format!("token={}", p.value) } else { p.value.clone() }).collect();
    let uri = if query.is_empty() { "/ws".to_owned() } else { format!("/ws?{}", query.join("&")) };
    let mut request = Request::builder().method(method).uri(&uri);
    request = request.version(if input.http10 { Version::HTTP_10 } else { Version::HTTP_11 });
    let Ok(mut request) = request.body(()) else { return };
    for (name, value) in &input.headers {
        if let Some((name, value)) = header(*name, value) {
            request.headers_mut().append(name, value);
        }
    }
    let allowed: Vec<String> = input.allowed.iter().map(entry).collect();
    let got = upgrade_checks(&request, &allowed);
    let want = expected(&request, &allowed);
    match (&got, &want) {
        (Ok(got), Ok(want)) => assert_eq!(got, want),
        (Err(got), Err((status, header))) => {
            assert_eq!(got.status, *status, "{got:?} for {request:?} allowing {allowed:?}");
            assert_eq!(got.header.as_ref().map(|(n, v)| (n.as_str(), *v)), *header, "{got:?}");
        }
        _ => panic!("got {got:?}, docs say {want:?}, for {request:?} allowing {allowed:?}"),
    }
    if let Err(Refused { status, .. }) = got {
        assert!([400, 401, 403, 405, 426].contains(&status));
    }
});

type Expected = Result<Upgrade, (u16, Option<(&'static str, &'static str)>)>;

/// docs/protocol.md, "Handshake", read independently.
fn expected(req: &Request<()>, allowed: &[String]) -> Expected {
    if req.method() != Method::GET {
        return Err((405, Some(("allow", "GET"))));
    }
    if req.version() != Version::HTTP_11 {
        return Err((400, None));
    }
    let h = req.headers();
    let lists = |name: &str, token: &str| {
        h.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|t| {
            let t = t.trim();
            t.eq_ignore_ascii_case(token)
        })
    };
    if !lists("connection", "upgrade") || !lists("upgrade", "websocket") {
        return Err((426, Some(("upgrade", "websocket"))));
    }
    if h.get("sec-websocket-version").map(HeaderValue::as_bytes) != Some(b"13") {
        return Err((426, Some(("sec-websocket-version", "13"))));
    }
    let key = h.get("sec-websocket-key").and_then(|v| v.to_str().ok()).map(str::trim);
    let key = match key {
        Some(k) if base64_decode(k).is_some_and(|b| b.len() == 16) => k.to_owned(),
        _ => return Err((400, None)),
    };
    if let Some(origin) = h.get("origin") {
        // The handshake reads a value that is not text as "\0", which only
        // `*` or an entry "\0" (no real origin) matches.
        if !origin_allowed(allowed, Some(origin.to_str().unwrap_or("\0"))) {
            return Err((403, None));
        }
    }
    let token = match h.get("authorization") {
        Some(v) => {
            let v = v.to_str().map_err(|_| (401, None))?.trim();
            let (scheme, rest) = v.split_once([' ', '\t']).ok_or((401, None))?;
            if !scheme.eq_ignore_ascii_case("bearer") || rest.trim().is_empty() {
                return Err((401, None));
            }
            Some(rest.trim().to_owned())
        }
        None => match req.uri().query().unwrap_or("").split('&').find_map(|p| p.strip_prefix("token=")) {
            Some(raw) => Some(form_decode(raw).ok_or((401, None))?),
            None => None,
        },
    };
    let envelope = h
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == "pushgate.v1");
    Ok(Upgrade { key, token, envelope })
}

/// `--allowed-origins` as docs/protocol.md and the flag's help describe it:
/// no list allows all; `*` allows all; `*.example.com` allows any origin
/// whose host is a sub-domain of example.com (any scheme and port),
/// `https://*.example.com` the same with that scheme; anything else is one
/// exact origin. ASCII case, blank space around and a trailing `/` do not
/// matter. An origin is
/// `scheme://host[:port]` (RFC 6454): an `Origin` value of another shape
/// (a path, a query, user info, no scheme...) is matched only by `*` or by
/// an exact entry.
fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    allowed.is_empty()
        || allowed.iter().any(|entry| {
            let entry = entry.trim().trim_end_matches('/');
            if entry == "*" {
                return true;
            }
            let Some(origin) = origin.map(|o| o.trim().trim_end_matches('/')) else { return false };
            let (entry_scheme, entry_host) = match entry.split_once("://") {
                Some((s, h)) => (Some(s), h),
                None => (None, entry),
            };
            let Some(suffix) = entry_host.strip_prefix("*.") else { return entry.eq_ignore_ascii_case(origin) };
            let Some((scheme, host)) = serialized_origin(origin) else { return false };
            entry_scheme.is_none_or(|s| s.eq_ignore_ascii_case(scheme))
                && host.len() > suffix.len() + 1
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        })
}

/// `(scheme, host)` of an origin of the form `scheme://host[:port]`, the
/// host a name of letters, digits, `-` and `.`, or a bracketed IPv6 address.
fn serialized_origin(origin: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme_ok = scheme.bytes().next()?.is_ascii_alphabetic()
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    let (host, port) = if rest.starts_with('[') {
        let end = rest.find(']')?;
        (&rest[..=end], &rest[end + 1..])
    } else {
        match rest.find(':') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        }
    };
    let host_ok = if host.starts_with('[') {
        host[1..host.len() - 1].bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    let port_ok = port.is_empty() || (port.len() > 1 && port[1..].bytes().all(|b| b.is_ascii_digit()));
    (scheme_ok && host_ok && port_ok).then_some((scheme, host))
}
