//! The control socket cannot be squatted: its default directory is private, both ends check
//! the other's uid, and a file another user left is never removed or talked to.
//!
//! Most tests need root (to run a second user's processes, or to give a file to another
//! uid) and `useradd`; without them they say so on stderr and skip. The other user's
//! processes are this test binary itself, re-run as that user with the ignored
//! `squatter_helper` test, and the `ringmaster` binary; both are staged in a directory that
//! user can read.

mod common;

use common::{free_port, one_error_line, Server, WAIT_MAX};
use nix::unistd::{geteuid, Gid, Uid, User};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The second user the squatting tests run processes as.
const SQUATTER_USER: &str = "ringmaster-test-squatter";
/// Set for the squatter helper: the socket path to listen on.
const SQUATTER_SOCKET_ENV: &str = "RM_TEST_SQUATTER_SOCKET";
/// Set for the squatter helper: a directory to try to create first (it may not be able to).
const SQUATTER_DIR_ENV: &str = "RM_TEST_SQUATTER_DIR";
const BIN: &str = env!("CARGO_BIN_EXE_ringmaster");

/// The squatter user's ids, created if need be; `None` (said on stderr) where this test
/// cannot run processes as another user.
fn squatter_user(test: &str) -> Option<(Uid, Gid)> {
    static CREATING: Mutex<()> = Mutex::new(());
    if !geteuid().is_root() {
        eprintln!("{test}: SKIPPED: needs root to run a second user's processes");
        return None;
    }
    let _one_at_a_time = CREATING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(user) = User::from_name(SQUATTER_USER).unwrap() {
        return Some((user.uid, user.gid));
    }
    let made = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ])
        .arg(SQUATTER_USER)
        .output();
    let made = match made {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("{test}: SKIPPED: no useradd to create the user {SQUATTER_USER}");
            return None;
        }
        Err(e) => panic!("running useradd: {e}"),
    };
    match User::from_name(SQUATTER_USER).unwrap() {
        Some(user) => Some((user.uid, user.gid)),
        None => panic!(
            "useradd {SQUATTER_USER} failed ({}): {}",
            made.status,
            String::from_utf8_lossy(&made.stderr)
        ),
    }
}

/// A directory every user can enter (mode 0755), removed on drop, holding copies of the
/// binaries another user runs and, in `open/`, a directory every user may write.
struct Stage {
    dir: PathBuf,
}

impl Stage {
    fn new(name: &str) -> Stage {
        let dir = std::env::temp_dir().join(format!("rm-ctl-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o755)).unwrap();
        let open = dir.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, PermissionsExt::from_mode(0o1777)).unwrap();
        Stage { dir }
    }

    /// A world-writable directory (sticky, as `/tmp` is).
    fn open(&self) -> PathBuf {
        self.dir.join("open")
    }

    /// `binary`, where any user can run it.
    fn binary(&self, binary: &Path) -> PathBuf {
        let to = self.dir.join(binary.file_name().unwrap());
        if !to.exists() {
            // Copied by `cp`, not by this process: a child another test thread forks
            // meanwhile would inherit a descriptor writing the file, and running the copy
            // would then fail with ETXTBSY.
            let copied = Command::new("cp").arg(binary).arg(&to).status().unwrap();
            assert!(copied.success(), "cp {} {}", binary.display(), to.display());
            std::fs::set_permissions(&to, PermissionsExt::from_mode(0o755)).unwrap();
        }
        to
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A process of another user listening on a control socket path: it answers every command
/// `ok` (as the squatter of the report did) and reports what it received on its stdout.
struct Squatter {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Squatter {
    /// Runs the squatter helper as `user` on `socket`, after it tries to create `dir`.
    fn start(stage: &Stage, user: (Uid, Gid), socket: &Path, dir: Option<&Path>) -> Squatter {
        let exe = stage.binary(&std::env::current_exe().unwrap());
        let mut command = Command::new(exe);
        command
            .args(["--ignored", "--exact", "squatter_helper", "--nocapture"])
            .env(SQUATTER_SOCKET_ENV, socket)
            .current_dir("/")
            .uid(user.0.as_raw())
            .gid(user.1.as_raw())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(dir) = dir {
            command.env(SQUATTER_DIR_ENV, dir);
        }
        let mut child = command.spawn().expect("run the squatter");
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(line) = line.strip_prefix("squatter: ") {
                    let _ = send.send(line.to_string());
                }
            }
        });
        let stdin = child.stdin.take();
        let squatter = Squatter {
            child,
            stdin,
            lines,
        };
        let first = squatter
            .lines
            .recv_timeout(WAIT_MAX)
            .expect("the squatter's first line");
        assert_eq!(first, format!("listening on {}", socket.display()));
        squatter
    }

    /// Stops it and returns what it reported after it started listening.
    fn finish(mut self) -> Vec<String> {
        drop(self.stdin.take());
        let deadline = Instant::now() + WAIT_MAX;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == "done" => break,
                Ok(line) => got.push(line),
                Err(e) => panic!("the squatter did not finish ({e}); it said {got:?}"),
            }
        }
        let _ = self.child.wait();
        got
    }
}

