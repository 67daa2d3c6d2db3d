//! A fixed-size object pool on one SuperSlab: the slab layer used without the shared pool or
//! thread caches above it. The pool maps one 2 MiB SuperSlab from hak-os, formats it, assigns
//! its 64 KiB slabs one at a time to its block size as they fill, and frees a block back to
//! the slab it came from, found by masking the block's address. Another thread frees through
//! the slab's remote stack, which the owner collects.
//!
//! Run with `cargo run -p hak-superslab --example pool`.
//!
//! Block sizes (the rules of `SlabRef::assign`, restated in the crate docs): at least 16 bytes
//! and a multiple of 16, because a free block holds list links and the remote stack keeps
//! flags in the low 4 bits of a block address. A block's alignment is the largest power of
//! two dividing its size, capped at the page size: slab data starts page-aligned and blocks
//! are `size` apart. So 48-byte blocks are 16-aligned, 64-byte blocks 64-aligned, 4096-byte
//! blocks page-aligned.
//!
//! The owner value: `assign` takes a `*const Inbox`, the owner's identity. It is written into
//! every slab the owner holds (`SlabRef::owner` compares against it), and it is where other
//! threads deliver a full slab the owner armed with `SlabRef::mark_full` once they free into
//! it. For a standalone pool it is one `Inbox` per pool (per owning thread if several pools
//! share a SuperSlab) at an address that does not change while the pool owns slabs: a field
//! of a boxed or `static` pool, never a value that moves. This pool never arms slabs, so its
//! inbox stays empty; it is still the identity.

use core::ptr::NonNull;
use std::thread;

use hak_os::Os;
use hak_superslab::{Inbox, RemoteFree, SlabRef, SsRef, LG_SUPERSLAB_DEFAULT};

/// log2 of the SuperSlab size (2 MiB).
const LG: u32 = LG_SUPERSLAB_DEFAULT;

/// A pool of `block_size`-byte blocks carved from one SuperSlab.
struct Pool<'os> {
    os: &'os Os,
    ss: SsRef,
    /// The owner identity; boxed so that its address stays put while the pool moves.
    owner: Box<Inbox>,
    block_size: u32,
    /// Slabs assigned so far: indices `0..assigned`.
    assigned: usize,
}

impl<'os> Pool<'os> {
    /// Maps and formats a SuperSlab; `None` if the OS refuses memory.
    fn new(os: &'os Os, block_size: u32) -> Option<Pool<'os>> {
        assert!(block_size >= 16 && block_size.is_multiple_of(16), "see the block-size rules");
        let size = 1usize << LG;
        // A SuperSlab must be aligned to its size: blocks find it by masking their address.
        let base = os.map(size, size).ok()?;
        // SAFETY: a fresh, writable, size-aligned mapping of 2^LG bytes from hak-os that no
        // other thread knows about.
        let ss = unsafe { SsRef::init(base, LG) };
        Some(Pool { os, ss, owner: Box::new(Inbox::new()), block_size, assigned: 0 })
    }

    fn me(&self) -> *const Inbox {
        &*self.owner
    }

    /// Slab `i` of the SuperSlab (mapped and formatted while the pool lives).
    fn slab(&self, i: usize) -> SlabRef {
        // SAFETY: `i` is a slab index of our formatted SuperSlab.
        unsafe { self.ss.slab(i) }
    }

    /// A block, or `None` when every slab of the SuperSlab is full.
    fn alloc(&mut self) -> Option<NonNull<u8>> {
        for i in 0..self.assigned {
            let slab = self.slab(i);
            // SAFETY: we own the assigned slabs.
            unsafe {
                if !slab.has_local() {
                    // Blocks other threads freed wait on the remote stack until we take them.
                    slab.collect_remote();
                }
                if let Some(b) = slab.alloc() {
                    return Some(b);
                }
            }
        }
        // SAFETY: the SuperSlab is formatted and mapped.
        if self.assigned == unsafe { self.ss.nslabs() } {
            return None;
        }
        let slab = self.slab(self.assigned);
        // The class number is the owner's to choose (the tiny front stores its size class);
        // a pool with one block size passes 0.
        // SAFETY: a never-assigned slab with no live block, held by us alone; the block size
        // follows the rules; the inbox outlives our ownership (it lives as long as the pool).
        unsafe { slab.assign(self.me(), 0, self.block_size) };
        self.assigned += 1;
        // SAFETY: we own the slab just assigned.
        unsafe { slab.alloc() }
    }

    /// Frees a block of this pool from the owning thread.
    ///
    /// # Safety
    /// `block` came from `alloc` of this pool and is not used afterwards.
    unsafe fn free(&mut self, block: NonNull<u8>) {
        // SAFETY: the block lies in our SuperSlab, formatted by `SsRef::init` (which exposed
        // the mapping's provenance), so masking its address finds the header.
        let slab = unsafe { SsRef::from_block(block.as_ptr(), LG).slab_of(block.as_ptr().addr()) };
        // SAFETY: we own every assigned slab; the block is live (contract).
        unsafe { slab.free_local(block) };
    }

    /// `(used, capacity)` summed over the assigned slabs (remote frees not yet collected count
    /// as used).
    fn counts(&self) -> (u32, u32) {
        (0..self.assigned).fold((0, 0), |(u, c), i| {
            // SAFETY: we own the assigned slabs.
            let (used, _, cap) = unsafe { self.slab(i).counts() };
            (u + used, c + cap)
        })
    }
}

impl Drop for Pool<'_> {
    fn drop(&mut self) {
        // SAFETY: the SuperSlab is ours; nothing refers to its blocks any more (every user of
        // the pool is done), so the magic can go and the mapping with it.
        unsafe {
            self.ss.invalidate();
            let _ = self.os.unmap(self.ss.base(), 1 << LG);
        }
    }
}

