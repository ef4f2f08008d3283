//! `ringmaster probe`: its table is the kernel's own answers (checked here against the
//! ring's opcode probe), its `used` column is what a worker really uses (checked against
//! the worker's `ready (...)` line), the server's `--uring-no-*` flags change it, and an
//! io_uring the server cannot use is exit 1 with the cause.

mod common;

use common::{without_io_uring, Server};
use io_uring::{register::Probe, IoUring};
use ringmaster_uring::OpKind;
use serde_json::Value;
use std::process::{Command, Output};

fn probe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringmaster"))
        .arg("probe")
        .args(args)
        .output()
        .expect("run ringmaster probe")
}

/// `ringmaster probe --json ARGS`, parsed; `None` (with a message) where io_uring cannot be
/// set up here, so kernel-dependent checks skip rather than pass silently.
fn probe_json(args: &[&str]) -> Option<Value> {
    if let Err(e) = ringmaster_uring::Features::probe() {
        eprintln!("skipped: io_uring unavailable here ({e})");
        return None;
    }
    let out = probe(&[&["--json"], args].concat());
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    Some(serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}")))
}

fn features(json: &Value) -> &Vec<Value> {
    json["features"].as_array().expect("a features array")
}

fn row<'j>(json: &'j Value, name: &str) -> &'j Value {
    features(json)
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {json}"))
}

fn used(json: &Value, name: &str) -> bool {
    row(json, name)["used"]
        .as_bool()
        .expect("used is a boolean")
}

#[test]
fn the_kernel_column_is_the_rings_own_opcode_probe() {
    let Some(json) = probe_json(&[]) else { return };
    assert_eq!(json["usable"], true);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(json["kernel_release"], release.trim());
    let ring = IoUring::new(2).unwrap();
    let mut kernel = Probe::new();
    ring.submitter().register_probe(&mut kernel).unwrap();
    let mut seen = Vec::new();
    for f in features(&json).iter().filter(|f| !f["op"].is_null()) {
        let opcode = u8::try_from(f["opcode"].as_u64().unwrap()).unwrap();
        let has = f["kernel"].as_bool().unwrap();
        if f["source"] == "opcode probe" {
            assert_eq!(has, kernel.is_supported(opcode), "{f}");
        } else {
            // A mode or a socket command needs its opcode at least.
            assert!(!has || kernel.is_supported(opcode), "{f}");
        }
        seen.push(f["op"].as_str().unwrap().to_string());
    }
    let every: Vec<&str> = OpKind::ALL.iter().map(|k| k.variant()).collect();
    assert_eq!(seen, every, "one row per operation, in Op's order");
}

