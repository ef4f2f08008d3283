//! Nothing a client or an operator does takes the server down: requests cut short by a
//! half-close, panicking handlers, slow readers, stray signals, a second master, start-up
//! errors. Each test runs the real binary over real sockets.

mod common;

use common::{closed_by_server, connect, control, read_response, testbed, wait_until, Server};
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr};

/// Sockets on `port` (local side) in TCP state `state` (`0x08` is CLOSE-WAIT), from
/// `/proc/net/tcp` and `/proc/net/tcp6`.
fn sockets_in_state(port: u16, state: u8) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local_port = fields
                        .get(1)
                        .and_then(|a| a.rsplit(':').next())
                        .and_then(|p| u16::from_str_radix(p, 16).ok());
                    let st = fields.get(3).and_then(|s| u8::from_str_radix(s, 16).ok());
                    local_port == Some(port) && st == Some(state)
                })
                .map(|_| ())
                .collect::<Vec<_>>()
        })
        .count()
}

const CLOSE_WAIT: u8 = 0x08;

/// Sends `raw`, shuts the sending side, and returns everything the server sent until it
/// closed.
fn half_close(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    stream.write_all(raw).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .unwrap_or_else(|e| panic!("reading the answer to {raw:?}: {e}"));
    answer
}

#[test]
fn a_request_cut_short_by_a_half_close_is_answered_400_and_closed() {
    let server = Server::start(&["--workers", "1"]);
    let cases: &[(&str, &[u8])] = &[
        ("an empty line", b"\r\n"),
        ("a head without its end", b"GET / HTTP/1.1\r\nHost: t\r\n"),
        ("a request line only", b"GET / HTT"),
        (
            "a body shorter than its Content-Length",
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc",
        ),
        (
            "a chunked body without its last chunk",
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        ),
        (
            "a whole request, then part of the next",
            b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HT",
        ),
    ];
    for (name, raw) in cases {
        let answer = String::from_utf8_lossy(&half_close(server.addr, raw)).into_owned();
        let last = answer
            .rfind("HTTP/1.1 ")
            .map(|at| &answer[at..])
            .unwrap_or_else(|| panic!("{name}: no answer, the connection was just closed"));
        assert!(last.starts_with("HTTP/1.1 400 "), "{name}: {answer:?}");
        assert!(last.contains("Connection: close\r\n"), "{name}: {answer:?}");
    }
    // A whole request before the half-close is answered normally, and nothing more.
    let answer = half_close(server.addr, common::GET);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer:?}");
    wait_until("no CLOSE-WAIT socket left on the server's port", || {
        sockets_in_state(server.addr.port(), CLOSE_WAIT) == 0
    });
}

#[test]
fn pipelined_requests_held_back_by_the_output_bound_are_answered_after_a_half_close() {
    let mut command = testbed(&["--workers", "1"]);
    let server = Server::start_command(&mut command, 1);
    // 20 responses of 32 KiB: far past the 64 KiB output bound, so most requests wait in the
    // server's input while the client's half-close arrives.
    let request = b"GET /big?kb=32 HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut stream = connect(server.addr);
    stream.write_all(&request.repeat(20)).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut reader = BufReader::new(stream);
    for i in 0..20 {
        let res = read_response(&mut reader, false);
        assert_eq!((i, res.status, res.body.len()), (i, 200, 32 * 1024));
    }
    assert!(closed_by_server(&mut reader));
}

#[test]
fn half_closed_partial_requests_leave_no_connection_behind() {
    let server = Server::start(&["--workers", "2", "--request-head-timeout", "3"]);
    // Clients that send 2 bytes, half-close, and close without reading: on the old code each
    // stayed in CLOSE-WAIT, counted against --connections-max, until the worker exited.
    for _ in 0..200 {
        let mut stream = connect(server.addr);
        stream.write_all(b"\r\n").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
    }
    wait_until("no CLOSE-WAIT socket left on the server's port", || {
        sockets_in_state(server.addr.port(), CLOSE_WAIT) == 0
    });
    wait_until("the workers to report no open connection", || {
        // The totals, then each worker.
        json_values(&control(&server, "status json"), "connections") == [0, 0, 0]
    });
}

