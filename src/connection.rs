//! One client connection: its state, its buffers, and the byte processing that turns
//! received bytes into responses (parse, call the handler, encode). No ring operations
//! happen here: the worker reads the state after each event and submits what it implies.

use crate::http::date::DateCache;
use crate::http::response::{encode, encode_error, ConnectionHeader};
use crate::http::{parse_head, Framing, HeadLimits, Parsed, Request, Response, Version};
use crate::pool::BufPool;
use crate::Handler;
use ringmaster_uring::OpId;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

/// Parsing of further pipelined requests stops while this many response bytes wait to be
/// handed to a send; the receive pauses too, so a client that sends without reading meets
/// TCP flow control instead of growing the server's memory.
pub(crate) const OUTPUT_PAUSE_BYTES: usize = 64 * 1024;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading requests and answering them.
    Open,
    /// No further request is read (the last one said close, was malformed, or the peer
    /// shut its side); the connection closes once its output is sent.
    Finishing,
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
    /// A send of the buffer the ring holds; `offset` bytes of it were sent before.
    InFlight {
        /// Bytes of the buffer already sent by earlier, partial sends.
        offset: usize,
    },
}

/// Counters kept by a worker across its connections.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) accepted: u64,
}

/// What processing needs besides the connection: owned by the worker, shared by all its
/// connections.
pub(crate) struct Ctx<'h, H> {
    pub(crate) handler: &'h H,
    /// The response every request is answered into (reset before each).
    pub(crate) res: Response,
    pub(crate) date: DateCache,
    pub(crate) limits: HeadLimits,
    /// The most bytes a connection may buffer for one unanswered request.
    pub(crate) input_bytes_max: usize,
    pub(crate) pool: BufPool,
    /// The worker is shutting down: the last answered request of a connection closes it.
    pub(crate) draining: bool,
    pub(crate) counters: Counters,
}

/// Why processing stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// All whole requests were answered; any rest is a partial request.
    More,
    /// Output is at [`OUTPUT_PAUSE_BYTES`]: the rest waits until it drains.
    Pause,
    /// The connection closes after its output is sent; the rest is discarded.
    Close,
}

/// One connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) fd: RawFd,
    pub(crate) phase: Phase,
    pub(crate) recv: Recv,
    pub(crate) send: Sending,
    /// Bytes of requests not yet answered (a partial request, or pipelined requests held
    /// back by [`OUTPUT_PAUSE_BYTES`]). Holds no buffer when empty.
    input: Vec<u8>,
    /// Responses not yet handed to a send. Holds no buffer when empty.
    output: Vec<u8>,
    /// The connection is in the worker's list of connections to act on at the turn's end.
    pub(crate) queued: bool,
}

impl Conn {
    pub(crate) fn new(fd: RawFd) -> Conn {
        Conn {
            fd,
            phase: Phase::Open,
            recv: Recv::Idle,
            send: Sending::Idle,
            input: Vec::new(),
            output: Vec::new(),
            queued: false,
        }
    }

    /// Handles bytes received. In the common case (nothing buffered) the requests are
    /// parsed straight from `data`, which is the kernel's provided buffer; only a partial
    /// request is copied.
    pub(crate) fn on_data<H: Handler>(&mut self, data: &[u8], ctx: &mut Ctx<'_, H>) {
        ctx.counters.bytes_in += data.len() as u64;
        if self.phase != Phase::Open {
            return; // Bytes after the last request are read and dropped.
        }
        if self.output.capacity() == 0 {
            self.output = ctx.pool.take();
        }
        if self.input.is_empty() {
            let (used, next) = process(data, &mut self.output, ctx);
            let rest = &data[used..];
            if next != Next::Close && !rest.is_empty() {
                self.input = ctx.pool.take();
                self.input.extend_from_slice(rest);
            }
            self.after(next, ctx);
        } else if self.input.len() + data.len() > ctx.input_bytes_max {
            // Only pipelined requests held back by a client that does not read can get
            // here: a single request is refused at its head when it exceeds the limits.
            ctx.counters.errors += 1;
            self.input.clear();
            self.phase = Phase::Finishing;
            self.release_buffers(&mut ctx.pool);
        } else {
            self.input.extend_from_slice(data);
            self.process_input(ctx);
        }
    }

    /// Answers requests waiting in the input buffer, after the output drained.
    pub(crate) fn resume<H: Handler>(&mut self, ctx: &mut Ctx<'_, H>) {
        if self.phase == Phase::Open && !self.input.is_empty() {
            if self.output.capacity() == 0 {
                self.output = ctx.pool.take();
            }
            self.process_input(ctx);
        }
    }

    fn process_input<H: Handler>(&mut self, ctx: &mut Ctx<'_, H>) {
        let (used, next) = process(&self.input, &mut self.output, ctx);
        self.input.drain(..used);
        self.after(next, ctx);
    }

