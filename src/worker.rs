//! A worker: one process pinned to one CPU, one io_uring, one loop. All branching on
//! completions lives here; the connection layer only processes bytes and reports state.
//!
//! Each loop turn: act on the connections touched last turn (push sends, arm or pause
//! receives, close), keep the accept armed within the connection bound, then one
//! `submit_and_wait`, then drain every completion.

use crate::config::{Config, UringOptions, ACCEPT_SINGLE_DEPTH};
use crate::connection::{AccessLog, Conn, Counters, Ctx, Expiry, Phase, Recv, Sending, LINGER_MAX};
use crate::http::date::DateCache;
use crate::http::Response;
use crate::ipc::{self, Message};
use crate::log::{log, log_limited};
use crate::pool::BufPool;
use crate::Handler;
use io_uring::types::Timespec;
use ringmaster_uring::{BufRing, Completion, Desc, Op, OpId, Owned, Ring, RingConfig, SetupMode};
use slab::Slab;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Exit code of a worker that could not start because of its configuration or environment
/// (`EX_CONFIG`): the master does not respawn it in a loop.
pub(crate) const EXIT_CONFIG: i32 = 78;

/// The provided-buffer group of the receive buffers.
const RECV_GROUP: u16 = 0;
/// The loop wakes at least this often, for timers and the stats report.
const TICK: Duration = Duration::from_millis(100);
/// How often the worker reports its counters to the master.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// After `EMFILE`/`ENFILE` on accept, accepting pauses this long instead of spinning.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Completions handled per reap; the loop reaps until the queue is empty.
const REAP_BATCH: usize = 256;
/// Free buffers the worker keeps for connection input and output.
const POOL_RETAIN_MAX: usize = 1024;
/// Buffers allocated at start, so that a light load never allocates.
const POOL_PREFILL: usize = 64;
/// Bytes of one `signalfd_siginfo`.
const SIGINFO_BYTES: usize = 128;
/// When draining, an idle keep-alive connection gets this long (at most half the drain
/// timeout) to send one more request, which is answered with `Connection: close`. Closing
/// it at once would race a request the client may be sending: the client would see its
/// connection reset instead of an answer.
const DRAIN_IDLE_GRACE_MAX: Duration = Duration::from_secs(1);

/// What a completion is about, packed into the tag: kind in the high 32 bits, connection
/// slot in the low 32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// An accept on the listening socket of this slot.
    Accept(u32),
    Ipc,
    Signal,
    Tick,
    /// An operation whose result changes nothing: a cancel, the close of a connection
    /// taken beyond the bound, a socket option set before a close.
    Cancel,
    Recv(u32),
    Send(u32),
    Close(u32),
    Shutdown(u32),
    /// A write of the access log.
    Access,
    /// A sample of a connection's unacknowledged output (the minimum send rate).
    OutQueue(u32),
}

impl Event {
    fn tag(self) -> u64 {
        let (kind, slot) = match self {
            Event::Accept(s) => (1, s),
            Event::Ipc => (2, 0),
            Event::Signal => (3, 0),
            Event::Tick => (4, 0),
            Event::Cancel => (5, 0),
            Event::Recv(s) => (6, s),
            Event::Send(s) => (7, s),
            Event::Close(s) => (8, s),
            Event::Shutdown(s) => (9, s),
            Event::Access => (10, 0),
            Event::OutQueue(s) => (11, s),
        };
        (kind << 32) | u64::from(slot)
    }

    fn from_tag(tag: u64) -> Event {
        let slot = tag as u32;
        match tag >> 32 {
            1 => Event::Accept(slot),
            2 => Event::Ipc,
            3 => Event::Signal,
            4 => Event::Tick,
            5 => Event::Cancel,
            6 => Event::Recv(slot),
            7 => Event::Send(slot),
            8 => Event::Close(slot),
            9 => Event::Shutdown(slot),
            10 => Event::Access,
            11 => Event::OutQueue(slot),
            kind => panic!("completion with unknown tag kind {kind}"),
        }
    }
}

/// What the master hands a worker at fork.
pub(crate) struct Setup {
    pub(crate) slot: u32,
    pub(crate) cpu: usize,
    /// The listening sockets by slot: one shared by all, or one per slot (`SO_REUSEPORT`).
    /// The worker accepts on its own slot's, and on others the master asks it to adopt.
    pub(crate) listeners: Vec<RawFd>,
    /// The read end of the master → worker pipe (non-blocking).
    pub(crate) from_master: OwnedFd,
    /// The write end of the worker → master pipe (non-blocking).
    pub(crate) to_master: OwnedFd,
    /// The listener's accept queue length: the largest burst one multishot accept can take.
    pub(crate) accept_queue: u32,
    /// The access log, opened (append) by the master so that a bad path is one start-up
    /// error, not every worker failing.
    pub(crate) access_log: Option<OwnedFd>,
}

/// Whether the worker is serving or winding down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Serving,
    /// Shutting down: no accepts; every answer closes its connection unless more requests
    /// were already received; idle connections are closed once `idle_close_at` has passed.
    Draining {
        idle_close_at: Instant,
        /// `idle_close_at` has passed: idle connections are closed as they are seen.
        idle_closing: bool,
    },
}

/// The accept operations on one listening socket: one multishot accept while the connection
/// table has room for a whole accept queue, else up to [`ACCEPT_SINGLE_DEPTH`] single
/// accepts, each of which takes exactly one connection. That way the worker stops accepting
/// at its bound instead of accepting and dropping.
#[derive(Debug)]
struct Acceptor {
    /// The slot whose socket this is.
    slot: u32,
    fd: RawFd,
    /// Whether it should accept: the worker's own socket while serving, an adopted one
    /// until the master releases it.
    wanted: bool,
    /// The multishot accept, and whether a cancel of it was pushed.
    multi: Option<(OpId, bool)>,
    /// Single accepts, each with whether a cancel of it was pushed.
    singles: Vec<(OpId, bool)>,
}

