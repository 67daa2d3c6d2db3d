//! Mapping a fresh block: the OS mapping, its huge-page advice from the density policy, the
//! header and the registration. The one way a block comes into being; the alloc entries, a
//! growing block's reserve and the copy path of `realloc` all end here when the cache has
//! nothing to offer.

use hak_registry::{OwnerKind, GRANULE};

use super::BigCache;
use crate::cache::HUGE_PAGE;
use crate::header::Block;

impl BigCache<'_> {
    /// Maps, advises, initialises and registers a fresh LIVE block of `map_len` bytes whose
    /// block proper ends at `block_len` (the rest is a reserve for growth).
    pub(super) fn map_block(
        &self,
        map_len: usize,
        block_len: usize,
        user_off: usize,
        size: usize,
    ) -> Option<Block> {
        let os = self.os();
        // Mappings of a huge page or more are aligned to one, so the kernel can back them with
        // huge pages where the policy asks for them (see the `density` module).
        let huge_sized = map_len >= HUGE_PAGE;
        let align = if huge_sized { HUGE_PAGE.max(user_off) } else { GRANULE.max(user_off) };
        let base = os.map(map_len, align).ok()?;
        let fresh = self.density.fresh(os, map_len, true);
        if let Some(on) = fresh.advice {
            // SAFETY: the whole fresh mapping is ours; advice changes no contents.
            if unsafe { os.advise_huge(base, map_len, on) }.is_ok() && on {
                self.counters.huge_advised.add(1);
            }
        }
        // SAFETY: a fresh mapping of `map_len >= page` bytes, page-aligned, ours alone, with the
        // provenance hak-os gave it.
        let b = unsafe { Block::from_base(base) };
        // SAFETY: as above.
        unsafe {
            b.init(map_len, user_off, size);
            b.set_block_len(block_len);
            b.set_huge(fresh.huge);
            b.set_probe(fresh.probe);
        }
        if fresh.probe {
            self.density.remember(b.addr(), block_len);
        }
        if self.registry.register(base, map_len, OwnerKind::Big).is_err() {
            // SAFETY: never published; nobody else can reach it.
            let _ = unsafe { os.unmap(base, map_len) };
            return None;
        }
        self.counters.live_bytes.increase(map_len as u64);
        self.counters.live_blocks.increase(1);
        Some(b)
    }
}
