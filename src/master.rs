//! The master: binds the listener, forks one pinned worker per slot, and supervises them
//! from one thread, waiting in `poll(2)` on a signalfd and the workers' pipes.
//!
//! It never owns an io_uring a child could inherit: the start-up probe's ring is gone
//! before the first fork.

use crate::config::{Config, Workers};
use crate::error::{self, Error, ErrorKind};
use crate::ipc::{self, Message};
use crate::log::log;
use crate::worker::{self, EXIT_CONFIG};
use crate::Handler;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{self as sock, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, getpid, ForkResult, Pid};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The first respawn after a healthy run is immediate; each further failure in a row waits
/// twice as long as the one before, starting here.
const RESPAWN_DELAY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait before a respawn.
const RESPAWN_DELAY_MAX: Duration = Duration::from_secs(10);
/// A worker that stayed up this long resets its slot's backoff.
const HEALTHY_UPTIME: Duration = Duration::from_secs(30);
/// A slot whose workers fail this many times within [`FAILURE_WINDOW`] is marked errored.
const FAILURES_MAX: usize = 5;
/// The window in which [`FAILURES_MAX`] failures mark a slot errored.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Bytes read from a worker's pipe at once.
const PIPE_READ_BYTES: usize = ipc::FRAME_BYTES_MAX;

/// Runs the master until shutdown. See [`Server::run`](crate::Server::run).
pub(crate) fn run<H: Handler>(config: &Config, handler: &H) -> Result<(), Error> {
    config.validate()?;
    check_uring()?;
    let cpus = allowed_cpus()?;
    let count = match config.workers {
        Workers::Auto => cpus.len(),
        Workers::Count(n) => n as usize,
    };
    // SAFETY: SIG_IGN for SIGPIPE: a write to a closed pipe or socket fails with EPIPE
    // instead of killing the process. Workers inherit the disposition.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn) }
        .map_err(|e| Error::system("ignoring SIGPIPE", e))?;
    let listener = bind(config.listen, config.backlog)?;
    let local: SocketAddr = sock::getsockname::<SockaddrStorage>(listener.as_raw_fd())
        .ok()
        .and_then(|s| to_std_addr(&s))
        .ok_or_else(|| Error::system("getsockname", "no address"))?;
    let signals = master_signals()?;
    log!("listening on {local} ({count} workers)");
    let mut master = Master {
        config,
        handler,
        listener,
        accept_queue: accept_queue(config.backlog),
        signals,
        slots: (0..count)
            .map(|i| Slot::new(i as u32, cpus[i % cpus.len()]))
            .collect(),
        state: State::Running,
        pid: getpid(),
    };
    for slot in 0..count {
        master.spawn(slot)?;
    }
    master.supervise()
}

/// Probes io_uring before any fork, so that a missing or blocked io_uring is one clear
/// error from the master instead of every worker failing.
fn check_uring() -> Result<(), Error> {
    let features = ringmaster_uring::Features::probe().map_err(|e| error::uring_unavailable(&e))?;
    let missing = features.missing();
    if !missing.is_empty() {
        return Err(Error::new(
            ErrorKind::UringUnavailable,
            format!(
                "this kernel's io_uring lacks {}; ringmaster needs Linux 6.1 or newer",
                missing.join(", ")
            ),
        ));
    }
    Ok(())
}

/// The CPUs in this process's affinity mask, in order.
fn allowed_cpus() -> Result<Vec<core_affinity::CoreId>, Error> {
    match core_affinity::get_core_ids() {
        Some(cpus) if !cpus.is_empty() => Ok(cpus),
        _ => Err(Error::system("sched_getaffinity", "no CPU is allowed")),
    }
}

fn bind(addr: SocketAddr, backlog: u32) -> Result<OwnedFd, Error> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = sock::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| Error::system("socket", e))?;
    sock::setsockopt(&fd, sockopt::ReuseAddr, &true)
        .map_err(|e| Error::system("SO_REUSEADDR", e))?;
    // Accepted sockets inherit TCP_NODELAY from the listener: responses go out at once.
    sock::setsockopt(&fd, sockopt::TcpNoDelay, &true)
        .map_err(|e| Error::system("TCP_NODELAY", e))?;
    sock::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(|e| bind_error(addr, e))?;
    let backlog = sock::Backlog::new(backlog.min(i32::MAX as u32) as i32)
        .map_err(|e| Error::config(format!("backlog: {e}")))?;
    sock::listen(&fd, backlog).map_err(|e| Error::system("listen", e))?;
    Ok(fd)
}

