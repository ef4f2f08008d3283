//! A connection's byte processing: requests parsed straight from received bytes, bodies
//! (`Content-Length` or chunked) gathered, the handler called, responses encoded into the
//! output, refusals answered, and the end of input settled.

use super::ctx::{AccessLog, Entry, Quoted};
use super::output::{Output, BODY_COPY_BYTES_MAX};
use super::stream::{start_stream, StreamOut, Upload, UPLOAD_PIPE_BYTES_MAX};
use super::{AfterOutput, Conn, Ctx, Drain, Interim, Phase, Recv, RecvMode, Wait};
use crate::handler::Handled;
use crate::http::body::Pipe;
use crate::http::chunked::ChunkedDecoder;
use crate::http::response::{encode, encode_error, encode_head, ConnectionHeader};
use crate::http::BodyReader;
use crate::http::{
    parse_head, Framing, Head, OwnedRequest, Parsed, Request, Response, TargetForm, Version,
};
use crate::log::log_limited;
use crate::rt::{Panicked, Started};
use crate::Serve;
use std::mem::MaybeUninit;
use std::time::Instant;

/// The interim response to `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Why processing stopped.
pub(super) enum Next {
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
    /// The async handler's future for the request just taken waits; the rest waits for
    /// its answer.
    Await(Pending),
    /// The next request is whole, but the async handlers are at their bound
    /// (`handlers_max`): it waits, unread past, for a slot.
    Busy,
    /// The response's body streams; the rest waits for its end.
    Stream(StreamOut),
}

/// A request whose async handler's future waits: its task, and what answering it needs of
/// its head.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) task: u32,
    keep_alive: bool,
    version: Version,
    head_only: bool,
    /// The request line and what else the access log quotes ([`Quoted::keep`]), for the
    /// access log (empty when none is kept).
    pub(super) line: Vec<u8>,
    /// When its head was parsed.
    started: Instant,
    /// The body streaming to the handler, when it asked for it so.
    upload: Option<Upload>,
}

impl Pending {
    /// Task `task` answering the request of `head` (its body, if `upload`, as it arrives).
    fn of<H: Serve>(
        task: u32,
        head: &Head<'_>,
        upload: Option<Upload>,
        ctx: &mut Ctx<'_, H>,
    ) -> Pending {
        Pending {
            task,
            keep_alive: head.keep_alive,
            version: head.version,
            head_only: head.head_only,
            line: access_line(head, ctx),
            started: ctx.now,
            upload,
        }
    }
}

/// What encoding a response needs of its request's head.
pub(super) struct Meta<'a> {
    pub(super) keep_alive: bool,
    pub(super) version: Version,
    pub(super) head_only: bool,
    pub(super) line: &'a [u8],
    /// What the access log quotes from the request besides its line (nothing when no log
    /// is kept, or its format quotes nothing more).
    pub(super) quoted: Quoted<'a>,
    /// When its head was parsed (the loop turn's clock).
    pub(super) started: Instant,
}

impl<'a> Meta<'a> {
    fn of<H: Serve>(head: &'a Head<'_>, ctx: &Ctx<'_, H>) -> Meta<'a> {
        let quotes = ctx.access.as_ref().is_some_and(AccessLog::quotes);
        Meta {
            keep_alive: head.keep_alive,
            version: head.version,
            head_only: head.head_only,
            line: head.request_line(),
            quoted: match quotes {
                true => Quoted::of(head.headers),
                false => Quoted::default(),
            },
            started: ctx.now,
        }
    }
}

impl Pending {
    fn meta(&self) -> Meta<'_> {
        let (line, quoted) = Quoted::read(&self.line);
        Meta {
            keep_alive: self.keep_alive,
            version: self.version,
            head_only: self.head_only,
            line,
            quoted,
            started: self.started,
        }
    }
}

/// A chunked body in progress. The head stays at the front of the connection's input.
#[derive(Debug)]
pub(super) struct ChunkedBody {
    pub(super) head_len: usize,
    pub(super) decoder: ChunkedDecoder,
    pub(super) body: Vec<u8>,
}

