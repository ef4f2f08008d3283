//! One worker position: owns the slot's [`SlotState`] (its current worker, a respawn due,
//! given up, stopped) and its [`Succession`] (at most one successor and its [`Purpose`], or
//! the pause after a failed recycle), with its exit history and its exited workers' totals.

use super::child::Child;
use super::respawn::{self, Fate, GaveUp};
use crate::ipc;
use std::time::Instant;

/// What fills the slot.
// There is one per CPU, so the size of the `Running` variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum SlotState {
    /// Its worker, starting, ready or aborting (never retiring: a retiring worker has left
    /// its slot).
    Running(Child),
    /// Its worker exited; a new one is forked at `at`.
    Respawning { at: Instant },
    /// Given up: its workers cannot start.
    Errored(GaveUp),
    /// Before its first fork, or its worker exited during shutdown.
    Stopped,
}

/// Why a successor is forked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Purpose {
    /// A rolling reload replaces every slot's worker.
    Reload,
    /// This slot's worker answered `--max-requests` or outgrew `--max-memory`.
    Recycle,
}

/// The slot's next worker, if one is on its way. It is independent of [`SlotState`]: if the
/// current worker dies while its successor starts, the slot respawns as usual and the
/// successor, once ready, takes over from whichever worker fills the slot then.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Succession {
    /// No successor.
    Idle,
    /// A successor starts (its phase is `Starting`); the current worker drains once it is
    /// ready.
    Starting { child: Child, purpose: Purpose },
    /// A recycle failed: no recycle is tried before `until`. A reload may still fork a
    /// successor here, and that ends the pause.
    RecyclePaused { until: Instant },
}

/// One worker position: a CPU (or none: unpinned), the worker filling it, and its successor.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) index: u32,
    /// The CPU its workers are pinned to; `None` with `--cpu-affinity none`.
    pub(super) cpu: Option<usize>,
    pub(super) state: SlotState,
    pub(super) succession: Succession,
    /// Totals of the slot's exited workers, so that exported counters never go down.
    pub(super) past: ipc::Stats,
    /// The same for each mount's counters.
    pub(super) past_mounts: Vec<ipc::MountStats>,
    /// The same for the durations' histogram.
    pub(super) past_durations: crate::durations::Durations,
    /// The same for the handler's own counters.
    pub(super) past_metrics: Vec<crate::metric::Sample>,
    /// Recent exits, for the crash-loop guard.
    pub(super) history: respawn::History,
    pub(super) restarts: u32,
}

impl Slot {
    pub(super) fn new(index: u32, cpu: Option<usize>) -> Slot {
        Slot {
            index,
            cpu,
            state: SlotState::Stopped,
            succession: Succession::Idle,
            past: ipc::Stats::default(),
            past_mounts: Vec::new(),
            past_durations: crate::durations::Durations::default(),
            past_metrics: Vec::new(),
            history: respawn::History::default(),
            restarts: 0,
        }
    }

    /// Its current worker, in any phase.
    pub(super) fn child(&self) -> Option<&Child> {
        match &self.state {
            SlotState::Running(c) => Some(c),
            _ => None,
        }
    }

    /// Its current worker once it has told the master it is ready.
    pub(super) fn ready_child(&self) -> Option<&Child> {
        self.child().filter(|c| c.was_ready())
    }

    /// Its successor, while one starts.
    pub(super) fn successor(&self) -> Option<(&Child, Purpose)> {
        match &self.succession {
            Succession::Starting { child, purpose } => Some((child, *purpose)),
            _ => None,
        }
    }

    /// Takes its successor out, if one starts.
    pub(super) fn take_successor(&mut self) -> Option<(Child, Purpose)> {
        match std::mem::replace(&mut self.succession, Succession::Idle) {
            Succession::Starting { child, purpose } => Some((child, purpose)),
            other => {
                self.succession = other;
                None
            }
        }
    }

    /// Whether a recycle may start at `now`: no successor starts and no pause runs.
    pub(super) fn may_recycle(&self, now: Instant) -> bool {
        match self.succession {
            Succession::Idle => true,
            Succession::Starting { .. } => false,
            Succession::RecyclePaused { until } => now >= until,
        }
    }

    /// What `status` calls its state.
    pub(super) fn state_name(&self) -> &'static str {
        match &self.state {
            SlotState::Running(c) if c.was_ready() => "ready",
            SlotState::Running(_) => "starting",
            SlotState::Respawning { .. } => "respawning",
            SlotState::Errored(_) => "errored",
            SlotState::Stopped => "stopped",
        }
    }

    /// Applies the fate of its exited worker ([`respawn::Fate`]).
    pub(super) fn settle(&mut self, fate: Fate, now: Instant) {
        self.state = match fate {
            Fate::Respawn(delay) => SlotState::Respawning { at: now + delay },
            Fate::Errored(why) => SlotState::Errored(why),
            Fate::Stop => SlotState::Stopped,
        };
    }
}