fn bind_error(addr: SocketAddr, e: Errno) -> Error {
    match e {
        Errno::EADDRINUSE => Error::new(
            ErrorKind::AddressInUse,
            format!(
                "address {addr} is already in use by another process; stop it, or choose \
                 another address with --listen (port 0 picks a free port)"
            ),
        ),
        Errno::EACCES => Error::new(
            ErrorKind::Bind,
            format!(
                "binding {addr} is not permitted (ports below 1024 need root or \
                 CAP_NET_BIND_SERVICE); use a higher port or grant the capability"
            ),
        ),
        Errno::EADDRNOTAVAIL => Error::new(
            ErrorKind::Bind,
            format!(
                "address {addr} is not an address of this host; use 0.0.0.0, 127.0.0.1 or \
                 one of this host's addresses"
            ),
        ),
        e => Error::new(ErrorKind::Bind, format!("binding {addr} failed: {e}")),
    }
}

fn to_std_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    s.as_sockaddr_in6()
        .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}

/// The accept queue length the kernel will use: the backlog, capped by `somaxconn`.
fn accept_queue(backlog: u32) -> u32 {
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(4096);
    backlog.min(somaxconn)
}

/// Blocks the signals the master handles and returns a signalfd reading them. Workers
/// inherit the mask; it keeps a signal sent to the whole process group from killing them
/// before they have drained.
fn master_signals() -> Result<SignalFd, Error> {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| Error::system("blocking signals", e))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| Error::system("signalfd", e))
}

/// The master's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    /// Workers were told to drain; any still alive at `deadline` are killed.
    ShuttingDown {
        deadline: Instant,
    },
}

/// A worker process and the master's ends of its pipes.
struct Child {
    pid: Pid,
    started: Instant,
    ready: bool,
    /// Master → worker.
    to_worker: OwnedFd,
    /// Worker → master; `None` once the worker closed it.
    from_worker: Option<OwnedFd>,
    /// Bytes read from the worker that do not make a whole frame yet.
    pending: Vec<u8>,
    stats: ipc::Stats,
}

/// What a slot is doing.
enum SlotState {
    Running(Child),
    /// Waiting to respawn at the instant.
    Waiting(Instant),
    /// Gave up after repeated failures.
    Errored,
    /// Its worker exited during shutdown.
    Stopped,
}

/// One worker position: a CPU, and the worker currently filling it.
struct Slot {
    index: u32,
    cpu: core_affinity::CoreId,
    state: SlotState,
    /// The next respawn delay after a failure (zero after a healthy run).
    backoff: Duration,
    /// When recent failures happened, oldest first, at most [`FAILURES_MAX`].
    failures: Vec<Instant>,
    restarts: u32,
}

impl Slot {
    fn new(index: u32, cpu: core_affinity::CoreId) -> Slot {
        Slot {
            index,
            cpu,
            state: SlotState::Waiting(Instant::now()),
            backoff: Duration::ZERO,
            failures: Vec::with_capacity(FAILURES_MAX),
            restarts: 0,
        }
    }

    fn child(&self) -> Option<&Child> {
        match &self.state {
            SlotState::Running(c) => Some(c),
            _ => None,
        }
    }
}

struct Master<'a, H> {
    config: &'a Config,
    handler: &'a H,
    listener: OwnedFd,
    accept_queue: u32,
    signals: SignalFd,
    slots: Vec<Slot>,
    state: State,
    pid: Pid,
}

