//! The configuration: where to listen, how many workers, and every limit, each named with its
//! unit last and documented with what happens when it is reached.

use crate::error::Error;
use crate::http::HeadLimits;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// How the workers share the listening port.
///
/// Measured on a 2-core machine (wrk on the same machine, `wrk -t1 -c64 -d5s`, keep-alive,
/// 2 workers, `benches/supervisor.sh`, 2026-11-26): with `ReusePort` the workers answered
/// 206,321 and 239,487 requests (46% / 54%) at 89.1k requests/s; with `Shared` one worker
/// answered all 687,705 and the other none, at 137.5k requests/s. `Shared` is faster here
/// only because the idle worker leaves its core to the load generator; on a machine whose
/// clients are elsewhere, a worker that gets no connections is a core wasted. `ReusePort`
/// is the default for its balance, and because each slot's socket outlives its workers.
///
/// Set on a [`Config`](crate::Config) given to [`Server::config`](crate::Server::config): see
/// its example.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenMode {
    /// One socket, bound by the master and inherited by every worker. The kernel wakes one
    /// waiting worker per burst of connections, so the split between workers follows who
    /// is idle, not a hash.
    Shared,
    /// One `SO_REUSEPORT` socket per slot, bound and kept open by the master, so a worker
    /// that dies or is replaced never closes a socket with queued connections. The kernel
    /// spreads connections over the slots by a hash of their addresses.
    ReusePort,
}

/// How many workers to run.
///
/// Set with [`Server::workers`](crate::Server::workers) (see its example), or on a
/// [`Config`](crate::Config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workers {
    /// One per CPU in the process's affinity mask (so `taskset` and container CPU sets are
    /// honoured), or one per CPU listed in [`CpuAffinity::List`].
    Auto,
    /// Exactly this many (1..=[`WORKERS_MAX`](Config::WORKERS_MAX)), placed as
    /// [`CpuAffinity`] says: by default worker *i* is pinned to the *i*-th allowed CPU,
    /// wrapping around when there are more workers than CPUs.
    Count(u32),
}

/// Where the workers run: nginx's `worker_cpu_affinity`.
///
/// Pinning is the default: each worker keeps its CPU's caches and never migrates. On a host
/// whose CPUs other busy processes share (a database, a batch job), a pinned worker may
/// wait for its one CPU while another idles; there `Unpinned` lets the scheduler move it.
/// Measured on 2 vCPUs (`BENCHMARKS.md`, "Pinned or not", 2026-11-27): with wrk sharing the
/// CPUs, unpinned workers served 1.39× the requests/s keep-alive (1.32× pipelined) at 0.89×
/// the CPU per request; with other builds running too, pinned ones served 1.16× (1.22×).
/// Which wins depends on what else runs there: measure on the host before choosing.
///
/// Set with [`Server::cpu_affinity`](crate::Server::cpu_affinity) (see its example), or on a
/// [`Config`](crate::Config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuAffinity {
    /// Worker *i* is pinned to the *i*-th CPU of the process's affinity mask, wrapping
    /// around when there are more workers than CPUs.
    Auto,
    /// No worker is pinned: each inherits the master's whole affinity mask, and the
    /// scheduler places it. Logs and `status` say `cpu none`.
    Unpinned,
    /// Worker *i* is pinned to the *i*-th CPU of this list, wrapping around when there are
    /// more workers than CPUs listed; with [`Workers::Auto`], one worker per CPU listed.
    /// Each CPU must be in the process's affinity mask and listed once; the list holds 1 to
    /// [`WORKERS_MAX`](Config::WORKERS_MAX) CPUs, each below [`CPU_ID_LIMIT`](Config::CPU_ID_LIMIT).
    List(Vec<usize>),
}

impl CpuAffinity {
    /// Parses `auto`, `none`, or a list of CPUs and ranges such as `0,2,4-7` (in the order
    /// given: `4-7,0` puts worker 0 on CPU 4). The error says what is wrong with the text.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::CpuAffinity;
    ///
    /// assert_eq!(CpuAffinity::parse("none"), Ok(CpuAffinity::Unpinned));
    /// assert_eq!(CpuAffinity::parse("4-7,0"), Ok(CpuAffinity::List(vec![4, 5, 6, 7, 0])));
    /// let err = CpuAffinity::parse("7-4").unwrap_err();
    /// assert!(err.contains("runs backwards; write 4-7"), "{err}");
    /// ```
    pub fn parse(s: &str) -> Result<CpuAffinity, String> {
        match s {
            "auto" => return Ok(CpuAffinity::Auto),
            "none" => return Ok(CpuAffinity::Unpinned),
            _ => {}
        }
        let expected = "expected `auto`, `none` or a CPU list such as `0,2,4-7`";
        let cpu = |t: &str| -> Result<usize, String> {
            match t.parse::<usize>() {
                Ok(id) if id < Config::CPU_ID_LIMIT => Ok(id),
                Ok(id) => Err(format!(
                    "cpu {id} is out of range (CPUs are numbered below {})",
                    Config::CPU_ID_LIMIT
                )),
                Err(_) if t.is_empty() => Err(format!("a CPU number is missing; {expected}")),
                Err(_) => Err(format!("`{t}` is not a CPU number; {expected}")),
            }
        };
        let mut cpus = Vec::new();
        for part in s.split(',') {
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => (cpu(a)?, cpu(b)?),
                None => (cpu(part)?, cpu(part)?),
            };
            if first > last {
                return Err(format!(
                    "the range {part} runs backwards; write {last}-{first}"
                ));
            }
            cpus.extend(first..=last);
        }
        let affinity = CpuAffinity::List(cpus);
        affinity.check_list()?;
        Ok(affinity)
    }

    /// A list's bounds: not empty, not longer than the most workers, each CPU once and in
    /// range. Whether the CPUs are allowed is known only to the process that runs them.
    fn check_list(&self) -> Result<(), String> {
        let CpuAffinity::List(cpus) = self else {
            return Ok(());
        };
        if cpus.is_empty() || cpus.len() > Config::WORKERS_MAX as usize {
            return Err(format!(
                "the CPU list has {} CPUs; list 1 to {}",
                cpus.len(),
                Config::WORKERS_MAX
            ));
        }
        if let Some(&id) = cpus.iter().find(|&&id| id >= Config::CPU_ID_LIMIT) {
            return Err(format!(
                "cpu {id} is out of range (CPUs are numbered below {})",
                Config::CPU_ID_LIMIT
            ));
        }
        for (i, id) in cpus.iter().enumerate() {
            if cpus[..i].contains(id) {
                return Err(format!(
                    "cpu {id} is listed twice; list each CPU once (--workers N places more \
                     workers than CPUs round robin)"
                ));
            }
        }
        Ok(())
    }
}

