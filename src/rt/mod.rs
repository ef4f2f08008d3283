//! The worker's runtime, for async handlers: futures run on the worker's one thread and
//! everything they wait on goes through the worker's own io_uring, which stays the worker's
//! one wait point (one `io_uring_enter` a loop turn, no epoll, no other thread).
//!
//! Use these from handler code (an [`AsyncHandler`](crate::AsyncHandler)'s future, or a task
//! it [`spawn`]s), on a worker. Called anywhere else they panic, saying so, but for
//! [`send_to_master`], which fails with [`SendError::NotAWorker`](crate::SendError::NotAWorker),
//! and [`blocking`], which starts a pool for whatever thread polls it. Futures of other
//! runtimes that need their runtime's reactor or timer (tokio's `sleep`, a tokio socket) do
//! not run here.
//!
//! - time: [`sleep`], [`timeout`];
//! - net: [`TcpStream`] (connect, read, write, shutdown, with deadlines);
//! - fs: [`fs::File`] (open, metadata, read at an offset), [`fs::Dir`] (a root that paths
//!   resolve beneath), [`fs::metadata`];
//! - tasks: [`spawn`] a task that outlives its request (bounded per worker);
//! - [`blocking`]: a closure that would block, on a small per-worker thread pool;
//! - IPC: [`send_to_master`], waiting while the master's pipe is full.
//!
//! ```no_run
//! use ringmaster::rt::{blocking, sleep, spawn, timeout, TcpStream};
//! use ringmaster::{OwnedRequest, Response, Server};
//! use std::time::Duration;
//!
//! let server = Server::new_async(|req: OwnedRequest| async move {
//!     let mut res = Response::new();
//!     // A backend over the ring, with a deadline on the whole exchange.
//!     let exchange = async {
//!         let mut up = TcpStream::connect("127.0.0.1:6379".parse().unwrap()).await?;
//!         up.write_all(b"PING\r\n").await?;
//!         let mut buf = [0u8; 64];
//!         let n = up.read(&mut buf).await?;
//!         Ok::<_, std::io::Error>(buf[..n].to_vec())
//!     };
//!     match timeout(Duration::from_millis(200), exchange).await {
//!         Ok(Ok(answer)) => res.body(answer),
//!         Ok(Err(e)) => res.status(502).body(e.to_string()),
//!         Err(_) => res.status(504).body("the backend is slow\n"),
//!     };
//!     // Work that would block the worker's loop goes to its small thread pool.
//!     let digest = blocking(|| std::fs::read("/etc/hostname").map(|b| b.len())).await;
//!     // A task that outlives the request (bounded per worker), and a timer.
//!     let path = req.path().to_string();
//!     let _ = spawn(async move {
//!         sleep(Duration::from_secs(1)).await;
//!         tracing::info!(%path, ?digest, "a second after the answer");
//!     });
//!     res
//! });
//! std::process::exit(ringmaster::cli::run(ringmaster::app!(), server));
//! ```
//!
//! Every wait ends: a future whose client goes away is dropped, and what it waited on is
//! cancelled (its memory stays the ring's until the kernel lets go); a handler's future
//! past the handler timeout is dropped too. Every table here is bounded: [`OPS_MAX`] ring
//! operations, [`TIMERS_MAX`] timers, [`SPAWNED_MAX`] spawned tasks,
//! [`BLOCKING_THREADS_MAX`] threads and [`BLOCKING_QUEUE_MAX`] queued closures; at a bound
//! a future waits for room, it is never queued without limit.

mod blocking;
mod exec;
pub mod fs;
mod net;
mod op;
mod ops;
pub(crate) mod splice;
mod time;

pub use blocking::{blocking, Blocking, BLOCKING_QUEUE_MAX, BLOCKING_THREADS_MAX};
use exec::poll_spawned;
pub(crate) use exec::{any_ready, install as install_executor, next_ready, take_foreign};
pub(crate) use exec::{schedule, waker, Capacity, Panicked, Spawned, Started, TaskKey, Tasks};
pub use net::{TcpStream, IO_BYTES_MAX};
pub(crate) use ops::{OpTable, Outcome, Ticket};
pub use splice::{SPLICE_BYTES_MIN, SPLICE_PIPES_MAX, SPLICE_PIPE_BYTES};
pub(crate) use time::Timers;
pub use time::{sleep, timeout, Elapsed, Sleep, Timeout, TIMERS_MAX};

