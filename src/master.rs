//! The master: binds the listener(s), forks one pinned worker per slot, and supervises them
//! from one thread, waiting in `poll(2)` on a signalfd, the workers' pipes and the control
//! socket. It respawns workers with a growing delay, gives up on slots that keep failing,
//! replaces every worker without dropping a request on reload, and drains them on shutdown.
//!
//! It is a pure supervisor and a thin shell. The supervisor ([`supervisor`], with [`child`],
//! [`slot`], [`respawn`], [`reload`], [`recycle`], [`adopt`], [`timers`]) holds every state
//! as plain values and decides; the shell (this file, [`events`], [`replace`], [`fork`],
//! [`pipes`], [`startup`], [`listeners`], [`report`]) forks, signals, reads and writes pipes
//! and sockets, calls hooks and writes the log lines, as the decisions say.
//!
//! It never owns an io_uring a child could inherit: the start-up probe's ring is gone
//! before the first fork.

mod adopt;
mod child;
mod events;
pub(crate) mod exec;
mod fork;
mod listeners;
mod pipes;
mod recycle;
mod reload;
mod reopen;
mod replace;
pub(crate) mod report;
mod respawn;
mod scale;
mod slot;
pub(crate) mod startup;
mod supervisor;
mod timers;

use listeners::{accept_queue, Listeners};
use pipes::Pipes;
use supervisor::{Finish, Settings, Stopping, Supervisor};

use crate::cluster::{Cluster, Exit, Hooks, WorkerInfo};
use crate::config::{Config, ListenMode};
use crate::control::{self, ControlServer};
use crate::error::{Error, ErrorKind};
use crate::ipc::Message;
use crate::log::{log, log_limited};
use crate::metrics::MetricsServer;
use crate::systemd;
use crate::Serve;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::unistd::{getpid, Pid};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// Runs the master until shutdown. See [`Server::run`](crate::Server::run).
pub(crate) fn run<H: Serve>(config: &Config, handler: &H, hooks: &mut Hooks) -> Result<(), Error> {
    let (config, access_log) = startup::prepare(config)?;
    let config = &config;
    let allowed = startup::allowed_cpus()?;
    let placement = startup::Placement::of(&config.cpu_affinity, &allowed)?;
    let count = placement.count(config.workers);
    startup::ignore_sigpipe()?;
    // One socket per CPU, so that a scale up to that many finds its sockets bound.
    let opened = Opened::open(config, count, placement.cpus.len())?;
    let mut master = Master::new(config, handler, hooks, opened, access_log, placement, count);
    master.start()?;
    master.supervise()
}

/// The master's sockets and descriptors, opened before any fork.
struct Opened {
    listeners: Listeners,
    control: ControlServer,
    metrics: Option<MetricsServer>,
    signals: SignalFd,
    notifier: systemd::Notifier,
}

impl Opened {
    /// `reserve`: the sockets to bind in `SO_REUSEPORT` mode, if more than `count`.
    fn open(config: &Config, count: usize, reserve: usize) -> Result<Opened, Error> {
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
            Listeners::bind(config, count, reserve)?
        } else {
            Listeners::inherited(inherited, count)
        };
        let local = listeners.local_addr()?;
        let control = ControlServer::bind(&config.control_path(local.port()), control_origin)?;
        let metrics = config.metrics.map(MetricsServer::bind).transpose()?;
        let signals = startup::master_signals()?;
        let opened = Opened {
            listeners,
            control,
            metrics,
            signals,
            notifier,
        };
        opened.announce(config, count)?;
        Ok(opened)
    }

    /// The "listening on" line: the address, the workers, how they listen, where the control
    /// socket and the metrics are.
    fn announce(&self, config: &Config, count: usize) -> Result<(), Error> {
        let local = self.listeners.local_addr()?;
        let mode = match &self.listeners {
            Listeners::Shared(_) if config.listen_mode == ListenMode::ReusePort => {
                "one socket from systemd, shared"
            }
            Listeners::Shared(_) => "shared listener",
            Listeners::PerSlot { .. } => "SO_REUSEPORT listener per worker",
        };
        log!(
            addr = %local,
            workers = count,
            "listening on {local} ({count} workers, {mode}, control {}{})",
            config.control_path(local.port()).display(),
            self.metrics
                .as_ref()
                .and_then(MetricsServer::local_addr)
                .map_or(String::new(), |a| format!(", metrics http://{a}/metrics"))
        );
        Ok(())
    }
}

