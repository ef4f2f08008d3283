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
        /// More follows at once (`MSG_MORE`): the kernel holds a partial segment back for
        /// it, so a response's head and the body sent next share segments.
        more: bool,
    },
    /// Move `len` bytes from `fd_in` (at `off_in`, or `-1` for a pipe) into `fd_out`
    /// (`splice(2)`; one end must be a pipe): the kernel moves page references, no byte is
    /// copied through user space. The completion's result is the bytes moved (fewer when
    /// the pipe had less room, or the file ended: `0`). The kernel always runs a splice on
    /// an io-wq thread, where a blocking socket blocks that thread until all is sent.
    Splice {
        /// The source: a file or a pipe's read end (a descriptor of the process).
        fd_in: RawFd,
        /// Where in the source file, or `-1` for a pipe.
        off_in: i64,
        /// The destination: a pipe's write end, or a connected socket.
        fd_out: Desc,
        /// The most bytes to move.
        len: u32,
        /// `SPLICE_F_*` flags.
        flags: u32,
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
    /// Read a socket option (`IORING_OP_URING_CMD`, `SOCKET_URING_OP_GETSOCKOPT`, Linux
    /// 6.7), the way to ask it of a direct descriptor. The kernel writes the value over the
    /// start of `value`, whose length is the room given; the completion's result is the
    /// option's length, and the `value` handed back is cut to it. Only level `SOL_SOCKET`
    /// is answered (others: `-EOPNOTSUPP`); kernels without socket commands fail with
    /// `-EOPNOTSUPP` or `-EINVAL`.
    ///
    /// `SO_PEERNAME` gives the peer's `sockaddr`, but only into room at most the address's
    /// own length (more: `-EINVAL`; less: a cut address): give the size of the socket
    /// family's address, 16 bytes for `AF_INET`, 28 for `AF_INET6`.
    GetSockOpt {
        /// The socket.
        fd: Desc,
        /// `SOL_SOCKET`, the only level the kernel answers through the ring.
        level: i32,
        /// The option.
        name: i32,
        /// The room for the value, overwritten by the kernel; owned by the ring until the
        /// completion.
        value: Vec<u8>,
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
    /// Connect a socket to an address; the completion's result is 0 or a negated `errno`.
    Connect {
        /// The socket (a descriptor of the process).
        fd: RawFd,
        /// The address, owned by the ring until the completion.
        addr: Box<SockAddr>,
    },
    /// Read into the spare capacity of `buf` at `offset` of a file (as [`Op::Read`], which
    /// reads at the file position).
    ReadAt {
        /// A file.
        fd: RawFd,
        /// The buffer, owned by the ring until the completion.
        buf: Vec<u8>,
        /// Where in the file.
        offset: u64,
    },
    /// `openat2(dirfd, path, how)`: the completion's result is the new descriptor.
    OpenAt2 {
        /// The directory `path` is relative to (`libc::AT_FDCWD` for the working one).
        dirfd: RawFd,
        /// The path and how to open it, owned by the ring until the completion.
        open: Box<OpenArgs>,
    },
    /// `statx(dirfd, path, flags, mask)`: the completion hands the result back in
    /// [`Owned::Statx`](crate::Owned::Statx).
    Statx {
        /// The directory `path` is relative to, or the file itself with `AT_EMPTY_PATH`.
        dirfd: RawFd,
        /// The path, flags and mask, and the buffer the kernel fills, owned by the ring
        /// until the completion.
        stat: Box<StatxArgs>,
    },
}

/// Declares [`OpKind`] and its table from one list, so that [`OpKind::ALL`] cannot miss a
/// kind: each line is a variant of [`Op`], the kernel's name for what it submits, its
/// opcode, and the first Linux release that has it.
macro_rules! op_kinds {
    ($($variant:ident => $name:literal, $code:expr, $since:literal;)*) => {
        /// Which [`Op`] an operation is, without its arguments: the one list of the kernel
        /// operations this crate can submit, for telling a user what a kernel offers (see
        /// [`Features::supports`](crate::Features::supports)). [`Op::kind`] matches every
        /// variant, so a new [`Op`] does not compile until it has a kind here.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum OpKind {
            $(
                #[doc = concat!("[`Op::", stringify!($variant), "`]: `", $name, "`.")]
                $variant,
            )*
        }

        impl OpKind {
            /// Every kind, in [`Op`]'s order.
            pub const ALL: &'static [OpKind] = &[$(OpKind::$variant),*];

            /// The name of the [`Op`] variant, e.g. `AcceptMulti`.
            pub fn variant(self) -> &'static str {
                match self {
                    $(OpKind::$variant => stringify!($variant),)*
                }
            }

            /// The kernel's name for what the operation submits, e.g. `IORING_OP_SPLICE`;
            /// a socket command (`IORING_OP_URING_CMD`) is named by its `SOCKET_URING_OP_*`,
            /// and a mode of an opcode follows it in parentheses. Unique per kind.
            pub fn kernel_name(self) -> &'static str {
                match self {
                    $(OpKind::$variant => $name,)*
                }
            }

            /// The `IORING_OP_*` opcode the entry carries.
            pub fn opcode(self) -> u8 {
                match self {
                    $(OpKind::$variant => $code,)*
                }
            }

            /// The first Linux release that has the operation, e.g. `5.19`.
            pub fn since(self) -> &'static str {
                match self {
                    $(OpKind::$variant => $since,)*
                }
            }
        }
    };
}

