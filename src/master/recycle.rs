//! Recycling one worker after `--max-requests` (plus its jitter) or past `--max-memory`: the
//! decision ([`Supervisor::recycle_due`]) and the pause after a failed recycle. Owns no state
//! of its own: a worker's request limit is the worker's ([`super::child::Child`]), the pause is
//! its slot's ([`super::slot::Succession::RecyclePaused`]). A recycle is a one-slot reload:
//! the successor is forked first, the old worker drains once it is ready.

use super::respawn::RESPAWN_DELAY_MAX;
use super::slot::Succession;
use super::supervisor::{Life, Supervisor};
use nix::unistd::Pid;
use std::fmt;
use std::time::{Duration, Instant};

/// After a failed recycle, the slot is not recycled again for this long.
pub(super) const RECYCLE_PAUSE: Duration = RESPAWN_DELAY_MAX;

/// Why a worker is recycled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Recycle {
    /// It answered `served` requests, at least its `limit`.
    Requests { served: u64, limit: u64 },
    /// It holds `mib` MiB resident, at least the `limit`.
    Memory { mib: u64, limit: u64 },
}

impl fmt::Display for Recycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recycle::Requests { served, limit } => {
                write!(f, "after {served} requests (limit {limit})")
            }
            Recycle::Memory { mib, limit } => {
                write!(f, "at {mib} MiB resident (limit {limit} MiB)")
            }
        }
    }
}

/// A number in `0..=max`, different for each worker, so that recycles spread out (the
/// `--max-requests-jitter`). Not for anything that needs real randomness.
pub(super) fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()).rotate_left(32);
    // One round of splitmix64.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % (max + 1)
}

impl Supervisor {
    /// The slot whose worker `pid` may be recycled at `now`: only a slot's ready worker,
    /// while running, with no successor starting and no pause after a failed recycle.
    pub(super) fn recycle_candidate(&self, pid: Pid, now: Instant) -> Option<usize> {
        if self.life != Life::Running {
            return None;
        }
        self.slots
            .iter()
            .position(|s| s.ready_child().is_some_and(|c| c.pid == pid) && s.may_recycle(now))
    }

    /// Whether to recycle the worker `pid` at `now`, and which slot's it is: a
    /// [candidate](Self::recycle_candidate) whose requests reached its limit, or whose
    /// resident memory (`rss_kib`, read by the shell; `None` when it did not) reached
    /// `--max-memory`.
    pub(super) fn recycle_due(
        &self,
        pid: Pid,
        now: Instant,
        rss_kib: Option<u64>,
    ) -> Option<(usize, Recycle)> {
        let slot = self.recycle_candidate(pid, now)?;
        let child = self.slots[slot].ready_child()?;
        let served = child.stats.requests;
        let mib = rss_kib.map(|kib| kib / 1024);
        let why = match (child.recycle_after, self.settings.max_memory_mib, mib) {
            (Some(limit), _, _) if served >= limit => Recycle::Requests { served, limit },
            (_, Some(limit), Some(mib)) if mib >= limit => Recycle::Memory { mib, limit },
            _ => return None,
        };
        Some((slot, why))
    }

    /// The recycle of `slot` failed at `now` (its successor did not fork, exited or was not
    /// ready in time): the old worker keeps serving, and no recycle is tried for
    /// [`RECYCLE_PAUSE`]. Returns the successor to kill, if it is still there.
    pub(super) fn recycle_failed(&mut self, slot: usize, now: Instant) -> Option<Pid> {
        let kill = self.kill_successor(slot, now);
        self.slots[slot].succession = Succession::RecyclePaused {
            until: now + RECYCLE_PAUSE,
        };
        kill
    }
}

#[cfg(test)]
mod tests {
    use super::super::child::tests::{child, ms};
    use super::super::child::Phase;
    use super::super::slot::{Purpose, SlotState};
    use super::super::supervisor::tests::{pid, supervisor};
    use super::*;

