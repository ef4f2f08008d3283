//! A reverse proxy: [`Proxy`], a handler that forwards requests to HTTP/1.1 upstreams over
//! the worker's ring, modelled on nginx's `proxy_pass` with an upstream keep-alive pool.
//!
//! Per worker, each upstream has a pool of idle keep-alive connections (at most
//! [`IDLE_PER_UPSTREAM_MAX`]); upstreams are taken in turn (round robin), and one that
//! failed to connect is left out for [`DOWN_FOR`] (passive health). A request whose
//! connection failed before any byte of the response came back is tried again, at most
//! three tries in all: on a new connection when a pooled one had gone stale, or on the
//! next upstream when the connect failed (for any method, as nginx's `proxy_next_upstream
//! error timeout`: nothing of the request was sent). A pooled connection is used only for
//! an idempotent method (`GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`, `TRACE`) without a
//! body: the upstream may have acted on a request before its connection went silent, so a
//! `POST` or `PATCH` takes a new connection and is never sent twice. The upstream's
//! response head is parsed as strictly as requests are: one that could desynchronise the
//! client is answered `502`. Its body is streamed to the client with backpressure (a
//! slow client slows the reads from the upstream; nothing is held whole).
//!
//! The upstream learns who asked from `X-Forwarded-Proto`, `X-Forwarded-Host` and
//! `X-Forwarded-For`, to which the client's address ([`OwnedRequest::peer_addr`]) is
//! appended as nginx's `$proxy_add_x_forwarded_for` does. The address is looked up once per
//! connection, and only where [`Config::client_addresses`](crate::Config::client_addresses)
//! asks it (the binary's `--proxy` does): a program serving a `Proxy` turns it on, or its
//! upstreams get `X-Forwarded-For` only as the client sent it.
//!
//! Hand-written over `rt::TcpStream`: a client crate (hyper's) would bring its own runtime
//! and buffers; here the upstream's bytes go through the worker's ring and its pipes.
//!
//! # Examples
//!
//! A program serving a proxy on a [`Router`](crate::Router), with the client addresses
//! looked up for `X-Forwarded-For` (see also [`Static`](crate::files::Static)'s example):
//!
//! ```
//! use ringmaster::proxy::Proxy;
//! use ringmaster::{Async, Router, Server};
//!
//! let api = Proxy::new(&["http://127.0.0.1:8080", "http://127.0.0.1:8081"]).expect("upstreams");
//! let router = Router::new().mount("/api", Async(api));
//! let server = Server::new(router).client_addresses(true);
//! assert!(server.config_ref().client_addresses);
//! // Then: std::process::exit(ringmaster::cli::run(ringmaster::app!(), server));
//! ```

use crate::http::chunked::ChunkedDecoder;
use crate::http::request::list;
use crate::http::upstream::{
    is_hop_by_hop, parse_response_head, BodyFraming, ParsedResponse, RESPONSE_FIELDS_MAX,
    RESPONSE_HEAD_BYTES_MAX,
};
use crate::http::BodyReader;
use crate::rt::TcpStream;
use crate::{AsyncHandler, OwnedRequest, Request, Response};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Idle keep-alive connections kept per upstream per worker, at most (a connection freed
/// when the pool is full is closed).
///
/// See [`Proxy::upstream_stats`]'s example (its `idle` count).
pub const IDLE_PER_UPSTREAM_MAX: usize = 64;
/// How long an upstream that failed to connect is left out.
///
/// See [`Proxy::new`]'s example (two upstreams, taken in turn).
pub const DOWN_FOR: Duration = Duration::from_secs(10);
/// The default time to connect to an upstream (past it: the next upstream, or `504`).
///
/// See [`Proxy::connect_timeout`]'s example.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default time an upstream may stay silent while a response is awaited or read (past
/// it: `504` before the head, a closed connection after).
///
/// See [`Proxy::read_timeout`]'s example.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The default time from a request's start until its upstream response's head is read,
/// every try included (past it: `504`). Below the server's default `--handler-timeout`
/// (30 s), so that a slow upstream is answered `504` by the proxy, not `503` by the server.
///
/// See [`Proxy::total_timeout`]'s example.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(25);
/// Bytes read from an upstream at a time, for a body.
const READ_BYTES: usize = 64 * 1024;
/// Room made for a response head at a time.
const HEAD_READ_BYTES: usize = 8 * 1024;

/// A handler that forwards every request to one of its upstreams; mount it with
/// [`Router::mount`](crate::Router::mount) (or `--proxy PREFIX=URL[,URL…]`), so that a
/// request for `PREFIX/x?y` goes upstream as `/x?y` (below the upstream URL's own path).
///
/// - HTTP/1.1 to the upstream. Hop-by-hop fields (`Connection` and those it names,
///   `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-*`) are removed
///   both ways; `Host` is kept or set as [`Proxy::host`] says; `X-Forwarded-Proto` and `X-Forwarded-Host` are set, and the
///   client's address is appended to `X-Forwarded-For` (after the values the request came
///   with, as nginx's `$proxy_add_x_forwarded_for`; IPv6 without brackets, IPv4-mapped
///   IPv6 as IPv4). The address is known only where the server looks it up,
///   [`Config::client_addresses`](crate::Config::client_addresses), which the binary's
///   `--proxy` turns on and a program serving a `Proxy` must set; where it is not,
///   `X-Forwarded-For` goes upstream as it came.
/// - The request body goes upstream as it arrives (still within `--request-body-bytes-max`),
///   with the client's `Content-Length`, or chunked when the client sent it chunked; such a
///   request takes a new upstream connection (a streamed body cannot be sent twice, so it
///   must not meet a pooled connection the upstream has closed). `Expect: 100-continue` is
///   answered by this server when the body is first read, and passed on.
/// - Connect failures → the next upstream (for any method: nothing was sent yet), when
///   there are several, else `502` (`504` when the connect timed out); no response within
///   the read timeout → `504`; a response that cannot be framed safely → `502`; an upstream that closes
///   mid-body → the client's connection is closed short of the length it was promised.
/// - Per worker, [`Proxy::upstream_stats`] tells its failed tries and its open and idle
///   upstream connections (the binary's `status` and `/metrics` show them per mount).
///
/// Mounted on a [`Router`](crate::Router): see [`Static`](crate::files::Static)'s example.
#[derive(Clone, Debug)]
pub struct Proxy {
    inner: Rc<Inner>,
}

/// The `Host` a request goes upstream with ([`Proxy::host`]).
///
/// See [`Proxy::host`]'s and [`UpstreamHost::parse`]'s examples.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum UpstreamHost {
    /// The client's own `Host` (nginx's `$host`); the upstream's address for a client that
    /// sent none (HTTP/1.0), since HTTP/1.1 requires one.
    #[default]
    Keep,
    /// The upstream URL's `HOST:PORT` as written (nginx's `$proxy_host`).
    Upstream,
    /// This value.
    Set(String),
}

