//! Operating ringmaster: the status command, the control socket's life, Prometheus metrics,
//! health and readiness, systemd socket activation and notifications, recycling, the
//! stuck-worker watchdog, JSON logs and the access log.

mod common;

use common::load::{Load, Style};
use common::metrics::{metrics_addr, parse_metrics, sample, scrape};
use common::{alive, control_path, exchange, free_port, testbed, wait_until, Server, GET};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn ringmaster(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ringmaster"))
        .args(args)
        .output()
        .expect("run ringmaster")
}

#[test]
fn status_shows_the_real_workers() {
    let server = Server::start(&["--workers", "2"]);
    for _ in 0..20 {
        exchange(server.addr, GET);
    }
    let listen = server.addr.to_string();
    // Workers report every second: wait for the requests to show.
    let mut text = String::new();
    wait_until("the requests to be reported", || {
        let out = ringmaster(&["status", "--listen", &listen]);
        text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines()
            .last()
            .is_some_and(|l| l.contains(": 20 requests"))
    });
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    let mut pids: Vec<u32> = rows.iter().map(|r| r[1].parse().unwrap()).collect();
    pids.sort_unstable();
    let mut real = server.worker_pids();
    real.sort_unstable();
    assert_eq!(pids, real, "{text}");
    for row in &rows {
        let pid: u32 = row[1].parse().unwrap();
        let allowed = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(
            allowed.contains(&format!("Cpus_allowed_list:\t{}\n", row[2])),
            "{row:?}"
        );
        assert_eq!(row[3], "ready");
        assert_eq!(row[5], "0", "restarts");
        assert!(row[8].parse::<u64>().unwrap() > 0, "RSS in MiB");
    }
    assert!(
        text.contains(&format!("master pid {}", server.pid())),
        "{text}"
    );
    let json =
        String::from_utf8_lossy(&ringmaster(&["status", "--json", "--listen", &listen]).stdout)
            .to_string();
    assert!(
        json.starts_with(&format!("{{\"master_pid\":{}", server.pid())),
        "{json}"
    );
    assert_eq!(json.matches("\"state\":\"ready\"").count(), 2, "{json}");
}

