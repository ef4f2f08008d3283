//! One client connection: its state, its buffers, its timers, and the byte processing that
//! turns received bytes into responses (parse, decode the body, call the handler, encode).
//! No ring operations happen here: the worker reads the state after each event and submits
//! what it implies.

use crate::http::chunked::ChunkedDecoder;
use crate::http::date::DateCache;
use crate::http::response::{encode, encode_error, encode_head, ConnectionHeader};
use crate::http::{parse_head, Framing, Head, HeadLimits, Parsed, Request, Response, Version};
use crate::log::log_limited;
use crate::pool::BufPool;
use crate::Handler;
use ringmaster_uring::Desc;
use ringmaster_uring::OpId;
mod output;

use output::{Output, BODY_COPY_BYTES_MAX};
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

/// The interim response to `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// A body's arrival rate is measured over windows this long.
pub(crate) const BODY_RATE_WINDOW: Duration = Duration::from_secs(5);
/// While a client owes response bytes, what it took is sampled this often, and each window
/// between two samples is judged against the minimum send rate.
pub(crate) const SEND_RATE_WINDOW: Duration = Duration::from_secs(5);
/// Bytes a client may owe after its sends completed (the kernel holds them) before the
/// minimum send rate watches it: below this a slow reader holds little, and the idle
/// timeout ends it.
pub(crate) const SEND_WATCH_BYTES_MIN: u64 = 64 * 1024;
/// After an error response the connection is half-closed and its input drained for at most
/// this long, so that the client reads the status instead of a reset.
pub(crate) const LINGER_MAX: Duration = Duration::from_secs(2);

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading requests and answering them.
    Open,
    /// No further request is read (the last one said close, was refused, or the peer shut
    /// its side); the connection closes once its output is sent.
    Finishing,
    /// The output is sent and the write side shut: input is read and dropped until the peer
    /// closes or `until`, then the connection closes. Closing at once could reset the
    /// connection before the client read the last response.
    Lingering {
        /// The shutdown of the write side was submitted.
        shut: bool,
        until: Instant,
    },
    /// Being torn down: a close was submitted; the slot is freed when every operation on
    /// the connection has ended.
    Closing {
        /// The close operation completed.
        fd_closed: bool,
    },
}

/// The state of the connection's receive operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recv {
    /// None armed.
    Idle,
    /// Armed (multishot, or one single-shot receive).
    Armed(OpId),
    /// A cancel was submitted; the receive's last completion is still to come.
    Cancelling(OpId),
    /// The peer closed or the socket failed: nothing more will be read.
    Ended,
}

/// Whether a send is in flight (at most one per connection, so responses stay in order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sending {
    /// No send in flight.
    Idle,
    /// A send of the buffer the ring holds: `offset` bytes of it went out before, and it
    /// last made progress at `since`.
    InFlight {
        op: OpId,
        offset: usize,
        since: Instant,
    },
}

/// The minimum send rate's watch over a connection whose client owes response bytes (a
/// send waits for room in the kernel, or the kernel holds sent bytes the client has not
/// acknowledged), as the body-rate minimum watches a request body: what the client *took*
/// in each window of [`SEND_RATE_WINDOW`], that is the bytes the kernel accepted minus those
/// it still holds unacknowledged (`SIOCOUTQ`). The bytes the kernel accepted alone would
/// not do: a send buffer of megabytes completes sends in bursts minutes apart for a reader
/// that takes little, so a fair reader would look stalled and an unfair one could hide. And
/// a slow reader's response held by the kernel costs memory too (the host's TCP memory; on
/// loopback several megabytes a socket), so it is watched until the client took it all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendWatch {
    /// The client owes nothing worth watching, or no minimum is set.
    Off,
    /// A sample is being taken (by the ring operation `op`, for a direct descriptor);
    /// `last` is the previous sample (when, and what the client had taken), if any.
    Sampling {
        last: Option<(Instant, u64)>,
        op: Option<OpId>,
    },
    /// The client had taken `taken` bytes at `at`; the next sample is due at `next`.
    Watching {
        at: Instant,
        taken: u64,
        next: Instant,
    },
}

/// What the connection waits for from the client, and since when: the timer that applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
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
}

/// What happens to a connection whose timer ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// Answer `408 Request Timeout`, then close.
    RequestTimeout,
    /// Close without a word (idle keep-alive, nothing ever received, the linger is over).
    Close,
    /// The client does not read: drop the output and close.
    Abort,
}

/// The timeouts and bounds a connection enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    pub(crate) request_head: Duration,
    pub(crate) idle: Duration,
    pub(crate) send: Duration,
    /// Minimum body rate, bytes per second.
    pub(crate) body_rate_min: u64,
    /// Minimum rate at which a client takes a response that waits in memory, bytes per
    /// second; 0 for none.
    pub(crate) send_rate_min: u64,
}

