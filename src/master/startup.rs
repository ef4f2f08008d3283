//! The checks and set-up before any fork, so that what would make every worker fail is one
//! clear error from the master: the configuration, io_uring and a worker's ring at its real
//! sizes, the access log, the descriptor limit, the allowed CPUs, the signal mask. Owns no
//! state: each returns what the master keeps.

use super::listeners::accept_queue;
use crate::config::{Config, CpuAffinity, Workers};
use crate::error::{self, Error, ErrorKind};
use crate::log::log;
use crate::worker;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use ringmaster_uring::{Features, Ring};
use std::os::fd::OwnedFd;

/// Checks the configuration and what workers need before any fork, and returns the
/// configuration workers run with (direct descriptors only where the kernel and the options
/// allow) and the access log.
pub(super) fn prepare(config: &Config) -> Result<(Config, Option<OwnedFd>), Error> {
    config.validate()?;
    alone()?;
    crate::log::set_format(config.log_format);
    let features = check_uring()?;
    let config = worker_config(config, &features);
    raise_descriptor_limit(config.limits.connections_max);
    let access_log = open_access_log(&config)?;
    // A worker's ring at its real sizes, made and dropped before any fork.
    worker_ring(&config)?;
    Ok((config, access_log))
}

/// How long start-up waits for threads that ended to leave `/proc/self/task`.
const ALONE_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// Refuses to start with other threads in the process. `fork` copies only the calling
/// thread: a worker would wait forever on a lock or a channel one of them serves (a
/// logger's writer thread, an async runtime's), and, their signals not blocked, they would
/// take the operator's `SIGTERM` or `SIGHUP` and end the master without a drain. Where
/// `/proc` cannot be read, nothing is checked.
fn alone() -> Result<(), Error> {
    let count =
        || std::fs::read_dir("/proc/self/task").map_or(0, |tasks| tasks.count().saturating_sub(1));
    let mut others = count();
    // A thread joined (or ended with `std::thread::scope`) may still be leaving the kernel's
    // list for a moment: look again briefly before refusing, [`ALONE_WAIT`] at most.
    let since = std::time::Instant::now();
    while others > 0 && since.elapsed() < ALONE_WAIT {
        std::thread::sleep(std::time::Duration::from_millis(2));
        others = count();
    }
    if others == 0 {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::ThreadsRunning,
        format!(
            "{others} other thread(s) run in this process before the server starts (a log \
             writer's or a runtime's, say); fork copies only the calling thread, so workers \
             would wait on them forever and they would take the operator's signals; start \
             threads in Handler::start (in each worker) or after forking, and log through a \
             subscriber that writes from the calling thread"
        ),
    ))
}

/// The configuration workers run with on a kernel offering `features`: the one place that
/// decides it, for the server and for `ringmaster probe`. Direct descriptors need socket
/// options through the ring: set, to reset a connection; read, for the client's address
/// (both Linux 6.7).
pub(crate) fn worker_config(config: &Config, features: &Features) -> Config {
    Config {
        uring: crate::config::UringOptions {
            direct_descriptors: config.uring.direct_descriptors
                && features.direct_accept
                && features.socket_cmd,
            ..config.uring
        },
        ..config.clone()
    }
}

/// A worker's ring at its real sizes with its receive buffers, built as every worker builds
/// it after fork; an error names the remedy.
pub(crate) fn worker_ring(config: &Config) -> Result<Ring<worker::Event>, Error> {
    worker::build_ring(config, accept_queue(config.backlog)).map_err(|e| {
        Error::new(
            ErrorKind::UringUnavailable,
            format!(
                "a worker's io_uring cannot be set up ({e}); raise the locked-memory limit \
                 (`ulimit -l`, systemd LimitMEMLOCK=) or lower --connections-max or \
                 --recv-buffers"
            ),
        )
    })
}

/// Ignores `SIGPIPE`: a write to a closed pipe or socket fails with `EPIPE` instead of
/// killing the process. Workers inherit the disposition.
pub(super) fn ignore_sigpipe() -> Result<(), Error> {
    // SAFETY: SIG_IGN installs no handler code, so nothing runs in signal context.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn) }
        .map(drop)
        .map_err(|e| Error::system("ignoring SIGPIPE", e))
}

