//! A rolling reload's progress: owns the [`Reload`] in progress (the next slot, the workers
//! replaced, the control clients waiting, a reload queued behind it) and decides its steps
//! ([`plan`]): which slots get a successor next under `--reload-parallel`, and when it is
//! complete. A slot's worker drains only once its successor is ready, so no request is
//! dropped.

use super::slot::{SlotState, Succession};
use super::supervisor::{Life, Supervisor};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// A rolling reload in progress.
#[derive(Debug)]
pub(super) struct Reload {
    /// The next slot to replace.
    pub(super) next: usize,
    /// Successors that got ready and took over.
    pub(super) replaced: u32,
    pub(super) started: Instant,
    /// Control connections to answer when it is over.
    pub(super) waiters: Vec<u64>,
    /// A reload requested meanwhile runs after this one (its waiters want workers forked
    /// after they asked); further requests are merged into it.
    pub(super) queued: Option<Vec<u64>>,
}

impl Reload {
    pub(super) fn new(waiters: Vec<u64>, now: Instant) -> Reload {
        Reload {
            next: 0,
            replaced: 0,
            started: now,
            waiters,
            queued: None,
        }
    }
}

/// A slot as a reload sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Seen {
    /// A successor starts there (a recycle's or this reload's).
    Replacing,
    /// A worker (starting or ready) fills it: it gets a successor.
    Filled,
    /// Respawning, errored or stopped: the next worker it gets is new anyway.
    Empty,
}

/// The reload's next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Plan {
    /// Slots to fork a successor for now, in order.
    pub(super) fork: Vec<usize>,
    /// The next slot to consider once those are done.
    pub(super) next: usize,
    /// Every slot was handled and no successor is starting: the reload is over.
    pub(super) complete: bool,
}

/// Forks successors for up to `parallel` slots at a time, counting successors already
/// starting (a recycle's too); a slot being recycled is taken up once that is over. If a
/// fork of the plan fails, the reload fails there.
pub(super) fn plan(next: usize, parallel: usize, slots: &[Seen]) -> Plan {
    let mut in_progress = slots.iter().filter(|&&s| s == Seen::Replacing).count();
    let (mut next, mut fork) = (next, Vec::new());
    while in_progress < parallel && next < slots.len() {
        match slots[next] {
            Seen::Replacing => break,
            Seen::Empty => next += 1,
            Seen::Filled => {
                fork.push(next);
                next += 1;
                in_progress += 1;
            }
        }
    }
    Plan {
        complete: in_progress == 0 && next >= slots.len(),
        fork,
        next,
    }
}

/// What a reload request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Requested {
    /// Shutting down: refused.
    Refused,
    /// A reload runs: this one runs after it.
    Queued,
    /// It runs now.
    Started,
}

/// A reload that is over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Ended {
    /// Control clients to answer.
    pub(super) waiters: Vec<u64>,
    pub(super) replaced: u32,
    pub(super) took: Duration,
    /// The reload queued behind it started.
    pub(super) next_started: bool,
}

impl Supervisor {
    /// A reload was asked for at `now` (by SIGHUP when `waiter` is `None`, else by a control
    /// client, answered when it is over).
    pub(super) fn request_reload(&mut self, waiter: Option<u64>, now: Instant) -> Requested {
        if self.life != Life::Running {
            return Requested::Refused;
        }
        let waiters = waiter.into_iter();
        match &mut self.reload {
            Some(reload) => {
                reload.queued.get_or_insert_with(Vec::new).extend(waiters);
                Requested::Queued
            }
            None => {
                self.reload = Some(Reload::new(waiters.collect(), now));
                Requested::Started
            }
        }
    }

    /// The reload's next step ([`plan`]; `None` without a reload), its position advanced as
    /// if each fork of the step succeeds: one that fails fails the whole reload.
    pub(super) fn step_reload(&mut self) -> Option<Plan> {
        let seen: Vec<Seen> = self
            .slots
            .iter()
            .map(|s| match (&s.state, &s.succession) {
                (_, Succession::Starting { .. }) => Seen::Replacing,
                (SlotState::Running(_), _) => Seen::Filled,
                _ => Seen::Empty,
            })
            .collect();
        let reload = self.reload.as_mut()?;
        let plan = plan(reload.next, self.settings.reload_parallel, &seen);
        reload.next = plan.next;
        Some(plan)
    }

