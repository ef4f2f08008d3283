//! The hot path allocates nothing once warm: a counting global allocator watches a
//! connection answer thousands of requests (single and pipelined, with and without bodies)
//! after a warm-up.

use ringmaster::drive::Driver;
use ringmaster::HelloWorld;

#[path = "../uring/tests/support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations;

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

/// An async Hello World that answers at its first poll.
struct AsyncHello;

impl ringmaster::AsyncHandler for AsyncHello {
    type Future = std::future::Ready<ringmaster::Response>;

    fn call(&self, req: ringmaster::OwnedRequest) -> Self::Future {
        let mut res = ringmaster::Response::new();
        res.header("Content-Type", "text/plain").write(req.path());
        std::future::ready(res)
    }
}

#[test]
fn an_async_handler_gets_its_owned_request_and_response_without_allocating_once_warm() {
    static HANDLER: ringmaster::Async<AsyncHello> = ringmaster::Async(AsyncHello);
    let mut conn = Driver::new(&HANDLER);
    let one = b"GET /async HTTP/1.1\r\nHost: bench\r\nX-A: 1\r\n\r\n".to_vec();
    let eight = one.repeat(8);
    let post = b"POST /p HTTP/1.1\r\nHost: bench\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    let mut work = || {
        assert!(conn.feed(&one) > 0);
        assert!(conn.feed(&eight) > 0);
        assert!(conn.feed(&post) > 0);
    };
    for _ in 0..100 {
        work();
    }
    let count = allocations(|| {
        for _ in 0..1000 {
            work();
        }
    });
    assert_eq!(count, 0, "allocations per async request");
    assert_eq!(conn.requests(), 1100 * (1 + 8 + 1));
}
