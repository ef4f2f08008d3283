//! The worker's side channels, each read through the ring: the master's pipe (messages), the
//! signalfd (drain on `SIGTERM`, `SIGINT`, `SIGQUIT`), the tick (timers, sweeps, the drain's
//! idle grace, stats), and the access log's writes and reopening.

use super::{Event, Setup, Worker, IPC_BUF_BYTES};
use crate::connection::{Drain, ACCESS_LOG_BYTES_MAX};
use crate::ipc::{self, Message};
use crate::log::log;
use crate::Serve;
use io_uring::types::Timespec;
use ringmaster_uring::{Completion, Op, Owned};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The loop wakes at least this often, for timers and the stats report.
const TICK: Duration = Duration::from_millis(100);
/// How often the worker reports its counters to the master.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// Bytes of one `signalfd_siginfo`.
const SIGINFO_BYTES: usize = 128;
/// Access log bytes that make a write worth it before the tick forces one.
const ACCESS_FLUSH_BYTES: usize = 64 * 1024;
/// The most bytes one write to a pipe, a socket or a terminal moves whole: `PIPE_BUF`. The
/// workers share the access log; lines written to a regular file opened `O_APPEND` never
/// interleave, but a longer write to a pipe (a container's `/dev/stdout`) may be split,
/// and another worker's lines land inside it.
const ACCESS_ATOMIC_BYTES: usize = 4096;
/// When draining, an idle keep-alive connection gets this long (at most half the drain
/// timeout) to send one more request, which is answered with `Connection: close`. Closing
/// it at once would race a request the client may be sending: the client would see its
/// connection reset instead of an answer.
pub(super) const DRAIN_IDLE_GRACE_MAX: Duration = Duration::from_secs(1);

/// The side channels' descriptors and the buffers their reads and writes lend the ring.
pub(super) struct Side {
    from_master: OwnedFd,
    to_master: OwnedFd,
    signals: nix::sys::signalfd::SignalFd,
    /// Each buffer is `None` while its read is in flight (the ring holds it).
    ipc_buf: Option<Vec<u8>>,
    signal_buf: Option<Vec<u8>>,
    tick_spec: Option<Box<Timespec>>,
    last_stats: Instant,
    /// The access log file, when one is kept.
    access_file: Option<OwnedFd>,
    /// The buffer to fill next, while the ring holds the one being written; `None` while a
    /// write is in flight and this one is the log's.
    access_spare: Option<Vec<u8>>,
    /// The access log's path, reopened on [`Message::Reopen`].
    access_path: Option<PathBuf>,
    /// A reopened access log waiting for the write in flight to the old one to complete.
    access_next: Option<Switch>,
    /// The most bytes one write to the access log takes: unbounded for a regular file,
    /// [`ACCESS_ATOMIC_BYTES`] (whole lines) for anything else.
    access_write_max: usize,
    /// Bytes at the start of the log's buffer already handed to a write (where writes are
    /// bounded): the buffer is let go of by halves, not moved at every write.
    access_sent: usize,
}

/// The most bytes one write to `file` takes, so that lines never interleave with another
/// worker's: any length for a regular file (appends are atomic), [`ACCESS_ATOMIC_BYTES`]
/// otherwise.
fn access_write_max(file: &OwnedFd) -> usize {
    match nix::sys::stat::fstat(file) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => usize::MAX,
        _ => ACCESS_ATOMIC_BYTES,
    }
}

/// Where the first write of `pending` (whole lines) ends, at most `max` bytes: after the
/// last line that fits, or after the first line when it alone is longer.
fn access_write_end(pending: &[u8], max: usize) -> usize {
    if pending.len() <= max {
        return pending.len();
    }
    let within = &pending[..max];
    match within.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None => pending
            .iter()
            .position(|&b| b == b'\n')
            .map_or(pending.len(), |i| i + 1),
    }
}

/// A reopened access log, not written to yet: the worker switches to it once no write to
/// the old file is in flight, so that every line goes whole to one file or the other.
struct Switch {
    file: OwnedFd,
    /// The [`Message::Reopen`] round to answer once switched.
    round: u64,
}

