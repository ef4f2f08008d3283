//! The in-flight table: one slot per submitted operation, keyed by the entry's `user_data`.
//!
//! A slot holds the caller's tag and every piece of memory the kernel may still read or write
//! for that operation. It is removed only when the operation's final completion (the one
//! without `IORING_CQE_F_MORE`) is reaped, so memory lent to the kernel outlives whatever the
//! caller did meanwhile.

use io_uring::types::Timespec;
use slab::Slab;

/// Names one submitted operation from its push until its final completion is reaped.
///
/// Its index in the in-flight table is the entry's `user_data`. An `OpId` is reused after the
/// final completion, so holding one past that point names some later operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpId(pub(crate) u32);

impl OpId {
    /// The `user_data` the kernel carries for this operation.
    pub fn user_data(self) -> u64 {
        u64::from(self.0)
    }

    /// An id no ring issued, for driving a caller's state machine without a ring (unit
    /// tests, fuzzing). Never push a cancel of it to a real ring: it may name another
    /// operation there.
    pub fn detached(n: u32) -> OpId {
        OpId(n)
    }
}

/// Memory lent to the kernel by one in-flight operation.
#[derive(Debug)]
pub(crate) enum Lent {
    /// Nothing: the operation refers only to descriptors or other operations.
    Nothing,
    /// The operation selects buffers from this provided-buffer group.
    Group(u16),
    /// A buffer the kernel reads from (send).
    Source(Vec<u8>),
    /// A buffer whose spare capacity the kernel writes into (read).
    Sink(Vec<u8>),
    /// A buffer the kernel writes a value over, from its start (getsockopt).
    Value(Vec<u8>),
    /// A timespec the kernel reads when the timeout is armed.
    Timespec(Box<Timespec>),
    /// A socket address the kernel reads (connect).
    Addr(Box<crate::op::SockAddr>),
    /// A path and `open_how` the kernel reads (openat2).
    Open(Box<crate::op::OpenArgs>),
    /// A path the kernel reads and a buffer it fills (statx).
    Statx(Box<crate::op::StatxArgs>),
}

/// One in-flight operation: the caller's tag for it, and the memory it lent the kernel.
#[derive(Debug)]
pub(crate) struct Slot<T> {
    pub(crate) tag: T,
    pub(crate) lent: Lent,
}

/// The table of operations pushed but not yet finished. It never grows past the capacity it
/// was built with: a full table refuses new operations.
#[derive(Debug)]
pub(crate) struct InFlight<T> {
    slots: Slab<Slot<T>>,
    capacity: usize,
}

impl<T> InFlight<T> {
    pub(crate) fn with_capacity(capacity: usize) -> InFlight<T> {
        // The key must fit in the 32 bits of an `OpId`.
        assert!(capacity <= u32::MAX as usize);
        InFlight {
            slots: Slab::with_capacity(capacity),
            capacity,
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.slots.len() >= self.capacity
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Stores `slot`; the caller checked `is_full` first.
    pub(crate) fn insert(&mut self, slot: Slot<T>) -> OpId {
        assert!(!self.is_full(), "in-flight table overfilled");
        let key = self.slots.insert(slot);
        OpId(key as u32)
    }

    /// The slot of an operation still in flight.
    ///
    /// # Panics
    /// If `id` names no operation in flight: a completion the table did not issue is a bug.
    pub(crate) fn get(&self, id: OpId) -> &Slot<T> {
        match self.slots.get(id.0 as usize) {
            Some(slot) => slot,
            None => panic!("completion for unknown operation {id:?}"),
        }
    }

    /// Removes the slot of an operation that has finished.
    ///
    /// # Panics
    /// If `id` names no operation in flight.
    pub(crate) fn remove(&mut self, id: OpId) -> Slot<T> {
        match self.slots.try_remove(id.0 as usize) {
            Some(slot) => slot,
            None => panic!("final completion for unknown operation {id:?}"),
        }
    }

    /// Leaks every slot's memory. Used when the ring goes away with operations still in
    /// flight: the kernel may still touch that memory, so freeing it would be unsound.
    pub(crate) fn leak(self) {
        std::mem::forget(self.slots);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_capacity_and_reuses_keys() {
        let mut table = InFlight::with_capacity(2);
        let a = table.insert(Slot {
            tag: 1,
            lent: Lent::Nothing,
        });
        let b = table.insert(Slot {
            tag: 2,
            lent: Lent::Nothing,
        });
        assert!(table.is_full());
        assert_eq!(table.get(b).tag, 2);
        assert_eq!(table.remove(a).tag, 1);
        assert!(!table.is_full());
        let c = table.insert(Slot {
            tag: 3,
            lent: Lent::Nothing,
        });
        assert_eq!(c, a, "a freed key is reused");
        assert_eq!(table.len(), 2);
    }

    #[test]
    #[should_panic(expected = "unknown operation")]
    fn unknown_completion_is_a_bug() {
        let mut table = InFlight::<u64>::with_capacity(1);
        table.remove(OpId(0));
    }
}