impl Acceptor {
    fn new(slot: u32, fd: RawFd) -> Acceptor {
        Acceptor {
            slot,
            fd,
            wanted: true,
            multi: None,
            singles: Vec::with_capacity(ACCEPT_SINGLE_DEPTH as usize),
        }
    }

    /// Whether an accept is still in the kernel: until then its poll entry sits on the
    /// socket's wait queue, so the worker must not exit.
    fn in_flight(&self) -> bool {
        self.multi.is_some() || !self.singles.is_empty()
    }

    /// Forgets an accept that has ended.
    fn ended(&mut self, id: OpId) {
        if self.multi.is_some_and(|(m, _)| m == id) {
            self.multi = None;
        } else {
            self.singles.retain(|&(s, _)| s != id);
        }
    }
}

/// Builds a worker's ring and registers its receive buffers, as every worker does after
/// fork. The master calls it once before forking (and drops the ring), so that a ring the
/// kernel refuses at these sizes (locked-memory limit, a size past the kernel's) is one
/// start-up error rather than every worker failing.
pub(crate) fn build_ring(config: &Config, accept_queue: u32) -> Result<Ring, String> {
    let sizes = config.ring_sizes(accept_queue).map_err(|e| e.to_string())?;
    let ring_config = RingConfig {
        sq_entries: sizes.sq_entries,
        cq_entries: sizes.cq_entries,
        inflight_max: sizes.inflight_max,
        setup: if config.uring.defer_taskrun {
            SetupMode::DeferTaskrun
        } else {
            SetupMode::CoopTaskrun
        },
        register_ring_fd: config.uring.registered_ring_fd,
    };
    let mut ring = Ring::new(&ring_config).map_err(|e| format!("io_uring set-up: {e}"))?;
    let bufs = BufRing::new(
        RECV_GROUP,
        config.uring.recv_buffers,
        config.uring.recv_buffer_bytes,
    )
    .map_err(|e| format!("receive buffers: {e}"))?;
    ring.register_buf_ring(bufs)
        .map_err(|e| format!("registering receive buffers: {e}"))?;
    Ok(ring)
}

/// Runs a worker until it has drained; returns its exit code.
pub(crate) fn run<H: Handler>(config: &Config, handler: &H, setup: Setup) -> i32 {
    crate::cluster::set_to_master(setup.to_master.as_raw_fd());
    let info = crate::cluster::WorkerInfo {
        slot: setup.slot,
        pid: std::process::id(),
        cpu: setup.cpu,
    };
    let mut worker = match Worker::new(config, handler, setup) {
        Ok(w) => w,
        Err(e) => {
            log!("cannot start: {e}");
            return EXIT_CONFIG;
        }
    };
    if let Err(e) = handler.start(&info) {
        log!("cannot start: the handler's start failed: {e}");
        return EXIT_CONFIG;
    }
    match worker.serve() {
        Ok(()) => 0,
        Err(e) => {
            log!("ring failed: {e}; exiting");
            1
        }
    }
}

struct Worker<'h, H> {
    ring: Ring,
    conns: Slab<Conn>,
    connections_max: usize,
    /// Connections to act on at the end of this turn.
    touched: Vec<u32>,
    /// The worker's own socket's acceptor first, then adopted ones.
    acceptors: Vec<Acceptor>,
    /// Every listening socket, by slot (one entry in shared mode).
    listeners: Vec<RawFd>,
    accept_queue: u32,
    /// Accepting resumes at this instant (after running out of descriptors).
    accept_paused_until: Option<Instant>,
    /// Connections a multishot accept took beyond the table's bound, closed at once.
    accept_overflow: u64,
    uring: UringOptions,
    /// Connections are accepted as direct descriptors (a table is registered with the ring).
    direct: bool,
    mode: Mode,
    drain_timeout: Duration,
    ctx: Ctx<'h, H>,
    /// Receives that ended with `-ENOBUFS` (all provided buffers in use) and were re-armed.
    enobufs: u64,
    batch: Vec<Completion>,
    from_master: OwnedFd,
    to_master: OwnedFd,
    signals: nix::sys::signalfd::SignalFd,
    /// The IPC read buffer while no read is in flight (the ring holds it otherwise).
    ipc_buf: Option<Vec<u8>>,
    signal_buf: Option<Vec<u8>>,
    tick_spec: Option<Box<Timespec>>,
    last_stats: Instant,
    /// The access log file and, while a write is in flight, nothing: the ring holds the
    /// buffer being written (`spare` is the one to fill next).
    access_file: Option<OwnedFd>,
    access_writing: bool,
    access_spare: Vec<u8>,
}