/// A block pointer handed to another thread (it keeps the mapping's provenance).
struct Sent(NonNull<u8>);
// SAFETY: the block is plain memory given up by the sending thread.
unsafe impl Send for Sent {}

fn main() {
    let os = Os::new();
    let block_size = 48u32;
    let align = 1usize << block_size.trailing_zeros(); // 16: the largest power of two dividing 48
    let mut pool = Pool::new(&os, block_size).expect("the OS refused a 2 MiB mapping");

    // Fill slab 0 (whose first page holds the SuperSlab header) and spill into slab 1.
    let n = 2000;
    let mut blocks: Vec<NonNull<u8>> = (0..n).map(|_| pool.alloc().expect("room")).collect();
    // SAFETY: we own slab 0.
    let cap0 = unsafe { pool.slab(0).counts() }.2;
    assert_eq!(pool.assigned, 2, "{n} blocks of {block_size} B need two slabs");
    for (i, b) in blocks.iter().enumerate() {
        assert_eq!(b.as_ptr() as usize % align, 0, "blocks are {align}-aligned");
        // SAFETY: a live 48-byte block of ours, 16-aligned, so a u64 fits at its start.
        unsafe { b.as_ptr().cast::<u64>().write(i as u64) };
    }
    let mut sorted: Vec<usize> = blocks.iter().map(|b| b.as_ptr() as usize).collect();
    sorted.sort_unstable();
    assert!(sorted.windows(2).all(|w| w[1] - w[0] >= block_size as usize), "no overlap");
    for (i, b) in blocks.iter().enumerate() {
        // SAFETY: as above.
        assert_eq!(unsafe { b.as_ptr().cast::<u64>().read() }, i as u64);
    }
    assert_eq!(pool.counts().0, n as u32);

    // Free every other block, then allocate as many again: the freed blocks come back before
    // anything new is carved.
    let freed: Vec<usize> = blocks.iter().step_by(2).map(|b| b.as_ptr() as usize).collect();
    for b in blocks.iter().step_by(2) {
        // SAFETY: live blocks of the pool, not used again.
        unsafe { pool.free(*b) };
    }
    let kept: Vec<NonNull<u8>> = blocks.iter().skip(1).step_by(2).copied().collect();
    assert_eq!(pool.counts().0, kept.len() as u32);
    let again: Vec<NonNull<u8>> = (0..freed.len()).map(|_| pool.alloc().expect("room")).collect();
    let mut again_addrs: Vec<usize> = again.iter().map(|b| b.as_ptr() as usize).collect();
    again_addrs.sort_unstable();
    let mut freed_sorted = freed.clone();
    freed_sorted.sort_unstable();
    assert_eq!(again_addrs, freed_sorted, "freed blocks are reused");
    assert_eq!(pool.assigned, 2, "reuse needed no new slab");
    blocks = kept.into_iter().chain(again).collect();

    // Another thread frees half of the blocks: they go onto their slabs' remote stacks (one
    // compare-exchange each here; batches with `free_remote_batch`), and the owner takes them
    // back when a slab runs out of local blocks.
    let remote: Vec<Sent> = blocks.drain(..n / 2).map(Sent).collect();
    let remote_n = remote.len() as u32;
    thread::spawn(move || {
        for Sent(b) in remote {
            // SAFETY: masking finds the block's SuperSlab, which stays mapped: the pool lives
            // until after this thread is joined.
            let slab = unsafe { SsRef::from_block(b.as_ptr(), LG).slab_of(b.as_ptr().addr()) };
            // SAFETY: a live block of the slab, given up here.
            let r = unsafe { slab.free_remote(b) };
            // `Publish` would ask us to hand a detached slab to the layer above; the pool
            // owns its slabs and never arms them, so the block was simply pushed.
            assert_eq!(r, RemoteFree::Pushed);
        }
    })
    .join()
    .expect("the freeing thread");
    // SAFETY: we own the assigned slabs.
    let collected: u32 = (0..pool.assigned).map(|i| unsafe { pool.slab(i).collect_remote() }).sum();
    assert_eq!(collected, remote_n, "every remote free came back");
    assert_eq!(pool.counts().0, (n / 2) as u32);

    for b in blocks.drain(..) {
        // SAFETY: live blocks of the pool, not used again.
        unsafe { pool.free(b) };
    }
    let (used, capacity) = pool.counts();
    assert_eq!(used, 0, "every block is back");
    for i in 0..pool.assigned {
        // SAFETY: we own the slab.
        unsafe { pool.slab(i).check_invariants() }.expect("slab invariants");
    }
    println!(
        "hak-superslab: {n} blocks of {block_size} B ({align}-aligned) from {} slabs \
         (slab 0 holds {cap0}, {capacity} in all); {} reused, {remote_n} freed remotely",
        pool.assigned,
        freed.len()
    );
}
