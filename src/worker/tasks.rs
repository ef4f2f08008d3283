//! The worker's part of the async runtime ([`crate::rt`]): polling the futures that were
//! woken, handing each request future's answer to its connection, granting handler slots to
//! connections that wait for one, and carrying the futures' ring operations to the ring and
//! their completions back.
//!
//! A loop turn runs the woken futures first (at most [`POLLS_PER_TURN`]), then acts on the
//! connections, then pushes what the futures queued: all of a turn's submissions still go
//! out in its one `io_uring_enter`, which waits only when no future is ready to run.

use super::{Event, Worker};
use crate::log::log;
use crate::rt::{self, Outcome, TaskKey};
use crate::Serve;
use ringmaster_uring::{Completion, Op, Owned};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

/// Futures polled per loop turn at most, so that a storm of wakes cannot starve the ring:
/// the rest run next turn, which then does not wait.
const POLLS_PER_TURN: usize = 4096;
/// Bytes of one eventfd read.
const EVENTFD_BYTES: usize = 8;

/// The worker's runtime state besides the futures: the eventfd that wakes it from other
/// threads, and the connections waiting for a handler slot, in arrival order.
pub(super) struct Runtime {
    /// Written by wakes from other threads; read through the ring.
    wake_fd: OwnedFd,
    /// The buffer of its read, `None` while the read is in flight.
    wake_buf: Option<Vec<u8>>,
    /// Connections waiting for a handler slot, each once (marked in `queued`).
    room_queue: std::collections::VecDeque<u32>,
    queued: Vec<bool>,
}

impl Runtime {
    /// Installs the runtime on this (the worker's) thread: room for `requests` request
    /// futures and `connections` connections waiting for one.
    pub(super) fn install(requests: usize, connections: usize) -> Result<Runtime, String> {
        let cap = rt::Capacity {
            requests,
            spawned: rt::SPAWNED_MAX,
            producers: requests,
            conns: connections,
        };
        let wake_fd = rt::install(rt::OPS_MAX, cap)
            .map_err(|e| format!("the async runtime's eventfd: {e}"))?;
        Ok(Runtime {
            wake_fd,
            wake_buf: Some(Vec::with_capacity(EVENTFD_BYTES)),
            room_queue: std::collections::VecDeque::with_capacity(connections),
            queued: vec![false; connections],
        })
    }
}

