//! The worker's executor: request futures in a fixed table of slots (pinned in place, no
//! allocation per request), spawned tasks in a bounded table, a ready queue the wakers fill,
//! and wakes from other threads through a bounded inbox and an eventfd the ring reads.
//!
//! A waker's data is its task's key, not a pointer: cloning and dropping it cost nothing,
//! and waking a task that is gone (its slot freed or reused) polls nothing or polls a
//! future spuriously, which futures allow.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

/// A task's key: its table and its index there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TaskKey {
    /// A request's future, in the worker's request table.
    Request(u32),
    /// A spawned task.
    Spawned(u32),
    /// The producer of a streamed response body.
    Producer(u32),
    /// A connection (not a future): a streamed body it moves has bytes or room for it.
    Conn(u32),
}

/// The top two bits of a packed key say its table.
const KIND_SHIFT: u32 = usize::BITS - 2;

impl TaskKey {
    fn pack(self) -> usize {
        let (kind, i) = match self {
            TaskKey::Request(i) => (0, i),
            TaskKey::Spawned(i) => (1, i),
            TaskKey::Producer(i) => (2, i),
            TaskKey::Conn(i) => (3, i),
        };
        (kind << KIND_SHIFT) | i as usize
    }

    fn unpack(packed: usize) -> TaskKey {
        let i = (packed & ((1 << KIND_SHIFT) - 1)) as u32;
        match packed >> KIND_SHIFT {
            0 => TaskKey::Request(i),
            1 => TaskKey::Spawned(i),
            2 => TaskKey::Producer(i),
            _ => TaskKey::Conn(i),
        }
    }
}

/// The most wakes from other threads waiting to be delivered. Past it the inbox records only
/// that it overflowed, and the worker then polls every task once: a spurious poll is
/// allowed, a lost wake is not.
const FOREIGN_WAKES_MAX: usize = 4096;

/// Tasks woken and not yet polled, each once: the queue never holds more entries than
/// there are keys.
#[derive(Debug, Default)]
pub(crate) struct Ready {
    queue: VecDeque<TaskKey>,
    /// Whether each key is queued, by table: request, spawned, producer, connection.
    queued: [Vec<bool>; 4],
}

impl Ready {
    fn flag(&mut self, key: TaskKey) -> Option<&mut bool> {
        let (table, i) = match key {
            TaskKey::Request(i) => (0, i),
            TaskKey::Spawned(i) => (1, i),
            TaskKey::Producer(i) => (2, i),
            TaskKey::Conn(i) => (3, i),
        };
        self.queued[table].get_mut(i as usize)
    }

    fn push(&mut self, key: TaskKey) {
        if let Some(flag) = self.flag(key) {
            if !*flag {
                *flag = true;
                self.queue.push_back(key);
            }
        }
    }

    fn pop(&mut self) -> Option<TaskKey> {
        let key = self.queue.pop_front()?;
        if let Some(flag) = self.flag(key) {
            *flag = false;
        }
        Some(key)
    }
}

thread_local! {
    /// The ready queue of the worker whose thread this is; `None` on any other thread.
    static READY: RefCell<Option<Ready>> = const { RefCell::new(None) };
}

/// Wakes from other threads (the blocking pool, a user's thread), delivered by the worker.
static FOREIGN: Mutex<Foreign> = Mutex::new(Foreign {
    keys: Vec::new(),
    overflowed: false,
});

/// The inbox of wakes from other threads.
struct Foreign {
    keys: Vec<usize>,
    /// A wake was dropped at the bound: every task is to be polled.
    overflowed: bool,
}
/// The eventfd a wake from another thread writes, so that the worker's ring wakes up.
static FOREIGN_EVENTFD: AtomicI32 = AtomicI32::new(-1);

/// How many keys of each kind a worker has.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Capacity {
    pub(crate) requests: usize,
    pub(crate) spawned: usize,
    pub(crate) producers: usize,
    pub(crate) conns: usize,
}

