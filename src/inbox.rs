//! The master's small request servers (the control socket, the metrics listener): accept
//! without blocking, read one bounded request per connection, answer it once, close. Every
//! quantity is bounded: connections, accepts per loop turn, request bytes, and the time to
//! send a request.
//!
//! Written by hand, not on hyper or axum: the master is one thread that must never block or
//! spawn (it forks), and waits in one `poll(2)` on its signals, its workers' pipes and these
//! sockets; a server library would bring a runtime (tokio) and its threads into it, and its
//! own limits rather than these, where this needs a few hundred lines of plain code.
//!
//! # Probes under a flood
//!
//! A liveness probe must keep being answered while idle or slow connections (a scanner, a
//! slowloris, a stuck scraper) hold the inbox full; refusing the newcomer, as a plain
//! connection cap does, answered 503 to 67 of 67 probes with 16 idle connections held open.
//! So when the inbox is full and a connection arrives:
//!
//! - the oldest connection that has not delivered a whole request yet is *shed* (answered
//!   `busy` and closed) to make room: it has had the most time, and an honest client sends
//!   its request at once;
//! - a connection whose request was handed out and awaits its answer (a control client
//!   waiting for a reload) is never shed: its command is running;
//! - only when every connection awaits its answer is the newcomer answered `busy`.
//!
//! A new connection is read as soon as it is accepted: a probe's request usually arrives
//! with its connection, and once read whole it is handed out, out of reach of the
//! connections accepted after it in the same turn. One that has not sent its request yet is
//! the newest, so the last to be shed: [`CONNECTIONS_MAX`] later arrivals must come before
//! its request does.
//!
//! The time to send a request stays [`IDLE_TIMEOUT`] at the cap too. A shorter deadline
//! there would free no place a newcomer needs (shedding already gives every newcomer one)
//! and would buy a probe nothing (it is shed last anyway); it would only cut short an honest
//! client on a loaded machine, which is the one the deadline exists to wait for.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

/// Connections served at once by one inbox. When a connection arrives at the bound, the
/// oldest one still sending its request is answered `busy` and closed to make room; when
/// every one awaits its answer, the newcomer is answered `busy` and closed instead.
pub(crate) const CONNECTIONS_MAX: usize = 16;
/// Connections accepted in one loop turn. At the bound the turn stops accepting: the rest
/// wait in the listen backlog for the next turn, which comes at once (the listener stays
/// readable), so that a flood of connections cannot keep the master from its workers'
/// pipes and signals.
pub(crate) const ACCEPTS_PER_POLL_MAX: usize = 64;
/// A connection that sends no whole request within this long of its accept is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an answer may take to write before the connection is dropped.
const ANSWER_TIMEOUT: Duration = Duration::from_millis(500);
/// Bytes read from one connection per loop turn.
const READ_CHUNK_BYTES: usize = 1024;
/// Reads that discard what a refused connection sent before it is closed; past them its
/// close may reset it (see `refuse`).
const REFUSE_DRAIN_READS_MAX: usize = 4;

/// A listening socket an inbox accepts from.
pub(crate) trait Listener: AsFd {
    /// The accepted stream.
    type Stream: Read + Write + AsFd;
    /// Accepts one connection without blocking, set non-blocking itself.
    fn accept_one(&self) -> io::Result<Self::Stream>;
    /// Whether the peer of a new connection may be served. `Err(answer)`: the answer is
    /// written to it and it is closed without taking a place in the inbox (so a refused
    /// peer cannot shed anyone).
    fn vet(&self, _stream: &Self::Stream) -> Result<(), String> {
        Ok(())
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    fn accept_one(&self) -> io::Result<TcpStream> {
        let (s, _) = self.accept()?;
        s.set_nonblocking(true)?;
        Ok(s)
    }
}

/// How a request ends, and how large it may be.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Framing {
    /// The bytes that end a request (`\n` for a command line, `\r\n\r\n` for an HTTP head).
    pub(crate) terminator: &'static [u8],
    /// The largest request; larger ones get `too_long` and a close.
    pub(crate) bytes_max: usize,
    /// The answer to a request over `bytes_max`.
    pub(crate) too_long: &'static [u8],
    /// The answer to a connection shed or refused for want of room (see the module doc).
    pub(crate) busy: &'static [u8],
}

/// Where a connection is in its one exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Sending its request, since it was accepted at `opened`.
    Reading { opened: Instant },
    /// Its request was handed out; its answer is pending. Never shed, never timed out here.
    Answering,
}

