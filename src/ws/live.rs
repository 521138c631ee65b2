//! The live phase of a joined connection: one loop that reads the
//! socket and drains the connection's outbox, in the same task.
//!
//! Each turn polls, in order: the pending writes and the socket's read side
//! (`Session::poll_io`, with its limits on a client that does not read), and
//! the outbox. Everything drained is queued frame by frame and written with
//! one flush, so a burst to one socket costs one write. While a flush is
//! blocked (a slow client) the outbox is not drained — deliveries wait there,
//! under the queue cap and the slow-consumer policy — but it is still watched
//! for a close, and the socket is still read, so neither a close from the hub
//! nor one from the client goes unnoticed. Pings and pong timeouts come from
//! the hub's one heartbeat task through the outbox. While the loop waits with
//! everything written, a producer's thread may write deliveries to a plain
//! TCP socket itself (`core::wire`), and the heartbeat its pings; the loop
//! takes the socket back before it writes anything of its own. Only a
//! connection whose token expires holds a timer (boxed, so the others pay
//! one pointer): it closes with 4002 at the expiry unless a refresh moved
//! it. With a write delay (`--write-delay`) the first thing queued after a
//! write starts a hold, boxed and dropped at its end; the outbox is drained
//! when it ends, so what was pushed meanwhile goes out in the same write (a
//! close is not held), and no producer's thread writes to the socket.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::Message;

use super::protocol::{self, BadRequest, ClientMessage, Register};
use super::register::{Membership, Reply, add_events, check_allowed, kind, refused_token};
use super::session::{End, Incoming, Session};
use super::wire::SocketWire;
use super::{Mode, envelope};
use crate::core::{CloseCode, Delivery, Drained};

/// A drained batch larger than this gives its buffer back afterwards.
const KEEP_BATCH_CAPACITY: usize = 64;

/// What woke the loop.
enum Step {
    /// A frame from the client, or the end of the socket.
    Read(Result<Incoming, End>),
    Drained(Drained),
    /// A close was asked for while a flush is blocked.
    Closing,
    /// The connection's token expired.
    Expired,
}

struct Live<'c, 'a> {
    conn: &'c mut Session<'a>,
    member: Membership,
    batch: Vec<Arc<Delivery>>,
    /// The token's expiry and its timer, when the token has one.
    expiry: Option<(SystemTime, Pin<Box<Sleep>>)>,
    /// With a write delay, the end of the current hold: from the first
    /// delivery queued after a write until the next write.
    held: Option<Pin<Box<Sleep>>>,
}

/// Runs a joined connection until it ends; the membership is dropped (the
/// connection leaves the hub) on return. Not an `async fn`: one would keep
/// the room of its arguments beside the `Live` they are moved into, for
/// the connection's whole life.
pub(super) fn run<'c, 'a>(conn: &'c mut Session<'a>, member: Membership) -> impl Future<Output = End> + use<'c, 'a> {
    // Writes held for a write delay are the task's: no producer's thread
    // writes at once.
    if let Some(tcp) = conn.tcp.take().filter(|_| conn.ctx.config.write_delay.is_zero()) {
        let latency = conn.ctx.hub.metrics().write_latency();
        member.outbox.attach_wire(Box::new(SocketWire::new(tcp, conn.mode, latency)));
    }
    // Boxed: the loop's state would otherwise hold it twice (as its argument
    // and as its local), for the connection's whole life.
    Box::new(Live { conn, member, batch: Vec::new(), expiry: None, held: None }).run()
}

impl Live<'_, '_> {
    async fn run(mut self: Box<Self>) -> End {
        loop {
            self.arm_expiry();
            let step = poll_fn(|cx| self.poll_step(cx)).await;
            // Handled here, not in a method of its own: an `async fn` taking
            // the step would keep its room (and its arms' state) in the
            // loop's state, part of every idle connection's task. Only two
            // steps wait on anything, each holding little across its await.
            let handled = match step {
                Step::Read(Ok(Incoming::Text(text))) => {
                    self.member.outbox.seen_alive();
                    // Boxed: client messages are rare.
                    Box::pin(self.message(&text)).await
                }
                Step::Closing => {
                    let drained = poll_fn(|cx| self.member.outbox.poll_drain(cx, &mut self.batch, false)).await;
                    self.write(drained)
                }
                Step::Read(Ok(Incoming::Alive)) => {
                    self.member.outbox.seen_alive();
                    Ok(())
                }
                Step::Read(Err(end)) => Err(end),
                Step::Drained(drained) => self.write(drained),
                Step::Expired => Err(CloseCode::TokenExpired.into()),
            };
            if let Err(end) = handled {
                return end;
            }
        }
    }

    /// Sets the expiry timer to the current token's `expires_at` (a
    /// register or refresh may have changed it).
    fn arm_expiry(&mut self) {
        let at = self.member.identity.expires_at;
        if self.expiry.as_ref().map(|(current, _)| *current) == at {
            return;
        }
        self.expiry = at.map(|at| {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            (at, Box::pin(tokio::time::sleep(left)))
        });
    }