impl<'h, H: Handler> Worker<'h, H> {
    fn new(config: &Config, handler: &'h H, setup: Setup) -> Result<Worker<'h, H>, String> {
        let mut ring = build_ring(config, setup.accept_queue)?;
        let signals = worker_signals().map_err(|e| format!("signalfd: {e}"))?;
        let connections_max = config.limits.connections_max as usize;
        // One slot per connection: a slot is freed when its close is issued, before the
        // connection leaves the table, so the table is full only at the bound, where the
        // kernel refuses (and drops) what a multishot accept takes beyond it. The kernel caps
        // the table at the descriptor limit, which then caps the connections too: a direct
        // accept into a full table drops its connection, where a plain one leaves it queued.
        let direct_slots = config.limits.connections_max.min(descriptor_limit());
        let direct = config.uring.direct_descriptors
            && match ring.register_direct_table(direct_slots) {
                Ok(()) => true,
                Err(e) => {
                    log!("direct descriptors off: a table of {direct_slots} slots: {e}");
                    false
                }
            };
        let connections_max = if direct {
            connections_max.min(direct_slots as usize)
        } else {
            connections_max
        };
        let access_file = setup.access_log;
        Ok(Worker {
            ring,
            conns: Slab::with_capacity(connections_max),
            connections_max,
            touched: Vec::with_capacity(connections_max),
            acceptors: {
                let own = setup.slot as usize % setup.listeners.len();
                let mut acceptors = Vec::with_capacity(setup.listeners.len());
                acceptors.push(Acceptor::new(own as u32, setup.listeners[own]));
                acceptors
            },
            listeners: setup.listeners,
            accept_paused_until: None,
            accept_overflow: 0,
            accept_queue: setup.accept_queue,
            uring: config.uring,
            direct,
            mode: Mode::Serving,
            drain_timeout: config.drain_timeout,
            ctx: Ctx {
                handler,
                res: Response::new(),
                date: DateCache::new(),
                limits: config.limits.head(),
                output_bytes_max: config.limits.output_bytes_max as usize,
                input_slack_bytes: usize::from(config.uring.recv_buffers)
                    * config.uring.recv_buffer_bytes as usize,
                timeouts: config.limits.timeouts(),
                pool: BufPool::new(POOL_RETAIN_MAX, POOL_PREFILL),
                draining: false,
                exit_on_panic: config.exit_on_panic,
                counters: Counters::default(),
                now: Instant::now(),
                access: access_file.as_ref().map(|_| AccessLog::new()),
                peer: None,
            },
            enobufs: 0,
            batch: Vec::with_capacity(REAP_BATCH),
            from_master: setup.from_master,
            to_master: setup.to_master,
            signals,
            ipc_buf: Some(Vec::with_capacity(2 * ipc::FRAME_BYTES_MAX)),
            signal_buf: Some(Vec::with_capacity(SIGINFO_BYTES)),
            tick_spec: Some(Box::new(
                Timespec::new()
                    .sec(TICK.as_secs())
                    .nsec(TICK.subsec_nanos()),
            )),
            last_stats: Instant::now(),
            access_spare: match access_file {
                Some(_) => Vec::with_capacity(crate::connection::ACCESS_LOG_BYTES_MAX),
                None => Vec::new(),
            },
            access_file,
            access_writing: false,
        })
    }

    fn serve(&mut self) -> std::io::Result<()> {
        self.arm_ipc()?;
        self.arm_signals()?;
        self.arm_tick()?;
        self.arm_accepts()?;
        // Hand the accept to the kernel before telling the master this worker is ready.
        self.ring.submit_and_wait(0)?;
        self.send_to_master(&Message::Ready);
        log!(
            "ready (io_uring {}, registered ring fd {}, direct descriptors {}, connections max {})",
            self.ring.mode().name(),
            self.ring.ring_fd_registered(),
            self.direct,
            self.connections_max
        );
        loop {
            self.act_on_touched()?;
            self.arm_accepts()?;
            self.flush_access_log(false)?;
            // Exit only once no accept is left in the kernel: a dead worker's accept could
            // otherwise swallow a wake-up meant for the worker that took over its socket.
            let accepting = self.acceptors.iter().any(Acceptor::in_flight);
            if self.mode != Mode::Serving && self.conns.is_empty() && !accepting {
                self.write_access_log_now();
                self.report_stats();
                log!("drained; exiting");
                return Ok(());
            }
            self.ring.submit_and_wait(1)?;
            self.ctx.now = Instant::now();
            self.ctx.date.refresh();
            let mut batch = std::mem::take(&mut self.batch);
            while self.ring.reap(&mut batch) > 0 {
                for completion in batch.drain(..) {
                    self.dispatch(completion)?;
                }
            }
            self.batch = batch;
        }
    }

    fn dispatch(&mut self, c: Completion) -> std::io::Result<()> {
        match Event::from_tag(c.tag) {
            Event::Accept(slot) => self.on_accept(slot, &c)?,
            Event::Recv(slot) => self.on_recv(slot, &c),
            Event::Send(slot) => self.on_send(slot, c)?,
            Event::Close(slot) => {
                let conn = &mut self.conns[slot as usize];
                debug_assert_eq!(conn.phase, Phase::Closing { fd_closed: false });
                conn.phase = Phase::Closing { fd_closed: true };
                self.touch(slot);
            }
            Event::Shutdown(slot) => {
                let conn = &mut self.conns[slot as usize];
                if let Phase::Lingering { until, .. } = conn.phase {
                    conn.phase = Phase::Lingering { shut: true, until };
                }
                self.touch(slot);
            }
            Event::Cancel => {
                // ENOENT/EALREADY: the target had ended or was ending; both are fine.
            }
            Event::Ipc => self.on_ipc(c)?,
            Event::Signal => self.on_signal(c)?,
            Event::Tick => self.on_tick(c)?,
            Event::Access => self.on_access_written(c)?,
            Event::OutQueue(slot) => self.on_out_queue(slot, &c)?,
        }
        Ok(())
    }

    /// Queues `slot` to be acted on at the end of the turn (once).
    fn touch(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        if !conn.queued {
            conn.queued = true;
            self.touched.push(slot);
        }
    }

    fn on_accept(&mut self, listener: u32, c: &Completion) -> std::io::Result<()> {
        if !c.more() {
            if let Some(a) = self.acceptors.iter_mut().find(|a| a.slot == listener) {
                a.ended(c.id);
                let (fd, quiet) = (a.fd, !a.in_flight());
                if quiet && (!a.wanted || self.mode != Mode::Serving) {
                    self.sweep(fd);
                }
            }
        }
        match c.errno() {
            None => {
                let fd = if self.direct {
                    Desc::Direct(c.result as u32)
                } else {
                    Desc::Plain(c.result)
                };
                if self.conns.len() >= self.connections_max {
                    // A multishot accept took more than the room left: an arrival burst
                    // beyond the accept queue while the table was nearly full.
                    self.accept_overflow += 1;
                    if let Desc::Plain(fd) = fd {
                        // SAFETY: `fd` was just accepted for this worker; nothing else owns it.
                        unsafe { libc::close(fd) };
                    } else {
                        // A free slot at the bound: connections swept in by `accept4` hold
                        // plain descriptors, not slots.
                        self.ring.push(Op::Close { fd }, Event::Cancel.tag())?;
                    }
                    return Ok(());
                }
                self.ctx.counters.accepted += 1;
                self.add_conn(fd);
            }
            Some(libc::ECANCELED) => {}
            Some(libc::ENFILE) if self.direct && self.conns.len() >= self.connections_max => {
                // The direct table is full: the same burst beyond the bound as above, the
                // connection closed by the kernel.
                self.accept_overflow += 1;
            }
            Some(e @ (libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)) => {
                log_limited!(
                    "accept: {}; pausing accepts for {ACCEPT_PAUSE:?}",
                    std::io::Error::from_raw_os_error(e)
                );
                self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
            }
            Some(_) => {
                // ECONNABORTED and the like: that connection is gone; keep accepting.
            }
        }
        Ok(())
    }

    /// Keeps accepts armed on every wanted socket within the connection bound, cancels the
    /// rest, and forgets adopted sockets once released and quiet.
    fn arm_accepts(&mut self) -> std::io::Result<()> {
        let serving = self.mode == Mode::Serving;
        let paused = match self.accept_paused_until {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                self.accept_paused_until = None;
                false
            }
            None => false,
        };
        let singles: usize = self.acceptors.iter().map(|a| a.singles.len()).sum();
        let free = self
            .connections_max
            .saturating_sub(self.conns.len() + singles);
        let active = self.acceptors.iter().filter(|a| a.wanted).count().max(1);
        // A multishot accept can take a whole accept queue at once, so it is armed only
        // while every wanted socket's queue fits in the room left.
        let multi_fits = self.uring.multishot_accept && free > self.accept_queue as usize * active;
        let share = (free / active).min(ACCEPT_SINGLE_DEPTH as usize);
        for a in &mut self.acceptors {
            let wanted = serving && a.wanted;
            if !wanted || (a.multi.is_some() && !multi_fits) {
                cancel_accepts(&mut self.ring, a)?;
                continue;
            }
            if paused || a.multi.is_some() {
                continue;
            }
            if multi_fits {
                let op = Op::AcceptMulti {
                    fd: a.fd,
                    direct: self.direct,
                };
                let id = self.ring.push(op, Event::Accept(a.slot).tag())?;
                a.multi = Some((id, false));
                continue;
            }
            while a.singles.len() < share {
                let op = Op::Accept {
                    fd: a.fd,
                    direct: self.direct,
                };
                let id = self.ring.push(op, Event::Accept(a.slot).tag())?;
                a.singles.push((id, false));
            }
        }
        // Adopted sockets the master took back, with nothing left in the kernel.
        let own = self.acceptors[0].slot;
        self.acceptors
            .retain(|a| a.slot == own || a.wanted || a.in_flight());
        Ok(())
    }

