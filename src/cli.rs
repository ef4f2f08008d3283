//! The command line: the `ringmaster` binary's, and yours if you bring your own handler:
//!
//! ```no_run
//! use ringmaster::{Request, Response, Server};
//!
//! fn main() {
//!     let server = Server::new(|_: &Request<'_>, res: &mut Response| {
//!         res.body("hi");
//!     });
//!     std::process::exit(ringmaster::cli::run(ringmaster::app!(), server));
//! }
//! ```
//!
//! `run` parses the arguments: `serve` (the default) applies the flags given over the
//! server's configuration and runs it; `status`, `reload`, `reopen`, `scale` and `stop` talk to a running
//! master over its control socket; `probe` shows what this kernel's io_uring offers. Every usage error is one line on stderr and exit code 2.

use crate::config_file;
use crate::control::{PathOrigin, RequestError};
use crate::{
    AccessLogFormat, Config, CpuAffinity, ErrorKind, ListenMode, LogFormat, Serve, Server, Workers,
};
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Exit code for a usage or start-up error, or no master to talk to.
const EXIT_USAGE: i32 = 2;
/// Exit code when the server could not keep running, or a command to it failed.
const EXIT_FAILED: i32 = 1;
/// How long `reload` and `scale` wait for the master's answer: a reload of many
/// slow-starting workers can take a while.
const RELOAD_ANSWER_WAIT: Duration = Duration::from_secs(600);
/// How long `status`, `reopen` and `stop` wait for the master's answer (a reopen's own wait
/// for the workers is shorter, 5 s).
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Node's cluster + http for Linux: a master forks one worker per CPU, pins it there, and
/// every worker serves HTTP/1.1 through its own io_uring.
#[derive(Parser, Debug)]
#[command(name = "ringmaster", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve HTTP (what runs when no command is given).
    Serve(Box<ServeArgs>),
    /// Show the running master's workers.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace every worker of the running master, one slot at a time, without dropping a
    /// request (the same as SIGHUP to the master); waits until it is done.
    Reload(Target),
    /// Reopen the access log in the master and every worker, after logrotate renamed it
    /// (the same as SIGUSR1 to the master); waits until every worker switched.
    Reopen(Target),
    /// Run N workers from now on: more start on the next CPUs (answered once they are
    /// ready), or the last ones drain; kept across reloads. SIGTTIN to the master adds one,
    /// SIGTTOU removes one.
    Scale {
        /// The worker count, 1 to 1024; more than one per CPU workers may run on only with
        /// --oversubscribe.
        #[arg(value_name = "N")]
        workers: u32,
        /// Allow more workers than CPUs in the affinity mask (or listed by --cpu-affinity).
        #[arg(long)]
        oversubscribe: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Stop the running master gracefully (the same as SIGTERM to the master).
    Stop(Target),
    /// Show what this kernel's io_uring offers, feature by feature, and what workers would
    /// use of it with the flags given (the server's own flags, `--uring-no-*` included);
    /// exit 1 when the server could not run here.
    Probe(Box<ProbeArgs>),
}

/// `probe`: its own flag, and the server's.
#[derive(Args, Debug)]
struct ProbeArgs {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    serve: ServeArgs,
}

/// Which running master to talk to.
#[derive(Args, Debug)]
struct Target {
    /// The master's control socket (default: ringmaster-PORT.sock, PORT from --listen, in
    /// a directory private to this user: $XDG_RUNTIME_DIR/ringmaster, /run/ringmaster for
    /// root, else /tmp/ringmaster-UID). Only a master of this user or root is talked to.
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// The address the master listens on; its port names the control socket. [default:
    /// the server's own, as `--help` shows it for serving]
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    listen: Option<SocketAddr>,
    /// Take `listen` and `control` from this TOML file too, as the server does (its other
    /// keys are the server's) [env: RINGMASTER_CONFIG]
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

impl Target {
    /// The control socket of the master that `defaults` (the server's configuration) with
    /// these flags over it would start.
    fn path(&self, defaults: &Config) -> PathBuf {
        let config = Config {
            control: self.control.clone().or_else(|| defaults.control.clone()),
            ..Config::default()
        };
        config.control_path(self.listen.unwrap_or(defaults.listen).port())
    }

