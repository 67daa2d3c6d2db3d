//! [`SharedPool`]: the stages of `acquire`, `release`, publication of abandoned slabs, the
//! delayed purge of EMPTY slots, and `trim`.

use hak_registry::{CacheLimits, OwnerKind, Registry, SuperSlabCache};
use hak_superslab::{Inbox, SlabRef, SsRef};
use hak_sync::atomic::{AtomicU64, Ordering};
use hak_sync::stat::StatCounter;
use hak_sync::Mutex;

use crate::slots::{ext, first, Slot, SlotList, SsHead, SsList, ACTIVE, EMPTY, PURGING, UNUSED};

/// Size classes the pool keeps lists for (the front uses fewer).
pub const MAX_CLASSES: usize = 64;

/// Default delay after which an EMPTY slab's pages go back to the OS: 1 s.
pub const DEFAULT_PURGE_DELAY_NS: u64 = 1_000_000_000;

/// Live SuperSlabs (2 MiB each) from which a fresh one is advised for transparent huge pages:
/// a program whose small-object heap has grown past 16 MiB uses its SuperSlabs densely
/// (slabs are carved in order and stage 2 fills existing SuperSlabs first), so one 2 MiB fault
/// replaces 512 small ones; a small program never pays a 2 MiB fault for a 64 KiB need.
const HUGE_AFTER: usize = 8;

/// Most slots one purge pass takes under the lock (then decommits outside it), and most one
/// call purges before leaving the rest to the next slow path.
const PURGE_BATCH: usize = 32;
const PURGE_MAX: usize = 512;
/// Abandoned slabs a purge call looks at (see `reclaim_abandoned`).
const RECLAIM_PER_PURGE: usize = 4;

/// Which source [`SharedPool::acquire`] used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Stage 0: an abandoned slab of the class with free blocks, adopted.
    Adopted,
    /// Stage 1: an EMPTY slot that last served the class.
    EmptySameClass,
    /// Stage 1 too: an EMPTY slot of another class whose pages are still resident.
    EmptyOtherClass,
    /// Stage 2: an UNUSED slot of an existing SuperSlab, or an EMPTY (purged) slot of another
    /// class.
    Unused,
    /// Stage 3: a new SuperSlab (from the cache or the OS).
    NewSuperSlab,
}

/// A slab handed out by [`SharedPool::acquire`], owned by the caller and assigned to its class.
#[derive(Debug, Clone, Copy)]
pub struct Acquired {
    /// The slab.
    pub slab: SlabRef,
    /// The source it came from.
    pub stage: Stage,
}

/// Counters of a [`SharedPool`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Stage 0 acquisitions (abandoned slabs adopted).
    pub stage0_adopted: u64,
    /// Stage 1 acquisitions (EMPTY slots of the class, or resident ones of another class).
    pub stage1_empty: u64,
    /// Stage 2 acquisitions.
    pub stage2_unused: u64,
    /// Stage 3 acquisitions.
    pub stage3_new: u64,
    /// SuperSlabs taken from the LRU cache (LRU hits).
    pub lru_hits: u64,
    /// SuperSlabs mapped from the OS.
    pub superslabs_mapped: u64,
    /// Slabs released (ACTIVE -> EMPTY).
    pub releases: u64,
    /// Slabs published for adoption.
    pub published: u64,
    /// EMPTY slabs whose pages were given back after the purge delay (or by `trim`).
    pub purged: u64,
    /// SuperSlabs handed to the LRU cache.
    pub superslabs_cached: u64,
    /// SuperSlabs the pool holds now.
    pub superslabs_live: u64,
    /// The LRU cache's own counters.
    pub cache: hak_registry::CacheStats,
}

struct State {
    empty: [SlotList; MAX_CLASSES],
    abandoned: [SlotList; MAX_CLASSES],
    /// SuperSlabs with at least one UNUSED slot.
    unused: SsHead,
    /// Every SuperSlab the pool holds (`live` of them).
    all: SsHead,
    /// SuperSlabs with EMPTY slots whose pages are still committed, roughly oldest first.
    dirty: SsHead,
    live: usize,
    /// Slabs on the abandoned lists, and the class the bounded reclaim looks at next.
    abandoned_count: usize,
    reclaim_cursor: usize,
}