    /// Accepts, without waiting, what is queued on `fd` once this worker's accepts on it
    /// have all ended. A connection can arrive just as an accept is cancelled: the socket
    /// then wakes this worker's accept, which is gone, and no other worker waiting on the
    /// socket, so the connection would wait for the next one to arrive. Taking it here (and
    /// answering it as a draining worker does) leaves no connection behind.
    fn sweep(&mut self, fd: RawFd) {
        while self.conns.len() < self.connections_max {
            // SAFETY: `fd` is a listening socket this worker holds open for its whole life;
            // null address pointers are allowed by accept4.
            let conn = unsafe {
                libc::accept4(
                    fd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if conn < 0 {
                return; // EAGAIN: the queue is empty (or the socket failed: nothing to take).
            }
            self.ctx.counters.accepted += 1;
            self.add_conn(Desc::Plain(conn));
        }
    }

    /// Takes an accepted connection into the table.
    fn add_conn(&mut self, fd: Desc) {
        let mut conn = Conn::new(fd, self.ctx.now);
        if let (Some(_), Desc::Plain(fd)) = (&self.ctx.access, fd) {
            // One getpeername per connection, paid only when an access log is kept.
            conn.peer = nix::sys::socket::getpeername::<nix::sys::socket::SockaddrStorage>(fd)
                .ok()
                .and_then(|a| {
                    a.as_sockaddr_in()
                        .map(|v4| std::net::IpAddr::V4(v4.ip()))
                        .or_else(|| a.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip())))
                });
        }
        let slot = self.conns.insert(conn) as u32;
        self.touch(slot);
    }

