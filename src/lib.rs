//! ringmaster: Node's `cluster` + `http`, rebuilt in Rust for Linux.
//!
//! A master process binds one listening socket, forks one worker per allowed CPU and pins it
//! there; every worker accepts, receives and sends through its own io_uring and calls your
//! [`Handler`] for each request. The master respawns workers that die and drains them on
//! `SIGTERM`/`SIGINT`.
//!
//! ```no_run
//! use ringmaster::{Request, Response, Server};
//!
//! fn main() -> Result<(), ringmaster::Error> {
//!     Server::new(|req: &Request<'_>, res: &mut Response| {
//!         if req.path() == "/" {
//!             res.header("Content-Type", "text/plain").body("Hello World");
//!         } else {
//!             res.status(404).body("not found\n");
//!         }
//!     })
//!     .listen("127.0.0.1:3000".parse().unwrap())
//!     .run()
//! }
//! ```
//!
//! Node's `http.createServer(fn).listen(port)` inside `cluster` maps onto
//! `Server::new(fn).listen(addr).run()`: the closure runs in every worker, on its own core.
//!
//! A handler that waits returns a future ([`AsyncHandler`], served with
//! [`Server::new_async`]): Node's `http.createServer(async (req, res) => …)`. Its future runs
//! on the worker's thread and waits through the worker's own io_uring ([`rt`]: timers, TCP,
//! files, spawned tasks, a blocking pool), so a worker keeps thousands of requests waiting
//! at once while it serves others.
//!
//! ```no_run
//! use ringmaster::{OwnedRequest, Response, Server};
//! use std::time::Duration;
//!
//! fn main() -> Result<(), ringmaster::Error> {
//!     Server::new_async(|req: OwnedRequest| async move {
//!         ringmaster::rt::sleep(Duration::from_millis(1)).await;
//!         let mut res = Response::new();
//!         res.body(format!("waited for {}", req.path()));
//!         res
//!     })
//!     .run()
//! }
//! ```
//!
//! # Node's `cluster`, call by call
//!
//! | Node.js `cluster` | ringmaster |
//! | --- | --- |
//! | `http.createServer((req, res) => …)` | [`Server::new`] with a [`Handler`] (`Fn(&Request, &mut Response)`) |
//! | `http.createServer(async (req, res) => …)` | [`Server::new_async`] with an [`AsyncHandler`] (`Fn(OwnedRequest) -> impl Future<Output = Response>`) |
//! | Express `app.get('/users/:id', …)`, `app.use('/api', …)`, `req.params.id` | [`Router::get`], [`Router::mount`], [`Request::param`] |
//! | `setTimeout`, `net.connect`, `fs.promises` in a handler | [`rt::sleep`], [`rt::TcpStream`], [`rt::fs`] |
//! | `res.write(chunk)` … `res.end()` | [`Response::stream`] with a [`BodyWriter`] |
//! | `req.on('data', …)` | [`OwnedRequest::body_reader`] ([`AsyncHandler::streams_body`]) |
//! | `cluster.isPrimary` / `cluster.isWorker` | code in [`Server`] hooks runs in the master; [`Handler`] methods run in workers |
//! | `cluster.fork()` | the master forks one worker per slot ([`Workers`]), pinned to a CPU, and respawns them |
//! | `cluster.on('fork', (worker) => …)` | [`Server::on_fork`] |
//! | `cluster.on('online', (worker) => …)` / `'listening'` | [`Server::on_online`]: the worker's ring is up and its accept armed |
//! | `cluster.on('exit', (worker, code, signal) => …)` | [`Server::on_exit`] with an [`Exit`] |
//! | `cluster.on('message', (worker, msg) => …)` | [`Server::on_message`] |
//! | `worker.send(msg)` (in the primary) | [`Cluster::send`] |
//! | `for (const id in cluster.workers) cluster.workers[id].send(msg)` | [`Cluster::broadcast`] |
//! | `cluster.workers` | [`Cluster::workers`] |
//! | `process.send(msg)` (in a worker) | [`send_to_master`] |
//! | `process.on('message', (msg) => …)` (in a worker) | [`Handler::on_message`] |
//! | worker start-up code after `cluster.isWorker` | [`Handler::start`] |
//! | `worker.disconnect()` / `worker.kill()` | `SIGTERM` / `SIGKILL` to the worker's [`WorkerInfo::pid`]; the master respawns it |
//! | rolling restart (PM2 `reload`) | `SIGHUP` to the master, or `ringmaster reload` |
//!
//! Messages are bytes (at most [`ipc::USER_BYTES_MAX`] each), not JSON: serialize as you
//! like. `examples/ipc.rs` sums the workers' request counts in the master and broadcasts
//! the total back.
//!
//! # The rest of the ecosystem, and where each is shown
//!
//! | you bring | ringmaster | example |
//! | --- | --- | --- |
//! | a command line (`--help`, `--version`, config file, `RINGMASTER_*`, `PORT`) | [`cli::run`] with [`app!`] | `examples/app.rs` |
//! | `tracing` subscribers, `RUST_LOG` | ringmaster's events are `tracing` events | `examples/own_subscriber.rs` |
//! | `tower` / `tower-http` layers, axum-style services | [`tower::Tower`], [`tower::RingTimeoutLayer`] | `examples/tower.rs` |
//! | `http::Request` / `http::Response` | [`Request::to_http`], `From<http::Response<B>>` for [`Response`] | `examples/upstream.rs` |
//! | Prometheus metrics of your own | [`metric::Counter`], [`metric::Gauge`], [`metric::Histogram`] | `examples/testbed.rs` (`/count`) |
//! | a router | [`Router`] | `examples/router.rs` |
//! | a new build to deploy | `ringmaster reload` runs the binary at the start path | `examples/deploy.rs` |
//!
//! Layers point one way: `cli → master → worker → {uring, connection} → http`, with `ipc` a
//! leaf shared by master and worker. See `ARCHITECTURE.md` for the data flow.
#![deny(
    missing_docs,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc,
    unsafe_op_in_unsafe_fn
)]

