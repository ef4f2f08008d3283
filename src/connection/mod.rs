//! One client connection, owned here: its state, buffers and timers, the byte processing
//! that turns received bytes into responses, and the decision of what the ring must do next.
//!
//! The worker hands a connection typed events (bytes received, the receive ended, a send
//! completed, the write side was shut, the descriptor closed, a tick, a send-queue sample)
//! and asks it, with [`Conn::next_act`], what the ring must do: send these bytes, arm or
//! cancel the receive, shut the write side, reset and close, sample the send queue, free the
//! slot. No ring operation happens here and no field is written from outside, so every
//! transition is in this module, and unit tests drive it without a ring.
//!
//! | file | what it owns |
//! | --- | --- |
//! | `mod.rs` | [`Conn`], its phases and sub-states, the events and the acts |
//! | `process.rs` | the byte processing: parse, decode the body, call the handler, encode, refuse |
//! | `send_rate.rs` | the minimum send rate's watch ([`SendWatch`]) |
//! | `peer.rs` | the client's address, as far as it is known |
//! | `output.rs` | the unsent response bytes ([`output::Output`]) |
//! | `ctx.rs` | what all connections of a worker share ([`Ctx`]): handler, limits, pool, counters |
//! | `drive.rs` | a connection driven without a ring, for fuzzing and property tests |

mod ctx;
pub mod drive;
mod output;
mod peer;
mod process;
mod send_rate;
mod stream;

pub(crate) use ctx::{
    AccessLog, Counters, Ctx, Drain, ACCESS_LOG_BYTES_MAX, DURATIONS_PENDING_MAX,
};
pub(crate) use send_rate::SendWatch;

use crate::config::Timeouts;
use crate::pool::BufPool;
use crate::rt::splice::FileRange;
use crate::Serve;
use output::{Output, Piece};
use peer::Peer;
use process::{ChunkedBody, Pending};
use ringmaster_uring::{Desc, OpId};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use stream::{StreamOut, Upload};

/// A body's arrival rate is measured over windows this long.
pub(crate) const BODY_RATE_WINDOW: Duration = Duration::from_secs(5);
/// After an error response the connection is half-closed and its input drained for at most
/// this long, so that the client reads the status instead of a reset.
pub(crate) const LINGER_MAX: Duration = Duration::from_secs(2);

/// Where a connection is in its life. The transitions, all in this module:
/// `Open → Finishing` (the last request is answered, refused, or the input ended),
/// `Finishing(Linger) → Lingering` (its output is sent), `Open | Finishing | Lingering →
/// Closing` (a timer, an error, the end), `Closing(Due) → Closing(Submitted) →
/// Closing(Closed)` and then the slot is freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading requests and answering them.
    Open,
    /// No further request is read (the last one said close, was refused, or the peer shut
    /// its side); once the output is sent the connection lingers or closes.
    Finishing(AfterOutput),
    /// The output is sent and the write side shut (or being shut): input is read and
    /// dropped until the peer closes or `until`, then the connection closes. Closing at
    /// once could reset the connection before the client read the last response.
    Lingering { shut: Shut, until: Instant },
    /// Being torn down: the slot is freed when every operation on it has ended.
    Closing(Teardown),
}

/// What a finishing connection does once its output is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterOutput {
    Close,
    /// Shut the write side and drain input first: the client may still be sending (after
    /// an error, or requests after a close).
    Linger,
}

/// The shutdown of a lingering connection's write side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shut {
    /// Submitted; its completion is still to come (the descriptor must not close before).
    Submitted,
    Done,
}

/// The steps of a teardown, after the receive and any send were cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Teardown {
    /// The close is still to be submitted, after a reset (`SO_LINGER` zero) when `reset`.
    Due { reset: bool },
    /// The close was submitted.
    Submitted,
    /// The descriptor is closed.
    Closed,
}

/// The connection's receive operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recv {
    /// None armed.
    Idle,
    /// Armed (multishot, or one single-shot receive).
    Armed(OpId),
    /// A cancel was submitted; the receive's last completion is still to come.
    Cancelling(OpId),
    /// The peer closed or the socket failed: nothing more will be read.
    Ended,
}

