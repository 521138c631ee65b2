//! `--demo`: a page on the public listener that connects with the browser
//! SDK and shows what arrives, with the commands that push to it.
//!
//! `GET /demo` is the page, `GET /demo/pushgate.js` the SDK, both compiled
//! into the binary. Configuration refuses `--demo` unless the public listener
//! is on loopback: the page is a development aid, not something to expose.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};

use crate::config::Config;

const PAGE: &str = include_str!("../../clients/js/demo.html");
const SDK: &str = include_str!("../../clients/js/pushgate.js");

/// The page's placeholder for its settings, filled in once at start-up.
const SETTINGS_MARK: &str = "{{PUSHGATE_DEMO_SETTINGS}}";

/// The demo's two files, the page with this gateway's addresses filled in.
#[derive(Debug, Clone)]
pub struct Demo {
    page: Bytes,
}

impl Demo {
    /// The demo when `--demo` is on; `internal` is the bound producer address.
    pub fn from_config(config: &Config, internal: SocketAddr) -> Option<Self> {
        let needs_key = !config.internal.api_keys.is_empty();
        config.public.demo.then(|| Self::new(internal, &config.public.ws_path, needs_key))
    }

    /// The page for a gateway whose producers connect at `internal` and whose
    /// WebSocket path is `ws_path`; `api_key` says whether pushes need a key.
    pub fn new(internal: SocketAddr, ws_path: &str, api_key: bool) -> Self {
        let settings = format!(
            "data-internal=\"{}\" data-ws-path=\"{}\" data-api-key=\"{}\"",
            escape(&internal.to_string()),
            escape(ws_path),
            api_key
        );
        Self { page: Bytes::from(PAGE.replace(SETTINGS_MARK, &settings)) }
    }

    /// Whether `path` is one of the demo's.
    pub(super) fn serves(&self, path: &str) -> bool {
        self.content(path).is_some()
    }

    /// The body and content type at `path`, if it is one of the demo's.
    fn content(&self, path: &str) -> Option<(Bytes, &'static str)> {
        match path {
            "/demo" | "/demo/" => Some((self.page.clone(), "text/html; charset=utf-8")),
            "/demo/pushgate.js" => Some((Bytes::from_static(SDK.as_bytes()), "text/javascript; charset=utf-8")),
            _ => None,
        }
    }

    /// The answer for `path`, or `None` when it is not one of the demo's.
    pub(super) fn respond(&self, method: &Method, path: &str) -> Option<Response<Full<Bytes>>> {
        let (body, content_type) = self.content(path)?;
        if method != Method::GET && method != Method::HEAD {
            let mut reply = Response::new(Full::new(Bytes::new()));
            *reply.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            reply.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET"));
            return Some(reply);
        }
        let mut reply = Response::new(Full::new(body));
        let headers = reply.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        Some(reply)
    }
}

/// Escapes text for an HTML attribute value.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_carries_the_settings_escaped() {
        let demo = Demo::new(([127, 0, 0, 1], 50051).into(), "/w\"s", true);
        let page = std::str::from_utf8(&demo.page).unwrap_or_default();
        assert!(!page.contains(SETTINGS_MARK));
        assert!(page.contains(r#"data-internal="127.0.0.1:50051" data-ws-path="/w&quot;s" data-api-key="true""#));
    }

    #[test]
    fn serves_only_its_paths() {
        let demo = Demo::new(([127, 0, 0, 1], 1).into(), "/ws", false);
        assert!(demo.respond(&Method::GET, "/demo").is_some_and(|r| r.status() == StatusCode::OK));
        assert!(demo.respond(&Method::GET, "/demo/pushgate.js").is_some_and(|r| r.status() == StatusCode::OK));
        assert!(demo.respond(&Method::POST, "/demo").is_some_and(|r| r.status() == StatusCode::METHOD_NOT_ALLOWED));
        assert!(demo.respond(&Method::GET, "/demo/other").is_none());
    }
}
