//! A worker: one process pinned to one CPU, one io_uring, one loop.
//!
//! Each loop turn: act on the connections touched last turn (what each asks of the ring),
//! keep the accept armed within the connection bound, then one `submit_and_wait`, then drain
//! every completion, turning each into an event for its owner. All branching on completions
//! is here; the connections own their state and say what the ring must do.
//!
//! | file | what it owns |
//! | --- | --- |
//! | `mod.rs` | the loop, the ring and its [`Event`] tags, the worker's set-up |
//! | `accept.rs` | the accepts on the worker's own socket and adopted ones, the sweep |
//! | `conns.rs` | the connection table: completions turned into connection events, connection acts into ring operations, the touched list |
//! | `side.rs` | the side channels: the master's pipe, signals, the tick, stats, the access log |
//! | `tasks.rs` | the async runtime's part: woken futures polled, answers handed to connections, handler slots granted, futures' ring operations |

mod accept;
mod conns;
mod side;
mod tasks;

use crate::config::{Config, UringOptions};
use crate::connection::{AccessLog, Conn, Counters, Ctx, Drain};
use crate::http::date::DateCache;
use crate::http::Response;
use crate::ipc::{self, Message};
use crate::log::log;
use crate::pool::BufPool;
use crate::rt::{TaskKey, Tasks};
use crate::Serve;
use accept::Accepting;
use ringmaster_uring::{BufRing, Completion, Ring, RingConfig, SetupMode};
use slab::Slab;
use std::os::fd::{OwnedFd, RawFd};
use std::time::{Duration, Instant};

pub(crate) use side::open_access_log;

/// Exit code of a worker that could not start because of its configuration or environment
/// (`EX_CONFIG`): the master does not respawn it in a loop.
pub(crate) const EXIT_CONFIG: i32 = 78;

/// The provided-buffer group of the receive buffers.
const RECV_GROUP: u16 = 0;
/// Completions handled per reap; the loop reaps until the queue is empty.
const REAP_BATCH: usize = 256;
/// Free buffers the worker keeps for connection input and output.
const POOL_RETAIN_MAX: usize = 1024;
/// Buffers allocated at start, so that a light load never allocates.
const POOL_PREFILL: usize = 64;
const _: () = assert!(POOL_PREFILL <= POOL_RETAIN_MAX);
/// The IPC read buffer's size: two frames, so that a frame split across reads fits.
const IPC_BUF_BYTES: usize = 2 * ipc::FRAME_BYTES_MAX;

/// What a completion is about: the tag each operation carries through the ring's in-flight
/// table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// An accept on the listening socket of this slot.
    Accept(u32),
    Ipc,
    Signal,
    Tick,
    /// An operation whose result changes nothing: a cancel, the close of a connection
    /// taken beyond the bound, a socket option set before a close.
    Ignored,
    Recv(u32),
    Send(u32),
    /// A splice of a file into a connection's pipe, and from the pipe into its socket.
    Fill(u32),
    Drain(u32),
    Close(u32),
    Shutdown(u32),
    /// A write of the access log.
    Access,
    /// A sample of a connection's unacknowledged output (the minimum send rate).
    OutQueue(u32),
    /// The read of a connection's client address (`SO_PEERNAME`).
    PeerName(u32),
    /// A ring operation of an async handler's future, by its slot in the runtime's table.
    Rt(u32),
    /// The read of the eventfd that wakes from other threads write.
    Wake,
}

/// What the master hands a worker at fork.
pub(crate) struct Setup {
    pub(crate) slot: u32,
    /// Its CPU; `None`: not pinned.
    pub(crate) cpu: Option<usize>,
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

/// Builds a worker's ring and registers its receive buffers, as every worker does after
/// fork. The master calls it once before forking (and drops the ring), so that a ring the
/// kernel refuses at these sizes (locked-memory limit, a size past the kernel's) is one
/// start-up error rather than every worker failing.
pub(crate) fn build_ring(config: &Config, accept_queue: u32) -> Result<Ring<Event>, String> {
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

/// A worker's panic hook: a panic is one log line (target `ringmaster::worker`), where the
/// default hook writes several to stderr.
pub(crate) fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let message = info
        .payload_as_str()
        .unwrap_or("(a panic without a message)");
    match info.location() {
        Some(at) => crate::log::log_limited!("panicked at {at}: {message}"),
        None => crate::log::log_limited!("panicked: {message}"),
    }
}

/// Runs a worker until it has drained; returns its exit code.
pub(crate) fn run<H: Serve>(config: &Config, handler: &H, setup: Setup) -> i32 {
    ipc::set_to_master(std::os::fd::AsRawFd::as_raw_fd(&setup.to_master));
    let info = crate::cluster::WorkerInfo {
        slot: setup.slot,
        pid: std::process::id(),
        cpu: setup.cpu,
    };
    let mut worker = match Worker::new(config, handler, setup) {
        Ok(w) => w,
        Err(e) => return cannot_start(&format!("cannot start: {e}")),
    };
    if let Err(e) = handler.start_worker(&info) {
        return cannot_start(&format!("cannot start: the handler's start failed: {e}"));
    }
    match worker.serve() {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("ring failed: {e}; exiting");
            1
        }
    }
}