/// The shared pool. See the crate docs.
pub struct SharedPool<'r> {
    registry: &'r Registry<'r>,
    cache: SuperSlabCache<'r>,
    lg_size: u32,
    state: Mutex<State>,
    /// Owner identity for slabs `trim` holds while it inspects them.
    trim_owner: Inbox,
    /// How long an EMPTY slot keeps its pages (ns).
    purge_delay: AtomicU64,
    /// Monotonic time (ns) after which a purge pass is due; `u64::MAX` when nothing is dirty.
    /// A hint read without the lock.
    next_purge: AtomicU64,
    stage0: StatCounter,
    stage1: StatCounter,
    stage2: StatCounter,
    stage3: StatCounter,
    lru_hits: StatCounter,
    mapped: StatCounter,
    releases: StatCounter,
    published: StatCounter,
    purged: StatCounter,
    cached: StatCounter,
}

impl core::fmt::Debug for SharedPool<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SharedPool").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

// SAFETY: raw SuperSlab pointers in `State` are only followed under the mutex; SuperSlabs are
// shared memory whose own fields are Sync.
unsafe impl Send for SharedPool<'_> {}
// SAFETY: as above.
unsafe impl Sync for SharedPool<'_> {}

/// Wrapping milliseconds of a monotonic nanosecond time (slot ages are short).
#[inline]
fn ms(ns: u64) -> u32 {
    (ns / 1_000_000) as u32
}

