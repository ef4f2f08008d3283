//! A bounded pool of byte buffers, so that connections hold buffers only while they have
//! bytes to keep, and the hot path reuses rather than allocates.

/// Buffers taken from the pool start with this capacity.
pub(crate) const BUF_BYTES: usize = 4096;
/// A buffer that grew past this is freed rather than pooled, so one large request does not
/// pin its memory for good.
pub(crate) const RETAIN_BYTES_MAX: usize = 64 * 1024;

/// Free buffers, at most `retain_max` of them.
#[derive(Debug)]
pub(crate) struct BufPool {
    free: Vec<Vec<u8>>,
    retain_max: usize,
}

impl BufPool {
    /// A pool that keeps up to `retain_max` free buffers, `prefill` of them allocated now.
    pub(crate) fn new(retain_max: usize, prefill: usize) -> BufPool {
        let mut free = Vec::with_capacity(retain_max);
        free.extend((0..prefill.min(retain_max)).map(|_| Vec::with_capacity(BUF_BYTES)));
        BufPool { free, retain_max }
    }

    /// An empty buffer: a pooled one, or a new one when the pool is empty.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        self.free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BUF_BYTES))
    }

    /// Returns a buffer. Buffers without capacity, over-grown ones and those past the bound
    /// are dropped.
    pub(crate) fn put(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > RETAIN_BYTES_MAX {
            return;
        }
        if self.free.len() < self.retain_max {
            buf.clear();
            self.free.push(buf);
        }
    }

    /// Buffers waiting in the pool.
    pub(crate) fn free(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_its_bound_and_drops_overgrown_buffers() {
        let mut pool = BufPool::new(2, 1);
        assert_eq!(pool.free(), 1);
        let a = pool.take();
        assert_eq!(a.capacity(), BUF_BYTES);
        pool.put(a);
        pool.put(Vec::with_capacity(10));
        pool.put(Vec::with_capacity(10));
        assert_eq!(pool.free(), 2, "bounded");
        pool.take();
        pool.put(Vec::with_capacity(RETAIN_BYTES_MAX + 1));
        pool.put(Vec::new());
        assert_eq!(pool.free(), 1, "over-grown and empty buffers are dropped");
    }
}
