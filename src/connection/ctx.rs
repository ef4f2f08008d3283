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
/// The longest referer, user agent or request id an access log line quotes; longer ones
/// are cut.
pub(crate) const ACCESS_LOG_FIELD_BYTES_MAX: usize = 512;
/// Room an access log line needs besides what it quotes: an IPv6 address, the date, the
/// status, the size, the duration and the JSON keys.
const ACCESS_LOG_LINE_BYTES_OTHER: usize = 256;
/// The most an escaped byte takes (`\u00XX` in JSON, `\xXX` in the others).
const ESCAPED_BYTES_MAX: usize = 6;

/// What an access log line quotes from the request besides its line: `Referer`,
/// `User-Agent`, `X-Request-Id`, each cut at [`ACCESS_LOG_FIELD_BYTES_MAX`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Quoted<'a> {
    pub(crate) referer: Option<&'a [u8]>,
    pub(crate) user_agent: Option<&'a [u8]>,
    pub(crate) request_id: Option<&'a [u8]>,
}

impl<'a> Quoted<'a> {
    /// From a request's header fields.
    pub(crate) fn of(headers: &'a [httparse::Header<'a>]) -> Quoted<'a> {
        let find = |name: &str| {
            headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| &h.value[..h.value.len().min(ACCESS_LOG_FIELD_BYTES_MAX)])
        };
        Quoted {
            referer: find("referer"),
            user_agent: find("user-agent"),
            request_id: find("x-request-id"),
        }
    }

    /// Appends them to `out` (a request line kept for later), each after a NUL byte (which
    /// a request line and field values never hold) and a byte saying whether it is there,
    /// as [`Quoted::read`] reads them back.
    pub(crate) fn keep(&self, out: &mut Vec<u8>) {
        for field in [self.referer, self.user_agent, self.request_id] {
            out.push(0);
            match field {
                Some(v) => {
                    out.push(1);
                    out.extend_from_slice(v);
                }
                None => out.push(2),
            }
        }
    }

    /// Splits what [`Quoted::keep`] appended off a kept request line: the line and its
    /// quoted fields.
    pub(crate) fn read(kept: &'a [u8]) -> (&'a [u8], Quoted<'a>) {
        let mut parts = kept.split(|&b| b == 0);
        let line = parts.next().unwrap_or_default();
        let mut next = || match parts.next() {
            Some([1, value @ ..]) => Some(value),
            _ => None,
        };
        let quoted = Quoted {
            referer: next(),
            user_agent: next(),
            request_id: next(),
        };
        (line, quoted)
    }
}

/// One response, as its access log line says it.
pub(crate) struct Entry<'a> {
    pub(crate) peer: Option<IpAddr>,
    pub(crate) request: &'a [u8],
    pub(crate) quoted: Quoted<'a>,
    pub(crate) status: u16,
    pub(crate) bytes: usize,
    pub(crate) duration: std::time::Duration,
}

/// The worker's access log buffer, written out by the worker.
#[derive(Debug)]
pub(crate) struct AccessLog {
    pub(crate) buf: Vec<u8>,
    /// Lines dropped because the buffer was full (the disk is slower than the requests).
    pub(crate) dropped: u64,
    pub(crate) format: crate::config::AccessLogFormat,
}

impl AccessLog {
    pub(crate) fn new(format: crate::config::AccessLogFormat) -> AccessLog {
        AccessLog {
            buf: Vec::with_capacity(ACCESS_LOG_BYTES_MAX),
            dropped: 0,
            format,
        }
    }

    /// Whether lines quote more of the request than its line.
    pub(crate) fn quotes(&self) -> bool {
        self.format != crate::config::AccessLogFormat::Common
    }