    fn origin(&self, defaults: &Config) -> PathOrigin {
        PathOrigin::of(self.control.as_deref().or(defaults.control.as_deref()))
    }
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on: IP:PORT, [IPv6]:PORT, or a bare PORT (on 0.0.0.0). Port 0
    /// picks a free port; the log says which. [default: 0.0.0.0:3000]
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    listen: Option<SocketAddr>,
    /// Number of workers, or `auto` for one per CPU this process may run on. [default: auto]
    #[arg(long, value_name = "N|auto", value_parser = parse_workers)]
    workers: Option<Workers>,
    /// Where workers run: `auto` (worker i pinned to the i-th CPU this process may run on),
    /// `none` (not pinned: for hosts whose CPUs other busy processes share), or a list such
    /// as `0,2,4-7` (worker i pinned to the i-th CPU listed, round robin; `--workers auto`
    /// runs one per CPU listed). [default: auto]
    #[arg(long, value_name = "auto|none|LIST", value_parser = CpuAffinity::parse)]
    cpu_affinity: Option<CpuAffinity>,
    /// How workers share the port: `reuseport` (one SO_REUSEPORT socket per worker, kept
    /// open by the master) or `shared` (one socket). [default: reuseport]
    #[arg(long, value_name = "MODE", value_parser = parse_listen_mode)]
    listen_mode: Option<ListenMode>,
    /// Seconds a graceful shutdown waits for requests in flight before killing workers.
    /// [default: 10]
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    drain_timeout: Option<Duration>,
    /// Listen backlog (capped by the kernel's net.core.somaxconn). [default: 4096]
    #[arg(long, value_name = "N")]
    backlog: Option<u32>,
    /// Open connections per worker; at the bound a worker stops accepting. [default: 10000]
    #[arg(long, value_name = "N")]
    connections_max: Option<u32>,
    /// Longest request line in bytes (longer: 414). [default: 8192]
    #[arg(long, value_name = "BYTES")]
    request_line_bytes_max: Option<u32>,
    /// Largest header section in bytes (larger: 431). [default: 16384]
    #[arg(long, value_name = "BYTES")]
    request_fields_bytes_max: Option<u32>,
    /// Largest request body in bytes (larger: 413). [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    request_body_bytes_max: Option<u32>,
    /// Response bytes waiting to be sent at which a connection stops reading (backpressure).
    /// [default: 65536]
    #[arg(long, value_name = "BYTES")]
    output_bytes_max: Option<u32>,
    /// Seconds for a whole request head to arrive (late: 408). [default: 10]
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    request_head_timeout: Option<Duration>,
    /// Minimum request body rate in bytes per second, over 5 s windows (slower: 408).
    /// [default: 1024]
    #[arg(long, value_name = "BYTES")]
    request_body_rate_min: Option<u32>,
    /// Seconds an idle keep-alive connection stays open. [default: 60]
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    idle_timeout: Option<Duration>,
    /// Seconds a send may make no progress (the client stopped reading) before the
    /// connection is closed. [default: 30]
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    send_timeout: Option<Duration>,
    /// Minimum rate in bytes per second at which a client must take the response bytes it
    /// owes, over 5 s windows (slower: reset); 0 disables. [default: 1024]
    #[arg(long, value_name = "BYTES")]
    send_rate_min: Option<u32>,
    /// Async handler futures in flight per worker; at the bound, connections wait for a
    /// slot and are not read. [default: 10000]
    #[arg(long, value_name = "N")]
    handlers_max: Option<u32>,
    /// Seconds an async handler may take to answer (late: 503 and a close). [default: 30]
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    handler_timeout: Option<Duration>,
    /// Slots a reload replaces at once. [default: 1]
    #[arg(long, value_name = "N")]
    reload_parallel: Option<u32>,
    /// Seconds a new worker has to report ready (a reload keeps the old one if it does not).
    /// [default: 10]
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    ready_timeout: Option<Duration>,
    /// Failures of one slot within --respawn-window that stop its respawns. [default: 5]
    #[arg(long, value_name = "N")]
    respawn_failures_max: Option<u32>,
    /// Seconds in which --respawn-failures-max failures stop a slot's respawns.
    /// [default: 60]
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    respawn_window: Option<Duration>,
    /// Seconds a worker must stay up to count as healthy (its slot's respawn delay and
    /// failure count start over). [default: 30]
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    min_uptime: Option<Duration>,
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address: IP:PORT (an IPv6
    /// address in brackets), or a bare PORT (on 127.0.0.1 only; give 0.0.0.0:PORT to serve
    /// other hosts). [default: off]
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics)]
    metrics: Option<SocketAddr>,
    /// Recycle a worker (replace it gracefully) after this many requests. [default: never]
    #[arg(long, value_name = "N")]
    max_requests: Option<u64>,
    /// Up to this many requests added at random to --max-requests per worker. [default: 0]
    #[arg(long, value_name = "N")]
    max_requests_jitter: Option<u64>,
    /// Recycle a worker once its resident memory exceeds this many MiB. [default: never]
    #[arg(long, value_name = "MIB")]
    max_memory: Option<u64>,
    /// Seconds without a report after which a worker is stuck: SIGABRT, then respawned;
    /// 0 disables. [default: 30]
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    worker_timeout: Option<Duration>,
    /// Log lines as `text` or `json`. [default: text]
    #[arg(long, value_name = "FORMAT", value_parser = parse_log_format)]
    log_format: Option<LogFormat>,
    /// Append an access log to this file. [default: none]
    #[arg(long, value_name = "PATH")]
    access_log: Option<PathBuf>,
    /// The access log's lines: `common` (common log format), `combined` (with referer and
    /// user agent, as nginx's default) or `json` (one object per line, with the duration,
    /// the user agent and the request id). [default: common]
    #[arg(long, value_name = "FORMAT", value_parser = AccessLogFormat::parse)]
    access_log_format: Option<AccessLogFormat>,
    /// A handler's panic ends its worker (respawned by the master) instead of answering 500.
    #[arg(long)]
    exit_on_panic: bool,
    /// Serve the files beneath DIR for the paths below PREFIX, e.g. `--static /=./public`
    /// (repeatable; the longest matching prefix wins, and Hello World answers the rest).
    /// The `ringmaster` binary's own server only.
    #[arg(long = "static", value_name = "PREFIX=DIR", value_parser = parse_mount)]
    statics: Vec<(String, PathBuf)>,
    /// Forward the requests below PREFIX to these upstreams, in turn, without the prefix,
    /// e.g. `--proxy /api=http://127.0.0.1:8080,http://127.0.0.1:8081` (repeatable; the
    /// longest matching prefix wins). The client's address is looked up for each
    /// connection and appended to `X-Forwarded-For`. The `ringmaster` binary's own server
    /// only.
    #[arg(long = "proxy", value_name = "PREFIX=URL[,URL...]", value_parser = parse_proxy)]
    proxies: Vec<(String, Vec<String>)>,
    /// Seconds from a proxied request's start until its upstream response head is read,
    /// every try included (past it: 504). [default: 25]
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    proxy_total_timeout: Option<Duration>,
    /// The `Host` proxied requests go upstream with: `$host` (the client's, the default),
    /// `$proxy_host` (the upstream URL's HOST:PORT), or a name of its own, as nginx's
    /// `proxy_set_header Host`.
    #[arg(long, value_name = "HOST", value_parser = crate::proxy::UpstreamHost::parse)]
    proxy_host: Option<crate::proxy::UpstreamHost>,
    /// Seconds an upstream may stay silent while a response is awaited or read (past it:
    /// 504, or a closed connection mid-body). [default: 60]
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    proxy_timeout: Option<Duration>,
    /// The control socket's path. [default: ringmaster-PORT.sock in a directory private to
    /// this user: $XDG_RUNTIME_DIR/ringmaster, /run/ringmaster for root, else
    /// /tmp/ringmaster-UID]
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Read settings from this TOML file: one key per flag, named as the flag without `--`
    /// (`workers = 4`, `static = ["/=./public"]`); flags given here override it. Read again
    /// at each reload, for the new workers [env: RINGMASTER_CONFIG]
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Provided receive buffers per worker (a power of two). [default: 1024]
    #[arg(long, value_name = "N")]
    recv_buffers: Option<u16>,
    /// Bytes per provided receive buffer. [default: 4096]
    #[arg(long, value_name = "BYTES")]
    recv_buffer_bytes: Option<u32>,
    /// Do not set up rings with SINGLE_ISSUER + DEFER_TASKRUN (use COOP_TASKRUN).
    #[arg(long)]
    uring_no_defer_taskrun: bool,
    /// Arm one single-shot accept per connection instead of one multishot accept.
    #[arg(long)]
    uring_no_multishot_accept: bool,
    /// Arm one single-shot receive per read instead of one multishot receive per connection.
    #[arg(long)]
    uring_no_multishot_recv: bool,
    /// Do not register the ring's descriptor (each io_uring_enter looks it up).
    #[arg(long)]
    uring_no_registered_ring: bool,
    /// Accept connections as plain descriptors instead of direct ones (ring-registered).
    #[arg(long)]
    uring_no_direct_descriptors: bool,
}