    /// The next step; any but a drained batch (which took the socket back
    /// itself) first takes the socket back from the producers' threads.
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        let step = self.poll_next_step(cx);
        if matches!(step, Poll::Ready(ref step) if !matches!(step, Step::Drained(_))) {
            if let Some(rest) = self.member.outbox.hold_wire() {
                self.conn.resume_cut(rest);
            }
        }
        step
    }

    fn poll_next_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        if let Some((_, timer)) = &mut self.expiry {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Step::Expired);
            }
        }
        if let Poll::Ready(read) = self.conn.poll_io(cx) {
            return Poll::Ready(Step::Read(read));
        }
        if self.conn.unflushed {
            return self.member.outbox.poll_closing(cx).map(|()| Step::Closing);
        }
        if !self.poll_hold_over(cx) {
            return self.member.outbox.poll_closing(cx).map(|()| Step::Closing);
        }
        // Everything is written: the socket may be lent while this waits.
        self.member.outbox.poll_drain(cx, &mut self.batch, true).map(Step::Drained)
    }

    /// Whether the outbox may be drained now: always without a write delay;
    /// with one, once the hold that the first queued delivery began is over
    /// (a close does not wait for it: the caller watches for one).
    fn poll_hold_over(&mut self, cx: &mut Context<'_>) -> bool {
        let delay = self.conn.ctx.config.write_delay;
        if delay.is_zero() {
            return true;
        }
        let held = match &mut self.held {
            Some(held) => held,
            None if self.member.outbox.poll_queued(cx).is_pending() => return false,
            None => self.held.insert(Box::pin(tokio::time::sleep(delay))),
        };
        let over = held.as_mut().poll(cx).is_ready();
        if over {
            self.held = None;
        }
        over
    }

    /// Queues what was drained; the next turn flushes it in one write. The
    /// push→write latency is observed once per batch, for its oldest
    /// delivery (the histogram takes a lock; once per write keeps it cheap).
    fn write(&mut self, mut drained: Drained) -> Result<(), End> {
        if let Some(rest) = drained.rest.take() {
            self.conn.resume_cut(rest);
        }
        if let Some(oldest) = self.batch.first() {
            self.conn.ctx.hub.metrics().written(oldest.accepted.elapsed());
        }
        for delivery in self.batch.drain(..) {
            self.conn.queue(envelope::delivery(self.conn.mode, &delivery))?;
        }
        if self.batch.capacity() > KEEP_BATCH_CAPACITY {
            self.batch = Vec::new();
        }
        if drained.ping {
            self.conn.queue(Message::Ping(Bytes::new()))?;
        }
        match drained.close {
            Some(reason) => Err(End::Close(reason)),
            None => Ok(()),
        }
    }

    /// Handles a client message of the live phase.
    async fn message(&mut self, text: &str) -> Result<(), End> {
        let message = match protocol::parse(text) {
            Ok(message) => message,
            Err(bad) => return self.conn.bad_request(&bad),
        };
        let conn = &mut *self.conn;
        let member = &mut self.member;
        match (conn.mode, message) {
            (_, ClientMessage::Register(register)) => add_events(conn, member, register, Reply::Registered).await,
            (Mode::Compat, other) => conn.bad_request(&BadRequest::UnknownType(kind(&other).into())),
            (Mode::Envelope, ClientMessage::Subscribe { events, since }) => {
                add_events(conn, member, Register { token: None, events, since }, Reply::Subscribed).await
            }
            (Mode::Envelope, ClientMessage::Unsubscribe(events)) => {
                member.events = conn.ctx.hub.unsubscribe(&member.user, conn.id, &events);
                conn.queue(envelope::subscriptions("unsubscribed", &member.events))
            }
            (Mode::Envelope, ClientMessage::Refresh(token)) => refresh(conn, member, &token).await,
            (Mode::Envelope, ClientMessage::Ping) => conn.queue(envelope::pong()),
        }
    }
}

/// `{"type":"refresh"}`: a fresh token of the same user replaces the
/// connection's (and its expiry). An authenticator that cannot decide right
/// now leaves the old token in place and says so.
async fn refresh(conn: &mut Session<'_>, member: &mut Membership, token: &str) -> Result<(), End> {
    let identity = match conn.ctx.authenticate(token).await {
        Ok(identity) => identity,
        Err(crate::core::AuthError::Unavailable(reason)) => {
            tracing::debug!(%reason, "refresh: authentication unavailable");
            return conn.error("auth_unavailable", "authentication is unavailable; try again");
        }
        Err(error) => return Err(refused_token(&error)),
    };
    if identity.user != member.user {
        return Err(End::close(CloseCode::Unauthorized, "the token is another user's"));
    }
    check_allowed(&identity, &member.events)?;
    member.identity = identity;
    conn.queue(envelope::refreshed())
}