/// The connection's send: at most one in flight, so responses stay in order.
#[derive(Debug, PartialEq, Eq)]
enum Sending {
    /// No send in flight.
    Idle,
    /// A send that went out in part: the rest of `buf`, from `offset`, is to be sent next.
    Rest { buf: Vec<u8>, offset: usize },
    /// A send of the buffer the ring holds: `offset` bytes of it went out before, and it
    /// last made progress at `since`.
    InFlight {
        op: OpId,
        offset: usize,
        since: Instant,
    },
    /// Being cancelled by a teardown; its completion is still to come.
    Cancelling,
    /// A file range going out by splice, a pipe's worth at a time.
    Splicing(Box<Splicing>),
}

/// A file range being spliced: file → pipe (the fill) linked to pipe → socket (the drain),
/// or a drain alone of what a short one left in the pipe. See [`crate::rt::splice`].
#[derive(Debug, PartialEq, Eq)]
struct Splicing {
    range: FileRange,
    /// The fill in flight.
    fill: Option<OpId>,
    /// The drain in flight.
    drain: Option<OpId>,
    /// When it last made progress (the send timer).
    since: Instant,
    /// A fill or drain failed (the file ended early, the client went away): it ends once
    /// nothing is in flight, and the connection closes.
    broken: bool,
    /// Cancels were pushed for what is in flight (a teardown); pushed again each tick
    /// while anything is still in flight, since a drain the kernel had not started when
    /// its fill's cancel came may start after it.
    cancelled: bool,
}

impl Splicing {
    fn in_flight(&self) -> bool {
        self.fill.is_some() || self.drain.is_some()
    }
}

/// How receives are armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RecvMode {
    /// One multishot receive for the life of the connection.
    Multishot,
    /// One buffer at a time: the client has sent more than it reads (its output reached the
    /// bound), so its input stays within a buffer of what it needs.
    OneBuffer,
}

/// Whether a `100 Continue` went out for the request being received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Interim {
    None,
    ContinueSent,
}

/// What the connection waits for from the client, and since when: the timer that applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// The first request's head, since the connection was accepted.
    First { since: Instant },
    /// Nothing: between requests, since the last one was answered (idle timeout).
    Idle { since: Instant },
    /// The rest of a head whose first bytes came at `since` (head timeout).
    Head { since: Instant },
    /// A body: `bytes` arrived since `window` began (minimum rate).
    Body { window: Instant, bytes: u64 },
    /// Nothing from the client: whole requests wait for the output to drain.
    Output,
    /// The async handler's future for the request taken at `since` (handler timeout).
    Handler { since: Instant },
    /// A whole request waits, since `since`, for a handler slot (handler timeout).
    Room { since: Instant },
    /// A streamed response body, whose producer last gave bytes at `since` (handler
    /// timeout, while the output is empty: a stalled producer, not a slow client).
    Stream { since: Instant },
}

/// What happens to a connection whose timer ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// Answer `408 Request Timeout`, then close.
    RequestTimeout,
    /// Close without a word (idle keep-alive, nothing ever received, the linger is over).
    Close,
    /// The client does not read: drop the output and reset.
    Abort,
    /// The handler did not answer in time (or no slot freed in time): `503`, then close.
    HandlerTimeout,
}

/// How a receive operation ended (its last completion).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecvEnd {
    /// End of stream: the peer sends no more.
    Eof,
    /// It ended with data (a single-shot receive, or the kernel stopped a multishot one):
    /// arm another.
    Stopped,
    /// Every provided buffer was in use (`-ENOBUFS`): arm another; nothing was lost.
    NoBuffers,
    /// Cancelled.
    Cancelled,
    /// The socket failed (a reset): nothing more can be read or sent.
    Failed,
}