/// A worker's CPU as logs, `status` and metrics write it: its number, or `none` when it is
/// not pinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CpuName(pub(crate) Option<usize>);

impl std::fmt::Display for CpuName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(id) => id.fmt(f),
            None => f.pad("none"),
        }
    }
}

/// Per-worker limits. Start from [`Limits::default`] and set what differs (new limits come
/// in later versions, so it is not built field by field outside this crate).
///
/// Set with [`Server::limits`](crate::Server::limits) (see its example), or on a
/// [`Config`](crate::Config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Open connections per worker. At the bound the worker stops accepting (connections wait
    /// in the listen backlog, or go to another worker) and resumes when one closes.
    /// Default 10,000; at most [`Limits::CONNECTIONS_MAX`]. The descriptor limit
    /// (`RLIMIT_NOFILE`, whose soft value the master raises to the hard one) also bounds it:
    /// with direct descriptors the kernel caps the worker's table, and so its connections,
    /// at that limit; with plain ones the worker pauses accepting when it runs out.
    pub connections_max: u32,
    /// The longest request line, line end included. Longer: `414 URI Too Long`, then close.
    /// Default 8 KiB.
    pub request_line_bytes_max: u32,
    /// The largest header section (fields and the blank line). Larger: `431`, then close.
    /// Default 16 KiB.
    pub request_fields_bytes_max: u32,
    /// The largest request body. Larger: `413 Content Too Large`, then close. Default 1 MiB.
    /// A body is read whole before its handler runs, so this bounds its memory; a body an
    /// async handler reads as it arrives ([`AsyncHandler::streams_body`]) is held a pipe's
    /// worth at a time, and this bounds only its size.
    ///
    /// [`AsyncHandler::streams_body`]: crate::AsyncHandler::streams_body
    pub request_body_bytes_max: u32,
    /// Response bytes waiting to be sent at which a connection stops parsing pipelined
    /// requests and stops reading (backpressure): a client that sends without reading meets
    /// TCP flow control instead of growing the server's memory. Default 64 KiB.
    pub output_bytes_max: u32,
    /// The whole request head must arrive within this long of its first byte (of the
    /// connection's accept, for the first request). Late: `408`, then close. Default 10 s.
    pub request_head_timeout: Duration,
    /// A body must arrive at this many bytes per second at least, measured over 5-second
    /// windows. Slower: `408`, then close. Default 1024.
    pub request_body_rate_min: u32,
    /// An idle keep-alive connection is closed after this long. Default 60 s.
    pub idle_timeout: Duration,
    /// A send that makes no progress for this long (the client stopped reading) closes the
    /// connection. Default 30 s.
    pub send_timeout: Duration,
    /// While a client owes response bytes (they wait in the worker's memory, or the kernel
    /// holds 64 KiB or more of them unacknowledged), it must take them at this many bytes
    /// per second at least, measured over 5-second windows, as the body rate of a request
    /// is: a reader too slow to matter (a slow-read attack holding many large responses) is
    /// reset instead of pinning them. The bytes counted are those the client acknowledged,
    /// not those the kernel buffered. 0 disables the check. Default 1024.
    pub send_rate_min: u32,
    /// Async handler futures in flight per worker (an [`AsyncHandler`](crate::AsyncHandler)'s
    /// requests waiting at once). At the bound, a connection whose next request is whole
    /// waits for a slot and is not read meanwhile (backpressure); nothing queues without
    /// limit. Default 10,000; at most [`Limits::HANDLERS_MAX`].
    pub handlers_max: u32,
    /// An async handler's future that has not answered this long after its request arrived
    /// (or a request that waited this long for a slot) is dropped, cancelling what it waited
    /// on, and its client answered `503` with a close. Default 30 s.
    pub handler_timeout: Duration,
}

