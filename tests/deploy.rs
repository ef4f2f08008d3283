//! Deploying a new build with `ringmaster reload`: the reload runs the binary now at the
//! path the server was started from, and a build that cannot start never takes over. The
//! builds are copies of `examples/deploy.rs` with the version mark in the binary patched
//! (`v1` → `v2`, `v3` exits at start-up, `v4`'s handler fails to start), each put at the
//! path the way a deploy does it: written beside it, then renamed over it.

mod common;

use common::load::{Load, Style};
use common::{alive, control, example, exchange, open_fds, wait_until, Server, TempDir};
use std::path::{Path, PathBuf};
use std::process::Command;

const MARK: &[u8] = b"RINGMASTER_DEPLOY_MARK==";

/// A directory for one test's binary, removed when dropped.
fn test_dir(name: &str) -> TempDir {
    TempDir::new("deploy", name)
}

/// The app's path in `dir`.
fn app(dir: &TempDir) -> PathBuf {
    dir.path("app")
}

/// Puts the build marked `version` at the app's path: written beside, renamed over.
fn deploy(dir: &TempDir, version: &str) {
    let mut bytes = std::fs::read(example("deploy")).unwrap();
    let at = bytes
        .windows(MARK.len())
        .position(|w| w == MARK)
        .expect("the mark in the binary")
        + MARK.len();
    bytes[at..at + 2].copy_from_slice(version.as_bytes());
    dir.replace("app", bytes, 0o755);
}

