//! Gathering: serving a request no cached block holds by moving the pages of smaller committed
//! cached blocks side by side into one fresh mapping (see the crate docs' invariants for which
//! pieces qualify). Kept apart from the plain allocation path because it is the only place
//! that moves several cached blocks at once and must give them back, or up, when the OS
//! refuses a step.

use hak_registry::{OwnerKind, GRANULE};

use super::BigCache;
use crate::cache::{Victims, HUGE_PAGE};
use crate::header::Block;

impl BigCache<'_> {
    /// Serves a request no cached block holds by gathering smaller committed cached blocks:
    /// their pages move (`mremap` to a fixed address, no copy, no fault) side by side into a
    /// fresh mapping of `need` bytes, largest first, and only the rest of it faults in. Where a
    /// fresh mapping would fault in everything while the cached blocks sat unused until
    /// evicted, this keeps the resident memory in use. Returns the new block, or `None` if
    /// nothing suitable is cached or the OS refused (pieces not yet moved go back to the
    /// cache when the fresh mapping is refused).
    ///
    /// The result is `multi_map`. A `multi_map` piece is taken only for a huge request and
    /// only if 2 MiB-aligned: its mapping boundaries then all lie on 2 MiB boundaries (pieces
    /// of huge requests are whole 2 MiB multiples placed at 2 MiB offsets), so it moves one
    /// 2 MiB window, that is one mapping, per call, which every kernel allows. If any move
    /// fails, the kernel may already have unmapped that piece's place in the new mapping, so
    /// the new mapping is given up whole (with the pieces moved into it, which held nothing
    /// anyone needs) and the remaining pieces are unmapped; the caller then maps a fresh block.
    pub(super) fn gather(&self, need: usize, size: usize) -> Option<Block> {
        let page = hak_os::page_size();
        let (mut pieces, _, victims) =
            self.inner.lock().take_pieces(self.registry, need, hak_os::monotonic_ns());
        self.release(victims);
        if pieces.is_empty() {
            return None;
        }
        let os = self.os();
        let fresh = self.density.fresh(os, need, false);
        let Ok(dst) = os.map(need, if need >= HUGE_PAGE { HUGE_PAGE } else { GRANULE }) else {
            self.restore(pieces);
            return None;
        };
        if let Some(on) = fresh.advice {
            // Before the moves: advice on the whole range would otherwise have to cover the
            // moved pieces' mappings one by one. Pieces keep their own.
            // SAFETY: our fresh mapping; advice changes no contents.
            if unsafe { os.advise_huge(dst, need, on) }.is_ok() && on {
                self.counters.huge_advised.add(1);
            }
        }
        let (mut off, mut moved) = (0, 0);
        // SAFETY: the pieces left the cache unregistered: ours alone, valid until unmapped.
        while let Some(v) = unsafe { pieces.pop_front() }.and_then(Block::from_link) {
            // SAFETY: as above.
            let (len, multi) = unsafe { (v.map_len(), v.multi_map()) };
            hak_sync::check!(off + len <= need, "gathered pieces overrun the request");
            // A single-mapping piece moves in one call; a gathered one (huge, 2 MiB-aligned,
            // see `take_pieces`) one 2 MiB window at a time, each inside one of its mappings.
            let step = if multi { HUGE_PAGE } else { len };
            let mut done = 0;
            while done < len {
                let n = step.min(len - done);
                // SAFETY: `done < len` and `off + done < need`: inside the piece and `dst`.
                let (from, to) = unsafe { (v.at(done), dst.add(off + done)) };
                // SAFETY: `[from, from+n)` lies in one mapping of a block of ours, given up;
                // `[to, to+n)` lies in our fresh mapping and is replaced; they do not overlap.
                if unsafe { os.remap_to(from, n, to, n) }.is_err() {
                    // The rest of the piece is still in place, but its slot in `dst` may be a
                    // hole now: give up `dst` (with what moved into it), the rest of this
                    // piece, and every piece not yet moved.
                    // SAFETY: all ours, unregistered, and holding no one's data.
                    unsafe {
                        let _ = os.unmap(dst, need);
                        let _ = os.unmap(from, len - done);
                    }
                    self.counters.evictions.add(moved + 1);
                    self.release(pieces);
                    return None;
                }
                done += n;
            }
            off += len;
            moved += 1;
        }
        // SAFETY: `dst` is ours, mapped, granule-aligned, at least a page; its first page now
        // holds the largest piece's first page, which nobody uses any more.
        let b = unsafe { Block::from_base(dst) };
        // SAFETY: as above.
        unsafe {
            b.init(need, page, size);
            b.set_multi_map(true);
            b.set_huge(fresh.huge);
        }
        if self.registry.register(dst, need, OwnerKind::Big).is_err() {
            // SAFETY: never published.
            let _ = unsafe { os.unmap(dst, need) };
            return None;
        }
        self.counters.grown.add(1);
        self.counters.live_bytes.increase(need as u64);
        self.counters.live_blocks.increase(1);
        Some(b)
    }

    /// Puts pieces taken for a gathering that could not happen back into the cache (registered
    /// again), or unmaps them if the registry refuses.
    fn restore(&self, mut pieces: Victims) {
        let now = hak_os::monotonic_ns();
        // SAFETY: unregistered pieces, ours alone; each leaves the list here.
        while let Some(v) = unsafe { pieces.pop_front() }.and_then(Block::from_link) {
            // SAFETY: as above.
            let len = unsafe { v.map_len() };
            if self.registry.register(v.base(), len, OwnerKind::Big).is_err() {
                self.unmap_victim(v);
                continue;
            }
            let g = self.inner.lock();
            // SAFETY: registered as Big at its base again, without reserve, ours alone.
            unsafe { self.cache_put_locked(g, v, now) };
        }
    }
}
