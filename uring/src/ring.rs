//! The ring: set-up with fallbacks, the push sites (one entry, or two linked), one enter per loop turn, reaping.

use crate::bufring::BufRing;
use crate::completion::Completion;
use crate::inflight::{InFlight, Lent, OpId, Slot};
use crate::op::Op;
use io_uring::{cqueue, squeue, IoUring};
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// The most submission queue entries a ring may have (`IORING_MAX_ENTRIES`).
pub const SQ_ENTRIES_MAX: u32 = 32768;
/// The most completion queue entries a ring may have (`IORING_MAX_CQ_ENTRIES`).
pub const CQ_ENTRIES_MAX: u32 = 2 * SQ_ENTRIES_MAX;

const ENTER_GETEVENTS: u32 = 1 << 0;
const ENTER_EXT_ARG: u32 = 1 << 3;
const ENTER_REGISTERED_RING: u32 = 1 << 4;
const REGISTER_RING_FDS: u32 = 20;

/// How a ring runs its completion work, strongest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupMode {
    /// `SINGLE_ISSUER | DEFER_TASKRUN` (Linux 6.1): completion work runs only inside our own
    /// `io_uring_enter`, in batches, never interrupting the loop.
    DeferTaskrun,
    /// `COOP_TASKRUN | TASKRUN_FLAG` (Linux 5.19): no interrupting IPIs; work runs at the next
    /// kernel entry.
    CoopTaskrun,
    /// No set-up flags.
    Plain,
}

impl SetupMode {
    /// The next weaker mode, `None` after [`Plain`](SetupMode::Plain).
    pub fn weaker(self) -> Option<SetupMode> {
        match self {
            SetupMode::DeferTaskrun => Some(SetupMode::CoopTaskrun),
            SetupMode::CoopTaskrun => Some(SetupMode::Plain),
            SetupMode::Plain => None,
        }
    }

    /// A short name for logs: `defer_taskrun`, `coop_taskrun` or `plain`.
    pub fn name(self) -> &'static str {
        match self {
            SetupMode::DeferTaskrun => "defer_taskrun",
            SetupMode::CoopTaskrun => "coop_taskrun",
            SetupMode::Plain => "plain",
        }
    }
}

/// How to build a [`Ring`].
#[derive(Clone, Debug)]
pub struct RingConfig {
    /// Submission queue entries (rounded up to a power of two by the kernel). When the queue
    /// fills within a loop turn, [`Ring::push`] submits early; it never drops an entry.
    pub sq_entries: u32,
    /// Completion queue entries. Size it to the most completions that can be pending between
    /// two reaps, so that the queue never overflows (overflow is survived, see
    /// [`Ring::submit_and_wait`], but costs the kernel an allocation per entry).
    pub cq_entries: u32,
    /// The most operations in flight at once; [`Ring::push`] refuses past it.
    pub inflight_max: u32,
    /// The strongest set-up to try first; weaker ones are tried when the kernel refuses.
    pub setup: SetupMode,
    /// Register the ring's own descriptor (`IORING_REGISTER_RING_FDS`), so each enter skips
    /// the descriptor lookup. Ignored where the kernel refuses.
    pub register_ring_fd: bool,
}

impl Default for RingConfig {
    fn default() -> RingConfig {
        RingConfig {
            sq_entries: 256,
            cq_entries: 1024,
            inflight_max: 1024,
            setup: SetupMode::DeferTaskrun,
            register_ring_fd: true,
        }
    }
}

/// One io_uring with its in-flight table and provided-buffer rings.
///
/// Each operation carries a caller's tag of type `T` (what the completion is about), kept
/// in the in-flight table and handed back with every completion: the `user_data` the kernel
/// carries is the table's key, so no tag is ever encoded into it.
///
/// Use it from one thread: with [`SetupMode::DeferTaskrun`] the kernel runs completion work
/// only in the thread that created the ring, inside [`submit_and_wait`](Self::submit_and_wait).
pub struct Ring<T = u64> {
    ring: IoUring,
    inflight: InFlight<T>,
    /// Provided-buffer groups registered with `ring`; freed only after it is gone.
    bufs: Vec<BufRing>,
    mode: SetupMode,
    /// The ring's index in the registered-ring table, when registered.
    registered: Option<u32>,
    /// The size of the registered file table for direct descriptors (0: none).
    direct_slots: u32,
    cq_capacity: usize,
    stats: RingStats,
}