/// What the ring must do for a connection, one act at a time ([`Conn::next_act`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Act {
    /// Send `buf[offset..]`, with more to follow at once when `more` (a response's head
    /// before its spliced body: they share segments); report the operation with
    /// [`Conn::send_started`].
    Send {
        buf: Vec<u8>,
        offset: usize,
        more: bool,
    },
    /// Splice `fill` bytes of file `file` at `offset` into the pipe `pipe_write`, linked to a
    /// splice of `drain` bytes from `pipe_read` into the socket; with `fill` zero, the drain
    /// alone. Report the operations with [`Conn::splice_started`] and the completions with
    /// [`Conn::on_fill`] and [`Conn::on_drain`].
    Splice {
        file: std::os::fd::RawFd,
        offset: u64,
        pipe_write: std::os::fd::RawFd,
        pipe_read: std::os::fd::RawFd,
        fill: u32,
        drain: u32,
    },
    /// Arm a receive; report it with [`Conn::recv_started`].
    Recv { multishot: bool },
    /// Cancel this operation of the connection's.
    Cancel(OpId),
    /// Shut the write side; report the completion with [`Conn::on_shut`].
    ShutWrite,
    /// Make the coming close reset the connection (`SO_LINGER` on, zero seconds).
    Reset,
    /// Close the descriptor; report the completion with [`Conn::on_closed`].
    Close,
    /// Sample the send queue (`SIOCOUTQ`) for the minimum send rate; report the result
    /// with [`Conn::on_send_sample`] (and a ring operation with [`Conn::sampling_with`]).
    SampleSendQueue,
    /// Every operation has ended: free the slot. Nothing follows.
    Free,
}

/// One connection.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Its slot in the worker's table: the owner of a task it starts.
    slot: u32,
    fd: Desc,
    /// The client's address, when something needs it.
    peer: Peer,
    phase: Phase,
    recv: Recv,
    recv_mode: RecvMode,
    send: Sending,
    wait: Wait,
    interim: Interim,
    /// Bytes of requests not yet answered (a partial request, or pipelined requests held
    /// back by the output bound). Holds no buffer when empty.
    input: Vec<u8>,
    /// Responses not yet handed to a send. Holds no buffer when empty.
    output: Output,
    /// The chunked body being received, if any.
    chunked: Option<ChunkedBody>,
    /// Bytes of output the kernel accepted (sends completed with them).
    sent: u64,
    /// Bytes of output the client had taken (acknowledged) at the last sample.
    taken: u64,
    /// The minimum send rate's watch.
    send_watch: SendWatch,
    /// The request whose async handler's future waits, if any.
    awaiting: Option<Pending>,
    /// The response body being streamed, if any.
    streaming: Option<StreamOut>,
    /// The request body being handed to the handler as it arrives, if any.
    upload: Option<Upload>,
}

impl Conn {
    /// A connection accepted at `now`, from `peer` when its address is known already.
    pub(crate) fn new(slot: u32, fd: Desc, peer: Option<IpAddr>, now: Instant) -> Conn {
        Conn {
            slot,
            fd,
            peer: peer.map_or(Peer::Unknown, Peer::Known),
            phase: Phase::Open,
            recv: Recv::Idle,
            recv_mode: RecvMode::Multishot,
            send: Sending::Idle,
            wait: Wait::First { since: now },
            interim: Interim::None,
            input: Vec::new(),
            output: Output::default(),
            chunked: None,
            sent: 0,
            taken: 0,
            send_watch: SendWatch::Off,
            awaiting: None,
            streaming: None,
            upload: None,
        }
    }

    /// The connection's descriptor.
    pub(crate) fn fd(&self) -> Desc {
        self.fd
    }

    /// Whether it still reads and answers requests.
    pub(crate) fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    // ---- Events: completions and timers, as the worker reports them. ----

    /// The receive operation ended (its last completion), after any data it carried was
    /// handed to [`Conn::on_data`].
    pub(crate) fn on_recv_end<H: Serve>(&mut self, end: RecvEnd, ctx: &mut Ctx<'_, H>) {
        let waits = self.awaiting.is_some() || self.streaming.is_some();
        if matches!(end, RecvEnd::Eof | RecvEnd::Failed) && waits {
            // The client went away while its request's future waited, or while its body
            // streamed (a half-close is taken as going away, as nginx takes it for a
            // proxied request): the futures are dropped, cancelling what they waited on,
            // and nothing more is answered.
            ctx.counters.handlers_cancelled += 1;
            self.end_task(ctx);
            self.end_stream(ctx);
            self.discard(&mut ctx.pool);
            self.phase = Phase::Finishing(AfterOutput::Close);
        }
        self.recv = match end {
            RecvEnd::Eof => Recv::Ended,
            RecvEnd::Stopped | RecvEnd::NoBuffers | RecvEnd::Cancelled => Recv::Idle,
            RecvEnd::Failed => {
                // A reset and the like: nothing more can be sent either.
                self.discard(&mut ctx.pool);
                if self.phase == Phase::Open {
                    self.phase = Phase::Finishing(AfterOutput::Close);
                }
                Recv::Ended
            }
        };
        if self.recv == Recv::Ended && self.phase == Phase::Open && !self.holds_requests() {
            // Requests held back by the output bound or for a handler slot are answered
            // once it drains or one frees.
            self.settle_end_of_input(ctx);
        }
    }