/// Counters kept by a worker across its connections.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) accepted: u64,
    pub(crate) timeouts: u64,
    /// Responses by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub(crate) responses: [u64; 5],
    /// Requests answered 500 because the handler panicked or misused its `Response`.
    pub(crate) handler_failures: u64,
}

impl Counters {
    /// Counts a response of `status`.
    pub(crate) fn response(&mut self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class] += 1;
    }
}

/// Access log lines waiting to be written; never more than this many bytes (past it,
/// lines are dropped and counted rather than the worker's memory or loop paying).
pub(crate) const ACCESS_LOG_BYTES_MAX: usize = 1 << 20;

/// The worker's access log buffer (common log format), written out by the worker.
#[derive(Debug)]
pub(crate) struct AccessLog {
    pub(crate) buf: Vec<u8>,
    pub(crate) dropped: u64,
}

impl AccessLog {
    pub(crate) fn new() -> AccessLog {
        AccessLog {
            buf: Vec::with_capacity(ACCESS_LOG_BYTES_MAX),
            dropped: 0,
        }
    }

    /// Appends `HOST - - [DATE] "REQUEST" STATUS BYTES`.
    fn record(
        &mut self,
        peer: Option<std::net::IpAddr>,
        clf: &[u8],
        request: &[u8],
        status: u16,
        bytes: usize,
    ) {
        use std::io::Write;
        // The longest line: an IPv6 address, the date, the request line (bounded by the
        // request line limit, cut here), status and size.
        let request = &request[..request.len().min(2048)];
        if self.buf.len() + request.len() + 128 > ACCESS_LOG_BYTES_MAX {
            self.dropped += 1;
            return;
        }
        match peer {
            Some(ip) => {
                let _ = write!(self.buf, "{ip}");
            }
            None => self.buf.push(b'-'),
        }
        self.buf.extend_from_slice(b" - - ");
        self.buf.extend_from_slice(clf);
        self.buf.extend_from_slice(b" \"");
        // Quotes and control bytes cannot reach here: the parser refused them.
        self.buf.extend_from_slice(request);
        let _ = writeln!(self.buf, "\" {status} {bytes}");
    }
}

/// What processing needs besides the connection: owned by the worker, shared by all its
/// connections.
pub(crate) struct Ctx<'h, H> {
    pub(crate) handler: &'h H,
    /// The response every request is answered into (reset before each).
    pub(crate) res: Response,
    pub(crate) date: DateCache,
    pub(crate) limits: HeadLimits,
    /// Response bytes waiting to be sent at which parsing pauses (backpressure).
    pub(crate) output_bytes_max: usize,
    /// Bytes a connection may buffer beyond one request at its limits: what one receive
    /// burst can deliver after the output bound was reached and before the receive is
    /// stopped, at most every provided buffer of the worker. Past it the connection closes.
    pub(crate) input_slack_bytes: usize,
    pub(crate) timeouts: Timeouts,
    pub(crate) pool: BufPool,
    /// The worker is shutting down: the last answered request of a connection closes it.
    pub(crate) draining: bool,
    /// A handler's panic ends the worker instead of answering `500`.
    pub(crate) exit_on_panic: bool,
    pub(crate) counters: Counters,
    /// The time at the start of this loop turn.
    pub(crate) now: Instant,
    /// The access log, when one is kept.
    pub(crate) access: Option<AccessLog>,
    /// The peer of the connection being processed (for the access log).
    pub(crate) peer: Option<std::net::IpAddr>,
}

/// Why processing stopped.
enum Next {
    /// All whole requests were answered; the rest (if any) is part of a head.
    NeedHead,
    /// A head is complete; its `Content-Length` body is still arriving.
    NeedBody,
    /// A head is complete; its chunked body is still arriving. The decoder consumed the
    /// bytes after the head; the head is at `used..used + head_len`.
    NeedChunks(ChunkedBody),
    /// Output is at the bound: the rest waits until it drains.
    Pause,
    /// The connection closes after its output is sent; the rest is dropped. `linger` says
    /// whether the client may still be sending (an error, or requests after a close).
    Close { linger: bool },
}

/// A chunked body in progress. The head stays at the front of the connection's input.
#[derive(Debug)]
pub(crate) struct ChunkedBody {
    head_len: usize,
    decoder: ChunkedDecoder,
    body: Vec<u8>,
}