impl ServeArgs {
    /// `base` with every flag given applied over it.
    fn apply(&self, mut c: Config) -> Config {
        fn set<T: Clone>(field: &mut T, flag: &Option<T>) {
            if let Some(v) = flag {
                *field = v.clone();
            }
        }
        set(&mut c.listen, &self.listen);
        set(&mut c.workers, &self.workers);
        set(&mut c.cpu_affinity, &self.cpu_affinity);
        set(&mut c.listen_mode, &self.listen_mode);
        set(&mut c.drain_timeout, &self.drain_timeout);
        set(&mut c.backlog, &self.backlog);
        set(&mut c.limits.connections_max, &self.connections_max);
        set(
            &mut c.limits.request_line_bytes_max,
            &self.request_line_bytes_max,
        );
        set(
            &mut c.limits.request_fields_bytes_max,
            &self.request_fields_bytes_max,
        );
        set(
            &mut c.limits.request_body_bytes_max,
            &self.request_body_bytes_max,
        );
        set(&mut c.limits.output_bytes_max, &self.output_bytes_max);
        set(
            &mut c.limits.request_head_timeout,
            &self.request_head_timeout,
        );
        set(
            &mut c.limits.request_body_rate_min,
            &self.request_body_rate_min,
        );
        set(&mut c.limits.idle_timeout, &self.idle_timeout);
        set(&mut c.limits.send_timeout, &self.send_timeout);
        set(&mut c.limits.send_rate_min, &self.send_rate_min);
        set(&mut c.limits.handlers_max, &self.handlers_max);
        set(&mut c.limits.handler_timeout, &self.handler_timeout);
        set(&mut c.reload_parallel, &self.reload_parallel);
        set(&mut c.ready_timeout, &self.ready_timeout);
        set(&mut c.respawn_failures_max, &self.respawn_failures_max);
        set(&mut c.respawn_window, &self.respawn_window);
        set(&mut c.min_uptime, &self.min_uptime);
        if self.control.is_some() {
            c.control = self.control.clone();
        }
        if self.metrics.is_some() {
            c.metrics = self.metrics;
        }
        if self.max_requests.is_some() {
            c.max_requests = self.max_requests;
        }
        set(&mut c.max_requests_jitter, &self.max_requests_jitter);
        if self.max_memory.is_some() {
            c.max_memory_mib = self.max_memory;
        }
        set(&mut c.worker_timeout, &self.worker_timeout);
        set(&mut c.log_format, &self.log_format);
        set(&mut c.access_log_format, &self.access_log_format);
        if self.access_log.is_some() {
            c.access_log = self.access_log.clone();
        }
        c.exit_on_panic |= self.exit_on_panic;
        // A proxy appends the client's address to X-Forwarded-For.
        c.client_addresses |= !self.proxies.is_empty();
        set(&mut c.uring.recv_buffers, &self.recv_buffers);
        set(&mut c.uring.recv_buffer_bytes, &self.recv_buffer_bytes);
        c.uring.defer_taskrun &= !self.uring_no_defer_taskrun;
        c.uring.multishot_accept &= !self.uring_no_multishot_accept;
        c.uring.multishot_recv &= !self.uring_no_multishot_recv;
        c.uring.registered_ring_fd &= !self.uring_no_registered_ring;
        c.uring.direct_descriptors &= !self.uring_no_direct_descriptors;
        c
    }
}

