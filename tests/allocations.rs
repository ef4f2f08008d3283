//! The hot path allocates nothing once warm: a counting global allocator watches a
//! connection answer thousands of requests (single and pipelined, with and without bodies)
//! after a warm-up.

use ringmaster::drive::Driver;
use ringmaster::HelloWorld;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    /// Whether this thread's allocations are counted: only the measuring test's own, never
    /// those of the test harness or of tests running beside it on other threads.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// The allocations this thread made while counting.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Counts one allocation if the calling thread is counting (const thread-locals: using
/// them never allocates, and a thread being torn down counts as not counting).
fn count() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every call forwards to the system allocator with the caller's arguments; the
// counters are const thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations while `f` runs.
fn allocations(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.set(0);
    COUNTING.set(true);
    f();
    COUNTING.set(false);
    ALLOCATIONS.get()
}

#[test]
fn the_counter_sees_allocations() {
    let seen = allocations(|| {
        std::hint::black_box(Vec::<u8>::with_capacity(64));
    });
    assert!(seen >= 1);
}

#[test]
fn answering_requests_allocates_nothing_once_warm() {
    static HANDLER: HelloWorld = HelloWorld;
    let mut conn = Driver::new(&HANDLER);
    let one = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n".to_vec();
    let sixteen = one.repeat(16);
    let post = b"POST /p HTTP/1.1\r\nHost: bench\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    let (first, second) = sixteen.split_at(100);
    let mut work = || {
        assert!(conn.feed(&one) > 0);
        assert!(conn.feed(&sixteen) > 0);
        assert!(conn.feed(&post) > 0);
        // A pipeline split mid-request: the partial one waits in a pooled buffer.
        conn.feed(first);
        conn.feed(second);
    };
    for _ in 0..100 {
        work();
    }
    let count = allocations(|| {
        for _ in 0..1000 {
            work();
        }
    });
    assert_eq!(count, 0, "allocations on the hot path");
    assert_eq!(conn.requests(), 1100 * (1 + 16 + 1 + 16));
}
