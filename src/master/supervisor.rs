//! The pure supervisor: owns the master's [`Life`], every [`Slot`], the retiring workers,
//! the reload in progress ([`super::reload`]), the adoption table ([`super::adopt`]) and the
//! watchdog's schedule. Events come in as plain values (a worker forked, was heard from, got
//! ready, exited; a shutdown was asked for) with the time they happened, and what follows
//! comes out as values for the shell to apply (signal this pid, tell that one to drain,
//! answer those clients). Nothing here forks, signals, reads a clock or writes a log line, so
//! every rule is unit-tested without processes.

use super::adopt::Adopters;
use super::child::{Child, Phase};
use super::reload::Reload;
use super::respawn::{self, Ended, Fate, GaveUp};
use super::slot::{Purpose, Slot, SlotState, Succession};
use super::startup::Placement;
use crate::cluster::{Exit, WorkerInfo};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// After the drain deadline's kill, the master waits this long for the exits to be reaped
/// (then kills again).
pub(super) const KILL_REAP_WAIT: Duration = Duration::from_secs(1);

/// The master's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Life {
    Running,
    /// Workers were told to drain; any still alive at `deadline` are killed.
    ShuttingDown {
        deadline: Instant,
    },
}

/// The settings the supervisor's decisions read, from the configuration.
#[derive(Clone, Copy, Debug)]
pub(super) struct Settings {
    /// A worker (or successor) not ready this long after its fork is killed.
    pub(super) ready_timeout: Duration,
    /// A ready worker silent this long is stuck (zero: no heartbeat).
    pub(super) worker_timeout: Duration,
    /// How long a retiring worker, or every worker at shutdown, may drain.
    pub(super) drain_timeout: Duration,
    /// Successors a reload starts at once.
    pub(super) reload_parallel: usize,
    pub(super) respawn: respawn::Policy,
    /// Recycle a worker at this resident size.
    pub(super) max_memory_mib: Option<u64>,
}

/// Where a worker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Place {
    /// It fills slot `.0`.
    Current(usize),
    /// It is slot `.0`'s successor.
    Successor(usize),
    /// It drains, at this index of the retiring list.
    Retiring(usize),
}

/// Where an exited worker was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Was {
    Current(usize),
    Successor(usize, Purpose),
    Retiring,
}

/// What a worker's `Ready` changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Readied {
    /// A slot's starting worker is ready.
    Started(WorkerInfo),
    /// A successor is ready and took its slot; the worker it replaced (if the slot had one)
    /// now retires and must be told to drain.
    Replaced {
        new: WorkerInfo,
        purpose: Purpose,
        retired: Option<Pid>,
    },
}

/// What a shutdown request does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Stopping {
    /// The first one: every worker is to be told to drain; the control clients waiting
    /// for a reload (running or queued) or a scale up are to be told it is abandoned.
    Drain { waiters: Vec<u64> },
    /// A second one during the drain: kill every worker now.
    Again,
}

/// Why the supervision loop ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Finish {
    /// A shutdown is over: no worker is left.
    Stopped,
    /// Every slot gave up, each for a configuration error.
    ConfigErrored,
    /// Every slot gave up, at least one after repeated failures to start.
    WorkersFailed,
}

/// The master's state, as plain values.
#[derive(Debug)]
pub(super) struct Supervisor {
    pub(super) settings: Settings,
    pub(super) life: Life,
    pub(super) slots: Vec<Slot>,
    /// Slots a scale down removed, by index past the last slot (`parked[0]` was slot
    /// `slots.len()`): their exited workers' totals (and their retiring workers' once those
    /// exit), so that counters never go down, and taken back as they were by a scale up.
    pub(super) parked: Vec<Slot>,
    /// Where slots' workers run, and how many CPUs they may ([`super::scale`]).
    pub(super) placement: Placement,
    /// Control clients waiting for a scale up's new workers ([`super::scale`]).
    pub(super) growing: Vec<super::scale::Growing>,
    /// Workers that left their slot: replaced ones draining, failed successors killed.
    pub(super) retiring: Vec<Child>,
    pub(super) reload: Option<Reload>,
    pub(super) adopters: Adopters,
    /// When to send the next `WATCHDOG=1` to systemd.
    pub(super) watchdog_at: Option<Instant>,
}