impl Limits {
    /// The most connections one worker's ring is sized for: its completion queue (at most
    /// 65,536 entries) must hold four completions per connection plus the receive buffers and
    /// the accept burst, at their defaults (a compile-time assertion checks it).
    ///
    /// # Examples
    ///
    /// ```
    /// # use ringmaster::{Config, Limits};
    /// let mut config = Config::default();
    /// config.limits.connections_max = Limits::CONNECTIONS_MAX;
    /// assert!(config.validate().is_ok());
    /// config.limits.connections_max = Limits::CONNECTIONS_MAX + 1;
    /// assert!(config.validate().is_err());
    /// ```
    pub const CONNECTIONS_MAX: u32 = 14_000;
    /// The smallest request line and header section limits: room for a minimal request
    /// (and less than [`METHOD_BYTES_MAX`](crate::http::request::METHOD_BYTES_MAX) could
    /// not tell an over-long method from an over-long line).
    ///
    /// # Examples
    ///
    /// ```
    /// # use ringmaster::{Config, Limits};
    /// let mut config = Config::default();
    /// config.limits.request_line_bytes_max = Limits::HEAD_PART_BYTES_MIN - 1;
    /// let err = config.validate().unwrap_err();
    /// assert!(err.to_string().contains("request-line-bytes-max = 63"), "{err}");
    /// ```
    pub const HEAD_PART_BYTES_MIN: u32 = 64;
    /// The largest request line and header section limits: 1 MiB.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ringmaster::{Config, Limits};
    /// let mut config = Config::default();
    /// config.limits.request_fields_bytes_max = Limits::HEAD_PART_BYTES_MAX;
    /// assert!(config.validate().is_ok());
    /// config.limits.request_fields_bytes_max = Limits::HEAD_PART_BYTES_MAX + 1;
    /// assert!(config.validate().is_err());
    /// ```
    pub const HEAD_PART_BYTES_MAX: u32 = 1 << 20;
    /// The largest request body limit: 1 GiB (a body not streamed is held whole in memory).
    ///
    /// # Examples
    ///
    /// ```
    /// # use ringmaster::{Config, Limits};
    /// let mut config = Config::default();
    /// config.limits.request_body_bytes_max = Limits::REQUEST_BODY_BYTES_MAX;
    /// assert!(config.validate().is_ok());
    /// config.limits.request_body_bytes_max = Limits::REQUEST_BODY_BYTES_MAX + 1;
    /// assert!(config.validate().is_err());
    /// ```
    pub const REQUEST_BODY_BYTES_MAX: u32 = 1 << 30;
    /// The largest `handlers_max`: the futures' table is allocated whole at start.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ringmaster::{Config, Limits};
    /// let mut config = Config::default();
    /// config.limits.handlers_max = Limits::HANDLERS_MAX + 1;
    /// let err = config.validate().unwrap_err();
    /// assert!(err.to_string().contains("handlers-max = 100001 is out of range"), "{err}");
    /// ```
    pub const HANDLERS_MAX: u32 = 100_000;

    pub(crate) fn head(&self) -> HeadLimits {
        HeadLimits {
            request_line_bytes_max: self.request_line_bytes_max as usize,
            request_fields_bytes_max: self.request_fields_bytes_max as usize,
            request_body_bytes_max: u64::from(self.request_body_bytes_max),
        }
    }

    pub(crate) fn timeouts(&self) -> Timeouts {
        Timeouts {
            request_head: self.request_head_timeout,
            idle: self.idle_timeout,
            send: self.send_timeout,
            body_rate_min: u64::from(self.request_body_rate_min),
            send_rate_min: u64::from(self.send_rate_min),
            handler: self.handler_timeout,
        }
    }
}

/// The timeouts and minimum rates a connection enforces, from [`Limits`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    pub(crate) request_head: Duration,
    pub(crate) idle: Duration,
    pub(crate) send: Duration,
    /// Minimum body rate, bytes per second.
    pub(crate) body_rate_min: u64,
    /// Minimum rate at which a client takes the response bytes it owes, bytes per second;
    /// 0 for none.
    pub(crate) send_rate_min: u64,
    /// How long an async handler's future may take (and a request wait for a slot).
    pub(crate) handler: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections_max: 10_000,
            request_line_bytes_max: 8 * 1024,
            request_fields_bytes_max: 16 * 1024,
            request_body_bytes_max: 1024 * 1024,
            output_bytes_max: 64 * 1024,
            request_head_timeout: Duration::from_secs(10),
            request_body_rate_min: 1024,
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            send_rate_min: 1024,
            handlers_max: 10_000,
            handler_timeout: Duration::from_secs(30),
        }
    }
}

/// Which io_uring features the workers use. All on by default; each can be switched off to
/// measure what it buys.
///
/// Set on a [`Config`](crate::Config) given to [`Server::config`](crate::Server::config): see
/// its example.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UringOptions {
    /// `SINGLE_ISSUER | DEFER_TASKRUN` (else `COOP_TASKRUN`, else none).
    pub defer_taskrun: bool,
    /// One multishot accept instead of one accept per connection.
    pub multishot_accept: bool,
    /// One multishot receive per connection instead of one receive per read.
    pub multishot_recv: bool,
    /// Register the ring's descriptor so each `io_uring_enter` skips the descriptor lookup.
    pub registered_ring_fd: bool,
    /// Accept connections as direct descriptors (slots of a table registered with the
    /// ring) so that each receive, send and close skips the process's descriptor table.
    /// Used only where the kernel offers it (Linux 6.7: socket options must be set and read
    /// through the ring, to reset a connection and to learn its client's address);
    /// otherwise connections are plain descriptors.
    pub direct_descriptors: bool,
    /// Provided receive buffers per worker (a power of two, at most 32,768). When all are in
    /// use, receives pause (`-ENOBUFS`) until buffers are given back; no data is lost.
    pub recv_buffers: u16,
    /// Bytes per provided receive buffer.
    pub recv_buffer_bytes: u32,
}

impl UringOptions {
    /// Provided receive buffers per worker by default.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ringmaster::UringOptions;
    /// assert_eq!(UringOptions::default().recv_buffers, UringOptions::RECV_BUFFERS_DEFAULT);
    /// ```
    pub const RECV_BUFFERS_DEFAULT: u16 = 1024;
    /// The smallest receive buffer.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ringmaster::{Config, UringOptions};
    /// let mut config = Config::default();
    /// config.uring.recv_buffer_bytes = UringOptions::RECV_BUFFER_BYTES_MIN - 1;
    /// assert!(config.validate().is_err());
    /// ```
    pub const RECV_BUFFER_BYTES_MIN: u32 = 512;
    /// The largest receive buffer.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ringmaster::{Config, UringOptions};
    /// let mut config = Config::default();
    /// config.uring.recv_buffer_bytes = UringOptions::RECV_BUFFER_BYTES_MAX;
    /// assert!(config.validate().is_ok());
    /// config.uring.recv_buffer_bytes = UringOptions::RECV_BUFFER_BYTES_MAX + 1;
    /// assert!(config.validate().is_err());
    /// ```
    pub const RECV_BUFFER_BYTES_MAX: u32 = 65_536;
}

