//! [`ThreadCache`]: the per-thread unified cache and warm pool of the tiny tier.

use core::ptr::{self, NonNull};

use hak_shared_pool::SharedPool;
use hak_superslab::{RemoteFree, SuperSlab};
use hak_sync::stat::LocalCounter;

use crate::classes::{CLASS_SIZES, NUM_CLASSES};

/// Capacity ceiling of any bin (blocks).
pub const BIN_MAX: usize = 256;
/// Most slabs a warm pool can hold per class.
pub const WARM_MAX: usize = 16;

/// Bytes a bin may hold at its ceiling: small classes cache more blocks than big ones.
const BIN_BYTES: usize = 64 << 10;

/// Capacity ceiling of class `c`'s bin: `clamp(BIN_BYTES / size, 2, BIN_MAX)` (256 blocks for
/// classes up to 256 B, 2 for 32 KiB).
const fn ceiling(c: usize) -> u32 {
    let n = BIN_BYTES / CLASS_SIZES[c] as usize;
    let n = if n < 2 { 2 } else { n };
    (if n > BIN_MAX { BIN_MAX } else { n }) as u32
}

/// Capacity floor of class `c`'s bin (where a new or flushed cache starts): `ceiling / 8`,
/// at least 2.
const fn floor(c: usize) -> u32 {
    let f = ceiling(c) / 8;
    if f < 2 {
        2
    } else {
        f
    }
}

/// A slab this cache owns: its SuperSlab and index.
#[derive(Clone, Copy)]
struct WarmSlab {
    ss: *const SuperSlab,
    index: usize,
}

/// The owned slabs of one class.
#[derive(Clone, Copy)]
struct Warm {
    len: usize,
    slabs: [WarmSlab; WARM_MAX],
}

const NO_SLAB: WarmSlab = WarmSlab { ss: ptr::null(), index: 0 };

/// Counters of one thread cache, written only by its thread (slow paths only).
#[derive(Debug, Default)]
pub struct FrontStats {
    /// Refills of a bin (alloc misses served).
    pub refills: LocalCounter,
    /// Refills served by a slab already in the warm pool (warm-pool hits).
    pub warm_hits: LocalCounter,
    /// Refills that had to acquire slabs from the shared pool (warm-pool misses).
    pub warm_misses: LocalCounter,
    /// Overflow drains.
    pub drains: LocalCounter,
    /// Bytes of blocks moved from slabs into this cache.
    pub bytes_out: LocalCounter,
    /// Bytes of blocks this thread returned to slabs (locally or remotely).
    pub bytes_back: LocalCounter,
    /// Blocks freed onto another owner's (or a detached slab's) remote stack.
    pub remote_frees: LocalCounter,
    /// Slabs released to the shared pool.
    pub slabs_released: LocalCounter,
    /// Slabs this thread published for adoption.
    pub slabs_published: LocalCounter,
}

/// The per-thread cache. See the crate docs for its invariants.
///
/// `#[repr(C)]` with the bin tops and capacities first, so the hot path touches one or two
/// cache lines of metadata plus the slot it pops or pushes.
#[repr(C)]
pub struct ThreadCache<'p> {
    tops: [u32; NUM_CLASSES],
    caps: [u32; NUM_CLASSES],
    /// Owner id written into slabs: this cache's address once activated, 0 before.
    id: usize,
    pool: &'p SharedPool<'p>,
    /// Most warm slabs per class, `1..=WARM_MAX`.
    warm_limit: usize,
    slots: [[*mut u8; BIN_MAX]; NUM_CLASSES],
    warm: [Warm; NUM_CLASSES],
    stats: FrontStats,
}

impl core::fmt::Debug for ThreadCache<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ThreadCache")
            .field("id", &self.id)
            .field("tops", &self.tops)
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