/// Opens the access log (created if missing, appended to) before any fork, so that a path
/// that cannot be written is one configuration error naming it.
fn open_access_log(config: &Config) -> Result<Option<OwnedFd>, Error> {
    let Some(path) = &config.access_log else {
        return Ok(None);
    };
    worker::open_access_log(path).map(Some).map_err(|e| {
        Error::config(format!(
            "cannot open the access log {}: {e}; give --access-log a writable file",
            path.display()
        ))
    })
}

/// Probes io_uring before any fork, so that a missing or blocked io_uring is one clear
/// error from the master instead of every worker failing.
fn check_uring() -> Result<Features, Error> {
    let features = Features::probe().map_err(|e| error::uring_unavailable(&e))?;
    lacking(&features)?;
    Ok(features)
}

/// Fails, naming what is missing, when the kernel lacks what every worker needs.
pub(crate) fn lacking(features: &Features) -> Result<(), Error> {
    let missing = features.missing();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::UringUnavailable,
        format!(
            "this kernel's io_uring lacks {}; ringmaster needs Linux 6.1 or newer",
            missing.join(", ")
        ),
    ))
}

/// Descriptors a worker needs besides its connections: its ring, pipes, signalfd, the
/// listening sockets it may adopt, the access log, standard streams.
const DESCRIPTORS_OWN: u64 = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard one, as nginx's `worker_rlimit_nofile` and
/// Go's runtime do: the soft default (often 1,024) is a relic that would cap each worker far
/// below `connections_max`. Workers inherit it. A hard limit still too low is said once, with
/// the remedy; workers then hold fewer connections (see
/// [`Limits::connections_max`](crate::config::Limits::connections_max)) rather than fail.
fn raise_descriptor_limit(connections_max: u32) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((mut soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        soft = hard;
    }
    let needed = u64::from(connections_max) + DESCRIPTORS_OWN;
    if soft < needed {
        log!(
            "warning: the descriptor limit ({soft}) is below what --connections-max \
             {connections_max} needs ({needed}); raise it (`ulimit -n {needed}`, systemd \
             LimitNOFILE=) or lower --connections-max"
        );
    }
}

/// The CPUs in this process's affinity mask, in order.
pub(super) fn allowed_cpus() -> Result<Vec<usize>, Error> {
    match core_affinity::get_core_ids() {
        Some(cpus) if !cpus.is_empty() => Ok(cpus.into_iter().map(|c| c.id).collect()),
        _ => Err(Error::system("sched_getaffinity", "no CPU is allowed")),
    }
}

/// Where slots' workers run: the CPUs they take in turn (slot *i* on the *i*-th, wrapping
/// around), or nowhere in particular (unpinned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Placement {
    /// The CPUs workers may run on: the affinity mask's, or those listed; never empty.
    pub(super) cpus: Vec<usize>,
    /// Whether each worker is pinned to its slot's CPU.
    pub(super) pinned: bool,
}

impl Placement {
    /// From the affinity mode and the CPUs this process may run on (`allowed`, not empty).
    /// A listed CPU outside `allowed` is a configuration error naming it and the allowed
    /// ones.
    pub(super) fn of(affinity: &CpuAffinity, allowed: &[usize]) -> Result<Placement, Error> {
        assert!(!allowed.is_empty(), "allowed_cpus() returns at least one");
        let cpus = match affinity {
            CpuAffinity::Auto | CpuAffinity::Unpinned => allowed,
            CpuAffinity::List(listed) => {
                if let Some(cpu) = listed.iter().find(|c| !allowed.contains(c)) {
                    return Err(Error::config(format!(
                        "cpu-affinity lists cpu {cpu}, which this process may not run on (its \
                         affinity mask allows {}); list only those, or widen the mask (taskset, \
                         the container's CPU set)",
                        cpu_list(allowed)
                    )));
                }
                listed
            }
        };
        Ok(Placement {
            cpus: cpus.to_vec(),
            pinned: *affinity != CpuAffinity::Unpinned,
        })
    }

    /// Slot `slot`'s CPU; `None`: not pinned.
    pub(super) fn cpu(&self, slot: usize) -> Option<usize> {
        self.pinned.then(|| self.cpus[slot % self.cpus.len()])
    }

