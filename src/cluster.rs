//! The cluster API: what the master tells you about its workers, and the messages both sides
//! exchange. The counterpart of Node's `cluster` module.
//!
//! The table of Node counterparts is in the crate's documentation.
//!
//! Messages are bytes (at most [`USER_BYTES_MAX`](crate::ipc::USER_BYTES_MAX) each), not
//! JSON: serialize as you like. Delivery is in order per direction and never blocks either
//! side: when the pipe is full, sending fails with [`SendError::Full`].

use crate::ipc::{self, Message};
use std::os::fd::BorrowedFd;

/// A worker as the master sees it (each hook's argument: see
/// [`Server::on_fork`](crate::Server::on_fork)'s example).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Its slot, `0..workers`; a respawned or reloaded worker keeps the slot.
    pub slot: u32,
    /// Its process id.
    pub pid: u32,
    /// The CPU it is pinned to; `None` when workers are not pinned
    /// ([`CpuAffinity::Unpinned`](crate::CpuAffinity::Unpinned)).
    pub cpu: Option<usize>,
}

/// How a worker ended.
///
/// See [`Server::on_fork`](crate::Server::on_fork)'s example (the hooks and IPC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// It exited with this code (0 after a graceful drain).
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

pub(crate) use crate::ipc::write_frame;
pub use crate::ipc::SendError;

/// Sends `bytes` to the master, from a worker (Node's `process.send`). The master's
/// [`Server::on_message`](crate::Server::on_message) hook receives them.
///
/// # Examples
///
/// A handler that asks the master to flush a shared cache; outside a worker there is no
/// master to send to:
///
/// ```
/// use ringmaster::{send_to_master, Request, Response, SendError};
///
/// fn admin(_req: &Request<'_>, res: &mut Response) {
///     match send_to_master(b"flush cache") {
///         Ok(()) => res.status(202).body("flush requested\n"),
///         Err(SendError::Full) => res.status(503).body("the master is busy; retry\n"),
///         Err(e) => res.status(500).body(format!("{e}\n")),
///     };
/// }
///
/// assert_eq!(send_to_master(b"flush cache"), Err(SendError::NotAWorker));
/// ```
pub fn send_to_master(bytes: &[u8]) -> Result<(), SendError> {
    let Some(fd) = ipc::to_master() else {
        return Err(SendError::NotAWorker);
    };
    if bytes.len() > ipc::USER_BYTES_MAX {
        return Err(SendError::TooLarge);
    }
    // SAFETY: `fd` is the worker's pipe to the master, open for the worker's whole life
    // (the worker never closes it; it is set once after fork).
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    write_frame(fd, &Message::User(bytes.to_vec()))
}

/// The master's view of its running workers, handed to every hook: send to one worker or
/// to all. [`Server::on_fork`](crate::Server::on_fork)'s example uses it.
pub struct Cluster<'a> {
    pub(crate) workers: &'a [(WorkerInfo, BorrowedFd<'a>)],
}

impl Cluster<'_> {
    /// The workers that are ready, by slot.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{HelloWorld, Server};
    ///
    /// let server = Server::new(HelloWorld).on_online(|cluster, worker| {
    ///     let ready: Vec<u32> = cluster.workers().map(|w| w.slot).collect();
    ///     eprintln!("slot {} is up; ready: {ready:?}", worker.slot);
    /// });
    /// // Then: `server.run()`.
    /// ```
    pub fn workers(&self) -> impl Iterator<Item = WorkerInfo> + '_ {
        self.workers.iter().map(|(info, _)| *info)
    }

    /// Sends `bytes` to the worker of `slot` (Node's `worker.send`); its
    /// [`Handler::on_message`](crate::Handler::on_message) receives them.
    ///
    /// # Examples
    ///
    /// Telling each worker, once it is ready, which feature flags are on:
    ///
    /// ```
    /// use ringmaster::{HelloWorld, SendError, Server};
    ///
    /// let server = Server::new(HelloWorld).on_online(|cluster, worker| {
    ///     match cluster.send(worker.slot, b"flags: new-checkout") {
    ///         Ok(()) => {}
    ///         Err(SendError::Gone) => eprintln!("slot {} exited already", worker.slot),
    ///         Err(e) => eprintln!("slot {}: {e}", worker.slot),
    ///     }
    /// });
    /// // Then: `server.run()`.
    /// ```
    pub fn send(&self, slot: u32, bytes: &[u8]) -> Result<(), SendError> {
        let (_, fd) = self
            .workers
            .iter()
            .find(|(info, _)| info.slot == slot)
            .ok_or(SendError::Gone)?;
        write_frame(*fd, &Message::User(bytes.to_vec()))
    }

    /// Sends `bytes` to every ready worker; returns how many it reached.
    ///
    /// # Examples
    ///
    /// Telling the other workers that one exited:
    ///
    /// ```
    /// use ringmaster::{HelloWorld, Server};
    ///
    /// let server = Server::new(HelloWorld).on_exit(|cluster, worker, exit| {
    ///     let told = cluster.broadcast(format!("slot {} exited: {exit:?}", worker.slot).as_bytes());
    ///     eprintln!("told {told} workers");
    /// });
    /// // Then: `server.run()`.
    /// ```
    pub fn broadcast(&self, bytes: &[u8]) -> usize {
        self.workers
            .iter()
            .filter(|(_, fd)| write_frame(*fd, &Message::User(bytes.to_vec())).is_ok())
            .count()
    }
}

type Hook<A> = Box<dyn FnMut(&Cluster<'_>, A)>;
type MessageHook = Box<dyn FnMut(&Cluster<'_>, WorkerInfo, &[u8])>;

/// The master-side hooks a [`Server`](crate::Server) was given.
#[derive(Default)]
pub(crate) struct Hooks {
    pub(crate) fork: Option<Hook<WorkerInfo>>,
    pub(crate) online: Option<Hook<WorkerInfo>>,
    pub(crate) exit: Option<Hook<(WorkerInfo, Exit)>>,
    pub(crate) message: Option<MessageHook>,
}
