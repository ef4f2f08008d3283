//! Forking a worker: its pipes, the master's descriptors the child must close, and the
//! child's side (it dies with the master, pins itself unless unpinned, and runs the worker
//! until it exits).
//! Owns no state: the parent gets the new worker's record, for the supervisor, and keeps
//! its pipes ([`super::pipes`]).

use super::child::Child;
use super::pipes::Pipes;
use super::recycle::jitter;
use super::{HookEvent, Master};
use crate::config::{Config, CpuName};
use crate::error::Error;
use crate::log::log;
use crate::worker;
use crate::Serve;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::unistd::{fork, ForkResult, Pid};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

/// The ends of a worker's two pipes.
struct Ends {
    worker_reads: OwnedFd,
    master_writes: OwnedFd,
    master_reads: OwnedFd,
    worker_writes: OwnedFd,
}

impl Ends {
    fn new() -> Result<Ends, Error> {
        let pipe = || {
            nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
                .map_err(|e| Error::system("pipe2", e))
        };
        let (worker_reads, master_writes) = pipe()?;
        let (master_reads, worker_writes) = pipe()?;
        Ok(Ends {
            worker_reads,
            master_writes,
            master_reads,
            worker_writes,
        })
    }
}

impl<H: Serve> Master<'_, H> {
    /// Forks a worker for `slot`; the supervisor gets the returned record. A successor of a
    /// reload (`reload`) runs the binary opened for that reload; any other worker runs its
    /// generation's binary (the one the last completed reload ran, else this image).
    pub(super) fn fork_worker(&mut self, slot: usize, reload: bool) -> Result<Child, Error> {
        let ends = Ends::new()?;
        // SAFETY: the master is single-threaded (Server::run requires it), so the child
        // inherits no lock held by another thread; it runs the worker and exits without
        // returning into the master's code.
        match unsafe { fork() } {
            Err(e) => Err(Error::system("fork", e)),
            Ok(ForkResult::Child) => self.become_worker(slot, ends, reload),
            Ok(ForkResult::Parent { child }) => {
                let mut child = self.forked(slot, child, ends);
                child.generation = self.binary.generation + u64::from(reload);
                Ok(child)
            }
        }
    }

    /// The parent's side: keeps the pipes, tells the `fork` hook.
    fn forked(&mut self, slot: usize, pid: Pid, ends: Ends) -> Child {
        drop((ends.worker_reads, ends.worker_writes));
        let (cpu, index) = (self.sup.slots[slot].cpu, self.sup.slots[slot].index);
        log!(
            slot = index,
            pid = pid.as_raw(),
            cpu = %CpuName(cpu),
            "worker {index} started (pid {pid}, cpu {})",
            CpuName(cpu)
        );
        self.pipes.push(Pipes::new(
            pid,
            index,
            ends.master_writes,
            ends.master_reads,
        ));
        let recycle_after = self
            .config
            .max_requests
            .map(|n| n + jitter(self.config.max_requests_jitter));
        let ready_timeout = self.sup.settings.ready_timeout;
        let child = Child::forked(
            pid,
            index,
            cpu,
            Instant::now(),
            ready_timeout,
            recycle_after,
        );
        self.call_hook(HookEvent::Fork(child.info()));
        child
    }

    /// The child's side: closes the master's descriptors, runs the worker, exits.
    fn become_worker(&self, slot: usize, ends: Ends, reload: bool) -> ! {
        for fd in self.foreign_descriptors(&ends) {
            // The child's copies of the master's descriptors, which it never uses (their
            // owners' destructors never run here, as the child leaves through `exit`). A
            // close that fails leaves nothing to do: the result is ignored.
            let _ = nix::unistd::close(fd);
        }
        let (cpu, index) = (self.sup.slots[slot].cpu, self.sup.slots[slot].index);
        // The worker's own descriptor for the log: the master's stays the master's.
        let access_log = self.access_log.as_ref().and_then(|f| f.try_clone().ok());
        let setup = worker::Setup {
            slot: index,
            cpu,
            // It keeps every listening socket: its own, and those it may be asked to adopt.
            listeners: self.listeners.all(),
            from_master: ends.worker_reads,
            to_master: ends.worker_writes,
            accept_queue: self.accept_queue,
            access_log,
        };
        let code = match self.binary.for_worker(reload) {
            Some(exe) => {
                let direct = self.config.uring.direct_descriptors;
                let handed = super::exec::handed(&setup, self.pid.as_raw(), direct);
                let config = self.binary.config_for_worker(reload);
                super::exec::exec_worker(exe.as_raw_fd(), &handed, config)
            }
            None => child_main(self.config, self.handler, cpu, self.pid, setup),
        };
        std::process::exit(code);
    }

    /// Descriptors a new worker must not keep: everything the master owns but the listening
    /// sockets and the access log.
    fn foreign_descriptors(&self, ends: &Ends) -> Vec<RawFd> {
        let mut foreign: Vec<RawFd> = vec![
            self.signals.as_raw_fd(),
            ends.master_writes.as_raw_fd(),
            ends.master_reads.as_raw_fd(),
        ];
        foreign.extend(self.control.descriptors().map(|fd| fd.as_raw_fd()));
        if let Some(m) = &self.metrics {
            foreign.extend(m.descriptors().map(|fd| fd.as_raw_fd()));
        }
        for p in &self.pipes {
            foreign.push(p.to_worker.as_raw_fd());
            foreign.extend(p.from_worker.as_ref().map(|f| f.as_raw_fd()));
        }
        foreign
    }
}

/// The worker side of a fork: dies with the master, pins itself, runs, and returns an exit
/// code. A panic in the worker ends here as exit code 101, never back in the master's code.
pub(super) fn child_main<H: Serve>(
    config: &Config,
    handler: &H,
    cpu: Option<usize>,
    master: Pid,
    setup: worker::Setup,
) -> i32 {
    let _worker = crate::log::set_worker(setup.slot);
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        log!("PR_SET_PDEATHSIG: {e}");
        return 1;
    }
    // The master may have died between fork and prctl; then nobody would kill this worker.
    if nix::unistd::getppid() != master {
        return 1;
    }
    // Unpinned, the worker keeps the master's affinity mask, as `fork` leaves it.
    if let Some(id) = cpu {
        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
            tracing::warn!("could not pin to cpu {id}; running unpinned");
        }
    }
    // A panic is one log line, where the default hook writes several to stderr. A handler
    // that wants its own hook sets it in `Handler::start`, which runs after this.
    std::panic::set_hook(Box::new(worker::log_panic));
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        worker::run(config, handler, setup)
    }))
    .unwrap_or(101)
}