    #[test]
    fn a_worker_is_recycled_at_its_request_limit() {
        let t0 = Instant::now();
        let mut sup = supervisor(2, true, t0);
        if let SlotState::Running(c) = &mut sup.slots[1].state {
            c.recycle_after = Some(1000 + 17); // --max-requests 1000, jitter 17
            c.stats.requests = 1016;
        }
        assert_eq!(sup.recycle_due(pid(101), t0, None), None, "below");
        if let SlotState::Running(c) = &mut sup.slots[1].state {
            c.stats.requests = 1017;
        }
        let due = sup.recycle_due(pid(101), t0, None);
        assert_eq!(
            due,
            Some((
                1,
                Recycle::Requests {
                    served: 1017,
                    limit: 1017
                }
            ))
        );
        assert_eq!(
            due.unwrap().1.to_string(),
            "after 1017 requests (limit 1017)"
        );
        assert_eq!(sup.recycle_due(pid(100), t0, None), None, "no limit");
    }

    #[test]
    fn a_worker_is_recycled_past_its_memory_limit() {
        let t0 = Instant::now();
        let mut sup = supervisor(1, true, t0);
        sup.settings.max_memory_mib = Some(64);
        let limit = 64;
        // (resident KiB as read by the shell) -> recycled?
        for (rss_kib, want) in [
            (None, None),
            (Some(64 * 1024 - 1), None),
            (Some(64 * 1024), Some(Recycle::Memory { mib: 64, limit })),
            (Some(80 * 1024), Some(Recycle::Memory { mib: 80, limit })),
        ] {
            assert_eq!(
                sup.recycle_due(pid(100), t0, rss_kib).map(|(_, why)| why),
                want,
                "{rss_kib:?}"
            );
        }
        sup.settings.max_memory_mib = None;
        assert_eq!(sup.recycle_due(pid(100), t0, Some(1 << 30)), None);
    }

    #[test]
    fn only_a_ready_worker_of_a_running_master_without_a_successor_is_recycled() {
        let t0 = Instant::now();
        let over = |sup: &mut Supervisor| {
            for s in &mut sup.slots {
                if let SlotState::Running(c) = &mut s.state {
                    c.recycle_after = Some(1);
                    c.stats.requests = 5;
                }
            }
        };
        let mut starting = supervisor(1, false, t0);
        over(&mut starting);
        assert_eq!(starting.recycle_due(pid(100), t0, None), None);
        let mut replacing = supervisor(1, true, t0);
        over(&mut replacing);
        replacing.slots[0].succession = Succession::Starting {
            child: child(200, 0, t0),
            purpose: Purpose::Reload,
        };
        assert_eq!(replacing.recycle_due(pid(100), t0, None), None);
        assert_eq!(
            replacing.recycle_due(pid(200), t0, None),
            None,
            "a successor"
        );
        let mut stopping = supervisor(1, true, t0);
        over(&mut stopping);
        stopping.shutdown(t0);
        assert_eq!(stopping.recycle_due(pid(100), t0, None), None);
    }

    #[test]
    fn a_failed_recycle_kills_the_successor_and_pauses_the_slot() {
        let t0 = Instant::now();
        let mut sup = supervisor(1, true, t0);
        if let SlotState::Running(c) = &mut sup.slots[0].state {
            c.recycle_after = Some(10);
            c.stats.requests = 10;
        }
        assert!(sup.recycle_due(pid(100), t0, None).is_some());
        sup.slots[0].succession = Succession::Starting {
            child: child(200, 0, t0),
            purpose: Purpose::Recycle,
        };
        let failed = t0 + ms(1000);
        assert_eq!(sup.recycle_failed(0, failed), Some(pid(200)));
        assert_eq!(sup.retiring[0].phase, Phase::Aborting { since: failed });
        assert_eq!(
            sup.slots[0].child().unwrap().pid,
            pid(100),
            "the old one serves"
        );
        for (after, recycled) in [
            (ms(0), false),
            (RECYCLE_PAUSE - ms(1), false),
            (RECYCLE_PAUSE, true),
        ] {
            assert_eq!(
                sup.recycle_due(pid(100), failed + after, None).is_some(),
                recycled,
                "{after:?} after the failure"
            );
        }
        // A successor that exited is gone already: nothing to kill, the pause all the same.
        assert_eq!(sup.recycle_failed(0, failed), None);
        assert!(matches!(
            sup.slots[0].succession,
            Succession::RecyclePaused { .. }
        ));
    }
}