impl Default for UringOptions {
    fn default() -> UringOptions {
        UringOptions {
            defer_taskrun: true,
            multishot_accept: true,
            multishot_recv: true,
            registered_ring_fd: true,
            direct_descriptors: true,
            recv_buffers: UringOptions::RECV_BUFFERS_DEFAULT,
            recv_buffer_bytes: 4096,
        }
    }
}

/// Everything a [`Server`](crate::Server) needs besides its handler. Start from the
/// defaults and change what differs; [`Config::validate`] says what is out of range (the
/// server checks it again at start).
///
/// ```
/// use ringmaster::{Config, Workers};
/// use std::time::Duration;
///
/// let mut config = Config::default();
/// config.listen = "127.0.0.1:8080".parse().unwrap();
/// config.workers = Workers::Count(4);
/// config.drain_timeout = Duration::from_secs(30);
/// config.limits.request_body_bytes_max = 8 << 20;
/// assert!(config.validate().is_ok());
/// config.workers = Workers::Count(0);
/// assert!(config.validate().unwrap_err().to_string().contains("workers = 0"));
/// // Then: `Server::new(handler).config(config).run()`.
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// The address to listen on. Default `0.0.0.0:3000`.
    pub listen: SocketAddr,
    /// How many workers. Default [`Workers::Auto`].
    pub workers: Workers,
    /// Where the workers run: pinned one per CPU, unpinned, or pinned to listed CPUs.
    /// Default [`CpuAffinity::Auto`].
    pub cpu_affinity: CpuAffinity,
    /// The listen backlog (the kernel caps it at `net.core.somaxconn`). Default 4096.
    pub backlog: u32,
    /// How long a graceful shutdown waits for workers to finish their requests before they
    /// are killed. Default 10 s.
    pub drain_timeout: Duration,
    /// Per-worker limits.
    pub limits: Limits,
    /// io_uring features.
    pub uring: UringOptions,
    /// How the workers share the port. Default [`ListenMode::ReusePort`].
    pub listen_mode: ListenMode,
    /// How many slots a rolling reload replaces at once. Default 1.
    pub reload_parallel: u32,
    /// How long a new worker has to report ready, at start-up and in a reload; a reload
    /// kills a new worker that misses it and keeps the old one. Default 10 s.
    pub ready_timeout: Duration,
    /// Failures of one slot within [`respawn_window`](Self::respawn_window) that mark it
    /// errored (no more respawns). Default 5.
    pub respawn_failures_max: u32,
    /// The window for [`respawn_failures_max`](Self::respawn_failures_max). Default 60 s.
    pub respawn_window: Duration,
    /// A worker that stays up this long counts as healthy: its slot's respawn delay and
    /// failure count start over (the next death respawns at once). Default 30 s.
    pub min_uptime: Duration,
    /// The control socket's path (`ringmaster status|reload|stop` talk to it). Default:
    /// derived from the port, see [`Config::control_path`].
    pub control: Option<PathBuf>,
    /// Where the master serves `/metrics` (Prometheus), `/healthz` and `/readyz`. Default:
    /// none. On the command line a bare `--metrics PORT` means `127.0.0.1:PORT`: the
    /// figures reach other hosts only when an address says so.
    pub metrics: Option<SocketAddr>,
    /// Replace a worker gracefully (as a reload does) after it answered this many
    /// requests, plus a random share of `max_requests_jitter`, so that workers do not all
    /// recycle at once. Default: never.
    pub max_requests: Option<u64>,
    /// The most extra requests added at random to `max_requests` per worker. Default 0.
    pub max_requests_jitter: u64,
    /// Replace a worker gracefully once its resident memory exceeds this many MiB.
    /// Default: never.
    pub max_memory_mib: Option<u64>,
    /// A worker that reports nothing for this long (its loop is stuck, in a handler say)
    /// is killed with `SIGABRT` (a core dump, where enabled) and respawned; zero disables.
    /// Default 30 s.
    pub worker_timeout: Duration,
    /// The log line format. Default [`LogFormat::Text`].
    pub log_format: LogFormat,
    /// The access log's line format. Default [`AccessLogFormat::Common`].
    pub access_log_format: AccessLogFormat,
    /// A file the workers append an access log to (common log format), without blocking
    /// their loop. Default: none.
    pub access_log: Option<PathBuf>,
    /// A handler's panic ends its worker (which the master respawns), as in the first
    /// versions, instead of answering `500` and serving on. Default: false.
    pub exit_on_panic: bool,
    /// Look up each connection's client address when it is accepted, for
    /// [`Request::peer_addr`](crate::Request::peer_addr) and the `X-Forwarded-For` that a
    /// [`Proxy`](crate::proxy::Proxy) appends: one socket option read through the ring per
    /// connection (`SO_PEERNAME`, answered before the connection's first bytes), or one
    /// `getpeername` for a plain descriptor. Off, requests have no address, and the
    /// HTTP path pays nothing per connection. An access log turns it on, as it logs the
    /// address. The `ringmaster` binary turns it on with `--proxy`; a program that mounts a
    /// `Proxy` sets it. Default: false.
    pub client_addresses: bool,
}

/// How log lines are written.
///
/// Set on a [`Config`](crate::Config) given to [`Server::config`](crate::Server::config): see
/// its example.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-11-26T15:00:00.000Z ringmaster[worker 0] INFO message`
    Text,
    /// One JSON object per line: `{"ts":...,"role":"worker","slot":0,"msg":...}`.
    Json,
}

