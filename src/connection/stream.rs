//! Bodies that stream through a connection: a response body its producer writes over time
//! ([`StreamOut`], moved from the pipe into the output while the output is under its
//! bound), and a request body handed to the handler as it arrives ([`Upload`], moved from
//! the input into the pipe while the pipe has room, the receive stopped otherwise).
//!
//! The pipes are bounded ([`crate::http::body`]); their far ends wake the connection
//! through a waker the worker maps to it ([`TaskKey::Conn`]), which then calls
//! [`Conn::on_stream_ready`].

use super::process::{Meta, Next};
use super::{AfterOutput, Conn, Ctx, Phase, Wait};
use crate::http::body::{Pipe, Shared};
use crate::http::chunked::ChunkedDecoder;
use crate::http::response::{encode_stream_head, ConnectionHeader, Producer, StreamFraming};
use crate::http::{BodyWriter, Response, Version};
use crate::log::log_limited;
use crate::rt::{Panicked, Started, TaskKey};
use crate::Serve;

/// The most bytes of an upload waiting in its pipe for the handler to read.
pub(crate) const UPLOAD_PIPE_BYTES_MAX: usize = 256 * 1024;

/// A response body being streamed.
#[derive(Debug)]
pub(super) struct StreamOut {
    pipe: Shared,
    framing: StreamFraming,
    /// The producer's task while it runs.
    producer: Option<u32>,
    keep_alive: bool,
    /// The request's body, when it streams to the handler and was not read whole when
    /// the answer came: it goes on arriving while the response streams.
    pub(super) upload: Option<Upload>,
}

/// A request body being handed to the handler as it arrives.
#[derive(Debug)]
pub(super) struct Upload {
    pipe: Shared,
    body: UploadBody,
}

#[derive(Debug)]
enum UploadBody {
    /// `Content-Length`: this many bytes are still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
}

impl Upload {
    /// An upload of a body framed by `length` (`None`: chunked), read through `pipe`.
    pub(super) fn new(pipe: Shared, length: Option<u64>, decoder: ChunkedDecoder) -> Upload {
        let body = match length {
            Some(n) => UploadBody::Length(n),
            None => UploadBody::Chunked(decoder),
        };
        if length == Some(0) {
            pipe.borrow_mut().finish();
        }
        Upload { pipe, body }
    }
}

/// Starts the streamed body of `res`: encodes its head with the framing it needs, then
/// starts its producer (its first poll may write). `None` when nothing streams (a `HEAD`
/// request, a bodiless status) and the connection goes on as after any response.
pub(super) fn start_stream<H: Serve>(
    meta: &Meta<'_>,
    res: &mut Response,
    producer: Producer,
    out: &mut super::output::Output,
    keep_alive: bool,
    ctx: &mut Ctx<'_, H>,
) -> Option<Next> {
    let framing = match (producer.length, meta.version) {
        (Some(n), _) => StreamFraming::Length(n),
        (None, Version::Http11) => StreamFraming::Chunked,
        (None, Version::Http10) => StreamFraming::Close,
    };
    let keep_alive = keep_alive && framing != StreamFraming::Close;
    let connection = match (keep_alive, meta.version) {
        (false, _) => ConnectionHeader::Close,
        (true, Version::Http10) => ConnectionHeader::KeepAlive,
        (true, Version::Http11) => ConnectionHeader::Omit,
    };
    let status = res.status_code();
    let has_body = encode_stream_head(
        out.tail(&mut ctx.pool),
        res,
        ctx.date.line(),
        framing,
        connection,
    );
    super::process::log_access(meta, status, producer.length.unwrap_or(0) as usize, ctx);
    if !has_body || meta.head_only {
        return (!keep_alive).then_some(Next::Close { linger: false });
    }
    let pipe = Pipe::new(ctx.output_bytes_max, producer.length);
    let writer = BodyWriter::new(pipe.clone());
    let start = producer.start;
    let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| start(writer)));
    let started = match made {
        Ok(fut) => ctx.producers.start(fut, ctx.conn),
        Err(panic) => Err(Panicked(panic)),
    };
    let mut stream = StreamOut {
        pipe,
        framing,
        producer: None,
        keep_alive,
        upload: None,
    };
    match started {
        Ok(Started::Pending(task)) => stream.producer = Some(task),
        Ok(Started::Ready(result)) => stream.produced(Ok(result), ctx),
        Err(Panicked(panic)) if ctx.exit_on_panic => std::panic::resume_unwind(panic),
        Err(panic) => stream.produced(Err(panic), ctx),
    }
    Some(Next::Stream(stream))
}

