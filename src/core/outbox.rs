//! A connection's bounded send queue. Producers (the hub) push into it without
//! ever waiting; the connection's one writer task drains everything queued in
//! one go and writes it with a single flush. While that task is idle, a
//! fan-out inside [`write_through`](super::wire::write_through) writes what it
//! queued to the socket itself (see [`super::wire`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use super::close::{CloseCode, CloseReason};
use super::delivery::Delivery;
use super::wire::{self, Wire, Wrote};

/// What a connection does when its queue would pass its byte cap
/// (`--slow-policy`; see docs/protocol.md, "Slow consumers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowPolicy {
    /// Close the connection with 4000 (the default).
    #[default]
    Close,
    /// Drop the oldest queued messages, counting each.
    DropOldest,
}

/// The result of offering a delivery to an outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued; `dropped` older deliveries were discarded to make room.
    Queued {
        /// Older deliveries discarded (drop-oldest policy).
        dropped: u32,
    },
    /// Not queued: the queue overflowed and the connection is now closing with
    /// 4000; `dropped` counts this delivery and everything it had queued.
    Overflowed {
        /// This delivery and everything that was queued.
        dropped: u32,
    },
    /// Not queued: the connection is already closing.
    Closed,
}

/// Heartbeat state of a connection, driven by the hub's one heartbeat task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heartbeat {
    /// Nothing to do.
    Idle,
    /// The writer should send a ping.
    PingDue,
    /// A ping was written; no frame has come back yet.
    Awaiting,
}

/// What the writer took out of the outbox.
#[derive(Debug, Default)]
pub struct Drained {
    /// Send a ping now.
    pub ping: bool,
    /// After writing the drained deliveries, close with this reason.
    pub close: Option<CloseReason>,
    /// The tail of a frame the producer's thread wrote only in part: write
    /// it before anything else. (Boxed, like everywhere it is kept: it is
    /// rare, and idle connections stay smaller without its room.)
    pub rest: Option<Box<Bytes>>,
}

struct Queue {
    items: VecDeque<Arc<Delivery>>,
    bytes: usize,
    close: Option<CloseReason>,
    heartbeat: Heartbeat,
    /// How a producer's thread writes to the socket, for a connection that has one.
    wire: Option<Box<dyn Wire>>,
    /// The connection's task is idle and has written everything: the wire
    /// may be used. Cleared by the task before it writes anything.
    wire_free: bool,
    /// A run of [`wire::write_through`] will write what is queued.
    deferred: bool,
    /// See [`Drained::rest`].
    rest: Option<Box<Bytes>>,
}

impl Queue {
    /// No delivery, close, ping or cut frame's tail for the writer.
    fn has_nothing_to_drain(&self) -> bool {
        self.items.is_empty() && self.close.is_none() && self.heartbeat != Heartbeat::PingDue && self.rest.is_none()
    }

    /// Forgets what was queued (taken or written), giving a burst's memory
    /// back once idle.
    fn emptied(&mut self) {
        self.items.clear();
        self.bytes = 0;
        if self.items.capacity() > 64 {
            self.items = VecDeque::new();
        }
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("items", &self.items.len())
            .field("bytes", &self.bytes)
            .field("close", &self.close)
            .field("wire", &self.wire.is_some())
            .field("wire_free", &self.wire_free)
            .finish_non_exhaustive()
    }
}

/// A connection's bounded queue of deliveries plus its control signals
/// (close, ping). Cheap when idle: an empty `VecDeque` allocates nothing.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<Queue>,
    waker: AtomicWaker,
    cap_bytes: usize,
    policy: SlowPolicy,
    dropped: AtomicU64,
}

