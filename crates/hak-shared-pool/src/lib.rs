//! hakmem's shared pool (layer 3, "SP-SLOT"): where thread fronts get slabs and give them back.
//!
//! What it offers:
//! - [`SharedPool`]: [`SharedPool::acquire`] hands a slab, assigned to a size class and owned by
//!   the caller, from the cheapest source ([`Stage`]): 0, an abandoned slab of the class that
//!   still has free blocks (adopted); 1, an EMPTY slot that last served the class; 2, an UNUSED
//!   slot in an existing SuperSlab (one already holding the class preferred), or failing that an
//!   EMPTY slot of another class; 3, a new SuperSlab from the LRU cache, then from the OS.
//!   [`SharedPool::release`] takes back an empty slab (ACTIVE -> EMPTY); a SuperSlab left with no
//!   ACTIVE slot leaves every list and goes to the cache (the last live one is kept).
//!   [`SharedPool::publish`] lists an ownerless slab with free blocks for adoption;
//!   [`SharedPool::trim`] reclaims abandoned slabs that emptied and flushes the cache.
//! - [`Acquired`], [`Stage`], [`PoolStats`], [`MAX_CLASSES`].
//!
//! Per-slot state lives in each SuperSlab header's extension area (`hak_superslab::EXT_BYTES`):
//! UNUSED (never assigned since the SuperSlab was formatted), ACTIVE (assigned; owned by a
//! thread, or detached with live blocks), EMPTY (all blocks back; keeps its last class).
//! Invariants, per SuperSlab: `active + |EMPTY| + |UNUSED| == nslabs`; `unused_mask` has a bit
//! per UNUSED slot; it is on the UNUSED list iff `unused_mask != 0`; every EMPTY slot is on
//! the EMPTY list of its class; a slab is on at most one list (EMPTY or abandoned). Lists are
//! intrusive and unbounded (the C original dropped entries past 256).
//!
//! Concurrency: all list and state changes happen under one mutex; acquire and release are
//! per-slab (once per 64 KiB of blocks), never per allocation. Slab metadata changes
//! (`assign`, `adopt`) happen outside the lock on a slot the caller holds exclusively. Mapping
//! a SuperSlab happens outside the lock.
#![deny(unsafe_op_in_unsafe_fn)]
#![no_std]

#[cfg(test)]
extern crate std;

mod pool;

pub use pool::{Acquired, PoolStats, SharedPool, Stage, MAX_CLASSES};

#[cfg(all(test, not(hak_loom)))]
mod tests;