impl Supervisor {
    /// A supervisor of `count` stopped slots, placed as `placement` says.
    pub(super) fn new(settings: Settings, placement: Placement, count: usize) -> Supervisor {
        Supervisor {
            settings,
            life: Life::Running,
            slots: (0..count)
                .map(|i| Slot::new(i as u32, placement.cpu(i)))
                .collect(),
            parked: Vec::new(),
            placement,
            growing: Vec::new(),
            retiring: Vec::with_capacity(count),
            reload: None,
            adopters: Adopters::new(count),
            watchdog_at: None,
        }
    }

    /// Every live worker: slot holders, successors, retiring ones.
    pub(super) fn children(&self) -> impl Iterator<Item = &Child> {
        self.slots
            .iter()
            .flat_map(|s| s.child().into_iter().chain(s.successor().map(|(c, _)| c)))
            .chain(self.retiring.iter())
    }

    pub(super) fn locate(&self, pid: Pid) -> Option<Place> {
        for (i, s) in self.slots.iter().enumerate() {
            if s.child().is_some_and(|c| c.pid == pid) {
                return Some(Place::Current(i));
            }
            if s.successor().is_some_and(|(c, _)| c.pid == pid) {
                return Some(Place::Successor(i));
            }
        }
        self.retiring
            .iter()
            .position(|c| c.pid == pid)
            .map(Place::Retiring)
    }

    pub(super) fn child_mut(&mut self, pid: Pid) -> Option<&mut Child> {
        match self.locate(pid)? {
            Place::Current(i) => match &mut self.slots[i].state {
                SlotState::Running(c) => Some(c),
                _ => None,
            },
            Place::Successor(i) => match &mut self.slots[i].succession {
                Succession::Starting { child, .. } => Some(child),
                _ => None,
            },
            Place::Retiring(i) => self.retiring.get_mut(i),
        }
    }

    /// Slot `index`, or the parked slot of that index ([`super::scale`]).
    pub(super) fn slot_or_parked(&self, index: usize) -> Option<&Slot> {
        let n = self.slots.len();
        match self.slots.get(index) {
            Some(s) => Some(s),
            None => self.parked.get(index - n),
        }
    }

    /// A worker sent something at `now`: its heartbeat.
    pub(super) fn heard(&mut self, pid: Pid, now: Instant) {
        if let Some(c) = self.child_mut(pid) {
            c.heard = now;
        }
    }

    /// Takes an exited worker out of where it was, and adds its counters to its slot's
    /// totals. A slot whose worker it was is left `Stopped` until [`Self::settle_exit`].
    pub(super) fn remove(&mut self, pid: Pid) -> Option<(Child, Was)> {
        let (child, was) = match self.locate(pid)? {
            Place::Current(i) => {
                match std::mem::replace(&mut self.slots[i].state, SlotState::Stopped) {
                    SlotState::Running(child) => (child, Was::Current(i)),
                    _ => unreachable!("located a running child"),
                }
            }
            Place::Successor(i) => {
                let (child, purpose) = self.slots[i].take_successor().expect("located");
                (child, Was::Successor(i, purpose))
            }
            Place::Retiring(i) => (self.retiring.swap_remove(i), Was::Retiring),
        };
        let (index, n) = (child.slot as usize, self.slots.len());
        let slot = match self.slots.get_mut(index) {
            Some(s) => Some(s),
            None => self.parked.get_mut(index - n),
        };
        if let Some(s) = slot {
            s.past = s.past.plus(&child.stats);
            s.past_durations = s.past_durations.plus(&child.durations);
            crate::metric::add_totals(&mut s.past_metrics, &child.metrics);
            crate::ipc::add_mounts(&mut s.past_mounts, &child.mounts);
        }
        Some((child, was))
    }

