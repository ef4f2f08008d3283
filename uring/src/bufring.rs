//! A ring of provided buffers (`IORING_REGISTER_PBUF_RING`): the kernel picks a buffer when
//! data arrives, so a connection waiting for data holds none.

use io_uring::types::BufRingEntry;
use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

/// The most entries a provided-buffer ring may have (the kernel's limit).
pub const BUF_RING_ENTRIES_MAX: u16 = 32768;

/// The ring's entries must start on a page boundary.
const RING_ALIGN: usize = 4096;
/// Buffers start on a cache line, so no two share one.
const BUF_ALIGN: usize = 64;

/// A group of `entries` buffers of `buf_len` bytes each, and the ring through which they are
/// handed to the kernel.
///
/// A buffer is either the kernel's (in the ring, free for it to fill) or the caller's (handed
/// over in a completion, until [`give_back`](Self::give_back)). Only the caller's buffers can
/// be read, which makes reading safe: the kernel never writes a buffer the caller holds.
pub struct BufRing {
    /// INVARIANT: `entries` entries of `ring_layout`, page aligned, registered with at most one
    /// ring, which unregisters it before this memory is freed.
    ring: NonNull<BufRingEntry>,
    ring_layout: Layout,
    /// INVARIANT: `entries * buf_len` bytes; buffer `bid` starts at `bid * buf_len`.
    bufs: NonNull<u8>,
    bufs_layout: Layout,
    entries: u16,
    buf_len: u32,
    group: u16,
    /// The tail as the caller sees it: entries written but maybe not yet published.
    tail: u16,
    /// One bit per buffer: set while the caller holds it.
    held: Vec<u64>,
}

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing")
            .field("group", &self.group)
            .field("entries", &self.entries)
            .field("buf_len", &self.buf_len)
            .field("held", &self.held_count())
            .finish()
    }
}

