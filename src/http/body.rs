//! Bodies that stream: a bounded pipe between a future and a connection, for a response
//! body produced over time ([`BodyWriter`], drained by the connection into its output)
//! and a request body read as it arrives ([`BodyReader`], filled by the connection from
//! what it receives).
//!
//! No I/O and no runtime here: the pipe holds bytes and wakers. The side that is a
//! connection is woken through a waker the worker maps to that connection.
//!
//! See [`BodyWriter`]'s example (a streamed response) and
//! [`StreamBodies`](crate::StreamBodies)' (an upload read as it arrives).

use crate::rt::splice::FileRange;
use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// The bytes between the two ends, at most `limit` of them queued (a write of more waits
/// until they fit; a single larger write goes in whole once the pipe is empty).
#[derive(Debug)]
pub(crate) struct Pipe {
    buf: Vec<u8>,
    /// Bytes of `buf` already taken.
    start: usize,
    limit: usize,
    /// The producer said it is done: no more bytes come.
    finished: bool,
    /// Either end went away or failed: the other sees this error.
    failed: Option<io::ErrorKind>,
    /// The most bytes the body may have (a response's `Content-Length`), if known.
    length: Option<u64>,
    /// Bytes written so far.
    written: u64,
    /// A file range queued after the bytes, sent by splice (see [`crate::rt::splice`]):
    /// no write goes in behind it until the connection takes it, so order holds.
    file: Option<FileRange>,
    /// Who waits for bytes, and who waits for room.
    reader: Option<Waker>,
    writer: Option<Waker>,
}

/// Both ends hold this.
pub(crate) type Shared = Rc<RefCell<Pipe>>;

impl Pipe {
    /// A pipe that queues at most `limit` bytes; `length` is the body's declared size.
    pub(crate) fn new(limit: usize, length: Option<u64>) -> Shared {
        Rc::new(RefCell::new(Pipe {
            buf: Vec::new(),
            start: 0,
            limit: limit.max(1),
            finished: false,
            failed: None,
            length,
            written: 0,
            file: None,
            reader: None,
            writer: None,
        }))
    }

    /// Bytes queued.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Room for more.
    pub(crate) fn room(&self) -> usize {
        self.limit.saturating_sub(self.len())
    }

    /// Queues bytes (the connection's side of a request body); the reader is woken.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start >= self.limit {
            // A reader that never empties the pipe (it takes less than is queued each time)
            // must not make it grow: what was taken goes once it is a pipe's worth, so the
            // buffer stays within twice the limit plus one push.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        self.written += bytes.len() as u64;
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }

    /// Queues `bytes` by taking the vector itself when nothing is queued (no copy), else by
    /// copying; gives back an empty vector for the caller's next bytes.
    pub(crate) fn push_vec(&mut self, mut bytes: Vec<u8>) -> Vec<u8> {
        if self.len() > 0 {
            self.push(&bytes);
            bytes.clear();
            return bytes;
        }
        let n = bytes.len() as u64;
        let mut old = std::mem::replace(&mut self.buf, bytes);
        self.start = 0;
        self.written += n;
        if let Some(w) = self.reader.take() {
            w.wake();
        }
        old.clear();
        old
    }

    /// Takes every queued byte, leaving `replacement` (empty) for the next ones; the writer
    /// is woken, there being room now.
    pub(crate) fn take_all(&mut self, replacement: Vec<u8>) -> Vec<u8> {
        let mut taken = std::mem::replace(&mut self.buf, replacement);
        taken.drain(..self.start);
        self.start = 0;
        if let Some(w) = self.writer.take() {
            w.wake();
        }
        taken
    }

    /// Whether either end failed.
    pub(crate) fn failed(&self) -> bool {
        self.failed.is_some()
    }

    /// The declared length, if any.
    pub(crate) fn length(&self) -> Option<u64> {
        self.length
    }

    /// No more bytes come; the reader is woken to see the end.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }

    /// Whether the producer is done and every byte was taken.
    pub(crate) fn is_drained(&self) -> bool {
        self.finished && self.len() == 0 && self.file.is_none()
    }

    /// Whether a file range waits to be taken.
    pub(crate) fn has_file(&self) -> bool {
        self.file.is_some()
    }

    /// Queues a file range (when nothing else is queued); the reader is woken.
    pub(crate) fn push_file(&mut self, range: FileRange) {
        debug_assert!(self.len() == 0 && self.file.is_none());
        self.written += range.unsent();
        self.file = Some(range);
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }

    /// Takes the queued file range, if any (after the bytes before it); the writer is woken.
    pub(crate) fn take_file(&mut self) -> Option<FileRange> {
        let range = self.file.take()?;
        if let Some(w) = self.writer.take() {
            w.wake();
        }
        Some(range)
    }

    /// Ends the pipe with `why`: both ends are woken and see it.
    pub(crate) fn fail(&mut self, why: io::ErrorKind) {
        self.failed.get_or_insert(why);
        for w in [self.reader.take(), self.writer.take()]
            .into_iter()
            .flatten()
        {
            w.wake();
        }
    }

    /// Records who to wake when bytes come.
    pub(crate) fn wake_reader_with(&mut self, waker: &Waker) {
        self.reader = Some(waker.clone());
    }

    /// Records who to wake when room frees.
    pub(crate) fn wake_writer_with(&mut self, waker: &Waker) {
        self.writer = Some(waker.clone());
    }

    /// Bytes written so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Frees the memory of a pipe nobody writes to any more.
    fn shrink(&mut self) {
        if self.len() == 0 {
            self.buf = Vec::new();
            self.start = 0;
        }
    }
}

