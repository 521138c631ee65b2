//! The hub's counters, gauges and the push→write latency histogram, held as
//! Prometheus metrics so `/metrics`, `Stats` and the hub read one source.
//! Every labelled child used on a hot path is created once up front; an
//! increment is then one atomic add.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::close::CloseCode;

type Labels = Vec<(&'static str, String)>;

/// The push→write histogram of [`Metrics`], shared.
#[derive(Clone, Debug)]
pub struct WriteLatency(Histogram);

impl WriteLatency {
    /// Records the time from a push's acceptance to its write.
    pub fn written(&self, latency: Duration) {
        self.0.observe(latency.as_secs_f64());
    }
}

/// Why a delivery was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The connection's queue overflowed and it was closed (4000).
    SlowConsumer,
    /// `--slow-policy drop-oldest` discarded it to make room.
    DropOldest,
}

/// How a push ended, for `pushgate_pushes_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushResult {
    /// Accepted and queued.
    Ok,
    /// Refused as invalid.
    Invalid,
    /// Refused while shutting down.
    Unavailable,
    /// A repeated idempotency key: acknowledged, not delivered again.
    Duplicate,
}

/// Where a producer call without a valid key was refused, for
/// `pushgate_producer_auth_failures_total{transport}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerTransport {
    /// A PushService call on the internal listener.
    Grpc,
    /// `POST /push` or `/v1/*` on the internal listener.
    Http,
    /// wserver's `POST /push` on the public listener (`--push-on-public`).
    PublicHttp,
}

impl ProducerTransport {
    /// Every transport, in the order of [`ProducerTransport::index`].
    const ALL: [ProducerTransport; 3] =
        [ProducerTransport::Grpc, ProducerTransport::Http, ProducerTransport::PublicHttp];

    /// The `transport` label value.
    pub const fn label(self) -> &'static str {
        match self {
            ProducerTransport::Grpc => "grpc",
            ProducerTransport::Http => "http",
            ProducerTransport::PublicHttp => "public_http",
        }
    }

    const fn index(self) -> usize {
        match self {
            ProducerTransport::Grpc => 0,
            ProducerTransport::Http => 1,
            ProducerTransport::PublicHttp => 2,
        }
    }
}

