//! hakmem's SuperSlab box (layer 2): a SuperSlab is a `2^lg` byte region (2 MiB by default,
//! 1 MiB supported), aligned to its size, cut into 64 KiB slabs; each slab serves one block
//! size at a time.
//!
//! What it offers:
//! - [`SsRef`]: the raw handle to a SuperSlab (its base pointer, with the mapping's
//!   provenance). [`SsRef::init`] formats memory from hak-os; [`SsRef::from_block`] finds the
//!   SuperSlab of any block by masking its address ([`SsRef::is_valid`] checks the magic);
//!   [`SsRef::slab`] / [`SsRef::slab_of`] give slab handles. An extension area
//!   ([`SsRef::ext`], [`EXT_BYTES`]) belongs to the layer above. [`SuperSlab`] is the header
//!   type; it is never reached through a reference.
//! - [`SlabRef`]: the raw handle to one slab's record. Owner operations: [`SlabRef::assign`],
//!   [`SlabRef::alloc_batch`], [`SlabRef::free_local_batch`], [`SlabRef::collect_remote`],
//!   [`SlabRef::mark_full`], [`SlabRef::retract_full`], [`SlabRef::try_detach`],
//!   [`SlabRef::adopt`], the owner's list links and tag
//!   ([`SlabRef::owner_links`], [`SlabRef::tag`]). Any thread:
//!   [`SlabRef::free_remote_batch`], [`SlabRef::owner`], [`SlabRef::class`].
//! - [`Inbox`]: an owner's identity and the place its full slabs come back to when another
//!   thread frees into them; [`RemoteFree`] and [`Retract`]: what the protocol asks of callers.
//!
//! Blocks: a slab serves blocks of one size, set when it is assigned ([`SlabRef::assign`]).
//! - A block size is at least 16 bytes and a multiple of 16: a free block holds a link, and
//!   the remote stack keeps flags in the low 4 bits of a block's address.
//! - A block's alignment is the largest power of two dividing its size, capped at the page
//!   size: slab data starts page-aligned (slab 0's past the header, at
//!   [`SuperSlab::data_offset`]) and blocks are `size` apart. So 48-byte blocks are 16-aligned,
//!   64-byte blocks 64-aligned, 4096-byte and larger power-of-two blocks page-aligned; a
//!   caller that needs an alignment picks a size it divides.
//! - A slab holds as many blocks as fit its data range: [`SLAB_SIZE`] bytes, less
//!   [`SuperSlab::data_offset`] for slab 0 (so at most 4096 blocks of 16 bytes). A size
//!   larger than the range gives a slab with no block: every allocation from it fails.
//!
//! What to pass as owner and class when using this crate alone (a plain object pool, as in the
//! example below), rather than under hak-shared-pool and hak-tiny-front:
//! - The owner is a `*const Inbox`, the owner's identity: written into every slab it holds
//!   (a slab whose [`SlabRef::owner`] is your inbox is yours) and the place other threads
//!   deliver a full slab the owner armed ([`SlabRef::mark_full`]). Use one [`Inbox`] per
//!   owning thread (a pool used by one thread at a time is one owner), at an address that does
//!   not change and stays valid while it owns slabs: a field of a `static`, boxed or otherwise
//!   pinned pool, never a value that moves. A pool that never arms slabs still needs it as its
//!   identity; its inbox then stays empty.
//! - The class is any `u32` of the owner's choosing: the slab stores it and hands it back
//!   ([`SlabRef::class`], readable by any thread), and nothing here interprets it.
//!   hak-tiny-front keeps its size-class index there, so a free without a size finds the
//!   block's class from the slab; a pool of one block size can pass 0.
//!
//! Invariants (per slab, with `|L|` the local free list and `|R|` the remote stack):
//! - `used + |L| == carved <= capacity` as seen by the owner between operations; remote frees
//!   are counted in `used` until the owner collects them: `|R| <= used`.
//! - Blocks are `block_size` apart from the slab's data start; the first block of slab 0
//!   starts past the header (at [`SuperSlab::data_offset`]), so the header is never handed out,
//!   and no block crosses its slab's end.
//! - A slab is *owned* (`owner` is an inbox) by exactly one owner, or *detached* (null).
//!   A full owned slab can be *armed* ([`SlabRef::mark_full`]): the first remote free after
//!   that delivers it into its owner's inbox, exactly once. A full detached slab is armed by
//!   [`SlabRef::try_detach`]: the first remote free tells its freer to publish it
//!   ([`RemoteFree::Publish`]), exactly once.
//! - Provenance: block pointers are derived from the [`SsRef`] (never from a reference to the
//!   header); links in blocks and the remote head are stored as pointers.
//!
//! Concurrency contract: owner-only fields live in a [`hak_sync::cell::UnsafeCell`] and are
//! touched only by the owner (or, for a detached slab, by whoever holds it exclusively via the
//! layer above); `remote`, `owner`, `class` and `block_size` are atomics any thread may read.
//! Free lists (local and remote) are lists of *carriers*: a freed block that holds pointers to
//! other freed blocks of the slab (`node.rs`), so a batch handed back costs writes to a few
//! blocks and a refill reads a few cache lines per dozens of blocks.
//! The remote stack is a lock-free multi-producer push (a whole batch per compare-exchange);
//! the owner takes the whole list with one compare-exchange, so the ABA problem cannot arise.
//! An owner waits only in [`SlabRef::retract_full`], for a delivery already under way.
//!
//! # Example
//!
//! One slab of a SuperSlab serving 64-byte blocks to a single owner:
//!
//! ```rust
//! use hak_os::Os;
//! use hak_superslab::{Inbox, SsRef, LG_SUPERSLAB_DEFAULT as LG};
//!
//! let os = Os::new();
//! let base = os.map(1 << LG, 1 << LG).expect("the OS refused 2 MiB");
//! // The owner's identity: written into its slabs, so it must not move while it owns any.
//! let owner = Inbox::new();
//! // SAFETY: a fresh mapping of 2^LG bytes aligned to its size, used by this thread only;
//! // slab 1 is unassigned; 64 follows the block-size rules; `owner` outlives the slab's use.
//! unsafe {
//!     let ss = SsRef::init(base, LG);
//!     let slab = ss.slab(1);
//!     slab.assign(&owner, 0, 64);
//!     let a = slab.alloc().expect("a fresh slab has room");
//!     assert_eq!(a.as_ptr() as usize % 64, 0);
//!     // Any block finds its slab by masking its address.
//!     assert_eq!(SsRef::from_block(a.as_ptr(), LG).slab_of(a.as_ptr() as usize), slab);
//!     slab.free_local(a);
//!     assert_eq!(slab.alloc(), Some(a), "freed blocks are reused first");
//!     slab.free_local(a);
//!     ss.invalidate();
//!     os.unmap(base, 1 << LG).expect("unmap");
//! }
//! ```
//!
//! A complete fixed-size object pool (several slabs, frees from another thread, what the owner
//! value should be): `cargo run -p hak-superslab --example pool` (`examples/pool.rs`).
#![deny(unsafe_op_in_unsafe_fn)]
#![no_std]

#[cfg(test)]
extern crate std;

mod inbox;
mod node;
mod slab;
mod superslab;

pub use inbox::{Inbox, InboxSlabs};
pub use slab::{RemoteFree, Retract, Slab, SlabRef};
pub use superslab::{
    SsRef, SuperSlab, EXT_BYTES, LG_SUPERSLAB_DEFAULT, LG_SUPERSLAB_MIN, MAGIC, MAX_SLABS,
    SLAB_SHIFT, SLAB_SIZE,
};

#[cfg(all(test, not(hak_loom)))]
mod tests;
