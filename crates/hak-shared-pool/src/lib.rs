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
//!   default [`DEFAULT_PURGE_DELAY_NS`]); [`SharedPool::trim`] does all of that at once and
//!   reclaims abandoned slabs that emptied. [`SharedPool::prefork`] / `postfork` hold its locks
//!   across `fork()`.
//! - [`Acquired`], [`Stage`], [`PoolStats`], [`MAX_CLASSES`].
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
//! abandoned). Lists are intrusive and unbounded; links are pointers carrying the mapping's
//! provenance.
//!
//! Memory return: an EMPTY slot keeps its pages for the purge delay (a program that frees and
//! reallocates soon reuses them warm, with no page faults); then a purge pass, run on the
//! pool's slow paths or by the layer above, decommits them. A SuperSlab with no ACTIVE slot
//! goes to the SuperSlab cache when its last EMPTY slot has been purged.
//!
//! Concurrency: all list and state changes happen under one mutex; acquire and release are
//! per-slab (once per 64 KiB of blocks), never per allocation, and a purge pass looks at a
//! bounded number of SuperSlabs per lock hold. Slab metadata changes (`assign`, `adopt`) and
//! syscalls (mapping, decommit) happen outside the lock.
#![deny(unsafe_op_in_unsafe_fn)]
#![no_std]

#[cfg(test)]
extern crate std;

mod pool;
mod slots;

pub use pool::{Acquired, PoolStats, SharedPool, Stage, DEFAULT_PURGE_DELAY_NS, MAX_CLASSES};

#[cfg(all(test, not(hak_loom)))]
mod tests;
