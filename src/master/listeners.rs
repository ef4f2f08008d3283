//! The listening sockets: one shared, or one `SO_REUSEPORT` socket per slot, bound by the
//! master (or passed by systemd) and kept open by it for the life of the server. Owns those
//! sockets.

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
    /// One `SO_REUSEPORT` socket per slot.
    PerSlot(Vec<OwnedFd>),
}

impl Listeners {
    /// Sockets systemd passed: one is shared by every worker; one per slot is used as
    /// such; any other count uses the first, shared.
    pub(super) fn inherited(mut fds: Vec<OwnedFd>, count: usize) -> Listeners {
        if fds.len() == count && count > 1 {
            return Listeners::PerSlot(fds);
        }
        if fds.len() > 1 {
            log!(
                "systemd passed {} sockets for {count} workers: sharing the first",
                fds.len()
            );
        }
        Listeners::Shared(fds.swap_remove(0))
    }

    pub(super) fn bind(config: &Config, count: usize) -> Result<Listeners, Error> {
        match config.listen_mode {
            ListenMode::Shared => Ok(Listeners::Shared(bind(
                config.listen,
                config.backlog,
                false,
            )?)),
            ListenMode::ReusePort => {
                check_port_free(config.listen)?;
                let first = bind(config.listen, config.backlog, true)?;
                // With port 0 the first socket picked the port; the others join it.
                let addr = local_addr(&first)?;
                let mut all = vec![first];
                for _ in 1..count {
                    all.push(bind(addr, config.backlog, true)?);
                }
                Ok(Listeners::PerSlot(all))
            }
        }
    }

    pub(super) fn all(&self) -> Vec<RawFd> {
        match self {
            Listeners::Shared(fd) => vec![fd.as_raw_fd()],
            Listeners::PerSlot(fds) => fds.iter().map(|f| f.as_raw_fd()).collect(),
        }
    }

    pub(super) fn local_addr(&self) -> Result<SocketAddr, Error> {
        match self {
            Listeners::Shared(fd) => local_addr(fd),
            Listeners::PerSlot(fds) => local_addr(&fds[0]),
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

pub(super) fn bind(addr: SocketAddr, backlog: u32, reuseport: bool) -> Result<OwnedFd, Error> {
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
    let backlog = sock::Backlog::new(backlog.min(i32::MAX as u32) as i32)
        .map_err(|e| Error::config(format!("backlog: {e}")))?;
    sock::listen(&fd, backlog).map_err(|e| Error::system("listen", e))?;
    Ok(fd)
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
