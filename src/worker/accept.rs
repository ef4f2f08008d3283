//! The worker's accepts: on its own listening socket and on those the master asks it to
//! adopt, multishot while the connection table has room for a whole accept queue and a few
//! single accepts near the bound, paused when descriptors run out, and swept when an accept
//! was cancelled under a connection that woke it.

use super::{Event, Worker};
use crate::config::ACCEPT_SINGLE_DEPTH;
use crate::connection::{Conn, Drain};
use crate::log::{log, log_limited};
use crate::Serve;
use ringmaster_uring::{Completion, Desc, Op, OpId, Owned, Ring};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// After `EMFILE`/`ENFILE` on accept, accepting pauses this long instead of spinning.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// One accept operation in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    Armed(OpId),
    /// A cancel of it was pushed; its last completion is still to come.
    Cancelling(OpId),
}

impl Pending {
    fn id(self) -> OpId {
        match self {
            Pending::Armed(id) | Pending::Cancelling(id) => id,
        }
    }
}

/// The accept operations on one listening socket: one multishot accept while the connection
/// table has room for a whole accept queue, else up to [`ACCEPT_SINGLE_DEPTH`] single
/// accepts, each of which takes exactly one connection. That way the worker stops accepting
/// at its bound instead of accepting and dropping.
#[derive(Debug)]
struct Acceptor {
    /// The slot whose socket this is.
    slot: u32,
    fd: RawFd,
    /// Whether it should accept: the worker's own socket while serving, an adopted one
    /// until the master releases it.
    wanted: bool,
    multi: Option<Pending>,
    /// At most [`ACCEPT_SINGLE_DEPTH`].
    singles: Vec<Pending>,
}

impl Acceptor {
    fn new(slot: u32, fd: RawFd) -> Acceptor {
        Acceptor {
            slot,
            fd,
            wanted: true,
            multi: None,
            singles: Vec::with_capacity(ACCEPT_SINGLE_DEPTH as usize),
        }
    }

    /// Whether an accept is still in the kernel: until then its poll entry sits on the
    /// socket's wait queue, so the worker must not exit.
    fn in_flight(&self) -> bool {
        self.multi.is_some() || !self.singles.is_empty()
    }

    /// Forgets an accept that has ended.
    fn ended(&mut self, id: OpId) {
        if self.multi.is_some_and(|m| m.id() == id) {
            self.multi = None;
        } else {
            self.singles.retain(|s| s.id() != id);
        }
    }

    /// Pushes a cancel for every accept not cancelled yet.
    fn cancel(&mut self, ring: &mut Ring<Event>) -> std::io::Result<()> {
        for pending in self.multi.iter_mut().chain(self.singles.iter_mut()) {
            if let Pending::Armed(id) = *pending {
                *pending = Pending::Cancelling(id);
                ring.push(Op::Cancel { target: id }, Event::Ignored)?;
            }
        }
        Ok(())
    }
}

/// Everything about accepting new connections.
#[derive(Debug)]
pub(super) struct Accepting {
    /// The worker's own socket's acceptor first, then adopted ones.
    acceptors: Vec<Acceptor>,
    /// Every listening socket, by slot (one entry in shared mode).
    listeners: Vec<RawFd>,
    /// By slot, as `listeners`: the size of the socket's addresses when its connections'
    /// client addresses are looked up, 0 when they are not (nothing needs them, or the
    /// socket's family has no IP addresses).
    peer_rooms: Vec<u32>,
    accept_queue: u32,
    /// Accepting resumes at this instant (after running out of descriptors).
    paused_until: Option<Instant>,
    /// Connections a multishot accept took beyond the table's bound, closed at once.
    pub(super) overflow: u64,
}

impl Accepting {
    /// `peers`: whether connections' client addresses are looked up.
    pub(super) fn new(slot: u32, listeners: &[RawFd], accept_queue: u32, peers: bool) -> Accepting {
        let own = slot as usize % listeners.len();
        let mut acceptors = Vec::with_capacity(listeners.len());
        acceptors.push(Acceptor::new(own as u32, listeners[own]));
        let room = |&fd: &RawFd| if peers { address_room(fd) } else { 0 };
        Accepting {
            acceptors,
            listeners: listeners.to_vec(),
            peer_rooms: listeners.iter().map(room).collect(),
            accept_queue,
            paused_until: None,
            overflow: 0,
        }
    }

