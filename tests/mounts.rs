//! Per-mount counters (`--static`, `--proxy`) in `ringmaster status [--json]` and
//! `/metrics`, with the real binary, over real sockets, against upstreams started here.

mod common;

use common::metrics::{self, sample};
use common::{connect, control, wait_until, Server, TempDir};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;

/// The body the upstream answers with a length.
const UPSTREAM_BODY: &str = "from the upstream\n";
/// The pieces of the body the upstream answers chunked (`/chunked`).
const CHUNKS: [&str; 3] = ["one ", "two ", "three\n"];
/// A file small enough to be cached (a whole body), and one large enough to be streamed.
const SMALL_BYTES: usize = 1000;
const LARGE_BYTES: usize = 300 * 1024;
/// The bound the binary enforces (`ringmaster::ipc::MOUNTS_MAX`).
const MOUNTS_MAX: usize = ringmaster::ipc::MOUNTS_MAX;

/// A directory holding `small.txt` and `large.bin` for one test, removed when dropped.
fn files(name: &str) -> TempDir {
    let dir = TempDir::new("mounts", name);
    dir.write("small.txt", vec![b's'; SMALL_BYTES]);
    dir.write("large.bin", vec![b'l'; LARGE_BYTES]);
    dir
}

/// An HTTP/1.1 upstream on a thread per connection, keeping connections alive: `/chunked`
/// is answered chunked, anything else with [`UPSTREAM_BODY`] and a length.
fn upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || serve_upstream(stream));
        }
    });
    format!("http://127.0.0.1:{port}")
}

fn serve_upstream(stream: TcpStream) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        // GETs only: the head ends the request.
        loop {
            let mut field = String::new();
            if reader.read_line(&mut field).unwrap_or(0) == 0 {
                return;
            }
            if field.trim_end().is_empty() {
                break;
            }
        }
        let answer = if line.contains(" /chunked ") {
            let mut out = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_string();
            for chunk in CHUNKS {
                out.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
            }
            out + "0\r\n\r\n"
        } else {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{UPSTREAM_BODY}",
                UPSTREAM_BODY.len()
            )
        };
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// A URL nothing listens on (a port that was free a moment ago).
fn down_upstream() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

/// `METHOD target` on a new connection that the server closes after the answer: (status,
/// body as sent, chunk framing included).
fn request(addr: SocketAddr, method: &str, target: &str) -> (u16, Vec<u8>) {
    let mut stream = connect(addr);
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    let at = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let status = String::from_utf8_lossy(&all[9..12]).parse().unwrap();
    (status, all[at + 4..].to_vec())
}

/// The `mounts` entry of `status --json` whose prefix is `prefix`.
fn mount_json(json: &str, prefix: &str) -> String {
    let mounts = json.split("\"mounts\":[").nth(1).expect("a mounts array");
    let key = format!("{{\"prefix\":\"{prefix}\",");
    let start = mounts
        .find(&key)
        .unwrap_or_else(|| panic!("no mount {prefix} in {json}"));
    let entry = &mounts[start..];
    entry[..=entry.find('}').unwrap()].to_string()
}

