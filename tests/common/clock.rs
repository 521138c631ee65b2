//! Tests of the gateway's timers on tokio's paused clock
//! (`#[tokio::test(start_paused = true)]`), with the gateway running in the
//! test's runtime ([`super::start`]).
//!
//! On a paused clock tokio moves time on to the next timer whenever every
//! task waits, and a task waiting for bytes that the kernel has yet to
//! deliver over loopback waits too: while a frame is in flight, time could
//! leap past the very deadline a test checks. So such a test lets time pass
//! only where nothing it checks is in flight, by sleeping to a point it
//! chose, and holds the clock [`still`] while it waits on the gateway: then
//! however long the machine takes, no time passes, and a deadline is checked
//! to the millisecond. Polling the hub ([`super::eventually`]) moves no time
//! either.
//!
//! The clock is held by a blocking task: while one runs tokio does not move a
//! paused clock on its own. The hold lasts [`WAIT`] of real time at most, so
//! a wait that never ends still fails the test.

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use super::WAIT;

/// Runs `io` with the clock held still, for at most `real` of real time:
/// its output, or `None` when that ran out first.
pub async fn within<F: Future>(real: Duration, io: F) -> Option<F::Output> {
    let (release, held) = mpsc::channel::<()>();
    let mut hold = tokio::task::spawn_blocking(move || {
        let _ = held.recv_timeout(real);
    });
    tokio::select! {
        biased;
        output = io => {
            drop(release);
            hold.await.expect("the hold ends");
            Some(output)
        }
        _ = &mut hold => None,
    }
}

/// Runs `io` with the clock held still; fails the test when it has not
/// finished within [`WAIT`] of real time.
pub async fn still<F: Future>(io: F) -> F::Output {
    within(WAIT, io).await.unwrap_or_else(|| panic!("nothing came within {WAIT:?} with the clock held still"))
}