mod civil;
pub mod cli;
mod cluster;
mod config;
mod config_file;
mod connection;
mod control;
// The server's own request histogram, shown by `/metrics`: public because the (hidden)
// `ipc::Message` carries it, not part of the API.
#[doc(hidden)]
pub mod durations;
mod error;
pub mod files;
mod handler;
pub mod http;
mod inbox;
pub mod ipc;
mod log;
mod master;
pub mod metric;
mod metrics;
mod mounts;
mod pool;
mod probe;
pub mod proxy;
pub mod router;
pub mod rt;
mod systemd;
#[cfg(feature = "tower")]
pub mod tower;
mod worker;

pub use cluster::{send_to_master, Cluster, Exit, SendError, WorkerInfo};
pub use config::{
    AccessLogFormat, Config, CpuAffinity, Limits, ListenMode, LogFormat, UringOptions, Workers,
};
/// Drives one connection's byte processing without a ring, for fuzzing and property tests.
#[doc(hidden)]
pub use connection::drive;
pub use error::{Error, ErrorKind};
#[doc(hidden)]
pub use handler::Handled;
pub use handler::{Async, AsyncHandler, Handler, HelloWorld, Serve, StreamBodies};
pub use http::{
    BodyReader, BodyWriter, HeaderError, OwnedRequest, Request, Response, StatusError, Version,
};
/// The counted mounts of the `ringmaster` binary, as [`Serve`] hands them over.
#[doc(hidden)]
pub use mounts::MountTable;
pub use router::Router;

/// A server: the listening address, the workers and their limits, and the handler.
///
/// Built with chained setters, started with [`run`](Server::run). See the
/// [crate's examples](crate) for whole programs, and [`Server::on_fork`]'s for the hooks.
pub struct Server<H: Serve> {
    config: Config,
    handler: H,
    hooks: cluster::Hooks,
}