fn get(server: &Server) -> String {
    let (res, _) = exchange(server.addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(res.status, 200);
    String::from_utf8(res.body).unwrap()
}

fn start(app: &Path) -> Server {
    Server::start_command(Command::new(app).args(["--listen", "127.0.0.1:0"]), 2)
}

#[test]
fn a_reload_runs_the_new_build_under_load_without_a_failed_request() {
    let dir = test_dir("upgrade");
    deploy(&dir, "v1");
    let server = start(&app(&dir));
    assert_eq!(get(&server), "v1");
    // The master holds its generation's binary (for respawns): its own at first.
    let fds_before = open_fds(server.pid());
    assert!(
        fds_before.iter().any(|fd| fd.contains("/app")),
        "the binary held: {fds_before:?}"
    );
    let old_workers = server.worker_pids();
    const EITHER: &[&str] = &["v1", "v2"];
    let keep = Load::start_expecting(server.addr, 4, Style::KeepAlive, Some(EITHER));
    let fresh = Load::start_expecting(server.addr, 2, Style::OnePerConnection, Some(EITHER));
    wait_until("load flowing", || {
        keep.tally().ok > 100 && fresh.tally().ok > 20
    });
    deploy(&dir, "v2");
    let answer = control(&server, "reload");
    assert!(answer.starts_with("ok: reloaded 2 workers"), "{answer}");
    // Every new connection now meets the new build.
    for _ in 0..20 {
        assert_eq!(get(&server), "v2");
    }
    let (ok_before, ok_fresh) = (keep.tally().ok, fresh.tally().ok);
    wait_until("load on the new build", || {
        keep.tally().ok > ok_before + 100 && fresh.tally().ok > ok_fresh + 20
    });
    let (keep, fresh) = (keep.stop(), fresh.stop());
    for tally in [keep, fresh] {
        assert_eq!((tally.failed, tally.refused), (0, 0), "{tally:?}");
    }
    wait_until("the old workers gone", || {
        old_workers.iter().all(|&pid| !alive(pid))
    });
    // The generations are visible: the master's, each worker's, the binary each runs.
    let json = control(&server, "status json");
    assert!(json.contains("\"generation\":2,"), "{json}");
    assert!(!json.contains("\"generation\":1,"), "{json}");
    assert!(json.contains("\"reloads_completed\":1"), "{json}");
    assert!(json.contains("\"last_reload\":{\"at\":"), "{json}");
    assert!(json.contains("\"outcome\":\"ok\""), "{json}");
    let text = control(&server, "status");
    let app = app(&dir).display().to_string();
    assert!(
        text.contains(&format!("generation 2: {app} (inode ")),
        "{text}"
    );
    let new_workers = server.worker_pids();
    assert_eq!(new_workers.len(), 2);
    assert!(new_workers.iter().all(|p| !old_workers.contains(p)));
    assert_eq!(
        open_fds(server.pid()).len(),
        fds_before.len(),
        "the master's descriptors"
    );
    // A worker of the new generation that dies is respawned from the new build, even with
    // another build at the path since.
    deploy(&dir, "v3");
    // SAFETY (test): a signal to a worker of the server this test started.
    assert_eq!(
        unsafe { libc::kill(new_workers[0] as i32, libc::SIGKILL) },
        0
    );
    wait_until("the worker respawned", || {
        let now = server.worker_pids();
        now.len() == 2 && !now.contains(&new_workers[0])
    });
    for _ in 0..20 {
        assert_eq!(get(&server), "v2");
    }
}

#[test]
fn a_build_that_cannot_start_never_takes_over() {
    let dir = test_dir("bad");
    deploy(&dir, "v2");
    let server = start(&app(&dir));
    const ONLY: &[&str] = &["v2"];
    for (bad, cause) in [
        ("v3", "exited before it was ready (exit code 1)"),
        (
            "v4",
            "exited before it was ready (exit code 78: cannot start: the handler's start \
             failed: v4 cannot start",
        ),
    ] {
        let keep = Load::start_expecting(server.addr, 2, Style::KeepAlive, Some(ONLY));
        let fresh = Load::start_expecting(server.addr, 2, Style::OnePerConnection, Some(ONLY));
        wait_until("load flowing", || {
            keep.tally().ok > 50 && fresh.tally().ok > 10
        });
        let mut workers = server.worker_pids();
        workers.sort_unstable();
        deploy(&dir, bad);
        let answer = control(&server, "reload");
        assert!(
            answer.starts_with("error: reload failed"),
            "{bad}: {answer}"
        );
        assert!(answer.contains(cause), "{bad}: {answer}");
        // The ringmaster CLI exits non-zero on it.
        let out = Command::new(env!("CARGO_BIN_EXE_ringmaster"))
            .args(["reload", "--listen", &server.addr.to_string()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}: the CLI's reload succeeded");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("reload failed")
                || String::from_utf8_lossy(&out.stderr).contains("reload failed")
        );
        for _ in 0..10 {
            assert_eq!(get(&server), "v2");
        }
        let json = control(&server, "status json");
        assert!(json.contains("\"outcome\":\"failed\""), "{bad}: {json}");
        assert!(json.contains(cause), "{bad}: {json}");
        let mut now = server.worker_pids();
        now.sort_unstable();
        assert_eq!(now, workers, "{bad}: the old workers serve on");
        let (keep, fresh) = (keep.stop(), fresh.stop());
        for tally in [keep, fresh] {
            assert_eq!((tally.failed, tally.refused), (0, 0), "{bad}: {tally:?}");
        }
        deploy(&dir, "v2");
    }
}

/// The notification socket a test plays systemd with: each datagram with its sender's pid
/// (`SO_PASSCRED`), as systemd checks it against `MAINPID` under `NotifyAccess=main`.
struct Notify {
    sock: std::os::unix::net::UnixDatagram,
    /// Everything received so far: (sender pid, text).
    seen: Vec<(i32, String)>,
}

impl Notify {
    fn bind(path: &Path) -> Notify {
        let sock = std::os::unix::net::UnixDatagram::bind(path).unwrap();
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::PassCred, &true).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .unwrap();
        Notify {
            sock,
            seen: Vec::new(),
        }
    }

    /// Reads notifications until one contains `needle`; returns it with its sender's pid.
    fn until(&mut self, needle: &str) -> (i32, String) {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixCredentials};
        use std::os::fd::AsRawFd;
        let deadline = std::time::Instant::now() + common::WAIT_MAX;
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "no notification with {needle:?}; seen {:?}",
                self.seen
            );
            let mut buf = [0u8; 4096];
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!(UnixCredentials);
            let fd = self.sock.as_raw_fd();
            let Ok(msg) = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::empty()) else {
                continue;
            };
            let pid = msg
                .cmsgs()
                .unwrap()
                .find_map(|c| match c {
                    ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
                    _ => None,
                })
                .expect("the sender's credentials");
            let n = msg.bytes;
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            self.seen.push((pid, text.clone()));
            if text.contains(needle) {
                return (pid, text);
            }
        }
    }
}

/// The value of `key=` in the contrib service unit.
fn unit_line<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
}

