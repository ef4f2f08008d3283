//! The supervisor: IPC both ways, crash-loop guard, graceful shutdown, zero-downtime
//! reload under load, worker kills under load. Runs the testbed example (a handler whose
//! behaviour each request chooses) as a real process.

mod common;

use common::load::{Load, Style};
use common::{
    alive, closed_by_server, connect, control, exchange, open_fds, read_response, testbed,
    wait_until, Server, WAIT_MAX,
};
use std::io::{BufReader, Write};
use std::time::{Duration, Instant};

fn get(server: &Server, path: &str) -> (u16, String) {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    let (res, _) = exchange(server.addr, raw.as_bytes());
    (res.status, String::from_utf8_lossy(&res.body).to_string())
}

/// The milliseconds of a log line's timestamp, since midnight.
fn stamp_ms(line: &str) -> u64 {
    let time = &line[11..23]; // HH:MM:SS.mmm
    let h: u64 = time[0..2].parse().unwrap();
    let m: u64 = time[3..5].parse().unwrap();
    let s: u64 = time[6..8].parse().unwrap();
    let ms: u64 = time[9..12].parse().unwrap();
    ((h * 60 + m) * 60 + s) * 1000 + ms
}

#[test]
fn user_messages_travel_both_ways() {
    let server = Server::start_command(&mut testbed(&["--workers", "1"]), 1);
    server.wait_log("testbed: online slot=0");
    assert_eq!(get(&server, "/send?m=hello"), (200, "sent".to_string()));
    server.wait_log("testbed: message slot=0 text=hello");
    // The master's hook answered; the worker's on_message stored it.
    wait_until("the echo to reach the worker", || {
        get(&server, "/inbox").1.ends_with(":echo:hello")
    });
}

#[test]
fn broadcast_reaches_every_worker() {
    let server = Server::start_command(&mut testbed(&["--workers", "2"]), 2);
    assert_eq!(get(&server, "/send?m=broadcast:news").0, 200);
    assert!(server
        .wait_log("testbed: broadcast reached=")
        .ends_with("reached=2"));
    // Connections spread over both workers; each one's inbox holds the news.
    let mut seen = std::collections::HashSet::new();
    wait_until("both workers to show the broadcast", || {
        let (_, body) = get(&server, "/inbox");
        let (pid, text) = body.split_once(':').unwrap();
        if text == "news" {
            seen.insert(pid.to_string());
        }
        seen.len() == 2
    });
}

#[test]
fn hooks_see_fork_online_and_exit() {
    let server = Server::start_command(&mut testbed(&["--workers", "1"]), 1);
    let fork = server.wait_log("testbed: fork slot=0");
    let pid: u32 = fork.rsplit("pid=").next().unwrap().parse().unwrap();
    server.wait_log(&format!("testbed: online slot=0 pid={pid} ready=1"));
    // SAFETY (test): SIGKILL to our server's worker.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    server.wait_log(&format!("testbed: exit slot=0 pid={pid} Signal(9)"));
    server.wait_log_count("testbed: online slot=0", 2);
}

#[test]
fn a_worker_that_keeps_failing_to_start_is_backed_off_then_errored() {
    let choice = std::env::temp_dir().join(format!("testbed-start-{}-backoff", std::process::id()));
    std::fs::write(&choice, "").unwrap();
    let mut command = testbed(&["--workers", "1", "--respawn-failures-max", "4"]);
    command.env("TESTBED_START_FILE", &choice);
    let mut server = Server::start_command(&mut command, 1);
    // From now on every start fails: kill the healthy worker and watch the slot give up.
    std::fs::write(&choice, "exit").unwrap();
    let pid = server.worker_pids()[0];
    // SAFETY (test): SIGKILL to our server's worker.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    server.wait_log("ERRORED");
    std::fs::remove_file(&choice).unwrap();
    let log = server.log();
    let delays: Vec<&str> = log
        .iter()
        .filter_map(|l| l.split("respawning on cpu ").nth(1))
        .filter_map(|r| r.split(" in ").nth(1))
        .collect();
    // The first death was the healthy worker's (respawned at once, and not a failure to
    // start); the backoff goes on doubling over the three failures to start that follow,
    // and the fourth errors the slot.
    assert_eq!(
        delays,
        ["0ms", "100ms", "200ms", "400ms"],
        "backoff doubles"
    );
    // The respawn after the 400 ms delay really waited: exit line to the next start line.
    let exits: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("worker 0 exited"))
        .collect();
    let starts: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("worker 0 started"))
        .collect();
    let waited = stamp_ms(starts[4]) - stamp_ms(exits[3]);
    assert!(waited >= 400, "respawned after {waited} ms");
    assert!(log
        .iter()
        .any(|l| l.contains("ERRORED: 4 failures to start within 60s")));
    // Its only slot errored: the master exits non-zero for a service manager to act.
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(1));
    assert!(server
        .log()
        .iter()
        .any(|l| l.contains("every worker slot has errored")));
}

