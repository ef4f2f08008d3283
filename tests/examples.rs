//! The async examples, run as real processes over real sockets.

mod common;

use common::{connect, example, free_port, read_response, Server};
use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

fn start(name: &str, env: &[(&str, String)]) -> Server {
    let mut command = std::process::Command::new(example(name));
    command.args(["--workers", "1", "--listen", "127.0.0.1:0"]);
    for (k, v) in env {
        command.env(k, v);
    }
    Server::start_command(&mut command, 1)
}

/// Kills a child process when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_upstream_example_answers_with_the_services_reply() {
    let addr = format!("127.0.0.1:{}", free_port());
    let _service = Child(
        std::process::Command::new(example("upstream"))
            .env("UPSTREAM_SERVE", &addr)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "the stand-in service listens");
        std::thread::sleep(Duration::from_millis(20));
    }
    let server = start("upstream", &[("UPSTREAM", addr)]);
    let mut stream = connect(server.addr);
    stream
        .write_all(b"GET /?q=ring HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let res = read_response(&mut BufReader::new(stream), false);
    assert_eq!(
        (res.status, String::from_utf8_lossy(&res.body).as_ref()),
        (200, "upstream says: RING\n")
    );
}

#[test]
fn the_stream_example_echoes_an_upload_as_it_arrives() {
    let server = start("stream", &[]);
    let mut stream = connect(server.addr);
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    stream
        .write_all(
            format!(
                "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    // Sent from another thread: the echo comes back while the upload is still going.
    let mut writer = stream.try_clone().unwrap();
    let sent = body.clone();
    let sender = std::thread::spawn(move || writer.write_all(&sent));
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    sender.join().unwrap().unwrap();
    let at = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&all[..at]).to_string();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    // Chunked: strip the framing.
    let mut echoed = Vec::new();
    let mut rest = &all[at..];
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
        rest = &rest[line_end + 2..];
        if n == 0 {
            break;
        }
        echoed.extend_from_slice(&rest[..n]);
        rest = &rest[n + 2..];
    }
    assert_eq!(echoed, body);
    // A generated body of a declared length.
    let mut stream = connect(server.addr);
    stream
        .write_all(b"GET /numbers?mb=2 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let res = read_response(&mut BufReader::new(stream), false);
    assert_eq!(res.body.len(), 2 << 20);
    assert!(res.body.starts_with(b"000000000000000\n000000000000001\n"));
}