impl<A: AsyncHandler> Server<Async<A>> {
    /// A server for an async handler: `Server::new(Async(handler))`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Async, OwnedRequest, Response, Server};
    ///
    /// async fn hello(req: OwnedRequest) -> Response {
    ///     let mut res = Response::new();
    ///     res.body(format!("hello from {}\n", req.path()));
    ///     res
    /// }
    ///
    /// // The same server as `Server::new(Async(hello))`.
    /// let server: Server<Async<_>> = Server::new_async(hello);
    /// # let _ = server;
    /// ```
    pub fn new_async(handler: A) -> Server<Async<A>> {
        Server::new(Async(handler))
    }
}

impl<H: Serve> Server<H> {
    /// A server for `handler` (a [`Handler`], or an [`AsyncHandler`] in [`Async`]) with
    /// [`Config::default`] (listening on `0.0.0.0:3000`, one worker per allowed CPU).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response, Server, Workers};
    ///
    /// let server = Server::new(|req: &Request<'_>, res: &mut Response| {
    ///     res.body(format!("you asked for {}\n", req.path()));
    /// });
    /// assert_eq!(server.config_ref().listen, "0.0.0.0:3000".parse().unwrap());
    /// assert_eq!(server.config_ref().workers, Workers::Auto);
    /// ```
    pub fn new(handler: H) -> Server<H> {
        Server {
            config: Config::default(),
            handler,
            hooks: cluster::Hooks::default(),
        }
    }

    /// The configuration so far.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{HelloWorld, Server, Workers};
    ///
    /// let server = Server::new(HelloWorld).workers(Workers::Count(2));
    /// assert_eq!(server.config_ref().workers, Workers::Count(2));
    /// assert!(server.config_ref().validate().is_ok());
    /// ```
    pub fn config_ref(&self) -> &Config {
        &self.config
    }

    /// Replaces the whole configuration.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Config, HelloWorld, ListenMode, Server, Workers};
    ///
    /// let mut config = Config::default();
    /// config.listen_mode = ListenMode::Shared;
    /// config.backlog = 1024;
    /// // Set before `config`, the worker count is replaced with the rest.
    /// let server = Server::new(HelloWorld).workers(Workers::Count(2)).config(config);
    /// assert_eq!(server.config_ref().backlog, 1024);
    /// assert_eq!(server.config_ref().workers, Workers::Auto);
    /// ```
    pub fn config(mut self, config: Config) -> Server<H> {
        self.config = config;
        self
    }

    /// The address to listen on; port 0 picks a free port (logged as `listening on ADDR`).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{HelloWorld, Server};
    /// use std::net::SocketAddr;
    ///
    /// let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    /// let server = Server::new(HelloWorld).listen(addr);
    /// assert_eq!(server.config_ref().listen, addr);
    /// ```
    pub fn listen(mut self, addr: std::net::SocketAddr) -> Server<H> {
        self.config.listen = addr;
        self
    }

    /// How many workers to run.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Config, HelloWorld, Server, Workers};
    ///
    /// let server = Server::new(HelloWorld).workers(Workers::Count(4));
    /// assert!(server.config_ref().validate().is_ok());
    /// // Past the most one master runs, the server refuses to start.
    /// let server = server.workers(Workers::Count(Config::WORKERS_MAX + 1));
    /// assert!(server.config_ref().validate().is_err());
    /// ```
    pub fn workers(mut self, workers: Workers) -> Server<H> {
        self.config.workers = workers;
        self
    }

    /// Where the workers run: pinned one per CPU (the default), unpinned, or pinned to
    /// listed CPUs (see [`CpuAffinity`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{CpuAffinity, HelloWorld, Server, Workers};
    ///
    /// // Two workers, on CPUs 2 and 3 (the other CPUs are left to a database, say).
    /// let server = Server::new(HelloWorld)
    ///     .workers(Workers::Count(2))
    ///     .cpu_affinity(CpuAffinity::parse("2-3").unwrap());
    /// assert_eq!(server.config_ref().cpu_affinity, CpuAffinity::List(vec![2, 3]));
    /// ```
    pub fn cpu_affinity(mut self, affinity: CpuAffinity) -> Server<H> {
        self.config.cpu_affinity = affinity;
        self
    }

