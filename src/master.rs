//! The master: binds the listener(s), forks one pinned worker per slot, and supervises them
//! from one thread, waiting in `poll(2)` on a signalfd, the workers' pipes and the control
//! socket. It respawns workers with a growing delay, gives up on slots that keep failing,
//! replaces every worker without dropping a request on reload, and drains them on shutdown.
//!
//! It never owns an io_uring a child could inherit: the start-up probe's ring is gone
//! before the first fork.

mod listeners;
mod replace;
mod report;
mod respawn;
mod startup;

use listeners::{accept_queue, Listeners};
use replace::{jitter, Reload};
use report::rss_kib;
use respawn::{GaveUp, Verdict, RESPAWN_DELAY_MAX};

use crate::cluster::{self, Cluster, Exit, Hooks, WorkerInfo};
use crate::config::{Config, ListenMode, Workers};
use crate::control::{self, ControlServer};
use crate::error::{Error, ErrorKind};
use crate::ipc::{self, Message};
use crate::log::{log, log_limited};
use crate::metrics::{MetricsServer, Route, WorkerMetrics};
use crate::systemd;
use crate::worker;
use crate::Handler;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{self as sock, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, getpid, ForkResult, Pid};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Bytes read from a worker's pipe at once.
const PIPE_READ_BYTES: usize = ipc::FRAME_BYTES_MAX;
/// After the drain deadline's kill, the master waits this long for the exits to be reaped.
const KILL_REAP_WAIT: Duration = Duration::from_secs(1);
/// A stuck worker that survives its `SIGABRT` this long gets `SIGKILL`.
const KILL_AFTER_ABORT: Duration = Duration::from_secs(1);

/// Runs the master until shutdown. See [`Server::run`](crate::Server::run).
pub(crate) fn run<H: Handler>(
    config: &Config,
    handler: &H,
    hooks: &mut Hooks,
) -> Result<(), Error> {
    let (config, access_log) = startup::prepare(config)?;
    let config = &config;
    let cpus = startup::allowed_cpus()?;
    let count = match config.workers {
        Workers::Auto => cpus.len(),
        Workers::Count(n) => n as usize,
    };
    startup::ignore_sigpipe()?;
    // Inherited sockets first: they sit at descriptors 3 and up, which anything opened
    // before would be given.
    let inherited = systemd::listen_fds()?;
    let notifier = systemd::Notifier::from_env();
    // With a fixed port, a second master must be refused before it binds: SO_REUSEPORT
    // would let it join the first one's group silently.
    let control_origin = control::PathOrigin::of(config.control.as_deref());
    if config.listen.port() != 0 && inherited.is_empty() {
        ControlServer::check_free(&config.control_path(config.listen.port()))?;
    }
    let listeners = if inherited.is_empty() {
        Listeners::bind(config, count)?
    } else {
        Listeners::inherited(inherited, count)
    };
    let local = listeners.local_addr()?;
    let control = ControlServer::bind(&config.control_path(local.port()), control_origin)?;
    let metrics = config.metrics.map(MetricsServer::bind).transpose()?;
    let signals = startup::master_signals()?;
    let mode = match (&listeners, config.listen_mode) {
        (Listeners::Shared(_), _) if config.listen_mode == ListenMode::ReusePort => {
            "one socket from systemd, shared"
        }
        (Listeners::Shared(_), _) => "shared listener",
        (Listeners::PerSlot(_), _) => "SO_REUSEPORT listener per worker",
    };
    log!(
        "listening on {local} ({count} workers, {mode}, control {}{})",
        config.control_path(local.port()).display(),
        metrics
            .as_ref()
            .and_then(MetricsServer::local_addr)
            .map_or(String::new(), |a| format!(", metrics http://{a}/metrics"))
    );
    let mut master = Master {
        config,
        handler,
        hooks,
        listeners,
        accept_queue: accept_queue(config.backlog),
        signals,
        control,
        slots: (0..count)
            .map(|i| Slot::new(i as u32, cpus[i % cpus.len()]))
            .collect(),
        retiring: Vec::with_capacity(count),
        state: State::Running,
        reload: None,
        reload_queued: None,
        pid: getpid(),
        events: Vec::with_capacity(crate::inbox::CONNECTIONS_MAX),
        adopters: vec![None; count],
        started: Instant::now(),
        notifier,
        metrics,
        announced_ready: false,
        watchdog_at: None,
        access_log,
    };
    master.watchdog_at = master
        .notifier
        .watchdog_every()
        .map(|every| Instant::now() + every);
    master.notify_status();
    for slot in 0..count {
        let child = master.fork_worker(slot)?;
        master.slots[slot].state = SlotState::Running(child);
    }
    master.supervise()
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
    cpu: usize,
    slot: u32,
    started: Instant,
    ready: bool,
    /// Master → worker.
    to_worker: OwnedFd,
    /// Worker → master; `None` once the worker closed it.
    from_worker: Option<OwnedFd>,
    /// Bytes read from the worker that do not make a whole frame yet.
    pending: Vec<u8>,
    stats: ipc::Stats,
    /// When the worker last sent anything (its stats come every second): the heartbeat.
    heard: Instant,
    /// When it was sent `SIGABRT` for missing its heartbeat; `SIGKILL` follows.
    aborted: Option<Instant>,
    /// Recycle it after this many requests (`--max-requests` plus jitter).
    recycle_after: Option<u64>,
    /// A retiring worker is killed at this instant if it has not drained by then.
    retire_by: Option<Instant>,
}