/// Logs why the worker cannot start and tells the master, for a failed reload's answer;
/// returns the exit code that says so.
fn cannot_start(why: &str) -> i32 {
    tracing::error!("{why}");
    crate::master::exec::tell_master_failed(why);
    EXIT_CONFIG
}

struct Worker<'h, H: Serve> {
    ring: Ring<Event>,
    conns: Slab<Conn>,
    connections_max: usize,
    /// Connections to act on at the end of this turn, each once.
    touched: Vec<u32>,
    /// Which slots are in `touched`, by slot (slots are below `connections_max`).
    touched_mark: Vec<bool>,
    accepting: Accepting,
    uring: UringOptions,
    /// Connections are accepted as direct descriptors (a table is registered with the ring).
    direct: bool,
    /// When draining, idle connections close from this instant on.
    idle_close_at: Option<Instant>,
    drain_timeout: Duration,
    ctx: Ctx<'h, H>,
    /// Receives that ended with `-ENOBUFS` (all provided buffers in use) and were re-armed.
    enobufs: u64,
    batch: Vec<Completion<Event>>,
    side: side::Side,
    rt: tasks::Runtime,
}

impl<'h, H: Serve> Worker<'h, H> {
    fn new(config: &Config, handler: &'h H, setup: Setup) -> Result<Worker<'h, H>, String> {
        let mut ring = build_ring(config, setup.accept_queue)?;
        let (direct, connections_max) = direct_table(config, &mut ring);
        let access = setup
            .access_log
            .is_some()
            .then(|| AccessLog::new(config.access_log_format));
        Ok(Worker {
            ring,
            conns: Slab::with_capacity(connections_max),
            connections_max,
            touched: Vec::with_capacity(connections_max),
            touched_mark: vec![false; connections_max],
            accepting: Accepting::new(
                setup.slot,
                &setup.listeners,
                setup.accept_queue,
                wants_client_addresses(config),
            ),
            uring: config.uring,
            direct,
            idle_close_at: None,
            drain_timeout: config.drain_timeout,
            ctx: Ctx {
                handler,
                tasks: Tasks::new(
                    match H::ASYNC {
                        true => config.limits.handlers_max as usize,
                        false => 0,
                    },
                    TaskKey::Request,
                ),
                producers: Tasks::new(config.limits.handlers_max as usize, TaskKey::Producer),
                conn: 0,
                res: Some(Response::new()),
                date: DateCache::new(),
                limits: config.limits.head(),
                output_bytes_max: config.limits.output_bytes_max as usize,
                input_slack_bytes: usize::from(config.uring.recv_buffers)
                    * config.uring.recv_buffer_bytes as usize,
                timeouts: config.limits.timeouts(),
                pool: BufPool::new(POOL_RETAIN_MAX, POOL_PREFILL),
                drain: Drain::Serving,
                exit_on_panic: config.exit_on_panic,
                counters: Counters::default(),
                durations: Box::default(),
                durations_pending: Vec::with_capacity(crate::connection::DURATIONS_PENDING_MAX),
                now: Instant::now(),
                access,
                peer: None,
            },
            enobufs: 0,
            batch: Vec::with_capacity(REAP_BATCH),
            side: side::Side::new(setup, config.access_log.clone())?,
            rt: tasks::Runtime::install(config.limits.handlers_max as usize, connections_max)?,
        })
    }

    fn serve(&mut self) -> std::io::Result<()> {
        self.arm_side_channels()?;
        self.arm_wake()?;
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
            self.run_tasks();
            self.grant_room();
            self.act_on_touched()?;
            self.push_rt_ops()?;
            self.arm_accepts()?;
            self.flush_access_log(false)?;
            // Exit only once no accept is left in the kernel: a dead worker's accept could
            // otherwise swallow a wake-up meant for the worker that took over its socket.
            // Nor while an access log write is in flight: the ring's teardown may cancel
            // it, and its lines would be lost.
            if self.ctx.drain != Drain::Serving
                && self.conns.is_empty()
                && !self.accepting.in_flight()
                && !self.access_write_in_flight()
            {
                self.write_access_log_now();
                self.report_stats();
                log!("drained; exiting");
                return Ok(());
            }
            self.ctx.settle_durations();
            self.submit_and_wait()?;
            self.ctx.now = Instant::now();
            self.ctx.date.refresh();
            self.fire_timers();
            let mut batch = std::mem::take(&mut self.batch);
            while self.ring.reap(&mut batch) > 0 {
                for completion in batch.drain(..) {
                    self.dispatch(completion)?;
                }
            }
            self.batch = batch;
        }
    }

