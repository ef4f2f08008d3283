//! The client's address as a connection knows it: looked up when the connection is
//! accepted, and only when something needs it (`Config::client_addresses`, an access log).

use super::Conn;
use std::net::IpAddr;

/// What a connection knows of its client's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Peer {
    /// Not looked up (nothing needs it, or the socket has no IP address), or the lookup
    /// failed.
    Unknown,
    /// Being read through the ring. The read was pushed before the connection's first
    /// receive, so it completes before any byte arrives: the kernel issues entries in
    /// queue order and answers a socket option inline (`uring/tests/ops.rs` pins both).
    Asking,
    /// The client's address.
    Known(IpAddr),
}

impl Peer {
    /// The address, when known.
    pub(super) fn ip(self) -> Option<IpAddr> {
        match self {
            Peer::Known(ip) => Some(ip),
            Peer::Unknown | Peer::Asking => None,
        }
    }
}

impl Conn {
    /// The client's address is being read through the ring (pushed before the first
    /// receive); report it with [`Conn::on_peer`].
    pub(crate) fn asking_peer(&mut self) {
        debug_assert_eq!(self.peer, Peer::Unknown, "the address is asked once");
        self.peer = Peer::Asking;
    }

    /// The read of the client's address completed: `None` when it failed (the client may
    /// have gone already), which leaves the address unknown.
    pub(crate) fn on_peer(&mut self, peer: Option<IpAddr>) {
        debug_assert_eq!(self.peer, Peer::Asking, "an answer nobody asked for");
        self.peer = peer.map_or(Peer::Unknown, Peer::Known);
    }

    /// Whether the read of the client's address is still in the kernel (the slot waits
    /// for it).
    pub(super) fn asks_peer(&self) -> bool {
        self.peer == Peer::Asking
    }
}