impl<H: Serve> Worker<'_, H> {
    /// Arms the read of the wake eventfd.
    pub(super) fn arm_wake(&mut self) -> std::io::Result<()> {
        let buf = self.rt.wake_buf.take().expect("one eventfd read at a time");
        let op = Op::Read {
            fd: self.rt.wake_fd.as_raw_fd(),
            buf,
        };
        self.ring.push(op, Event::Wake)?;
        Ok(())
    }

    /// Another thread woke futures: they are queued to run, and the read is armed again.
    pub(super) fn on_wake(&mut self, c: Completion<Event>) -> std::io::Result<()> {
        let Owned::Buf(mut buf) = c.owned else {
            panic!("a read hands its buffer back")
        };
        buf.clear();
        self.rt.wake_buf = Some(buf);
        if c.result < 0 && c.result != -libc::EAGAIN {
            log!(
                "reading the wake eventfd: {}",
                std::io::Error::from_raw_os_error(-c.result)
            );
        }
        if rt::take_foreign() {
            // Some wakes were dropped at the inbox's bound: every future runs once.
            for task in 0..self.ctx.tasks.capacity() as u32 {
                rt::schedule(TaskKey::Request(task));
            }
            for task in 0..self.ctx.producers.capacity() as u32 {
                rt::schedule(TaskKey::Producer(task));
            }
            for task in 0..rt::SPAWNED_MAX as u32 {
                rt::schedule(TaskKey::Spawned(task));
            }
        }
        self.arm_wake()
    }

    /// A futures' ring operation completed: its future is woken.
    pub(super) fn on_rt(&mut self, slot: u32, c: Completion<Event>) {
        let outcome = Outcome {
            result: c.result,
            owned: c.owned,
        };
        rt::with(|rt| rt.ops.complete(slot, outcome));
    }

    /// Polls the futures that were woken, at most [`POLLS_PER_TURN`]; a request future's
    /// answer goes to its connection.
    pub(super) fn run_tasks(&mut self) {
        for _ in 0..POLLS_PER_TURN {
            let Some(key) = rt::next_ready() else {
                return;
            };
            match key {
                TaskKey::Request(task) => {
                    let exit = self.ctx.exit_on_panic;
                    if let Some((owner, answer)) = finished(&mut self.ctx.tasks, task, exit) {
                        if let Some(conn) = self.conns.get_mut(owner as usize) {
                            conn.on_answer(answer, &mut self.ctx);
                            self.touch(owner);
                        }
                    }
                }
                TaskKey::Spawned(task) => rt::run_spawned(task),
                TaskKey::Producer(task) => {
                    let exit = self.ctx.exit_on_panic;
                    if let Some((owner, result)) = finished(&mut self.ctx.producers, task, exit) {
                        if let Some(conn) = self.conns.get_mut(owner as usize) {
                            conn.on_produced(result, &mut self.ctx);
                            self.touch(owner);
                        }
                    }
                }
                TaskKey::Conn(slot) => {
                    if let Some(conn) = self.conns.get_mut(slot as usize) {
                        conn.on_stream_ready(&mut self.ctx);
                        self.touch(slot);
                    }
                }
            }
        }
    }

    /// Queues the connection in `slot` for a handler slot (once).
    pub(super) fn wait_for_room(&mut self, slot: u32) {
        let queued = &mut self.rt.queued[slot as usize];
        if !*queued {
            *queued = true;
            self.rt.room_queue.push_back(slot);
        }
    }

    /// Hands free handler slots to the connections that waited for one, in order.
    pub(super) fn grant_room(&mut self) {
        while self.ctx.tasks.has_room() {
            let Some(slot) = self.rt.room_queue.pop_front() else {
                return;
            };
            self.rt.queued[slot as usize] = false;
            // The slot may hold another connection by now: it is not waiting then.
            if let Some(conn) = self.conns.get_mut(slot as usize) {
                conn.on_room(&mut self.ctx);
                self.touch(slot);
            }
        }
    }

    /// Whether work is ready without waiting for the ring: woken futures, or free slots for
    /// connections that wait for one.
    pub(super) fn tasks_ready(&self) -> bool {
        rt::any_ready() || (self.ctx.tasks.has_room() && !self.rt.room_queue.is_empty())
    }

    /// The turn's one `io_uring_enter`: it does not wait when futures are ready to run, and
    /// waits no longer than the earliest timer.
    pub(super) fn submit_and_wait(&mut self) -> std::io::Result<()> {
        if self.tasks_ready() {
            self.ring.submit_and_wait(0)?;
            return Ok(());
        }
        let due = rt::with(|rt| match rt.timers.len() {
            0 => None,
            _ => rt.timers.next_due(Instant::now()),
        });
        match due {
            None => self.ring.submit_and_wait(1)?,
            Some(due) if due.is_zero() => self.ring.submit_and_wait(0)?,
            Some(due) => self.ring.submit_and_wait_timeout(1, due)?,
        };
        Ok(())
    }

    /// Wakes the futures whose timers are due at this turn's time.
    pub(super) fn fire_timers(&mut self) {
        let now = self.ctx.now;
        rt::with(|rt| {
            rt.timers.set_now(now);
            rt.timers.fire();
        });
    }

    /// Pushes the ring operations the futures queued this turn, and the cancels of those
    /// whose futures were dropped.
    pub(super) fn push_rt_ops(&mut self) -> std::io::Result<()> {
        let ring = &mut self.ring;
        rt::with(|rt| {
            while let Some((slot, op)) = rt.ops.pop_queued() {
                let id = ring.push(op, Event::Rt(slot))?;
                rt.ops.pushed(slot, id);
            }
            while let Some(target) = rt.ops.pop_cancel() {
                ring.push(Op::Cancel { target }, Event::Ignored)?;
            }
            if rt.ops.has_room() && rt.timers.len() < rt::TIMERS_MAX {
                rt.wake_room_waiters();
            }
            Ok(())
        })
    }
}

/// Polls `task`: when it finished (or panicked), the connection it answers and its outcome;
/// `None` while it waits. A panic ends the worker with `exit_on_panic`.
fn finished<F: std::future::Future>(
    tasks: &mut rt::Tasks<F>,
    task: u32,
    exit_on_panic: bool,
) -> Option<(u32, Result<F::Output, rt::Panicked>)> {
    let owner = tasks.owner(task);
    match tasks.poll(task) {
        Ok(None) => None,
        Ok(Some(out)) => Some((owner, Ok(out))),
        Err(panic) if exit_on_panic => std::panic::resume_unwind(panic.0),
        Err(panic) => Some((owner, Err(panic))),
    }
}