/// One connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) fd: Desc,
    pub(crate) phase: Phase,
    pub(crate) recv: Recv,
    pub(crate) send: Sending,
    pub(crate) wait: Wait,
    /// Bytes of requests not yet answered (a partial request, or pipelined requests held
    /// back by the output bound). Holds no buffer when empty.
    input: Vec<u8>,
    /// Responses not yet handed to a send. Holds no buffer when empty.
    output: Output,
    /// The chunked body being received, if any.
    chunked: Option<ChunkedBody>,
    /// `100 Continue` was sent for the request being received.
    continued: bool,
    /// Half-close and drain before closing.
    linger: bool,
    /// The client has sent more than it reads (output reached its bound): from now on the
    /// connection receives one buffer at a time, so its input stays within a buffer of
    /// what it needs.
    pub(crate) flooding: bool,
    /// The connection is in the worker's list of connections to act on at the turn's end.
    pub(crate) queued: bool,
    /// The client's address, looked up only when an access log is kept.
    pub(crate) peer: Option<std::net::IpAddr>,
    /// Bytes of output the kernel accepted (sends completed with them).
    sent: u64,
    /// Bytes of output the client had taken (acknowledged) at the last sample.
    taken: u64,
    /// The minimum send rate's watch.
    send_watch: SendWatch,
}

impl Conn {
    pub(crate) fn new(fd: Desc, now: Instant) -> Conn {
        Conn {
            fd,
            phase: Phase::Open,
            recv: Recv::Idle,
            send: Sending::Idle,
            wait: Wait::First { since: now },
            input: Vec::new(),
            output: Output::default(),
            chunked: None,
            continued: false,
            linger: false,
            flooding: false,
            queued: false,
            peer: None,
            sent: 0,
            taken: 0,
            send_watch: SendWatch::Off,
        }
    }

    /// Handles bytes received. In the common case (nothing buffered) requests are parsed
    /// straight from `data`, the kernel's provided buffer; only a partial request is copied.
    pub(crate) fn on_data<H: Handler>(&mut self, data: &[u8], ctx: &mut Ctx<'_, H>) {
        ctx.counters.bytes_in += data.len() as u64;
        ctx.peer = self.peer;
        if self.phase != Phase::Open {
            return; // Bytes after the last request, or while lingering: read and dropped.
        }
        if let Wait::Body { bytes, .. } = &mut self.wait {
            *bytes += data.len() as u64;
        }
        let mut data = data;
        if self.chunked.is_some() {
            match self.feed_chunks(data, ctx) {
                Some(used) if self.phase == Phase::Open => data = &data[used..],
                _ => return self.release_buffers(&mut ctx.pool),
            }
        }
        if self.input.is_empty() {
            let (used, next) = process(data, &mut self.output, &mut self.continued, ctx);
            let rest = &data[used..];
            let keep = match &next {
                Next::NeedChunks(c) => &rest[..c.head_len],
                Next::Close { .. } => &[],
                _ => rest,
            };
            if !keep.is_empty() {
                self.input = ctx.pool.take();
                self.input.extend_from_slice(keep);
            }
            self.after(next, ctx);
        } else if self.input.len() + data.len()
            > ctx.limits.input_bytes_max() + ctx.input_slack_bytes
        {
            // Only pipelined requests held back by a client that does not read get here:
            // one request over the limits is refused at its head.
            ctx.counters.errors += 1;
            self.input.clear();
            self.linger = true;
            self.phase = Phase::Finishing;
            self.release_buffers(&mut ctx.pool);
        } else {
            self.input.extend_from_slice(data);
            self.process_input(ctx);
        }
    }

    /// Feeds a chunked body in progress. Returns the bytes of `data` it used when the body
    /// is done and its request answered (or refused), `None` when it wants more.
    fn feed_chunks<H: Handler>(&mut self, data: &[u8], ctx: &mut Ctx<'_, H>) -> Option<usize> {
        let chunked = self.chunked.as_mut().expect("called with a chunked body");
        let used = match chunked.decoder.decode(data, &mut chunked.body) {
            Ok(used) => used,
            Err(e) => {
                let chunked = self.chunked.take().expect("present");
                ctx.pool.put(chunked.body);
                self.refuse(e.status(), &e, ctx);
                return Some(data.len());
            }
        };
        if !chunked.decoder.is_done() {
            return None;
        }
        let chunked = self.chunked.take().expect("present");
        let last = used == data.len() && self.input.len() == chunked.head_len;
        let (used_head, next) = answer_buffered(
            &self.input[..chunked.head_len],
            &chunked.body,
            &mut self.output,
            last,
            ctx,
        );
        debug_assert_eq!(used_head, chunked.head_len);
        self.input.drain(..chunked.head_len);
        self.continued = false;
        ctx.pool.put(chunked.body);
        if let Some(next) = next {
            self.after(next, ctx);
            return None;
        }
        Some(used)
    }