    /// Appends the line of `e` at the time of `date`, or counts it dropped when the buffer
    /// has no room for the longest it could be.
    pub(crate) fn record(&mut self, date: &DateCache, e: &Entry<'_>) {
        use crate::config::AccessLogFormat as F;
        use std::io::Write;
        let request = &e.request[..e.request.len().min(ACCESS_LOG_REQUEST_BYTES_MAX)];
        let q = e.quoted;
        let quoted: usize = [q.referer, q.user_agent, q.request_id]
            .iter()
            .map(|f| f.map_or(0, <[u8]>::len))
            .sum();
        let longest = ACCESS_LOG_LINE_BYTES_OTHER + ESCAPED_BYTES_MAX * (request.len() + quoted);
        if self.buf.len() + longest > ACCESS_LOG_BYTES_MAX {
            self.dropped += 1;
            return;
        }
        let b = &mut self.buf;
        // Writing to a Vec cannot fail: the results are not looked at.
        match self.format {
            F::Common | F::Combined => {
                match e.peer {
                    Some(ip) => {
                        let _ = write!(b, "{ip}");
                    }
                    None => b.push(b'-'),
                }
                b.extend_from_slice(b" - - ");
                b.extend_from_slice(date.clf());
                b.extend_from_slice(b" \"");
                // Control bytes cannot reach here (the parser refused them), but a target may
                // hold `"` and `\\`: escaped as nginx escapes `$request`.
                escape_clf(b, request);
                let _ = write!(b, "\" {} {}", e.status, e.bytes);
                if self.format == F::Combined {
                    for field in [q.referer, q.user_agent] {
                        b.extend_from_slice(b" \"");
                        match field {
                            Some(v) => escape_clf(b, v),
                            None => b.push(b'-'),
                        }
                        b.push(b'"');
                    }
                }
            }
            F::Json => {
                let _ = write!(
                    b,
                    "{{\"time\":\"{}Z\",\"remote_addr\":",
                    crate::civil::DateTime(date.secs())
                );
                match e.peer {
                    Some(ip) => {
                        let _ = write!(b, "\"{ip}\"");
                    }
                    None => b.extend_from_slice(b"null"),
                }
                b.extend_from_slice(b",\"request\":");
                json_string(b, Some(request));
                let _ = write!(
                    b,
                    ",\"status\":{},\"bytes\":{},\"duration_ms\":{:.3}",
                    e.status,
                    e.bytes,
                    e.duration.as_secs_f64() * 1000.0
                );
                for (key, field) in [
                    ("referer", q.referer),
                    ("user_agent", q.user_agent),
                    ("request_id", q.request_id),
                ] {
                    let _ = write!(b, ",\"{key}\":");
                    json_string(b, field);
                }
                b.push(b'}');
            }
        }
        b.push(b'\n');
    }
}

/// A quoted field of the combined format, escaped as nginx does: `"`, `\\` and bytes
/// outside printable ASCII as `\xXX`.
fn escape_clf(out: &mut Vec<u8>, value: &[u8]) {
    for &c in value {
        match c {
            b'"' | b'\\' | 0..=0x1f | 0x7f..=0xff => {
                let _ = std::io::Write::write_fmt(out, format_args!("\\x{c:02X}"));
            }
            _ => out.push(c),
        }
    }
}

/// `value` as a JSON string (`null` when absent): bytes outside printable ASCII as `\u00XX`
/// (a header's bytes are not always UTF-8; read as Latin-1, the line stays valid JSON).
fn json_string(out: &mut Vec<u8>, value: Option<&[u8]>) {
    let Some(value) = value else {
        out.extend_from_slice(b"null");
        return;
    };
    out.push(b'"');
    for &c in value {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f | 0x7f..=0xff => {
                let _ = std::io::Write::write_fmt(out, format_args!("\\u{c:04x}"));
            }
            _ => out.push(c),
        }
    }
    out.push(b'"');
}

/// Responses whose durations wait for the end of the loop turn, at most; past it one is
/// counted at once, with a clock read of its own.
pub(crate) const DURATIONS_PENDING_MAX: usize = 1024;

impl<H: Serve> Ctx<'_, H> {
    /// Counts a response of `status` started at `started` into the durations' histogram at
    /// the end of this turn ([`Ctx::settle_durations`]).
    #[inline]
    pub(crate) fn time_response(&mut self, status: u16, started: Instant) {
        if self.durations_pending.len() < DURATIONS_PENDING_MAX {
            self.durations_pending.push((status, started));
        } else {
            let ns = Instant::now().saturating_duration_since(started).as_nanos() as u64;
            self.durations.record(status, ns);
        }
    }

    /// Counts this turn's responses into the histogram, as of now: called once per loop
    /// turn, before the turn's sends go to the kernel.
    pub(crate) fn settle_durations(&mut self) {
        if self.durations_pending.is_empty() {
            return;
        }
        let now = Instant::now();
        for (status, started) in self.durations_pending.drain(..) {
            let ns = now.saturating_duration_since(started).as_nanos() as u64;
            self.durations.record(status, ns);
        }
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
    /// Handled requests' durations by status class, reported with the counters.
    pub(crate) durations: Box<crate::durations::Durations>,
    /// Responses of this loop turn not yet counted into `durations`: their status and
    /// start. Counted at the end of the turn, with one clock read for all of them (as their
    /// bytes go to the kernel then), so that pipelined responses share it.
    pub(crate) durations_pending: Vec<(u16, Instant)>,
    /// The time at the start of this loop turn.
    pub(crate) now: Instant,
    /// The access log, when one is kept.
    pub(crate) access: Option<AccessLog>,
    /// The client's address of the connection being processed, when it was looked up (for
    /// the access log and `Request::peer_addr`).
    pub(crate) peer: Option<IpAddr>,
}

