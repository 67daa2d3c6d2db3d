//! [`SharedPool`] and its per-SuperSlab bookkeeping ([`PoolExt`], kept in the header's
//! extension area).

use core::ptr;

use hak_registry::{CacheLimits, OwnerKind, Registry, SuperSlabCache};
use hak_superslab::{Slab, SuperSlab, EXT_BYTES, MAX_SLABS};
use hak_sync::stat::StatCounter;
use hak_sync::Mutex;

/// Size classes the pool keeps lists for (the front uses fewer).
pub const MAX_CLASSES: usize = 64;

const UNUSED: u8 = 0;
const ACTIVE: u8 = 1;
const EMPTY: u8 = 2;

/// A slot: `superslab base | slab index` (bases are at least 1 MiB-aligned). 0 is "none".
type SlotRef = usize;
const IDX_MASK: usize = MAX_SLABS - 1;

/// The pool's bookkeeping inside a SuperSlab header. Only touched under the pool lock.
#[repr(C)]
struct PoolExt {
    state: [u8; MAX_SLABS],
    class: [u8; MAX_SLABS],
    /// Links of the EMPTY or abandoned list the slot is on.
    next: [SlotRef; MAX_SLABS],
    prev: [SlotRef; MAX_SLABS],
    /// Bit `i` set: slot `i` is UNUSED.
    unused_mask: u64,
    /// Bit `c` set: an ACTIVE slot serves class `c` (a hint for class affinity).
    class_mask: u64,
    /// ACTIVE slots.
    active: u32,
    /// Links in the list of SuperSlabs with UNUSED slots.
    unused: SsLinks,
    /// Links in the list of every SuperSlab the pool holds (for `Drop`).
    all: SsLinks,
}

/// Links of a SuperSlab in one of the pool's SuperSlab lists.
#[repr(C)]
struct SsLinks {
    next: *const SuperSlab,
    prev: *const SuperSlab,
}

/// Which SuperSlab list an operation is about: the links it uses and the head it updates.
#[derive(Clone, Copy)]
enum SsList {
    Unused,
    All,
}

impl SsList {
    fn links(self, e: &mut PoolExt) -> &mut SsLinks {
        match self {
            SsList::Unused => &mut e.unused,
            SsList::All => &mut e.all,
        }
    }
    fn head(self, st: &mut State) -> &mut *const SuperSlab {
        match self {
            SsList::Unused => &mut st.unused_head,
            SsList::All => &mut st.all_head,
        }
    }
}

const _: () = assert!(core::mem::size_of::<PoolExt>() <= EXT_BYTES);
const _: () = assert!(MAX_SLABS <= 64 && MAX_CLASSES <= 64);

/// An intrusive doubly-linked list of slots.
#[derive(Clone, Copy)]
struct SlotList {
    head: SlotRef,
}

/// Which source [`SharedPool::acquire`] used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Stage 0: an abandoned slab of the class with free blocks, adopted.
    Adopted,
    /// Stage 1: an EMPTY slot that last served the class.
    EmptySameClass,
    /// Stage 2: an UNUSED slot of an existing SuperSlab, or an EMPTY slot of another class.
    Unused,
    /// Stage 3: a new SuperSlab (from the cache or the OS).
    NewSuperSlab,
}

/// A slab handed out by [`SharedPool::acquire`], owned by the caller and assigned to its class.
#[derive(Debug, Clone, Copy)]
pub struct Acquired<'a> {
    /// The SuperSlab holding the slab.
    pub superslab: &'a SuperSlab,
    /// The slab's index in it.
    pub index: usize,
    /// The source it came from.
    pub stage: Stage,
}

impl<'a> Acquired<'a> {
    /// The slab's metadata.
    #[inline]
    pub fn slab(&self) -> &'a Slab {
        self.superslab.slab(self.index)
    }
}

/// Counters of a [`SharedPool`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Stage 0 acquisitions (abandoned slabs adopted).
    pub stage0_adopted: u64,
    /// Stage 1 acquisitions.
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
    unused_head: *const SuperSlab,
    /// Every SuperSlab the pool holds (`live` of them).
    all_head: *const SuperSlab,
    live: usize,
}