/// The shell: the supervisor's state, and everything that touches the system.
struct Master<'a, H> {
    config: &'a Config,
    handler: &'a H,
    hooks: &'a mut Hooks,
    sup: Supervisor,
    /// Each live worker's pipes, by pid.
    pipes: Vec<Pipes>,
    listeners: Listeners,
    accept_queue: u32,
    signals: SignalFd,
    control: ControlServer,
    metrics: Option<MetricsServer>,
    notifier: systemd::Notifier,
    /// The access log, handed to each worker at fork; replaced on each reopen.
    access_log: Option<OwnedFd>,
    /// `SIGUSR1` and `ringmaster reopen`'s round in progress and counters.
    reopening: reopen::Reopening,
    pid: Pid,
    started: Instant,
    /// When the master started, in seconds since the epoch.
    started_at: u64,
    events: Vec<(u64, control::Command)>,
    /// `READY=1` was sent since the last start or reload.
    announced_ready: bool,
    /// The binaries workers run ([`exec`]).
    binary: Binary,
}

/// The binaries workers are started from.
#[derive(Debug, Default)]
struct Binary {
    /// The path the server was started from, which a reload runs what is at.
    path: Option<std::path::PathBuf>,
    /// The current generation's binary (`O_PATH`): this image's own file at first (held so
    /// that the master's descriptors are the same before and after reloads), then the one
    /// the last completed reload ran.
    current: Option<OwnedFd>,
    /// Whether the current generation is this image: its workers are forked, not executed.
    this_image: bool,
    /// The binary of the reload running, opened when it forks its first successor.
    reload: Option<OwnedFd>,
    /// The configuration file's text (`--config`) the current generation's workers run
    /// with, when they are executed; and the one read for the reload running.
    config: Option<String>,
    reload_config: Option<String>,
    /// The current generation: 1 at start, one more for each completed reload.
    generation: u64,
    /// Each recent generation's binary as `status` names it, newest last (at most
    /// [`GENERATIONS_SHOWN`]): the running reload's, the current, and those still draining.
    identities: std::collections::VecDeque<(u64, String)>,
    /// Reloads that completed, and that failed, since the master started.
    reloads_ok: u64,
    reloads_failed: u64,
    /// The last reload's outcome: when it ended (seconds since the epoch), and its answer.
    last_reload: Option<(u64, String)>,
}

/// Generations whose binaries `status` names, at most.
const GENERATIONS_SHOWN: usize = 4;

impl Binary {
    fn new() -> Binary {
        let current = exec::open_binary(std::path::Path::new("/proc/self/exe")).ok();
        let path = exec::binary_path();
        let mut binary = Binary {
            path,
            current,
            this_image: true,
            reload: None,
            config: None,
            reload_config: None,
            generation: 1,
            identities: std::collections::VecDeque::with_capacity(GENERATIONS_SHOWN + 1),
            reloads_ok: 0,
            reloads_failed: 0,
            last_reload: None,
        };
        let id = binary.identity(binary.current.as_ref());
        binary.identify(1, id);
        binary
    }

    /// `PATH (inode I, B bytes, modified T)` for the file `fd` is, under the start path.
    fn identity(&self, fd: Option<&OwnedFd>) -> String {
        let path = self
            .path
            .as_ref()
            .map_or("?".to_string(), |p| p.display().to_string());
        match fd.map(nix::sys::stat::fstat) {
            Some(Ok(st)) => format!(
                "{path} (inode {}, {} bytes, modified {})",
                st.st_ino,
                st.st_size,
                httpdate::fmt_http_date(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_secs(st.st_mtime.max(0) as u64)
                )
            ),
            _ => path,
        }
    }

    fn identify(&mut self, generation: u64, id: String) {
        self.identities.retain(|(g, _)| *g != generation);
        self.identities.push_back((generation, id));
        while self.identities.len() > GENERATIONS_SHOWN {
            self.identities.pop_front();
        }
    }

    /// The binary of `generation`, as `status` names it.
    fn identity_of(&self, generation: u64) -> &str {
        self.identities
            .iter()
            .find(|(g, _)| *g == generation)
            .map_or("?", |(_, id)| id.as_str())
    }

    /// A reload's binary was opened: it is the next generation's.
    fn opened_for_reload(&mut self, fd: OwnedFd) {
        let id = self.identity(Some(&fd));
        self.identify(self.generation + 1, id);
        self.reload = Some(fd);
    }