/// What to do with a connection that just arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admission {
    /// There is room.
    Take,
    /// Shed the connection at this index (the oldest still reading), then take the newcomer.
    Shed(usize),
    /// Every place awaits its answer: answer the newcomer `busy`.
    Busy,
}

/// Decides a newcomer's fate from the phases of the connections held (in any order) and
/// the bound on them.
fn admission(held: impl Iterator<Item = Phase>, connections_max: usize) -> Admission {
    let mut count = 0;
    let mut oldest: Option<(usize, Instant)> = None;
    for (i, phase) in held.enumerate() {
        count += 1;
        if let Phase::Reading { opened } = phase {
            if oldest.is_none_or(|(_, o)| opened < o) {
                oldest = Some((i, opened));
            }
        }
    }
    match oldest {
        _ if count < connections_max => Admission::Take,
        Some((i, _)) => Admission::Shed(i),
        None => Admission::Busy,
    }
}

struct Pending<S> {
    id: u64,
    stream: S,
    /// The request so far, while reading; empty once handed out.
    buf: Vec<u8>,
    phase: Phase,
}

/// One listener and the connections it accepted.
pub(crate) struct Inbox<L: Listener> {
    listener: L,
    framing: Framing,
    conns: Vec<Pending<L::Stream>>,
    next_id: u64,
}

impl<L: Listener> Inbox<L> {
    pub(crate) fn new(listener: L, framing: Framing) -> Inbox<L> {
        Inbox {
            listener,
            framing,
            conns: Vec::with_capacity(CONNECTIONS_MAX),
            next_id: 0,
        }
    }

    pub(crate) fn listener(&self) -> &L {
        &self.listener
    }

    /// The descriptors to poll: the listener, then each connection still being read.
    pub(crate) fn poll_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        let reading = self
            .conns
            .iter()
            .filter(|c| matches!(c.phase, Phase::Reading { .. }));
        std::iter::once(self.listener.as_fd()).chain(reading.map(|c| c.stream.as_fd()))
    }

    /// Every descriptor the inbox owns: the listener and each connection, answered or not
    /// (what a forked child must close).
    pub(crate) fn descriptors(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        std::iter::once(self.listener.as_fd()).chain(self.conns.iter().map(|c| c.stream.as_fd()))
    }

    /// Accepts what waits (at most [`ACCEPTS_PER_POLL_MAX`]), reads what arrived, drops
    /// connections past their time; appends each whole request (terminator included) with
    /// its connection's id to `out`. Returns how many connections it accepted.
    pub(crate) fn poll(&mut self, out: &mut Vec<(u64, Vec<u8>)>) -> usize {
        let mut accepted = 0;
        while accepted < ACCEPTS_PER_POLL_MAX {
            let Ok(stream) = self.listener.accept_one() else {
                break;
            };
            accepted += 1;
            self.admit(stream, out);
        }
        let now = Instant::now();
        let framing = self.framing;
        self.conns
            .retain_mut(|c| read_request(c, framing, now, out) == Keep::Yes);
        accepted
    }

    /// Gives a new connection a place (shedding another if need be) and reads it at once.
    fn admit(&mut self, mut stream: L::Stream, out: &mut Vec<(u64, Vec<u8>)>) {
        if let Err(answer) = self.listener.vet(&stream) {
            refuse(&mut stream, answer.as_bytes());
            return;
        }
        match admission(self.conns.iter().map(|c| c.phase), CONNECTIONS_MAX) {
            Admission::Take => {}
            Admission::Shed(i) => {
                let mut shed = self.conns.swap_remove(i);
                refuse(&mut shed.stream, self.framing.busy);
            }
            Admission::Busy => {
                refuse(&mut stream, self.framing.busy);
                return;
            }
        }
        self.next_id += 1;
        let now = Instant::now();
        let mut conn = Pending {
            id: self.next_id,
            stream,
            buf: Vec::with_capacity(self.framing.bytes_max.min(4096)),
            phase: Phase::Reading { opened: now },
        };
        if read_request(&mut conn, self.framing, now, out) == Keep::Yes {
            self.conns.push(conn);
        }
    }

    /// The earliest instant a connection still being read times out.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .iter()
            .filter_map(|c| match c.phase {
                Phase::Reading { opened } => Some(opened + IDLE_TIMEOUT),
                Phase::Answering => None,
            })
            .min()
    }

    /// Answers connection `id` and closes it. The answer is written with a short bound on
    /// blocking: a client that does not read it loses it, the master does not wait.
    pub(crate) fn answer(&mut self, id: u64, bytes: &[u8]) {
        let Some(at) = self.conns.iter().position(|c| c.id == id) else {
            return;
        };
        let mut conn = self.conns.swap_remove(at);
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let mut written = 0;
        while written < bytes.len() && Instant::now() < deadline {
            match conn.stream.write(&bytes[written..]) {
                Ok(0) => return,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut fds = [nix::poll::PollFd::new(
                        conn.stream.as_fd(),
                        nix::poll::PollFlags::POLLOUT,
                    )];
                    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u16));
                }
                Err(_) => return,
            }
        }
    }
}

