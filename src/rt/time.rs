//! Time for handler code: [`sleep`] and [`timeout`], on the worker's timers ([`Timers`]):
//! a deadline heap the worker's loop fires, its one `io_uring_enter` waiting no longer than
//! the earliest deadline. A ring timeout per sleep would cost an `hrtimer` and a wake-up
//! each; timers due in the same millisecond here share one.

use slab::Slab;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Waits `duration` (the worker goes on serving meanwhile). Timers are kept by the worker,
/// to the millisecond, never early; the worker's one wait ends at the earliest, so that
/// a thousand timers due in the same millisecond cost one wake-up, not a thousand.
///
/// # Panics
/// When polled outside a worker.
///
/// # Examples
///
/// ```
/// use ringmaster::rt::sleep;
/// use ringmaster::{OwnedRequest, Response};
/// use std::time::Duration;
///
/// // Holds up a failed login by 250 ms; the worker serves its other requests meanwhile.
/// async fn login(req: OwnedRequest) -> Response {
///     let mut res = Response::new();
///     if req.header("Authorization") != Some(b"Bearer letmein".as_slice()) {
///         sleep(Duration::from_millis(250)).await;
///         res.status(401);
///     }
///     res
/// }
/// ```
pub fn sleep(duration: Duration) -> Sleep {
    Sleep {
        duration,
        state: SleepState::Unarmed,
    }
}

/// The future of [`sleep`].
///
/// See [`rt`](crate::rt)'s example.
#[derive(Debug)]
#[must_use = "a sleep does nothing unless awaited"]
pub struct Sleep {
    duration: Duration,
    state: SleepState,
}

#[derive(Debug)]
enum SleepState {
    Unarmed,
    Armed(TimerKey),
    Done,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        match this.state {
            SleepState::Done => Poll::Ready(()),
            SleepState::Unarmed => {
                let duration = this.duration;
                let armed = super::with(|rt| {
                    let key = rt.timers.insert(duration, cx.waker());
                    if key.is_none() {
                        rt.wait_for_room(cx.waker());
                    }
                    key
                });
                if let Some(key) = armed {
                    this.state = SleepState::Armed(key);
                }
                Poll::Pending
            }
            SleepState::Armed(key) => match super::with(|rt| rt.timers.poll(key, cx.waker())) {
                true => {
                    this.state = SleepState::Done;
                    Poll::Ready(())
                }
                false => Poll::Pending,
            },
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let SleepState::Armed(key) = self.state {
            super::try_with(|rt| rt.timers.cancel(key));
        }
    }
}

/// The most timers a worker keeps at once; past it a new sleep waits for one to end.
///
/// See [`sleep`]'s example (each [`sleep`] and [`timeout`] is one timer while it waits).
pub const TIMERS_MAX: usize = 1 << 17;

/// Names one timer; stale once it fired or was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerKey {
    slot: u32,
    generation: u32,
}

#[derive(Debug)]
struct Timer {
    generation: u32,
    waker: Option<Waker>,
    fired: bool,
}

/// The worker's timers: a slab of them and a min-heap of their deadlines in whole
/// milliseconds since the worker started. A cancelled timer leaves its heap entry behind
/// (skipped when it comes up); the heap is rebuilt when such entries outnumber the live
/// ones, so it stays bounded.
#[derive(Debug)]
pub(crate) struct Timers {
    timers: Slab<Timer>,
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// Each timer's deadline, by slot (for rebuilding the heap).
    deadlines: Vec<u64>,
    generation: u32,
    base: Instant,
    /// The time of this loop turn, in milliseconds since `base`, rounded down.
    now_ms: u64,
}

impl Timers {
    pub(crate) fn new(capacity: usize) -> Timers {
        Timers {
            timers: Slab::with_capacity(capacity.min(4096)),
            heap: BinaryHeap::with_capacity(capacity.min(4096)),
            deadlines: Vec::new(),
            generation: 0,
            base: Instant::now(),
            now_ms: 0,
        }
    }

    /// Sets the time of this loop turn.
    pub(crate) fn set_now(&mut self, now: Instant) {
        self.now_ms = millis_down(now.saturating_duration_since(self.base));
    }

    /// A timer due `after` from this turn, rounded up to the millisecond; `None` at the
    /// bound.
    fn insert(&mut self, after: Duration, waker: &Waker) -> Option<TimerKey> {
        if self.timers.len() >= TIMERS_MAX {
            return None;
        }
        // Never early: the turn's time is rounded down to its millisecond, so the real time
        // may be up to a millisecond past it, and the duration is rounded up.
        let due = self
            .now_ms
            .saturating_add(millis_up(after))
            .saturating_add(1);
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let slot = self.timers.insert(Timer {
            generation,
            waker: Some(waker.clone()),
            fired: false,
        }) as u32;
        if self.deadlines.len() <= slot as usize {
            self.deadlines.resize(slot as usize + 1, 0);
        }
        self.deadlines[slot as usize] = due;
        self.heap.push(Reverse((due, slot, generation)));
        Some(TimerKey { slot, generation })
    }