op_kinds! {
    AcceptMulti => "IORING_OP_ACCEPT (multishot)", opcode::AcceptMulti::CODE, "5.19";
    Accept => "IORING_OP_ACCEPT", opcode::Accept::CODE, "5.5";
    RecvMulti => "IORING_OP_RECV (multishot)", opcode::RecvMulti::CODE, "6.0";
    Recv => "IORING_OP_RECV", opcode::Recv::CODE, "5.6";
    Send => "IORING_OP_SEND", opcode::Send::CODE, "5.6";
    Splice => "IORING_OP_SPLICE", opcode::Splice::CODE, "5.7";
    Read => "IORING_OP_READ", opcode::Read::CODE, "5.6";
    Write => "IORING_OP_WRITE", opcode::Write::CODE, "5.6";
    Close => "IORING_OP_CLOSE", opcode::Close::CODE, "5.6";
    Shutdown => "IORING_OP_SHUTDOWN", opcode::Shutdown::CODE, "5.11";
    SetSockOpt => "SOCKET_URING_OP_SETSOCKOPT", opcode::SetSockOpt::CODE, "6.7";
    SocketOutQueue => "SOCKET_URING_OP_SIOCOUTQ", opcode::UringCmd16::CODE, "6.7";
    GetSockOpt => "SOCKET_URING_OP_GETSOCKOPT", opcode::GetSockOpt::CODE, "6.7";
    Cancel => "IORING_OP_ASYNC_CANCEL", opcode::AsyncCancel::CODE, "5.5";
    Timeout => "IORING_OP_TIMEOUT", opcode::Timeout::CODE, "5.4";
    Connect => "IORING_OP_CONNECT", opcode::Connect::CODE, "5.5";
    ReadAt => "IORING_OP_READ (at an offset)", opcode::Read::CODE, "5.6";
    OpenAt2 => "IORING_OP_OPENAT2", opcode::OpenAt2::CODE, "5.6";
    Statx => "IORING_OP_STATX", opcode::Statx::CODE, "5.6";
}

/// A socket address as the kernel reads it.
#[derive(Clone, Copy)]
pub struct SockAddr {
    /// The address, of any family.
    pub storage: libc::sockaddr_storage,
    /// Its length.
    pub len: libc::socklen_t,
}

impl std::fmt::Debug for SockAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SockAddr(family {}, {} bytes)",
            self.storage.ss_family, self.len
        )
    }
}

impl SockAddr {
    /// The kernel's form of `addr`.
    pub fn from_std(addr: std::net::SocketAddr) -> SockAddr {
        // SAFETY: `sockaddr_storage` is plain data for which all zeroes is valid.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            std::net::SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: `sockaddr_storage` is larger than and aligned for `sockaddr_in`.
                unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
                std::mem::size_of::<libc::sockaddr_in>()
            }
            std::net::SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: `sockaddr_storage` is larger than and aligned for `sockaddr_in6`.
                unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        SockAddr {
            storage,
            len: len as libc::socklen_t,
        }
    }
}