/// The producing end of a streamed response body (see
/// [`Response::stream`](crate::Response::stream)): each write waits while the
/// connection's unsent output is at the output bound (`--output-bytes-max`), so a body of
/// any size is never held whole.
///
/// ```no_run
/// use ringmaster::{OwnedRequest, Response, Server};
///
/// let server = Server::new_async(|_req: OwnedRequest| async move {
///     let mut res = Response::new();
///     // 100 lines, each sent as it is written; no Content-Length, so chunked.
///     res.stream(None, |mut body| async move {
///         for i in 0..100 {
///             body.write(format!("line {i}\n").as_bytes()).await?;
///         }
///         Ok(())
///     });
///     res
/// });
/// std::process::exit(ringmaster::cli::run(ringmaster::app!(), server));
/// ```
///
/// Reading an upload as it arrives is [`BodyReader`]'s: `examples/stream.rs` does both.
#[derive(Debug)]
pub struct BodyWriter {
    pub(crate) pipe: Shared,
}

impl BodyWriter {
    pub(crate) fn new(pipe: Shared) -> BodyWriter {
        BodyWriter { pipe }
    }

    /// The pipe it writes to, for who counts what was written ([`Pipe::written`]).
    pub(crate) fn pipe(&self) -> Shared {
        self.pipe.clone()
    }

