//! The master's one timetable: every deadline of every state, with what is due then. The
//! supervision loop sleeps in `poll(2)` until the earliest ([`Supervisor::next_deadline`])
//! and then acts on all that are due ([`Supervisor::due`]), both from [`Supervisor::timers`],
//! so which timer applies in which state (a respawn, a ready timeout, a heartbeat, an abort's
//! `SIGKILL`, a drain deadline, the watchdog) is written once. Owns no state of its own.

use super::child::Phase;
use super::slot::SlotState;
use super::supervisor::{Life, Supervisor};
use nix::unistd::Pid;
use std::time::Instant;

/// Something due at an instant, and so what the shell does then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Due {
    /// The slot's respawn delay is over: fork its worker.
    Respawn(usize),
    /// The slot's worker was not ready in time: `SIGKILL` (its exit is judged as a failure
    /// to start).
    NotReady(usize),
    /// The slot's successor was not ready in time: its reload or recycle fails.
    SuccessorNotReady(usize),
    /// The worker reported nothing for `--worker-timeout`: `SIGABRT`, for a core dump.
    Stuck(Pid),
    /// The retiring worker did not drain within the drain timeout: `SIGKILL`.
    DrainOverdue(Pid),
    /// The aborted worker is still there a second later: `SIGKILL`.
    Kill(Pid),
    /// The shutdown's drain deadline: kill what is left.
    DrainDeadline,
    /// Time to tell systemd `WATCHDOG=1`.
    Watchdog,
}

impl Supervisor {
    /// Every timer that runs, in the order they are acted on when several are due: the
    /// slots' (only while running: at shutdown no slot respawns, and a starting worker is
    /// told to drain like the others), the drain deadline, the watchdog, then each worker's
    /// own ([`super::child::Child::timer`]).
    pub(super) fn timers(&self) -> Vec<(Instant, Due)> {
        let mut timers = Vec::with_capacity(2 * self.slots.len() + self.retiring.len() + 2);
        if self.life == Life::Running {
            for (i, s) in self.slots.iter().enumerate() {
                if let Some((c, _)) = s.successor() {
                    if let Phase::Starting { deadline } = c.phase {
                        timers.push((deadline, Due::SuccessorNotReady(i)));
                    }
                }
                match &s.state {
                    SlotState::Respawning { at } => timers.push((*at, Due::Respawn(i))),
                    SlotState::Running(c) => {
                        if let Phase::Starting { deadline } = c.phase {
                            timers.push((deadline, Due::NotReady(i)));
                        }
                    }
                    SlotState::Errored(_) | SlotState::Stopped => {}
                }
            }
        }
        if let Life::ShuttingDown { deadline } = self.life {
            timers.push((deadline, Due::DrainDeadline));
        }
        timers.extend(self.watchdog_at.map(|at| (at, Due::Watchdog)));
        let timeout = self.settings.worker_timeout;
        timers.extend(self.children().filter_map(|c| c.timer(timeout)));
        timers
    }

