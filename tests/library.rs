//! The library API, through `examples/hello.rs` (a handler of the user's own) run as a
//! real process: the test process itself is multi-threaded and must not fork a server.

mod common;

use common::{closed_by_server, example, exchange, Server};
use std::process::Command;

#[test]
fn a_user_handler_routes_and_reads_bodies() {
    let server = Server::start_command(Command::new(example("hello")).arg("127.0.0.1:0"), 2);
    let (res, _) = exchange(server.addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(res.body, b"Hello World");
    let (res, _) = exchange(
        server.addr,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nsome bytes",
    );
    assert_eq!(res.status, 200);
    assert_eq!(res.body, b"some bytes");
    let (res, mut reader) = exchange(
        server.addr,
        b"GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(res.status, 404);
    assert!(closed_by_server(&mut reader));
}

#[test]
fn the_ipc_example_sums_worker_counts_in_the_master_and_broadcasts_them() {
    use common::wait_until;
    let mut command = Command::new(example("ipc"));
    command.args(["--listen", "127.0.0.1:0", "--workers", "2"]);
    let server = Server::start_command(&mut command, 2);
    for _ in 0..250 {
        exchange(server.addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    // Each worker reports every 100 requests; together they answered at least 200 in
    // reported batches, which the master broadcast back.
    wait_until("the total to reach the workers", || {
        let (res, _) = exchange(server.addr, b"GET /total HTTP/1.1\r\nHost: t\r\n\r\n");
        let total: u64 = String::from_utf8_lossy(&res.body).trim().parse().unwrap();
        total >= 100 && total.is_multiple_of(100)
    });
}

#[test]
fn a_program_with_threads_running_is_refused_before_it_forks() {
    // A thread started before the server (a log writer's, say) would not exist in the
    // workers, and would take the operator's signals in the master.
    let out = common::testbed(&["--workers", "1"])
        .env("TESTBED_THREAD", "1")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("1 other thread(s) run in this process before the server starts")
            && lines[0].contains("Handler::start"),
        "{stderr}"
    );
    // Nothing was forked: no worker started.
    assert!(!stderr.contains("worker 0 started"), "{stderr}");
}

#[test]
fn threads_that_ended_before_the_server_starts_are_no_obstacle() {
    // `std::thread::scope` returns while its threads may still be leaving the kernel's list.
    for _ in 0..3 {
        let mut command = common::testbed(&["--workers", "1"]);
        command.env("TESTBED_SCOPED", "1");
        let server = Server::start_command(&mut command, 1);
        let (res, _) = exchange(server.addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(res.status, 200);
    }
}
