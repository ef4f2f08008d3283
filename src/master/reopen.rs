//! `SIGUSR1` and `ringmaster reopen`: the access log is reopened at its path, for logrotate.
//!
//! The master reopens its own descriptor (the one each worker forked later inherits), then
//! tells every live worker [`Message::Reopen`]; each worker opens the path itself, switches
//! once its write in flight to the old file completes, and answers [`Message::Reopened`].
//! The workers open the path themselves rather than receive the master's descriptor with
//! `SCM_RIGHTS` because their channel is a pair of pipes, which cannot carry descriptors:
//! passing one would need a socketpair per worker beside the pipes, for an `open(2)` each
//! worker can make with the path it already has (same user, same working directory).
//!
//! A [`Round`] is the decision as plain values: who must still answer, who switched, who
//! failed, when to stop waiting, and what to answer. The shell below opens, sends, logs,
//! counts and answers. A failure anywhere keeps that process on its old file.

use super::Master;
use crate::ipc::Message;
use crate::log::log;
use crate::worker;
use crate::Serve;
use nix::errno::Errno;
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// How long the master waits for every worker to answer a reopen. A worker answers once
/// its write in flight to the old file completes, which a stalled disk can hold up; past
/// this the reopen is reported failed for the workers that did not answer (they still
/// switch when their write completes).
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The master's reopen state: the round in progress, if any, and the counters.
#[derive(Debug, Default)]
pub(super) struct Reopening {
    /// The round whose answers are awaited.
    round: Option<Round>,
    /// Rounds started since the master started; the next round's number is one more.
    rounds: u64,
    /// Reopens that failed since the master started: the master's own, and each worker's
    /// (an `open(2)` error, or no answer within [`ANSWER_TIMEOUT`]).
    pub(super) failures: u64,
}

/// One reopen request, sent to every live worker, awaiting their answers.
#[derive(Debug, PartialEq)]
pub(super) struct Round {
    number: u64,
    /// Control connections to answer when the round is over (a request while a round is in
    /// progress starts a new one, which answers both).
    waiters: Vec<u64>,
    /// Workers that have not answered yet.
    waiting: Vec<Pid>,
    /// Workers that switched to the new file.
    switched: usize,
    /// Workers whose `open(2)` failed, with why.
    failed: Vec<(Pid, Errno)>,
    deadline: Instant,
}

impl Round {
    pub(super) fn new(number: u64, waiters: Vec<u64>, workers: Vec<Pid>, now: Instant) -> Round {
        Round {
            number,
            waiters,
            waiting: workers,
            switched: 0,
            failed: Vec::new(),
            deadline: now + ANSWER_TIMEOUT,
        }
    }

    /// A worker's answer; one for an older round, or from a worker not asked, is ignored.
    pub(super) fn answered(&mut self, pid: Pid, round: u64, errno: i32) {
        if round != self.number || !self.waiting.contains(&pid) {
            return;
        }
        self.waiting.retain(|p| *p != pid);
        match errno {
            0 => self.switched += 1,
            e => self.failed.push((pid, Errno::from_raw(e))),
        }
    }

    /// A worker exited: no answer will come, and its file is closed anyway.
    pub(super) fn gone(&mut self, pid: Pid) {
        self.waiting.retain(|p| *p != pid);
    }

    /// Every worker answered, or the time is up.
    pub(super) fn over(&self, now: Instant) -> bool {
        self.waiting.is_empty() || now >= self.deadline
    }

    /// The failed workers and those that did not answer: what the failure counter adds.
    pub(super) fn failures(&self) -> usize {
        self.failed.len() + self.waiting.len()
    }