    /// The per-worker limits.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{HelloWorld, Limits, Server};
    /// use std::time::Duration;
    ///
    /// let mut limits = Limits::default();
    /// limits.request_body_bytes_max = 8 << 20;
    /// limits.idle_timeout = Duration::from_secs(5);
    /// let server = Server::new(HelloWorld).limits(limits);
    /// assert_eq!(server.config_ref().limits.request_body_bytes_max, 8 << 20);
    /// ```
    pub fn limits(mut self, limits: Limits) -> Server<H> {
        self.config.limits = limits;
        self
    }

    /// Whether each connection's client address is looked up, for [`Request::peer_addr`]
    /// and the `X-Forwarded-For` a [`proxy::Proxy`] appends (see
    /// [`Config::client_addresses`]). Off by default: a program that serves a `Proxy` turns
    /// it on.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response, Server};
    ///
    /// let server = Server::new(|req: &Request<'_>, res: &mut Response| {
    ///     // `None` unless the server looks addresses up.
    ///     match req.peer_addr() {
    ///         Some(ip) => res.body(format!("hello, {ip}\n")),
    ///         None => res.body("hello\n"),
    ///     };
    /// })
    /// .client_addresses(true);
    /// assert!(server.config_ref().client_addresses);
    /// ```
    pub fn client_addresses(mut self, on: bool) -> Server<H> {
        self.config.client_addresses = on;
        self
    }

    /// How long a shutdown waits for workers to finish before killing them.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Config, HelloWorld, Server};
    /// use std::time::Duration;
    ///
    /// let server = Server::new(HelloWorld).drain_timeout(Duration::from_secs(30));
    /// assert!(server.config_ref().validate().is_ok());
    /// // Over an hour is refused at start.
    /// let server = server.drain_timeout(Config::DRAIN_TIMEOUT_MAX + Duration::from_secs(1));
    /// assert!(server.config_ref().validate().is_err());
    /// ```
    pub fn drain_timeout(mut self, timeout: std::time::Duration) -> Server<H> {
        self.config.drain_timeout = timeout;
        self
    }

