//! systemd integration without libsystemd: socket activation (`LISTEN_FDS`) and the
//! notification protocol (`NOTIFY_SOCKET`: `READY=1`, `RELOADING=1`, `STOPPING=1`,
//! `STATUS=`, `WATCHDOG=1`). Both are plain environment variables and a datagram socket.
//!
//! Written by hand rather than with `sd-notify` or `listenfd`, after trying them against
//! what the master needs: `sd-notify` reads `NOTIFY_SOCKET` at each call and removes it only
//! with a notification, while the master must take the variable out of its environment at
//! start (so that no worker, executed or forked, notifies in its name) and still notify for
//! its whole life, from one socket opened once; `listenfd` hands listeners by index but
//! checks neither that each is a listening stream socket nor makes it non-blocking and
//! close-on-exec, the three checks [`listen_fds`] does with the error that names the
//! socket unit's setting. What is left is about sixty lines, off every hot path.

use crate::error::Error;
use crate::log::log;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;
/// The most inherited sockets taken.
const LISTEN_FDS_MAX: i32 = 64;

/// The sockets systemd passed to this process, if it was socket-activated: `LISTEN_PID` is
/// this process and `LISTEN_FDS` counts descriptors from 3. The variables are removed, so
/// that no child takes them for its own.
pub(crate) fn listen_fds() -> Result<Vec<OwnedFd>, Error> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let (Some(pid), Some(count)) = (pid, count) else {
        return Ok(Vec::new());
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(Vec::new());
    }
    let count = count
        .trim()
        .parse::<i32>()
        .unwrap_or(0)
        .clamp(0, LISTEN_FDS_MAX);
    for fd in LISTEN_FDS_START..LISTEN_FDS_START + count {
        // SAFETY: a borrow for the check only; the descriptor stays open.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let accepting = nix::sys::socket::sockopt::AcceptConn;
        if nix::sys::socket::getsockopt(&borrowed, accepting) != Ok(true) {
            return Err(Error::config(format!(
                "systemd passed descriptor {fd} (LISTEN_FDS={count}), but it is not a \
                 listening stream socket; check the socket unit's ListenStream="
            )));
        }
    }
    (LISTEN_FDS_START..LISTEN_FDS_START + count)
        .map(|fd| {
            // SAFETY: systemd passed descriptors 3..3+LISTEN_FDS to this process (LISTEN_PID
            // says so), each checked above to be open, and nothing else in it owns them.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // Close-on-exec, as every descriptor of the master; the workers inherit it
            // through fork.
            let cloexec = nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC);
            let _ = nix::fcntl::fcntl(&fd, cloexec);
            set_nonblocking(&fd)?;
            Ok(fd)
        })
        .collect()
}

/// Makes an inherited socket non-blocking, as the workers need: a socket unit without
/// `NonBlocking=yes` passes a blocking one, and a worker's sweep (`accept4` on an empty
/// queue) would then block its loop for good.
fn set_nonblocking(fd: &OwnedFd) -> Result<(), Error> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| Error::system("fcntl(F_GETFL)", e))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|e| Error::system("fcntl(F_SETFL)", e))?;
    Ok(())
}

/// A channel to systemd's notification socket; silent when there is none.
pub(crate) struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace) and
    /// `WATCHDOG_USEC` (when `WATCHDOG_PID` is unset or this process), and removes them so
    /// that workers do not notify in the master's name.
    pub(crate) fn from_env() -> Notifier {
        let path = std::env::var("NOTIFY_SOCKET").ok();
        let watchdog_pid = std::env::var("WATCHDOG_PID").ok();
        let watchdog_usec = std::env::var("WATCHDOG_USEC").ok();
        for var in ["NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC"] {
            std::env::remove_var(var);
        }
        let ours =
            watchdog_pid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(std::process::id()));
        let watchdog = watchdog_usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| ours && u > 0)
            .map(Duration::from_micros);
        let socket = path.and_then(|path| {
            let addr = match path.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
                None => SocketAddr::from_pathname(&path),
            };
            match (UnixDatagram::unbound(), addr) {
                (Ok(sock), Ok(addr)) => Some((sock, addr)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!("NOTIFY_SOCKET={path} is unusable ({e}); not notifying systemd");
                    None
                }
            }
        });
        Notifier { socket, watchdog }
    }

    /// Sends one notification (`READY=1`, `STATUS=...`; lines joined by newlines).
    pub(crate) fn notify(&self, state: &str) {
        if let Some((sock, addr)) = &self.socket {
            if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
                log!("notifying systemd ({state:?}): {e}");
            }
        }
    }

    /// How often to send `WATCHDOG=1`: half of `WatchdogSec`, when it is set.
    pub(crate) fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }
}

/// `MONOTONIC_USEC=` for `RELOADING=1`: `CLOCK_MONOTONIC` in microseconds.
pub(crate) fn monotonic_usec() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        (t.tv_sec() as u64).saturating_mul(1_000_000) + t.tv_nsec() as u64 / 1000
    })
}