impl Outbox {
    /// An empty outbox holding at most `cap_bytes` of queued deliveries.
    pub fn new(cap_bytes: usize, policy: SlowPolicy) -> Self {
        Self {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                bytes: 0,
                close: None,
                heartbeat: Heartbeat::Idle,
                wire: None,
                wire_free: false,
                deferred: false,
                rest: None,
            }),
            waker: AtomicWaker::new(),
            cap_bytes,
            policy,
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // queue itself is always consistent between statements.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `delivery` without waiting. Applies the slow-consumer policy
    /// when the queue would pass its cap. Inside a run of
    /// [`wire::write_through`], a connection whose task is idle is written
    /// at the run's end instead of woken.
    pub fn offer(self: &Arc<Self>, delivery: Arc<Delivery>) -> Offer {
        let cost = delivery.queue_cost();
        let mut q = self.lock();
        if q.close.is_some() {
            return Offer::Closed;
        }
        let mut dropped = 0u32;
        if q.bytes + cost > self.cap_bytes {
            match self.policy {
                SlowPolicy::Close => {
                    let dropped = q.items.len() as u32 + 1;
                    q.items = VecDeque::new();
                    q.bytes = 0;
                    q.close = Some(CloseReason::new(CloseCode::SlowConsumer));
                    drop(q);
                    self.dropped.fetch_add(u64::from(dropped), Ordering::Relaxed);
                    self.waker.wake();
                    return Offer::Overflowed { dropped };
                }
                SlowPolicy::DropOldest => {
                    while q.bytes + cost > self.cap_bytes {
                        let Some(old) = q.items.pop_front() else { break };
                        q.bytes -= old.queue_cost();
                        dropped += 1;
                    }
                }
            }
        }
        q.bytes += cost;
        q.items.push_back(delivery);
        let was_empty = q.items.len() == 1;
        if q.wire_free && !q.deferred {
            q.deferred = wire::defer(self);
        }
        let deferred = q.wire_free && q.deferred;
        drop(q);
        if dropped > 0 {
            self.dropped.fetch_add(u64::from(dropped), Ordering::Relaxed);
        }
        if was_empty && !deferred {
            self.waker.wake();
        }
        Offer::Queued { dropped }
    }

    /// Lets a producer's thread write to the connection's socket through
    /// `wire` whenever the connection's task is idle.
    pub fn attach_wire(&self, wire: Box<dyn Wire>) {
        self.lock().wire = Some(wire);
    }

    /// Stops the writes through the wire for good (the connection ends).
    pub fn detach_wire(&self) {
        let mut q = self.lock();
        q.wire = None;
        q.wire_free = false;
    }

    /// The connection's task is about to write: no producer's thread writes
    /// to its socket until it is idle again. Returns the tail of a frame the
    /// wire cut short, to be written first.
    pub fn hold_wire(&self) -> Option<Box<Bytes>> {
        let mut q = self.lock();
        q.wire_free = false;
        q.rest.take()
    }

    /// The end of a run of [`wire::write_through`] that queued here: writes
    /// everything queued if the connection's task is idle. What the socket
    /// does not take is left to the task, woken for it.
    pub(super) fn write_through(&self) {
        let mut guard = self.lock();
        let q = &mut *guard;
        q.deferred = false;
        if !q.wire_free || q.close.is_some() || q.items.is_empty() {
            // The task holds the socket (and is running) or is closing
            // (and was woken): it writes what is queued.
            return;
        }
        let Some(wire) = &q.wire else { return };
        match wire.write(q.items.make_contiguous()) {
            Wrote::All => q.emptied(),
            Wrote::Part { frames, rest } => {
                let taken = frames + usize::from(rest.is_some());
                let freed: usize = q.items.drain(..taken).map(|d| d.queue_cost()).sum();
                q.bytes -= freed;
                q.rest = rest.map(Box::new);
                q.wire_free = false;
                drop(guard);
                self.waker.wake();
            }
        }
    }

    /// Asks the writer to close with `reason` after what is already queued.
    /// The first close wins. Returns false when the outbox was already closing.
    pub fn close(&self, reason: CloseReason) -> bool {
        let mut q = self.lock();
        if q.close.is_some() {
            return false;
        }
        q.close = Some(reason);
        drop(q);
        self.waker.wake();
        true
    }