impl Child {
    fn info(&self) -> WorkerInfo {
        WorkerInfo {
            slot: self.slot,
            pid: self.pid.as_raw() as u32,
            cpu: self.cpu,
        }
    }
}

/// What a slot is doing.
// There is one per CPU, so the size of the `Running` variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum SlotState {
    Running(Child),
    /// Waiting to respawn at the instant.
    Waiting(Instant),
    /// Gave up: its workers cannot start.
    Errored(GaveUp),
    /// Its worker exited during shutdown.
    Stopped,
}

/// One worker position: a CPU, the worker filling it, and during a reload its successor.
struct Slot {
    index: u32,
    cpu: core_affinity::CoreId,
    state: SlotState,
    /// The new worker of a reload or a recycle, until it is ready (and its deadline).
    incoming: Option<(Child, Instant)>,
    /// Whether `incoming` replaces the worker for a recycle rather than a reload.
    recycling: bool,
    /// Totals of the slot's earlier workers, so that exported counters never go down.
    past: ipc::Stats,
    /// A failed recycle is not retried before this instant.
    recycle_pause: Option<Instant>,
    /// Recent exits, for the crash-loop guard.
    history: respawn::History,
    restarts: u32,
}

impl Slot {
    fn new(index: u32, cpu: core_affinity::CoreId) -> Slot {
        Slot {
            index,
            cpu,
            state: SlotState::Stopped,
            incoming: None,
            recycling: false,
            past: ipc::Stats::default(),
            recycle_pause: None,
            history: respawn::History::default(),
            restarts: 0,
        }
    }

    fn child(&self) -> Option<&Child> {
        match &self.state {
            SlotState::Running(c) => Some(c),
            _ => None,
        }
    }

    fn state_name(&self) -> &'static str {
        match &self.state {
            SlotState::Running(c) if c.ready => "ready",
            SlotState::Running(_) => "starting",
            SlotState::Waiting(_) => "respawning",
            SlotState::Errored(_) => "errored",
            SlotState::Stopped => "stopped",
        }
    }
}

/// Where a reaped worker was.
enum Place {
    Slot(usize),
    Incoming(usize),
    Retiring(usize),
}

struct Master<'a, H> {
    config: &'a Config,
    handler: &'a H,
    hooks: &'a mut Hooks,
    listeners: Listeners,
    accept_queue: u32,
    signals: SignalFd,
    control: ControlServer,
    slots: Vec<Slot>,
    /// Workers replaced by a reload, draining.
    retiring: Vec<Child>,
    state: State,
    reload: Option<Reload>,
    /// A reload requested while one was running runs after it (its waiters want workers
    /// forked after they asked); requests meanwhile are merged into it.
    reload_queued: Option<Vec<u64>>,
    pid: Pid,
    events: Vec<(u64, control::Command)>,
    /// In `SO_REUSEPORT` mode, the worker accepting on each slot's socket while that slot
    /// has no ready worker of its own.
    adopters: Vec<Option<Pid>>,
    started: Instant,
    notifier: systemd::Notifier,
    metrics: Option<MetricsServer>,
    /// `READY=1` was sent since the last start or reload.
    announced_ready: bool,
    /// When to send the next `WATCHDOG=1` to systemd.
    watchdog_at: Option<Instant>,
    /// The access log, handed to each worker at fork.
    access_log: Option<OwnedFd>,
}

