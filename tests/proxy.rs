//! The reverse proxy from the command line (`--proxy PREFIX=URL[,URL…]`), with upstreams
//! started by the tests, over real sockets.

mod common;

use common::{connect, exchange, get_with, read_response, rss_and_peak_kib, Server};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What an upstream answers to one request: raw bytes, then whether to close.
type Answer = dyn Fn(&Seen) -> (Vec<u8>, bool) + Send + Sync;

/// An upstream server on a thread per connection, counting its connections.
struct Upstream {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Upstream {
    fn start(answer: impl Fn(&Seen) -> (Vec<u8>, bool) + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let answer: Arc<Answer> = Arc::new(answer);
        let count = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                std::thread::spawn(move || serve(stream, &*answer));
            }
        });
        Upstream { port, accepted }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn serve(stream: TcpStream, answer: &Answer) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut fields = Vec::new();
        loop {
            let mut l = String::new();
            if reader.read_line(&mut l).unwrap_or(0) == 0 {
                return;
            }
            let l = l.trim_end().to_string();
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':').unwrap();
            fields.push((n.to_string(), v.trim().to_string()));
        }
        let len: usize = fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let chunked = fields.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
        });
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).unwrap();
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        let seen = Seen {
            line: line.trim_end().to_string(),
            fields,
            body,
        };
        let (bytes, close) = answer(&seen);
        if writer.write_all(&bytes).is_err() || close {
            return;
        }
    }
}

/// `200` with `body` and a length, plus hop-by-hop fields that must not reach the client.
fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: X-Private\r\nX-Private: 1\r\nKeep-Alive: timeout=5\r\nX-Public: 2\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn proxy(mounts: &[String], extra: &[&str]) -> Server {
    let mut args = vec!["--workers", "1"];
    for m in mounts {
        args.extend(["--proxy", m.as_str()]);
    }
    args.extend(extra);
    Server::start(&args)
}

fn get(target: &str, fields: &[&str]) -> Vec<u8> {
    get_with("front.test", target, fields)
}

