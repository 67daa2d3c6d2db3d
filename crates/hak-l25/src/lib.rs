//! hakmem's mid tier ("L2.5", layer 4): blocks of up to 1 MiB in 36 size classes from 2560 B.
//! The facade sends it the requests above the tiny tier's 48 KiB bound
//! (`hak_tiny_front::TINY_MAX`, after rounding the size up to the alignment) up to 1 MiB, with
//! alignments up to 4 KiB, except zeroed ones of 256 KiB and more (those go to the big tier);
//! the crate itself serves any size from 1 B up to [`MID_MAX`].
//!
//! What it owns: size classes over chunks mapped from hak-os and registered in hak-registry,
//! a per-thread cache the facade keeps, and sharded global free lists whose shard count grows
//! under contention. What it offers:
//! - [`Mid`]: the shared state. [`Mid::alloc`], [`Mid::dealloc`], [`Mid::usable_size`],
//!   [`Mid::realloc_in_place`] (whether a resize stays in the block's class),
//!   [`Mid::prefork`] / [`Mid::postfork`],
//!   [`Mid::flush_thread`], [`Mid::trim`], [`Mid::decay`], [`Mid::stats`] (a [`MidStats`]);
//!   settings [`Mid::set_decommit_budget`], [`Mid::set_max_empty_chunks`] and
//!   [`Mid::set_purge_delay`].
//! - [`MidThreadCache`]: one per thread, plain data (`const fn new`, all-zero is valid, no
//!   `Drop`), passed as `&mut` to every operation.
//! - Routing helpers: [`MID_MIN`], [`MID_MAX`], [`MID_MAX_ALIGN`], [`can_serve`],
//!   [`block_size`]; memory-return constants [`DECOMMIT_MIN`], [`DEFAULT_DECOMMIT_BUDGET`],
//!   [`DEFAULT_PURGE_DELAY_NS`].
//!
//! Size classes (`class.rs`): 4 per power of two, 2560 B ..= 1 MiB (36 classes), looked up by
//! arithmetic; waste `(class - size) / size < 25%`. Alignment: any power of two up to 4096 is
//! served by the class of `round_up(max(size, MID_MIN), align)` when that is `<= MID_MAX`;
//! the facade sends larger alignments to the big tier.
//!
//! Invariants:
//! - Every block is in exactly one place: with a user, in one thread cache bin, in one shard
//!   batch, on its chunk's dirty or clean free list, held by a purge in progress, or not yet
//!   carved. Every free block carries its free mark. Per chunk
//!   `used + free_count == carved <= capacity` (`chunk.rs`); per bin
//!   `count == |list| <= TC_CEIL[class]` (`cache.rs`; each bin's capacity adapts between 1 and
//!   that ceiling by the bin's low-water mark and its refills and spills).
//! - Chunks are `CHUNK_BYTES[class]` (whole MiB) mapped 1 MiB-aligned, registered as
//!   `OwnerKind::Mid` after their header is written and unregistered before unmapping; so for a
//!   live block `p`, `registry.lookup(p).base` is its chunk and the header there gives its class.
//!   Block `i` of a chunk is at `base + 4096 + i · class_size`, so it is
//!   `min(class_size & -class_size, 4096)`-aligned.
//! - Shard tables are never unmapped while the `Mid` lives; a batch pushed into a table that
//!   was replaced is migrated by the pusher or the grower (`shard.rs` has the argument, the
//!   loom model checks it).
//! - Memory return: free memory that stays unused for the purge delay (1 s by default,
//!   [`Mid::set_purge_delay`]) goes back to the OS: idle shards are drained to the chunks,
//!   free blocks of at least 16 KiB that waited that long are decommitted past their first
//!   page, and empty chunks (cached for reuse, at most 4 / 16 MiB) that waited that long are
//!   unregistered and unmapped. [`Mid::decay`] does it, at most once per eighth of the delay;
//!   the tier calls it from its slow paths and once in 64 allocations of a thread, the facade
//!   may call it from elsewhere. Between passes the committed bytes of free blocks on chunk
//!   lists stay within the decommit budget (32 MiB) plus half the bytes in use: past it, the
//!   oldest free blocks of the freeing class are decommitted at once. [`Mid::trim`] does all
//!   of it at once, whatever the ages.
//!
//! Misuse: a second free of a block is detected by a free mark in the block (see `block.rs`),
//! reported on stderr and ignored. Internal consistency checks use `hak_sync::check!` (one
//! line on stderr and abort in builds with debug assertions, nothing in release): nothing on an
//! allocation path can panic, because a panic allocates and would re-enter the allocator,
//! possibly while this tier holds a lock.
//!
//! Concurrency contract: a `Mid` is `Sync`; any thread may call anything at any time, each with
//! its own `MidThreadCache` (a cache is used by one thread at a time; a block may be freed into
//! any thread's cache). The thread-cache hit path takes no lock, makes no atomic
//! read-modify-write and no syscall, except once in 64 allocations, when it does what a slow
//! path does in one of eight: fold its counters (relaxed atomics), read the clock (vDSO) and
//! maybe run a decay pass. Slow paths take one shard mutex (a `try_lock` first, whose failures
//! measure contention), or one class's central mutex (then possibly the empty-cache and
//! all-chunks mutexes, in that order); a purge drops the class mutex while it calls madvise. A
//! decay pass tries each shard and class mutex (`try_lock`) and skips what is busy; batches it
//! takes out of an idle shard go back to their chunks as any other free does. Shard tables are
//! published by an `AtomicPtr` with release/acquire.
//! Fork: [`Mid::prefork`] takes every lock in this fixed order — the shard table's
//! `grow_lock`, every shard of every table (newest first, in index order), the 36 central
//! locks in class order, the empty cache, the all-chunks list — and [`Mid::postfork`]
//! releases them in reverse. No path of this tier holds one of its locks while taking another
//! tier's, or takes them against this order, so the facade may call it anywhere in its own
//! sequence. OS refusal makes `alloc` return `None`, never panic; allocation works again
//! once mapping does. Nothing here allocates through the global allocator; metadata lives in
//! chunk headers and hak-os pages.
//!
//! Provenance: chunk headers, shard tables and blocks are reached through raw pointers derived
//! from the pointer each mapping came with (the registry hands back the one a chunk was
//! registered with), never through a reference into a mapping, so every access keeps the
//! mapping's provenance; block links are stored as pointers. The unit tests run under Miri
//! with Stacked and with Tree Borrows (`cargo +nightly miri test -p hak-l25`, loops strided
//! under `cfg(miri)`; the fork and shard-contention tests are skipped there).
//!
//! # Example
//!
//! ```rust
//! use hak_l25::{block_size, Mid, MidThreadCache};
//! use hak_os::Os;
//! use hak_registry::Registry;
//!
//! let os = Os::new();
//! let reg = Registry::new(&os);
//! let mid = Mid::new(&reg);
//! let mut tc = MidThreadCache::new(); // one per thread
//! let p = mid.alloc(&mut tc, 100 << 10, 4096).expect("the OS refused a chunk");
//! assert_eq!(p.as_ptr() as usize % 4096, 0);
//! // SAFETY: `p` is a live block of `mid`; it is freed with the size and alignment it was
//! // allocated with, and not used afterwards.
//! unsafe {
//!     assert_eq!(mid.usable_size(p), block_size(100 << 10, 4096)); // 112 KiB
//!     mid.dealloc(&mut tc, p, 100 << 10, 4096);
//! }
//! assert_eq!(mid.alloc(&mut tc, 100 << 10, 4096), Some(p), "from the thread cache");
//! // SAFETY: as above.
//! unsafe { mid.dealloc(&mut tc, p, 100 << 10, 4096) };
//! assert!(mid.alloc(&mut tc, 2 << 20, 8).is_none(), "above 1 MiB: not this tier's");
//! mid.flush_thread(&mut tc); // before the cache goes away
//! mid.trim();
//! assert_eq!(mid.stats().chunks_live, 0);
//! ```
//!
//! A complete program (sizes served and refused, frees from another thread, a double free,
//! memory return): `cargo run -p hak-l25 --example mid` (`examples/mid.rs`).
#![deny(unsafe_op_in_unsafe_fn)]
#![no_std]

#[cfg(test)]
extern crate std;

mod block;
mod cache;
mod chunk;
mod class;
mod mid;
mod shard;

#[cfg(all(test, hak_loom))]
mod loom_tests;
#[cfg(all(test, not(hak_loom)))]
mod tests;

pub use cache::MidThreadCache;
pub use class::{block_size, can_serve, MID_MAX, MID_MAX_ALIGN, MID_MIN};
pub use mid::{Mid, MidStats, DECOMMIT_MIN, DEFAULT_DECOMMIT_BUDGET, DEFAULT_PURGE_DELAY_NS};