    /// The control answer, one line: `ok: ...` when every worker switched, else `error: ...`
    /// with each cause and the remedy.
    pub(super) fn answer(&self, path: &str) -> String {
        if self.failures() == 0 {
            return format!("ok: reopened the access log in {} workers\n", self.switched);
        }
        let mut causes: Vec<String> = self
            .failed
            .iter()
            .map(|(pid, e)| format!("worker pid {pid}: {}", e.desc()))
            .collect();
        if !self.waiting.is_empty() {
            causes.push(format!(
                "{} workers did not answer within {}s (a write to the old file is stuck; they \
                 switch when it completes)",
                self.waiting.len(),
                ANSWER_TIMEOUT.as_secs()
            ));
        }
        format!(
            "error: the access log {path} was reopened in {} workers, not in {} ({}); those \
             still write to the old file: fix the cause and reopen again\n",
            self.switched,
            self.failures(),
            causes.join("; ")
        )
    }
}

impl Reopening {
    /// The instant the round in progress stops waiting, if one is.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.round.as_ref().map(|r| r.deadline)
    }

    /// Starts round `number + 1` for `workers`, answering `waiter` (and a round in progress's
    /// waiters) when it is over; returns its number.
    fn start(&mut self, waiter: Option<u64>, workers: Vec<Pid>, now: Instant) -> u64 {
        self.rounds += 1;
        let mut waiters = self.round.take().map_or_else(Vec::new, |r| r.waiters);
        waiters.extend(waiter);
        self.round = Some(Round::new(self.rounds, waiters, workers, now));
        self.rounds
    }

    pub(super) fn answered(&mut self, pid: Pid, round: u64, errno: i32) {
        if let Some(r) = &mut self.round {
            r.answered(pid, round, errno);
        }
    }

    pub(super) fn gone(&mut self, pid: Pid) {
        if let Some(r) = &mut self.round {
            r.gone(pid);
        }
    }

    /// The round, taken out and counted, once it is over.
    fn finish(&mut self, now: Instant) -> Option<Round> {
        if !self.round.as_ref()?.over(now) {
            return None;
        }
        let round = self.round.take()?;
        self.failures += round.failures() as u64;
        Some(round)
    }
}