impl<H: Handler> Master<'_, H> {
    /// Forks the worker of `slot`.
    fn spawn(&mut self, slot: usize) -> Result<(), Error> {
        let pipe = || {
            nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
                .map_err(|e| Error::system("pipe2", e))
        };
        let (worker_reads, master_writes) = pipe()?;
        let (master_reads, worker_writes) = pipe()?;
        // Descriptors the child must not keep: the master's own and other workers' pipes.
        let mut foreign: Vec<RawFd> = vec![
            self.signals.as_raw_fd(),
            master_writes.as_raw_fd(),
            master_reads.as_raw_fd(),
        ];
        for s in &self.slots {
            if let Some(c) = s.child() {
                foreign.push(c.to_worker.as_raw_fd());
                foreign.extend(c.from_worker.as_ref().map(|f| f.as_raw_fd()));
            }
        }
        let cpu = self.slots[slot].cpu;
        let index = self.slots[slot].index;
        // SAFETY: the master is single-threaded (Server::run requires it), so the child
        // inherits no lock held by another thread; it runs the worker and exits without
        // returning into the master's code.
        match unsafe { fork() } {
            Err(e) => Err(Error::system("fork", e)),
            Ok(ForkResult::Child) => {
                for fd in foreign {
                    // SAFETY: these descriptors belong to the master; the child closes its
                    // copies and never uses them (their owners' destructors never run here).
                    unsafe { libc::close(fd) };
                }
                let setup = worker::Setup {
                    slot: index,
                    listener: self.listener.as_raw_fd(),
                    from_master: worker_reads,
                    to_master: worker_writes,
                    accept_queue: self.accept_queue,
                };
                let code = child_main(self.config, self.handler, cpu, self.pid, setup);
                std::process::exit(code);
            }
            Ok(ForkResult::Parent { child }) => {
                drop((worker_reads, worker_writes));
                log!("worker {index} started (pid {child}, cpu {})", cpu.id);
                self.slots[slot].state = SlotState::Running(Child {
                    pid: child,
                    started: Instant::now(),
                    ready: false,
                    to_worker: master_writes,
                    from_worker: Some(master_reads),
                    pending: Vec::with_capacity(2 * PIPE_READ_BYTES),
                    stats: ipc::Stats::default(),
                });
                Ok(())
            }
        }
    }

    /// The supervision loop: returns after a graceful shutdown, or with an error when every
    /// slot has errored.
    fn supervise(&mut self) -> Result<(), Error> {
        loop {
            if let State::ShuttingDown { .. } = self.state {
                if self.slots.iter().all(|s| s.child().is_none()) {
                    log!("all workers stopped; exiting");
                    return Ok(());
                }
            } else if self
                .slots
                .iter()
                .all(|s| matches!(s.state, SlotState::Errored))
            {
                return Err(Error::new(
                    ErrorKind::WorkersFailed,
                    "every worker slot has errored (workers keep failing); see the log above \
                     for their exits, fix the cause, and start again",
                ));
            }
            let timeout = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            let ready = self.wait(timeout)?;
            if ready.signals {
                self.on_signals()?;
            }
            for slot in ready.pipes {
                self.on_pipe(slot);
            }
            self.on_deadlines()?;
        }
    }

    /// The earliest instant something is due: a respawn or the drain deadline.
    fn next_deadline(&self) -> Option<Instant> {
        let respawn = self.slots.iter().filter_map(|s| match s.state {
            SlotState::Waiting(at) if self.state == State::Running => Some(at),
            _ => None,
        });
        let drain = match self.state {
            State::ShuttingDown { deadline } => Some(deadline),
            State::Running => None,
        };
        respawn.chain(drain).min()
    }

    /// Waits in `poll(2)` for a signal, a worker's pipe, or `timeout`.
    fn wait(&self, timeout: Option<Duration>) -> Result<Ready, Error> {
        let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        let mut owners = Vec::with_capacity(self.slots.len());
        for (i, s) in self.slots.iter().enumerate() {
            if let Some(fd) = s.child().and_then(|c| c.from_worker.as_ref()) {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                owners.push(i);
            }
        }
        let timeout = match timeout {
            None => PollTimeout::NONE,
            // Round up so a deadline is never polled for a zero timeout repeatedly.
            Some(d) => PollTimeout::try_from(d.as_millis().saturating_add(1).min(60_000) as u32)
                .unwrap_or(PollTimeout::MAX),
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::system("poll", e)),
        }
        let signals = fds[0].any().unwrap_or(false);
        let pipes = fds[1..]
            .iter()
            .zip(owners)
            .filter(|(fd, _)| fd.any().unwrap_or(false))
            .map(|(_, slot)| slot)
            .collect();
        Ok(Ready { signals, pipes })
    }

    fn on_signals(&mut self) -> Result<(), Error> {
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => self.reap(),
                Ok(s @ (Signal::SIGTERM | Signal::SIGINT)) => self.shutdown(s),
                Ok(Signal::SIGHUP) => log!("SIGHUP ignored: rolling reload is not available yet"),
                _ => {}
            }
        }
        Ok(())
    }

    /// Starts a graceful shutdown; a second signal during one kills the workers now.
    fn shutdown(&mut self, signal: Signal) {
        match self.state {
            State::Running => {
                let drain = self.config.drain_timeout;
                log!(
                    "{signal}: shutting down (drain timeout {}s)",
                    drain.as_secs_f64()
                );
                self.state = State::ShuttingDown {
                    deadline: Instant::now() + drain,
                };
                let msg = Message::Shutdown {
                    drain_ms: drain.as_millis() as u64,
                };
                for s in &mut self.slots {
                    match &s.state {
                        SlotState::Running(c) => send(c, &msg),
                        SlotState::Waiting(_) => s.state = SlotState::Stopped,
                        _ => {}
                    }
                }
            }
            State::ShuttingDown { .. } => {
                log!("{signal} again: killing the workers now");
                self.kill_all();
            }
        }
    }

    fn kill_all(&mut self) {
        for s in &self.slots {
            if let Some(c) = s.child() {
                // ESRCH means it is already gone; the SIGCHLD will tell.
                let _ = kill(c.pid, Signal::SIGKILL);
            }
        }
    }

    /// Collects every exited worker and decides what its slot does next.
    fn reap(&mut self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => status,
            };
            let (pid, how, config_error) = match status {
                WaitStatus::Exited(pid, code) => {
                    (pid, format!("exit code {code}"), code == EXIT_CONFIG)
                }
                WaitStatus::Signaled(pid, sig, _) => (pid, format!("signal {sig}"), false),
                _ => continue,
            };
            let Some(slot) = self
                .slots
                .iter()
                .position(|s| s.child().is_some_and(|c| c.pid == pid))
            else {
                continue;
            };
            self.on_exit(slot, pid, &how, config_error);
        }
    }

    fn on_exit(&mut self, slot: usize, pid: Pid, how: &str, config_error: bool) {
        let shutting_down = self.state != State::Running;
        let s = &mut self.slots[slot];
        let SlotState::Running(child) = std::mem::replace(&mut s.state, SlotState::Stopped) else {
            unreachable!("reaped a worker its slot does not run")
        };
        log!(
            "worker {} exited (pid {pid}, cpu {}, {how}, {} requests)",
            s.index,
            s.cpu.id,
            child.stats.requests
        );
        if shutting_down {
            return;
        }
        if config_error && !child.ready {
            log!(
                "worker {} ERRORED: it cannot start with this configuration (see its log \
                 line above); not respawning it",
                s.index
            );
            s.state = SlotState::Errored;
            return;
        }
        let now = Instant::now();
        if now.duration_since(child.started) >= HEALTHY_UPTIME {
            s.backoff = Duration::ZERO;
            s.failures.clear();
        }
        if s.failures.len() == FAILURES_MAX {
            s.failures.remove(0);
        }
        s.failures.push(now);
        if s.failures.len() == FAILURES_MAX && now.duration_since(s.failures[0]) <= FAILURE_WINDOW {
            log!(
                "worker {} ERRORED: {FAILURES_MAX} failures within {}s; not respawning it",
                s.index,
                FAILURE_WINDOW.as_secs()
            );
            s.state = SlotState::Errored;
            return;
        }
        let delay = s.backoff;
        s.backoff = (delay * 2).clamp(RESPAWN_DELAY_FIRST, RESPAWN_DELAY_MAX);
        log!(
            "worker {} respawning on cpu {} in {}ms",
            s.index,
            s.cpu.id,
            delay.as_millis()
        );
        s.state = SlotState::Waiting(now + delay);
    }

    /// Reads what a worker sent.
    fn on_pipe(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        let index = s.index;
        let SlotState::Running(child) = &mut s.state else {
            return;
        };
        let Some(fd) = child.from_worker.as_ref() else {
            return;
        };
        let mut buf = [0u8; PIPE_READ_BYTES];
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => {
                // The worker closed its end (it is exiting); SIGCHLD follows.
                child.from_worker = None;
                return;
            }
            Ok(n) => child.pending.extend_from_slice(&buf[..n]),
            Err(Errno::EAGAIN | Errno::EINTR) => return,
            Err(e) => {
                log!("worker {index}: reading its pipe: {e}");
                child.from_worker = None;
                return;
            }
        }
        let mut used = 0;
        loop {
            match ipc::decode(&child.pending[used..]) {
                Ok(Some((msg, len))) => {
                    used += len;
                    match msg {
                        Message::Ready => {
                            child.ready = true;
                            log!("worker {index} ready (pid {})", child.pid);
                        }
                        Message::Stats(stats) => child.stats = stats,
                        other => log!("worker {index}: unexpected message {other:?}"),
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    log!("worker {index}: garbage on its pipe ({e}); killing it");
                    let _ = kill(child.pid, Signal::SIGKILL);
                    child.from_worker = None;
                    return;
                }
            }
        }
        child.pending.drain(..used);
    }

    /// Respawns slots whose delay has passed; kills what is left at the drain deadline.
    fn on_deadlines(&mut self) -> Result<(), Error> {
        let now = Instant::now();
        match self.state {
            State::Running => {
                for slot in 0..self.slots.len() {
                    if let SlotState::Waiting(at) = self.slots[slot].state {
                        if at <= now {
                            self.slots[slot].restarts += 1;
                            if let Err(e) = self.spawn(slot) {
                                log!("worker {slot}: {e}; retrying");
                                self.slots[slot].state =
                                    SlotState::Waiting(now + RESPAWN_DELAY_MAX);
                            }
                        }
                    }
                }
            }
            State::ShuttingDown { deadline } if now >= deadline => {
                let left = self.slots.iter().filter(|s| s.child().is_some()).count();
                if left > 0 {
                    log!("drain timeout: killing {left} workers");
                    self.kill_all();
                }
                // Wait for their SIGCHLD; the next deadline is a second away.
                self.state = State::ShuttingDown {
                    deadline: now + Duration::from_secs(1),
                };
            }
            State::ShuttingDown { .. } => {}
        }
        Ok(())
    }
}

