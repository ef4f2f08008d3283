//! A connection's response bytes not yet handed to a send, in order.
//!
//! Responses are encoded into one buffer (`tail`), so that the answers to a batch of
//! pipelined requests leave in one send. A body larger than [`BODY_COPY_BYTES_MAX`] is not
//! copied there: its head is, then the tail is sealed and the body itself is queued behind
//! it, to be sent from the buffer the handler wrote it into. A large response is then held
//! once, not twice (the handler's buffer and a copy), and its buffer is freed as soon as it
//! is sent rather than kept by the worker's reusable `Response`.

use crate::pool::{BufPool, RETAIN_BYTES_MAX};
use crate::rt::splice::FileRange;
use std::collections::VecDeque;

/// One piece of output: bytes to send, or a file range to splice.
#[derive(Debug)]
pub(crate) enum Piece {
    Bytes(Vec<u8>),
    File(FileRange),
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::Bytes(b) => b.len(),
            Piece::File(f) => usize::try_from(f.unsent()).unwrap_or(usize::MAX),
        }
    }
}

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
    sealed: VecDeque<Piece>,
    /// Bytes in `sealed` (a file range's count as its length: they are output all the
    /// same, and the output bound then holds back what follows).
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
            self.seal(Piece::Bytes(tail));
        }
        self.seal(Piece::Bytes(body));
    }

    /// Queues a file range after everything encoded so far.
    pub(crate) fn push_file(&mut self, range: FileRange, pool: &mut BufPool) {
        if !self.tail.is_empty() {
            let tail = std::mem::replace(&mut self.tail, pool.take());
            self.seal(Piece::Bytes(tail));
        }
        self.seal(Piece::File(range));
    }

    fn seal(&mut self, piece: Piece) {
        self.sealed_bytes += piece.len();
        self.sealed.push_back(piece);
    }

    /// The next piece to send, in order, if any.
    pub(crate) fn take_next(&mut self) -> Option<Piece> {
        if let Some(piece) = self.sealed.pop_front() {
            self.sealed_bytes -= piece.len();
            return Some(piece);
        }
        (!self.tail.is_empty()).then(|| Piece::Bytes(std::mem::take(&mut self.tail)))
    }

    /// Whether the next piece is a file range (the bytes before it then go with `MSG_MORE`).
    pub(crate) fn file_is_next(&self) -> bool {
        matches!(self.sealed.front(), Some(Piece::File(_)))
    }

    /// Drops every unsent byte, the buffers going back to `pool`.
    pub(crate) fn clear(&mut self, pool: &mut BufPool) {
        for piece in self.sealed.drain(..) {
            if let Piece::Bytes(buf) = piece {
                pool.put(buf);
            }
        }
        self.sealed_bytes = 0;
        self.tail.clear();
    }

    /// Bytes of buffer held, used or not.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        let sealed = self.sealed.iter().map(|p| match p {
            Piece::Bytes(b) => b.capacity(),
            Piece::File(_) => 0,
        });
        self.tail.capacity() + sealed.sum::<usize>()
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
        let bytes = |p: Option<Piece>| match p {
            Some(Piece::Bytes(b)) => b,
            other => panic!("bytes expected, got {other:?}"),
        };
        assert_eq!(bytes(out.take_next()), b"head1");
        let body = bytes(out.take_next());
        assert_eq!(body.as_ptr(), at, "the handler's own buffer, not a copy");
        assert_eq!(bytes(out.take_next()), b"head2");
        assert!(out.take_next().is_none());
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
        assert!(out.take_next().is_none());
        out.release(&mut pool);
        assert_eq!(out.tail.capacity(), 0);
    }
}
