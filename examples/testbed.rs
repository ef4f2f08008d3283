//! A server whose behaviour tests choose per request, run through ringmaster's own command
//! line (`ringmaster::cli::run`), with every cluster hook in use. The integration tests run
//! it as a real process; it also shows the IPC API end to end.
//!
//! Paths: `/` Hello World; `/pid` the worker's pid; `/echo` the request body; `/target` the
//! request-target and host the handler sees (`TARGET HOST`, `-` for no host: an absolute-form
//! target arrives in origin form, its authority as the host); `/big?kb=N`
//! N KiB; `/slow?ms=N` answers after N ms (the
//! worker is blocked meanwhile); `/panic` panics; `/misuse?what=status|length|header` gives
//! its `Response` invalid input (a 1xx status, a `Content-Length` field, a CR LF in a
//! value); `/send?m=TEXT` sends TEXT to the master;
//! `/inbox` the worker's pid and the last message the master sent it; `/count` adds one to
//! the handler's own counter `testbed_hits` (`ringmaster::metric`), and observes `v=X` into
//! its histogram `testbed_values` (bounds 0.5 and 1); `/peer` the client's
//! address (`-` when it was not looked up: `TESTBED_CLIENT_ADDRESSES=1` sets
//! `Config::client_addresses`).
//!
//! The master's `on_message` hook answers `echo:TEXT` to the sender, and for
//! `broadcast:TEXT` sends TEXT to every worker. Hooks log `testbed: EVENT ...` lines.
//!
//! `TESTBED_ASYNC=1` serves the same paths through an async handler (each answered at its
//! first poll), plus the async ones: `/wait?ms=N` answers Hello World after a ring timer of
//! N ms; `/panic-async` panics after an await; `/upstream?port=P` connects to
//! 127.0.0.1:P over the ring, writes one line and answers with the first line it reads back
//! (`502` when it cannot); `/blocking?ms=N` sleeps N ms on the blocking pool; `/spawn?m=TEXT`
//! spawns a task that sends TEXT to the master (waiting while its pipe is full) after the
//! response; `/stream?mb=N` streams a body of N MiB (`Content-Length`; `&chunked=1`
//! without; `&fail=1` fails after the first 64 KiB); `/upload` reads its body as it
//! arrives and answers its byte count; `/file?path=REL` serves REL from beneath the
//! directory `TESTBED_ROOT` (`403` for a path that leads out of it, `404` for none),
//! streamed in 64 KiB reads at offsets.
//!
//! `TESTBED_HELLO=sync` or `async` serves only Hello World, from the built-in handler's
//! code, sync or async: the pair the side-by-side benchmark compares.
//!
//! `TESTBED_START=config` makes `Handler::start` fail (a configuration error: no respawn
//! loop); `TESTBED_START=exit` or `exit:SLOT` makes the worker (of that slot) exit with
//! code 3 at start (a crash: respawned with backoff until the slot is errored).
//! `TESTBED_START_FILE=PATH` reads the same choice from a file at each start (absent: a
//! normal start), plus `hang`: never become ready.

use ringmaster::{send_to_master, Handler, OwnedRequest, Request, Response, Server, WorkerInfo};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

#[derive(Default)]
struct Testbed {
    inbox: RefCell<Vec<u8>>,
}

/// What the paths read of a request, borrowed or owned.
trait Req {
    fn path(&self) -> &str;
    fn target(&self) -> &str;
    fn host(&self) -> Option<&str>;
    fn query(&self) -> Option<&str>;
    fn body(&self) -> &[u8];
    fn peer_addr(&self) -> Option<std::net::IpAddr>;
}

macro_rules! impl_req {
    ($t:ty) => {
        impl Req for $t {
            fn path(&self) -> &str {
                <$t>::path(self)
            }
            fn target(&self) -> &str {
                <$t>::target(self)
            }
            fn host(&self) -> Option<&str> {
                <$t>::host(self)
            }
            fn query(&self) -> Option<&str> {
                <$t>::query(self)
            }
            fn body(&self) -> &[u8] {
                <$t>::body(self)
            }
            fn peer_addr(&self) -> Option<std::net::IpAddr> {
                <$t>::peer_addr(self)
            }
        }
    };
}
impl_req!(Request<'_>);
impl_req!(OwnedRequest);

fn query<'a>(req: &'a impl Req, key: &str) -> Option<&'a str> {
    req.query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