impl<H: Handler> Master<'_, H> {
    /// Forks a worker for `slot`.
    fn fork_worker(&mut self, slot: usize) -> Result<Child, Error> {
        let pipe = || {
            nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
                .map_err(|e| Error::system("pipe2", e))
        };
        let (worker_reads, master_writes) = pipe()?;
        let (master_reads, worker_writes) = pipe()?;
        // The child keeps every listening socket: its own, and those it may be asked to adopt.
        let listeners = self.listeners.all();
        // Descriptors the child must not keep: everything else the master owns.
        let mut foreign: Vec<RawFd> = vec![
            self.signals.as_raw_fd(),
            master_writes.as_raw_fd(),
            master_reads.as_raw_fd(),
        ];
        foreign.extend(self.control.descriptors().map(|fd| fd.as_raw_fd()));
        if let Some(m) = &self.metrics {
            foreign.extend(m.descriptors().map(|fd| fd.as_raw_fd()));
        }
        for child in self.children() {
            foreign.push(child.to_worker.as_raw_fd());
            foreign.extend(child.from_worker.as_ref().map(|f| f.as_raw_fd()));
        }
        let (cpu, index) = (self.slots[slot].cpu, self.slots[slot].index);
        // SAFETY: the master is single-threaded (Server::run requires it), so the child
        // inherits no lock held by another thread; it runs the worker and exits without
        // returning into the master's code.
        match unsafe { fork() } {
            Err(e) => Err(Error::system("fork", e)),
            Ok(ForkResult::Child) => {
                for fd in foreign {
                    // SAFETY: these descriptors belong to the master; the child closes its
                    // copies and never uses them (their owners' destructors never run here,
                    // as the child leaves through `exit`).
                    unsafe { libc::close(fd) };
                }
                // The worker's own descriptor for the log: the master's stays the master's.
                let access_log = self.access_log.as_ref().and_then(|f| f.try_clone().ok());
                let setup = worker::Setup {
                    slot: index,
                    cpu: cpu.id,
                    listeners,
                    from_master: worker_reads,
                    to_master: worker_writes,
                    accept_queue: self.accept_queue,
                    access_log,
                };
                let code = child_main(self.config, self.handler, cpu, self.pid, setup);
                std::process::exit(code);
            }
            Ok(ForkResult::Parent { child }) => {
                drop((worker_reads, worker_writes));
                log!("worker {index} started (pid {child}, cpu {})", cpu.id);
                let child = Child {
                    pid: child,
                    cpu: cpu.id,
                    slot: index,
                    started: Instant::now(),
                    ready: false,
                    to_worker: master_writes,
                    from_worker: Some(master_reads),
                    pending: Vec::with_capacity(2 * PIPE_READ_BYTES),
                    stats: ipc::Stats::default(),
                    heard: Instant::now(),
                    aborted: None,
                    recycle_after: self
                        .config
                        .max_requests
                        .map(|n| n + jitter(self.config.max_requests_jitter)),
                    retire_by: None,
                };
                self.call_hook(HookEvent::Fork(child.info()));
                Ok(child)
            }
        }
    }

    /// Every live worker: slot holders, reload successors, retiring ones.
    fn children(&self) -> impl Iterator<Item = &Child> {
        self.slots
            .iter()
            .flat_map(|s| {
                s.child()
                    .into_iter()
                    .chain(s.incoming.as_ref().map(|(c, _)| c))
            })
            .chain(self.retiring.iter())
    }

    fn call_hook(&mut self, event: HookEvent<'_>) {
        let workers: Vec<(WorkerInfo, std::os::fd::BorrowedFd<'_>)> = self
            .slots
            .iter()
            .filter_map(|s| s.child().filter(|c| c.ready))
            .map(|c| (c.info(), c.to_worker.as_fd()))
            .collect();
        let cluster = Cluster { workers: &workers };
        let hooks = &mut *self.hooks;
        match event {
            HookEvent::Fork(w) => hooks.fork.as_mut().map(|h| h(&cluster, w)),
            HookEvent::Online(w) => hooks.online.as_mut().map(|h| h(&cluster, w)),
            HookEvent::Exit(w, e) => hooks.exit.as_mut().map(|h| h(&cluster, (w, e))),
            HookEvent::Message(w, bytes) => hooks.message.as_mut().map(|h| h(&cluster, w, bytes)),
        };
    }

    /// The supervision loop: returns after a graceful shutdown, or with an error when every
    /// slot has errored.
    fn supervise(&mut self) -> Result<(), Error> {
        loop {
            if let State::ShuttingDown { .. } = self.state {
                if self.children().next().is_none() {
                    log!("all workers stopped; exiting");
                    return Ok(());
                }
            } else if self
                .slots
                .iter()
                .all(|s| matches!(s.state, SlotState::Errored(_)))
            {
                let config = self
                    .slots
                    .iter()
                    .all(|s| matches!(s.state, SlotState::Errored(GaveUp::Config)));
                return Err(match config {
                    true => Error::config(
                        "no worker can start with this configuration (the handler's start or \
                         the worker's set-up failed: see the log line above); fix it and start \
                         again",
                    ),
                    false => Error::new(
                        ErrorKind::WorkersFailed,
                        "every worker slot has errored (workers keep failing to start); see \
                         the log above for their exits, fix the cause, and start again",
                    ),
                });
            }
            let timeout = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            let ready = self.wait(timeout)?;
            if ready.signals {
                self.on_signals();
            }
            for pid in ready.pipes {
                self.on_pipe(pid);
            }
            if ready.control {
                self.on_control();
            }
            if ready.metrics {
                self.on_metrics();
            }
            self.on_deadlines();
            self.watch();
            self.step_reload();
            self.update_adoptions();
            self.announce_ready();
        }
    }

    /// Tells systemd `READY=1` once every slot has a ready worker (after the start, and
    /// after each reload), with the count in `STATUS=`.
    fn announce_ready(&mut self) {
        if self.announced_ready || self.state != State::Running || self.reload.is_some() {
            return;
        }
        let ready = self.slots.iter().all(|s| {
            s.child().is_some_and(|c| c.ready) || matches!(s.state, SlotState::Errored(_))
        });
        if ready {
            self.announced_ready = true;
            self.notifier.notify("READY=1");
            self.notify_status();
        }
    }

    fn notify_status(&self) {
        let ready = self
            .slots
            .iter()
            .filter(|s| s.child().is_some_and(|c| c.ready))
            .count();
        self.notifier.notify(&format!(
            "STATUS={ready} of {} workers ready",
            self.slots.len()
        ));
    }

    /// The heartbeat: a worker that reported nothing for `worker_timeout` is stuck (its
    /// loop does not turn); it gets `SIGABRT`, for a core dump, then `SIGKILL` a second
    /// later. A retiring worker past its drain deadline is killed. systemd's watchdog is
    /// fed here too, so a stuck master is caught by systemd in turn.
    fn watch(&mut self) {
        let now = Instant::now();
        if let Some(at) = self.watchdog_at {
            if now >= at {
                self.notifier.notify("WATCHDOG=1");
                self.watchdog_at = self.notifier.watchdog_every().map(|every| now + every);
            }
        }
        let timeout = self.config.worker_timeout;
        let children = self
            .slots
            .iter_mut()
            .flat_map(|s| {
                let running = match &mut s.state {
                    SlotState::Running(c) => Some(c),
                    _ => None,
                };
                running
                    .into_iter()
                    .chain(s.incoming.as_mut().map(|(c, _)| c))
            })
            .chain(self.retiring.iter_mut());
        for child in children {
            if let Some(at) = child.aborted {
                if now.duration_since(at) >= KILL_AFTER_ABORT {
                    let _ = kill(child.pid, Signal::SIGKILL);
                }
                continue;
            }
            if child.retire_by.is_some_and(|by| now >= by) {
                log!(
                    "worker {} (pid {}) did not drain within the drain timeout; killing it",
                    child.slot,
                    child.pid
                );
                let _ = kill(child.pid, Signal::SIGKILL);
                child.aborted = Some(now);
                continue;
            }
            if !timeout.is_zero() && child.ready && now.duration_since(child.heard) >= timeout {
                log!(
                    "worker {} (pid {}) is stuck: no report for {:.1}s (--worker-timeout {}s); \
                     sending SIGABRT",
                    child.slot,
                    child.pid,
                    now.duration_since(child.heard).as_secs_f64(),
                    timeout.as_secs_f64()
                );
                let _ = kill(child.pid, Signal::SIGABRT);
                child.aborted = Some(now);
            }
        }
    }

    /// In `SO_REUSEPORT` mode, makes sure every slot's socket has a worker accepting on it:
    /// a slot without a ready worker (respawning, errored) has its socket adopted by a
    /// ready worker of another slot, and released when its own worker is ready again.
    fn update_adoptions(&mut self) {
        // Shutting down, every worker drains and stops accepting: there is nothing to cover.
        if !matches!(self.listeners, Listeners::PerSlot(_)) || self.state != State::Running {
            return;
        }
        let ready: Vec<Option<Pid>> = self
            .slots
            .iter()
            .map(|s| s.child().filter(|c| c.ready).map(|c| c.pid))
            .collect();
        for slot in 0..self.slots.len() {
            let adopter = self.adopters[slot];
            if ready[slot].is_some() {
                if let Some(pid) = adopter {
                    self.adopters[slot] = None;
                    self.tell_pid(pid, &Message::Release { slot: slot as u32 });
                }
                continue;
            }
            if adopter.is_some_and(|pid| ready.contains(&Some(pid))) {
                continue; // Still adopted by a ready worker.
            }
            // The next ready slot after this one takes its socket.
            let n = self.slots.len();
            let taker = (1..n).map(|d| (slot + d) % n).find_map(|i| ready[i]);
            self.adopters[slot] = taker;
            if let Some(pid) = taker {
                log!("slot {slot} has no ready worker: worker pid {pid} accepts on its socket");
                self.tell_pid(pid, &Message::Adopt { slot: slot as u32 });
            }
        }
    }

    fn tell_pid(&self, pid: Pid, msg: &Message) {
        if let Some(child) = self.children().find(|c| c.pid == pid) {
            tell(child, msg);
        }
    }

    /// The earliest instant something is due: a respawn, a ready timeout, a control
    /// client's timeout, or the drain deadline.
    fn next_deadline(&self) -> Option<Instant> {
        let running = self.state == State::Running;
        let slots = self
            .slots
            .iter()
            .filter_map(|s| match (&s.state, &s.incoming) {
                (_, Some((_, deadline))) => Some(*deadline),
                (SlotState::Waiting(at), None) if running => Some(*at),
                (SlotState::Running(c), None) if !c.ready => {
                    Some(c.started + self.config.ready_timeout)
                }
                _ => None,
            });
        let drain = match self.state {
            State::ShuttingDown { deadline } => Some(deadline),
            State::Running => None,
        };
        let timeout = self.config.worker_timeout;
        let children = self.children().filter_map(|c| match c.aborted {
            Some(at) => Some(at + KILL_AFTER_ABORT),
            None if c.retire_by.is_some() => c.retire_by,
            None if c.ready && !timeout.is_zero() => Some(c.heard + timeout),
            None => None,
        });
        slots
            .chain(drain)
            .chain(children)
            .chain(self.watchdog_at)
            .chain(self.control.next_deadline())
            .chain(self.metrics.as_ref().and_then(MetricsServer::next_deadline))
            .min()
    }

    /// Waits in `poll(2)` for a signal, a worker's pipe, the control socket, or `timeout`.
    fn wait(&self, timeout: Option<Duration>) -> Result<Ready, Error> {
        let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        let control_fds = self.control.poll_fds().count();
        fds.extend(
            self.control
                .poll_fds()
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
        );
        let metrics_fds = self.metrics.as_ref().map_or(0, |m| m.poll_fds().count());
        if let Some(m) = &self.metrics {
            fds.extend(m.poll_fds().map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
        }
        let mut owners = Vec::new();
        for child in self.children() {
            if let Some(fd) = child.from_worker.as_ref() {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                owners.push(child.pid);
            }
        }
        let timeout = match timeout {
            None => PollTimeout::NONE,
            // Round up, so that a deadline is never polled with a zero timeout in a loop.
            Some(d) => PollTimeout::try_from(d.as_millis().saturating_add(1).min(60_000) as u32)
                .unwrap_or(PollTimeout::MAX),
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::system("poll", e)),
        }
        let any = |fd: &PollFd<'_>| fd.any().unwrap_or(false);
        let signals = any(&fds[0]);
        let control = fds[1..1 + control_fds].iter().any(any);
        let metrics_end = 1 + control_fds + metrics_fds;
        let metrics = fds[1 + control_fds..metrics_end].iter().any(any);
        let pipes = fds[metrics_end..]
            .iter()
            .zip(owners)
            .filter(|(fd, _)| any(fd))
            .map(|(_, pid)| pid)
            .collect();
        Ok(Ready {
            signals,
            control,
            metrics,
            pipes,
        })
    }

    fn on_signals(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => self.reap(),
                // SIGQUIT is a graceful stop, as for nginx: never a core dump of the master.
                Ok(s @ (Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT)) => {
                    self.shutdown(s.as_ref())
                }
                Ok(Signal::SIGHUP) => self.request_reload(None),
                Ok(s) => log_limited!("{s} received: it has no meaning here; ignored"),
                Err(_) => {}
            }
        }
    }

    fn on_control(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        self.control.poll(&mut events);
        for (id, command) in events.drain(..) {
            match command {
                control::Command::Status => {
                    let text = self.status_text();
                    self.control.answer(id, &text);
                }
                control::Command::StatusJson => {
                    let text = self.status_json();
                    self.control.answer(id, &text);
                }
                control::Command::Reload => self.request_reload(Some(id)),
                control::Command::Stop => {
                    self.control.answer(id, "ok: stopping\n");
                    self.shutdown("stop requested");
                }
            }
        }
        self.events = events;
    }

    /// Starts a graceful shutdown; a second request during one kills the workers now.
    fn shutdown(&mut self, why: &str) {
        match self.state {
            State::Running => {
                let drain = self.config.drain_timeout;
                log!(
                    "{why}: shutting down (drain timeout {}s)",
                    drain.as_secs_f64()
                );
                self.notifier.notify("STOPPING=1");
                self.state = State::ShuttingDown {
                    deadline: Instant::now() + drain,
                };
                let waiters = self
                    .reload
                    .take()
                    .map(|r| r.waiters)
                    .into_iter()
                    .chain(self.reload_queued.take())
                    .flatten();
                for id in waiters.collect::<Vec<_>>() {
                    self.control
                        .answer(id, "error: reload abandoned, shutting down\n");
                }
                let msg = Message::Shutdown {
                    drain_ms: drain.as_millis() as u64,
                };
                for s in &mut self.slots {
                    if let SlotState::Waiting(_) = s.state {
                        s.state = SlotState::Stopped;
                    }
                }
                for child in self.children() {
                    tell(child, &msg);
                }
            }
            State::ShuttingDown { .. } => {
                log!("{why} again: killing the workers now");
                self.kill_all();
            }
        }
    }

    fn kill_all(&self) {
        for child in self.children() {
            // ESRCH means it is already gone; the SIGCHLD will tell.
            let _ = kill(child.pid, Signal::SIGKILL);
        }
    }

    /// Collects every exited worker and decides what its slot does next.
    fn reap(&mut self) {
        loop {
            let (pid, exit) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Exit::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            let Some(place) = self.find(pid) else {
                continue;
            };
            let child = match place {
                Place::Slot(i) => {
                    match std::mem::replace(&mut self.slots[i].state, SlotState::Stopped) {
                        SlotState::Running(child) => child,
                        _ => unreachable!("found a running child"),
                    }
                }
                Place::Incoming(i) => {
                    let (child, _) = self.slots[i].incoming.take().expect("found incoming");
                    let why = format!(
                        "the new worker {} exited before it was ready ({})",
                        child.slot,
                        describe(exit)
                    );
                    self.replacement_failed(i, &why);
                    child
                }
                Place::Retiring(i) => self.retiring.swap_remove(i),
            };
            let slot = child.slot as usize;
            if let Some(s) = self.slots.get_mut(slot) {
                s.past = s.past.plus(&child.stats);
            }
            log!(
                "worker {} exited (pid {pid}, cpu {}, {}, {} requests)",
                child.slot,
                child.cpu,
                describe(exit),
                child.stats.requests
            );
            self.call_hook(HookEvent::Exit(child.info(), exit));
            if let Place::Slot(i) = place {
                self.after_exit(i, &child, exit);
            }
        }
    }

    fn find(&self, pid: Pid) -> Option<Place> {
        for (i, s) in self.slots.iter().enumerate() {
            if s.child().is_some_and(|c| c.pid == pid) {
                return Some(Place::Slot(i));
            }
            if s.incoming.as_ref().is_some_and(|(c, _)| c.pid == pid) {
                return Some(Place::Incoming(i));
            }
        }
        self.retiring
            .iter()
            .position(|c| c.pid == pid)
            .map(Place::Retiring)
    }

    /// Decides the fate of a slot whose worker died unasked (see [`respawn`]): respawn after
    /// a delay that grows with each death in a row, or give up on a slot whose workers keep
    /// failing to start.
    fn after_exit(&mut self, slot: usize, child: &Child, exit: Exit) {
        if self.state != State::Running {
            return;
        }
        let policy = respawn::Policy {
            failures_max: self.config.respawn_failures_max as usize,
            window: self.config.respawn_window,
            min_uptime: self.config.min_uptime,
        };
        let now = Instant::now();
        let ended = respawn::Ended {
            exit,
            ready: child.ready,
            uptime: now.duration_since(child.started),
        };
        let s = &mut self.slots[slot];
        match s.history.decide(ended, now, &policy) {
            Verdict::Errored(why) => {
                match why {
                    GaveUp::Config => log!(
                        "worker {} ERRORED: it cannot start with this configuration (see its \
                         log line above); not respawning it",
                        s.index
                    ),
                    GaveUp::Failures(n) => log!(
                        "worker {} ERRORED: {n} failures to start within {}s; not respawning it",
                        s.index,
                        policy.window.as_secs_f64()
                    ),
                }
                s.state = SlotState::Errored(why);
            }
            Verdict::Respawn(delay) => {
                log!(
                    "worker {} respawning on cpu {} in {}ms",
                    s.index,
                    s.cpu.id,
                    delay.as_millis()
                );
                s.state = SlotState::Waiting(now + delay);
            }
        }
    }

    /// Reads what a worker sent.
    fn on_pipe(&mut self, pid: Pid) {
        let Some(child) = self.child_mut(pid) else {
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
                log!("worker {}: reading its pipe: {e}", child.slot);
                child.from_worker = None;
                return;
            }
        }
        let mut used = 0;
        let mut messages = Vec::new();
        loop {
            match ipc::decode(&child.pending[used..]) {
                Ok(Some((msg, len))) => {
                    used += len;
                    messages.push(msg);
                }
                Ok(None) => break,
                Err(e) => {
                    log!(
                        "worker {}: garbage on its pipe ({e}); killing it",
                        child.slot
                    );
                    let _ = kill(child.pid, Signal::SIGKILL);
                    child.from_worker = None;
                    return;
                }
            }
        }
        child.pending.drain(..used);
        for msg in messages {
            self.on_message(pid, msg);
        }
    }

    fn child_mut(&mut self, pid: Pid) -> Option<&mut Child> {
        match self.find(pid)? {
            Place::Slot(i) => match &mut self.slots[i].state {
                SlotState::Running(c) => Some(c),
                _ => None,
            },
            Place::Incoming(i) => self.slots[i].incoming.as_mut().map(|(c, _)| c),
            Place::Retiring(i) => self.retiring.get_mut(i),
        }
    }

    fn on_message(&mut self, pid: Pid, msg: Message) {
        if let Some(child) = self.child_mut(pid) {
            child.heard = Instant::now();
        }
        match msg {
            Message::Ready => self.on_ready(pid),
            Message::Stats(stats) => {
                if let Some(child) = self.child_mut(pid) {
                    child.stats = stats;
                }
                self.consider_recycling(pid);
            }
            Message::User(bytes) => {
                if let Some(info) = self.child_mut(pid).map(|c| c.info()) {
                    self.call_hook(HookEvent::Message(info, &bytes));
                }
            }
            other => log!("worker pid {pid}: unexpected message {other:?}"),
        }
    }

    fn on_ready(&mut self, pid: Pid) {
        match self.find(pid) {
            Some(Place::Slot(i)) => {
                if let SlotState::Running(c) = &mut self.slots[i].state {
                    c.ready = true;
                    log!("worker {} ready (pid {pid})", c.slot);
                    let info = c.info();
                    self.call_hook(HookEvent::Online(info));
                }
            }
            Some(Place::Incoming(i)) => {
                let (mut new, _) = self.slots[i].incoming.take().expect("found incoming");
                new.ready = true;
                log!(
                    "worker {} ready (pid {pid}), replacing the old one",
                    new.slot
                );
                let info = new.info();
                let old = std::mem::replace(&mut self.slots[i].state, SlotState::Running(new));
                if let SlotState::Running(mut old) = old {
                    let drain = self.config.drain_timeout;
                    tell(
                        &old,
                        &Message::Shutdown {
                            drain_ms: drain.as_millis() as u64,
                        },
                    );
                    old.retire_by = Some(Instant::now() + drain);
                    self.retiring.push(old);
                }
                self.call_hook(HookEvent::Online(info));
                if std::mem::take(&mut self.slots[i].recycling) {
                    log!("worker {} recycled", info.slot);
                } else if let Some(reload) = &mut self.reload {
                    reload.replaced += 1;
                }
            }
            _ => {}
        }
    }

    /// Respawns slots whose delay has passed, enforces ready timeouts, and kills what is
    /// left at the drain deadline.
    fn on_deadlines(&mut self) {
        let now = Instant::now();
        match self.state {
            State::Running => {
                for slot in 0..self.slots.len() {
                    self.slot_deadlines(slot, now);
                }
            }
            State::ShuttingDown { deadline } if now >= deadline => {
                let left = self.children().count();
                if left > 0 {
                    log!("drain timeout: killing {left} workers");
                    self.kill_all();
                }
                self.state = State::ShuttingDown {
                    deadline: now + KILL_REAP_WAIT,
                };
            }
            State::ShuttingDown { .. } => {}
        }
    }

    fn slot_deadlines(&mut self, slot: usize, now: Instant) {
        let timeout = self.config.ready_timeout;
        if let Some((new, deadline)) = &self.slots[slot].incoming {
            if now >= *deadline {
                let why = format!(
                    "the new worker {slot} (pid {}) was not ready within {}s",
                    new.pid,
                    timeout.as_secs_f64()
                );
                self.replacement_failed(slot, &why);
            }
        }
        let s = &mut self.slots[slot];
        match &s.state {
            SlotState::Waiting(at) if *at <= now => {
                s.restarts += 1;
                match self.fork_worker(slot) {
                    Ok(child) => self.slots[slot].state = SlotState::Running(child),
                    Err(e) => {
                        log!("worker {slot}: {e}; retrying");
                        self.slots[slot].state = SlotState::Waiting(now + RESPAWN_DELAY_MAX);
                    }
                }
            }
            SlotState::Running(c) if !c.ready && now >= c.started + timeout => {
                log!(
                    "worker {} (pid {}) was not ready within {}s; killing it",
                    s.index,
                    c.pid,
                    timeout.as_secs_f64()
                );
                // The exit counts as a failure of the slot and is respawned with backoff.
                let _ = kill(c.pid, Signal::SIGKILL);
                if let SlotState::Running(c) = &mut s.state {
                    c.started = now;
                }
            }
            _ => {}
        }
    }
}

