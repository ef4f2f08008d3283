//! Time for handler code: [`sleep`] and [`timeout`], each one ring timeout.

use super::Ticket;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Waits `duration` (a ring timeout: the worker goes on serving meanwhile).
///
/// # Panics
/// When polled outside a worker.
pub fn sleep(duration: Duration) -> Sleep {
    Sleep {
        duration,
        state: SleepState::Unarmed,
    }
}

/// The future of [`sleep`].
#[derive(Debug)]
#[must_use = "a sleep does nothing unless awaited"]
pub struct Sleep {
    duration: Duration,
    state: SleepState,
}

#[derive(Debug)]
enum SleepState {
    Unarmed,
    Armed(Ticket),
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
                    let op = rt.timeout_op(duration);
                    rt.queue_or_wait(op, cx.waker())
                });
                if let Some(ticket) = armed {
                    this.state = SleepState::Armed(ticket);
                }
                Poll::Pending
            }
            SleepState::Armed(ticket) => {
                let done = super::with(|rt| {
                    let outcome = rt.ops.poll(ticket, cx.waker())?;
                    rt.recycle(outcome.owned);
                    Some(outcome.result)
                });
                match done {
                    // `-ETIME` when it fired; any end of a timeout is its end.
                    Some(_) => {
                        this.state = SleepState::Done;
                        Poll::Ready(())
                    }
                    None => Poll::Pending,
                }
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let SleepState::Armed(ticket) = self.state {
            super::try_with(|rt| rt.ops.detach(ticket));
        }
    }
}

/// The error of a [`timeout`] whose time ran out.
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
pub fn timeout<F: Future>(duration: Duration, fut: F) -> Timeout<F> {
    Timeout {
        fut,
        sleep: sleep(duration),
    }
}

/// The future of [`timeout`].
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