impl Handler for Testbed {
    fn handle(&self, req: &Request<'_>, res: &mut Response) {
        self.answer(req, res)
    }

    fn start(&self, worker: &WorkerInfo) -> Result<(), String> {
        start(worker)
    }

    fn on_message(&self, bytes: &[u8]) {
        *self.inbox.borrow_mut() = bytes.to_vec();
    }
}

/// The async paths, and the others as the sync handler answers them.
async fn answer_async(testbed: Rc<Testbed>, mut req: OwnedRequest) -> Response {
    let mut res = Response::new();
    let path = req.path();
    let waits = [
        "/wait",
        "/panic-async",
        "/upstream",
        "/blocking",
        "/stream",
        "/upload",
        "/file",
        "/spawn",
    ];
    if !waits.contains(&path) {
        // The paths the sync handler has, answered at the first poll.
        testbed.answer_path(path, &req, &mut res);
        return res;
    }
    match req.path() {
        "/wait" => {
            let ms = query(&req, "ms").and_then(|v| v.parse().ok()).unwrap_or(1);
            ringmaster::rt::sleep(Duration::from_millis(ms)).await;
            res.header("Content-Type", "text/plain").body("Hello World");
        }
        "/panic-async" => {
            ringmaster::rt::sleep(Duration::from_millis(1)).await;
            panic!("testbed: /panic-async requested");
        }
        "/upstream" => {
            let port = query(&req, "port")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            // Boxed, as are the other rare paths with large states, so that the future of
            // every request stays small (it is moved into the worker's table).
            match Box::pin(upstream_line(port)).await {
                Ok(line) => res.body(line),
                Err(e) => res.status(502).body(format!("upstream: {e}\n")),
            };
        }
        "/blocking" => {
            let ms = query(&req, "ms").and_then(|v| v.parse().ok()).unwrap_or(1);
            let slept = ringmaster::rt::blocking(move || {
                std::thread::sleep(Duration::from_millis(ms));
                format!("slept {ms} ms on {:?}", std::thread::current().name())
            })
            .await;
            res.body(slept);
        }
        "/stream" => {
            let mb: u64 = query(&req, "mb").and_then(|v| v.parse().ok()).unwrap_or(1);
            let len = mb << 20;
            let declared = query(&req, "chunked").is_none().then_some(len);
            let fail = query(&req, "fail").is_some();
            res.header("Content-Type", "application/octet-stream")
                .stream(declared, move |mut body| async move {
                    let chunk = vec![b'x'; 64 * 1024];
                    let mut left = len;
                    while left > 0 {
                        let n = left.min(chunk.len() as u64) as usize;
                        body.write(&chunk[..n]).await?;
                        left -= n as u64;
                        if fail {
                            return Err(std::io::Error::other("testbed: fail=1 requested"));
                        }
                    }
                    Ok(())
                });
        }
        "/upload" => {
            let Some(mut body) = req.body_reader() else {
                res.body(req.body().len().to_string());
                return res;
            };
            if let Some(max) = query(&req, "max").and_then(|v| v.parse().ok()) {
                // Read whole with a limit, after bytes of our own: the limit counts the body's.
                let mut out = b"received: ".to_vec();
                match body.read_to_end(&mut out, max).await {
                    Ok(n) => res.body(format!("{n}\n")),
                    Err(e) => res.status(413).body(format!("{e}\n")),
                };
                return res;
            }
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            loop {
                match body.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(e) => {
                        res.status(400).body(format!("upload: {e}\n"));
                        return res;
                    }
                }
            }
            res.body(total.to_string());
        }
        "/file" => {
            let path = query(&req, "path").unwrap_or("").to_string();
            Box::pin(serve_file(&path, &mut res)).await;
        }
        "/spawn" => {
            let text = query(&req, "m").unwrap_or("").to_string();
            let spawned = ringmaster::rt::spawn(async move {
                ringmaster::rt::sleep(Duration::from_millis(10)).await;
                if let Err(e) = ringmaster::rt::send_to_master(text.as_bytes()).await {
                    eprintln!("testbed: spawned send failed: {e}");
                }
            });
            match spawned {
                Ok(()) => res.body("spawned"),
                Err(e) => res.status(503).body(e.to_string()),
            };
        }
        _ => unreachable!("one of the paths above"),
    }
    res
}

