//! What this kernel's io_uring supports, probed once at start-up.

use crate::bufring::BufRing;
use crate::ring::{Ring, RingConfig, SetupMode};
use io_uring::{opcode, register::Probe};
use std::io;

/// The io_uring features a server needs, as this kernel offers them.
#[derive(Clone, Debug)]
pub struct Features {
    /// The strongest set-up the kernel accepted.
    pub setup: SetupMode,
    /// Opcodes the server needs and the kernel lacks (by name).
    pub missing_opcodes: Vec<&'static str>,
    /// Provided-buffer rings (`IORING_REGISTER_PBUF_RING`, Linux 5.19).
    pub buf_ring: bool,
    /// Multishot accept (Linux 5.19; inferred from `IORING_OP_SOCKET`, which arrived with it).
    pub multishot_accept: bool,
    /// Multishot receive (Linux 6.0; inferred from `IORING_OP_SEND_ZC`, which arrived with it).
    pub multishot_recv: bool,
    /// A registered ring descriptor (`IORING_REGISTER_RING_FDS`, Linux 5.18).
    pub registered_ring_fd: bool,
    /// Direct descriptors from accept: a sparse registered file table and
    /// `IORING_FILE_INDEX_ALLOC` (Linux 5.19; the table is tried, the allocation inferred from
    /// `IORING_OP_SOCKET`, which arrived with it).
    pub direct_accept: bool,
    /// Socket commands through `IORING_OP_URING_CMD`, such as setting an option on a direct
    /// descriptor (Linux 6.7; inferred from `IORING_OP_FUTEX_WAIT`, which arrived with them).
    pub socket_cmd: bool,
    /// Completions are never dropped on CQ overflow (`IORING_FEAT_NODROP`, Linux 5.5).
    pub nodrop: bool,
}

impl Features {
    /// Probes the kernel with a small ring (dropped before returning). Fails with the
    /// kernel's error when io_uring cannot be used at all: `EPERM` when a sysctl
    /// (`kernel.io_uring_disabled`) or a seccomp profile forbids it, `ENOSYS` when the kernel
    /// has no io_uring.
    pub fn probe() -> io::Result<Features> {
        let config = RingConfig {
            sq_entries: 8,
            cq_entries: 16,
            inflight_max: 8,
            ..RingConfig::default()
        };
        let mut ring: Ring = Ring::new(&config)?;
        let mut probe = Probe::new();
        ring.submitter_probe(&mut probe)?;
        let needed: [(u8, &'static str); 8] = [
            (opcode::Accept::CODE, "accept"),
            (opcode::Recv::CODE, "recv"),
            (opcode::Send::CODE, "send"),
            (opcode::Read::CODE, "read"),
            (opcode::Close::CODE, "close"),
            (opcode::Shutdown::CODE, "shutdown"),
            (opcode::AsyncCancel::CODE, "async_cancel"),
            (opcode::Timeout::CODE, "timeout"),
        ];
        let missing_opcodes = needed
            .iter()
            .filter(|(code, _)| !probe.is_supported(*code))
            .map(|(_, name)| *name)
            .collect();
        let buf_ring = ring.register_buf_ring(BufRing::new(0, 1, 64)?).is_ok();
        let direct_table = ring.register_direct_table(1).is_ok();
        Ok(Features {
            setup: ring.mode(),
            missing_opcodes,
            buf_ring,
            multishot_accept: probe.is_supported(opcode::Socket::CODE),
            multishot_recv: probe.is_supported(opcode::SendZc::CODE),
            registered_ring_fd: ring.ring_fd_registered(),
            direct_accept: direct_table && probe.is_supported(opcode::Socket::CODE),
            socket_cmd: probe.is_supported(opcode::FutexWait::CODE),
            nodrop: ring.nodrop(),
        })
    }

    /// What a server built on multishot receive and provided buffers lacks here, as a list of
    /// names; empty when everything is present.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut missing = self.missing_opcodes.clone();
        if !self.buf_ring {
            missing.push("provided buffer rings");
        }
        if !self.multishot_recv {
            missing.push("multishot recv");
        }
        if !self.nodrop {
            missing.push("IORING_FEAT_NODROP");
        }
        missing
    }
}