    /// The earliest instant something is due; `None`: nothing is, until an event.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.timers().into_iter().map(|(at, _)| at).min()
    }

    /// What is due at `now`, in the order to act on it.
    pub(super) fn due(&self, now: Instant) -> Vec<Due> {
        self.timers()
            .into_iter()
            .filter(|(at, _)| *at <= now)
            .map(|(_, due)| due)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::child::tests::{child, ms};
    use super::super::child::KILL_AFTER_ABORT;
    use super::super::slot::{Purpose, Succession};
    use super::super::supervisor::tests::{pid, supervisor, SETTINGS};
    use super::*;

    #[test]
    fn the_next_deadline_is_the_earliest_of_every_state_at_once() {
        let t0 = Instant::now();
        let mut sup = supervisor(4, true, t0);
        // Slot 0: ready, heard at t0 + 5 ms: stuck at t0 + 30.005 s.
        sup.heard(pid(100), t0 + ms(5));
        // Slot 1: respawn due at t0 + 700 ms.
        sup.slots[1].state = SlotState::Respawning { at: t0 + ms(700) };
        // Slot 2: its worker starts, ready timeout at t0 + 1 s; a recycle successor of slot 3
        // forked at t0 + 200 ms is due ready at t0 + 1.2 s.
        sup.slots[2].state = SlotState::Running(child(102, 2, t0));
        sup.slots[3].succession = Succession::Starting {
            child: child(203, 3, t0 + ms(200)),
            purpose: Purpose::Recycle,
        };
        // A retiring worker due killed at t0 + 400 ms, an aborted one at t0 + 300 ms + 1 s.
        let mut retiring = child(50, 0, t0);
        retiring.phase = Phase::Retiring {
            kill_at: t0 + ms(400),
        };
        let mut aborted = child(51, 1, t0);
        aborted.phase = Phase::Aborting {
            since: t0 + ms(300),
        };
        sup.retiring = vec![retiring, aborted];
        sup.watchdog_at = Some(t0 + ms(900));

        assert_eq!(sup.next_deadline(), Some(t0 + ms(400)));
        let at = |n| sup.due(t0 + ms(n));
        assert_eq!(at(399), []);
        assert_eq!(at(400), [Due::DrainOverdue(pid(50))]);
        assert_eq!(
            at(1300),
            [
                Due::Respawn(1),
                Due::NotReady(2),
                Due::SuccessorNotReady(3),
                Due::Watchdog,
                Due::DrainOverdue(pid(50)),
                Due::Kill(pid(51)),
            ]
        );
        assert_eq!(
            at(1299).len(),
            5,
            "the abort's kill comes a second after it"
        );
        assert!(!at(1199).contains(&Due::SuccessorNotReady(3)));
        let all = at(31_000);
        assert!(all.contains(&Due::Stuck(pid(100))) && all.contains(&Due::Stuck(pid(103))));
        assert!(!all.contains(&Due::Stuck(pid(101))), "slot 1 has no worker");
        assert_eq!(
            KILL_AFTER_ABORT,
            ms(1000),
            "the test's instants assume a second"
        );
    }

    #[test]
    fn while_shutting_down_no_slot_timer_runs() {
        let t0 = Instant::now();
        let mut sup = supervisor(3, true, t0);
        sup.slots[1].state = SlotState::Running(child(101, 1, t0));
        sup.slots[2].succession = Succession::Starting {
            child: child(202, 2, t0),
            purpose: Purpose::Reload,
        };
        sup.shutdown(t0);
        sup.watchdog_at = Some(t0 + ms(2000));
        // No ready timeout for starting workers or successors (both were told to drain):
        // the drain deadline is next, then the watchdog, then the heartbeats.
        assert_eq!(sup.next_deadline(), Some(t0 + ms(2000)));
        assert_eq!(
            sup.due(t0 + SETTINGS.drain_timeout),
            [Due::DrainDeadline, Due::Watchdog]
        );
        assert_eq!(
            sup.due(t0 + SETTINGS.worker_timeout),
            [
                Due::DrainDeadline,
                Due::Watchdog,
                Due::Stuck(pid(100)),
                Due::Stuck(pid(102))
            ]
        );
    }

    #[test]
    fn a_stuck_worker_is_aborted_then_killed_every_second_until_reaped() {
        let t0 = Instant::now();
        let mut sup = supervisor(1, true, t0);
        let stuck = t0 + SETTINGS.worker_timeout;
        assert_eq!(sup.due(stuck - ms(1)), []);
        assert_eq!(sup.due(stuck), [Due::Stuck(pid(100))]);
        // A message resets the heartbeat.
        sup.heard(pid(100), t0 + ms(10));
        assert_eq!(sup.due(stuck), []);
        let stuck = stuck + ms(10);
        sup.aborted(pid(100), stuck);
        assert_eq!(sup.next_deadline(), Some(stuck + KILL_AFTER_ABORT));
        assert_eq!(sup.due(stuck + KILL_AFTER_ABORT), [Due::Kill(pid(100))]);
        let killed = stuck + KILL_AFTER_ABORT;
        sup.aborted(pid(100), killed);
        assert_eq!(sup.next_deadline(), Some(killed + KILL_AFTER_ABORT));
        // --worker-timeout 0: no heartbeat at all.
        let mut quiet = supervisor(1, true, t0);
        quiet.settings.worker_timeout = std::time::Duration::ZERO;
        assert_eq!(quiet.next_deadline(), None);
    }

    #[test]
    fn a_worker_killed_for_not_starting_is_timed_again_and_its_exit_is_a_failure() {
        let t0 = Instant::now();
        let mut sup = supervisor(1, false, t0);
        let deadline = t0 + SETTINGS.ready_timeout;
        assert_eq!(sup.due(deadline - ms(1)), []);
        assert_eq!(sup.due(deadline), [Due::NotReady(0)]);
        // Noticed late (longer than --min-uptime after its fork), it is killed.
        let late = t0 + SETTINGS.respawn.min_uptime + ms(1);
        sup.killed_not_ready(0, late);
        assert_eq!(sup.next_deadline(), Some(late + SETTINGS.ready_timeout));
        // Its uptime counts from the kill, so even a long hang is a failure to start: the
        // slot's earlier failure is not forgotten as after a healthy run.
        sup.slots[0].history.failures.push(t0);
        let (c, _) = sup.remove(pid(100)).unwrap();
        sup.settle_exit(0, &c, crate::cluster::Exit::Signal(9), late + ms(1));
        assert_eq!(sup.slots[0].history.failures.len(), 2);
    }
}
