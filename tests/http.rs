//! HTTP/1.1 behaviour of the real binary over real sockets.

mod common;

use common::{closed_by_server, connect, direct_supported, exchange, read_response, Server, GET};
use std::io::{BufReader, Write};

#[test]
fn get_root_answers_hello_world_with_framing_headers() {
    let server = Server::start(&["--workers", "1"]);
    let (res, _) = exchange(server.addr, GET);
    assert_eq!(res.status, 200);
    assert_eq!(res.body, b"Hello World");
    assert_eq!(res.header("Content-Type"), Some("text/plain"));
    assert_eq!(res.header("Content-Length"), Some("11"));
    let date = res.header("Date").expect("a Date field");
    assert!(
        date.ends_with(" GMT") && date.len() == 29,
        "IMF-fixdate: {date:?}"
    );
    assert_eq!(
        res.header("Connection"),
        None,
        "keep-alive is the HTTP/1.1 default"
    );
}

#[test]
fn a_thousand_keep_alive_requests_share_one_connection() {
    let server = Server::start(&["--workers", "1"]);
    let mut stream = connect(server.addr);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for i in 0..1000 {
        stream.write_all(GET).unwrap();
        let res = read_response(&mut reader, false);
        assert_eq!(
            (res.status, res.body.as_slice()),
            (200, &b"Hello World"[..]),
            "request {i}"
        );
    }
}

