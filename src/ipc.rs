//! Messages between the master and a worker over their pipe pair: length-prefixed frames
//! with a type byte. A leaf module: the master and the worker both use it; it uses neither.
//!
//! Frame: `len: u32` (little-endian; the bytes after it: type and payload), `type: u8`,
//! payload: the message's data typed with `serde` and encoded by `postcard` (a user
//! message's bytes as they are). A frame is at most [`FRAME_BYTES_MAX`] bytes in all, so that
//! one `write(2)` to a pipe sends it whole or not at all (POSIX: writes up to `PIPE_BUF` are
//! atomic). The type byte stays outside the encoding, so that a frame of a type this build
//! does not know (a worker of another build, after a reload) is skipped whole; `Stats` goes
//! as a sequence of words, so that builds with fields appended read each other.
//!
//! See [`Server::on_fork`](crate::Server::on_fork)'s example for the messages an application
//! sends both ways (the master's hooks, [`send_to_master`](crate::send_to_master)).

use std::fmt;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// The largest frame, header included: `PIPE_BUF` on Linux.
///
/// Each message of [`Server::on_fork`](crate::Server::on_fork)'s example travels in one such
/// frame.
pub const FRAME_BYTES_MAX: usize = 4096;
/// Length prefix and type byte.
const HEADER_BYTES: usize = 5;
/// The largest user payload one message carries: a longer one is refused with
/// [`SendError::TooLarge`].
///
/// See [`Server::on_fork`](crate::Server::on_fork)'s example, whose worker sends to the master.
pub const USER_BYTES_MAX: usize = FRAME_BYTES_MAX - HEADER_BYTES;
/// The longest text one message carries ([`Message::Failed`]): its length goes before it,
/// in at most two bytes.
#[doc(hidden)]
pub const TEXT_BYTES_MAX: usize = USER_BYTES_MAX - 2;

const TYPE_READY: u8 = 1;
const TYPE_STATS: u8 = 2;
const TYPE_USER: u8 = 3;
const TYPE_SHUTDOWN: u8 = 4;
const TYPE_ADOPT: u8 = 5;
const TYPE_RELEASE: u8 = 6;
const TYPE_MOUNTS: u8 = 7;
const TYPE_REOPEN: u8 = 8;
const TYPE_REOPENED: u8 = 9;
const TYPE_FAILED: u8 = 10;
const TYPE_DURATIONS: u8 = 11;
const TYPE_METRICS: u8 = 12;

/// Mounts (`--static`, `--proxy`) whose counters a worker reports, at most: a server with
/// more refuses to start. The bound keeps a worker's report of its mounts within one frame
/// ([`FRAME_BYTES_MAX`]).
///
/// The `ringmaster` binary's mounts are made by [`cli::run_builtin`](crate::cli::run_builtin):
/// see its example.
pub const MOUNTS_MAX: usize = 32;
/// Words of one [`MountStats`] on the wire.
const MOUNT_WORDS: usize = 5;
/// The most bytes `postcard` takes for a `u64` (a varint).
const VARINT_BYTES_MAX: usize = 10;
// Every mount's counters fit one frame, so that one write sends them whole.
const _: () =
    assert!(HEADER_BYTES + 2 + MOUNTS_MAX * MOUNT_WORDS * VARINT_BYTES_MAX <= FRAME_BYTES_MAX);

