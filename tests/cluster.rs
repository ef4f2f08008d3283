//! The process model: workers per allowed CPU, pinning (`--cpu-affinity`), respawn, shutdown,
//! no orphans.

mod common;

use common::{alive, allowed_cpus, exchange, wait_until, Server, GET, WAIT_MAX};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// A process's allowed CPUs as `/proc/PID/status` lists them (`0-1`, `3`).
fn cpus_allowed_list(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|l| l.trim().to_string())
}

/// The single CPU a process is pinned to, from `/proc/PID/status`.
fn pinned_cpu(pid: u32) -> Option<usize> {
    cpus_allowed_list(pid)?.parse().ok()
}

#[test]
fn one_worker_per_allowed_cpu_each_pinned_to_its_own() {
    let cpus = allowed_cpus();
    let server = Server::start(&[]);
    let workers = server.worker_pids();
    assert_eq!(
        workers.len(),
        cpus.len(),
        "workers: {workers:?}, cpus: {cpus:?}"
    );
    let mut pinned: Vec<usize> = workers
        .iter()
        .map(|&pid| pinned_cpu(pid).unwrap_or_else(|| panic!("worker {pid} is not on one CPU")))
        .collect();
    pinned.sort_unstable();
    assert_eq!(pinned, cpus, "each allowed CPU has exactly one worker");
}

#[test]
fn the_affinity_mask_bounds_the_worker_count() {
    let first = allowed_cpus()[0];
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringmaster"));
    command.args(["--listen", "127.0.0.1:0"]);
    // SAFETY (test): pre_exec runs in the forked child before exec; sched_setaffinity is
    // async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(first, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Server::start_command(&mut command, 1);
    assert!(server.wait_log("listening on").contains("(1 workers,"));
    let workers = server.worker_pids();
    assert_eq!(workers.len(), 1);
    assert_eq!(pinned_cpu(workers[0]), Some(first));
}

#[test]
fn unpinned_workers_keep_the_masters_cpus_and_say_cpu_none() {
    let server = Server::start(&["--cpu-affinity", "none", "--workers", "2"]);
    let master = cpus_allowed_list(server.pid()).expect("the master's status");
    let workers = server.worker_pids();
    assert_eq!(workers.len(), 2);
    for pid in workers {
        assert_eq!(
            cpus_allowed_list(pid).as_ref(),
            Some(&master),
            "worker {pid}"
        );
    }
    assert_eq!(server.wait_log_count("cpu none)", 2).len(), 2);
    let status = common::control(&server, "status json");
    assert!(status.contains("\"cpu\":null"), "{status}");
}

#[test]
fn the_default_pins_as_auto_does() {
    // The default is `auto`, tested above; said explicitly, it is the same.
    let cpus = allowed_cpus();
    let server = Server::start(&["--cpu-affinity", "auto"]);
    let mut pinned: Vec<usize> = server
        .worker_pids()
        .iter()
        .map(|&pid| pinned_cpu(pid).unwrap_or_else(|| panic!("worker {pid} is not on one CPU")))
        .collect();
    pinned.sort_unstable();
    assert_eq!(pinned, cpus);
}

#[test]
fn a_list_of_one_cpu_puts_every_worker_on_it_and_auto_runs_one_per_cpu_listed() {
    let first = allowed_cpus()[0];
    let list = first.to_string();
    let server = Server::start(&["--cpu-affinity", &list, "--workers", "3"]);
    let workers = server.worker_pids();
    assert_eq!(workers.len(), 3);
    for pid in workers {
        assert_eq!(pinned_cpu(pid), Some(first), "worker {pid}");
    }
    drop(server);
    let server = Server::start(&["--cpu-affinity", &list]);
    assert!(server.wait_log("listening on").contains("(1 workers,"));
    assert_eq!(pinned_cpu(server.worker_pids()[0]), Some(first));
}

