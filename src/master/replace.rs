//! The shell's side of replacing workers without dropping a request: rolling reloads of
//! every slot ([`super::reload`]) and the recycling of one worker ([`super::recycle`]). Both
//! fork the successor first; the old worker drains only once the successor is ready. Forks,
//! kills, answers control clients and notifies systemd as the supervisor decides; owns no
//! state.

use super::reload::{Ended, Requested};
use super::report::rss_kib;
use super::slot::Purpose;
use super::{signal, Master};
use crate::log::log;
use crate::systemd;
use crate::Serve;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::time::Instant;

impl<H: Serve> Master<'_, H> {
    /// Starts a reload, or queues one if a reload is running (from SIGHUP when `waiter` is
    /// `None`, else from a control client, answered when it is over).
    pub(super) fn request_reload(&mut self, waiter: Option<u64>) {
        match self.sup.request_reload(waiter, Instant::now()) {
            Requested::Refused => {
                if let Some(id) = waiter {
                    self.control.answer(id, "error: shutting down\n");
                }
            }
            Requested::Queued => {}
            Requested::Started => {
                log!("reload: replacing {} workers", self.sup.slots.len());
                self.notifier.notify(&format!(
                    "RELOADING=1\nMONOTONIC_USEC={}",
                    systemd::monotonic_usec()
                ));
                self.announced_ready = false;
            }
        }
    }

    /// Advances the reload: forks the successors its plan names; finishes it when every
    /// slot has been handled.
    pub(super) fn step_reload(&mut self) {
        let Some(plan) = self.sup.step_reload() else {
            return;
        };
        if !plan.fork.is_empty() && self.binary.reload.is_none() {
            // The binary on disk now: every successor of this reload runs this very file,
            // with the configuration file as it is now.
            if let Some(path) = &self.binary.path {
                if let Some((config, _)) = crate::config_file::started_with() {
                    match crate::config_file::read(config) {
                        Ok(text) => self.binary.reload_config = Some(text),
                        Err(e) => return self.reload_failed(&e),
                    }
                }
                match super::exec::open_binary(path) {
                    Ok(fd) => self.binary.opened_for_reload(fd),
                    Err(e) => return self.reload_failed(&e),
                }
            }
        }
        for slot in plan.fork {
            match self.fork_worker(slot, true) {
                Ok(child) => self.sup.successor_forked(slot, child, Purpose::Reload),
                Err(e) => return self.reload_failed(&format!("forking worker {slot}: {e}")),
            }
        }
        // Over only once the workers it replaced are gone too (drained, or killed at the
        // drain timeout): until they stop accepting, a new connection could still meet the
        // old code, and `reload` answers that the new code serves.
        if plan.complete && self.sup.retiring.is_empty() {
            let ended = self.sup.end_reload(Instant::now()).expect("a reload runs");
            // The master's own settings the file changed are not applied: say so, rather
            // than answer as if they were.
            let unapplied = match (
                &self.binary.reload_config,
                crate::config_file::started_with(),
            ) {
                (Some(now), Some((_, started))) => crate::config_file::needs_restart(started, now),
                _ => Vec::new(),
            };
            let note = match unapplied.is_empty() {
                true => String::new(),
                false => {
                    tracing::warn!(
                        "reload: the config file changes {} since the start, which only a \
                         restart applies (the master's own settings; workers: `scale N`)",
                        unapplied.join(", ")
                    );
                    format!("; not applied until a restart: {}", unapplied.join(", "))
                }
            };
            let text = format!(
                "ok: reloaded {} workers in {}ms{note}\n",
                ended.replaced,
                ended.took.as_millis()
            );
            log!(
                replaced = ended.replaced,
                took_ms = ended.took.as_millis() as u64,
                "reload complete: {}",
                text.trim_start_matches("ok: ").trim_end()
            );
            // The new generation's binary is the one its respawns run.
            self.binary.reloaded();
            self.finish_reload(ended, &text);
        }
    }

    /// A successor that will not be ready: a failed recycle keeps the old worker and waits
    /// before trying again; a failed reload ends the reload.
    pub(super) fn replacement_failed(&mut self, slot: usize, purpose: Purpose, why: &str) {
        match purpose {
            Purpose::Reload => self.reload_failed(why),
            Purpose::Recycle => {
                if let Some(pid) = self.sup.recycle_failed(slot, Instant::now()) {
                    signal(pid, Signal::SIGKILL);
                }
                tracing::warn!("RECYCLE FAILED: {why}; the old worker keeps serving");
            }
        }
    }

    /// Replaces the worker `pid`, the way a reload does, if the supervisor says it is due
    /// ([`super::recycle`]). Its resident memory is read only where a limit is set, and only
    /// for a worker that may be recycled.
    pub(super) fn consider_recycling(&mut self, pid: Pid, now: Instant) {
        if self.sup.recycle_candidate(pid, now).is_none() {
            return;
        }
        let rss = self.config.max_memory_mib.map(|_| rss_kib(pid));
        let Some((slot, why)) = self.sup.recycle_due(pid, now, rss) else {
            return;
        };
        log!("recycling worker {slot} (pid {pid}) {why}");
        match self.fork_worker(slot, false) {
            Ok(child) => self.sup.successor_forked(slot, child, Purpose::Recycle),
            Err(e) => {
                self.sup.recycle_failed(slot, now);
                tracing::warn!("RECYCLE FAILED: forking: {e}");
            }
        }
    }

    /// Ends the reload: the successors not yet ready are killed and retired, and the old
    /// workers keep serving.
    pub(super) fn reload_failed(&mut self, why: &str) {
        let Some((ended, killed)) = self.sup.fail_reload(Instant::now()) else {
            return;
        };
        tracing::error!("RELOAD FAILED: {why}; the old workers keep serving");
        self.binary.reload = None;
        self.binary.reload_config = None;
        for pid in killed {
            signal(pid, Signal::SIGKILL);
        }
        let text = format!("error: reload failed: {why}; the old workers keep serving\n");
        self.finish_reload(ended, &text);
    }

    /// Answers the control clients that waited for the reload; says so if the one queued
    /// behind it started.
    fn finish_reload(&mut self, ended: Ended, text: &str) {
        self.binary.reload_ended(text);
        for id in ended.waiters {
            self.control.answer(id, text);
        }
        if ended.next_started {
            log!("reload: starting the one requested meanwhile");
        }
    }
}