    /// Hands the access log's lines to a write when enough piled up (or `force`, on the
    /// tick), one write in flight at a time.
    fn flush_access_log(&mut self, force: bool) -> std::io::Result<()> {
        const FLUSH_BYTES: usize = 64 * 1024;
        let (Some(file), Some(log)) = (&self.access_file, &mut self.ctx.access) else {
            return Ok(());
        };
        if self.access_writing || log.buf.is_empty() || (!force && log.buf.len() < FLUSH_BYTES) {
            return Ok(());
        }
        let buf = std::mem::replace(&mut log.buf, std::mem::take(&mut self.access_spare));
        let op = Op::Write {
            fd: file.as_raw_fd(),
            buf,
            offset: u64::MAX,
        };
        self.ring.push(op, Event::Access.tag())?;
        self.access_writing = true;
        Ok(())
    }

    /// Writes what is left of the access log before the worker exits; it may block, which
    /// no longer matters then. A write still in flight is lost with the ring, so its lines
    /// are not duplicated.
    fn write_access_log_now(&mut self) {
        if let (Some(file), Some(log)) = (&self.access_file, &mut self.ctx.access) {
            if !log.buf.is_empty() {
                if let Err(e) = nix::unistd::write(file, &log.buf) {
                    log!("writing the access log: {e}");
                }
                log.buf.clear();
            }
        }
    }

    fn on_access_written(&mut self, c: Completion) -> std::io::Result<()> {
        let result = c.io_result();
        let Owned::Buf(mut buf) = c.owned else {
            panic!("a write hands its buffer back")
        };
        self.access_writing = false;
        match result {
            Ok(n) if (n as usize) < buf.len() && n > 0 => {
                // A short write: the rest goes out next, ahead of newer lines.
                buf.drain(..n as usize);
                if let Some(log) = &mut self.ctx.access {
                    let newer = std::mem::replace(&mut log.buf, buf);
                    log.buf.extend_from_slice(&newer);
                    buf = newer;
                }
            }
            Ok(_) => {}
            Err(e) => log!("writing the access log: {e}; lines lost"),
        }
        buf.clear();
        self.access_spare = buf;
        Ok(())
    }

    /// Starts accepting on slot `slot`'s socket too (its worker is down), or stops.
    fn adopt(&mut self, slot: u32, adopt: bool) {
        let Some(&fd) = self.listeners.get(slot as usize) else {
            log!("asked to adopt slot {slot}, which has no socket here");
            return;
        };
        match self.acceptors.iter_mut().find(|a| a.slot == slot) {
            Some(a) => a.wanted = adopt,
            None if adopt => self.acceptors.push(Acceptor::new(slot, fd)),
            None => {}
        }
        log!(
            "{} the socket of slot {slot}",
            if adopt { "adopting" } else { "releasing" }
        );
    }

    fn on_recv(&mut self, slot: u32, c: &Completion) {
        let conn = &mut self.conns[slot as usize];
        if c.result > 0 {
            let bid = c.buffer_id().expect("a receive with data names its buffer");
            let data = self.ring.buffer(RECV_GROUP, bid, c.result as usize);
            conn.on_data(data, &mut self.ctx);
            self.ring.give_back(RECV_GROUP, bid);
        }
        if !c.more() {
            conn.recv = match c.errno() {
                // End of stream: the peer sends no more; answer what came, then close.
                None if c.result == 0 => Recv::Ended,
                // Data on a receive that ended (single-shot, or the kernel stopped it).
                None => Recv::Idle,
                Some(libc::ENOBUFS) => {
                    self.enobufs += 1;
                    Recv::Idle
                }
                Some(libc::ECANCELED) => Recv::Idle,
                Some(_) => {
                    // ECONNRESET and the like: nothing more can be sent either.
                    conn.discard(&mut self.ctx.pool);
                    if conn.phase == Phase::Open {
                        conn.phase = Phase::Finishing;
                    }
                    Recv::Ended
                }
            };
            if conn.recv == Recv::Ended {
                conn.end_of_input(&mut self.ctx);
            }
        }
        self.touch(slot);
    }

    fn on_send(&mut self, slot: u32, c: Completion) -> std::io::Result<()> {
        let result = c.io_result();
        let Owned::Buf(buf) = c.owned else {
            panic!("a send hands its buffer back")
        };
        let conn = &mut self.conns[slot as usize];
        let Sending::InFlight { offset, .. } = conn.send else {
            panic!("send completion without a send in flight")
        };
        match result {
            Ok(n) => {
                self.ctx.counters.bytes_out += u64::from(n);
                conn.sent(u64::from(n));
                let offset = offset + n as usize;
                if offset < buf.len() && n > 0 {
                    // A short send: push the rest, still in order; it made progress now.
                    let fd = conn.fd;
                    let op = self
                        .ring
                        .push(Op::Send { fd, buf, offset }, Event::Send(slot).tag())?;
                    conn.send = Sending::InFlight {
                        op,
                        offset,
                        since: self.ctx.now,
                    };
                    return Ok(());
                }
                conn.send = Sending::Idle;
                self.ctx.pool.put(buf);
                conn.resume(&mut self.ctx);
            }
            Err(_) => {
                // The peer is gone, or the send was cancelled: drop what is left and close.
                conn.send = Sending::Idle;
                self.ctx.pool.put(buf);
                conn.discard(&mut self.ctx.pool);
                if conn.phase == Phase::Open {
                    conn.phase = Phase::Finishing;
                }
            }
        }
        self.touch(slot);
        Ok(())
    }

    /// Acts on every connection touched this turn: sends its output, arms or pauses its
    /// receive, closes it, or frees its slot.
    fn act_on_touched(&mut self) -> std::io::Result<()> {
        let mut touched = std::mem::take(&mut self.touched);
        for slot in touched.drain(..) {
            self.act_on(slot)?;
        }
        self.touched = touched;
        Ok(())
    }