    /// Answers requests waiting in the input buffer, after the output drained.
    pub(crate) fn resume<H: Handler>(&mut self, ctx: &mut Ctx<'_, H>) {
        if self.phase != Phase::Open || self.chunked.is_some() {
            return;
        }
        if !self.input.is_empty() {
            self.process_input(ctx);
        } else if self.output.is_empty() {
            self.wait = Wait::Idle { since: ctx.now };
            if self.recv == Recv::Ended {
                self.settle_end_of_input(ctx);
            }
        }
    }

    /// The peer sent its last byte (end of stream). Requests already whole are still
    /// answered (those held back by the output bound, once it drains); what follows them is
    /// settled by [`Conn::settle_end_of_input`].
    pub(crate) fn end_of_input<H: Handler>(&mut self, ctx: &mut Ctx<'_, H>) {
        debug_assert_eq!(self.recv, Recv::Ended, "the worker records the end first");
        if self.phase == Phase::Open && self.wait != Wait::Output {
            self.settle_end_of_input(ctx);
        }
    }

    /// No byte will come any more and no whole request waits: with nothing buffered the
    /// connection finishes; a request cut short is answered `400` (the client may still
    /// read, as after nginx's "client prematurely closed connection") and the connection
    /// finishes after it. Without this a cut request would wait for bytes that never come,
    /// with no timer left to end it.
    fn settle_end_of_input<H: Handler>(&mut self, ctx: &mut Ctx<'_, H>) {
        if self.input.is_empty() && self.chunked.is_none() {
            self.phase = Phase::Finishing;
            return;
        }
        if let Some(chunked) = self.chunked.take() {
            ctx.pool.put(chunked.body);
        }
        self.input.clear();
        self.refuse(
            400,
            &"the request was cut short: the client closed its side",
            ctx,
        );
    }

    fn process_input<H: Handler>(&mut self, ctx: &mut Ctx<'_, H>) {
        let (used, next) = process(&self.input, &mut self.output, &mut self.continued, ctx);
        match &next {
            Next::NeedChunks(c) => {
                // Keep the head; the bytes after it went into the decoder.
                self.input.truncate(used + c.head_len);
                self.input.drain(..used);
            }
            _ => {
                self.input.drain(..used);
            }
        }
        self.after(next, ctx);
    }

    /// Applies why processing stopped: the phase, the timer, and buffers.
    fn after<H: Handler>(&mut self, next: Next, ctx: &mut Ctx<'_, H>) {
        let now = ctx.now;
        match next {
            Next::Close { linger } => {
                self.phase = Phase::Finishing;
                self.linger |= linger;
                self.input.clear();
            }
            Next::Pause => {
                self.wait = Wait::Output;
                self.flooding = true;
            }
            Next::NeedBody => {
                if !matches!(self.wait, Wait::Body { .. }) {
                    self.wait = Wait::Body {
                        window: now,
                        bytes: 0,
                    };
                }
            }
            Next::NeedChunks(chunked) => {
                self.chunked = Some(chunked);
                self.wait = Wait::Body {
                    window: now,
                    bytes: 0,
                };
            }
            Next::NeedHead if self.input.is_empty() => {
                if ctx.draining {
                    // Nothing more was received: the response just queued was the last.
                    self.phase = Phase::Finishing;
                }
                self.wait = Wait::Idle { since: now };
            }
            Next::NeedHead => {
                self.wait = match self.wait {
                    // The first request's head is due within the timeout of the accept.
                    Wait::First { since } | Wait::Head { since } => Wait::Head { since },
                    _ => Wait::Head { since: now },
                };
            }
        }
        if self.recv == Recv::Ended && self.phase == Phase::Open && self.wait != Wait::Output {
            // Whatever was still awaited will not come.
            self.settle_end_of_input(ctx);
        }
        self.release_buffers(&mut ctx.pool);
    }

    /// Answers `status` for `detail` and closes after a linger.
    fn refuse<H: Handler>(
        &mut self,
        status: u16,
        detail: &dyn std::fmt::Display,
        ctx: &mut Ctx<'_, H>,
    ) {
        let next = refuse_into(&mut self.output, status, detail, ctx);
        self.after(next, ctx);
    }

