//! The handler: what every worker runs for each request, sync ([`Handler`]) or async
//! ([`AsyncHandler`]), and [`Serve`], which the server is generic over.

use crate::cluster::WorkerInfo;
use crate::http::{OwnedRequest, Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What every worker runs for each request: the counterpart of the callback given to Node's
/// `http.createServer`.
///
/// `handle` fills in `res`; the server frames it (status line, `Date`, `Content-Length`,
/// `Connection`) and sends it. It runs on the worker's only thread, between network
/// operations, so it should not block: a slow handler delays every connection of its worker.
/// A panic in `handle` is caught: the request is answered `500`, its connection closed, the
/// panic logged in one line, and the worker serves on
/// ([`Config::exit_on_panic`](crate::Config::exit_on_panic) makes it end the worker instead, which the master respawns).
///
/// Closures `Fn(&Request, &mut Response)` are handlers.
///
/// See [`Request`](crate::Request)'s and [`Server::on_fork`](crate::Server::on_fork)'s examples.
pub trait Handler: 'static {
    /// Answers one request.
    ///
    /// # Examples
    ///
    /// A handler with state of its own, made before the workers are forked:
    ///
    /// ```
    /// use ringmaster::{Handler, Request, Response, Server};
    ///
    /// struct Greeter {
    ///     greeting: String,
    /// }
    ///
    /// impl Handler for Greeter {
    ///     fn handle(&self, req: &Request<'_>, res: &mut Response) {
    ///         let name = req.path().trim_start_matches('/');
    ///         res.header("Content-Type", "text/plain")
    ///             .body(format!("{}, {name}!\n", self.greeting));
    ///     }
    /// }
    ///
    /// let server = Server::new(Greeter { greeting: "Hello".into() });
    /// // Then: `server.run()`.
    /// ```
    fn handle(&self, req: &Request<'_>, res: &mut Response);

    /// Runs once in each worker after fork, before it accepts connections: the place for
    /// per-worker set-up (Node: the code after `cluster.isWorker`). An error ends the
    /// worker as misconfigured: it is logged and the slot is not respawned in a loop.
    ///
    /// # Examples
    ///
    /// A handler whose data is split into shards, one per worker, refusing a worker that
    /// has none:
    ///
    /// ```
    /// use ringmaster::{Handler, Request, Response, WorkerInfo};
    ///
    /// struct Sharded {
    ///     shards: u32,
    /// }
    ///
    /// impl Handler for Sharded {
    ///     fn handle(&self, _req: &Request<'_>, res: &mut Response) {
    ///         res.body("ok\n");
    ///     }
    ///
    ///     fn start(&self, worker: &WorkerInfo) -> Result<(), String> {
    ///         if worker.slot >= self.shards {
    ///             return Err(format!("no shard for slot {}; run at most {} workers",
    ///                 worker.slot, self.shards));
    ///         }
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let app = Sharded { shards: 2 };
    /// assert!(app.start(&WorkerInfo { slot: 1, pid: 4242, cpu: Some(1) }).is_ok());
    /// assert!(app.start(&WorkerInfo { slot: 2, pid: 4243, cpu: Some(2) }).is_err());
    /// ```
    fn start(&self, worker: &WorkerInfo) -> Result<(), String> {
        let _ = worker;
        Ok(())
    }

    /// Receives a message the master sent with [`Cluster::send`](crate::Cluster::send) or
    /// [`Cluster::broadcast`](crate::Cluster::broadcast)
    /// (Node: `process.on('message')`).
    ///
    /// # Examples
    ///
    /// Maintenance mode, switched by the master for every worker:
    ///
    /// ```
    /// use ringmaster::{Handler, Request, Response};
    /// use std::cell::Cell;
    ///
    /// struct Site {
    ///     maintenance: Cell<bool>,
    /// }
    ///
    /// impl Handler for Site {
    ///     fn handle(&self, _req: &Request<'_>, res: &mut Response) {
    ///         match self.maintenance.get() {
    ///             true => res.status(503).body("back soon\n"),
    ///             false => res.body("welcome\n"),
    ///         };
    ///     }
    ///
    ///     fn on_message(&self, bytes: &[u8]) {
    ///         match bytes {
    ///             b"maintenance on" => self.maintenance.set(true),
    ///             b"maintenance off" => self.maintenance.set(false),
    ///             _ => {}
    ///         }
    ///     }
    /// }
    ///
    /// let site = Site { maintenance: Cell::new(false) };
    /// site.on_message(b"maintenance on");
    /// assert!(site.maintenance.get());
    /// ```
    fn on_message(&self, bytes: &[u8]) {
        let _ = bytes;
    }
}

impl<F> Handler for F
where
    F: Fn(&Request<'_>, &mut Response) + 'static,
{
    fn handle(&self, req: &Request<'_>, res: &mut Response) {
        self(req, res)
    }
}

/// The seed's application: `200 OK`, `text/plain`, `Hello World` for every request. The
/// `ringmaster` binary serves it.
///
/// `examples/router.rs` answers with it where no route matches. See [`app!`](crate::app)'s
/// example, which serves it.
#[derive(Clone, Copy, Debug, Default)]
pub struct HelloWorld;

impl Handler for HelloWorld {
    fn handle(&self, _req: &Request<'_>, res: &mut Response) {
        res.header("Content-Type", "text/plain").body("Hello World");
    }
}

/// A handler that waits: it returns a future that answers the request, run on the worker's
/// own thread by its executor, and everything it waits on (timers, sockets, files) goes
/// through the worker's own io_uring (see [`rt`](crate::rt)). The counterpart of Node's
/// `http.createServer(async (req, res) => …)`. Serve it with [`Server::new_async`](crate::Server::new_async).
///
/// Many requests wait at once per worker (at most
/// [`Limits::handlers_max`](crate::Limits::handlers_max)); on one connection, pipelined
/// requests are still answered in order. A client that disconnects drops its request's
/// future (what it waited on is cancelled); a future past
/// [`Limits::handler_timeout`](crate::Limits::handler_timeout) is dropped and its client
/// answered `503`. A panic, before or after an await, is treated as a [`Handler`]'s.
///
/// Closures `Fn(OwnedRequest) -> impl Future<Output = Response>` are async handlers.
///
/// See the [crate's second example](crate) and [`rt`](crate::rt)'s.
pub trait AsyncHandler: 'static {
    /// The future of one request.
    ///
    /// See [`AsyncHandler::call`]'s example, which names a boxed future.
    type Future: Future<Output = Response> + 'static;

    /// Starts answering one request.
    ///
    /// # Examples
    ///
    /// A handler type of its own; the future it returns owns what it uses:
    ///
    /// ```
    /// use ringmaster::{AsyncHandler, OwnedRequest, Response, Server};
    /// use std::future::Future;
    /// use std::pin::Pin;
    /// use std::rc::Rc;
    ///
    /// struct Echo {
    ///     prefix: Rc<str>,
    /// }
    ///
    /// impl AsyncHandler for Echo {
    ///     type Future = Pin<Box<dyn Future<Output = Response>>>;
    ///
    ///     fn call(&self, req: OwnedRequest) -> Self::Future {
    ///         let prefix = self.prefix.clone();
    ///         Box::pin(async move {
    ///             let mut res = Response::new();
    ///             res.body(format!("{prefix}{}\n", req.path()));
    ///             res
    ///         })
    ///     }
    /// }
    ///
    /// let server = Server::new_async(Echo { prefix: "you asked for ".into() });
    /// // Then: `server.run()`.
    /// ```
    fn call(&self, req: OwnedRequest) -> Self::Future;

    /// As [`Handler::start`].
    ///
    /// # Examples
    ///
    /// Refusing to start a worker whose data file is missing:
    ///
    /// ```
    /// use ringmaster::{AsyncHandler, OwnedRequest, Response, WorkerInfo};
    /// use std::future::{ready, Ready};
    /// use std::path::PathBuf;
    ///
    /// struct Catalog {
    ///     dir: PathBuf,
    /// }
    ///
    /// impl AsyncHandler for Catalog {
    ///     type Future = Ready<Response>;
    ///
    ///     fn call(&self, _req: OwnedRequest) -> Ready<Response> {
    ///         ready(Response::new())
    ///     }
    ///
    ///     fn start(&self, worker: &WorkerInfo) -> Result<(), String> {
    ///         let file = self.dir.join(format!("catalog-{}.db", worker.slot));
    ///         match file.is_file() {
    ///             true => Ok(()),
    ///             false => Err(format!("{} is missing; build the catalog first", file.display())),
    ///         }
    ///     }
    /// }
    ///
    /// let catalog = Catalog { dir: PathBuf::from("/nonexistent") };
    /// let worker = WorkerInfo { slot: 0, pid: 4242, cpu: None };
    /// assert!(catalog.start(&worker).unwrap_err().contains("catalog-0.db is missing"));
    /// ```
    fn start(&self, worker: &WorkerInfo) -> Result<(), String> {
        let _ = worker;
        Ok(())
    }

    /// As [`Handler::on_message`].
    ///
    /// # Examples
    ///
    /// The configuration version the master announces, shown in every answer:
    ///
    /// ```
    /// use ringmaster::{AsyncHandler, OwnedRequest, Response};
    /// use std::cell::Cell;
    /// use std::future::{ready, Ready};
    ///
    /// struct Versioned {
    ///     version: Cell<u32>,
    /// }
    ///
    /// impl AsyncHandler for Versioned {
    ///     type Future = Ready<Response>;
    ///
    ///     fn call(&self, _req: OwnedRequest) -> Ready<Response> {
    ///         let mut res = Response::new();
    ///         res.body(format!("config v{}\n", self.version.get()));
    ///         ready(res)
    ///     }
    ///
    ///     fn on_message(&self, bytes: &[u8]) {
    ///         let text = std::str::from_utf8(bytes).unwrap_or("");
    ///         if let Some(Ok(v)) = text.strip_prefix("config ").map(str::parse) {
    ///             self.version.set(v);
    ///         }
    ///     }
    /// }
    ///
    /// let app = Versioned { version: Cell::new(7) };
    /// app.on_message(b"config 8");
    /// assert_eq!(app.version.get(), 8);
    /// ```
    fn on_message(&self, bytes: &[u8]) {
        let _ = bytes;
    }

    /// Whether the body of `req` (its head; its body is empty here) is handed over as it
    /// arrives, through [`OwnedRequest::body_reader`], rather than read whole first (the
    /// default, bounded by `request_body_bytes_max`). The handler then starts as soon as
    /// the head is in, the connection reads only while the reader keeps up, and an upload of
    /// any size (still at most `request_body_bytes_max`) is never held whole. A handler that
    /// answers before reading the whole body gets its connection closed after the answer.
    ///
    /// # Examples
    ///
    /// Bodies over 1 MiB, or of a length not told in advance (chunked), stream; smaller
    /// ones arrive whole:
    ///
    /// ```
    /// use ringmaster::{AsyncHandler, OwnedRequest, Request, Response};
    /// use std::future::{ready, Ready};
    ///
    /// struct Uploads;
    ///
    /// impl AsyncHandler for Uploads {
    ///     type Future = Ready<Response>;
    ///
    ///     fn call(&self, _req: OwnedRequest) -> Ready<Response> {
    ///         // Reads `req.body_reader()` when it is `Some`, as `StreamBodies`' example does.
    ///         ready(Response::new())
    ///     }
    ///
    ///     fn streams_body(&self, req: &Request<'_>) -> bool {
    ///         let length = req.header("content-length").and_then(|v| {
    ///             std::str::from_utf8(v).ok()?.parse::<u64>().ok()
    ///         });
    ///         length.map_or(true, |n| n > 1 << 20)
    ///     }
    /// }
    /// ```
    fn streams_body(&self, req: &Request<'_>) -> bool {
        let _ = req;
        false
    }
}

/// An async handler closure whose requests chosen by `when` get their body as it arrives
/// (see [`AsyncHandler::streams_body`]).
///
/// `examples/stream.rs` echoes an upload with it.
///
/// ```
/// use ringmaster::{OwnedRequest, Request, Response, Server, StreamBodies};
///
/// // PUTs stream (counted as they arrive); other requests' bodies are read whole first.
/// let server = Server::new_async(StreamBodies {
///     when: |req: &Request<'_>| req.method() == "PUT",
///     handler: |mut req: OwnedRequest| async move {
///         let mut res = Response::new();
///         let Some(mut body) = req.body_reader() else {
///             res.body(format!("{} bytes\n", req.body().len()));
///             return res;
///         };
///         let mut buf = [0u8; 16 * 1024];
///         let mut total = 0;
///         loop {
///             match body.read(&mut buf).await {
///                 Ok(0) => break,
///                 Ok(n) => total += n,
///                 Err(e) => {
///                     res.status(400).body(format!("{e}\n"));
///                     return res;
///                 }
///             }
///         }
///         res.body(format!("{total} bytes\n"));
///         res
///     },
/// });
/// // Then: `server.run()`.
/// ```
#[derive(Clone, Copy, Debug)]
pub struct StreamBodies<P, F> {
    /// Which requests' bodies stream, decided from the head.
    pub when: P,
    /// The handler.
    pub handler: F,
}

impl<P, F, Fut> AsyncHandler for StreamBodies<P, F>
where
    P: Fn(&Request<'_>) -> bool + 'static,
    F: Fn(OwnedRequest) -> Fut + 'static,
    Fut: Future<Output = Response> + 'static,
{
    type Future = Fut;

    fn call(&self, req: OwnedRequest) -> Fut {
        (self.handler)(req)
    }

    fn streams_body(&self, req: &Request<'_>) -> bool {
        (self.when)(req)
    }
}

impl<F, Fut> AsyncHandler for F
where
    F: Fn(OwnedRequest) -> Fut + 'static,
    Fut: Future<Output = Response> + 'static,
{
    type Future = Fut;

    fn call(&self, req: OwnedRequest) -> Fut {
        self(req)
    }
}

/// An [`AsyncHandler`] as a server serves it (see [`Server::new_async`](crate::Server::new_async)).
///
/// See [`Static`](crate::files::Static)'s example (static files and a proxy on a router).
#[derive(Clone, Copy, Debug, Default)]
pub struct Async<A>(pub A);

/// What a [`Server`](crate::Server) runs: a [`Handler`], or an [`AsyncHandler`] wrapped in
/// [`Async`]. Implemented for both; there is nothing else to implement it for.
///
/// See the [crate's examples](crate).
pub trait Serve: sealed::Sealed + 'static {
    #[doc(hidden)]
    type Future: Future<Output = Response> + 'static;
    /// Whether any request may be answered by a future (the task table is kept).
    #[doc(hidden)]
    const ASYNC: bool;
    /// Whether every request is (no [`Serve::handle_now`] call comes first).
    #[doc(hidden)]
    const ONLY_ASYNC: bool;
    /// Answers `req` in place, or says it is for [`Serve::call_async`].
    #[doc(hidden)]
    fn handle_now(&self, req: &Request<'_>, res: &mut Response) -> Handled;
    #[doc(hidden)]
    fn call_async(&self, req: OwnedRequest) -> Self::Future;
    #[doc(hidden)]
    fn start_worker(&self, worker: &WorkerInfo) -> Result<(), String>;
    #[doc(hidden)]
    fn message(&self, bytes: &[u8]);
    #[doc(hidden)]
    fn streams_body(&self, req: &Request<'_>) -> bool;
    /// The counted mounts (the `ringmaster` binary's `--static` and `--proxy`), whose
    /// counters the worker reports and the master shows; none by default.
    #[doc(hidden)]
    fn mounts(&self) -> Option<&crate::MountTable> {
        None
    }
}

/// What [`Serve::handle_now`] did with a request.
///
/// See [`AsyncHandler`](crate::AsyncHandler)'s links.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Its response is written.
    Answered,
    /// It goes to a future, with an owned copy of the request.
    Deferred,
}

mod sealed {
    pub trait Sealed {}
    impl<T: super::Handler> Sealed for T {}
    impl<A: super::AsyncHandler> Sealed for super::Async<A> {}
    impl Sealed for crate::router::Router {}
}

/// The future type of a sync handler: never made.
///
/// See [`Handler`](crate::Handler)'s links.
#[doc(hidden)]
#[derive(Debug)]
pub enum NoFuture {}

impl Future for NoFuture {
    type Output = Response;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Response> {
        match *self {}
    }
}

impl<T: Handler> Serve for T {
    type Future = NoFuture;
    const ASYNC: bool = false;
    const ONLY_ASYNC: bool = false;

    #[inline]
    fn handle_now(&self, req: &Request<'_>, res: &mut Response) -> Handled {
        self.handle(req, res);
        Handled::Answered
    }

    fn call_async(&self, _: OwnedRequest) -> NoFuture {
        unreachable!("a sync handler is called in place")
    }

    fn start_worker(&self, worker: &WorkerInfo) -> Result<(), String> {
        self.start(worker)
    }

    fn message(&self, bytes: &[u8]) {
        self.on_message(bytes)
    }

    fn streams_body(&self, _: &Request<'_>) -> bool {
        false
    }
}

impl<A: AsyncHandler> Serve for Async<A> {
    type Future = A::Future;
    const ASYNC: bool = true;
    const ONLY_ASYNC: bool = true;

    fn handle_now(&self, _: &Request<'_>, _: &mut Response) -> Handled {
        Handled::Deferred
    }

    fn call_async(&self, req: OwnedRequest) -> A::Future {
        self.0.call(req)
    }

    fn start_worker(&self, worker: &WorkerInfo) -> Result<(), String> {
        self.0.start(worker)
    }

    fn message(&self, bytes: &[u8]) {
        self.0.on_message(bytes)
    }

    fn streams_body(&self, req: &Request<'_>) -> bool {
        self.0.streams_body(req)
    }
}