/// Every value of `"key":N` in a JSON text, in order.
fn json_values(json: &str, key: &str) -> Vec<u64> {
    json.split(&format!("\"{key}\":"))
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// Sends `GET path` on a new connection and returns the response's status and body, and
/// whether the server closed the connection after it (for a response that says
/// `Connection: close`; a kept connection is not waited on).
fn get_closing(addr: SocketAddr, path: &str) -> (u16, String, bool) {
    let mut stream = connect(addr);
    write!(stream, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let res = read_response(&mut reader, false);
    let closed = res.header("Connection") == Some("close") && closed_by_server(&mut reader);
    (
        res.status,
        String::from_utf8_lossy(&res.body).into_owned(),
        closed,
    )
}

#[test]
fn a_hundred_panicking_requests_in_ten_seconds_are_each_answered_500() {
    let server = Server::start_command(&mut testbed(&["--workers", "2"]), 2);
    let workers = server.worker_pids();
    let started = std::time::Instant::now();
    for i in 0..100 {
        // Paced over about 3 s, so that repeated log lines are seen held back and counted.
        std::thread::sleep(std::time::Duration::from_millis(30));
        let (status, body, closed) = get_closing(server.addr, "/panic");
        assert_eq!(status, 500, "panicking request {i}: {body}");
        assert!(closed, "the connection of a failed request is closed");
        // Between the panics, everyone else is still served.
        assert_eq!(get_closing(server.addr, "/").0, 200);
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(
        server.worker_pids(),
        workers,
        "no worker died or was replaced"
    );
    assert!(common::alive(server.pid()));
    let log = server.log();
    let panics = log.iter().filter(|l| l.contains("panicked at")).count();
    assert!(panics >= 1, "the panic is logged");
    assert!(
        panics < 100,
        "repeated panics are logged about once a second with a count, not 100 times"
    );
    assert!(log.iter().any(|l| l.contains("more like this")), "{log:?}");
    assert!(
        log.iter()
            .all(|l| !l.contains("ERRORED") && !l.contains("exited")),
        "{log:?}"
    );
    // Workers report their counters every second.
    wait_until("the workers to report 100 handler failures", || {
        let status = control(&server, "status json");
        json_values(&status, "handler_failures").first() == Some(&100)
    });
}

#[test]
fn invalid_input_to_a_response_setter_gives_500_not_a_panic() {
    let server = Server::start_command(&mut testbed(&["--workers", "1"]), 1);
    let worker = server.worker_pids();
    for what in ["status", "length", "header"] {
        let (status, body, closed) = get_closing(server.addr, &format!("/misuse?what={what}"));
        assert_eq!(status, 500, "{what}: {body}");
        assert!(!body.contains("never sent"), "{what}: {body}");
        assert!(closed, "{what}");
    }
    assert_eq!(get_closing(server.addr, "/").0, 200);
    assert_eq!(server.worker_pids(), worker, "the worker did not die");
    server.wait_log("the handler's response is invalid (Response::status: status 101");
}

#[test]
fn with_exit_on_panic_a_worker_dying_while_serving_is_always_respawned() {
    let server = Server::start_command(
        &mut testbed(&[
            "--workers",
            "1",
            "--exit-on-panic",
            "--respawn-failures-max",
            "2",
        ]),
        1,
    );
    // Ten deaths of a worker that was ready: far past --respawn-failures-max, yet only
    // failures to start count against the slot.
    for incarnation in 1..=10 {
        server.wait_log_count("ready (pid", incarnation);
        let mut stream = connect(server.addr);
        stream
            .write_all(b"GET /panic HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut reader = BufReader::new(stream);
        assert!(
            closed_by_server(&mut reader),
            "the dying worker answers nothing"
        );
        server.wait_log_count("worker 0 exited", incarnation);
    }
    server.wait_log_count("ready (pid", 11);
    assert_eq!(get_closing(server.addr, "/").0, 200);
    let log = server.log();
    assert!(log.iter().all(|l| !l.contains("ERRORED")), "{log:?}");
    let delays: Vec<&str> = log
        .iter()
        .filter_map(|l| l.split("respawning on cpu 0 in ").nth(1))
        .collect();
    assert_eq!(
        delays[..5],
        ["0ms", "100ms", "200ms", "400ms", "800ms"],
        "a short backoff"
    );
    assert!(delays[5..].iter().all(|d| *d == "1000ms"), "{delays:?}");
}

/// The state letter of a process (`R`, `S`, `T` for stopped, `Z`...).
fn process_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .and_then(|rest| rest.trim_start().chars().next())
        .unwrap_or('?')
}

#[test]
fn stray_signals_neither_kill_nor_freeze_the_master_or_a_worker() {
    let server = Server::start(&["--workers", "2"]);
    let workers = server.worker_pids();
    let everyone: Vec<u32> = std::iter::once(server.pid())
        .chain(workers.clone())
        .collect();
    // SIGTTIN and SIGTTOU scale the master (tests/scale.rs): stray only for a worker.
    for (signal, to) in [
        (libc::SIGUSR1, &everyone),
        (libc::SIGUSR2, &everyone),
        (libc::SIGTTIN, &workers),
        (libc::SIGTTOU, &workers),
        (libc::SIGWINCH, &everyone),
        (libc::SIGPIPE, &everyone),
        (libc::SIGALRM, &everyone),
    ] {
        for &pid in to {
            // SAFETY (test): a signal to our own server's processes.
            assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
        }
        // The master answers its control socket and both workers answer requests (new
        // connections spread over both sockets), so none is dead or stopped.
        assert!(
            control(&server, "status").contains("ready"),
            "signal {signal}"
        );
        for _ in 0..20 {
            assert_eq!(common::exchange(server.addr, common::GET).0.status, 200);
        }
        for &pid in &everyone {
            assert!(
                common::alive(pid) && process_state(pid) != 'T',
                "signal {signal}: {pid} is {}",
                process_state(pid)
            );
        }
    }
    assert_eq!(server.worker_pids(), workers, "no worker died");
    server.wait_log("SIGUSR2 received: it has no meaning here; ignored");
    // SIGUSR1 reopens the access log, of which there is none here; workers keep it blocked.
    server.wait_log("reopen requested: no access log is kept");
}

#[test]
fn sigquit_stops_the_master_gracefully_and_drains_a_worker() {
    let mut server = Server::start(&["--workers", "2"]);
    let workers = server.worker_pids();
    // SAFETY (test): a signal to our own server's worker.
    assert_eq!(unsafe { libc::kill(workers[0] as i32, libc::SIGQUIT) }, 0);
    server.wait_log("SIGQUIT: draining");
    server.wait_log_count("ready (pid", 3);
    assert_eq!(common::exchange(server.addr, common::GET).0.status, 200);
    server.signal(libc::SIGQUIT);
    assert_eq!(
        server.wait_exit().code(),
        Some(0),
        "a graceful stop, no core dump"
    );
    server.wait_log("SIGQUIT: shutting down");
}

#[test]
fn a_second_master_on_the_same_port_is_refused_whatever_its_control_socket() {
    let dir = std::env::temp_dir().join(format!("rm-two-masters-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let control_a = dir.join("a.sock").display().to_string();
    let control_b = dir.join("b.sock").display().to_string();
    let first = Server::start(&[
        "--workers",
        "1",
        "--listen",
        &listen,
        "--control",
        &control_a,
    ]);
    let mut second = Server::spawn(&[
        "--workers",
        "1",
        "--listen",
        &listen,
        "--control",
        &control_b,
    ]);
    assert_eq!(second.wait_exit().code(), Some(2));
    let log = second.log();
    assert_eq!(log.len(), 1, "one line: {log:?}");
    assert!(log[0].contains("already in use"), "{log:?}");
    // The first one serves on.
    for _ in 0..20 {
        assert_eq!(common::exchange(first.addr, common::GET).0.status, 200);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn status_totals_stay_cumulative_across_reloads_and_respawns() {
    let server = Server::start(&["--workers", "2"]);
    for _ in 0..20 {
        assert_eq!(common::exchange(server.addr, common::GET).0.status, 200);
    }
    wait_until("the 20 requests to be reported", || {
        control(&server, "status").contains(": 20 requests since start")
    });
    let before = server.worker_pids();
    assert!(control(&server, "reload").starts_with("ok: reloaded 2 workers"));
    wait_until("the old workers to exit", || {
        let now = server.worker_pids();
        now.len() == 2 && now.iter().all(|p| !before.contains(p))
    });
    // SAFETY (test): SIGKILL to our own server's worker.
    unsafe { libc::kill(server.worker_pids()[0] as i32, libc::SIGKILL) };
    server.wait_log("respawning");
    server.wait_log_count("ready (pid", 5);
    for _ in 0..5 {
        assert_eq!(common::exchange(server.addr, common::GET).0.status, 200);
    }
    // The old workers' 20 are still counted, with the new ones' 5.
    wait_until("the totals to count every request since start", || {
        let json = control(&server, "status json");
        json_values(&json, "requests").first() == Some(&25)
            && control(&server, "status").contains(": 25 requests since start")
    });
}

/// Reads a 64 MiB response at about `bytes_per_s` (chunks of `chunk` bytes, paced); returns
/// the bytes read (head included) and whether the server reset the connection first.
fn read_paced(addr: SocketAddr, bytes_per_s: usize, chunk: usize) -> (usize, bool) {
    let mut stream = connect(addr);
    stream
        .write_all(b"GET /big?kb=65536 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let want = 64 << 20;
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; chunk];
    let mut got = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, false),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(e) => panic!("after {got} bytes: {e}"),
        }
        if got > want {
            return (got, false);
        }
        // The pace: sleep until `got` bytes are due at `bytes_per_s`.
        let due = std::time::Duration::from_secs_f64(got as f64 / bytes_per_s as f64);
        if let Some(ahead) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
}

/// Under `--send-rate-min 1 MiB/s`, a reader at 256 KiB/s is reset within a few windows and
/// one at 8 MiB/s gets its whole response. `args` pick plain or direct descriptors, whose
/// send queues are sampled in different ways.
fn send_rate_minimum(args: &[&str]) {
    let mut all = vec![
        "--workers",
        "1",
        "--send-rate-min",
        "1048576",
        "--send-timeout",
        "600",
    ];
    all.extend_from_slice(args);
    let server = Server::start_command(&mut testbed(&all), 1);
    let started = std::time::Instant::now();
    let (got, reset) = read_paced(server.addr, 256 << 10, 16 << 10);
    let took = started.elapsed();
    assert!(
        reset,
        "the slow reader was not reset ({got} bytes in {took:?})"
    );
    assert!(got < 64 << 20);
    assert!(
        took < std::time::Duration::from_secs(20),
        "reset after {took:?}"
    );
    eprintln!("slow reader reset after {took:?}, {got} bytes read");
    let (got, reset) = read_paced(server.addr, 8 << 20, 128 << 10);
    assert!(!reset && got > 64 << 20, "the fair reader got {got} bytes");
}

#[test]
fn a_reader_slower_than_the_minimum_send_rate_is_reset_on_a_direct_descriptor() {
    send_rate_minimum(&[]);
}

#[test]
fn a_reader_slower_than_the_minimum_send_rate_is_reset_on_a_plain_descriptor() {
    send_rate_minimum(&["--uring-no-direct-descriptors"]);
}

/// A connection to `addr` whose receive buffer is `rcvbuf` bytes, set before connecting so
/// that the window it advertises stays that small.
fn connect_with_small_window(addr: SocketAddr, rcvbuf: i32) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("an IPv4 test address")
    };
    // SAFETY (test): a new socket whose descriptor the TcpStream below takes over.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY (test): `rcvbuf` is a valid int of the size passed, alive across the call.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&rcvbuf as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0);
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY (test): `sin` is a valid sockaddr_in of the size passed.
    let ret = unsafe {
        libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0, "connect: {}", std::io::Error::last_os_error());
    // SAFETY (test): `fd` is a connected socket nothing else owns.
    unsafe { std::net::TcpStream::from_raw_fd(fd) }
}

#[test]
fn a_reader_that_leaves_its_response_in_the_kernel_is_reset_too() {
    let server = Server::start_command(&mut testbed(&["--workers", "1"]), 1);
    // A small window: the whole 1 MiB fits the server's send buffer, so the worker's send
    // completes and nothing waits in its memory; the kernel holds it, unacknowledged.
    let mut stream = connect_with_small_window(server.addr, 4096);
    stream
        .write_all(b"GET /big?kb=1024 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let started = std::time::Instant::now();
    // The first sample, then a window of 5 s in which it takes nothing.
    while common::tcp_state(&stream) != common::TCP_CLOSE {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "not reset"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    eprintln!("reset after {:?}", started.elapsed());
}