impl<'r> SharedPool<'r> {
    hak_sync::maybe_const_fn! {
        /// A pool of SuperSlabs of `2^lg_size` bytes registered in `registry`, caching empty
        /// ones within `limits`.
        pub fn new(registry: &'r Registry<'r>, lg_size: u32, limits: CacheLimits) -> SharedPool<'r> {
            SharedPool {
                registry,
                cache: SuperSlabCache::new(registry, limits),
                lg_size,
                state: Mutex::new(State {
                    empty: [SlotList::EMPTY; MAX_CLASSES],
                    abandoned: [SlotList::EMPTY; MAX_CLASSES],
                    unused: SsHead::EMPTY,
                    all: SsHead::EMPTY,
                    dirty: SsHead::EMPTY,
                    live: 0,
                    abandoned_count: 0,
                    reclaim_cursor: 0,
                }),
                trim_owner: Inbox::new(),
                purge_delay: AtomicU64::new(DEFAULT_PURGE_DELAY_NS),
                next_purge: AtomicU64::new(u64::MAX),
                stage0: StatCounter::new(),
                stage1: StatCounter::new(),
                stage2: StatCounter::new(),
                stage3: StatCounter::new(),
                lru_hits: StatCounter::new(),
                mapped: StatCounter::new(),
                releases: StatCounter::new(),
                published: StatCounter::new(),
                purged: StatCounter::new(),
                cached: StatCounter::new(),
            }
        }
    }

    /// The LRU cache of empty SuperSlabs (for limits, prewarm and stats).
    pub fn cache(&self) -> &SuperSlabCache<'r> {
        &self.cache
    }

    /// The registry SuperSlabs are registered in.
    pub fn registry(&self) -> &'r Registry<'r> {
        self.registry
    }

    /// log2 of the SuperSlab size.
    #[inline]
    pub fn lg_size(&self) -> u32 {
        self.lg_size
    }

    /// Sets how long an EMPTY slab keeps its pages before a purge gives them back (0: at the
    /// next purge check).
    pub fn set_purge_delay(&self, ns: u64) {
        self.purge_delay.store(ns, Ordering::Relaxed);
    }

    /// Counters.
    pub fn stats(&self) -> PoolStats {
        let live = self.state.lock().live as u64;
        PoolStats {
            stage0_adopted: self.stage0.get(),
            stage1_empty: self.stage1.get(),
            stage2_unused: self.stage2.get(),
            stage3_new: self.stage3.get(),
            lru_hits: self.lru_hits.get(),
            superslabs_mapped: self.mapped.get(),
            releases: self.releases.get(),
            published: self.published.get(),
            purged: self.purged.get(),
            superslabs_cached: self.cached.get(),
            superslabs_live: live,
            cache: self.cache.stats(),
        }
    }

    /// Hands out a slab for `class` (blocks of `block_size` bytes, see `SlabRef::assign` for
    /// the rules), owned by `owner`. `None` only if the OS refuses memory.
    ///
    /// An adopted slab (stage 0) may have blocks in use and free blocks on its list; any other
    /// slab is empty. `class < MAX_CLASSES`.
    ///
    /// # Safety
    /// `owner` is non-null, and stays valid and in place while it owns the slab (remote freers
    /// deliver into it).
    pub unsafe fn acquire(
        &self,
        class: usize,
        block_size: u32,
        owner: *const Inbox,
    ) -> Option<Acquired> {
        hak_sync::check!(class < MAX_CLASSES && !owner.is_null());
        let got = {
            let mut st = self.state.lock();
            // SAFETY: the lock is held for every list operation below.
            unsafe { Self::take_locked(&mut st, class) }
        };
        let (s, stage) = match got {
            Some(x) => x,
            None => (self.grow(class)?, Stage::NewSuperSlab),
        };
        // SAFETY: pool SuperSlabs stay mapped while they have an ACTIVE slot, and this one does.
        let slab = unsafe { s.slab() };
        match stage {
            Stage::Adopted => {
                // SAFETY: we took it off the abandoned list: exclusive; `owner` per the contract.
                unsafe { slab.adopt(owner) };
                self.stage0.add(1);
            }
            _ => {
                // SAFETY: the slot was EMPTY or UNUSED and is now ours alone; `owner` per the
                // contract.
                unsafe { slab.assign(owner, class as u32, block_size) };
                match stage {
                    Stage::EmptySameClass | Stage::EmptyOtherClass => self.stage1.add(1),
                    Stage::Unused => self.stage2.add(1),
                    _ => self.stage3.add(1),
                }
            }
        }
        self.maybe_purge();
        Some(Acquired { slab, stage })
    }

    /// Stages 0-2 under the lock.
    ///
    /// # Safety
    /// `st` is the locked state.
    unsafe fn take_locked(st: &mut State, class: usize) -> Option<(Slot, Stage)> {
        // SAFETY: lock held (caller).
        unsafe {
            if let Some(s) = st.abandoned[class].pop() {
                st.abandoned_count -= 1;
                return Some((s, Stage::Adopted));
            }
            if let Some(s) = st.empty[class].pop() {
                Self::activate(st, s, class);
                return Some((s, Stage::EmptySameClass));
            }
            // An EMPTY slot of another class whose pages are still resident (not yet purged)
            // before any UNUSED one: it costs no page faults and no new resident memory, where
            // an UNUSED slot faults in fresh pages while the warm one waits for its purge (a
            // program whose live classes shift kept both resident). Newest first: each list's
            // head is the slot emptied last. A bounded look at the list heads.
            for c in 0..MAX_CLASSES {
                let s = st.empty[c].head;
                if !s.is_none() && ext(s.ss()).dirty_mask & (1u64 << s.index()) != 0 {
                    st.empty[c].remove(s);
                    Self::activate(st, s, class);
                    return Some((s, Stage::EmptyOtherClass));
                }
            }
            if let Some(ss) = Self::pick_unused(st, class) {
                let i = {
                    let e = ext(ss);
                    let i = e.unused_mask.trailing_zeros() as usize;
                    e.unused_mask &= !(1u64 << i);
                    i
                };
                if ext(ss).unused_mask == 0 {
                    SsList::Unused.unlink(&mut st.unused, ss);
                }
                let s = Slot::new(ss, i);
                Self::activate(st, s, class);
                return Some((s, Stage::Unused));
            }
            for c in 0..MAX_CLASSES {
                if let Some(s) = st.empty[c].pop() {
                    Self::activate(st, s, class);
                    return Some((s, Stage::Unused));
                }
            }
        }
        None
    }

    /// A SuperSlab with UNUSED slots, preferring one that already serves `class` among the
    /// first few on the list (a bounded look, never a scan of every SuperSlab).
    ///
    /// # Safety
    /// Lock held.
    unsafe fn pick_unused(st: &State, class: usize) -> Option<SsRef> {
        const LOOK: usize = 8;
        let head = first(&st.unused)?;
        let mut ss = Some(head);
        let mut k = 0;
        while let Some(s) = ss {
            if k == LOOK {
                break;
            }
            // SAFETY: listed SuperSlabs are live; lock held.
            if unsafe { ext(s) }.class_mask & (1u64 << class) != 0 {
                return Some(s);
            }
            // SAFETY: as above.
            ss = unsafe { SsList::Unused.next(s) };
            k += 1;
        }
        Some(head)
    }

    /// Makes slot `s` ACTIVE for `class`; if it was a dirty EMPTY slot, it stops being a purge
    /// candidate.
    ///
    /// # Safety
    /// Lock held; `s` is on no list and not ACTIVE.
    unsafe fn activate(st: &mut State, s: Slot, class: usize) {
        let ss = s.ss();
        let i = s.index();
        // SAFETY: forwarded; each access borrows the extension area briefly.
        unsafe {
            let was_dirty = {
                let e = ext(ss);
                e.state[i] = ACTIVE;
                e.class[i] = class as u8;
                e.class_mask |= 1u64 << class;
                e.active += 1;
                let d = e.dirty_mask & (1u64 << i) != 0;
                e.dirty_mask &= !(1u64 << i);
                d && e.dirty_mask == 0
            };
            if was_dirty {
                SsList::Dirty.unlink(&mut st.dirty, ss);
            }
        }
    }

    /// Stage 3: a SuperSlab from the cache or the OS; returns its slot 0, ACTIVE for `class`,
    /// with the other slots on the UNUSED list.
    #[cold]
    fn grow(&self, class: usize) -> Option<Slot> {
        let size = 1usize << self.lg_size;
        let dense = self.state.lock().live >= HUGE_AFTER;
        let base = match self.cache.pop(size) {
            Some(b) => {
                self.lru_hits.add(1);
                b
            }
            None => {
                let os = self.registry.os();
                let b = os.map(size, size).ok()?;
                if self.registry.register(b, size, OwnerKind::SuperSlab).is_err() {
                    // SAFETY: never shared.
                    let _ = unsafe { os.unmap(b, size) };
                    return None;
                }
                self.mapped.add(1);
                b
            }
        };
        if dense {
            // SAFETY: a whole mapping of ours that nobody uses yet; advice changes no contents.
            // Refused advice (no THP in the kernel) only costs the faults it would have saved.
            let _ = unsafe { self.registry.os().advise_huge(base, size, true) };
        }
        // SAFETY: a registered region of the right size that nobody else references (fresh, or
        // popped from the cache). It is formatted before any slot of it is handed out.
        let ss = unsafe { SsRef::init(base, self.lg_size) };
        // SAFETY: just formatted.
        let n = unsafe { ss.nslabs() };
        let mut st = self.state.lock();
        // SAFETY: lock held; the header was just formatted (ext zeroed = all UNUSED).
        unsafe {
            let unused = (if n == 64 { u64::MAX } else { (1u64 << n) - 1 }) & !1;
            ext(ss).unused_mask = unused;
            Self::activate(&mut st, Slot::new(ss, 0), class);
            if unused != 0 {
                SsList::Unused.push_back(&mut st.unused, ss);
            }
            SsList::All.push_back(&mut st.all, ss);
        }
        st.live += 1;
        Some(Slot::new(ss, 0))
    }

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
        self.releases.add(1);
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
    unsafe fn empty_locked(&self, st: &mut State, s: Slot, now: u64, dirty: bool) -> Option<SsRef> {
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
            st.empty[class].push(s);
            if dirty {
                // Keep the dirty list ordered by newest dirty time: move to the tail.
                if was_dirty {
                    SsList::Dirty.unlink(&mut st.dirty, ss);
                }
                SsList::Dirty.push_back(&mut st.dirty, ss);
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
                SsList::Unused.unlink(&mut st.unused, ss);
            }
            if ext(ss).dirty_mask != 0 {
                SsList::Dirty.unlink(&mut st.dirty, ss);
            }
            SsList::All.unlink(&mut st.all, ss);
            st.live -= 1;
            Some(ss)
        }
    }

    /// Hands a SuperSlab that left every list to the LRU cache.
    fn retire(&self, ss: SsRef) {
        // SAFETY: no slot is ACTIVE and no list refers to it: nobody uses the region. It is
        // registered, mapped by the registry's Os, and a multiple of the page size. Nothing
        // borrows its header across the push, which rewrites (or unmaps) it.
        unsafe {
            ss.invalidate();
            self.cached.add(1);
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
        self.published.add(1);
        {
            let mut st = self.state.lock();
            // SAFETY: lock held; the slot is on no list.
            unsafe { st.abandoned[class].push(Slot::of(slab)) };
            st.abandoned_count += 1;
        }
        // Its blocks may all come back with no acquire of its class to adopt it: let the purge
        // schedule look at it (see `reclaim_abandoned`).
        let due = hak_os::monotonic_ns().saturating_add(self.purge_delay.load(Ordering::Relaxed));
        self.next_purge.fetch_min(due, Ordering::Relaxed);
    }

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
                while st.abandoned[c].head.is_none() {
                    c = (c + 1) % MAX_CLASSES;
                }
                st.reclaim_cursor = (c + 1) % MAX_CLASSES;
                st.abandoned_count -= 1;
                // SAFETY: lock held; the list is not empty.
                unsafe { st.abandoned[c].pop() }
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
                    let Some(ss) = first(&st.dirty) else { break };
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
                            SsList::Dirty.unlink(&mut st.dirty, ss);
                        }
                    }
                }
                if n == PURGE_BATCH && !st.dirty.head.is_null() {
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
            self.purged.add(n as u64);
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

    /// Takes the pool's locks (its own, then the SuperSlab cache's) before `fork()`.
    #[cfg(not(hak_loom))]
    pub fn prefork(&self) {
        self.state.fork_lock();
        self.cache.prefork();
    }

    /// Releases what [`SharedPool::prefork`] took, in the parent and in the child.
    ///
    /// # Safety
    /// The calling thread ran `prefork` (or is the child of the thread that did).
    #[cfg(not(hak_loom))]
    pub unsafe fn postfork(&self) {
        // SAFETY: forwarded.
        unsafe {
            self.cache.postfork();
            self.state.fork_unlock();
        }
    }

    /// Checks the pool's invariants (see the crate docs) over every SuperSlab it holds,
    /// returning the first violation. For tests.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        let st = self.state.lock();
        let mut ss = first(&st.all);
        let mut live = 0;
        while let Some(s) = ss {
            live += 1;
            // SAFETY: lock held; listed SuperSlabs are live.
            let (e, n) = unsafe { (ext(s), s.nslabs()) };
            let mut counted = [0u32; 4];
            for i in 0..n {
                counted[e.state[i] as usize] += 1;
                if (e.unused_mask >> i) & 1 != (e.state[i] == UNUSED) as u64 {
                    return Err("unused_mask disagrees with slot states");
                }
                if (e.dirty_mask >> i) & 1 == 1 && e.state[i] != EMPTY {
                    return Err("a dirty slot that is not EMPTY");
                }
            }
            if counted[ACTIVE as usize] + counted[PURGING as usize] != e.active {
                return Err("active count disagrees with slot states");
            }
            // SAFETY: as above.
            ss = unsafe { SsList::All.next(s) };
        }
        if live != st.live {
            return Err("live count disagrees with the list of SuperSlabs");
        }
        for list in st.empty.iter() {
            let mut s = list.head;
            while !s.is_none() {
                // SAFETY: lock held; listed slots' SuperSlabs are live.
                let e = unsafe { ext(s.ss()) };
                if e.state[s.index()] != EMPTY {
                    return Err("non-EMPTY slot on an EMPTY list");
                }
                s = e.next[s.index()];
            }
        }
        Ok(())
    }
}

impl Drop for SharedPool<'_> {
    /// Unregisters and unmaps every SuperSlab the pool holds, like dropping an arena: blocks
    /// still handed out dangle afterwards, so a pool is dropped only when none is used.
    fn drop(&mut self) {
        let size = 1usize << self.lg_size;
        let os = self.registry.os();
        let mut ss = first(&self.state.lock().all);
        while let Some(s) = ss {
            // SAFETY: `&mut self`: no other user; listed SuperSlabs are live pool SuperSlabs.
            unsafe {
                ss = SsList::All.next(s);
                self.registry.unregister(s.base(), size);
                let _ = os.unmap(s.base(), size);
            }
        }
        self.cache.flush();
    }
}
