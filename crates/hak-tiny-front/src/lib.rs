//! hakmem's tiny-tier front (layer 4): per-thread caches in front of the shared pool.
//!
//! What it offers:
//! - Size classes ([`class_of`], [`CLASS_SIZES`], [`NUM_CLASSES`], [`TINY_MAX`]): 42 classes
//!   from 16 B to 48 KiB, four per power of two above 128 B (two above 32 KiB), so the worst-case internal waste
//!   for requests of 64 B and up is under 25%; the lookup is one table index.
//! - [`ThreadCache`]: per class, an array stack of free blocks (the unified cache) whose
//!   capacity grows from a floor to a ceiling as refills show demand, and a warm pool of slabs
//!   this cache owns. The hot operations [`ThreadCache::pop`] and [`ThreadCache::free_fast`]
//!   take raw pointers so that a shared, never-written sentinel cache (all capacities 0) can
//!   stand in for a thread that has none yet: every operation on it misses. Slow paths:
//!   [`ThreadCache::alloc_slow`], [`ThreadCache::free_slow`], [`ThreadCache::flush`].
//! - [`free_without_cache`]: frees a block from a thread that has no cache (remote path).
//! - [`FrontStats`]: per-cache counters, written only by the owning thread.
//!
//! Invariants:
//! - Every slab this cache owns (`slab.owner() == id`) is in its warm pool for the slab's class,
//!   and every warm slab is owned by it.
//! - Every block in a bin is a live block of its class (counted in its slab's `used`) whose
//!   slab this cache owned, or which was detached, when it entered the bin. Blocks of slabs
//!   another thread owns never enter a bin: they go to that slab's remote stack.
//! - `0 <= top[c] <= cap[c] <= BIN_MAX`; refills move up to `cap/2` blocks in one batch,
//!   overflow drains return the older half in one batch.
//! - A slab whose `used` falls to 0 goes back to the shared pool, unless it is the last warm
//!   slab of its class (hysteresis against acquire/release ping-pong).
//! - After [`ThreadCache::flush`] the cache holds no block and owns no slab: empty slabs were
//!   released, slabs with free blocks published for adoption, full ones detached (the first
//!   block freed back publishes them).
//!
//! Concurrency: a `ThreadCache` is used by one thread at a time (the facade keeps it in a
//! thread-local); other threads only ever push onto its slabs' remote stacks. The hot paths
//! take no lock, no atomic read-modify-write and no syscall: a relaxed load of the slab owner
//! and plain loads and stores.
#![deny(unsafe_op_in_unsafe_fn)]
#![no_std]

#[cfg(test)]
extern crate std;

mod cache;
mod classes;

pub use cache::{free_without_cache, FrontStats, ThreadCache, BIN_MAX, WARM_MAX};
pub use classes::{class_of, CLASS_SIZES, MAX_TINY_ALIGN, NUM_CLASSES, TINY_MAX};

#[cfg(all(test, not(hak_loom)))]
mod tests;