    /// A send completed with `result`, handing back its buffer.
    pub(crate) fn on_sent<H: Serve>(
        &mut self,
        result: std::io::Result<u32>,
        buf: Vec<u8>,
        ctx: &mut Ctx<'_, H>,
    ) {
        let offset = match self.send {
            Sending::InFlight { offset, .. } => Some(offset),
            Sending::Cancelling => None,
            Sending::Idle | Sending::Rest { .. } | Sending::Splicing(_) => {
                unreachable!("a send completed with none in flight: {:?}", self.send)
            }
        };
        match (result, offset) {
            (Ok(n), offset) => {
                ctx.counters.bytes_out += u64::from(n);
                self.sent += u64::from(n);
                let offset = offset.map(|o| o + n as usize);
                if let Some(offset) = offset.filter(|&o| o < buf.len() && n > 0) {
                    // A short send: the rest goes next, still in order.
                    self.send = Sending::Rest { buf, offset };
                    return;
                }
                self.send = Sending::Idle;
                ctx.pool.put(buf);
                self.resume(ctx);
            }
            (Err(_), _) => {
                // The peer is gone, or the send was cancelled: drop what is left and close.
                self.send = Sending::Idle;
                ctx.pool.put(buf);
                self.discard(&mut ctx.pool);
                if self.phase == Phase::Open {
                    self.phase = Phase::Finishing(AfterOutput::Close);
                }
            }
        }
    }

    /// The fill of the splice in flight (file → pipe) completed with `result` (bytes, or a
    /// negated errno).
    pub(crate) fn on_fill<H: Serve>(&mut self, result: i32, ctx: &mut Ctx<'_, H>) {
        let Sending::Splicing(s) = &mut self.send else {
            unreachable!("a fill completed with no splice: {:?}", self.send)
        };
        s.fill = None;
        match u32::try_from(result) {
            Ok(n) if n > 0 => {
                s.range.pipe.held += n;
                s.range.offset += u64::from(n);
                s.range.left -= u64::from(n).min(s.range.left);
            }
            // The file ended before the promised length, or could not be read.
            _ => {
                if result != -libc::ECANCELED {
                    crate::log::log_limited!(
                        "a file being sent ended early or failed ({}); its connection closes",
                        if result == 0 {
                            "end of file".to_string()
                        } else {
                            std::io::Error::from_raw_os_error(-result).to_string()
                        }
                    );
                }
                s.broken = true;
            }
        }
        self.after_splice(ctx);
    }

    /// The drain of the splice in flight (pipe → socket) completed with `result`. A drain
    /// cancelled because its fill came up short (the link) is no failure: what the fill
    /// moved is drained next.
    pub(crate) fn on_drain<H: Serve>(&mut self, result: i32, ctx: &mut Ctx<'_, H>) {
        let Sending::Splicing(s) = &mut self.send else {
            unreachable!("a drain completed with no splice: {:?}", self.send)
        };
        s.drain = None;
        match u32::try_from(result) {
            Ok(n) if n > 0 => {
                s.range.pipe.held -= n.min(s.range.pipe.held);
                s.since = ctx.now;
                self.sent += u64::from(n);
                ctx.counters.bytes_out += u64::from(n);
                ctx.counters.bytes_spliced += u64::from(n);
            }
            _ if result == -libc::ECANCELED && !s.cancelled => {}
            // The client is gone (or the drain was cancelled by a teardown).
            _ => s.broken = true,
        }
        self.after_splice(ctx);
    }

