//! The listening sockets: one shared, or one `SO_REUSEPORT` socket per slot, bound by the
//! master (or passed by systemd) and kept open by it for the life of the server. Owns those
//! sockets.
//!
//! In `SO_REUSEPORT` mode the master binds one socket per CPU workers may run on (or per
//! worker, if more) at start, but only the first slots' listen: a socket joins the kernel's
//! group, and gets a share of new connections, only once it listens. `ringmaster scale`
//! makes the next one listen when it adds a slot. Every worker is forked holding all of
//! them, so any worker can adopt any socket; a socket never stops listening, because
//! leaving the group would reset the connections waiting in its queue (unless the host set
//! `net.ipv4.tcp_migrate_req`): after a scale down, a removed slot's socket is adopted by a
//! remaining worker ([`super::adopt`]). Slots beyond the sockets (more workers than were
//! bound for) share socket `slot % sockets`, as the worker's own choice of socket does.

use crate::config::{Config, ListenMode};
use crate::error::{Error, ErrorKind};
use crate::log::log;
use nix::errno::Errno;
use nix::sys::socket::{self as sock, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// The listening sockets, all opened and kept by the master.
pub(super) enum Listeners {
    Shared(OwnedFd),
    /// One `SO_REUSEPORT` socket per slot: `fds`, of which the first `listening` listen.
    PerSlot {
        fds: Vec<OwnedFd>,
        listening: usize,
    },
}

impl Listeners {
    /// Sockets systemd passed: one is shared by every worker; one per slot is used as
    /// such; any other count uses the first, shared.
    pub(super) fn inherited(mut fds: Vec<OwnedFd>, count: usize) -> Listeners {
        if fds.len() == count && count > 1 {
            return Listeners::PerSlot {
                listening: fds.len(),
                fds,
            };
        }
        if fds.len() > 1 {
            log!(
                "systemd passed {} sockets for {count} workers: sharing the first",
                fds.len()
            );
        }
        Listeners::Shared(fds.swap_remove(0))
    }

    /// Binds the sockets for `count` slots, with room for `reserve` (at least `count`) in
    /// `SO_REUSEPORT` mode: the first `count` listen.
    pub(super) fn bind(config: &Config, count: usize, reserve: usize) -> Result<Listeners, Error> {
        match config.listen_mode {
            ListenMode::Shared => {
                let fd = bind(config.listen, Some(config.backlog), false)?;
                Ok(Listeners::Shared(fd))
            }
            ListenMode::ReusePort => {
                check_port_free(config.listen)?;
                let backlog = |i: usize| (i < count).then_some(config.backlog);
                let first = bind(config.listen, backlog(0), true)?;
                // With port 0 the first socket picked the port; the others join it.
                let addr = local_addr(&first)?;
                let mut fds = vec![first];
                for i in 1..reserve.max(count) {
                    fds.push(bind(addr, backlog(i), true)?);
                }
                Ok(Listeners::PerSlot {
                    fds,
                    listening: count,
                })
            }
        }
    }

    /// Makes the sockets of the first `count` slots listen, as a scale up adds slots (those
    /// beyond the sockets share one); nothing in shared mode.
    pub(super) fn listen_for(&mut self, count: usize, backlog: u32) -> Result<(), Error> {
        let Listeners::PerSlot { fds, listening } = self else {
            return Ok(());
        };
        while *listening < count.min(fds.len()) {
            listen(&fds[*listening], backlog)?;
            *listening += 1;
        }
        Ok(())
    }

    /// How many sockets listen, and so need a worker accepting on them: one shared, or one
    /// per slot there ever was.
    pub(super) fn listening(&self) -> usize {
        match self {
            Listeners::Shared(_) => 1,
            Listeners::PerSlot { listening, .. } => *listening,
        }
    }

    pub(super) fn all(&self) -> Vec<RawFd> {
        match self {
            Listeners::Shared(fd) => vec![fd.as_raw_fd()],
            Listeners::PerSlot { fds, .. } => fds.iter().map(|f| f.as_raw_fd()).collect(),
        }
    }

    pub(super) fn local_addr(&self) -> Result<SocketAddr, Error> {
        match self {
            Listeners::Shared(fd) => local_addr(fd),
            Listeners::PerSlot { fds, .. } => local_addr(&fds[0]),
        }
    }
}

pub(super) fn local_addr(fd: &OwnedFd) -> Result<SocketAddr, Error> {
    sock::getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .and_then(|s| to_std_addr(&s))
        .ok_or_else(|| Error::system("getsockname", "no address"))
}

/// Refuses a port another process listens on, before joining it with `SO_REUSEPORT`: a
/// second master (of the same user) would otherwise join the first one's group silently and
/// take its share of the connections, whatever its control socket. A socket bound without
/// `SO_REUSEPORT` conflicts with any listener on the port (and `SO_REUSEADDR` keeps
/// connections in `TIME_WAIT` from counting), so binding one, then closing it, tells. Only a
/// master starting within the same microseconds could slip between this check and the bind.
fn check_port_free(addr: SocketAddr) -> Result<(), Error> {
    if addr.port() == 0 {
        return Ok(()); // A port of our own is about to be picked.
    }
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let probe = sock::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| Error::system("socket", e))?;
    sock::setsockopt(&probe, sockopt::ReuseAddr, &true)
        .map_err(|e| Error::system("SO_REUSEADDR", e))?;
    sock::bind(probe.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(|e| bind_error(addr, e))
}

/// A socket bound to `addr`, listening with `backlog` if one is given.
pub(super) fn bind(
    addr: SocketAddr,
    backlog: Option<u32>,
    reuseport: bool,
) -> Result<OwnedFd, Error> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = sock::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| Error::system("socket", e))?;
    sock::setsockopt(&fd, sockopt::ReuseAddr, &true)
        .map_err(|e| Error::system("SO_REUSEADDR", e))?;
    if reuseport {
        sock::setsockopt(&fd, sockopt::ReusePort, &true)
            .map_err(|e| Error::system("SO_REUSEPORT", e))?;
    }
    // Accepted sockets inherit TCP_NODELAY from the listener: responses go out at once.
    sock::setsockopt(&fd, sockopt::TcpNoDelay, &true)
        .map_err(|e| Error::system("TCP_NODELAY", e))?;
    sock::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(|e| bind_error(addr, e))?;
    if let Some(backlog) = backlog {
        listen(&fd, backlog)?;
    }
    Ok(fd)
}