/// Live metrics of one hub.
#[derive(Debug)]
pub struct Metrics {
    pub(crate) connections: Gauge<i64, AtomicI64>,
    pub(crate) users: Gauge<i64, AtomicI64>,
    pub(crate) subscriptions: Gauge<i64, AtomicI64>,
    pub(crate) registrations: Counter,
    pushes: [Counter; 4],
    pub(crate) broadcasts: Counter,
    pub(crate) deliveries: Counter,
    pub(crate) history_bytes: Gauge<i64, AtomicI64>,
    pub(crate) history_evictions: Counter,
    drops: [Counter; 2],
    disconnects: Family<Labels, Counter>,
    node: Family<Labels, Gauge<i64, AtomicI64>>,
    write_latency: Histogram,
    producer_auth_failures: [Counter; 3],
    /// Broker publish errors (0 with the in-process broker).
    pub broker_errors: Counter,
    /// Broker reconnects (0 with the in-process broker).
    pub broker_reconnects: Counter,
    registry: Registry,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Joined connections now.
    pub connections: u64,
    /// Users with at least one joined connection now.
    pub users: u64,
    /// (connection, event) subscriptions now.
    pub subscriptions: u64,
    /// Pushes accepted since start.
    pub pushes: u64,
    /// Deliveries queued to connections since start.
    pub deliveries: u64,
    /// Deliveries dropped since start.
    pub drops: u64,
    /// Broadcasts accepted since start.
    pub broadcasts: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every series.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pushgate");
        let connections = Gauge::default();
        let users = Gauge::default();
        let subscriptions = Gauge::default();
        let registrations = Counter::default();
        let pushes_family = Family::<Labels, Counter>::default();
        let pushes = ["ok", "invalid", "unavailable", "duplicate"]
            .map(|r| pushes_family.get_or_create_owned(&vec![("result", r.to_owned())]));
        let broadcasts = Counter::default();
        let deliveries = Counter::default();
        let history_bytes = Gauge::default();
        let history_evictions = Counter::default();
        let drops_family = Family::<Labels, Counter>::default();
        let drops =
            ["slow_consumer", "drop_oldest"].map(|r| drops_family.get_or_create_owned(&vec![("reason", r.to_owned())]));
        let disconnects = Family::<Labels, Counter>::default();
        let node = Family::<Labels, Gauge<i64, AtomicI64>>::default();
        // 50 µs .. ~1.6 s
        let write_latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let broker_errors = Counter::default();
        let broker_reconnects = Counter::default();
        let auth_failures_family = Family::<Labels, Counter>::default();
        let producer_auth_failures = ProducerTransport::ALL
            .map(|t| auth_failures_family.get_or_create_owned(&vec![("transport", t.label().to_owned())]));
        registry.register("connections", "WebSocket connections joined to the hub", connections.clone());
        registry.register("users", "Users with at least one connection", users.clone());
        registry.register("subscriptions", "Connection-event subscriptions", subscriptions.clone());
        registry.register("registrations", "Connections that registered", registrations.clone());
        registry.register("pushes", "Pushes by result", pushes_family);
        registry.register("broadcasts", "Broadcasts accepted", broadcasts.clone());
        registry.register("deliveries", "Deliveries queued to connections", deliveries.clone());
        registry.register(
            "history_bytes",
            "What every user's history holds (--history-max-bytes)",
            history_bytes.clone(),
        );
        registry.register(
            "history_evictions",
            "Deliveries evicted from history, oldest first, to stay within --history-max-bytes",
            history_evictions.clone(),
        );
        registry.register("drops", "Deliveries dropped, by reason", drops_family);
        registry.register("disconnects", "Connections closed, by close code", disconnects.clone());
        registry.register("node", "This node: 1, labelled with its --node-id", node.clone());
        registry.register_with_unit(
            "push_write_latency",
            "Time from a push's acceptance to its write to a connection",
            prometheus_client::registry::Unit::Seconds,
            write_latency.clone(),
        );
        registry.register("broker_publish_errors", "Broker publish errors", broker_errors.clone());
        registry.register("broker_reconnects", "Broker reconnects", broker_reconnects.clone());
        registry.register(
            "producer_auth_failures",
            "Producer calls refused for a missing or wrong key, by transport",
            auth_failures_family,
        );
        Self {
            connections,
            users,
            subscriptions,
            registrations,
            pushes,
            broadcasts,
            deliveries,
            history_bytes,
            history_evictions,
            drops,
            disconnects,
            node,
            write_latency,
            producer_auth_failures,
            broker_errors,
            broker_reconnects,
            registry,
        }
    }

    /// The registry to encode for `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts a push by result.
    pub fn push(&self, result: PushResult) {
        let i = match result {
            PushResult::Ok => 0,
            PushResult::Invalid => 1,
            PushResult::Unavailable => 2,
            PushResult::Duplicate => 3,
        };
        self.pushes[i].inc();
    }

    /// Counts a producer call refused for a missing or wrong key.
    pub fn producer_auth_failed(&self, transport: ProducerTransport) {
        self.producer_auth_failures[transport.index()].inc();
    }

    /// Producer calls refused for a missing or wrong key on `transport`
    /// since start.
    pub fn producer_auth_failures(&self, transport: ProducerTransport) -> u64 {
        self.producer_auth_failures[transport.index()].get()
    }

    /// Counts `n` dropped deliveries.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        if n > 0 {
            let i = match reason {
                DropReason::SlowConsumer => 0,
                DropReason::DropOldest => 1,
            };
            self.drops[i].inc_by(n);
        }
    }

    /// Labels the `pushgate_node` series with this node's id.
    pub fn set_node_id(&self, node_id: &str) {
        self.node.get_or_create(&vec![("node_id", node_id.to_owned())]).set(1);
    }

    /// Counts a connection closed with `code`.
    pub fn disconnected(&self, code: CloseCode) {
        self.disconnects.get_or_create(&vec![("code", code.code().to_string())]).inc();
    }

    /// Records the time from a push's acceptance to its write.
    pub fn written(&self, latency: Duration) {
        self.write_latency.observe(latency.as_secs_f64());
    }

    /// A handle on the push→write histogram for writers that do not reach
    /// the hub (a producer's thread writing through a connection's wire).
    pub fn write_latency(&self) -> WriteLatency {
        WriteLatency(self.write_latency.clone())
    }

    pub(crate) fn joined(&self, events: usize, first_of_user: bool) {
        self.connections.inc();
        self.registrations.inc();
        self.subscriptions.inc_by(events as i64);
        if first_of_user {
            self.users.inc();
        }
    }

    pub(crate) fn left(&self, events: usize, last_of_user: bool) {
        self.connections.dec();
        self.subscriptions.dec_by(events as i64);
        if last_of_user {
            self.users.dec();
        }
    }

    /// The counters as plain numbers.
    pub fn snapshot(&self) -> StatsSnapshot {
        let gauge = |g: &Gauge<i64, AtomicI64>| g.get().max(0) as u64;
        StatsSnapshot {
            connections: gauge(&self.connections),
            users: gauge(&self.users),
            subscriptions: gauge(&self.subscriptions),
            pushes: self.pushes[0].get(),
            deliveries: self.deliveries.get(),
            drops: self.drops.iter().map(Counter::get).sum(),
            broadcasts: self.broadcasts.get(),
        }
    }
}