#[test]
fn bad_cpu_lists_are_refused_in_one_line_with_exit_2() {
    let allowed = allowed_cpus();
    let outside = (0..1024)
        .find(|c| !allowed.contains(c))
        .expect("a CPU outside the mask");
    let outside_list = format!("{},{outside}", allowed[0]);
    let cases: [(&str, &str); 7] = [
        ("", "a CPU number is missing"),
        ("0,,1", "a CPU number is missing"),
        ("zero", "`zero` is not a CPU number"),
        ("3-1", "runs backwards"),
        ("0,0", "cpu 0 is listed twice"),
        ("1024", "cpu 1024 is out of range"),
        (&outside_list, "may not run on"),
    ];
    for (list, says) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_ringmaster"))
            .args(["--listen", "127.0.0.1:0", "--cpu-affinity", list])
            .output()
            .expect("run ringmaster");
        assert_eq!(out.status.code(), Some(2), "{list:?}");
        let line = common::one_error_line(&out);
        assert!(line.contains(says), "{list:?}: {line}");
        if list == outside_list {
            assert!(line.contains(&format!("cpu {outside},")), "{line}");
        }
    }
}

#[test]
fn a_killed_worker_is_replaced_on_its_cpu_while_the_others_answer() {
    let server = Server::start(&["--workers", "2"]);
    let started = server.wait_log("worker 0 started");
    let cpu: usize = started
        .split("cpu ")
        .nth(1)
        .and_then(|r| r.trim_end_matches(')').parse().ok())
        .expect("cpu in the start line");
    let old = pid_of_slot(&started);
    // SAFETY (test): SIGKILL to a worker of our own server.
    assert_eq!(unsafe { libc::kill(old as i32, libc::SIGKILL) }, 0);
    wait_until("the killed worker to be reaped", || {
        !server.worker_pids().contains(&old)
    });
    // Until the replacement is ready, the other worker serves every request.
    let mut answered = 0;
    let deadline = Instant::now() + WAIT_MAX;
    while answered < 20
        || server
            .log()
            .iter()
            .filter(|l| l.contains("worker 0 ready"))
            .count()
            < 2
    {
        assert!(Instant::now() < deadline, "no replacement");
        assert_eq!(exchange(server.addr, GET).0.status, 200);
        answered += 1;
    }
    let restarted = server.wait_log_count("worker 0 started", 2).remove(1);
    let new = pid_of_slot(&restarted);
    assert_ne!(new, old);
    assert!(restarted.contains(&format!("cpu {cpu})")), "{restarted}");
    assert_eq!(pinned_cpu(new), Some(cpu));
    assert!(server
        .log()
        .iter()
        .any(|l| l.contains("worker 0 exited") && l.contains("signal SIGKILL")));
    assert_eq!(exchange(server.addr, GET).0.status, 200);
    eprintln!("{answered} requests answered while worker 0 was being replaced");
}

fn pid_of_slot(line: &str) -> u32 {
    line.split("pid ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

#[test]
fn sigterm_exits_zero_and_leaves_no_worker() {
    let mut server = Server::start(&["--workers", "2"]);
    let workers = server.worker_pids();
    assert_eq!(workers.len(), 2);
    assert_eq!(exchange(server.addr, GET).0.status, 200);
    server.signal(libc::SIGTERM);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log().join("\n"));
    for pid in workers {
        assert!(!alive(pid), "worker {pid} outlived the master");
    }
    server.wait_log("all workers stopped");
}

#[test]
fn killing_the_master_takes_every_worker_down_and_frees_the_port() {
    let mut server = Server::start(&["--workers", "2"]);
    let workers = server.worker_pids();
    let addr = server.addr;
    server.signal(libc::SIGKILL);
    server.wait_exit();
    let killed = Instant::now();
    wait_until("workers to die with the master", || {
        workers.iter().all(|&p| !alive(p))
    });
    // The kernel tears a dead worker's ring down asynchronously, and the ring's pending
    // accept holds the listener until then: the port frees a moment after the process.
    wait_until("the port to be free", || TcpListener::bind(addr).is_ok());
    assert!(
        killed.elapsed() < Duration::from_secs(1),
        "workers and port took {:?} to go",
        killed.elapsed()
    );
}