    fn after<H: Handler>(&mut self, next: Next, ctx: &mut Ctx<'_, H>) {
        if next == Next::Close {
            self.phase = Phase::Finishing;
            self.input.clear();
        } else if ctx.draining && self.input.is_empty() {
            // Nothing more was received: the response just queued was the last one.
            self.phase = Phase::Finishing;
        }
        self.release_buffers(&mut ctx.pool);
    }

    /// Returns empty buffers to the pool: an idle connection holds none.
    pub(crate) fn release_buffers(&mut self, pool: &mut BufPool) {
        if self.input.is_empty() && self.input.capacity() > 0 {
            pool.put(std::mem::take(&mut self.input));
        }
        if self.output.is_empty() && self.output.capacity() > 0 {
            pool.put(std::mem::take(&mut self.output));
        }
    }

    /// The output to send now, if any and no send is in flight.
    pub(crate) fn take_output(&mut self) -> Option<Vec<u8>> {
        (self.send == Sending::Idle && !self.output.is_empty())
            .then(|| std::mem::take(&mut self.output))
    }

    /// Whether the receive should be armed: open, and not held back by unsent output.
    pub(crate) fn wants_read(&self) -> bool {
        self.phase == Phase::Open && self.output.len() < OUTPUT_PAUSE_BYTES
    }

    /// Whether everything answered has been sent and nothing is buffered.
    pub(crate) fn is_idle(&self) -> bool {
        self.send == Sending::Idle && self.output.is_empty() && self.input.is_empty()
    }

    /// Drops what is buffered (the connection is being torn down).
    pub(crate) fn discard(&mut self, pool: &mut BufPool) {
        self.input.clear();
        self.output.clear();
        self.release_buffers(pool);
    }

    /// Whether every operation on the connection has ended, so its slot can be reused.
    pub(crate) fn is_finished(&self) -> bool {
        self.phase == (Phase::Closing { fd_closed: true })
            && matches!(self.recv, Recv::Idle | Recv::Ended)
            && self.send == Sending::Idle
    }
}

