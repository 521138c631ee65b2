//! The backend: gRPC `PushStream`s that push 100-byte stamped messages to the
//! fleet's users, flat out, at a set rate, in bursts, or one at a time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use futures_util::{Stream, stream};
use pushgate::proto::push_service_client::PushServiceClient;
use pushgate::proto::{PushReply, PushRequest, StatsReply, StatsRequest, push_request};
use tokio::sync::{Semaphore, mpsc};
use tonic::transport::{Channel, Endpoint};

use crate::Args;
use crate::fleet::{EVENT, STAMP_DIGITS, Shared};

/// Pushes to make in one phase.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Total pushes over all streams.
    pub pushes: u64,
    /// Pushes sent back-to-back to one user before moving to the next
    /// (1: plain round-robin, P1; ≥ 8: frames queue up per connection, P2).
    pub burst: u64,
    /// Total pushes per second; `None`: as fast as the streams allow.
    pub rate: Option<f64>,
    /// No push is started after this.
    pub deadline: Instant,
    /// Pushes in flight per stream (sent, reply not yet read).
    pub window: usize,
}

impl Load {
    /// `args.pushes` as fast as `args.window` allows, `burst` to a user at a
    /// time, for at most `args.duration_cap` from now.
    pub fn flat_out(args: &Args, burst: u64) -> Self {
        let deadline = Instant::now() + args.duration_cap;
        Load { pushes: args.pushes, burst, rate: None, deadline, window: args.window }
    }

    /// `rate` pushes per second for `secs`, none started after `deadline`.
    pub fn paced(args: &Args, rate: f64, secs: f64, deadline: Instant) -> Self {
        Load { pushes: (rate * secs) as u64, burst: 1, rate: Some(rate), deadline, window: args.window }
    }
}

/// What the replies said.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub sent: u64,
    pub replies: u64,
    /// Sum of `PushReply.delivered`: frames the gateway queued.
    pub delivered: u64,
    pub failed: u64,
    pub first_error: Option<String>,
}

impl Tally {
    /// Adds what another producer's replies said.
    pub fn add(&mut self, other: Tally) {
        self.sent += other.sent;
        self.replies += other.replies;
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.first_error = self.first_error.take().or(other.first_error);
    }

    fn take(&mut self, reply: &PushReply) {
        self.replies += 1;
        self.delivered += u64::from(reply.delivered);
        if let Some(e) = &reply.error {
            self.fail(|| format!("code {}: {}", e.code, e.message));
        }
    }

    /// Counts a refused push; `error` describes it when it is the first.
    pub fn fail(&mut self, error: impl FnOnce() -> String) {
        self.failed += 1;
        self.first_error.get_or_insert_with(error);
    }
}

/// The gRPC endpoint of a server's internal address.
pub fn endpoint(addr: SocketAddr) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect_timeout(Duration::from_secs(5)))
}

/// `n` (at least one) HTTP/2 connections to `endpoint`, at `addr`.
pub async fn channels(endpoint: &Endpoint, addr: SocketAddr, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(n.max(1));
    for _ in 0..n.max(1) {
        channels.push(endpoint.connect().await.with_context(|| format!("gRPC connect to {addr}"))?);
    }
    Ok(channels)
}

/// The gRPC side of the benchmark: one HTTP/2 connection per stream, so the
/// gateway's threads share the ingest work.
pub struct Producer {
    channels: Vec<Channel>,
    /// To the measured gateway, for `Stats` (the pushes may go to another node).
    observer: Channel,
    users: Arc<[String]>,
    padding: Arc<str>,
    shared: Arc<Shared>,
}

impl Producer {
    /// A producer for the fleet `args` describes (`args.streams` streams,
    /// users u0..u{N-1}), pushing to `internal` and reading `Stats` there.
    pub async fn for_fleet(args: &Args, internal: SocketAddr, shared: &Arc<Shared>) -> anyhow::Result<Arc<Self>> {
        let producer =
            Self::connect(internal, internal, args.streams, args.connections, args.message_bytes, Arc::clone(shared));
        Ok(Arc::new(producer.await?))
    }