fn listen(fd: &OwnedFd, backlog: u32) -> Result<(), Error> {
    let backlog = sock::Backlog::new(backlog.min(i32::MAX as u32) as i32)
        .map_err(|e| Error::config(format!("backlog: {e}")))?;
    sock::listen(fd, backlog).map_err(|e| Error::system("listen", e))
}

pub(super) fn bind_error(addr: SocketAddr, e: Errno) -> Error {
    match e {
        Errno::EADDRINUSE => Error::new(
            ErrorKind::AddressInUse,
            format!(
                "address {addr} is already in use by another process (another ringmaster, \
                 whatever its control socket?); stop it, or choose another address with \
                 --listen (port 0 picks a free port)"
            ),
        ),
        Errno::EACCES => Error::new(
            ErrorKind::Bind,
            format!(
                "binding {addr} is not permitted (ports below 1024 need root or \
                 CAP_NET_BIND_SERVICE); use a higher port or grant the capability"
            ),
        ),
        Errno::EADDRNOTAVAIL => Error::new(
            ErrorKind::Bind,
            format!(
                "address {addr} is not an address of this host; use 0.0.0.0, 127.0.0.1 or \
                 one of this host's addresses"
            ),
        ),
        e => Error::new(ErrorKind::Bind, format!("binding {addr} failed: {e}")),
    }
}

pub(super) fn to_std_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    s.as_sockaddr_in6()
        .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}

/// The accept queue length the kernel will use: the backlog, capped by `somaxconn`.
pub(super) fn accept_queue(backlog: u32) -> u32 {
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(4096);
    backlog.min(somaxconn)
}
