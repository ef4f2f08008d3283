//! `ringmaster probe`: what this kernel's io_uring offers, feature by feature, and what a
//! worker would use of it with the flags given.
//!
//! Every answer in the `kernel` column is the kernel's own: the ring's opcode probe
//! (`IORING_REGISTER_PROBE`), a ring set up with the flags, the feature bits the kernel
//! returned, a registration or a socket command tried (see
//! [`Features`](ringmaster_uring::Features)). Every answer in the `used` column comes from
//! the code the server runs at start: the master's [`worker_config`] and a worker's ring
//! and direct descriptor table, built here as a worker builds them. The operations are
//! listed from [`OpKind::ALL`], so a new [`Op`](ringmaster_uring::Op) appears here, and
//! [`op_use`] does not compile until it says what the operation is for.

use crate::config::Config;
use crate::error::{self, Error};
use crate::master::report::json_string;
use crate::master::startup::{lacking, worker_config, worker_ring};
use crate::worker;
use ringmaster_uring::{Features, OpKind, SetupMode};

/// Exit code when io_uring is usable: the server could run.
const EXIT_USABLE: i32 = 0;
/// Exit code when io_uring is not usable here.
const EXIT_UNUSABLE: i32 = 1;

/// The flag that turns a feature off: `required` when workers cannot run without it, `-`
/// when no flag does.
const REQUIRED: &str = "required";
/// No flag turns the feature off, and workers can run without it.
const NO_FLAG: &str = "-";
const OFF_DEFER: &str = "--uring-no-defer-taskrun";
const OFF_DIRECT: &str = "--uring-no-direct-descriptors";

/// How the `kernel` answer of a row was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// The ring's opcode probe (`IORING_REGISTER_PROBE`).
    OpcodeProbe,
    /// The opcode probe, for an opcode that arrived in the same release as the mode (the
    /// probe does not list modes such as multishot).
    SameRelease,
    /// The operation tried on a socket.
    Tried,
    /// A ring set up with the flags.
    Setup,
    /// The feature bits the kernel returned from `io_uring_setup`.
    FeatureBits,
    /// A registration tried.
    Registration,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::OpcodeProbe => "opcode probe",
            Source::SameRelease => "opcode probe, same release",
            Source::Tried => "tried",
            Source::Setup => "setup attempt",
            Source::FeatureBits => "feature bits",
            Source::Registration => "registration attempt",
        }
    }
}

/// One line of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    /// The kernel's name for the feature, unique.
    name: &'static str,
    /// `opcode`, `socket command`, `setup`, `feature` or `register`.
    category: &'static str,
    /// The operation's [`OpKind`], for an operation.
    op: Option<OpKind>,
    /// Whether this kernel has it.
    kernel: bool,
    /// Whether a worker would use it here with the flags given.
    used: bool,
    /// The flag that turns it off, [`REQUIRED`] or [`NO_FLAG`].
    off: &'static str,
    /// What a worker uses it for.
    what: &'static str,
    source: Source,
}

/// What a worker decided at start, by the server's own code.
#[derive(Clone, Copy, Debug)]
struct Plan {
    mode: SetupMode,
    ring_fd: bool,
    direct: bool,
    multishot_accept: bool,
    multishot_recv: bool,
    client_addresses: bool,
}

/// Runs the same start-up decisions as the master and a worker for `config` on this kernel.
fn plan(config: &Config, features: &Features) -> Result<Plan, Error> {
    lacking(features)?;
    let config = worker_config(config, features);
    let mut ring = worker_ring(&config)?;
    let (direct, _) = worker::direct_table(&config, &mut ring);
    Ok(Plan {
        mode: ring.mode(),
        ring_fd: ring.ring_fd_registered(),
        direct,
        multishot_accept: config.uring.multishot_accept,
        multishot_recv: config.uring.multishot_recv,
        client_addresses: worker::wants_client_addresses(&config),
    })
}

/// Whether a worker uses `kind` under `plan`, the flag that turns it off, and what for.
/// The match names every kind: a new operation must say here what it is for.
fn op_use(kind: OpKind, plan: &Plan) -> (bool, &'static str, &'static str) {
    match kind {
        OpKind::AcceptMulti => (
            plan.multishot_accept,
            "--uring-no-multishot-accept",
            "accepting connections, one entry for many",
        ),
        OpKind::Accept => (
            true,
            REQUIRED,
            "accepting near the connection bound, or with multishot off",
        ),
        OpKind::RecvMulti => (
            plan.multishot_recv,
            "--uring-no-multishot-recv",
            "reading requests into provided buffers",
        ),
        OpKind::Recv => (
            true,
            REQUIRED,
            "reading a bounded amount, or with multishot off",
        ),
        OpKind::Send => (true, REQUIRED, "responses"),
        OpKind::Splice => (true, NO_FLAG, "files over 64 KiB, through a pipe"),
        OpKind::Read => (true, REQUIRED, "the master's pipe, signals, wake-ups"),
        OpKind::Write => (true, NO_FLAG, "the access log"),
        OpKind::Close => (true, REQUIRED, "closing connections"),
        OpKind::Shutdown => (true, REQUIRED, "half-closing connections"),
        OpKind::SetSockOpt => (
            plan.direct,
            OFF_DIRECT,
            "resetting a direct connection (SO_LINGER)",
        ),
        OpKind::SocketOutQueue => (
            plan.direct,
            OFF_DIRECT,
            "a direct connection's unacknowledged bytes",
        ),
        OpKind::GetSockOpt => (
            plan.direct && plan.client_addresses,
            OFF_DIRECT,
            "a direct connection's client address (--proxy, --access-log)",
        ),
        OpKind::Cancel => (true, REQUIRED, "cancelling receives and accepts"),
        OpKind::Timeout => (true, REQUIRED, "the worker's tick"),
        OpKind::Connect => (true, NO_FLAG, "connecting to upstreams (--proxy)"),
        OpKind::ReadAt => (true, NO_FLAG, "reading files (ringmaster::rt::fs)"),
        OpKind::OpenAt2 => (true, NO_FLAG, "opening files (--static)"),
        OpKind::Statx => (true, NO_FLAG, "file metadata (--static)"),
    }
}

