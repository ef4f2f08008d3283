//! Ring operations owned by futures: a bounded table of slots, each holding what one
//! operation's future waits for. A future holds a handle (slot and generation), never the
//! memory the kernel may touch: that stays in the ring's in-flight table until the final
//! completion, whatever the future does.
//!
//! Life of a slot: `Queued` (the worker pushes it at the end of the turn) → `Waiting` (in
//! the ring) → `Done` (the completion arrived; the future takes it). A handle dropped
//! before `Done` detaches the slot: a queued operation is never pushed, a waiting one is
//! cancelled and its slot freed at its final completion, so an operation never outlives
//! its memory and a slot is never reused while the kernel may still answer on it.

use ringmaster_uring::{Op, OpId, Owned};
use slab::Slab;
use std::collections::VecDeque;
use std::task::Waker;

/// What a finished operation gave.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The kernel's result: a count or descriptor, or a negated `errno`.
    pub(crate) result: i32,
    /// Memory handed back (a read's or send's buffer, a timeout's timespec).
    pub(crate) owned: Owned,
}

#[derive(Debug)]
enum State {
    /// To be pushed at the end of the turn; the waker of the future that waits, if polled.
    Queued(Option<Op>, Option<Waker>),
    /// In the ring as `id`.
    Waiting(OpId, Option<Waker>),
    /// Finished; for the future to take.
    Done(Outcome),
    /// Its future is gone: cancelled (once in the ring), freed at its final completion.
    Detached(Option<OpId>),
}

#[derive(Debug)]
struct Entry {
    generation: u32,
    state: State,
}

/// Names one operation's slot; stale once the slot was freed and reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub(crate) slot: u32,
    generation: u32,
}

/// The table of futures' ring operations, bounded.
#[derive(Debug)]
pub(crate) struct OpTable {
    entries: Slab<Entry>,
    capacity: usize,
    generation: u32,
    /// Slots whose operation is to be pushed this turn, in order.
    queued: VecDeque<u32>,
    /// Operations to cancel this turn.
    cancels: Vec<OpId>,
}

impl OpTable {
    pub(crate) fn new(capacity: usize) -> OpTable {
        OpTable {
            entries: Slab::with_capacity(capacity),
            capacity,
            generation: 0,
            queued: VecDeque::with_capacity(capacity),
            cancels: Vec::with_capacity(capacity),
        }
    }

    /// Queues `op` for the end of the turn; `Err(op)` when the table is full (the caller
    /// waits for a slot to free).
    pub(crate) fn queue(&mut self, op: Op) -> Result<Ticket, Op> {
        if self.entries.len() >= self.capacity {
            return Err(op);
        }
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let slot = self.entries.insert(Entry {
            generation,
            state: State::Queued(Some(op), None),
        }) as u32;
        self.queued.push_back(slot);
        Ok(Ticket { slot, generation })
    }

    /// Operations in use (queued, in the ring, finished and not yet taken, or detached).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether a new operation would find a slot.
    pub(crate) fn has_room(&self) -> bool {
        self.entries.len() < self.capacity
    }

    /// The next queued operation to push now, with its slot; the caller reports the push
    /// with [`OpTable::pushed`].
    pub(crate) fn pop_queued(&mut self) -> Option<(u32, Op)> {
        while let Some(slot) = self.queued.pop_front() {
            let Some(entry) = self.entries.get_mut(slot as usize) else {
                continue;
            };
            match &mut entry.state {
                State::Queued(op, _) => {
                    if let Some(op) = op.take() {
                        return Some((slot, op));
                    }
                }
                // Dropped before it was pushed: it never reaches the kernel.
                State::Detached(None) => {
                    self.entries.remove(slot as usize);
                }
                _ => {}
            }
        }
        None
    }

    /// The next cancel to push now.
    pub(crate) fn pop_cancel(&mut self) -> Option<OpId> {
        self.cancels.pop()
    }

    /// The operation of `slot` is in the ring as `id`.
    pub(crate) fn pushed(&mut self, slot: u32, id: OpId) {
        let entry = &mut self.entries[slot as usize];
        entry.state = match std::mem::replace(&mut entry.state, State::Detached(None)) {
            State::Queued(_, waker) => State::Waiting(id, waker),
            // Dropped between `pop_queued` and the push: cancel it now.
            State::Detached(None) => {
                self.cancels.push(id);
                State::Detached(Some(id))
            }
            other => unreachable!("pushed an operation in state {other:?}"),
        };
    }

