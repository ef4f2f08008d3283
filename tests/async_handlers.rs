//! Async handlers on the real testbed over real sockets: futures that wait on the worker's
//! own ring (many at once per worker), their bounds, their cancellation, their panics, and
//! that they answer exactly as a sync handler does.

mod common;

use common::{
    connect, exchange, get_with, lenient_cases, read_response, rss_and_peak_kib, strictness_cases,
    testbed, wait_until, worker_stat, Server, GET,
};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The testbed serving through its async handler, with `args`.
fn async_testbed(args: &[&str]) -> Server {
    let workers = workers_in(args);
    Server::start_command(testbed(args).env("TESTBED_ASYNC", "1"), workers)
}

/// The testbed serving through its sync handler, with `args`.
fn sync_testbed(args: &[&str]) -> Server {
    Server::start_command(&mut testbed(args), workers_in(args))
}

fn workers_in(args: &[&str]) -> usize {
    args.iter()
        .position(|a| *a == "--workers")
        .map_or(1, |i| args[i + 1].parse().unwrap())
}

/// Raises this process's descriptor limit to its hard limit (the tests hold thousands of
/// client sockets); returns the limit now.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY (test): getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

fn get(path: &str) -> Vec<u8> {
    get_with("t", path, &[])
}

/// Sends `GET path` on a new connection; the response is read later.
fn send(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut stream = connect(addr);
    stream.write_all(&get(path)).unwrap();
    stream
}

#[test]
fn two_hundred_sleeping_requests_wait_together_and_others_are_answered_meanwhile() {
    let server = async_testbed(&["--workers", "1"]);
    let start = Instant::now();
    let waiting: Vec<TcpStream> = (0..200)
        .map(|_| send(server.addr, "/wait?ms=1000"))
        .collect();
    // While all 200 wait on their timers, another path is answered at once.
    let (res, _) = exchange(server.addr, GET);
    assert_eq!(
        (res.status, res.body.as_slice()),
        (200, &b"Hello World"[..])
    );
    let mut answered_first = 0;
    for stream in waiting {
        let mut reader = BufReader::new(stream);
        let res = read_response(&mut reader, false);
        assert_eq!(
            (res.status, res.body.as_slice()),
            (200, &b"Hello World"[..])
        );
        answered_first += 1;
    }
    let took = start.elapsed();
    assert_eq!(answered_first, 200);
    eprintln!("200 requests sleeping 1 s each, together: {took:?}");
    // Served one after another they would take 200 s; together, one timer's length.
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert!(took >= Duration::from_millis(1000), "took {took:?}");
}

