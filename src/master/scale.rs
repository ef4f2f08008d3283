//! Changing the worker count at runtime: `ringmaster scale N`, and gunicorn's `SIGTTIN` (one
//! more) and `SIGTTOU` (one fewer). Owns the [`Resize`] and [`Scaled`] values and the scale
//! ups whose control clients wait ([`Growing`]); the decisions are the supervisor's
//! ([`Supervisor::scale`]), the forks, drains and answers the shell's ([`Master::request_scale`]).
//!
//! - A scale up adds slots at the end, each with the next CPU of the placement (wrapping
//!   around), and makes each new slot's socket listen ([`super::listeners`]). It is refused
//!   past one worker per CPU workers may run on (the affinity mask, or the CPUs listed)
//!   unless asked with `--oversubscribe`; `SIGTTIN` never oversubscribes. `scale` answers
//!   once every new slot has a ready worker (or gave up starting).
//! - A scale down removes the last slots: their workers drain, exactly as at a reload, and a
//!   successor starting there (a recycle's) is killed; their sockets stay in the group and
//!   are adopted by the remaining workers ([`super::adopt`]), so no connection waiting in
//!   them is lost. `SIGTTOU` never goes below one worker.
//! - The count is the master's, not the configuration's: a reload replaces the workers of
//!   the slots there are, so a scale holds across reloads (and respawns).
//! - A scale is refused during a reload (its plan walks the slots) and a shutdown.

use super::slot::{Slot, SlotState, Succession};
use super::supervisor::{Life, Supervisor};
use super::{signal, Master};
use crate::config::Config;
use crate::ipc::Message;
use crate::log::log;
use crate::Serve;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// A change of the worker count asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resize {
    /// `ringmaster scale N`: exactly `workers`, more than one per CPU only if
    /// `oversubscribe`.
    To { workers: u32, oversubscribe: bool },
    /// `SIGTTIN`: one more, up to one per CPU.
    More,
    /// `SIGTTOU`: one fewer, down to one.
    Fewer,
}

/// What a scale request did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Scaled {
    /// Refused, for this reason (a sentence with its remedy).
    Refused(String),
    /// Already this many workers.
    Unchanged(usize),
    /// Slots `from..to` were added: each is to get its worker.
    Grown { from: usize, to: usize },
    /// Slots `to..from` were removed: their workers `drain`, their successors were `kill`ed.
    Shrunk {
        from: usize,
        to: usize,
        drain: Vec<Pid>,
        kill: Vec<Pid>,
    },
}

/// A control client waiting for the new slots `from..to` of a scale up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Growing {
    pub(super) waiter: u64,
    from: usize,
    to: usize,
    started: Instant,
}

/// A scale up whose new slots each have a ready worker or gave up starting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Grew {
    pub(super) waiter: u64,
    pub(super) to: usize,
    pub(super) took: Duration,
    /// The new slots that gave up starting.
    pub(super) errored: Vec<u32>,
}

impl Supervisor {
    /// Applies `resize` at `now` ([`Scaled`]): slots added come back from the parked ones
    /// first (with their totals), slots removed are parked.
    pub(super) fn scale(&mut self, resize: Resize, now: Instant) -> Scaled {
        if self.life != Life::Running {
            return Scaled::Refused("shutting down".to_string());
        }
        if self.reload.is_some() {
            return Scaled::Refused(format!(
                "a reload is in progress; scale once it is over (`{} reload` waits for it)",
                crate::log::program()
            ));
        }
        let from = self.slots.len();
        let cpus = self.placement.cpus.len();
        let (to, oversubscribe) = match resize {
            Resize::To {
                workers,
                oversubscribe,
            } => (workers as usize, oversubscribe),
            Resize::More => (from + 1, false),
            Resize::Fewer => (from.saturating_sub(1), false),
        };
        if to == 0 {
            return Scaled::Refused(format!(
                "at least one worker runs; to run none, stop the server (`{} stop`)",
                crate::log::program()
            ));
        }
        if to > Config::WORKERS_MAX as usize {
            return Scaled::Refused(format!(
                "{to} workers is more than the most one master runs ({})",
                Config::WORKERS_MAX
            ));
        }
        if to > from && to > cpus && !oversubscribe {
            return Scaled::Refused(format!(
                "{to} workers would be more than the {cpus} CPUs they may run on ({}); \
                 `{} scale {to} --oversubscribe` runs more workers than CPUs",
                self.placement.describe(),
                crate::log::program()
            ));
        }
        match to.cmp(&from) {
            std::cmp::Ordering::Equal => Scaled::Unchanged(from),
            std::cmp::Ordering::Greater => {
                for i in from..to {
                    let slot = match self.parked.is_empty() {
                        true => Slot::new(i as u32, self.placement.cpu(i)),
                        false => self.parked.remove(0),
                    };
                    self.slots.push(slot);
                }
                Scaled::Grown { from, to }
            }
            std::cmp::Ordering::Less => {
                let (mut drain, mut kill) = (Vec::new(), Vec::new());
                let mut removed = self.slots.split_off(to);
                for s in &mut removed {
                    self.park(s, now, &mut drain, &mut kill);
                }
                removed.append(&mut self.parked);
                self.parked = removed;
                Scaled::Shrunk {
                    from,
                    to,
                    drain,
                    kill,
                }
            }
        }
    }

