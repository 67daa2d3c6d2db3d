//! hakmem's shared pool (layer 3, "SP-SLOT"): where thread fronts get slabs and give them back.
//!
//! What it offers:
//! - [`SharedPool`]: [`SharedPool::acquire`] hands a slab, assigned to a size class and owned by
//!   the caller, from the cheapest source ([`Stage`]): 0, an abandoned slab of the class that
//!   still has free blocks (adopted); 1, an EMPTY slot that last served the class; 2, an UNUSED
//!   slot in an existing SuperSlab (one already holding the class preferred), or failing that an
//!   EMPTY slot of another class; 3, a new SuperSlab from the LRU cache, then from the OS.
//!   [`SharedPool::release`] takes back an empty slab (ACTIVE -> EMPTY); a SuperSlab left with no
//!   ACTIVE slot leaves every list and goes to the cache once its slots have been purged (the
//!   last live one is kept).
//!   [`SharedPool::publish`] lists an ownerless slab with free blocks for adoption (only thread
//!   exit creates those). [`SharedPool::purge`] / [`SharedPool::maybe_purge`] give back the
//!   pages of slabs that stayed EMPTY for the purge delay ([`SharedPool::set_purge_delay`],
//!   default [`DEFAULT_PURGE_DELAY_NS`]), and release a few abandoned slabs whose blocks all
//!   came back; [`SharedPool::trim`] does all of that at once. [`SharedPool::prefork`] / `postfork` hold its locks
//!   across `fork()`.
//! - [`Acquired`], [`Stage`], [`PoolStats`] (a snapshot of [`PoolCounters`], declared with
//!   `hak_sync::stats!`), [`MAX_CLASSES`].
//!
//! Per-slot state lives in each SuperSlab header's extension area (`hak_superslab::EXT_BYTES`):
//! UNUSED (never assigned since the SuperSlab was formatted), ACTIVE (assigned; owned by a
//! thread, or detached with live blocks), EMPTY (all blocks back; keeps its last class),
//! PURGING (an EMPTY slot whose pages are being given back outside the lock).
//! Invariants, per SuperSlab: `active == |ACTIVE| + |PURGING|` and
//! `active + |EMPTY| + |UNUSED| == nslabs`; `unused_mask` has a bit per UNUSED slot; it is on
//! the UNUSED list iff `unused_mask != 0`; every EMPTY slot is on the EMPTY list of its class;
//! `dirty_mask` has a bit per EMPTY slot whose pages may still be committed, and the SuperSlab
//! is on the dirty list iff `dirty_mask != 0`; a slot is on at most one slot list (EMPTY or
//! abandoned). Lists are `hak_collections::List`s, intrusive and unbounded; links are pointers
//! carrying the mapping's provenance.
//!
//! Memory return: an EMPTY slot keeps its pages for the purge delay (a program that frees and
//! reallocates soon reuses them warm, with no page faults); then a purge pass, run on the
//! pool's slow paths or by the layer above, decommits them. A SuperSlab with no ACTIVE slot
//! goes to the SuperSlab cache when its last EMPTY slot has been purged.
//!
//! Huge pages: once the pool holds 8 SuperSlabs (a 16 MiB small-object heap), new ones are
//! advised for transparent huge pages before their first touch: such a heap is used densely,
//! and one 2 MiB fault replaces 512. Smaller programs are never advised.
//!
//! Concurrency: all list and state changes happen under one mutex; acquire and release are
//! per-slab (once per 64 KiB of blocks), never per allocation, and a purge pass looks at a
//! bounded number of SuperSlabs per lock hold. Slab metadata changes (`assign`, `adopt`) and
//! syscalls (mapping, decommit) happen outside the lock.
//!
//! # Example
//!
//! ```rust
//! use hak_os::Os;
//! use hak_registry::{CacheLimits, Registry};
//! use hak_shared_pool::{SharedPool, Stage};
//! use hak_superslab::{Inbox, LG_SUPERSLAB_DEFAULT};
//!
//! let os = Os::new();
//! let reg = Registry::new(&os);
//! let pool = SharedPool::new(&reg, LG_SUPERSLAB_DEFAULT, CacheLimits::DEFAULT);
//! let me = Inbox::new(); // the owner's identity: must not move while it owns slabs
//! // SAFETY: `me` outlives our ownership of the slab and stays in place.
//! let got = unsafe { pool.acquire(3, 64, &me) }.expect("the OS refused memory");
//! assert_eq!(got.stage, Stage::NewSuperSlab);
//! // SAFETY: we own the slab; its one block is back before it is released, unarmed.
//! unsafe {
//!     let b = got.slab.alloc().expect("room");
//!     got.slab.free_local(b);
//!     pool.release(got.slab);
//! }
//! // The next request for the class gets the same slab back, still warm.
//! // SAFETY: as above.
//! let again = unsafe { pool.acquire(3, 64, &me) }.expect("memory");
//! assert_eq!((again.stage, again.slab), (Stage::EmptySameClass, got.slab));
//! // SAFETY: ours, empty.
//! unsafe { pool.release(again.slab) };
//! assert!(pool.check_invariants().is_ok());
//! ```
//!
//! The pool in a complete allocator, with per-thread caches in front of it: the
//! `global_alloc` example of hak-tiny-front (`cargo run -p hak-tiny-front --example
//! global_alloc`).
#![deny(unsafe_op_in_unsafe_fn)]
#![no_std]

#[cfg(test)]
extern crate std;

mod pool;
mod slots;

pub use pool::{
    Acquired, PoolCounters, PoolStats, SharedPool, Stage, DEFAULT_PURGE_DELAY_NS, MAX_CLASSES,
};

#[cfg(all(test, not(hak_loom)))]
mod tests;
