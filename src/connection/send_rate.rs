//! The minimum send rate (`Limits::send_rate_min`): a client that owes response bytes must
//! take them at a minimum rate, or it is reset.

use super::{Act, Conn, Expiry, Phase, Sending};
use crate::config::Timeouts;
use crate::Serve;
use ringmaster_uring::OpId;
use std::time::{Duration, Instant};

/// While a client owes response bytes, what it took is sampled this often, and each window
/// between two samples is judged against the minimum send rate.
pub(crate) const SEND_RATE_WINDOW: Duration = Duration::from_secs(5);
/// Bytes a client may owe after its sends completed (the kernel holds them) before the
/// minimum send rate watches it: below this a slow reader holds little, and the idle
/// timeout ends it.
pub(crate) const SEND_WATCH_BYTES_MIN: u64 = 64 * 1024;

/// The minimum send rate's watch over a connection whose client owes response bytes (a
/// send waits for room in the kernel, or the kernel holds sent bytes the client has not
/// acknowledged), as the body-rate minimum watches a request body: what the client *took*
/// in each window of [`SEND_RATE_WINDOW`], that is the bytes the kernel accepted minus those
/// it still holds unacknowledged (`SIOCOUTQ`). The bytes the kernel accepted alone would
/// not do: a send buffer of megabytes completes sends in bursts minutes apart for a reader
/// that takes little, so a fair reader would look stalled and an unfair one could hide. And
/// a slow reader's response held by the kernel costs memory too (the host's TCP memory; on
/// loopback several megabytes a socket), so it is watched until the client took it all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendWatch {
    /// The client owes nothing worth watching, or no minimum is set.
    Off,
    /// A sample is due; `last` is the previous one (when, and what the client had taken).
    Due { last: Option<(Instant, u64)> },
    /// A sample is being taken (by the ring operation `op`, for a direct descriptor).
    Sampling {
        last: Option<(Instant, u64)>,
        op: Option<OpId>,
    },
    /// The client had taken `taken` bytes at `at`; the next sample is due at `next`.
    Watching {
        at: Instant,
        taken: u64,
        next: Instant,
    },
}

impl SendWatch {
    /// A teardown drops a sample not asked for yet; one in flight is waited for.
    pub(super) fn cancel_due(&mut self) {
        if let SendWatch::Due { .. } = self {
            *self = SendWatch::Off;
        }
    }
}

impl Conn {
    /// Decides at a tick whether the kernel's send queue should be sampled: the client owes
    /// bytes (a send waits for room in the kernel, or it has at least
    /// [`SEND_WATCH_BYTES_MIN`] more than it had taken at the last sample, which the kernel
    /// may still hold) and no sample was taken for a [`SEND_RATE_WINDOW`]. Returns whether
    /// one is now due ([`Act::SampleSendQueue`]).
    pub(super) fn send_sample_due(&mut self, now: Instant, t: &Timeouts) -> bool {
        if t.send_rate_min == 0 || matches!(self.phase, Phase::Closing(_)) {
            self.send_watch.cancel_due();
            if let SendWatch::Watching { .. } = self.send_watch {
                self.send_watch = SendWatch::Off;
            }
            return false;
        }
        let owes = matches!(self.send, Sending::InFlight { .. })
            || self.sent >= self.taken + SEND_WATCH_BYTES_MIN;
        let last = match self.send_watch {
            // One sample at a time; its result settles the watch either way.
            SendWatch::Due { .. } | SendWatch::Sampling { .. } => return false,
            SendWatch::Off if owes => None,
            SendWatch::Off => return false,
            SendWatch::Watching { at, taken, next } if now >= next => Some((at, taken)),
            SendWatch::Watching { .. } => return false,
        };
        self.send_watch = SendWatch::Due { last };
        true
    }

    /// The sample act, when one is due.
    pub(super) fn sample_act(&mut self) -> Option<Act> {
        let SendWatch::Due { last } = self.send_watch else {
            return None;
        };
        self.send_watch = SendWatch::Sampling { last, op: None };
        Some(Act::SampleSendQueue)
    }

    /// Whether a sample's ring operation is in flight: the slot is not reused before it
    /// ends.
    pub(super) fn sampling(&self) -> bool {
        matches!(self.send_watch, SendWatch::Sampling { op: Some(_), .. })
    }

    /// The sample of the last [`Act::SampleSendQueue`] is taken by the ring operation `op`.
    pub(crate) fn sampling_with(&mut self, op: OpId) {
        if let SendWatch::Sampling { last, .. } = self.send_watch {
            self.send_watch = SendWatch::Sampling { last, op: Some(op) };
        }
    }

    /// A sample came back: `unacked` bytes were still in the kernel's send queue (`None`:
    /// the sample failed, and the watch starts over). A client that still owes bytes and
    /// took less than the minimum rate since the last sample is reset.
    pub(crate) fn on_send_sample<H: Serve>(
        &mut self,
        unacked: Option<u64>,
        ctx: &mut super::Ctx<'_, H>,
    ) {
        if self.judge_sample(ctx.now, unacked, &ctx.timeouts) == Some(Expiry::Abort) {
            self.abort(ctx);
        }
    }

    /// The verdict on a sample: [`Expiry::Abort`] when the client took too little.
    pub(super) fn judge_sample(
        &mut self,
        now: Instant,
        unacked: Option<u64>,
        t: &Timeouts,
    ) -> Option<Expiry> {
        let SendWatch::Sampling { last, .. } = self.send_watch else {
            return None;
        };
        self.send_watch = SendWatch::Off;
        let unacked = unacked?;
        let taken = self.sent.saturating_sub(unacked);
        self.taken = taken;
        if unacked == 0 || matches!(self.phase, Phase::Closing(_)) {
            return None; // It took everything there was: nothing to judge.
        }
        if let Some((at, before)) = last {
            if !kept_up(before, taken, now.duration_since(at), t.send_rate_min) {
                return Some(Expiry::Abort);
            }
        }
        self.send_watch = SendWatch::Watching {
            at: now,
            taken,
            next: now + SEND_RATE_WINDOW,
        };
        None
    }
}

/// Whether a client that had taken `before` bytes of its responses, and `taken` a `window`
/// later, took them at `rate` bytes a second at least.
pub(super) fn kept_up(before: u64, taken: u64, window: Duration, rate: u64) -> bool {
    let due = u128::from(rate) * window.as_millis() / 1000;
    u128::from(taken.saturating_sub(before)) >= due
}