/// A hook to call, with its arguments.
enum HookEvent<'b> {
    Fork(WorkerInfo),
    Online(WorkerInfo),
    Exit(WorkerInfo, Exit),
    Message(WorkerInfo, &'b [u8]),
}

fn describe(exit: Exit) -> String {
    match exit {
        Exit::Code(code) => format!("exit code {code}"),
        Exit::Signal(sig) => match Signal::try_from(sig) {
            Ok(s) => format!("signal {s}"),
            Err(_) => format!("signal {sig}"),
        },
    }
}

/// What `poll` found ready.
struct Ready {
    signals: bool,
    control: bool,
    metrics: bool,
    /// Workers whose pipe is readable (or closed).
    pipes: Vec<Pid>,
}

/// Sends `msg` to a worker without blocking: if its pipe is full, the worker is not
/// reading, and it will meet the drain deadline.
fn tell(child: &Child, msg: &Message) {
    if let Err(e) = cluster::write_frame(child.to_worker.as_fd(), msg) {
        log!(
            "message to worker {} (pid {}) not sent: {e}",
            child.slot,
            child.pid
        );
    }
}

/// The worker side of a fork: dies with the master, pins itself, runs, and returns an exit
/// code. A panic in the worker ends here as exit code 101, never back in the master's code.
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
    // A panic is one log line, where the default hook writes several to stderr. A handler
    // that wants its own hook sets it in `Handler::start`, which runs after this.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload_as_str()
            .unwrap_or("(a panic without a message)");
        match info.location() {
            Some(at) => crate::log::log_limited!("panicked at {at}: {message}"),
            None => crate::log::log_limited!("panicked: {message}"),
        }
    }));
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        worker::run(config, handler, setup)
    }))
    .unwrap_or(101)
}
