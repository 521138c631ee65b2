//! Browser authentication end to end (docs/protocol.md "Authentication", README "Browser
//! authentication"): the real gateway on 127.0.0.1:0 with the JWT and webhook
//! authenticators built as the product builds them (`pushgate::authenticators::from_config`
//! on resolved settings), real WebSocket clients, and for the webhook a real
//! HTTP backend started by the test. Keys are the fixed test keys of
//! `tests/fixtures/` (see its README); no key is generated here.

mod common;

use std::convert::Infallible;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::clock::still;
use common::ws::{ENVELOPE, Ws, close_code, next_json, next_text, send_json, try_connect};
use common::{Gateway, WAIT, eventually};
use futures_util::stream::SplitSink;
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyExt, Full};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use pushgate::config::{AuthMode, Settings};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

// ---------------------------------------------------------------- clients

/// A WebSocket client whose socket is read by a task of its own, so it
/// answers the server's pings even while the test waits on something else.
/// It is a stream of the frames read.
struct Client {
    sink: SplitSink<Ws, Message>,
    frames: mpsc::UnboundedReceiver<Message>,
}

impl Client {
    fn new(ws: Ws) -> Self {
        let (sink, mut stream) = ws.split();
        let (tx, frames) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            // Reading also writes tungstenite's automatic pong and close answers.
            while let Some(Ok(frame)) = stream.next().await {
                if tx.send(frame).is_err() {
                    break;
                }
            }
        });
        Self { sink, frames }
    }

    async fn send(&mut self, message: Value) {
        send_json(&mut self.sink, message).await;
    }
}