    /// Decides and applies the fate of `slot`, whose worker `child` exited unasked at `now`
    /// ([`respawn::fate`]).
    pub(super) fn settle_exit(
        &mut self,
        slot: usize,
        child: &Child,
        exit: Exit,
        now: Instant,
    ) -> Fate {
        let ended = Ended {
            exit,
            ready: child.was_ready(),
            uptime: now.saturating_duration_since(child.started),
        };
        let shutting_down = self.life != Life::Running;
        let s = &mut self.slots[slot];
        let fate = respawn::fate(
            &mut s.history,
            shutting_down,
            ended,
            now,
            &self.settings.respawn,
        );
        s.settle(fate, now);
        fate
    }

    /// A worker said it is ready at `now`. A successor takes its slot over; the worker it
    /// replaces retires, with the drain timeout to finish.
    pub(super) fn ready(&mut self, pid: Pid, now: Instant) -> Option<Readied> {
        match self.locate(pid)? {
            Place::Current(i) => {
                let SlotState::Running(c) = &mut self.slots[i].state else {
                    return None;
                };
                let Phase::Starting { .. } = c.phase else {
                    return None;
                };
                c.phase = Phase::Ready;
                Some(Readied::Started(c.info()))
            }
            Place::Successor(i) => {
                let (mut new, purpose) = self.slots[i].take_successor().expect("located");
                new.phase = Phase::Ready;
                let info = new.info();
                let old = std::mem::replace(&mut self.slots[i].state, SlotState::Running(new));
                let retired = match old {
                    SlotState::Running(mut old) => {
                        old.phase = Phase::Retiring {
                            kill_at: now + self.settings.drain_timeout,
                        };
                        let pid = old.pid;
                        self.retiring.push(old);
                        Some(pid)
                    }
                    _ => None,
                };
                if let (Purpose::Reload, Some(reload)) = (purpose, &mut self.reload) {
                    reload.replaced += 1;
                }
                Some(Readied::Replaced {
                    new: info,
                    purpose,
                    retired,
                })
            }
            Place::Retiring(_) => None,
        }
    }

    /// `slot` got its first worker.
    pub(super) fn filled(&mut self, slot: usize, child: Child) {
        self.slots[slot].state = SlotState::Running(child);
    }

    /// `slot`'s respawn was due at `now`: its new worker, or `None` if the fork failed (then
    /// it is tried again after the longest backoff).
    pub(super) fn respawned(&mut self, slot: usize, child: Option<Child>, now: Instant) {
        let s = &mut self.slots[slot];
        s.restarts += 1;
        s.state = match child {
            Some(child) => SlotState::Running(child),
            None => SlotState::Respawning {
                at: now + respawn::RESPAWN_DELAY_MAX,
            },
        };
    }

    /// The shutdown's drain deadline passed at `now`: returns every worker left, to kill,
    /// and waits [`KILL_REAP_WAIT`] for their exits.
    pub(super) fn drain_deadline_passed(&mut self, now: Instant) -> Vec<Pid> {
        self.life = Life::ShuttingDown {
            deadline: now + KILL_REAP_WAIT,
        };
        self.children().map(|c| c.pid).collect()
    }

    /// `slot`'s worker missed its ready deadline and was killed at `now`: the exit that
    /// follows is judged as a failure to start (its uptime counts from now), and a worker
    /// that survives `SIGKILL` is killed again after another ready timeout.
    pub(super) fn killed_not_ready(&mut self, slot: usize, now: Instant) {
        if let SlotState::Running(c) = &mut self.slots[slot].state {
            c.started = now;
            c.phase = Phase::Starting {
                deadline: now + self.settings.ready_timeout,
            };
        }
    }

    /// The worker was sent `SIGABRT` or `SIGKILL` at `now`: `SIGKILL` follows a second later.
    pub(super) fn aborted(&mut self, pid: Pid, now: Instant) {
        if let Some(c) = self.child_mut(pid) {
            c.phase = Phase::Aborting { since: now };
        }
    }

    /// `slot`'s successor was forked, for `purpose`.
    pub(super) fn successor_forked(&mut self, slot: usize, child: Child, purpose: Purpose) {
        self.slots[slot].succession = Succession::Starting { child, purpose };
    }