impl Drop for Squatter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The squatter itself (run by the tests above as another user, never on its own): listens
/// on the path in `RM_TEST_SQUATTER_SOCKET`, answers each connection `ok`, and says
/// on stdout what it received, until its stdin closes.
#[test]
#[ignore = "a helper the squatting tests run as another user"]
fn squatter_helper() {
    let Some(socket) = std::env::var_os(SQUATTER_SOCKET_ENV) else {
        eprintln!("squatter_helper: only the squatting tests run it; nothing to do");
        return;
    };
    if let Some(dir) = std::env::var_os(SQUATTER_DIR_ENV) {
        let made = std::fs::DirBuilder::new().mode(0o777).create(&dir);
        eprintln!("squatter: creating {dir:?}: {made:?}");
    }
    let listener = UnixListener::bind(&socket).unwrap();
    // Anyone may connect, as a squatter wants.
    std::fs::set_permissions(&socket, PermissionsExt::from_mode(0o777)).unwrap();
    listener.set_nonblocking(true).unwrap();
    println!("squatter: listening on {}", Path::new(&socket).display());
    let stdin = std::io::stdin();
    // A bound on its life, should the test that started it die without closing stdin.
    let deadline = Instant::now() + 6 * WAIT_MAX;
    while Instant::now() < deadline {
        let mut fds = [
            nix::poll::PollFd::new(listener.as_fd(), nix::poll::PollFlags::POLLIN),
            nix::poll::PollFd::new(stdin.as_fd(), nix::poll::PollFlags::POLLIN),
        ];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16)).unwrap();
        let stdin_closed = fds[1].any().unwrap_or(false);
        // Connections first: everything the test sent before closing stdin is counted.
        while let Ok((stream, _)) = listener.accept() {
            stream.set_nonblocking(false).unwrap();
            stream.set_read_timeout(Some(WAIT_MAX)).unwrap();
            println!("squatter: connection");
            let mut line = String::new();
            let _ = BufReader::new(&stream).read_line(&mut line);
            if !line.is_empty() {
                println!("squatter: received {:?}", line.trim_end());
                let _ = (&stream).write_all(b"ok: squatter\n");
            }
        }
        if stdin_closed {
            break;
        }
    }
    println!("squatter: done");
}

