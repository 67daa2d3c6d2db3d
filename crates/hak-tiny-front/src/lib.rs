//! hakmem's tiny-tier front (layer 4): per-thread caches in front of the shared pool.
//!
//! What it offers:
//! - Size classes ([`class_of`], [`CLASS_SIZES`], [`NUM_CLASSES`], [`TINY_MAX`]): 42 classes
//!   from 16 B to 48 KiB, four per power of two above 128 B (two above 32 KiB), so the
//!   worst-case internal waste for requests of 64 B and up is under 25%; the lookup is one
//!   table index.
//! - [`ThreadCache`]: per class, an array stack of free blocks (the bin) whose capacity grows
//!   from a floor to a ceiling as refills show demand and shrinks when the class goes idle, and
//!   the slabs the thread owns: a list of slabs with free blocks and a list of full ones. The
//!   hot operations [`ThreadCache::pop`] and [`ThreadCache::free_fast`] take raw pointers so
//!   that a shared, never-written sentinel cache (all capacities 0) can stand in for a thread
//!   that has none yet: every operation on it misses. Slow paths: [`ThreadCache::alloc_slow`],
//!   [`ThreadCache::free_slow`], [`ThreadCache::flush`].
//! - [`CacheShared`]: the part of a cache other threads touch (its inbox, its counters
//!   [`FrontStats`]), kept outside the cache so the owner's `&mut` never covers it.
//! - [`free_without_cache`]: frees a block from a thread that has no cache (remote path).
//! - [`ThreadStates`]: the per-thread kit around the caches, generic over the caller's state
//!   type ([`PerThread`]) and thread-local ([`StateSlot`]): every thread starts on a sentinel
//!   state (no init branch on the fast path), states are built in OS pages on the first miss,
//!   flushed at thread exit through a pthread key, recycled through a free list, and listed
//!   for statistics. It holds no static: the caller declares the one `static` and the
//!   thread-local pointer, and its fast path reads that thread-local directly.
//!
//! How blocks move:
//! - A thread's slabs stay its own until it exits or flushes, full ones included. A block
//!   freed by its owner goes into the bin with plain stores; a bin that overflows returns its
//!   older half to the slabs, each run of blocks of one slab as one batch (packed into a few
//!   carrier blocks, spliced in once). A full slab that gets a
//!   block back from its owner moves to the avail list; one that gets a block from another
//!   thread is delivered into the owner's inbox by that thread (one compare-exchange,
//!   once per filling) and moves back on the owner's next refill. Nothing passes through the
//!   shared pool's lock on the way.
//! - Blocks of slabs another thread owns go into a small stash (pointers, per slab; the blocks
//!   are not written) and are handed over as one batch with one compare-exchange when the
//!   entry holds 32 KiB of blocks (at most 64), when another slab needs its place, or on the
//!   thread's next refill, drain, flush or exit. So a batch waits at most until the freeing
//!   thread next takes a slow path. The batch is packed into carriers (blocks holding pointers
//!   to the others), so the owner's refill reads a few cache lines the freeing core wrote, not
//!   one per block.
//! - A slab that empties moves to its class's empty list (at most `warm_limit` of them, 4 by
//!   default), where the class's next refill finds it before asking the pool; past that it
//!   goes back to the shared pool, where any class can reuse it and a purge returns its pages
//!   after a delay.
//! - Every 256 slow-path events, bins of classes that had none in that window give half their
//!   blocks back and halve their capacity, and their empty slabs go back to the pool, so a
//!   class that went quiet stops holding memory.
//!
//! Invariants:
//! - Every slab this cache owns (`slab.owner()` is its inbox) is on exactly one of its lists
//!   for the slab's class (avail, full or empty), and every listed slab is owned by it. A slab
//!   in the inbox is on a full list; a slab on the empty list has no block in use.
//! - Every block in a bin is a live block of its class in a slab this cache owns. Blocks of
//!   slabs it does not own never enter a bin: they go to the stash, then the slab's remote
//!   stack.
//! - `0 <= top[c] <= cap[c] <= BIN_MAX`; refills move up to `cap/2` blocks in one batch.
//! - After [`ThreadCache::flush`] the cache holds no block, stashes nothing and owns no slab:
//!   empty slabs were released, slabs with free blocks published for adoption, full ones
//!   detached (the first block freed back publishes them).
//! - What an idle thread keeps: its bins (at most 64 KiB of blocks per class, shrinking while
//!   other classes are busy), its stash (at most 16 entries of 32 KiB), and the slabs it owns
//!   with blocks in use plus at most `warm_limit` empty ones per class; all of it goes back
//!   when the thread exits.
//!
//! Concurrency: a `ThreadCache` is used by one thread at a time (the facade keeps it in a
//! thread-local); other threads only push onto its slabs' remote stacks and into its inbox,
//! both in [`CacheShared`]. The hot paths take no lock, no atomic read-modify-write and no
//! syscall: a relaxed load of the slab owner and plain loads and stores. [`ThreadStates`]
//! takes a lock only to retire or recycle a state (once per thread), and its list of all
//! states is push-only (one compare-exchange per state built).
//!
//! # Example
//!
//! One thread's cache over a shared pool (a program keeps one per thread; see below):
//!
//! ```rust
//! use hak_os::Os;
//! use hak_registry::{CacheLimits, Registry};
//! use hak_shared_pool::SharedPool;
//! use hak_superslab::LG_SUPERSLAB_DEFAULT;
//! use hak_tiny_front::{class_of, CacheShared, ThreadCache, CLASS_SIZES};
//!
//! let os = Os::new();
//! let reg = Registry::new(&os);
//! let pool = SharedPool::new(&reg, LG_SUPERSLAB_DEFAULT, CacheLimits::DEFAULT);
//! let shared = CacheShared::new();
//! let mut tc = ThreadCache::new(&pool);
//! // SAFETY: `shared` outlives every slab the cache owns (it is flushed below) and stays put.
//! unsafe { tc.activate(&shared, 4) };
//!
//! let class = class_of(100, 8).expect("a tiny size");
//! assert_eq!(CLASS_SIZES[class], 112);
//! let tc: *mut ThreadCache = &mut tc;
//! // SAFETY: `tc` is this thread's active cache; blocks are freed with their own class.
//! unsafe {
//!     // A miss (null) takes the slow path, which refills the bin from a slab.
//!     let mut p = ThreadCache::pop(tc, class);
//!     if p.is_null() {
//!         p = (*tc).alloc_slow(class).expect("the OS refused memory").as_ptr();
//!     }
//!     p.write_bytes(1, 112);
//!     let q = ThreadCache::pop(tc, class); // now a hit: no lock, no atomic operation
//!     assert!(!q.is_null() && q != p);
//!     for b in [p, q] {
//!         if !ThreadCache::free_fast(tc, class, b, pool.lg_size()) {
//!             (*tc).free_slow(class, core::ptr::NonNull::new_unchecked(b));
//!         }
//!     }
//!     (*tc).flush(); // what thread exit does: every block and slab goes back
//! }
//! ```
//!
//! A complete `#[global_allocator]` built on this crate and hak-shared-pool ([`ThreadStates`]
//! for the sentinel, states in OS pages, the flush at thread exit and state recycling; threads
//! passing blocks to each other): `cargo run -p hak-tiny-front --example global_alloc`
//! (`examples/global_alloc.rs`).
#![deny(unsafe_op_in_unsafe_fn)]
#![no_std]

#[cfg(test)]
extern crate std;

mod cache;
mod classes;
mod list;
// Thread lifetimes, pthread keys and OS pages: nothing a loom model can run.
#[cfg(not(hak_loom))]
mod states;

pub use cache::{
    free_without_cache, CacheShared, FrontStats, ThreadCache, TinyStats, BIN_MAX, WARM_MAX,
};
pub use classes::{class_of, CLASS_SIZES, MAX_TINY_ALIGN, NUM_CLASSES, TINY_MAX};
#[cfg(not(hak_loom))]
pub use states::{PerThread, StateCounts, StateSlot, ThreadStates};

#[cfg(all(test, not(hak_loom)))]
mod tests;