/// Sets up this thread as a worker's with room for `cap` tasks of each kind; returns the
/// eventfd that wakes from other threads write (read by the ring).
pub(crate) fn install(cap: Capacity) -> std::io::Result<OwnedFd> {
    READY.with(|ready| {
        *ready.borrow_mut() = Some(Ready {
            queue: VecDeque::with_capacity(cap.requests + cap.spawned + cap.producers),
            queued: [
                vec![false; cap.requests],
                vec![false; cap.spawned],
                vec![false; cap.producers],
                vec![false; cap.conns],
            ],
        })
    });
    let fd = nix::sys::eventfd::EventFd::from_flags(
        nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
    )?;
    let fd = OwnedFd::from(fd);
    FOREIGN_EVENTFD.store(fd.as_raw_fd(), Ordering::Relaxed);
    Ok(fd)
}

/// Schedules `key` to be polled.
fn wake(packed: usize) {
    let local = READY.with(|ready| match ready.try_borrow_mut() {
        Ok(mut ready) => match ready.as_mut() {
            Some(ready) => {
                ready.push(TaskKey::unpack(packed));
                true
            }
            None => false,
        },
        // Only the executor borrows it, never across a poll: unreachable on this thread.
        Err(_) => false,
    });
    if !local {
        wake_from_elsewhere(packed);
    }
}

/// A wake from a thread other than the worker's: queued in the inbox (see
/// [`FOREIGN_WAKES_MAX`]) and signalled through the eventfd.
fn wake_from_elsewhere(packed: usize) {
    if let Ok(mut inbox) = FOREIGN.lock() {
        if inbox.keys.len() < FOREIGN_WAKES_MAX {
            inbox.keys.push(packed);
        } else {
            inbox.overflowed = true;
        }
    }
    let fd: RawFd = FOREIGN_EVENTFD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: the eventfd stays open for the worker's life (it owns it until it exits).
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        // An 8-byte write of 1; a full counter (EAGAIN) already wakes the ring.
        let _ = nix::unistd::write(fd, &1u64.to_ne_bytes());
    }
}

/// Moves wakes from other threads into the ready queue (after the eventfd was read).
/// Returns whether the inbox overflowed, so that every task is to be woken.
pub(crate) fn take_foreign() -> bool {
    let (woken, overflowed) = match FOREIGN.lock() {
        Ok(mut inbox) => (
            std::mem::take(&mut inbox.keys),
            std::mem::take(&mut inbox.overflowed),
        ),
        Err(_) => return false,
    };
    for packed in woken {
        wake(packed);
    }
    overflowed
}

/// Schedules task `key` to be polled (from the worker's thread).
pub(crate) fn schedule(key: TaskKey) {
    wake(key.pack());
}

/// The next task to poll, if any.
pub(crate) fn next_ready() -> Option<TaskKey> {
    READY.with(|ready| ready.borrow_mut().as_mut().and_then(Ready::pop))
}

/// Whether a task waits to be polled.
pub(crate) fn any_ready() -> bool {
    READY.with(|ready| ready.borrow().as_ref().is_some_and(|r| !r.queue.is_empty()))
}

/// The waker of `key`.
pub(crate) fn waker(key: TaskKey) -> Waker {
    // SAFETY: the vtable's functions treat the data as a packed key, never as a pointer,
    // so any value is valid and nothing is owned.
    unsafe { Waker::from_raw(RawWaker::new(key.pack() as *const (), &VTABLE)) }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake_owned, wake_by_ref, drop_waker);