#[test]
fn a_worker_that_exits_at_start_errors_its_slot_while_the_others_serve() {
    let mut command = testbed(&["--workers", "2", "--respawn-failures-max", "3"]);
    command.env("TESTBED_START", "exit:1");
    let server = Server::start_command(&mut command, 1);
    server.wait_log("worker 1 ERRORED: 3 failures");
    let status = control(&server, "status");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("1 ") && l.contains("errored")),
        "{status}"
    );
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("0 ") && l.contains("ready")),
        "{status}"
    );
    assert!(
        alive(server.pid()),
        "the master keeps serving with the healthy slot"
    );
    // The errored slot's SO_REUSEPORT socket still gets its share of new connections; the
    // healthy worker adopted it, so none of them waits.
    server.wait_log("slot 1 has no ready worker");
    for _ in 0..40 {
        assert_eq!(get(&server, "/").0, 200);
    }
}

#[test]
fn a_configuration_error_at_start_is_not_respawned() {
    let mut command = testbed(&["--workers", "1"]);
    command.env("TESTBED_START", "config");
    let mut server = Server::spawn_command(&mut command);
    server.wait_log("not respawning it");
    // A configuration error, like every other one: exit code 2.
    assert_eq!(server.wait_exit().code(), Some(2));
    let log = server.log();
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("worker 0 started"))
            .count(),
        1
    );
    assert!(log
        .iter()
        .any(|l| l.contains("handler's start failed: TESTBED_START=config")));
}