impl StreamOut {
    /// The producer ended: the pipe finishes, or fails (the body cannot be completed).
    fn produced<H: Serve>(
        &mut self,
        result: Result<std::io::Result<()>, Panicked>,
        ctx: &mut Ctx<'_, H>,
    ) {
        self.producer = None;
        let mut pipe = self.pipe.borrow_mut();
        match result {
            Ok(Ok(())) => pipe.finish(),
            Ok(Err(e)) => {
                log_limited!("a streamed response's producer failed ({e}); its connection closes");
                pipe.fail(e.kind());
            }
            Err(_) => {
                ctx.counters.handler_failures += 1;
                pipe.fail(std::io::ErrorKind::Other);
            }
        }
    }
}

impl Conn {
    /// A streamed body's far end has bytes or room: move what can be moved.
    pub(crate) fn on_stream_ready<H: Serve>(&mut self, ctx: &mut Ctx<'_, H>) {
        if self.phase != Phase::Open {
            return;
        }
        if self.streaming.is_some() {
            self.pull_stream(ctx);
        }
        if self.upload.is_some() {
            self.feed_upload(ctx);
        }
    }

    /// The producer of the streamed response ended, with `result`.
    pub(crate) fn on_produced<H: Serve>(
        &mut self,
        result: Result<std::io::Result<()>, Panicked>,
        ctx: &mut Ctx<'_, H>,
    ) {
        if let Some(stream) = &mut self.streaming {
            stream.produced(result, ctx);
            self.pull_stream(ctx);
        }
    }

    /// Moves the streamed body's bytes into the output while it is under its bound,
    /// framed; ends the response once the producer is done and every byte was moved.
    pub(super) fn pull_stream<H: Serve>(&mut self, ctx: &mut Ctx<'_, H>) {
        let Some(stream) = &self.streaming else {
            return;
        };
        let pipe = stream.pipe.clone();
        let mut pipe = pipe.borrow_mut();
        if self.output.len() < ctx.output_bytes_max && (pipe.len() > 0 || pipe.has_file()) {
            let chunked = stream.framing == StreamFraming::Chunked;
            if pipe.len() > 0 {
                let data = pipe.take_all(ctx.pool.take());
                if chunked {
                    write_hex(self.output.tail(&mut ctx.pool), data.len());
                    self.output.tail(&mut ctx.pool).extend_from_slice(b"\r\n");
                }
                self.output.push_body(data, &mut ctx.pool);
                if chunked {
                    self.output.tail(&mut ctx.pool).extend_from_slice(b"\r\n");
                }
            }
            // A file range goes after the bytes written before it.
            if let Some(range) = pipe.take_file() {
                let len = usize::try_from(range.unsent()).unwrap_or(usize::MAX);
                if chunked {
                    write_hex(self.output.tail(&mut ctx.pool), len);
                    self.output.tail(&mut ctx.pool).extend_from_slice(b"\r\n");
                }
                self.output.push_file(range, &mut ctx.pool);
                if chunked {
                    self.output.tail(&mut ctx.pool).extend_from_slice(b"\r\n");
                }
            }
            self.wait = Wait::Stream { since: ctx.now };
        }
        if pipe.failed() {
            // The body cannot be completed: the client sees it cut short.
            drop(pipe);
            self.end_stream(ctx);
            self.phase = Phase::Finishing(AfterOutput::Close);
            return;
        }
        if !pipe.is_drained() {
            pipe.wake_reader_with(&crate::rt::waker(TaskKey::Conn(self.slot)));
            return;
        }
        let (framing, mut keep_alive) = (stream.framing, stream.keep_alive);
        let short = matches!(framing, StreamFraming::Length(n) if pipe.written() != n);
        drop(pipe);
        self.streaming = None;
        let unread = self.upload.take().is_some();
        if unread {
            // The request's body was not read whole: what is left of it is not read.
            keep_alive = false;
            self.input.clear();
        }
        if short {
            log_limited!(
                "a streamed response's producer wrote short of its length; its connection closes"
            );
            self.phase = Phase::Finishing(AfterOutput::Close);
            return;
        }
        if framing == StreamFraming::Chunked {
            self.output
                .tail(&mut ctx.pool)
                .extend_from_slice(b"0\r\n\r\n");
        }
        match keep_alive {
            // The requests that waited are processed once this output is sent (resume).
            true => self.wait = Wait::Head { since: ctx.now },
            // The client may still be sending what was not read: linger so that it reads
            // the answer rather than a reset.
            false if unread => self.phase = Phase::Finishing(AfterOutput::Linger),
            false => self.phase = Phase::Finishing(AfterOutput::Close),
        }
    }