/// The worker's `ready (io_uring MODE, registered ring fd B, direct descriptors B, ...)`.
fn ready_line(args: &[&str]) -> (String, bool, bool) {
    let server = Server::start(&[&["--workers", "1"], args].concat());
    let line = server.wait_log("ready (io_uring ");
    let inside = line.split("ready (io_uring ").nth(1).unwrap();
    let parts: Vec<&str> = inside.split(", ").collect();
    let flag = |prefix: &str| {
        parts
            .iter()
            .find_map(|p| p.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{prefix} in {line}"))
            == "true"
    };
    (
        parts[0].to_string(),
        flag("registered ring fd "),
        flag("direct descriptors "),
    )
}

#[test]
fn what_the_worker_reports_using_is_used() {
    for args in [
        &[][..],
        &["--uring-no-defer-taskrun", "--uring-no-direct-descriptors"],
        &["--uring-no-registered-ring"],
    ] {
        let Some(json) = probe_json(args) else { return };
        let (mode, ring_fd, direct) = ready_line(args);
        assert_eq!(json["setup"], mode.as_str(), "{args:?}");
        let setup_flags: &[&str] = match mode.as_str() {
            "defer_taskrun" => &["IORING_SETUP_SINGLE_ISSUER", "IORING_SETUP_DEFER_TASKRUN"],
            "coop_taskrun" => &["IORING_SETUP_COOP_TASKRUN", "IORING_SETUP_TASKRUN_FLAG"],
            _ => &[],
        };
        for name in setup_flags {
            assert!(used(&json, name), "{name} with {args:?}");
        }
        assert_eq!(used(&json, "IORING_REGISTER_RING_FDS"), ring_fd, "{args:?}");
        assert_eq!(used(&json, "IORING_FILE_INDEX_ALLOC"), direct, "{args:?}");
        assert_eq!(
            used(&json, "SOCKET_URING_OP_SETSOCKOPT"),
            direct,
            "{args:?}"
        );
        // What every worker needs is used whatever the flags.
        for f in features(&json).iter().filter(|f| f["off"] == "required") {
            assert_eq!(f["used"], true, "{f}");
            assert_eq!(f["kernel"], true, "{f}");
        }
    }
}

#[test]
fn uring_no_flags_turn_off_what_they_name() {
    let Some(on) = probe_json(&[]) else { return };
    for (flag, names) in [
        (
            "--uring-no-multishot-recv",
            &["IORING_OP_RECV (multishot)"][..],
        ),
        (
            "--uring-no-multishot-accept",
            &["IORING_OP_ACCEPT (multishot)"],
        ),
        ("--uring-no-registered-ring", &["IORING_REGISTER_RING_FDS"]),
        (
            "--uring-no-defer-taskrun",
            &["IORING_SETUP_SINGLE_ISSUER", "IORING_SETUP_DEFER_TASKRUN"],
        ),
        (
            "--uring-no-direct-descriptors",
            &[
                "IORING_FILE_INDEX_ALLOC",
                "SOCKET_URING_OP_SETSOCKOPT",
                "SOCKET_URING_OP_SIOCOUTQ",
            ],
        ),
    ] {
        let off = probe_json(&[flag]).unwrap();
        for name in names {
            assert_eq!(row(&on, name)["off"], flag, "{name}");
            if row(&on, name)["kernel"] == true {
                assert!(used(&on, name), "{name} without {flag}");
            } else {
                eprintln!("{name}: not in this kernel, so {flag} changes nothing");
            }
            assert!(!used(&off, name), "{name} with {flag}");
        }
        // Nothing else changes, but what replaces the feature turned off.
        for f in features(&off) {
            let name = f["name"].as_str().unwrap();
            let replaced = names.contains(&name)
                || (flag == "--uring-no-defer-taskrun" && name.starts_with("IORING_SETUP_"))
                || (flag == "--uring-no-direct-descriptors" && name.starts_with("SOCKET_URING"));
            if !replaced {
                assert_eq!(f["used"], row(&on, name)["used"], "{name} with {flag}");
            }
        }
    }
}

#[test]
fn the_table_lists_the_same_names_and_ends_with_the_summary() {
    let Some(json) = probe_json(&[]) else { return };
    let out = probe(&[]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("FEATURE "), "{text}");
    let names: Vec<&str> = features(&json)
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let rows = &lines[1..lines.len() - 1];
    assert_eq!(rows.len(), names.len(), "{text}");
    for (line, name) in rows.iter().zip(&names) {
        assert!(line.starts_with(&format!("{name} ")), "{line} is {name}");
        let row = row(&json, name);
        let words: Vec<&str> = line[name.len()..].split_whitespace().collect();
        let yes = |b: &Value| if b == true { "yes" } else { "no" };
        assert_eq!(
            words[..3],
            [
                yes(&row["kernel"]),
                yes(&row["used"]),
                row["off"].as_str().unwrap()
            ],
            "{line}"
        );
    }
    let summary = lines.last().unwrap();
    assert!(
        summary.starts_with("io_uring usable on Linux "),
        "{summary}"
    );
    assert!(
        summary.contains(json["setup"].as_str().unwrap()),
        "{summary}"
    );
}

#[test]
fn blocked_io_uring_is_exit_1_with_the_cause() {
    for (errno, needle) in [(libc::EPERM, "seccomp"), (libc::ENOSYS, "no io_uring")] {
        for json in [false, true] {
            let mut command = Command::new(env!("CARGO_BIN_EXE_ringmaster"));
            command.arg("probe");
            if json {
                command.arg("--json");
            }
            let out = without_io_uring(&mut command, errno).output().unwrap();
            assert_eq!(out.status.code(), Some(1), "{errno}");
            let line = common::one_error_line(&out);
            assert!(line.contains(needle), "{line}");
            let stdout = String::from_utf8(out.stdout).unwrap();
            if json {
                let parsed: Value = serde_json::from_str(&stdout).unwrap();
                assert_eq!(parsed["usable"], false);
                assert!(parsed["error"].as_str().unwrap().contains(needle));
                assert!(parsed["setup"].is_null());
            } else {
                assert!(stdout.starts_with("io_uring not usable"), "{stdout}");
                assert!(stdout.contains(needle), "{stdout}");
            }
        }
    }
}

#[test]
fn a_bad_flag_value_is_a_usage_error() {
    let out = probe(&["--recv-buffers", "1000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(common::one_error_line(&out).contains("power of two"));
}