    /// Empties a removed slot: its worker retires with the drain timeout (`drain`), its
    /// successor is killed (`kill`); both count into its totals when they exit.
    fn park(&mut self, s: &mut Slot, now: Instant, drain: &mut Vec<Pid>, kill: &mut Vec<Pid>) {
        use super::child::Phase;
        if let Some((mut child, _)) = s.take_successor() {
            child.phase = Phase::Aborting { since: now };
            kill.push(child.pid);
            self.retiring.push(child);
        }
        s.succession = Succession::Idle;
        if let SlotState::Running(mut child) = std::mem::replace(&mut s.state, SlotState::Stopped) {
            child.phase = Phase::Retiring {
                kill_at: now + self.settings.drain_timeout,
            };
            drain.push(child.pid);
            self.retiring.push(child);
        }
    }

    /// A control client (`waiter`) waits for the new slots `from..to` of a scale up.
    pub(super) fn wait_growth(&mut self, waiter: u64, from: usize, to: usize, now: Instant) {
        self.growing.push(Growing {
            waiter,
            from,
            to,
            started: now,
        });
    }

    /// The scale ups over at `now`: each of their new slots that still exists has a ready
    /// worker or gave up starting.
    pub(super) fn grown(&mut self, now: Instant) -> Vec<Grew> {
        let mut over = Vec::new();
        let slots = &self.slots;
        self.growing.retain(|g| {
            let new = &slots[g.from.min(slots.len())..g.to.min(slots.len())];
            let settled = new
                .iter()
                .all(|s| s.ready_child().is_some() || matches!(s.state, SlotState::Errored(_)));
            if settled {
                over.push(Grew {
                    waiter: g.waiter,
                    to: g.to,
                    took: now.saturating_duration_since(g.started),
                    errored: new
                        .iter()
                        .filter(|s| matches!(s.state, SlotState::Errored(_)))
                        .map(|s| s.index)
                        .collect(),
                });
            }
            !settled
        });
        over
    }
}