    /// After a splice's operation ended: once none is in flight, the range goes on (the
    /// next act), is done (the output goes on), or ends the connection (it broke).
    fn after_splice<H: Serve>(&mut self, ctx: &mut Ctx<'_, H>) {
        let Sending::Splicing(s) = &self.send else {
            return;
        };
        if s.in_flight() {
            return;
        }
        if s.broken || s.cancelled {
            // Dropping the range closes a pipe with bytes left in it.
            self.send = Sending::Idle;
            self.discard(&mut ctx.pool);
            if matches!(self.phase, Phase::Open | Phase::Finishing(_)) {
                self.phase = Phase::Finishing(AfterOutput::Close);
            }
            return;
        }
        if s.range.unsent() == 0 {
            self.send = Sending::Idle;
            self.resume(ctx);
        }
    }

    /// The splice of the last [`Act::Splice`] is the ring's operations `fill` (if any) and
    /// `drain`, started at `now`.
    pub(crate) fn splice_started(&mut self, fill: Option<OpId>, drain: OpId, now: Instant) {
        let Sending::Splicing(s) = &mut self.send else {
            unreachable!("a splice started with none due: {:?}", self.send)
        };
        debug_assert!(!s.in_flight());
        s.fill = fill;
        s.drain = Some(drain);
        s.since = now;
    }

    /// The shutdown of the write side completed.
    pub(crate) fn on_shut(&mut self) {
        if let Phase::Lingering { until, .. } = self.phase {
            self.phase = Phase::Lingering {
                shut: Shut::Done,
                until,
            };
        }
    }

    /// The close of the descriptor completed.
    pub(crate) fn on_closed(&mut self) {
        debug_assert_eq!(self.phase, Phase::Closing(Teardown::Submitted));
        self.phase = Phase::Closing(Teardown::Closed);
    }

    /// The worker's tick: enforces the connection's timer (head and body deadlines answer
    /// 408, idle and linger ends close, a send that makes no progress resets) and schedules
    /// a send-queue sample when one is due. Returns whether anything changed, so that the
    /// worker acts on the connection.
    pub(crate) fn on_tick<H: Serve>(&mut self, ctx: &mut Ctx<'_, H>) -> bool {
        let now = ctx.now;
        if let (Phase::Closing(_), Sending::Splicing(s)) = (self.phase, &mut self.send) {
            if s.cancelled && s.in_flight() {
                // Cancel again what is still in flight (see `Splicing::cancelled`).
                s.cancelled = false;
                return true;
            }
        }
        let expired = match self.expired(now, &ctx.timeouts) {
            Some(Expiry::RequestTimeout) => {
                self.time_out(ctx);
                true
            }
            Some(Expiry::Close) => {
                self.begin_close(false, &mut ctx.pool);
                true
            }
            Some(Expiry::Abort) => {
                self.abort(ctx);
                true
            }
            Some(Expiry::HandlerTimeout) => {
                ctx.counters.timeouts += 1;
                ctx.counters.handlers_timed_out += 1;
                self.end_task(ctx);
                self.input.clear();
                if let Some(chunked) = self.chunked.take() {
                    ctx.pool.put(chunked.body);
                }
                self.refuse(503, &"the handler did not answer in time", ctx);
                true
            }
            None => {
                self.roll_body_window(now);
                false
            }
        };
        expired | self.send_sample_due(now, &ctx.timeouts)
    }

    // ---- Acts: what the ring must do, asked after events. ----

