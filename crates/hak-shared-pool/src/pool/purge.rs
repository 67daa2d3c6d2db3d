//! Memory return: the delayed purge of EMPTY slots ([`SharedPool::maybe_purge`],
//! [`SharedPool::purge`]), the bounded reclaim of abandoned slabs the purge schedule runs, and
//! [`SharedPool::trim`], which does all of it at once. Work under the lock is bounded per pass;
//! decommits run outside it.

use hak_sync::atomic::Ordering;

use super::{ms, SharedPool, MAX_CLASSES};
use crate::slots::{ext, ss, Slot, PURGING};

/// Most slots one purge pass takes under the lock (then decommits outside it), and most one
/// call purges before leaving the rest to the next slow path.
const PURGE_BATCH: usize = 32;
const PURGE_MAX: usize = 512;
/// Abandoned slabs a purge call looks at (see `reclaim_abandoned`).
const RECLAIM_PER_PURGE: usize = 4;

impl SharedPool<'_> {
    /// Looks at up to `max` abandoned slabs, one class after another: releases those whose
    /// blocks have all come back, and moves the others to the back of their list. Returns the
    /// number released. Bounded work, so the purge schedule can run it: slabs of classes no
    /// thread asks for again do not stay until `trim()`.
    fn reclaim_abandoned(&self, max: usize) -> usize {
        let mut released = 0;
        for _ in 0..max {
            let s = {
                let mut st = self.state.lock();
                if st.abandoned_count == 0 {
                    break;
                }
                let mut c = st.reclaim_cursor;
                while st.abandoned[c].is_empty() {
                    c = (c + 1) % MAX_CLASSES;
                }
                st.reclaim_cursor = (c + 1) % MAX_CLASSES;
                st.abandoned_count -= 1;
                // SAFETY: lock held; the list is not empty.
                unsafe { st.abandoned[c].pop_front() }
            };
            let Some(s) = s else { break };
            // SAFETY: an ACTIVE slot keeps its SuperSlab mapped; popped: exclusive.
            unsafe {
                let slab = s.slab();
                slab.adopt(&self.trim_owner);
                if slab.is_empty() {
                    self.release(slab);
                    released += 1;
                } else {
                    slab.disown();
                    let class = slab.class() as usize;
                    let mut st = self.state.lock();
                    st.abandoned[class].push_back(s);
                    st.abandoned_count += 1;
                }
            }
        }
        released
    }

    /// Runs a purge pass if one is due (cheap otherwise: a clock read and a relaxed load).
    /// Called on the pool's own slow paths; the layer above may call it from its slow paths
    /// too, so that a program that keeps allocating a little keeps shrinking.
    #[inline]
    pub fn maybe_purge(&self) {
        if self.next_purge.load(Ordering::Relaxed) == u64::MAX {
            return;
        }
        let now = hak_os::monotonic_ns();
        if now >= self.next_purge.load(Ordering::Relaxed) {
            self.purge(now, false);
        }
    }

    /// Gives back the pages of EMPTY slabs that have been EMPTY for the purge delay (all of
    /// them if `force`), SuperSlab by SuperSlab, the one whose newest EMPTY slab is oldest
    /// first. Takes at most 32 slots per lock hold and decommits them outside it; stops after
    /// 512 (leaving the rest for the next call) unless `force`. Returns the number purged.
    pub fn purge(&self, now: u64, force: bool) -> usize {
        if !force {
            self.reclaim_abandoned(RECLAIM_PER_PURGE);
        }
        let delay = self.purge_delay.load(Ordering::Relaxed);
        let delay_ms = ms(delay);
        let mut total = 0;
        loop {
            let mut batch = [Slot::NONE; PURGE_BATCH];
            let mut n = 0;
            {
                let mut st = self.state.lock();
                let mut next = u64::MAX;
                while n < PURGE_BATCH {
                    let Some(ss) = st.dirty.head().map(ss) else { break };
                    // SAFETY: lock held; listed SuperSlabs are live pool SuperSlabs.
                    unsafe {
                        let age = ms(now).wrapping_sub(ext(ss).dirty_ms);
                        if !force && age < delay_ms {
                            next = now.saturating_add((delay_ms - age) as u64 * 1_000_000);
                            break;
                        }
                        while n < PURGE_BATCH {
                            let i = {
                                let e = ext(ss);
                                if e.dirty_mask == 0 {
                                    break;
                                }
                                let i = e.dirty_mask.trailing_zeros() as usize;
                                e.dirty_mask &= !(1u64 << i);
                                i
                            };
                            let s = Slot::new(ss, i);
                            let class = ext(ss).class[i] as usize;
                            st.empty[class].remove(s);
                            let e = ext(ss);
                            e.state[i] = PURGING;
                            e.active += 1;
                            batch[n] = s;
                            n += 1;
                        }
                        if ext(ss).dirty_mask == 0 {
                            st.dirty.remove(ss.as_ptr());
                        }
                    }
                }
                if n == PURGE_BATCH && !st.dirty.is_empty() {
                    next = now; // more may be due: the next check continues
                }
                if next == u64::MAX && st.abandoned_count > 0 {
                    next = now.saturating_add(delay); // abandoned slabs to look at again
                }
                self.next_purge.store(next, Ordering::Relaxed);
            }
            if n == 0 {
                return total;
            }
            let os = self.registry.os();
            for s in &batch[..n] {
                let (lo, hi) = s.ss().slab_range(s.index());
                // SAFETY: the slot is PURGING: on no list, owned by no one, its SuperSlab kept
                // mapped by the raised `active`; its data range holds nothing anyone needs.
                let _ = unsafe {
                    os.decommit(core::ptr::NonNull::new_unchecked(lo), hi.addr() - lo.addr())
                };
            }
            self.counters.purged.add(n as u64);
            total += n;
            let mut retired = [None; PURGE_BATCH];
            {
                let mut st = self.state.lock();
                for (k, s) in batch[..n].iter().enumerate() {
                    // SAFETY: lock held; PURGING slots are on no list.
                    retired[k] = unsafe { self.empty_locked(&mut st, *s, now, false) };
                }
            }
            for ss in retired[..n].iter().flatten() {
                self.retire(*ss);
            }
            if n < PURGE_BATCH || (!force && total >= PURGE_MAX) {
                return total;
            }
        }
    }

    /// Reclaims memory at once: abandoned slabs whose blocks have all come back are released
    /// (the purge schedule does this a few at a time too), the others are listed again; EMPTY
    /// slabs give their pages back without waiting for the delay; then the cache evicts what its
    /// TTL excludes. Returns the number of abandoned slabs released.
    pub fn trim(&self) -> usize {
        let n = self.state.lock().abandoned_count;
        let released = self.reclaim_abandoned(n);
        self.purge(hak_os::monotonic_ns(), true);
        self.cache.evict_expired();
        released
    }
}
