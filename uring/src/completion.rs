//! One reaped completion, with the memory its operation lent the kernel handed back.

use crate::inflight::{Lent, OpId};
use io_uring::cqueue;
use io_uring::types::Timespec;

/// Memory handed back with an operation's final completion, for the caller to reuse.
#[derive(Debug, Default)]
pub enum Owned {
    /// The operation lent no memory, or this completion is not its last.
    #[default]
    Nothing,
    /// The buffer of a send (unchanged), of a read (its length grown by the bytes read), or
    /// of a socket option read (cut to the option's length).
    Buf(Vec<u8>),
    /// The timespec of a timeout.
    Timespec(Box<Timespec>),
    /// What a statx filled in (valid when the result is 0).
    Statx(Box<crate::op::StatxArgs>),
}

/// One completion queue entry, decoded, with the caller's tag `T` of its operation.
#[derive(Debug)]
pub struct Completion<T = u64> {
    /// The operation this completion belongs to.
    pub id: OpId,
    /// The caller's tag given at push.
    pub tag: T,
    /// The kernel's result: a count or descriptor when `>= 0`, a negated `errno` otherwise.
    pub result: i32,
    /// The CQE flags (`IORING_CQE_F_*`).
    pub flags: u32,
    /// Memory handed back; only a final completion carries any.
    pub owned: Owned,
}

impl<T> Completion<T> {
    /// Whether more completions will follow for this operation (`IORING_CQE_F_MORE`). When
    /// false, the operation is over and its [`OpId`] is free.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The provided buffer the kernel filled, if the operation selected one.
    pub fn buffer_id(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }

    /// Whether the socket had more data queued after this receive
    /// (`IORING_CQE_F_SOCK_NONEMPTY`).
    pub fn sock_nonempty(&self) -> bool {
        cqueue::sock_nonempty(self.flags)
    }

    /// The result as an `io::Result`: `Ok(n)` for `n >= 0`, the `errno` otherwise.
    pub fn io_result(&self) -> std::io::Result<u32> {
        if self.result >= 0 {
            Ok(self.result as u32)
        } else {
            Err(std::io::Error::from_raw_os_error(-self.result))
        }
    }

    /// The `errno` of a failed operation, `None` on success.
    pub fn errno(&self) -> Option<i32> {
        (self.result < 0).then_some(-self.result)
    }
}

impl Lent {
    /// Turns the memory of a finished operation into what the caller gets back.
    pub(crate) fn hand_back(self, result: i32) -> Owned {
        match self {
            Lent::Nothing | Lent::Group(_) => Owned::Nothing,
            Lent::Source(buf) => Owned::Buf(buf),
            Lent::Sink(mut buf) => {
                if result > 0 {
                    let grown = buf.len() + result as usize;
                    assert!(
                        grown <= buf.capacity(),
                        "kernel read past the lent capacity"
                    );
                    // SAFETY: the read was given `buf`'s spare capacity and the kernel reports
                    // that it wrote `result` bytes there, so `..grown` is initialised.
                    unsafe { buf.set_len(grown) };
                }
                Owned::Buf(buf)
            }
            // Initialised memory throughout: cutting it to the value's length needs no trust
            // in the kernel's count.
            Lent::Value(mut value) => {
                value.truncate(usize::try_from(result).unwrap_or(value.len()));
                Owned::Buf(value)
            }
            Lent::Timespec(spec) => Owned::Timespec(spec),
            // Read by the kernel only; freed now that it is done with them.
            Lent::Addr(addr) => {
                drop(addr);
                Owned::Nothing
            }
            Lent::Open(open) => {
                drop(open);
                Owned::Nothing
            }
            Lent::Statx(stat) => Owned::Statx(stat),
        }
    }
}
