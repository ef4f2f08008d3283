//! The command line: usage errors, start-up errors, and io_uring being unavailable. Each is
//! one line on stderr naming the cause and the remedy, and exit code 2.

mod common;

use common::{one_error_line, without_io_uring};

use std::net::TcpListener;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringmaster"))
        .args(args)
        .output()
        .expect("run ringmaster")
}

#[test]
fn bad_flag_values_exit_2_with_one_line() {
    for (args, needle) in [
        (&["--workers", "0"][..], "--workers"),
        (&["--workers", "lots"], "--workers"),
        (&["--listen", "nowhere"], "--listen"),
        (&["--drain-timeout", "-1"], "--drain-timeout"),
        (&["--connections-max", "0"], "connections-max"),
        (&["--connections-max", "1000000"], "connections-max"),
        (&["--recv-buffers", "1000"], "power of two"),
        (&["--no-such-flag"], "--no-such-flag"),
        // clap lists the conflicting flags on lines of their own: kept on the one line.
        (
            &["--workers", "2", "--listen", "127.0.0.1:1", "serve"],
            "cannot be used with: --workers <N|auto> --listen <ADDR>",
        ),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let line = one_error_line(&out);
        assert!(line.contains(needle), "{args:?}: {line}");
    }
}

#[test]
fn help_and_version_exit_0() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--listen"));
    assert_eq!(run(&["--version"]).status.code(), Some(0));
}

#[test]
fn address_in_use_exits_2_naming_the_remedy() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&["--listen", &addr]);
    assert_eq!(out.status.code(), Some(2));
    let line = one_error_line(&out);
    assert!(
        line.contains("already in use") && line.contains("--listen"),
        "{line}"
    );
}

#[test]
fn an_access_log_that_cannot_be_opened_is_one_error_before_any_fork() {
    let out = run(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--access-log",
        "/nonexistent/x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    // One line: no worker was forked to fail in turn.
    let line = one_error_line(&out);
    assert!(
        line.contains("/nonexistent/x") && line.contains("--access-log"),
        "{line}"
    );
}

/// Runs the binary with a seccomp filter that fails `io_uring_setup` with `errno`, the
/// way a container runtime's default profile does.
fn run_without_io_uring(errno: i32) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringmaster"));
    command.args(["--listen", "127.0.0.1:0"]);
    without_io_uring(&mut command, errno)
        .output()
        .expect("run ringmaster")
}

#[test]
fn io_uring_blocked_by_seccomp_is_explained() {
    let out = run_without_io_uring(libc::EPERM);
    assert_eq!(out.status.code(), Some(2));
    let line = one_error_line(&out);
    assert!(
        line.contains("io_uring") && line.contains("seccomp"),
        "{line}"
    );
    assert!(
        line.contains("io_uring_setup"),
        "names the syscall to allow: {line}"
    );
}

#[test]
fn kernel_without_io_uring_is_explained() {
    let out = run_without_io_uring(libc::ENOSYS);
    assert_eq!(out.status.code(), Some(2));
    let line = one_error_line(&out);
    assert!(
        line.contains("no io_uring") && line.contains("Linux"),
        "{line}"
    );
}
