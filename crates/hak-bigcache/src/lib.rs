//! hakmem's big tier (layer 4): one OS mapping per block for requests above 1 MiB and for
//! alignments the other tiers cannot serve, with freed mappings kept in a cache instead of
//! unmapped.
//!
//! What it offers:
//! - [`BigCache`]: [`alloc`](BigCache::alloc) (returns whether the block is known zeroed),
//!   [`dealloc`](BigCache::dealloc) (size from the header; bad pointers and double frees are
//!   refused with a [`FreeError`]), [`realloc`](BigCache::realloc) (in place, `mremap`, or
//!   map + copy), [`usable_size`](BigCache::usable_size), [`owns`](BigCache::owns),
//!   [`trim`](BigCache::trim), [`evict_expired`](BigCache::evict_expired),
//!   [`set_limits`](BigCache::set_limits), [`stats`](BigCache::stats) ([`BigStats`]) and the
//!   test validator [`check_invariants`](BigCache::check_invariants).
//! - [`BigLimits`]: the cache's limits (bytes, entries, age, decommit threshold), with
//!   documented defaults ([`BigLimits::DEFAULT`]).
//! - [`KEY_GRANULE`]: the granule cache keys are counted in (1 MiB).
//!
//! Layout of a block: a mapping from hak-os of `map_len` bytes whose `base` is aligned to
//! `max(GRANULE, align)` (`GRANULE` = 1 MiB, the registry's granule: no two registered regions
//! may share one), registered in the registry as `OwnerKind::Big` for its whole length. Its
//! first page holds a header (magic, state, `map_len`, `user_off`, requested size, cache links);
//! the user block starts at `base + user_off`, `user_off = max(page_size, align)`.
//!
//! Invariants:
//! - `base % max(GRANULE, align) == 0`, hence `(base + user_off) % align == 0`;
//! - `map_len % page_size == 0`, `user_off + size <= map_len`, `usable == map_len - user_off`;
//!   mappings of 2 MiB or more are whole 2 MiB huge pages (`map_len % 2 MiB == 0`), so the
//!   kernel can back all of them with huge pages and `mremap` moves them a page table at a time;
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
//! - a block is in the cache iff `state == CACHED`; live blocks have `state == LIVE`;
//! - cache: `entries == |LRU| == |table|`, `bytes == Σ map_len`, and after every operation
//!   `entries <= max_entries`, `bytes <= max(max_bytes, live bytes / 4)`, and no entry older
//!   than `ttl_ns` survives
//!   an operation that looked at the LRU tail;
//! - a request for `need` mapping bytes may take a cached block with
//!   `need <= map_len <= need * 5 / 4` (the 1.25x rule) whose base satisfies the alignment;
//!   failing that, a request of at least 1 MiB may take a cached block of up to 4x its size,
//!   split at the first granule boundary past `need` (so it keeps less than 1 MiB of slack,
//!   and the tail stays cached as a block of its own); failing that, a request above 1 MiB
//!   (alignment up to a page) gathers up to 4 smaller committed cached blocks, largest first,
//!   whose pages move side by side into a fresh mapping of the right size (`mremap` to a
//!   fixed address, no copy), so only the rest faults in;
//! - blocks of 2 MiB and more are mapped 2 MiB-aligned and advised for transparent huge pages.
//!
//! The cache: a chained hash table keyed by `map_len / KEY_GRANULE`, starting at 256 buckets
//! and doubling at load factor 0.75 *incrementally*: the old array stays readable and every
//! operation migrates 8 of its buckets, so no lookup waits for a whole rehash. Bucket arrays
//! come from hak-os; chains and the LRU list run through the block headers, so the cache has
//! no capacity of its own. Eviction (LRU order; TTL, entry cap, byte cap) unregisters under
//! the lock and unmaps after it. The byte cap is `max_bytes` (default 64 MiB) or a quarter of
//! the live big bytes, whichever is more: past it the oldest cached blocks are unmapped. A
//! decommit threshold exists (`decommit_over`: a freed block that would push the cache's
//! committed bytes past it is decommitted before it is cached) but is off by default, because
//! a decommitted cached block faults in all its pages again and so saves almost nothing over
//! a fresh mapping. Blocks reused from the cache are never reported zeroed.
//!
//! Failure is a value: OS refusal gives `None` (or leaves the cache smaller), never a panic.
//! Nothing here allocates through Rust's global allocator.
//!
//! Concurrency contract: every method takes `&self`; any thread may alloc, dealloc, realloc
//! (its own blocks), trim and read stats at once. One `hak_sync::Mutex` guards the table, the
//! LRU list and the accounting, so under `--cfg hak_loom` loom sees every hand-off of a cached
//! block between threads; syscalls run outside it (see the `big` module). Headers of blocks a
//! thread does not own are read only under that lock. Statistics are relaxed counters.
#![deny(unsafe_op_in_unsafe_fn)]
#![no_std]

#[cfg(test)]
extern crate std;

mod big;
mod cache;
mod header;
mod table;

#[cfg(all(test, not(hak_loom)))]
mod tests;

#[cfg(all(test, hak_loom))]
mod loom_tests;

pub use big::{BigCache, BigStats, FreeError, REALLOC_COPY_MAX};
pub use cache::BigLimits;

/// log2 of [`KEY_GRANULE`].
pub const KEY_GRANULE_SHIFT: u32 = 20;
/// The granule cache keys count in: a cached mapping of `map_len` bytes has key
/// `map_len >> KEY_GRANULE_SHIFT` (1 MiB, the registry's granule; a request scans the keys of
/// `need ..= need * 5 / 4`, at most 3 for an 8 MiB request).
pub const KEY_GRANULE: usize = 1 << KEY_GRANULE_SHIFT;

const _: () = assert!(KEY_GRANULE == hak_registry::GRANULE);