impl UpstreamHost {
    /// Parses the command line's form: `$host` (keep, the default), `$proxy_host` (the
    /// upstream's), or a value of its own (visible ASCII, no spaces).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::proxy::UpstreamHost;
    ///
    /// assert_eq!(UpstreamHost::parse("$host"), Ok(UpstreamHost::Keep));
    /// assert_eq!(UpstreamHost::parse("$proxy_host"), Ok(UpstreamHost::Upstream));
    /// assert_eq!(
    ///     UpstreamHost::parse("api.internal:8080"),
    ///     Ok(UpstreamHost::Set("api.internal:8080".into()))
    /// );
    /// // A line break would smuggle a field upstream.
    /// assert!(UpstreamHost::parse("a\r\nX-Admin: 1").is_err());
    /// ```
    pub fn parse(value: &str) -> Result<UpstreamHost, String> {
        match value {
            "$host" => Ok(UpstreamHost::Keep),
            "$proxy_host" => Ok(UpstreamHost::Upstream),
            v if !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()) => {
                Ok(UpstreamHost::Set(v.to_string()))
            }
            v => Err(format!(
                "{v:?} is no Host: give $host (the client's), $proxy_host (the upstream's) \
                 or a name of visible ASCII without spaces"
            )),
        }
    }
}

#[derive(Debug)]
struct Inner {
    upstreams: Vec<Upstream>,
    /// The `Host` sent upstream; set before serving.
    host: RefCell<UpstreamHost>,
    next: Cell<usize>,
    /// Set before serving (the builder methods), read per request.
    connect_timeout: Cell<Duration>,
    read_timeout: Cell<Duration>,
    total_timeout: Cell<Duration>,
    /// See [`UpstreamStats::errors`].
    errors: Cell<u64>,
    /// Upstream connections open now, pooled or busy: each [`Conn`] counts itself.
    open: Rc<Cell<u64>>,
}

#[derive(Debug)]
struct Upstream {
    addr: SocketAddr,
    /// `HOST:PORT` as the URL wrote it (the port added when it had none).
    authority: String,
    /// The upstream URL's path, without a trailing `/` (empty for none).
    path: String,
    idle: RefCell<Vec<Conn>>,
    down_until: Cell<Option<Instant>>,
}

/// What a proxy saw of its upstreams, in this worker (each worker has its own connections
/// and counts): see [`Proxy::upstream_stats`].
///
/// See [`Proxy::upstream_stats`]'s example.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpstreamStats {
    /// Failed tries at an upstream since the worker started: a connect refused or timed
    /// out (whether or not another upstream then answered), a request answered `502` or
    /// `504` by the proxy itself (the upstream closed, failed, stayed silent, or sent a
    /// response that cannot be forwarded), and a response body the upstream cut short
    /// after its head was forwarded. So every `502` and `504` the proxy makes is counted
    /// once. Not counted: a pooled connection the upstream had closed meanwhile, when the
    /// retry on a new connection works (upstreams close idle connections), and failures
    /// of the client's (its request body, or going away).
    pub errors: u64,
    /// Upstream connections open now, idle in the pool or busy with a request.
    pub open: u64,
    /// Upstream connections idle in the keep-alive pool now.
    pub idle: u64,
}