/// Opens an access log as the master does at start and every reopen does: created if
/// missing (mode 0666 less the umask), appended to, closed on exec.
pub(crate) fn open_access_log(path: &Path) -> std::io::Result<OwnedFd> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(OwnedFd::from)
}

impl Side {
    pub(super) fn new(setup: Setup, access_path: Option<PathBuf>) -> Result<Side, String> {
        let signals = worker_signals().map_err(|e| format!("signalfd: {e}"))?;
        Ok(Side {
            from_master: setup.from_master,
            to_master: setup.to_master,
            signals,
            ipc_buf: Some(Vec::with_capacity(IPC_BUF_BYTES)),
            signal_buf: Some(Vec::with_capacity(SIGINFO_BYTES)),
            tick_spec: Some(Box::new(
                Timespec::new()
                    .sec(TICK.as_secs())
                    .nsec(TICK.subsec_nanos()),
            )),
            last_stats: Instant::now(),
            access_spare: setup
                .access_log
                .as_ref()
                .map(|_| Vec::with_capacity(ACCESS_LOG_BYTES_MAX)),
            access_path: access_path.filter(|_| setup.access_log.is_some()),
            access_write_max: setup
                .access_log
                .as_ref()
                .map_or(usize::MAX, access_write_max),
            access_file: setup.access_log,
            access_next: None,
            access_sent: 0,
        })
    }
}