/// What [`Op::OpenAt2`] lends the kernel: the path and the `open_how`.
#[derive(Debug)]
pub struct OpenArgs {
    /// The path.
    pub path: std::ffi::CString,
    /// `O_*` flags, the mode for a new file, `RESOLVE_*` flags.
    pub how: io_uring::types::OpenHow,
}

/// What [`Op::Statx`] lends the kernel: the path, flags and mask, and the result buffer.
pub struct StatxArgs {
    /// The path (empty with `AT_EMPTY_PATH`).
    pub path: std::ffi::CString,
    /// `AT_*` flags.
    pub flags: i32,
    /// `STATX_*` fields asked for.
    pub mask: u32,
    /// Filled by the kernel.
    pub buf: libc::statx,
}

impl std::fmt::Debug for StatxArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatxArgs")
            .field("path", &self.path)
            .field("flags", &self.flags)
            .field("mask", &self.mask)
            .finish_non_exhaustive()
    }
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

    /// Which operation this is. The match names every variant, so that a new one must be
    /// given an [`OpKind`] (and with it a row in `ringmaster probe`).
    pub fn kind(&self) -> OpKind {
        match self {
            Op::AcceptMulti { .. } => OpKind::AcceptMulti,
            Op::Accept { .. } => OpKind::Accept,
            Op::RecvMulti { .. } => OpKind::RecvMulti,
            Op::Recv { .. } => OpKind::Recv,
            Op::Send { .. } => OpKind::Send,
            Op::Splice { .. } => OpKind::Splice,
            Op::Read { .. } => OpKind::Read,
            Op::Write { .. } => OpKind::Write,
            Op::Close { .. } => OpKind::Close,
            Op::Shutdown { .. } => OpKind::Shutdown,
            Op::SetSockOpt { .. } => OpKind::SetSockOpt,
            Op::SocketOutQueue { .. } => OpKind::SocketOutQueue,
            Op::GetSockOpt { .. } => OpKind::GetSockOpt,
            Op::Cancel { .. } => OpKind::Cancel,
            Op::Timeout { .. } => OpKind::Timeout,
            Op::Connect { .. } => OpKind::Connect,
            Op::ReadAt { .. } => OpKind::ReadAt,
            Op::OpenAt2 { .. } => OpKind::OpenAt2,
            Op::Statx { .. } => OpKind::Statx,
        }
    }

    /// Builds the submission entry and the memory it lends. The entry points into that
    /// memory: the caller keeps it alive, in the in-flight table, until the final completion.
    #[inline]
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
            Op::Send {
                fd,
                buf,
                offset,
                more,
            } => {
                assert!(offset < buf.len(), "send of nothing");
                let rest = &buf[offset..];
                let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
                let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
                let entry = on_desc!(fd, |fd| opcode::Send::new(fd, rest.as_ptr(), len)
                    .flags(flags)
                    .build());
                // Moving the Vec moves its header, not its heap block: the pointer stays valid.
                (entry, Lent::Source(buf))
            }
            Op::Splice {
                fd_in,
                off_in,
                fd_out,
                len,
                flags,
            } => (
                on_desc!(fd_out, |out| opcode::Splice::new(
                    Fd(fd_in),
                    off_in,
                    out,
                    -1,
                    len
                )
                .flags(flags)
                .build()),
                Lent::Nothing,
            ),
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
            Op::GetSockOpt {
                fd,
                level,
                name,
                mut value,
            } => {
                let len = u32::try_from(value.len()).expect("a socket option's size fits u32");
                let entry = on_desc!(fd, |fd| opcode::GetSockOpt::new(
                    fd,
                    level as u32,
                    name as u32,
                    value.as_mut_ptr().cast(),
                    len
                )
                .build());
                (entry, Lent::Value(value))
            }
            Op::Cancel { target } => (
                opcode::AsyncCancel::new(target.user_data()).build(),
                Lent::Nothing,
            ),
            Op::Timeout { spec } => {
                let entry = opcode::Timeout::new(&*spec as *const Timespec).build();
                (entry, Lent::Timespec(spec))
            }
            Op::Connect { fd, addr } => {
                let entry = opcode::Connect::new(
                    Fd(fd),
                    (&raw const addr.storage).cast::<libc::sockaddr>(),
                    addr.len,
                )
                .build();
                // Moving the box moves its pointer, not the address it points to.
                (entry, Lent::Addr(addr))
            }
            Op::ReadAt {
                fd,
                mut buf,
                offset,
            } => {
                let spare = buf.spare_capacity_mut();
                assert!(!spare.is_empty(), "read into a full buffer");
                let len = u32::try_from(spare.len()).unwrap_or(u32::MAX);
                let entry = opcode::Read::new(Fd(fd), spare.as_mut_ptr().cast(), len)
                    .offset(offset)
                    .build();
                (entry, Lent::Sink(buf))
            }
            Op::OpenAt2 { dirfd, open } => {
                let entry =
                    opcode::OpenAt2::new(Fd(dirfd), open.path.as_ptr(), &raw const open.how)
                        .build();
                (entry, Lent::Open(open))
            }
            Op::Statx { dirfd, mut stat } => {
                let buf = (&raw mut stat.buf).cast::<io_uring::types::statx>();
                let entry = opcode::Statx::new(Fd(dirfd), stat.path.as_ptr(), buf)
                    .flags(stat.flags)
                    .mask(stat.mask)
                    .build();
                (entry, Lent::Statx(stat))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One operation of every kind, with harmless arguments (never submitted).
    fn one_of_each() -> Vec<Op> {
        let fd = Desc::Plain(0);
        let open = |path: &str| std::ffi::CString::new(path).unwrap();
        vec![
            Op::AcceptMulti {
                fd: 0,
                direct: false,
            },
            Op::Accept {
                fd: 0,
                direct: true,
            },
            Op::RecvMulti { fd, group: 0 },
            Op::Recv {
                fd,
                group: 0,
                len: 1,
            },
            Op::Send {
                fd,
                buf: vec![1],
                offset: 0,
                more: false,
            },
            Op::Splice {
                fd_in: 0,
                off_in: -1,
                fd_out: fd,
                len: 1,
                flags: 0,
            },
            Op::Read {
                fd: 0,
                buf: Vec::with_capacity(1),
            },
            Op::Write {
                fd: 0,
                buf: vec![1],
                offset: 0,
            },
            Op::Close { fd },
            Op::Shutdown {
                fd,
                how: libc::SHUT_WR,
            },
            Op::SetSockOpt {
                fd,
                level: 0,
                name: 0,
                value: vec![0; 4],
            },
            Op::SocketOutQueue { fd },
            Op::GetSockOpt {
                fd,
                level: 0,
                name: 0,
                value: vec![0; 4],
            },
            Op::Cancel { target: OpId(0) },
            Op::timeout(Duration::from_millis(1)),
            Op::Connect {
                fd: 0,
                addr: Box::new(SockAddr::from_std("127.0.0.1:1".parse().unwrap())),
            },
            Op::ReadAt {
                fd: 0,
                buf: Vec::with_capacity(1),
                offset: 0,
            },
            Op::OpenAt2 {
                dirfd: libc::AT_FDCWD,
                open: Box::new(OpenArgs {
                    path: open("x"),
                    how: io_uring::types::OpenHow::new(),
                }),
            },
            Op::Statx {
                dirfd: libc::AT_FDCWD,
                stat: Box::new(StatxArgs {
                    path: open("x"),
                    flags: 0,
                    mask: 0,
                    // SAFETY: `statx` is plain data for which all zeroes is valid.
                    buf: unsafe { std::mem::zeroed() },
                }),
            },
        ]
    }

    #[test]
    fn every_kind_is_one_op_and_carries_the_opcode_its_entry_does() {
        let ops = one_of_each();
        let kinds: Vec<OpKind> = ops.iter().map(Op::kind).collect();
        assert_eq!(
            kinds,
            OpKind::ALL,
            "one_of_each follows Op's order, one per kind"
        );
        for op in ops {
            let kind = op.kind();
            assert_eq!(
                kind.variant(),
                format!("{op:?}").split([' ', '{', '(']).next().unwrap()
            );
            let (entry, _lent) = op.into_entry();
            assert_eq!(entry.get_opcode(), u32::from(kind.opcode()), "{kind:?}");
        }
    }

    #[test]
    fn kernel_names_are_unique() {
        let mut names: Vec<&str> = OpKind::ALL.iter().map(|k| k.kernel_name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), OpKind::ALL.len());
    }
}
