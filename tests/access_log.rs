//! The access log's three formats over real sockets: `common`, `combined` (referer and user
//! agent) and `json` (with the duration and the request id), an async handler's line with
//! its wait in its duration, and under load every line whole and none lost.

mod common;

use common::load::{Load, Style};
use common::{exchange, testbed, Server};
use std::io::Read;
use std::path::{Path, PathBuf};

fn log_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("rm-access-{name}-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Stops `server` (so that every line is written) and returns the log's lines.
/// The built-in server with `workers` and an access log at `path` in `format`.
fn logging(workers: &str, path: &Path, format: &str) -> Server {
    Server::start(&[
        "--workers",
        workers,
        "--access-log",
        path.to_str().unwrap(),
        "--access-log-format",
        format,
    ])
}

/// Stops `server` gracefully: its workers write what their access log holds as they exit.
fn stop(mut server: Server) {
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
}

/// One JSON access log line, parsed; a torn one fails the test.
fn json_line(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("a torn line ({e}): {line}"))
}

fn lines_after_stop(server: Server, path: &Path) -> Vec<String> {
    stop(server);
    let text = std::fs::read_to_string(path).unwrap();
    let _ = std::fs::remove_file(path);
    text.lines().map(str::to_string).collect()
}

const REQUEST: &[u8] = b"GET /a?b=1 HTTP/1.1\r\nHost: t\r\nReferer: https://e.example/p\r\n\
    User-Agent: test \"agent\"/1.0\r\nX-Request-Id: req-42\r\n\r\n";

#[test]
fn each_format_writes_its_fields() {
    for format in ["common", "combined", "json"] {
        let path = log_path(format);
        let server = logging("1", &path, format);
        assert_eq!(exchange(server.addr, REQUEST).0.status, 200);
        // A target may hold a quote and a backslash: escaped, the line still parses.
        let quoted = b"GET /q\"u\\o HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        assert_eq!(exchange(server.addr, quoted).0.status, 200);
        let lines = lines_after_stop(server, &path);
        assert_eq!(lines.len(), 2, "{format}: {lines:?}");
        match format {
            "json" => {
                let v = json_line(&lines[1]);
                assert_eq!(v["request"], "GET /q\"u\\o HTTP/1.1", "{}", lines[1]);
            }
            _ => assert!(
                lines[1].contains("] \"GET /q\\x22u\\x5Co HTTP/1.1\" 200 11"),
                "{}",
                lines[1]
            ),
        }
        let line = &lines[0];
        match format {
            "common" => {
                assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
                assert!(line.ends_with("] \"GET /a?b=1 HTTP/1.1\" 200 11"), "{line}");
            }
            "combined" => assert!(
                line.ends_with(
                    "] \"GET /a?b=1 HTTP/1.1\" 200 11 \"https://e.example/p\" \
                     \"test \\x22agent\\x22/1.0\""
                ),
                "{line}"
            ),
            _ => {
                let v = json_line(line);
                assert_eq!(v["remote_addr"], "127.0.0.1", "{line}");
                assert_eq!(v["request"], "GET /a?b=1 HTTP/1.1");
                assert_eq!(v["status"], 200);
                assert_eq!(v["bytes"], 11);
                assert!(v["duration_ms"].as_f64().unwrap() >= 0.0, "{line}");
                assert_eq!(v["referer"], "https://e.example/p");
                assert_eq!(v["user_agent"], "test \"agent\"/1.0");
                assert_eq!(v["request_id"], "req-42");
                assert!(v["time"].as_str().unwrap().ends_with('Z'), "{line}");
            }
        }
    }
}

#[test]
fn an_async_handlers_line_carries_its_wait_in_its_duration() {
    let path = log_path("async");
    let mut command = testbed(&[
        "--workers",
        "1",
        "--access-log",
        path.to_str().unwrap(),
        "--access-log-format",
        "json",
    ]);
    command.env("TESTBED_ASYNC", "1");
    let server = Server::start_command(&mut command, 1);
    let raw = b"GET /wait?ms=60 HTTP/1.1\r\nHost: t\r\nUser-Agent: waiter\r\n\r\n";
    assert_eq!(exchange(server.addr, raw).0.status, 200);
    let lines = lines_after_stop(server, &path);
    let v = json_line(&lines[0]);
    assert_eq!(v["request"], "GET /wait?ms=60 HTTP/1.1", "{lines:?}");
    assert_eq!(v["user_agent"], "waiter", "{lines:?}");
    assert!(v["referer"].is_null());
    let ms = v["duration_ms"].as_f64().unwrap();
    assert!(ms >= 60.0, "the wait counts: {ms} ms");
}

#[test]
fn under_load_every_line_is_whole_and_none_is_lost() {
    for format in ["combined", "json"] {
        let path = log_path(&format!("load-{format}"));
        let server = logging("2", &path, format);
        let keep = Load::start(server.addr, 4, Style::KeepAlive);
        let fresh = Load::start(server.addr, 2, Style::OnePerConnection);
        common::wait_until("load served", || {
            keep.tally().ok > 3000 && fresh.tally().ok > 300
        });
        let (keep, fresh) = (keep.stop(), fresh.stop());
        assert_eq!(keep.failed + fresh.failed, 0);
        let lines = lines_after_stop(server, &path);
        assert_eq!(
            lines.len() as u64,
            keep.ok + fresh.ok,
            "{format}: a line per response"
        );
        for line in &lines {
            match format {
                "json" => assert_eq!(json_line(line)["status"], 200, "{line}"),
                _ => assert!(
                    line.starts_with("127.0.0.1 - - [")
                        && line.ends_with("\"GET / HTTP/1.1\" 200 11 \"-\" \"-\""),
                    "a torn line: {line}"
                ),
            }
        }
    }
}

#[test]
fn to_a_pipe_every_line_is_whole_and_none_is_lost() {
    // A container's `--access-log /dev/stdout` is a pipe: two workers' writes to it must
    // not interleave inside a line, even with a reader slower than the load.
    let path = log_path("fifo");
    let _ = std::fs::remove_file(&path);
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; mkfifo reads it and keeps nothing.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let reader_path = path.clone();
    // A slow reader: small reads, so that the pipe fills and writes wait for room.
    let reader = std::thread::spawn(move || {
        let mut fifo = std::fs::File::open(&reader_path).unwrap();
        let mut all = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            match fifo.read(&mut buf).unwrap() {
                0 => return all,
                n => all.extend_from_slice(&buf[..n]),
            }
        }
    });
    let server = logging("2", &path, "json");
    let keep = Load::start(server.addr, 4, Style::KeepAlive);
    common::wait_until("load served", || keep.tally().ok > 5000);
    let keep = keep.stop();
    assert_eq!(keep.failed, 0);
    stop(server);
    let all = reader.join().unwrap();
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8(all).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() as u64, keep.ok, "a line per response");
    for line in lines {
        assert_eq!(json_line(line)["status"], 200, "{line}");
    }
}
