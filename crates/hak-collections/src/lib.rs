//! hakmem's intrusive containers: the one doubly linked list and the one region cache every
//! layer uses.
//!
//! Job: keep allocator metadata in the memory it describes. A region header, a slab record or
//! a block header carries its own [`Links`]; a [`List`] strings such nodes together without
//! owning or allocating anything, and a [`RegionCache`] keeps empty regions for reuse under
//! count, byte and age limits. The crate has no dependencies, no statics and no unsafe global
//! state, so a custom allocator can use it as it is.
//!
//! Invariants and safety: a node is reached only through the handle it was listed with (a raw
//! pointer that carries its mapping's provenance, or any [`Handle`]); no reference to a node is
//! ever made here, so a node can be rewritten or unmapped by its owner once it is off every
//! list. Each unsafe method states what the caller guarantees (essentially: listed nodes are
//! valid). See [`list`] and [`region_cache`] for the structural invariants.
//!
//! Concurrency: none. The containers are plain data; their owner serialises access (every
//! list in hakmem lives under a mutex or in one thread's state).
//!
//! # Example
//!
//! ```
//! use hak_collections::{Limits, Links, List, RegionCache};
//!
//! // A region's header, as it would sit at the start of a mapping.
//! struct Header {
//!     links: Links<*mut Header>,
//!     len: usize,
//!     cached_at: u64,
//! }
//! // SAFETY: `links` is this cache's alone, `len` does not change while cached, and only the
//! // cache writes `cached_at`. (Adapters whose links are not a plain field implement
//! // `Adapter` and `Region` by hand.)
//! hak_collections::adapter! {
//!     unsafe struct Lru for Header { links: links, bytes: len, stamp: cached_at }
//! }
//!
//! let mut regions: Vec<Header> =
//!     (1..=3).map(|i| Header { links: Links::new(), len: i << 20, cached_at: 0 }).collect();
//! let base = regions.as_mut_ptr();
//! let mut cache = RegionCache::<Lru>::new();
//! let limits = Limits { max_count: 8, max_bytes: 4 << 20, ttl_ns: 1_000 };
//! // SAFETY: the headers outlive the cache's use of them and are cached once each.
//! unsafe {
//!     for i in 0..3 {
//!         cache.push(base.add(i), 10 * i as u64); // 1, 2 and 3 MiB: 6 MiB cached
//!     }
//!     // Over 4 MiB: the oldest leave until the rest fits.
//!     let mut victims: List<Lru> = cache.evict(30, &limits);
//!     assert_eq!(victims.len(), 2);
//!     while let Some(v) = victims.pop_front() {
//!         let _ = (*v).len; // a tier would unmap the region here, after unlocking
//!     }
//!     assert_eq!((cache.count(), cache.bytes()), (1, 3 << 20));
//! }
//! ```
//!
//! A complete program with both containers (an LRU of freed buffers under limits, plus a list
//! per size): `cargo run -p hak-collections --example buffer_cache`
//! (`examples/buffer_cache.rs`).
#![deny(unsafe_op_in_unsafe_fn)]
#![no_std]

#[cfg(test)]
extern crate std;

pub mod list;
pub mod region_cache;

pub use list::{Adapter, Handle, Links, List};
pub use region_cache::{Limits, Region, RegionCache};

/// Declares an adapter whose links are a field of the node, reached from a `*mut Node`
/// handle by field projection (`&raw mut (*n).field`: no reference, the handle's provenance),
/// and optionally its [`Region`] impl from two more fields: the region's byte count (a
/// `usize`) and its stamp (a `u64`).
///
/// The `unsafe` in the invocation is the caller's promise, which its `// SAFETY:` comment
/// states: the links field belongs to this list alone (or to lists a node is never on at the
/// same time), and for a region the byte count does not change while it is cached and the
/// stamp field is written by nothing else while it is cached.
///
/// ```
/// use hak_collections::{Links, RegionCache};
///
/// struct Chunk {
///     lru: Links<*mut Chunk>,
///     len: usize,
///     cached_at: u64,
/// }
/// // SAFETY: `lru` is only this cache's; `len` never changes; `cached_at` is the cache's.
/// hak_collections::adapter! {
///     /// A chunk's place in the cache.
///     unsafe struct ByAge for Chunk { links: lru, bytes: len, stamp: cached_at }
/// }
///
/// let mut c = Chunk { lru: Links::new(), len: 4096, cached_at: 0 };
/// let mut cache = RegionCache::<ByAge>::new();
/// // SAFETY: `c` outlives its time in the cache.
/// unsafe {
///     cache.push(&raw mut c, 7);
///     assert_eq!(RegionCache::<ByAge>::cached_at(&raw mut c), 7);
///     assert_eq!(cache.bytes(), 4096);
///     cache.remove(&raw mut c);
/// }
/// ```
#[macro_export]
macro_rules! adapter {
    (
        $(#[$meta:meta])* $vis:vis unsafe struct $name:ident for $node:ty { links: $links:ident }
    ) => {
        $(#[$meta])*
        $vis struct $name;

        // SAFETY: the links pointer is a field projection of the node pointer (same
        // provenance, no reference), the same field every time; the invocation's `unsafe`
        // carries the caller's promise that the field is this list's.
        unsafe impl $crate::Adapter for $name {
            type Node = *mut $node;
            #[inline]
            unsafe fn links(n: *mut $node) -> *mut $crate::Links<*mut $node> {
                // SAFETY: `n` is a valid node (the trait's contract).
                unsafe { &raw mut (*n).$links }
            }
        }
    };
    (
        $(#[$meta:meta])* $vis:vis unsafe struct $name:ident for $node:ty {
            links: $links:ident, bytes: $bytes:ident, stamp: $stamp:ident $(,)?
        }
    ) => {
        $crate::adapter! { $(#[$meta])* $vis unsafe struct $name for $node { links: $links } }

        // SAFETY: field projections as above; the invocation's `unsafe` carries the promise
        // that the byte count is constant and the stamp untouched while the region is cached.
        unsafe impl $crate::Region for $name {
            #[inline]
            unsafe fn bytes(n: *mut $node) -> usize {
                // SAFETY: `n` is a valid node (the trait's contract).
                unsafe { (*n).$bytes }
            }
            #[inline]
            unsafe fn stamp(n: *mut $node) -> *mut u64 {
                // SAFETY: as above.
                unsafe { &raw mut (*n).$stamp }
            }
        }
    };
}