    /// Connects `streams` channels to `internal` for the pushes, and one to
    /// `observed` (the measured gateway) for `Stats`.
    pub async fn connect(
        internal: SocketAddr,
        observed: SocketAddr,
        streams: usize,
        users: usize,
        message_bytes: usize,
        shared: Arc<Shared>,
    ) -> anyhow::Result<Self> {
        let pushing =
            endpoint(internal)?.initial_stream_window_size(Some(4 << 20)).initial_connection_window_size(Some(8 << 20));
        let channels = channels(&pushing, internal, streams).await?;
        let observer = if observed == internal {
            channels[0].clone()
        } else {
            endpoint(observed)?.connect().await.with_context(|| format!("gRPC connect to {observed}"))?
        };
        let padding = "x".repeat(message_bytes.saturating_sub(STAMP_DIGITS)).into();
        let users = (0..users).map(|i| format!("u{i}")).collect();
        Ok(Self { channels, observer, users, padding, shared })
    }

    /// The same HTTP/2 connections pushing `message_bytes`-byte messages to
    /// other users (users with no connection, or another set of clients
    /// reporting into `shared`).
    pub fn retarget(&self, users: Arc<[String]>, message_bytes: usize, shared: Arc<Shared>) -> Self {
        Self {
            channels: self.channels.clone(),
            observer: self.observer.clone(),
            users,
            padding: "x".repeat(message_bytes.saturating_sub(STAMP_DIGITS)).into(),
            shared,
        }
    }

    /// Users `{prefix}0 .. {prefix}{n-1}`.
    pub fn users(prefix: &str, n: usize) -> Arc<[String]> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    /// The counters and clock the fleet reports into.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The gateway's counters (`Stats`), or why not.
    pub async fn stats(&self) -> anyhow::Result<StatsReply> {
        let mut client = PushServiceClient::new(self.observer.clone());
        let reply = client.stats(StatsRequest {}).await.map_err(|s| anyhow!("Stats: {}: {}", s.code(), s.message()))?;
        Ok(reply.into_inner())
    }

    /// One stamped push to `user`.
    fn request(&self, user: usize) -> PushRequest {
        let mut message = format!("{:0width$}", self.shared.now_nanos(), width = STAMP_DIGITS);
        message.push_str(&self.padding);
        PushRequest {
            user_id: self.users[user].clone(),
            event: EVENT.into(),
            payload: Some(push_request::Payload::Message(message)),
            ..Default::default()
        }
    }

    /// Runs `load` over every stream and sums the replies.
    pub async fn run(self: &Arc<Self>, load: Load) -> anyhow::Result<Tally> {
        let streams = self.channels.len();
        let mut tasks = Vec::with_capacity(streams);
        for s in 0..streams {
            let this = Arc::clone(self);
            tasks.push(tokio::spawn(async move { this.one_stream(s, load).await }));
        }
        let mut total = Tally::default();
        for task in tasks {
            total.add(task.await.context("producer task")??);
        }
        Ok(total)
    }

    /// Stream `s` of `load`, on its own HTTP/2 connection.
    async fn one_stream(self: Arc<Self>, s: usize, load: Load) -> anyhow::Result<Tally> {
        let window = Arc::new(Semaphore::new(load.window.max(1)));
        let sent = Arc::new(AtomicU64::new(0));
        let requests = self.requests(s, load, Arc::clone(&window), Arc::clone(&sent));
        let mut client = PushServiceClient::new(self.channels[s].clone()).max_decoding_message_size(1 << 20);
        let status = |s: tonic::Status| anyhow!("PushStream: {}: {}", s.code(), s.message());
        let mut replies = client.push_stream(requests).await.map_err(status)?.into_inner();
        let mut tally = Tally::default();
        while let Some(reply) = replies.message().await.map_err(status)? {
            window.add_permits(1);
            tally.take(&reply);
        }
        tally.sent = sent.load(Relaxed);
        Ok(tally)
    }