/// How access log lines are written.
///
/// Set on a [`Config`](crate::Config) given to [`Server::config`](crate::Server::config): see
/// its example.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// The common log format: `127.0.0.1 - - [27/Nov/2026:12:00:00 +0000] "GET / HTTP/1.1"
    /// 200 11`.
    #[default]
    Common,
    /// The combined log format (nginx's and Apache's default): the common one with
    /// `"REFERER" "USER-AGENT"` after it (`"-"` when the request has none).
    Combined,
    /// One JSON object per line: `{"time":"2026-11-27T12:00:00.123Z","remote_addr":…,
    /// "request":…,"status":200,"bytes":11,"duration_ms":0.052,"referer":…,"user_agent":…,
    /// "request_id":…}`, with `null` for a field the request lacks. `duration_ms` is from the
    /// request's head parsed to its response handed to the connection's output (a streamed
    /// body: to its head); `request_id` is the request's `X-Request-Id`.
    Json,
}

impl AccessLogFormat {
    /// Parses `common`, `combined` or `json`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{AccessLogFormat, Config};
    ///
    /// let mut config = Config::default();
    /// config.access_log_format = AccessLogFormat::parse("combined").unwrap();
    /// assert_eq!(config.access_log_format, AccessLogFormat::Combined);
    /// // Names are lower case.
    /// assert!(AccessLogFormat::parse("JSON").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<AccessLogFormat, String> {
        match s {
            "common" => Ok(AccessLogFormat::Common),
            "combined" => Ok(AccessLogFormat::Combined),
            "json" => Ok(AccessLogFormat::Json),
            _ => Err("expected `common`, `combined` or `json`".to_string()),
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 3000)),
            workers: Workers::Auto,
            cpu_affinity: CpuAffinity::Auto,
            backlog: Config::BACKLOG_DEFAULT,
            drain_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            uring: UringOptions::default(),
            listen_mode: ListenMode::ReusePort,
            reload_parallel: 1,
            ready_timeout: Duration::from_secs(10),
            respawn_failures_max: 5,
            respawn_window: Duration::from_secs(60),
            min_uptime: Duration::from_secs(30),
            control: None,
            metrics: None,
            max_requests: None,
            max_requests_jitter: 0,
            max_memory_mib: None,
            worker_timeout: Duration::from_secs(30),
            log_format: LogFormat::Text,
            access_log_format: AccessLogFormat::Common,
            access_log: None,
            exit_on_panic: false,
            client_addresses: false,
        }
    }
}

impl Config {
    /// The most workers one master runs.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ringmaster::{Config, Workers};
    /// let mut config = Config::default();
    /// config.workers = Workers::Count(Config::WORKERS_MAX);
    /// assert!(config.validate().is_ok());
    /// config.workers = Workers::Count(Config::WORKERS_MAX + 1);
    /// assert!(config.validate().is_err());
    /// ```
    pub const WORKERS_MAX: u32 = 1024;
    /// The longest drain timeout, and of every other timeout and window: one hour.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ringmaster::Config;
    /// # use std::time::Duration;
    /// let mut config = Config::default();
    /// config.limits.idle_timeout = Config::DRAIN_TIMEOUT_MAX;
    /// assert!(config.validate().is_ok());
    /// config.limits.idle_timeout = Config::DRAIN_TIMEOUT_MAX + Duration::from_secs(1);
    /// assert!(config.validate().is_err());
    /// ```
    pub const DRAIN_TIMEOUT_MAX: Duration = Duration::from_secs(3600);
    /// The most failures to start that a slot's window may count before it errors.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ringmaster::Config;
    /// let mut config = Config::default();
    /// config.respawn_failures_max = Config::RESPAWN_FAILURES_MAX + 1;
    /// assert!(config.validate().is_err());
    /// ```
    pub const RESPAWN_FAILURES_MAX: u32 = 1000;
    /// The shortest stuck-worker timeout: twice the workers' one-second stats report, so
    /// that one late report is not taken for a stuck loop.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ringmaster::Config;
    /// # use std::time::Duration;
    /// let mut config = Config::default();
    /// config.worker_timeout = Duration::from_secs(1);
    /// assert!(config.validate().is_err());
    /// config.worker_timeout = Config::WORKER_TIMEOUT_MIN;
    /// assert!(config.validate().is_ok());
    /// // Zero switches the check off.
    /// config.worker_timeout = Duration::ZERO;
    /// assert!(config.validate().is_ok());
    /// ```
    pub const WORKER_TIMEOUT_MIN: Duration = Duration::from_secs(2);
    /// The largest listen backlog (the kernel's `somaxconn` caps it further).
    ///
    /// # Examples
    ///
    /// ```
    /// # use ringmaster::Config;
    /// let mut config = Config::default();
    /// config.backlog = Config::BACKLOG_MAX + 1;
    /// assert!(config.validate().is_err());
    /// ```
    pub const BACKLOG_MAX: u32 = 65_535;
    /// The listen backlog by default.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ringmaster::Config;
    /// assert_eq!(Config::default().backlog, Config::BACKLOG_DEFAULT);
    /// ```
    pub const BACKLOG_DEFAULT: u32 = 4096;
    /// CPU numbers in a [`CpuAffinity::List`] are below this: the size of the kernel's
    /// `cpu_set_t` that the affinity calls pass (glibc's `CPU_SETSIZE`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use ringmaster::{Config, CpuAffinity};
    /// let last = Config::CPU_ID_LIMIT - 1;
    /// assert!(CpuAffinity::parse(&last.to_string()).is_ok());
    /// let err = CpuAffinity::parse(&Config::CPU_ID_LIMIT.to_string()).unwrap_err();
    /// assert!(err.contains("out of range"), "{err}");
    /// ```
    pub const CPU_ID_LIMIT: usize = 1024;