/// What a ring has done since it was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    /// `io_uring_enter` calls.
    pub enters: u64,
    /// Submission queue entries the kernel took.
    pub submissions: u64,
    /// Completions reaped.
    pub completions: u64,
}

impl<T> std::fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("mode", &self.mode)
            .field("registered", &self.registered)
            .field("in_flight", &self.inflight.len())
            .field("bufs", &self.bufs)
            .finish()
    }
}

impl<T: Copy> Ring<T> {
    /// Builds a ring, trying `config.setup` first and weaker set-ups when the kernel answers
    /// `EINVAL` (an unknown flag). `EPERM` (io_uring disabled by sysctl or seccomp) and
    /// `ENOSYS` (no io_uring) are returned as they are, for the caller to explain.
    pub fn new(config: &RingConfig) -> io::Result<Ring<T>> {
        if config.sq_entries == 0
            || config.sq_entries > SQ_ENTRIES_MAX
            || config.cq_entries < config.sq_entries
            || config.cq_entries > CQ_ENTRIES_MAX
            || config.inflight_max == 0
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "ring of {} SQ / {} CQ entries: need 1..={SQ_ENTRIES_MAX} SQ entries and \
                     SQ..={CQ_ENTRIES_MAX} CQ entries",
                    config.sq_entries, config.cq_entries
                ),
            ));
        }
        let mut mode = config.setup;
        let ring = loop {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(config.cq_entries);
            match mode {
                SetupMode::DeferTaskrun => {
                    builder.setup_single_issuer().setup_defer_taskrun();
                }
                SetupMode::CoopTaskrun => {
                    builder.setup_coop_taskrun().setup_taskrun_flag();
                }
                SetupMode::Plain => {}
            }
            match builder.build(config.sq_entries) {
                Ok(ring) => break ring,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => match mode.weaker() {
                    Some(weaker) => mode = weaker,
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            }
        };
        let cq_capacity = ring.params().cq_entries() as usize;
        let mut this = Ring {
            ring,
            inflight: InFlight::with_capacity(config.inflight_max as usize),
            bufs: Vec::new(),
            mode,
            registered: None,
            direct_slots: 0,
            cq_capacity,
            stats: RingStats::default(),
        };
        if config.register_ring_fd {
            this.registered = this.register_ring_fd().ok();
        }
        Ok(this)
    }

    fn register_ring_fd(&self) -> io::Result<u32> {
        #[repr(C)]
        struct RsrcUpdate {
            offset: u32,
            resv: u32,
            data: u64,
        }
        let mut update = RsrcUpdate {
            offset: u32::MAX,
            resv: 0,
            data: self.ring.as_raw_fd() as u64,
        };
        // SAFETY: `update` is a valid `io_uring_rsrc_update` that lives across the call; the
        // kernel writes the chosen index into `offset`.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.ring.as_raw_fd(),
                REGISTER_RING_FDS,
                &mut update as *mut RsrcUpdate,
                1u32,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(update.offset)
    }

    /// Counters of enters, submissions and completions.
    pub fn stats(&self) -> RingStats {
        self.stats
    }

    /// The set-up the kernel accepted.
    pub fn mode(&self) -> SetupMode {
        self.mode
    }

    /// Whether the ring's descriptor is registered (enters skip the descriptor lookup).
    pub fn ring_fd_registered(&self) -> bool {
        self.registered.is_some()
    }

    /// The completion queue's size as the kernel set it up; size the vector given to
    /// [`reap`](Self::reap) to it.
    pub fn cq_capacity(&self) -> usize {
        self.cq_capacity
    }

    /// Operations pushed and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// The in-flight table's bound.
    pub fn in_flight_max(&self) -> usize {
        self.inflight.capacity()
    }

    /// Registers an empty (sparse) file table of `slots` entries, for direct descriptors
    /// ([`Desc::Direct`](crate::Desc::Direct)): accepts with `direct` fill it, closes empty
    /// it. The kernel caps `slots` at `RLIMIT_NOFILE` (`EMFILE`) and refuses a second table
    /// (`EBUSY`); kernels before 5.19 cannot allocate slots on accept (see
    /// [`Features::direct_accept`](crate::Features)).
    pub fn register_direct_table(&mut self, slots: u32) -> io::Result<()> {
        self.ring.submitter().register_files_sparse(slots)?;
        self.direct_slots = slots;
        Ok(())
    }

    /// The size of the registered file table; 0 when none is registered.
    pub fn direct_slots(&self) -> u32 {
        self.direct_slots
    }

    /// Registers a provided-buffer ring. The ring keeps it until it is dropped itself, so the
    /// kernel never sees freed buffers.
    pub fn register_buf_ring(&mut self, bufs: BufRing) -> io::Result<()> {
        assert!(
            self.bufs.iter().all(|b| b.group() != bufs.group()),
            "buffer group registered twice"
        );
        // SAFETY: the entries at `ring_addr` stay allocated until `self` is dropped, which
        // unregisters the group first (or leaks the memory when operations are in flight).
        unsafe {
            self.ring.submitter().register_buf_ring_with_flags(
                bufs.ring_addr(),
                bufs.entries(),
                bufs.group(),
                0,
            )?;
        }
        self.bufs.push(bufs);
        Ok(())
    }

    /// The provided-buffer group `group`.
    ///
    /// # Panics
    /// If no such group is registered.
    pub fn buf_ring(&self, group: u16) -> &BufRing {
        match self.bufs.iter().find(|b| b.group() == group) {
            Some(b) => b,
            None => panic!("no buffer group {group}"),
        }
    }

    fn buf_ring_mut(&mut self, group: u16) -> &mut BufRing {
        match self.bufs.iter_mut().find(|b| b.group() == group) {
            Some(b) => b,
            None => panic!("no buffer group {group}"),
        }
    }

    /// The first `len` bytes of buffer `bid` of `group`, handed over by a completion.
    pub fn buffer(&self, group: u16, bid: u16, len: usize) -> &[u8] {
        self.buf_ring(group).get(bid, len)
    }

    /// Gives buffer `bid` back to `group`; the kernel sees it at the next submission.
    pub fn give_back(&mut self, group: u16, bid: u16) {
        self.buf_ring_mut(group).give_back(bid);
    }

    /// Pushes `op`, tagged `tag`, onto the submission queue: the one push site. When the
    /// queue is full it first submits what is queued (without waiting), so nothing is dropped.
    ///
    /// Fails with `ErrorKind::OutOfMemory` when the in-flight table is full; size it from
    /// the caller's limits so that never happens.
    pub fn push(&mut self, op: Op, tag: T) -> io::Result<OpId> {
        if self.inflight.is_full() {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "in-flight table full ({} operations)",
                    self.inflight.capacity()
                ),
            ));
        }
        let (entry, lent) = op.into_entry();
        let id = self.inflight.insert(Slot { tag, lent });
        let entry = entry.user_data(id.user_data());
        for _ in 0..2 {
            // SAFETY: every buffer or timespec `entry` points at is owned by in-flight slot
            // `id`, which is removed only when the final completion for `id` is reaped.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_ok() {
                return Ok(id);
            }
            self.enter(0, None)?;
        }
        // The queue is still full after a submit: the kernel refused the batch (EBUSY).
        drop(self.inflight.remove(id));
        Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "submission queue full and the kernel is not taking entries",
        ))
    }

    /// Pushes `first` linked to `second` (`IOSQE_IO_LINK`): the kernel starts `second` only
    /// once `first` completed in full, and fails it with `-ECANCELED` otherwise (a short or
    /// failed `first`). Both go into one submission, never split across two.
    pub fn push_linked(&mut self, first: (Op, T), second: (Op, T)) -> io::Result<(OpId, OpId)> {
        if self.inflight.capacity() - self.inflight.len() < 2 {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "in-flight table full ({} operations)",
                    self.inflight.capacity()
                ),
            ));
        }
        let room = |ring: &mut io_uring::IoUring| {
            let sq = ring.submission();
            sq.capacity() - sq.len()
        };
        if room(&mut self.ring) < 2 {
            self.enter(0, None)?;
            if room(&mut self.ring) < 2 {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "submission queue full and the kernel is not taking entries",
                ));
            }
        }
        let mut ids = [None, None];
        for (i, (op, tag)) in [first, second].into_iter().enumerate() {
            let (entry, lent) = op.into_entry();
            let id = self.inflight.insert(Slot { tag, lent });
            let mut entry = entry.user_data(id.user_data());
            if i == 0 {
                entry = entry.flags(squeue::Flags::IO_LINK);
            }
            // SAFETY: as in `push`: what `entry` points at is owned by in-flight slot `id`
            // until its final completion. Room for both entries was made above.
            unsafe { self.ring.submission().push(&entry) }.expect("room was made for both");
            ids[i] = Some(id);
        }
        Ok((ids[0].expect("pushed"), ids[1].expect("pushed")))
    }

    /// Submits everything queued and waits for at least `want` completions: one
    /// `io_uring_enter` (the kernel also runs deferred completion work inside it).
    ///
    /// Returns the number of entries submitted. `EINTR` returns `Ok(0)`: reap and call again.
    /// `EBUSY`/`EAGAIN` (completions piling up in the kernel's overflow list) also return
    /// `Ok(0)`: reap, which makes room, and call again.
    pub fn submit_and_wait(&mut self, want: u32) -> io::Result<u32> {
        self.publish_buffers();
        match self.enter(want, None) {
            Ok(n) => Ok(n),
            Err(e) if retryable(&e) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Like [`submit_and_wait`](Self::submit_and_wait), but returns after `timeout` even if
    /// fewer than `want` completions arrived.
    pub fn submit_and_wait_timeout(&mut self, want: u32, timeout: Duration) -> io::Result<u32> {
        self.publish_buffers();
        let ts = KernelTimespec {
            sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            nsec: i64::from(timeout.subsec_nanos()),
        };
        match self.enter(want, Some(&ts)) {
            Ok(n) => Ok(n),
            Err(e) if retryable(&e) || e.raw_os_error() == Some(libc::ETIME) => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn publish_buffers(&mut self) {
        for bufs in &mut self.bufs {
            bufs.publish();
        }
    }

    /// One `io_uring_enter`, its wait bounded by `ts` when given.
    fn enter(&mut self, want: u32, ts: Option<&KernelTimespec>) -> io::Result<u32> {
        let (to_submit, overflow, taskrun) = {
            let sq = self.ring.submission();
            (sq.len() as u32, sq.cq_overflow(), sq.taskrun())
        };
        let mut flags = 0;
        if want > 0 || overflow || taskrun {
            flags |= ENTER_GETEVENTS;
        }
        let (fd, flags) = match self.registered {
            Some(index) => (index as i32, flags | ENTER_REGISTERED_RING),
            None => (self.ring.as_raw_fd(), flags),
        };
        #[repr(C)]
        struct GeteventsArg {
            sigmask: u64,
            sigmask_sz: u32,
            min_wait_usec: u32,
            ts: u64,
        }
        let arg = GeteventsArg {
            sigmask: 0,
            sigmask_sz: 0,
            min_wait_usec: 0,
            ts: ts.map_or(0, |ts| ts as *const KernelTimespec as u64),
        };
        let (flags, arg_ptr, arg_len) = if ts.is_some() {
            (
                flags | ENTER_EXT_ARG,
                &arg as *const GeteventsArg as usize,
                std::mem::size_of::<GeteventsArg>(),
            )
        } else {
            (flags, 0, 0)
        };
        // SAFETY: `fd` is this ring's descriptor or its registered index; the argument is
        // either absent or `arg`, a valid `io_uring_getevents_arg` (pointing at a timespec the
        // caller keeps alive) that lives across the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                fd,
                to_submit,
                want,
                flags,
                arg_ptr,
                arg_len,
            )
        };
        self.stats.enters += 1;
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        self.stats.submissions += ret as u64;
        Ok(ret as u32)
    }

    /// Moves every available completion into `out`, up to its spare capacity (never
    /// growing it), and returns how many. A final completion frees its in-flight slot and
    /// hands back the memory the operation held; a buffer it names is marked as the caller's.
    pub fn reap(&mut self, out: &mut Vec<Completion<T>>) -> usize {
        let room = out.capacity() - out.len();
        let mut count = 0;
        let mut cq = self.ring.completion();
        while count < room {
            let Some(cqe) = cq.next() else { break };
            count += 1;
            let id = OpId(u32::try_from(cqe.user_data()).expect("user_data is an in-flight key"));
            let (result, flags) = (cqe.result(), cqe.flags());
            let (tag, group, owned) = if cqueue::more(flags) {
                let slot = self.inflight.get(id);
                (slot.tag, group_of(&slot.lent), Default::default())
            } else {
                let slot = self.inflight.remove(id);
                let group = group_of(&slot.lent);
                (slot.tag, group, slot.lent.hand_back(result))
            };
            if let (Some(bid), Some(group)) = (cqueue::buffer_select(flags), group) {
                match self.bufs.iter_mut().find(|b| b.group() == group) {
                    Some(bufs) => bufs.mark_held(bid),
                    None => panic!("completion names unregistered group {group}"),
                }
            }
            out.push(Completion {
                id,
                tag,
                result,
                flags,
                owned,
            });
        }
        self.stats.completions += count as u64;
        count
    }
}

fn group_of(lent: &Lent) -> Option<u16> {
    match lent {
        Lent::Group(group) => Some(*group),
        _ => None,
    }
}

fn retryable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)
    )
}

