//! Counters per mount of the `ringmaster` binary (`--static PREFIX=DIR`, `--proxy
//! PREFIX=URL[,URL…]`): requests, body bytes, and for a proxy its upstream errors and
//! connections. A [`Router`](crate::Router) keeps the table; each mount's handler is wrapped
//! in [`Counted`], which counts on the worker's thread (cells, no atomics); the worker
//! reports the table's [`sample`](MountTable::sample) to the master with its stats, and the
//! master names the mounts from its own copy of the table (made before fork, so the order is
//! the same everywhere). Handlers that are not mounts (the Hello World fallback, routes) are
//! not wrapped and pay nothing.

use crate::http::body::Shared;
use crate::ipc::{MountStats, MOUNTS_MAX};
use crate::proxy::Proxy;
use crate::{AsyncHandler, OwnedRequest, Request, Response, WorkerInfo};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// What a mount serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MountKind {
    /// Files beneath a directory (`--static`).
    Static,
    /// Upstream servers (`--proxy`).
    Proxy,
}

impl MountKind {
    /// As `status --json` and `/metrics` name it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            MountKind::Static => "static",
            MountKind::Proxy => "proxy",
        }
    }
}

/// One mount: what it is, and its counters.
#[derive(Debug)]
pub(crate) struct Mount {
    pub(crate) prefix: String,
    pub(crate) kind: MountKind,
    /// The directory, or the upstream URLs joined by `,`, as given.
    pub(crate) target: String,
    /// A proxy's, for its upstream figures.
    upstream: Option<Proxy>,
    counters: Rc<Counters>,
}

impl Mount {
    /// A `--static PREFIX=DIR` mount.
    pub(crate) fn files(prefix: &str, dir: &std::path::Path) -> Mount {
        Mount::new(
            prefix,
            MountKind::Static,
            dir.to_string_lossy().into_owned(),
            None,
        )
    }

    /// A `--proxy PREFIX=URL[,URL…]` mount of `proxy`.
    pub(crate) fn proxy<S: AsRef<str>>(prefix: &str, urls: &[S], proxy: &Proxy) -> Mount {
        let urls: Vec<&str> = urls.iter().map(AsRef::as_ref).collect();
        Mount::new(
            prefix,
            MountKind::Proxy,
            urls.join(","),
            Some(proxy.clone()),
        )
    }

    fn new(prefix: &str, kind: MountKind, target: String, upstream: Option<Proxy>) -> Mount {
        Mount {
            prefix: prefix.to_string(),
            kind,
            target,
            upstream,
            counters: Rc::default(),
        }
    }

    /// `handler`, counting into this mount.
    pub(crate) fn count<A: AsyncHandler>(&self, handler: A) -> Counted<A> {
        Counted {
            handler,
            counters: self.counters.clone(),
        }
    }

    /// Its counters now.
    fn sample(&self) -> MountStats {
        let up = self
            .upstream
            .as_ref()
            .map(Proxy::upstream_stats)
            .unwrap_or_default();
        MountStats {
            requests: self.counters.requests.get(),
            bytes: self.counters.bytes.get(),
            upstream_errors: up.errors,
            upstream_open: up.open,
            upstream_idle: up.idle,
        }
    }
}

/// The counted mounts of a router, in the order they were mounted; at most
/// [`MOUNTS_MAX`].
///
/// See [`Static`](crate::files::Static)'s example (static files and a proxy on a router).
#[derive(Debug, Default)]
pub struct MountTable {
    mounts: Vec<Mount>,
}

impl MountTable {
    /// Whether it holds [`MOUNTS_MAX`] mounts already.
    pub(crate) fn is_full(&self) -> bool {
        self.mounts.len() >= MOUNTS_MAX
    }

    /// Adds `mount`.
    ///
    /// # Panics
    /// When the table [`is_full`](Self::is_full): the caller checks first.
    pub(crate) fn push(&mut self, mount: Mount) {
        assert!(!self.is_full(), "more than {MOUNTS_MAX} mounts");
        self.mounts.push(mount);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.mounts.is_empty()
    }

