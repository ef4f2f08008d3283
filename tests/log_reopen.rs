//! Reopening the access log for logrotate: `SIGUSR1` and `ringmaster reopen` while clients
//! keep sending; every answered request has exactly one line, in the old file or the new
//! one, and a path that cannot be reopened keeps the old file.

mod common;

use common::{connect, control, control_path, read_response, wait_until, Server};
use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Requests on one connection before a client opens the next, so that both workers see
/// connections throughout.
const REQUESTS_PER_CONNECTION: u64 = 25;
/// Client threads sending at once.
const CLIENTS: usize = 4;
/// Responses to see before the rotation, and again after the reopen was acknowledged.
const RESPONSES_EACH_SIDE: u64 = 300;

/// A directory of its own for one test, empty.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rm-reopen-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Clients sending `GET /req/N` (N unique) on keep-alive connections until stopped; each
/// returns the N it got a `200` for.
struct Clients {
    stop: Arc<AtomicBool>,
    next: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Vec<u64>>>,
}

impl Clients {
    fn start(addr: SocketAddr) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(AtomicU64::new(0));
        let threads = (0..CLIENTS)
            .map(|_| {
                let (stop, next, answered) = (stop.clone(), next.clone(), answered.clone());
                std::thread::spawn(move || send_until(addr, &stop, &next, &answered))
            })
            .collect();
        Clients {
            stop,
            next,
            answered,
            threads,
        }
    }

    fn wait_answered(&self, count: u64) {
        wait_until(&format!("{count} responses"), || {
            self.answered.load(Ordering::Relaxed) >= count
        });
    }

    /// Every request number taken so far is below this.
    fn issued(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all: Vec<u64> = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().expect("client thread"))
            .collect();
        all.sort_unstable();
        all
    }
}

fn send_until(
    addr: SocketAddr,
    stop: &AtomicBool,
    next: &AtomicU64,
    answered: &AtomicU64,
) -> Vec<u64> {
    let mut got = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let stream = connect(addr);
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        for _ in 0..REQUESTS_PER_CONNECTION {
            let n = next.fetch_add(1, Ordering::SeqCst);
            write!(writer, "GET /req/{n} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            let res = read_response(&mut reader, false);
            assert_eq!(res.status, 200, "/req/{n}");
            got.push(n);
            answered.fetch_add(1, Ordering::Relaxed);
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
    }
    got
}

/// The request numbers an access log file has a line for, in file order.
fn logged(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            line.split("\"GET /req/")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("not a /req/N line in {}: {line:?}", path.display()))
        })
        .collect()
}

fn seen_any(sorted: &[u64], n: u64) -> bool {
    sorted.binary_search(&n).is_ok()
}

/// How a test asks for the reopen.
#[derive(Clone, Copy)]
enum Ask {
    Signal,
    Control,
}