    /// Ends the reload in progress at `now`, and starts the one queued behind it.
    pub(super) fn end_reload(&mut self, now: Instant) -> Option<Ended> {
        let reload = self.reload.take()?;
        let next_started = reload.queued.is_some();
        self.reload = reload.queued.map(|waiters| Reload::new(waiters, now));
        Some(Ended {
            waiters: reload.waiters,
            replaced: reload.replaced,
            took: now.saturating_duration_since(reload.started),
            next_started,
        })
    }

    /// A successor of the reload failed at `now`: the reload ends (the one queued behind it
    /// starts), every successor still starting (a recycle's too) is killed, and the old
    /// workers keep serving. Returns the ended reload and the successors to kill.
    pub(super) fn fail_reload(&mut self, now: Instant) -> Option<(Ended, Vec<Pid>)> {
        self.reload.as_ref()?;
        let killed = (0..self.slots.len())
            .filter_map(|slot| self.kill_successor(slot, now))
            .collect();
        Some((self.end_reload(now)?, killed))
    }
}

#[cfg(test)]
mod tests {
    use super::super::child::tests::{child, ms};
    use super::super::child::Phase;
    use super::super::slot::Purpose;
    use super::super::supervisor::tests::{pid, supervisor};
    use super::Seen::{Empty, Filled, Replacing};
    use super::*;
    use crate::master::respawn::GaveUp;