unsafe fn clone(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

unsafe fn wake_owned(data: *const ()) {
    wake(data as usize);
}

unsafe fn wake_by_ref(data: *const ()) {
    wake(data as usize);
}

unsafe fn drop_waker(_: *const ()) {}

/// Why a task ended without an answer: it panicked, with this payload (the panic hook
/// logged it).
#[derive(Debug)]
pub(crate) struct Panicked(pub(crate) Box<dyn std::any::Any + Send>);

/// Polls `fut` as task `key`, catching a panic.
fn poll_caught<F: Future + ?Sized>(
    fut: Pin<&mut F>,
    key: TaskKey,
) -> Result<Poll<F::Output>, Panicked> {
    let mut done = None;
    poll_caught_into(fut, key, &mut done).map(|ready| match ready {
        true => Poll::Ready(done.take().expect("set when ready")),
        false => Poll::Pending,
    })
}

/// Polls `fut` as task `key`, catching a panic; its output, when ready, is written into
/// `out` (in place: no move through the layers above) and `true` returned.
#[inline]
fn poll_caught_into<F: Future + ?Sized>(
    fut: Pin<&mut F>,
    key: TaskKey,
    out: &mut Option<F::Output>,
) -> Result<bool, Panicked> {
    let waker = waker(key);
    let mut cx = Context::from_waker(&waker);
    catch_unwind(AssertUnwindSafe(|| match fut.poll(&mut cx) {
        Poll::Ready(v) => {
            *out = Some(v);
            true
        }
        Poll::Pending => false,
    }))
    .map_err(Panicked)
}

/// The request futures of a worker (or its body producers): a fixed table made at start,
/// each future pinned in its slot and dropped there.
pub(crate) struct Tasks<F> {
    /// INVARIANT: the boxed slice is never reallocated or moved from, so a future stored
    /// in a slot stays at one address until it is dropped in place.
    slots: Box<[Option<F>]>,
    /// The connection (its table slot) each task answers.
    owners: Box<[u32]>,
    free: Vec<u32>,
    /// The key of each slot's task, for its waker.
    kind: fn(u32) -> TaskKey,
}

impl<F: Future> Tasks<F> {
    /// Room for `capacity` futures at once (`--handlers-max`), woken as `kind` keys.
    pub(crate) fn new(capacity: usize, kind: fn(u32) -> TaskKey) -> Tasks<F> {
        Tasks {
            slots: (0..capacity).map(|_| None).collect(),
            owners: vec![0; capacity].into_boxed_slice(),
            free: (0..capacity as u32).rev().collect(),
            kind,
        }
    }

    /// Whether a new task would find a slot.
    pub(crate) fn has_room(&self) -> bool {
        !self.free.is_empty()
    }

    /// Room for this many futures at once.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Futures in flight.
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Starts `fut` for the connection in `owner` and polls it once: `Ok(Ready)` when it
    /// answered at once (nothing is kept), `Ok(Pending(task))` when it waits.
    ///
    /// # Panics
    /// When there is no room: check [`Tasks::has_room`] first.
    pub(crate) fn start(&mut self, fut: F, owner: u32) -> Result<Started<F::Output>, Panicked> {
        self.start_with(owner, || fut)
    }

    /// Like [`Tasks::start`], with the future made by `make` right into its slot (a large
    /// future is not moved again) and a panic in `make` caught as one in a poll.
    pub(crate) fn start_with(
        &mut self,
        owner: u32,
        make: impl FnOnce() -> F,
    ) -> Result<Started<F::Output>, Panicked> {
        let mut out = None;
        match self.start_into(owner, make, &mut out)? {
            None => Ok(Started::Ready(out.expect("set when done"))),
            Some(task) => Ok(Started::Pending(task)),
        }
    }

    /// Like [`Tasks::start_with`], writing the output into `out` when the task finished at
    /// its first poll (and returning `None`); else its slot.
    #[inline]
    pub(crate) fn start_into(
        &mut self,
        owner: u32,
        make: impl FnOnce() -> F,
        out: &mut Option<F::Output>,
    ) -> Result<Option<u32>, Panicked> {
        let task = self.free.pop().expect("a slot checked free");
        let slot = &mut self.slots[task as usize];
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| *slot = Some(make()))) {
            self.free.push(task);
            return Err(Panicked(panic));
        }
        self.owners[task as usize] = owner;
        match self.poll_into(task, out)? {
            true => Ok(None),
            false => Ok(Some(task)),
        }
    }

    /// Polls task `task`: its response when it finished (its slot freed), `None` while it
    /// waits or when the slot is empty (a stale wake); an error when it panicked (dropped).
    pub(crate) fn poll(&mut self, task: u32) -> Result<Option<F::Output>, Panicked> {
        let mut out = None;
        self.poll_into(task, &mut out)?;
        Ok(out)
    }

    /// Like [`Tasks::poll`], writing the output into `out` when the task finished (and
    /// returning `true`).
    #[inline]
    pub(crate) fn poll_into(
        &mut self,
        task: u32,
        out: &mut Option<F::Output>,
    ) -> Result<bool, Panicked> {
        let slot = &mut self.slots[task as usize];
        if slot.is_none() {
            return Ok(false);
        }
        // SAFETY: the slot never moves (see the INVARIANT on `slots`), and the future in it
        // is dropped in place (`Pin::set`), never moved out.
        let mut pinned = unsafe { Pin::new_unchecked(slot) };
        let fut = pinned.as_mut().as_pin_mut().expect("checked above");
        match poll_caught_into(fut, (self.kind)(task), out) {
            Ok(false) => Ok(false),
            Ok(true) => {
                self.end(task);
                Ok(true)
            }
            Err(panicked) => {
                self.end(task);
                Err(panicked)
            }
        }
    }

    /// The connection task `task` answers.
    pub(crate) fn owner(&self, task: u32) -> u32 {
        self.owners[task as usize]
    }

    /// Drops task `task`'s future in place (its ring operations are cancelled as their
    /// handles drop) and frees its slot.
    pub(crate) fn end(&mut self, task: u32) {
        let slot = &mut self.slots[task as usize];
        if slot.is_none() {
            return;
        }
        // SAFETY: as in `poll`: dropped in place, never moved.
        let pinned = unsafe { Pin::new_unchecked(slot) };
        // A future whose drop panics is a bug of its own; the slot is freed either way.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let mut pinned = pinned;
            pinned.set(None);
        }));
        if self.slots[task as usize].is_some() {
            // The drop panicked half-way: forget what is left rather than drop it again.
            std::mem::forget(self.slots[task as usize].take());
        }
        self.free.push(task);
    }
}