#[cfg(test)]
mod access_tests {
    use super::*;
    use crate::config::AccessLogFormat as F;

    fn line(format: F, quoted: Quoted<'_>, peer: Option<IpAddr>) -> String {
        let mut date = DateCache::new();
        date.update(1_795_781_700); // 2026-11-27T12:15:00Z
        let mut log = AccessLog::new(format);
        let entry = Entry {
            peer,
            request: b"GET /a?b=1 HTTP/1.1",
            quoted,
            status: 200,
            bytes: 11,
            duration: std::time::Duration::from_micros(1_234),
        };
        log.record(&date, &entry);
        String::from_utf8(log.buf).unwrap()
    }

    const QUOTED: Quoted<'static> = Quoted {
        referer: Some(b"https://e.example/\"x\""),
        user_agent: Some(b"curl/8.5 \xff"),
        request_id: Some(b"req-7"),
    };

    #[test]
    fn each_format_writes_its_line() {
        let ip = Some(IpAddr::from([10, 0, 0, 7]));
        assert_eq!(
            line(F::Common, QUOTED, ip),
            "10.0.0.7 - - [27/Nov/2026:12:15:00 +0000] \"GET /a?b=1 HTTP/1.1\" 200 11\n"
        );
        assert_eq!(
            line(F::Combined, QUOTED, ip),
            "10.0.0.7 - - [27/Nov/2026:12:15:00 +0000] \"GET /a?b=1 HTTP/1.1\" 200 11 \
             \"https://e.example/\\x22x\\x22\" \"curl/8.5 \\xFF\"\n"
        );
        assert_eq!(
            line(F::Combined, Quoted::default(), None),
            "- - - [27/Nov/2026:12:15:00 +0000] \"GET /a?b=1 HTTP/1.1\" 200 11 \"-\" \"-\"\n"
        );
        let json = line(F::Json, QUOTED, ip);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["time"], "2026-11-27T12:15:00Z");
        assert_eq!(v["remote_addr"], "10.0.0.7");
        assert_eq!(v["request"], "GET /a?b=1 HTTP/1.1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 11);
        assert_eq!(v["duration_ms"], 1.234);
        assert_eq!(v["referer"], "https://e.example/\"x\"");
        assert_eq!(v["user_agent"], "curl/8.5 \u{ff}");
        assert_eq!(v["request_id"], "req-7");
        let v: serde_json::Value =
            serde_json::from_str(&line(F::Json, Quoted::default(), None)).unwrap();
        assert!(v["remote_addr"].is_null() && v["referer"].is_null() && v["request_id"].is_null());
    }

    #[test]
    fn quoted_fields_kept_with_the_line_read_back() {
        let mut kept = b"GET / HTTP/1.1".to_vec();
        QUOTED.keep(&mut kept);
        let (line, q) = Quoted::read(&kept);
        assert_eq!(line, b"GET / HTTP/1.1");
        assert_eq!(q.referer, QUOTED.referer);
        assert_eq!(q.user_agent, QUOTED.user_agent);
        assert_eq!(q.request_id, QUOTED.request_id);
        let mut kept = b"GET / HTTP/1.1".to_vec();
        Quoted::default().keep(&mut kept);
        let (_, q) = Quoted::read(&kept);
        assert!(q.referer.is_none() && q.user_agent.is_none() && q.request_id.is_none());
        // Some there, some not.
        let some = Quoted {
            referer: None,
            user_agent: Some(b"ua"),
            request_id: None,
        };
        let mut kept = b"GET / HTTP/1.1".to_vec();
        some.keep(&mut kept);
        let (_, q) = Quoted::read(&kept);
        assert_eq!(
            (q.referer, q.user_agent, q.request_id),
            (None, Some(&b"ua"[..]), None)
        );
        // A line kept alone (the common format) reads back with nothing quoted.
        let (line, q) = Quoted::read(b"GET / HTTP/1.1");
        assert_eq!(line, b"GET / HTTP/1.1");
        assert!(q.referer.is_none());
    }

    #[test]
    fn a_line_that_might_not_fit_is_dropped_and_counted() {
        let mut date = DateCache::new();
        date.update(0);
        let mut log = AccessLog::new(F::Json);
        let entry = Entry {
            peer: None,
            request: &[b'a'; ACCESS_LOG_REQUEST_BYTES_MAX],
            quoted: QUOTED,
            status: 200,
            bytes: 0,
            duration: std::time::Duration::ZERO,
        };
        let mut written = 0;
        while log.dropped == 0 {
            log.record(&date, &entry);
            written += 1;
        }
        assert!(log.buf.len() <= ACCESS_LOG_BYTES_MAX);
        assert!(written > 1);
        assert_eq!(log.buf.iter().filter(|&&b| b == b'\n').count(), written - 1);
    }
}