    fn act_on(&mut self, slot: u32) -> std::io::Result<()> {
        let now = self.ctx.now;
        let conn = &mut self.conns[slot as usize];
        conn.queued = false;
        if let Phase::Closing { .. } = conn.phase {
            if conn.is_finished() {
                self.conns.remove(slot as usize);
            }
            return Ok(());
        }
        if let Some(buf) = conn.take_output() {
            let op = Op::Send {
                fd: conn.fd,
                buf,
                offset: 0,
            };
            let op = self.ring.push(op, Event::Send(slot).tag())?;
            conn.send = Sending::InFlight {
                op,
                offset: 0,
                since: now,
            };
        }
        let idle_closing = matches!(
            self.mode,
            Mode::Draining {
                idle_closing: true,
                ..
            }
        );
        let closing = match conn.phase {
            Phase::Open => idle_closing && conn.is_idle(),
            Phase::Finishing if conn.is_idle() && conn.lingers() => {
                // Everything is sent: shut the write side so the client sees the end of
                // the response, and keep reading until it closes (or the linger ends).
                conn.phase = Phase::Lingering {
                    shut: false,
                    until: now + LINGER_MAX,
                };
                let op = Op::Shutdown {
                    fd: conn.fd,
                    how: libc::SHUT_WR,
                };
                self.ring.push(op, Event::Shutdown(slot).tag())?;
                false
            }
            Phase::Finishing => conn.is_idle(),
            Phase::Lingering { shut, .. } => shut && conn.recv == Recv::Ended,
            Phase::Closing { .. } => unreachable!("handled above"),
        };
        if closing {
            return self.close(slot);
        }
        match (conn.recv, conn.wants_read(self.ctx.output_bytes_max)) {
            (Recv::Idle, true) => {
                // The first request gets a single-shot receive: a client that sends one
                // request and closes (or is closed) then needs no cancel. Later ones get a
                // multishot receive, armed once for the life of the connection.
                let multi = !conn.flooding && !conn.awaiting_first();
                let op = if self.uring.multishot_recv && multi {
                    Op::RecvMulti {
                        fd: conn.fd,
                        group: RECV_GROUP,
                    }
                } else {
                    Op::Recv {
                        fd: conn.fd,
                        group: RECV_GROUP,
                        len: self.uring.recv_buffer_bytes,
                    }
                };
                conn.recv = Recv::Armed(self.ring.push(op, Event::Recv(slot).tag())?);
            }
            (Recv::Armed(op), false) if conn.phase == Phase::Open => {
                // Output is backed up: stop reading until the client reads.
                conn.recv = Recv::Cancelling(op);
                self.ring
                    .push(Op::Cancel { target: op }, Event::Cancel.tag())?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Starts tearing a connection down: cancel its receive and any send, close its
    /// descriptor. The slot is freed when every operation on it has ended.
    fn close(&mut self, slot: u32) -> std::io::Result<()> {
        let conn = &mut self.conns[slot as usize];
        if let Phase::Lingering { shut: false, .. } = conn.phase {
            return Ok(()); // The shutdown's completion comes first; it acts on this again.
        }
        conn.discard(&mut self.ctx.pool);
        conn.phase = Phase::Closing { fd_closed: false };
        if let Recv::Armed(op) = conn.recv {
            conn.recv = Recv::Cancelling(op);
            self.ring
                .push(Op::Cancel { target: op }, Event::Cancel.tag())?;
        }
        if let Sending::InFlight { op, .. } = conn.send {
            self.ring
                .push(Op::Cancel { target: op }, Event::Cancel.tag())?;
        }
        let fd = conn.fd;
        self.ring.push(Op::Close { fd }, Event::Close(slot).tag())?;
        Ok(())
    }

    /// Enforces every connection's timer: head and body deadlines answer 408, idle and
    /// linger ends close, a send that makes no progress aborts.
    fn check_timers(&mut self) -> std::io::Result<()> {
        let now = self.ctx.now;
        let timeouts = self.ctx.timeouts;
        let mut expired: Vec<(u32, Expiry)> = Vec::new();
        let mut samples: Vec<u32> = Vec::new();
        for (slot, conn) in self.conns.iter_mut() {
            match conn.expired(now, &timeouts) {
                Some(expiry) => expired.push((slot as u32, expiry)),
                None => conn.roll_body_window(now),
            }
            if conn.send_sample_due(now, &timeouts) {
                samples.push(slot as u32);
            }
        }
        for (slot, expiry) in expired {
            self.on_expiry(slot, expiry)?;
        }
        for slot in samples {
            self.sample_send_queue(slot)?;
        }
        Ok(())
    }

    fn on_expiry(&mut self, slot: u32, expiry: Expiry) -> std::io::Result<()> {
        match expiry {
            Expiry::RequestTimeout => {
                self.conns[slot as usize].time_out(&mut self.ctx);
                self.touch(slot);
            }
            Expiry::Close => self.close(slot)?,
            Expiry::Abort => {
                // Reset rather than close: a graceful close would leave the unsent bytes
                // (megabytes, for a client that stopped reading) queued in the kernel
                // behind a FIN the client never reads.
                self.ctx.counters.timeouts += 1;
                self.reset_on_close(self.conns[slot as usize].fd)?;
                self.close(slot)?;
            }
        }
        Ok(())
    }

    /// Samples how much of a connection's output its client has not acknowledged, for the
    /// minimum send rate: at once for a plain descriptor, through the ring for a direct one.
    fn sample_send_queue(&mut self, slot: u32) -> std::io::Result<()> {
        let conn = &mut self.conns[slot as usize];
        match conn.fd {
            Desc::Plain(fd) => {
                let unacked = unacknowledged(fd);
                let verdict = conn.on_send_sample(self.ctx.now, unacked, &self.ctx.timeouts);
                self.on_send_verdict(slot, verdict)
            }
            Desc::Direct(_) => {
                let op = Op::SocketOutQueue { fd: conn.fd };
                let op = self.ring.push(op, Event::OutQueue(slot).tag())?;
                self.conns[slot as usize].sampling_with(op);
                Ok(())
            }
        }
    }

    fn on_out_queue(&mut self, slot: u32, c: &Completion) -> std::io::Result<()> {
        let unacked = u64::try_from(c.result).ok();
        let conn = &mut self.conns[slot as usize];
        let verdict = conn.on_send_sample(self.ctx.now, unacked, &self.ctx.timeouts);
        self.touch(slot); // A closing connection may be finished now.
        self.on_send_verdict(slot, verdict)
    }

    fn on_send_verdict(&mut self, slot: u32, verdict: Option<Expiry>) -> std::io::Result<()> {
        match verdict {
            Some(expiry) => self.on_expiry(slot, expiry),
            None => Ok(()),
        }
    }

    /// Stops accepting and lets connections finish: each answer closes its connection,
    /// and idle connections are closed after a short grace. `drain` is the time the master
    /// allows before it kills this worker.
    fn drain(&mut self, why: &str, drain: Duration) {
        if self.mode != Mode::Serving {
            return;
        }
        log!("{why}: draining {} connections", self.conns.len());
        let grace = DRAIN_IDLE_GRACE_MAX.min(drain / 2);
        self.mode = Mode::Draining {
            idle_close_at: Instant::now() + grace,
            idle_closing: grace.is_zero(),
        };
        self.ctx.draining = true;
        self.touch_all();
    }

    fn touch_all(&mut self) {
        let slots: Vec<u32> = self.conns.iter().map(|(slot, _)| slot as u32).collect();
        for slot in slots {
            self.touch(slot);
        }
    }

    fn arm_ipc(&mut self) -> std::io::Result<()> {
        let buf = self.ipc_buf.take().expect("one IPC read at a time");
        let op = Op::Read {
            fd: self.from_master.as_raw_fd(),
            buf,
        };
        self.ring.push(op, Event::Ipc.tag())?;
        Ok(())
    }

    fn on_ipc(&mut self, c: Completion) -> std::io::Result<()> {
        let Owned::Buf(mut buf) = c.owned else {
            panic!("a read hands its buffer back")
        };
        match c.result {
            r if r == -libc::EAGAIN => {}
            0 => {
                // The master closed its end: it is gone or going. Drain and do not read again.
                self.drain("master closed the pipe", Duration::ZERO);
                return Ok(());
            }
            r if r < 0 => {
                log!(
                    "reading the master's pipe: {}",
                    std::io::Error::from_raw_os_error(-r)
                );
                self.drain("IPC failure", Duration::ZERO);
                return Ok(());
            }
            _ => {}
        }
        let mut used = 0;
        loop {
            match ipc::decode(&buf[used..]) {
                Ok(Some((msg, len))) => {
                    used += len;
                    self.on_message(msg);
                }
                Ok(None) => break,
                Err(e) => {
                    log!("garbage on the master's pipe ({e}); draining");
                    self.drain("IPC failure", Duration::ZERO);
                    return Ok(());
                }
            }
        }
        buf.drain(..used);
        self.ipc_buf = Some(buf);
        self.arm_ipc()
    }

    fn on_message(&mut self, msg: Message) {
        match msg {
            Message::Shutdown { drain_ms } => self.drain(
                "shutdown requested by the master",
                Duration::from_millis(drain_ms),
            ),
            Message::User(bytes) => {
                let handler = self.ctx.handler;
                let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    handler.on_message(&bytes)
                }));
                // The panic hook logged it; the worker serves on unless told otherwise.
                if let Err(panic) = called {
                    if self.ctx.exit_on_panic {
                        std::panic::resume_unwind(panic);
                    }
                }
            }
            Message::Adopt { slot } => self.adopt(slot, true),
            Message::Release { slot } => self.adopt(slot, false),
            other => log!("unexpected message from the master: {other:?}"),
        }
    }