    /// The control socket for a server on `port`: the configured path, else
    /// `ringmaster-PORT.sock` in a directory private to this user:
    /// `$XDG_RUNTIME_DIR/ringmaster/` when that is set to an absolute directory,
    /// `/run/ringmaster/` for root, `/tmp/ringmaster-UID/` otherwise. The master creates the
    /// directory with mode 0700; it and `ringmaster status|reload|stop` refuse one that is
    /// a symlink, another user's, or open to group or others. This is the one place the
    /// default is computed.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::Config;
    /// use std::path::PathBuf;
    ///
    /// let mut config = Config::default();
    /// let derived = config.control_path(8080);
    /// assert!(derived.ends_with("ringmaster-8080.sock"), "{derived:?}");
    /// config.control = Some(PathBuf::from("/run/myapp/rm.sock"));
    /// assert_eq!(config.control_path(8080), PathBuf::from("/run/myapp/rm.sock"));
    /// ```
    pub fn control_path(&self, port: u16) -> PathBuf {
        if let Some(path) = &self.control {
            return path.clone();
        }
        let runtime = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|d| d.is_absolute() && d.is_dir());
        control_dir(runtime, nix::unistd::geteuid().as_raw())
            .join(format!("ringmaster-{port}.sock"))
    }

    /// Checks every value against its range; the error names the value and the range.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Config, Limits};
    ///
    /// let mut config = Config::default();
    /// assert!(config.validate().is_ok());
    /// config.limits.connections_max = 20_000;
    /// let err = config.validate().unwrap_err();
    /// assert!(
    ///     err.to_string().contains("connections-max = 20000 is out of range; use 1..=14000"),
    ///     "{err}"
    /// );
    /// # assert_eq!(Limits::CONNECTIONS_MAX, 14_000);
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        self.validate_supervision()?;
        self.validate_listening()?;
        self.validate_limits()?;
        self.validate_uring()
    }

    /// The supervisor's settings: reloads, respawns, recycling, timeouts.
    fn validate_supervision(&self) -> Result<(), Error> {
        if self.reload_parallel == 0 || self.reload_parallel > Config::WORKERS_MAX {
            return Err(Error::config(format!(
                "reload-parallel = {} is out of range; use 1..={}",
                self.reload_parallel,
                Config::WORKERS_MAX
            )));
        }
        if self.respawn_failures_max == 0
            || self.respawn_failures_max > Config::RESPAWN_FAILURES_MAX
        {
            return Err(Error::config(format!(
                "respawn-failures-max = {} is out of range; use 1..={}",
                self.respawn_failures_max,
                Config::RESPAWN_FAILURES_MAX
            )));
        }
        if self.max_requests == Some(0) || self.max_memory_mib == Some(0) {
            return Err(Error::config(
                "max-requests and max-memory must be at least 1 (leave them out to never recycle)",
            ));
        }
        if self.worker_timeout > Config::DRAIN_TIMEOUT_MAX {
            return Err(Error::config(format!(
                "worker-timeout {:?} is over the maximum of {:?}",
                self.worker_timeout,
                Config::DRAIN_TIMEOUT_MAX
            )));
        }
        if !self.worker_timeout.is_zero() && self.worker_timeout < Config::WORKER_TIMEOUT_MIN {
            return Err(Error::config(format!(
                "worker-timeout {:?} is shorter than twice the 1 s stats report; use at least \
                 {:?}, or 0 to disable",
                self.worker_timeout,
                Config::WORKER_TIMEOUT_MIN
            )));
        }
        for (name, value) in [
            ("request-head-timeout", self.limits.request_head_timeout),
            ("idle-timeout", self.limits.idle_timeout),
            ("send-timeout", self.limits.send_timeout),
            ("handler-timeout", self.limits.handler_timeout),
            ("ready-timeout", self.ready_timeout),
            ("respawn-window", self.respawn_window),
            ("min-uptime", self.min_uptime),
        ] {
            if value.is_zero() || value > Config::DRAIN_TIMEOUT_MAX {
                return Err(Error::config(format!(
                    "{name} {value:?} is out of range; use more than 0 and at most {:?}",
                    Config::DRAIN_TIMEOUT_MAX
                )));
            }
        }
        Ok(())
    }

    /// The workers, the listening socket, and how long they may take to drain.
    fn validate_listening(&self) -> Result<(), Error> {
        if let Workers::Count(n) = self.workers {
            if n == 0 || n > Config::WORKERS_MAX {
                return Err(Error::config(format!(
                    "workers = {n} is out of range; use 1..={} or auto",
                    Config::WORKERS_MAX
                )));
            }
        }
        self.cpu_affinity
            .check_list()
            .map_err(|e| Error::config(format!("cpu-affinity: {e}")))?;
        if self.backlog == 0 || self.backlog > Config::BACKLOG_MAX {
            return Err(Error::config(format!(
                "backlog = {} is out of range; use 1..={}",
                self.backlog,
                Config::BACKLOG_MAX
            )));
        }
        if self.drain_timeout > Config::DRAIN_TIMEOUT_MAX {
            return Err(Error::config(format!(
                "drain timeout {:?} is over the maximum of {:?}",
                self.drain_timeout,
                Config::DRAIN_TIMEOUT_MAX
            )));
        }
        Ok(())
    }

    /// The per-worker limits.
    fn validate_limits(&self) -> Result<(), Error> {
        let l = &self.limits;
        if l.connections_max == 0 || l.connections_max > Limits::CONNECTIONS_MAX {
            return Err(Error::config(format!(
                "connections-max = {} is out of range; use 1..={} per worker",
                l.connections_max,
                Limits::CONNECTIONS_MAX
            )));
        }
        if l.handlers_max == 0 || l.handlers_max > Limits::HANDLERS_MAX {
            return Err(Error::config(format!(
                "handlers-max = {} is out of range; use 1..={} per worker",
                l.handlers_max,
                Limits::HANDLERS_MAX
            )));
        }
        let (head_min, head_max) = (Limits::HEAD_PART_BYTES_MIN, Limits::HEAD_PART_BYTES_MAX);
        for (name, value, min, max) in [
            (
                "request-line-bytes-max",
                l.request_line_bytes_max,
                head_min,
                head_max,
            ),
            (
                "request-fields-bytes-max",
                l.request_fields_bytes_max,
                head_min,
                head_max,
            ),
            (
                "request-body-bytes-max",
                l.request_body_bytes_max,
                0,
                Limits::REQUEST_BODY_BYTES_MAX,
            ),
        ] {
            if value < min || value > max {
                return Err(Error::config(format!(
                    "{name} = {value} is out of range; use {min}..={max}"
                )));
            }
        }
        Ok(())
    }

    /// The io_uring options, and the ring they size.
    fn validate_uring(&self) -> Result<(), Error> {
        let u = &self.uring;
        if !u.recv_buffers.is_power_of_two()
            || u.recv_buffers > ringmaster_uring::BUF_RING_ENTRIES_MAX
        {
            return Err(Error::config(format!(
                "recv-buffers = {} must be a power of two up to {}",
                u.recv_buffers,
                ringmaster_uring::BUF_RING_ENTRIES_MAX
            )));
        }
        self.ring_sizes(self.backlog)?;
        let buffer_bytes =
            UringOptions::RECV_BUFFER_BYTES_MIN..=UringOptions::RECV_BUFFER_BYTES_MAX;
        if !buffer_bytes.contains(&u.recv_buffer_bytes) {
            return Err(Error::config(format!(
                "recv-buffer-bytes = {} is out of range; use {}..={}",
                u.recv_buffer_bytes,
                buffer_bytes.start(),
                buffer_bytes.end()
            )));
        }
        Ok(())
    }
}