impl BufRing {
    /// Allocates `entries` buffers of `buf_len` bytes for buffer group `group`, all of them
    /// in the ring (given to the kernel) once it is registered.
    ///
    /// `entries` must be a power of two no larger than [`BUF_RING_ENTRIES_MAX`]. The memory is
    /// zeroed lazily by the allocator (fresh pages), so untouched buffers cost no resident memory.
    pub fn new(group: u16, entries: u16, buf_len: u32) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || entries > BUF_RING_ENTRIES_MAX || buf_len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "buffer ring of {entries} x {buf_len} bytes: entries must be a power of two \
                     up to {BUF_RING_ENTRIES_MAX} and buffers non-empty"
                ),
            ));
        }
        let invalid = |_| io::Error::new(io::ErrorKind::InvalidInput, "buffer ring too large");
        let ring_layout = Layout::from_size_align(
            usize::from(entries) * std::mem::size_of::<BufRingEntry>(),
            RING_ALIGN,
        )
        .map_err(invalid)?;
        let bufs_layout =
            Layout::from_size_align(usize::from(entries) * buf_len as usize, BUF_ALIGN)
                .map_err(invalid)?;
        // SAFETY: both layouts have a non-zero size (entries >= 1, buf_len >= 1).
        let ring = unsafe { alloc::alloc_zeroed(ring_layout) };
        let Some(ring) = NonNull::new(ring.cast::<BufRingEntry>()) else {
            alloc::handle_alloc_error(ring_layout)
        };
        // SAFETY: as above.
        let bufs = unsafe { alloc::alloc_zeroed(bufs_layout) };
        let Some(bufs) = NonNull::new(bufs) else {
            alloc::handle_alloc_error(bufs_layout)
        };
        let mut this = BufRing {
            ring,
            ring_layout,
            bufs,
            bufs_layout,
            entries,
            buf_len,
            group,
            tail: 0,
            held: vec![0; usize::from(entries).div_ceil(64)],
        };
        for bid in 0..entries {
            this.write_entry(bid);
        }
        this.publish();
        Ok(this)
    }

    /// The buffer group id.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// How many buffers the group has.
    pub fn entries(&self) -> u16 {
        self.entries
    }

    /// The length of each buffer.
    pub fn buf_len(&self) -> u32 {
        self.buf_len
    }

    /// How many buffers the caller holds (handed over and not yet given back).
    pub fn held_count(&self) -> usize {
        self.held.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The address and entry count to register with the kernel.
    pub(crate) fn ring_addr(&self) -> u64 {
        self.ring.as_ptr() as u64
    }

    /// Records that the kernel handed buffer `bid` to the caller.
    pub(crate) fn mark_held(&mut self, bid: u16) {
        assert!(bid < self.entries, "buffer id {bid} out of range");
        let (word, bit) = (usize::from(bid) / 64, bid % 64);
        assert!(
            self.held[word] & (1 << bit) == 0,
            "kernel handed over buffer {bid} twice"
        );
        self.held[word] |= 1 << bit;
    }

    /// The first `len` bytes of buffer `bid`, which a completion handed over.
    ///
    /// # Panics
    /// If the caller does not hold `bid` or `len` exceeds the buffer length.
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        assert!(self.is_held(bid), "buffer {bid} is not held by the caller");
        assert!(len <= self.buf_len as usize, "length {len} past the buffer");
        let start = usize::from(bid) * self.buf_len as usize;
        // SAFETY: `start + len` lies within the `bufs` allocation (bid < entries, len <=
        // buf_len), and the kernel does not write buffer `bid` while the caller holds it: it
        // returns to the ring only through `give_back`, which needs `&mut self`.
        unsafe { std::slice::from_raw_parts(self.bufs.as_ptr().add(start), len) }
    }

    fn is_held(&self, bid: u16) -> bool {
        bid < self.entries && self.held[usize::from(bid) / 64] & (1 << (bid % 64)) != 0
    }

    /// Gives buffer `bid` back to the kernel. It becomes visible to the kernel at the next
    /// [`publish`](Self::publish) (the ring publishes before each submission).
    ///
    /// # Panics
    /// If the caller does not hold `bid`.
    pub fn give_back(&mut self, bid: u16) {
        assert!(self.is_held(bid), "buffer {bid} given back but not held");
        self.held[usize::from(bid) / 64] &= !(1 << (bid % 64));
        self.write_entry(bid);
    }

    /// Writes the ring entry at the local tail for buffer `bid` and advances the local tail.
    fn write_entry(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.entries - 1));
        let addr = self.bufs.as_ptr() as u64 + u64::from(bid) * u64::from(self.buf_len);
        // SAFETY: `index < entries`, so the entry lies within the ring allocation. The kernel
        // reads only entries between its head and the published tail; this one is past the
        // published tail until `publish`, because at most `entries` buffers exist.
        let entry = unsafe { &mut *self.ring.as_ptr().add(index) };
        entry.set_addr(addr);
        entry.set_len(self.buf_len);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes the local tail, handing every entry written since the last publish to the
    /// kernel (one release store).
    pub fn publish(&mut self) {
        // SAFETY: `ring` is the page-aligned base of the ring and its first entry is
        // initialised (zeroed at allocation); the tail overlays that entry's reserved field.
        let tail = unsafe { BufRingEntry::tail(self.ring.as_ptr()) };
        // SAFETY: the tail is a naturally aligned u16 inside our allocation, shared with the
        // kernel only through atomic accesses.
        let tail = unsafe { AtomicU16::from_ptr(tail.cast_mut()) };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts; the owning ring unregistered the
        // group (or leaked this BufRing) before dropping it.
        unsafe {
            alloc::dealloc(self.ring.as_ptr().cast(), self.ring_layout);
            alloc::dealloc(self.bufs.as_ptr(), self.bufs_layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_shapes() {
        assert!(BufRing::new(0, 3, 4096).is_err());
        assert!(BufRing::new(0, 0, 4096).is_err());
        assert!(BufRing::new(0, 8, 0).is_err());
    }

    #[test]
    fn held_buffers_can_be_read_and_given_back_once() {
        let mut ring = BufRing::new(1, 4, 16).unwrap();
        ring.mark_held(2);
        assert_eq!(ring.get(2, 16), &[0u8; 16][..]);
        assert_eq!(ring.held_count(), 1);
        ring.give_back(2);
        assert_eq!(ring.held_count(), 0);
    }

    #[test]
    #[should_panic(expected = "not held")]
    fn reading_a_kernel_buffer_is_refused() {
        let ring = BufRing::new(1, 4, 16).unwrap();
        ring.get(0, 1);
    }
}