    /// The next thing the ring must do for this connection, if any. Each act moves the
    /// connection to the state it leads to; call until `None`. An act the worker must
    /// report (a send, a receive) is reported before the next call.
    pub(crate) fn next_act<H: Serve>(&mut self, ctx: &mut Ctx<'_, H>) -> Option<Act> {
        if self.phase != Phase::Open && (self.awaiting.is_some() || self.streaming.is_some()) {
            // Whatever ended the connection ends its request's futures too.
            ctx.counters.handlers_cancelled += 1;
            self.end_task(ctx);
        }
        if self.phase != Phase::Open {
            self.end_stream(ctx);
        }
        if let Phase::Closing(step) = self.phase {
            return self.teardown_act(step, &mut ctx.pool);
        }
        if let Some(send) = self.send_act(ctx.now) {
            return Some(send);
        }
        if let Some(sample) = self.sample_act() {
            return Some(sample);
        }
        match self.phase {
            Phase::Open if ctx.drain == Drain::IdleClosing && self.is_idle() => {
                self.begin_close(false, &mut ctx.pool);
            }
            Phase::Finishing(AfterOutput::Linger) if self.is_idle() => {
                // Everything is sent: shut the write side so the client sees the end of
                // the response, and keep reading until it closes (or the linger ends).
                self.phase = Phase::Lingering {
                    shut: Shut::Submitted,
                    until: ctx.now + LINGER_MAX,
                };
                return Some(Act::ShutWrite);
            }
            Phase::Finishing(AfterOutput::Close) if self.is_idle() => {
                self.begin_close(false, &mut ctx.pool);
            }
            Phase::Lingering {
                shut: Shut::Done, ..
            } if self.recv == Recv::Ended => self.begin_close(false, &mut ctx.pool),
            _ => {}
        }
        if let Phase::Closing(step) = self.phase {
            return self.teardown_act(step, &mut ctx.pool);
        }
        match (self.recv, self.wants_read(ctx.output_bytes_max)) {
            (Recv::Idle, true) => {
                // The first request gets a single-shot receive: a client that sends one
                // request and closes (or is closed) then needs no cancel. Later ones get a
                // multishot receive, armed once for the life of the connection.
                let first = matches!(self.wait, Wait::First { .. });
                let multishot = self.recv_mode == RecvMode::Multishot && !first;
                Some(Act::Recv { multishot })
            }
            (Recv::Armed(op), false) if self.phase == Phase::Open => {
                // Output is backed up: stop reading until the client reads.
                self.recv = Recv::Cancelling(op);
                Some(Act::Cancel(op))
            }
            _ => None,
        }
    }

    /// The send of the last [`Act::Send`] is the ring's operation `op`, started at `now`.
    pub(crate) fn send_started(&mut self, op: OpId, offset: usize, now: Instant) {
        debug_assert_eq!(self.send, Sending::Idle);
        self.send = Sending::InFlight {
            op,
            offset,
            since: now,
        };
    }

    /// The receive of the last [`Act::Recv`] is the ring's operation `op`.
    pub(crate) fn recv_started(&mut self, op: OpId) {
        debug_assert_eq!(self.recv, Recv::Idle);
        self.recv = Recv::Armed(op);
    }

    /// The output's next buffer, the rest of a short send, or the next step of a splice,
    /// when nothing is in flight. Kept small, to be inlined on the hot path; splices are
    /// out of line.
    #[inline]
    fn send_act(&mut self, now: Instant) -> Option<Act> {
        match std::mem::replace(&mut self.send, Sending::Idle) {
            Sending::Rest { buf, offset } => Some(Act::Send {
                buf,
                offset,
                more: self.output.file_is_next(),
            }),
            Sending::Idle => match self.output.take_next()? {
                Piece::Bytes(buf) => Some(Act::Send {
                    buf,
                    offset: 0,
                    more: self.output.file_is_next(),
                }),
                Piece::File(range) => self.start_splice(range, now),
            },
            Sending::Splicing(s) => self.splice_act(s),
            busy => {
                self.send = busy;
                None
            }
        }
    }

    /// Starts sending a file range by splice: its first step.
    #[inline(never)]
    fn start_splice(&mut self, range: FileRange, now: Instant) -> Option<Act> {
        self.splice_act(Box::new(Splicing {
            range,
            fill: None,
            drain: None,
            since: now,
            broken: false,
            cancelled: false,
        }))
    }

    /// The next step of the splice `s`, when none is in flight: drain what the pipe holds,
    /// or fill it from the file and drain that (linked).
    #[inline(never)]
    fn splice_act(&mut self, s: Box<Splicing>) -> Option<Act> {
        if s.in_flight() || s.broken || s.range.unsent() == 0 {
            self.send = Sending::Splicing(s);
            return None;
        }
        let pipe = &s.range.pipe;
        let file = std::os::fd::AsRawFd::as_raw_fd(&*s.range.file);
        let (fill, drain) = if pipe.held > 0 {
            // What a short drain (or a short fill) left in the pipe goes first.
            (0, pipe.held)
        } else {
            let n = u32::try_from(s.range.left)
                .unwrap_or(u32::MAX)
                .min(pipe.capacity());
            (n, n)
        };
        let act = Act::Splice {
            file,
            offset: s.range.offset,
            pipe_write: pipe.write_fd(),
            pipe_read: pipe.read_fd(),
            fill,
            drain,
        };
        self.send = Sending::Splicing(s);
        Some(act)
    }