impl<H: Serve> Worker<'_, H> {
    pub(super) fn arm_side_channels(&mut self) -> std::io::Result<()> {
        self.arm_ipc()?;
        self.arm_signals()?;
        self.arm_tick()
    }

    fn arm_ipc(&mut self) -> std::io::Result<()> {
        let buf = self.side.ipc_buf.take().expect("one IPC read at a time");
        let op = Op::Read {
            fd: self.side.from_master.as_raw_fd(),
            buf,
        };
        self.ring.push(op, Event::Ipc)?;
        Ok(())
    }

    pub(super) fn on_ipc(&mut self, c: Completion<Event>) -> std::io::Result<()> {
        let Owned::Buf(mut buf) = c.owned else {
            panic!("a read hands its buffer back")
        };
        match c.result {
            r if r == -libc::EAGAIN => {}
            0 => {
                // The master closed its end: it is gone or going. Drain and do not read again.
                self.drain("master closed the pipe", Duration::ZERO);
                return Ok(());
            }
            r if r < 0 => {
                log!(
                    "reading the master's pipe: {}",
                    std::io::Error::from_raw_os_error(-r)
                );
                self.drain("IPC failure", Duration::ZERO);
                return Ok(());
            }
            _ => {}
        }
        let mut used = 0;
        loop {
            match ipc::decode(&buf[used..]) {
                Ok(Some((msg, len))) => {
                    used += len;
                    self.on_message(msg);
                }
                Ok(None) => break,
                Err(e) if e.is_skippable() => {
                    // Whole, just not understood: a master of another build. Read on.
                    crate::log::log_limited!(
                        "a message from the master this build does not read ({e}); skipped"
                    );
                    used += ipc::frame_len(&buf[used..]).expect("a whole frame");
                }
                Err(e) => {
                    log!("garbage on the master's pipe ({e}); draining");
                    self.drain("IPC failure", Duration::ZERO);
                    return Ok(());
                }
            }
        }
        buf.drain(..used);
        self.side.ipc_buf = Some(buf);
        self.arm_ipc()
    }

    fn on_message(&mut self, msg: Message) {
        match msg {
            Message::Shutdown { drain_ms } => self.drain(
                "shutdown requested by the master",
                Duration::from_millis(drain_ms),
            ),
            Message::User(bytes) => {
                let handler = self.ctx.handler;
                let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    handler.message(&bytes)
                }));
                // The panic hook logged it; the worker serves on unless told otherwise.
                if let Err(panic) = called {
                    if self.ctx.exit_on_panic {
                        std::panic::resume_unwind(panic);
                    }
                }
            }
            Message::Adopt { slot } => self.adopt(slot, true),
            Message::Release { slot } => self.adopt(slot, false),
            Message::Reopen { round } => self.reopen_access_log(round),
            other => log!("unexpected message from the master: {other:?}"),
        }
    }

    fn arm_signals(&mut self) -> std::io::Result<()> {
        let buf = self
            .side
            .signal_buf
            .take()
            .expect("one signal read at a time");
        let op = Op::Read {
            fd: self.side.signals.as_raw_fd(),
            buf,
        };
        self.ring.push(op, Event::Signal)?;
        Ok(())
    }

    pub(super) fn on_signal(&mut self, c: Completion<Event>) -> std::io::Result<()> {
        let Owned::Buf(mut buf) = c.owned else {
            panic!("a read hands its buffer back")
        };
        if buf.len() >= 4 {
            let signo = u32::from_ne_bytes(buf[..4].try_into().expect("4 bytes"));
            let name = nix::sys::signal::Signal::try_from(signo as i32)
                .map_or("a signal", nix::sys::signal::Signal::as_str);
            self.drain(name, self.drain_timeout);
        }
        buf.clear();
        self.side.signal_buf = Some(buf);
        self.arm_signals()
    }

    fn arm_tick(&mut self) -> std::io::Result<()> {
        let spec = self.side.tick_spec.take().expect("one tick at a time");
        self.ring.push(Op::Timeout { spec }, Event::Tick)?;
        Ok(())
    }

    pub(super) fn on_tick(&mut self, c: Completion<Event>) -> std::io::Result<()> {
        let Owned::Timespec(spec) = c.owned else {
            panic!("a timeout hands its timespec back")
        };
        self.side.tick_spec = Some(spec);
        self.ctx.now = Instant::now();
        self.tick_connections();
        // A connection can wait in a socket's queue with nobody woken for it: the wake-up
        // went to an accept that was being cancelled, or to a worker that was dying and
        // whose ring was not torn down yet. Sweeping each tick bounds that wait to a tick.
        if self.ctx.drain == Drain::Serving {
            let targets: Vec<_> = self.accepting.sweep_targets().collect();
            for fd in targets {
                self.sweep(fd);
            }
        }
        self.flush_access_log(true)?;
        if self.ctx.drain == Drain::Draining
            && self.idle_close_at.is_some_and(|at| self.ctx.now >= at)
        {
            self.ctx.drain = Drain::IdleClosing;
            self.touch_all();
        }
        if self.side.last_stats.elapsed() >= STATS_EVERY {
            self.side.last_stats = Instant::now();
            self.report_stats();
        }
        self.arm_tick()
    }

    pub(super) fn report_stats(&mut self) {
        let c = &self.ctx.counters;
        let ring = self.ring.stats();
        let stats = ipc::Stats {
            requests: c.requests,
            connections: self.conns.len() as u64,
            accepted: c.accepted,
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            errors: c.errors,
            timeouts: c.timeouts,
            responses_1xx: c.responses[0],
            responses_2xx: c.responses[1],
            responses_3xx: c.responses[2],
            responses_4xx: c.responses[3],
            responses_5xx: c.responses[4],
            uring_enters: ring.enters,
            uring_submissions: ring.submissions,
            uring_completions: ring.completions,
            uring_enobufs: self.enobufs,
            handler_failures: c.handler_failures,
            accept_overflow: self.accepting.overflow,
            access_log_dropped: self.ctx.access.as_ref().map_or(0, |log| log.dropped),
            handlers_cancelled: c.handlers_cancelled,
            handlers_timed_out: c.handlers_timed_out,
            handlers_in_flight: self.ctx.tasks.len() as u64,
            tasks_spawned: crate::rt::with(|rt| rt.spawned.len()) as u64,
            rt_ops_in_flight: crate::rt::with(|rt| rt.ops.len()) as u64,
            ring_in_flight: self.ring.in_flight() as u64,
            descriptors: open_descriptors(),
            buffers_free: self.ctx.pool.free() as u64,
            bytes_spliced: c.bytes_spliced,
            splice_pipes: crate::rt::splice::pipes_lent() as u64,
        };
        self.send_to_master(&Message::Stats(stats));
        self.send_to_master(&Message::Durations(self.ctx.durations.clone()));
        let samples = crate::metric::samples();
        if !samples.is_empty() {
            self.send_to_master(&Message::Metrics(samples));
        }
        if let Some(mounts) = self.ctx.handler.mounts() {
            self.send_to_master(&Message::Mounts(mounts.sample()));
        }
    }

    /// Writes one frame to the master's pipe without blocking. When the pipe is full (the
    /// master is behind) a stats report is dropped; the next one carries the totals anyway.
    pub(super) fn send_to_master(&self, msg: &Message) {
        match ipc::write_frame(self.side.to_master.as_fd(), msg) {
            Ok(()) | Err(ipc::SendError::Full) => {}
            Err(e) => log!("message to the master not sent: {e}"),
        }
    }

    /// Hands the access log's lines to a write when enough piled up (or `force`, on the
    /// tick), one write in flight at a time.
    pub(super) fn flush_access_log(&mut self, force: bool) -> std::io::Result<()> {
        let (Some(file), Some(log)) = (&self.side.access_file, &mut self.ctx.access) else {
            return Ok(());
        };
        // The spare is the ring's while a write is in flight: then wait for it. The log's
        // buffer is not changed under a bounded write either (its bytes are counted back
        // after a short one): what was sent is let go of only here, with none in flight.
        if self.side.access_spare.is_none() {
            return Ok(());
        }
        let max = self.side.access_write_max;
        let sent = self.side.access_sent;
        if sent > 0
            && (sent == log.buf.len() || max == usize::MAX || sent >= log.buf.capacity() / 2)
        {
            // All of it, what bounded writes sent before a reopen made the log a file, or
            // half the buffer: let go of it, moving what follows once.
            log.buf.drain(..sent);
            self.side.access_sent = 0;
        }
        let pending = log.buf.len() - self.side.access_sent;
        if pending == 0 || (!force && pending < ACCESS_FLUSH_BYTES.min(max)) {
            return Ok(());
        }
        let mut spare = self.side.access_spare.take().expect("checked above");
        let buf = if max == usize::MAX {
            std::mem::replace(&mut log.buf, spare)
        } else {
            // Bounded writes: whole lines, at most `max` bytes, copied out of the log's
            // buffer.
            let at = self.side.access_sent;
            let end = access_write_end(&log.buf[at..], max);
            spare.extend_from_slice(&log.buf[at..at + end]);
            self.side.access_sent += end;
            spare
        };
        let op = Op::Write {
            fd: file.as_raw_fd(),
            buf,
            offset: u64::MAX,
        };
        self.ring.push(op, Event::Access)?;
        Ok(())
    }

    /// Reopens the access log at its path (logrotate renamed the old file) and answers the
    /// master. The `open(2)` blocks the loop, once per rotation, for as long as a local
    /// file's open takes. While a write to the old file is in flight the switch waits for
    /// its completion ([`Self::on_access_written`]): every line goes whole to the old file
    /// or the new one, never to both or neither. A failure keeps the old file; the master
    /// logs and counts it.
    fn reopen_access_log(&mut self, round: u64) {
        let Some(path) = &self.side.access_path else {
            // No access log is kept: there is nothing to switch.
            self.send_to_master(&Message::Reopened { round, errno: 0 });
            return;
        };
        match open_access_log(path) {
            Ok(file) => {
                // A newer round supersedes one still waiting: its file is never written.
                self.side.access_next = Some(Switch { file, round });
                self.switch_access_log();
            }
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                self.send_to_master(&Message::Reopened { round, errno });
            }
        }
    }

    /// Switches to the reopened access log if one waits and no write is in flight, closing
    /// the old file, and tells the master: from here on the old file gets no line from
    /// this worker.
    fn switch_access_log(&mut self) {
        if self.side.access_spare.is_none() {
            return;
        }
        if let Some(Switch { file, round }) = self.side.access_next.take() {
            self.side.access_write_max = access_write_max(&file);
            self.side.access_file = Some(file);
            self.send_to_master(&Message::Reopened { round, errno: 0 });
        }
    }

    /// An access log write is in the ring: its buffer is the ring's.
    pub(super) fn access_write_in_flight(&self) -> bool {
        self.side.access_file.is_some() && self.side.access_spare.is_none()
    }

    /// Writes what is left of the access log before the worker exits, once no write is in
    /// flight; it may block, which no longer matters then.
    pub(super) fn write_access_log_now(&mut self) {
        debug_assert!(!self.access_write_in_flight());
        // With no write in flight, a reopened file is switched to already.
        debug_assert!(self.side.access_next.is_none());
        if let (Some(file), Some(log)) = (&self.side.access_file, &mut self.ctx.access) {
            let mut at = self.side.access_sent;
            while at < log.buf.len() {
                let end = at + access_write_end(&log.buf[at..], self.side.access_write_max);
                match nix::unistd::write(file, &log.buf[at..end]) {
                    // A short write (a file system short of room): the rest next.
                    Ok(n) if n > 0 => at += n,
                    Err(nix::errno::Errno::EINTR) => {}
                    Ok(_) => break,
                    Err(e) => {
                        log!("writing the access log: {e}");
                        break;
                    }
                }
            }
            log.buf.clear();
            self.side.access_sent = 0;
        }
    }

    pub(super) fn on_access_written(&mut self, c: Completion<Event>) -> std::io::Result<()> {
        let result = c.io_result();
        let Owned::Buf(mut buf) = c.owned else {
            panic!("a write hands its buffer back")
        };
        match result {
            Ok(n) if (n as usize) < buf.len() && n > 0 && self.side.access_next.is_some() => {
                // A short write before a switch: the rest of its lines go to the old file
                // too, or a line would be split across the rotation.
                buf.drain(..n as usize);
                let file = self.side.access_file.as_ref().expect("a write had a file");
                let op = Op::Write {
                    fd: file.as_raw_fd(),
                    buf,
                    offset: u64::MAX,
                };
                self.ring.push(op, Event::Access)?;
                return Ok(());
            }
            Ok(n)
                if (n as usize) < buf.len()
                    && n > 0
                    && self.side.access_write_max != usize::MAX =>
            {
                // A short bounded write (a signal): the rest was copied from the log's
                // buffer, still there as it was: it goes out next.
                self.side.access_sent -= buf.len() - n as usize;
            }
            Ok(n) if (n as usize) < buf.len() && n > 0 => {
                // A short write: the rest goes out next, ahead of newer lines.
                buf.drain(..n as usize);
                if let Some(log) = &mut self.ctx.access {
                    let newer = std::mem::replace(&mut log.buf, buf);
                    log.buf.extend_from_slice(&newer);
                    buf = newer;
                }
            }
            Ok(_) => {}
            Err(e) => {
                // Counted as dropped, and said at most once a second: a pipe whose reader
                // died fails every write.
                let lost = buf.iter().filter(|&&b| b == b'\n').count() as u64;
                if let Some(log) = &mut self.ctx.access {
                    log.dropped += lost;
                }
                crate::log::log_limited!("writing the access log: {e}; {lost} lines lost");
            }
        }
        buf.clear();
        self.side.access_spare = Some(buf);
        self.switch_access_log();
        Ok(())
    }
}

/// The process's open descriptors, counted in `/proc/self/fd` (0 when it cannot be read);
/// the directory's own descriptor is not counted.
fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count().saturating_sub(1) as u64)
}

/// Blocks `SIGTERM`, `SIGINT` and `SIGQUIT` (the master blocked them before fork, with the
/// signals it ignores; this makes sure) and returns a signalfd that reads them: a worker
/// drains on any of them.
fn worker_signals() -> nix::Result<nix::sys::signalfd::SignalFd> {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGQUIT);
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
}

#[cfg(test)]
mod tests {
    use super::access_write_end;

    #[test]
    fn a_bounded_write_ends_after_the_last_whole_line_that_fits() {
        assert_eq!(access_write_end(b"ab\ncd\n", 100), 6, "all of it fits");
        assert_eq!(
            access_write_end(b"ab\ncd\nef\n", 7),
            6,
            "two lines of three"
        );
        assert_eq!(access_write_end(b"ab\ncd\nef\n", 6), 6, "at the bound");
        assert_eq!(access_write_end(b"ab\ncd\nef\n", 5), 3, "one line");
        // A line longer than the bound goes alone.
        assert_eq!(access_write_end(b"abcdef\ng\n", 4), 7);
    }
}
