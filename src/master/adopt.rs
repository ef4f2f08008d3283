//! Socket adoption in `SO_REUSEPORT` mode: owns the table of which worker accepts on each
//! slot's socket while that slot has no ready worker of its own. The kernel keeps sending a
//! share of new connections to every socket of the group, so a socket nobody accepts on
//! would leave its share waiting; a ready worker of another slot takes it over until the
//! slot's own worker is ready again. A socket whose slot a scale down removed is adopted for
//! good (until a scale up brings the slot back), by the worker adopting the fewest, so that
//! a shrink from 16 to 8 workers leaves each with two sockets rather than one with nine.

use super::supervisor::{Life, Supervisor};
use nix::unistd::Pid;

/// What a worker is told about another slot's socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tell {
    /// Accept on `slot`'s socket too.
    Adopt { pid: Pid, slot: usize },
    /// Stop accepting on `slot`'s socket: its own worker is ready.
    Release { pid: Pid, slot: usize },
}

/// For each slot, the worker accepting on its socket besides its own (`None`: nobody).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Adopters(pub(super) Vec<Option<Pid>>);

impl Adopters {
    pub(super) fn new(slots: usize) -> Adopters {
        Adopters(vec![None; slots])
    }

    /// Given each socket's ready worker (`None`: it has none), brings the table up to date
    /// and returns what to tell whom. A socket whose own worker is ready releases its
    /// adopter. A socket without one keeps an adopter that is still ready, else the ready
    /// worker adopting the fewest sockets adopts it (the first after it, wrapping, among
    /// equals); with no ready worker anywhere, nobody does. An adopter that is no longer
    /// ready is not told anything: it exited or drains.
    pub(super) fn update(&mut self, ready: &[Option<Pid>]) -> Vec<Tell> {
        let n = ready.len();
        self.0.resize(n, None);
        let mut tell = Vec::new();
        for slot in 0..n {
            let adopter = self.0[slot];
            if ready[slot].is_some() {
                if let Some(pid) = self.0[slot].take() {
                    tell.push(Tell::Release { pid, slot });
                }
                continue;
            }
            if adopter.is_some_and(|pid| ready.contains(&Some(pid))) {
                continue;
            }
            let adopting = |pid: Pid| self.0.iter().filter(|a| **a == Some(pid)).count();
            let taker = (1..n)
                .filter_map(|d| ready[(slot + d) % n])
                .min_by_key(|&pid| adopting(pid));
            self.0[slot] = taker;
            tell.extend(taker.map(|pid| Tell::Adopt { pid, slot }));
        }
        tell
    }
}