    /// Turns a completion into an event for whoever owns what it is about.
    fn dispatch(&mut self, c: Completion<Event>) -> std::io::Result<()> {
        match c.tag {
            Event::Accept(slot) => self.on_accept(slot, &c)?,
            Event::Recv(slot) => self.on_recv(slot, &c),
            Event::Send(slot) => self.on_send(slot, c),
            Event::Fill(slot) => self.on_fill(slot, &c),
            Event::Drain(slot) => self.on_drain(slot, &c),
            Event::Close(slot) => self.on_closed(slot),
            Event::Shutdown(slot) => self.on_shut(slot),
            Event::OutQueue(slot) => self.on_out_queue(slot, &c),
            Event::PeerName(slot) => self.on_peer_name(slot, c),
            // ENOENT/EALREADY for a cancel: the target had ended or was ending; both are fine.
            Event::Ignored => {}
            Event::Ipc => self.on_ipc(c)?,
            Event::Signal => self.on_signal(c)?,
            Event::Tick => self.on_tick(c)?,
            Event::Access => self.on_access_written(c)?,
            Event::Rt(slot) => self.on_rt(slot, c),
            Event::Wake => self.on_wake(c)?,
        }
        Ok(())
    }

    /// Stops accepting and lets connections finish: each answer closes its connection,
    /// and idle connections are closed after a short grace. `drain` is the time the master
    /// allows before it kills this worker.
    fn drain(&mut self, why: &str, drain: Duration) {
        if self.ctx.drain != Drain::Serving {
            return;
        }
        log!("{why}: draining {} connections", self.conns.len());
        let grace = side::DRAIN_IDLE_GRACE_MAX.min(drain / 2);
        self.idle_close_at = Some(Instant::now() + grace);
        self.ctx.drain = match grace.is_zero() {
            true => Drain::IdleClosing,
            false => Drain::Draining,
        };
        self.touch_all();
    }
}

/// Registers the direct descriptor table when direct descriptors are asked for, and returns
/// whether they are used and the connection bound that follows.
pub(crate) fn direct_table(config: &Config, ring: &mut Ring<Event>) -> (bool, usize) {
    let connections_max = config.limits.connections_max as usize;
    // One slot per connection: a slot is freed when its close is issued, before the
    // connection leaves the table, so the table is full only at the bound, where the
    // kernel refuses (and drops) what a multishot accept takes beyond it. The kernel caps
    // the table at the descriptor limit, which then caps the connections too: a direct
    // accept into a full table drops its connection, where a plain one leaves it queued.
    let slots = config.limits.connections_max.min(descriptor_limit());
    if !config.uring.direct_descriptors {
        return (false, connections_max);
    }
    match ring.register_direct_table(slots) {
        Ok(()) => (true, connections_max.min(slots as usize)),
        Err(e) => {
            log!("direct descriptors off: a table of {slots} slots: {e}");
            (false, connections_max)
        }
    }
}

/// Whether a worker learns each connection's client address: for `X-Forwarded-For` and
/// handlers that ask, and for the access log, which writes it too.
pub(crate) fn wants_client_addresses(config: &Config) -> bool {
    config.client_addresses || config.access_log.is_some()
}

/// The soft `RLIMIT_NOFILE` (which the master raised to the hard one), at most `u32::MAX`.
fn descriptor_limit() -> u32 {
    use nix::sys::resource::{getrlimit, Resource};
    getrlimit(Resource::RLIMIT_NOFILE).map_or(u32::MAX, |(soft, _)| {
        u32::try_from(soft).unwrap_or(u32::MAX)
    })
}