#[test]
fn requests_go_upstream_below_the_prefix_without_hop_by_hop_fields() {
    let (tx, rx) = std::sync::mpsc::channel::<Seen>();
    let tx = std::sync::Mutex::new(tx);
    let up = Upstream::start(move |seen| {
        tx.lock().unwrap().send(seen.clone()).unwrap();
        (
            ok(&format!(
                "{} {}",
                seen.line,
                String::from_utf8_lossy(&seen.body)
            )),
            false,
        )
    });
    let server = proxy(&[format!("/api={}", up.url())], &[]);
    let (res, _) = exchange(
        server.addr,
        &get(
            "/api/x/y?q=1",
            &[
                "Connection: X-Secret",
                "X-Secret: s",
                "TE: trailers",
                "X-Keep: k",
            ],
        ),
    );
    assert_eq!(res.status, 200);
    assert_eq!(String::from_utf8_lossy(&res.body), "GET /x/y?q=1 HTTP/1.1 ");
    // Hop-by-hop fields of the response are gone; end-to-end ones pass.
    assert_eq!(res.header("X-Private"), None);
    assert_eq!(res.header("Keep-Alive"), None);
    assert_eq!(res.header("X-Public"), Some("2"));
    let seen = rx.recv().unwrap();
    assert_eq!(seen.field("Host"), Some("front.test"));
    assert_eq!(seen.field("X-Forwarded-Proto"), Some("http"));
    assert_eq!(seen.field("X-Forwarded-Host"), Some("front.test"));
    assert_eq!(seen.field("X-Keep"), Some("k"));
    for gone in ["Connection", "X-Secret", "TE"] {
        assert_eq!(seen.field(gone), None, "{gone} went upstream");
    }
    // The prefix alone, a query on it, and a body.
    assert_eq!(
        String::from_utf8_lossy(&exchange(server.addr, &get("/api", &[])).0.body),
        "GET / HTTP/1.1 "
    );
    assert_eq!(
        String::from_utf8_lossy(&exchange(server.addr, &get("/api?z", &[])).0.body),
        "GET /?z HTTP/1.1 "
    );
    let (res, _) = exchange(
        server.addr,
        b"POST /api/p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    assert_eq!(String::from_utf8_lossy(&res.body), "POST /p HTTP/1.1 abc");
    // Outside the mount, Hello World.
    assert_eq!(
        exchange(server.addr, &get("/other", &[])).0.body,
        b"Hello World"
    );
}

#[test]
fn upstream_connections_are_kept_and_upstreams_taken_in_turn() {
    let a = Upstream::start(|_| (ok("a"), false));
    let b = Upstream::start(|_| (ok("b"), false));
    let server = proxy(&[format!("/p={},{}", a.url(), b.url())], &[]);
    let mut stream = connect(server.addr);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut bodies = String::new();
    for _ in 0..20 {
        stream.write_all(&get("/p/x", &[])).unwrap();
        bodies.push_str(&String::from_utf8_lossy(
            &read_response(&mut reader, false).body,
        ));
    }
    assert_eq!(bodies, "ab".repeat(10), "round robin");
    // Each upstream saw one connection, reused for its ten requests.
    assert_eq!(a.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(b.accepted.load(Ordering::SeqCst), 1);
    // A POST, even without a body, takes a new connection: were a pooled one to go silent
    // after the upstream acted on it, it could not be sent again.
    for _ in 0..2 {
        stream
            .write_all(b"POST /p/x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut reader, false).status, 200);
    }
    assert_eq!(a.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(b.accepted.load(Ordering::SeqCst), 2);
    // The GETs after them go on pooled connections again.
    stream.write_all(&get("/p/x", &[])).unwrap();
    assert_eq!(read_response(&mut reader, false).status, 200);
    let accepted = a.accepted.load(Ordering::SeqCst) + b.accepted.load(Ordering::SeqCst);
    assert_eq!(accepted, 4);
}

#[test]
fn a_down_upstream_is_left_out_and_none_left_is_502() {
    let a = Upstream::start(|seen| {
        (
            ok(&format!("a{}", String::from_utf8_lossy(&seen.body))),
            false,
        )
    });
    let gone = TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://127.0.0.1:{}", gone.local_addr().unwrap().port());
    drop(gone);
    let server = proxy(
        &[format!("/p={down},{}", a.url()), format!("/none={down}")],
        &[],
    );
    // The first request meets the down upstream (taken first in turn). A POST goes on to
    // the next, body and all: nothing of it was sent to the one that refused the connect.
    let post = b"POST /p/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n hi!\n";
    let (res, _) = exchange(server.addr, post);
    assert_eq!((res.status, res.body.as_slice()), (200, &b"a hi!\n"[..]));
    for _ in 0..6 {
        let (res, _) = exchange(server.addr, &get("/p/x", &[]));
        assert_eq!((res.status, res.body.as_slice()), (200, &b"a"[..]));
    }
    let (res, _) = exchange(server.addr, &get("/none/x", &[]));
    assert_eq!(res.status, 502);
    server.wait_log("proxy: upstream");
}

#[test]
fn a_silent_upstream_is_504_and_a_hostile_one_502() {
    let silent = Upstream::start(|_| {
        std::thread::sleep(Duration::from_secs(5));
        (Vec::new(), true)
    });
    let split = Upstream::start(|_| {
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil".to_vec(), false)
    });
    let smuggle = Upstream::start(|_| {
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            false,
        )
    });
    let server = proxy(
        &[
            format!("/silent={}", silent.url()),
            format!("/split={}", split.url()),
            format!("/smuggle={}", smuggle.url()),
        ],
        &["--proxy-timeout", "0.5"],
    );
    let start = Instant::now();
    let (res, _) = exchange(server.addr, &get("/silent/x", &[]));
    assert_eq!(res.status, 504);
    assert!(start.elapsed() < Duration::from_secs(4));
    for path in ["/split/x", "/smuggle/x"] {
        let (res, _) = exchange(server.addr, &get(path, &[]));
        assert_eq!(res.status, 502, "{path}");
        assert!(!String::from_utf8_lossy(&res.body).contains("evil"));
    }
}

#[test]
fn an_upstream_that_dies_mid_body_cuts_the_client_short_and_chunked_bodies_pass() {
    let dies = Upstream::start(|_| {
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nonly this".to_vec(),
            true,
        )
    });
    let chunked = Upstream::start(|_| {
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec(), false)
    });
    let server = proxy(
        &[
            format!("/dies={}", dies.url()),
            format!("/chunked={}", chunked.url()),
        ],
        &[],
    );
    let mut stream = connect(server.addr);
    stream.write_all(&get("/dies/x", &[])).unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Length: 100000"), "{head}");
    let mut body = Vec::new();
    let _ = reader.read_to_end(&mut body);
    assert_eq!(body, b"only this", "closed short of the promised length");
    // A chunked body, decoded and sent on chunked: the whole of it, and the connection
    // stays open for the next request.
    let mut stream = connect(server.addr);
    stream.write_all(&get("/chunked/x", &[])).unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"0\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        got.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Transfer-Encoding: chunked\r\n"), "{text}");
    assert!(
        text.ends_with("\r\n\r\nb\r\nhello world\r\n0\r\n\r\n"),
        "{text}"
    );
    stream.write_all(&get("/other", &[])).unwrap();
    let res = read_response(&mut BufReader::new(stream), false);
    assert_eq!(res.body, b"Hello World");
}

