//! Changing the worker count of a running server: `ringmaster scale N`, `SIGTTIN` and
//! `SIGTTOU`, under load, bounded by the CPUs unless asked, and kept across reloads.

mod common;

use common::load::{Load, Style};
use common::{allowed_cpus, control, wait_until, Server};
use std::process::Command;

/// Runs `ringmaster scale ARGS` against `server`; returns its exit code and what it printed.
fn scale(server: &Server, args: &[&str]) -> (i32, String) {
    let listen = server.addr.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_ringmaster"))
        .arg("scale")
        .args(args)
        .args(["--listen", &listen])
        .output()
        .expect("run ringmaster scale");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// `status --json`'s workers: (slot, pid, state, requests) each.
fn workers(server: &Server) -> Vec<(u64, u64, String, u64)> {
    let json: serde_json::Value = serde_json::from_str(&control(server, "status json")).unwrap();
    json["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["slot"].as_u64().unwrap(),
                w["pid"].as_u64().unwrap(),
                w["state"].as_str().unwrap().to_string(),
                w["requests"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Waits until the server runs exactly `n` workers, each ready (the retired ones gone).
fn wait_workers(server: &Server, n: usize) {
    wait_until(&format!("{n} ready workers and no other"), || {
        let rows = workers(server);
        rows.len() == n && rows.iter().all(|r| r.2 == "ready") && server.worker_pids().len() == n
    });
}

#[test]
fn workers_are_added_and_removed_under_load_without_a_failed_request_and_kept_across_reloads() {
    // Two CPUs' worth is what every machine running the tests has; more are oversubscribed.
    let over = allowed_cpus().len() < 3;
    let server = Server::start(&["--workers", "1", "--drain-timeout", "5"]);
    let keep_alive = Load::start(server.addr, 4, Style::KeepAlive);
    let per_connection = Load::start(server.addr, 2, Style::OnePerConnection);
    wait_until("requests served", || keep_alive.tally().ok > 100);

    // Up to three: answered once the new workers are ready; they serve.
    let mut args = vec!["3"];
    if over {
        args.push("--oversubscribe");
    }
    let (code, out) = scale(&server, &args);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: scaled to 3 workers in "), "{out}");
    wait_workers(&server, 3);
    wait_until("each new worker serving", || {
        workers(&server)
            .iter()
            .filter(|w| w.0 >= 1)
            .all(|w| w.3 > 0)
    });

    // Down to one: the last two drain, and their sockets are adopted, so that connections
    // the kernel hands to them are still served (a hung one would fail the load's tally).
    let (code, out) = scale(&server, &["1"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "ok: scaled from 3 to 1 workers (2 draining)\n");
    wait_workers(&server, 1);
    server.wait_log("accepts on its socket");
    let served = per_connection.tally().ok;
    wait_until("new connections served by one worker", || {
        per_connection.tally().ok > served + 200
    });

    // SIGTTIN adds one (within the CPUs), SIGTTOU removes one, never below one.
    server.signal(libc::SIGTTIN);
    server.wait_log("scaling up from 1 to 2 workers");
    wait_workers(&server, 2);
    server.signal(libc::SIGTTOU);
    server.wait_log("scaling down from 2 to 1 workers");
    wait_workers(&server, 1);
    server.signal(libc::SIGTTOU);
    server.wait_log("SIGTTOU refused: at least one worker runs");
    let (code, out) = scale(&server, &["0"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("error: at least one worker runs"), "{out}");

    // The count holds across a reload: the reload replaces the slots there are.
    let (code, out) = scale(&server, &["2"]);
    assert_eq!(code, 0, "{out}");
    let answer = control(&server, "reload");
    assert!(answer.starts_with("ok: reloaded 2 workers"), "{answer}");
    wait_workers(&server, 2);

    let (keep_alive, per_connection) = (keep_alive.stop(), per_connection.stop());
    for (style, tally) in [
        ("keep-alive", keep_alive),
        ("per-connection", per_connection),
    ] {
        assert_eq!(tally.failed, 0, "{style}: {tally:?}");
        assert_eq!(tally.refused, 0, "{style}: {tally:?}");
    }
    // Nothing the removed workers served is lost from the totals (workers report every
    // second).
    let served = keep_alive.ok + per_connection.ok;
    wait_until("the totals to count every response", || {
        let json: serde_json::Value =
            serde_json::from_str(&control(&server, "status json")).unwrap();
        json["totals"]["requests"].as_u64().unwrap() >= served
    });
}

#[test]
fn a_scale_past_the_cpus_is_refused_unless_oversubscribed() {
    let cpu = allowed_cpus()[0].to_string();
    let server = Server::start(&["--workers", "1", "--cpu-affinity", &cpu]);
    let (code, out) = scale(&server, &["2"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("2 workers would be more than the 1 CPUs they may run on")
            && out.contains("--oversubscribe"),
        "{out}"
    );
    server.signal(libc::SIGTTIN);
    server.wait_log("SIGTTIN refused: 2 workers would be more than the 1 CPUs");
    assert_eq!(workers(&server).len(), 1);

    let (code, out) = scale(&server, &["2", "--oversubscribe"]);
    assert_eq!(code, 0, "{out}");
    wait_workers(&server, 2);
    let json: serde_json::Value = serde_json::from_str(&control(&server, "status json")).unwrap();
    for w in json["workers"].as_array().unwrap() {
        assert_eq!(w["cpu"].to_string(), cpu, "both on the one CPU listed: {w}");
    }
    // Fewer is always allowed; the same count is no change.
    let (code, out) = scale(&server, &["2"]);
    assert_eq!((code, out.as_str()), (0, "ok: already 2 workers\n"));
    let (code, out) = scale(&server, &["1"]);
    assert_eq!(code, 0, "{out}");
    wait_workers(&server, 1);
}

#[test]
fn scale_in_shared_mode_adds_and_removes_workers_on_the_one_socket() {
    let server = Server::start(&["--workers", "1", "--listen-mode", "shared"]);
    let load = Load::start(server.addr, 2, Style::OnePerConnection);
    let (code, out) = scale(&server, &["2", "--oversubscribe"]);
    assert_eq!(code, 0, "{out}");
    wait_workers(&server, 2);
    let (code, out) = scale(&server, &["1"]);
    assert_eq!(code, 0, "{out}");
    wait_workers(&server, 1);
    let tally = load.stop();
    assert!(
        tally.ok > 0 && tally.failed == 0 && tally.refused == 0,
        "{tally:?}"
    );
}