    /// Moves `slot`'s successor (if one starts) to the retiring workers as killed at `now`,
    /// and returns its pid, for the shell to send `SIGKILL`.
    pub(super) fn kill_successor(&mut self, slot: usize, now: Instant) -> Option<Pid> {
        let (mut child, _) = self.slots[slot].take_successor()?;
        child.phase = Phase::Aborting { since: now };
        let pid = child.pid;
        self.retiring.push(child);
        Some(pid)
    }

    /// A shutdown was asked for at `now`. The first request drains: slots waiting to
    /// respawn stop, and the reload (and the one queued) is abandoned.
    pub(super) fn shutdown(&mut self, now: Instant) -> Stopping {
        if self.life != Life::Running {
            return Stopping::Again;
        }
        self.life = Life::ShuttingDown {
            deadline: now + self.settings.drain_timeout,
        };
        for s in &mut self.slots {
            if let SlotState::Respawning { .. } = s.state {
                s.state = SlotState::Stopped;
            }
        }
        let waiters = self
            .reload
            .take()
            .map(|r| r.waiters.into_iter().chain(r.queued.into_iter().flatten()))
            .into_iter()
            .flatten()
            .chain(self.growing.drain(..).map(|g| g.waiter))
            .collect();
        Stopping::Drain { waiters }
    }

    /// Whether the supervision loop ends, and why: after a shutdown once no worker is left;
    /// while running, once every slot has errored (a configuration error if each slot gave
    /// up for one, since respawning cannot help and the operator must fix it).
    pub(super) fn finished(&self) -> Option<Finish> {
        if self.life != Life::Running {
            return self.children().next().is_none().then_some(Finish::Stopped);
        }
        let gave_up: Option<Vec<GaveUp>> = self
            .slots
            .iter()
            .map(|s| match s.state {
                SlotState::Errored(why) => Some(why),
                _ => None,
            })
            .collect();
        match gave_up?.iter().all(|why| *why == GaveUp::Config) {
            true => Some(Finish::ConfigErrored),
            false => Some(Finish::WorkersFailed),
        }
    }