/// What starting a task gave: its output at once, or its slot while it waits.
pub(crate) enum Started<T> {
    Ready(T),
    Pending(u32),
}

/// The spawned tasks of a worker: boxed (their types vary), bounded.
pub(crate) struct Spawned {
    tasks: Vec<Option<Pin<Box<dyn Future<Output = ()>>>>>,
    free: Vec<u32>,
}

impl Spawned {
    pub(crate) fn new(capacity: usize) -> Spawned {
        Spawned {
            tasks: (0..capacity).map(|_| None).collect(),
            free: (0..capacity as u32).rev().collect(),
        }
    }

    /// Adds a task; `Err(task)` when the table is full.
    pub(crate) fn add(
        &mut self,
        task: Pin<Box<dyn Future<Output = ()>>>,
    ) -> Result<u32, Pin<Box<dyn Future<Output = ()>>>> {
        let Some(i) = self.free.pop() else {
            return Err(task);
        };
        self.tasks[i as usize] = Some(task);
        Ok(i)
    }

    /// Takes task `i` out to poll it (so that no borrow is held across the poll).
    pub(crate) fn take(&mut self, i: u32) -> Option<Pin<Box<dyn Future<Output = ()>>>> {
        self.tasks.get_mut(i as usize).and_then(Option::take)
    }

    /// Puts task `i` back after a poll that left it pending.
    pub(crate) fn put_back(&mut self, i: u32, task: Pin<Box<dyn Future<Output = ()>>>) {
        self.tasks[i as usize] = Some(task);
    }

    /// Frees slot `i` (its task finished or panicked).
    pub(crate) fn free(&mut self, i: u32) {
        self.free.push(i);
    }

    /// Spawned tasks alive.
    pub(crate) fn len(&self) -> usize {
        self.tasks.len() - self.free.len()
    }
}

/// Polls a spawned task taken out of its table; `true` when it is done (or panicked).
pub(crate) fn poll_spawned(task: &mut Pin<Box<dyn Future<Output = ()>>>, i: u32) -> bool {
    !matches!(
        poll_caught(task.as_mut(), TaskKey::Spawned(i)),
        Ok(Poll::Pending)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_pack_and_unpack() {
        for key in [
            TaskKey::Request(0),
            TaskKey::Request(u32::MAX >> 2),
            TaskKey::Spawned(0),
            TaskKey::Spawned(77),
            TaskKey::Producer(5),
            TaskKey::Conn(u32::MAX >> 2),
        ] {
            assert_eq!(TaskKey::unpack(key.pack()), key);
        }
    }
}
