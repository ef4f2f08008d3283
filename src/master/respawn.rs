//! The crash-loop guard, as a pure decision over a slot's history: whether a worker that
//! exited unasked is respawned (and after how long), its slot given up, or (during shutdown)
//! stopped. Owns a slot's exit [`History`]. No processes here, so every rule is unit-tested.
//!
//! Only failures to start count toward giving up: a worker that got ready and served was a
//! working build, and whatever killed it (a panic with `--exit-on-panic`, the OOM killer, an
//! operator's `kill -9`) must never make the master give up on the slot. Such deaths are
//! respawned with a short backoff, so that a worker dying on every request cannot turn the
//! master into a fork loop.

use crate::cluster::Exit;
use crate::worker::EXIT_CONFIG;
use std::time::{Duration, Instant};

/// The first respawn after a healthy run is immediate; each further failure in a row waits
/// twice as long as the one before, starting here.
pub(super) const RESPAWN_DELAY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait before respawning a worker that failed to start.
pub(super) const RESPAWN_DELAY_MAX: Duration = Duration::from_secs(10);
/// The longest wait before respawning a worker that was ready and died serving: short, since
/// the build works and its slot's connections wait (or go to an adopting worker) meanwhile.
pub(super) const RESPAWN_DELAY_SERVING_MAX: Duration = Duration::from_secs(1);

/// The crash-loop settings.
#[derive(Clone, Copy, Debug)]
pub(super) struct Policy {
    /// Failures to start within `window` that give up on the slot.
    pub(super) failures_max: usize,
    pub(super) window: Duration,
    /// A worker up this long was healthy: the backoff and failures start over.
    pub(super) min_uptime: Duration,
}

/// What a slot remembers of its recent exits.
#[derive(Debug, Default)]
pub(super) struct History {
    /// The next respawn delay (zero after a healthy run).
    pub(super) backoff: Duration,
    /// When recent failures to start happened, oldest first; never more than
    /// `failures_max` of them.
    pub(super) failures: Vec<Instant>,
}

/// How the worker ended, as the guard needs it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ended {
    pub(super) exit: Exit,
    /// It told the master it was ready.
    pub(super) ready: bool,
    pub(super) uptime: Duration,
}

/// What becomes of a slot whose worker exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fate {
    /// Fork a new worker after this long.
    Respawn(Duration),
    /// Give up on the slot.
    Errored(GaveUp),
    /// The master is shutting down: the slot stays empty.
    Stop,
}

/// The fate of a slot whose worker exited: during shutdown it stops (and the exit is not
/// recorded: a worker told to drain did not fail); otherwise [`History::decide`] judges.
pub(super) fn fate(
    history: &mut History,
    shutting_down: bool,
    ended: Ended,
    now: Instant,
    policy: &Policy,
) -> Fate {
    match shutting_down {
        true => Fate::Stop,
        false => history.decide(ended, now, policy),
    }
}

/// Why a slot was given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum GaveUp {
    /// The worker cannot start with this configuration: respawning would fail the same way.
    Config,
    /// Its workers failed to start this many times within the window.
    Failures(usize),
}

impl History {
    /// Records the exit and decides (never [`Fate::Stop`]).
    pub(super) fn decide(&mut self, ended: Ended, now: Instant, policy: &Policy) -> Fate {
        if !ended.ready && ended.exit == Exit::Code(EXIT_CONFIG) {
            return Fate::Errored(GaveUp::Config);
        }
        if ended.uptime >= policy.min_uptime {
            self.backoff = Duration::ZERO;
            self.failures.clear();
        }
        let cap = if ended.ready {
            RESPAWN_DELAY_SERVING_MAX
        } else {
            self.failures
                .retain(|&t| now.saturating_duration_since(t) <= policy.window);
            self.failures.push(now);
            if self.failures.len() >= policy.failures_max {
                return Fate::Errored(GaveUp::Failures(self.failures.len()));
            }
            RESPAWN_DELAY_MAX
        };
        let delay = self.backoff.min(cap);
        self.backoff = (delay * 2).clamp(RESPAWN_DELAY_FIRST, cap);
        Fate::Respawn(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        failures_max: 3,
        window: Duration::from_secs(60),
        min_uptime: Duration::from_secs(30),
    };

    fn ended(exit: Exit, ready: bool, uptime_ms: u64) -> Ended {
        Ended {
            exit,
            ready,
            uptime: Duration::from_millis(uptime_ms),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn failures_to_start_back_off_then_error_the_slot() {
        let (mut h, t0) = (History::default(), Instant::now());
        let crash = ended(Exit::Code(3), false, 5);
        assert_eq!(h.decide(crash, t0, &POLICY), Fate::Respawn(ms(0)));
        assert_eq!(
            h.decide(crash, t0 + ms(10), &POLICY),
            Fate::Respawn(ms(100))
        );
        assert_eq!(
            h.decide(crash, t0 + ms(200), &POLICY),
            Fate::Errored(GaveUp::Failures(3))
        );
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let (mut h, t0) = (History::default(), Instant::now());
        let crash = ended(Exit::Signal(9), false, 5);
        h.decide(crash, t0, &POLICY);
        h.decide(crash, t0 + ms(1), &POLICY);
        let later = t0 + POLICY.window + ms(2);
        assert!(matches!(h.decide(crash, later, &POLICY), Fate::Respawn(_)));
        assert_eq!(h.failures.len(), 1);
    }

    #[test]
    fn a_configuration_error_at_start_is_not_respawned() {
        let mut h = History::default();
        let config = ended(Exit::Code(EXIT_CONFIG), false, 1);
        assert_eq!(
            h.decide(config, Instant::now(), &POLICY),
            Fate::Errored(GaveUp::Config)
        );
    }

    #[test]
    fn a_worker_that_served_is_always_respawned_with_a_short_backoff() {
        let (mut h, t0) = (History::default(), Instant::now());
        let panicked = ended(Exit::Code(101), true, 250);
        let delays: Vec<Fate> = (0..100)
            .map(|i| h.decide(panicked, t0 + ms(250 * i), &POLICY))
            .collect();
        assert!(delays.iter().all(|v| matches!(v, Fate::Respawn(_))));
        assert_eq!(
            delays[..4],
            [0, 100, 200, 400].map(|d| Fate::Respawn(ms(d)))
        );
        assert_eq!(delays[99], Fate::Respawn(RESPAWN_DELAY_SERVING_MAX));
        assert!(
            h.failures.is_empty(),
            "deaths after serving are not failures"
        );
        // Even EX_CONFIG from a worker that was ready is a death while serving.
        let config = ended(Exit::Code(EXIT_CONFIG), true, 250);
        assert!(matches!(h.decide(config, t0, &POLICY), Fate::Respawn(_)));
    }

    #[test]
    fn a_healthy_run_starts_the_backoff_over() {
        let (mut h, t0) = (History::default(), Instant::now());
        let quick = ended(Exit::Code(101), true, 10);
        h.decide(quick, t0, &POLICY);
        h.decide(quick, t0, &POLICY);
        let healthy = ended(Exit::Signal(9), true, 31_000);
        assert_eq!(h.decide(healthy, t0, &POLICY), Fate::Respawn(ms(0)));
    }
}