    /// A reload ended with `answer` (`ok: …` or `error: …`).
    fn reload_ended(&mut self, answer: &str) {
        let ok = answer.starts_with("ok");
        match ok {
            true => self.reloads_ok += 1,
            false => self.reloads_failed += 1,
        }
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_reload = Some((at, answer.trim_end().to_string()));
    }

    /// The binary a new worker runs: the reload's for its successors, else the current
    /// generation's; `None` to fork this image.
    fn for_worker(&self, reload: bool) -> Option<&OwnedFd> {
        match (reload, self.this_image) {
            (true, _) => self.reload.as_ref(),
            (false, true) => None,
            (false, false) => self.current.as_ref(),
        }
    }

    /// The configuration text a new worker is handed with its binary ([`Self::for_worker`]):
    /// the one read for the reload running, for its successors.
    fn config_for_worker(&self, reload: bool) -> Option<&str> {
        match reload {
            true => self.reload_config.as_deref(),
            false => self.config.as_deref(),
        }
    }

    /// The reload that ran `reload`'s binary completed: it is the current generation's.
    fn reloaded(&mut self) {
        self.generation += 1;
        if let Some(fd) = self.reload.take() {
            self.current = Some(fd);
            self.this_image = false;
            self.config = self.reload_config.take();
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

/// What `poll` found ready.
struct Ready {
    signals: bool,
    control: bool,
    metrics: bool,
    /// Workers whose pipe is readable (or closed).
    pipes: Vec<Pid>,
}

impl<'a, H: Serve> Master<'a, H> {
    fn new(
        config: &'a Config,
        handler: &'a H,
        hooks: &'a mut Hooks,
        opened: Opened,
        access_log: Option<OwnedFd>,
        placement: startup::Placement,
        count: usize,
    ) -> Master<'a, H> {
        let settings = Settings {
            ready_timeout: config.ready_timeout,
            worker_timeout: config.worker_timeout,
            drain_timeout: config.drain_timeout,
            reload_parallel: config.reload_parallel as usize,
            respawn: respawn::Policy {
                failures_max: config.respawn_failures_max as usize,
                window: config.respawn_window,
                min_uptime: config.min_uptime,
            },
            max_memory_mib: config.max_memory_mib,
        };
        Master {
            config,
            handler,
            hooks,
            sup: Supervisor::new(settings, placement, count),
            pipes: Vec::with_capacity(2 * count),
            listeners: opened.listeners,
            accept_queue: accept_queue(config.backlog),
            signals: opened.signals,
            control: opened.control,
            metrics: opened.metrics,
            notifier: opened.notifier,
            access_log,
            reopening: reopen::Reopening::default(),
            pid: getpid(),
            started: Instant::now(),
            started_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            events: Vec::with_capacity(crate::inbox::CONNECTIONS_MAX),
            announced_ready: false,
            binary: Binary::new(),
        }
    }

    /// Forks the first worker of every slot.
    fn start(&mut self) -> Result<(), Error> {
        self.sup.watchdog_at = self
            .notifier
            .watchdog_every()
            .map(|every| Instant::now() + every);
        self.notify_status();
        for slot in 0..self.sup.slots.len() {
            let child = self.fork_worker(slot, false)?;
            self.sup.filled(slot, child);
        }
        Ok(())
    }

    /// The supervision loop: returns after a graceful shutdown, or with an error when every
    /// slot has errored.
    fn supervise(&mut self) -> Result<(), Error> {
        loop {
            if let Some(finish) = self.sup.finished() {
                return finished(finish);
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
            self.finish_reopen();
            self.step_reload();
            self.step_scale();
            self.update_adoptions();
            self.announce_ready();
        }
    }

    /// The earliest instant something is due: the supervisor's timers, a control client's
    /// timeout, a metrics request's, a reopen's wait for the workers.
    fn next_deadline(&self) -> Option<Instant> {
        self.sup
            .next_deadline()
            .into_iter()
            .chain(self.control.next_deadline())
            .chain(self.metrics.as_ref().and_then(MetricsServer::next_deadline))
            .chain(self.reopening.deadline())
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
        for p in &self.pipes {
            if let Some(fd) = p.from_worker.as_ref() {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                owners.push(p.pid);
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
        let metrics_end = 1 + control_fds + metrics_fds;
        Ok(Ready {
            signals: any(&fds[0]),
            control: fds[1..1 + control_fds].iter().any(any),
            metrics: fds[1 + control_fds..metrics_end].iter().any(any),
            pipes: fds[metrics_end..]
                .iter()
                .zip(owners)
                .filter(|(fd, _)| any(fd))
                .map(|(_, pid)| pid)
                .collect(),
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
                Ok(Signal::SIGUSR1) => self.request_reopen(None),
                Ok(Signal::SIGTTIN) => self.request_scale(scale::Resize::More, None),
                Ok(Signal::SIGTTOU) => self.request_scale(scale::Resize::Fewer, None),
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
                control::Command::Reopen => self.request_reopen(Some(id)),
                control::Command::Scale {
                    workers,
                    oversubscribe,
                } => {
                    let resize = scale::Resize::To {
                        workers,
                        oversubscribe,
                    };
                    self.request_scale(resize, Some(id))
                }
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
        let drain = self.config.drain_timeout;
        match self.sup.shutdown(Instant::now()) {
            Stopping::Drain { waiters } => {
                log!(
                    "{why}: shutting down (drain timeout {}s)",
                    drain.as_secs_f64()
                );
                self.notifier.notify("STOPPING=1");
                for id in waiters {
                    self.control.answer(
                        id,
                        "error: shutting down: the reload or scale asked for is abandoned\n",
                    );
                }
                let msg = Message::Shutdown {
                    drain_ms: drain.as_millis() as u64,
                };
                for p in &self.pipes {
                    p.tell(&msg);
                }
            }
            Stopping::Again => {
                tracing::warn!("{why} again: killing the workers now");
                self.kill_all();
            }
        }
    }

    fn kill_all(&self) {
        for child in self.sup.children() {
            signal(child.pid, Signal::SIGKILL);
        }
    }

    /// Sends `msg` to the worker `pid`, if it is alive.
    fn tell(&self, pid: Pid, msg: &Message) {
        if let Some(p) = self.pipes.iter().find(|p| p.pid == pid) {
            p.tell(msg);
        }
    }

    fn call_hook(&mut self, event: HookEvent<'_>) {
        let workers: Vec<(WorkerInfo, std::os::fd::BorrowedFd<'_>)> = self
            .sup
            .slots
            .iter()
            .filter_map(|s| s.ready_child())
            .filter_map(|c| {
                let pipes = self.pipes.iter().find(|p| p.pid == c.pid)?;
                Some((c.info(), pipes.to_worker.as_fd()))
            })
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

    /// In `SO_REUSEPORT` mode, makes sure every slot's socket has a worker accepting on it
    /// ([`adopt`]).
    fn update_adoptions(&mut self) {
        let per_slot = matches!(self.listeners, Listeners::PerSlot { .. });
        let listening = self.listeners.listening();
        for tell in self.sup.update_adoptions(per_slot, listening) {
            match tell {
                adopt::Tell::Adopt { pid, slot } => {
                    log!("slot {slot} has no ready worker: worker pid {pid} accepts on its socket");
                    self.tell(pid, &Message::Adopt { slot: slot as u32 });
                }
                adopt::Tell::Release { pid, slot } => {
                    self.tell(pid, &Message::Release { slot: slot as u32 })
                }
            }
        }
    }

    /// Tells systemd `READY=1` once every slot has a ready worker (after the start, and
    /// after each reload), with the count in `STATUS=`.
    fn announce_ready(&mut self) {
        if !self.announced_ready && self.sup.all_ready() {
            self.announced_ready = true;
            self.notifier.notify("READY=1");
            self.notify_status();
        }
    }

    fn notify_status(&self) {
        self.notifier.notify(&format!(
            "STATUS={} of {} workers ready",
            self.sup.ready_count(),
            self.sup.slots.len()
        ));
    }
}

/// What the supervision loop returns when it ends.
fn finished(finish: Finish) -> Result<(), Error> {
    match finish {
        Finish::Stopped => {
            log!("all workers stopped; exiting");
            Ok(())
        }
        Finish::ConfigErrored => Err(Error::config(
            "no worker can start with this configuration (the handler's start or the worker's \
             set-up failed: see the log line above); fix it and start again",
        )),
        Finish::WorkersFailed => Err(Error::new(
            ErrorKind::WorkersFailed,
            "every worker slot has errored (workers keep failing to start); see the log above \
             for their exits, fix the cause, and start again",
        )),
    }
}

/// Sends `sig` to a worker. ESRCH means it is already gone, and its SIGCHLD will tell: the
/// result is rightly ignored.
fn signal(pid: Pid, sig: Signal) {
    let _ = kill(pid, sig);
}
