//! Giving slabs back: [`SharedPool::release`] (an empty slab becomes an EMPTY slot that keeps
//! its pages until a purge; a SuperSlab with no ACTIVE slot left goes to the LRU cache) and
//! [`SharedPool::publish`] (a detached slab with free blocks is listed for adoption).

use hak_superslab::{SlabRef, SsRef};
use hak_sync::atomic::Ordering;

use super::{ms, SharedPool, State};
use crate::slots::{ext, Slot, ACTIVE, EMPTY, PURGING};

impl SharedPool<'_> {
    /// Takes back an empty slab (ACTIVE -> EMPTY, keeping its class and, for now, its pages;
    /// a purge gives them back after the purge delay). A SuperSlab with no ACTIVE slot left
    /// goes to the LRU cache once its EMPTY slots have given their pages back (so right away
    /// only if none still holds them), unless it is the last one the pool holds.
    ///
    /// # Safety
    /// The caller owns the slab, a slab of this pool, every block of it is back on its free
    /// lists (`used == 0`, so no remote free can race) and it is disarmed; the caller forgets
    /// it.
    pub unsafe fn release(&self, slab: SlabRef) {
        // SAFETY: forwarded: we own it.
        unsafe { slab.disown() };
        self.counters.releases.add(1);
        let now = hak_os::monotonic_ns();
        let s = Slot::of(slab);
        let retired = {
            let mut st = self.state.lock();
            // SAFETY: lock held; the slot is ACTIVE and on no list.
            unsafe { self.empty_locked(&mut st, s, now, true) }
        };
        self.next_purge.fetch_min(
            now.saturating_add(self.purge_delay.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        if let Some(ss) = retired {
            self.retire(ss);
        }
        self.maybe_purge();
    }

    /// Makes an ACTIVE (or PURGING) slot EMPTY and lists it; returns its SuperSlab if that has
    /// no ACTIVE slot left and must go to the cache (it has then left every list).
    ///
    /// # Safety
    /// Lock held (`st`); the slot is ACTIVE or PURGING and on no list.
    pub(super) unsafe fn empty_locked(
        &self,
        st: &mut State,
        s: Slot,
        now: u64,
        dirty: bool,
    ) -> Option<SsRef> {
        let ss = s.ss();
        let i = s.index();
        // SAFETY: forwarded; each access borrows the extension area briefly.
        unsafe {
            let (class, was_dirty, active) = {
                let e = ext(ss);
                hak_sync::check!(e.state[i] == ACTIVE || e.state[i] == PURGING);
                e.state[i] = EMPTY;
                e.active -= 1;
                let was = e.dirty_mask != 0;
                if dirty {
                    e.dirty_mask |= 1u64 << i;
                    e.dirty_ms = ms(now);
                }
                (e.class[i] as usize, was, e.active)
            };
            st.empty[class].push_front(s);
            if dirty {
                // Keep the dirty list ordered by newest dirty time: move to the tail.
                if was_dirty {
                    st.dirty.remove(ss.as_ptr());
                }
                st.dirty.push_back(ss.as_ptr());
            }
            if active != 0 {
                return None;
            }
            if st.live <= 1 || ext(ss).dirty_mask != 0 {
                // The last SuperSlab stays; so does one whose slots still hold their pages: a
                // program that frees and allocates again soon reuses them warm, and the purge
                // pass retires it once they have waited out the delay.
                ext(ss).class_mask = 0;
                return None;
            }
            for j in 0..ss.nslabs() {
                let (state, c) = {
                    let e = ext(ss);
                    (e.state[j], e.class[j] as usize)
                };
                if state == EMPTY {
                    st.empty[c].remove(Slot::new(ss, j));
                }
            }
            if ext(ss).unused_mask != 0 {
                st.unused.remove(ss.as_ptr());
            }
            if ext(ss).dirty_mask != 0 {
                st.dirty.remove(ss.as_ptr());
            }
            st.all.remove(ss.as_ptr());
            st.live -= 1;
            Some(ss)
        }
    }

    /// Hands a SuperSlab that left every list to the LRU cache.
    pub(super) fn retire(&self, ss: SsRef) {
        // SAFETY: no slot is ACTIVE and no list refers to it: nobody uses the region. It is
        // registered, mapped by the registry's Os, and a multiple of the page size. Nothing
        // borrows its header across the push, which rewrites (or unmaps) it.
        unsafe {
            ss.invalidate();
            self.counters.superslabs_cached.add(1);
            self.cache.push(ss.base(), 1usize << self.lg_size);
        }
    }

    /// Lists a detached slab with free blocks (or blocks on its remote stack) for adoption by
    /// the next `acquire` of its class.
    ///
    /// # Safety
    /// The slab is detached (`owner()` null), ACTIVE in this pool, on no list, and the caller
    /// is the one party entitled to list it: the freer told `RemoteFree::Publish`, or the
    /// former owner right after `disown`.
    pub unsafe fn publish(&self, slab: SlabRef) {
        // SAFETY: an ACTIVE slab's SuperSlab is mapped.
        let class = unsafe { slab.class() } as usize;
        self.counters.published.add(1);
        {
            let mut st = self.state.lock();
            // SAFETY: lock held; the slot is on no list.
            unsafe { st.abandoned[class].push_front(Slot::of(slab)) };
            st.abandoned_count += 1;
        }
        // Its blocks may all come back with no acquire of its class to adopt it: let the purge
        // schedule look at it (see `reclaim_abandoned`).
        let due = hak_os::monotonic_ns().saturating_add(self.purge_delay.load(Ordering::Relaxed));
        self.next_purge.fetch_min(due, Ordering::Relaxed);
    }
}
