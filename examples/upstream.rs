//! An async handler that calls a TCP service over the worker's own ring and answers with
//! its reply: the shape of a handler that talks to a database or another service.
//!
//! ```text
//! cargo run --release --example upstream -- --listen 127.0.0.1:3000 --workers 2
//! curl 'localhost:3000/?q=hello'     # upstream says: HELLO
//! ```
//!
//! The service is `UPSTREAM` (default `127.0.0.1:7700`), a line protocol: one line in,
//! one line out. Without `UPSTREAM`, the example starts its own (a child process that
//! answers each line upper-cased after 50 ms), so that it runs alone. Every worker keeps
//! its own connections; each request writes one line and reads one back, with deadlines,
//! while the worker goes on serving others.

use ringmaster::rt::TcpStream;
use ringmaster::{OwnedRequest, Response, Server};
use std::net::SocketAddr;
use std::time::Duration;

/// Asks the service about `question`: one line there, one line back.
async fn ask(upstream: SocketAddr, question: &str) -> std::io::Result<String> {
    let mut conn = TcpStream::connect_timeout(upstream, Duration::from_secs(1)).await?;
    conn.set_read_timeout(Some(Duration::from_secs(5)));
    conn.set_write_timeout(Some(Duration::from_secs(1)));
    conn.write_all(format!("{question}\n").as_bytes()).await?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    while !reply.contains(&b'\n') && reply.len() < 4096 {
        match conn.read(&mut buf).await? {
            0 => break,
            n => reply.extend_from_slice(&buf[..n]),
        }
    }
    Ok(String::from_utf8_lossy(&reply).trim_end().to_string())
}

async fn handle(upstream: SocketAddr, req: OwnedRequest) -> Response {
    let question = req
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("q=")))
        .unwrap_or("ping")
        .to_string();
    let mut res = Response::new();
    match ask(upstream, &question).await {
        Ok(reply) => res
            .header("Content-Type", "text/plain")
            .body(format!("upstream says: {reply}\n")),
        Err(e) => res.status(502).body(format!("upstream {upstream}: {e}\n")),
    };
    res
}

/// The stand-in service: each connection's lines answered upper-cased after 50 ms.
fn serve_upstream(addr: &str) -> ! {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind(addr).unwrap_or_else(|e| {
        eprintln!("upstream: error: cannot listen on {addr}: {e}");
        std::process::exit(2)
    });
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let mut out = stream.try_clone().expect("a socket clones");
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                std::thread::sleep(Duration::from_millis(50));
                if writeln!(out, "{}", line.to_uppercase()).is_err() {
                    break;
                }
            }
        });
    }
    std::process::exit(0)
}

fn main() {
    if let Ok(addr) = std::env::var("UPSTREAM_SERVE") {
        serve_upstream(&addr);
    }
    let upstream: SocketAddr = match std::env::var("UPSTREAM") {
        Ok(addr) => addr.parse().unwrap_or_else(|_| {
            eprintln!("upstream: error: UPSTREAM={addr:?} is not IP:PORT; try 127.0.0.1:7700");
            std::process::exit(2)
        }),
        Err(_) => {
            // Our own stand-in, in a child process (started before the server forks).
            let addr = "127.0.0.1:7700";
            let exe = std::env::current_exe().expect("the example's own path");
            let child = std::process::Command::new(exe)
                .env("UPSTREAM_SERVE", addr)
                .spawn();
            if let Err(e) = child {
                eprintln!("upstream: error: cannot start the stand-in service: {e}");
                std::process::exit(1);
            }
            addr.parse().expect("a valid address")
        }
    };
    let server = Server::new_async(move |req: OwnedRequest| handle(upstream, req));
    std::process::exit(ringmaster::cli::run(ringmaster::app!(), server));
}