/// Answers every whole request at the start of `data`, appending the responses to `out`,
/// in order. Returns the bytes used and why it stopped.
fn process<H: Handler>(data: &[u8], out: &mut Vec<u8>, ctx: &mut Ctx<'_, H>) -> (usize, Next) {
    let mut used = 0;
    loop {
        if out.len() >= OUTPUT_PAUSE_BYTES {
            return (used, Next::Pause);
        }
        let rest = &data[used..];
        if rest.is_empty() {
            return (used, Next::More);
        }
        let mut headers = [const { MaybeUninit::uninit() }; crate::http::request::HEADERS_MAX];
        let head = match parse_head(rest, &mut headers, &ctx.limits) {
            Ok(Parsed::Complete(head)) => head,
            Ok(Parsed::Partial) => return (used, Next::More),
            Err(e) => {
                ctx.counters.errors += 1;
                encode_error(out, e.status(), &e, ctx.date.line());
                return (data.len(), Next::Close);
            }
        };
        let body_len = match head.framing {
            Framing::None => 0,
            // The head parser refused lengths over the body limit, which is a u32.
            Framing::Length(n) => n as usize,
        };
        let Some(body) = rest.get(head.head_len..head.head_len + body_len) else {
            return (used, Next::More);
        };
        used += head.head_len + body_len;
        ctx.res.reset();
        ctx.handler.handle(&Request::new(&head, body), &mut ctx.res);
        ctx.counters.requests += 1;
        let last = ctx.draining && used == data.len();
        let keep_alive = head.keep_alive && !ctx.res.wants_close() && !last;
        let connection = match (keep_alive, head.version) {
            (false, _) => ConnectionHeader::Close,
            (true, Version::Http10) => ConnectionHeader::KeepAlive,
            (true, Version::Http11) => ConnectionHeader::Omit,
        };
        encode(out, &ctx.res, ctx.date.line(), head.head_only, connection);
        if !keep_alive {
            return (used, Next::Close);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;

    struct Echo;
    impl Handler for Echo {
        fn handle(&self, req: &Request<'_>, res: &mut Response) {
            res.write(req.path()).write("|").write(req.body());
        }
    }

    struct Harness {
        ctx: Ctx<'static, Echo>,
    }

    impl Harness {
        fn new() -> Harness {
            let mut date = DateCache::new();
            date.update(0);
            Harness {
                ctx: Ctx {
                    handler: &Echo,
                    res: Response::new(),
                    date,
                    limits: Limits::default().head(),
                    input_bytes_max: Limits::default().input_bytes_max(),
                    pool: BufPool::new(8, 0),
                    draining: false,
                    counters: Counters::default(),
                },
            }
        }

        /// Feeds `chunks` one by one and returns everything the connection would send.
        fn feed(&mut self, conn: &mut Conn, chunks: &[&[u8]]) -> String {
            let mut sent = Vec::new();
            for chunk in chunks {
                conn.on_data(chunk, &mut self.ctx);
                while let Some(out) = conn.take_output() {
                    sent.extend_from_slice(&out);
                    conn.resume(&mut self.ctx);
                }
            }
            String::from_utf8(sent).unwrap()
        }
    }

    fn bodies(responses: &str) -> Vec<&str> {
        responses
            .split("HTTP/1.1 ")
            .skip(1)
            .map(|r| r.split("\r\n\r\n").nth(1).unwrap())
            .collect()
    }

    #[test]
    fn pipelined_requests_are_answered_in_order_across_any_split() {
        let stream = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n\
            POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz\
            GET /c HTTP/1.1\r\nHost: h\r\n\r\n";
        for split in 0..=stream.len() {
            let mut h = Harness::new();
            let mut conn = Conn::new(-1);
            let (a, b) = stream.split_at(split);
            let out = h.feed(&mut conn, &[a, b]);
            assert_eq!(bodies(&out), ["/a|", "/b|xyz", "/c|"], "split at {split}");
            assert_eq!(conn.phase, Phase::Open);
            assert!(conn.is_idle(), "nothing left over at split {split}");
        }
    }

    #[test]
    fn connection_close_stops_the_pipeline() {
        let mut h = Harness::new();
        let mut conn = Conn::new(-1);
        let out = h.feed(
            &mut conn,
            &[b"GET /1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"],
        );
        assert_eq!(bodies(&out), ["/1|"]);
        assert!(out.contains("Connection: close\r\n"));
        assert_eq!(conn.phase, Phase::Finishing);
    }

    #[test]
    fn malformed_head_gets_400_and_finishes() {
        let mut h = Harness::new();
        let mut conn = Conn::new(-1);
        let out = h.feed(
            &mut conn,
            &[b"GET / HTTP/1.1\r\nHost: h\r\n\r\nBAD\x01 / HTTP/1.1\r\n\r\n"],
        );
        assert!(out.starts_with("HTTP/1.1 200 OK"));
        assert!(out.contains("HTTP/1.1 400 Bad Request\r\n"));
        assert_eq!(conn.phase, Phase::Finishing);
        assert_eq!(h.ctx.counters.errors, 1);
        assert_eq!(h.ctx.counters.requests, 1);
    }

    #[test]
    fn http10_keep_alive_is_echoed_and_default_closes() {
        let mut h = Harness::new();
        let mut conn = Conn::new(-1);
        let out = h.feed(
            &mut conn,
            &[b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"],
        );
        assert!(out.contains("Connection: keep-alive\r\n"));
        assert_eq!(conn.phase, Phase::Open);
        let out = h.feed(&mut conn, &[b"GET / HTTP/1.0\r\n\r\n"]);
        assert!(out.contains("Connection: close\r\n"));
        assert_eq!(conn.phase, Phase::Finishing);
    }

    #[test]
    fn head_gets_length_without_body() {
        let mut h = Harness::new();
        let mut conn = Conn::new(-1);
        let out = h.feed(&mut conn, &[b"HEAD /xy HTTP/1.1\r\nHost: h\r\n\r\n"]);
        assert!(out.ends_with("Content-Length: 4\r\n\r\n"), "{out}");
    }

    #[test]
    fn output_backpressure_holds_requests_until_sent() {
        let mut h = Harness::new();
        let mut conn = Conn::new(-1);
        let one = b"GET /0123456789012345678901234567890123456789 HTTP/1.1\r\nHost: h\r\n\r\n";
        let many: Vec<u8> = one.iter().copied().cycle().take(one.len() * 2000).collect();
        let ctx = &mut h.ctx;
        ctx.input_bytes_max = usize::MAX;
        conn.on_data(&many, ctx);
        assert!(!conn.wants_read(), "receive pauses at the output bound");
        assert!(ctx.counters.requests < 2000);
        let mut answered = ctx.counters.requests;
        while let Some(out) = conn.take_output() {
            assert!(out.len() < OUTPUT_PAUSE_BYTES + 200);
            conn.resume(ctx);
            assert!(ctx.counters.requests >= answered);
            answered = ctx.counters.requests;
        }
        assert_eq!(ctx.counters.requests, 2000);
        assert!(conn.wants_read() && conn.is_idle());
    }

    #[test]
    fn draining_closes_after_the_last_received_request() {
        let mut h = Harness::new();
        h.ctx.draining = true;
        let mut conn = Conn::new(-1);
        let out = h.feed(
            &mut conn,
            &[b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"],
        );
        assert_eq!(bodies(&out), ["/1|", "/2|"]);
        assert_eq!(out.matches("Connection: close").count(), 1);
        assert_eq!(conn.phase, Phase::Finishing);
    }

    #[test]
    fn idle_connection_holds_no_buffer() {
        let mut h = Harness::new();
        let mut conn = Conn::new(-1);
        h.feed(&mut conn, &[b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"]);
        assert_eq!(conn.input.capacity() + conn.output.capacity(), 0);
        h.feed(&mut conn, &[b"GET / HTTP/1.1\r\nHo"]);
        assert!(conn.input.capacity() > 0, "a partial request is kept");
        h.feed(&mut conn, &[b"st: h\r\n\r\n"]);
        assert_eq!(conn.input.capacity() + conn.output.capacity(), 0);
    }
}
