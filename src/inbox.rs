//! The master's small request servers (the control socket, the metrics listener): accept
//! without blocking, read one bounded request per connection, answer it once, close. Every
//! quantity is bounded: connections, request bytes, and the time to send a request.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

/// Connections served at once by one inbox; more are answered `busy` and closed.
pub(crate) const CONNECTIONS_MAX: usize = 16;
/// A connection that sends no whole request within this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an answer may take to write before the connection is dropped.
const ANSWER_TIMEOUT: Duration = Duration::from_millis(500);

/// A listening socket an inbox accepts from.
pub(crate) trait Listener: AsFd {
    /// The accepted stream.
    type Stream: Read + Write + AsFd;
    /// Accepts one connection without blocking, set non-blocking itself.
    fn accept_one(&self) -> io::Result<Self::Stream>;
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    fn accept_one(&self) -> io::Result<UnixStream> {
        let (s, _) = self.accept()?;
        s.set_nonblocking(true)?;
        Ok(s)
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
    /// The answer when `CONNECTIONS_MAX` connections are open.
    pub(crate) busy: &'static [u8],
}

struct Pending<S> {
    id: u64,
    stream: S,
    buf: Vec<u8>,
    opened: Instant,
    /// The request was handed out; its answer is pending.
    handed_out: bool,
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
        std::iter::once(self.listener.as_fd()).chain(self.conns.iter().map(|c| c.stream.as_fd()))
    }

    /// Accepts what waits, reads what arrived, drops idle connections; appends each whole
    /// request (terminator included) with its connection's id to `out`.
    pub(crate) fn poll(&mut self, out: &mut Vec<(u64, Vec<u8>)>) {
        while let Ok(mut stream) = self.listener.accept_one() {
            if self.conns.len() >= CONNECTIONS_MAX {
                let _ = stream.write_all(self.framing.busy);
                continue;
            }
            self.next_id += 1;
            self.conns.push(Pending {
                id: self.next_id,
                stream,
                buf: Vec::with_capacity(self.framing.bytes_max.min(4096)),
                opened: Instant::now(),
                handed_out: false,
            });
        }
        let now = Instant::now();
        let framing = self.framing;
        self.conns.retain_mut(|c| {
            if c.handed_out {
                return true;
            }
            let mut chunk = [0u8; 1024];
            match c.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return now.duration_since(c.opened) < IDLE_TIMEOUT;
                }
                Err(_) => return false,
            }
            let end = c
                .buf
                .windows(framing.terminator.len())
                .position(|w| w == framing.terminator);
            match end {
                Some(end) if end + framing.terminator.len() <= framing.bytes_max => {
                    c.buf.truncate(end + framing.terminator.len());
                    c.handed_out = true;
                    out.push((c.id, std::mem::take(&mut c.buf)));
                    true
                }
                _ if c.buf.len() >= framing.bytes_max => {
                    let _ = c.stream.write_all(framing.too_long);
                    false
                }
                _ => true,
            }
        });
    }

    /// The earliest instant a connection still being read times out.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .iter()
            .filter(|c| !c.handed_out)
            .map(|c| c.opened + IDLE_TIMEOUT)
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