impl<H: Serve> Master<'_, H> {
    /// Applies `resize` (from `SIGTTIN` or `SIGTTOU` when `waiter` is `None`, else from a
    /// control client, answered once a scale up's new workers are ready, or at once).
    pub(super) fn request_scale(&mut self, resize: Resize, waiter: Option<u64>) {
        let now = Instant::now();
        let answer = match self.sup.scale(resize, now) {
            Scaled::Refused(why) => {
                let by = match resize {
                    Resize::More => "SIGTTIN",
                    Resize::Fewer => "SIGTTOU",
                    Resize::To { .. } => "scale",
                };
                tracing::warn!("{by} refused: {why}");
                Some(format!("error: {why}\n"))
            }
            Scaled::Unchanged(n) => Some(format!("ok: already {n} workers\n")),
            Scaled::Grown { from, to } => self.grow(from, to, waiter, now),
            Scaled::Shrunk {
                from,
                to,
                drain,
                kill,
            } => {
                log!(
                    "scaling down from {from} to {to} workers: {} draining",
                    drain.len()
                );
                let drain_ms = self.sup.settings.drain_timeout.as_millis() as u64;
                for pid in &drain {
                    self.tell(*pid, &Message::Shutdown { drain_ms });
                }
                for pid in kill {
                    signal(pid, Signal::SIGKILL);
                }
                self.notify_status();
                Some(format!(
                    "ok: scaled from {from} to {to} workers ({} draining)\n",
                    drain.len()
                ))
            }
        };
        if let (Some(id), Some(text)) = (waiter, answer) {
            self.control.answer(id, &text);
        }
    }

    /// Starts the workers of the new slots `from..to`; the answer waits for them.
    fn grow(
        &mut self,
        from: usize,
        to: usize,
        waiter: Option<u64>,
        now: Instant,
    ) -> Option<String> {
        if let Err(e) = self.listeners.listen_for(to, self.config.backlog) {
            let resize = Resize::To {
                workers: from as u32,
                oversubscribe: true,
            };
            self.sup.scale(resize, now);
            tracing::error!("scale up failed: {e}");
            return Some(format!("error: scale up failed: {e}\n"));
        }
        log!("scaling up from {from} to {to} workers");
        for slot in from..to {
            match self.fork_worker(slot, false) {
                Ok(child) => self.sup.filled(slot, child),
                Err(e) => {
                    log!("worker {slot}: {e}; retrying");
                    self.sup.respawned(slot, None, now);
                }
            }
        }
        self.notify_status();
        let id = waiter?;
        self.sup.wait_growth(id, from, to, now);
        None
    }

    /// Answers the scale ups that are over.
    pub(super) fn step_scale(&mut self) {
        if self.sup.growing.is_empty() {
            return;
        }
        for grew in self.sup.grown(Instant::now()) {
            let text = match grew.errored.is_empty() {
                true => format!(
                    "ok: scaled to {} workers in {}ms\n",
                    grew.to,
                    grew.took.as_millis()
                ),
                false => format!(
                    "error: scaled to {} workers, but worker(s) {:?} cannot start (see the \
                     log); fix the cause, or scale back down\n",
                    grew.to, grew.errored
                ),
            };
            self.control.answer(grew.waiter, &text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::child::tests::child;
    use super::super::child::Phase;
    use super::super::supervisor::tests::{pid, supervisor};
    use super::*;

    fn to(workers: u32) -> Resize {
        Resize::To {
            workers,
            oversubscribe: false,
        }
    }

    #[test]
    fn a_scale_up_adds_slots_on_the_next_cpus_up_to_one_per_cpu_unless_asked() {
        let t0 = Instant::now();
        // Two workers on four CPUs.
        let mut sup = supervisor(2, true, t0);
        sup.placement.cpus = vec![0, 1, 2, 3];
        assert_eq!(sup.scale(to(2), t0), Scaled::Unchanged(2));
        assert_eq!(
            sup.scale(Resize::More, t0),
            Scaled::Grown { from: 2, to: 3 }
        );
        assert_eq!(sup.scale(to(4), t0), Scaled::Grown { from: 3, to: 4 });
        let cpus: Vec<_> = sup.slots.iter().map(|s| s.cpu).collect();
        assert_eq!(cpus, [Some(0), Some(1), Some(2), Some(3)]);
        assert_eq!(sup.slots[3].index, 3);
        // One per CPU is the bound, for SIGTTIN and for scale without --oversubscribe.
        let Scaled::Refused(why) = sup.scale(Resize::More, t0) else {
            panic!("SIGTTIN past the CPUs")
        };
        assert!(why.contains("the 4 CPUs they may run on (0-3)"), "{why}");
        assert!(why.contains("scale 5 --oversubscribe"), "{why}");
        assert!(matches!(sup.scale(to(6), t0), Scaled::Refused(_)));
        let over = Resize::To {
            workers: 6,
            oversubscribe: true,
        };
        assert_eq!(sup.scale(over, t0), Scaled::Grown { from: 4, to: 6 });
        assert_eq!(sup.slots[5].cpu, Some(1), "wrapping around");
        // Zero, and past the most, are refused whatever is asked.
        assert!(matches!(sup.scale(to(0), t0), Scaled::Refused(_)));
        let most = Resize::To {
            workers: Config::WORKERS_MAX + 1,
            oversubscribe: true,
        };
        assert!(matches!(sup.scale(most, t0), Scaled::Refused(_)));
        // Unpinned: the same bound, and no CPU.
        let mut sup = supervisor(1, true, t0);
        sup.placement.pinned = false;
        assert!(matches!(sup.scale(Resize::More, t0), Scaled::Refused(_)));
        sup.placement.cpus = vec![0, 1];
        assert_eq!(
            sup.scale(Resize::More, t0),
            Scaled::Grown { from: 1, to: 2 }
        );
        assert_eq!(sup.slots[1].cpu, None);
    }

    #[test]
    fn a_scale_down_drains_the_last_slots_workers_and_parks_their_totals() {
        let t0 = Instant::now();
        let mut sup = supervisor(3, true, t0);
        sup.slots[2].past.requests = 40;
        sup.slots[2].restarts = 2;
        sup.slots[2].succession = Succession::Starting {
            child: child(300, 2, t0),
            purpose: super::super::slot::Purpose::Recycle,
        };
        let shrunk = sup.scale(to(1), t0);
        assert_eq!(
            shrunk,
            Scaled::Shrunk {
                from: 3,
                to: 1,
                drain: vec![pid(101), pid(102)],
                kill: vec![pid(300)],
            }
        );
        assert_eq!(sup.slots.len(), 1);
        assert_eq!(sup.parked.len(), 2);
        let phases: Vec<_> = sup.retiring.iter().map(|c| (c.pid, c.phase)).collect();
        let drain_until = t0 + sup.settings.drain_timeout;
        assert!(phases.contains(&(
            pid(101),
            Phase::Retiring {
                kill_at: drain_until
            }
        )));
        assert!(phases.contains(&(pid(300), Phase::Aborting { since: t0 })));
        // A retiring worker's requests count into its parked slot when it exits.
        sup.retiring
            .iter_mut()
            .find(|c| c.pid == pid(102))
            .unwrap()
            .stats
            .requests = 5;
        sup.remove(pid(102)).unwrap();
        assert_eq!(sup.parked[1].past.requests, 45);
        // SIGTTOU stops at one worker.
        assert!(matches!(sup.scale(Resize::Fewer, t0), Scaled::Refused(_)));
        // A scale up takes the parked slots back, totals and all, emptied.
        assert_eq!(sup.scale(to(3), t0), Scaled::Grown { from: 1, to: 3 });
        assert!(sup.parked.is_empty());
        assert_eq!(sup.slots[2].past.requests, 45);
        assert_eq!(sup.slots[2].restarts, 2);
        assert_eq!(sup.slots[2].state_name(), "stopped");
        assert!(sup.slots[2].successor().is_none());
    }

    #[test]
    fn a_scale_is_refused_during_a_reload_and_a_shutdown() {
        let t0 = Instant::now();
        let mut sup = supervisor(2, true, t0);
        sup.reload = Some(super::super::reload::Reload::new(vec![], t0));
        let Scaled::Refused(why) = sup.scale(to(1), t0) else {
            panic!("scaled during a reload")
        };
        assert!(why.contains("reload"), "{why}");
        sup.reload = None;
        sup.wait_growth(7, 2, 3, t0);
        let super::super::supervisor::Stopping::Drain { waiters } = sup.shutdown(t0) else {
            panic!("the first shutdown drains")
        };
        assert_eq!(waiters, [7], "a waiting scale up is abandoned");
        assert!(matches!(sup.scale(to(1), t0), Scaled::Refused(_)));
    }

    #[test]
    fn a_scale_up_is_over_once_each_new_slot_is_ready_or_gave_up() {
        let t0 = Instant::now();
        let mut sup = supervisor(1, true, t0);
        sup.placement.cpus = vec![0, 1, 2];
        assert_eq!(sup.scale(to(3), t0), Scaled::Grown { from: 1, to: 3 });
        sup.filled(1, child(201, 1, t0));
        sup.filled(2, child(202, 2, t0));
        sup.wait_growth(9, 1, 3, t0);
        assert_eq!(sup.grown(t0), []);
        sup.ready(pid(201), t0);
        assert_eq!(sup.grown(t0), []);
        sup.slots[2].state = SlotState::Errored(super::super::respawn::GaveUp::Failures(3));
        let later = t0 + Duration::from_millis(30);
        assert_eq!(
            sup.grown(later),
            [Grew {
                waiter: 9,
                to: 3,
                took: Duration::from_millis(30),
                errored: vec![2],
            }]
        );
        assert!(sup.growing.is_empty());
    }
}