    /// The worker count `workers` asks for: `auto` is one per CPU.
    pub(super) fn count(&self, workers: Workers) -> usize {
        match workers {
            Workers::Auto => self.cpus.len(),
            Workers::Count(n) => n as usize,
        }
    }

    /// The CPUs as `taskset -c` takes them.
    pub(super) fn describe(&self) -> String {
        cpu_list(&self.cpus)
    }
}

/// Each slot's CPU (`None`: not pinned), from the worker count, the affinity mode and the
/// CPUs this process may run on (`allowed`, not empty): see [`Placement`].
#[cfg(test)]
fn slot_cpus(
    workers: Workers,
    affinity: &CpuAffinity,
    allowed: &[usize],
) -> Result<Vec<Option<usize>>, Error> {
    let placement = Placement::of(affinity, allowed)?;
    Ok((0..placement.count(workers))
        .map(|i| placement.cpu(i))
        .collect())
}

/// CPUs written as `taskset -c` takes them: `0-3,6`.
fn cpu_list(cpus: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(match j > i {
            true => format!("{}-{}", cpus[i], cpus[j]),
            false => cpus[i].to_string(),
        });
        i = j + 1;
    }
    parts.join(",")
}

/// Signals that have no meaning yet but whose default action would kill the process
/// (`SIGUSR2`, `SIGALRM`), and `SIGWINCH`: an operator may send them (a terminal resize, a
/// stray `kill`), and none may take the server down. The master logs and ignores them.
const SIGNALS_IGNORED: [Signal; 3] = [Signal::SIGUSR2, Signal::SIGALRM, Signal::SIGWINCH];

/// Blocks the signals the master handles and returns a signalfd reading them. Workers
/// inherit the mask, so a signal sent to the whole process group reaches them as a drain
/// request on their own signalfd rather than killing them, and the others (`SIGHUP`,
/// `SIGUSR1`, the ignored ones) stay blocked (pending, harmless) in them: the master tells
/// them what to do over their pipe.
pub(super) fn master_signals() -> Result<SignalFd, Error> {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        // One worker more, one fewer, as gunicorn's (their default action would stop the
        // process: blocked in workers too).
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGCHLD,
    ]
    .into_iter()
    .chain(SIGNALS_IGNORED)
    {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| Error::system("blocking signals", e))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| Error::system("signalfd", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_take_their_cpus_in_turn_or_none() {
        use CpuAffinity::{Auto, List, Unpinned};
        let allowed = [0, 1, 2, 3];
        for (workers, affinity, slots) in [
            (
                Workers::Auto,
                Auto,
                vec![Some(0), Some(1), Some(2), Some(3)],
            ),
            (Workers::Count(2), Auto, vec![Some(0), Some(1)]),
            (
                Workers::Count(5),
                Auto,
                vec![Some(0), Some(1), Some(2), Some(3), Some(0)],
            ),
            (Workers::Auto, Unpinned, vec![None; 4]),
            (Workers::Count(1), Unpinned, vec![None]),
            (Workers::Auto, List(vec![3, 1]), vec![Some(3), Some(1)]),
            (
                Workers::Count(3),
                List(vec![3, 1]),
                vec![Some(3), Some(1), Some(3)],
            ),
            (Workers::Count(1), List(vec![2]), vec![Some(2)]),
        ] {
            let got = slot_cpus(workers, &affinity, &allowed).unwrap();
            assert_eq!(got, slots, "{workers:?} {affinity:?}");
        }
    }

    #[test]
    fn a_listed_cpu_outside_the_mask_is_refused_naming_it_and_the_allowed_ones() {
        let err = slot_cpus(Workers::Auto, &CpuAffinity::List(vec![0, 5]), &[0, 1, 2, 6])
            .unwrap_err()
            .to_string();
        assert!(err.contains("cpu 5,"), "{err}");
        assert!(err.contains("allows 0-2,6"), "{err}");
    }

    #[test]
    fn cpu_lists_are_written_as_ranges() {
        for (cpus, text) in [
            (&[][..], ""),
            (&[0][..], "0"),
            (&[0, 1][..], "0-1"),
            (&[0, 2, 4, 5, 6, 7][..], "0,2,4-7"),
            (&[1, 3, 4][..], "1,3-4"),
        ] {
            assert_eq!(cpu_list(cpus), text);
        }
    }
}