/// Runs `ringmaster ARGS` as this user, with `XDG_RUNTIME_DIR` as given (or unset), and
/// returns its output once it exits. One still running after `WAIT_MAX` (a master that
/// should have refused to start, say) is killed and fails the test.
fn ringmaster(args: &[&str], runtime_dir: Option<&Path>) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = runtime_dir {
        command.env("XDG_RUNTIME_DIR", dir);
    }
    let mut child = command.spawn().expect("run ringmaster");
    let deadline = Instant::now() + WAIT_MAX;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("ringmaster {args:?} still ran after {WAIT_MAX:?}: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_squatter_on_the_old_path_neither_stops_the_master_nor_hears_its_commands() {
    let test = "a_squatter_on_the_old_path_neither_stops_the_master_nor_hears_its_commands";
    let Some(user) = squatter_user(test) else {
        return;
    };
    let stage = Stage::new("old-path");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // Root's default, with no XDG_RUNTIME_DIR (a service's case).
    let path = PathBuf::from(format!("/run/ringmaster/ringmaster-{port}.sock"));
    let old = PathBuf::from(format!("/tmp/ringmaster-{port}.sock"));
    let _ = std::fs::remove_file(&old);
    // It takes the old path first, and tries to plant the new directory (not writable to it).
    let squatter = Squatter::start(&stage, user, &old, path.parent());
    let mut command = Command::new(BIN);
    command
        .args(["--workers", "1", "--listen", &listen])
        .env_remove("XDG_RUNTIME_DIR");
    let mut server = Server::start_command(&mut command, 1);
    server.wait_log(&format!("control {}", path.display()));
    let dir = path.parent().unwrap().symlink_metadata().unwrap();
    assert!(dir.is_dir());
    assert_eq!((dir.uid(), dir.mode() & 0o777), (0, 0o700));
    let out = ringmaster(&["status", "--listen", &listen], None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("master pid {}", server.pid())),
        "{text}"
    );
    let out = ringmaster(&["stop", "--listen", &listen], None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(server.wait_exit().code(), Some(0));
    let heard = squatter.finish();
    assert!(heard.is_empty(), "the squatter heard {heard:?}");
    let _ = std::fs::remove_file(&old);
}

