//! hakmem's big tier (layer 4): one OS mapping per block for requests above 1 MiB and for
//! alignments the other tiers cannot serve, with freed mappings kept in a cache instead of
//! unmapped.
//!
//! What it offers:
//! - [`BigCache`]: [`alloc`](BigCache::alloc) (returns whether the block is known zeroed),
//!   [`alloc_growing`](BigCache::alloc_growing) (for a block expected to grow by `realloc`),
//!   [`dealloc`](BigCache::dealloc) (size from the header; bad pointers and double frees are
//!   refused with a [`FreeError`]), [`realloc`](BigCache::realloc) (in place, into the
//!   block's reserve, `mremap` into a larger reserved mapping, or map + copy),
//!   [`usable_size`](BigCache::usable_size), [`owns`](BigCache::owns),
//!   [`trim`](BigCache::trim), [`evict_expired`](BigCache::evict_expired),
//!   [`set_limits`](BigCache::set_limits), [`stats`](BigCache::stats) ([`BigStats`], the
//!   snapshot of [`BigCounters`], declared with `hak_sync::stats!` so reports nest it),
//!   [`prefork`](BigCache::prefork) / [`postfork`](BigCache::postfork) for fork handlers, and
//!   the test validator [`check_invariants`](BigCache::check_invariants).
//! - [`BigLimits`]: the cache's limits (bytes, entries, age, decommit threshold), with
//!   documented defaults ([`BigLimits::DEFAULT`]).
//! - [`MAX_SIZE`]: the largest request tried (the address space a process gets); larger ones
//!   are refused before any lock. [`GROW_RESERVE`] / [`GROW_RESERVE_MAX`]: the address space
//!   a growing block reserves.
//!
//! Layout of a block: a mapping from hak-os of `map_len` bytes whose `base` is aligned to
//! `max(GRANULE, align)` (`GRANULE` = 1 MiB, the registry's granule: no two registered regions
//! may share one; 2 MiB for mappings of 2 MiB and more), registered in the registry as
//! `OwnerKind::Big` for its whole length. Its first page holds a header (magic, state,
//! `map_len`, `block_len`, `user_off`, requested size, flags, cache links); the user block
//! starts at `base + user_off`, `user_off = max(page_size, align)`; `[block_len, map_len)` is
//! the reserve of a block that grows by `realloc`, never handed out (see `header`).
//!
//! Invariants:
//! - `base % max(GRANULE, align) == 0`, hence `(base + user_off) % align == 0`;
//! - `map_len % page_size == 0`, `user_off + size <= block_len <= map_len`,
//!   `usable == block_len - user_off`; mappings of 2 MiB or more are whole 2 MiB huge pages
//!   (`map_len % 2 MiB == 0`), so the kernel can back them with huge pages and `mremap` moves
//!   them a page table at a time;
//! - a block may span several kernel mappings (VMAs) once it was gathered from cached pieces;
//!   such a block (and both parts of one split) is marked `multi_map`. Every `mremap` moves a
//!   range inside one kernel mapping (kernels before 6.17 refuse other moves only after
//!   unmapping the destination): `realloc` copies a `multi_map` block instead of moving it,
//!   and a gathering takes a `multi_map` piece only when the request is huge and the piece
//!   2 MiB-aligned, whose mapping boundaries then all lie on 2 MiB boundaries, and moves it one
//!   2 MiB window per call. If a move fails, the destination is treated as lost (the kernel may
//!   have unmapped it already): the whole fresh mapping and the pieces are given up;
//! - `registry.lookup(a) == Some(Big at base)` for every `a` in `[base, base + map_len)` of a
//!   live or cached block; a block is unregistered before it is unmapped;
//! - a block is in the cache iff `state == CACHED`; live blocks have `state == LIVE`; cached
//!   blocks have no reserve (it is cut off, unmapped, on free);
//! - cache: `entries == |LRU| == |bins|`, `bytes == Σ map_len`, and after every operation
//!   `entries <= max_entries`, `bytes <= max(max_bytes, live bytes / 4)`, and no entry older
//!   than `ttl_ns` survives an operation that looked at the LRU tail;
//! - a request for `need` mapping bytes may take a cached block with
//!   `need <= map_len <= need * 5 / 4` (the 1.25x rule; up to the reserve it would get for a
//!   growing request) whose base satisfies the alignment; failing that, a request of at least
//!   1 MiB may take a cached block of up to 4x its size, split at the first granule boundary
//!   past `need` (so it keeps less than 1 MiB of slack, and the tail stays cached as a block of
//!   its own); failing that, while the program fills its blocks, a request above 1 MiB
//!   (alignment up to a page) gathers up to 4 smaller committed cached blocks, largest first,
//!   whose pages move side by side into a fresh mapping of the right size (`mremap` to a fixed
//!   address, no copy), so only the rest faults in;
//! - density decides huge pages and residency (see the `density` module): the first free of a
//!   fresh block measures how much of a 64-page sample of it is resident (`mincore`), the next
//!   fresh mapping looks at the last one while it is live, and the last block measured decides
//!   whether the program counts as dense. Dense: fresh mappings of 2 MiB or more are advised
//!   `MADV_HUGEPAGE` (one in 8 stays on base pages to keep measuring) and freed blocks stay
//!   resident. Sparse: no advice, or `MADV_NOHUGEPAGE` where the host's THP mode is `always`;
//!   no gathering; a freed block is decommitted once 8 of its users since it was mapped or
//!   last decommitted ended in another page than the user before (each leaves its last pages
//!   at its own offset). A block `realloc` moves is advised by its own density.
//!
//! Growth: `realloc` beyond a block's mapping moves its pages (`mremap`, no copy) into a fresh
//! mapping [`GROW_RESERVE`] times the new size, growing the block's own mapping into it, so a
//! block that keeps doubling moves once every third doubling and grows in place in between;
//! the reserve is address space, not memory.
//!
//! The cache: size-class bins (8 classes per power of two, a bitmap of the non-empty ones)
//! holding intrusive lists through the block headers, plus an LRU list (`hak_collections`'
//! `List` and `RegionCache`, the lists every tier uses); the cache has no capacity of its own
//! and no memory besides the [`BigCache`] itself. A search looks only at
//! non-empty classes in the request's range and at most 64 blocks, so no request, however
//! large, holds the lock for longer than that. Eviction (LRU order; TTL, entry cap, byte cap)
//! unregisters under the lock and unmaps after it. The byte cap is `max_bytes` (default
//! 64 MiB) or a quarter of the live big bytes, whichever is more: past it the oldest cached
//! blocks are unmapped. A decommit threshold exists (`decommit_over`: a freed block that would
//! push the cache's committed bytes past it is decommitted before it is cached) but is off by
//! default, because a decommitted dense block faults in all its pages again and so saves
//! almost nothing over a fresh mapping (sparse blocks are decommitted by the density rule
//! above). Blocks reused from the cache are never reported zeroed.
//!
//! Provenance: headers are reached only through `header::Block`, a raw handle carrying the
//! mapping's provenance (from hak-os, or the pointer the registry keeps for the block); user
//! pointers are derived from it; no reference into a mapping is held across a call that may
//! rewrite or unmap it.
//!
//! Failure is a value: OS refusal gives `None` (or leaves the cache smaller), never a panic;
//! internal consistency checks are `hak_sync::check!`. Nothing here allocates through Rust's
//! global allocator.
//!
//! Concurrency contract: every method takes `&self`; any thread may alloc, dealloc, realloc
//! (its own blocks), trim and read stats at once. One `hak_sync::Mutex` guards the bins, the
//! LRU list and the accounting, so under `--cfg hak_loom` loom sees every hand-off of a cached
//! block between threads; syscalls run outside it (see the `big` module). Headers of blocks a
//! thread does not own are read only under that lock. Statistics and the huge-page policy's
//! state are relaxed atomics.
//!
//! Miri: the unit tests run under Miri (`cargo +nightly miri test -p hak-bigcache`, Stacked
//! Borrows, and with `MIRIFLAGS=-Zmiri-tree-borrows`) on hak-os's Miri backend, which models
//! `mremap` moves as copies, so the gathering and growth tests run there too (the gathering
//! tests are told the program is dense, which Miri cannot measure). No test is skipped for
//! needing real `mremap` moves; skipped are only the tests that ask the kernel what it did,
//! through `/proc/self/smaps` or `mincore`, which Miri cannot run:
//! `a_sparse_program_gets_no_huge_pages_and_a_dense_one_does`,
//! `where_every_block_gets_huge_pages_sparse_ones_are_advised_against_them`,
//! `a_sparse_programs_freed_blocks_keep_no_pages_and_are_not_gathered`,
//! `density::tests::density_is_measured_from_resident_pages` and
//! `density::tests::the_next_fresh_mapping_counts_the_last_one_if_it_is_dense_already`; and,
//! inside `a_gathered_block_moves_into_another_gathering_one_mapping_at_a_time`, the check of
//! the kernel's mapping boundaries (`/proc/self/maps`). Under Miri the tests use fewer rounds
//! and sample long blocks' contents.
//!
//! # Example
//!
//! ```rust
//! use hak_bigcache::{BigCache, BigLimits, FreeError};
//! use hak_os::Os;
//! use hak_registry::Registry;
//!
//! let os = Os::new();
//! let reg = Registry::new(&os);
//! let big = BigCache::new(&reg, BigLimits::DEFAULT);
//! let (p, zeroed) = big.alloc(2 << 20, 8).expect("the OS refused a mapping");
//! assert!(zeroed, "a fresh mapping");
//! // SAFETY: `p` is a live block of `big`, not used after it is freed.
//! unsafe {
//!     big.dealloc(p).expect("a live block");
//!     assert_eq!(big.dealloc(p), Err(FreeError::DoubleFree)); // refused, nothing changes
//! }
//! let (q, zeroed) = big.alloc(2 << 20, 8).expect("memory");
//! assert_eq!((q, zeroed), (p, false), "the cached mapping, reused");
//! // SAFETY: as above.
//! unsafe { big.dealloc(q) }.expect("a live block");
//! big.trim(); // unmaps every cached block
//! assert_eq!(big.stats().cached_entries, 0);
//! ```
//!
//! A complete program (alignment, growth in place and by moving pages, bad frees, cache
//! reuse, trim): `cargo run -p hak-bigcache --example big` (`examples/big.rs`).
#![deny(unsafe_op_in_unsafe_fn)]
#![no_std]

#[cfg(test)]
extern crate std;

mod big;
mod bins;
mod cache;
mod density;
mod header;

#[cfg(all(test, not(hak_loom)))]
mod tests;

#[cfg(all(test, hak_loom))]
mod loom_tests;

pub use big::{
    BigCache, BigCounters, BigStats, FreeError, GROW_RESERVE, GROW_RESERVE_MAX, MAX_SIZE,
};
pub use cache::BigLimits;

const _: () = assert!(hak_registry::GRANULE == 1 << 20);
