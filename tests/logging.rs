//! Logging through `tracing`: a program's own subscriber gets ringmaster's events with their
//! fields, `RUST_LOG` filters ringmaster's own lines, a JSON line parses and says its process,
//! and a handler's panic is one line.

mod common;

use common::{control, control_path, example, exchange, free_port, testbed, wait_until, Server};
use std::process::Command;

fn get(server: &Server, target: &str) -> u16 {
    let raw = format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n");
    exchange(server.addr, raw.as_bytes()).0.status
}

#[test]
fn a_programs_own_subscriber_gets_ringmasters_events_with_their_fields() {
    let mut command = Command::new(example("own_subscriber"));
    command.args(["--listen", "127.0.0.1:0", "--workers", "1"]);
    let server = Server::start_command(&mut command, 1);
    let pid = server.worker_pids()[0];
    let started = server.wait_log("worker 0 started");
    assert!(
        started.starts_with("SUB INFO ringmaster::master::fork ")
            && started.contains(" slot=0")
            && started.contains(&format!(" pid={pid}")),
        "{started}"
    );
    assert_eq!(get(&server, "/hello"), 200);
    // The handler's event, in the worker's span: which worker it came from.
    let handled = server.wait_log("handled");
    assert_eq!(
        handled,
        format!("SUB INFO own_subscriber worker{{slot=0 pid={pid}}}: handled path=\"/hello\"")
    );
    // And the worker's own events.
    let ready = server.wait_log("ready (io_uring");
    assert!(
        ready.starts_with(&format!(
            "SUB INFO ringmaster::worker worker{{slot=0 pid={pid}}}: "
        )),
        "{ready}"
    );
    // ringmaster installed no subscriber of its own: every line is the program's.
    let log = server.log();
    assert!(log.iter().all(|l| l.starts_with("SUB ")), "{log:?}");
}

#[test]
fn rust_log_sets_the_level_of_ringmasters_lines() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringmaster"));
    command
        .args(["--listen", &listen, "--workers", "1"])
        .env("RUST_LOG", "warn");
    let mut server = Server::spawn_command(&mut command);
    server.addr = listen.parse().unwrap();
    // No `listening on` line to wait for: the control socket answers once the master runs.
    let path = control_path(port);
    wait_until("the master's control socket", || {
        std::os::unix::net::UnixStream::connect(&path).is_ok()
    });
    wait_until("a ready worker", || {
        control(&server, "status").contains("ready")
    });
    // A warning still shows: a signal that means nothing to the master.
    server.signal(libc::SIGUSR2);
    server.wait_log("SIGUSR2 received");
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    let log = server.log();
    assert!(
        log.iter()
            .all(|l| l.contains(" WARN ") || l.contains(" ERROR ")),
        "only warnings and errors: {log:?}"
    );
}

#[test]
fn a_json_line_parses_and_says_its_process_and_the_events_fields() {
    let server = Server::start(&["--workers", "1", "--log-format", "json"]);
    let worker = server.worker_pids()[0];
    let parse = |line: &str| -> serde_json::Value {
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    let ready = parse(&server.wait_log("\"msg\":\"ready (io_uring"));
    assert_eq!(ready["role"], "worker");
    assert_eq!(ready["slot"], 0);
    assert_eq!(ready["pid"], worker);
    assert_eq!(ready["level"], "INFO");
    let started = parse(&server.wait_log("\"msg\":\"worker 0 started"));
    assert_eq!(started["role"], "master");
    assert_eq!(started["slot"], serde_json::Value::Null);
    assert_eq!(started["pid"], server.pid());
    assert_eq!(started["target"], "ringmaster::master::fork");
    assert_eq!(started["fields"]["slot"], 0);
    assert_eq!(started["fields"]["pid"], worker);
    for line in server.log() {
        parse(&line);
    }
}

#[test]
fn a_handlers_panic_is_one_line() {
    let server = Server::start_command(&mut testbed(&["--workers", "1"]), 1);
    assert_eq!(get(&server, "/panic"), 500);
    let line = server.wait_log("panicked at");
    assert!(line.contains(" WARN "), "{line}");
    assert!(
        line.contains("testbed: /panic requested\\n(and a second line)"),
        "the message's line break escaped: {line}"
    );
    assert!(
        !server
            .log()
            .iter()
            .any(|l| l.starts_with("(and a second line)")),
        "{:?}",
        server.log()
    );
}