/// `PREFIX=URL[,URL...]`: a path prefix (starting with `/`) and upstream URLs.
fn parse_proxy(s: &str) -> Result<(String, Vec<String>), String> {
    match s.split_once('=') {
        Some((prefix, urls)) if prefix.starts_with('/') && !urls.is_empty() => Ok((
            prefix.to_string(),
            urls.split(',').map(|u| u.trim().to_string()).collect(),
        )),
        _ => Err(
            "expected PREFIX=URL[,URL...] with PREFIX starting with /, e.g. \
             /api=http://127.0.0.1:8080"
                .into(),
        ),
    }
}

/// `PREFIX=DIR`: a path prefix (starting with `/`) and a directory.
fn parse_mount(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((prefix, dir)) if prefix.starts_with('/') && !dir.is_empty() => {
            Ok((prefix.to_string(), PathBuf::from(dir)))
        }
        _ => Err("expected PREFIX=DIR with PREFIX starting with /, e.g. /assets=./public".into()),
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        }
    }
    s.parse().map_err(|_| {
        "expected IP:PORT (like 0.0.0.0:3000 or [::1]:8080) or a port number".to_string()
    })
}

/// `--metrics`: like `--listen`, except that a bare port is on loopback only, so that the
/// master's figures are not offered to the network unless an address says so.
fn parse_metrics(s: &str) -> Result<SocketAddr, String> {
    match s.parse::<u16>() {
        Ok(port) => Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
        Err(_) => parse_listen(s),
    }
}

fn parse_workers(s: &str) -> Result<Workers, String> {
    if s == "auto" {
        return Ok(Workers::Auto);
    }
    match s.parse::<u32>() {
        Ok(n) if (1..=Config::WORKERS_MAX).contains(&n) => Ok(Workers::Count(n)),
        _ => Err(format!(
            "expected `auto` or a number from 1 to {}",
            Config::WORKERS_MAX
        )),
    }
}

fn parse_listen_mode(s: &str) -> Result<ListenMode, String> {
    match s {
        "shared" => Ok(ListenMode::Shared),
        "reuseport" => Ok(ListenMode::ReusePort),
        _ => Err("expected `reuseport` or `shared`".to_string()),
    }
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected `text` or `json`".to_string()),
    }
}

/// Seconds, from 0 to [`Config::DRAIN_TIMEOUT_MAX`], the longest any timeout may be.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let max = Config::DRAIN_TIMEOUT_MAX.as_secs();
    match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=max as f64).contains(&secs) => {
            Ok(Duration::from_secs_f64(secs))
        }
        _ => Err(format!("expected seconds from 0 to {max}")),
    }
}

/// What a command line is for: the program's name and version, which `--help`,
/// `--version` and every error line show. [`app!`](crate::app) makes one from the calling
/// crate's `Cargo.toml`.
///
/// See [`app!`](crate::app)'s example, and `examples/app.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct App {
    name: &'static str,
    version: &'static str,
    about: Option<&'static str>,
}