/// Serves `path` from beneath `TESTBED_ROOT` through the ring.
async fn serve_file(path: &str, res: &mut Response) {
    use ringmaster::rt::fs::Dir;
    /// `EXDEV`: what `RESOLVE_BENEATH` answers for a path out of the root.
    const EXDEV: i32 = 18;
    let root = std::env::var("TESTBED_ROOT").unwrap_or_else(|_| ".".into());
    let opened = async {
        let dir = Dir::open(&root).await?;
        let file = dir.open_file(path).await?;
        let meta = file.metadata().await?;
        Ok::<_, std::io::Error>((file, meta))
    };
    let (file, meta) = match opened.await {
        Ok(found) => found,
        Err(e) if e.raw_os_error() == Some(EXDEV) => {
            res.status(403).body("outside the root\n");
            return;
        }
        Err(e) => {
            res.status(404).body(format!("{e}\n"));
            return;
        }
    };
    res.stream(Some(meta.len), move |mut body| async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut at = 0;
        while at < meta.len {
            let n = file.read_at(&mut buf, at).await?;
            if n == 0 {
                break;
            }
            body.write(&buf[..n]).await?;
            at += n as u64;
        }
        Ok(())
    });
}

/// Connects to 127.0.0.1:`port`, writes a line, and reads the first line back (at most
/// 4 KiB), each step within a second's deadline past the upstream's own wait.
async fn upstream_line(port: u16) -> std::io::Result<Vec<u8>> {
    use ringmaster::rt::TcpStream;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut upstream = TcpStream::connect_timeout(addr, Duration::from_secs(2)).await?;
    upstream.set_read_timeout(Some(Duration::from_secs(10)));
    upstream.set_write_timeout(Some(Duration::from_secs(2)));
    upstream.write_all(b"hello upstream\n").await?;
    // A read of nothing is answered at once, as `read` with an empty buffer is.
    let (nothing, kept) = upstream.read_vec(b"kept".to_vec(), 0).await;
    if nothing? != 0 || kept != b"kept" {
        return Err(std::io::Error::other("a read of nothing read something"));
    }
    let mut line = Vec::new();
    let mut buf = [0u8; 1024];
    while !line.contains(&b'\n') && line.len() < 4096 {
        match upstream.read(&mut buf).await? {
            0 => break,
            n => line.extend_from_slice(&buf[..n]),
        }
    }
    let end = line
        .iter()
        .position(|&b| b == b'\n')
        .map_or(line.len(), |i| i + 1);
    line.truncate(end);
    Ok(line)
}

impl Testbed {
    fn answer(&self, req: &impl Req, res: &mut Response) {
        self.answer_path(req.path(), req, res)
    }

    /// Answers `req`, whose path is `path`.
    fn answer_path(&self, path: &str, req: &impl Req, res: &mut Response) {
        match path {
            "/" => {
                res.header("Content-Type", "text/plain").body("Hello World");
            }
            "/pid" => {
                res.body(std::process::id().to_string());
            }
            "/echo" => {
                res.body(req.body());
            }
            "/peer" => {
                res.body(req.peer_addr().map_or("-".into(), |ip| ip.to_string()));
            }
            "/target" => {
                res.body(format!("{} {}", req.target(), req.host().unwrap_or("-")));
            }
            "/big" => {
                let kb = query(req, "kb")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(64usize);
                res.body(vec![b'b'; kb * 1024]);
            }
            "/slow" => {
                let ms = query(req, "ms").and_then(|v| v.parse().ok()).unwrap_or(100);
                eprintln!("testbed: slow request started ({ms}ms)");
                std::thread::sleep(Duration::from_millis(ms));
                res.body("slow done");
            }
            "/panic" => panic!("testbed: /panic requested\n(and a second line)"),
            "/count" => {
                static HITS: std::sync::LazyLock<ringmaster::metric::Counter> =
                    std::sync::LazyLock::new(|| {
                        ringmaster::metric::Counter::new("testbed_hits", "Requests to /count.")
                            .expect("a valid name")
                    });
                HITS.inc();
                static VALUES: std::sync::LazyLock<ringmaster::metric::Histogram> =
                    std::sync::LazyLock::new(|| {
                        ringmaster::metric::Histogram::new(
                            "testbed_values",
                            "The v= of /count.",
                            &[0.5, 1.0],
                        )
                        .expect("valid bounds")
                    });
                if let Some(v) = query(req, "v").and_then(|v| v.parse().ok()) {
                    VALUES.observe(v);
                }
                res.body("counted");
            }
            "/misuse" => {
                match query(req, "what") {
                    Some("status") => res.status(101),
                    Some("length") => res.header("Content-Length", "5"),
                    _ => res.header("X-Injected", "a\r\nSet-Cookie: x=1"),
                };
                res.body("never sent");
            }
            "/send" => {
                let text = query(req, "m").unwrap_or("");
                match send_to_master(text.as_bytes()) {
                    Ok(()) => res.body("sent"),
                    Err(e) => res.status(500).body(e.to_string()),
                };
            }
            "/inbox" => {
                let inbox = self.inbox.borrow();
                res.body(format!(
                    "{}:{}",
                    std::process::id(),
                    String::from_utf8_lossy(&inbox)
                ));
            }
            _ => {
                res.status(404).body("not found\n");
            }
        }
    }
}

