//! A thin, policy-free driver over the [`io-uring`](io_uring) crate.
//!
//! It knows rings, entries, completions, an in-flight table and provided-buffer rings, and
//! nothing about HTTP, processes or signals. One file per kernel concept:
//!
//! | file | concept |
//! | --- | --- |
//! | `ring.rs` | [`Ring`]: set-up with fallbacks ([`SetupMode`]), the one push site, `submit_and_wait`, reaping |
//! | `inflight.rs` | the in-flight table: the slab whose key is each entry's `user_data` |
//! | `op.rs` | [`Op`]: the typed entries and the memory each one lends the kernel; [`OpKind`]: the list of them, with the kernel's names |
//! | `completion.rs` | [`Completion`]: one reaped CQE, with the memory handed back |
//! | `bufring.rs` | [`BufRing`]: a ring of provided buffers for multishot receive |
//! | `probe.rs` | [`Features`]: what this kernel supports, probed once at start-up |
//!
//! # Ownership of kernel-visible memory
//!
//! Every byte the kernel may write or read after a submission (a send or read buffer, a
//! timespec) is moved into the in-flight table when the entry is pushed and handed back in the
//! [`Completion`] that ends the operation, the one without `IORING_CQE_F_MORE`. Dropping the
//! caller's state (a closed connection, say) therefore never frees memory the kernel still holds.
//!
//! # Example
//!
//! ```
//! use ringmaster_uring::{Op, Ring, RingConfig};
//! use std::time::Duration;
//!
//! # fn main() -> std::io::Result<()> {
//! let mut ring = Ring::new(&RingConfig::default())?;
//! ring.push(Op::timeout(Duration::from_millis(1)), 7)?;
//! ring.submit_and_wait(1)?;
//! let mut done = Vec::with_capacity(ring.cq_capacity());
//! ring.reap(&mut done);
//! assert_eq!(done[0].tag, 7);
//! assert_eq!(done[0].result, -libc::ETIME);
//! # Ok(())
//! # }
//! ```
#![deny(
    missing_docs,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc,
    unsafe_op_in_unsafe_fn
)]

mod bufring;
mod completion;
mod inflight;
mod op;
mod probe;
mod ring;

pub use bufring::{BufRing, BUF_RING_ENTRIES_MAX};
pub use completion::{Completion, Owned};
pub use inflight::OpId;
pub use op::{Desc, Op, OpKind, OpenArgs, SockAddr, StatxArgs};
pub use probe::Features;
pub use ring::{Ring, RingConfig, RingStats, SetupMode, CQ_ENTRIES_MAX, SQ_ENTRIES_MAX};