impl App {
    /// An application named `name` at `version`.
    ///
    /// # Examples
    ///
    /// A program installed under a name other than its package's:
    ///
    /// ```no_run
    /// use ringmaster::cli::{self, App};
    /// use ringmaster::{HelloWorld, Server};
    ///
    /// const APP: App = App::new("edge", env!("CARGO_PKG_VERSION"));
    ///
    /// std::process::exit(cli::run(APP, Server::new(HelloWorld)));
    /// ```
    pub const fn new(name: &'static str, version: &'static str) -> App {
        App {
            name,
            version,
            about: None,
        }
    }

    /// What the program is, as `--help` says it first (by default: an HTTP server on
    /// ringmaster).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use ringmaster::{HelloWorld, Server};
    ///
    /// let app = ringmaster::app!().about("the edge of the shop: static files and the API");
    /// std::process::exit(ringmaster::cli::run(app, Server::new(HelloWorld)));
    /// ```
    pub const fn about(self, about: &'static str) -> App {
        App {
            about: Some(about),
            ..self
        }
    }

    /// The `ringmaster` binary's own.
    const RINGMASTER: App = App::new("ringmaster", env!("CARGO_PKG_VERSION"));
}

/// The calling crate's [`App`](crate::cli::App): its package name and version, from its
/// `Cargo.toml`.
///
/// ```no_run
/// let server = ringmaster::Server::new(ringmaster::HelloWorld);
/// std::process::exit(ringmaster::cli::run(ringmaster::app!(), server));
/// ```
#[macro_export]
macro_rules! app {
    () => {
        $crate::cli::App::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
    };
}

/// Parses the process's arguments as `app`'s and runs what they ask: serves with `server`
/// (its configuration, then a `--config` file, then the environment, then the flags given,
/// each over the one before) or talks to a running master (found from the same settings:
/// `myapp status` finds the server `myapp` started). Returns the exit code.
///
/// # Examples
///
/// The server's own settings are the defaults: this one listens on port 8080 unless
/// `--listen`, `RINGMASTER_LISTEN`, `PORT` or the `--config` file says otherwise, and
/// `--help` shows 8080.
///
/// ```no_run
/// use ringmaster::{HelloWorld, Server};
///
/// let server = Server::new(HelloWorld).listen("0.0.0.0:8080".parse().unwrap());
/// std::process::exit(ringmaster::cli::run(ringmaster::app!(), server));
/// ```
pub fn run<H: Serve>(app: App, server: Server<H>) -> i32 {
    crate::log::set_program(app.name);
    let cli = match parse(&app, server.config_ref()) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let args = cli.serve_args();
    let proxy_set = args.proxy_timeout.is_some()
        || args.proxy_total_timeout.is_some()
        || args.proxy_host.is_some();
    if !args.statics.is_empty() || !args.proxies.is_empty() || proxy_set {
        return usage_error(
            "--static, --proxy and the --proxy-* settings are the ringmaster binary's; in a \
             program, mount ringmaster::files::Static or ringmaster::proxy::Proxy on a Router \
             and set the proxy's timeouts and host on it",
        );
    }
    dispatch(&cli, server)
}