/// The directory of the default control socket for a user of uid `uid` whose
/// `$XDG_RUNTIME_DIR` is `runtime` (when set to an absolute directory). Never a shared
/// directory itself: `/tmp/ringmaster-PORT.sock` could be taken by any user first.
fn control_dir(runtime: Option<PathBuf>, uid: u32) -> PathBuf {
    match runtime {
        Some(dir) => dir.join("ringmaster"),
        None if uid == 0 => PathBuf::from("/run/ringmaster"),
        None => PathBuf::from(format!("/tmp/ringmaster-{uid}")),
    }
}

/// Ring operations one connection can have in flight at once, which its share of the
/// in-flight table must hold (a full table would end the worker): its receive and its
/// send, a cancel of each, a reset's socket option, the close, and a send-queue sample. The
/// read of the client's address is not counted: it completes in the submit that issues the
/// first receive, before any of the others can be pushed.
const OPS_PER_CONNECTION_MAX: u32 = 7;
/// Completions one connection adds to a loop turn, counted for the completion queue: its
/// receive's last, a send, a close and a cancel. A teardown can add three more; on the rare
/// turn when many connections tear down at once and the queue overflows, the kernel keeps
/// the rest until they are reaped (`IORING_FEAT_NODROP`, which start-up requires).
const COMPLETIONS_PER_CONNECTION: u32 = 4;
/// Single-shot accepts kept armed at once when the table is nearly full.
pub(crate) const ACCEPT_SINGLE_DEPTH: u32 = 4;
/// Accept operations on one listening socket at once: a multishot accept, or up to
/// [`ACCEPT_SINGLE_DEPTH`] single ones, and a cancel of each.
const ACCEPT_OPS_PER_LISTENER: u32 = 2 * ACCEPT_SINGLE_DEPTH;
/// The side channels' operations: the IPC read, the signal read, the tick, an access log
/// write, the read of the wake eventfd (async handlers woken from other threads).
const SIDE_OPS: u32 = 5;
/// The ring operations of async handlers' futures: [`rt::OPS_MAX`](crate::rt::OPS_MAX), and
/// a cancel of each. Their completions are not counted for the completion queue: they come
/// as the futures' waits end, spread over turns, and a turn that overflows the queue loses
/// nothing (`IORING_FEAT_NODROP`).
const RT_OPS: u32 = 2 * crate::rt::OPS_MAX as u32;

// The relation `Limits::CONNECTIONS_MAX` documents: at its bound, with the default receive
// buffers and backlog, the completion queue fits the kernel's largest.
const _: () = assert!(
    Limits::CONNECTIONS_MAX * COMPLETIONS_PER_CONNECTION
        + UringOptions::RECV_BUFFERS_DEFAULT as u32
        + Config::BACKLOG_DEFAULT
        + ACCEPT_OPS_PER_LISTENER
        + SIDE_OPS
        <= ringmaster_uring::CQ_ENTRIES_MAX
);
// An over-long method is told from an over-long request line at every line limit.
const _: () =
    assert!((crate::http::request::METHOD_BYTES_MAX as u32) < Limits::HEAD_PART_BYTES_MIN);
// And the in-flight table, which holds more per connection, fits a `u32` at every bound.
const _: () = assert!(
    (Limits::CONNECTIONS_MAX as u64 * OPS_PER_CONNECTION_MAX as u64
        + ACCEPT_OPS_PER_LISTENER as u64 * Config::WORKERS_MAX as u64
        + Config::BACKLOG_MAX as u64
        + SIDE_OPS as u64
        + RT_OPS as u64)
        < u32::MAX as u64
);
/// Submission queue entries per worker. A turn that pushes more submits early.
const SQ_ENTRIES: u32 = 2048;

/// The sizes of a worker's ring, derived from the limits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RingSizes {
    pub(crate) sq_entries: u32,
    pub(crate) cq_entries: u32,
    pub(crate) inflight_max: u32,
}

