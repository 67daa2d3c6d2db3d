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
//! use hak_collections::{Adapter, Limits, Links, List, Region, RegionCache};
//!
//! // A region's header, as it would sit at the start of a mapping.
//! struct Header {
//!     links: Links<*mut Header>,
//!     len: usize,
//!     cached_at: u64,
//! }
//! struct Lru;
//! // SAFETY: the links pointer is derived from the node pointer, no reference is made.
//! unsafe impl Adapter for Lru {
//!     type Node = *mut Header;
//!     unsafe fn links(n: *mut Header) -> *mut Links<*mut Header> {
//!         // SAFETY: `n` is valid (the trait's contract).
//!         unsafe { &raw mut (*n).links }
//!     }
//! }
//! // SAFETY: `len` does not change while cached; `cached_at` is a field of its own.
//! unsafe impl Region for Lru {
//!     unsafe fn bytes(n: *mut Header) -> usize {
//!         // SAFETY: as above.
//!         unsafe { (*n).len }
//!     }
//!     unsafe fn stamp(n: *mut Header) -> *mut u64 {
//!         // SAFETY: as above.
//!         unsafe { &raw mut (*n).cached_at }
//!     }
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
#![deny(unsafe_op_in_unsafe_fn)]
#![no_std]

#[cfg(test)]
extern crate std;

pub mod list;
pub mod region_cache;

pub use list::{Adapter, Handle, Links, List};
pub use region_cache::{Limits, Region, RegionCache};