    /// Checks the connection's timer against `now`. Every state has a deadline but two, and
    /// both end by themselves: `Closing` waits only for the kernel to end the operations in
    /// flight (a cancel always completes), and output queued this turn goes to a send at the
    /// turn's end, which then has the send timer.
    pub(crate) fn expired(&self, now: Instant, t: &Timeouts) -> Option<Expiry> {
        let over = |since: Instant, limit: Duration| now.duration_since(since) >= limit;
        match (self.phase, self.send) {
            (Phase::Closing { .. }, _) => None,
            (Phase::Lingering { until, .. }, _) => (now >= until).then_some(Expiry::Close),
            (_, Sending::InFlight { since, .. }) => over(since, t.send).then_some(Expiry::Abort),
            // Nothing left to send and nothing more to read: it should have closed already.
            (Phase::Finishing, Sending::Idle) => self.output.is_empty().then_some(Expiry::Close),
            (Phase::Open, Sending::Idle) => match self.wait {
                Wait::First { since } if over(since, t.request_head) => Some(Expiry::Close),
                Wait::Idle { since } if over(since, t.idle) => Some(Expiry::Close),
                Wait::Head { since } if over(since, t.request_head) => Some(Expiry::RequestTimeout),
                Wait::Body { window, bytes } if over(window, BODY_RATE_WINDOW) => {
                    let due = t.body_rate_min * BODY_RATE_WINDOW.as_secs();
                    (bytes < due).then_some(Expiry::RequestTimeout)
                }
                _ => None,
            },
        }
    }

