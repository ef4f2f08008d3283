//! One ring operation as a future ([`RingOp`]): queued in the runtime's table when first
//! polled, ready with its [`Outcome`] once its final completion came. Dropped before that,
//! it detaches: the operation is cancelled and its memory stays the ring's until the kernel
//! lets go (see [`super::ops`]).

use super::{Outcome, Ticket};
use ringmaster_uring::Op;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The future of one ring operation.
#[derive(Debug)]
#[must_use = "a ring operation does nothing unless awaited"]
pub(crate) struct RingOp {
    state: State,
}

#[derive(Debug)]
enum State {
    /// Not in the table yet (first poll, or the table was full).
    Unqueued(Option<Op>),
    Queued(Ticket),
    Done,
}

impl RingOp {
    pub(crate) fn new(op: Op) -> RingOp {
        RingOp {
            state: State::Unqueued(Some(op)),
        }
    }
}

impl Future for RingOp {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Unqueued(op) => {
                    let queued = super::with(|rt| {
                        let ticket = rt.ops.queue(op.take().expect("an operation to queue"));
                        match ticket {
                            Ok(ticket) => Ok(ticket),
                            Err(op) => {
                                rt.wait_for_room(cx.waker());
                                Err(op)
                            }
                        }
                    });
                    match queued {
                        Ok(ticket) => this.state = State::Queued(ticket),
                        Err(op) => {
                            this.state = State::Unqueued(Some(op));
                            return Poll::Pending;
                        }
                    }
                }
                State::Queued(ticket) => {
                    let ticket = *ticket;
                    return match super::with(|rt| rt.ops.poll(ticket, cx.waker())) {
                        Some(outcome) => {
                            this.state = State::Done;
                            Poll::Ready(outcome)
                        }
                        None => Poll::Pending,
                    };
                }
                State::Done => panic!("a ring operation polled after it finished"),
            }
        }
    }
}

impl Drop for RingOp {
    fn drop(&mut self) {
        if let State::Queued(ticket) = self.state {
            super::try_with(|rt| rt.ops.detach(ticket));
        }
    }
}