impl Conn {
    /// Handles bytes received. In the common case (nothing buffered) requests are parsed
    /// straight from `data`, the kernel's provided buffer; only a partial request is copied.
    pub(crate) fn on_data<H: Serve>(&mut self, data: &[u8], ctx: &mut Ctx<'_, H>) {
        ctx.counters.bytes_in += data.len() as u64;
        self.enter(ctx);
        if self.phase != Phase::Open {
            return; // Bytes after the last request, or while lingering: read and dropped.
        }
        if self.holds_requests() && self.chunked.is_none() {
            // Requests wait for a handler's answer or a slot: later bytes are kept, within
            // the bound below, and processed once it comes. A body streaming to the handler
            // takes what is its own.
            if self.hold(data, ctx) {
                self.feed_upload(ctx);
            }
            return;
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
            let (used, next) = process(data, &mut self.output, &mut self.interim, ctx);
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
        } else if self.hold(data, ctx) {
            self.process_input(ctx);
        }
    }

    /// Adds `data` to the input without processing it. Past the bound (only pipelined
    /// requests held back get here: one request over the limits is refused at its head)
    /// the connection finishes. Returns whether the data was kept.
    fn hold<H: Serve>(&mut self, data: &[u8], ctx: &mut Ctx<'_, H>) -> bool {
        if self.input.len() + data.len() > ctx.limits.input_bytes_max() + ctx.input_slack_bytes {
            ctx.counters.errors += 1;
            self.input.clear();
            self.phase = Phase::Finishing(AfterOutput::Linger);
            self.release_buffers(&mut ctx.pool);
            return false;
        }
        if self.input.capacity() == 0 {
            self.input = ctx.pool.take();
        }
        self.input.extend_from_slice(data);
        true
    }

    /// Tells `ctx` which connection is processed: the requests' peer, a task's owner.
    fn enter<H: Serve>(&self, ctx: &mut Ctx<'_, H>) {
        debug_assert!(!self.asks_peer(), "bytes came before the client's address");
        ctx.peer = self.peer.ip();
        ctx.conn = self.slot;
    }

    /// Whether whole requests wait in the input for something other than bytes: the
    /// output to drain, a handler's answer, a handler slot.
    pub(super) fn holds_requests(&self) -> bool {
        matches!(
            self.wait,
            Wait::Output | Wait::Handler { .. } | Wait::Room { .. } | Wait::Stream { .. }
        )
    }

    /// The async handler's future answered (or panicked): the response goes out in order,
    /// and the requests that waited behind it are processed.
    pub(crate) fn on_answer<H: Serve>(
        &mut self,
        answer: Result<Response, Panicked>,
        ctx: &mut Ctx<'_, H>,
    ) {
        let Some(mut pending) = self.awaiting.take() else {
            return; // Its connection was torn down meanwhile.
        };
        self.enter(ctx);
        let streamed = matches!(&answer, Ok(res) if res.is_streamed());
        if self.upload.is_some() && !streamed {
            // Answered before its body was read whole: the rest is not read, and the
            // connection closes after the answer. (A streamed answer may still read it: the
            // upload goes on while it streams, and the stream's end settles it.)
            self.upload = None;
            pending.keep_alive = false;
            self.input.clear();
        }
        let last = self.input.is_empty();
        let next = match answer {
            Ok(res) => respond(&pending.meta(), res, &mut self.output, last, ctx),
            Err(_) => Some(handler_failed(&pending.meta(), &mut self.output, ctx)),
        };
        ctx.pool.put(pending.line);
        self.wait = Wait::Head { since: ctx.now };
        match next {
            Some(next) => self.after(next, ctx),
            None if !self.input.is_empty() => self.process_input(ctx),
            None => self.after(Next::NeedHead, ctx),
        }
    }

    /// A handler slot freed: a connection that waited for one goes on.
    pub(crate) fn on_room<H: Serve>(&mut self, ctx: &mut Ctx<'_, H>) {
        if self.phase != Phase::Open || !matches!(self.wait, Wait::Room { .. }) {
            return;
        }
        if let Some(chunked) = self.chunked.take_if(|c| c.decoder.is_done()) {
            // A chunked body that completed while no slot was free.
            self.enter(ctx);
            self.wait = Wait::Head { since: ctx.now };
            let last = self.input.len() == chunked.head_len;
            if self.answer_chunked(chunked, last, ctx) {
                match self.input.is_empty() {
                    true => self.after(Next::NeedHead, ctx),
                    false => self.process_input(ctx),
                }
            }
            return;
        }
        self.wait = Wait::Head { since: ctx.now };
        self.process_input(ctx);
    }

