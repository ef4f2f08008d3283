//! A connection driven without a ring: for fuzzing, property tests and the allocation test.
//! Not part of the stable API. Every act is carried out at once, as if the ring completed
//! it: a send in full, a cancel, a shutdown, a close; a send-queue sample finds it empty.

use super::{Act, Conn, Counters, Ctx, Drain, RecvEnd};
use crate::config::Limits;
use crate::http::date::DateCache;
use crate::http::{Request, Response};
use crate::pool::BufPool;
use crate::rt::{TaskKey, Tasks};
use crate::{Handler, Serve};
use ringmaster_uring::{Desc, OpId};
use std::time::Instant;

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

/// Async handler futures a standalone context has room for.
const STANDALONE_TASKS: usize = 16;

/// A context with the default limits, a fixed `Date` (the epoch) and no access log: a
/// connection's surroundings without a worker.
pub(crate) fn standalone<H: Serve>(handler: &H) -> Ctx<'_, H> {
    let limits = Limits::default();
    let mut date = DateCache::new();
    date.update(0);
    Ctx {
        handler,
        tasks: Tasks::new(
            if H::ASYNC { STANDALONE_TASKS } else { 0 },
            TaskKey::Request,
        ),
        producers: Tasks::new(STANDALONE_TASKS, TaskKey::Producer),
        conn: 0,
        res: Some(Response::new()),
        date,
        limits: limits.head(),
        output_bytes_max: limits.output_bytes_max as usize,
        input_slack_bytes: 4 << 20,
        timeouts: limits.timeouts(),
        pool: BufPool::new(64, 8),
        drain: Drain::Serving,
        exit_on_panic: false,
        counters: Counters::default(),
        durations: Box::default(),
        durations_pending: Vec::new(),
        now: Instant::now(),
        access: None,
        peer: None,
    }
}

/// The ring's stand-in: the operation ids it hands out, and the receive armed (and whether
/// it is multishot).
#[derive(Debug, Default)]
pub(crate) struct Ringless {
    next_id: u32,
    recv: Option<(OpId, bool)>,
    /// The acts carried out, in order (sends by their length).
    pub(crate) log: Vec<String>,
    /// Whether to record the acts in `log` (the allocation test must not).
    pub(crate) logging: bool,
}

impl Ringless {
    fn id(&mut self) -> OpId {
        self.next_id = self.next_id.wrapping_add(1);
        OpId::detached(self.next_id)
    }

    /// Carries out every act the connection asks for, completing each at once; returns
    /// the bytes sent (each send through `sent`) and whether the slot was freed.
    pub(crate) fn run<H: Serve>(
        &mut self,
        conn: &mut Conn,
        ctx: &mut Ctx<'_, H>,
        mut sent: impl FnMut(&[u8]),
    ) -> bool {
        while let Some(act) = conn.next_act(ctx) {
            if self.logging {
                self.log.push(match &act {
                    Act::Send { buf, offset, .. } => format!("Send({})", buf.len() - offset),
                    other => format!("{other:?}"),
                });
            }
            match act {
                Act::Send { buf, offset, .. } => {
                    let id = self.id();
                    conn.send_started(id, offset, ctx.now);
                    sent(&buf[offset..]);
                    let n = (buf.len() - offset) as u32;
                    conn.on_sent(Ok(n), buf, ctx);
                }
                Act::Recv { multishot } => {
                    let id = self.id();
                    self.recv = Some((id, multishot));
                    conn.recv_started(id);
                }
                Act::Cancel(op) => {
                    if self.recv.is_some_and(|(id, _)| id == op) {
                        self.recv = None;
                        conn.on_recv_end(RecvEnd::Cancelled, ctx);
                    }
                }
                Act::Splice {
                    file,
                    offset,
                    pipe_write,
                    pipe_read,
                    fill,
                    drain,
                } => {
                    let fill_id = (fill > 0).then(|| self.id());
                    let drain_id = self.id();
                    conn.splice_started(fill_id, drain_id, ctx.now);
                    let mut drain = drain as usize;
                    if fill > 0 {
                        let moved = splice_in(file, offset, pipe_write, fill as usize);
                        conn.on_fill(moved, ctx);
                        if moved != fill as i32 {
                            // The link fails the drain of a short fill.
                            conn.on_drain(-libc::ECANCELED, ctx);
                            continue;
                        }
                        drain = moved as usize;
                    }
                    let mut buf = vec![0u8; drain];
                    // SAFETY: `buf` has `drain` bytes of room; `pipe_read` is the range's
                    // pipe, open while the connection holds the range.
                    let n = unsafe { libc::read(pipe_read, buf.as_mut_ptr().cast(), drain) };
                    if n > 0 {
                        sent(&buf[..n as usize]);
                    }
                    conn.on_drain(if n < 0 { -libc::EIO } else { n as i32 }, ctx);
                }
                Act::ShutWrite => conn.on_shut(),
                Act::Reset => {}
                Act::Close => conn.on_closed(),
                Act::SampleSendQueue => conn.on_send_sample(Some(0), ctx),
                Act::Free => return true,
            }
        }
        false
    }