impl Config {
    /// Sizes the ring. The in-flight table holds every operation that can be in flight at
    /// once: each connection's, the accepts on every socket the worker may adopt, the closes
    /// of an accept burst beyond the bound (at most `accept_queue`, the kernel's accept
    /// queue length), and the side channels'. The completion queue holds a turn's worth:
    /// every connection's usual completions, one per receive buffer (each multishot
    /// completion consumes one), an accept burst, and the worker's own operations.
    pub(crate) fn ring_sizes(&self, accept_queue: u32) -> Result<RingSizes, Error> {
        let c = self.limits.connections_max;
        let inflight_max = c * OPS_PER_CONNECTION_MAX
            + ACCEPT_OPS_PER_LISTENER * Config::WORKERS_MAX
            + accept_queue
            + SIDE_OPS
            + RT_OPS;
        let cq = c * COMPLETIONS_PER_CONNECTION
            + u32::from(self.uring.recv_buffers)
            + accept_queue
            + ACCEPT_OPS_PER_LISTENER
            + SIDE_OPS;
        let cq_entries = cq.next_power_of_two();
        if cq_entries > ringmaster_uring::CQ_ENTRIES_MAX {
            return Err(Error::config(format!(
                "connections-max = {c} with recv-buffers = {} and backlog = {accept_queue} needs a \
                 completion queue of {cq} entries, over the kernel's {}; lower one of them",
                self.uring.recv_buffers,
                ringmaster_uring::CQ_ENTRIES_MAX
            )));
        }
        Ok(RingSizes {
            sq_entries: SQ_ENTRIES,
            cq_entries,
            inflight_max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_control_socket_lies_in_a_private_directory() {
        let run = Some(PathBuf::from("/run/user/1000"));
        assert_eq!(
            control_dir(run.clone(), 1000),
            PathBuf::from("/run/user/1000/ringmaster")
        );
        assert_eq!(
            control_dir(run, 0),
            PathBuf::from("/run/user/1000/ringmaster")
        );
        assert_eq!(control_dir(None, 0), PathBuf::from("/run/ringmaster"));
        assert_eq!(
            control_dir(None, 1000),
            PathBuf::from("/tmp/ringmaster-1000")
        );
        let chosen = Config {
            control: Some(PathBuf::from("/srv/rm.sock")),
            ..Config::default()
        };
        assert_eq!(chosen.control_path(80), PathBuf::from("/srv/rm.sock"));
        let default = Config::default().control_path(8080);
        assert!(default.ends_with("ringmaster-8080.sock"), "{default:?}");
        assert_ne!(default.parent(), Some(std::path::Path::new("/tmp")));
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn bounds_are_enforced_at_the_edges() {
        let with = |f: &dyn Fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate()
        };
        assert!(with(&|c| c.workers = Workers::Count(1)).is_ok());
        assert!(with(&|c| c.workers = Workers::Count(Config::WORKERS_MAX)).is_ok());
        assert!(with(&|c| c.workers = Workers::Count(0)).is_err());
        assert!(with(&|c| c.workers = Workers::Count(Config::WORKERS_MAX + 1)).is_err());
        assert!(with(&|c| c.limits.connections_max = Limits::CONNECTIONS_MAX).is_ok());
        assert!(with(&|c| c.limits.connections_max = Limits::CONNECTIONS_MAX + 1).is_err());
        assert!(with(&|c| c.limits.connections_max = 0).is_err());
        assert!(with(&|c| c.uring.recv_buffers = 3).is_err());
        let err = with(&|c| {
            c.limits.connections_max = Limits::CONNECTIONS_MAX;
            c.uring.recv_buffers = 32768;
        })
        .unwrap_err();
        assert!(err.to_string().contains("completion queue"), "{err}");
        assert!(with(&|c| c.drain_timeout = Config::DRAIN_TIMEOUT_MAX).is_ok());
        assert!(
            with(&|c| c.drain_timeout = Config::DRAIN_TIMEOUT_MAX + Duration::from_secs(1))
                .is_err()
        );
        let err = with(&|c| c.backlog = 0).unwrap_err();
        assert!(err.to_string().contains("backlog = 0"), "{err}");
        let list = |cpus: Vec<usize>| {
            move |c: &mut Config| c.cpu_affinity = CpuAffinity::List(cpus.clone())
        };
        assert!(with(&list(vec![0])).is_ok());
        assert!(with(&list(vec![Config::CPU_ID_LIMIT - 1])).is_ok());
        assert!(with(&list(vec![Config::CPU_ID_LIMIT])).is_err());
        assert!(with(&list(vec![])).is_err());
        assert!(with(&list((0..Config::WORKERS_MAX as usize).collect())).is_ok());
        assert!(with(&list((0..=Config::WORKERS_MAX as usize).collect())).is_err());
        let err = with(&list(vec![1, 0, 1])).unwrap_err();
        assert!(err.to_string().contains("cpu 1 is listed twice"), "{err}");
    }

    #[test]
    fn cpu_affinity_parses_modes_lists_and_ranges_in_order() {
        use CpuAffinity::{Auto, List, Unpinned};
        for (text, parsed) in [
            ("auto", Ok(Auto)),
            ("none", Ok(Unpinned)),
            ("0", Ok(List(vec![0]))),
            ("0,2,4-7", Ok(List(vec![0, 2, 4, 5, 6, 7]))),
            ("4-7,0", Ok(List(vec![4, 5, 6, 7, 0]))),
            ("3-3", Ok(List(vec![3]))),
            ("1023", Ok(List(vec![1023]))),
        ] {
            assert_eq!(CpuAffinity::parse(text), parsed, "{text}");
        }
        for (text, says) in [
            ("", "a CPU number is missing"),
            ("0,", "a CPU number is missing"),
            ("x", "`x` is not a CPU number"),
            ("-1", "a CPU number is missing"),
            ("0-", "a CPU number is missing"),
            ("1-2-3", "`2-3` is not a CPU number"),
            (" 1", "` 1` is not a CPU number"),
            ("7-4", "runs backwards; write 4-7"),
            ("1024", "cpu 1024 is out of range"),
            ("0,1,0", "cpu 0 is listed twice"),
            ("0-3,2", "cpu 2 is listed twice"),
            ("Auto", "`Auto` is not a CPU number"),
        ] {
            let err = CpuAffinity::parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn a_cpu_name_is_its_number_or_none() {
        assert_eq!(CpuName(Some(3)).to_string(), "3");
        assert_eq!(CpuName(None).to_string(), "none");
        assert_eq!(format!("{:<6}|", CpuName(None)), "none  |");
    }
}