    fn arm_signals(&mut self) -> std::io::Result<()> {
        let buf = self.signal_buf.take().expect("one signal read at a time");
        let op = Op::Read {
            fd: self.signals.as_raw_fd(),
            buf,
        };
        self.ring.push(op, Event::Signal.tag())?;
        Ok(())
    }

    fn on_signal(&mut self, c: Completion) -> std::io::Result<()> {
        let Owned::Buf(mut buf) = c.owned else {
            panic!("a read hands its buffer back")
        };
        if buf.len() >= 4 {
            let signo = u32::from_ne_bytes(buf[..4].try_into().expect("4 bytes"));
            let name = nix::sys::signal::Signal::try_from(signo as i32)
                .map_or("a signal", nix::sys::signal::Signal::as_str);
            self.drain(name, self.drain_timeout);
        }
        buf.clear();
        self.signal_buf = Some(buf);
        self.arm_signals()
    }

    fn arm_tick(&mut self) -> std::io::Result<()> {
        let spec = self.tick_spec.take().expect("one tick at a time");
        self.ring.push(Op::Timeout { spec }, Event::Tick.tag())?;
        Ok(())
    }

    fn on_tick(&mut self, c: Completion) -> std::io::Result<()> {
        let Owned::Timespec(spec) = c.owned else {
            panic!("a timeout hands its timespec back")
        };
        self.tick_spec = Some(spec);
        self.ctx.now = Instant::now();
        self.check_timers()?;
        // A connection can wait in a socket's queue with nobody woken for it: the wake-up
        // went to an accept that was being cancelled, or to a worker that was dying and
        // whose ring was not torn down yet. Sweeping each tick bounds that wait to a tick.
        if self.mode == Mode::Serving && self.accept_paused_until.is_none() {
            for i in 0..self.acceptors.len() {
                let (wanted, fd) = (self.acceptors[i].wanted, self.acceptors[i].fd);
                if wanted {
                    self.sweep(fd);
                }
            }
        }
        self.flush_access_log(true)?;
        if let Mode::Draining {
            idle_close_at,
            idle_closing: false,
        } = self.mode
        {
            if Instant::now() >= idle_close_at {
                self.mode = Mode::Draining {
                    idle_close_at,
                    idle_closing: true,
                };
                self.touch_all();
            }
        }
        if self.last_stats.elapsed() >= STATS_EVERY {
            self.last_stats = Instant::now();
            self.report_stats();
        }
        self.arm_tick()
    }