impl Stream for Client {
    type Item = Result<Message, WsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.frames.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

/// Opens a WebSocket to `url`, offering `pushgate.v1` when `envelope`.
async fn connect(url: &str, envelope: bool) -> Result<Client, WsError> {
    let protocol: &[(&str, &str)] = if envelope { &[ENVELOPE] } else { &[] };
    try_connect(url, protocol).await.map(Client::new)
}

fn with_token(gw: &Gateway, token: &str) -> String {
    format!("{}?token={token}", gw.ws_url())
}

/// The HTTP status of a handshake refused for the `?token=` it carries.
async fn handshake_status(gw: &Gateway, token: &str) -> u16 {
    match connect(&with_token(gw, token), false).await {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Ok(_) => panic!("the handshake with {token:?} was accepted"),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// Checks that `token` is accepted as `user` both ways: given at the
/// handshake (`?token=`, then a register without token, wserver-compatible
/// client) and in the register message (envelope client). A push reaches each.
async fn assert_accepted(gw: &Gateway, token: &str, user: &str) {
    let mut at_handshake = connect(&with_token(gw, token), false).await.expect("the handshake accepts the token");
    at_handshake.send(json!({"event": "h"})).await;
    gw.wait_online(user, 1).await;
    let mut in_register = connect(&gw.ws_url(), true).await.expect("connect");
    in_register.send(json!({"token": token, "event": "r"})).await;
    let registered = next_json(&mut in_register).await;
    assert_eq!((&registered["type"], &registered["user"]), (&json!("registered"), &json!(user)), "{registered}");

    assert_eq!(gw.push_text(user, "h", "via handshake").delivered, 1);
    assert_eq!(next_text(&mut at_handshake).await, "via handshake");
    assert_eq!(gw.push_text(user, "r", "via register").delivered, 1);
    assert_eq!(next_json(&mut in_register).await["data"], "via register");
}

/// An envelope client registered with `token` on `event`.
async fn registered(gw: &Gateway, token: &str, event: &str) -> Client {
    let mut client = connect(&gw.ws_url(), true).await.expect("connect");
    client.send(json!({"token": token, "event": event})).await;
    assert_eq!(next_json(&mut client).await["type"], "registered");
    client
}

/// Checks that `token` is refused both ways: HTTP 401 at the handshake, and
/// close `code` after a register message carrying it.
async fn assert_refused(gw: &Gateway, token: &str, code: u16, what: &str) {
    assert_eq!(handshake_status(gw, token).await, 401, "{what} at the handshake");
    let mut client = connect(&gw.ws_url(), false).await.expect("connect");
    client.send(json!({"token": token, "event": "e"})).await;
    assert_eq!(close_code(&mut client).await, code, "{what} in the register message");
}

// ---------------------------------------------------------------- gateways and tokens

/// Starts a gateway whose authenticator is built from `settings` the way
/// `pushgate serve` builds it.
async fn gateway(settings: Settings) -> Gateway {
    let config = settings.clone().resolve().expect("valid config");
    let auth = pushgate::authenticators::from_config(&config.auth).expect("authenticator");
    common::start_with(settings, auth).await
}

const SECRET: &str = "pushgate test secret, not a real one";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn jwt_settings() -> Settings {
    Settings { auth: Some(AuthMode::Jwt), ..common::settings() }
}

fn hs_settings() -> Settings {
    Settings { jwt_secret: Some(SECRET.into()), ..jwt_settings() }
}

fn pem_settings(public_key: &str) -> Settings {
    Settings { jwt_public_key: Some(fixture(public_key)), ..jwt_settings() }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

fn claims(sub: &str, exp: u64) -> Value {
    json!({"sub": sub, "exp": exp})
}

/// A private key of `tests/fixtures/`.
fn private_key(name: &str) -> EncodingKey {
    let pem = std::fs::read(fixture(name)).expect("fixture key");
    let key = match name.split('_').next() {
        Some("rsa") => EncodingKey::from_rsa_pem(&pem),
        Some("ec") => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_ed_pem(&pem),
    };
    key.expect("private key")
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let header = Header { kid: kid.map(str::to_owned), ..Header::new(alg) };
    encode(&header, claims, key).expect("sign")
}

fn hs256(claims: &Value, secret: &str) -> String {
    sign(Algorithm::HS256, None, &EncodingKey::from_secret(secret.as_bytes()).expect("secret"), claims)
}

fn rs256(claims: &Value, private: &str) -> String {
    sign(Algorithm::RS256, None, &private_key(private), claims)
}

/// Unpadded base64url.
fn b64url(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// `alg: none` forgeries of valid claims: with no signature, and with the
/// signature of a genuine token left in place.
fn alg_none(claims: &Value, genuine: &str) -> [String; 2] {
    let head = b64url(br#"{"alg":"none"}"#);
    let body = b64url(claims.to_string().as_bytes());
    let signature = genuine.rsplit('.').next().expect("signature");
    [format!("{head}.{body}."), format!("{head}.{body}.{signature}")]
}

// ---------------------------------------------------------------- JWT

#[tokio::test]
async fn valid_hs256_and_rs256_tokens_are_accepted() {
    let gw = gateway(hs_settings()).await;
    assert_accepted(&gw, &hs256(&claims("alice", now() + 60), SECRET), "alice").await;

    let gw = gateway(pem_settings("rsa_public.pem")).await;
    assert_accepted(&gw, &rs256(&claims("bob", now() + 60), "rsa_private.pem"), "bob").await;
}

#[tokio::test]
async fn bad_hs256_tokens_are_refused_401_at_the_handshake_and_4500_or_4002_at_register() {
    let gw = gateway(hs_settings()).await;
    let valid = claims("alice", now() + 60);
    assert_refused(&gw, &hs256(&claims("alice", now() - 5), SECRET), 4002, "expired").await;
    assert_refused(&gw, &hs256(&valid, "another secret"), 4500, "signed with another secret").await;
    for forged in alg_none(&valid, &hs256(&valid, SECRET)) {
        assert_refused(&gw, &forged, 4500, "alg none").await;
    }
    assert_refused(&gw, &hs256(&json!({"sub": "alice"}), SECRET), 4500, "no exp").await;
    assert_refused(&gw, &hs256(&json!({"exp": now() + 60}), SECRET), 4500, "no sub").await;
    assert_refused(&gw, "not.a.jwt", 4500, "garbage").await;
    // The refusals above joined nobody; a valid token still works.
    assert_accepted(&gw, &hs256(&valid, SECRET), "alice").await;
}

#[tokio::test]
async fn bad_rs256_tokens_are_refused_401_at_the_handshake_and_4500_or_4002_at_register() {
    let gw = gateway(pem_settings("rsa_public.pem")).await;
    let valid = claims("alice", now() + 60);
    assert_refused(&gw, &rs256(&valid, "rsa_other_private.pem"), 4500, "signed with another RSA key").await;
    assert_refused(&gw, &rs256(&claims("alice", now() - 5), "rsa_private.pem"), 4002, "expired").await;
    assert_refused(&gw, &rs256(&json!({"sub": "alice"}), "rsa_private.pem"), 4500, "no exp").await;
    for forged in alg_none(&valid, &rs256(&valid, "rsa_private.pem")) {
        assert_refused(&gw, &forged, 4500, "alg none").await;
    }
    // Algorithm confusion: HS256 "signed" with the public key as the secret.
    let public_pem = std::fs::read_to_string(fixture("rsa_public.pem")).expect("fixture");
    assert_refused(&gw, &hs256(&valid, &public_pem), 4500, "HS256 keyed with the RSA public key").await;
    assert_accepted(&gw, &rs256(&valid, "rsa_private.pem"), "alice").await;
}

#[tokio::test]
async fn an_exp_beyond_the_clock_is_accepted_without_a_panic() {
    let gw = gateway(hs_settings()).await;
    assert_accepted(&gw, &hs256(&claims("far", u64::MAX), SECRET), "far").await;
}

#[tokio::test]
async fn a_token_before_its_nbf_is_refused() {
    let gw = gateway(hs_settings()).await;
    let not_yet = json!({"sub": "early", "exp": now() + 120, "nbf": now() + 60});
    assert_refused(&gw, &hs256(&not_yet, SECRET), 4500, "nbf in the future").await;
    let already = json!({"sub": "early", "exp": now() + 120, "nbf": now() - 1});
    assert_accepted(&gw, &hs256(&already, SECRET), "early").await;
}

#[tokio::test]
async fn es256_and_eddsa_public_keys_from_pem() {
    let gw = gateway(pem_settings("ec_public.pem")).await;
    let es256 = |c: &Value| sign(Algorithm::ES256, None, &private_key("ec_private.pem"), c);
    assert_accepted(&gw, &es256(&claims("erin", now() + 60)), "erin").await;
    assert_refused(&gw, &es256(&claims("erin", now() - 5)), 4002, "expired ES256").await;
    assert_refused(&gw, &rs256(&claims("erin", now() + 60), "rsa_private.pem"), 4500, "RS256 on an EC key").await;

    let gw = gateway(pem_settings("ed_public.pem")).await;
    let eddsa = |c: &Value| sign(Algorithm::EdDSA, None, &private_key("ed_private.pem"), c);
    assert_accepted(&gw, &eddsa(&claims("edna", now() + 60)), "edna").await;
    assert_refused(&gw, &es256(&claims("edna", now() + 60)), 4500, "ES256 on an Ed25519 key").await;
}

#[tokio::test]
async fn rs256_with_a_jwks_file_picks_the_key_by_kid() {
    let gw = gateway(Settings { jwks: Some(fixture("jwks.json")), ..jwt_settings() }).await;
    let kid = "pushgate-test-rsa-1";
    let with_kid = |c: &Value, kid: &str, private: &str| sign(Algorithm::RS256, Some(kid), &private_key(private), c);
    assert_accepted(&gw, &with_kid(&claims("jay", now() + 60), kid, "rsa_private.pem"), "jay").await;
    let valid = claims("jay", now() + 60);
    assert_refused(&gw, &with_kid(&valid, "unknown-kid", "rsa_private.pem"), 4500, "unknown kid").await;
    assert_refused(&gw, &with_kid(&valid, kid, "rsa_other_private.pem"), 4500, "right kid, wrong key").await;
    assert_refused(&gw, &with_kid(&claims("jay", now() - 5), kid, "rsa_private.pem"), 4002, "expired").await;
    // The JWKS names RS256 for its key: another RSA algorithm is refused.
    let rs512 = sign(Algorithm::RS512, Some(kid), &private_key("rsa_private.pem"), &valid);
    assert_refused(&gw, &rs512, 4500, "RS512 for an RS256 key").await;
}

/// A reading of the wall clock and of tokio's, taken together.
#[derive(Clone, Copy)]
struct Clocks {
    wall: SystemTime,
    tokio: tokio::time::Instant,
}

impl Clocks {
    fn read() -> Self {
        Self { wall: SystemTime::now(), tokio: tokio::time::Instant::now() }
    }
}

/// When, on tokio's clock, a connection whose token expires at `exp`
/// (seconds since the epoch) is due to close: the gateway arms a timer on
/// tokio's clock for the time left until `exp` by the wall clock, at some
/// moment between the readings `before` and `after`. The earliest and the
/// latest it can be.
fn due(exp: u64, before: Clocks, after: Clocks) -> (tokio::time::Instant, tokio::time::Instant) {
    let exp = UNIX_EPOCH + Duration::from_secs(exp);
    let left = |wall: SystemTime| exp.duration_since(wall).expect("exp is ahead");
    (before.tokio + left(after.wall), after.tokio + left(before.wall))
}

/// On tokio's paused clock (`common::clock`): the exp is checked from both
/// sides without waiting for it.
#[tokio::test(start_paused = true)]
async fn a_token_expiring_mid_connection_closes_4002_at_its_exp() {
    let gw = gateway(hs_settings()).await;
    let exp = now() + 2;
    let token = hs256(&claims("alice", exp), SECRET);
    let before = Clocks::read();
    let (mut at_handshake, mut in_register) = still(async {
        let mut at_handshake = connect(&with_token(&gw, &token), false).await.expect("accepted at the handshake");
        at_handshake.send(json!({"event": "e"})).await;
        let mut in_register = connect(&gw.ws_url(), true).await.expect("connect");
        in_register.send(json!({"token": token, "event": "e"})).await;
        assert_eq!(next_json(&mut in_register).await["type"], "registered");
        gw.wait_online("alice", 2).await;
        (at_handshake, in_register)
    })
    .await;
    let (earliest, latest) = due(exp, before, Clocks::read());
    assert_eq!(gw.push_text("alice", "e", "while valid").delivered, 2);
    still(async {
        assert_eq!(next_text(&mut at_handshake).await, "while valid");
        assert_eq!(next_json(&mut in_register).await["data"], "while valid");
    })
    .await;

    // A millisecond before the exp both are open: a push reaches them.
    tokio::time::sleep_until(earliest - Duration::from_millis(1)).await;
    assert_eq!(gw.push_text("alice", "e", "just before").delivered, 2);
    still(async {
        assert_eq!(next_text(&mut at_handshake).await, "just before");
        assert_eq!(next_json(&mut in_register).await["data"], "just before");
    })
    .await;
    // By then both are closed.
    tokio::time::sleep_until(latest).await;
    for client in [&mut at_handshake, &mut in_register] {
        assert_eq!(still(close_code(client)).await, 4002);
    }
    gw.wait_online("alice", 0).await;
}

/// On tokio's paused clock (`common::clock`): the first exp passes without
/// waiting for it.
#[tokio::test(start_paused = true)]
async fn a_refreshed_token_outlives_the_first_exp_and_must_stay_the_same_user() {
    let gw = gateway(hs_settings()).await;
    let first_exp = now() + 2;
    let short = hs256(&claims("alice", first_exp), SECRET);
    let before = Clocks::read();
    let (mut expiring, mut refreshed) = still(async {
        let expiring = registered(&gw, &short, "e").await;
        let mut refreshed = registered(&gw, &short, "e").await;
        let mut refreshed_expired = registered(&gw, &short, "e").await;
        refreshed.send(json!({"type": "refresh", "token": hs256(&claims("alice", now() + 60), SECRET)})).await;
        assert_eq!(next_json(&mut refreshed).await, json!({"type": "refreshed"}));
        refreshed_expired.send(json!({"type": "refresh", "token": hs256(&claims("alice", now() - 5), SECRET)})).await;
        assert_eq!(close_code(&mut refreshed_expired).await, 4002, "a refresh with an expired token");
        (expiring, refreshed)
    })
    .await;
    let (_, latest) = due(first_exp, before, Clocks::read());

    // Well after the first exp the one that did not refresh is closed, the
    // refreshed one is not: a push is the next thing it gets.
    tokio::time::sleep_until(latest + Duration::from_millis(500)).await;
    assert_eq!(still(close_code(&mut expiring)).await, 4002, "the connection that did not refresh");
    assert_eq!(gw.push_text("alice", "e", "after the first exp").delivered, 1);
    assert_eq!(still(next_json(&mut refreshed)).await["data"], "after the first exp");

    refreshed.send(json!({"type": "refresh", "token": hs256(&claims("mallory", now() + 60), SECRET)})).await;
    assert_eq!(still(close_code(&mut refreshed)).await, 4500, "a refresh with another user's token");
    gw.wait_online("alice", 0).await;
}

#[tokio::test]
async fn the_events_claim_limits_registers_subscribes_and_refreshes() {
    let gw = gateway(hs_settings()).await;
    let exp = now() + 60;
    let only_a = hs256(&json!({"sub": "carol", "exp": exp, "events": ["a"]}), SECRET);
    let any = hs256(&claims("carol", exp), SECRET);

    let mut compat = connect(&gw.ws_url(), false).await.expect("connect");
    compat.send(json!({"token": only_a, "event": "a"})).await;
    gw.wait_online("carol", 1).await;
    assert_eq!(gw.push_text("carol", "a", "on a").delivered, 1);
    assert_eq!(next_text(&mut compat).await, "on a");
    compat.send(json!({"token": only_a, "event": "b"})).await;
    assert_eq!(close_code(&mut compat).await, 4501, "a second register for b");

    let mut envelope = connect(&with_token(&gw, &only_a), true).await.expect("accepted at the handshake");
    envelope.send(json!({"events": ["a"]})).await;
    assert_eq!(next_json(&mut envelope).await["events"], json!(["a"]));
    envelope.send(json!({"type": "subscribe", "events": ["b"]})).await;
    assert_eq!(close_code(&mut envelope).await, 4501, "a subscribe to b");

    let mut first = connect(&gw.ws_url(), false).await.expect("connect");
    first.send(json!({"token": only_a, "events": ["a", "b"]})).await;
    assert_eq!(close_code(&mut first).await, 4501, "a first register for a and b");

    // Without the claim any event is allowed, until a refresh narrows it.
    let mut wide = connect(&gw.ws_url(), true).await.expect("connect");
    wide.send(json!({"token": any, "event": "b"})).await;
    assert_eq!(next_json(&mut wide).await["events"], json!(["b"]));
    assert_eq!(gw.push_text("carol", "b", "on b").delivered, 1);
    assert_eq!(next_json(&mut wide).await["data"], "on b");
    wide.send(json!({"type": "refresh", "token": only_a})).await;
    assert_eq!(close_code(&mut wide).await, 4501, "a refresh whose events claim leaves out b");
}

// ---------------------------------------------------------------- webhook

/// How long the slow backend takes: far longer than the gateway waits.
const SLOW: Duration = Duration::from_secs(3);

/// A real auth webhook backend on 127.0.0.1:0, on a thread and runtime of
/// its own as a real backend would be: a gateway that blocked its threads
/// could not stall it. It answers by token:
/// `alice-token` (200, alice, events ["a"]), `bob-token` (200, bob),
/// `forever-token` (200, `expires_at` beyond what the clock can hold),
/// `expired-token` (200 with `expires_at` in the past), `slow-token` (200
/// after [`SLOW`]), `forbidden-token` (403), `broken-token` (500), any
/// other (401). A request that is not a JSON POST gets 400. Dropping it
/// stops it.
struct Backend {
    url: String,
    calls: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

impl Backend {
    fn start() -> Self {
        Self::serve(None)
    }

    /// The backend over HTTPS, with a server certificate of `pki`'s CA.
    fn start_tls(pki: &common::pki::Pki) -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(pki.dir.join("server.pem"))
            .expect("server.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("certificates");
        let key = PrivateKeyDer::from_pem_file(pki.dir.join("server.key")).expect("server.key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        Self::serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }

    fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the backend");
        listener.set_nonblocking(true).expect("nonblocking");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}/auth", listener.local_addr().expect("addr"));
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("listener");
                let serve = async {
                    while let Ok((stream, _)) = listener.accept().await {
                        let counter = Arc::clone(&counter);
                        let service = hyper::service::service_fn(move |req| answer(req, Arc::clone(&counter)));
                        let http = hyper::server::conn::http1::Builder::new();
                        let tls = tls.clone();
                        tokio::spawn(async move {
                            match tls {
                                None => http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await,
                                Some(tls) => match tls.accept(stream).await {
                                    Ok(stream) => {
                                        http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await
                                    }
                                    Err(_) => return, // a client that did not trust us
                                },
                            }
                            .ok();
                        });
                    }
                };
                tokio::select! {
                    () = serve => {}
                    _ = stopped => {}
                }
            });
        });
        Self { url, calls, _stop: stop }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Gateway settings for this webhook.
    fn settings(&self, timeout: Duration, cache_ttl: Duration) -> Settings {
        Settings {
            auth: Some(AuthMode::Webhook(self.url.clone())),
            auth_timeout: Some(timeout),
            auth_cache_ttl: Some(cache_ttl),
            ..common::settings()
        }
    }
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    calls: Arc<AtomicUsize>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    calls.fetch_add(1, Ordering::SeqCst);
    let json_post = req.method() == hyper::Method::POST
        && req.headers().get(hyper::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes() == b"application/json");
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let token = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["token"].as_str().map(str::to_owned));
    let (status, answer) = match token.as_deref().filter(|_| json_post) {
        None => (400, Value::Null),
        Some("alice-token") => (200, json!({"user_id": "alice", "events": ["a"]})),
        Some("bob-token") => (200, json!({"user_id": "bob"})),
        Some("forever-token") => (200, json!({"user_id": "forever", "expires_at": u64::MAX})),
        Some("expired-token") => (200, json!({"user_id": "alice", "expires_at": now() - 10})),
        Some("slow-token") => {
            tokio::time::sleep(SLOW).await;
            (200, json!({"user_id": "alice"}))
        }
        Some("forbidden-token") => (403, Value::Null),
        Some("broken-token") => (500, Value::Null),
        Some(_) => (401, Value::Null),
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(answer.to_string())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    Ok(response)
}

#[tokio::test]
async fn webhook_accepts_with_the_backends_user_and_events() {
    let backend = Backend::start();
    let gw = gateway(backend.settings(Duration::from_secs(2), Duration::from_secs(30))).await;
    let mut in_register = connect(&gw.ws_url(), true).await.expect("connect");
    in_register.send(json!({"token": "alice-token", "event": "a"})).await;
    let registered = next_json(&mut in_register).await;
    assert_eq!((&registered["user"], &registered["events"]), (&json!("alice"), &json!(["a"])), "{registered}");
    let mut at_handshake = connect(&with_token(&gw, "alice-token"), false).await.expect("accepted at the handshake");
    at_handshake.send(json!({"event": "a"})).await;
    gw.wait_online("alice", 2).await;
    assert_eq!(gw.push_text("alice", "a", "for alice").delivered, 2);
    assert_eq!(next_json(&mut in_register).await["data"], "for alice");
    assert_eq!(next_text(&mut at_handshake).await, "for alice");

    in_register.send(json!({"type": "subscribe", "events": ["b"]})).await;
    assert_eq!(close_code(&mut in_register).await, 4501, "b is not in the backend's events");
    assert_accepted(&gw, "bob-token", "bob").await;
    assert_accepted(&gw, "forever-token", "forever").await;
}

#[tokio::test]
async fn webhook_over_https_trusts_the_given_ca_only() {
    let pki = common::pki::pki();
    let backend = Backend::start_tls(&pki);
    let trusted = Settings {
        auth_webhook_ca: Some(pki.dir.join("ca.pem")),
        ..backend.settings(Duration::from_secs(2), Duration::from_secs(30))
    };
    let gw = gateway(trusted).await;
    assert_accepted(&gw, "bob-token", "bob").await;
    assert_refused(&gw, "unknown-token", 4500, "401 over https").await;

    // Without the CA the backend's certificate chains to nothing the system
    // trusts: the webhook cannot answer, so the connection is refused as
    // unavailable (503 at the handshake), never let in.
    let untrusted = gateway(backend.settings(Duration::from_secs(2), Duration::from_secs(30))).await;
    assert_eq!(handshake_status(&untrusted, "bob-token").await, 503);
}

#[test]
fn webhook_urls_must_be_http_or_https() {
    use pushgate::authenticators::{WebhookAuth, WebhookTrust};
    let d = Duration::from_secs(1);
    assert!(WebhookAuth::new("ftp://127.0.0.1/auth", WebhookTrust::System, d, d).is_err());
    assert!(WebhookAuth::new("https:///auth", WebhookTrust::System, d, d).is_err());
    let missing = WebhookTrust::CaFile(std::path::Path::new("/nonexistent/ca.pem"));
    let err = WebhookAuth::new("https://127.0.0.1/auth", missing, d, d).err().expect("refused");
    assert!(err.to_string().contains("auth-webhook-ca"), "{err}");
}

#[tokio::test]
async fn webhook_refusals_and_failures() {
    let backend = Backend::start();
    let gw = gateway(backend.settings(Duration::from_secs(2), Duration::from_secs(30))).await;
    assert_refused(&gw, "unknown-token", 4500, "401 from the backend").await;
    assert_refused(&gw, "forbidden-token", 4500, "403 from the backend").await;
    assert_refused(&gw, "expired-token", 4002, "expires_at in the past").await;

    // A failing backend is no answer about the token: 503 / 1011, not cached.
    let before = backend.calls();
    assert_eq!(handshake_status(&gw, "broken-token").await, 503);
    let mut client = connect(&gw.ws_url(), false).await.expect("connect");
    client.send(json!({"token": "broken-token", "event": "e"})).await;
    assert_eq!(close_code(&mut client).await, 1011);
    assert_eq!(backend.calls(), before + 2, "a failure must not be cached");
}

#[tokio::test]
async fn a_slow_webhook_refuses_within_the_timeout_and_stalls_no_one_else() {
    let backend = Backend::start();
    let auth_timeout = Duration::from_millis(300);
    let gw = gateway(backend.settings(auth_timeout, Duration::from_secs(30))).await;
    let mut alice = connect(&gw.ws_url(), false).await.expect("connect");
    alice.send(json!({"token": "alice-token", "event": "a"})).await;
    gw.wait_online("alice", 1).await;
    assert_eq!(backend.calls(), 1);

    let mut slow = connect(&gw.ws_url(), false).await.expect("connect");
    let started = Instant::now();
    slow.send(json!({"token": "slow-token", "event": "a"})).await;
    let refused = async {
        let code = close_code(&mut slow).await;
        (code, started.elapsed())
    };
    let meanwhile = async {
        eventually("the backend got the slow call", || backend.calls() == 2).await;
        assert_eq!(gw.push_text("alice", "a", "meanwhile").delivered, 1);
        assert_eq!(next_text(&mut alice).await, "meanwhile");
        started.elapsed()
    };
    let ((code, refused_after), delivered_after) = tokio::join!(refused, meanwhile);
    assert_eq!(code, 1011);
    assert!(refused_after >= auth_timeout - Duration::from_millis(50), "refused after only {refused_after:?}");
    assert!(refused_after < SLOW / 2, "refused only after {refused_after:?}");
    assert!(delivered_after < refused_after, "the push waited for the slow authentication");

    let started = Instant::now();
    assert_eq!(handshake_status(&gw, "slow-token").await, 503);
    assert!(started.elapsed() < SLOW / 2, "handshake refused only after {:?}", started.elapsed());
    assert_eq!(backend.calls(), 3, "a timeout must not be cached");
    assert_eq!(gw.push_text("alice", "a", "after").delivered, 1);
    assert_eq!(next_text(&mut alice).await, "after");
}

#[tokio::test]
async fn webhook_answers_are_cached_per_token() {
    let backend = Backend::start();
    let gw = gateway(backend.settings(Duration::from_secs(2), Duration::from_secs(30))).await;
    let mut first = connect(&with_token(&gw, "alice-token"), false).await.expect("accepted at the handshake");
    first.send(json!({"event": "a"})).await;
    gw.wait_online("alice", 1).await;
    let mut second = connect(&gw.ws_url(), false).await.expect("connect");
    second.send(json!({"token": "alice-token", "event": "a"})).await;
    gw.wait_online("alice", 2).await;
    assert_eq!(backend.calls(), 1, "the second connection must be answered from the cache");
    assert_eq!(gw.push_text("alice", "a", "both").delivered, 2);
    assert_eq!(next_text(&mut first).await, "both");
    assert_eq!(next_text(&mut second).await, "both");
    connect(&with_token(&gw, "bob-token"), false).await.expect("accepted at the handshake");
    assert_eq!(backend.calls(), 2, "another token is asked");
}

/// On the real clock: the cache times its entries with
/// `std::time::Instant`, and the backend answers from a runtime of its own.
#[tokio::test]
async fn webhook_cache_entries_expire_after_the_ttl() {
    let backend = Backend::start();
    let ttl = Duration::from_millis(300);
    let gw = gateway(backend.settings(Duration::from_secs(2), ttl)).await;
    let started = Instant::now();
    connect(&with_token(&gw, "alice-token"), false).await.expect("accepted at the handshake");
    assert_eq!(backend.calls(), 1);
    // Connect again and again until the backend is asked again.
    let again = async {
        while backend.calls() == 1 {
            connect(&with_token(&gw, "alice-token"), false).await.expect("accepted at the handshake");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    timeout(WAIT, again).await.expect("the cached answer never expired");
    assert!(started.elapsed() >= ttl, "asked again after only {:?}", started.elapsed());
    assert_eq!(backend.calls(), 2);
}