    /// The teardown, step by step: cancel the receive and any send, reset if asked, close,
    /// and free the slot once every operation has ended.
    fn teardown_act(&mut self, step: Teardown, pool: &mut BufPool) -> Option<Act> {
        if let Recv::Armed(op) = self.recv {
            self.recv = Recv::Cancelling(op);
            return Some(Act::Cancel(op));
        }
        match std::mem::replace(&mut self.send, Sending::Idle) {
            Sending::InFlight { op, .. } => {
                self.send = Sending::Cancelling;
                return Some(Act::Cancel(op));
            }
            Sending::Rest { buf, .. } => pool.put(buf),
            Sending::Splicing(mut s) if s.in_flight() => {
                // The fill first: the link fails a drain not yet started. A drain the
                // kernel had started is cancelled on the next tick (see `cancelled`).
                let act = match (s.cancelled, s.fill.or(s.drain)) {
                    (false, Some(op)) => Some(Act::Cancel(op)),
                    _ => None,
                };
                s.cancelled = true;
                self.send = Sending::Splicing(s);
                return act;
            }
            // Nothing in flight: dropping the range closes a pipe with bytes left in it.
            Sending::Splicing(_) => {}
            other => self.send = other,
        }
        self.send_watch.cancel_due();
        match step {
            Teardown::Due { reset: true } => {
                self.phase = Phase::Closing(Teardown::Due { reset: false });
                Some(Act::Reset)
            }
            Teardown::Due { reset: false } => {
                self.phase = Phase::Closing(Teardown::Submitted);
                Some(Act::Close)
            }
            Teardown::Submitted => None,
            Teardown::Closed => self.is_finished().then_some(Act::Free),
        }
    }

    /// Starts tearing the connection down (a reset when `reset`): what is buffered is
    /// dropped, the operations in flight are cancelled, the descriptor closed. A lingering
    /// connection whose shutdown is still in flight waits for it (the next tick tries
    /// again), so that no operation outlives the slot.
    fn begin_close(&mut self, reset: bool, pool: &mut BufPool) {
        match self.phase {
            Phase::Closing(_)
            | Phase::Lingering {
                shut: Shut::Submitted,
                ..
            } => {}
            _ => {
                self.discard(pool);
                self.phase = Phase::Closing(Teardown::Due { reset });
            }
        }
    }

    /// Drops the future of the request that waits, if any: what it waited on is cancelled.
    fn end_task<H: Serve>(&mut self, ctx: &mut Ctx<'_, H>) {
        if let Some(pending) = self.awaiting.take() {
            ctx.tasks.end(pending.task);
            ctx.pool.put(pending.line);
        }
    }

    /// Resets a client that does not read, dropping the output.
    fn abort<H: Serve>(&mut self, ctx: &mut Ctx<'_, H>) {
        // Reset rather than close: a graceful close would leave the unsent bytes
        // (megabytes, for a client that stopped reading) queued in the kernel behind a FIN
        // the client never reads.
        ctx.counters.timeouts += 1;
        self.begin_close(true, &mut ctx.pool);
    }

    /// Whether every operation on the connection has ended, so its slot can be reused.
    fn is_finished(&self) -> bool {
        self.phase == Phase::Closing(Teardown::Closed)
            && matches!(self.recv, Recv::Idle | Recv::Ended)
            && matches!(self.send, Sending::Idle)
            && !self.sampling()
            && !self.asks_peer()
    }

    // ---- Timers. ----