#[test]
fn reload_and_stop_through_the_control_socket() {
    let mut server = Server::start(&["--workers", "2"]);
    let listen = server.addr.to_string();
    let before = server.worker_pids();
    let out = ringmaster(&["reload", "--listen", &listen]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: reloaded 2 workers"));
    wait_until("the old workers to go", || {
        let now = server.worker_pids();
        now.len() == 2 && now.iter().all(|p| !before.contains(p))
    });
    let out = ringmaster(&["stop", "--listen", &listen]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(server.wait_exit().code(), Some(0));
    assert!(!std::path::Path::new(&control_path(server.addr.port())).exists());
    let out = ringmaster(&["status", "--listen", &listen]);
    assert_eq!(out.status.code(), Some(2), "no master answers any more");
}

#[test]
fn a_stale_control_socket_is_replaced() {
    let port = free_port();
    let path = control_path(port);
    // A socket file nobody answers on: what a master killed with SIGKILL leaves.
    common::make_control_dir(port);
    drop(UnixListener::bind(&path).unwrap());
    assert!(std::path::Path::new(&path).exists());
    let listen = format!("127.0.0.1:{port}");
    let server = Server::start(&["--workers", "1", "--listen", &listen]);
    server.wait_log("removed stale control socket");
    let out = ringmaster(&["status", "--listen", &listen]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_second_master_on_the_same_port_is_refused() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let first = Server::start(&["--workers", "1", "--listen", &listen]);
    let out = ringmaster(&["--workers", "1", "--listen", &listen]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another ringmaster is already running"),
        "{err}"
    );
    assert!(alive(first.pid()));
    assert_eq!(exchange(first.addr, GET).0.status, 200);
}

#[test]
fn metrics_parse_and_count_the_traffic() {
    let server = Server::start(&["--workers", "2", "--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    let (status, body) = scrape(metrics, "/metrics");
    assert_eq!(status, 200);
    let first = parse_metrics(&body);
    let total = |s: &prometheus_parse::Scrape| sample(s, "ringmaster_requests_total", &[]);
    let before = total(&first);
    for _ in 0..50 {
        exchange(server.addr, GET);
    }
    exchange(server.addr, b"BAD\r\n\r\n");
    let mut after = first;
    wait_until("the requests to be counted", || {
        after = parse_metrics(&scrape(metrics, "/metrics").1);
        total(&after) >= before + 50.0
    });
    assert_eq!(total(&after), before + 50.0);
    let ok = sample(&after, "ringmaster_responses_total", &[("class", "2xx")]);
    assert!(ok >= 50.0, "2xx responses: {ok}");
    wait_until("the bad request to be counted", || {
        let s = parse_metrics(&scrape(metrics, "/metrics").1);
        sample(&s, "ringmaster_request_parse_errors_total", &[]) >= 1.0
    });
    for slot in ["0", "1"] {
        assert!(
            after
                .samples
                .iter()
                .any(|s| s.metric == "ringmaster_uring_enters_total"
                    && s.labels.get("slot") == Some(slot)),
            "per-worker labels for slot {slot}"
        );
        assert_eq!(
            sample(&after, "ringmaster_worker_ready", &[("slot", slot)]),
            1.0
        );
    }
    assert!(sample(&after, "ringmaster_uring_completions_total", &[]) > 0.0);
    assert!(sample(&after, "ringmaster_connections_accepted_total", &[]) >= 51.0);
    assert_eq!(scrape(metrics, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(scrape(metrics, "/readyz"), (200, "ready\n".to_string()));
    assert_eq!(scrape(metrics, "/nope").0, 404);
}

/// `GET path` on the metrics listener: its status, or what went wrong instead.
fn probe(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: m\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut all = Vec::new();
    s.read_to_end(&mut all)
        .map_err(|e| format!("receive: {e}"))?;
    let text = String::from_utf8_lossy(&all);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {text:?}"))
}

/// Holds connections to `addr` that each send a request head a byte every 10 ms and never
/// finish it, reconnecting whenever the server closes one, until `stop` is set.
fn trickle(
    addr: SocketAddr,
    count: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..count)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = TcpStream::connect(addr) else {
                        continue;
                    };
                    if s.write_all(b"GET /metrics HTTP/1.1\r\nX: ").is_err() {
                        continue;
                    }
                    // Load pacing, not synchronisation: a slow client is slow.
                    while !stop.load(Ordering::Relaxed) && s.write_all(b"a").is_ok() {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            })
        })
        .collect()
}

#[test]
fn probes_are_answered_under_a_flood_of_idle_and_slow_connections() {
    let server = Server::start(&["--workers", "1", "--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    // Far more idle connections than the listener serves at once (16), all queued before
    // the first probe, and more arriving before every probe, so it is full at each one.
    let mut idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(metrics).unwrap())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let tricklers = trickle(metrics, 4, Arc::clone(&stop));
    let mut failed = Vec::new();
    for round in 0..30 {
        for path in ["/healthz", "/readyz", "/metrics"] {
            idle.extend((0..2).map(|_| TcpStream::connect(metrics).unwrap()));
            match probe(metrics, path) {
                Ok(200) => {}
                other => failed.push(format!("round {round} {path}: {other:?}")),
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tricklers {
        t.join().unwrap();
    }
    assert!(
        failed.is_empty(),
        "{} of 90 probes failed: {failed:?}",
        failed.len()
    );
    // The control socket is served by the same loop: it answers too.
    assert!(common::control(&server, "status").contains("ready"));
}

#[test]
fn a_bare_metrics_port_listens_on_loopback_only() {
    let server = Server::start(&["--workers", "1", "--metrics", "0"]);
    let metrics = metrics_addr(&server);
    assert_eq!(metrics.ip(), std::net::Ipv4Addr::LOCALHOST, "{metrics}");
    assert_eq!(scrape(metrics, "/healthz").0, 200);
    // From another address of this host, nothing listens on that port.
    let other = nix::ifaddrs::getifaddrs()
        .unwrap()
        .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
        .find(|ip| !ip.is_loopback());
    match other {
        Some(ip) => {
            let err = TcpStream::connect((ip, metrics.port())).unwrap_err();
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::ConnectionRefused,
                "{ip}: {err}"
            );
        }
        None => eprintln!(
            "a_bare_metrics_port_listens_on_loopback_only: this host has no non-loopback \
             IPv4 address; checked the bound address only"
        ),
    }
}

#[test]
fn readyz_turns_503_as_soon_as_a_shutdown_starts() {
    let server = Server::start(&[
        "--workers",
        "1",
        "--metrics",
        "127.0.0.1:0",
        "--drain-timeout",
        "5",
    ]);
    let metrics = metrics_addr(&server);
    assert_eq!(scrape(metrics, "/readyz").0, 200);
    // A request that never completes keeps the worker draining.
    let mut stuck = common::connect(server.addr);
    stuck.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    server.signal(libc::SIGTERM);
    server.wait_log("shutting down");
    let (status, body) = scrape(metrics, "/readyz");
    assert_eq!((status, body.as_str()), (503, "not ready: shutting down\n"));
    assert_eq!(scrape(metrics, "/healthz").0, 200, "the master is alive");
}

#[test]
fn readyz_is_503_while_workers_start() {
    let mut command = testbed(&["--workers", "1", "--metrics", "127.0.0.1:0"]);
    command.env("TESTBED_START", "hang");
    let server = Server::spawn_command(&mut command);
    let metrics = metrics_addr(&server);
    let (status, body) = scrape(metrics, "/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("slot 0 starting"), "{body}");
}

/// Reads notifications until one contains `needle`; returns it.
fn notification(sock: &UnixDatagram, needle: &str) -> String {
    let deadline = Instant::now() + common::WAIT_MAX;
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "no notification with {needle:?}");
        if let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if text.contains(needle) {
                return text;
            }
        }
    }
}

#[test]
fn socket_activation_and_notifications() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = std::env::temp_dir().join(format!("rm-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    // bash moves the listener to fd 3 and becomes ringmaster (exec), so `$$` is its pid,
    // as systemd would set LISTEN_PID.
    let moved = if fd == 3 {
        String::new()
    } else {
        format!("exec 3<&{fd} {fd}<&-; ")
    };
    let script =
        format!("{moved}LISTEN_PID=$$ LISTEN_FDS=1 WATCHDOG_PID=$$ exec \"$0\" --workers 2");
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_ringmaster"))
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000");
    // SAFETY (test): between fork and exec, let the listener survive exec (clear its
    // close-on-exec flag); fcntl is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Server::start_command(&mut command, 2);
    assert_eq!(server.addr, addr, "serves the inherited socket");
    drop(listener);
    // The listener std made is blocking, as systemd passes one without NonBlocking=yes:
    // requests over a second (ten of the workers' 100 ms sweeps) must all be served, not
    // just the first.
    let started = std::time::Instant::now();
    let mut served = 0;
    while started.elapsed() < Duration::from_secs(1) || served < 50 {
        assert_eq!(exchange(addr, GET).0.status, 200, "request {served}");
        served += 1;
    }
    notification(&notify, "READY=1");
    let status = notification(&notify, "STATUS=");
    assert!(status.contains("2 of 2 workers ready"), "{status}");
    notification(&notify, "WATCHDOG=1");
    server.signal(libc::SIGHUP);
    let reloading = notification(&notify, "RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    notification(&notify, "READY=1");
    server.signal(libc::SIGTERM);
    notification(&notify, "STOPPING=1");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn recycling_by_request_count_fails_no_request() {
    let server = Server::start_command(
        &mut testbed(&[
            "--workers",
            "2",
            "--max-requests",
            "400",
            "--max-requests-jitter",
            "50",
        ]),
        2,
    );
    let load = Load::start(server.addr, 8, Style::KeepAlive);
    wait_until("three recycles", || {
        server
            .log()
            .iter()
            .filter(|l| l.contains("recycled"))
            .count()
            >= 3
    });
    let tally = load.stop();
    eprintln!("recycling: {tally:?}");
    assert_eq!(tally.failed + tally.refused, 0, "{tally:?}");
    let line = server.wait_log("recycling worker");
    assert!(line.contains("requests (limit "), "{line}");
}

#[test]
fn a_stuck_worker_is_aborted_and_replaced_within_the_timeout() {
    let server = Server::start_command(
        &mut testbed(&["--workers", "1", "--worker-timeout", "2"]),
        1,
    );
    let old = server.worker_pids()[0];
    let addr = server.addr;
    // A handler that never returns: the worker's loop stops turning.
    let started = Instant::now();
    let stuck = std::thread::spawn(move || {
        let _ = exchange_quietly(addr, b"GET /slow?ms=600000 HTTP/1.1\r\nHost: t\r\n\r\n");
    });
    server.wait_log("is stuck: no report for");
    server.wait_log_count("ready (pid", 2);
    let replaced = started.elapsed();
    eprintln!("stuck worker replaced {replaced:?} after its handler blocked");
    assert!(replaced < Duration::from_secs(6), "{replaced:?}");
    assert!(server
        .log()
        .iter()
        .any(|l| l.contains("exited") && l.contains("SIGABRT")));
    assert!(!server.worker_pids().contains(&old));
    assert_eq!(exchange(addr, GET).0.status, 200);
    stuck.join().unwrap();
}

/// Sends a request and reads until the connection ends, ignoring errors.
fn exchange_quietly(addr: SocketAddr, raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(raw)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

#[test]
fn json_logs_and_the_access_log() {
    let log = std::env::temp_dir().join(format!("rm-access-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let log_arg = log.to_string_lossy().to_string();
    let mut server = Server::spawn(&[
        "--workers",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--access-log",
        &log_arg,
    ]);
    let line = server.wait_log("listening on ");
    let parsed: serde_json::Value = serde_json::from_str(&line).expect("one JSON object");
    assert_eq!(parsed["fields"]["workers"], 1, "{line}");
    assert!(line.starts_with("{\"ts\":\""), "{line}");
    assert!(line.contains("\"role\":\"master\",\"slot\":null,\"msg\":\"listening on "));
    server.wait_log("\"role\":\"worker\",\"slot\":0");
    let addr: SocketAddr = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap();
    assert_eq!(exchange(addr, GET).0.status, 200);
    let mut head = common::connect(addr);
    head.write_all(b"HEAD /x?y=1 HTTP/1.0\r\n\r\n").unwrap();
    let res = common::read_response(&mut std::io::BufReader::new(head), true);
    assert_eq!(res.status, 200);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("127.0.0.1 - - ["), "{text}");
    assert!(lines[0].ends_with("] \"GET / HTTP/1.1\" 200 11"), "{text}");
    assert!(
        lines[1].ends_with("] \"HEAD /x?y=1 HTTP/1.0\" 200 0"),
        "{text}"
    );
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_worker_over_its_memory_bound_is_recycled() {
    // Every worker is past 1 MiB of resident memory: the first report recycles it.
    let server = Server::start_command(&mut testbed(&["--workers", "1", "--max-memory", "1"]), 1);
    let line = server.wait_log("recycling worker 0");
    assert!(line.contains("MiB resident (limit 1 MiB)"), "{line}");
    server.wait_log("worker 0 recycled");
    assert_eq!(exchange(server.addr, GET).0.status, 200);
}

/// The soft and hard `RLIMIT_NOFILE` of `pid`, from `/proc/PID/limits`.
fn descriptor_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

#[test]
fn the_soft_descriptor_limit_is_raised_and_a_low_hard_one_is_said() {
    // SAFETY (test): getrlimit fills a valid rlimit.
    let mut ours = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut ours) },
        0
    );
    // A hard limit below what 10,000 connections need, and a soft one far below it.
    let hard = ours.rlim_max.min(4096);
    let soft = hard.min(256);
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringmaster"));
    command.args(["--workers", "1", "--listen", "127.0.0.1:0"]);
    // SAFETY (test): setrlimit is async-signal-safe; it only lowers the child's limits.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Server::start_command(&mut command, 1);
    assert_eq!(descriptor_limits(server.pid()), (hard, hard));
    assert_eq!(descriptor_limits(server.worker_pids()[0]), (hard, hard));
    server.wait_log(&format!(
        "warning: the descriptor limit ({hard}) is below what --connections-max 10000 needs \
         (10064)"
    ));
    // The worker serves all the same (its direct table, if any, is capped at the limit).
    let (res, _) = exchange(server.addr, GET);
    assert_eq!(res.status, 200);
    assert!(!server
        .log()
        .iter()
        .any(|l| l.contains("direct descriptors off")));
}

/// Sends `parts` on one connection (each part a write), and returns the status of the
/// one response that comes back before the server closes.
fn refused_status(addr: SocketAddr, parts: &[&[u8]]) -> u16 {
    let mut s = common::connect(addr);
    for part in parts {
        s.write_all(part).unwrap();
    }
    let mut reader = std::io::BufReader::new(s);
    let res = common::read_response(&mut reader, false);
    assert_eq!(res.header("Connection"), Some("close"));
    res.status
}

#[test]
fn metrics_and_status_count_exactly_the_responses_that_went_out() {
    let server = Server::start(&[
        "--workers",
        "2",
        "--metrics",
        "127.0.0.1:0",
        "--request-head-timeout",
        "1",
        "--request-fields-bytes-max",
        "256",
        "--request-body-bytes-max",
        "100",
    ]);
    let metrics = metrics_addr(&server);
    let head = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    let body = b"zz\r\n";
    let mut sent = [0u64; 5];
    let mut count = |status: u16| sent[usize::from(status / 100) - 1] += 1;
    // A bad chunk size whole, then split at every byte of the body.
    let whole = [&head[..], body].concat();
    count(refused_status(server.addr, &[&whole]));
    for split in 0..=body.len() {
        let first = [&head[..], &body[..split]].concat();
        assert_eq!(
            refused_status(server.addr, &[&first, &body[split..]]),
            400,
            "split at {split}"
        );
        count(400);
    }
    // A head timeout (408), a body over the limit (413), a header section over it (431).
    let status = refused_status(server.addr, &[b"GET / HTTP/1.1\r\nHost: t\r\n"]);
    assert_eq!(status, 408);
    count(status);
    let big = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n";
    count(refused_status(server.addr, &[big]));
    let fields = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
        "v".repeat(300)
    );
    count(refused_status(server.addr, &[fields.as_bytes()]));
    // And answers that went out whole.
    for _ in 0..3 {
        assert_eq!(exchange(server.addr, GET).0.status, 200);
        count(200);
    }
    assert_eq!(sent, [0, 3, 0, 9, 0]);
    // Workers report every second: wait until both views count every response, then check
    // they count nothing more.
    let classes = ["1xx", "2xx", "3xx", "4xx", "5xx"];
    wait_until("/metrics to count every response by class", || {
        let scrape = parse_metrics(&scrape(metrics, "/metrics").1);
        classes.iter().zip(sent).all(|(class, n)| {
            sample(&scrape, "ringmaster_responses_total", &[("class", class)]) == n as f64
        })
    });
    let listen = server.addr.to_string();
    let json =
        String::from_utf8_lossy(&ringmaster(&["status", "--json", "--listen", &listen]).stdout)
            .to_string();
    let totals = json
        .split("\"totals\":{")
        .nth(1)
        .and_then(|t| t.split('}').next())
        .expect("totals in the JSON");
    for (class, n) in classes.iter().zip(sent) {
        let key = format!("\"responses_{class}\":{n},");
        assert!(
            totals.contains(&key) || totals.ends_with(&key[..key.len() - 1]),
            "{key} in {totals}"
        );
    }
}

/// The 2xx histogram of `ringmaster_request_duration_seconds` summed over slots:
/// (count, [(upper bound, cumulative count)]).
fn durations_2xx(scrape: &prometheus_parse::Scrape) -> (f64, Vec<(f64, f64)>) {
    let mut count = 0.0;
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for s in scrape.samples.iter().filter(|s| {
        s.metric == "ringmaster_request_duration_seconds" && s.labels.get("class") == Some("2xx")
    }) {
        if let prometheus_parse::Value::Histogram(hist) = &s.value {
            for (i, b) in hist.iter().enumerate() {
                match buckets.get_mut(i) {
                    Some(slot) => slot.1 += b.count,
                    None => buckets.push((b.less_than, b.count)),
                }
            }
            count += hist.last().map_or(0.0, |b| b.count);
        }
    }
    (count, buckets)
}

/// The async testbed with one worker and a metrics listener: the server and where
/// `/metrics` is.
fn metered_async_testbed() -> (Server, SocketAddr) {
    let mut command = testbed(&["--workers", "1", "--metrics", "127.0.0.1:0"]);
    command.env("TESTBED_ASYNC", "1");
    let server = Server::start_command(&mut command, 1);
    let metrics = metrics_addr(&server);
    (server, metrics)
}

#[test]
fn metrics_have_a_request_duration_histogram_that_survives_a_reload() {
    let (server, metrics) = metered_async_testbed();
    for _ in 0..3 {
        let raw = b"GET /wait?ms=30 HTTP/1.1\r\nHost: t\r\n\r\n";
        assert_eq!(exchange(server.addr, raw).0.status, 200);
    }
    let mut hist = (0.0, Vec::new());
    wait_until("three durations reported", || {
        hist = durations_2xx(&parse_metrics(&scrape(metrics, "/metrics").1));
        hist.0 >= 3.0
    });
    let (count, buckets) = hist;
    assert_eq!(count, 3.0);
    let at = |le: f64| buckets.iter().find(|b| b.0 == le).map(|b| b.1).unwrap();
    assert_eq!(at(0.025), 0.0, "each waited 30 ms: {buckets:?}");
    assert_eq!(at(0.05), 3.0, "{buckets:?}");
    // The worker is replaced: what it counted stays (the histogram only grows).
    let answer = common::control(&server, "reload");
    assert!(answer.starts_with("ok: reloaded"), "{answer}");
    assert_eq!(exchange(server.addr, GET).0.status, 200);
    wait_until("the new worker's answer counted on top", || {
        durations_2xx(&parse_metrics(&scrape(metrics, "/metrics").1)).0 >= 4.0
    });
}

#[test]
fn a_handlers_own_counter_is_exposed_and_survives_a_worker_replacement() {
    let server = Server::start_command(
        &mut testbed(&["--workers", "1", "--metrics", "127.0.0.1:0"]),
        1,
    );
    let metrics = metrics_addr(&server);
    let count = |n: usize| {
        for _ in 0..n {
            let raw = b"GET /count HTTP/1.1\r\nHost: t\r\n\r\n";
            assert_eq!(exchange(server.addr, raw).0.status, 200);
        }
    };
    let hits = || {
        let body = scrape(metrics, "/metrics").1;
        sample(
            &parse_metrics(&body),
            "testbed_hits_total",
            &[("slot", "0")],
        )
    };
    count(5);
    for v in ["0.2", "0.7", "3"] {
        let raw = format!("GET /count?v={v} HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(exchange(server.addr, raw.as_bytes()).0.status, 200);
    }
    let values = || {
        let body = scrape(metrics, "/metrics").1;
        let scrape = parse_metrics(&body);
        let hist = scrape
            .samples
            .iter()
            .find(|s| s.metric == "testbed_values")
            .map(|s| match &s.value {
                prometheus_parse::Value::Histogram(h) => {
                    h.iter().map(|b| (b.less_than, b.count)).collect::<Vec<_>>()
                }
                _ => Vec::new(),
            });
        hist.unwrap_or_default()
    };
    wait_until("eight hits reported", || hits() == 8.0);
    assert_eq!(values(), [(0.5, 1.0), (1.0, 2.0), (f64::INFINITY, 3.0)]);
    let body = scrape(metrics, "/metrics").1;
    assert!(
        body.contains("# HELP testbed_hits Requests to /count.\n# TYPE testbed_hits counter"),
        "{body}"
    );
    // The worker is replaced: its count is kept, and the new one's adds to it.
    let answer = common::control(&server, "reload");
    assert!(answer.starts_with("ok: reloaded"), "{answer}");
    let after_reload = hits();
    assert_eq!(after_reload, 8.0, "never down across a replacement");
    assert_eq!(values(), [(0.5, 1.0), (1.0, 2.0), (f64::INFINITY, 3.0)]);
    count(2);
    wait_until("ten hits", || hits() == 10.0);
}

#[test]
fn a_slots_counters_hold_while_its_old_worker_drains() {
    let (server, metrics) = metered_async_testbed();
    for _ in 0..4 {
        let raw = b"GET /count HTTP/1.1\r\nHost: t\r\n\r\n";
        assert_eq!(exchange(server.addr, raw).0.status, 200);
    }
    let counts = || {
        let scrape = parse_metrics(&scrape(metrics, "/metrics").1);
        let slot = [("slot", "0")];
        (
            sample(&scrape, "ringmaster_requests_total", &slot),
            sample(&scrape, "testbed_hits_total", &slot),
            durations_2xx(&scrape).0,
        )
    };
    wait_until("four requests reported", || counts() == (4.0, 4.0, 4.0));
    // An upload whose body is held back keeps the old worker draining through the reload,
    // until the test sends the rest.
    let mut upload = common::connect(server.addr);
    upload
        .write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n12345")
        .unwrap();
    wait_until("the upload in flight", || {
        let scrape = parse_metrics(&scrape(metrics, "/metrics").1);
        sample(&scrape, "ringmaster_handlers_in_flight", &[("slot", "0")]) == 1.0
    });
    std::thread::scope(|scope| {
        // `reload` answers once the old worker is gone: after the upload.
        let reload = scope.spawn(|| common::control(&server, "reload"));
        wait_until("the old worker draining beside its successor", || {
            common::control(&server, "status json").contains("\"state\":\"draining\"")
        });
        // What the draining worker counted stays in its slot's counters.
        let during = counts();
        assert!(
            during.0 >= 4.0 && during.1 >= 4.0 && during.2 >= 4.0,
            "counters went down while the old worker drained: {during:?}"
        );
        upload.write_all(b"67890").unwrap();
        let mut reader = std::io::BufReader::new(upload.try_clone().unwrap());
        let res = common::read_response(&mut reader, false);
        assert_eq!((res.status, res.body), (200, b"10".to_vec()));
        let answer = reload.join().unwrap();
        assert!(answer.starts_with("ok: reloaded"), "{answer}");
    });
    // The upload counted too, once, after the drain.
    wait_until("five requests after the drain", || {
        counts() == (5.0, 4.0, 5.0)
    });
}
