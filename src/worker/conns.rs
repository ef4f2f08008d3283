//! The connection table: completions turned into connection events, and what each touched
//! connection asks of the ring ([`Act`]) turned into ring operations, at the end of a turn.

use super::{Event, Worker, RECV_GROUP};
use crate::connection::{Act, RecvEnd};
use crate::Serve;
use ringmaster_uring::{Completion, Desc, Op, Owned};
use std::os::fd::{BorrowedFd, RawFd};

impl<H: Serve> Worker<'_, H> {
    /// Queues `slot` to be acted on at the end of the turn (once).
    pub(super) fn touch(&mut self, slot: u32) {
        let mark = &mut self.touched_mark[slot as usize];
        if !*mark {
            *mark = true;
            self.touched.push(slot);
        }
    }

    pub(super) fn touch_all(&mut self) {
        for (slot, _) in self.conns.iter() {
            let mark = &mut self.touched_mark[slot];
            if !*mark {
                *mark = true;
                self.touched.push(slot as u32);
            }
        }
    }

    pub(super) fn on_recv(&mut self, slot: u32, c: &Completion<Event>) {
        let conn = &mut self.conns[slot as usize];
        if c.result > 0 {
            let bid = c.buffer_id().expect("a receive with data names its buffer");
            let data = self.ring.buffer(RECV_GROUP, bid, c.result as usize);
            conn.on_data(data, &mut self.ctx);
            self.ring.give_back(RECV_GROUP, bid);
        }
        if !c.more() {
            let end = match c.errno() {
                None if c.result == 0 => RecvEnd::Eof,
                None => RecvEnd::Stopped,
                Some(libc::ENOBUFS) => {
                    self.enobufs += 1;
                    RecvEnd::NoBuffers
                }
                Some(libc::ECANCELED) => RecvEnd::Cancelled,
                Some(_) => RecvEnd::Failed,
            };
            conn.on_recv_end(end, &mut self.ctx);
        }
        self.touch(slot);
    }

    pub(super) fn on_send(&mut self, slot: u32, c: Completion<Event>) {
        let result = c.io_result();
        let Owned::Buf(buf) = c.owned else {
            panic!("a send hands its buffer back")
        };
        self.conns[slot as usize].on_sent(result, buf, &mut self.ctx);
        self.touch(slot);
    }

    pub(super) fn on_fill(&mut self, slot: u32, c: &Completion<Event>) {
        self.conns[slot as usize].on_fill(c.result, &mut self.ctx);
        self.touch(slot);
    }

    pub(super) fn on_drain(&mut self, slot: u32, c: &Completion<Event>) {
        self.conns[slot as usize].on_drain(c.result, &mut self.ctx);
        self.touch(slot);
    }

    pub(super) fn on_closed(&mut self, slot: u32) {
        self.conns[slot as usize].on_closed();
        self.touch(slot);
    }

    pub(super) fn on_shut(&mut self, slot: u32) {
        self.conns[slot as usize].on_shut();
        self.touch(slot);
    }

    pub(super) fn on_out_queue(&mut self, slot: u32, c: &Completion<Event>) {
        let unacked = u64::try_from(c.result).ok();
        self.conns[slot as usize].on_send_sample(unacked, &mut self.ctx);
        self.touch(slot);
    }

    /// The tick's part for connections: each enforces its timer and schedules its samples;
    /// those that changed are acted on at the end of the turn.
    pub(super) fn tick_connections(&mut self) {
        for (slot, conn) in self.conns.iter_mut() {
            if conn.on_tick(&mut self.ctx) && !self.touched_mark[slot] {
                self.touched_mark[slot] = true;
                self.touched.push(slot as u32);
            }
        }
    }

    /// Acts on every connection touched this turn.
    pub(super) fn act_on_touched(&mut self) -> std::io::Result<()> {
        let mut touched = std::mem::take(&mut self.touched);
        for slot in touched.drain(..) {
            self.touched_mark[slot as usize] = false;
            self.act_on(slot)?;
        }
        self.touched = touched;
        Ok(())
    }

    /// Carries out what the connection in `slot` asks of the ring, until it asks nothing.
    fn act_on(&mut self, slot: u32) -> std::io::Result<()> {
        let now = self.ctx.now;
        loop {
            let conn = &mut self.conns[slot as usize];
            let Some(act) = conn.next_act(&mut self.ctx) else {
                if conn.waits_for_room() {
                    self.wait_for_room(slot);
                }
                return Ok(());
            };
            let fd = conn.fd();
            match act {
                Act::Send { buf, offset, more } => {
                    let op = self.ring.push(
                        Op::Send {
                            fd,
                            buf,
                            offset,
                            more,
                        },
                        Event::Send(slot),
                    )?;
                    self.conns[slot as usize].send_started(op, offset, now);
                }
                Act::Splice {
                    file,
                    offset,
                    pipe_write,
                    pipe_read,
                    fill,
                    drain,
                } => {
                    let drain_op = Op::Splice {
                        fd_in: pipe_read,
                        off_in: -1,
                        fd_out: fd,
                        len: drain,
                        flags: 0,
                    };
                    let (fill_id, drain_id) = if fill > 0 {
                        let fill_op = Op::Splice {
                            fd_in: file,
                            off_in: i64::try_from(offset).unwrap_or(i64::MAX),
                            fd_out: Desc::Plain(pipe_write),
                            len: fill,
                            // The pipe is empty; should it not be, fail rather than wait.
                            flags: libc::SPLICE_F_NONBLOCK,
                        };
                        let (a, b) = self.ring.push_linked(
                            (fill_op, Event::Fill(slot)),
                            (drain_op, Event::Drain(slot)),
                        )?;
                        (Some(a), b)
                    } else {
                        (None, self.ring.push(drain_op, Event::Drain(slot))?)
                    };
                    self.conns[slot as usize].splice_started(fill_id, drain_id, now);
                }
                Act::Recv { multishot } => {
                    let op = if multishot && self.uring.multishot_recv {
                        Op::RecvMulti {
                            fd,
                            group: RECV_GROUP,
                        }
                    } else {
                        Op::Recv {
                            fd,
                            group: RECV_GROUP,
                            len: self.uring.recv_buffer_bytes,
                        }
                    };
                    let op = self.ring.push(op, Event::Recv(slot))?;
                    self.conns[slot as usize].recv_started(op);
                }
                Act::Cancel(target) => {
                    self.ring.push(Op::Cancel { target }, Event::Ignored)?;
                }
                Act::ShutWrite => {
                    let op = Op::Shutdown {
                        fd,
                        how: libc::SHUT_WR,
                    };
                    self.ring.push(op, Event::Shutdown(slot))?;
                }
                Act::Reset => self.reset_on_close(fd)?,
                Act::Close => {
                    self.ring.push(Op::Close { fd }, Event::Close(slot))?;
                }
                Act::SampleSendQueue => self.sample_send_queue(slot, fd)?,
                Act::Free => {
                    self.conns.remove(slot as usize);
                    return Ok(());
                }
            }
        }
    }

    /// Samples how much of a connection's output its client has not acknowledged, for the
    /// minimum send rate: at once for a plain descriptor, through the ring for a direct one.
    fn sample_send_queue(&mut self, slot: u32, fd: Desc) -> std::io::Result<()> {
        match fd {
            Desc::Plain(raw) => {
                let unacked = unacknowledged(raw);
                self.conns[slot as usize].on_send_sample(unacked, &mut self.ctx);
            }
            Desc::Direct(_) => {
                let op = self
                    .ring
                    .push(Op::SocketOutQueue { fd }, Event::OutQueue(slot))?;
                self.conns[slot as usize].sampling_with(op);
            }
        }
        Ok(())
    }

    /// Makes the next close of `fd` reset the connection (`SO_LINGER` on, zero seconds):
    /// the send queue is dropped and the peer gets a RST. A direct descriptor's option is
    /// set through the ring, pushed before the close: the kernel issues entries in queue
    /// order and sets a socket option inline, so it is set when the close runs. Failure
    /// leaves a graceful close, which is all that can be done.
    fn reset_on_close(&mut self, fd: Desc) -> std::io::Result<()> {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        match fd {
            Desc::Plain(raw) => {
                use nix::sys::socket::{setsockopt, sockopt::Linger};
                // SAFETY: `raw` is the connection's socket, open until its close, which this
                // reset precedes.
                let socket = unsafe { BorrowedFd::borrow_raw(raw) };
                // Failure leaves a graceful close (see above): nothing else to do.
                let _ = setsockopt(&socket, Linger, &linger);
            }
            Desc::Direct(_) => {
                // `struct linger { int l_onoff; int l_linger; }`, in that order.
                let value = [linger.l_onoff, linger.l_linger]
                    .map(libc::c_int::to_ne_bytes)
                    .concat();
                debug_assert_eq!(value.len(), std::mem::size_of::<libc::linger>());
                let op = Op::SetSockOpt {
                    fd,
                    level: libc::SOL_SOCKET,
                    name: libc::SO_LINGER,
                    value,
                };
                self.ring.push(op, Event::Ignored)?;
            }
        }
        Ok(())
    }
}

/// How many bytes of a plain socket's output its peer has not acknowledged
/// (`ioctl(SIOCOUTQ)`, which `nix` does not wrap); `None` when the socket cannot tell.
fn unacknowledged(fd: RawFd) -> Option<u64> {
    let mut unacked: libc::c_int = 0;
    // SAFETY: `fd` is an open socket of this worker; SIOCOUTQ (TIOCOUTQ) writes one int
    // into `unacked`, which lives across the call.
    let ret = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut unacked as *mut libc::c_int) };
    (ret == 0).then(|| u64::try_from(unacked).ok()).flatten()
}