/// What `poll` found ready.
struct Ready {
    signals: bool,
    /// Slots whose pipe is readable (or closed).
    pipes: Vec<usize>,
}

/// Sends `msg` to a worker without blocking: if its pipe is full the worker is not reading
/// and will meet the drain deadline.
fn send(child: &Child, msg: &Message) {
    let mut frame = Vec::with_capacity(ipc::FRAME_BYTES_MAX);
    if ipc::encode(msg, &mut frame).is_ok() {
        if let Err(e) = nix::unistd::write(&child.to_worker, &frame) {
            log!("message to worker pid {} not sent: {e}", child.pid);
        }
    }
}

/// The worker side of a fork: dies with the master, pins itself, runs, and returns an exit
/// code. A panic in the worker ends up here as exit code 101, never back in the master's
/// code.
fn child_main<H: Handler>(
    config: &Config,
    handler: &H,
    cpu: core_affinity::CoreId,
    master: Pid,
    setup: worker::Setup,
) -> i32 {
    crate::log::set_worker(setup.slot);
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        log!("PR_SET_PDEATHSIG: {e}");
        return 1;
    }
    // The master may have died between fork and prctl; then nobody would kill this worker.
    if nix::unistd::getppid() != master {
        return 1;
    }
    if !core_affinity::set_for_current(cpu) {
        log!("could not pin to cpu {}; running unpinned", cpu.id);
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        worker::run(config, handler, setup)
    }))
    .unwrap_or(101)
}
