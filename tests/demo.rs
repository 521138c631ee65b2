//! `--demo`: the page and the SDK on the public listener, only when asked
//! for, and only on a loopback bind.

mod common;

use pushgate::config::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// `GET path` on the public listener: the status line, headers and body.
async fn get(gw: &common::Gateway, path: &str) -> (String, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(gw.public()).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read");
        response
    };
    let response = timeout(common::WAIT, exchange).await.expect("answer in time");
    let text = String::from_utf8(response).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    (head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test]
async fn demo_serves_the_page_and_the_sdk() {
    let gw = common::start(Settings { demo: Some(true), ..common::settings() }).await;
    let (head, body) = get(&gw, "/demo").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(body.contains("/demo/pushgate.js"), "the page imports the SDK");
    let internal = format!("data-internal=\"{}\"", gw.internal());
    assert!(body.contains(&internal), "the page knows the producer address: {internal}");

    let (head, body) = get(&gw, "/demo/pushgate.js").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert!(body.contains("export class PushgateClient"));
}

#[tokio::test]
async fn without_demo_there_is_no_page() {
    let gw = common::start(common::settings()).await;
    let (head, _) = get(&gw, "/demo").await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
}

#[test]
fn demo_is_refused_on_a_non_loopback_bind() {
    let settings = Settings {
        public_addr: Some("0.0.0.0:0".parse().expect("addr")),
        demo: Some(true),
        insecure: Some(true),
        ..common::settings()
    };
    let err = settings.resolve().expect_err("refused");
    assert!(err.to_string().starts_with("demo:"), "{err}");
}