/// `"key":N` in a JSON object's text, if there.
fn field(object: &str, key: &str) -> Option<u64> {
    let rest = object.split(&format!("\"{key}\":")).nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The figures `status --json` gives for the mount at `prefix`: requests, bytes,
/// upstream_errors, upstream_open, upstream_idle (`None` for a field left out).
fn figures(server: &Server, prefix: &str) -> [Option<u64>; 5] {
    let entry = mount_json(&control(server, "status json"), prefix);
    [
        "requests",
        "bytes",
        "upstream_errors",
        "upstream_open",
        "upstream_idle",
    ]
    .map(|key| field(&entry, key))
}

/// Waits until the mount at `prefix` reports `requests` (workers report every second).
fn wait_for_requests(server: &Server, prefix: &str, requests: u64) {
    wait_until(&format!("{prefix} to report {requests} requests"), || {
        figures(server, prefix)[0] == Some(requests)
    });
}

/// `GET /metrics` from the master's metrics listener, parsed.
fn scrape(server: &Server) -> prometheus_parse::Scrape {
    let (status, body) = metrics::scrape(metrics::metrics_addr(server), "/metrics");
    assert_eq!(status, 200);
    metrics::parse_metrics(&body)
}

#[test]
fn each_mount_counts_its_requests_and_bytes_in_status_and_metrics() {
    let root = files("counts");
    let url = upstream();
    let server = Server::start(&[
        "--workers",
        "2",
        "--metrics",
        "127.0.0.1:0",
        "--static",
        &root.mount_arg("/files"),
        "--proxy",
        &format!("/api={url}"),
    ]);
    let (smalls, larges, heads, proxied, chunked) = (10, 2, 3, 7, 4);
    for _ in 0..smalls {
        let (status, body) = request(server.addr, "GET", "/files/small.txt");
        assert_eq!((status, body.len()), (200, SMALL_BYTES));
    }
    for _ in 0..larges {
        let (status, body) = request(server.addr, "GET", "/files/large.bin");
        assert_eq!((status, body.len()), (200, LARGE_BYTES));
    }
    for target in ["/files/small.txt", "/files/large.bin", "/files/small.txt"] {
        assert_eq!(request(server.addr, "HEAD", target).0, 200);
    }
    for _ in 0..proxied {
        let (status, body) = request(server.addr, "GET", "/api/x");
        assert_eq!((status, body.as_slice()), (200, UPSTREAM_BODY.as_bytes()));
    }
    for _ in 0..chunked {
        assert_eq!(request(server.addr, "GET", "/api/chunked").0, 200);
    }
    // Hello World answers the rest, and is no mount's.
    assert_eq!(request(server.addr, "GET", "/").0, 200);

    let file_requests = smalls + larges + heads;
    let file_bytes = (smalls * SMALL_BYTES + larges * LARGE_BYTES) as u64;
    let proxy_requests = proxied + chunked;
    let chunked_bytes: usize = CHUNKS.iter().map(|c| c.len()).sum();
    let proxy_bytes = (proxied * UPSTREAM_BODY.len() + chunked * chunked_bytes) as u64;
    wait_for_requests(&server, "/files", file_requests as u64);
    wait_for_requests(&server, "/api", proxy_requests as u64);
    // A body is counted when its producer ends, which may be after the response's report:
    // wait for the bytes too, then for the pool to be reported with nothing busy (each
    // worker that proxied keeps its upstream connection idle).
    let files = [
        Some(file_requests as u64),
        Some(file_bytes),
        None,
        None,
        None,
    ];
    wait_until("the files' bytes to be reported", || {
        figures(&server, "/files") == files
    });
    let mut api = [None; 5];
    wait_until("the proxy's bytes and pool to be reported", || {
        api = figures(&server, "/api");
        api[1] == Some(proxy_bytes) && api[3] == api[4] && api[3] >= Some(1)
    });
    assert_eq!(
        api[..3],
        [Some(proxy_requests as u64), Some(proxy_bytes), Some(0)]
    );
    assert!(
        api[3] <= Some(2),
        "at most one idle connection per worker: {api:?}"
    );
    let json = control(&server, "status json");
    assert!(
        json.contains(&format!(
            "{{\"prefix\":\"/files\",\"kind\":\"static\",\"target\":\"{}\",",
            root.root().display()
        )),
        "{json}"
    );
    assert!(
        json.contains(&format!(
            "{{\"prefix\":\"/api\",\"kind\":\"proxy\",\"target\":\"{url}\","
        )),
        "{json}"
    );

    let m = scrape(&server);
    let files = [("prefix", "/files"), ("kind", "static")];
    let proxy = [("prefix", "/api"), ("kind", "proxy")];
    assert_eq!(
        sample(&m, "ringmaster_mount_requests_total", &files),
        file_requests as f64
    );
    assert_eq!(
        sample(&m, "ringmaster_mount_bytes_total", &files),
        file_bytes as f64
    );
    assert_eq!(
        sample(&m, "ringmaster_mount_requests_total", &proxy),
        proxy_requests as f64
    );
    assert_eq!(
        sample(&m, "ringmaster_mount_bytes_total", &proxy),
        proxy_bytes as f64
    );
    assert_eq!(
        sample(&m, "ringmaster_mount_upstream_errors_total", &proxy),
        0.0
    );
    let idle = [("prefix", "/api"), ("state", "idle")];
    let open = [("prefix", "/api"), ("state", "open")];
    let conns = "ringmaster_mount_upstream_connections";
    assert_eq!(sample(&m, conns, &open), api[3].unwrap() as f64);
    assert_eq!(sample(&m, conns, &idle), api[4].unwrap() as f64);
    assert!(
        !m.samples
            .iter()
            .any(|s| s.metric.contains("upstream") && s.labels.get("kind") == Some("static")),
        "no upstream figures for a static mount"
    );

    let text = control(&server, "status");
    assert!(text.contains("upstream_errors"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("/files ") && l.contains(&file_requests.to_string())),
        "{text}"
    );

    // A reload replaces every worker: the totals neither drop nor double.
    assert!(control(&server, "reload").starts_with("ok"), "reload");
    let after = figures(&server, "/files");
    assert_eq!(after[..2], [Some(file_requests as u64), Some(file_bytes)]);
    assert_eq!(figures(&server, "/api")[..3], api[..3]);
    request(server.addr, "GET", "/files/small.txt");
    wait_for_requests(&server, "/files", file_requests as u64 + 1);
}

#[test]
fn a_down_upstream_counts_as_upstream_errors() {
    let (down, up) = (down_upstream(), upstream());
    let server = Server::start(&[
        "--workers",
        "1",
        "--metrics",
        "127.0.0.1:0",
        "--proxy",
        &format!("/down={down}"),
        "--proxy",
        &format!("/half={down},{up}"),
    ]);
    let tries = 3;
    for _ in 0..tries {
        assert_eq!(request(server.addr, "GET", "/down/x").0, 502);
    }
    // The first request meets the down upstream, which is left out afterwards; the next
    // upstream answers each of them.
    for _ in 0..tries {
        assert_eq!(request(server.addr, "GET", "/half/x").0, 200);
    }
    wait_for_requests(&server, "/down", tries);
    wait_for_requests(&server, "/half", tries);
    let down_figures = figures(&server, "/down");
    assert_eq!(
        down_figures[2..],
        [Some(tries), Some(0), Some(0)],
        "every 502 is an upstream error; no connection is open"
    );
    assert_eq!(figures(&server, "/half")[2], Some(1), "one failed connect");
    let m = scrape(&server);
    let errors = "ringmaster_mount_upstream_errors_total";
    assert_eq!(sample(&m, errors, &[("prefix", "/down")]), tries as f64);
    assert_eq!(sample(&m, errors, &[("prefix", "/half")]), 1.0);
}

/// `ringmaster ARGS` with `n` static mounts of `root`: `/m0`, `/m1`, …
fn with_mounts(root: &TempDir, n: usize) -> Vec<String> {
    let mut args: Vec<String> = ["--workers", "1", "--listen", "127.0.0.1:0"]
        .map(String::from)
        .to_vec();
    for i in 0..n {
        args.extend(["--static".to_string(), root.mount_arg(&format!("/m{i}"))]);
    }
    args
}

#[test]
fn mounts_max_mounts_are_served_and_one_more_is_refused() {
    let root = files("bound");
    let args = with_mounts(&root, MOUNTS_MAX);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&args);
    let last = format!("/m{}", MOUNTS_MAX - 1);
    assert_eq!(
        request(server.addr, "GET", &format!("{last}/small.txt")).0,
        200
    );
    wait_for_requests(&server, &last, 1);
    let json = control(&server, "status json");
    assert_eq!(json.matches("\"kind\":\"static\"").count(), MOUNTS_MAX);
    drop(server);

    let args = with_mounts(&root, MOUNTS_MAX + 1);
    let out = Command::new(env!("CARGO_BIN_EXE_ringmaster"))
        .args(&args)
        .output()
        .expect("run ringmaster");
    assert_eq!(out.status.code(), Some(2));
    let err = common::one_error_line(&out);
    assert!(
        err.contains(&format!("{} mounts", MOUNTS_MAX + 1))
            && err.contains(&format!("at most {MOUNTS_MAX}")),
        "{err}"
    );
}
