//! A connection's bounded send queue. Producers (the hub) push into it without
//! ever waiting; the connection's one writer task drains everything queued in
//! one go and writes it with a single flush.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use super::close::{CloseCode, CloseReason};
use super::delivery::Delivery;

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
}

#[derive(Debug)]
struct Queue {
    items: VecDeque<Arc<Delivery>>,
    bytes: usize,
    close: Option<CloseReason>,
    heartbeat: Heartbeat,
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
            queue: Mutex::new(Queue { items: VecDeque::new(), bytes: 0, close: None, heartbeat: Heartbeat::Idle }),
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
    /// when the queue would pass its cap.
    pub fn offer(&self, delivery: Arc<Delivery>) -> Offer {
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
        drop(q);
        if dropped > 0 {
            self.dropped.fetch_add(u64::from(dropped), Ordering::Relaxed);
        }
        if was_empty {
            self.waker.wake();
        }
        Offer::Queued { dropped }
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
    /// always wakes the writer again. `Poll::Pending` when there is nothing.
    pub fn poll_drain(&self, cx: &mut Context<'_>, into: &mut Vec<Arc<Delivery>>) -> Poll<Drained> {
        self.waker.register(cx.waker());
        let mut q = self.lock();
        let ping = q.heartbeat == Heartbeat::PingDue;
        if ping {
            q.heartbeat = Heartbeat::Awaiting;
        }
        if q.items.is_empty() && q.close.is_none() && !ping {
            return Poll::Pending;
        }
        into.extend(q.items.drain(..));
        q.bytes = 0;
        if q.items.capacity() > 64 {
            q.items = VecDeque::new(); // give a burst's memory back when idle
        }
        Poll::Ready(Drained { ping, close: q.close.clone() })
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

    /// Heartbeat, first pass: ask an idle connection's writer to send a ping.
    pub(crate) fn request_ping(&self) {
        let mut q = self.lock();
        if q.heartbeat == Heartbeat::Idle {
            q.heartbeat = Heartbeat::PingDue;
            drop(q);
            self.waker.wake();
        }
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
