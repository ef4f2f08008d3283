//! One worker process as the master sees it: owns its [`Phase`] (starting, ready, retiring,
//! aborting), its heartbeat and its last stats. Plain values only: the pipes to the process
//! are the shell's ([`super::pipes`]), so the supervisor's decisions are tested without
//! processes.

use super::timers::Due;
use crate::cluster::WorkerInfo;
use crate::ipc;
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// A stuck worker that survives its `SIGABRT` (or a `SIGKILL`) this long gets `SIGKILL`.
pub(super) const KILL_AFTER_ABORT: Duration = Duration::from_secs(1);

/// Where a worker is in its life. Each phase has at most one timer (see [`Child::timer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Forked, not ready yet: killed if it is not ready by `deadline`.
    Starting { deadline: Instant },
    /// It told the master it accepts; its stats are its heartbeat.
    Ready,
    /// Replaced and told to drain; killed at `kill_at` if it has not exited by then.
    Retiring { kill_at: Instant },
    /// Sent `SIGABRT` (it missed its heartbeat) or `SIGKILL` (a retire deadline, a failed
    /// successor) at `since`: `SIGKILL` follows every [`KILL_AFTER_ABORT`] until it is reaped.
    Aborting { since: Instant },
}

/// A worker process: who it is, its phase, and what it last reported.
#[derive(Clone, Debug)]
pub(super) struct Child {
    pub(super) pid: Pid,
    pub(super) slot: u32,
    /// Its CPU; `None`: not pinned.
    pub(super) cpu: Option<usize>,
    /// When it was forked, or when it was last killed for missing its ready deadline: the
    /// uptime its exit is judged by (see [`super::respawn`]), so that a worker killed for
    /// not starting counts as a failure to start however long it hung.
    pub(super) started: Instant,
    pub(super) phase: Phase,
    /// When the worker last sent anything (its stats come every second): the heartbeat.
    pub(super) heard: Instant,
    pub(super) stats: ipc::Stats,
    /// Its mounts' counters, as last reported (empty until then, or without mounts).
    pub(super) mounts: Vec<ipc::MountStats>,
    /// Its handled requests' durations, as last reported.
    pub(super) durations: crate::durations::Durations,
    /// Its handler's own metrics, as last reported.
    pub(super) metrics: Vec<crate::metric::Sample>,
    /// Recycle it after this many requests (`--max-requests` plus its jitter).
    pub(super) recycle_after: Option<u64>,
    /// The generation it belongs to: 1 for the workers started with the master, one more
    /// for each completed reload (a reload's successors belong to the next).
    pub(super) generation: u64,
    /// Its rates between its last two reports, for the dashboard.
    pub(super) rates: Rates,
    /// Why it cannot start, as it told the master before exiting ([`ipc::Message::Failed`]).
    pub(super) failure: Option<String>,
}

/// A worker's rates per second between its last two stats reports (once a second): what the
/// dashboard plots, worked out as reports arrive so that a poll costs nothing more.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Rates {
    /// The last report: when, and its counters (requests, io_uring enters, completions) and
    /// the worker's CPU time in ms.
    last: Option<(Instant, [u64; 4])>,
    /// Requests, enters and completions per second, and CPU use in percent of one CPU.
    pub(super) per_s: [f64; 4],
}

impl Rates {
    /// A report at `now` of `counters` (as in [`Rates::last`]).
    pub(super) fn update(&mut self, now: Instant, counters: [u64; 4]) {
        if let Some((at, before)) = self.last {
            let secs = now.saturating_duration_since(at).as_secs_f64();
            if secs > 0.0 {
                for i in 0..4 {
                    let delta = counters[i].saturating_sub(before[i]) as f64;
                    // CPU time is in ms: per second of wall time, /10 is percent.
                    let scale = if i == 3 { 10.0 } else { 1.0 };
                    self.per_s[i] = delta / secs / scale;
                }
            }
        }
        self.last = Some((now, counters));
    }
}

impl Child {
    /// A worker just forked at `now`, due ready within `ready_timeout`.
    pub(super) fn forked(
        pid: Pid,
        slot: u32,
        cpu: Option<usize>,
        now: Instant,
        ready_timeout: Duration,
        recycle_after: Option<u64>,
    ) -> Child {
        Child {
            pid,
            slot,
            cpu,
            started: now,
            phase: Phase::Starting {
                deadline: now + ready_timeout,
            },
            heard: now,
            stats: ipc::Stats::default(),
            mounts: Vec::new(),
            durations: crate::durations::Durations::default(),
            metrics: Vec::new(),
            recycle_after,
            generation: 1,
            failure: None,
            rates: Rates::default(),
        }
    }

