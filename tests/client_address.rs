//! The client's address as handlers see it (`Request::peer_addr`, `OwnedRequest::peer_addr`)
//! and the access log writes it: looked up only when asked for (`Config::client_addresses`,
//! an access log), through the ring for direct descriptors and by `getpeername` for plain
//! ones. The testbed answers `/peer` with what its handler sees.

mod common;

use common::{connect, direct_supported, exchange, read_response, testbed, Server};
use std::io::{BufReader, Write};

const PEER: &[u8] = b"GET /peer HTTP/1.1\r\nHost: t\r\n\r\n";

/// The testbed (async with `asynchronous`) with `args`, asking for client addresses when
/// `addresses`; checks it took connections as direct descriptors when it should.
fn start(args: &[&str], asynchronous: bool, addresses: bool) -> Server {
    let mut all = vec!["--workers", "1"];
    all.extend_from_slice(args);
    let mut command = testbed(&all);
    if asynchronous {
        command.env("TESTBED_ASYNC", "1");
    }
    if addresses {
        command.env("TESTBED_CLIENT_ADDRESSES", "1");
    }
    let server = Server::start_command(&mut command, 1);
    let direct = !args.contains(&"--uring-no-direct-descriptors") && direct_supported();
    let ready = server.wait_log("] INFO ready (");
    assert!(
        ready.contains(&format!("direct descriptors {direct}")),
        "{ready}"
    );
    server
}

/// What the handler saw as the client's address, on new connections and on one kept alive.
fn peer(server: &Server) -> String {
    let (res, _) = exchange(server.addr, PEER);
    assert_eq!(res.status, 200);
    let first = String::from_utf8(res.body).unwrap();
    let mut stream = connect(server.addr);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    stream.write_all(&PEER.repeat(3)).unwrap();
    for _ in 0..3 {
        let again = read_response(&mut reader, false);
        assert_eq!(String::from_utf8_lossy(&again.body), first, "kept alive");
    }
    first
}

#[test]
fn handlers_see_the_client_address_when_it_is_asked_for() {
    for asynchronous in [false, true] {
        for args in [&[][..], &["--uring-no-direct-descriptors"]] {
            let what = format!("async {asynchronous}, {args:?}");
            let server = start(args, asynchronous, true);
            for _ in 0..20 {
                assert_eq!(peer(&server), "127.0.0.1", "{what}");
            }
        }
    }
}

#[test]
fn the_address_is_not_looked_up_unless_asked_for() {
    for asynchronous in [false, true] {
        let server = start(&[], asynchronous, false);
        assert_eq!(peer(&server), "-", "async {asynchronous}");
    }
}

#[test]
fn an_access_log_looks_the_address_up_with_direct_descriptors_too() {
    for args in [&[][..], &["--uring-no-direct-descriptors"]] {
        let log = std::env::temp_dir().join(format!(
            "rm-client-address-{}-{}.log",
            std::process::id(),
            args.len()
        ));
        let _ = std::fs::remove_file(&log);
        let log_arg = log.to_string_lossy().to_string();
        let mut all = vec!["--access-log", log_arg.as_str()];
        all.extend_from_slice(args);
        let mut server = start(&all, false, false);
        assert_eq!(peer(&server), "127.0.0.1", "{args:?}");
        server.signal(libc::SIGTERM);
        assert_eq!(server.wait_exit().code(), Some(0));
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(
            text.lines().all(|l| l.starts_with("127.0.0.1 - - [")),
            "{args:?}: {text}"
        );
        let _ = std::fs::remove_file(&log);
    }
}

#[test]
fn an_ipv6_client_address_is_seen_as_such() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: ::1 cannot be bound here (no IPv6 loopback)");
        return;
    }
    for args in [&[][..], &["--uring-no-direct-descriptors"]] {
        let mut command = std::process::Command::new(common::example("testbed"));
        command
            .args(["--workers", "1", "--listen", "[::1]:0"])
            .args(args)
            .env("TESTBED_CLIENT_ADDRESSES", "1");
        let server = Server::start_command(&mut command, 1);
        assert!(server.addr.is_ipv6(), "{}", server.addr);
        assert_eq!(peer(&server), "::1", "{args:?}");
    }
}