    /// Starts a new body-rate window when the last one passed the check.
    pub(crate) fn roll_body_window(&mut self, now: Instant) {
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
    pub(crate) fn time_out<H: Handler>(&mut self, ctx: &mut Ctx<'_, H>) {
        ctx.counters.timeouts += 1;
        if let Some(chunked) = self.chunked.take() {
            ctx.pool.put(chunked.body);
        }
        self.refuse(408, &"the request did not arrive in time", ctx);
    }

    /// Returns empty buffers to the pool: an idle connection holds none.
    pub(crate) fn release_buffers(&mut self, pool: &mut BufPool) {
        if self.input.is_empty() && self.input.capacity() > 0 {
            pool.put(std::mem::take(&mut self.input));
        }
        self.output.release(pool);
    }

    /// The output to send now, if any and no send is in flight.
    pub(crate) fn take_output(&mut self) -> Option<Vec<u8>> {
        match self.send {
            Sending::Idle => self.output.take_next(),
            Sending::InFlight { .. } => None,
        }
    }

    /// Whether the receive should be armed: open and not held back by unsent output, or
    /// lingering (input is read and dropped).
    pub(crate) fn wants_read(&self, output_bytes_max: usize) -> bool {
        match self.phase {
            Phase::Open => self.output.len() < output_bytes_max,
            Phase::Lingering { .. } => true,
            Phase::Finishing | Phase::Closing { .. } => false,
        }
    }

    /// Whether everything answered has been sent and nothing is buffered.
    pub(crate) fn is_idle(&self) -> bool {
        self.send == Sending::Idle
            && self.output.is_empty()
            && self.input.is_empty()
            && self.chunked.is_none()
    }

    /// Whether no byte of the first request has arrived yet.
    pub(crate) fn awaiting_first(&self) -> bool {
        matches!(self.wait, Wait::First { .. })
    }

    /// Whether the connection should linger before closing.
    pub(crate) fn lingers(&self) -> bool {
        self.linger
    }

    /// Drops what is buffered (the connection is being torn down).
    pub(crate) fn discard(&mut self, pool: &mut BufPool) {
        self.input.clear();
        self.output.clear(pool);
        if let Some(chunked) = self.chunked.take() {
            pool.put(chunked.body);
        }
        self.release_buffers(pool);
    }

    /// Whether every operation on the connection has ended, so its slot can be reused.
    pub(crate) fn is_finished(&self) -> bool {
        self.phase == (Phase::Closing { fd_closed: true })
            && matches!(self.recv, Recv::Idle | Recv::Ended)
            && self.send == Sending::Idle
            && !matches!(self.send_watch, SendWatch::Sampling { op: Some(_), .. })
    }

    /// Counts `n` bytes of output the kernel accepted.
    pub(crate) fn sent(&mut self, n: u64) {
        self.sent += n;
    }

    /// Whether the kernel's send queue should be sampled now for the minimum send rate: the
    /// client owes bytes (a send waits for room in the kernel, or it has at least
    /// [`SEND_WATCH_BYTES_MIN`] more than it had taken at the last sample, which the kernel
    /// may still hold) and no sample was taken for a [`SEND_RATE_WINDOW`]. The worker takes
    /// it and reports with [`Conn::on_send_sample`].
    pub(crate) fn send_sample_due(&mut self, now: Instant, t: &Timeouts) -> bool {
        if t.send_rate_min == 0 || matches!(self.phase, Phase::Closing { .. }) {
            if !matches!(self.send_watch, SendWatch::Sampling { .. }) {
                self.send_watch = SendWatch::Off;
            }
            return false;
        }
        let owes = matches!(self.send, Sending::InFlight { .. })
            || self.sent >= self.taken + SEND_WATCH_BYTES_MIN;
        let last = match self.send_watch {
            // One sample at a time; its result settles the watch either way.
            SendWatch::Sampling { .. } => return false,
            SendWatch::Off if owes => None,
            SendWatch::Off => return false,
            SendWatch::Watching { at, taken, next } if now >= next => Some((at, taken)),
            SendWatch::Watching { .. } => return false,
        };
        self.send_watch = SendWatch::Sampling { last, op: None };
        true
    }

    /// The sample is taken by the ring operation `op`: the slot is not reused before it
    /// ends.
    pub(crate) fn sampling_with(&mut self, op: OpId) {
        if let SendWatch::Sampling { last, .. } = self.send_watch {
            self.send_watch = SendWatch::Sampling { last, op: Some(op) };
        }
    }

    /// A sample came back: `unacked` bytes were still in the kernel's send queue (`None`:
    /// the sample failed, and the watch starts over). Returns [`Expiry::Abort`] when the
    /// client still owes bytes and took less than the minimum rate since the last sample.
    pub(crate) fn on_send_sample(
        &mut self,
        now: Instant,
        unacked: Option<u64>,
        t: &Timeouts,
    ) -> Option<Expiry> {
        let SendWatch::Sampling { last, .. } = self.send_watch else {
            return None;
        };
        self.send_watch = SendWatch::Off;
        let unacked = unacked?;
        let taken = self.sent.saturating_sub(unacked);
        self.taken = taken;
        if unacked == 0 || matches!(self.phase, Phase::Closing { .. }) {
            return None; // It took everything there was: nothing to judge.
        }
        if let Some((at, before)) = last {
            if !kept_up(before, taken, now.duration_since(at), t.send_rate_min) {
                return Some(Expiry::Abort);
            }
        }
        self.send_watch = SendWatch::Watching {
            at: now,
            taken,
            next: now + SEND_RATE_WINDOW,
        };
        None
    }
}

/// Whether a client that had taken `before` bytes of its responses, and `taken` a `window`
/// later, took them at `rate` bytes a second at least.
fn kept_up(before: u64, taken: u64, window: Duration, rate: u64) -> bool {
    let due = u128::from(rate) * window.as_millis() / 1000;
    u128::from(taken.saturating_sub(before)) >= due
}

/// Answers every whole request at the start of `data`, appending the responses to `out`,
/// in order. Returns the bytes used and why it stopped.
fn process<H: Handler>(
    data: &[u8],
    out: &mut Output,
    continued: &mut bool,
    ctx: &mut Ctx<'_, H>,
) -> (usize, Next) {
    let mut used = 0;
    loop {
        if out.len() >= ctx.output_bytes_max {
            return (used, Next::Pause);
        }
        let rest = &data[used..];
        if rest.is_empty() {
            return (used, Next::NeedHead);
        }
        let mut headers = [const { MaybeUninit::uninit() }; crate::http::request::HEADERS_MAX];
        let head = match parse_head(rest, &mut headers, &ctx.limits) {
            Ok(Parsed::Complete(head)) => head,
            Ok(Parsed::Partial) => return (used, Next::NeedHead),
            Err(e) => return (data.len(), refuse_into(out, e.status(), &e, ctx)),
        };
        let after_head = &rest[head.head_len..];
        let body = match head.framing {
            Framing::None => &[][..],
            // The head parser refused lengths over the body limit, which is a u32.
            Framing::Length(n) => match after_head.get(..n as usize) {
                Some(body) => body,
                None => {
                    expect_continue(&head, out, continued, ctx);
                    return (used, Next::NeedBody);
                }
            },
            Framing::Chunked => {
                let mut decoder = ChunkedDecoder::new(
                    ctx.limits.request_body_bytes_max,
                    ctx.limits.request_fields_bytes_max,
                );
                let mut body = ctx.pool.take();
                match decoder.decode(after_head, &mut body) {
                    Err(e) => {
                        ctx.pool.put(body);
                        return (data.len(), refuse_into(out, e.status(), &e, ctx));
                    }
                    Ok(n) if decoder.is_done() => {
                        let last = used + head.head_len + n == data.len();
                        let next = answer(&head, &body, out, last, ctx);
                        ctx.pool.put(body);
                        used += head.head_len + n;
                        *continued = false;
                        match next {
                            Some(next) => return (used, next),
                            None => continue,
                        }
                    }
                    Ok(_) => {
                        expect_continue(&head, out, continued, ctx);
                        let head_len = head.head_len;
                        let chunked = ChunkedBody {
                            head_len,
                            decoder,
                            body,
                        };
                        return (used, Next::NeedChunks(chunked));
                    }
                }
            }
        };
        used += head.head_len + body.len();
        *continued = false;
        if let Some(next) = answer(&head, body, out, used == data.len(), ctx) {
            return (used, next);
        }
    }
}

/// Refuses a request: appends the error answer (with `Connection: close`) and counts it, as an
/// error and as a response of its status class. Every refusal goes through here, so each is
/// counted once whichever path produced it.
fn refuse_into<H>(
    out: &mut Output,
    status: u16,
    detail: &dyn std::fmt::Display,
    ctx: &mut Ctx<'_, H>,
) -> Next {
    ctx.counters.errors += 1;
    ctx.counters.response(status);
    encode_error(out.tail(&mut ctx.pool), status, detail, ctx.date.line());
    Next::Close { linger: true }
}

/// Sends `100 Continue` once for a request whose client waits for it before its body.
fn expect_continue<H>(
    head: &Head<'_>,
    out: &mut Output,
    continued: &mut bool,
    ctx: &mut Ctx<'_, H>,
) {
    if head.expect_continue && !*continued {
        out.tail(&mut ctx.pool).extend_from_slice(CONTINUE);
        ctx.counters.response(100);
        *continued = true;
    }
}

/// Re-parses the head in `head_bytes` (kept in the input while its chunked body arrived)
/// and answers it with `body`. Returns the head's length and what follows, if not more.
fn answer_buffered<H: Handler>(
    head_bytes: &[u8],
    body: &[u8],
    out: &mut Output,
    last: bool,
    ctx: &mut Ctx<'_, H>,
) -> (usize, Option<Next>) {
    let mut headers = [const { MaybeUninit::uninit() }; crate::http::request::HEADERS_MAX];
    match parse_head(head_bytes, &mut headers, &ctx.limits) {
        Ok(Parsed::Complete(head)) => (head.head_len, answer(&head, body, out, last, ctx)),
        other => unreachable!("a head parsed once parses again: {other:?}"),
    }
}

/// Calls the handler for one whole request (or answers `OPTIONS *` itself) and encodes its
/// response. Returns `Some` when the connection closes after it. `last` says no byte was
/// received after this request: a draining worker answers it with `Connection: close`.
///
/// A handler that panics, or that gave its `Response` invalid input, gets its request
/// answered `500` and the connection closed (after a linger, so that the client reads the
/// answer); the worker goes on serving. The panic hook has logged the panic; a misuse is
/// logged here. With `exit_on_panic` a panic ends the worker instead.
fn answer<H: Handler>(
    head: &Head<'_>,
    body: &[u8],
    out: &mut Output,
    last: bool,
    ctx: &mut Ctx<'_, H>,
) -> Option<Next> {
    ctx.res.reset();
    ctx.counters.requests += 1;
    if head.target_form == crate::http::TargetForm::Asterisk {
        // `OPTIONS *` asks about the server, not a resource: the server answers it (the
        // parser let the asterisk form through for OPTIONS only).
        ctx.res.header("Allow", crate::http::OPTIONS_ALLOW);
        return encode_answer(head, out, last, ctx);
    }
    let (handler, res) = (ctx.handler, &mut ctx.res);
    // Unwinding stops here. After a panic nothing the handler touched is used but `res`,
    // which is reset before the next request; the handler's own state is its own affair.
    let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handler.handle(&Request::new(head, body), res)
    }));
    match called {
        Err(panic) if ctx.exit_on_panic => std::panic::resume_unwind(panic),
        Err(_) => return Some(handler_failed(head, out, ctx)),
        Ok(()) => {}
    }
    if let Some(misuse) = ctx.res.misuse() {
        log_limited!("the handler's response is invalid ({misuse}); answered 500 instead");
        return Some(handler_failed(head, out, ctx));
    }
    encode_answer(head, out, last, ctx)
}

