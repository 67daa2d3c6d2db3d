//! Freeing a block and the checks every pointer passes first: [`BigCache::dealloc`] (reserve
//! cut off, density measured, decommit, into the cache) and the validation it shares with
//! `realloc`, `owns` and the usable-size queries, which refuse a pointer that is not the user
//! pointer of a LIVE block ([`FreeError`]) under the cache lock.

use core::ptr::NonNull;

use hak_registry::OwnerKind;

use super::{cut_for, BigCache};
use crate::density;
use crate::header::{Block, FREEING, LIVE};

/// Why [`BigCache::dealloc`] refused a pointer. Nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeError {
    /// The registry does not map the address to a big block (unknown, or another tier's).
    NotOwned,
    /// The registry says big, but the header's magic is wrong (memory corruption).
    Corrupt,
    /// The address lies inside a big block but is not its user pointer.
    NotBlockStart,
    /// The block is already free (cached, or being cached by another thread's free).
    DoubleFree,
}

impl BigCache<'_> {
    /// Frees a big block: it goes into the cache (still mapped and registered, its reserve
    /// cut off), or is unmapped if the limits cannot hold it. Any pointer is checked first: one
    /// that is not the user pointer of a live big block is refused with a [`FreeError`] and
    /// nothing changes. A fresh block's first free measures its density for the huge-page
    /// policy (outside the lock).
    ///
    /// # Safety
    /// If `ptr` is a live big block, nobody uses it after this call. (Pointers that are not
    /// are detected, except one whose block was freed and whose address was since handed out
    /// again: that frees the new block, as in every allocator.)
    pub unsafe fn dealloc(&self, ptr: NonNull<u8>) -> Result<(), FreeError> {
        let now = hak_os::monotonic_ns();
        let page = hak_os::page_size();
        let mut g = self.inner.lock();
        let b = self.validate(ptr.as_ptr() as usize)?;
        // Header fields are accessed through `b` under the lock only while the block may be
        // reached by a racing (invalid) second free, which reads it to refuse itself.
        // SAFETY: validated under the lock: a LIVE header the caller gives up.
        let (len, block_len, user_off, size, probe, spread, last_end) = unsafe {
            (
                b.map_len(),
                b.block_len(),
                b.user_off(),
                b.size(),
                b.probe(),
                b.spread(),
                b.last_end(),
            )
        };
        // Whether this user's last page differs from the previous user's (see `spread`).
        let end = (user_off + size.max(1) - 1) / page;
        let spread = spread + u32::from(end != last_end);
        self.counters.live_bytes.decrease(len as u64);
        self.counters.live_blocks.decrease(1);
        g.live = self.counters.live_bytes.get().current as usize;
        // Cut the reserve off: unregistered here, unmapped after the lock.
        let cut = cut_for(block_len);
        let mut tail = None;
        if cut < len {
            self.registry.unregister(b.base(), len);
            if self.registry.register(b.base(), cut, OwnerKind::Big).is_ok() {
                tail = Some((cut, len - cut));
            } else {
                let _ = self.registry.register(b.base(), len, OwnerKind::Big);
            }
        }
        let len = tail.map_or(len, |(cut, _)| cut);
        let keep = g.would_keep(len) && len > page;
        let over = keep && g.wants_decommit(len);
        // A block of a sparse program (or measured sparse below) is decommitted too: see the
        // `density` module.
        let maybe_sparse =
            keep && spread >= density::SPARSE_SPREAD && (probe || !self.density.dense());
        // SAFETY: as above.
        unsafe {
            b.set_map_len(len);
            b.set_block_len(len);
            b.set_decommitted(false);
            b.set_probe(false);
            b.set_spread(spread);
            b.set_last_end(end);
        }
        if tail.is_some() || probe || over || maybe_sparse {
            // Slow work outside the lock; FREEING makes a racing second free a double free.
            // SAFETY: as above.
            unsafe { b.set_state(FREEING) };
            drop(g);
            if let Some((cut, n)) = tail {
                // SAFETY: the reserve past `cut` was never handed out and is unregistered.
                let _ = unsafe { self.os().unmap(b.at(cut), n) };
            }
            let mut measured = None;
            if probe {
                // The part the user asked for, whole pages only.
                let end = (user_off + size) & !(page - 1);
                // SAFETY: `user_off <= end <= len`, inside our mapping.
                let start = unsafe { b.at(user_off) };
                measured = density::is_dense(self.os(), start, end - user_off, page);
                self.note_density(measured);
            }
            let sparse = maybe_sparse && !measured.unwrap_or_else(|| self.density.dense());
            let mut decommitted = false;
            if over || sparse {
                // SAFETY: the pages past the header page are the user's, who gave them up.
                decommitted = unsafe { self.os().decommit(b.at(page), len - page) }.is_ok();
                if decommitted {
                    self.counters.decommits.add(1);
                }
            }
            g = self.inner.lock();
            // SAFETY: as above (FREEING: nobody else writes it).
            unsafe {
                b.set_decommitted(decommitted);
                if decommitted {
                    b.set_spread(0);
                }
            }
        }
        // SAFETY: validated block, registered as Big at its base, without reserve, ours until
        // cached.
        unsafe { self.cache_put_locked(g, b, now) };
        Ok(())
    }

    /// Checks that `addr` is the user pointer of a LIVE big block and returns its handle.
    /// Must be called with the cache lock held (see the module docs); counts refusals.
    pub(super) fn validate(&self, addr: usize) -> Result<Block, FreeError> {
        let r = self.validate_inner(addr);
        if r.is_err() {
            self.counters.invalid_frees.add(1);
        }
        r
    }

    pub(super) fn validate_inner(&self, addr: usize) -> Result<Block, FreeError> {
        let b = self.registered(addr).ok_or(FreeError::NotOwned)?;
        // SAFETY: a registered Big region is mapped with its header at the base, and it stays
        // mapped while we hold the lock (eviction unregisters under the lock).
        unsafe {
            if !b.magic_ok() {
                return Err(FreeError::Corrupt);
            }
            if b.addr() + b.user_off() != addr {
                return Err(FreeError::NotBlockStart);
            }
            if b.state() != LIVE {
                return Err(FreeError::DoubleFree);
            }
        }
        Ok(b)
    }

    /// The handle of the big block the registry says holds `addr`, if any.
    pub(super) fn registered(&self, addr: usize) -> Option<Block> {
        let owner = self.registry.lookup(addr)?;
        if owner.kind != OwnerKind::Big {
            return None;
        }
        // SAFETY: the registry hands back the pointer the block was registered with, which
        // carries its mapping's provenance, and a registered block is mapped (the caller keeps
        // it so: it holds the lock, or owns the block).
        Some(unsafe { Block::from_base(owner.base) })
    }
}