    fn live(&mut self, key: TimerKey) -> Option<&mut Timer> {
        self.timers
            .get_mut(key.slot as usize)
            .filter(|t| t.generation == key.generation)
    }

    /// Whether the timer fired (it is then gone); else records `waker`.
    fn poll(&mut self, key: TimerKey, waker: &Waker) -> bool {
        let Some(timer) = self.live(key) else {
            return true;
        };
        if timer.fired {
            self.timers.remove(key.slot as usize);
            return true;
        }
        match &timer.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => timer.waker = Some(waker.clone()),
        }
        false
    }

    /// Drops a timer whose future is gone.
    fn cancel(&mut self, key: TimerKey) {
        if self.live(key).is_some() {
            self.timers.remove(key.slot as usize);
            if self.heap.len() > 2 * self.timers.len() + 1024 {
                self.rebuild();
            }
        }
    }

    /// The heap of the live timers only.
    fn rebuild(&mut self) {
        self.heap = self
            .timers
            .iter()
            .filter(|(_, t)| !t.fired)
            .map(|(slot, t)| Reverse((self.deadlines[slot], slot as u32, t.generation)))
            .collect();
    }

    /// Wakes every timer due by this turn; returns how many.
    pub(crate) fn fire(&mut self) -> usize {
        let mut fired = 0;
        while let Some(&Reverse((due, slot, generation))) = self.heap.peek() {
            if due > self.now_ms {
                break;
            }
            self.heap.pop();
            if let Some(timer) = self.live(TimerKey { slot, generation }) {
                timer.fired = true;
                if let Some(waker) = timer.waker.take() {
                    waker.wake();
                }
                fired += 1;
            }
        }
        fired
    }

    /// How long from `now` until the earliest timer is due, if any timer waits.
    pub(crate) fn next_due(&mut self, now: Instant) -> Option<Duration> {
        while let Some(&Reverse((due, slot, generation))) = self.heap.peek() {
            if self.live(TimerKey { slot, generation }).is_some() {
                let at = self.base + Duration::from_millis(due);
                return Some(at.saturating_duration_since(now));
            }
            self.heap.pop();
        }
        None
    }

    /// Timers waiting.
    pub(crate) fn len(&self) -> usize {
        self.timers.len()
    }
}

fn millis_down(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn millis_up(d: Duration) -> u64 {
    let down = millis_down(d);
    match d.subsec_nanos() % 1_000_000 {
        0 => down,
        _ => down.saturating_add(1),
    }
}

/// The error of a [`timeout`] whose time ran out.
///
/// See [`rt`](crate::rt)'s example, and [`timeout`]'s, which matches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// Runs `fut` for at most `duration`: its output, or [`Elapsed`] (and `fut` dropped, which
/// cancels what it waited on).
///
/// # Examples
///
/// ```
/// use ringmaster::rt::{send_to_master, timeout, Elapsed};
/// use std::time::Duration;
///
/// // Reports a hit to the master, but holds the answer up 10 ms at most when its pipe is full.
/// async fn report_hit() -> bool {
///     match timeout(Duration::from_millis(10), send_to_master(b"hit")).await {
///         Ok(Ok(())) => true,
///         Ok(Err(_)) | Err(Elapsed) => false,
///     }
/// }
/// ```
pub fn timeout<F: Future>(duration: Duration, fut: F) -> Timeout<F> {
    Timeout {
        fut,
        sleep: sleep(duration),
    }
}

/// The future of [`timeout`].
///
/// See [`rt`](crate::rt)'s example.
#[derive(Debug)]
#[must_use = "a timeout does nothing unless awaited"]
pub struct Timeout<F> {
    fut: F,
    sleep: Sleep,
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `fut` is never moved out of the pinned `Timeout` (structural pinning);
        // `sleep` is `Unpin` and not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above, `fut` stays where the pinned `Timeout` put it.
        let fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        if let Poll::Ready(out) = fut.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        match Pin::new(&mut this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_is_never_due_before_its_duration_from_the_turns_real_time() {
        let waker = std::task::Waker::noop();
        let mut timers = Timers::new(8);
        // A turn 10.9 ms after the base: its millisecond is 10, the real time 10.9.
        let turn = timers.base + Duration::from_micros(10_900);
        timers.set_now(turn);
        timers.insert(Duration::from_millis(60), waker).unwrap();
        let due = timers.next_due(turn).unwrap();
        assert!(due >= Duration::from_millis(60), "{due:?}");
        assert!(due <= Duration::from_millis(61), "{due:?}");
        // A zero duration is due after this turn, not in it.
        let mut timers = Timers::new(8);
        timers.set_now(timers.base);
        timers.insert(Duration::ZERO, waker).unwrap();
        assert!(timers.next_due(timers.base).unwrap() > Duration::ZERO);
    }
}