use std::cell::RefCell;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::task::Waker;

/// The state every future of a worker shares: the ring operations they wait on, the spawned
/// tasks, and who waits for room in either.
pub(crate) struct Runtime {
    pub(crate) ops: OpTable,
    pub(crate) timers: Timers,
    pub(crate) spawned: Spawned,
    /// Futures waiting for a free operation slot, woken (all) when one frees. At most one
    /// entry per task, since a task waits on one thing at a time.
    room_waiters: Vec<Waker>,
}

thread_local! {
    /// The runtime of the worker whose thread this is; `None` on any other thread.
    static RT: RefCell<Option<Runtime>> = const { RefCell::new(None) };
}

/// Sets up this thread as a worker's runtime: room for `ops` ring operations of futures
/// and `cap` tasks of each kind. Returns the eventfd that wakes from other threads write,
/// for the worker's ring to read.
pub(crate) fn install(ops: usize, cap: Capacity) -> std::io::Result<OwnedFd> {
    let eventfd = install_executor(cap)?;
    let (requests, spawned) = (cap.requests + cap.producers, cap.spawned);
    RT.with(|rt| {
        *rt.borrow_mut() = Some(Runtime {
            ops: OpTable::new(ops),
            timers: Timers::new(TIMERS_MAX),
            spawned: Spawned::new(spawned),
            room_waiters: Vec::with_capacity(requests + spawned),
        })
    });
    Ok(eventfd)
}

/// Runs `f` on this worker's runtime.
///
/// # Panics
/// Outside a worker: `ringmaster::rt` is for handler code, which runs on a worker.
pub(crate) fn with<R>(f: impl FnOnce(&mut Runtime) -> R) -> R {
    RT.with(|rt| {
        let mut rt = rt.borrow_mut();
        let rt = rt.as_mut().expect(
            "ringmaster::rt used off a worker's thread (outside a worker, or on a thread the \
                 handler started, or in rt::blocking): call it from handler code on the worker's \
                 own thread",
        );
        f(rt)
    })
}

/// Like [`with`], but does nothing outside a worker (or re-entered): for destructors, which
/// must not panic.
pub(crate) fn try_with(f: impl FnOnce(&mut Runtime)) {
    RT.with(|rt| {
        if let Ok(mut rt) = rt.try_borrow_mut() {
            if let Some(rt) = rt.as_mut() {
                f(rt);
            }
        }
    });
}

impl Runtime {
    /// Records `waker` to be woken when an operation slot or a timer frees.
    pub(crate) fn wait_for_room(&mut self, waker: &Waker) {
        if !self.room_waiters.iter().any(|w| w.will_wake(waker)) {
            self.room_waiters.push(waker.clone());
        }
    }

    /// Wakes every future that waited for room (a slot freed).
    pub(crate) fn wake_room_waiters(&mut self) {
        for waker in self.room_waiters.drain(..) {
            waker.wake();
        }
    }
}

/// Polls spawned task `i` when it is there (a stale wake finds nothing), freeing its slot
/// when it is done. The task is out of the table while it runs, so that it may itself use
/// the runtime.
pub(crate) fn run_spawned(i: u32) {
    let Some(mut task) = with(|rt| rt.spawned.take(i)) else {
        return;
    };
    if poll_spawned(&mut task, i) {
        drop(task);
        with(|rt| rt.spawned.free(i));
    } else {
        with(|rt| rt.spawned.put_back(i, task));
    }
}