impl<'p> ThreadCache<'p> {
    /// An inactive cache (every capacity 0, id 0): every operation on it misses. This is what
    /// a sentinel is; [`ThreadCache::activate`] makes it a working cache.
    pub const fn new(pool: &'p SharedPool<'p>) -> ThreadCache<'p> {
        ThreadCache {
            tops: [0; NUM_CLASSES],
            caps: [0; NUM_CLASSES],
            id: 0,
            pool,
            warm_limit: 1,
            slots: [[ptr::null_mut(); BIN_MAX]; NUM_CLASSES],
            warm: [Warm { len: 0, slabs: [NO_SLAB; WARM_MAX] }; NUM_CLASSES],
            stats: FrontStats {
                refills: LocalCounter::new(),
                warm_hits: LocalCounter::new(),
                warm_misses: LocalCounter::new(),
                drains: LocalCounter::new(),
                bytes_out: LocalCounter::new(),
                bytes_back: LocalCounter::new(),
                remote_frees: LocalCounter::new(),
                slabs_released: LocalCounter::new(),
                slabs_published: LocalCounter::new(),
            },
        }
    }

    /// Builds an inactive cache in place, without a stack temporary (the struct is about
    /// 56 KiB, too large for small thread stacks).
    ///
    /// # Safety
    /// `this` points to zeroed, writable memory of `size_of::<ThreadCache>()` bytes aligned for
    /// it (fresh pages from hak-os), which nobody else uses.
    pub unsafe fn init_in_place(this: *mut ThreadCache<'p>, pool: &'p SharedPool<'p>) {
        // SAFETY: zeroed memory is a valid inactive cache for every field but `pool` (a
        // reference must not be null) and `warm_limit`; write those two.
        unsafe {
            ptr::addr_of_mut!((*this).pool).write(pool);
            ptr::addr_of_mut!((*this).warm_limit).write(1);
        }
    }

    /// Turns an inactive cache into a working one owned by the calling thread: the id becomes
    /// its address, capacities start at their floors, and the warm pool keeps up to
    /// `warm_limit` slabs per class (clamped to `1..=WARM_MAX`).
    pub fn activate(&mut self, warm_limit: usize) {
        self.id = self as *const Self as usize;
        self.warm_limit = warm_limit.clamp(1, WARM_MAX);
        for c in 0..NUM_CLASSES {
            self.caps[c] = floor(c);
        }
    }

    /// Whether [`ThreadCache::activate`] has run (a sentinel has not).
    #[inline]
    pub fn is_active(&self) -> bool {
        self.id != 0
    }

    /// This cache's counters.
    pub fn stats(&self) -> &FrontStats {
        &self.stats
    }

    /// The counters of a cache another thread may be using: they are single-writer atomics,
    /// read here without touching the rest of the cache.
    ///
    /// # Safety
    /// `this` points to a live cache that stays mapped for `'a`.
    pub unsafe fn stats_of<'a>(this: *const Self) -> &'a FrontStats {
        // SAFETY: forwarded; only the atomic counters are borrowed.
        unsafe { &*ptr::addr_of!((*this).stats) }
    }

    /// The shared pool behind this cache.
    pub fn pool(&self) -> &'p SharedPool<'p> {
        self.pool
    }

    /// Pops a cached block of `class`, or null on a miss.
    ///
    /// # Safety
    /// `this` points to a live cache used only by the calling thread (a shared sentinel is fine:
    /// with capacity 0 it is never written), and `class < NUM_CLASSES`.
    #[inline(always)]
    pub unsafe fn pop(this: *mut Self, class: usize) -> *mut u8 {
        debug_assert!(class < NUM_CLASSES);
        // SAFETY: forwarded; indices are in bounds (class < NUM_CLASSES, top <= BIN_MAX).
        unsafe {
            let top = ptr::addr_of_mut!((*this).tops).cast::<u32>().add(class);
            let t = *top;
            if t == 0 {
                return ptr::null_mut();
            }
            let t = t - 1;
            *top = t;
            *ptr::addr_of!((*this).slots)
                .cast::<[*mut u8; BIN_MAX]>()
                .add(class)
                .cast::<*mut u8>()
                .add(t as usize)
        }
    }

    /// Frees `block` of `class` into the cache if its slab belongs to this cache (or to no
    /// cache: a detached full slab) and the bin has room; returns `false` otherwise (the caller
    /// takes a slow path).
    ///
    /// # Safety
    /// As for [`ThreadCache::pop`]; `block` is a live tiny block of `class` in a SuperSlab of
    /// `2^lg_size` bytes, which the caller gives up.
    #[inline(always)]
    pub unsafe fn free_fast(this: *mut Self, class: usize, block: *mut u8, lg_size: u32) -> bool {
        debug_assert!(class < NUM_CLASSES);
        // SAFETY: forwarded; the SuperSlab of a live block is mapped and formatted.
        unsafe {
            let ss = SuperSlab::from_block(block, lg_size);
            // Our own slab, or a detached one (full slabs are detached; their blocks are
            // usually ours coming back): keep it in the bin. Another thread's block goes to
            // its owner's remote stack on the slow path.
            let owner = ss.slab_of(block).owner();
            if owner != (*this).id && owner != 0 {
                return false;
            }
            let top = ptr::addr_of_mut!((*this).tops).cast::<u32>().add(class);
            let t = *top;
            if t >= *ptr::addr_of!((*this).caps).cast::<u32>().add(class) {
                return false;
            }
            *ptr::addr_of_mut!((*this).slots)
                .cast::<[*mut u8; BIN_MAX]>()
                .add(class)
                .cast::<*mut u8>()
                .add(t as usize) = block;
            *top = t + 1;
            true
        }
    }

    /// Refills the bin of `class` and pops a block; `None` if the OS refuses memory.
    #[cold]
    pub fn alloc_slow(&mut self, class: usize) -> Option<NonNull<u8>> {
        debug_assert!(self.is_active());
        if !self.refill(class) {
            return None;
        }
        let t = self.tops[class] - 1;
        self.tops[class] = t;
        NonNull::new(self.slots[class][t as usize])
    }

    /// Frees `block` of `class` when [`ThreadCache::free_fast`] declined: drains the full bin
    /// and keeps the block if it is ours (or its slab is detached), or pushes a block of
    /// another thread's slab onto that slab's remote stack.
    ///
    /// # Safety
    /// `block` is a live tiny block of `class` in a SuperSlab of this cache's pool.
    #[cold]
    pub unsafe fn free_slow(&mut self, class: usize, block: NonNull<u8>) {
        let lg = self.pool.lg_size();
        // SAFETY: a live block's SuperSlab is mapped.
        let ss = unsafe { SuperSlab::from_block(block.as_ptr(), lg) };
        let index = ss.slab_index_of(block.as_ptr());
        let owner = ss.slab(index).owner();
        if self.id != 0 && (owner == self.id || owner == 0) {
            self.drain(class);
            let t = self.tops[class] as usize;
            self.slots[class][t] = block.as_ptr();
            self.tops[class] += 1;
        } else {
            // SAFETY: forwarded.
            unsafe { self.free_remote(ss, index, block) };
        }
    }

    /// Pushes a block onto a foreign slab's remote stack, publishing the slab if asked.
    ///
    /// # Safety
    /// `block` is a live block of slab `index` of `ss`, a SuperSlab of this cache's pool.
    unsafe fn free_remote(&self, ss: &SuperSlab, index: usize, block: NonNull<u8>) {
        self.stats.remote_frees.add(1);
        self.stats.bytes_back.add(ss.slab(index).block_size() as u64);
        // SAFETY: forwarded.
        if unsafe { remote_push(self.pool, ss, index, block) } {
            self.stats.slabs_published.add(1);
        }
    }

    /// Moves up to half a bin of blocks from the warm pool (acquiring slabs when it is empty)
    /// into the bin of `class`, growing its capacity towards the ceiling. `false` if no block
    /// could be had.
    fn refill(&mut self, class: usize) -> bool {
        self.stats.refills.add(1);
        self.caps[class] = (self.caps[class] * 2).min(ceiling(class));
        let top = self.tops[class] as usize;
        let want = (self.caps[class] as usize / 2).max(1).min(BIN_MAX - top);
        let mut acquired = false;
        loop {
            if self.warm[class].len == 0 {
                if acquired || !self.prefill(class) {
                    return false;
                }
                acquired = true;
                continue;
            }
            let w = self.warm[class].slabs[0];
            // SAFETY: warm slabs are owned by this cache and their SuperSlabs stay mapped while
            // they have an ACTIVE slot.
            let slab = unsafe { (*w.ss).slab(w.index) };
            // SAFETY: we own the slab.
            unsafe {
                if !slab.has_local() {
                    slab.collect_remote();
                }
                let n = slab.alloc_batch(&mut self.slots[class][top..top + want]);
                if n > 0 {
                    self.tops[class] = (top + n) as u32;
                    self.stats.bytes_out.add((n * CLASS_SIZES[class] as usize) as u64);
                    if !acquired {
                        self.stats.warm_hits.add(1);
                    }
                    return true;
                }
                // Nothing local and nothing remote: the slab is full. Detach it; the first
                // block to come back publishes it. A free that raced in keeps it here.
                if slab.try_detach() {
                    self.remove_warm(class, 0);
                }
            }
        }
    }

    /// Acquires up to two slabs of `class` into the empty warm pool.
    #[cold]
    fn prefill(&mut self, class: usize) -> bool {
        self.stats.warm_misses.add(1);
        let n = self.warm_limit.min(2);
        let bs = CLASS_SIZES[class];
        for _ in 0..n {
            let Some(a) = self.pool.acquire(class, bs, self.id) else { break };
            let w = &mut self.warm[class];
            w.slabs[w.len] = WarmSlab { ss: a.superslab, index: a.index };
            w.len += 1;
        }
        self.warm[class].len > 0
    }

    fn remove_warm(&mut self, class: usize, pos: usize) {
        let w = &mut self.warm[class];
        w.len -= 1;
        w.slabs[pos] = w.slabs[w.len];
    }

    /// Returns the older half of a full bin to its slabs.
    fn drain(&mut self, class: usize) {
        self.stats.drains.add(1);
        let top = self.tops[class] as usize;
        let k = (top / 2).max(1).min(top);
        for j in 0..k {
            let b = self.slots[class][j];
            // SAFETY: blocks in a bin are live blocks of this class.
            unsafe { self.return_block(class, NonNull::new_unchecked(b), true) };
        }
        self.slots[class].copy_within(k..top, 0);
        self.tops[class] = (top - k) as u32;
    }

    /// Gives a cached block back to its slab: the local free list if this cache owns the slab
    /// (releasing the slab if that empties it and `release_empty`; flush decides about its
    /// slabs afterwards instead), else the remote stack.
    ///
    /// # Safety
    /// `block` is a live block of `class` that the cache gives up.
    unsafe fn return_block(&mut self, class: usize, block: NonNull<u8>, release_empty: bool) {
        let lg = self.pool.lg_size();
        // SAFETY: a live block's SuperSlab is mapped.
        let ss = unsafe { SuperSlab::from_block(block.as_ptr(), lg) };
        let index = ss.slab_index_of(block.as_ptr());
        let slab = ss.slab(index);
        if slab.owner() != self.id {
            // SAFETY: forwarded.
            unsafe { self.free_remote(ss, index, block) };
            return;
        }
        self.stats.bytes_back.add(CLASS_SIZES[class] as u64);
        // SAFETY: we own the slab and the block is one of its live blocks.
        if unsafe { slab.free_local(block) } == 0 && release_empty && self.warm[class].len > 1 {
            if let Some(pos) = self.warm_position(class, ss, index) {
                self.remove_warm(class, pos);
                self.stats.slabs_released.add(1);
                // SAFETY: owned, every block back (used == 0), removed from the warm pool.
                unsafe { self.pool.release(ss, index) };
            }
        }
    }

    fn warm_position(&self, class: usize, ss: &SuperSlab, index: usize) -> Option<usize> {
        let w = &self.warm[class];
        w.slabs[..w.len].iter().position(|s| ptr::eq(s.ss, ss) && s.index == index)
    }

    /// Returns every cached block and gives up every slab: empty ones to the shared pool,
    /// ones with free blocks published for adoption, full ones detached. Capacities go back to
    /// their floors. Used at thread exit and by `flush_thread_cache()`; afterwards the cache
    /// owns nothing and may be reused (by this or another thread).
    pub fn flush(&mut self) {
        if !self.is_active() {
            return;
        }
        for class in 0..NUM_CLASSES {
            let top = self.tops[class] as usize;
            // Keep every warm slab while draining so emptied ones are handled below.
            for j in 0..top {
                let b = self.slots[class][j];
                // SAFETY: cached blocks are live blocks of this class.
                unsafe { self.return_block(class, NonNull::new_unchecked(b), false) };
            }
            self.tops[class] = 0;
            self.caps[class] = floor(class);
            while self.warm[class].len > 0 {
                let w = self.warm[class].slabs[0];
                self.remove_warm(class, 0);
                // SAFETY: warm slabs are owned and their SuperSlabs mapped.
                unsafe { self.give_up(&*w.ss, w.index) };
            }
        }
    }

    /// Ends this cache's ownership of a slab it no longer lists.
    ///
    /// # Safety
    /// The cache owns slab `index` of `ss` and has removed it from its warm pool.
    unsafe fn give_up(&mut self, ss: &SuperSlab, index: usize) {
        let slab = ss.slab(index);
        // SAFETY: owned until the end of this function.
        unsafe {
            loop {
                slab.collect_remote();
                if slab.is_empty() {
                    self.stats.slabs_released.add(1);
                    self.pool.release(ss, index);
                    return;
                }
                if slab.has_local() {
                    slab.disown();
                    self.stats.slabs_published.add(1);
                    self.pool.publish(ss, index);
                    return;
                }
                if slab.try_detach() {
                    return;
                }
                // A remote free raced in: collect it and decide again.
            }
        }
    }
}