/// The rows of the set-up flags, feature bits and registrations.
fn ring_rows(f: &Features, plan: &Plan) -> Vec<Row> {
    let defer = plan.mode == SetupMode::DeferTaskrun;
    let coop = plan.mode == SetupMode::CoopTaskrun;
    let row = |name, category, kernel, used, off, what, source| Row {
        name,
        category,
        op: None,
        kernel,
        used,
        off,
        what,
        source,
    };
    vec![
        row(
            "IORING_SETUP_SINGLE_ISSUER",
            "setup",
            f.single_issuer,
            defer,
            OFF_DEFER,
            "one thread submits (needed by DEFER_TASKRUN)",
            Source::Setup,
        ),
        row(
            "IORING_SETUP_DEFER_TASKRUN",
            "setup",
            f.defer_taskrun,
            defer,
            OFF_DEFER,
            "completion work only inside the worker's enter",
            Source::Setup,
        ),
        row(
            "IORING_SETUP_COOP_TASKRUN",
            "setup",
            f.coop_taskrun,
            coop,
            NO_FLAG,
            "without DEFER_TASKRUN: no interrupting IPIs",
            Source::Setup,
        ),
        row(
            "IORING_SETUP_TASKRUN_FLAG",
            "setup",
            f.taskrun_flag,
            coop,
            NO_FLAG,
            "with COOP_TASKRUN: pending work flagged",
            Source::Setup,
        ),
        // Every ring is set up with its own completion queue size; the probe's ring was.
        row(
            "IORING_SETUP_CQSIZE",
            "setup",
            true,
            true,
            REQUIRED,
            "a completion queue sized to the connections",
            Source::Setup,
        ),
        row(
            "IORING_FEAT_NODROP",
            "feature",
            f.nodrop,
            true,
            REQUIRED,
            "no completion lost when the queue overflows",
            Source::FeatureBits,
        ),
        row(
            "IORING_FEAT_EXT_ARG",
            "feature",
            f.ext_arg,
            true,
            REQUIRED,
            "waits bounded by the next timer",
            Source::FeatureBits,
        ),
        row(
            "IORING_REGISTER_PBUF_RING",
            "register",
            f.buf_ring,
            true,
            REQUIRED,
            "receive buffers the kernel picks from",
            Source::Registration,
        ),
        row(
            "IORING_REGISTER_RING_FDS",
            "register",
            f.registered_ring_fd,
            plan.ring_fd,
            "--uring-no-registered-ring",
            "enters skip the ring descriptor's lookup",
            Source::Registration,
        ),
        row(
            "IORING_FILE_INDEX_ALLOC",
            "register",
            f.direct_accept,
            plan.direct,
            OFF_DIRECT,
            "direct descriptors: a sparse file table",
            Source::Registration,
        ),
    ]
}

/// Every row, the ring's first, then one per [`OpKind`]. Nothing is used where `plan` is
/// `None` (workers cannot run).
fn rows(f: &Features, plan: Option<&Plan>) -> Vec<Row> {
    // Where workers cannot run, the plan of the defaults says what the kernel would need,
    // with nothing marked used.
    let fallback = Plan {
        mode: f.setup,
        ring_fd: false,
        direct: false,
        multishot_accept: false,
        multishot_recv: false,
        client_addresses: false,
    };
    let usable = plan.is_some();
    let plan = plan.unwrap_or(&fallback);
    let mut rows = ring_rows(f, plan);
    rows.extend(OpKind::ALL.iter().map(|&kind| {
        let (used, off, what) = op_use(kind, plan);
        let (category, source) = match kind {
            OpKind::SetSockOpt | OpKind::GetSockOpt | OpKind::SocketOutQueue => {
                ("socket command", Source::Tried)
            }
            OpKind::AcceptMulti | OpKind::RecvMulti => ("opcode", Source::SameRelease),
            _ => ("opcode", Source::OpcodeProbe),
        };
        Row {
            name: kind.kernel_name(),
            category,
            op: Some(kind),
            kernel: f.supports(kind),
            used,
            off,
            what,
            source,
        }
    }));
    if !usable {
        for row in &mut rows {
            row.used = false;
        }
    }
    rows
}