/// Sends `bytes` to the master, from a worker (Node's `process.send`), as
/// [`crate::send_to_master`] does, but waiting (a ring write) while the master's pipe is
/// full instead of failing with [`SendError::Full`](crate::SendError::Full).
///
/// # Examples
///
/// ```
/// use ringmaster::{rt, OwnedRequest, Response};
///
/// // Tells the master of each upload, waiting while its pipe is full.
/// async fn upload(req: OwnedRequest) -> Response {
///     let note = format!("upload of {} bytes", req.body().len());
///     let mut res = Response::new();
///     if let Err(e) = rt::send_to_master(note.as_bytes()).await {
///         res.status(500).body(e.to_string());
///     }
///     res
/// }
/// ```
pub async fn send_to_master(bytes: &[u8]) -> Result<(), crate::SendError> {
    use crate::ipc::{self, Message};
    use crate::SendError;
    let Some(fd) = ipc::to_master() else {
        return Err(SendError::NotAWorker);
    };
    let mut frame = Vec::with_capacity(ipc::FRAME_BYTES_MAX);
    ipc::encode(&Message::User(bytes.to_vec()), &mut frame).map_err(|_| SendError::TooLarge)?;
    let len = frame.len();
    let op = ringmaster_uring::Op::Write {
        fd,
        buf: frame,
        offset: u64::MAX,
    };
    // A frame fits PIPE_BUF: the pipe takes it whole or waits for room.
    match op::RingOp::new(op).await.result {
        n if n >= 0 && n as usize == len => Ok(()),
        _ => Err(SendError::Gone),
    }
}

/// Why [`spawn`] refused a task.
///
/// See [`rt`](crate::rt)'s example, and [`spawn`]'s, which answers `503` with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpawnError;

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the worker's spawned tasks are at their bound; try again later")
    }
}

impl std::error::Error for SpawnError {}

/// Runs `task` on this worker until it finishes, whatever becomes of the request that
/// spawned it (Node: work left running after the response). At most
/// [`SPAWNED_MAX`] such tasks run per worker; past it the task is refused, not queued. A
/// panic in a task ends that task only (it is logged).
///
/// # Panics
/// Outside a worker.
///
/// # Examples
///
/// ```
/// use ringmaster::rt::{sleep, spawn};
/// use ringmaster::{OwnedRequest, Response};
/// use std::time::Duration;
///
/// // Answers `202` at once and leaves the slow part running on the worker.
/// async fn enqueue(req: OwnedRequest) -> Response {
///     let job = req.body().to_vec();
///     let mut res = Response::new();
///     let task = async move {
///         sleep(Duration::from_millis(100)).await;
///         tracing::info!(bytes = job.len(), "job done");
///     };
///     match spawn(task) {
///         Ok(()) => res.status(202),
///         // At SPAWNED_MAX: the task is refused, not queued.
///         Err(e) => res.status(503).body(e.to_string()),
///     };
///     res
/// }
/// ```
pub fn spawn(task: impl Future<Output = ()> + 'static) -> Result<(), SpawnError> {
    let i = with(|rt| rt.spawned.add(Box::pin(task))).map_err(|_| SpawnError)?;
    schedule(TaskKey::Spawned(i));
    Ok(())
}

/// The most tasks [`spawn`] keeps running at once per worker.
///
/// See [`spawn`]'s example.
pub const SPAWNED_MAX: usize = 1024;

/// The most ring operations a worker's futures may have at once (a connect, a read, an
/// open...; sleeps are timers, bounded by [`TIMERS_MAX`]): past it a future waits for one to
/// end.
///
/// See [`rt`](crate::rt)'s example: its connect, write and read are one operation each.
pub const OPS_MAX: usize = 4096;

/// `buf` with spare capacity for exactly `max` bytes, so that a read into it takes no more
/// (a larger spare is given up; what `buf` holds is kept).
pub(crate) fn room_for(mut buf: Vec<u8>, max: usize) -> Vec<u8> {
    assert!(max > 0, "a read of nothing");
    let spare = buf.capacity() - buf.len();
    if spare > max {
        let mut exact = Vec::with_capacity(buf.len() + max);
        exact.extend_from_slice(&buf);
        return exact;
    }
    buf.reserve_exact(max);
    buf
}

#[cfg(test)]
mod room_tests {
    use super::room_for;

    #[test]
    fn room_for_gives_exactly_the_room_asked_and_keeps_what_is_held() {
        for (held, cap, max) in [(0, 0, 10), (3, 5, 10), (3, 100, 10), (0, 10, 10)] {
            let mut buf = Vec::with_capacity(cap);
            buf.extend(std::iter::repeat_n(7u8, held));
            let buf = room_for(buf, max);
            assert_eq!(buf.len(), held);
            assert!(buf.iter().all(|&b| b == 7));
            assert_eq!(
                buf.capacity() - buf.len(),
                max,
                "held {held}, capacity {cap}"
            );
        }
    }
}
