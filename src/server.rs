//! The one place that wires the adapters to the hub: binds the listeners,
//! starts the tasks, and owns shutdown (the sequence is in docs/api.md,
//! "Shutdown").
//!
//! Listeners, the authenticator and the shutdown trigger are injected, so tests
//! bind `127.0.0.1:0` and drive the very same [`start`] as `main`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::Node;
use crate::config::{BrokerUrl, Config};
use crate::core::{Authenticator, Broker, CloseCode, CloseReason, Hub, ProducerKeys};
use crate::net::{self, tls};
use crate::{broker, grpc, http, ws};

pub use crate::ws::ListenerStats;

/// The two bound listeners.
pub struct Listeners {
    /// Browsers: `GET /ws` upgrades, `/healthz`, `/readyz`.
    pub public: TcpListener,
    /// Producers: gRPC and HTTP on one port.
    pub internal: TcpListener,
}

impl Listeners {
    /// Binds both listeners at the configured addresses with the configured
    /// accept backlog; the browsers' sockets get `--socket-send-buffer`.
    pub fn bind(config: &Config) -> io::Result<Self> {
        Ok(Self {
            public: bind(config.public.addr, config.listen_backlog, config.public.socket_send_buffer)?,
            internal: bind(config.internal.addr, config.listen_backlog, 0)?,
        })
    }
}

/// Binds `addr` with an explicit listen backlog, so that a reconnect storm is
/// not held back by the kernel's default accept queue. The accepted sockets'
/// options (`TCP_NODELAY`, and `send_buffer` as `SO_SNDBUF` unless 0) are set
/// before `listen`, so that connections queued before the gateway accepts
/// (while it connects to its broker, say) come with them too.
pub fn bind(addr: SocketAddr, backlog: u32, send_buffer: usize) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    net::options::before_listen(&socket, send_buffer);
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// A started gateway.
pub struct Running {
    /// Where browsers connect.
    pub public_addr: SocketAddr,
    /// Where producers connect.
    pub internal_addr: SocketAddr,
    /// The hub, for embedding programs and tests.
    pub hub: Arc<Hub>,
    /// The broker this node shares the cluster through.
    pub broker: Arc<dyn Broker>,
    admission: Arc<ws::Admission>,
    trigger: CancellationToken,
    done: JoinHandle<()>,
}

impl Running {
    /// Starts the graceful shutdown, as SIGTERM does.
    pub fn shutdown(&self) {
        self.trigger.cancel();
    }

    /// What the public listener holds now: open connections, handshakes in
    /// flight, and the bytes `--max-memory` is checked against.
    pub fn public_listener(&self) -> ListenerStats {
        self.admission.stats()
    }

    /// Waits until shutdown has completed.
    pub async fn wait(self) {
        if let Err(e) = self.done.await {
            tracing::error!(error = %e, "shutdown task failed");
        }
    }
}

/// Starts the gateway on `listeners`. It shuts down gracefully when `signal`
/// completes or [`Running::shutdown`] is called.
pub async fn start(
    config: Config,
    listeners: Listeners,
    auth: Arc<dyn Authenticator>,
    signal: impl Future<Output = ()> + Send + 'static,
) -> io::Result<Running> {
    let public_addr = listeners.public.local_addr()?;
    let internal_addr = listeners.internal.local_addr()?;
    let hub = Hub::new(config.hub.clone());
    let broker = start_broker(&config, &hub).await?;
    hub.metrics().set_node_id(broker.node_id());
    let node = Arc::new(Node { hub: Arc::clone(&hub), broker: Arc::clone(&broker) });
    let keys = ProducerKeys::new(&config.internal.api_keys);
    let accept = CancellationToken::new();
    let tracker = TaskTracker::new();

    let internal_tls = config.internal.tls.as_ref().map(|f| tls::acceptor(f, &[b"h2", b"http/1.1"])).transpose();
    let public_tls = config.public.tls.as_ref().map(|f| tls::acceptor(f, &[b"http/1.1"])).transpose();
    let (internal_tls, public_tls) = (internal_tls.map_err(io::Error::other)?, public_tls.map_err(io::Error::other)?);

    let public_push = config.public.push_on_public.then(|| http::public_push_router(Arc::clone(&node), keys.clone()));
    let grpc = grpc::services(Arc::clone(&node), keys.clone()).await;
    let internal = http::internal(Arc::clone(&node), keys);
    let timeouts = http::Timeouts {
        handshake: config.public.handshake_timeout,
        request_body: config.internal.request_body_timeout,
    };
    tokio::spawn(http::serve(
        listeners.internal,
        http::Services { router: internal.router.merge(grpc.routes), push: internal.push, direct: grpc.push },
        internal_tls,
        timeouts,
        accept.clone(),
        tracker.clone(),
    ));
    let admission = Arc::new(ws::Admission::new(&config.public));
    let ctx = ws::WsContext {
        hub: Arc::clone(&hub),
        broker: Arc::clone(&broker),
        auth,
        config: config.public.clone(),
        shutdown: accept.clone(),
        tracker: tracker.clone(),
        tls: public_tls,
        push: public_push,
        demo: ws::Demo::from_config(&config, internal_addr),
        admission: Arc::clone(&admission),
    };
    tokio::spawn(ws::serve(listeners.public, Arc::new(ctx)));
    tokio::spawn(follow_readiness(Arc::clone(&node), grpc.health.clone(), accept.clone()));
    let (ping, pong) = (config.heartbeat.ping_interval, config.heartbeat.pong_timeout);
    tokio::spawn(crate::core::heartbeat::run(Arc::clone(&hub), ping, pong, accept.clone()));
    tracing::info!(%public_addr, %internal_addr, node_id = broker.node_id(), "pushgate listening");

    let trigger = CancellationToken::new();
    let stop = trigger.clone();
    let drain = Drain {
        hub: Arc::clone(&hub),
        broker: Arc::clone(&broker),
        accept,
        tracker,
        health: grpc.health,
        timeout: config.drain_timeout,
    };
    let done = tokio::spawn(async move {
        tokio::select! {
            () = signal => {}
            () = stop.cancelled() => {}
        }
        drain.run().await;
    });
    Ok(Running { public_addr, internal_addr, hub, broker, admission, trigger, done })
}