    pub(super) fn info(&self) -> WorkerInfo {
        WorkerInfo {
            slot: self.slot,
            pid: self.pid.as_raw() as u32,
            cpu: self.cpu,
        }
    }

    /// Whether it told the master it was ready. For a slot's worker this is every phase but
    /// `Starting` (an aborting one was ready, or it would not have missed a heartbeat).
    pub(super) fn was_ready(&self) -> bool {
        !matches!(self.phase, Phase::Starting { .. })
    }

    /// The worker's own timer and what is due then: the heartbeat of a ready or retiring
    /// worker (none when `worker_timeout` is zero), a retiring one's drain deadline
    /// (whichever comes first), an aborting one's `SIGKILL`. A starting worker's ready
    /// deadline means different things for a slot's worker and for a successor, so the slot
    /// reports it ([`super::timers`]).
    pub(super) fn timer(&self, worker_timeout: Duration) -> Option<(Instant, Due)> {
        let heartbeat = (!worker_timeout.is_zero())
            .then(|| (self.heard + worker_timeout, Due::Stuck(self.pid)));
        match self.phase {
            Phase::Starting { .. } => None,
            Phase::Ready => heartbeat,
            Phase::Retiring { kill_at } => {
                let drain = (kill_at, Due::DrainOverdue(self.pid));
                Some(heartbeat.map_or(drain, |h| if h.0 < kill_at { h } else { drain }))
            }
            Phase::Aborting { since } => Some((since + KILL_AFTER_ABORT, Due::Kill(self.pid))),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {

    #[test]
    fn rates_are_the_change_between_two_reports_per_second() {
        let t0 = Instant::now();
        let mut r = Rates::default();
        r.update(t0, [100, 10, 20, 1_000]);
        assert_eq!(r.per_s, [0.0; 4], "one report: no rate yet");
        r.update(t0 + Duration::from_millis(500), [600, 60, 120, 1_250]);
        assert_eq!(r.per_s, [1000.0, 100.0, 200.0, 50.0]);
        // Counters never go back; a lower one is no negative rate.
        r.update(t0 + Duration::from_millis(1500), [500, 60, 120, 1_250]);
        assert_eq!(r.per_s[0], 0.0);
    }
    use super::*;

    pub(crate) fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A worker of `slot` forked at `t0` with a 1 s ready timeout.
    pub(crate) fn child(pid: i32, slot: u32, t0: Instant) -> Child {
        Child::forked(
            Pid::from_raw(pid),
            slot,
            Some(slot as usize),
            t0,
            ms(1000),
            None,
        )
    }

    #[test]
    fn each_phase_has_one_timer() {
        let t0 = Instant::now();
        let timeout = ms(30_000);
        let mut c = child(7, 0, t0);
        let pid = c.pid;
        assert_eq!(
            c.timer(timeout),
            None,
            "a starting worker's timer is its slot's"
        );
        c.phase = Phase::Ready;
        c.heard = t0 + ms(5);
        assert_eq!(c.timer(timeout), Some((t0 + ms(30_005), Due::Stuck(pid))));
        assert_eq!(
            c.timer(Duration::ZERO),
            None,
            "no heartbeat at --worker-timeout 0"
        );
        c.phase = Phase::Retiring {
            kill_at: t0 + ms(10_000),
        };
        assert_eq!(
            c.timer(timeout),
            Some((t0 + ms(10_000), Due::DrainOverdue(pid)))
        );
        c.heard = t0 - ms(25_000);
        assert_eq!(
            c.timer(timeout),
            Some((t0 + ms(5_000), Due::Stuck(pid))),
            "a draining worker that stops reporting is stuck before its drain deadline"
        );
        c.phase = Phase::Aborting { since: t0 };
        assert_eq!(
            c.timer(timeout),
            Some((t0 + KILL_AFTER_ABORT, Due::Kill(pid)))
        );
    }

    #[test]
    fn was_ready_is_every_phase_after_starting() {
        let t0 = Instant::now();
        let mut c = child(7, 0, t0);
        assert!(!c.was_ready());
        for phase in [
            Phase::Ready,
            Phase::Retiring { kill_at: t0 },
            Phase::Aborting { since: t0 },
        ] {
            c.phase = phase;
            assert!(c.was_ready(), "{phase:?}");
        }
    }
}
