//! The master's ends of each worker's pipes: owns the descriptors and the bytes read that do
//! not make a whole frame yet. Reads frames, and sends them without ever blocking the master.
//! Kept beside the supervisor's worker records, by pid, so that those stay plain values.

use crate::cluster;
use crate::ipc::{self, Message};
use crate::log::log;
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::fd::{AsFd, OwnedFd};

/// Bytes read from a worker's pipe at once.
const PIPE_READ_BYTES: usize = ipc::FRAME_BYTES_MAX;

/// One worker's pipes.
pub(super) struct Pipes {
    pub(super) pid: Pid,
    /// Its slot, for log lines.
    slot: u32,
    /// Master → worker.
    pub(super) to_worker: OwnedFd,
    /// Worker → master; `None` once the worker closed it.
    pub(super) from_worker: Option<OwnedFd>,
    /// Bytes read from the worker that do not make a whole frame yet.
    pending: Vec<u8>,
}

impl Pipes {
    pub(super) fn new(pid: Pid, slot: u32, to_worker: OwnedFd, from_worker: OwnedFd) -> Pipes {
        Pipes {
            pid,
            slot,
            to_worker,
            from_worker: Some(from_worker),
            pending: Vec::with_capacity(2 * PIPE_READ_BYTES),
        }
    }

    /// Reads what the worker sent and returns its whole frames. A worker that writes
    /// garbage is killed (its pipe can no longer be trusted); its exit follows.
    pub(super) fn read(&mut self) -> Vec<Message> {
        let Some(fd) = self.from_worker.as_ref() else {
            return Vec::new();
        };
        let mut buf = [0u8; PIPE_READ_BYTES];
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => {
                // The worker closed its end (it is exiting); SIGCHLD follows.
                self.from_worker = None;
                return Vec::new();
            }
            Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            Err(Errno::EAGAIN | Errno::EINTR) => return Vec::new(),
            Err(e) => {
                log!("worker {}: reading its pipe: {e}", self.slot);
                self.from_worker = None;
                return Vec::new();
            }
        }
        let (mut used, mut messages) = (0, Vec::new());
        loop {
            match ipc::decode(&self.pending[used..]) {
                Ok(Some((msg, len))) => {
                    used += len;
                    messages.push(msg);
                }
                Ok(None) => break,
                Err(e) if e.is_skippable() => {
                    // Whole, just not understood: a worker of another build. Read on.
                    crate::log::log_limited!(
                        "worker {}: a message this build does not read ({e}); skipped",
                        self.slot
                    );
                    used += ipc::frame_len(&self.pending[used..]).expect("a whole frame");
                }
                Err(e) => {
                    log!(
                        "worker {}: garbage on its pipe ({e}); killing it",
                        self.slot
                    );
                    // ESRCH means it is already gone; the SIGCHLD will tell.
                    let _ = kill(self.pid, Signal::SIGKILL);
                    self.from_worker = None;
                    return Vec::new();
                }
            }
        }
        self.pending.drain(..used);
        messages
    }

    /// Sends `msg` without blocking: if the pipe is full, the worker is not reading, and it
    /// will meet its deadline.
    pub(super) fn tell(&self, msg: &Message) {
        if let Err(e) = cluster::write_frame(self.to_worker.as_fd(), msg) {
            log!(
                "message to worker {} (pid {}) not sent: {e}",
                self.slot,
                self.pid
            );
        }
    }
}
