//! The typed entries: each [`Op`] builds one submission queue entry and names the memory it
//! lends the kernel, which the ring keeps in its in-flight table until the final completion.

use crate::inflight::{Lent, OpId};
use io_uring::types::{Fd, Fixed, Timespec};
use io_uring::{opcode, squeue};
use std::os::fd::RawFd;
use std::time::Duration;

/// A socket as an operation names it: a descriptor of the process, or a *direct* descriptor,
/// an index into the ring's registered file table (see [`Ring::register_direct_table`]). A
/// direct descriptor spares the kernel a file-table lookup and reference count per operation,
/// but exists only for this ring: no plain system call can use it.
///
/// [`Ring::register_direct_table`]: crate::Ring::register_direct_table
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desc {
    /// A descriptor of the process.
    Plain(RawFd),
    /// An index in the ring's registered file table.
    Direct(u32),
}

/// Builds an entry for either kind of [`Desc`]: `$build` is written once and instantiated
/// with `$fd` bound to `types::Fd` or `types::Fixed`, because the opcode builders are generic
/// over the crate's sealed `UseFixed` trait, which cannot be named here.
macro_rules! on_desc {
    ($desc:expr, |$fd:ident| $build:expr) => {
        match $desc {
            Desc::Plain(raw) => {
                let $fd = Fd(raw);
                $build
            }
            Desc::Direct(index) => {
                let $fd = Fixed(index);
                $build
            }
        }
    };
}

/// One operation to submit.
#[derive(Debug)]
pub enum Op {
    /// Multishot accept on a listening socket: one completion per accepted connection (its
    /// descriptor, `SOCK_CLOEXEC`), each with `IORING_CQE_F_MORE` while the operation stays armed.
    AcceptMulti {
        /// The listening socket.
        fd: RawFd,
        /// Install each connection as a direct descriptor in a free slot of the registered
        /// table (`IORING_FILE_INDEX_ALLOC`): the completion's result is then that index, and
        /// `-ENFILE` when the table is full.
        direct: bool,
    },
    /// Single-shot accept: exactly one connection, or an error.
    Accept {
        /// The listening socket.
        fd: RawFd,
        /// As for [`Op::AcceptMulti`].
        direct: bool,
    },
    /// Multishot receive into buffers picked from a provided-buffer group. Each completion
    /// carries a buffer id; `0` means end of stream; `-ENOBUFS` ends the operation when the
    /// group ran dry (give buffers back and arm it again: it is not end of stream).
    RecvMulti {
        /// The connected socket.
        fd: Desc,
        /// The provided-buffer group to pick from.
        group: u16,
    },
    /// Single-shot receive into one buffer picked from a provided-buffer group.
    Recv {
        /// The connected socket.
        fd: Desc,
        /// The provided-buffer group to pick from.
        group: u16,
        /// The most bytes to receive (at most the group's buffer length).
        len: u32,
    },
    /// Send `buf[offset..]` (with `MSG_NOSIGNAL`); the completion counts the bytes sent and
    /// hands `buf` back.
    Send {
        /// The connected socket.
        fd: Desc,
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
    /// Close a descriptor (a direct one leaves the registered table).
    Close {
        /// The descriptor.
        fd: Desc,
    },
    /// Shut down one or both directions of a socket (`libc::SHUT_*`).
    Shutdown {
        /// The socket.
        fd: Desc,
        /// `SHUT_RD`, `SHUT_WR` or `SHUT_RDWR`.
        how: i32,
    },
    /// Set a socket option (`IORING_OP_URING_CMD`, `SOCKET_URING_OP_SETSOCKOPT`, Linux 6.7),
    /// the way to reach a direct descriptor's socket; `-EOPNOTSUPP` or `-EINVAL` on older
    /// kernels.
    SetSockOpt {
        /// The socket.
        fd: Desc,
        /// `SOL_SOCKET`, `IPPROTO_TCP`, ...
        level: i32,
        /// The option.
        name: i32,
        /// Its value, owned by the ring until the completion.
        value: Vec<u8>,
    },
    /// Read how many bytes of a TCP socket's send queue the peer has not acknowledged yet
    /// (`IORING_OP_URING_CMD`, `SOCKET_URING_OP_SIOCOUTQ`: what `ioctl(SIOCOUTQ)` gives a
    /// plain descriptor), the way to ask it of a direct descriptor. The completion's result
    /// is that count; `-EOPNOTSUPP` or `-EINVAL` on kernels without socket commands.
    SocketOutQueue {
        /// The socket.
        fd: Desc,
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
            // A direct descriptor is no process descriptor: the kernel refuses SOCK_CLOEXEC
            // for it (EINVAL).
            Op::AcceptMulti { fd, direct } => (
                opcode::AcceptMulti::new(Fd(fd))
                    .flags(if direct { 0 } else { libc::SOCK_CLOEXEC })
                    .allocate_file_index(direct)
                    .build(),
                Lent::Nothing,
            ),
            Op::Accept { fd, direct } => {
                let accept =
                    opcode::Accept::new(Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                        .flags(if direct { 0 } else { libc::SOCK_CLOEXEC });
                let accept = if direct {
                    accept.file_index(Some(io_uring::types::DestinationSlot::auto_target()))
                } else {
                    accept
                };
                (accept.build(), Lent::Nothing)
            }
            Op::RecvMulti { fd, group } => (
                on_desc!(fd, |fd| opcode::RecvMulti::new(fd, group).build()),
                Lent::Group(group),
            ),
            Op::Recv { fd, group, len } => (
                on_desc!(fd, |fd| opcode::Recv::new(fd, std::ptr::null_mut(), len)
                    .buf_group(group)
                    .build())
                .flags(squeue::Flags::BUFFER_SELECT),
                Lent::Group(group),
            ),
            Op::Send { fd, buf, offset } => {
                assert!(offset < buf.len(), "send of nothing");
                let rest = &buf[offset..];
                let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
                let entry = on_desc!(fd, |fd| opcode::Send::new(fd, rest.as_ptr(), len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build());
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
            Op::Close { fd } => (
                on_desc!(fd, |fd| opcode::Close::new(fd).build()),
                Lent::Nothing,
            ),
            Op::Shutdown { fd, how } => (
                on_desc!(fd, |fd| opcode::Shutdown::new(fd, how).build()),
                Lent::Nothing,
            ),
            Op::SetSockOpt {
                fd,
                level,
                name,
                value,
            } => {
                let len = u32::try_from(value.len()).expect("a socket option's size fits u32");
                let entry = on_desc!(fd, |fd| opcode::SetSockOpt::new(
                    fd,
                    level as u32,
                    name as u32,
                    value.as_ptr().cast(),
                    len
                )
                .build());
                (entry, Lent::Source(value))
            }
            Op::SocketOutQueue { fd } => {
                // `enum io_uring_socket_op` of <linux/io_uring.h>: SIOCINQ is 0, SIOCOUTQ 1.
                // The io-uring crate has the value but does not export it.
                const SIOCOUTQ: u32 = 1;
                (
                    on_desc!(fd, |fd| opcode::UringCmd16::new(fd, SIOCOUTQ).build()),
                    Lent::Nothing,
                )
            }
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