/// The shared pool. See the crate docs.
pub struct SharedPool<'r> {
    registry: &'r Registry<'r>,
    cache: SuperSlabCache<'r>,
    lg_size: u32,
    state: Mutex<State>,
    stage0: StatCounter,
    stage1: StatCounter,
    stage2: StatCounter,
    stage3: StatCounter,
    lru_hits: StatCounter,
    mapped: StatCounter,
    releases: StatCounter,
    published: StatCounter,
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

const EMPTY_LIST: SlotList = SlotList { head: 0 };

/// # Safety
/// `ss` is a SuperSlab formatted by this pool, and the pool lock is held.
#[allow(clippy::mut_from_ref)]
unsafe fn ext<'x>(ss: *const SuperSlab) -> &'x mut PoolExt {
    // SAFETY: the extension area is ours, aligned and large enough (checked above), and the
    // pool lock serialises every access.
    unsafe { &mut *(*ss).ext().as_ptr().cast::<PoolExt>() }
}

fn slot(ss: *const SuperSlab, i: usize) -> SlotRef {
    ss as usize | i
}

fn split(s: SlotRef) -> (*const SuperSlab, usize) {
    ((s & !IDX_MASK) as *const SuperSlab, s & IDX_MASK)
}

impl SlotList {
    /// # Safety
    /// Pool lock held; `s` is on no list.
    unsafe fn push(&mut self, s: SlotRef) {
        let (ss, i) = split(s);
        // SAFETY: forwarded.
        unsafe {
            let e = ext(ss);
            e.next[i] = self.head;
            e.prev[i] = 0;
            if self.head != 0 {
                let (hs, hi) = split(self.head);
                ext(hs).prev[hi] = s;
            }
        }
        self.head = s;
    }

    /// # Safety
    /// Pool lock held; `s` is on this list.
    unsafe fn remove(&mut self, s: SlotRef) {
        let (ss, i) = split(s);
        // SAFETY: forwarded.
        unsafe {
            let e = ext(ss);
            let (n, p) = (e.next[i], e.prev[i]);
            if p != 0 {
                let (ps, pi) = split(p);
                ext(ps).next[pi] = n;
            } else {
                self.head = n;
            }
            if n != 0 {
                let (ns, ni) = split(n);
                ext(ns).prev[ni] = p;
            }
        }
    }