impl Supervisor {
    /// Updates the adoptions when each slot has its own socket (`per_slot`) and `listening`
    /// of them listen (one per slot there ever was: slot *i* accepts on socket
    /// `i % listening`); shutting down, every worker drains and stops accepting, so there is
    /// nothing to cover.
    pub(super) fn update_adoptions(&mut self, per_slot: bool, listening: usize) -> Vec<Tell> {
        if !per_slot || self.life != Life::Running || listening == 0 {
            return Vec::new();
        }
        let mut ready: Vec<Option<Pid>> = vec![None; listening];
        for (i, s) in self.slots.iter().enumerate() {
            let own = &mut ready[i % listening];
            if own.is_none() {
                *own = s.ready_child().map(|c| c.pid);
            }
        }
        self.adopters.update(&ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(n: i32) -> Option<Pid> {
        Some(Pid::from_raw(n))
    }

    #[test]
    fn a_slot_without_a_ready_worker_is_adopted_by_the_next_ready_one_then_released() {
        let (a, b, c) = (pid(10), pid(11), pid(12));
        let mut table = Adopters::new(3);
        // Everyone ready: nothing to do.
        assert_eq!(table.update(&[a, b, c]), []);
        // Slot 1's worker is gone: slot 2's takes its socket.
        let tell = table.update(&[a, None, c]);
        assert_eq!(
            tell,
            [Tell::Adopt {
                pid: c.unwrap(),
                slot: 1
            }]
        );
        assert_eq!(table.0, [None, c, None]);
        // Nothing changes while the adopter stays ready.
        assert_eq!(table.update(&[a, None, c]), []);
        // The adopter goes too: slot 0's worker (the next ready one after 1, wrapping)
        // takes both.
        let tell = table.update(&[a, None, None]);
        assert_eq!(
            tell,
            [
                Tell::Adopt {
                    pid: a.unwrap(),
                    slot: 1
                },
                Tell::Adopt {
                    pid: a.unwrap(),
                    slot: 2
                }
            ]
        );
        // Slot 1's new worker is ready: its adopter is told to release it.
        let d = pid(13);
        let tell = table.update(&[a, d, None]);
        assert_eq!(
            tell,
            [Tell::Release {
                pid: a.unwrap(),
                slot: 1
            }]
        );
        assert_eq!(table.0, [None, None, a]);
    }

    #[test]
    fn the_sockets_of_removed_slots_go_to_the_workers_adopting_fewest() {
        use super::super::supervisor::tests::{pid as p, supervisor};
        let t0 = std::time::Instant::now();
        // Four slots scaled down to two: sockets 2 and 3 listen on with no slot of their
        // own, one for each remaining worker.
        let mut sup = supervisor(2, true, t0);
        let tell = sup.update_adoptions(true, 4);
        assert_eq!(
            tell,
            [
                Tell::Adopt {
                    pid: p(100),
                    slot: 2
                },
                Tell::Adopt {
                    pid: p(101),
                    slot: 3
                }
            ]
        );
        // Eight sockets on three workers: two or three each, never one taking them all.
        let mut sup = supervisor(3, true, t0);
        sup.update_adoptions(true, 8);
        let mut per_worker: Vec<usize> = [100, 101, 102]
            .iter()
            .map(|&n| sup.adopters.0.iter().filter(|a| **a == Some(p(n))).count())
            .collect();
        per_worker.sort();
        assert_eq!(per_worker, [1, 2, 2]);
        // Slots past the sockets share one: slot 3 of three sockets owns socket 0 with
        // slot 0, which stays unadopted while either is ready.
        let mut sup = supervisor(4, true, t0);
        let (c, _) = sup.remove(p(100)).unwrap();
        sup.settle_exit(0, &c, crate::cluster::Exit::Signal(9), t0);
        assert_eq!(sup.update_adoptions(true, 3), []);
    }

    #[test]
    fn with_no_ready_worker_nobody_adopts() {
        let mut table = Adopters::new(2);
        assert_eq!(table.update(&[None, None]), []);
        assert_eq!(table.0, [None, None]);
        // A single slot has nobody else to adopt it.
        let mut one = Adopters::new(1);
        assert_eq!(one.update(&[None]), []);
    }

    #[test]
    fn the_supervisor_covers_slots_without_a_ready_worker_only_while_running() {
        use super::super::child::tests::child;
        use super::super::supervisor::tests::{pid, supervisor};
        use crate::cluster::Exit;
        let t0 = std::time::Instant::now();
        let mut sup = supervisor(3, true, t0);
        assert_eq!(sup.update_adoptions(true, 3), []);
        // Slot 1's worker dies: while it respawns, slot 2's worker accepts on its socket.
        let (c, _) = sup.remove(pid(101)).unwrap();
        sup.settle_exit(1, &c, Exit::Signal(9), t0);
        assert_eq!(sup.slots[1].state_name(), "respawning");
        assert_eq!(
            sup.update_adoptions(false, 3),
            [],
            "one shared socket: nothing to adopt"
        );
        let adopt = Tell::Adopt {
            pid: pid(102),
            slot: 1,
        };
        assert_eq!(sup.update_adoptions(true, 3), [adopt]);
        // Its new worker starts: still adopted; ready: released.
        sup.respawned(1, Some(child(201, 1, t0)), t0);
        assert_eq!(sup.update_adoptions(true, 3), []);
        sup.ready(pid(201), t0);
        let release = Tell::Release {
            pid: pid(102),
            slot: 1,
        };
        assert_eq!(sup.update_adoptions(true, 3), [release]);
        // Shutting down, every worker drains: a slot whose worker exited is not adopted.
        sup.shutdown(t0);
        let (c, _) = sup.remove(pid(100)).unwrap();
        sup.settle_exit(0, &c, Exit::Code(0), t0);
        assert_eq!(sup.update_adoptions(true, 3), []);
        assert_eq!(sup.adopters.0, [None, None, None]);
    }
}