/// What `ringmaster probe` found.
struct Report {
    /// `uname -r`.
    release: String,
    /// The rows; empty when io_uring cannot be set up at all.
    rows: Vec<Row>,
    /// What workers would run with, or why they cannot run.
    plan: Result<Plan, Error>,
}

impl Report {
    fn gather(config: &Config) -> Report {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string());
        match Features::probe() {
            Err(e) => Report {
                release,
                rows: Vec::new(),
                plan: Err(error::uring_unavailable(&e)),
            },
            Ok(features) => {
                let plan = plan(config, &features);
                Report {
                    release,
                    rows: rows(&features, plan.as_ref().ok()),
                    plan,
                }
            }
        }
    }

    /// The summary line.
    fn summary(&self) -> String {
        match &self.plan {
            Ok(plan) => format!(
                "io_uring usable on Linux {}: workers set up {} rings, registered ring fd {}, \
                 direct descriptors {}",
                self.release,
                plan.mode.name(),
                yes(plan.ring_fd),
                yes(plan.direct)
            ),
            Err(e) => format!("io_uring not usable on Linux {}: {e}", self.release),
        }
    }

    fn human(&self) -> String {
        let header = ["FEATURE", "KERNEL", "USED", "OFF", "FOR"];
        let cells: Vec<[&str; 5]> = self
            .rows
            .iter()
            .map(|r| [r.name, yes(r.kernel), yes(r.used), r.off, r.what])
            .collect();
        let mut widths = header.map(str::len);
        for row in &cells {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let mut out = String::new();
        // Without a ring there is nothing to list, not even the header: the summary says why.
        let header = (!cells.is_empty()).then_some(&header);
        for row in header.into_iter().chain(&cells) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    fn json(&self) -> String {
        let (usable, setup, error) = match &self.plan {
            Ok(plan) => (true, json_string(plan.mode.name()), "null".to_string()),
            Err(e) => (false, "null".to_string(), json_string(&e.to_string())),
        };
        let features: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                let (op, opcode, since) = match r.op {
                    Some(k) => (
                        json_string(k.variant()),
                        k.opcode().to_string(),
                        json_string(k.since()),
                    ),
                    None => ("null".into(), "null".into(), "null".into()),
                };
                format!(
                    "{{\"name\":{},\"category\":{},\"op\":{op},\"opcode\":{opcode},\
                     \"since\":{since},\"kernel\":{},\"used\":{},\"off\":{},\"for\":{},\
                     \"source\":{}}}",
                    json_string(r.name),
                    json_string(r.category),
                    r.kernel,
                    r.used,
                    json_string(r.off),
                    json_string(r.what),
                    json_string(r.source.name()),
                )
            })
            .collect();
        format!(
            "{{\"kernel_release\":{},\"usable\":{usable},\"setup\":{setup},\"error\":{error},\
             \"features\":[{}]}}\n",
            json_string(&self.release),
            features.join(",")
        )
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Prints what this kernel's io_uring offers and what workers would use of it with
/// `config` (a table, or one JSON object), and returns the exit code: 0 when the server
/// could run here, 1 (with the cause and remedy on stderr) when it could not.
pub(crate) fn run(config: &Config, json: bool) -> i32 {
    let report = Report::gather(config);
    print!("{}", if json { report.json() } else { report.human() });
    match &report.plan {
        Ok(_) => EXIT_USABLE,
        Err(e) => {
            eprintln!("ringmaster: error: {e}");
            EXIT_UNUSABLE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_with(direct: bool, multishot_recv: bool) -> Plan {
        Plan {
            mode: SetupMode::DeferTaskrun,
            ring_fd: true,
            direct,
            multishot_accept: true,
            multishot_recv,
            client_addresses: true,
        }
    }

    #[test]
    fn flags_turn_off_what_they_name() {
        let on = plan_with(true, true);
        let off = plan_with(false, false);
        for kind in OpKind::ALL {
            let (used_on, flag, _) = op_use(*kind, &on);
            let (used_off, _, _) = op_use(*kind, &off);
            if flag == OFF_DIRECT || flag == "--uring-no-multishot-recv" {
                assert!(used_on && !used_off, "{kind:?}");
            } else {
                assert_eq!(used_on, used_off, "{kind:?}");
            }
        }
    }

    #[test]
    fn every_row_names_its_flag_or_says_there_is_none() {
        let f = match Features::probe() {
            Ok(f) => f,
            Err(e) => {
                eprintln!("skipped: io_uring unavailable here ({e})");
                return;
            }
        };
        let all = rows(&f, Some(&plan_with(true, true)));
        let mut names: Vec<&str> = all.iter().map(|r| r.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len(), "names are unique");
        for r in &all {
            assert!(
                r.off == REQUIRED || r.off == NO_FLAG || r.off.starts_with("--uring-no-"),
                "{r:?}"
            );
            assert!(!r.what.is_empty(), "{r:?}");
        }
        assert!(rows(&f, None).iter().all(|r| !r.used));
    }
}
