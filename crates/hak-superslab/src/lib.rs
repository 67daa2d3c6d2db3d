//! hakmem's SuperSlab box (layer 2): a SuperSlab is a `2^lg` byte region (2 MiB by default,
//! 1 MiB supported), aligned to its size, cut into 64 KiB [`Slab`]s; each slab serves one block
//! size at a time.
//!
//! What it offers:
//! - [`SuperSlab`]: the header at the region's base. [`SuperSlab::init`] formats memory from
//!   hak-os; [`SuperSlab::from_block`] finds the header of any block by masking its address
//!   (and [`SuperSlab::is_valid`] checks the magic); [`SuperSlab::slab`] / [`SuperSlab::slab_index_of`].
//!   An extension area ([`SuperSlab::ext`], [`EXT_BYTES`]) belongs to the layer above.
//! - [`Slab`]: per-slab metadata. Owner operations: [`Slab::assign`], [`Slab::alloc`],
//!   [`Slab::alloc_batch`], [`Slab::free_local`], [`Slab::collect_remote`], [`Slab::try_detach`],
//!   [`Slab::adopt`]. Any thread: [`Slab::free_remote`], [`Slab::owner`], [`Slab::class`].
//! - [`RemoteFree`]: what a remote free asks of its caller.
//!
//! Invariants (per slab, with `|L|` the local free list and `|R|` the remote stack):
//! - `used + |L| == carved <= capacity` as seen by the owner between operations; remote frees
//!   are counted in `used` until the owner collects them: `|R| <= used`.
//! - Blocks are `block_size` apart from `start`; the first block of slab 0 starts past the
//!   header (at [`SuperSlab::data_offset`]), so the header is never handed out, and no block
//!   crosses its slab's end: `start + capacity * block_size <= slab_end`.
//! - A slab is *owned* (`owner != 0`) by exactly one thread cache, or *detached* (`owner == 0`).
//!   Detached slabs reach a new owner only through the layer above (the shared pool's list of
//!   abandoned slabs), and [`RemoteFree::Publish`] tells exactly one remote freer to put a
//!   detached, full slab there when its first block comes back.
//!
//! Concurrency contract: fields marked owner-only live in a [`hak_sync::cell::UnsafeCell`] and
//! are touched only by the owner (or, for a detached slab, by whoever holds it exclusively via
//! the layer above); `remote`, `owner`, `class` and `block_size` are atomics any thread may read.
//! The remote stack is a lock-free multi-producer push; the owner takes the whole list with one
//! swap, so the ABA problem cannot arise (no one pops single nodes concurrently).
#![deny(unsafe_op_in_unsafe_fn)]
#![no_std]

#[cfg(test)]
extern crate std;

mod slab;
mod superslab;

pub use slab::{RemoteFree, Slab};
pub use superslab::{
    SuperSlab, EXT_BYTES, LG_SUPERSLAB_DEFAULT, LG_SUPERSLAB_MIN, MAGIC, MAX_SLABS, SLAB_SHIFT,
    SLAB_SIZE,
};

#[cfg(all(test, not(hak_loom)))]
mod tests;
