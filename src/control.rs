//! The control socket: a Unix stream socket (mode 0600) served by the master, through which
//! `ringmaster status`, `reload` and `stop` reach a running server. A request is one line
//! naming the command; the answer is text, then the master closes the connection.

use crate::error::{Error, ErrorKind};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Control connections served at once; more are answered `error: busy` and closed.
pub(crate) const CONNECTIONS_MAX: usize = 16;
/// The longest request line; longer requests are refused.
const LINE_BYTES_MAX: usize = 256;
/// A control connection that sends no whole line within this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// A command from a control client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// One line per worker, and the totals.
    Status,
    /// Same as `status`, as JSON.
    StatusJson,
    /// A rolling reload; answered when it is over.
    Reload,
    /// A graceful shutdown.
    Stop,
}

impl Command {
    fn parse(line: &str) -> Option<Command> {
        match line.trim() {
            "status" => Some(Command::Status),
            "status json" => Some(Command::StatusJson),
            "reload" => Some(Command::Reload),
            "stop" => Some(Command::Stop),
            _ => None,
        }
    }
}

/// One control client.
struct Conn {
    id: u64,
    stream: UnixStream,
    buf: Vec<u8>,
    opened: Instant,
    /// A command was read; the answer is pending (a reload in progress).
    answered_later: bool,
}

/// What happened on a control connection.
pub(crate) enum Event {
    /// A command arrived on connection `id`; answer it with [`ControlServer::answer`].
    Command(u64, Command),
}

/// The master's control socket and its clients.
pub(crate) struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    conns: Vec<Conn>,
    next_id: u64,
}

impl ControlServer {
    /// Refuses to go on when a live master answers on `path`: another ringmaster serves
    /// this port (with `SO_REUSEPORT` the port itself would not say so).
    pub(crate) fn check_free(path: &Path) -> Result<(), Error> {
        if path.exists() && UnixStream::connect(path).is_ok() {
            return Err(Error::new(
                ErrorKind::AddressInUse,
                format!(
                    "another ringmaster is already running with control socket {}; stop it \
                     (`ringmaster stop --control {0}`) or use another port",
                    path.display()
                ),
            ));
        }
        Ok(())
    }

    /// Binds `path`. A socket file left by a dead master is replaced; one a live master
    /// answers on means another ringmaster serves this port, which is refused.
    pub(crate) fn bind(path: &Path) -> Result<ControlServer, Error> {
        if path.exists() {
            ControlServer::check_free(path)?;
            // Nobody answers: a master died without cleaning up.
            std::fs::remove_file(path)
                .map_err(|e| Error::system(&format!("removing stale {}", path.display()), e))?;
            crate::log::log!("removed stale control socket {}", path.display());
        }
        // Create the socket owner-only from the start: no window with looser permissions.
        // SAFETY: umask only changes this process's file creation mask; the master is
        // single-threaded, so no other thread creates files meanwhile.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        let listener = bound.map_err(|e| {
            Error::new(
                ErrorKind::Bind,
                format!(
                    "binding the control socket {} failed: {e}; pass --control with a \
                     writable path",
                    path.display()
                ),
            )
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::system("control socket", e))?;
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
            conns: Vec::with_capacity(CONNECTIONS_MAX),
            next_id: 0,
        })
    }

    /// The descriptors to poll: the listener first, then each client.
    pub(crate) fn poll_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        std::iter::once(self.listener.as_fd()).chain(self.conns.iter().map(|c| c.stream.as_fd()))
    }

    /// Accepts new clients, reads the ready ones, closes idle ones; returns the commands.
    pub(crate) fn poll(&mut self, out: &mut Vec<Event>) {
        while let Ok((stream, _)) = self.listener.accept() {
            if self.conns.len() >= CONNECTIONS_MAX {
                let mut stream = stream;
                let _ = stream.write_all(b"error: busy, too many control connections\n");
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            self.next_id += 1;
            self.conns.push(Conn {
                id: self.next_id,
                stream,
                buf: Vec::with_capacity(LINE_BYTES_MAX),
                opened: Instant::now(),
                answered_later: false,
            });
        }
        let now = Instant::now();
        self.conns.retain_mut(|c| {
            if c.answered_later {
                return true;
            }
            let mut chunk = [0u8; LINE_BYTES_MAX];
            match c.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return now.duration_since(c.opened) < IDLE_TIMEOUT;
                }
                Err(_) => return false,
            }
            let Some(end) = c.buf.iter().position(|&b| b == b'\n') else {
                if c.buf.len() >= LINE_BYTES_MAX {
                    let _ = c.stream.write_all(b"error: request line too long\n");
                    return false;
                }
                return true;
            };
            let line = String::from_utf8_lossy(&c.buf[..end]).to_string();
            match Command::parse(&line) {
                Some(cmd) => {
                    c.answered_later = true;
                    out.push(Event::Command(c.id, cmd));
                    true
                }
                None => {
                    let _ = c.stream.write_all(
                        b"error: unknown command; use status, status json, reload or stop\n",
                    );
                    false
                }
            }
        });
    }

    /// The earliest instant a client times out, if any client is waiting to send.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .iter()
            .filter(|c| !c.answered_later)
            .map(|c| c.opened + IDLE_TIMEOUT)
            .min()
    }

    /// Answers connection `id` with `text` and closes it. The socket is non-blocking: an
    /// answer larger than the socket buffer is written with a short blocking timeout.
    pub(crate) fn answer(&mut self, id: u64, text: &str) {
        let Some(at) = self.conns.iter().position(|c| c.id == id) else {
            return;
        };
        let mut conn = self.conns.swap_remove(at);
        let _ = conn.stream.set_nonblocking(false);
        let _ = conn
            .stream
            .set_write_timeout(Some(Duration::from_millis(200)));
        let _ = conn.stream.write_all(text.as_bytes());
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends `command` to the master listening on `path` and returns its answer.
pub fn request(path: &Path, command: &str, timeout: Duration) -> io::Result<String> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}