/// Keeps gRPC health in step with the broker: NOT_SERVING while it cannot
/// take pushes (its server is away), SERVING again once it can. Ends at
/// shutdown, which sets NOT_SERVING for good.
async fn follow_readiness(node: Arc<Node>, health: tonic_health::server::HealthReporter, stop: CancellationToken) {
    let mut serving = true;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ready = node.broker.is_ready();
        if ready != serving && !node.hub.is_shutting_down() {
            serving = ready;
            let status =
                if ready { tonic_health::ServingStatus::Serving } else { tonic_health::ServingStatus::NotServing };
            for service in ["", crate::proto::push_service_server::SERVICE_NAME] {
                health.set_service_status(service, status).await;
            }
        }
    }
}

/// The broker `--broker` asks for, started (a broker whose server is away
/// starts anyway and reports not-ready until it is back).
async fn start_broker(config: &Config, hub: &Arc<Hub>) -> io::Result<Arc<dyn Broker>> {
    let cluster = &config.cluster;
    match &cluster.broker {
        BrokerUrl::Memory => Ok(broker::memory(hub, cluster.node_id.clone())),
        BrokerUrl::Redis(url) => match broker::cluster::RedisCluster::start(hub, cluster, url) {
            Ok(redis) => Ok(redis),
            Err(error) => Err(io::Error::other(error.to_string())),
        },
        BrokerUrl::Nats(url) => match broker::nats::NatsCluster::start(hub, cluster, url).await {
            Ok(nats) => Ok(nats),
            Err(error) => Err(io::Error::other(error.to_string())),
        },
    }
}

/// The shutdown sequence.
struct Drain {
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    accept: CancellationToken,
    tracker: TaskTracker,
    health: tonic_health::server::HealthReporter,
    timeout: Duration,
}

impl Drain {
    /// Reports not-ready, stops accepting, refuses new pushes, closes browser
    /// sockets with 1001 spread over half the drain timeout (each with a
    /// `reconnect_after_ms` hint), and waits for connection tasks until the
    /// drain timeout.
    async fn run(self) {
        let deadline = tokio::time::Instant::now() + self.timeout;
        tracing::info!(timeout = ?self.timeout, "shutting down");
        self.hub.begin_shutdown();
        self.health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
        self.health.set_service_status("pushgate.v1.PushService", tonic_health::ServingStatus::NotServing).await;
        self.accept.cancel();
        self.tracker.close();
        let outboxes = self.hub.outboxes();
        let spread = self.timeout / 2;
        let n = outboxes.len().max(1) as u32;
        let start = tokio::time::Instant::now();
        for (i, outbox) in outboxes.iter().enumerate() {
            tokio::time::sleep_until(start + spread * i as u32 / n).await;
            let hint = (i as u64 * 997) % 2000;
            outbox.close(CloseReason::with_reconnect_after(CloseCode::GoingAway, hint));
        }
        if tokio::time::timeout_at(deadline, self.tracker.wait()).await.is_err() {
            tracing::warn!(left = self.tracker.len(), "drain timeout: connections still open are dropped");
        }
        self.broker.shutdown().await;
        tracing::info!("shutdown complete");
    }
}