#[test]
fn a_command_is_not_sent_to_a_socket_of_another_user() {
    let Some(user) = squatter_user("a_command_is_not_sent_to_a_socket_of_another_user") else {
        return;
    };
    let stage = Stage::new("client");
    let socket = stage.open().join("ctl.sock");
    let squatter = Squatter::start(&stage, user, &socket, None);
    let arg = socket.to_str().unwrap();
    for command in ["status", "stop", "reload"] {
        let out = ringmaster(&[command, "--control", arg], None);
        assert_ne!(out.status.code(), Some(0), "{command}: {out:?}");
        assert!(out.stdout.is_empty(), "{command}: {out:?}");
        let line = one_error_line(&out);
        for needle in [arg, &format!("uid {}", user.0), "was not sent"] {
            assert!(line.contains(needle), "{command}: {line}");
        }
    }
    // A master asked to use that path refuses too, and says whose it is.
    let out = ringmaster(
        &[
            "--workers",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--control",
            arg,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let line = one_error_line(&out);
    assert!(line.contains(&format!("held by uid {}", user.0)), "{line}");
    let heard = squatter.finish();
    assert!(
        heard.iter().all(|l| l == "connection"),
        "the squatter heard {heard:?}"
    );
}

#[test]
fn a_client_of_another_user_is_refused_and_its_stop_not_run() {
    let Some(user) = squatter_user("a_client_of_another_user_is_refused_and_its_stop_not_run")
    else {
        return;
    };
    let stage = Stage::new("foreign-client");
    let socket = stage.open().join("ctl.sock");
    let arg = socket.to_str().unwrap();
    let mut server = Server::start(&["--workers", "1", "--control", arg]);
    // Make the socket reachable to everyone: only the peer check stands in the way now.
    std::fs::set_permissions(&socket, PermissionsExt::from_mode(0o666)).unwrap();
    let bin = stage.binary(Path::new(BIN));
    let out = Command::new(bin)
        .args(["stop", "--control", arg])
        .current_dir("/")
        .uid(user.0.as_raw())
        .gid(user.1.as_raw())
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(
        answer.starts_with("error: permission denied") && answer.lines().count() == 1,
        "{answer:?}"
    );
    server.wait_log(&format!("control: refused a client of uid {}", user.0));
    assert!(common::alive(server.pid()), "the master kept running");
    assert!(!server.log().iter().any(|l| l.contains("stop requested")));
    assert_eq!(common::exchange(server.addr, common::GET).0.status, 200);
    // Its own user is still served.
    let out = ringmaster(&["status", "--control", arg], None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = ringmaster(&["stop", "--control", arg], None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(server.wait_exit().code(), Some(0));
}

/// Gives `path` (not following a symlink) to `uid`.
fn chown(path: &Path, uid: Uid) {
    std::os::unix::fs::lchown(path, Some(uid.as_raw()), None).unwrap();
}

#[test]
fn a_default_directory_that_is_not_private_is_refused_by_both_ends() {
    let test = "a_default_directory_that_is_not_private_is_refused_by_both_ends";
    let stage = Stage::new("dir");
    let runtime = stage.dir.join("runtime");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&runtime)
        .unwrap();
    let dir = runtime.join("ringmaster");
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let serve = ["--workers", "1", "--listen", &listen];
    let elsewhere = stage.dir.join("elsewhere");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&elsewhere)
        .unwrap();
    type Plant = Box<dyn Fn(&Path)>;
    let mut cases: Vec<(&str, Plant, &str)> = vec![
        (
            "open to others",
            Box::new(|d| {
                std::fs::create_dir(d).unwrap();
                std::fs::set_permissions(d, PermissionsExt::from_mode(0o755)).unwrap();
            }),
            "is open to other users (mode 0755); run `chmod 700",
        ),
        (
            "a symlink",
            Box::new(move |d| std::os::unix::fs::symlink(&elsewhere, d).unwrap()),
            "is a symbolic link; remove it",
        ),
    ];
    if geteuid().is_root() {
        cases.push((
            "another user's",
            Box::new(|d| {
                std::fs::DirBuilder::new().mode(0o700).create(d).unwrap();
                chown(d, Uid::from_raw(65534));
            }),
            "belongs to uid 65534, not to this user (uid 0); remove it",
        ));
    } else {
        eprintln!("{test}: another user's directory: SKIPPED: needs root to chown");
    }
    for (what, plant, needle) in cases {
        let _ = std::fs::remove_file(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        plant(&dir);
        let out = ringmaster(&serve, Some(&runtime));
        assert_eq!(out.status.code(), Some(2), "{what}: {out:?}");
        let line = one_error_line(&out);
        assert!(line.contains(&dir.display().to_string()), "{what}: {line}");
        assert!(line.contains(needle), "{what}: {line}");
        assert!(line.ends_with("or pass --control PATH"), "{what}: {line}");
        let out = ringmaster(&["status", "--listen", &listen], Some(&runtime));
        assert_eq!(out.status.code(), Some(2), "{what}: {out:?}");
        assert!(one_error_line(&out).contains(needle), "{what}");
    }
    // A missing directory is created private, and the commands use it.
    let _ = std::fs::remove_file(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let mut command = Command::new(BIN);
    command.args(serve).env("XDG_RUNTIME_DIR", &runtime);
    let mut server = Server::start_command(&mut command, 1);
    let meta = dir.symlink_metadata().unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o777, 0o700);
    assert_eq!(meta.uid(), geteuid().as_raw());
    let out = ringmaster(&["stop", "--listen", &listen], Some(&runtime));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(server.wait_exit().code(), Some(0));
}

#[test]
fn a_file_left_at_the_path_is_removed_only_if_it_is_our_socket() {
    let stage = Stage::new("stale");
    let path = stage.dir.join("ctl.sock");
    let arg = path.to_str().unwrap();
    let serve = [
        "--workers",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--control",
        arg,
    ];
    std::fs::write(&path, "not a socket").unwrap();
    let out = ringmaster(&serve, None);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let line = one_error_line(&out);
    assert!(line.contains("exists and is not a socket"), "{line}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
    std::fs::remove_file(&path).unwrap();
    // A socket nobody answers on, another user's: left alone.
    drop(UnixListener::bind(&path).unwrap());
    if geteuid().is_root() {
        chown(&path, Uid::from_raw(65534));
        let out = ringmaster(&serve, None);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let line = one_error_line(&out);
        assert!(line.contains("owned by uid 65534"), "{line}");
        assert!(path.exists());
        chown(&path, geteuid());
    } else {
        eprintln!("a_file_left_at_the_path_is_removed_only_if_it_is_our_socket: another user's socket: SKIPPED: needs root to chown");
    }
    // Ours: replaced.
    let server = Server::start(&["--workers", "1", "--control", arg]);
    server.wait_log("removed stale control socket");
    let out = ringmaster(&["status", "--control", arg], None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mut text = String::new();
    let _ = (&out.stdout[..]).read_to_string(&mut text);
    assert!(
        text.contains(&format!("master pid {}", server.pid())),
        "{text}"
    );
}