/// Declares [`Stats`] and its wire order from one list of fields.
macro_rules! stats {
    ($($(#[$doc:meta])* $field:ident),+ $(,)?) => {
        /// Counters a worker reports to the master; all but `connections` are totals since
        /// the worker started.
        #[doc(hidden)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Stats {
            $($(#[$doc])* pub $field: u64,)+
        }

        impl Stats {
            /// The fields in wire order.
            fn to_words(self) -> [u64; STATS_FIELDS] {
                [$(self.$field),+]
            }

            /// The sum of two sets of counters.
            pub fn plus(&self, other: &Stats) -> Stats {
                Stats { $($field: self.$field.wrapping_add(other.$field)),+ }
            }

            /// Every counter with its name, in wire order.
            pub fn named(&self) -> [(&'static str, u64); STATS_FIELDS] {
                [$((stringify!($field), self.$field)),+]
            }

            fn from_words(words: [u64; STATS_FIELDS]) -> Stats {
                let mut it = words.into_iter();
                Stats { $($field: it.next().expect("one word per field")),+ }
            }
        }
    };
}

// Fields are only ever appended, never reordered: after a reload to a new binary, the
// master reads the workers of the other build by position (see `decode`).
stats! {
    /// Requests answered (responses sent by the handler).
    requests,
    /// Connections open now.
    connections,
    /// Connections accepted.
    accepted,
    /// Bytes received.
    bytes_in,
    /// Bytes sent.
    bytes_out,
    /// Requests refused as malformed or over a limit.
    errors,
    /// Connections that ran out of time (head, body rate, send).
    timeouts,
    /// Responses with a 1xx status (`100 Continue`).
    responses_1xx,
    /// Responses with a 2xx status.
    responses_2xx,
    /// Responses with a 3xx status.
    responses_3xx,
    /// Responses with a 4xx status.
    responses_4xx,
    /// Responses with a 5xx status.
    responses_5xx,
    /// `io_uring_enter` calls.
    uring_enters,
    /// Submission queue entries the kernel took.
    uring_submissions,
    /// Completions reaped.
    uring_completions,
    /// Receives re-armed after `-ENOBUFS` (every provided buffer was in use).
    uring_enobufs,
    /// Requests answered `500` because the handler panicked or misused its response.
    handler_failures,
    /// Connections a multishot accept took beyond the worker's bound, closed at once.
    accept_overflow,
    /// Access log lines dropped because the buffer was full (the disk fell behind).
    access_log_dropped,
    /// Async handlers' futures dropped because their client went away.
    handlers_cancelled,
    /// Async handlers' futures dropped at the handler timeout (answered `503`).
    handlers_timed_out,
    /// Async handlers' futures waiting now (a gauge).
    handlers_in_flight,
    /// Tasks spawned with `rt::spawn` running now (a gauge).
    tasks_spawned,
    /// Ring operations of futures in the runtime's table now, those being cancelled
    /// included (a gauge).
    rt_ops_in_flight,
    /// Ring operations in flight now, all of them (a gauge).
    ring_in_flight,
    /// The worker's open descriptors now (a gauge).
    descriptors,
    /// Free buffers in the worker's pool now (a gauge).
    buffers_free,
    /// Bytes of files sent by splice (no copy through user space).
    bytes_spliced,
    /// Pipes of the worker's splice pool lent to file ranges being sent now (a gauge).
    splice_pipes,
}

const STATS_FIELDS: usize = 29;

/// The fields of [`Stats`] that are gauges (a value now), not totals: summing a worker's
/// past values would mean nothing.
#[doc(hidden)]
pub const STATS_GAUGES: [&str; 8] = [
    "connections",
    "handlers_in_flight",
    "tasks_spawned",
    "rt_ops_in_flight",
    "ring_in_flight",
    "descriptors",
    "buffers_free",
    "splice_pipes",
];

impl Stats {
    /// These totals with every gauge (see [`STATS_GAUGES`]) taken from `now` instead.
    pub fn gauges_from(&self, now: &Stats) -> Stats {
        let mut words = self.to_words();
        let live = now.to_words();
        for (i, (name, _)) in self.named().iter().enumerate() {
            if STATS_GAUGES.contains(name) {
                words[i] = live[i];
            }
        }
        Stats::from_words(words)
    }
}

/// One mount's counters as a worker reports them: totals since the worker started, but
/// `upstream_open` and `upstream_idle`, which are gauges (a value now).
///
/// Shown per mount by `status --json` and `/metrics` (README, Operations).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MountStats {
    /// Responses the mount's handler returned (a request it never answered, because its
    /// client left or the handler timed out, is not counted).
    pub requests: u64,
    /// Response body bytes the mount handed to the server: a whole body's length, or what a
    /// streamed body's producer wrote; none for `HEAD` (no body is sent).
    pub bytes: u64,
    /// Proxy mounts: failed tries at an upstream (see
    /// [`UpstreamStats::errors`](crate::proxy::UpstreamStats::errors)); 0 for the others.
    pub upstream_errors: u64,
    /// Proxy mounts: upstream connections open now, pooled or busy (a gauge).
    pub upstream_open: u64,
    /// Proxy mounts: upstream connections idle in the keep-alive pool now (a gauge).
    pub upstream_idle: u64,
}

impl MountStats {
    fn to_words(self) -> [u64; MOUNT_WORDS] {
        [
            self.requests,
            self.bytes,
            self.upstream_errors,
            self.upstream_open,
            self.upstream_idle,
        ]
    }

    fn from_words(w: [u64; MOUNT_WORDS]) -> MountStats {
        MountStats {
            requests: w[0],
            bytes: w[1],
            upstream_errors: w[2],
            upstream_open: w[3],
            upstream_idle: w[4],
        }
    }

    /// The sum of two sets of counters, gauges included.
    pub fn plus(&self, other: &MountStats) -> MountStats {
        let (a, b) = (self.to_words(), other.to_words());
        MountStats::from_words(std::array::from_fn(|i| a[i].wrapping_add(b[i])))
    }

    /// These totals with the gauges (`upstream_open`, `upstream_idle`) taken from `now`.
    pub fn gauges_from(&self, now: &MountStats) -> MountStats {
        MountStats {
            upstream_open: now.upstream_open,
            upstream_idle: now.upstream_idle,
            ..*self
        }
    }
}

/// Adds `more` to `sum` mount by mount; `sum` grows to the longer of the two (a worker that
/// never reported has no entries).
pub(crate) fn add_mounts(sum: &mut Vec<MountStats>, more: &[MountStats]) {
    if sum.len() < more.len() {
        sum.resize(more.len(), MountStats::default());
    }
    for (s, m) in sum.iter_mut().zip(more) {
        *s = s.plus(m);
    }
}

/// One message, in either direction. See [`Server::on_fork`](crate::Server::on_fork)'s
/// example (the hooks and IPC).
#[doc(hidden)]
// `Stats` is a few hundred bytes, inline: a message is made about once a second per
// worker and moved a few times, where a box would be one more allocation each time.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// worker → master: the worker's ring is up and its accept is armed.
    Ready,
    /// worker → master: periodic counters.
    Stats(Stats),
    /// worker → master: periodic counters of each mount, in the order the mounts were
    /// made (the same in the master and every worker); at most [`MOUNTS_MAX`].
    Mounts(Vec<MountStats>),
    /// master → worker: stop accepting, finish what was received, close, exit; the master
    /// kills the worker `drain_ms` milliseconds after sending this.
    Shutdown {
        /// The drain deadline, in milliseconds from now.
        drain_ms: u64,
    },
    /// Either way: application bytes (at most [`USER_BYTES_MAX`]).
    User(Vec<u8>),
    /// master → worker: also accept on the listening socket of `slot`, whose worker is down
    /// (`SO_REUSEPORT` mode: its queued connections would wait otherwise).
    Adopt {
        /// The slot whose socket to accept on.
        slot: u32,
    },
    /// master → worker: stop accepting on `slot`'s socket; its own worker is back.
    Release {
        /// The slot whose socket to give back.
        slot: u32,
    },
    /// master → worker: reopen the access log at its path (after the writes in flight to
    /// the old file complete), then answer [`Message::Reopened`] with the same `round`.
    Reopen {
        /// The master's count of reopen requests; the answer names it.
        round: u64,
    },
    /// worker → master: the access log of reopen `round` is switched (`errno` 0: lines go
    /// to the new file from now on) or could not be opened (`errno` says why; the old file
    /// is still written to).
    Reopened {
        /// The round of the [`Message::Reopen`] answered.
        round: u64,
        /// 0, or the `errno` of the failed `open(2)`.
        errno: i32,
    },
    /// worker → master: why it cannot start (the line it logs), just before it exits; at
    /// most [`TEXT_BYTES_MAX`] bytes ([`Message::failed`] cuts a longer one). The master
    /// puts it in a failed reload's answer.
    Failed(String),
    /// worker → master: its handled requests' durations so far, with each stats report.
    Durations(Box<crate::durations::Durations>),
    /// worker → master: the handler's own metrics ([`crate::metric`]), with each stats
    /// report, when it defined any.
    Metrics(Vec<crate::metric::Sample>),
}

impl Message {
    /// [`Message::Failed`] with `why`, cut to [`TEXT_BYTES_MAX`] bytes at a character
    /// boundary.
    pub fn failed(why: &str) -> Message {
        let mut end = why.len().min(TEXT_BYTES_MAX);
        while !why.is_char_boundary(end) {
            end -= 1;
        }
        Message::Failed(why[..end].to_string())
    }
}

/// Why bytes could not be framed or unframed.
///
/// See [`Server::on_fork`](crate::Server::on_fork)'s example (the hooks and IPC).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame longer than [`FRAME_BYTES_MAX`], a user payload over [`USER_BYTES_MAX`], or
    /// more than [`MOUNTS_MAX`] mounts.
    Oversized,
    /// A length prefix of zero (a frame needs its type byte).
    Empty,
    /// A type byte no message has.
    UnknownType(u8),
    /// A payload of the wrong size for its type.
    BadPayload(u8),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Oversized => write!(f, "frame over {FRAME_BYTES_MAX} bytes"),
            FrameError::Empty => f.write_str("frame without a type"),
            FrameError::UnknownType(t) => write!(f, "unknown frame type {t}"),
            FrameError::BadPayload(t) => write!(f, "bad payload for frame type {t}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl FrameError {
    /// Whether the frame was whole and well delimited, only not understood (a type this
    /// build does not know, or a known type of another size): skip it and read on. A worker
    /// of a newer or older build (after a reload to a new binary) may send such frames.
    pub fn is_skippable(&self) -> bool {
        matches!(self, FrameError::UnknownType(_) | FrameError::BadPayload(_))
    }
}

/// The length of the first frame of `buf`, prefix included, when its prefix is there.
#[doc(hidden)]
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let prefix = buf.get(..4)?;
    Some(4 + u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as usize)
}

/// Appends `value`'s `postcard` encoding to `out`.
fn put<T: serde::Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let bytes = postcard::to_allocvec(value).map_err(|_| FrameError::Oversized)?;
    out.extend_from_slice(&bytes);
    Ok(())
}