/// Encodes the response in `ctx.res` to `head`, with the connection rules applied.
fn encode_answer<H>(
    head: &Head<'_>,
    out: &mut Output,
    last: bool,
    ctx: &mut Ctx<'_, H>,
) -> Option<Next> {
    let keep_alive = head.keep_alive && !ctx.res.wants_close() && !(ctx.draining && last);
    let connection = match (keep_alive, head.version) {
        (false, _) => ConnectionHeader::Close,
        (true, Version::Http10) => ConnectionHeader::KeepAlive,
        (true, Version::Http11) => ConnectionHeader::Omit,
    };
    let status = ctx.res.status_code();
    let bytes = if head.head_only {
        0
    } else {
        ctx.res.body_bytes().len()
    };
    let tail = out.tail(&mut ctx.pool);
    if bytes > BODY_COPY_BYTES_MAX {
        // Sent from where the handler wrote it: held once, and freed once sent.
        if encode_head(tail, &ctx.res, ctx.date.line(), connection) {
            let body = ctx.res.take_body(ctx.pool.take());
            out.push_body(body, &mut ctx.pool);
        }
    } else {
        encode(tail, &ctx.res, ctx.date.line(), head.head_only, connection);
    }
    log_access(head, status, bytes, ctx);
    (!keep_alive).then_some(Next::Close { linger: false })
}