    /// Whether an accept is still in the kernel.
    pub(super) fn in_flight(&self) -> bool {
        self.acceptors.iter().any(Acceptor::in_flight)
    }

    /// The sockets to sweep each tick: those this worker accepts on, unless paused.
    pub(super) fn sweep_targets(&self) -> impl Iterator<Item = RawFd> + '_ {
        let paused = self.paused_until.is_some();
        self.acceptors
            .iter()
            .filter(move |a| a.wanted && !paused)
            .map(|a| a.fd)
    }
}

impl<H: Serve> Worker<'_, H> {
    pub(super) fn on_accept(
        &mut self,
        listener: u32,
        c: &Completion<Event>,
    ) -> std::io::Result<()> {
        if !c.more() {
            let serving = self.ctx.drain == Drain::Serving;
            let acceptors = &mut self.accepting.acceptors;
            if let Some(a) = acceptors.iter_mut().find(|a| a.slot == listener) {
                a.ended(c.id);
                let (fd, quiet) = (a.fd, !a.in_flight());
                if quiet && (!a.wanted || !serving) {
                    self.sweep(fd);
                }
            }
        }
        match c.errno() {
            None => {
                let fd = if self.direct {
                    Desc::Direct(c.result as u32)
                } else {
                    Desc::Plain(c.result)
                };
                if self.conns.len() >= self.connections_max {
                    return self.overflowed(fd);
                }
                self.ctx.counters.accepted += 1;
                let room = self.accepting.peer_rooms[listener as usize];
                self.add_conn(fd, room)?;
            }
            Some(libc::ECANCELED) => {}
            Some(libc::ENFILE) if self.direct && self.conns.len() >= self.connections_max => {
                // The direct table is full: the same burst beyond the bound as in
                // `overflowed`, the connection closed by the kernel.
                self.accepting.overflow += 1;
            }
            Some(e @ (libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)) => {
                log_limited!(
                    "accept: {}; pausing accepts for {ACCEPT_PAUSE:?}",
                    std::io::Error::from_raw_os_error(e)
                );
                self.accepting.paused_until = Some(Instant::now() + ACCEPT_PAUSE);
            }
            Some(_) => {
                // ECONNABORTED and the like: that connection is gone; keep accepting.
            }
        }
        Ok(())
    }

    /// A multishot accept took more than the room left (an arrival burst beyond the accept
    /// queue while the table was nearly full): the connection is closed at once.
    fn overflowed(&mut self, fd: Desc) -> std::io::Result<()> {
        self.accepting.overflow += 1;
        match fd {
            // SAFETY: `fd` was just accepted for this worker and nothing else owns it;
            // dropping the OwnedFd closes it (the close's result tells nothing to act on).
            Desc::Plain(fd) => drop(unsafe { OwnedFd::from_raw_fd(fd) }),
            // A free slot at the bound: connections swept in by `accept4` hold plain
            // descriptors, not slots.
            Desc::Direct(_) => {
                self.ring.push(Op::Close { fd }, Event::Ignored)?;
            }
        }
        Ok(())
    }

    /// Keeps accepts armed on every wanted socket within the connection bound, cancels the
    /// rest, and forgets adopted sockets once released and quiet.
    pub(super) fn arm_accepts(&mut self) -> std::io::Result<()> {
        let serving = self.ctx.drain == Drain::Serving;
        let accepting = &mut self.accepting;
        let paused = match accepting.paused_until {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                accepting.paused_until = None;
                false
            }
            None => false,
        };
        let singles: usize = accepting.acceptors.iter().map(|a| a.singles.len()).sum();
        let free = self
            .connections_max
            .saturating_sub(self.conns.len() + singles);
        let active = accepting
            .acceptors
            .iter()
            .filter(|a| a.wanted)
            .count()
            .max(1);
        // A multishot accept can take a whole accept queue at once, so it is armed only
        // while every wanted socket's queue fits in the room left.
        let multi_fits =
            self.uring.multishot_accept && free > accepting.accept_queue as usize * active;
        let share = (free / active).min(ACCEPT_SINGLE_DEPTH as usize);
        for a in &mut accepting.acceptors {
            if !(serving && a.wanted) || (a.multi.is_some() && !multi_fits) {
                a.cancel(&mut self.ring)?;
                continue;
            }
            if paused || a.multi.is_some() {
                continue;
            }
            let direct = self.direct;
            if multi_fits {
                let op = Op::AcceptMulti { fd: a.fd, direct };
                a.multi = Some(Pending::Armed(self.ring.push(op, Event::Accept(a.slot))?));
                continue;
            }
            while a.singles.len() < share {
                let op = Op::Accept { fd: a.fd, direct };
                let id = self.ring.push(op, Event::Accept(a.slot))?;
                a.singles.push(Pending::Armed(id));
            }
        }
        // Adopted sockets the master took back, with nothing left in the kernel.
        let own = accepting.acceptors[0].slot;
        accepting
            .acceptors
            .retain(|a| a.slot == own || a.wanted || a.in_flight());
        Ok(())
    }

    /// Accepts, without waiting, what is queued on `fd` once this worker's accepts on it
    /// have all ended. A connection can arrive just as an accept is cancelled: the socket
    /// then wakes this worker's accept, which is gone, and no other worker waiting on the
    /// socket, so the connection would wait for the next one to arrive. Taking it here (and
    /// answering it as a draining worker does) leaves no connection behind.
    pub(super) fn sweep(&mut self, fd: RawFd) {
        use nix::sys::socket::{accept4, SockFlag};
        // SAFETY: `fd` is a listening socket this worker holds open for its whole life.
        let listener = unsafe { BorrowedFd::borrow_raw(fd) };
        let accepting = &self.accepting;
        let slot = accepting.listeners.iter().position(|&l| l == fd);
        let room = slot.map_or(0, |slot| accepting.peer_rooms[slot]);
        while self.conns.len() < self.connections_max {
            // EAGAIN: the queue is empty (or the socket failed: nothing to take).
            let Ok(conn) = accept4(listener, SockFlag::SOCK_CLOEXEC) else {
                return;
            };
            self.ctx.counters.accepted += 1;
            // The connection owns the descriptor from now on; its close act closes it.
            // A plain descriptor pushes nothing, so this cannot fail.
            let _ = self.add_conn(Desc::Plain(conn.into_raw_fd()), room);
        }
    }

    /// Takes an accepted connection into the table, with its client's address when it is
    /// looked up (`room`, the size of its socket's addresses, is not 0): at once by
    /// `getpeername` for a plain descriptor; through the ring for a direct one, pushed now,
    /// before the connection's first receive is (when it is acted on at the end of the
    /// turn), so that it completes before any byte arrives (see `connection::peer`).
    fn add_conn(&mut self, fd: Desc, room: u32) -> std::io::Result<()> {
        let peer = match fd {
            Desc::Plain(raw) if room > 0 => peer_of(raw),
            _ => None,
        };
        let entry = self.conns.vacant_entry();
        let slot = entry.key() as u32;
        entry.insert(Conn::new(slot, fd, peer, self.ctx.now));
        self.touch(slot);
        if room == 0 || matches!(fd, Desc::Plain(_)) {
            return Ok(());
        }
        let mut value = self.ctx.pool.take();
        value.resize(room as usize, 0);
        let op = Op::GetSockOpt {
            fd,
            level: libc::SOL_SOCKET,
            name: libc::SO_PEERNAME,
            value,
        };
        self.ring.push(op, Event::PeerName(slot))?;
        self.conns[slot as usize].asking_peer();
        Ok(())
    }

    /// The read of a connection's client address completed.
    pub(super) fn on_peer_name(&mut self, slot: u32, c: Completion<Event>) {
        let Owned::Buf(value) = c.owned else {
            panic!("a socket option read hands its buffer back")
        };
        // A failure (the client reset already: ENOTCONN) leaves the address unknown.
        let peer = (c.result > 0).then(|| ip_of(&value)).flatten();
        self.ctx.pool.put(value);
        self.conns[slot as usize].on_peer(peer);
        self.touch(slot);
    }

    /// Starts accepting on slot `slot`'s socket too (its worker is down), or stops.
    pub(super) fn adopt(&mut self, slot: u32, adopt: bool) {
        let accepting = &mut self.accepting;
        let Some(&fd) = accepting.listeners.get(slot as usize) else {
            log!("asked to adopt slot {slot}, which has no socket here");
            return;
        };
        match accepting.acceptors.iter_mut().find(|a| a.slot == slot) {
            Some(a) => a.wanted = adopt,
            None if adopt => accepting.acceptors.push(Acceptor::new(slot, fd)),
            None => {}
        }
        log!(
            "{} the socket of slot {slot}",
            if adopt { "adopting" } else { "releasing" }
        );
    }
}