/// `payload` decoded as a `T`, or the frame's payload error. Bytes after the value are
/// ignored: a newer build may append fields.
fn get<'a, T: serde::Deserialize<'a>>(payload: &'a [u8], kind: u8) -> Result<T, FrameError> {
    postcard::from_bytes(payload).map_err(|_| FrameError::BadPayload(kind))
}

/// Appends `msg` as one frame to `out`: its length, its type byte, and its payload, the
/// message's data in `postcard` (serde), except a user message's bytes, sent as they are.
/// Nothing is appended when it would exceed [`FRAME_BYTES_MAX`].
#[doc(hidden)]
pub fn encode(msg: &Message, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let encoded = encode_payload(msg, out);
    let len = out.len() - start - 4;
    if encoded.is_err() || 4 + len > FRAME_BYTES_MAX {
        out.truncate(start);
        return Err(encoded.err().unwrap_or(FrameError::Oversized));
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// The type byte and the payload of `msg`.
fn encode_payload(msg: &Message, out: &mut Vec<u8>) -> Result<(), FrameError> {
    match msg {
        Message::Ready => out.push(TYPE_READY),
        Message::Stats(s) => {
            out.push(TYPE_STATS);
            // Its fields as a sequence of words: a build with fields appended sends more.
            put(&s.to_words()[..], out)?;
        }
        Message::Mounts(m) if m.len() > MOUNTS_MAX => return Err(FrameError::Oversized),
        Message::Mounts(m) => {
            out.push(TYPE_MOUNTS);
            let words: Vec<[u64; MOUNT_WORDS]> = m.iter().map(|m| m.to_words()).collect();
            put(&words, out)?;
        }
        Message::Shutdown { drain_ms } => {
            out.push(TYPE_SHUTDOWN);
            put(drain_ms, out)?;
        }
        Message::Adopt { slot } => {
            out.push(TYPE_ADOPT);
            put(slot, out)?;
        }
        Message::Release { slot } => {
            out.push(TYPE_RELEASE);
            put(slot, out)?;
        }
        Message::Reopen { round } => {
            out.push(TYPE_REOPEN);
            put(round, out)?;
        }
        Message::Reopened { round, errno } => {
            out.push(TYPE_REOPENED);
            put(&(round, errno), out)?;
        }
        Message::User(bytes) if bytes.len() > USER_BYTES_MAX => return Err(FrameError::Oversized),
        Message::User(bytes) => {
            out.push(TYPE_USER);
            out.extend_from_slice(bytes);
        }
        Message::Failed(why) if why.len() > TEXT_BYTES_MAX => return Err(FrameError::Oversized),
        Message::Failed(why) => {
            out.push(TYPE_FAILED);
            put(why, out)?;
        }
        Message::Durations(d) => {
            out.push(TYPE_DURATIONS);
            put(&**d, out)?;
        }
        Message::Metrics(m) if m.len() > crate::metric::METRICS_MAX => {
            return Err(FrameError::Oversized)
        }
        Message::Metrics(m) => {
            out.push(TYPE_METRICS);
            put(m, out)?;
        }
    }
    Ok(())
}

/// Takes the first whole frame off the front of `buf`: `Ok(Some((message, consumed)))`,
/// `Ok(None)` when the frame is not complete yet, or an error when the bytes cannot be a
/// frame (the stream cannot be trusted after that; close it), or a frame this build cannot
/// read ([`FrameError::is_skippable`]).
#[doc(hidden)]
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, FrameError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > FRAME_BYTES_MAX - 4 {
        return Err(FrameError::Oversized);
    }
    let Some(frame) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    let (kind, payload) = (frame[0], &frame[1..]);
    let msg = match kind {
        TYPE_READY if payload.is_empty() => Message::Ready,
        // Any number of words: a build with fields appended sends more (ignored), an older
        // one fewer (zeros), so that workers of another build report across a reload.
        TYPE_STATS => {
            let words: Vec<u64> = get(payload, kind)?;
            if words.is_empty() {
                return Err(FrameError::BadPayload(kind));
            }
            Message::Stats(Stats::from_words(std::array::from_fn(|i| {
                words.get(i).copied().unwrap_or(0)
            })))
        }
        TYPE_MOUNTS => {
            let words: Vec<[u64; MOUNT_WORDS]> = get(payload, kind)?;
            if words.len() > MOUNTS_MAX {
                return Err(FrameError::BadPayload(kind));
            }
            Message::Mounts(words.into_iter().map(MountStats::from_words).collect())
        }
        TYPE_SHUTDOWN => Message::Shutdown {
            drain_ms: get(payload, kind)?,
        },
        TYPE_ADOPT => Message::Adopt {
            slot: get(payload, kind)?,
        },
        TYPE_RELEASE => Message::Release {
            slot: get(payload, kind)?,
        },
        TYPE_REOPEN => Message::Reopen {
            round: get(payload, kind)?,
        },
        TYPE_REOPENED => {
            let (round, errno): (u64, i32) = get(payload, kind)?;
            Message::Reopened { round, errno }
        }
        TYPE_USER => Message::User(payload.to_vec()),
        TYPE_FAILED => Message::Failed(get(payload, kind)?),
        TYPE_DURATIONS => Message::Durations(Box::new(get(payload, kind)?)),
        TYPE_METRICS => {
            let samples: Vec<crate::metric::Sample> = get(payload, kind)?;
            if samples.len() > crate::metric::METRICS_MAX {
                return Err(FrameError::BadPayload(kind));
            }
            Message::Metrics(samples)
        }
        TYPE_READY => return Err(FrameError::BadPayload(kind)),
        other => return Err(FrameError::UnknownType(other)),
    };
    Ok(Some((msg, 4 + len)))
}

/// Why a message was not sent.
///
/// See [`Server::on_fork`](crate::Server::on_fork)'s example (the hooks and IPC).
///
/// # Examples
///
/// ```
/// use ringmaster::{send_to_master, SendError};
///
/// // Only a worker has a master to send to: not this process.
/// assert_eq!(send_to_master(b"hello"), Err(SendError::NotAWorker));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// Over [`USER_BYTES_MAX`] bytes.
    TooLarge,
    /// The pipe is full: the other side is not reading. Try again later.
    Full,
    /// No such worker, or the other side is gone.
    Gone,
    /// [`send_to_master`](crate::send_to_master) was called outside a worker.
    NotAWorker,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::TooLarge => "message over the IPC size limit",
            SendError::Full => "the pipe is full (the other side is not reading)",
            SendError::Gone => "no such worker, or it is gone",
            SendError::NotAWorker => "send_to_master called outside a worker",
        })
    }
}

