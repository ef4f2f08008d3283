//! A connection's response bytes not yet handed to a send, in order.
//!
//! Responses are encoded into one buffer (`tail`), so that the answers to a batch of
//! pipelined requests leave in one send. A body larger than [`BODY_COPY_BYTES_MAX`] is not
//! copied there: its head is, then the tail is sealed and the body itself is queued behind
//! it, to be sent from the buffer the handler wrote it into. A large response is then held
//! once, not twice (the handler's buffer and a copy), and its buffer is freed as soon as it
//! is sent rather than kept by the worker's reusable `Response`.

use crate::pool::{BufPool, RETAIN_BYTES_MAX};
use std::collections::VecDeque;

/// The largest body copied into the output buffer; larger ones are sent from where they
/// are. Copying a body this size costs less than what moving it costs (a fresh buffer for
/// the next response, grown again by the handler, and one more send); past it the copy
/// would also outgrow what the buffer pool keeps.
pub(crate) const BODY_COPY_BYTES_MAX: usize = RETAIN_BYTES_MAX;

/// The unsent output of one connection.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Buffers to send before `tail`, oldest first: sealed tails and moved bodies. The
    /// connection stops answering once its output reaches the output bound, so this holds
    /// at most two entries per body over [`BODY_COPY_BYTES_MAX`] that fit under that bound,
    /// plus one response beyond it.
    sealed: VecDeque<Vec<u8>>,
    /// Bytes in `sealed`.
    sealed_bytes: usize,
    /// Where responses are encoded. Holds no buffer when empty and unused.
    tail: Vec<u8>,
}

impl Output {
    /// Unsent bytes.
    pub(crate) fn len(&self) -> usize {
        self.sealed_bytes + self.tail.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer responses are encoded into, taken from `pool` if it has none.
    pub(crate) fn tail(&mut self, pool: &mut BufPool) -> &mut Vec<u8> {
        if self.tail.capacity() == 0 {
            self.tail = pool.take();
        }
        &mut self.tail
    }

    /// Queues `body` after everything encoded so far, without copying it.
    pub(crate) fn push_body(&mut self, body: Vec<u8>, pool: &mut BufPool) {
        if !self.tail.is_empty() {
            let tail = std::mem::replace(&mut self.tail, pool.take());
            self.seal(tail);
        }
        self.seal(body);
    }

    fn seal(&mut self, buf: Vec<u8>) {
        self.sealed_bytes += buf.len();
        self.sealed.push_back(buf);
    }

    /// The next buffer to send, in order, if any.
    pub(crate) fn take_next(&mut self) -> Option<Vec<u8>> {
        if let Some(buf) = self.sealed.pop_front() {
            self.sealed_bytes -= buf.len();
            return Some(buf);
        }
        (!self.tail.is_empty()).then(|| std::mem::take(&mut self.tail))
    }

    /// Drops every unsent byte, the buffers going back to `pool`.
    pub(crate) fn clear(&mut self, pool: &mut BufPool) {
        for buf in self.sealed.drain(..) {
            pool.put(buf);
        }
        self.sealed_bytes = 0;
        self.tail.clear();
    }

    /// Bytes of buffer held, used or not.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.tail.capacity() + self.sealed.iter().map(Vec::capacity).sum::<usize>()
    }

    /// Gives an empty tail's buffer back to `pool`: an idle connection holds none.
    pub(crate) fn release(&mut self, pool: &mut BufPool) {
        if self.tail.is_empty() && self.tail.capacity() > 0 {
            pool.put(std::mem::take(&mut self.tail));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_queued_in_order_without_a_copy() {
        let mut pool = BufPool::new(4, 0);
        let mut out = Output::default();
        out.tail(&mut pool).extend_from_slice(b"head1");
        let body = vec![b'x'; BODY_COPY_BYTES_MAX + 1];
        let at = body.as_ptr();
        out.push_body(body, &mut pool);
        out.tail(&mut pool).extend_from_slice(b"head2");
        assert_eq!(out.len(), 5 + BODY_COPY_BYTES_MAX + 1 + 5);
        assert_eq!(out.take_next().unwrap(), b"head1");
        let body = out.take_next().unwrap();
        assert_eq!(body.as_ptr(), at, "the handler's own buffer, not a copy");
        assert_eq!(out.take_next().unwrap(), b"head2");
        assert_eq!(out.take_next(), None);
        assert!(out.is_empty());
    }

    #[test]
    fn clearing_returns_buffers_and_an_idle_output_holds_none() {
        let mut pool = BufPool::new(4, 0);
        let mut out = Output::default();
        out.tail(&mut pool).extend_from_slice(b"a");
        out.push_body(vec![b'b'; 10], &mut pool);
        out.clear(&mut pool);
        assert!(out.is_empty());
        assert_eq!(out.take_next(), None);
        out.release(&mut pool);
        assert_eq!(out.tail.capacity(), 0);
    }
}