/// Rotates `access.log` to `access.log.1` under load and asks for a reopen: no line lost
/// or duplicated, the new file gets every request sent after the workers switched, and the
/// old file gets nothing more once they did.
fn rotation_under_load(name: &str, ask: Ask) {
    let dir = scratch(name);
    let log = dir.join("access.log");
    let rotated = dir.join("access.log.1");
    let mut server = Server::start(&["--workers", "2", "--access-log", log.to_str().unwrap()]);
    let clients = Clients::start(server.addr);
    clients.wait_answered(RESPONSES_EACH_SIDE);

    std::fs::rename(&log, &rotated).unwrap();
    match ask {
        Ask::Signal => server.signal(libc::SIGUSR1),
        Ask::Control => {
            assert_eq!(
                control(&server, "reopen"),
                "ok: reopened the access log in 2 workers\n"
            );
        }
    }
    // Logged by the master once every worker answered that it switched: no worker writes
    // to the old file after this.
    server.wait_log("reopened in the master and 2 workers");
    let old_at_switch = logged(&rotated);
    let sent_after_switch = clients.issued();
    let answered_at_switch = clients.answered.load(Ordering::Relaxed);
    clients.wait_answered(answered_at_switch + RESPONSES_EACH_SIDE);
    let answered = clients.finish();

    // Stopping writes every buffered line before the workers exit.
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    let old = logged(&rotated);
    let new = logged(&log);
    assert!(
        old == old_at_switch,
        "the old file grew after the switch: {} lines then, {} at the end",
        old_at_switch.len(),
        old.len()
    );
    assert!(!new.is_empty(), "the new file got no line");
    assert!(
        new.iter().all(|n| !old.contains(n)),
        "a line is in both files"
    );
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for n in old.iter().chain(&new) {
        *seen.entry(*n).or_default() += 1;
    }
    let dup: Vec<_> = seen
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| n)
        .collect();
    assert!(dup.is_empty(), "duplicated lines for {dup:?}");
    let mut union: Vec<u64> = seen.into_keys().collect();
    union.sort_unstable();
    let missing: Vec<_> = answered.iter().filter(|n| !seen_any(&union, **n)).collect();
    assert!(
        missing.is_empty(),
        "{} responses without a line ({} in the old file, {} in the new), first {:?}",
        missing.len(),
        old.len(),
        new.len(),
        &missing[..missing.len().min(20)]
    );
    assert_eq!(union, answered, "every line is of a response, once");

    let late: Vec<_> = answered
        .iter()
        .filter(|n| **n >= sent_after_switch)
        .collect();
    assert!(!late.is_empty());
    assert!(
        late.iter().all(|n| new.contains(n)),
        "a request sent after the switch is not in the new file"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigusr1_reopens_the_access_log_without_losing_or_duplicating_a_line() {
    rotation_under_load("signal", Ask::Signal);
}

#[test]
fn ringmaster_reopen_reopens_the_access_log_without_losing_or_duplicating_a_line() {
    rotation_under_load("control", Ask::Control);
}

/// The `access_log_reopen_failures` counter in `status json`.
fn reopen_failures(server: &Server) -> u64 {
    let json = control(server, "status json");
    let key = "\"access_log_reopen_failures\":";
    json.split(key)
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {json}"))
}

/// `ringmaster reopen` run as a command against `server`: (exit code, stdout).
fn reopen_command(server: &Server) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringmaster"))
        .args(["reopen", "--control", &control_path(server.addr.port())])
        .output()
        .expect("run ringmaster reopen");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
    )
}

fn get(addr: SocketAddr, path: &str) {
    let stream = connect(addr);
    let mut writer = stream.try_clone().unwrap();
    write!(writer, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(
        read_response(&mut BufReader::new(stream), false).status,
        200
    );
}

#[test]
fn a_path_that_cannot_be_reopened_keeps_the_old_file_and_is_reported() {
    let dir = scratch("gone");
    let sub = dir.join("logs");
    std::fs::create_dir(&sub).unwrap();
    let log = sub.join("access.log");
    let server = Server::start(&["--workers", "2", "--access-log", log.to_str().unwrap()]);
    // The path's directory goes away (moved, so that the old file can still be read).
    let moved = dir.join("logs.old");
    std::fs::rename(&sub, &moved).unwrap();

    let (code, answer) = reopen_command(&server);
    assert_eq!(code, Some(1), "{answer}");
    assert!(
        answer.starts_with("error: cannot reopen the access log ")
            && answer.contains("No such file or directory")
            && answer.contains("still write to the old file")
            && answer.contains("reopen again"),
        "{answer}"
    );
    server.wait_log("cannot reopen the access log");
    assert_eq!(reopen_failures(&server), 1);
    // A signal fails the same way, and counts.
    server.signal(libc::SIGUSR1);
    wait_until("the second failure counted", || {
        reopen_failures(&server) == 2
    });

    // Logging goes on to the old file.
    get(server.addr, "/req/1");
    let old = moved.join("access.log");
    wait_until("the line in the old file", || logged(&old) == [1]);

    // Once the directory is back, a reopen succeeds and lines go to the new file.
    std::fs::create_dir(&sub).unwrap();
    let (code, answer) = reopen_command(&server);
    assert_eq!(
        (code, answer.as_str()),
        (Some(0), "ok: reopened the access log in 2 workers\n")
    );
    get(server.addr, "/req/2");
    wait_until("the line in the new file", || logged(&log) == [2]);
    assert_eq!(logged(&old), [1]);
    assert_eq!(reopen_failures(&server), 2);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reopen_without_an_access_log_is_a_harmless_ok() {
    let server = Server::start(&["--workers", "1"]);
    assert_eq!(
        control(&server, "reopen"),
        "ok: no access log is kept; nothing to reopen\n"
    );
    server.signal(libc::SIGUSR1);
    server.wait_log("reopen requested: no access log is kept");
    get(server.addr, "/");
}