#[test]
fn pipelined_requests_to_an_async_handler_are_answered_in_order() {
    let server = async_testbed(&["--workers", "1"]);
    let mut stream = connect(server.addr);
    let mut batch = Vec::new();
    for path in ["/wait?ms=200", "/echo", "/wait?ms=10", "/target?x"] {
        batch.extend_from_slice(&get(path));
    }
    batch.extend_from_slice(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    stream.write_all(&batch).unwrap();
    let mut reader = BufReader::new(stream);
    let bodies: Vec<Vec<u8>> = (0..5)
        .map(|_| read_response(&mut reader, false).body)
        .collect();
    let expected: [&[u8]; 5] = [
        b"Hello World",
        b"",
        b"Hello World",
        b"/target?x t",
        b"hello",
    ];
    assert_eq!(bodies, expected.map(<[u8]>::to_vec));
}

#[test]
fn a_panic_after_an_await_answers_500_is_counted_and_the_worker_serves_on() {
    let server = async_testbed(&["--workers", "1"]);
    let pid_before = exchange(server.addr, &get("/pid")).0.body;
    let (res, _) = exchange(server.addr, &get("/panic-async"));
    assert_eq!(res.status, 500);
    assert_eq!(res.header("Connection"), Some("close"));
    server.wait_log("panicked at");
    assert!(
        server
            .log()
            .iter()
            .any(|l| l.contains("testbed: /panic-async requested") && l.contains("testbed.rs:")),
        "the panic is logged with its message and location"
    );
    // The worker is the same process, and still serves others (a connection opened
    // before the panic included).
    assert_eq!(exchange(server.addr, &get("/pid")).0.body, pid_before);
    wait_until("the panic counted", || {
        worker_stat(&server, "handler_failures") == 1 && worker_stat(&server, "responses_5xx") == 1
    });
}

#[test]
fn clients_that_disconnect_mid_wait_leave_nothing_behind() {
    const TOTAL: usize = 10_000;
    const BATCH: usize = 1000;
    assert!(
        raise_nofile() > 2 * BATCH as u64 + 100,
        "descriptor limit too low"
    );
    let server = async_testbed(&["--workers", "1"]);
    // Idle counts, once the first report is in.
    wait_until("a stats report", || {
        worker_stat(&server, "ring_in_flight") > 0
    });
    let idle = |name| worker_stat(&server, name);
    let (ring_idle, fds_idle, buffers_idle) = (
        idle("ring_in_flight"),
        idle("descriptors"),
        idle("buffers_free"),
    );
    for batch in 0..TOTAL / BATCH {
        let streams: Vec<TcpStream> = (0..BATCH)
            .map(|_| send(server.addr, "/wait?ms=60000"))
            .collect();
        wait_until("the batch's futures all waiting", || {
            worker_stat(&server, "handlers_in_flight") == BATCH as u64
        });
        drop(streams);
        wait_until("the batch's futures all dropped", || {
            worker_stat(&server, "handlers_cancelled") == ((batch + 1) * BATCH) as u64
                && worker_stat(&server, "handlers_in_flight") == 0
        });
    }
    wait_until("everything back to idle", || {
        worker_stat(&server, "connections") == 0
            && worker_stat(&server, "rt_ops_in_flight") == 0
            && worker_stat(&server, "ring_in_flight") == ring_idle
            && worker_stat(&server, "descriptors") == fds_idle
            && worker_stat(&server, "buffers_free") >= buffers_idle
    });
    assert_eq!(worker_stat(&server, "handlers_cancelled"), TOTAL as u64);
    eprintln!(
        "after {TOTAL} disconnects: ring_in_flight {} (idle {ring_idle}), descriptors {} (idle {fds_idle}), buffers_free {} (idle {buffers_idle}), rt_ops_in_flight {}",
        idle("ring_in_flight"),
        idle("descriptors"),
        idle("buffers_free"),
        idle("rt_ops_in_flight"),
    );
    // And it serves as before.
    assert_eq!(exchange(server.addr, &get("/wait?ms=1")).0.status, 200);
}

#[test]
fn at_handlers_max_a_request_waits_for_a_slot_and_is_answered_after() {
    let server = async_testbed(&["--workers", "1", "--handlers-max", "2"]);
    // At the bound: two futures wait together.
    let start = Instant::now();
    let two: Vec<TcpStream> = (0..2).map(|_| send(server.addr, "/wait?ms=700")).collect();
    for stream in two {
        assert_eq!(
            read_response(&mut BufReader::new(stream), false).status,
            200
        );
    }
    let together = start.elapsed();
    assert!(together < Duration::from_millis(1400), "{together:?}");
    // Over it: the third request waits for a slot (its connection unread meanwhile), and
    // is answered once one frees, after the first two.
    let start = Instant::now();
    let two: Vec<TcpStream> = (0..2).map(|_| send(server.addr, "/wait?ms=700")).collect();
    wait_until("both slots taken", || {
        worker_stat(&server, "handlers_in_flight") == 2
    });
    let third = send(server.addr, "/wait?ms=10");
    let mut third = BufReader::new(third);
    let res = read_response(&mut third, false);
    let third_at = start.elapsed();
    assert_eq!(res.status, 200);
    assert!(third_at >= Duration::from_millis(700), "{third_at:?}");
    for stream in two {
        assert_eq!(
            read_response(&mut BufReader::new(stream), false).status,
            200
        );
    }
}

#[test]
fn handlers_max_out_of_range_is_refused_at_start() {
    for bad in ["0", "100001"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmaster"))
            .args(["--handlers-max", bad, "--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--handlers-max {bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("handlers-max = ") && err.contains("1..=100000"),
            "{err}"
        );
    }
    for bad in ["0", "3601"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmaster"))
            .args(["--handler-timeout", bad, "--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--handler-timeout {bad}");
    }
    // The largest bound starts.
    let server = async_testbed(&["--workers", "1", "--handlers-max", "100000"]);
    assert_eq!(exchange(server.addr, &get("/wait?ms=1")).0.status, 200);
}

#[test]
fn past_the_handler_timeout_the_future_is_dropped_and_the_client_gets_503() {
    let server = async_testbed(&["--workers", "1", "--handler-timeout", "0.5"]);
    // Below the deadline: answered.
    assert_eq!(exchange(server.addr, &get("/wait?ms=100")).0.status, 200);
    // Past it: 503 and a close, well before the handler would have answered.
    let start = Instant::now();
    let (res, mut reader) = exchange(server.addr, &get("/wait?ms=5000"));
    assert_eq!(res.status, 503);
    assert_eq!(res.header("Connection"), Some("close"));
    assert!(start.elapsed() < Duration::from_millis(3000));
    assert!(common::closed_by_server(&mut reader));
    wait_until("the timeout counted", || {
        worker_stat(&server, "handlers_timed_out") == 1
            && worker_stat(&server, "handlers_in_flight") == 0
            && worker_stat(&server, "rt_ops_in_flight") == 0
    });
}

/// The response to `raw` on a new connection as text, without its `Date` field (the only
/// one that differs by time).
fn response_text(addr: std::net::SocketAddr, raw: &[u8]) -> String {
    let mut stream = connect(addr);
    stream.write_all(raw).unwrap();
    let res = read_response(&mut BufReader::new(stream), raw.starts_with(b"HEAD"));
    let headers: Vec<String> = res
        .headers
        .iter()
        .filter(|(n, _)| n != "Date")
        .map(|(n, v)| format!("{n}: {v}"))
        .collect();
    format!(
        "{} {headers:?} {}",
        res.status,
        String::from_utf8_lossy(&res.body)
    )
}

#[test]
fn sync_and_async_handlers_answer_the_strictness_cases_alike() {
    let sync = sync_testbed(&["--workers", "1"]);
    let asynchronous = async_testbed(&["--workers", "1"]);
    let mut cases: Vec<(String, Vec<u8>)> = strictness_cases()
        .into_iter()
        .map(|(name, raw, _)| (name.to_string(), raw))
        .collect();
    cases.extend(lenient_cases().into_iter().map(|(n, r)| (n.to_string(), r)));
    cases.extend([
        ("echo".to_string(), b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc".to_vec()),
        (
            "chunked echo".to_string(),
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".to_vec(),
        ),
        ("HEAD".to_string(), b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()),
        ("HTTP/1.0".to_string(), b"GET / HTTP/1.0\r\n\r\n".to_vec()),
        ("OPTIONS *".to_string(), b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()),
        ("absolute".to_string(), b"GET http://a.example/target?q HTTP/1.1\r\nHost: b\r\n\r\n".to_vec()),
        ("misuse".to_string(), get("/misuse?what=header")),
        ("panic".to_string(), get("/panic")),
        ("close".to_string(), b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n".to_vec()),
    ]);
    for (name, raw) in cases {
        let a = response_text(sync.addr, &raw);
        let b = response_text(asynchronous.addr, &raw);
        assert_eq!(a, b, "case {name}");
    }
}

/// A line server on 127.0.0.1: each connection's first line is answered, after `delay`,
/// with `echo: LINE`. Counts the connections it accepted. Stops when dropped.
struct Upstream {
    port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Upstream {
    fn start(delay: Duration) -> Upstream {
        use std::io::BufRead;
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (count, halt) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                let (stream, _) = match listener.accept() {
                    Ok(s) => s,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                };
                count.fetch_add(1, Ordering::Relaxed);
                std::thread::spawn(move || {
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_ok() {
                        std::thread::sleep(delay);
                        let _ = (&stream).write_all(format!("echo: {line}").as_bytes());
                    }
                });
            }
        });
        Upstream {
            port,
            accepted,
            stop,
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn a_hundred_requests_that_call_a_slow_upstream_wait_together() {
    let upstream = Upstream::start(Duration::from_secs(1));
    let server = async_testbed(&["--workers", "1"]);
    let path = format!("/upstream?port={}", upstream.port);
    let start = Instant::now();
    let streams: Vec<TcpStream> = (0..100).map(|_| send(server.addr, &path)).collect();
    for stream in streams {
        let res = read_response(&mut BufReader::new(stream), false);
        assert_eq!(
            (res.status, String::from_utf8_lossy(&res.body).as_ref()),
            (200, "echo: hello upstream\n")
        );
    }
    let took = start.elapsed();
    eprintln!("100 requests to an upstream answering after 1 s, together: {took:?}");
    // One after another: 100 s. Together: about one upstream delay.
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert_eq!(
        upstream.accepted.load(std::sync::atomic::Ordering::Relaxed),
        100,
        "one upstream connection per request"
    );
    // An upstream that is not there: 502, and the worker serves on.
    drop(upstream);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (res, _) = exchange(server.addr, &get(&format!("/upstream?port={port}")));
    assert_eq!(res.status, 502);
    assert!(
        String::from_utf8_lossy(&res.body).contains("refused"),
        "{res:?}"
    );
    assert_eq!(exchange(server.addr, GET).0.status, 200);
}

#[test]
fn blocking_work_runs_on_the_pool_while_the_worker_serves() {
    let server = async_testbed(&["--workers", "1"]);
    let start = Instant::now();
    // The pool's four threads sleep together; the worker itself never blocks.
    let streams: Vec<TcpStream> = (0..4)
        .map(|_| send(server.addr, "/blocking?ms=800"))
        .collect();
    let (res, _) = exchange(server.addr, GET);
    assert_eq!(res.status, 200);
    assert!(
        start.elapsed() < Duration::from_millis(700),
        "answered meanwhile"
    );
    for stream in streams {
        let res = read_response(&mut BufReader::new(stream), false);
        assert_eq!(
            String::from_utf8_lossy(&res.body),
            "slept 800 ms on Some(\"ringmaster-blocking\")"
        );
    }
    let took = start.elapsed();
    assert!(took < Duration::from_millis(1500), "together: {took:?}");
}

#[test]
fn a_spawned_task_outlives_its_request_and_reaches_the_master() {
    let server = async_testbed(&["--workers", "1"]);
    let (res, _) = exchange(server.addr, &get("/spawn?m=from-a-task"));
    assert_eq!((res.status, res.body.as_slice()), (200, &b"spawned"[..]));
    server.wait_log("testbed: message slot=0 text=from-a-task");
}

const GIB: u64 = 1 << 30;
/// What a streamed gigabyte may add to a worker's memory.
const STREAM_RSS_MAX_KIB: u64 = 64 * 1024;

#[test]
fn a_streamed_gigabyte_to_a_slow_then_fast_reader_stays_in_bounded_memory() {
    let server = async_testbed(&["--workers", "1"]);
    let pid: u32 = String::from_utf8(exchange(server.addr, &get("/pid")).0.body)
        .unwrap()
        .parse()
        .unwrap();
    let (idle, _) = rss_and_peak_kib(pid);
    let mut stream = connect(server.addr);
    stream.write_all(&get("/stream?mb=1024")).unwrap();
    let mut reader = BufReader::new(stream);
    // The head, then the body: 1 MiB/s for 10 s, then as fast as it comes.
    let mut line = String::new();
    let mut length = 0u64;
    loop {
        line.clear();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        if let Some(v) = line.strip_prefix("Content-Length: ") {
            length = v.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
    }
    assert_eq!(length, GIB);
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        // 64 KiB every 62.5 ms: 1 MiB/s.
        let due = start + Duration::from_micros(62_500 * (got / (64 * 1024) + 1));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        got += std::io::Read::read(&mut reader, &mut buf).unwrap() as u64;
    }
    let (slow_rss, _) = rss_and_peak_kib(pid);
    while got < GIB {
        match std::io::Read::read(&mut reader, &mut buf).unwrap() {
            0 => break,
            n => got += n as u64,
        }
    }
    assert_eq!(got, GIB, "the whole body");
    let (_, peak) = rss_and_peak_kib(pid);
    eprintln!("streamed 1 GiB: idle RSS {idle} KiB, peak {peak} KiB, while slow {slow_rss} KiB");
    assert!(
        peak <= idle + STREAM_RSS_MAX_KIB,
        "peak RSS {peak} KiB, idle {idle} KiB (while slow: {slow_rss} KiB)"
    );
    // The connection stays usable after the stream.
    reader.get_mut().write_all(GET).unwrap();
    assert_eq!(read_response(&mut reader, false).body, b"Hello World");
}

#[test]
fn an_uploaded_gigabyte_is_read_as_it_arrives_in_bounded_memory() {
    let server = async_testbed(&["--workers", "1", "--request-body-bytes-max", "1073741824"]);
    let pid: u32 = String::from_utf8(exchange(server.addr, &get("/pid")).0.body)
        .unwrap()
        .parse()
        .unwrap();
    let (idle, _) = rss_and_peak_kib(pid);
    let mut stream = connect(server.addr);
    stream
        .write_all(
            format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {GIB}\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let chunk = vec![b'u'; 1 << 20];
    for _ in 0..1024 {
        stream.write_all(&chunk).unwrap();
    }
    let mut reader = BufReader::new(stream);
    let res = read_response(&mut reader, false);
    assert_eq!((res.status, res.body), (200, GIB.to_string().into_bytes()));
    let (_, peak) = rss_and_peak_kib(pid);
    eprintln!("uploaded 1 GiB: idle RSS {idle} KiB, peak {peak} KiB");
    assert!(
        peak <= idle + STREAM_RSS_MAX_KIB,
        "peak RSS {peak} KiB, idle {idle} KiB"
    );
    // A chunked upload too, on the same connection.
    reader
        .get_mut()
        .write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    for _ in 0..64 {
        reader.get_mut().write_all(b"100000\r\n").unwrap();
        reader.get_mut().write_all(&chunk).unwrap();
        reader.get_mut().write_all(b"\r\n").unwrap();
    }
    reader.get_mut().write_all(b"0\r\n\r\n").unwrap();
    let res = read_response(&mut reader, false);
    assert_eq!(
        (res.status, res.body),
        (200, (64u64 << 20).to_string().into_bytes())
    );
}

#[test]
fn a_body_read_whole_is_held_to_its_limit_at_the_edge() {
    let server = async_testbed(&["--workers", "1"]);
    // `/upload?max=N` reads the body with `read_to_end(out, N)` into an `out` that already
    // holds bytes of its own: only the body's count against N.
    let upload = |max: usize, body: &[u8], chunked: bool| {
        let mut raw = if chunked {
            format!("POST /upload?max={max} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n", body.len()).into_bytes()
        } else {
            format!("POST /upload?max={max} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).into_bytes()
        };
        raw.extend_from_slice(body);
        if chunked {
            raw.extend_from_slice(b"\r\n0\r\n\r\n");
        }
        let res = exchange(server.addr, &raw).0;
        (res.status, String::from_utf8(res.body).unwrap())
    };
    for chunked in [false, true] {
        assert_eq!(upload(10, b"0123456789", chunked), (200, "10\n".into()));
        let (status, text) = upload(10, b"0123456789a", chunked);
        assert_eq!(status, 413, "{text}");
        assert!(text.contains("larger than 10 bytes"), "{text}");
        assert_eq!(upload(0, b"x", chunked).0, 413);
    }
}

#[test]
fn streamed_bodies_are_framed_for_each_client_and_cut_short_when_their_producer_fails() {
    let server = async_testbed(&["--workers", "1"]);
    // HEAD: the head alone, with the declared length.
    let mut stream = connect(server.addr);
    stream
        .write_all(b"HEAD /stream?mb=2 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    let res = read_response(&mut reader, true);
    assert_eq!(res.header("Content-Length"), Some("2097152"));
    // The connection goes on with the next request: no body was sent.
    reader.get_mut().write_all(GET).unwrap();
    assert_eq!(read_response(&mut reader, false).body, b"Hello World");
    // Chunked for HTTP/1.1 without a length; read whole, it is the body.
    let mut stream = connect(server.addr);
    stream.write_all(&get("/stream?mb=1&chunked=1")).unwrap();
    let mut reader = BufReader::new(stream);
    let head = read_response(&mut reader, true);
    assert_eq!(head.header("Transfer-Encoding"), Some("chunked"));
    let mut total = 0;
    loop {
        let mut size = String::new();
        std::io::BufRead::read_line(&mut reader, &mut size).unwrap();
        let n = usize::from_str_radix(size.trim_end(), 16).unwrap();
        let mut chunk = vec![0u8; n + 2];
        std::io::Read::read_exact(&mut reader, &mut chunk).unwrap();
        assert_eq!(&chunk[n..], b"\r\n");
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, 1 << 20);
    // HTTP/1.0 without a length: the end of the connection ends the body.
    let mut stream = connect(server.addr);
    stream
        .write_all(b"GET /stream?mb=1&chunked=1 HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut all).unwrap();
    let text = String::from_utf8_lossy(&all[..200]).to_string();
    assert!(
        text.contains("Connection: close") && !text.contains("Transfer-Encoding"),
        "{text}"
    );
    let body_at = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(all.len() - body_at, 1 << 20);
    // A producer that fails: the body is cut short and the connection closed.
    let mut stream = connect(server.addr);
    stream.write_all(&get("/stream?mb=1&fail=1")).unwrap();
    let mut all = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut all).unwrap();
    let body_at = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(
        all.len() - body_at,
        64 * 1024,
        "what was written before the failure"
    );
    server.wait_log("a streamed response's producer failed (testbed: fail=1 requested)");
}

#[test]
fn a_client_gone_mid_stream_drops_the_producer() {
    let server = async_testbed(&["--workers", "1"]);
    let mut stream = connect(server.addr);
    stream.write_all(&get("/stream?mb=1024")).unwrap();
    let mut buf = [0u8; 65536];
    std::io::Read::read_exact(&mut stream, &mut buf).unwrap();
    drop(stream);
    wait_until("the producer dropped", || {
        worker_stat(&server, "handlers_cancelled") == 1 && worker_stat(&server, "connections") == 0
    });
    assert_eq!(exchange(server.addr, GET).0.status, 200);
}

#[test]
fn files_are_read_through_the_ring_and_never_from_outside_their_root() {
    let base = std::env::temp_dir().join(format!("rm-files-{}", std::process::id()));
    let root = base.join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("sub/data.bin"), &content).unwrap();
    std::fs::write(base.join("secret"), b"outside").unwrap();
    std::os::unix::fs::symlink(base.join("secret"), root.join("link")).unwrap();
    let mut command = testbed(&["--workers", "1"]);
    command.env("TESTBED_ASYNC", "1").env("TESTBED_ROOT", &root);
    let server = Server::start_command(&mut command, 1);
    let (res, _) = exchange(server.addr, &get("/file?path=sub/data.bin"));
    assert_eq!(res.status, 200);
    assert_eq!(res.body, content, "the file, read at offsets");
    for escape in ["../secret", "/etc/passwd", "link", "sub/../../secret"] {
        let (res, _) = exchange(server.addr, &get(&format!("/file?path={escape}")));
        assert_eq!(
            res.status,
            403,
            "{escape}: {}",
            String::from_utf8_lossy(&res.body)
        );
    }
    let (res, _) = exchange(server.addr, &get("/file?path=missing"));
    assert_eq!(res.status, 404);
    std::fs::remove_dir_all(&base).unwrap();
}
