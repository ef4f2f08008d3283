//! `examples/tower.rs` over real sockets: a `tower`/`tower-http` stack (request ids, CORS,
//! gzip, tracing) and ringmaster's ring-clock timeout, serving through `ringmaster::tower`.

mod common;

use common::{example, exchange, Server};
use std::io::Read;
use std::process::Command;

fn start() -> Server {
    let mut command = Command::new(example("tower"));
    command
        .args(["--listen", "127.0.0.1:0", "--workers", "1"])
        .env("RUST_LOG", "info,tower_http=debug");
    Server::start_command(&mut command, 1)
}

fn get(server: &Server, target: &str, fields: &[&str]) -> common::Response {
    let mut raw = format!("GET {target} HTTP/1.1\r\nHost: t\r\n");
    for f in fields {
        raw.push_str(f);
        raw.push_str("\r\n");
    }
    raw.push_str("\r\n");
    exchange(server.addr, raw.as_bytes()).0
}

#[test]
fn a_tower_stack_serves_with_request_ids_cors_and_its_body() {
    let server = start();
    let res = get(&server, "/", &["Origin: https://app.example"]);
    assert_eq!(res.status, 200);
    assert_eq!(res.body, b"hello from tower\n");
    let id = res.header("x-request-id").expect("a request id set");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    // A request id the client sent is kept.
    let res = get(&server, "/", &["X-Request-Id: mine-1"]);
    assert_eq!(res.header("x-request-id"), Some("mine-1"));
    assert_eq!(get(&server, "/nowhere", &[]).status, 404);
    // A target this server's parser takes but `http::Uri` refuses is the client's error.
    for target in ["/a<b>", "/a`b"] {
        let res = get(&server, target, &[]);
        assert_eq!(res.status, 400, "{target}");
    }
    // TraceLayer's events land in ringmaster's log, one line each, with their fields.
    let line = server.wait_log("finished processing request");
    assert!(
        line.contains("ringmaster[worker 0] DEBUG") && line.contains("status=200"),
        "{line}"
    );
    // With the fields of the span it happened in: TraceLayer's request span.
    assert!(
        line.contains("DEBUG request{method=GET uri=/ version=HTTP/1.1}: finished"),
        "{line}"
    );
}

#[test]
fn a_large_body_is_compressed_and_streamed() {
    let server = start();
    let plain = get(&server, "/big", &[]);
    assert_eq!(plain.status, 200);
    assert!(plain.body.len() > ringmaster::tower::COLLECT_BYTES_MAX);
    let gzipped = get(&server, "/big", &["Accept-Encoding: gzip"]);
    assert_eq!(gzipped.header("content-encoding"), Some("gzip"));
    assert!(gzipped.body.len() < plain.body.len() / 10);
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gzipped.body[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain.body);
}

#[test]
fn the_ring_clock_timeout_answers_503_and_the_worker_serves_on() {
    let server = start();
    let fast = get(&server, "/slow?ms=20", &[]);
    assert_eq!((fast.status, &fast.body[..]), (200, &b"slept 20 ms\n"[..]));
    let started = std::time::Instant::now();
    assert_eq!(get(&server, "/slow?ms=2000", &[]).status, 503);
    assert!(started.elapsed() < std::time::Duration::from_millis(1500));
    assert_eq!(get(&server, "/", &[]).status, 200);
}
