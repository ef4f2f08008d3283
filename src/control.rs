//! The control socket: a Unix stream socket (mode 0600) served by the master, through which
//! `ringmaster status`, `reload` and `stop` reach a running server. A request is one line
//! naming the command; the answer is text, then the master closes the connection.

use crate::error::{Error, ErrorKind};
use crate::inbox::{Framing, Inbox};
use std::io::{self, Read, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest request line; longer requests are refused.
const LINE_BYTES_MAX: usize = 256;

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

/// The master's control socket and its clients.
pub(crate) struct ControlServer {
    inbox: Inbox<UnixListener>,
    path: PathBuf,
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
        let framing = Framing {
            terminator: b"\n",
            bytes_max: LINE_BYTES_MAX,
            too_long: b"error: request line too long\n",
            busy: b"error: busy, too many control connections\n",
        };
        Ok(ControlServer {
            inbox: Inbox::new(listener, framing),
            path: path.to_path_buf(),
        })
    }

    /// The descriptors to poll.
    pub(crate) fn poll_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.inbox.poll_fds()
    }

    /// Every descriptor it owns (for a forked child to close).
    pub(crate) fn descriptors(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.inbox.descriptors()
    }

    /// Accepts, reads, and returns the commands that arrived with their connection ids;
    /// unknown commands are answered here.
    pub(crate) fn poll(&mut self, out: &mut Vec<(u64, Command)>) {
        let mut requests = Vec::new();
        self.inbox.poll(&mut requests);
        for (id, line) in requests {
            match Command::parse(&String::from_utf8_lossy(&line)) {
                Some(command) => out.push((id, command)),
                None => self.inbox.answer(
                    id,
                    b"error: unknown command; use status, status json, reload or stop\n",
                ),
            }
        }
    }

    /// The earliest instant a client times out, if any client is waiting to send.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.inbox.next_deadline()
    }

    /// Answers connection `id` with `text` and closes it.
    pub(crate) fn answer(&mut self, id: u64, text: &str) {
        self.inbox.answer(id, text.as_bytes());
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