    /// `(next, parallel, slots)` and the plan wanted: `(fork, next, complete)`.
    type Case = (
        usize,
        usize,
        &'static [Seen],
        (&'static [usize], usize, bool),
    );

    #[test]
    fn a_reload_steps_through_the_slots() {
        let cases: &[Case] = &[
            // One at a time: slot 0, then (its successor ready) slot 1, then done.
            (0, 1, &[Filled, Filled], (&[0], 1, false)),
            (1, 1, &[Replacing, Filled], (&[], 1, false)),
            (1, 1, &[Filled, Filled], (&[1], 2, false)),
            (2, 1, &[Filled, Replacing], (&[], 2, false)),
            (2, 1, &[Filled, Filled], (&[], 2, true)),
            // Two at a time.
            (0, 2, &[Filled, Filled, Filled], (&[0, 1], 2, false)),
            (2, 2, &[Filled, Replacing, Filled], (&[2], 3, false)),
            (3, 2, &[Filled, Filled, Filled], (&[], 3, true)),
            // Respawning or errored slots are skipped: their next worker is new anyway.
            (0, 1, &[Empty, Filled, Empty], (&[1], 2, false)),
            (2, 1, &[Empty, Filled, Empty], (&[], 3, true)),
            (0, 2, &[Empty, Empty], (&[], 2, true)),
            // A slot being recycled counts toward the parallel limit and is waited for.
            (0, 1, &[Filled, Replacing], (&[], 0, false)),
            (0, 2, &[Filled, Replacing], (&[0], 1, false)),
            (1, 2, &[Replacing, Replacing], (&[], 1, false)),
        ];
        for &(next, parallel, slots, (fork, then, complete)) in cases {
            let want = Plan {
                fork: fork.to_vec(),
                next: then,
                complete,
            };
            assert_eq!(
                plan(next, parallel, slots),
                want,
                "next {next}, parallel {parallel}, {slots:?}"
            );
        }
    }

    /// Runs the supervisor's reload steps the way the shell does, each successor forked
    /// with pid `1000 + slot` and getting ready before the next step; returns the slots in
    /// the order their successors were forked, step by step.
    fn run_reload(sup: &mut Supervisor, t0: Instant) -> Vec<Vec<usize>> {
        let mut steps = Vec::new();
        loop {
            let plan = sup.step_reload().expect("a reload runs");
            if plan.complete {
                return steps;
            }
            for &slot in &plan.fork {
                let c = child(1000 + slot as i32, slot as u32, t0);
                sup.slots[slot].succession = Succession::Starting {
                    child: c,
                    purpose: Purpose::Reload,
                };
            }
            for &slot in &plan.fork {
                sup.ready(pid(1000 + slot as i32), t0);
            }
            steps.push(plan.fork);
        }
    }

    #[test]
    fn a_reload_replaces_every_filled_slot_parallel_at_a_time_skipping_empty_ones() {
        let t0 = Instant::now();
        for (parallel, want) in [
            (1, vec![vec![0], vec![2], vec![3], vec![5]]),
            (2, vec![vec![0, 2], vec![3, 5]]),
            (6, vec![vec![0, 2, 3, 5]]),
        ] {
            let mut sup = supervisor(6, true, t0);
            sup.settings.reload_parallel = parallel;
            sup.slots[1].state = SlotState::Errored(GaveUp::Failures(5));
            sup.slots[3].state = SlotState::Running(child(103, 3, t0)); // still starting
            sup.slots[4].state = SlotState::Respawning { at: t0 };
            assert_eq!(sup.request_reload(Some(9), t0), Requested::Started);
            assert_eq!(run_reload(&mut sup, t0), want, "parallel {parallel}");
            let ended = sup.end_reload(t0 + ms(30)).unwrap();
            assert_eq!(
                (
                    ended.waiters,
                    ended.replaced,
                    ended.took,
                    ended.next_started
                ),
                (vec![9], 4, ms(30), false)
            );
            assert_eq!(sup.retiring.len(), 4, "the old workers drain");
            assert!(sup
                .retiring
                .iter()
                .all(|c| matches!(c.phase, Phase::Retiring { .. })));
        }
    }

    #[test]
    fn a_reload_whose_successor_fails_ends_keeps_the_old_workers_and_starts_the_queued_one() {
        let t0 = Instant::now();
        let mut sup = supervisor(3, true, t0);
        sup.settings.reload_parallel = 2;
        assert_eq!(sup.request_reload(Some(1), t0), Requested::Started);
        assert_eq!(sup.request_reload(None, t0), Requested::Queued);
        assert_eq!(sup.request_reload(Some(2), t0), Requested::Queued);
        let plan = sup.step_reload().unwrap();
        assert_eq!(plan.fork, [0, 1]);
        for slot in [0, 1] {
            sup.slots[slot].succession = Succession::Starting {
                child: child(1000 + slot as i32, slot as u32, t0),
                purpose: Purpose::Reload,
            };
        }
        // Slot 0's successor exits before it is ready: the reload fails, slot 1's
        // successor is killed, and every slot keeps its old worker.
        let (_, was) = sup.remove(pid(1000)).unwrap();
        assert_eq!(
            was,
            super::super::supervisor::Was::Successor(0, Purpose::Reload)
        );
        let (ended, killed) = sup.fail_reload(t0 + ms(5)).unwrap();
        assert_eq!(killed, [pid(1001)]);
        assert_eq!((ended.waiters, ended.replaced), (vec![1], 0));
        assert!(ended.next_started);
        let pids: Vec<i32> = sup
            .slots
            .iter()
            .map(|s| s.child().unwrap().pid.as_raw())
            .collect();
        assert_eq!(pids, [100, 101, 102]);
        assert!(sup.slots.iter().all(|s| s.successor().is_none()));
        // The queued reload starts from slot 0, with its waiters.
        let reload = sup.reload.as_ref().unwrap();
        assert_eq!((reload.next, &reload.waiters), (0, &vec![2]));
        assert_eq!(sup.step_reload().unwrap().fork, [0, 1]);
        // Nothing to fail without a reload.
        sup.reload = None;
        assert!(sup.fail_reload(t0).is_none());
    }

    #[test]
    fn a_reload_is_refused_while_shutting_down() {
        let t0 = Instant::now();
        let mut sup = supervisor(1, true, t0);
        sup.shutdown(t0);
        assert_eq!(sup.request_reload(Some(1), t0), Requested::Refused);
        assert!(sup.reload.is_none());
    }
}
