//! What the gateway's memory holds per push kept in history, counted by the
//! allocator rather than read from RSS: a kept push must cost one allocation
//! of its own (its payload's buffer) and a small share of the user's ring and
//! the budget's records (BENCHMARKS.md, "History record in 64 bytes").
//!
//! Its own test binary, because it replaces the global allocator. The
//! counters are per thread, and `Hub::publish` does its work on the caller's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use pushgate::core::{Hub, HubConfig, Payload, Push};

/// The system allocator, counting what the current thread holds.
struct Counting;

thread_local! {
    /// Allocations made minus those freed on this thread.
    static BLOCKS: Cell<isize> = const { Cell::new(0) };
    /// Bytes asked for minus those freed on this thread.
    static BYTES: Cell<isize> = const { Cell::new(0) };
}

fn count(blocks: isize, bytes: isize) {
    // `try_with`: a thread's last frees may come after its locals are gone.
    let _ = BLOCKS.try_with(|b| b.set(b.get() + blocks));
    let _ = BYTES.try_with(|b| b.set(b.get() + bytes));
}

// SAFETY: every call is passed on to `System` unchanged; the counting
// touches only const-initialised thread locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(1, layout.size() as isize);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-1, -(layout.size() as isize));
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(0, new_size as isize - layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What this thread holds now: (allocations, bytes).
fn held() -> (isize, isize) {
    (BLOCKS.with(Cell::get), BYTES.with(Cell::get))
}

#[test]
fn a_kept_push_holds_its_payload_and_a_64_byte_slot() {
    const USERS: usize = 64;
    const DEPTH: usize = 64;
    let hub = Hub::new(HubConfig::default());
    let kept = (USERS * DEPTH) as isize;
    let before = held();
    for round in 0..DEPTH {
        for user in 0..USERS {
            // As prost decodes a gRPC `message`: a `String` of exactly its size.
            let message = format!("{round:0>100}");
            let published = hub.publish(Push::new(format!("h{user}"), "e", Payload::text(message)));
            assert!(published.is_ok(), "{published:?}");
        }
    }
    let (blocks, bytes) = held();
    let (blocks, bytes) = (blocks - before.0, bytes - before.1);
    // Per push: the payload (100 bytes), its slot (64) and the budget's
    // record (16, in a ring that doubles); per user (a 64th each): its entry,
    // ids, epoch, keeper, event and ring.
    assert!(blocks <= kept + 8 * USERS as isize + 8, "{blocks} allocations held for {kept} kept pushes");
    assert!(bytes / kept <= 100 + 64 + 32 + 16, "{} bytes held per kept push", bytes / kept);
    drop(hub);
}