impl<H: Serve> Master<'_, H> {
    /// `SIGUSR1` (`waiter` `None`) or `ringmaster reopen` (the control connection to answer):
    /// reopens the master's access log, then asks every live worker to.
    pub(super) fn request_reopen(&mut self, waiter: Option<u64>) {
        let Some(path) = self.config.access_log.clone() else {
            log!("reopen requested: no access log is kept (--access-log); nothing to reopen");
            if let Some(id) = waiter {
                self.control
                    .answer(id, "ok: no access log is kept; nothing to reopen\n");
            }
            return;
        };
        match worker::open_access_log(&path) {
            Ok(file) => self.access_log = Some(file),
            Err(e) => {
                self.reopening.failures += 1;
                let text = format!(
                    "error: cannot reopen the access log {}: {e}; the master and the workers \
                     still write to the old file: make its directory exist and writable, \
                     then reopen again\n",
                    path.display()
                );
                log!("{}", text.trim_end().trim_start_matches("error: "));
                if let Some(id) = waiter {
                    self.control.answer(id, &text);
                }
                return;
            }
        }
        let workers: Vec<Pid> = self.pipes.iter().map(|p| p.pid).collect();
        let round = self.reopening.start(waiter, workers, Instant::now());
        for p in &self.pipes {
            p.tell(&Message::Reopen { round });
        }
        self.finish_reopen();
    }

    /// Answers and logs the round in progress once it is over.
    pub(super) fn finish_reopen(&mut self) {
        let Some(round) = self.reopening.finish(Instant::now()) else {
            return;
        };
        let path = self
            .config
            .access_log
            .as_ref()
            .map_or_else(String::new, |p| p.display().to_string());
        let text = round.answer(&path);
        match round.failures() {
            0 => log!(
                "access log {path} reopened in the master and {} workers",
                round.switched
            ),
            _ => log!("{}", text.trim_end().trim_start_matches("error: ")),
        }
        for id in round.waiters {
            self.control.answer(id, &text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(n: i32) -> Pid {
        Pid::from_raw(n)
    }

    #[test]
    fn a_round_is_over_when_every_worker_answered() {
        let t0 = Instant::now();
        let mut r = Round::new(1, vec![7], vec![pid(10), pid(11)], t0);
        assert!(!r.over(t0));
        r.answered(pid(10), 1, 0);
        assert!(!r.over(t0));
        r.answered(pid(11), 1, 0);
        assert!(r.over(t0));
        assert_eq!(r.failures(), 0);
        assert_eq!(
            r.answer("a.log"),
            "ok: reopened the access log in 2 workers\n"
        );
    }

    #[test]
    fn answers_of_another_round_or_worker_or_twice_are_ignored() {
        let t0 = Instant::now();
        let mut r = Round::new(2, vec![], vec![pid(10)], t0);
        r.answered(pid(10), 1, 0);
        r.answered(pid(99), 2, 0);
        assert!(!r.over(t0));
        r.answered(pid(10), 2, 0);
        r.answered(pid(10), 2, 0);
        assert_eq!(r.switched, 1);
    }

    #[test]
    fn a_failed_open_and_a_silent_worker_are_failures_with_causes() {
        let t0 = Instant::now();
        let mut r = Round::new(1, vec![], vec![pid(10), pid(11), pid(12)], t0);
        r.answered(pid(10), 1, libc::EACCES);
        r.answered(pid(11), 1, 0);
        assert!(!r.over(t0 + ANSWER_TIMEOUT - Duration::from_millis(1)));
        assert!(r.over(t0 + ANSWER_TIMEOUT));
        assert_eq!(r.failures(), 2);
        let text = r.answer("/var/log/a.log");
        assert!(text.starts_with("error: "), "{text}");
        for part in [
            "in 1 workers, not in 2",
            "worker pid 10: Permission denied",
            "1 workers did not answer within 5s",
            "reopen again",
        ] {
            assert!(text.contains(part), "{part:?} in {text}");
        }
    }

    #[test]
    fn a_worker_that_exits_is_not_waited_for() {
        let t0 = Instant::now();
        let mut r = Round::new(1, vec![], vec![pid(10), pid(11)], t0);
        r.answered(pid(10), 1, 0);
        r.gone(pid(11));
        assert!(r.over(t0));
        assert_eq!(r.answer("a"), "ok: reopened the access log in 1 workers\n");
    }

    #[test]
    fn no_worker_is_over_at_once() {
        let t0 = Instant::now();
        let mut reopening = Reopening::default();
        reopening.start(Some(3), vec![], t0);
        let round = reopening.finish(t0).expect("nothing to wait for");
        assert_eq!(round.waiters, vec![3]);
        assert_eq!(reopening.deadline(), None);
    }

    #[test]
    fn a_new_request_supersedes_the_round_and_answers_its_waiters_too() {
        let t0 = Instant::now();
        let mut reopening = Reopening::default();
        assert_eq!(reopening.start(Some(1), vec![pid(10)], t0), 1);
        assert_eq!(reopening.start(None, vec![pid(10)], t0), 2);
        reopening.answered(pid(10), 1, 0);
        assert!(
            reopening.finish(t0).is_none(),
            "round 1's answer does not end round 2"
        );
        reopening.answered(pid(10), 2, 0);
        let round = reopening.finish(t0).unwrap();
        assert_eq!((round.waiters, round.switched), (vec![1], 1));
        assert_eq!(reopening.failures, 0);
    }

    #[test]
    fn failures_are_counted_when_the_round_ends() {
        let t0 = Instant::now();
        let mut reopening = Reopening::default();
        reopening.start(None, vec![pid(10), pid(11)], t0);
        reopening.answered(pid(10), 1, libc::ENOENT);
        assert_eq!(reopening.failures, 0);
        assert!(reopening.finish(t0 + ANSWER_TIMEOUT).is_some());
        assert_eq!(reopening.failures, 2);
    }
}