    /// The requests of stream `s`, built (and stamped) only when tonic asks
    /// for the next one. The stream takes blocks `s, s + streams, ...`, where
    /// block `j` is `burst` pushes to user `j mod users`; each request first
    /// takes a permit of `window` (given back per reply) and, with a rate,
    /// waits for its due time.
    fn requests(
        self: &Arc<Self>,
        s: usize,
        load: Load,
        window: Arc<Semaphore>,
        sent: Arc<AtomicU64>,
    ) -> impl Stream<Item = PushRequest> + Send + 'static {
        let streams = self.channels.len() as u64;
        let per_stream_rate = load.rate.map(|r| r / streams as f64);
        let started = tokio::time::Instant::now();
        let this = Arc::clone(self);
        // (block, index in the block, requests so far on this stream)
        stream::unfold((s as u64, 0u64, 0u64), move |(block, k, n)| {
            let (this, window, sent) = (Arc::clone(&this), Arc::clone(&window), Arc::clone(&sent));
            async move {
                if block * load.burst + k >= load.pushes || Instant::now() >= load.deadline {
                    return None;
                }
                if let Some(rate) = per_stream_rate {
                    tokio::time::sleep_until(started + Duration::from_secs_f64(n as f64 / rate)).await;
                }
                window.acquire().await.ok()?.forget();
                let request = this.request((block % this.users.len() as u64) as usize);
                sent.fetch_add(1, Relaxed);
                let next = if k + 1 < load.burst { (block, k + 1, n + 1) } else { (block + streams, 0, n + 1) };
                Some((request, next))
            }
        })
    }

    /// Idle latency: `samples` pushes to random users, one at a time, each
    /// sent only after the previous one was received.
    pub async fn one_at_a_time(&self, samples: usize, seed: u64) -> anyhow::Result<Tally> {
        let (tx, rx) = mpsc::channel::<PushRequest>(1);
        let requests = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        let mut rng = seed | 1;
        let mut pick = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % self.users.len() as u64) as usize
        };
        let status = |s: tonic::Status| anyhow!("PushStream: {}: {}", s.code(), s.message());
        let send = |user| tx.send(self.request(user));
        // The first request goes before the call, in case the gateway waits
        // for it before answering the headers.
        let mut target = self.shared.received.load(Relaxed) + 1;
        send(pick()).await.map_err(|_| anyhow!("request stream closed"))?;
        let mut client = PushServiceClient::new(self.channels[0].clone());
        let mut replies = client.push_stream(requests).await.map_err(status)?.into_inner();
        let mut tally = Tally { sent: 1, ..Default::default() };
        self.shared.watch.store(true, Relaxed);
        let result = async {
            for i in 0..samples {
                let reply = replies.message().await.map_err(status)?.ok_or_else(|| anyhow!("stream ended"))?;
                tally.take(&reply);
                if reply.delivered > 0 {
                    self.wait_received(target).await;
                }
                if i + 1 == samples {
                    break;
                }
                target = self.shared.received.load(Relaxed) + 1;
                send(pick()).await.map_err(|_| anyhow!("request stream closed"))?;
                tally.sent += 1;
            }
            anyhow::Ok(())
        }
        .await;
        self.shared.watch.store(false, Relaxed);
        result.map(|()| tally)
    }

    /// Waits (at most a second) until `target` frames have been received.
    async fn wait_received(&self, target: u64) {
        let give_up = tokio::time::Instant::now() + Duration::from_secs(1);
        while self.shared.received.load(Relaxed) < target {
            if tokio::time::timeout_at(give_up, self.shared.notify.notified()).await.is_err() {
                return;
            }
        }
    }
}