fn start(worker: &WorkerInfo) -> Result<(), String> {
    {
        let from_file = std::env::var("TESTBED_START_FILE")
            .ok()
            .and_then(|path| std::fs::read_to_string(path).ok());
        let choice = from_file.or_else(|| std::env::var("TESTBED_START").ok());
        match choice.as_deref().map(str::trim) {
            Some("config") => Err("TESTBED_START=config asks for a failed start".into()),
            Some("exit") => std::process::exit(3),
            Some("hang") => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            Some(s) if s.strip_prefix("exit:") == Some(&worker.slot.to_string()) => {
                std::process::exit(3)
            }
            _ => Ok(()),
        }
    }
}

fn main() {
    // The same Hello World as the built-in one, sync or async: what the async path costs.
    match std::env::var("TESTBED_HELLO").as_deref() {
        Ok("sync") => std::process::exit(ringmaster::cli::run(
            ringmaster::app!(),
            Server::new(ringmaster::HelloWorld),
        )),
        Ok("async") => {
            let server = Server::new_async(|_req: OwnedRequest| async {
                let mut res = Response::new();
                res.header("Content-Type", "text/plain").body("Hello World");
                res
            });
            std::process::exit(ringmaster::cli::run(ringmaster::app!(), server));
        }
        _ => {}
    }
    if std::env::var_os("TESTBED_SCOPED").is_some() {
        // Start-up work on threads that end before the server starts: no thread is left.
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| std::hint::black_box(0));
            }
        });
    }
    if std::env::var_os("TESTBED_THREAD").is_some() {
        // A thread started before the server, as a logger's writer thread would be.
        std::thread::spawn(|| loop {
            std::thread::park();
        });
    }
    if std::env::var_os("TESTBED_ASYNC").is_some() {
        let testbed = Rc::new(Testbed::default());
        let server = Server::new_async(ringmaster::StreamBodies {
            when: |req: &Request<'_>| req.path() == "/upload",
            handler: move |req: OwnedRequest| answer_async(testbed.clone(), req),
        });
        std::process::exit(ringmaster::cli::run(ringmaster::app!(), hooks(server)));
    }
    std::process::exit(ringmaster::cli::run(
        ringmaster::app!(),
        hooks(Server::new(Testbed::default())),
    ));
}

/// Every cluster hook, logging, and answering messages.
fn hooks<H: ringmaster::Serve>(server: Server<H>) -> Server<H> {
    server
        .client_addresses(std::env::var_os("TESTBED_CLIENT_ADDRESSES").is_some())
        .on_fork(|_, w| eprintln!("testbed: fork slot={} pid={}", w.slot, w.pid))
        .on_online(|cluster, w| {
            eprintln!(
                "testbed: online slot={} pid={} ready={}",
                w.slot,
                w.pid,
                cluster.workers().count()
            )
        })
        .on_exit(|_, w, exit| eprintln!("testbed: exit slot={} pid={} {exit:?}", w.slot, w.pid))
        .on_message(|cluster, w, bytes| {
            let text = String::from_utf8_lossy(bytes).to_string();
            eprintln!("testbed: message slot={} text={text}", w.slot);
            if let Some(all) = text.strip_prefix("broadcast:") {
                let reached = cluster.broadcast(all.as_bytes());
                eprintln!("testbed: broadcast reached={reached}");
            } else {
                let reply = format!("echo:{text}");
                if let Err(e) = cluster.send(w.slot, reply.as_bytes()) {
                    eprintln!("testbed: reply failed: {e}");
                }
            }
        })
}