    /// The mounts, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Mount> {
        self.mounts.iter()
    }

    /// Every mount's counters now, in order: what a worker reports.
    pub(crate) fn sample(&self) -> Vec<MountStats> {
        self.mounts.iter().map(Mount::sample).collect()
    }
}

/// A mount's counters in one worker.
#[derive(Debug, Default)]
struct Counters {
    requests: Cell<u64>,
    bytes: Cell<u64>,
}

/// A mount's handler that counts its answers: one request per response returned, and the
/// response's body bytes (a whole body's length, or what a streamed body's producer wrote,
/// counted when it ends or is dropped; none for `HEAD`, whose body is never sent).
pub(crate) struct Counted<A> {
    handler: A,
    counters: Rc<Counters>,
}

impl<A: AsyncHandler> AsyncHandler for Counted<A>
where
    A::Future: Unpin,
{
    type Future = CountedFuture<A::Future>;

    fn call(&self, req: OwnedRequest) -> Self::Future {
        let head = req.method() == "HEAD";
        CountedFuture {
            inner: self.handler.call(req),
            counters: self.counters.clone(),
            head,
        }
    }

    fn start(&self, worker: &WorkerInfo) -> Result<(), String> {
        self.handler.start(worker)
    }

    fn on_message(&self, bytes: &[u8]) {
        self.handler.on_message(bytes)
    }

    fn streams_body(&self, req: &Request<'_>) -> bool {
        self.handler.streams_body(req)
    }
}

/// The future of a [`Counted`] handler: the handler's, counted when it answers.
pub(crate) struct CountedFuture<F> {
    inner: F,
    counters: Rc<Counters>,
    head: bool,
}

impl<F: Future<Output = Response> + Unpin> Future for CountedFuture<F> {
    type Output = Response;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let this = self.get_mut();
        let Poll::Ready(mut res) = Pin::new(&mut this.inner).poll(cx) else {
            return Poll::Pending;
        };
        let c = &this.counters;
        c.requests.set(c.requests.get() + 1);
        if this.head {
            return Poll::Ready(res);
        }
        match res.take_stream() {
            None => c.bytes.set(c.bytes.get() + res.body_bytes().len() as u64),
            Some(producer) => {
                let counters = c.clone();
                let start = producer.start;
                res.stream(producer.length, move |writer| {
                    let tally = Tally {
                        pipe: writer.pipe(),
                        counters,
                    };
                    let produce = start(writer);
                    async move {
                        let _tally = tally;
                        produce.await
                    }
                });
            }
        }
        Poll::Ready(res)
    }
}

/// Adds what a streamed body's producer wrote to its mount's bytes when the producer ends,
/// however it ends (done, failed, or dropped with its connection).
struct Tally {
    pipe: Shared,
    counters: Rc<Counters>,
}

impl Drop for Tally {
    fn drop(&mut self) {
        // The pipe is borrowed only inside the producer's and the connection's calls, never
        // across this drop; if it were, the bytes would go uncounted rather than panic.
        if let Ok(pipe) = self.pipe.try_borrow() {
            let bytes = &self.counters.bytes;
            bytes.set(bytes.get() + pipe.written());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_at_most_mounts_max() {
        let mut table = MountTable::default();
        let dir = std::path::Path::new("/tmp");
        for i in 0..MOUNTS_MAX {
            assert!(!table.is_full(), "{i} mounts");
            table.push(Mount::files(&format!("/m{i}"), dir));
        }
        assert!(table.is_full());
        assert_eq!(table.sample().len(), MOUNTS_MAX);
    }

    #[test]
    fn a_proxy_mount_names_its_upstreams_in_order() {
        let urls = ["http://127.0.0.1:1", "http://127.0.0.1:2/v1"];
        let proxy = Proxy::new(&urls).unwrap();
        let mount = Mount::proxy("/api", &urls, &proxy);
        assert_eq!(mount.kind.name(), "proxy");
        assert_eq!(mount.target, "http://127.0.0.1:1,http://127.0.0.1:2/v1");
        assert_eq!(mount.sample(), MountStats::default());
    }
}