    /// Whether the connection waits for a handler slot.
    pub(crate) fn waits_for_room(&self) -> bool {
        self.phase == Phase::Open && matches!(self.wait, Wait::Room { .. })
    }

    /// Feeds a chunked body in progress. Returns the bytes of `data` it used when the body
    /// is done and its request answered (or refused), `None` when it wants more.
    fn feed_chunks<H: Serve>(&mut self, data: &[u8], ctx: &mut Ctx<'_, H>) -> Option<usize> {
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
        if H::ASYNC && !ctx.tasks.has_room() {
            // Kept, decoded, until a slot frees; bytes after it wait in the input.
            let rest = &data[used..];
            self.chunked = Some(chunked);
            self.after(Next::Busy, ctx);
            if !rest.is_empty() {
                self.hold(rest, ctx);
            }
            return None;
        }
        let last = used == data.len() && self.input.len() == chunked.head_len;
        if self.answer_chunked(chunked, last, ctx) {
            Some(used)
        } else {
            None
        }
    }

    /// Answers the request whose head is at the front of the input with its decoded
    /// chunked body. Returns whether processing goes on after it.
    fn answer_chunked<H: Serve>(
        &mut self,
        chunked: ChunkedBody,
        last: bool,
        ctx: &mut Ctx<'_, H>,
    ) -> bool {
        let (used_head, next) = answer_buffered(
            &self.input[..chunked.head_len],
            &chunked.body,
            &mut self.output,
            last,
            ctx,
        );
        debug_assert_eq!(used_head, chunked.head_len);
        self.input.drain(..chunked.head_len);
        self.interim = Interim::None;
        ctx.pool.put(chunked.body);
        match next {
            Some(next) => {
                self.after(next, ctx);
                false
            }
            None => true,
        }
    }

