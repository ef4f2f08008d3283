//! The typed entries: each [`Op`] builds one submission queue entry and names the memory it
//! lends the kernel, which the ring keeps in its in-flight table until the final completion.

use crate::inflight::{Lent, OpId};
use io_uring::types::{Fd, Timespec};
use io_uring::{opcode, squeue};
use std::os::fd::RawFd;
use std::time::Duration;

/// One operation to submit.
#[derive(Debug)]
pub enum Op {
    /// Multishot accept on a listening socket: one completion per accepted connection (its
    /// descriptor, `SOCK_CLOEXEC`), each with `IORING_CQE_F_MORE` while the operation stays armed.
    AcceptMulti {
        /// The listening socket.
        fd: RawFd,
    },
    /// Single-shot accept: exactly one connection, or an error.
    Accept {
        /// The listening socket.
        fd: RawFd,
    },
    /// Multishot receive into buffers picked from a provided-buffer group. Each completion
    /// carries a buffer id; `0` means end of stream; `-ENOBUFS` ends the operation when the
    /// group ran dry (give buffers back and arm it again: it is not end of stream).
    RecvMulti {
        /// The connected socket.
        fd: RawFd,
        /// The provided-buffer group to pick from.
        group: u16,
    },
    /// Single-shot receive into one buffer picked from a provided-buffer group.
    Recv {
        /// The connected socket.
        fd: RawFd,
        /// The provided-buffer group to pick from.
        group: u16,
        /// The most bytes to receive (at most the group's buffer length).
        len: u32,
    },
    /// Send `buf[offset..]` (with `MSG_NOSIGNAL`); the completion counts the bytes sent and
    /// hands `buf` back.
    Send {
        /// The connected socket.
        fd: RawFd,
        /// The bytes, owned by the ring until the completion.
        buf: Vec<u8>,
        /// Where in `buf` to start.
        offset: usize,
    },
    /// Read into the spare capacity of `buf` (from its length to its capacity); the completion
    /// hands `buf` back with its length grown by the bytes read.
    Read {
        /// A pipe, signalfd or other readable descriptor.
        fd: RawFd,
        /// The buffer, owned by the ring until the completion.
        buf: Vec<u8>,
    },
    /// Write `buf` to a file at `offset` (`u64::MAX`: at the file position, which for an
    /// `O_APPEND` file is its end); the completion counts the bytes written and hands `buf`
    /// back.
    Write {
        /// A file.
        fd: RawFd,
        /// The bytes, owned by the ring until the completion.
        buf: Vec<u8>,
        /// Where to write, or `u64::MAX` for the file position.
        offset: u64,
    },
    /// Close a descriptor.
    Close {
        /// The descriptor.
        fd: RawFd,
    },
    /// Shut down one or both directions of a socket (`libc::SHUT_*`).
    Shutdown {
        /// The socket.
        fd: RawFd,
        /// `SHUT_RD`, `SHUT_WR` or `SHUT_RDWR`.
        how: i32,
    },
    /// Cancel another operation; it ends with `-ECANCELED` (or had already ended: `-ENOENT`).
    Cancel {
        /// The operation to cancel.
        target: OpId,
    },
    /// A relative timeout: completes with `-ETIME` when it fires.
    Timeout {
        /// How long; owned by the ring until the completion, then handed back for reuse.
        spec: Box<Timespec>,
    },
}

impl Op {
    /// A timeout that fires after `after`. It allocates its timespec; reuse the one handed
    /// back in [`Owned::Timespec`](crate::Owned::Timespec) to avoid that on a hot path.
    pub fn timeout(after: Duration) -> Op {
        Op::Timeout {
            spec: Box::new(
                Timespec::new()
                    .sec(after.as_secs())
                    .nsec(after.subsec_nanos()),
            ),
        }
    }

    /// Builds the submission entry and the memory it lends. The entry points into that
    /// memory: the caller keeps it alive, in the in-flight table, until the final completion.
    pub(crate) fn into_entry(self) -> (squeue::Entry, Lent) {
        match self {
            Op::AcceptMulti { fd } => (
                opcode::AcceptMulti::new(Fd(fd))
                    .flags(libc::SOCK_CLOEXEC)
                    .build(),
                Lent::Nothing,
            ),
            Op::Accept { fd } => (
                opcode::Accept::new(Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                    .flags(libc::SOCK_CLOEXEC)
                    .build(),
                Lent::Nothing,
            ),
            Op::RecvMulti { fd, group } => (
                opcode::RecvMulti::new(Fd(fd), group).build(),
                Lent::Group(group),
            ),
            Op::Recv { fd, group, len } => (
                opcode::Recv::new(Fd(fd), std::ptr::null_mut(), len)
                    .buf_group(group)
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT),
                Lent::Group(group),
            ),
            Op::Send { fd, buf, offset } => {
                assert!(offset < buf.len(), "send of nothing");
                let rest = &buf[offset..];
                let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
                let entry = opcode::Send::new(Fd(fd), rest.as_ptr(), len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build();
                // Moving the Vec moves its header, not its heap block: the pointer stays valid.
                (entry, Lent::Source(buf))
            }
            Op::Read { fd, mut buf } => {
                let spare = buf.spare_capacity_mut();
                assert!(!spare.is_empty(), "read into a full buffer");
                let len = u32::try_from(spare.len()).unwrap_or(u32::MAX);
                let entry = opcode::Read::new(Fd(fd), spare.as_mut_ptr().cast(), len)
                    .offset(u64::MAX)
                    .build();
                (entry, Lent::Sink(buf))
            }
            Op::Write { fd, buf, offset } => {
                assert!(!buf.is_empty(), "write of nothing");
                let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
                let entry = opcode::Write::new(Fd(fd), buf.as_ptr(), len)
                    .offset(offset)
                    .build();
                (entry, Lent::Source(buf))
            }
            Op::Close { fd } => (opcode::Close::new(Fd(fd)).build(), Lent::Nothing),
            Op::Shutdown { fd, how } => (opcode::Shutdown::new(Fd(fd), how).build(), Lent::Nothing),
            Op::Cancel { target } => (
                opcode::AsyncCancel::new(target.user_data()).build(),
                Lent::Nothing,
            ),
            Op::Timeout { spec } => {
                let entry = opcode::Timeout::new(&*spec as *const Timespec).build();
                (entry, Lent::Timespec(spec))
            }
        }
    }
}