/// Like [`run`], with the `ringmaster` binary's own server: Hello World, and the files of
/// each `--static PREFIX=DIR` and the upstreams of each `--proxy PREFIX=URL[,URL…]` mounted
/// beneath their prefixes, each mount's answers counted for `status` and `/metrics` (at most
/// [`MOUNTS_MAX`](crate::ipc::MOUNTS_MAX) mounts).
///
/// # Examples
///
/// The `ringmaster` binary's whole `main`:
///
/// ```no_run
/// std::process::exit(ringmaster::cli::run_builtin());
/// ```
pub fn run_builtin() -> i32 {
    let app = App::RINGMASTER;
    crate::log::set_program(app.name);
    let cli = match parse(&app, &Config::default()) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let args = cli.serve_args();
    let statics = &args.statics;
    if statics.is_empty() && args.proxies.is_empty() {
        return dispatch(&cli, Server::new(crate::HelloWorld));
    }
    let mounts = statics.len() + args.proxies.len();
    if mounts > crate::ipc::MOUNTS_MAX {
        return usage_error(&format!(
            "{mounts} mounts given (--static and --proxy together); at most {} are served, \
             each with its own counters; merge mounts under a common prefix",
            crate::ipc::MOUNTS_MAX
        ));
    }
    let mut router = crate::Router::new().fallback(crate::HelloWorld);
    let timeout = args.proxy_timeout.unwrap_or(crate::proxy::READ_TIMEOUT);
    let total = args
        .proxy_total_timeout
        .unwrap_or(crate::proxy::TOTAL_TIMEOUT);
    for (flag, limit) in [
        ("--proxy-timeout", timeout),
        ("--proxy-total-timeout", total),
    ] {
        if limit.is_zero() {
            return usage_error(&format!(
                "{flag} 0: an upstream needs some time; give seconds above 0"
            ));
        }
    }
    for (prefix, urls) in &args.proxies {
        let mounted = crate::proxy::Proxy::new(urls).and_then(|proxy| {
            let host = args.proxy_host.clone().unwrap_or_default();
            let proxy = proxy.read_timeout(timeout).total_timeout(total).host(host);
            let mount = crate::mounts::Mount::proxy(prefix, urls, &proxy);
            router
                .try_mount_counted(mount, proxy)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = mounted {
            return usage_error(&format!("--proxy {prefix}={}: {e}", urls.join(",")));
        }
    }
    for (prefix, dir) in statics {
        let mounted = crate::files::Static::new(dir)
            .map_err(|e| format!("{e}; give a directory that exists"))
            .and_then(|files| {
                let mount = crate::mounts::Mount::files(prefix, dir);
                router
                    .try_mount_counted(mount, files)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = mounted {
            return usage_error(&format!("--static {prefix}={}: {e}", dir.display()));
        }
    }
    dispatch(&cli, Server::new(router))
}

/// The command line, or the exit code after printing why it is not one (or the help).
/// Settings come from four layers, each over the one before: the server's configuration
/// (`defaults`, shown in `--help`), the `--config` file, the environment (`RINGMASTER_*`
/// and `PORT`), and the flags given ([`crate::config_file`]). A command that talks to a
/// running master takes its `listen` and `control` from the same layers, so it finds the
/// master the same settings started.
fn parse(app: &App, defaults: &Config) -> Result<Cli, i32> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cli = parse_from(app, defaults, &argv, None)?;
    let all = file_flags();
    let serves = matches!(
        cli.command,
        None | Some(Command::Serve(_) | Command::Probe(_))
    );
    // After the program's name, and after the subcommand if one is given.
    let at = match cli.command {
        None => 1,
        Some(_) => 2,
    }
    .min(argv.len());
    let takes = |name: &str| serves || matches!(name, "listen" | "control");
    let env_args = config_file::env_args(&all, &argv, takes).map_err(|e| usage_error(&e))?;
    let given: Vec<OsString> = argv.iter().chain(&env_args).cloned().collect();
    let file = match cli.config_path() {
        Some(path) => {
            let text = config_file::text_for(&path).map_err(|e| usage_error(&e))?;
            let args = config_file::to_args(&text, &path, &all, &given, takes)
                .map_err(|e| usage_error(&e))?;
            Some((path, text, args))
        }
        None => None,
    };
    if env_args.is_empty() && file.is_none() {
        return Ok(cli);
    }
    let head = || argv[..at].iter().cloned();
    // Each layer's flags alone first, so that a bad value is blamed on where it came from.
    if let Some((path, _, args)) = &file {
        let alone: Vec<OsString> = head().chain(args.iter().cloned()).collect();
        parse_from(
            app,
            defaults,
            &alone,
            Some(&format!("config file {}", path.display())),
        )?;
    }
    let alone: Vec<OsString> = head().chain(env_args.iter().cloned()).collect();
    parse_from(
        app,
        defaults,
        &alone,
        Some("the environment (RINGMASTER_*, PORT)"),
    )?;
    let file_args = file.as_ref().map_or(&[][..], |(_, _, args)| &args[..]);
    let merged: Vec<OsString> = head()
        .chain(file_args.iter().cloned())
        .chain(env_args)
        .chain(argv[at..].iter().cloned())
        .collect();
    let cli = parse_from(app, defaults, &merged, None)?;
    if let Some((path, text, _)) = &file {
        config_file::remember(path, text);
    }
    Ok(cli)
}

/// Parses `argv` as `app`'s command line, `--help` showing `defaults`; an error is printed
/// (blamed on `source`, a layer of settings, if given) and becomes the exit code.
fn parse_from(
    app: &App,
    defaults: &Config,
    argv: &[OsString],
    source: Option<&str>,
) -> Result<Cli, i32> {
    use clap::FromArgMatches;
    let matched = command(app, defaults)
        .try_get_matches_from(argv)
        .and_then(|m| Cli::from_arg_matches(&m));
    matched.map_err(|e| {
        use clap::error::ErrorKind as K;
        if matches!(e.kind(), K::DisplayHelp | K::DisplayVersion) {
            let _ = e.print();
            return 0;
        }
        // clap's message up to its first blank line (the usage and tips follow), as one
        // line: a message that lists arguments on lines of their own keeps them.
        let rendered = e.render().to_string();
        let message: Vec<&str> = rendered
            .lines()
            .map(str::trim)
            .take_while(|l| !l.is_empty())
            .collect();
        let joined = message.join(" ");
        let first = match joined.is_empty() {
            true => "invalid arguments",
            false => joined.strip_prefix("error: ").unwrap_or(&joined),
        };
        match source {
            Some(source) => usage_error(&format!("{source}: {first}")),
            None => usage_error(&format!("{first}; see `{} --help`", app.name)),
        }
    })
}

/// The command line of `app`: its name and version, and `defaults` (the server's
/// configuration) as each flag's default in `--help`.
fn command(app: &App, defaults: &Config) -> clap::Command {
    use clap::CommandFactory;
    let mut cmd = Cli::command()
        .name(app.name)
        .bin_name(app.name)
        .version(app.version);
    if app.name != "ringmaster" || app.about.is_some() {
        let about = app.about.unwrap_or(
            "an HTTP server on ringmaster (a master and one worker per CPU, each serving \
             through its own io_uring)",
        );
        cmd = cmd.about(format!("{} {}: {about}", app.name, app.version));
    }
    let shown = shown_defaults(defaults);
    cmd = with_defaults(cmd, &shown);
    for sub in ["serve", "probe"] {
        cmd = cmd.mut_subcommand(sub, |sub| with_defaults(sub, &shown));
    }
    cmd
}

/// `cmd` with each flag of `shown` helped with its default there.
fn with_defaults(mut cmd: clap::Command, shown: &[(&str, String)]) -> clap::Command {
    for (name, value) in shown {
        cmd = cmd.mut_arg(name.replace('-', "_"), |arg| {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let help = match help.find(" [default: ") {
                Some(at) => help[..at].to_string(),
                None => help,
            };
            arg.help(format!("{help} [default: {value}]"))
        });
    }
    cmd
}

/// Each flag's value in `c`, as `--help` shows it for the flags with a default.
fn shown_defaults(c: &Config) -> Vec<(&'static str, String)> {
    let secs = |d: Duration| format!("{}", d.as_secs_f64());
    let l = &c.limits;
    vec![
        ("listen", c.listen.to_string()),
        (
            "workers",
            match c.workers {
                Workers::Auto => "auto".to_string(),
                Workers::Count(n) => n.to_string(),
            },
        ),
        (
            "cpu-affinity",
            match &c.cpu_affinity {
                CpuAffinity::Auto => "auto".to_string(),
                CpuAffinity::Unpinned => "none".to_string(),
                CpuAffinity::List(cpus) => cpus
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            },
        ),
        (
            "listen-mode",
            match c.listen_mode {
                ListenMode::ReusePort => "reuseport",
                ListenMode::Shared => "shared",
            }
            .to_string(),
        ),
        ("drain-timeout", secs(c.drain_timeout)),
        ("backlog", c.backlog.to_string()),
        ("connections-max", l.connections_max.to_string()),
        (
            "request-line-bytes-max",
            l.request_line_bytes_max.to_string(),
        ),
        (
            "request-fields-bytes-max",
            l.request_fields_bytes_max.to_string(),
        ),
        (
            "request-body-bytes-max",
            l.request_body_bytes_max.to_string(),
        ),
        ("output-bytes-max", l.output_bytes_max.to_string()),
        ("request-head-timeout", secs(l.request_head_timeout)),
        ("request-body-rate-min", l.request_body_rate_min.to_string()),
        ("idle-timeout", secs(l.idle_timeout)),
        ("send-timeout", secs(l.send_timeout)),
        ("send-rate-min", l.send_rate_min.to_string()),
        ("handlers-max", l.handlers_max.to_string()),
        ("handler-timeout", secs(l.handler_timeout)),
        ("reload-parallel", c.reload_parallel.to_string()),
        ("ready-timeout", secs(c.ready_timeout)),
        ("respawn-failures-max", c.respawn_failures_max.to_string()),
        ("respawn-window", secs(c.respawn_window)),
        ("min-uptime", secs(c.min_uptime)),
        (
            "metrics",
            c.metrics.map_or("off".to_string(), |a| a.to_string()),
        ),
        (
            "max-requests",
            c.max_requests
                .map_or("never".to_string(), |n| n.to_string()),
        ),
        ("max-requests-jitter", c.max_requests_jitter.to_string()),
        (
            "max-memory",
            c.max_memory_mib
                .map_or("never".to_string(), |n| n.to_string()),
        ),
        ("worker-timeout", secs(c.worker_timeout)),
        (
            "log-format",
            match c.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            }
            .to_string(),
        ),
        (
            "access-log-format",
            match c.access_log_format {
                AccessLogFormat::Common => "common",
                AccessLogFormat::Combined => "combined",
                AccessLogFormat::Json => "json",
            }
            .to_string(),
        ),
        (
            "access-log",
            c.access_log
                .as_ref()
                .map_or("none".to_string(), |p| p.display().to_string()),
        ),
        ("recv-buffers", c.uring.recv_buffers.to_string()),
        ("recv-buffer-bytes", c.uring.recv_buffer_bytes.to_string()),
    ]
}

/// The flags a configuration file or the environment may set: every serve flag but
/// `--config` itself.
fn file_flags() -> Vec<config_file::Flag> {
    use clap::{ArgAction, CommandFactory};
    Cli::command()
        .get_arguments()
        .filter_map(|arg| {
            let name = arg.get_long()?;
            let kind = match arg.get_action() {
                ArgAction::SetTrue => config_file::Kind::Switch,
                ArgAction::Append => config_file::Kind::Many,
                ArgAction::Set => config_file::Kind::One,
                _ => return None,
            };
            (name != "config").then(|| config_file::Flag {
                name: name.to_string(),
                kind,
            })
        })
        .collect()
}

/// Prints a usage or start-up error (one line), tells the master when this process was
/// started as a new worker (a reload's answer then names it), and returns exit code 2.
fn usage_error(message: &str) -> i32 {
    eprintln!("{}: error: {message}", crate::log::program());
    crate::master::exec::tell_master_failed(message);
    EXIT_USAGE
}

impl Cli {
    /// The serve flags, whether given before a `serve` subcommand or after it.
    fn serve_args(&self) -> &ServeArgs {
        match &self.command {
            Some(Command::Serve(args)) => args,
            Some(Command::Probe(args)) => &args.serve,
            _ => &self.serve,
        }
    }

    /// The `--config` file given, to the server or to a command, else the one
    /// `RINGMASTER_CONFIG` names.
    fn config_path(&self) -> Option<PathBuf> {
        let given = match &self.command {
            Some(Command::Status { target, .. } | Command::Scale { target, .. }) => {
                target.config.as_deref()
            }
            Some(Command::Reload(t) | Command::Reopen(t) | Command::Stop(t)) => t.config.as_deref(),
            _ => self.serve_args().config.as_deref(),
        };
        match given {
            Some(path) => Some(path.to_path_buf()),
            None => std::env::var_os(config_file::CONFIG_PATH_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }
}

fn dispatch<H: Serve>(cli: &Cli, server: Server<H>) -> i32 {
    let defaults = server.config_ref().clone();
    let talk =
        |target: &Target, command: &str, wait: Duration| talk(target, &defaults, command, wait);
    match &cli.command {
        None => serve(server, &cli.serve),
        Some(Command::Serve(args)) => serve(server, args),
        Some(Command::Status { target, json }) => {
            let command = if *json { "status json" } else { "status" };
            talk(target, command, ANSWER_WAIT)
        }
        Some(Command::Reload(target)) => talk(target, "reload", RELOAD_ANSWER_WAIT),
        Some(Command::Reopen(target)) => talk(target, "reopen", ANSWER_WAIT),
        Some(Command::Stop(target)) => talk(target, "stop", ANSWER_WAIT),
        Some(Command::Scale {
            workers,
            oversubscribe,
            target,
        }) => {
            let command = match oversubscribe {
                true => format!("scale {workers} oversubscribe"),
                false => format!("scale {workers}"),
            };
            // A scale up waits for its new workers, which may take as long as a reload's.
            talk(target, &command, RELOAD_ANSWER_WAIT)
        }
        Some(Command::Probe(args)) => probe(server, args),
    }
}

fn serve<H: Serve>(server: Server<H>, args: &ServeArgs) -> i32 {
    let config = args.apply(server.config_ref().clone());
    match server.config(config).run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}: error: {e}", crate::log::program());
            if e.kind() == ErrorKind::WorkersFailed {
                EXIT_FAILED
            } else {
                EXIT_USAGE
            }
        }
    }
}

fn probe<H: Serve>(server: Server<H>, args: &ProbeArgs) -> i32 {
    let config = args.serve.apply(server.config_ref().clone());
    if let Err(e) = config.validate() {
        eprintln!("{}: error: {e}", crate::log::program());
        return EXIT_USAGE;
    }
    crate::probe::run(&config, args.json)
}

/// Sends one command to the master and prints its answer.
fn talk(target: &Target, defaults: &Config, command: &str, wait: Duration) -> i32 {
    let path = target.path(defaults);
    match crate::control::request(&path, target.origin(defaults), command, wait) {
        Ok(answer) => {
            print!("{answer}");
            if answer.starts_with("error") {
                EXIT_FAILED
            } else {
                0
            }
        }
        Err(RequestError::Untrusted(e)) => {
            eprintln!("{}: error: {e}", crate::log::program());
            EXIT_USAGE
        }
        Err(RequestError::Unreachable(e)) => {
            eprintln!(
                "{}: error: no master answers on {} ({e}); is it running? pass --listen with \
                 its address or --control with its socket",
                crate::log::program(),
                path.display()
            );
            EXIT_USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_metrics_port_is_on_loopback_and_a_bare_listen_port_is_not() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        for (arg, metrics, listen) in [
            ("9100", "127.0.0.1:9100", "0.0.0.0:9100"),
            ("0", "127.0.0.1:0", "0.0.0.0:0"),
            ("0.0.0.0:9100", "0.0.0.0:9100", "0.0.0.0:9100"),
            ("10.1.2.3:9100", "10.1.2.3:9100", "10.1.2.3:9100"),
            ("[::]:9100", "[::]:9100", "[::]:9100"),
            ("localhost:9100", "127.0.0.1:9100", "127.0.0.1:9100"),
        ] {
            assert_eq!(parse_metrics(arg), Ok(addr(metrics)), "{arg}");
            assert_eq!(parse_listen(arg), Ok(addr(listen)), "{arg}");
        }
        assert!(parse_metrics("nowhere").is_err());
        assert!(parse_metrics("65536").is_err());
    }
}
