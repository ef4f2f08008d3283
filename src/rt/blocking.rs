//! [`blocking`]: a closure that would block the worker (password hashing, SQLite, a library
//! with blocking I/O) runs on a small per-worker thread pool, and its future is woken
//! through the worker's ring (the wake inbox and its eventfd) when it is done.
//!
//! Bounded: at most [`BLOCKING_THREADS_MAX`] threads, started as needed, and at most
//! [`BLOCKING_QUEUE_MAX`] closures waiting for one; past that a `blocking` future waits
//! (unqueued) until a closure finishes. A closure cannot be stopped once it runs: dropping
//! its future discards the result, not the work.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Threads of a worker's blocking pool at most.
///
/// See [`blocking`]'s example.
pub const BLOCKING_THREADS_MAX: usize = 4;
/// Closures waiting for a thread at most.
///
/// See [`blocking`]'s example.
pub const BLOCKING_QUEUE_MAX: usize = 256;

type Job = Box<dyn FnOnce() + Send>;

/// The pool, made on first use in each worker (threads do not survive a fork).
struct Pool {
    jobs: SyncSender<Job>,
    /// Shared by the threads: the receiving end of the queue.
    queue: Arc<Mutex<Receiver<Job>>>,
    threads: usize,
    /// Closures queued or running.
    busy: Arc<std::sync::atomic::AtomicUsize>,
    /// Futures that found the queue full, woken when a closure finishes.
    waiting: Arc<Mutex<Vec<Waker>>>,
}

thread_local! {
    static POOL: std::cell::RefCell<Option<Pool>> = const { std::cell::RefCell::new(None) };
}

/// What a closure gave, or its panic.
type Output<T> = Result<T, Box<dyn Any + Send>>;

/// The state a [`Blocking`] future shares with the thread that runs its closure.
struct Shared<T> {
    out: Option<Output<T>>,
    waker: Option<Waker>,
}

/// Runs `f` on the worker's blocking pool; its result, once done. A panic in `f` resumes in
/// the awaiting future (a handler's is answered `500`, as any panic of its).
///
/// Meant for handler code, but it does not panic elsewhere: whatever thread polls a
/// `Blocking` gets a pool of its own.
///
/// # Examples
///
/// ```
/// use ringmaster::rt::blocking;
/// use ringmaster::{OwnedRequest, Response};
///
/// // Lists a directory with std's `read_dir`, which blocks, off the worker's loop.
/// async fn listing(_req: OwnedRequest) -> Response {
///     let names = blocking(|| -> std::io::Result<Vec<String>> {
///         let mut names = Vec::new();
///         for entry in std::fs::read_dir("/srv/www")?.take(1000) {
///             names.push(entry?.file_name().to_string_lossy().into_owned());
///         }
///         Ok(names)
///     })
///     .await;
///     let mut res = Response::new();
///     match names {
///         Ok(names) => res.body(names.join("\n")),
///         Err(e) => res.status(500).body(e.to_string()),
///     };
///     res
/// }
/// ```
pub fn blocking<T, F>(f: F) -> Blocking<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let shared = Arc::new(Mutex::new(Shared {
        out: None,
        waker: None,
    }));
    let theirs = shared.clone();
    let run: Job = Box::new(move || {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let waker = {
            let mut s = theirs.lock().unwrap_or_else(|e| e.into_inner());
            s.out = Some(out);
            s.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    });
    Blocking {
        run: Some(run),
        shared,
    }
}

/// The future of [`blocking`].
///
/// See [`rt`](crate::rt)'s example.
#[must_use = "blocking work does nothing unless awaited"]
pub struct Blocking<T> {
    /// The closure, until it is queued.
    run: Option<Job>,
    shared: Arc<Mutex<Shared<T>>>,
}

impl<T> std::fmt::Debug for Blocking<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blocking")
            .field("queued", &self.run.is_none())
            .finish()
    }
}

impl<T: Send + 'static> Future for Blocking<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = &mut *self;
        let mut shared = this.shared.lock().unwrap_or_else(|e| e.into_inner());
        match shared.out.take() {
            Some(Ok(value)) => return Poll::Ready(value),
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => shared.waker = Some(cx.waker().clone()),
        }
        drop(shared);
        if let Some(run) = this.run.take() {
            if let Err(run) = submit(run, cx.waker()) {
                // The queue is full: tried again when a closure finishes.
                this.run = Some(run);
            }
        }
        Poll::Pending
    }
}

/// Queues `run` on the pool (started on first use), adding a thread when all are busy.
/// `Err` when the queue is full; `waker` is then woken when a closure finishes.
fn submit(run: Job, waker: &Waker) -> Result<(), Job> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let pool = pool.get_or_insert_with(|| {
            let (jobs, queue) = sync_channel(BLOCKING_QUEUE_MAX);
            Pool {
                jobs,
                queue: Arc::new(Mutex::new(queue)),
                threads: 0,
                busy: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
                waiting: Arc::new(Mutex::new(Vec::new())),
            }
        });
        let busy = pool.busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        match pool.jobs.try_send(run) {
            Ok(()) => {}
            Err(TrySendError::Full(run) | TrySendError::Disconnected(run)) => {
                pool.busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                let mut waiting = pool.waiting.lock().unwrap_or_else(|e| e.into_inner());
                if !waiting.iter().any(|w| w.will_wake(waker)) {
                    waiting.push(waker.clone());
                }
                return Err(run);
            }
        }
        if busy > pool.threads && pool.threads < BLOCKING_THREADS_MAX {
            let (queue, busy, waiting) =
                (pool.queue.clone(), pool.busy.clone(), pool.waiting.clone());
            // The pool's events (a closure's, a panic's) happen in the worker's span too.
            let span = crate::log::worker_span();
            let spawned = std::thread::Builder::new()
                .name("ringmaster-blocking".into())
                .spawn(move || {
                    let _worker = span.entered();
                    serve(&queue, &busy, &waiting)
                });
            if spawned.is_ok() {
                pool.threads += 1;
            }
        }
        Ok(())
    })
}

/// A pool thread: runs closures until the worker's process exits.
fn serve(
    queue: &Mutex<Receiver<Job>>,
    busy: &std::sync::atomic::AtomicUsize,
    waiting: &Mutex<Vec<Waker>>,
) {
    loop {
        // A closure's panic is caught inside it, so the lock is never poisoned by one.
        let job = match queue.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        job();
        busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        let woken = std::mem::take(&mut *waiting.lock().unwrap_or_else(|e| e.into_inner()));
        for waker in woken {
            waker.wake();
        }
    }
}
