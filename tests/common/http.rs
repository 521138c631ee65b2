//! Plain HTTP/1.1 requests to the gateway's listeners.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::timeout;

use super::{Gateway, WAIT};

/// A reply: its status, `content-type` (empty when absent) and body.
pub struct HttpReply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl HttpReply {
    /// The body, which must be JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request to the internal port, with `authorization: Bearer
/// KEY` when `key` is given.
pub async fn http(gw: &Gateway, method: &str, path: &str, key: Option<&str>, body: &str) -> HttpReply {
    http_to(&gw.internal_url(), method, path, key, body).await
}

/// One HTTP/1.1 request to `base` (`http://ADDR`).
pub async fn http_to(base: &str, method: &str, path: &str, key: Option<&str>, body: &str) -> HttpReply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = hyper::Request::builder().method(method).uri(format!("{base}{path}"));
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let request = request.body(Full::new(Bytes::from(body.to_owned()))).expect("request");
    let response = timeout(WAIT, client.request(request)).await.expect("reply in time").expect("reply");
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().expect("ascii").to_owned()).unwrap_or_default();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    HttpReply { status, content_type, body: String::from_utf8(body.to_vec()).expect("utf-8") }
}