/// The kernel's `__kernel_timespec`, which bounds a wait.
#[repr(C)]
struct KernelTimespec {
    sec: i64,
    nsec: i64,
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        let submitter = self.ring.submitter();
        for bufs in &self.bufs {
            // Failure only means the group is already gone; nothing else can be done here.
            let _ = submitter.unregister_buf_ring(bufs.group());
        }
        if self.inflight.len() > 0 {
            // Operations still in flight may touch their memory, and receives may still pick
            // provided buffers, until the kernel has torn the ring down, which happens after
            // this returns. Leak that memory rather than free what the kernel may write.
            let inflight = std::mem::replace(&mut self.inflight, InFlight::with_capacity(0));
            inflight.leak();
            std::mem::forget(std::mem::take(&mut self.bufs));
        }
    }
}

impl<T> Ring<T> {
    /// Fills `probe` with the opcodes the kernel supports.
    pub(crate) fn submitter_probe(&self, probe: &mut io_uring::register::Probe) -> io::Result<()> {
        self.ring.submitter().register_probe(probe)
    }

    /// Whether the kernel keeps completions that overflow the queue (`IORING_FEAT_NODROP`).
    pub fn nodrop(&self) -> bool {
        self.ring.params().is_feature_nodrop()
    }

    /// Whether `io_uring_enter` takes a bounded wait (`IORING_FEAT_EXT_ARG`), which
    /// [`submit_and_wait_timeout`](Self::submit_and_wait_timeout) needs.
    pub fn ext_arg(&self) -> bool {
        self.ring.params().is_feature_ext_arg()
    }
}
