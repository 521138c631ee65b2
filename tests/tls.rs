//! TLS on both listeners (docs/api.md, "Producer authentication"): a `wss://` browser and a TLS gRPC
//! producer work; with a client CA, a producer without a certificate signed
//! by it is refused.

mod common;

use common::pki::{Pki, pki};

use std::sync::Arc;

use common::text_push;
use common::ws::{next_text, send_text};
use pushgate::proto::push_service_client::PushServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

async fn start(pki: &Pki, mutual: bool) -> common::Gateway {
    let file = |name: &str| Some(pki.dir.join(name));
    common::start(pushgate::config::Settings {
        tls_cert: file("server.pem"),
        tls_key: file("server.key"),
        tls_client_ca: if mutual { file("ca.pem") } else { None },
        public_tls_cert: file("server.pem"),
        public_tls_key: file("server.key"),
        ..common::settings()
    })
    .await
}

async fn producer(gw: &common::Gateway, pki: &Pki, identity: Option<&(String, String)>) -> Result<u32, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca_pem)).domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://localhost:{}", gw.internal().port()))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let reply = PushServiceClient::new(channel)
        .push(text_push("u1", "e", "over tls"))
        .await
        .map_err(|s| format!("push: {s}"))?;
    Ok(reply.into_inner().delivered)
}

/// A TLS connection to `addr` trusting the test CA, offering `alpn`.
async fn tls_to(
    addr: std::net::SocketAddr,
    pki: &Pki,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("tls handshake")
}

/// A `wss://` client registered as u1 on event e.
async fn wss(
    gw: &common::Gateway,
    pki: &Pki,
) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tls = tls_to(gw.public(), pki, &[]).await;
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/ws", tls).await.expect("ws handshake");
    send_text(&mut ws, r#"{"token":"u1","event":"e"}"#).await;
    gw.wait_online("u1", 1).await;
    ws
}

use rustls::pki_types::pem::PemObject as _;

#[tokio::test]
async fn wss_browser_and_tls_producer() {
    let pki = pki();
    let gw = start(&pki, false).await;
    let mut ws = wss(&gw, &pki).await;
    assert_eq!(producer(&gw, &pki, None).await, Ok(1));
    assert_eq!(next_text(&mut ws).await, "over tls");
}

#[tokio::test]
async fn mutual_tls_refuses_producers_without_a_certificate_from_the_ca() {
    let pki = pki();
    let gw = start(&pki, true).await;
    let mut ws = wss(&gw, &pki).await;
    let none = producer(&gw, &pki, None).await;
    assert!(none.is_err(), "no client certificate must be refused, got {none:?}");
    let stranger = producer(&gw, &pki, Some(&pki.stranger)).await;
    assert!(stranger.is_err(), "a certificate not from the CA must be refused, got {stranger:?}");
    assert_eq!(producer(&gw, &pki, Some(&pki.client)).await, Ok(1));
    // Only the authorised producer's push arrived: it is the first frame.
    assert_eq!(next_text(&mut ws).await, "over tls");
}

/// wserver's `POST /push` over HTTPS (HTTP/1.1 by ALPN) keeps its
/// connection: two pushes on one TLS connection, each answered.
#[tokio::test]
async fn wserver_pushes_over_https_share_a_connection() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let pki = pki();
    let gw = start(&pki, false).await;
    let mut ws = wss(&gw, &pki).await;
    let mut producer = tls_to(gw.internal(), &pki, &[b"http/1.1"]).await;
    for message in ["first", "second"] {
        let body = format!(r#"{{"userId":"u1","event":"e","message":"{message}"}}"#);
        let request = format!("POST /push HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        producer.write_all(request.as_bytes()).await.expect("write");
        let expected = "message sent to 1 clients";
        let mut answer = Vec::new();
        while !answer.ends_with(expected.as_bytes()) {
            let mut buf = [0u8; 1024];
            let n = tokio::time::timeout(common::WAIT, producer.read(&mut buf)).await.expect("in time").expect("read");
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"), "{:?}", String::from_utf8_lossy(&answer));
        assert_eq!(next_text(&mut ws).await, message);
    }
}