/// The size of `listener`'s addresses (`sockaddr_in` or `sockaddr_in6`): the room a read of
/// a connection's `SO_PEERNAME` needs, which the kernel refuses when it is larger than the
/// address and cuts the address when it is smaller. 0 for a socket without IP addresses.
fn address_room(listener: RawFd) -> u32 {
    use nix::sys::socket::{getsockname, AddressFamily, SockaddrLike, SockaddrStorage};
    let size = match getsockname::<SockaddrStorage>(listener).map(|a| a.family()) {
        Ok(Some(AddressFamily::Inet)) => std::mem::size_of::<libc::sockaddr_in>(),
        Ok(Some(AddressFamily::Inet6)) => std::mem::size_of::<libc::sockaddr_in6>(),
        _ => 0,
    };
    size as u32
}

/// A plain connection's client address (`getpeername`); `None` when it has gone.
fn peer_of(fd: RawFd) -> Option<IpAddr> {
    use nix::sys::socket::{getpeername, SockaddrStorage};
    let addr = getpeername::<SockaddrStorage>(fd).ok()?;
    addr.as_sockaddr_in()
        .map(|v4| IpAddr::V4(v4.ip()))
        .or_else(|| addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
}

/// The IP address in a `sockaddr_in` or `sockaddr_in6` as the kernel wrote it (the family
/// in native order, the address in network order); `None` for another family or too few
/// bytes.
fn ip_of(sockaddr: &[u8]) -> Option<IpAddr> {
    let family = u16::from_ne_bytes(sockaddr.get(..2)?.try_into().ok()?);
    match i32::from(family) {
        // sin_family, sin_port, then sin_addr.
        libc::AF_INET => {
            let ip: [u8; 4] = sockaddr.get(4..8)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(ip)))
        }
        // sin6_family, sin6_port, sin6_flowinfo, then sin6_addr.
        libc::AF_INET6 => {
            let ip: [u8; 16] = sockaddr.get(8..24)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(ip)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmaster_uring::SockAddr;
    use std::net::SocketAddr;

    /// The bytes of `addr` as the kernel lays them out, at the length it writes.
    fn kernel_bytes(addr: SocketAddr) -> Vec<u8> {
        let sa = SockAddr::from_std(addr);
        // SAFETY: `storage` is plain data at least `len` bytes long.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const sa.storage).cast::<u8>(), sa.len as usize)
        };
        bytes.to_vec()
    }

    #[test]
    fn a_peer_name_gives_its_ip_address() {
        for addr in [
            "192.0.2.7:5000",
            "[2001:db8::1]:443",
            "[::ffff:10.0.0.1]:80",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let bytes = kernel_bytes(addr);
            assert_eq!(ip_of(&bytes), Some(addr.ip()), "{addr}");
            // Cut inside the address: none rather than a wrong one.
            let end = if addr.is_ipv4() { 8 } else { 24 };
            assert_eq!(ip_of(&bytes[..end - 1]), None, "{addr} cut");
        }
        assert_eq!(ip_of(&[]), None);
        let unix = (libc::AF_UNIX as u16).to_ne_bytes();
        assert_eq!(ip_of(&[unix[0], unix[1], 0, 0, 1, 2, 3, 4]), None);
    }
}
