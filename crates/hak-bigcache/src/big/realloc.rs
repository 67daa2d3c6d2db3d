//! [`BigCache::realloc`]: resizing a live block in place (into its reserve, or cutting its
//! tail), by moving its pages into a larger reserved mapping (`mremap`), or by a new block and
//! a copy; and finishing such a move.

use core::ptr::{self, NonNull};

use hak_registry::{OwnerKind, GRANULE};

use super::{block_layout, cut_for, room_for, BigCache, MAX_SIZE};
use crate::cache::HUGE_PAGE;
use crate::density;
use crate::header::Block;

impl BigCache<'_> {
    /// Resizes a live big block to `new_size` bytes, keeping its alignment and its first
    /// `min(usable, new_size)` bytes. Returns the (possibly moved) block, or `None` with the old
    /// block untouched and still valid (invalid pointer, a size beyond [`MAX_SIZE`], overflow,
    /// or OS refusal).
    ///
    /// Strategy: if the mapping already holds `new_size` (in the block or in its reserve), the
    /// block stays (a shrink to at most half the block unmaps the tail, reserve included; a
    /// growth never does, even into a block much longer than it asks for).
    /// Else, for alignments up to a page and a block that is one kernel mapping (not gathered,
    /// see the crate docs), its pages move (`mremap` to a fixed address, no copy) into a fresh
    /// granule-aligned mapping of [`GROW_RESERVE`](crate::GROW_RESERVE) times the new size,
    /// which the move grows the block's own mapping into; its density is probed first and the
    /// new mapping advised to match (see the `density` module). For larger alignments, gathered
    /// blocks, or if that fails: a new block with room to grow ([`BigCache::alloc_growing`]), a
    /// copy of the old usable bytes, and the old block freed into the cache.
    ///
    /// Orphans: if the registry refuses to register the moved block (its leaf pages could not
    /// be mapped) and the OS then refuses a new block too, the old address is already gone, so
    /// the moved block is returned unregistered: its contents and alignment are right, but
    /// [`BigCache::dealloc`] will refuse it (`NotOwned`) and its mapping leaks. Counted in
    /// [`BigStats::orphans`](crate::BigStats::orphans); it needs the OS to fail right after
    /// succeeding.
    ///
    /// # Safety
    /// `ptr` is a live block of this cache owned by the caller, not used concurrently; on
    /// `Some` only the returned pointer may be used.
    pub unsafe fn realloc(&self, ptr: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        if new_size > MAX_SIZE {
            return None;
        }
        let addr = ptr.as_ptr() as usize;
        let page = hak_os::page_size();
        let mut g = self.inner.lock();
        let b = self.validate(addr).ok()?;
        // SAFETY: validated LIVE block, owned by the caller.
        let (map_len, block_len, user_off, multi_map, huge, size) = unsafe {
            (b.map_len(), b.block_len(), b.user_off(), b.multi_map(), b.huge(), b.size())
        };
        let (_, need) = block_layout(new_size, user_off, page)?;
        if need <= map_len {
            if new_size < size && need <= block_len / 2 {
                // Shrink: release the tail's granules (under the lock), then its pages.
                let cut = cut_for(need);
                if cut < map_len {
                    self.registry.unregister(b.base(), map_len);
                    if self.registry.register(b.base(), cut, OwnerKind::Big).is_ok() {
                        // SAFETY: our block.
                        unsafe {
                            b.set_map_len(cut);
                            b.set_block_len(cut);
                        }
                        drop(g);
                        // SAFETY: the tail is the caller's and unused past `need`; its granules
                        // are no longer registered.
                        let _ = unsafe { self.os().unmap(b.at(cut), map_len - cut) };
                        self.counters.live_bytes.decrease((map_len - cut) as u64);
                    } else {
                        // Cannot happen (the leaves exist); keep the whole mapping registered.
                        let _ = self.registry.register(b.base(), map_len, OwnerKind::Big);
                    }
                }
            } else if need > block_len {
                // Growth into the reserve: it was never handed out, so it is untouched.
                // SAFETY: our block.
                unsafe { b.set_block_len(need) };
            }
            // SAFETY: our block.
            unsafe { b.set_size(new_size) };
            self.counters.realloc_in_place.add(1);
            return Some(ptr);
        }
        if user_off == page && !multi_map {
            self.registry.unregister(b.base(), map_len);
            drop(g);
            let old = (map_len, block_len, size);
            if let Some(np) = self.move_growing(b, old, (need, new_size), huge) {
                return Some(np);
            }
            // Untouched: register it again (its granules are still ours).
            g = self.inner.lock();
            let _ = self.registry.register(b.base(), map_len, OwnerKind::Big);
        }
        drop(g);
        // `user_off` is the block's alignment when above a page, and a page serves any smaller
        // one, so this keeps the alignment (and may reuse a cached block).
        let (np, _) = self.alloc_growing(new_size, user_off)?;
        // Copy all of the old usable bytes (the user may have used them, as `usable_size`
        // allows): `need > map_len >= block_len` means `new_size > block_len - user_off`.
        let old_usable = block_len - user_off;
        // SAFETY: both blocks are ours and distinct; the old one holds `old_usable` bytes and
        // the new one room for `new_size > old_usable`.
        unsafe { ptr::copy_nonoverlapping(ptr.as_ptr(), np.as_ptr(), old_usable) };
        self.counters.realloc_copy.add(1);
        // SAFETY: the old block is a live block of ours that nobody will use again.
        let _ = unsafe { self.dealloc(ptr) };
        Some(np)
    }

    /// Moves the pages of the unregistered, page-aligned, single-mapping block `b` into a fresh
    /// reserved mapping, growing its mapping to fill it (see [`BigCache::realloc`]). `None`
    /// with the block untouched where it was (still unregistered) if the OS refused.
    fn move_growing(
        &self,
        b: Block,
        (map_len, block_len, size): (usize, usize, usize),
        (need, new_size): (usize, usize),
        huge: bool,
    ) -> Option<NonNull<u8>> {
        let os = self.os();
        let page = hak_os::page_size();
        // Whether the program fills this block: the part it asked for, whole pages.
        let end = (page + size) & !(page - 1);
        let dense = if huge {
            Some(true) // on huge pages `mincore` cannot tell; it was advised for being dense
        } else {
            // SAFETY: `page < map_len`, inside the block, which is ours.
            let start = unsafe { b.at(page) };
            let d = density::is_dense(os, start, end.saturating_sub(page), page);
            self.note_density(d);
            d
        };
        let align = if need >= HUGE_PAGE { HUGE_PAGE } else { GRANULE };
        let room = room_for(need);
        let (dst, dst_len) = match os.map(room, align) {
            Ok(d) => (d, room),
            Err(_) => (os.map(need, align).ok()?, need),
        };
        // The block's own mapping moves and grows to `dst_len` in one call, so the block stays
        // one kernel mapping with one set of flags. The block is one mapping (not
        // `multi_map`), so a failed move leaves it in place.
        // SAFETY: the block is ours and nobody else uses it; `dst` is a fresh mapping of ours;
        // distinct mappings do not overlap.
        if unsafe { os.remap_to(b.base(), map_len, dst, dst_len) }.is_err() {
            // Part of `dst` may already be unmapped by the failed move: all of it goes.
            // SAFETY: fresh, never published.
            let _ = unsafe { os.unmap(dst, dst_len) };
            return None;
        }
        let (advice, now_huge) = self.density.growing(dst_len, dense.unwrap_or(false), huge);
        if let Some(on) = advice {
            // SAFETY: our mapping; advice changes no contents.
            if unsafe { os.advise_huge(dst, dst_len, on) }.is_ok() && on {
                self.counters.huge_advised.add(1);
            }
        }
        let old = (map_len, block_len - page);
        // SAFETY: the old range is gone; `dst` holds the block with its header.
        Some(unsafe { self.adopt_remapped(dst, old, (dst_len, need), new_size, now_huge) })
    }

    /// Finishes an `mremap` that moved and grew a page-aligned block to `q`.
    ///
    /// # Safety
    /// `q` is a granule-aligned mapping of `map_len` bytes holding a LIVE block's header and
    /// contents (`old_used` bytes of them past the header page in use), unregistered and ours
    /// alone; it replaced a mapping of `old_len` bytes. The block proper now ends at `need`.
    unsafe fn adopt_remapped(
        &self,
        q: NonNull<u8>,
        (old_len, old_used): (usize, usize),
        (map_len, need): (usize, usize),
        new_size: usize,
        huge: bool,
    ) -> NonNull<u8> {
        // SAFETY: our mapping (the caller's contract), with the provenance hak-os gave it.
        let b = unsafe { Block::from_base(q) };
        // SAFETY: our block, moved with its header.
        let user_off = unsafe { b.user_off() };
        self.counters.live_bytes.decrease(old_len as u64);
        self.counters.live_blocks.decrease(1);
        hak_sync::check!(b.addr().is_multiple_of(GRANULE), "moved block off the granule grid");
        // SAFETY: as above; the header now lives at `q`.
        unsafe {
            b.init(map_len, user_off, new_size);
            b.set_block_len(need);
            b.set_huge(huge);
        }
        if self.registry.register(q, map_len, OwnerKind::Big).is_ok() {
            self.counters.live_bytes.increase(map_len as u64);
            self.counters.live_blocks.increase(1);
            self.counters.realloc_remap.add(1);
            // SAFETY: `user_off < need <= map_len`.
            return unsafe { b.at(user_off) };
        }
        if let Some((np, _)) = self.alloc_growing(new_size, user_off) {
            // SAFETY: distinct mappings; `q` holds the old contents (`old_used` bytes past the
            // header page, whole pages), the new block room for more; `q` is unregistered and
            // unused afterwards.
            unsafe {
                ptr::copy_nonoverlapping(b.at(user_off).as_ptr(), np.as_ptr(), old_used);
                let _ = self.os().unmap(q, map_len);
            }
            self.counters.realloc_copy.add(1);
            return np;
        }
        // The OS refused every way to register the moved block: hand it out unregistered.
        self.counters.orphans.add(1);
        // SAFETY: as above.
        unsafe { b.at(user_off) }
    }
}
