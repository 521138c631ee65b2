//! Writing from the thread that fans a push out.
//!
//! A connection's own task writes what its outbox holds; that costs, per
//! delivery, a wake-up of that task and a poll of it, often on the other
//! worker thread. While that task is idle — everything it had was written and
//! nothing of its own is waiting — the thread that fans a push out may write
//! the frames to the socket itself, without waiting, as a minimal server
//! would. [`write_through`] runs a fan-out (one push, or a run of pushes read
//! together from one producer stream) and then, for every outbox it queued
//! to, writes all that is queued there with one write per connection, however
//! many pushes of the run went to it.
//!
//! What a socket does not take at once is left to the connection's task: the
//! deliveries not written stay queued (under the byte cap and the
//! slow-consumer policy, as before), and the tail of a frame the socket took
//! only part of is handed over as raw bytes that the task writes before
//! anything else. The task takes the socket back (see [`Outbox::hold_wire`])
//! before it writes anything of its own, so the two never write at once.
//!
//! Nothing here waits: a fan-out outside [`write_through`] queues and wakes
//! the connection's task as before.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::delivery::Delivery;
use super::outbox::Outbox;

/// How an adapter writes deliveries to a connection's socket without
/// waiting (the WebSocket adapter, for a plain TCP connection).
pub trait Wire: Send + Sync {
    /// Encodes `deliveries` and writes them in order, as far as the socket
    /// takes them now.
    fn write(&self, deliveries: &[Arc<Delivery>]) -> Wrote;

    /// Writes a ping without waiting: [`Wrote::All`] when the socket took
    /// it whole, else `Part` with no frame written and, if the socket took
    /// part of it, the tail to write before anything else.
    fn ping(&self) -> Wrote;
}

/// What [`Wire::write`] managed.
#[derive(Debug, PartialEq, Eq)]
pub enum Wrote {
    /// Every delivery was written.
    All,
    /// The socket is full (or failed): the first `frames` deliveries were
    /// written whole; when `rest` is set the next one was cut short and
    /// `rest` is the tail of its frame, to be written before anything else.
    Part {
        /// Deliveries written whole.
        frames: usize,
        /// The unwritten tail of the frame after them.
        rest: Option<Bytes>,
    },
}

/// Outboxes that stay above this many in the run's list give it back.
const KEEP_TOUCHED: usize = 1024;

/// Writes at the end of a run that share one reading of the clock, for the
/// push→write latency: a reading is at most this many socket writes old
/// (tens of microseconds, under the histogram's first bucket), and a
/// fan-out to many connections reads the clock once per that many instead
/// of once per connection (a reading and its arithmetic were about a third
/// of the write-through's own instructions per delivery).
const WRITES_PER_CLOCK: usize = 16;

#[derive(Default)]
struct Run {
    /// Nesting of [`write_through`] on this thread.
    depth: u32,
    /// Outboxes queued to in the run, each once, to be written at its end.
    touched: Vec<Arc<Outbox>>,
    /// While the run's writes go on: the clock, as [`now`] gives it.
    clock: Option<Instant>,
}

thread_local! {
    static RUN: RefCell<Run> = RefCell::new(Run::default());
}

/// Runs `fan_out`, then writes what it queued to connections whose task is
/// idle, from this thread. `fan_out` must not wait (it is synchronous); a
/// call nested in another writes at the outer one's end.
pub fn write_through<T>(fan_out: impl FnOnce() -> T) -> T {
    RUN.with_borrow_mut(|run| run.depth += 1);
    let _end = EndOfRun;
    fan_out()
}

/// Writes the run's outboxes when the outermost [`write_through`] ends,
/// even if its fan-out panicked.
struct EndOfRun;

impl Drop for EndOfRun {
    fn drop(&mut self) {
        let touched = RUN.with_borrow_mut(|run| {
            run.depth -= 1;
            (run.depth == 0).then(|| std::mem::take(&mut run.touched))
        });
        let Some(mut touched) = touched else { return };
        for (i, outbox) in touched.drain(..).enumerate() {
            if i % WRITES_PER_CLOCK == 0 {
                RUN.with_borrow_mut(|run| run.clock = Some(Instant::now()));
            }
            outbox.write_through();
        }
        RUN.with_borrow_mut(|run| run.clock = None);
        if touched.capacity() <= KEEP_TOUCHED {
            RUN.with_borrow_mut(|run| run.touched = touched);
        }
    }
}

/// The time to measure a write's latency with: during a run's writes, the
/// run's reading of the clock (see [`WRITES_PER_CLOCK`]); otherwise now.
pub(crate) fn now() -> Instant {
    RUN.with_borrow(|run| run.clock).unwrap_or_else(Instant::now)
}

/// Adds `outbox` to this thread's run; false when no run is open (the
/// caller then wakes the connection's task as usual).
pub(super) fn defer(outbox: &Arc<Outbox>) -> bool {
    RUN.with_borrow_mut(|run| {
        if run.depth == 0 {
            return false;
        }
        run.touched.push(Arc::clone(outbox));
        true
    })
}