    /// Drops the streams of a connection that ends: the producer's future, and the
    /// upload's reader learns the body was cut short.
    pub(super) fn end_stream<H: Serve>(&mut self, ctx: &mut Ctx<'_, H>) {
        if let Some(stream) = self.streaming.take() {
            if let Some(task) = stream.producer {
                ctx.producers.end(task);
            }
            stream
                .pipe
                .borrow_mut()
                .fail(std::io::ErrorKind::BrokenPipe);
        }
        if let Some(upload) = self.upload.take() {
            upload
                .pipe
                .borrow_mut()
                .fail(std::io::ErrorKind::UnexpectedEof);
        }
    }

    /// Moves the upload's bytes from the input into its pipe while the pipe has room,
    /// decoding a chunked body; ends the upload once the body is whole. A malformed chunked
    /// body ends the handler's future and is refused like any bad request.
    pub(super) fn feed_upload<H: Serve>(&mut self, ctx: &mut Ctx<'_, H>) {
        let Some(upload) = &mut self.upload else {
            return;
        };
        let pipe = upload.pipe.clone();
        let mut pipe = pipe.borrow_mut();
        if pipe.failed() {
            // The handler dropped its reader: the rest is not read; the answer closes.
            return;
        }
        let mut done = pipe.is_drained() || pipe.length() == Some(0);
        while !done && pipe.room() > 0 && !self.input.is_empty() {
            let take = self.input.len().min(pipe.room());
            match &mut upload.body {
                UploadBody::Length(left) => {
                    let n = take.min(usize::try_from(*left).unwrap_or(usize::MAX));
                    pipe.push(&self.input[..n]);
                    self.input.drain(..n);
                    *left -= n as u64;
                    done = *left == 0;
                }
                UploadBody::Chunked(decoder) => {
                    let mut decoded = ctx.pool.take();
                    let used = match decoder.decode(&self.input[..take], &mut decoded) {
                        Ok(used) => used,
                        Err(e) => {
                            ctx.pool.put(decoded);
                            drop(pipe);
                            self.upload = None;
                            ctx.counters.errors += 1;
                            self.end_task(ctx);
                            self.input.clear();
                            return self.refuse(e.status(), &e, ctx);
                        }
                    };
                    pipe.push(&decoded);
                    ctx.pool.put(decoded);
                    self.input.drain(..used);
                    done = decoder.is_done();
                    if used == 0 {
                        break; // A chunk line still incomplete: more bytes are needed.
                    }
                }
            }
        }
        if done {
            pipe.finish();
            drop(pipe);
            self.upload = None;
            return;
        }
        pipe.wake_writer_with(&crate::rt::waker(TaskKey::Conn(self.slot)));
    }
}

/// Appends `n` in lowercase hexadecimal (a chunk size).
fn write_hex(out: &mut Vec<u8>, n: usize) {
    let digits = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let mut at = buf.len();
    let mut n = n;
    loop {
        at -= 1;
        buf[at] = digits[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}