    /// The operation of `slot` finished; wakes its future, or frees a detached slot.
    pub(crate) fn complete(&mut self, slot: u32, outcome: Outcome) {
        let entry = &mut self.entries[slot as usize];
        match std::mem::replace(&mut entry.state, State::Detached(None)) {
            State::Waiting(_, waker) => {
                entry.state = State::Done(outcome);
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
            State::Detached(_) => {
                // The memory it held is dropped here, the kernel done with it.
                self.entries.remove(slot as usize);
            }
            other => unreachable!("a completion for an operation in state {other:?}"),
        }
    }

    /// The outcome of `ticket`'s operation once finished (the slot is freed), else
    /// records `waker` to be woken when it is.
    pub(crate) fn poll(&mut self, ticket: Ticket, waker: &Waker) -> Option<Outcome> {
        let entry = self
            .entries
            .get_mut(ticket.slot as usize)
            .filter(|e| e.generation == ticket.generation)
            .expect("a ticket names its own live slot");
        match &mut entry.state {
            State::Queued(_, w) | State::Waiting(_, w) => {
                match w {
                    Some(w) if w.will_wake(waker) => {}
                    _ => *w = Some(waker.clone()),
                }
                None
            }
            State::Done(_) => match self.entries.remove(ticket.slot as usize).state {
                State::Done(outcome) => Some(outcome),
                _ => unreachable!("checked above"),
            },
            State::Detached(_) => unreachable!("a detached slot has no future"),
        }
    }

    /// The future of `ticket` is gone before taking its outcome.
    pub(crate) fn detach(&mut self, ticket: Ticket) {
        let Some(entry) = self
            .entries
            .get_mut(ticket.slot as usize)
            .filter(|e| e.generation == ticket.generation)
        else {
            return; // Taken already: the slot is free or another's.
        };
        match std::mem::replace(&mut entry.state, State::Detached(None)) {
            // Never pushed: `pop_queued` frees it.
            State::Queued(..) => {}
            State::Waiting(id, _) => {
                self.cancels.push(id);
                entry.state = State::Detached(Some(id));
            }
            State::Done(_) => {
                self.entries.remove(ticket.slot as usize);
            }
            State::Detached(id) => entry.state = State::Detached(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn nop() -> Op {
        Op::Cancel {
            target: OpId::detached(0),
        }
    }

    fn outcome(result: i32) -> Outcome {
        Outcome {
            result,
            owned: Owned::Nothing,
        }
    }

    #[test]
    fn an_operation_goes_queued_waiting_done_and_frees_its_slot() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut table = OpTable::new(2);
        let ticket = table.queue(nop()).unwrap();
        assert!(table.poll(ticket, &waker).is_none());
        let (slot, _) = table.pop_queued().unwrap();
        assert!(table.pop_queued().is_none());
        table.pushed(slot, OpId::detached(7));
        table.complete(ticket.slot, outcome(5));
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "woken once");
        assert_eq!(table.poll(ticket, &waker).unwrap().result, 5);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn a_full_table_refuses_and_a_dropped_future_never_reaches_the_kernel() {
        let mut table = OpTable::new(1);
        let ticket = table.queue(nop()).unwrap();
        assert!(table.queue(nop()).is_err(), "bounded");
        table.detach(ticket);
        assert!(table.pop_queued().is_none(), "never pushed");
        assert_eq!(table.len(), 0);
        assert!(table.pop_cancel().is_none());
    }

    #[test]
    fn a_future_dropped_in_flight_cancels_and_frees_at_the_final_completion() {
        let mut table = OpTable::new(1);
        let ticket = table.queue(nop()).unwrap();
        let (slot, _) = table.pop_queued().unwrap();
        table.pushed(slot, OpId::detached(9));
        table.detach(ticket);
        assert_eq!(table.pop_cancel(), Some(OpId::detached(9)));
        assert_eq!(table.len(), 1, "the kernel still answers on it");
        table.complete(slot, outcome(-libc::ECANCELED));
        assert_eq!(table.len(), 0);
        // A stale ticket changes nothing.
        table.detach(ticket);
        assert_eq!(table.len(), 0);
    }
}
