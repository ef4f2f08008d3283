//! What this kernel's io_uring supports, probed once at start-up.

use crate::bufring::BufRing;
use crate::op::{Desc, Op, OpKind};
use crate::ring::{Ring, RingConfig, SetupMode};
use io_uring::{opcode, register::Probe, IoUring};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long the probe waits for its socket commands to complete. They complete inline
/// (a socket option, an ioctl), so this bounds only a kernel that misbehaves.
const SOCKET_COMMANDS_WAIT: Duration = Duration::from_secs(1);

/// The io_uring features a server needs, as this kernel offers them.
#[derive(Clone, Debug)]
pub struct Features {
    /// The strongest set-up the kernel accepted.
    pub setup: SetupMode,
    /// Opcodes the server needs and the kernel lacks (by name).
    pub missing_opcodes: Vec<&'static str>,
    /// Provided-buffer rings (`IORING_REGISTER_PBUF_RING`, Linux 5.19).
    pub buf_ring: bool,
    /// `IORING_SETUP_SINGLE_ISSUER` (Linux 6.0), tried alone on a ring of its own.
    pub single_issuer: bool,
    /// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` (Linux 6.1), tried on a ring
    /// of its own.
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN` (Linux 5.19), tried alone on a ring of its own.
    pub coop_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG` (Linux 5.19), tried on a ring
    /// of its own.
    pub taskrun_flag: bool,
    /// Waits bounded by a timeout passed to `io_uring_enter` (`IORING_FEAT_EXT_ARG`, Linux
    /// 5.11), as the ring's feature bits say.
    pub ext_arg: bool,
    /// The opcodes of [`OpKind::ALL`] the kernel's probe (`IORING_REGISTER_PROBE`) lists, as
    /// a bit set over opcode numbers.
    opcodes: [u64; 4],
    /// `SOCKET_URING_OP_SIOCOUTQ` answered on a TCP socket (tried).
    pub socket_out_queue: bool,
    /// `SOCKET_URING_OP_GETSOCKOPT` answered `SO_TYPE` on a TCP socket (tried).
    pub socket_getsockopt: bool,
    /// `SOCKET_URING_OP_SETSOCKOPT` set `SO_KEEPALIVE` on a TCP socket (tried).
    pub socket_setsockopt: bool,
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
    /// descriptor (Linux 6.7): all three of them were tried on a TCP socket and answered.
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
        let mut opcodes = [0u64; 4];
        for kind in OpKind::ALL {
            let code = kind.opcode();
            if probe.is_supported(code) {
                opcodes[usize::from(code / 64)] |= 1 << (code % 64);
            }
        }
        let buf_ring = ring.register_buf_ring(BufRing::new(0, 1, 64)?).is_ok();
        let direct_table = ring.register_direct_table(1).is_ok();
        let [socket_out_queue, socket_getsockopt, socket_setsockopt] = socket_commands(&mut ring);
        let socket_op = probe.is_supported(opcode::Socket::CODE);
        Ok(Features {
            setup: ring.mode(),
            missing_opcodes,
            single_issuer: setup_accepted(|b| b.setup_single_issuer()),
            defer_taskrun: setup_accepted(|b| b.setup_single_issuer().setup_defer_taskrun()),
            coop_taskrun: setup_accepted(|b| b.setup_coop_taskrun()),
            taskrun_flag: setup_accepted(|b| b.setup_coop_taskrun().setup_taskrun_flag()),
            ext_arg: ring.ext_arg(),
            opcodes,
            socket_out_queue,
            socket_getsockopt,
            socket_setsockopt,
            buf_ring,
            multishot_accept: probe.is_supported(opcode::Accept::CODE) && socket_op,
            multishot_recv: probe.is_supported(opcode::Recv::CODE)
                && probe.is_supported(opcode::SendZc::CODE),
            registered_ring_fd: ring.ring_fd_registered(),
            direct_accept: direct_table && socket_op,
            socket_cmd: socket_out_queue && socket_getsockopt && socket_setsockopt,
            nodrop: ring.nodrop(),
        })
    }

    /// Whether the kernel's opcode probe lists `code`.
    pub fn has_opcode(&self, code: u8) -> bool {
        self.opcodes[usize::from(code / 64)] & (1 << (code % 64)) != 0
    }

    /// Whether this kernel can run `kind`, by the kernel's own answers: the opcode probe for
    /// a plain opcode; for a multishot mode the probe of an opcode that arrived in the
    /// same release (the probe does not list modes); for a socket command, the command
    /// tried on a TCP socket.
    pub fn supports(&self, kind: OpKind) -> bool {
        match kind {
            OpKind::AcceptMulti => self.multishot_accept,
            OpKind::RecvMulti => self.multishot_recv,
            OpKind::SocketOutQueue => self.socket_out_queue,
            OpKind::GetSockOpt => self.socket_getsockopt,
            OpKind::SetSockOpt => self.socket_setsockopt,
            _ => self.has_opcode(kind.opcode()),
        }
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
        if !self.ext_arg {
            missing.push("IORING_FEAT_EXT_ARG");
        }
        missing
    }
}

/// Whether the kernel sets up a small ring with the flags `flags` adds (no fallback).
fn setup_accepted(flags: impl FnOnce(&mut io_uring::Builder) -> &mut io_uring::Builder) -> bool {
    let mut builder = IoUring::builder();
    flags(&mut builder);
    builder.build(2).is_ok()
}

/// Tries the three socket commands on a fresh, unconnected TCP socket through `ring` and
/// says which the kernel answered: `SIOCOUTQ`, `getsockopt(SO_TYPE)`, `setsockopt
/// (SO_KEEPALIVE)`. A kernel without them fails each with `-EOPNOTSUPP` or `-EINVAL`; so
/// does one where the socket cannot be made, which then reads as "not offered".
fn socket_commands(ring: &mut Ring) -> [bool; 3] {
    let mut answered = [false; 3];
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new descriptor that
    // nothing else owns.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return answered;
    }
    // SAFETY: `raw` was just created and is owned by nothing else (see above).
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    let fd = Desc::Plain(socket.as_raw_fd());
    let ops = [
        Op::SocketOutQueue { fd },
        Op::GetSockOpt {
            fd,
            level: libc::SOL_SOCKET,
            name: libc::SO_TYPE,
            value: vec![0; std::mem::size_of::<libc::c_int>()],
        },
        Op::SetSockOpt {
            fd,
            level: libc::SOL_SOCKET,
            name: libc::SO_KEEPALIVE,
            value: 1i32.to_ne_bytes().to_vec(),
        },
    ];
    for (tag, op) in ops.into_iter().enumerate() {
        if ring.push(op, tag as u64).is_err() {
            return answered;
        }
    }
    let deadline = Instant::now() + SOCKET_COMMANDS_WAIT;
    let mut done = Vec::with_capacity(ring.cq_capacity());
    let mut pending = answered.len() as u32;
    while pending > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || ring.submit_and_wait_timeout(pending, left).is_err() {
            // The ring keeps (or leaks) what is still in flight when dropped.
            break;
        }
        done.clear();
        ring.reap(&mut done);
        for c in &done {
            if let Some(answer) = answered.get_mut(c.tag as usize) {
                *answer = c.result >= 0;
                pending -= 1;
            }
        }
    }
    answered
}