impl std::error::Error for SendError {}

/// Writes one frame without blocking: a frame fits `PIPE_BUF`, so it goes whole or not at all.
pub(crate) fn write_frame(fd: BorrowedFd<'_>, msg: &Message) -> Result<(), SendError> {
    let mut frame = Vec::with_capacity(FRAME_BYTES_MAX);
    encode(msg, &mut frame).map_err(|_| SendError::TooLarge)?;
    match nix::unistd::write(fd, &frame) {
        Ok(n) if n == frame.len() => Ok(()),
        Ok(_) => Err(SendError::Gone),
        Err(nix::errno::Errno::EAGAIN) => Err(SendError::Full),
        Err(_) => Err(SendError::Gone),
    }
}

/// The write end of this worker's pipe to the master; -1 in the master.
static TO_MASTER: AtomicI32 = AtomicI32::new(-1);

/// Records this worker's pipe to the master (right after fork).
pub(crate) fn set_to_master(fd: RawFd) {
    TO_MASTER.store(fd, Ordering::Relaxed);
}

/// This worker's pipe to the master, `None` in the master.
pub(crate) fn to_master() -> Option<RawFd> {
    let fd = TO_MASTER.load(Ordering::Relaxed);
    (fd >= 0).then_some(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(msg: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        encode(msg, &mut out).unwrap();
        out
    }

    #[test]
    fn round_trips_every_message() {
        let stats = Stats::from_words(std::array::from_fn(|i| i as u64 * 1000 + 1));
        let mount = |m: u64| MountStats::from_words(std::array::from_fn(|i| m * 10 + i as u64));
        for msg in [
            Message::Ready,
            Message::Stats(stats),
            Message::Mounts(Vec::new()),
            Message::Mounts(vec![mount(1)]),
            Message::Mounts((0..MOUNTS_MAX as u64).map(mount).collect()),
            Message::Shutdown { drain_ms: 10_000 },
            Message::Adopt { slot: 3 },
            Message::Release { slot: u32::MAX },
            Message::Reopen { round: 1 },
            Message::Reopen { round: u64::MAX },
            Message::Reopened { round: 2, errno: 0 },
            Message::Reopened {
                round: 3,
                errno: libc::EACCES,
            },
            Message::Reopened {
                round: 4,
                errno: i32::MIN,
            },
            Message::User(Vec::new()),
            Message::User(vec![7; USER_BYTES_MAX]),
            Message::failed("cannot start: the handler's start failed: no database"),
            Message::Durations(Box::new({
                let mut d = crate::durations::Durations::default();
                d.record(200, 1_234);
                d.record(503, u64::MAX);
                d
            })),
            Message::failed(&"é".repeat(USER_BYTES_MAX)),
        ] {
            let bytes = frame(&msg);
            assert!(bytes.len() <= FRAME_BYTES_MAX);
            assert_eq!(decode(&bytes), Ok(Some((msg, bytes.len()))));
        }
    }

    #[test]
    fn truncated_frames_wait_for_more() {
        let bytes = frame(&Message::Shutdown { drain_ms: 5 });
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn frames_follow_each_other() {
        let mut bytes = frame(&Message::Ready);
        bytes.extend(frame(&Message::User(b"hi".to_vec())));
        let (first, used) = decode(&bytes).unwrap().unwrap();
        assert_eq!(first, Message::Ready);
        let (second, _) = decode(&bytes[used..]).unwrap().unwrap();
        assert_eq!(second, Message::User(b"hi".to_vec()));
    }

    /// A frame of type `kind` whose payload is `value` in `postcard`.
    fn raw_frame<T: serde::Serialize>(kind: u8, value: &T) -> Vec<u8> {
        let payload = postcard::to_allocvec(value).unwrap();
        let mut bytes = ((1 + payload.len()) as u32).to_le_bytes().to_vec();
        bytes.push(kind);
        bytes.extend(payload);
        bytes
    }

    #[test]
    fn frames_of_another_build_are_read_or_skipped() {
        // Stats from a build with one more field, and from one with fewer.
        let stats = Stats::from_words(std::array::from_fn(|i| i as u64 + 1));
        let mut words = stats.to_words().to_vec();
        words.push(99);
        let more = raw_frame(TYPE_STATS, &words);
        assert_eq!(
            decode(&more).unwrap(),
            Some((Message::Stats(stats), more.len()))
        );
        let fewer = raw_frame(TYPE_STATS, &vec![7u64]);
        let Some((Message::Stats(got), used)) = decode(&fewer).unwrap() else {
            panic!("stats of one field")
        };
        assert_eq!(used, fewer.len());
        assert_eq!(got.requests, 7);
        assert_eq!(got.plus(&Stats::default()).connections, 0);
        // A type this build does not know: whole, so skipped, and the next frame is read.
        let mut two = vec![3, 0, 0, 0, 200, 1, 2];
        encode(&Message::Ready, &mut two).unwrap();
        let e = decode(&two).unwrap_err();
        assert!(e.is_skippable());
        let skip = frame_len(&two).unwrap();
        assert_eq!(skip, 7);
        assert_eq!(decode(&two[skip..]).unwrap(), Some((Message::Ready, 5)));
        assert!(!FrameError::Oversized.is_skippable() && !FrameError::Empty.is_skippable());
    }

    #[test]
    fn garbage_is_refused() {
        let cases: &[(&[u8], FrameError)] = &[
            (&[0, 0, 0, 0], FrameError::Empty),
            (&[0xff, 0xff, 0xff, 0xff, 1], FrameError::Oversized),
            (&[0xfd, 0x0f, 0, 0], FrameError::Oversized),
            (&[1, 0, 0, 0, 99], FrameError::UnknownType(99)),
            (
                &[2, 0, 0, 0, TYPE_READY, 0],
                FrameError::BadPayload(TYPE_READY),
            ),
            // No words at all.
            (
                &[2, 0, 0, 0, TYPE_STATS, 0],
                FrameError::BadPayload(TYPE_STATS),
            ),
            // One mount announced, one word of its five there.
            (
                &[3, 0, 0, 0, TYPE_MOUNTS, 1, 5],
                FrameError::BadPayload(TYPE_MOUNTS),
            ),
            (
                &[1, 0, 0, 0, TYPE_SHUTDOWN],
                FrameError::BadPayload(TYPE_SHUTDOWN),
            ),
            // A varint that never ends.
            (
                &[2, 0, 0, 0, TYPE_REOPEN, 0x80],
                FrameError::BadPayload(TYPE_REOPEN),
            ),
            // The round without its errno.
            (
                &[2, 0, 0, 0, TYPE_REOPENED, 1],
                FrameError::BadPayload(TYPE_REOPENED),
            ),
            // Text that is not UTF-8.
            (
                &[3, 0, 0, 0, TYPE_FAILED, 1, 0xff],
                FrameError::BadPayload(TYPE_FAILED),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode(bytes), Err(*want), "bytes {bytes:?}");
        }
    }

    #[test]
    fn a_reopened_errno_past_i32_is_refused() {
        let bytes = raw_frame(TYPE_REOPENED, &(1u64, i64::from(i32::MAX) + 1));
        assert_eq!(decode(&bytes), Err(FrameError::BadPayload(TYPE_REOPENED)));
    }

    #[test]
    fn mounts_past_the_bound_are_refused_both_ways() {
        let mut out = Vec::new();
        let over = vec![MountStats::default(); MOUNTS_MAX + 1];
        assert_eq!(
            encode(&Message::Mounts(over), &mut out),
            Err(FrameError::Oversized)
        );
        assert!(out.is_empty());
        // A frame of one mount more than the bound (it still fits a pipe write).
        let words = vec![[0u64; MOUNT_WORDS]; MOUNTS_MAX + 1];
        let bytes = raw_frame(TYPE_MOUNTS, &words);
        assert!(bytes.len() <= FRAME_BYTES_MAX);
        assert_eq!(decode(&bytes), Err(FrameError::BadPayload(TYPE_MOUNTS)));
        // The most there may be, each counter at its largest, fit one frame.
        let most = vec![
            MountStats {
                requests: u64::MAX,
                bytes: u64::MAX,
                upstream_errors: u64::MAX,
                upstream_open: u64::MAX,
                upstream_idle: u64::MAX,
            };
            MOUNTS_MAX
        ];
        assert!(encode(&Message::Mounts(most), &mut out).is_ok());
    }

    #[test]
    fn mount_totals_add_up_and_take_gauges_from_now() {
        let a = MountStats {
            requests: 3,
            bytes: 30,
            upstream_errors: 1,
            upstream_open: 4,
            upstream_idle: 2,
        };
        let mut sum = vec![a];
        add_mounts(&mut sum, &[a, a]);
        assert_eq!(sum.len(), 2, "grows to the longer list");
        assert_eq!((sum[0].requests, sum[0].upstream_open), (6, 8));
        assert_eq!(sum[1], a);
        let live = MountStats {
            upstream_open: 1,
            ..MountStats::default()
        };
        let now = sum[0].gauges_from(&live);
        assert_eq!(
            (now.requests, now.upstream_open, now.upstream_idle),
            (6, 1, 0)
        );
    }

    #[test]
    fn oversized_user_payload_is_refused_at_encode() {
        let mut out = Vec::new();
        assert_eq!(
            encode(&Message::User(vec![0; USER_BYTES_MAX + 1]), &mut out),
            Err(FrameError::Oversized)
        );
        assert!(out.is_empty());
    }
}