#[test]
fn graceful_shutdown_answers_slow_requests_in_flight_then_exits() {
    let mut server =
        Server::start_command(&mut testbed(&["--workers", "1", "--drain-timeout", "5"]), 1);
    // Three slow requests queue up on the one worker (each blocks it for 300 ms), and one
    // request's body is still arriving when the shutdown starts.
    let mut slow: Vec<_> = (0..3)
        .map(|_| {
            let mut s = connect(server.addr);
            s.write_all(b"GET /slow?ms=300 HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    let mut partial = connect(server.addr);
    partial
        .write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhalf")
        .unwrap();
    server.wait_log("slow request started");
    let started = Instant::now();
    server.signal(libc::SIGTERM);
    // The worker learns of the shutdown once its slow handlers let it run again.
    server.wait_log("shutdown requested by the master: draining");
    partial.write_all(b"-body").unwrap();
    partial.write_all(b"!").unwrap();
    for s in slow.drain(..) {
        // Answered (they were received before the shutdown), then closed by the server.
        let mut reader = BufReader::new(s);
        let res = read_response(&mut reader, false);
        assert_eq!((res.status, res.body.as_slice()), (200, &b"slow done"[..]));
        assert!(closed_by_server(&mut reader));
    }
    // The request completed during the drain is answered, marked as the last one.
    let mut reader = BufReader::new(partial);
    let res = read_response(&mut reader, false);
    assert_eq!(res.status, 200);
    assert_eq!(res.header("Connection"), Some("close"));
    assert!(closed_by_server(&mut reader));
    assert_eq!(server.wait_exit().code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "exit within the drain timeout"
    );
}

#[test]
fn the_drain_timeout_kills_what_does_not_finish_and_the_master_still_exits_zero() {
    let mut server = Server::start_command(
        &mut testbed(&["--workers", "1", "--drain-timeout", "0.5"]),
        1,
    );
    // A request head that never completes keeps its connection busy forever.
    let mut stuck = connect(server.addr);
    stuck.write_all(b"GET / HTTP/1.1\r\nHost").unwrap();
    let (res, _) = exchange(server.addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(res.status, 200);
    let started = Instant::now();
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(server
        .log()
        .iter()
        .any(|l| l.contains("drain timeout: killing 1 workers")));
}

#[test]
fn a_second_signal_stops_at_once() {
    let mut server = Server::start_command(
        &mut testbed(&["--workers", "1", "--drain-timeout", "30"]),
        1,
    );
    let mut stuck = connect(server.addr);
    stuck.write_all(b"GET / HTTP/1.1\r\nHost").unwrap();
    server.signal(libc::SIGTERM);
    server.wait_log("shutting down");
    let started = Instant::now();
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit().code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(server
        .log()
        .iter()
        .any(|l| l.contains("again: killing the workers now")));
}

/// 20 reloads through the control socket under `style` load: no request fails, every
/// worker is replaced, the master stays the same process with the same descriptors.
fn reload_under_load(style: Style, clients: usize) {
    let server = Server::start_command(&mut testbed(&["--workers", "2"]), 2);
    let before = server.worker_pids();
    let fds = open_fds(server.pid());
    let load = Load::start(server.addr, clients, style);
    wait_until("the load to run", || load.tally().ok > 100);
    for i in 0..20 {
        let answer = control(&server, "reload");
        assert!(
            answer.starts_with("ok: reloaded 2 workers"),
            "reload {i}: {answer}"
        );
    }
    let tally = load.stop();
    eprintln!("{style:?}: {tally:?} during 20 reloads");
    assert_eq!(tally.failed + tally.refused, 0, "{tally:?}");
    assert!(tally.ok > 1000, "{tally:?}");
    wait_until("retired workers to be reaped", || {
        server.worker_pids().len() == 2
    });
    let after = server.worker_pids();
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "{before:?} -> {after:?}"
    );
    // A reaped worker's pipes close just after waitpid removes it from the children list,
    // so the count is awaited (bounded by WAIT_MAX), not sampled once.
    let deadline = Instant::now() + WAIT_MAX;
    while open_fds(server.pid()).len() != fds.len() {
        assert!(
            Instant::now() < deadline,
            "the master leaks descriptors: {fds:?} -> {:?}",
            open_fds(server.pid())
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn twenty_reloads_under_keep_alive_load_fail_no_request() {
    reload_under_load(Style::KeepAlive, 16);
}

#[test]
fn twenty_reloads_under_one_request_per_connection_load_fail_no_request() {
    reload_under_load(Style::OnePerConnection, 8);
}

#[test]
fn sighup_reloads_too() {
    let server = Server::start_command(&mut testbed(&["--workers", "2"]), 2);
    let before = server.worker_pids();
    server.signal(libc::SIGHUP);
    server.wait_log("reload complete: reloaded 2 workers");
    wait_until("old workers to exit", || {
        let now = server.worker_pids();
        now.len() == 2 && now.iter().all(|p| !before.contains(p))
    });
}

/// A reload whose new worker misbehaves at start (`how`, written to the testbed's start
/// file after the first start): the reload fails and the old worker keeps serving.
fn failed_reload_keeps_the_old_worker(how: &str, reason: &str) {
    let file = std::env::temp_dir().join(format!("testbed-start-{}-{how}", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let mut command = testbed(&["--workers", "1", "--ready-timeout", "1"]);
    command.env("TESTBED_START_FILE", &file);
    let server = Server::start_command(&mut command, 1);
    let old = server.worker_pids();
    let (_, old_pid) = get(&server, "/pid");
    std::fs::write(&file, how).unwrap();
    let answer = control(&server, "reload");
    std::fs::remove_file(&file).unwrap();
    assert!(
        answer.starts_with("error: reload failed: ") && answer.contains(reason),
        "{answer}"
    );
    assert!(answer.contains("the old workers keep serving"), "{answer}");
    wait_until("the failed worker to be gone", || {
        server.worker_pids() == old
    });
    assert_eq!(get(&server, "/pid"), (200, old_pid));
    // With the cause gone, the next reload succeeds.
    assert!(control(&server, "reload").starts_with("ok: reloaded 1 workers"));
}

#[test]
fn a_new_worker_that_never_gets_ready_fails_the_reload() {
    failed_reload_keeps_the_old_worker("hang", "was not ready within 1s");
}

#[test]
fn a_new_worker_that_crashes_at_start_fails_the_reload() {
    failed_reload_keeps_the_old_worker("exit", "exited before it was ready (exit code 3)");
}

#[test]
fn killing_a_worker_under_load_refuses_no_connection() {
    let server = Server::start_command(&mut testbed(&["--workers", "2"]), 2);
    let load = Load::start(server.addr, 8, Style::OnePerConnection);
    wait_until("the load to run", || load.tally().ok > 100);
    for round in 1..=3 {
        let victim = server.worker_pids()[0];
        // SAFETY (test): SIGKILL to our server's worker.
        unsafe { libc::kill(victim as i32, libc::SIGKILL) };
        wait_until("the replacement", || {
            server.wait_log_count("ready (pid", 2 + round).len() >= 2 + round
        });
        let before = load.tally().ok;
        wait_until("requests after the replacement", || {
            load.tally().ok > before + 100
        });
    }
    let tally = load.stop();
    eprintln!("kill -9 x3 under load: {tally:?}");
    assert_eq!(tally.refused, 0, "{tally:?}");
}

#[test]
fn a_shutdown_does_not_hand_an_exited_workers_socket_to_a_draining_one() {
    let mut server = Server::start_command(&mut testbed(&["--workers", "2"]), 2);
    // A slow request keeps one worker draining well after the other has exited.
    let mut slow = connect(server.addr);
    slow.write_all(b"GET /slow?ms=800 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    server.wait_log("slow request started");
    server.signal(libc::SIGTERM);
    server.wait_log("drained; exiting");
    let mut reader = BufReader::new(slow);
    assert_eq!(read_response(&mut reader, false).status, 200);
    assert_eq!(server.wait_exit().code(), Some(0));
    let log = server.log();
    let first_exit = log.iter().position(|l| l.contains("exited (pid")).unwrap();
    let last_exit = log.iter().rposition(|l| l.contains("exited (pid")).unwrap();
    assert!(
        first_exit < last_exit,
        "the workers exited one after the other"
    );
    // (At start-up a slot whose worker is not ready yet is covered; not while shutting down.)
    let shutdown = log
        .iter()
        .position(|l| l.contains("shutting down"))
        .unwrap();
    assert!(
        !log[shutdown..]
            .iter()
            .any(|l| l.contains("has no ready worker")),
        "{}",
        log.join("\n")
    );
}
