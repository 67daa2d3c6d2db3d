//! hakmem's registry (layer 2): who owns an address, and where empty SuperSlabs wait.
//!
//! What it offers:
//! - [`Registry`]: a two-level page map from any address to the [`Owner`] of the 1 MiB granule
//!   it falls in ([`GRANULE`]). [`Registry::register`] claims the granules of a region (base
//!   aligned to [`GRANULE`]) for an [`OwnerKind`]; [`Registry::lookup`] answers for any address
//!   (an unknown one gives `None`, never a crash); [`Registry::unregister`] releases them.
//! - [`OwnerKind`]: a small number, not a closed list: hakmem's tiers are `SuperSlab`, `Mid`
//!   and `Big` (values below [`OwnerKind::FIRST_USER`], 16, are kept for them), and an
//!   allocator built from the layers registers regions of its own under
//!   [`OwnerKind::user`]`(16..=255)`. Telling kinds apart after a lookup is a compare.
//! - [`SuperSlabCache`]: an LRU cache of empty, registered regions (SuperSlabs) with limits on
//!   count, bytes and age; eviction unregisters and unmaps. [`SuperSlabCache::prewarm`] maps
//!   regions ahead of need.
//!
//! Invariants:
//! - The map has no capacity limit and never probes: the top level has one slot per 64 GiB of
//!   address space ([`TOP_BITS`] + [`LEAF_BITS`] + `GRANULE_SHIFT` = 48 address bits), and each
//!   leaf is mapped from hak-os the first time a granule under it is registered, then kept.
//!   Memory cost: 8 bytes per 1 MiB granule touched (8 KiB of leaf per GiB of heap, committed
//!   by the kernel a page at a time) plus the 32 KiB top array.
//! - An entry is `base | kind`, `base` the owner region's first granule, kept as the pointer
//!   the owner registered (with its provenance, the kind in its 8 low bits, which a
//!   granule-aligned base leaves zero); null means unowned, and no kind is 0.
//! - A region is registered before it is visible to any other thread and unregistered before
//!   it is unmapped, so a lookup sees nothing or a fully initialised owner.
//! - No two registered regions share a granule: registration of an owned granule fails and
//!   leaves the map as it was.
//!
//! Concurrency: `lookup` is wait-free (two acquire loads). `register`/`unregister` may run
//! concurrently with lookups and with each other on disjoint regions; leaf creation races are
//! settled by a compare-exchange (the loser unmaps its leaf). The cache is a mutex-protected
//! list: it sits on the slow path, where a SuperSlab is emptied or needed.
//!
//! # Example
//!
//! ```rust
//! use hak_os::Os;
//! use hak_registry::{OwnerKind, Registry, GRANULE};
//!
//! let os = Os::new();
//! let reg = Registry::new(&os);
//! let base = os.map(2 * GRANULE, GRANULE).expect("the OS refused 2 MiB");
//! reg.register(base, 2 * GRANULE, OwnerKind::Big).expect("a free, aligned region");
//! let inside = base.as_ptr() as usize + GRANULE + 100;
//! let owner = reg.lookup(inside).expect("registered");
//! assert_eq!((owner.kind, owner.base), (OwnerKind::Big, base));
//! assert_eq!(reg.lookup(0), None, "unknown addresses give None");
//! reg.unregister(base, 2 * GRANULE); // before unmapping
//! assert_eq!(reg.lookup(inside), None);
//! // SAFETY: our mapping, no longer registered or used.
//! unsafe { os.unmap(base, 2 * GRANULE) }.expect("unmap");
//! ```
//!
//! A complete program (bump arenas whose chunks are registered under a user kind; which arena
//! holds an address): `cargo run -p hak-registry --example arena` (`examples/arena.rs`).
#![deny(unsafe_op_in_unsafe_fn)]
#![no_std]

#[cfg(test)]
extern crate std;

mod cache;
mod map;

pub use cache::{CacheCounters, CacheLimits, CacheStats, SuperSlabCache, HOT_COMMITTED};
pub use map::{
    Owner, OwnerKind, RegisterError, Registry, GRANULE, GRANULE_SHIFT, LEAF_BITS, TOP_BITS,
};