    /// Called in the master after it forked a worker (Node: `cluster.on('fork')`).
    ///
    /// The hooks, and messages both ways (Node's `cluster` IPC):
    ///
    /// ```no_run
    /// use ringmaster::{send_to_master, Handler, Request, Response, Server};
    ///
    /// struct App;
    /// impl Handler for App {
    ///     fn handle(&self, req: &Request<'_>, res: &mut Response) {
    ///         if req.path() == "/flush" {
    ///             // To the master's on_message hook; at most USER_BYTES_MAX bytes.
    ///             let _ = send_to_master(b"flush");
    ///         }
    ///         res.body("ok\n");
    ///     }
    ///     fn on_message(&self, bytes: &[u8]) {
    ///         // What the master sent this worker (Cluster::send, Cluster::broadcast).
    ///         tracing::info!(len = bytes.len(), "message from the master");
    ///     }
    /// }
    ///
    /// let server = Server::new(App)
    ///     .on_fork(|_, w| tracing::info!(slot = w.slot, "forked"))
    ///     .on_online(|_, w| tracing::info!(slot = w.slot, "online"))
    ///     .on_exit(|_, w, exit| tracing::warn!(slot = w.slot, "exited: {exit:?}"))
    ///     .on_message(|cluster, from, bytes| {
    ///         if bytes == b"flush" {
    ///             // Every ready worker's on_message gets it, the sender's too.
    ///             let told = cluster.broadcast(b"flush now");
    ///             tracing::info!(from = from.slot, told, "flush broadcast");
    ///         }
    ///     });
    /// server.run().unwrap();
    /// ```
    pub fn on_fork(mut self, hook: impl FnMut(&Cluster<'_>, WorkerInfo) + 'static) -> Server<H> {
        self.hooks.fork = Some(Box::new(hook));
        self
    }

    /// Called in the master when a worker is ready: its ring is up and it accepts (Node:
    /// `cluster.on('online')`).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{HelloWorld, Server};
    ///
    /// let server = Server::new(HelloWorld).on_online(|cluster, worker| {
    ///     // The worker is among the ready ones now: it can be sent to.
    ///     if let Err(e) = cluster.send(worker.slot, b"warm up") {
    ///         tracing::warn!(slot = worker.slot, "not sent: {e}");
    ///     }
    /// });
    /// # let _ = server;
    /// ```
    pub fn on_online(mut self, hook: impl FnMut(&Cluster<'_>, WorkerInfo) + 'static) -> Server<H> {
        self.hooks.online = Some(Box::new(hook));
        self
    }

    /// Called in the master when a worker has exited, with how (Node: `cluster.on('exit')`).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Exit, HelloWorld, Server};
    ///
    /// let server = Server::new(HelloWorld).on_exit(|_, worker, exit| match exit {
    ///     Exit::Code(0) => tracing::info!(slot = worker.slot, "drained"),
    ///     Exit::Signal(sig) => tracing::warn!(slot = worker.slot, sig, "killed"),
    ///     other => tracing::warn!(slot = worker.slot, "exited: {other:?}"),
    /// });
    /// # let _ = server;
    /// ```
    pub fn on_exit(
        mut self,
        mut hook: impl FnMut(&Cluster<'_>, WorkerInfo, Exit) + 'static,
    ) -> Server<H> {
        self.hooks.exit = Some(Box::new(move |c: &Cluster<'_>, (w, e)| hook(c, w, e)));
        self
    }

    /// Called in the master for each message a worker sent with [`send_to_master`] (Node:
    /// `cluster.on('message')`).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{HelloWorld, Server};
    ///
    /// let server = Server::new(HelloWorld).on_message(|cluster, from, bytes| {
    ///     if bytes == b"ping" {
    ///         // Back to the worker that sent it (its `Handler::on_message`).
    ///         let _ = cluster.send(from.slot, b"pong");
    ///     }
    /// });
    /// # let _ = server;
    /// ```
    pub fn on_message(
        mut self,
        hook: impl FnMut(&Cluster<'_>, WorkerInfo, &[u8]) + 'static,
    ) -> Server<H> {
        self.hooks.message = Some(Box::new(hook));
        self
    }

    /// Runs the master: binds, forks the workers, supervises them, and returns `Ok(())`
    /// after a graceful shutdown (`SIGTERM` or `SIGINT`).
    ///
    /// Call it from a single-threaded process (before starting any thread): it forks, and
    /// `fork` copies only the calling thread. With other threads running it refuses to
    /// start ([`ErrorKind::ThreadsRunning`]); start a worker's threads in
    /// [`Handler::start`].
    /// In workers it never returns; they exit when they are done.
    ///
    /// # Errors
    /// A start-up failure, with its cause and remedy: io_uring unavailable, the address in
    /// use, an invalid configuration.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use ringmaster::{HelloWorld, Server};
    ///
    /// fn main() {
    ///     let server = Server::new(HelloWorld).listen("127.0.0.1:8080".parse().unwrap());
    ///     if let Err(e) = server.run() {
    ///         // What failed, why, and what to do.
    ///         eprintln!("{e}");
    ///         std::process::exit(1);
    ///     }
    /// }
    /// ```
    pub fn run(mut self) -> Result<(), Error> {
        // A worker a reload started from the binary on disk: it serves, and exits.
        if let Some(e) = master::exec::worker_main(&self.config, &self.handler) {
            return Err(e);
        }
        master::run(&self.config, &self.handler, &mut self.hooks)
    }
}