/// Pushes `block` onto its slab's remote stack and publishes the slab if the push asks for it;
/// returns whether it published.
///
/// # Safety
/// `block` is a live block of slab `index` of `ss`, a SuperSlab of `pool`.
unsafe fn remote_push(
    pool: &SharedPool<'_>,
    ss: &SuperSlab,
    index: usize,
    block: NonNull<u8>,
) -> bool {
    // SAFETY: forwarded.
    unsafe {
        if ss.slab(index).free_remote(block) == RemoteFree::Publish {
            pool.publish(ss, index);
            return true;
        }
    }
    false
}

/// Frees a tiny block from a thread that has no active cache (for example during thread
/// teardown): the block goes onto its slab's remote stack. No cache is created. Returns the
/// block's size, for the caller's accounting.
///
/// # Safety
/// `block` is a live tiny block in a SuperSlab of `pool`, which the caller gives up, and the
/// caller owns no slab (a thread without an active cache never does).
pub unsafe fn free_without_cache(pool: &SharedPool<'_>, block: NonNull<u8>) -> usize {
    // SAFETY: a live block's SuperSlab is mapped.
    let ss = unsafe { SuperSlab::from_block(block.as_ptr(), pool.lg_size()) };
    let index = ss.slab_index_of(block.as_ptr());
    let size = ss.slab(index).block_size() as usize;
    // SAFETY: forwarded.
    unsafe { remote_push(pool, ss, index, block) };
    size
}

// SAFETY: a cache is moved between threads only as a whole (pooled for reuse after flush);
// its raw pointers refer to pool memory that outlives it.
unsafe impl Send for ThreadCache<'_> {}
