//! Replacing workers without dropping a request: rolling reloads of every slot, and the
//! recycling of one worker after `--max-requests` or past `--max-memory`. Both fork the
//! successor first and drain the old worker only once the successor is ready.

use super::*;

/// A rolling reload in progress.
pub(super) struct Reload {
    /// The next slot to replace.
    pub(super) next: usize,
    pub(super) replaced: u32,
    pub(super) started: Instant,
    /// Control connections to answer when it is over.
    pub(super) waiters: Vec<u64>,
}

impl Reload {
    pub(super) fn new(waiters: Vec<u64>) -> Reload {
        Reload {
            next: 0,
            replaced: 0,
            started: Instant::now(),
            waiters,
        }
    }
}

/// A number in `0..=max`, different for each worker, so that recycles spread out. Not for
/// anything that needs real randomness.
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

impl<H: Handler> Master<'_, H> {
    /// Starts a reload, or queues one if a reload is running (from SIGHUP when `waiter` is
    /// `None`, else from a control client, answered when it is over).
    pub(super) fn request_reload(&mut self, waiter: Option<u64>) {
        if self.state != State::Running {
            if let Some(id) = waiter {
                self.control.answer(id, "error: shutting down\n");
            }
            return;
        }
        let waiters: Vec<u64> = waiter.into_iter().collect();
        if self.reload.is_some() {
            self.reload_queued
                .get_or_insert_with(Vec::new)
                .extend(waiters);
            return;
        }
        log!("reload: replacing {} workers", self.slots.len());
        self.notifier.notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            systemd::monotonic_usec()
        ));
        self.announced_ready = false;
        self.reload = Some(Reload::new(waiters));
    }

    /// Advances the reload: forks successors for up to `reload_parallel` slots at a time;
    /// finishes when every slot has been handled.
    pub(super) fn step_reload(&mut self) {
        let Some(reload) = &self.reload else { return };
        let parallel = self.config.reload_parallel as usize;
        let mut next = reload.next;
        let mut in_progress = self.slots.iter().filter(|s| s.incoming.is_some()).count();
        while in_progress < parallel && next < self.slots.len() {
            let slot = next;
            if self.slots[slot].incoming.is_some() {
                break; // Being recycled: the reload takes it up once that is over.
            }
            next += 1;
            if self.slots[slot].child().is_none() {
                continue; // Respawning or errored: the next worker it gets is new anyway.
            }
            match self.fork_worker(slot) {
                Ok(child) => {
                    let deadline = Instant::now() + self.config.ready_timeout;
                    self.slots[slot].incoming = Some((child, deadline));
                    in_progress += 1;
                }
                Err(e) => {
                    self.reload_failed(&format!("forking worker {slot}: {e}"));
                    return;
                }
            }
        }
        if let Some(reload) = &mut self.reload {
            reload.next = next;
        }
        if in_progress == 0 && next >= self.slots.len() {
            let reload = self.reload.take().expect("checked above");
            let text = format!(
                "ok: reloaded {} workers in {}ms\n",
                reload.replaced,
                reload.started.elapsed().as_millis()
            );
            log!(
                "reload complete: {}",
                text.trim_start_matches("ok: ").trim_end()
            );
            self.finish_reload(reload, &text);
        }
    }

    /// A successor that will not be ready: a failed recycle keeps the old worker and waits
    /// before trying again; a failed reload ends the reload.
    pub(super) fn replacement_failed(&mut self, slot: usize, why: &str) {
        let s = &mut self.slots[slot];
        if !s.recycling {
            return self.reload_failed(why);
        }
        s.recycling = false;
        s.recycle_pause = Some(Instant::now() + RESPAWN_DELAY_MAX);
        if let Some((child, _)) = s.incoming.take() {
            let _ = kill(child.pid, Signal::SIGKILL);
            self.retiring.push(child);
        }
        log!("RECYCLE FAILED: {why}; the old worker keeps serving");
    }

    /// Replaces the worker of the slot `pid` serves, the way a reload does, once it
    /// answered `--max-requests` (plus its jitter) or outgrew `--max-memory`.
    pub(super) fn consider_recycling(&mut self, pid: Pid) {
        let Some(Place::Slot(slot)) = self.find(pid) else {
            return;
        };
        let (max_mib, now) = (self.config.max_memory_mib, Instant::now());
        let s = &self.slots[slot];
        if self.state != State::Running
            || s.incoming.is_some()
            || s.recycle_pause.is_some_and(|until| now < until)
        {
            return;
        }
        let Some(child) = s.child().filter(|c| c.ready) else {
            return;
        };
        let why = match (child.recycle_after, max_mib) {
            (Some(n), _) if child.stats.requests >= n => {
                format!("after {} requests (limit {n})", child.stats.requests)
            }
            (_, Some(mib)) if rss_kib(child.pid) / 1024 >= mib => {
                format!(
                    "at {} MiB resident (limit {mib} MiB)",
                    rss_kib(child.pid) / 1024
                )
            }
            _ => return,
        };
        log!("recycling worker {slot} (pid {pid}) {why}");
        match self.fork_worker(slot) {
            Ok(new) => {
                let deadline = now + self.config.ready_timeout;
                self.slots[slot].incoming = Some((new, deadline));
                self.slots[slot].recycling = true;
            }
            Err(e) => {
                log!("RECYCLE FAILED: forking: {e}");
                self.slots[slot].recycle_pause = Some(now + RESPAWN_DELAY_MAX);
            }
        }
    }

    /// Ends the reload: the successors not yet ready are killed and retired, and the old
    /// workers keep serving.
    pub(super) fn reload_failed(&mut self, why: &str) {
        let Some(reload) = self.reload.take() else {
            return;
        };
        log!("RELOAD FAILED: {why}; the old workers keep serving");
        for s in &mut self.slots {
            if let Some((child, _)) = s.incoming.take() {
                let _ = kill(child.pid, Signal::SIGKILL);
                self.retiring.push(child);
            }
            s.recycling = false;
        }
        let text = format!("error: reload failed: {why}; the old workers keep serving\n");
        self.finish_reload(reload, &text);
    }

    /// Answers the control clients that waited for `reload`, and starts the queued one.
    pub(super) fn finish_reload(&mut self, reload: Reload, text: &str) {
        for id in reload.waiters {
            self.control.answer(id, text);
        }
        if let Some(waiters) = self.reload_queued.take() {
            log!("reload: starting the one requested meanwhile");
            self.reload = Some(Reload::new(waiters));
        }
    }
}