    /// Queues `bytes` for the client, waiting for room first. Fails with `BrokenPipe` when
    /// the client is gone (stop producing), and with `InvalidInput` past the declared
    /// length.
    ///
    /// # Examples
    ///
    /// A CSV export written row by row, each row waiting for room:
    ///
    /// ```
    /// use ringmaster::BodyWriter;
    /// use std::io;
    ///
    /// async fn export(mut body: BodyWriter, rows: Vec<(u32, String)>) -> io::Result<()> {
    ///     body.write(b"id,name\n").await?;
    ///     for (id, name) in rows {
    ///         // An error here (the client went away) ends the export.
    ///         body.write(format!("{id},{name}\n").as_bytes()).await?;
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        poll_fn(|cx| self.poll_write(cx, bytes)).await
    }

    /// Like [`BodyWriter::write`] for bytes in a vector of their own, which the body takes
    /// as it is when the connection has taken everything before it (no copy: a large body
    /// read from a file into `bytes` goes out from there). Gives back an empty vector, for
    /// the next bytes.
    ///
    /// # Examples
    ///
    /// A file sent in 64 KiB reads, each read into the vector the previous write gave back:
    ///
    /// ```
    /// use ringmaster::rt::fs::File;
    /// use ringmaster::BodyWriter;
    /// use std::io;
    ///
    /// async fn send_file(mut body: BodyWriter, file: File) -> io::Result<()> {
    ///     let mut buf = Vec::new();
    ///     let mut offset = 0;
    ///     loop {
    ///         let (read, filled) = file.read_at_vec(buf, offset, 64 * 1024).await;
    ///         match read? {
    ///             0 => return Ok(()),
    ///             n => offset += n as u64,
    ///         }
    ///         buf = body.write_vec(filled).await?;
    ///     }
    /// }
    /// ```
    pub async fn write_vec(&mut self, bytes: Vec<u8>) -> io::Result<Vec<u8>> {
        if bytes.is_empty() {
            return Ok(bytes);
        }
        poll_fn(|cx| self.poll_room(cx, bytes.len() as u64, false)).await?;
        // Room was found; the bytes go in now, taken or copied.
        Ok(self.pipe.borrow_mut().push_vec(bytes))
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<()>> {
        let ready = self.poll_room(cx, bytes.len() as u64, false);
        if let Poll::Ready(Ok(())) = ready {
            self.pipe.borrow_mut().push(bytes);
        }
        ready
    }

    /// Ready when `len` more bytes may be queued (or the pipe failed, or they would pass the
    /// declared length); with `alone`, only once nothing at all is queued (a file range,
    /// which goes in whole, after everything before it).
    pub(crate) fn poll_room(
        &mut self,
        cx: &mut Context<'_>,
        len: u64,
        alone: bool,
    ) -> Poll<io::Result<()>> {
        let mut pipe = self.pipe.borrow_mut();
        if let Some(why) = pipe.failed {
            return Poll::Ready(Err(io::Error::new(why, "the client is gone")));
        }
        if let Some(length) = pipe.length {
            if pipe.written + len > length {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("more than the {length} bytes the response declared"),
                )));
            }
        }
        // Whole writes only, so a write that waited is never half done when dropped; and
        // none behind a file range, which goes out after the bytes queued now.
        let queued = pipe.len() > 0;
        if pipe.file.is_some() || (queued && (alone || len > pipe.room() as u64)) {
            pipe.wake_writer_with(cx.waker());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for BodyWriter {
    fn drop(&mut self) {
        // A writer dropped without the producer returning is the producer's business: the
        // connection learns the end from the producer's future.
        if let Ok(mut pipe) = self.pipe.try_borrow_mut() {
            pipe.shrink();
        }
    }
}

/// The reading end of a request body handed over as it arrives (see
/// [`OwnedRequest::body_reader`](crate::OwnedRequest::body_reader)): the connection reads
/// from the client only while this end keeps up, so an upload of any size is never held
/// whole.
///
/// See [`StreamBodies`](crate::StreamBodies)' example.
#[derive(Debug)]
pub struct BodyReader {
    pipe: Shared,
}

impl BodyReader {
    pub(crate) fn new(pipe: Shared) -> BodyReader {
        BodyReader { pipe }
    }

    /// Reads what has arrived, at most `buf.len()` bytes, waiting for at least one;
    /// `Ok(0)` at the end of the body. Fails when the body was cut short or malformed.
    ///
    /// # Examples
    ///
    /// Counting the lines of an upload without holding it:
    ///
    /// ```
    /// use ringmaster::BodyReader;
    /// use std::io;
    ///
    /// async fn count_lines(mut body: BodyReader) -> io::Result<u64> {
    ///     let mut buf = [0u8; 8192];
    ///     let mut lines = 0;
    ///     loop {
    ///         match body.read(&mut buf).await? {
    ///             0 => return Ok(lines),
    ///             n => lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64,
    ///         }
    ///     }
    /// }
    /// ```
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        poll_fn(|cx| {
            let mut pipe = self.pipe.borrow_mut();
            if pipe.len() > 0 {
                let n = pipe.len().min(buf.len());
                let start = pipe.start;
                buf[..n].copy_from_slice(&pipe.buf[start..start + n]);
                pipe.start += n;
                if let Some(w) = pipe.writer.take() {
                    w.wake();
                }
                return Poll::Ready(Ok(n));
            }
            if let Some(why) = pipe.failed {
                return Poll::Ready(Err(io::Error::new(why, "the request body was cut short")));
            }
            if pipe.finished {
                return Poll::Ready(Ok(0));
            }
            pipe.wake_reader_with(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Appends the rest of the body to `out`: at most `max` bytes of it (`InvalidData` past it,
    /// with what came before in `out`); returns how many.
    ///
    /// # Examples
    ///
    /// A JSON upload of at most 64 KiB, read whole from a streamed body:
    ///
    /// ```
    /// use ringmaster::{BodyReader, Response};
    /// use std::io;
    ///
    /// async fn answer(mut body: BodyReader) -> Response {
    ///     let mut res = Response::new();
    ///     let mut json = Vec::new();
    ///     match body.read_to_end(&mut json, 64 * 1024).await {
    ///         Ok(n) => res.body(format!("{n} bytes of JSON\n")),
    ///         Err(e) if e.kind() == io::ErrorKind::InvalidData => {
    ///             res.status(413).body("at most 64 KiB\n")
    ///         }
    ///         Err(_) => res.status(400).body("the body was cut short\n"),
    ///     };
    ///     res
    /// }
    /// ```
    pub async fn read_to_end(&mut self, out: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0;
        loop {
            match self.read(&mut buf).await? {
                0 => return Ok(total),
                n if total + n > max => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the body is larger than {max} bytes"),
                    ))
                }
                n => {
                    out.extend_from_slice(&buf[..n]);
                    total += n;
                }
            }
        }
    }
}

impl Drop for BodyReader {
    fn drop(&mut self) {
        if let Ok(mut pipe) = self.pipe.try_borrow_mut() {
            if !pipe.finished {
                // Nobody reads the rest: the connection stops feeding and closes after the
                // answer.
                pipe.fail(io::ErrorKind::BrokenPipe);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_that_never_empties_the_pipe_does_not_make_it_grow() {
        const LIMIT: usize = 1000;
        let pipe = Pipe::new(LIMIT, None);
        let mut p = pipe.borrow_mut();
        let mut pushed = 0;
        for _ in 0..10_000 {
            let n = p.room().min(300);
            p.push(&vec![7u8; n]);
            pushed += n;
            // The reader takes about half of what is queued: never all of it.
            let take = (p.len() / 2).max(1).min(p.len());
            p.start += take;
        }
        assert!(pushed > 100 * LIMIT, "the pipe carried {pushed} bytes");
        assert!(p.len() <= LIMIT);
        assert!(
            p.buf.capacity() <= 4 * LIMIT + 600,
            "the buffer grew to {} bytes",
            p.buf.capacity()
        );
    }
}