    /// Slots whose worker is ready.
    pub(super) fn ready_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.ready_child().is_some())
            .count()
    }

    /// Whether to tell systemd `READY=1`: running, no reload in progress, and every slot has
    /// a ready worker or has errored (an errored slot will not get one).
    pub(super) fn all_ready(&self) -> bool {
        self.life == Life::Running
            && self.reload.is_none()
            && self
                .slots
                .iter()
                .all(|s| s.ready_child().is_some() || matches!(s.state, SlotState::Errored(_)))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::child::tests::{child, ms};
    use super::super::respawn::RESPAWN_DELAY_FIRST;
    use super::*;

    pub(crate) const SETTINGS: Settings = Settings {
        ready_timeout: Duration::from_secs(1),
        worker_timeout: Duration::from_secs(30),
        drain_timeout: Duration::from_secs(10),
        reload_parallel: 1,
        respawn: respawn::Policy {
            failures_max: 3,
            window: Duration::from_secs(60),
            min_uptime: Duration::from_secs(30),
        },
        max_memory_mib: None,
    };

    /// A supervisor of `n` slots whose workers (pids 100, 101, ...) were forked at `t0` and,
    /// if `ready`, are ready.
    pub(crate) fn supervisor(n: usize, ready: bool, t0: Instant) -> Supervisor {
        let placement = Placement {
            cpus: (0..n).collect(),
            pinned: true,
        };
        let mut sup = Supervisor::new(SETTINGS, placement, n);
        for (i, s) in sup.slots.iter_mut().enumerate() {
            let mut c = child(100 + i as i32, i as u32, t0);
            if ready {
                c.phase = Phase::Ready;
            }
            s.state = SlotState::Running(c);
        }
        sup
    }

    pub(crate) fn pid(n: i32) -> Pid {
        Pid::from_raw(n)
    }

    /// Kills slot `slot`'s worker at `now` the way a crash at start does, and settles.
    fn crash(sup: &mut Supervisor, slot: usize, now: Instant) -> Fate {
        let pid = sup.slots[slot].child().unwrap().pid;
        let (c, was) = sup.remove(pid).unwrap();
        assert_eq!(was, Was::Current(slot));
        sup.settle_exit(slot, &c, Exit::Code(3), now)
    }

    /// Respawns `slot` at `now` with a worker of pid `pid`, the way the shell does.
    fn respawn(sup: &mut Supervisor, slot: usize, pid: i32, now: Instant) {
        sup.slots[slot].state = SlotState::Running(child(pid, slot as u32, now));
    }

    #[test]
    fn failures_to_start_back_off_then_error_the_slot_and_the_master_exits() {
        let t0 = Instant::now();
        let mut sup = supervisor(2, false, t0);
        // Slot 0 fails to start three times within the window; slot 1 too.
        let mut now = t0;
        let mut fates = Vec::new();
        for (i, pid) in [200, 201, 202].into_iter().enumerate() {
            now += ms(10);
            fates.push(crash(&mut sup, 0, now));
            if i < 2 {
                respawn(&mut sup, 0, pid, now);
            }
        }
        assert_eq!(
            fates,
            [
                Fate::Respawn(Duration::ZERO),
                Fate::Respawn(RESPAWN_DELAY_FIRST),
                Fate::Errored(GaveUp::Failures(3))
            ]
        );
        assert!(matches!(
            sup.slots[0].state,
            SlotState::Errored(GaveUp::Failures(3))
        ));
        assert_eq!(sup.finished(), None, "slot 1 still runs");
        assert_eq!(sup.slots[0].state_name(), "errored");
        // Slot 1 cannot start with the configuration: every slot has errored now, one of
        // them by failures, so the master exits as a failure, not a configuration error.
        let (c, _) = sup.remove(pid(101)).unwrap();
        let fate = sup.settle_exit(1, &c, Exit::Code(crate::worker::EXIT_CONFIG), now);
        assert_eq!(fate, Fate::Errored(GaveUp::Config));
        assert_eq!(sup.finished(), Some(Finish::WorkersFailed));
    }

    #[test]
    fn the_master_exits_when_every_slot_has_errored_as_a_configuration_error_or_a_failure() {
        let t0 = Instant::now();
        let config = || SlotState::Errored(GaveUp::Config);
        let failures = || SlotState::Errored(GaveUp::Failures(3));
        let respawning = || SlotState::Respawning { at: t0 };
        let cases: Vec<(Vec<SlotState>, Option<Finish>)> = vec![
            (vec![config()], Some(Finish::ConfigErrored)),
            (vec![config(), config()], Some(Finish::ConfigErrored)),
            (vec![failures()], Some(Finish::WorkersFailed)),
            (vec![config(), failures()], Some(Finish::WorkersFailed)),
            (vec![failures(), respawning()], None),
            (vec![config(), SlotState::Stopped], None),
        ];
        for (states, want) in cases {
            let mut sup = supervisor(states.len(), true, t0);
            for (s, state) in sup.slots.iter_mut().zip(states) {
                s.state = state;
            }
            let shown: Vec<&str> = sup.slots.iter().map(Slot::state_name).collect();
            assert_eq!(sup.finished(), want, "{shown:?}");
        }
        // A slot given up through the respawn decision, for a configuration error.
        let mut sup = supervisor(1, false, t0);
        let (c, _) = sup.remove(pid(100)).unwrap();
        let fate = sup.settle_exit(0, &c, Exit::Code(crate::worker::EXIT_CONFIG), t0);
        assert_eq!(fate, Fate::Errored(GaveUp::Config));
        assert_eq!(sup.finished(), Some(Finish::ConfigErrored));
    }

    #[test]
    fn a_starting_worker_gets_ready_once() {
        let t0 = Instant::now();
        let mut sup = supervisor(1, false, t0);
        assert!(!sup.all_ready());
        assert_eq!(sup.slots[0].state_name(), "starting");
        let info = sup.slots[0].child().unwrap().info();
        assert_eq!(sup.ready(pid(100), t0), Some(Readied::Started(info)));
        assert_eq!(sup.ready(pid(100), t0), None);
        assert_eq!(sup.slots[0].state_name(), "ready");
        assert_eq!(sup.ready_count(), 1);
        assert!(sup.all_ready());
        sup.reload = Some(Reload::new(vec![], t0));
        assert!(!sup.all_ready(), "not during a reload");
    }

    #[test]
    fn a_shutdown_stops_slots_and_ends_once_no_worker_is_left() {
        let t0 = Instant::now();
        let mut sup = supervisor(2, true, t0);
        sup.slots[1].state = SlotState::Respawning { at: t0 + ms(100) };
        sup.reload = Some(Reload::new(vec![7], t0));
        sup.reload.as_mut().unwrap().queued = Some(vec![8, 9]);
        assert_eq!(
            sup.shutdown(t0),
            Stopping::Drain {
                waiters: vec![7, 8, 9]
            }
        );
        assert!(sup.reload.is_none());
        assert!(matches!(sup.slots[1].state, SlotState::Stopped));
        assert_eq!(sup.shutdown(t0), Stopping::Again);
        assert_eq!(sup.finished(), None, "worker 0 drains");
        let (c, _) = sup.remove(pid(100)).unwrap();
        let history = sup.slots[0].history.failures.len();
        assert_eq!(sup.settle_exit(0, &c, Exit::Code(0), t0), Fate::Stop);
        assert_eq!(sup.slots[0].history.failures.len(), history);
        assert_eq!(sup.finished(), Some(Finish::Stopped));
        assert!(!sup.all_ready());
    }

    #[test]
    fn exits_count_into_the_slot_totals_wherever_the_worker_was() {
        let t0 = Instant::now();
        let mut sup = supervisor(1, true, t0);
        let mut old = child(50, 0, t0);
        old.stats.requests = 5;
        let mount = |requests| crate::ipc::MountStats {
            requests,
            ..Default::default()
        };
        old.mounts = vec![mount(2), mount(7)];
        old.phase = Phase::Retiring { kill_at: t0 };
        sup.retiring.push(old);
        sup.slots[0].state = SlotState::Running({
            let mut c = child(100, 0, t0);
            c.stats.requests = 3;
            c.mounts = vec![mount(1), mount(1)];
            c
        });
        assert_eq!(sup.remove(pid(50)).unwrap().1, Was::Retiring);
        assert_eq!(sup.remove(pid(100)).unwrap().1, Was::Current(0));
        assert_eq!(sup.slots[0].past.requests, 8);
        assert_eq!(sup.slots[0].past_mounts, [mount(3), mount(8)]);
        assert!(sup.remove(pid(100)).is_none(), "removed once");
    }

    #[test]
    fn a_ready_successor_takes_its_slot_and_the_old_worker_retires() {
        let t0 = Instant::now();
        let mut sup = supervisor(1, true, t0);
        sup.reload = Some(Reload::new(vec![], t0));
        sup.slots[0].succession = Succession::Starting {
            child: child(200, 0, t0),
            purpose: Purpose::Reload,
        };
        assert_eq!(sup.locate(pid(200)), Some(Place::Successor(0)));
        let now = t0 + ms(50);
        let readied = sup.ready(pid(200), now).unwrap();
        assert!(matches!(
            readied,
            Readied::Replaced { purpose: Purpose::Reload, retired: Some(p), .. } if p == pid(100)
        ));
        assert_eq!(sup.slots[0].ready_child().unwrap().pid, pid(200));
        assert_eq!(
            sup.retiring[0].phase,
            Phase::Retiring {
                kill_at: now + SETTINGS.drain_timeout
            }
        );
        assert_eq!(sup.reload.as_ref().unwrap().replaced, 1);
        // A second Ready changes nothing.
        assert_eq!(sup.ready(pid(200), now), None);
        assert_eq!(
            sup.ready(pid(100), now),
            None,
            "a retiring worker stays retiring"
        );
    }
}