/// Answers a connection that is about to be closed unserved, then reads away what it sent
/// so far: closing a socket with unread bytes resets the connection (TCP sends `RST`, a
/// Unix socket peer reads `ECONNRESET`), and the client could lose the answer with it.
/// Both are best effort and never block: a client that cannot take the few bytes at once,
/// or keeps sending, loses them.
fn refuse<S: Read + Write>(stream: &mut S, answer: &[u8]) {
    let _ = stream.write(answer);
    let mut sink = [0u8; READ_CHUNK_BYTES];
    for _ in 0..REFUSE_DRAIN_READS_MAX {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

/// Whether a connection stays in the inbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keep {
    Yes,
    No,
}

/// Reads what a connection sent (once, without blocking): hands its request out when it is
/// whole, answers `too_long` past the bound, and drops it at its deadline or end of stream.
fn read_request<S: Read + Write>(
    c: &mut Pending<S>,
    framing: Framing,
    now: Instant,
    out: &mut Vec<(u64, Vec<u8>)>,
) -> Keep {
    let Phase::Reading { opened } = c.phase else {
        return Keep::Yes;
    };
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    match c.stream.read(&mut chunk) {
        Ok(0) => return Keep::No,
        Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            return if now.duration_since(opened) < IDLE_TIMEOUT {
                Keep::Yes
            } else {
                Keep::No
            };
        }
        Err(_) => return Keep::No,
    }
    let end = c
        .buf
        .windows(framing.terminator.len())
        .position(|w| w == framing.terminator);
    match end {
        Some(end) if end + framing.terminator.len() <= framing.bytes_max => {
            c.buf.truncate(end + framing.terminator.len());
            c.phase = Phase::Answering;
            out.push((c.id, std::mem::take(&mut c.buf)));
            Keep::Yes
        }
        _ if c.buf.len() >= framing.bytes_max => {
            refuse(&mut c.stream, framing.too_long);
            Keep::No
        }
        _ => Keep::Yes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    const BUSY: &[u8] = b"busy\n";

    fn inbox() -> (Inbox<TcpListener>, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let framing = Framing {
            terminator: b"\n",
            bytes_max: 64,
            too_long: b"too long\n",
            busy: BUSY,
        };
        (Inbox::new(listener, framing), addr)
    }

    /// A client whose reads fail rather than hang.
    fn client(addr: SocketAddr, send: &[u8]) -> TcpStream {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(send).unwrap();
        s
    }

    /// What the server wrote before it closed the connection (cleanly: a reset fails).
    fn answer(mut s: TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        s.read_to_end(&mut out)
            .expect("the answer, then the end of the stream");
        out
    }

    fn poll(inbox: &mut Inbox<TcpListener>) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        inbox.poll(&mut out);
        out
    }

    #[test]
    fn admission_below_at_and_above_the_bound() {
        let t = Instant::now();
        let at = |s: u64| Phase::Reading {
            opened: t + Duration::from_secs(s),
        };
        let max = 3;
        let cases: &[(&[Phase], Admission)] = &[
            (&[], Admission::Take),
            (&[at(1), Phase::Answering], Admission::Take),
            // At the bound the oldest reader goes, wherever it sits.
            (&[at(2), at(1), at(3)], Admission::Shed(1)),
            (&[Phase::Answering, at(5), at(4)], Admission::Shed(2)),
            (
                &[Phase::Answering, Phase::Answering, at(9)],
                Admission::Shed(2),
            ),
            // Nobody to shed: every place awaits its answer.
            (&[Phase::Answering; 3], Admission::Busy),
            // Above the bound (never reached, but decided the same way).
            (&[at(1), at(0), at(2), at(3)], Admission::Shed(1)),
            (&[Phase::Answering; 4], Admission::Busy),
        ];
        for (held, want) in cases {
            assert_eq!(admission(held.iter().copied(), max), *want, "{held:?}");
        }
    }

    #[test]
    fn a_request_sent_with_the_connection_is_read_on_accept() {
        let (mut inbox, addr) = inbox();
        let _c = client(addr, b"status\n");
        let got = poll(&mut inbox);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, b"status\n");
    }

    #[test]
    fn at_the_bound_the_oldest_reader_is_shed_for_a_newcomer() {
        let (mut inbox, addr) = inbox();
        // Below the bound: all held.
        let mut idle: Vec<TcpStream> = (0..CONNECTIONS_MAX - 1)
            .map(|_| client(addr, b""))
            .collect();
        assert!(poll(&mut inbox).is_empty());
        assert_eq!(inbox.conns.len(), CONNECTIONS_MAX - 1);
        // At the bound: still all held.
        idle.push(client(addr, b"sta"));
        assert!(poll(&mut inbox).is_empty());
        assert_eq!(inbox.conns.len(), CONNECTIONS_MAX);
        // Above: the newcomer's request is answered, and the first connection is shed.
        let _probe = client(addr, b"status\n");
        let got = poll(&mut inbox);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, b"status\n");
        assert_eq!(inbox.conns.len(), CONNECTIONS_MAX);
        assert_eq!(answer(idle.remove(0)), BUSY);
    }

    #[test]
    fn a_connection_awaiting_its_answer_is_never_shed() {
        let (mut inbox, addr) = inbox();
        let waiters: Vec<TcpStream> = (0..CONNECTIONS_MAX - 1)
            .map(|_| client(addr, b"reload\n"))
            .collect();
        let mut ids: Vec<u64> = poll(&mut inbox).into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), CONNECTIONS_MAX - 1);
        // A waiter is not polled (a hang-up would wake the loop for nothing, again and
        // again), but a forked child must still close it.
        assert_eq!(inbox.poll_fds().count(), 1);
        assert_eq!(inbox.descriptors().count(), CONNECTIONS_MAX);
        let slow = client(addr, b"sta");
        assert!(poll(&mut inbox).is_empty());
        // The only reader goes, however young it is.
        let _c = client(addr, b"status\n");
        let got = poll(&mut inbox);
        assert_eq!(got.len(), 1);
        assert_eq!(answer(slow), BUSY);
        ids.push(got[0].0);
        // Every place awaits its answer: a newcomer is refused, the waiters keep theirs.
        let refused = client(addr, b"status\n");
        assert!(poll(&mut inbox).is_empty());
        assert_eq!(answer(refused), BUSY);
        for (id, waiter) in ids.into_iter().zip(waiters) {
            inbox.answer(id, b"ok\n");
            assert_eq!(answer(waiter), b"ok\n");
        }
    }

    #[test]
    fn accepts_per_turn_below_at_and_above_the_bound() {
        for extra in [-1i64, 0, 1] {
            let (mut inbox, addr) = inbox();
            let n = (ACCEPTS_PER_POLL_MAX as i64 + extra) as usize;
            let _clients: Vec<TcpStream> = (0..n).map(|_| client(addr, b"")).collect();
            let mut out = Vec::new();
            assert_eq!(inbox.poll(&mut out), n.min(ACCEPTS_PER_POLL_MAX), "{n}");
            assert_eq!(inbox.poll(&mut out), n - n.min(ACCEPTS_PER_POLL_MAX), "{n}");
            assert_eq!(inbox.conns.len(), CONNECTIONS_MAX);
        }
    }

    #[test]
    fn a_refused_peer_is_answered_and_takes_no_place() {
        struct Picky(TcpListener);
        impl AsFd for Picky {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.0.as_fd()
            }
        }
        impl Listener for Picky {
            type Stream = TcpStream;
            fn accept_one(&self) -> io::Result<TcpStream> {
                self.0.accept_one()
            }
            fn vet(&self, _: &TcpStream) -> Result<(), String> {
                Err("error: permission denied\n".into())
            }
        }
        let (inner, addr) = inbox();
        let mut inbox = Inbox::new(Picky(inner.listener), inner.framing);
        let c = client(addr, b"stop\n");
        let mut out = Vec::new();
        assert_eq!(inbox.poll(&mut out), 1);
        assert!(out.is_empty());
        assert!(inbox.conns.is_empty());
        assert_eq!(answer(c), b"error: permission denied\n");
    }
}