    fn report_stats(&mut self) {
        let c = &self.ctx.counters;
        let ring = self.ring.stats();
        let stats = ipc::Stats {
            requests: c.requests,
            connections: self.conns.len() as u64,
            accepted: c.accepted,
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            errors: c.errors,
            timeouts: c.timeouts,
            responses_1xx: c.responses[0],
            responses_2xx: c.responses[1],
            responses_3xx: c.responses[2],
            responses_4xx: c.responses[3],
            responses_5xx: c.responses[4],
            uring_enters: ring.enters,
            uring_submissions: ring.submissions,
            uring_completions: ring.completions,
            uring_enobufs: self.enobufs,
            handler_failures: c.handler_failures,
        };
        self.send_to_master(&Message::Stats(stats));
    }

    /// Writes one frame to the master's pipe without blocking. When the pipe is full (the
    /// master is behind) a stats report is dropped; the next one carries the totals anyway.
    fn send_to_master(&self, msg: &Message) {
        use std::os::fd::AsFd;
        match crate::cluster::write_frame(self.to_master.as_fd(), msg) {
            Ok(()) | Err(crate::cluster::SendError::Full) => {}
            Err(e) => log!("message to the master not sent: {e}"),
        }
    }
}

impl<H: Handler> Worker<'_, H> {
    /// Makes the next close of `fd` reset the connection (`SO_LINGER` on, zero seconds):
    /// the send queue is dropped and the peer gets a RST. A direct descriptor's option is
    /// set through the ring, pushed before the close: the kernel issues entries in queue
    /// order and sets a socket option inline, so it is set when the close runs. Failure
    /// leaves a graceful close, which is all that can be done.
    fn reset_on_close(&mut self, fd: Desc) -> std::io::Result<()> {
        match fd {
            Desc::Plain(fd) => reset_on_close(fd),
            Desc::Direct(_) => {
                // `struct linger { int l_onoff; int l_linger; }`: on, zero seconds.
                let value = [1 as libc::c_int, 0].map(libc::c_int::to_ne_bytes).concat();
                debug_assert_eq!(value.len(), std::mem::size_of::<libc::linger>());
                let op = Op::SetSockOpt {
                    fd,
                    level: libc::SOL_SOCKET,
                    name: libc::SO_LINGER,
                    value,
                };
                self.ring.push(op, Event::Cancel.tag())?;
            }
        }
        Ok(())
    }
}

/// Makes the next close of the plain descriptor `fd` reset the connection (see
/// [`Worker::reset_on_close`]).
fn reset_on_close(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is an open socket of this worker; `linger` is a valid `struct linger`
    // of the size passed, alive across the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// How many bytes of a plain socket's output its peer has not acknowledged
/// (`ioctl(SIOCOUTQ)`); `None` when the socket cannot tell.
fn unacknowledged(fd: RawFd) -> Option<u64> {
    let mut unacked: libc::c_int = 0;
    // SAFETY: `fd` is an open socket of this worker; SIOCOUTQ (TIOCOUTQ) writes one int
    // into `unacked`, which lives across the call.
    let ret = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut unacked as *mut libc::c_int) };
    (ret == 0).then(|| u64::try_from(unacked).ok()).flatten()
}

/// The soft `RLIMIT_NOFILE` (which the master raised to the hard one), at most `u32::MAX`.
fn descriptor_limit() -> u32 {
    use nix::sys::resource::{getrlimit, Resource};
    getrlimit(Resource::RLIMIT_NOFILE).map_or(u32::MAX, |(soft, _)| {
        u32::try_from(soft).unwrap_or(u32::MAX)
    })
}

/// Pushes a cancel for every accept of `a` not cancelled yet.
fn cancel_accepts(ring: &mut Ring, a: &mut Acceptor) -> std::io::Result<()> {
    for (id, cancelled) in a.multi.iter_mut().chain(a.singles.iter_mut()) {
        if !*cancelled {
            *cancelled = true;
            ring.push(Op::Cancel { target: *id }, Event::Cancel.tag())?;
        }
    }
    Ok(())
}

/// Blocks `SIGTERM`, `SIGINT` and `SIGQUIT` (the master blocked them before fork, with the
/// signals it ignores; this makes sure) and returns a signalfd that reads them: a worker
/// drains on any of them.
fn worker_signals() -> nix::Result<nix::sys::signalfd::SignalFd> {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGQUIT);
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
}