    /// Checks the connection's timer against `now`. Every state has a deadline but two, and
    /// both end by themselves: `Closing` waits only for the kernel to end the operations in
    /// flight (a cancel always completes), and output queued this turn goes to a send at the
    /// turn's end, which then has the send timer.
    fn expired(&self, now: Instant, t: &Timeouts) -> Option<Expiry> {
        let over = |since: Instant, limit: Duration| now.duration_since(since) >= limit;
        if let (Phase::Open, Wait::Handler { since } | Wait::Room { since }) =
            (self.phase, self.wait)
        {
            // Whatever the sends do: the handler's deadline is its own.
            return over(since, t.handler).then_some(Expiry::HandlerTimeout);
        }
        match (&self.phase, &self.send) {
            (Phase::Closing(_), _) => None,
            (Phase::Lingering { until, .. }, _) => (now >= *until).then_some(Expiry::Close),
            (_, Sending::InFlight { since, .. }) => over(*since, t.send).then_some(Expiry::Abort),
            (_, Sending::Splicing(s)) if s.in_flight() => {
                over(s.since, t.send).then_some(Expiry::Abort)
            }
            (_, Sending::Splicing(_)) => None,
            (_, Sending::Rest { .. } | Sending::Cancelling) => None,
            // Nothing left to send and nothing more to read: it should have closed already.
            (Phase::Finishing(_), Sending::Idle) => self.output.is_empty().then_some(Expiry::Close),
            (Phase::Open, Sending::Idle) => match self.wait {
                Wait::First { since } if over(since, t.request_head) => Some(Expiry::Close),
                Wait::Idle { since } if over(since, t.idle) => Some(Expiry::Close),
                Wait::Head { since } if over(since, t.request_head) => Some(Expiry::RequestTimeout),
                Wait::Stream { since } if self.output.is_empty() && over(since, t.handler) => {
                    Some(Expiry::Abort)
                }
                Wait::Body { window, bytes } if over(window, BODY_RATE_WINDOW) => {
                    let due = t.body_rate_min * BODY_RATE_WINDOW.as_secs();
                    (bytes < due).then_some(Expiry::RequestTimeout)
                }
                _ => None,
            },
        }
    }

    /// Starts a new body-rate window when the last one passed the check.
    fn roll_body_window(&mut self, now: Instant) {
        if let Wait::Body { window, .. } = self.wait {
            if now.duration_since(window) >= BODY_RATE_WINDOW {
                self.wait = Wait::Body {
                    window: now,
                    bytes: 0,
                };
            }
        }
    }

    /// Answers `408 Request Timeout` and closes after a linger.
    fn time_out<H: Serve>(&mut self, ctx: &mut Ctx<'_, H>) {
        ctx.counters.timeouts += 1;
        if let Some(chunked) = self.chunked.take() {
            ctx.pool.put(chunked.body);
        }
        self.refuse(408, &"the request did not arrive in time", ctx);
    }

    // ---- Buffers. ----

    /// Whether the receive should be armed: open and not held back by unsent output, or
    /// lingering (input is read and dropped).
    fn wants_read(&self, output_bytes_max: usize) -> bool {
        match self.phase {
            // Waiting for a handler slot, nothing is read (backpressure); waiting for an
            // answer, reading goes on until requests arrive behind it, so that a client
            // that goes away is seen (and its future dropped). A body read as it arrives is
            // read at most a pipe's worth ahead of the handler: the pipe and the input bound
            // it together, however slowly the handler takes it.
            Phase::Open => match self.wait {
                Wait::Room { .. } => false,
                Wait::Handler { .. } | Wait::Stream { .. } => match self.upload {
                    Some(_) => self.input.len() < stream::UPLOAD_PIPE_BYTES_MAX,
                    None => self.input.is_empty(),
                },
                _ => self.output.len() < output_bytes_max,
            },
            Phase::Lingering { .. } => true,
            Phase::Finishing(_) | Phase::Closing(_) => false,
        }
    }

    /// Whether everything answered has been sent and nothing is buffered.
    fn is_idle(&self) -> bool {
        matches!(self.send, Sending::Idle)
            && self.output.is_empty()
            && self.input.is_empty()
            && self.chunked.is_none()
            && self.awaiting.is_none()
            && self.streaming.is_none()
            && self.upload.is_none()
    }

    /// Returns empty buffers to the pool: an idle connection holds none.
    fn release_buffers(&mut self, pool: &mut BufPool) {
        if self.input.is_empty() && self.input.capacity() > 0 {
            pool.put(std::mem::take(&mut self.input));
        }
        self.output.release(pool);
    }

    /// Drops what is buffered (the connection is being torn down).
    fn discard(&mut self, pool: &mut BufPool) {
        self.input.clear();
        self.output.clear(pool);
        if let Some(chunked) = self.chunked.take() {
            pool.put(chunked.body);
        }
        self.release_buffers(pool);
    }
}

#[cfg(test)]
mod tests;