/// Answers `500` for a request whose handler failed, and closes.
fn handler_failed<H>(head: &Head<'_>, out: &mut Output, ctx: &mut Ctx<'_, H>) -> Next {
    ctx.counters.handler_failures += 1;
    let detail = "the handler failed; see the server's log";
    let bytes = encode_error(out.tail(&mut ctx.pool), 500, &detail, ctx.date.line());
    log_access(head, 500, if head.head_only { 0 } else { bytes }, ctx);
    Next::Close { linger: true }
}

/// Counts a response to `head` of `status` and `bytes` of body, and writes its access log
/// line when a log is kept.
fn log_access<H>(head: &Head<'_>, status: u16, bytes: usize, ctx: &mut Ctx<'_, H>) {
    ctx.counters.response(status);
    if let Some(log) = &mut ctx.access {
        log.record(ctx.peer, ctx.date.clf(), head.request_line(), status, bytes);
    }
}

#[cfg(test)]
mod tests;

/// Drives the byte processing of one connection without a ring: for fuzzing and property
/// tests. Not part of the stable API.
#[doc(hidden)]
pub mod drive {
    use super::*;
    use crate::config::Limits;

    /// Echoes method, path and body: `METHOD PATH|BODY`, with the method in `X-Method` too
    /// (a `HEAD` response has a length but no body; this says which one it is).
    #[derive(Debug)]
    pub struct Echo;

    impl Handler for Echo {
        fn handle(&self, req: &Request<'_>, res: &mut Response) {
            res.header("X-Method", req.method());
            res.write(req.method())
                .write(" ")
                .write(req.path())
                .write("|")
                .write(req.body());
        }
    }

    /// A context with the default limits, a fixed `Date` (the epoch) and no access log: a
    /// connection's surroundings without a worker.
    pub(crate) fn standalone<H: Handler>(handler: &H) -> Ctx<'_, H> {
        let limits = Limits::default();
        let mut date = DateCache::new();
        date.update(0);
        Ctx {
            handler,
            res: Response::new(),
            date,
            limits: limits.head(),
            output_bytes_max: limits.output_bytes_max as usize,
            input_slack_bytes: 4 << 20,
            timeouts: limits.timeouts(),
            pool: BufPool::new(64, 8),
            draining: false,
            exit_on_panic: false,
            counters: Counters::default(),
            now: Instant::now(),
            access: None,
            peer: None,
        }
    }

    /// One connection kept across calls, as a worker keeps it: for measuring the steady
    /// state (a counting allocator sees the hot path allocate nothing once warm).
    pub struct Driver<H: Handler + 'static> {
        ctx: Ctx<'static, H>,
        conn: Conn,
    }

    impl<H: Handler + 'static> Driver<H> {
        /// A connection for `handler` with the default limits.
        pub fn new(handler: &'static H) -> Driver<H> {
            let ctx = standalone(handler);
            let conn = Conn::new(Desc::Plain(-1), ctx.now);
            Driver { ctx, conn }
        }

        /// Feeds bytes as one receive; returns how many response bytes went out. Sent
        /// buffers go back to the pool, as a completed send's do in a worker.
        pub fn feed(&mut self, data: &[u8]) -> usize {
            self.conn.on_data(data, &mut self.ctx);
            let mut sent = 0;
            while let Some(out) = self.conn.take_output() {
                sent += out.len();
                self.ctx.pool.put(out);
                self.conn.resume(&mut self.ctx);
            }
            sent
        }

        /// Requests answered so far.
        pub fn requests(&self) -> u64 {
            self.ctx.counters.requests
        }
    }

    /// What a connection made of a byte stream.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Outcome {
        /// Every byte it would have sent, in order.
        pub sent: Vec<u8>,
        /// Whether it stopped reading (it would close).
        pub closing: bool,
        /// Requests answered.
        pub requests: u64,
    }

    /// Feeds `chunks`, in order, to a fresh connection with the default limits (and a fixed
    /// `Date`), sending its output as soon as it has any.
    pub fn feed(chunks: &[&[u8]]) -> Outcome {
        let mut ctx = standalone(&Echo);
        let mut conn = Conn::new(Desc::Plain(-1), ctx.now);
        let mut sent = Vec::new();
        for chunk in chunks {
            conn.on_data(chunk, &mut ctx);
            while let Some(out) = conn.take_output() {
                sent.extend_from_slice(&out);
                conn.resume(&mut ctx);
            }
        }
        Outcome {
            sent,
            closing: conn.phase != Phase::Open,
            requests: ctx.counters.requests,
        }
    }
}