    /// # Safety
    /// Pool lock held.
    unsafe fn pop(&mut self) -> Option<SlotRef> {
        let s = self.head;
        if s == 0 {
            return None;
        }
        // SAFETY: forwarded; `s` is the head.
        unsafe { self.remove(s) };
        Some(s)
    }
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
                    empty: [EMPTY_LIST; MAX_CLASSES],
                    abandoned: [EMPTY_LIST; MAX_CLASSES],
                    unused_head: ptr::null(),
                    all_head: ptr::null(),
                    live: 0,
                }),
                stage0: StatCounter::new(),
                stage1: StatCounter::new(),
                stage2: StatCounter::new(),
                stage3: StatCounter::new(),
                lru_hits: StatCounter::new(),
                mapped: StatCounter::new(),
                releases: StatCounter::new(),
                published: StatCounter::new(),
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

    /// Counters.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            stage0_adopted: self.stage0.get(),
            stage1_empty: self.stage1.get(),
            stage2_unused: self.stage2.get(),
            stage3_new: self.stage3.get(),
            lru_hits: self.lru_hits.get(),
            superslabs_mapped: self.mapped.get(),
            releases: self.releases.get(),
            published: self.published.get(),
            superslabs_cached: self.cached.get(),
            superslabs_live: self.state.lock().live as u64,
            cache: self.cache.stats(),
        }
    }

    /// Hands out a slab for `class` (blocks of `block_size` bytes, aligned to the largest power
    /// of two dividing it, up to the page size), owned by `owner`. `None` only if the OS refuses
    /// memory.
    ///
    /// An adopted slab (stage 0) may have blocks in use and free blocks on its list; any other
    /// slab is empty. `class < MAX_CLASSES`, `16 <= block_size`, a multiple of 16, `owner != 0`.
    pub fn acquire(&self, class: usize, block_size: u32, owner: usize) -> Option<Acquired<'_>> {
        debug_assert!(class < MAX_CLASSES && owner != 0);
        let got = {
            let mut st = self.state.lock();
            // SAFETY: the lock is held for every list operation below.
            unsafe { self.take_locked(&mut st, class) }
        };
        let (s, stage) = match got {
            Some(x) => x,
            None => (self.grow(class)?, Stage::NewSuperSlab),
        };
        let (ss, i) = split(s);
        // SAFETY: pool SuperSlabs stay mapped while they have an ACTIVE slot, and this one does.
        let ss: &SuperSlab = unsafe { &*ss };
        let slab = ss.slab(i);
        match stage {
            Stage::Adopted => {
                // SAFETY: we took it off the abandoned list: exclusive.
                unsafe { slab.adopt(owner) };
                self.stage0.add(1);
            }
            _ => {
                let (lo, hi) = ss.slab_range(i);
                // SAFETY: the slot was EMPTY or UNUSED and is now ours alone.
                unsafe { slab.assign(owner, class as u32, block_size, lo, hi) };
                match stage {
                    Stage::EmptySameClass => self.stage1.add(1),
                    Stage::Unused => self.stage2.add(1),
                    _ => self.stage3.add(1),
                }
            }
        }
        Some(Acquired { superslab: ss, index: i, stage })
    }

    /// Stages 0-2 under the lock.
    ///
    /// # Safety
    /// `st` is the locked state.
    unsafe fn take_locked(&self, st: &mut State, class: usize) -> Option<(SlotRef, Stage)> {
        // SAFETY: lock held (caller).
        unsafe {
            if let Some(s) = st.abandoned[class].pop() {
                return Some((s, Stage::Adopted));
            }
            if let Some(s) = st.empty[class].pop() {
                Self::activate(s, class);
                return Some((s, Stage::EmptySameClass));
            }
            if let Some(ss) = Self::pick_unused(st, class) {
                let e = ext(ss);
                let i = e.unused_mask.trailing_zeros() as usize;
                e.unused_mask &= !(1u64 << i);
                if e.unused_mask == 0 {
                    Self::unlink_ss(st, ss, SsList::Unused);
                }
                let s = slot(ss, i);
                Self::activate(s, class);
                return Some((s, Stage::Unused));
            }
            for c in 0..MAX_CLASSES {
                if let Some(s) = st.empty[c].pop() {
                    Self::activate(s, class);
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
    unsafe fn pick_unused(st: &State, class: usize) -> Option<*const SuperSlab> {
        const LOOK: usize = 8;
        let mut ss = st.unused_head;
        let first = ss;
        let mut k = 0;
        while !ss.is_null() && k < LOOK {
            // SAFETY: listed SuperSlabs are live; lock held.
            let e = unsafe { ext(ss) };
            if e.class_mask & (1u64 << class) != 0 {
                return Some(ss);
            }
            ss = e.unused.next;
            k += 1;
        }
        (!first.is_null()).then_some(first)
    }

    /// # Safety
    /// Lock held; `s` is on no list and not ACTIVE.
    unsafe fn activate(s: SlotRef, class: usize) {
        let (ss, i) = split(s);
        // SAFETY: forwarded.
        let e = unsafe { ext(ss) };
        e.state[i] = ACTIVE;
        e.class[i] = class as u8;
        e.class_mask |= 1u64 << class;
        e.active += 1;
    }

    /// # Safety
    /// Lock held; `ss` is on list `which`.
    unsafe fn unlink_ss(st: &mut State, ss: *const SuperSlab, which: SsList) {
        // SAFETY: forwarded; neighbours are listed SuperSlabs.
        unsafe {
            let l = which.links(ext(ss));
            let (n, p) = (l.next, l.prev);
            l.next = ptr::null();
            l.prev = ptr::null();
            if p.is_null() {
                *which.head(st) = n;
            } else {
                which.links(ext(p)).next = n;
            }
            if !n.is_null() {
                which.links(ext(n)).prev = p;
            }
        }
    }

    /// # Safety
    /// Lock held; `ss` is a live pool SuperSlab on no list `which`.
    unsafe fn push_ss(st: &mut State, ss: *const SuperSlab, which: SsList) {
        let head = *which.head(st);
        // SAFETY: forwarded; the head is a listed SuperSlab.
        unsafe {
            let l = which.links(ext(ss));
            l.prev = ptr::null();
            l.next = head;
            if !head.is_null() {
                which.links(ext(head)).prev = ss;
            }
        }
        *which.head(st) = ss;
    }

    /// Stage 3: a SuperSlab from the cache or the OS; returns its slot 0, ACTIVE for `class`,
    /// with the other slots on the UNUSED list.
    #[cold]
    fn grow(&self, class: usize) -> Option<SlotRef> {
        let size = 1usize << self.lg_size;
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
        // SAFETY: a registered region of the right size that nobody else references (fresh, or
        // popped from the cache). It is formatted before any slot of it is handed out.
        let ss: &SuperSlab = unsafe { SuperSlab::init(base, self.lg_size) };
        let n = ss.nslabs();
        let mut st = self.state.lock();
        // SAFETY: lock held; the header was just formatted (ext zeroed = all UNUSED).
        unsafe {
            // Each helper below borrows the extension area afresh; keep no borrow across them.
            let unused = (if n == 64 { u64::MAX } else { (1u64 << n) - 1 }) & !1;
            ext(ss).unused_mask = unused;
            Self::activate(slot(ss, 0), class);
            if unused != 0 {
                Self::push_ss(&mut st, ss, SsList::Unused);
            }
            Self::push_ss(&mut st, ss, SsList::All);
        }
        st.live += 1;
        Some(slot(ss, 0))
    }

    /// Takes back an empty slab (ACTIVE -> EMPTY, keeping its class). If its SuperSlab has no
    /// ACTIVE slot left, the SuperSlab leaves every list and goes to the LRU cache, unless it is
    /// the last one the pool holds.
    ///
    /// # Safety
    /// The caller owns slab `index` of `ss`, a SuperSlab of this pool, and every block of it is
    /// back on its free lists (`used == 0`, so no remote free can race); the caller forgets it.
    pub unsafe fn release(&self, ss: &SuperSlab, index: usize) {
        // SAFETY: forwarded: we own it.
        unsafe { ss.slab(index).disown() };
        self.releases.add(1);
        let ssp: *const SuperSlab = ss;
        let to_cache = {
            let mut st = self.state.lock();
            // SAFETY: lock held; the slot is ACTIVE and on no list. Every access borrows the
            // extension area afresh (the list helpers borrow it too), so no borrow outlives one.
            unsafe {
                let class = {
                    let e = ext(ssp);
                    debug_assert_eq!(e.state[index], ACTIVE);
                    e.state[index] = EMPTY;
                    e.active -= 1;
                    e.class[index] as usize
                };
                st.empty[class].push(slot(ssp, index));
                let active = ext(ssp).active;
                if active == 0 && st.live > 1 {
                    for i in 0..ss.nslabs() {
                        let (state, c) = {
                            let e = ext(ssp);
                            (e.state[i], e.class[i] as usize)
                        };
                        if state == EMPTY {
                            st.empty[c].remove(slot(ssp, i));
                        }
                    }
                    if ext(ssp).unused_mask != 0 {
                        Self::unlink_ss(&mut st, ssp, SsList::Unused);
                    }
                    Self::unlink_ss(&mut st, ssp, SsList::All);
                    st.live -= 1;
                    true
                } else {
                    if active == 0 {
                        ext(ssp).class_mask = 0;
                    }
                    false
                }
            }
        };
        if to_cache {
            ss.invalidate();
            self.cached.add(1);
            // SAFETY: no slot is ACTIVE and no list refers to it: nobody uses the region. It is
            // registered, mapped by the registry's Os, and a multiple of the page size.
            unsafe { self.cache.push(ss.base(), ss.size()) };
        }
    }

    /// Lists slab `index` of `ss`, ownerless and holding free blocks (or blocks on its remote
    /// stack), for adoption by the next `acquire` of its class.
    ///
    /// # Safety
    /// The slab is detached (`owner() == 0`), ACTIVE in this pool, on no list, and the caller is
    /// the one party entitled to list it: the freer told `RemoteFree::Publish`, or the former
    /// owner right after `disown`.
    pub unsafe fn publish(&self, ss: &SuperSlab, index: usize) {
        let class = ss.slab(index).class() as usize;
        self.published.add(1);
        let mut st = self.state.lock();
        // SAFETY: lock held; the slot is on no list.
        unsafe { st.abandoned[class].push(slot(ss, index)) };
    }

    /// Reclaims memory: abandoned slabs whose blocks have all come back are released (their
    /// SuperSlabs may go to the cache), the others are listed again; then the cache evicts
    /// what its TTL excludes. Returns the number of slabs released.
    pub fn trim(&self) -> usize {
        // A private owner id for slabs held during the trim: an address no thread cache has.
        let trim_owner = self as *const Self as usize;
        let mut released = 0;
        for class in 0..MAX_CLASSES {
            let mut keep: SlotRef = 0;
            loop {
                let s = {
                    let mut st = self.state.lock();
                    // SAFETY: lock held.
                    unsafe { st.abandoned[class].pop() }
                };
                let Some(s) = s else { break };
                let (ss, i) = split(s);
                // SAFETY: an ACTIVE slot keeps its SuperSlab mapped; popped: exclusive.
                let ss: &SuperSlab = unsafe { &*ss };
                let slab = ss.slab(i);
                // SAFETY: exclusive after the pop.
                unsafe {
                    slab.adopt(trim_owner);
                    if slab.is_empty() {
                        self.release(ss, i);
                        released += 1;
                    } else {
                        slab.disown();
                        // Relist after the loop so this pass ends; chain through `next`.
                        let _g = self.state.lock();
                        ext(ss).next[i] = keep;
                        keep = s;
                    }
                }
            }
            while keep != 0 {
                let (ss, i) = split(keep);
                // SAFETY: slots we popped above and chained through `next` while we held them.
                unsafe {
                    let mut st = self.state.lock();
                    let next = ext(ss).next[i];
                    st.abandoned[class].push(keep);
                    keep = next;
                }
            }
        }
        self.cache.evict_expired();
        released
    }

    /// Checks the pool's invariants (see the crate docs) over every SuperSlab reachable from
    /// its lists, returning the first violation. For tests.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        let st = self.state.lock();
        let mut ss = st.unused_head;
        while !ss.is_null() {
            // SAFETY: lock held; listed SuperSlabs are live.
            let e = unsafe { ext(ss) };
            if e.unused_mask == 0 {
                return Err("SuperSlab on the UNUSED list without UNUSED slots");
            }
            // SAFETY: live SuperSlab.
            let n = unsafe { (*ss).nslabs() };
            let mut counted = [0u32; 3];
            for i in 0..n {
                counted[e.state[i] as usize] += 1;
                if (e.unused_mask >> i) & 1 != (e.state[i] == UNUSED) as u64 {
                    return Err("unused_mask disagrees with slot states");
                }
            }
            if counted[ACTIVE as usize] != e.active {
                return Err("active count disagrees with slot states");
            }
            ss = e.unused.next;
        }
        for list in st.empty.iter() {
            let mut s = list.head;
            while s != 0 {
                let (ss, i) = split(s);
                // SAFETY: lock held; listed slots' SuperSlabs are live.
                let e = unsafe { ext(ss) };
                if e.state[i] != EMPTY {
                    return Err("non-EMPTY slot on an EMPTY list");
                }
                s = e.next[i];
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
        let mut ss = self.state.lock().all_head;
        while let Some(p) = core::ptr::NonNull::new(ss as *mut SuperSlab) {
            // SAFETY: `&mut self`: no other user; listed SuperSlabs are live pool SuperSlabs.
            unsafe {
                ss = ext(ss).all.next;
                let base = p.cast::<u8>();
                self.registry.unregister(base, size);
                let _ = os.unmap(base, size);
            }
        }
        self.cache.flush();
    }
}