    /// Bytes arrive on the armed receive, which ends with them when it is single-shot.
    pub(crate) fn deliver<H: Serve>(&mut self, conn: &mut Conn, data: &[u8], ctx: &mut Ctx<'_, H>) {
        conn.on_data(data, ctx);
        if let Some((_, false)) = self.recv {
            self.recv = None;
            conn.on_recv_end(RecvEnd::Stopped, ctx);
        }
    }

    /// The armed receive ends with `end` (end of stream, a reset).
    #[cfg(test)]
    pub(crate) fn end<H: Serve>(&mut self, conn: &mut Conn, end: RecvEnd, ctx: &mut Ctx<'_, H>) {
        if self.recv.take().is_some() {
            conn.on_recv_end(end, ctx);
        }
    }
}

/// One connection kept across calls, as a worker keeps it: for measuring the steady
/// state (a counting allocator sees the hot path allocate nothing once warm).
pub struct Driver<H: Serve + 'static> {
    ctx: Ctx<'static, H>,
    conn: Conn,
    ring: Ringless,
}

impl<H: Serve + 'static> Driver<H> {
    /// A connection for `handler` with the default limits.
    pub fn new(handler: &'static H) -> Driver<H> {
        let ctx = standalone(handler);
        let conn = Conn::new(0, Desc::Plain(-1), None, ctx.now);
        Driver {
            ctx,
            conn,
            ring: Ringless::default(),
        }
    }

    /// Feeds bytes as one receive; returns how many response bytes went out. Sent
    /// buffers go back to the pool, as a completed send's do in a worker.
    pub fn feed(&mut self, data: &[u8]) -> usize {
        self.ring.deliver(&mut self.conn, data, &mut self.ctx);
        let mut total = 0;
        self.ring
            .run(&mut self.conn, &mut self.ctx, |bytes| total += bytes.len());
        total
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
    let mut conn = Conn::new(0, Desc::Plain(-1), None, ctx.now);
    let mut ring = Ringless::default();
    let mut sent = Vec::new();
    ring.run(&mut conn, &mut ctx, |b| sent.extend_from_slice(b));
    for chunk in chunks {
        ring.deliver(&mut conn, chunk, &mut ctx);
        ring.run(&mut conn, &mut ctx, |b| sent.extend_from_slice(b));
    }
    Outcome {
        sent,
        closing: !conn.is_open(),
        requests: ctx.counters.requests,
    }
}

/// `splice(2)` of `len` bytes of `file` at `offset` into a pipe: what the ring's fill does.
fn splice_in(file: std::os::fd::RawFd, offset: u64, pipe: std::os::fd::RawFd, len: usize) -> i32 {
    let mut off = offset as libc::loff_t;
    // SAFETY: plain descriptors the connection's range keeps open; `off` outlives the call.
    let n = unsafe {
        libc::splice(
            file,
            &mut off,
            pipe,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        -std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    } else {
        n as i32
    }
}
