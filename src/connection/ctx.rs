//! What all connections of a worker share: the handler, the reusable response, the limits,
//! the buffer pool, the counters, the access log, and whether the worker drains.

use crate::config::Timeouts;
use crate::http::date::DateCache;
use crate::http::{HeadLimits, Response};
use crate::pool::BufPool;
use crate::rt::Tasks;
use std::future::Future;
use std::pin::Pin;

/// The future of a streamed body's producer.
pub(crate) type ProducerFuture = Pin<Box<dyn Future<Output = std::io::Result<()>>>>;
use crate::Serve;
use std::net::IpAddr;
use std::time::Instant;

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
    /// Async handlers' futures dropped because their client went away.
    pub(crate) handlers_cancelled: u64,
    /// Async handlers' futures dropped at the handler timeout (answered 503).
    pub(crate) handlers_timed_out: u64,
    /// Bytes of files sent by splice.
    pub(crate) bytes_spliced: u64,
}

impl Counters {
    /// Counts a response of `status`.
    pub(crate) fn response(&mut self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class] += 1;
    }
}

/// Whether the worker serves or drains, as its connections need to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Drain {
    Serving,
    /// Shutting down: the last answered request of a connection closes it.
    Draining,
    /// Shutting down, and the grace for idle connections is over: they close.
    IdleClosing,
}

/// Access log lines waiting to be written; never more than this many bytes (past it,
/// lines are dropped and counted rather than the worker's memory or loop paying).
pub(crate) const ACCESS_LOG_BYTES_MAX: usize = 1 << 20;
/// The longest request line an access log line quotes; longer ones are cut.
const ACCESS_LOG_REQUEST_BYTES_MAX: usize = 2048;
/// Room an access log line needs besides its request line: an IPv6 address, the date, the
/// status and the size.
const ACCESS_LOG_LINE_BYTES_OTHER: usize = 128;

/// The worker's access log buffer (common log format), written out by the worker.
#[derive(Debug)]
pub(crate) struct AccessLog {
    pub(crate) buf: Vec<u8>,
    /// Lines dropped because the buffer was full (the disk is slower than the requests).
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
    pub(super) fn record(
        &mut self,
        peer: Option<IpAddr>,
        clf: &[u8],
        request: &[u8],
        status: u16,
        bytes: usize,
    ) {
        use std::io::Write;
        let request = &request[..request.len().min(ACCESS_LOG_REQUEST_BYTES_MAX)];
        if self.buf.len() + request.len() + ACCESS_LOG_LINE_BYTES_OTHER > ACCESS_LOG_BYTES_MAX {
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
        // Writing to a Vec cannot fail.
        let _ = writeln!(self.buf, "\" {status} {bytes}");
    }
}

/// What processing needs besides the connection: owned by the worker, shared by all its
/// connections.
pub(crate) struct Ctx<'h, H: Serve> {
    pub(crate) handler: &'h H,
    /// The async handler's futures in flight (none for a sync handler).
    pub(crate) tasks: Tasks<H::Future>,
    /// The producers of streamed response bodies in flight.
    pub(crate) producers: Tasks<ProducerFuture>,
    /// The slot of the connection being processed (the owner of a task it starts).
    pub(crate) conn: u32,
    /// The response every request of a sync handler is answered into (reset before each);
    /// `None` only while it is being encoded.
    pub(crate) res: Option<Response>,
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
    /// Whether the worker drains: its one owner (the worker changes it, connections read it).
    pub(crate) drain: Drain,
    /// A handler's panic ends the worker instead of answering `500`.
    pub(crate) exit_on_panic: bool,
    pub(crate) counters: Counters,
    /// The time at the start of this loop turn.
    pub(crate) now: Instant,
    /// The access log, when one is kept.
    pub(crate) access: Option<AccessLog>,
    /// The client's address of the connection being processed, when it was looked up (for
    /// the access log and `Request::peer_addr`).
    pub(crate) peer: Option<IpAddr>,
}
