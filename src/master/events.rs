//! The shell's side of the workers' events: reaps exits, reads pipes, and acts on what is
//! due, each time applying the supervisor's decision with the signals, messages, hooks and
//! log lines it needs. Owns no state.

use super::respawn::{Fate, GaveUp};
use super::slot::Purpose;
use super::supervisor::{Readied, Was};
use super::timers::Due;
use super::{signal, HookEvent, Master};
use crate::cluster::Exit;
use crate::config::CpuName;
use crate::ipc::Message;
use crate::log::log;
use crate::Serve;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::time::Instant;

fn describe(exit: Exit) -> String {
    match exit {
        Exit::Code(code) => format!("exit code {code}"),
        Exit::Signal(sig) => match Signal::try_from(sig) {
            Ok(s) => format!("signal {s}"),
            Err(_) => format!("signal {sig}"),
        },
    }
}

impl<H: Serve> Master<'_, H> {
    /// Collects every exited worker.
    pub(super) fn reap(&mut self) {
        loop {
            let (pid, exit) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Exit::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            self.on_exit(pid, exit);
        }
    }

    /// A worker exited: a successor's exit fails its reload or recycle; a slot's worker's
    /// exit decides the slot's fate.
    fn on_exit(&mut self, pid: Pid, exit: Exit) {
        // What it wrote before it exited, first: a draining worker's last stats come just
        // before its exit, and its SIGCHLD may be read before its pipe.
        self.on_pipe(pid);
        let Some((child, was)) = self.sup.remove(pid) else {
            return;
        };
        self.pipes.retain(|p| p.pid != pid);
        self.reopening.gone(pid);
        if let Was::Successor(slot, purpose) = was {
            let why = match &child.failure {
                Some(failure) => format!(
                    "the new worker {} exited before it was ready ({}: {failure})",
                    child.slot,
                    describe(exit)
                ),
                None => format!(
                    "the new worker {} exited before it was ready ({})",
                    child.slot,
                    describe(exit)
                ),
            };
            self.replacement_failed(slot, purpose, &why);
        }
        log!(
            slot = child.slot,
            pid = pid.as_raw(),
            cpu = %CpuName(child.cpu),
            exit = %describe(exit),
            requests = child.stats.requests,
            "worker {} exited (pid {pid}, cpu {}, {}, {} requests)",
            child.slot,
            CpuName(child.cpu),
            describe(exit),
            child.stats.requests
        );
        self.call_hook(HookEvent::Exit(child.info(), exit));
        if let Was::Current(slot) = was {
            let fate = self.sup.settle_exit(slot, &child, exit, Instant::now());
            self.log_fate(slot, fate);
        }
    }

    fn log_fate(&self, slot: usize, fate: Fate) {
        let s = &self.sup.slots[slot];
        match fate {
            Fate::Errored(GaveUp::Config) => tracing::error!(
                "worker {} ERRORED: it cannot start with this configuration (see its log line \
                 above); not respawning it",
                s.index
            ),
            Fate::Errored(GaveUp::Failures(n)) => tracing::error!(
                "worker {} ERRORED: {n} failures to start within {}s; not respawning it",
                s.index,
                self.sup.settings.respawn.window.as_secs_f64()
            ),
            Fate::Respawn(delay) => log!(
                "worker {} respawning on cpu {} in {}ms",
                s.index,
                CpuName(s.cpu),
                delay.as_millis()
            ),
            Fate::Stop => {}
        }
    }

    /// Reads what a worker sent, and acts on each message.
    pub(super) fn on_pipe(&mut self, pid: Pid) {
        let Some(pipes) = self.pipes.iter_mut().find(|p| p.pid == pid) else {
            return;
        };
        for msg in pipes.read() {
            self.on_message(pid, msg);
        }
    }

    fn on_message(&mut self, pid: Pid, msg: Message) {
        let now = Instant::now();
        self.sup.heard(pid, now);
        match msg {
            Message::Ready => self.on_ready(pid, now),
            Message::Stats(stats) => {
                // The dashboard's rates, only where a dashboard is served: each needs the
                // worker's CPU time from /proc.
                let dashboard = self.metrics.is_some();
                if let Some(child) = self.sup.child_mut(pid) {
                    if dashboard {
                        let cpu = super::report::cpu_ms(pid);
                        let counters = [
                            stats.requests,
                            stats.uring_enters,
                            stats.uring_completions,
                            cpu,
                        ];
                        child.rates.update(now, counters);
                    }
                    child.stats = stats;
                }
                self.consider_recycling(pid, now);
            }
            Message::Mounts(mounts) => {
                if let Some(child) = self.sup.child_mut(pid) {
                    child.mounts = mounts;
                }
            }
            Message::User(bytes) => {
                if let Some(info) = self.sup.child_mut(pid).map(|c| c.info()) {
                    self.call_hook(HookEvent::Message(info, &bytes));
                }
            }
            Message::Reopened { round, errno } => self.reopening.answered(pid, round, errno),
            Message::Metrics(samples) => {
                if let Some(child) = self.sup.child_mut(pid) {
                    child.metrics = samples;
                }
            }
            Message::Durations(d) => {
                if let Some(child) = self.sup.child_mut(pid) {
                    child.durations = *d;
                }
            }
            Message::Failed(why) => {
                if let Some(child) = self.sup.child_mut(pid) {
                    child.failure = Some(why);
                }
            }
            other => log!("worker pid {pid}: unexpected message {other:?}"),
        }
    }

    fn on_ready(&mut self, pid: Pid, now: Instant) {
        match self.sup.ready(pid, now) {
            Some(Readied::Started(info)) => {
                log!(
                    slot = info.slot,
                    pid = pid.as_raw(),
                    "worker {} ready (pid {pid})",
                    info.slot
                );
                self.call_hook(HookEvent::Online(info));
            }
            Some(Readied::Replaced {
                new,
                purpose,
                retired,
            }) => {
                log!(
                    "worker {} ready (pid {pid}), replacing the old one",
                    new.slot
                );
                if let Some(old) = retired {
                    let drain_ms = self.sup.settings.drain_timeout.as_millis() as u64;
                    self.tell(old, &Message::Shutdown { drain_ms });
                }
                self.call_hook(HookEvent::Online(new));
                if purpose == Purpose::Recycle {
                    log!("worker {} recycled", new.slot);
                }
            }
            None => {}
        }
    }

    /// Acts on every timer that is due ([`super::timers`]). Acting on one may end another
    /// (a failed reload kills every successor), so each is checked again just before.
    pub(super) fn on_deadlines(&mut self) {
        let now = Instant::now();
        for due in self.sup.due(now) {
            if self.sup.due(now).contains(&due) {
                self.on_due(due, now);
            }
        }
    }

    fn on_due(&mut self, due: Due, now: Instant) {
        match due {
            Due::Respawn(slot) => self.respawn(slot, now),
            Due::NotReady(slot) => self.not_ready(slot, now),
            Due::SuccessorNotReady(slot) => self.successor_not_ready(slot),
            Due::Stuck(pid) => self.stuck(pid, now),
            Due::DrainOverdue(pid) => self.drain_overdue(pid, now),
            Due::Kill(pid) => {
                signal(pid, Signal::SIGKILL);
                self.sup.aborted(pid, now);
            }
            Due::DrainDeadline => self.drain_deadline(now),
            Due::Watchdog => {
                self.notifier.notify("WATCHDOG=1");
                self.sup.watchdog_at = self.notifier.watchdog_every().map(|every| now + every);
            }
        }
    }

    fn respawn(&mut self, slot: usize, now: Instant) {
        let forked = self.fork_worker(slot, false);
        if let Err(e) = &forked {
            log!("worker {slot}: {e}; retrying");
        }
        self.sup.respawned(slot, forked.ok(), now);
    }

    /// A slot's worker was not ready in time: killed, and its exit counts as a failure of
    /// the slot, respawned with backoff.
    fn not_ready(&mut self, slot: usize, now: Instant) {
        let timeout = self.sup.settings.ready_timeout;
        let Some(pid) = self.sup.slots[slot].child().map(|c| c.pid) else {
            return;
        };
        log!(
            "worker {slot} (pid {pid}) was not ready within {}s; killing it",
            timeout.as_secs_f64()
        );
        signal(pid, Signal::SIGKILL);
        self.sup.killed_not_ready(slot, now);
    }

    fn successor_not_ready(&mut self, slot: usize) {
        let Some((pid, purpose)) = self.sup.slots[slot].successor().map(|(c, p)| (c.pid, p)) else {
            return;
        };
        let why = format!(
            "the new worker {slot} (pid {pid}) was not ready within {}s",
            self.sup.settings.ready_timeout.as_secs_f64()
        );
        self.replacement_failed(slot, purpose, &why);
    }

    /// The heartbeat: a worker that reported nothing for `--worker-timeout` is stuck (its
    /// loop does not turn); it gets `SIGABRT`, for a core dump, then `SIGKILL` a second later.
    fn stuck(&mut self, pid: Pid, now: Instant) {
        let timeout = self.sup.settings.worker_timeout;
        let Some(child) = self.sup.children().find(|c| c.pid == pid) else {
            return;
        };
        log!(
            "worker {} (pid {pid}) is stuck: no report for {:.1}s (--worker-timeout {}s); \
             sending SIGABRT",
            child.slot,
            now.duration_since(child.heard).as_secs_f64(),
            timeout.as_secs_f64()
        );
        signal(pid, Signal::SIGABRT);
        self.sup.aborted(pid, now);
    }

    fn drain_overdue(&mut self, pid: Pid, now: Instant) {
        let Some(slot) = self.sup.children().find(|c| c.pid == pid).map(|c| c.slot) else {
            return;
        };
        tracing::warn!(
            "worker {slot} (pid {pid}) did not drain within the drain timeout; killing it"
        );
        signal(pid, Signal::SIGKILL);
        self.sup.aborted(pid, now);
    }

    /// The shutdown's drain deadline: kills what is left.
    fn drain_deadline(&mut self, now: Instant) {
        let left = self.sup.drain_deadline_passed(now);
        if !left.is_empty() {
            tracing::warn!("drain timeout: killing {} workers", left.len());
            for pid in left {
                signal(pid, Signal::SIGKILL);
            }
        }
    }
}