    /// Answers requests waiting in the input buffer, after the output drained.
    pub(super) fn resume<H: Serve>(&mut self, ctx: &mut Ctx<'_, H>) {
        if self.streaming.is_some() {
            return self.pull_stream(ctx);
        }
        let waits_elsewhere = matches!(self.wait, Wait::Handler { .. } | Wait::Room { .. });
        if self.phase != Phase::Open || self.chunked.is_some() || waits_elsewhere {
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

    /// No byte will come any more and no whole request waits: with nothing buffered the
    /// connection finishes; a request cut short is answered `400` (the client may still
    /// read, as after nginx's "client prematurely closed connection") and the connection
    /// finishes after it. Without this a cut request would wait for bytes that never come,
    /// with no timer left to end it.
    pub(super) fn settle_end_of_input<H: Serve>(&mut self, ctx: &mut Ctx<'_, H>) {
        if self.input.is_empty() && self.chunked.is_none() {
            self.phase = Phase::Finishing(AfterOutput::Close);
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

    fn process_input<H: Serve>(&mut self, ctx: &mut Ctx<'_, H>) {
        self.enter(ctx);
        let (used, next) = process(&self.input, &mut self.output, &mut self.interim, ctx);
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
    fn after<H: Serve>(&mut self, next: Next, ctx: &mut Ctx<'_, H>) {
        let now = ctx.now;
        match next {
            Next::Close { linger } => {
                let lingers = linger || self.phase == Phase::Finishing(AfterOutput::Linger);
                self.phase = Phase::Finishing(match lingers {
                    true => AfterOutput::Linger,
                    false => AfterOutput::Close,
                });
                self.input.clear();
            }
            Next::Pause => {
                self.wait = Wait::Output;
                self.recv_mode = RecvMode::OneBuffer;
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
            Next::Await(mut pending) => {
                self.upload = pending.upload.take();
                self.awaiting = Some(pending);
                self.wait = Wait::Handler { since: now };
                self.feed_upload(ctx);
            }
            Next::Stream(mut stream) => {
                if let Some(upload) = stream.upload.take() {
                    self.upload = Some(upload);
                }
                self.streaming = Some(stream);
                self.wait = Wait::Stream { since: now };
                self.pull_stream(ctx);
            }
            Next::Busy => self.wait = Wait::Room { since: now },
            Next::NeedHead if self.input.is_empty() => {
                if ctx.drain != Drain::Serving {
                    // Nothing more was received: the response just queued was the last.
                    self.phase = Phase::Finishing(AfterOutput::Close);
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
        if self.recv == Recv::Ended && self.phase == Phase::Open && !self.holds_requests() {
            // Whatever was still awaited will not come.
            self.settle_end_of_input(ctx);
        }
        self.release_buffers(&mut ctx.pool);
    }

    /// Answers `status` for `detail` and closes after a linger.
    pub(super) fn refuse<H: Serve>(
        &mut self,
        status: u16,
        detail: &dyn std::fmt::Display,
        ctx: &mut Ctx<'_, H>,
    ) {
        let next = refuse_into(&mut self.output, status, detail, ctx);
        self.after(next, ctx);
    }
}

/// Answers every whole request at the start of `data`, appending the responses to `out`,
/// in order. Returns the bytes used and why it stopped.
fn process<H: Serve>(
    data: &[u8],
    out: &mut Output,
    interim: &mut Interim,
    ctx: &mut Ctx<'_, H>,
) -> (usize, Next) {
    let mut used = 0;
    loop {
        if out.len() >= ctx.output_bytes_max {
            return (used, Next::Pause);
        }
        match process_one(data, used, out, interim, ctx) {
            One::Answered(end) => used = end,
            One::Stop(end, next) => return (end, next),
        }
    }
}

/// What came of the request at `data[used..]`.
enum One {
    /// It was answered; the next one starts at this offset.
    Answered(usize),
    /// Processing stops: the bytes used in all, and why.
    Stop(usize, Next),
}

/// Parses the request at `data[used..]` and answers it when it is whole.
fn process_one<H: Serve>(
    data: &[u8],
    used: usize,
    out: &mut Output,
    interim: &mut Interim,
    ctx: &mut Ctx<'_, H>,
) -> One {
    let rest = &data[used..];
    if rest.is_empty() {
        return One::Stop(used, Next::NeedHead);
    }
    let mut headers = [const { MaybeUninit::uninit() }; crate::http::request::HEADERS_MAX];
    let head = match parse_head(rest, &mut headers, &ctx.limits) {
        Ok(Parsed::Complete(head)) => head,
        Ok(Parsed::Partial) => return One::Stop(used, Next::NeedHead),
        Err(e) => return One::Stop(data.len(), refuse_into(out, e.status(), &e, ctx)),
    };
    let after_head = &rest[head.head_len..];
    let has_body = head.framing != Framing::None && head.framing != Framing::Length(0);
    if H::ASYNC
        && has_body
        && ctx
            .handler
            .streams_body(&Request::new(&head, &[], ctx.peer))
    {
        if !ctx.tasks.has_room() {
            return One::Stop(used, Next::Busy);
        }
        expect_continue(&head, out, interim, ctx);
        *interim = Interim::None;
        let next = answer_streaming(rest, &head, out, ctx);
        return One::Stop(used + head.head_len, next);
    }
    let body_len = match head.framing {
        Framing::None => 0,
        // The head parser refused lengths over the body limit, which is a u32.
        Framing::Length(n) if after_head.len() as u64 >= n => n as usize,
        Framing::Length(_) => {
            expect_continue(&head, out, interim, ctx);
            return One::Stop(used, Next::NeedBody);
        }
        Framing::Chunked => return chunked_request(&head, data, used, out, interim, ctx),
    };
    if H::ASYNC && !ctx.tasks.has_room() && head.target_form != TargetForm::Asterisk {
        return One::Stop(used, Next::Busy);
    }
    let end = used + head.head_len + body_len;
    *interim = Interim::None;
    match answer(
        rest,
        &head,
        &after_head[..body_len],
        out,
        end == data.len(),
        ctx,
    ) {
        Some(next) => One::Stop(end, next),
        None => One::Answered(end),
    }
}

/// Decodes the chunked body of `head` (at `data[used..]`) as far as it has arrived: a whole
/// body is answered, a partial one kept in a decoder for the bytes to come.
fn chunked_request<H: Serve>(
    head: &Head<'_>,
    data: &[u8],
    used: usize,
    out: &mut Output,
    interim: &mut Interim,
    ctx: &mut Ctx<'_, H>,
) -> One {
    let mut decoder = ChunkedDecoder::new(
        ctx.limits.request_body_bytes_max,
        ctx.limits.request_fields_bytes_max,
    );
    let mut body = ctx.pool.take();
    match decoder.decode(&data[used + head.head_len..], &mut body) {
        Err(e) => {
            ctx.pool.put(body);
            One::Stop(data.len(), refuse_into(out, e.status(), &e, ctx))
        }
        Ok(_) if decoder.is_done() && H::ASYNC && !ctx.tasks.has_room() => {
            // Decoded again once a slot frees.
            ctx.pool.put(body);
            One::Stop(used, Next::Busy)
        }
        Ok(n) if decoder.is_done() => {
            let end = used + head.head_len + n;
            let next = answer(&data[used..], head, &body, out, end == data.len(), ctx);
            ctx.pool.put(body);
            *interim = Interim::None;
            match next {
                Some(next) => One::Stop(end, next),
                None => One::Answered(end),
            }
        }
        Ok(_) => {
            expect_continue(head, out, interim, ctx);
            let chunked = ChunkedBody {
                head_len: head.head_len,
                decoder,
                body,
            };
            One::Stop(used, Next::NeedChunks(chunked))
        }
    }
}

/// Refuses a request: appends the error answer (with `Connection: close`) and counts it, as an
/// error and as a response of its status class. Every refusal goes through here, so each is
/// counted once whichever path produced it.
fn refuse_into<H: Serve>(
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
fn expect_continue<H: Serve>(
    head: &Head<'_>,
    out: &mut Output,
    interim: &mut Interim,
    ctx: &mut Ctx<'_, H>,
) {
    if head.expect_continue && *interim == Interim::None {
        out.tail(&mut ctx.pool).extend_from_slice(CONTINUE);
        ctx.counters.response(100);
        *interim = Interim::ContinueSent;
    }
}

/// Re-parses the head in `head_bytes` (kept in the input while its chunked body arrived)
/// and answers it with `body`. Returns the head's length and what follows, if not more.
fn answer_buffered<H: Serve>(
    head_bytes: &[u8],
    body: &[u8],
    out: &mut Output,
    last: bool,
    ctx: &mut Ctx<'_, H>,
) -> (usize, Option<Next>) {
    let mut headers = [const { MaybeUninit::uninit() }; crate::http::request::HEADERS_MAX];
    match parse_head(head_bytes, &mut headers, &ctx.limits) {
        Ok(Parsed::Complete(head)) => (
            head.head_len,
            answer(head_bytes, &head, body, out, last, ctx),
        ),
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
fn answer<H: Serve>(
    raw: &[u8],
    head: &Head<'_>,
    body: &[u8],
    out: &mut Output,
    last: bool,
    ctx: &mut Ctx<'_, H>,
) -> Option<Next> {
    ctx.counters.requests += 1;
    if head.target_form == TargetForm::Asterisk {
        // `OPTIONS *` asks about the server, not a resource: the server answers it (the
        // parser let the asterisk form through for OPTIONS only).
        let res = ctx.res.as_mut().expect("the worker's response");
        res.reset();
        res.header("Allow", crate::http::OPTIONS_ALLOW);
        return encode_own(&Meta::of(head, ctx), out, last, ctx);
    }
    if H::ONLY_ASYNC {
        // The future answers in its own `Response`; the worker's is not used.
        return answer_async(raw, head, body, out, last, ctx);
    }
    let (handler, peer, res) = (
        ctx.handler,
        ctx.peer,
        ctx.res.as_mut().expect("the worker's response"),
    );
    res.reset();
    // Unwinding stops here. After a panic nothing the handler touched is used but `res`,
    // which is reset before the next request; the handler's own state is its own affair.
    let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handler.handle_now(&Request::new(head, body, peer), res)
    }));
    let meta = Meta::of(head, ctx);
    match called {
        Err(panic) if ctx.exit_on_panic => std::panic::resume_unwind(panic),
        Err(_) => return Some(handler_failed(&meta, out, ctx)),
        // A router's async route: a future answers it.
        Ok(Handled::Deferred) if H::ASYNC => return answer_async(raw, head, body, out, last, ctx),
        Ok(_) => {}
    }
    if let Some(misuse) = ctx.res.as_ref().and_then(Response::misuse) {
        log_limited!("the handler's response is invalid ({misuse}); answered 500 instead");
        return Some(handler_failed(&meta, out, ctx));
    }
    encode_own(&meta, out, last, ctx)
}

/// Starts the async handler's future for a whole request (a slot was checked free) and
/// polls it once: a future that answers at once is encoded now, one that waits is
/// [`Next::Await`]. The request is copied into an [`OwnedRequest`] (pooled buffers).
fn answer_async<H: Serve>(
    raw: &[u8],
    head: &Head<'_>,
    body: &[u8],
    out: &mut Output,
    last: bool,
    ctx: &mut Ctx<'_, H>,
) -> Option<Next> {
    let req = OwnedRequest::new(raw, head, body, ctx.peer);
    let handler = ctx.handler;
    // A handler type may do work (and panic) before it returns its future: `start_with`
    // catches that as a panic of the future's.
    let mut answered = None;
    let started = ctx
        .tasks
        .start_into(ctx.conn, || handler.call_async(req), &mut answered);
    match started {
        Ok(None) => {
            let res = answered.as_mut().expect("set when done");
            respond_in_place(&Meta::of(head, ctx), res, out, last, ctx)
        }
        Ok(Some(task)) => Some(Next::Await(Pending::of(task, head, None, ctx))),
        Err(Panicked(panic)) if ctx.exit_on_panic => std::panic::resume_unwind(panic),
        Err(_) => Some(handler_failed(&Meta::of(head, ctx), out, ctx)),
    }
}

/// Starts the async handler's future for a request whose body it reads as it arrives: the
/// body is handed over through a pipe the connection fills ([`Upload`]). A future that
/// answers at once, before reading the body, gets its connection closed after the answer.
fn answer_streaming<H: Serve>(
    raw: &[u8],
    head: &Head<'_>,
    out: &mut Output,
    ctx: &mut Ctx<'_, H>,
) -> Next {
    ctx.counters.requests += 1;
    let length = match head.framing {
        Framing::Length(n) => Some(n),
        _ => None,
    };
    let pipe = Pipe::new(UPLOAD_PIPE_BYTES_MAX, length);
    let decoder = ChunkedDecoder::new(
        ctx.limits.request_body_bytes_max,
        ctx.limits.request_fields_bytes_max,
    );
    let upload = Upload::new(pipe.clone(), length, decoder);
    let mut req = OwnedRequest::new(raw, head, &[], ctx.peer);
    req.set_body_reader(BodyReader::new(pipe));
    let handler = ctx.handler;
    let started = ctx.tasks.start_with(ctx.conn, || handler.call_async(req));
    let mut meta = Meta::of(head, ctx);
    match started {
        Ok(Started::Ready(res)) if res.is_streamed() => {
            // A streamed answer may read the body as it streams.
            match respond(&meta, res, out, false, ctx) {
                Some(Next::Stream(mut stream)) => {
                    stream.upload = Some(upload);
                    Next::Stream(stream)
                }
                next => next.unwrap_or(Next::Close { linger: true }),
            }
        }
        Ok(Started::Ready(res)) => {
            // Answered before reading the body: the rest is not read; close after.
            drop(upload);
            meta.keep_alive = false;
            respond(&meta, res, out, false, ctx).unwrap_or(Next::Close { linger: true })
        }
        Ok(Started::Pending(task)) => Next::Await(Pending::of(task, head, Some(upload), ctx)),
        Err(Panicked(panic)) if ctx.exit_on_panic => std::panic::resume_unwind(panic),
        Err(_) => {
            meta.keep_alive = false;
            handler_failed(&meta, out, ctx)
        }
    }
}

/// A copy of the request line for the access log, when one is kept (empty otherwise).
fn access_line<H: Serve>(head: &Head<'_>, ctx: &mut Ctx<'_, H>) -> Vec<u8> {
    let mut line = Vec::new();
    if let Some(access) = &ctx.access {
        let quotes = access.quotes();
        line = ctx.pool.take();
        line.extend_from_slice(head.request_line());
        if quotes {
            Quoted::of(head.headers).keep(&mut line);
        }
    }
    line
}

/// Encodes the response an async handler's future gave, or `500` for a misused one.
fn respond<H: Serve>(
    meta: &Meta<'_>,
    mut res: Response,
    out: &mut Output,
    last: bool,
    ctx: &mut Ctx<'_, H>,
) -> Option<Next> {
    respond_in_place(meta, &mut res, out, last, ctx)
    // `res` is dropped here: its buffers go to the next `Response::new()`.
}

/// [`respond`] for a response where it lies.
fn respond_in_place<H: Serve>(
    meta: &Meta<'_>,
    res: &mut Response,
    out: &mut Output,
    last: bool,
    ctx: &mut Ctx<'_, H>,
) -> Option<Next> {
    if let Some(misuse) = res.misuse() {
        log_limited!("the handler's response is invalid ({misuse}); answered 500 instead");
        return Some(handler_failed(meta, out, ctx));
    }
    encode_answer(meta, res, out, last, ctx)
}

/// Encodes the response in `ctx.res` (a sync handler's, or the server's own).
fn encode_own<H: Serve>(
    meta: &Meta<'_>,
    out: &mut Output,
    last: bool,
    ctx: &mut Ctx<'_, H>,
) -> Option<Next> {
    // Taken out for the call (a pointer's move) and put back.
    let mut res = ctx
        .res
        .take()
        .expect("the worker's response is back after each use");
    let next = encode_answer(meta, &mut res, out, last, ctx);
    ctx.res = Some(res);
    next
}

/// Encodes `res` to the request of `meta`, with the connection rules applied.
fn encode_answer<H: Serve>(
    meta: &Meta<'_>,
    res: &mut Response,
    out: &mut Output,
    last: bool,
    ctx: &mut Ctx<'_, H>,
) -> Option<Next> {
    let keep_alive =
        meta.keep_alive && !res.wants_close() && !(ctx.drain != Drain::Serving && last);
    let connection = match (keep_alive, meta.version) {
        (false, _) => ConnectionHeader::Close,
        (true, Version::Http10) => ConnectionHeader::KeepAlive,
        (true, Version::Http11) => ConnectionHeader::Omit,
    };
    if let Some(producer) = res.take_stream() {
        if !ctx.producers.has_room() {
            log_limited!("streamed responses at their bound (handlers-max); answered 503");
            return Some(refuse_into(
                out,
                503,
                &"the server is at its bound of streamed responses",
                ctx,
            ));
        }
        return start_stream(meta, res, producer, out, keep_alive, ctx);
    }
    let status = res.status_code();
    let bytes = if meta.head_only {
        0
    } else {
        res.body_bytes().len()
    };
    let tail = out.tail(&mut ctx.pool);
    if bytes > BODY_COPY_BYTES_MAX {
        // Sent from where the handler wrote it: held once, and freed once sent.
        if encode_head(tail, res, ctx.date.line(), connection) {
            let body = res.take_body(ctx.pool.take());
            out.push_body(body, &mut ctx.pool);
        }
    } else {
        encode(tail, res, ctx.date.line(), meta.head_only, connection);
    }
    log_access(meta, status, bytes, ctx);
    (!keep_alive).then_some(Next::Close { linger: false })
}

/// Answers `500` for a request whose handler failed, and closes.
fn handler_failed<H: Serve>(meta: &Meta<'_>, out: &mut Output, ctx: &mut Ctx<'_, H>) -> Next {
    ctx.counters.handler_failures += 1;
    let detail = "the handler failed; see the server's log";
    let bytes = encode_error(out.tail(&mut ctx.pool), 500, &detail, ctx.date.line());
    log_access(meta, 500, if meta.head_only { 0 } else { bytes }, ctx);
    Next::Close { linger: true }
}

/// Counts a response to the request of `meta` of `status` and `bytes` of body, and writes
/// its access log line when a log is kept.
pub(super) fn log_access<H: Serve>(
    meta: &Meta<'_>,
    status: u16,
    bytes: usize,
    ctx: &mut Ctx<'_, H>,
) {
    ctx.counters.response(status);
    ctx.time_response(status, meta.started);
    if let Some(log) = &mut ctx.access {
        let duration = Instant::now().saturating_duration_since(meta.started);
        let entry = Entry {
            peer: ctx.peer,
            request: meta.line,
            quoted: meta.quoted,
            status,
            bytes,
            duration,
        };
        log.record(&ctx.date, &entry);
    }
}