    /// True once a close was asked for.
    pub fn is_closing(&self) -> bool {
        self.lock().close.is_some()
    }

    /// Moves every queued delivery into `into` and reports the control
    /// signals. Registers `cx`'s waker first, so an offer racing with this call
    /// always wakes the writer again. `Poll::Pending` when there is nothing;
    /// then, if the writer is `idle` (it has written everything), a
    /// producer's thread may write to the socket until the writer takes it
    /// back ([`Outbox::hold_wire`], or a `Ready` from here).
    pub fn poll_drain(&self, cx: &mut Context<'_>, into: &mut Vec<Arc<Delivery>>, idle: bool) -> Poll<Drained> {
        self.waker.register(cx.waker());
        let mut q = self.lock();
        if q.has_nothing_to_drain() {
            q.wire_free = idle && q.wire.is_some();
            return Poll::Pending;
        }
        let ping = q.heartbeat == Heartbeat::PingDue;
        if ping {
            q.heartbeat = Heartbeat::Awaiting;
        }
        q.wire_free = false;
        into.extend(q.items.drain(..));
        q.emptied();
        Poll::Ready(Drained { ping, close: q.close.clone(), rest: q.rest.take() })
    }

    /// Registers `cx`'s waker like [`Outbox::poll_drain`] but takes nothing:
    /// `Ready` once there is something to drain. For a writer that holds
    /// its writes a while after the first delivery (`--write-delay`).
    pub fn poll_queued(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        if self.lock().has_nothing_to_drain() { Poll::Pending } else { Poll::Ready(()) }
    }

    /// Registers `cx`'s waker like [`Outbox::poll_drain`] but takes nothing:
    /// `Ready` once a close was asked for. For a writer whose socket is
    /// blocked: deliveries stay here, under the byte cap and the slow policy,
    /// while a close (overflow, disconnect, pong timeout, shutdown) still
    /// wakes it.
    pub fn poll_closing(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        if self.lock().close.is_some() { Poll::Ready(()) } else { Poll::Pending }
    }

    /// Bytes queued now (for accounting and tests).
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Deliveries this outbox has dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The connection showed it is alive (any frame arrived).
    pub fn seen_alive(&self) {
        let mut q = self.lock();
        if q.heartbeat != Heartbeat::Idle {
            q.heartbeat = Heartbeat::Idle;
        }
    }

    /// Heartbeat, first pass: ping an idle connection. While its task is
    /// idle with nothing queued, the ping goes out through the wire from
    /// this thread, and the task is not woken for it (only for the pong);
    /// otherwise the task is asked to send it.
    pub(crate) fn request_ping(&self) {
        let mut guard = self.lock();
        let q = &mut *guard;
        if q.heartbeat != Heartbeat::Idle {
            return;
        }
        q.heartbeat = Heartbeat::Awaiting;
        if let Some(wire) = q.wire.as_ref().filter(|_| q.wire_free && q.has_nothing_to_drain()) {
            match wire.ping() {
                Wrote::All => return,
                Wrote::Part { rest: Some(rest), .. } => {
                    q.rest = Some(Box::new(rest));
                    q.wire_free = false;
                }
                Wrote::Part { rest: None, .. } => q.heartbeat = Heartbeat::PingDue,
            }
        } else {
            q.heartbeat = Heartbeat::PingDue;
        }
        drop(guard);
        self.waker.wake();
    }

    /// Heartbeat, second pass (a pong timeout after the first): a connection
    /// whose ping is unanswered, or was never even written, is closed.
    /// Returns false for such a dead connection.
    pub(crate) fn check_pong(&self) -> bool {
        let q = self.lock();
        if q.heartbeat == Heartbeat::Idle {
            return true;
        }
        drop(q);
        self.close(CloseReason { code: CloseCode::Internal, reason: "pong timeout".into() });
        false
    }
}