#[test]
fn a_bad_proxy_flag_is_refused_at_start() {
    for arg in [
        "/x=https://127.0.0.1:1",
        "x=http://127.0.0.1:1",
        "/x=",
        "/x=127.0.0.1:1",
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmaster"))
            .args(["--proxy", arg, "--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--proxy {arg}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--proxy"), "{arg}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn a_pooled_connection_the_upstream_closed_is_replaced_without_an_error() {
    // Answers as if it kept the connection, then closes it: each pooled connection is stale
    // by the next request.
    let up = Upstream::start(|_| (ok("fresh"), true));
    let server = proxy(&[format!("/p={}", up.url())], &[]);
    let mut stream = connect(server.addr);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for _ in 0..10 {
        stream.write_all(&get("/p/x", &[])).unwrap();
        let res = read_response(&mut reader, false);
        assert_eq!((res.status, res.body.as_slice()), (200, &b"fresh"[..]));
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 10);
}

#[test]
fn a_slow_client_of_a_100_mib_download_keeps_the_worker_small() {
    const LEN: usize = 100 << 20;
    let up = Upstream::start(|_| {
        let mut bytes = format!("HTTP/1.1 200 OK\r\nContent-Length: {LEN}\r\n\r\n").into_bytes();
        bytes.resize(bytes.len() + LEN, b'x');
        (bytes, false)
    });
    let server = proxy(&[format!("/big={}", up.url())], &[]);
    // Warm the worker, then its idle size.
    assert_eq!(exchange(server.addr, &get("/", &[])).0.status, 200);
    let pid = server.worker_pids()[0];
    let (idle, _) = rss_and_peak_kib(pid);
    let mut stream = connect(server.addr);
    stream.write_all(&get("/big/file", &[])).unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    // 2 MiB/s for 3 s, then as fast as it comes.
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0usize;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let due = start + Duration::from_micros(31_250 * (got / buf.len() + 1) as u64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        got += reader.read(&mut buf).unwrap();
    }
    let (slow, _) = rss_and_peak_kib(pid);
    while got < LEN {
        match reader.read(&mut buf).unwrap() {
            0 => break,
            n => got += n,
        }
    }
    assert_eq!(got, LEN, "the whole body");
    let (_, peak) = rss_and_peak_kib(pid);
    eprintln!("proxied 100 MiB to a slow client: idle RSS {idle} KiB, while slow {slow} KiB, peak {peak} KiB");
    assert!(
        peak < idle + 64 * 1024,
        "peak {peak} KiB over idle {idle} KiB + 64 MiB"
    );
}

#[test]
fn request_bodies_go_upstream_as_they_arrive() {
    // The upstream answers with the byte count and the framing it saw.
    let up = Upstream::start(|seen| {
        let framing = match (
            seen.field("Content-Length"),
            seen.field("Transfer-Encoding"),
        ) {
            (Some(n), None) => format!("length {n}"),
            (None, Some(te)) => format!("coding {te}"),
            other => format!("{other:?}"),
        };
        (ok(&format!("{} bytes, {framing}", seen.body.len())), false)
    });
    let server = proxy(
        &[format!("/up={}", up.url())],
        &["--request-body-bytes-max", "134217728"],
    );
    assert_eq!(exchange(server.addr, &get("/", &[])).0.status, 200);
    let pid = server.worker_pids()[0];
    let (idle, _) = rss_and_peak_kib(pid);
    // 100 MiB with a length, sent in pieces: never held whole; and a chunked body.
    const LEN: usize = 100 << 20;
    let mut stream = connect(server.addr);
    stream
        .write_all(
            format!("POST /up/u HTTP/1.1\r\nHost: t\r\nContent-Length: {LEN}\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let piece = vec![b'u'; 1 << 20];
    for _ in 0..LEN / piece.len() {
        stream.write_all(&piece).unwrap();
    }
    let res = read_response(&mut BufReader::new(stream), false);
    assert_eq!(
        String::from_utf8_lossy(&res.body),
        format!("{LEN} bytes, length {LEN}")
    );
    let (_, peak) = rss_and_peak_kib(pid);
    eprintln!("proxied a 100 MiB upload: idle RSS {idle} KiB, peak {peak} KiB");
    assert!(
        peak < idle + 64 * 1024,
        "peak {peak} KiB over idle {idle} KiB + 64 MiB"
    );
    let (res, _) = exchange(
        server.addr,
        b"POST /up/c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&res.body),
        "5 bytes, coding chunked"
    );
    // Expect: 100-continue: the client hears 100 before it sends, then the answer.
    let mut stream = connect(server.addr);
    stream
        .write_all(
            b"PUT /up/e HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "\r\n");
    stream.write_all(b"data").unwrap();
    let res = read_response(&mut reader, false);
    assert_eq!(String::from_utf8_lossy(&res.body), "4 bytes, length 4");
}

#[test]
fn an_upstream_that_trickles_its_head_is_cut_off_by_the_total_timeout() {
    // A byte of head every 50 ms: the read timeout (30 s) never fires, the total (1 s) does.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nX-Slow: ");
                for _ in 0..400 {
                    if stream.write_all(b"a").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
    });
    let server = proxy(
        &[format!("/slow=http://127.0.0.1:{port}")],
        &["--proxy-timeout", "30", "--proxy-total-timeout", "1"],
    );
    let start = Instant::now();
    let (res, _) = exchange(server.addr, &get("/slow/x", &[]));
    assert_eq!(res.status, 504);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmaster"))
        .args([
            "--proxy",
            "/p=http://127.0.0.1:9",
            "--proxy-total-timeout",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--proxy-total-timeout 0"));
}

#[test]
fn host_goes_upstream_kept_or_set_by_proxy_host() {
    let up = Upstream::start(|seen| (ok(seen.field("Host").unwrap_or("-")), false));
    let host_seen = |extra: &[&str]| {
        let server = proxy(&[format!("/p={}", up.url())], extra);
        let (res, _) = exchange(server.addr, &get("/p/x", &[]));
        assert_eq!(res.status, 200);
        String::from_utf8(res.body).unwrap()
    };
    assert_eq!(host_seen(&[]), "front.test");
    let authority = up.url().trim_start_matches("http://").to_string();
    assert_eq!(host_seen(&["--proxy-host", "$proxy_host"]), authority);
    assert_eq!(host_seen(&["--proxy-host", "api.internal"]), "api.internal");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmaster"))
        .args(["--proxy", "/p=http://127.0.0.1:9", "--proxy-host", "a b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--proxy-host"));
}

/// An upstream that answers each request with the `X-Forwarded-For` it got (`-` for none).
fn forwarded_for_upstream() -> Upstream {
    Upstream::start(|seen| {
        let xff = seen.field("X-Forwarded-For").unwrap_or("-");
        (ok(xff), false)
    })
}

/// What the upstream behind `server` got as `X-Forwarded-For` for one request sent with
/// `fields` on a new connection.
fn forwarded_for(server: &Server, fields: &[&str]) -> String {
    let (res, _) = exchange(server.addr, &get("/p/x", fields));
    assert_eq!(res.status, 200);
    String::from_utf8(res.body).unwrap()
}

/// Whether the worker of `server` took its connections as direct descriptors.
fn direct(server: &Server) -> bool {
    server
        .wait_log("] INFO ready (")
        .contains("direct descriptors true")
}

/// The client's address is appended to what came, as nginx's
/// `$proxy_add_x_forwarded_for`: through the ring for direct descriptors (the default where
/// the kernel has them), by `getpeername` for plain ones.
fn the_client_address_goes_upstream(args: &[&str]) {
    let up = forwarded_for_upstream();
    let server = proxy(&[format!("/p={}", up.url())], args);
    let want_direct =
        !args.contains(&"--uring-no-direct-descriptors") && common::direct_supported();
    assert_eq!(direct(&server), want_direct);
    // Each connection sends its request at once, so that it is often queued before the
    // worker accepts it: the address must still be known when it is processed.
    for _ in 0..50 {
        assert_eq!(forwarded_for(&server, &[]), "127.0.0.1");
    }
    assert_eq!(
        forwarded_for(&server, &["X-Forwarded-For: 10.0.0.1"]),
        "10.0.0.1, 127.0.0.1"
    );
    assert_eq!(
        forwarded_for(
            &server,
            &["X-Forwarded-For: 10.0.0.1", "X-Forwarded-For: 10.0.0.2"]
        ),
        "10.0.0.1, 10.0.0.2, 127.0.0.1"
    );
    // Every request of a kept-alive connection, pipelined ones too.
    let mut stream = connect(server.addr);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let three = [get("/p/a", &[]), get("/p/b", &[]), get("/p/c", &[])].concat();
    stream.write_all(&three).unwrap();
    for _ in 0..3 {
        let res = read_response(&mut reader, false);
        assert_eq!(String::from_utf8_lossy(&res.body), "127.0.0.1");
    }
    // Outside the mount the built-in handler answers as ever.
    assert_eq!(
        exchange(server.addr, &get("/other", &[])).0.body,
        b"Hello World"
    );
}

#[test]
fn the_client_address_goes_upstream_in_x_forwarded_for() {
    the_client_address_goes_upstream(&[]);
}

#[test]
fn the_client_address_of_a_plain_descriptor_goes_upstream_too() {
    the_client_address_goes_upstream(&["--uring-no-direct-descriptors"]);
}

#[test]
fn an_ipv6_client_address_goes_upstream_without_brackets() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: ::1 cannot be bound here (no IPv6 loopback)");
        return;
    }
    let up = forwarded_for_upstream();
    for args in [&[][..], &["--uring-no-direct-descriptors"]] {
        let mut all = vec!["--listen", "[::1]:0"];
        all.extend_from_slice(args);
        let server = proxy(&[format!("/p={}", up.url())], &all);
        assert!(server.addr.is_ipv6(), "{}", server.addr);
        assert_eq!(forwarded_for(&server, &[]), "::1", "{args:?}");
        assert_eq!(
            forwarded_for(&server, &["X-Forwarded-For: 2001:db8::1"]),
            "2001:db8::1, ::1",
            "{args:?}"
        );
    }
    // An IPv4 client of a dual-stack IPv6 socket is written as IPv4, not `::ffff:…`.
    let server = proxy(&[format!("/p={}", up.url())], &["--listen", "[::]:0"]);
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], server.addr.port()));
    let Ok(stream) = TcpStream::connect(v4) else {
        eprintln!("skipped the IPv4-mapped part: [::] takes no IPv4 here (IPV6_V6ONLY)");
        return;
    };
    drop(stream);
    let (res, _) = exchange(v4, &get("/p/x", &[]));
    assert_eq!(String::from_utf8_lossy(&res.body), "127.0.0.1");
}