/// Runs the unit's `ExecReload=` command line, as `systemctl reload` does.
fn exec_reload(line: &str) -> (bool, String) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let out = Command::new(words[0]).args(&words[1..]).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_systemd_unit_deploys_a_new_build_keeping_its_main_pid_and_telling_systemd() {
    use std::os::unix::process::CommandExt;
    let dir = test_dir("systemd");
    deploy(&dir, "v1");
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd/ringmaster.service"),
    )
    .unwrap();
    assert_eq!(unit_line(&unit, "Type"), "notify");
    assert_eq!(unit_line(&unit, "NotifyAccess"), "main");
    // The unit's own command lines, with this test's binary, runtime directory and a free
    // metrics port in place of the installed ones.
    let runtime = dir.path("run");
    std::fs::create_dir_all(&runtime).unwrap();
    let local = |line: &str| {
        line.replace(
            "/usr/local/bin/ringmaster",
            &app(&dir).display().to_string(),
        )
        .replace("/run/ringmaster", &runtime.display().to_string())
        .replace("127.0.0.1:9100", "127.0.0.1:0")
    };
    let exec_start = local(unit_line(&unit, "ExecStart"));
    let reload = local(unit_line(&unit, "ExecReload"));
    let watchdog_usec = unit_line(&unit, "WatchdogSec").parse::<u64>().unwrap() * 1_000_000;

    // Socket activation as the socket unit does it: the listener at descriptor 3.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut notify = Notify::bind(&dir.path("notify.sock"));
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    let moved = match fd {
        3 => String::new(),
        _ => format!("exec 3<&{fd} {fd}<&-; "),
    };
    let script = format!("{moved}LISTEN_PID=$$ LISTEN_FDS=1 WATCHDOG_PID=$$ exec {exec_start}");
    let mut command = Command::new("bash");
    command
        .args(["-c", &script])
        .env("NOTIFY_SOCKET", dir.path("notify.sock"))
        .env("WATCHDOG_USEC", watchdog_usec.to_string());
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
    let mut server = Server::start_command(&mut command, 2);
    drop(listener);
    assert_eq!(server.addr, addr, "serves the socket systemd passed");
    let main_pid = server.pid() as i32;
    assert_eq!(notify.until("READY=1").0, main_pid);
    assert_eq!(get(&server), "v1");

    const EITHER: &[&str] = &["v1", "v2"];
    let keep = Load::start_expecting(addr, 4, Style::KeepAlive, Some(EITHER));
    let fresh = Load::start_expecting(addr, 2, Style::OnePerConnection, Some(EITHER));
    wait_until("load flowing", || {
        keep.tally().ok > 100 && fresh.tally().ok > 20
    });

    // `systemctl reload` after a new build was put at the path.
    deploy(&dir, "v2");
    let (ok, answer) = exec_reload(&reload);
    assert!(
        ok && answer.starts_with("ok: reloaded 2 workers"),
        "{answer}"
    );
    let (pid, reloading) = notify.until("RELOADING=1");
    assert_eq!(pid, main_pid);
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    assert_eq!(notify.until("READY=1").0, main_pid);
    for _ in 0..10 {
        assert_eq!(get(&server), "v2");
    }

    // A build whose workers cannot start: `systemctl reload` fails, saying why; the unit is
    // ready again with the build before.
    deploy(&dir, "v4");
    let (ok, answer) = exec_reload(&reload);
    assert!(!ok, "{answer}");
    assert!(
        answer.contains("reload failed") && answer.contains("exited before it was ready"),
        "{answer}"
    );
    assert_eq!(notify.until("RELOADING=1").0, main_pid);
    assert_eq!(notify.until("READY=1").0, main_pid);
    assert_eq!(get(&server), "v2");
    // A build that does not even run: ExecReload runs the binary at the path, so
    // `systemctl reload` fails at once, and the build before serves on untouched.
    deploy(&dir, "v3");
    let (ok, answer) = exec_reload(&reload);
    assert!(!ok && answer.contains("v3 exits at start-up"), "{answer}");
    assert_eq!(get(&server), "v2");

    let (keep, fresh) = (keep.stop(), fresh.stop());
    for tally in [keep, fresh] {
        assert_eq!((tally.failed, tally.refused), (0, 0), "{tally:?}");
    }
    // `systemctl stop` (KillMode=mixed: SIGTERM to the main process).
    server.signal(libc::SIGTERM);
    assert_eq!(notify.until("STOPPING=1").0, main_pid);
    assert_eq!(server.wait_exit().code(), Some(0));
    // Every notification came from the one main pid: it never changed, so no MAINPID=.
    assert!(
        notify
            .seen
            .iter()
            .all(|(pid, text)| *pid == main_pid && !text.contains("MAINPID=")),
        "{:?}",
        notify.seen
    );
}