#[test]
fn a_hundred_pipelined_requests_in_one_write_are_answered_in_order() {
    let server = Server::start(&["--workers", "1"]);
    let mut batch = Vec::new();
    for i in 0..100 {
        // Alternate methods so that order is visible: HEAD responses carry no body.
        let method = if i % 3 == 0 { "HEAD" } else { "GET" };
        batch.extend_from_slice(format!("{method} /{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    }
    let mut stream = connect(server.addr);
    stream.write_all(&batch).unwrap();
    let mut reader = BufReader::new(stream);
    for i in 0..100 {
        let head_only = i % 3 == 0;
        let res = read_response(&mut reader, head_only);
        assert_eq!(res.status, 200, "response {i}");
        assert_eq!(res.header("Content-Length"), Some("11"));
        assert_eq!(
            res.body.is_empty(),
            head_only,
            "response {i} is out of order"
        );
    }
}

#[test]
fn http10_closes_unless_keep_alive_is_asked_for() {
    let server = Server::start(&["--workers", "1"]);
    let (res, mut reader) = exchange(server.addr, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(res.status, 200);
    assert_eq!(res.header("Connection"), Some("close"));
    assert!(closed_by_server(&mut reader));

    let (res, mut reader) = exchange(
        server.addr,
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    assert_eq!(res.header("Connection"), Some("keep-alive"));
    reader
        .get_mut()
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .unwrap();
    let res = read_response(&mut reader, false);
    assert_eq!(res.body, b"Hello World");
    assert!(closed_by_server(&mut reader));
}

#[test]
fn connection_close_closes_and_drops_later_pipelined_requests() {
    let server = Server::start(&["--workers", "1"]);
    let raw =
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n";
    let (res, mut reader) = exchange(server.addr, raw);
    assert_eq!(res.status, 200);
    assert_eq!(res.header("Connection"), Some("close"));
    assert!(
        closed_by_server(&mut reader),
        "no second response, then end of stream"
    );
}

#[test]
fn malformed_request_gets_400_and_close() {
    let server = Server::start(&["--workers", "1"]);
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        let (res, mut reader) = exchange(server.addr, raw);
        assert_eq!(res.status, 400, "for {:?}", String::from_utf8_lossy(raw));
        assert_eq!(res.header("Connection"), Some("close"));
        assert!(String::from_utf8_lossy(&res.body).starts_with("400 Bad Request: "));
        assert!(closed_by_server(&mut reader));
    }
    // The worker is unharmed.
    let (res, _) = exchange(server.addr, GET);
    assert_eq!(res.status, 200);
}

#[test]
fn chunked_request_bodies_are_read_and_the_connection_stays_usable() {
    let server = Server::start(&["--workers", "1"]);
    let raw =
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let (res, mut reader) = exchange(server.addr, raw);
    assert_eq!(res.status, 200);
    reader.get_mut().write_all(GET).unwrap();
    assert_eq!(read_response(&mut reader, false).status, 200);
}

#[test]
fn request_bodies_are_read_whole_before_the_next_request() {
    let server = Server::start(&["--workers", "1"]);
    let mut stream = connect(server.addr);
    // The body holds what looks like a request: it must be skipped as body, not parsed.
    let body = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    let first = format!(
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(first.as_bytes()).unwrap();
    stream.write_all(&body.as_bytes()[..10]).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    stream.write_all(&body.as_bytes()[10..]).unwrap();
    stream.write_all(GET).unwrap();
    assert_eq!(read_response(&mut reader, false).status, 200);
    assert_eq!(read_response(&mut reader, false).status, 200);
    stream
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let mut probe = [0u8; 1];
    assert!(
        std::io::Read::read(&mut reader, &mut probe).is_err(),
        "exactly two responses"
    );
}

#[test]
fn body_over_the_limit_gets_413() {
    let server = Server::start(&["--workers", "1", "--request-body-bytes-max", "100"]);
    let at = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n";
    let mut raw = at.to_vec();
    raw.extend([b'x'; 100]);
    assert_eq!(exchange(server.addr, &raw).0.status, 200);
    let over = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n";
    let (res, mut reader) = exchange(server.addr, over);
    assert_eq!(res.status, 413);
    assert!(closed_by_server(&mut reader));
}

#[test]
fn at_the_connection_bound_a_worker_stops_accepting_and_resumes_below_it() {
    use std::io::Read;
    let server = Server::start(&["--workers", "1", "--connections-max", "2"]);
    let (first, first_reader) = exchange(server.addr, GET);
    let (second, _second_reader) = exchange(server.addr, GET);
    assert_eq!((first.status, second.status), (200, 200));
    // The third connection completes its handshake in the kernel's backlog, but the worker
    // does not accept it: its request waits, and it is not reset.
    let mut third = connect(server.addr);
    third.write_all(GET).unwrap();
    third
        .set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let err = third
        .read(&mut byte)
        .expect_err("no answer while at the bound");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "waiting, not reset: {err}"
    );
    // One connection closes: the worker goes below the bound and takes the third.
    drop(first_reader);
    third.set_read_timeout(Some(common::WAIT_MAX)).unwrap();
    let mut reader = BufReader::new(third);
    let res = read_response(&mut reader, false);
    assert_eq!(res.status, 200);
    assert_eq!(res.body, b"Hello World");
}

/// The descriptors a worker holds while `count` keep-alive connections are open to it,
/// less those it holds with none.
fn descriptors_per_connections(args: &[&str], count: usize) -> usize {
    let mut all = vec!["--workers", "1"];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    let worker = server.worker_pids()[0];
    let fds = || {
        std::fs::read_dir(format!("/proc/{worker}/fd"))
            .unwrap()
            .count()
    };
    let before = fds();
    let mut open = Vec::new();
    for _ in 0..count {
        let mut reader = BufReader::new(connect(server.addr));
        reader.get_mut().write_all(GET).unwrap();
        // Answered: the worker has taken the connection.
        assert_eq!(read_response(&mut reader, false).status, 200);
        open.push(reader);
    }
    fds() - before
}

#[test]
fn direct_descriptors_keep_connections_out_of_the_process_table() {
    if !direct_supported() {
        eprintln!("skipped: this kernel gives no direct descriptors to workers (Linux 6.7)");
        return;
    }
    assert_eq!(descriptors_per_connections(&[], 50), 0);
    assert_eq!(
        descriptors_per_connections(&["--uring-no-direct-descriptors"], 50),
        50
    );
}