/// An upstream connection, counted in its proxy's open connections while it lives.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    open: Rc<Cell<u64>>,
}

impl Conn {
    fn new(stream: TcpStream, open: &Rc<Cell<u64>>) -> Conn {
        open.set(open.get() + 1);
        Conn {
            stream,
            open: open.clone(),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.open.set(self.open.get() - 1);
    }
}

impl Deref for Conn {
    type Target = TcpStream;

    fn deref(&self) -> &TcpStream {
        &self.stream
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

impl Proxy {
    /// Forwards to `urls` (`http://HOST:PORT[/PATH]`, HOST an IP address or a name resolved
    /// now, once). `https` is refused: there is no TLS here.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::proxy::Proxy;
    ///
    /// // Two upstreams, taken in turn; a request for `PREFIX/users` goes to `/v1/users`.
    /// let api = Proxy::new(&["http://10.0.0.5:8080/v1", "http://10.0.0.6:8080/v1"])?;
    /// assert!(Proxy::new(&["https://10.0.0.5:8443"]).is_err());
    /// assert!(Proxy::new(&["http://10.0.0.5:8080/v1?debug=1"]).is_err());
    /// assert!(Proxy::new::<&str>(&[]).is_err());
    /// # let _ = api;
    /// # Ok::<(), String>(())
    /// ```
    pub fn new<S: AsRef<str>>(urls: &[S]) -> Result<Proxy, String> {
        if urls.is_empty() {
            return Err("no upstream URL".into());
        }
        let upstreams = urls
            .iter()
            .map(|u| upstream(u.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Proxy {
            inner: Rc::new(Inner {
                upstreams,
                host: RefCell::new(UpstreamHost::Keep),
                next: Cell::new(0),
                connect_timeout: Cell::new(CONNECT_TIMEOUT),
                read_timeout: Cell::new(READ_TIMEOUT),
                total_timeout: Cell::new(TOTAL_TIMEOUT),
                errors: Cell::new(0),
                open: Rc::new(Cell::new(0)),
            }),
        })
    }

    /// How long to wait for a connect ([`CONNECT_TIMEOUT`] by default); for every clone of
    /// this proxy.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::proxy::Proxy;
    /// use std::time::Duration;
    ///
    /// // Upstreams on the same network: a connect that takes a second has failed.
    /// let api = Proxy::new(&["http://10.0.0.5:8080", "http://10.0.0.6:8080"])?
    ///     .connect_timeout(Duration::from_secs(1));
    /// # let _ = api;
    /// # Ok::<(), String>(())
    /// ```
    pub fn connect_timeout(self, limit: Duration) -> Proxy {
        self.inner.connect_timeout.set(limit);
        self
    }

    /// How long an upstream may stay silent, and how long a write to it may wait for room
    /// ([`READ_TIMEOUT`] by default); for every clone of this proxy.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::proxy::Proxy;
    /// use std::time::Duration;
    ///
    /// // A report generator may think for two minutes before its first byte; keep the
    /// // total timeout and the server's handler timeout above it too.
    /// let reports = Proxy::new(&["http://127.0.0.1:9000"])?
    ///     .read_timeout(Duration::from_secs(120))
    ///     .total_timeout(Duration::from_secs(150));
    /// # let _ = reports;
    /// # Ok::<(), String>(())
    /// ```
    pub fn read_timeout(self, limit: Duration) -> Proxy {
        self.inner.read_timeout.set(limit);
        self
    }

    /// How long from a request's start until its response head is read, every try
    /// included ([`TOTAL_TIMEOUT`] by default; past it: `504`): an upstream that trickles
    /// its head a byte at a time is cut off here, where the read timeout never fires. For
    /// every clone of this proxy.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::proxy::Proxy;
    /// use std::time::Duration;
    ///
    /// // An API that must answer fast: `504` after two seconds, however the time was spent.
    /// let api = Proxy::new(&["http://127.0.0.1:8080"])?.total_timeout(Duration::from_secs(2));
    /// # let _ = api;
    /// # Ok::<(), String>(())
    /// ```
    pub fn total_timeout(self, limit: Duration) -> Proxy {
        self.inner.total_timeout.set(limit);
        self
    }

    /// The `Host` requests go upstream with ([`UpstreamHost::Keep`] by default); for every
    /// clone of this proxy.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::proxy::{Proxy, UpstreamHost};
    ///
    /// // A virtual host upstream that answers only to its own name.
    /// let api = Proxy::new(&["http://10.0.0.5:8080"])?
    ///     .host(UpstreamHost::Set("api.internal".into()));
    /// // As the command line writes it: `$proxy_host` sends `10.0.0.5:8080`.
    /// let assets = Proxy::new(&["http://10.0.0.7:8080"])?
    ///     .host(UpstreamHost::parse("$proxy_host")?);
    /// # let _ = (api, assets);
    /// # Ok::<(), String>(())
    /// ```
    pub fn host(self, host: UpstreamHost) -> Proxy {
        *self.inner.host.borrow_mut() = host;
        self
    }

    /// Its upstream errors and connections so far, in this worker (shared by every clone
    /// of this proxy).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::proxy::{Proxy, UpstreamStats};
    /// use ringmaster::{Async, Request, Response, Router};
    ///
    /// let api = Proxy::new(&["http://127.0.0.1:8080"])?;
    /// assert_eq!(api.upstream_stats(), UpstreamStats::default()); // nothing tried yet
    /// let stats = api.clone();
    /// let router = Router::new()
    ///     .mount("/api", Async(api))
    ///     .get("/upstream", move |_: &Request<'_>, res: &mut Response| {
    ///         let s = stats.upstream_stats();
    ///         res.body(format!("errors {} open {} idle {}\n", s.errors, s.open, s.idle));
    ///     });
    /// # let _ = router;
    /// # Ok::<(), String>(())
    /// ```
    pub fn upstream_stats(&self) -> UpstreamStats {
        let inner = &self.inner;
        UpstreamStats {
            errors: inner.errors.get(),
            open: inner.open.get(),
            idle: inner
                .upstreams
                .iter()
                .map(|u| u.idle.borrow().len() as u64)
                .sum(),
        }
    }
}

/// Parses `http://HOST:PORT[/PATH]`.
fn upstream(url: &str) -> Result<Upstream, String> {
    let bad = |why: &str| format!("upstream {url:?}: {why}");
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => return Err(bad("https is not supported (no TLS); use http://")),
        _ => return Err(bad("expected http://HOST:PORT[/PATH]")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if path.contains(['?', '#']) {
        return Err(bad("no query or fragment in an upstream URL"));
    }
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve {authority}: {e}")))?
        .next()
        .ok_or_else(|| bad("resolves to no address"))?;
    Ok(Upstream {
        addr,
        authority: with_port,
        path: path.to_string(),
        idle: RefCell::new(Vec::new()),
        down_until: Cell::new(None),
    })
}

impl AsyncHandler for Proxy {
    type Future = Pin<Box<dyn Future<Output = Response>>>;

    fn call(&self, req: OwnedRequest) -> Self::Future {
        Box::pin(forward(self.inner.clone(), req))
    }

    /// Request bodies go upstream as they arrive (never held whole).
    fn streams_body(&self, _req: &Request<'_>) -> bool {
        true
    }
}

/// How the request's body goes upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyGoes {
    /// Read whole already (or none): with its length.
    Whole,
    /// As it arrives, with the client's `Content-Length`.
    Length,
    /// As it arrives, chunked (the client sent it chunked).
    Chunked,
}

impl Inner {
    /// The next upstream in turn that is not left out (or, when all are, the next one).
    fn pick(&self, now: Instant) -> usize {
        let n = self.upstreams.len();
        let start = self.next.get();
        self.next.set((start + 1) % n);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.upstreams[i].down_until.get().is_none_or(|t| t <= now))
            .unwrap_or(start % n)
    }

    /// Counts one failed try at an upstream (see [`UpstreamStats::errors`]).
    fn failed(&self) {
        self.errors.set(self.errors.get() + 1);
    }

    /// Counts `e`, an upstream's failure mid-body, and hands it on.
    fn failed_mid_body(&self, e: io::Error) -> io::Error {
        self.failed();
        e
    }
}

/// The request as it goes upstream: its line below the upstream's path, its fields less the
/// hop-by-hop ones, the forwarding fields, and its body with a length.
fn request_bytes(
    req: &OwnedRequest,
    up: &Upstream,
    host_mode: &UpstreamHost,
    framing: BodyGoes,
    length: Option<u64>,
) -> Vec<u8> {
    let target = req.target();
    let mut out = Vec::with_capacity(512 + req.body().len());
    out.extend_from_slice(req.method().as_bytes());
    out.push(b' ');
    out.extend_from_slice(up.path.as_bytes());
    if target.starts_with('?') || (up.path.is_empty() && !target.starts_with('/')) {
        out.push(b'/');
    }
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // The fields the client's Connection names are hop-by-hop too.
    let named: Vec<&[u8]> = req
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| list(v))
        .collect();
    let mut host = None;
    let client = req.peer_addr();
    for (name, value) in req.headers() {
        let skip = is_hop_by_hop(name)
            || name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("x-forwarded-proto")
            || name.eq_ignore_ascii_case("x-forwarded-host")
            // Joined with the client's address below (as it is when unknown).
            || (client.is_some() && name.eq_ignore_ascii_case("x-forwarded-for"))
            || named
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name.as_bytes()));
        let is_host = name.eq_ignore_ascii_case("host");
        if is_host {
            host = Some(value);
        }
        if skip || (is_host && *host_mode != UpstreamHost::Keep) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    let set_host = match host_mode {
        UpstreamHost::Keep => host.is_none().then_some(up.authority.as_bytes()),
        UpstreamHost::Upstream => Some(up.authority.as_bytes()),
        UpstreamHost::Set(v) => Some(v.as_bytes()),
    };
    if let Some(value) = set_host {
        out.extend_from_slice(b"Host: ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(client) = client {
        forwarded_for(req, client, &mut out);
    }
    out.extend_from_slice(b"X-Forwarded-Proto: http\r\n");
    if let Some(host) = req.host().map(str::as_bytes).or(host) {
        out.extend_from_slice(b"X-Forwarded-Host: ");
        out.extend_from_slice(host);
        out.extend_from_slice(b"\r\n");
    }
    let body = req.body();
    match framing {
        BodyGoes::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyGoes::Length => {
            let n = length.unwrap_or(0);
            out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
        }
        _ if !body.is_empty() || matches!(req.method(), "POST" | "PUT" | "PATCH") => {
            out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Appends `X-Forwarded-For` as nginx's `$proxy_add_x_forwarded_for` makes it: the incoming
/// values (several fields joined with `, `), then the client's address. An IPv6 address is
/// written without brackets, an IPv4-mapped one (an IPv4 client of an IPv6 socket) as IPv4.
fn forwarded_for(req: &OwnedRequest, client: IpAddr, out: &mut Vec<u8>) {
    use std::io::Write;
    out.extend_from_slice(b"X-Forwarded-For: ");
    let incoming = req
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
        .filter(|(_, v)| !v.is_empty());
    for (_, value) in incoming {
        out.extend_from_slice(value);
        out.extend_from_slice(b", ");
    }
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{}\r\n", client.to_canonical());
}

/// Passes the client's body on as it arrives, chunked when its length is not known.
async fn send_body(
    stream: &mut TcpStream,
    mut reader: BodyReader,
    chunked: bool,
) -> Result<(), Failed> {
    let mut buf = vec![0u8; READ_BYTES];
    let mut framed = Vec::with_capacity(READ_BYTES + 32);
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|e| Failed::Answer(400, format!("the request body: {e}")))?;
        framed.clear();
        if chunked {
            framed.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        }
        framed.extend_from_slice(&buf[..n]);
        if chunked {
            framed.extend_from_slice(b"\r\n");
        }
        if !framed.is_empty() {
            stream
                .write_all(&framed)
                .await
                .map_err(|e| Failed::Answer(502, format!("writing to the upstream: {e}")))?;
        }
        if n == 0 {
            return Ok(());
        }
    }
}

/// Why one try failed.
enum Failed {
    /// Nothing came back on a pooled connection: it had gone stale; try a new one.
    Stale,
    /// The connect failed: the upstream is left out; try the next.
    Connect(io::Error),
    /// The answer to give.
    Answer(u16, String),
}

/// What came back: the head's fields, parsed, and the connection with what followed it.
struct Got {
    status: u16,
    fields: Vec<(String, Vec<u8>)>,
    framing: BodyFraming,
    keep_alive: bool,
    stream: Conn,
    /// Bytes read past the head.
    rest: Vec<u8>,
}

async fn forward(inner: Rc<Inner>, mut req: OwnedRequest) -> Response {
    // A body is passed on as it arrives. It cannot be sent twice, so it goes on a new
    // connection: a pooled one may have been closed by the upstream meanwhile, and then
    // the request could not be tried again.
    let body = req.body_reader();
    // A request sent on a pooled connection that then went silent is sent again on a new
    // one: only for the methods that may be repeated.
    let repeatable = matches!(
        req.method(),
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
    );
    let total = inner.total_timeout.get();
    match crate::rt::timeout(total, tries(&inner, &req, body, repeatable)).await {
        Ok(Ok((index, got))) => respond(inner, index, got),
        Ok(Err(res)) => res,
        Err(_) => {
            inner.failed();
            let secs = total.as_secs_f64();
            error(504, &format!("the upstream did not answer within {secs}s"))
        }
    }
}

/// The tries of one request, until an upstream's response head is read (with the index
/// of the upstream that sent it) or the answer is an error.
async fn tries(
    inner: &Rc<Inner>,
    req: &OwnedRequest,
    mut body: Option<BodyReader>,
    repeatable: bool,
) -> Result<(usize, Got), Response> {
    let mut tries = 0;
    let mut fresh_only = body.is_some() || !repeatable;
    let mut index = inner.pick(Instant::now());
    loop {
        tries += 1;
        match exchange(inner, index, req, &mut body, fresh_only).await {
            Ok(got) => return Ok((index, got)),
            Err(Failed::Stale) if tries < 3 => fresh_only = true,
            // Nothing of the request went out (the body is read only once connected), so any
            // method may go to the next upstream.
            Err(Failed::Connect(e)) if tries < 3 && inner.upstreams.len() > 1 => {
                inner.failed();
                crate::log::log_limited!(
                    "proxy: upstream {} left out for {}s: {e}",
                    inner.upstreams[index].addr,
                    DOWN_FOR.as_secs()
                );
                index = inner.pick(Instant::now());
                fresh_only = true;
            }
            Err(Failed::Connect(e)) => {
                inner.failed();
                crate::log::log_limited!("proxy: upstream {}: {e}", inner.upstreams[index].addr);
                let status = if e.kind() == io::ErrorKind::TimedOut {
                    504
                } else {
                    502
                };
                return Err(error(
                    status,
                    &format!("the upstream could not be reached: {e}"),
                ));
            }
            Err(Failed::Stale) => {
                inner.failed();
                return Err(error(502, "the upstream closed the connection"));
            }
            Err(Failed::Answer(status, why)) => {
                // 502 and 504 are the upstream's failures; 400 is the client's body.
                if status >= 500 {
                    inner.failed();
                }
                return Err(error(status, &why));
            }
        }
    }
}

fn error(status: u16, why: &str) -> Response {
    let mut res = Response::new();
    res.status(status)
        .header("Content-Type", "text/plain")
        .body(format!("{why}\n"));
    res
}

/// One try: a connection (pooled unless `fresh_only`), the request written, the response
/// head read.
async fn exchange(
    inner: &Inner,
    index: usize,
    req: &OwnedRequest,
    body: &mut Option<BodyReader>,
    fresh_only: bool,
) -> Result<Got, Failed> {
    let up = &inner.upstreams[index];
    let pooled = if fresh_only {
        None
    } else {
        up.idle.borrow_mut().pop()
    };
    let reused = pooled.is_some();
    let mut stream = match pooled {
        Some(s) => s,
        None => match TcpStream::connect_timeout(up.addr, inner.connect_timeout.get()).await {
            Ok(s) => {
                up.down_until.set(None);
                // Once per connection: a request's head goes out at once.
                let _ = s.set_nodelay(true);
                Conn::new(s, &inner.open)
            }
            Err(e) => {
                up.down_until.set(Some(Instant::now() + DOWN_FOR));
                return Err(Failed::Connect(e));
            }
        },
    };
    stream.set_read_timeout(Some(inner.read_timeout.get()));
    stream.set_write_timeout(Some(inner.read_timeout.get()));
    let length = req
        .header("content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
    let framing = match body {
        None => BodyGoes::Whole,
        Some(_) => length.map_or(BodyGoes::Chunked, |_| BodyGoes::Length),
    };
    let bytes = request_bytes(req, up, &inner.host.borrow(), framing, length);
    if let Err(e) = stream.write_all(&bytes).await {
        return Err(match reused {
            true => Failed::Stale,
            false => Failed::Answer(502, format!("writing to the upstream: {e}")),
        });
    }
    if let Some(reader) = body.take() {
        send_body(&mut stream, reader, framing == BodyGoes::Chunked).await?;
    }
    let to_head = req.method() == "HEAD";
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let had = buf.len();
        let (read, back) = stream.read_vec(buf, HEAD_READ_BYTES).await;
        buf = back;
        let n = match read {
            Ok(0) if had == 0 && reused => return Err(Failed::Stale),
            Ok(0) => {
                return Err(Failed::Answer(
                    502,
                    "the upstream closed before its response head".into(),
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(Failed::Answer(
                    504,
                    "the upstream did not answer in time".into(),
                ))
            }
            Err(_) if had == 0 && reused => return Err(Failed::Stale),
            Err(e) => return Err(Failed::Answer(502, format!("reading the upstream: {e}"))),
        };
        debug_assert_eq!(buf.len(), had + n);
        // Interim 1xx heads (but 101) are read past: the final one follows.
        loop {
            let mut fields = [const { MaybeUninit::uninit() }; RESPONSE_FIELDS_MAX];
            let parsed = match parse_response_head(&buf, &mut fields, to_head) {
                Ok(p) => p,
                Err(e) => return Err(Failed::Answer(502, format!("the upstream's response: {e}"))),
            };
            let ParsedResponse::Complete(head) = parsed else {
                break;
            };
            if head.status == 101 {
                return Err(Failed::Answer(
                    502,
                    "the upstream switched protocols; this proxy does not tunnel".into(),
                ));
            }
            let head_len = head.head_len;
            if head.status < 200 {
                buf.drain(..head_len);
                continue;
            }
            let fields = head
                .fields
                .iter()
                .filter(|f| {
                    !head.is_hop_by_hop(f.name)
                        && !f.name.eq_ignore_ascii_case("content-length")
                        && !f.name.eq_ignore_ascii_case("date")
                })
                .map(|f| (f.name.to_string(), f.value.to_vec()))
                .collect();
            let got = Got {
                status: head.status,
                fields,
                framing: head.framing,
                keep_alive: head.keep_alive,
                stream,
                rest: buf[head_len..].to_vec(),
            };
            return Ok(got);
        }
        if buf.len() > RESPONSE_HEAD_BYTES_MAX {
            return Err(Failed::Answer(
                502,
                "the upstream's head is too large".into(),
            ));
        }
    }
}

/// The client's response: the upstream's status and fields, and its body streamed.
fn respond(inner: Rc<Inner>, index: usize, got: Got) -> Response {
    let mut res = Response::new();
    if res.try_status(got.status).is_err() {
        inner.failed();
        return error(502, "the upstream's status cannot be forwarded");
    }
    for (name, value) in &got.fields {
        // A field this side sets itself, or cannot carry, is left out.
        let _ = res.try_header(name, value);
    }
    let Got {
        framing,
        keep_alive,
        mut stream,
        rest,
        ..
    } = got;
    match framing {
        BodyFraming::None => {
            if keep_alive && rest.is_empty() {
                pool(&inner, index, stream);
            }
        }
        BodyFraming::Length(n) if rest.len() as u64 >= n => {
            res.body(&rest[..n as usize]);
            if keep_alive && rest.len() as u64 == n {
                pool(&inner, index, stream);
            }
        }
        BodyFraming::Length(n) => {
            res.stream(Some(n), move |mut body| async move {
                let mut left = n - rest.len() as u64;
                // The upstream's bytes go to the client in the vector they were read into.
                let mut buf = body.write_vec(rest).await?;
                while left > 0 {
                    // No more than the body: what follows is not this response's.
                    let want = (left as usize).min(READ_BYTES);
                    buf.clear();
                    let (read, back) = stream.read_vec(buf, want).await;
                    let got = read.map_err(|e| inner.failed_mid_body(e))?;
                    if got == 0 {
                        return Err(inner.failed_mid_body(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the upstream closed before the end of its body",
                        )));
                    }
                    left -= got as u64;
                    buf = body.write_vec(back).await?;
                }
                if keep_alive {
                    pool(&inner, index, stream);
                }
                Ok(())
            });
        }
        BodyFraming::Chunked => {
            res.stream(None, move |mut body| async move {
                let mut decoder = ChunkedDecoder::new(u64::MAX, RESPONSE_HEAD_BYTES_MAX);
                let mut raw = rest;
                let mut decoded = Vec::with_capacity(READ_BYTES);
                loop {
                    decoded.clear();
                    let used = decoder.decode(&raw, &mut decoded).map_err(|e| {
                        inner.failed_mid_body(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("upstream body: {e}"),
                        ))
                    })?;
                    raw.drain(..used);
                    body.write(&decoded).await?;
                    if decoder.is_done() {
                        break;
                    }
                    let (read, back) = stream.read_vec(raw, READ_BYTES).await;
                    raw = back;
                    if read.map_err(|e| inner.failed_mid_body(e))? == 0 {
                        return Err(inner.failed_mid_body(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the upstream closed inside its chunked body",
                        )));
                    }
                }
                if keep_alive && raw.is_empty() {
                    pool(&inner, index, stream);
                }
                Ok(())
            });
        }
        BodyFraming::UntilClose => {
            res.stream(None, move |mut body| async move {
                let mut buf = body.write_vec(rest).await?;
                loop {
                    buf.clear();
                    let (read, back) = stream.read_vec(buf, READ_BYTES).await;
                    if read.map_err(|e| inner.failed_mid_body(e))? == 0 {
                        return Ok(());
                    }
                    buf = body.write_vec(back).await?;
                }
            });
        }
    }
    res
}

/// Keeps `stream` for the next request to upstream `index`, while the pool has room.
fn pool(inner: &Inner, index: usize, stream: Conn) {
    let mut idle = inner.upstreams[index].idle.borrow_mut();
    if idle.len() < IDLE_PER_UPSTREAM_MAX {
        idle.push(stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_are_checked() {
        let u = upstream("http://127.0.0.1:8080").unwrap();
        assert_eq!((u.addr.port(), u.path.as_str()), (8080, ""));
        let u = upstream("http://127.0.0.1:9/v1/").unwrap();
        assert_eq!((u.addr.port(), u.path.as_str()), (9, "/v1"));
        let u = upstream("http://[::1]:81").unwrap();
        assert!(u.addr.is_ipv6());
        assert_eq!(upstream("http://127.0.0.1").unwrap().addr.port(), 80);
        for bad in [
            "https://127.0.0.1:1",
            "127.0.0.1:1",
            "ftp://x:1",
            "http://127.0.0.1:1/a?b",
        ] {
            assert!(upstream(bad).is_err(), "{bad}");
        }
        assert!(Proxy::new::<&str>(&[]).is_err());
    }

    /// The request `raw` from `peer` as it goes upstream, and its `X-Forwarded-For` lines.
    /// The head `raw` goes upstream with, from `peer`, `Host` as `host` says.
    fn upstream_head(raw: &str, peer: Option<&str>, host: &UpstreamHost) -> String {
        use crate::http::{parse_head, HeadLimits, Parsed};
        let limits = HeadLimits {
            request_line_bytes_max: 1024,
            request_fields_bytes_max: 1024,
            request_body_bytes_max: 1024,
        };
        let mut headers = [const { MaybeUninit::uninit() }; crate::http::request::HEADERS_MAX];
        let Ok(Parsed::Complete(head)) = parse_head(raw.as_bytes(), &mut headers, &limits) else {
            panic!("a whole head: {raw:?}")
        };
        let peer = peer.map(|p| p.parse().unwrap());
        let req = OwnedRequest::new(raw.as_bytes(), &head, &[], peer);
        let up = upstream("http://localhost:9").unwrap();
        String::from_utf8(request_bytes(&req, &up, host, BodyGoes::Whole, None)).unwrap()
    }

    #[test]
    fn host_is_kept_or_set_as_configured() {
        let hosts = |raw: &str, mode: &UpstreamHost| -> Vec<String> {
            upstream_head(raw, None, mode)
                .lines()
                .filter(|l| l.to_ascii_lowercase().starts_with("host:"))
                .map(str::to_string)
                .collect()
        };
        let with = "GET /x HTTP/1.1\r\nHost: client.example\r\n\r\n";
        let without = "GET /x HTTP/1.0\r\n\r\n";
        assert_eq!(hosts(with, &UpstreamHost::Keep), ["Host: client.example"]);
        assert_eq!(hosts(with, &UpstreamHost::Upstream), ["Host: localhost:9"]);
        let set = UpstreamHost::Set("api.internal".into());
        assert_eq!(hosts(with, &set), ["Host: api.internal"]);
        // HTTP/1.1 upstream needs a Host: a client that sent none gets the upstream's.
        assert_eq!(hosts(without, &UpstreamHost::Keep), ["Host: localhost:9"]);
        assert_eq!(UpstreamHost::parse("$host"), Ok(UpstreamHost::Keep));
        assert_eq!(
            UpstreamHost::parse("$proxy_host"),
            Ok(UpstreamHost::Upstream)
        );
        assert_eq!(
            UpstreamHost::parse("a.b:8080"),
            Ok(UpstreamHost::Set("a.b:8080".into()))
        );
        for bad in ["", "a b", "a\r\nX: y"] {
            assert!(UpstreamHost::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn forwarded(raw: &str, peer: Option<&str>) -> (String, Vec<String>) {
        let text = upstream_head(raw, peer, &UpstreamHost::Keep);
        let xff = text
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("x-forwarded-for:"))
            .map(str::to_string)
            .collect();
        (text, xff)
    }

    #[test]
    fn the_client_address_is_appended_to_x_forwarded_for() {
        let get = "GET / HTTP/1.1\r\nHost: h\r\n";
        for (fields, peer, want) in [
            ("", Some("127.0.0.1"), &["X-Forwarded-For: 127.0.0.1"][..]),
            (
                "X-Forwarded-For: 10.0.0.1\r\n",
                Some("127.0.0.1"),
                &["X-Forwarded-For: 10.0.0.1, 127.0.0.1"],
            ),
            // Several fields are one list (RFC 9110 section 5.3), in order.
            (
                "x-forwarded-for: 10.0.0.1, 10.0.0.2\r\nX-Forwarded-For: 10.0.0.3\r\n",
                Some("192.0.2.9"),
                &["X-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.9"],
            ),
            (
                "X-Forwarded-For:\r\n",
                Some("192.0.2.9"),
                &["X-Forwarded-For: 192.0.2.9"],
            ),
            // IPv6 without brackets; an IPv4 client of an IPv6 socket as IPv4.
            ("", Some("::1"), &["X-Forwarded-For: ::1"]),
            ("", Some("2001:db8::7"), &["X-Forwarded-For: 2001:db8::7"]),
            ("", Some("::ffff:10.1.2.3"), &["X-Forwarded-For: 10.1.2.3"]),
            // Not looked up: nothing is added, and what came goes on as it came.
            ("", None, &[]),
            (
                "X-Forwarded-For: 10.0.0.1\r\n",
                None,
                &["X-Forwarded-For: 10.0.0.1"],
            ),
        ] {
            let raw = format!("{get}{fields}\r\n");
            let (text, xff) = forwarded(&raw, peer);
            assert_eq!(xff, want, "{fields:?} from {peer:?}:\n{text}");
            assert!(text.contains("X-Forwarded-Proto: http\r\n"), "{text}");
        }
    }
}
