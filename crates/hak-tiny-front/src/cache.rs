//! [`ThreadCache`]: the per-thread bins, the slabs the thread owns, its batches of remote
//! frees, and the periodic shrinking of idle bins.

use core::ptr::{self, NonNull};

use hak_shared_pool::SharedPool;
use hak_superslab::{Inbox, RemoteFree, Retract, SlabRef, SsRef};
use hak_sync::stat::{Derived, LocalCounter};

use crate::classes::{CLASS_SIZES, NUM_CLASSES};
use crate::list::{SlabList, ON_AVAIL, ON_EMPTY, ON_FULL, ON_NONE};

/// Capacity ceiling of any bin (blocks).
pub const BIN_MAX: usize = 256;
/// Most empty slabs a thread keeps per class for reuse (the setting's upper bound; see
/// [`ThreadCache::activate`]).
pub const WARM_MAX: usize = 16;

/// Bytes a bin may hold at its ceiling: small classes cache more blocks than big ones.
const BIN_BYTES: usize = 64 << 10;

/// Slots of the remote-free stash (direct-mapped by slab).
const STASH_SLOTS: usize = 16;
/// Bytes of blocks one stash entry gathers before it is handed over.
const STASH_BYTES: usize = 32 << 10;
/// Most blocks of one stash entry.
const STASH_MAX_BLOCKS: usize = 64;

/// Slow-path events (refills and drains) per adaptation window.
const GC_PERIOD: u32 = 256;

/// Capacity ceiling of class `c`'s bin: `clamp(BIN_BYTES / size, 2, BIN_MAX)` (256 blocks for
/// classes up to 256 B, 2 for 32 KiB).
const fn ceiling(c: usize) -> u32 {
    let n = BIN_BYTES / CLASS_SIZES[c] as usize;
    let n = if n < 2 { 2 } else { n };
    (if n > BIN_MAX { BIN_MAX } else { n }) as u32
}

/// Capacity floor of class `c`'s bin (where a new, flushed or idle cache starts):
/// `ceiling / 8`, at least 2.
const fn floor(c: usize) -> u32 {
    let f = ceiling(c) / 8;
    if f < 2 {
        2
    } else {
        f
    }
}

/// Blocks a stash entry of class `c` gathers: `clamp(STASH_BYTES / size, 1, 64)`.
const fn stash_max(c: usize) -> u32 {
    let n = STASH_BYTES / CLASS_SIZES[c] as usize;
    let n = if n < 1 { 1 } else { n };
    (if n > STASH_MAX_BLOCKS { STASH_MAX_BLOCKS } else { n }) as u32
}

hak_sync::stats! {
    /// Counters of one thread cache, written only by its thread (slow paths only), read by any.
    pub struct FrontStats => {
        /// A snapshot of one thread cache's [`FrontStats`], or their sum over many
        /// ([`StatValue::merge`](hak_sync::stat::StatValue::merge)).
        pub struct TinyStats;
    }
    /// Refills of a bin (alloc misses served).
    refills: LocalCounter,
    /// Refills served by a slab the thread already owned.
    warm_hits: LocalCounter,
    /// Refills that had to acquire a slab from the shared pool.
    warm_misses: LocalCounter,
    /// Overflow drains.
    drains: LocalCounter,
    /// Bytes of blocks moved from slabs into this cache.
    bytes_out: LocalCounter,
    /// Bytes of blocks this thread returned to slabs (locally or remotely).
    bytes_back: LocalCounter,
    /// Blocks freed onto another owner's (or a detached slab's) remote stack.
    remote_frees: LocalCounter,
    /// Batches of remote frees handed over (one atomic operation each).
    remote_batches: LocalCounter,
    /// Full slabs that came back to this thread through its inbox.
    inbox_slabs: LocalCounter,
    /// Slabs released to the shared pool.
    slabs_released: LocalCounter,
    /// Slabs this thread published for adoption (at exit, or remote frees into detached ones).
    slabs_published: LocalCounter,
    /// Blocks idle bins gave back to their slabs.
    gc_blocks: LocalCounter,
    /// Bytes of tiny blocks outside their slabs (in use by the program or held in thread
    /// caches): `bytes_out - bytes_back` over every cache, plus frees no cache saw. Filled by
    /// the allocator that owns the caches; zero once every block is freed and every cache
    /// flushed.
    bytes_held: Derived<u64>,
    /// Bytes of SuperSlabs the tier holds (live ones plus the cache). Filled by the owner.
    bytes_mapped: Derived<u64>,
}

/// The part of a thread cache other threads touch: its inbox (the owner identity written into
/// its slabs, where remote freers deliver full slabs that got blocks back) and its counters.
/// It lives outside the [`ThreadCache`], so that the owner's `&mut ThreadCache` never covers
/// memory another thread writes or reads; its address must not change while the cache owns
/// slabs.
#[derive(Debug)]
pub struct CacheShared {
    /// Where full slabs come back.
    pub inbox: Inbox,
    /// Counters.
    pub stats: FrontStats,
}

impl Default for CacheShared {
    fn default() -> Self {
        Self::new()
    }
}

impl CacheShared {
    hak_sync::maybe_const_fn! {
        /// An empty inbox and zero counters.
        pub fn new() -> CacheShared {
            CacheShared { inbox: Inbox::new(), stats: FrontStats::new() }
        }
    }
}

/// One entry of the remote-free stash: blocks of one foreign slab, waiting to be handed over
/// with one atomic operation. Kept as pointers here (the blocks are not written until the
/// hand-over packs them into a few carriers).
#[derive(Clone, Copy)]
struct Stash {
    slab: Option<SlabRef>,
    n: u32,
    max: u32,
    blocks: [*mut u8; STASH_MAX_BLOCKS],
}

const NO_STASH: Stash =
    Stash { slab: None, n: 0, max: 0, blocks: [ptr::null_mut(); STASH_MAX_BLOCKS] };

/// The slabs this cache owns for one class.
struct ClassSlabs {
    /// Slabs with free blocks (local, carvable or remote); refills take the front one.
    avail: SlabList,
    /// Slabs with no free block; armed, so a remote free brings them back via the inbox.
    full: SlabList,
    /// Slabs with no block in use, most recently emptied first (at most `warm_limit`).
    empty: SlabList,
}

const CLASS_SLABS: ClassSlabs = ClassSlabs {
    avail: SlabList::new(ON_AVAIL),
    full: SlabList::new(ON_FULL),
    empty: SlabList::new(ON_EMPTY),
};

/// The per-thread cache. See the crate docs for its invariants.
///
/// `#[repr(C)]` with the bin tops, capacities and the owner identity first, so the hot path
/// touches one or two cache lines of metadata plus the slot it pops or pushes.
#[repr(C)]
pub struct ThreadCache<'p> {
    tops: [u32; NUM_CLASSES],
    caps: [u32; NUM_CLASSES],
    /// The owner identity written into slabs (the shared part's inbox); null before
    /// activation, so a sentinel owns nothing.
    me: *const Inbox,
    shared: *const CacheShared,
    pool: &'p SharedPool<'p>,
    /// Empty slabs a class keeps for reuse, `1..=WARM_MAX`.
    warm_limit: u32,
    /// Slow-path events in this adaptation window, and the classes that had one.
    events: u32,
    active_mask: u64,
    /// Stash entries in use.
    stashed: u32,
    slots: [[*mut u8; BIN_MAX]; NUM_CLASSES],
    slabs: [ClassSlabs; NUM_CLASSES],
    stash: [Stash; STASH_SLOTS],
}

impl core::fmt::Debug for ThreadCache<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ThreadCache")
            .field("me", &self.me)
            .field("tops", &self.tops)
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

impl<'p> ThreadCache<'p> {
    /// An inactive cache (every capacity 0, no identity): every operation on it misses. This
    /// is what a sentinel is; [`ThreadCache::activate`] makes it a working cache.
    pub const fn new(pool: &'p SharedPool<'p>) -> ThreadCache<'p> {
        ThreadCache {
            tops: [0; NUM_CLASSES],
            caps: [0; NUM_CLASSES],
            me: ptr::null(),
            shared: ptr::null(),
            pool,
            warm_limit: 1,
            events: 0,
            active_mask: 0,
            stashed: 0,
            slots: [[ptr::null_mut(); BIN_MAX]; NUM_CLASSES],
            slabs: [CLASS_SLABS; NUM_CLASSES],
            stash: [NO_STASH; STASH_SLOTS],
        }
    }

    /// Builds an inactive cache in place, without a stack temporary (the struct holds
    /// [`BIN_MAX`] block pointers for each of the [`NUM_CLASSES`] classes, more than 84 KiB on
    /// 64-bit targets: too large for small thread stacks).
    ///
    /// # Safety
    /// `this` points to zeroed, writable memory of `size_of::<ThreadCache>()` bytes aligned for
    /// it (fresh pages from hak-os), which nobody else uses.
    pub unsafe fn init_in_place(this: *mut ThreadCache<'p>, pool: &'p SharedPool<'p>) {
        // SAFETY: zeroed memory is a valid inactive cache for every field but `pool` (a
        // reference must not be null), `warm_limit` and the list tags; write those.
        unsafe {
            ptr::addr_of_mut!((*this).pool).write(pool);
            ptr::addr_of_mut!((*this).warm_limit).write(1);
            ptr::addr_of_mut!((*this).slabs).write([CLASS_SLABS; NUM_CLASSES]);
        }
    }

    /// Turns an inactive cache into a working one owned by the calling thread: its identity
    /// becomes `shared`'s inbox, capacities start at their floors, and a class keeps up to
    /// `warm_limit` empty slabs for reuse (clamped to `1..=WARM_MAX`); more go back to the
    /// shared pool as they empty, and all of an idle class's go back at the next adaptation.
    ///
    /// The cache keeps `shared` as a raw pointer: `shared` must not move while the cache owns
    /// slabs. Its inbox's address is the owner identity written into every slab the cache
    /// takes, compared by [`ThreadCache::free_fast`] and delivered into by other threads, so a
    /// `CacheShared` that moved would leave slabs owned by a dangling address. Keep it where
    /// nothing moves it (a `static`; a field of a state in OS pages, as
    /// [`ThreadStates`](crate::ThreadStates) keeps it; a box that outlives the cache's slabs),
    /// never in a local that is returned or moved. The cache itself may move (nothing points
    /// into it).
    ///
    /// # Safety
    /// - `shared` stays at its address and valid until the cache owns no slab again (a
    ///   [`ThreadCache::flush`] gives every slab up), or for good if it is never flushed.
    /// - `shared` is used by no other active cache (one identity, one owner).
    /// - The cache is inactive, or flushed since it was last used: it owns no slab and holds no
    ///   block. Activating a flushed cache again (a recycled thread state) is fine.
    pub unsafe fn activate(&mut self, shared: *const CacheShared, warm_limit: usize) {
        self.shared = shared;
        // SAFETY: forwarded: `shared` is valid.
        self.me = unsafe { ptr::addr_of!((*shared).inbox) };
        self.warm_limit = warm_limit.clamp(1, WARM_MAX) as u32;
        for c in 0..NUM_CLASSES {
            self.caps[c] = floor(c);
        }
    }

    /// Whether [`ThreadCache::activate`] has run (a sentinel has not).
    #[inline]
    pub fn is_active(&self) -> bool {
        !self.me.is_null()
    }

    /// The shared part (inbox and counters) of an active cache.
    fn shared(&self) -> &CacheShared {
        hak_sync::check!(self.is_active());
        // SAFETY: set by `activate`, outlives the cache's use (contract there).
        unsafe { &*self.shared }
    }

    fn stats(&self) -> &FrontStats {
        &self.shared().stats
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
        hak_sync::check!(class < NUM_CLASSES);
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

    /// Frees `block` of `class` into the cache if its slab belongs to this cache and the bin
    /// has room; returns `false` otherwise (the caller takes a slow path).
    ///
    /// # Safety
    /// As for [`ThreadCache::pop`]; `block` is a live tiny block of `class` in a SuperSlab of
    /// `2^lg_size` bytes, which the caller gives up.
    #[inline(always)]
    pub unsafe fn free_fast(this: *mut Self, class: usize, block: *mut u8, lg_size: u32) -> bool {
        hak_sync::check!(class < NUM_CLASSES);
        // SAFETY: forwarded; the SuperSlab of a live block is mapped and formatted.
        unsafe {
            let slab = SsRef::from_block(block, lg_size).slab_of(block.addr());
            // Only our own slabs' blocks enter the bin (a sentinel owns nothing: its identity
            // is null, like a detached slab's owner, but its capacities are 0).
            if slab.owner() != *ptr::addr_of!((*this).me) {
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
        hak_sync::check!(self.is_active() && class < NUM_CLASSES);
        if !self.refill(class) {
            return None;
        }
        let t = self.tops[class] - 1;
        self.tops[class] = t;
        NonNull::new(self.slots[class][t as usize])
    }

    /// Frees `block` of `class` when [`ThreadCache::free_fast`] declined: drains the full bin
    /// and keeps the block if its slab is ours, or stashes a block of another owner's (or a
    /// detached) slab for a batched remote free.
    ///
    /// # Safety
    /// `block` is a live tiny block of `class` in a SuperSlab of this cache's pool.
    #[cold]
    pub unsafe fn free_slow(&mut self, class: usize, block: NonNull<u8>) {
        hak_sync::check!(self.is_active() && class < NUM_CLASSES);
        // SAFETY: a live block's SuperSlab is mapped.
        let slab = unsafe { self.slab_of(block.as_ptr()) };
        // SAFETY: as above.
        if unsafe { slab.owner() } == self.me {
            self.drain(class);
            let t = self.tops[class] as usize;
            self.slots[class][t] = block.as_ptr();
            self.tops[class] += 1;
        } else {
            // SAFETY: forwarded.
            unsafe { self.stash_remote(class, slab, block) };
        }
    }

    /// # Safety
    /// `block` lies in a mapped SuperSlab of this cache's pool.
    #[inline]
    unsafe fn slab_of(&self, block: *mut u8) -> SlabRef {
        // SAFETY: forwarded.
        unsafe { SsRef::from_block(block, self.pool.lg_size()).slab_of(block.addr()) }
    }

    /// Adds a block of a foreign slab to the stash, handing the slab's entry over when it is
    /// full or when another slab needs its place.
    ///
    /// # Safety
    /// `block` is a live block of `class` in `slab`, which this cache does not own.
    unsafe fn stash_remote(&mut self, class: usize, slab: SlabRef, block: NonNull<u8>) {
        {
            let st = self.stats();
            st.remote_frees.add(1);
            st.bytes_back.add(CLASS_SIZES[class] as u64);
        }
        // Slab records are 64 bytes apart and SuperSlabs 2 MiB-aligned: mix both in, so slab i
        // of one SuperSlab and slab i of the next do not keep evicting each other.
        let a = slab.as_ptr().addr();
        let i = ((a >> 6) ^ (a >> 21)) % STASH_SLOTS;
        if self.stash[i].slab != Some(slab) {
            if self.stash[i].slab.is_some() {
                self.flush_stash_entry(i);
            }
            let e = &mut self.stash[i];
            e.slab = Some(slab);
            e.n = 0;
            e.max = stash_max(class);
            self.stashed += 1;
        }
        let e = &mut self.stash[i];
        e.blocks[e.n as usize] = block.as_ptr();
        e.n += 1;
        if e.n >= e.max {
            self.flush_stash_entry(i);
        }
    }

    /// Hands stash entry `i` over to its slab with one atomic operation.
    fn flush_stash_entry(&mut self, i: usize) {
        let Some(slab) = self.stash[i].slab.take() else { return };
        let n = self.stash[i].n as usize;
        self.stashed -= 1;
        self.stats().remote_batches.add(1);
        // SAFETY: the entry holds `n` distinct live blocks of `slab` that this thread gave up;
        // their SuperSlab stays mapped while they are out (they count as used).
        if unsafe { slab.free_remote_batch(&self.stash[i].blocks[..n]) } == RemoteFree::Publish {
            self.stats().slabs_published.add(1);
            // SAFETY: the push told us to publish this detached slab, exactly once.
            unsafe { self.pool.publish(slab) };
        }
    }

    /// Hands every stash entry over. Runs on every slow path, so a batch waits at most until
    /// the thread next refills, drains or exits.
    pub fn flush_stash(&mut self) {
        if self.stashed == 0 {
            return;
        }
        for i in 0..STASH_SLOTS {
            if self.stash[i].slab.is_some() {
                self.flush_stash_entry(i);
            }
        }
    }

    /// Counts a slow-path event of `class`; every `GC_PERIOD` events, bins of classes that had
    /// none in the window give half their blocks back and halve their capacity.
    fn note_event(&mut self, class: usize) {
        self.active_mask |= 1u64 << class;
        self.events += 1;
        // A due purge runs from here too, so a thread that keeps allocating a little keeps
        // giving back memory that stays unused (a relaxed load, or a clock read while slabs
        // wait for their purge: every 32 events, so churn does not pay it each time).
        if self.events.is_multiple_of(32) {
            self.pool.maybe_purge();
        }
        if self.events >= GC_PERIOD {
            self.gc();
        }
    }

    fn gc(&mut self) {
        let idle = !self.active_mask;
        self.events = 0;
        self.active_mask = 0;
        for c in 0..NUM_CLASSES {
            if idle & (1u64 << c) == 0 {
                continue;
            }
            self.caps[c] = (self.caps[c] / 2).max(floor(c));
            let top = self.tops[c] as usize;
            if top == 0 {
                continue;
            }
            let k = top.div_ceil(2);
            self.stats().gc_blocks.add(k as u64);
            self.return_oldest(c, k, true);
        }
        for c in 0..NUM_CLASSES {
            if idle & (1u64 << c) == 0 {
                continue;
            }
            // SAFETY: listed slabs are ours, empty and disarmed.
            while let Some(s) = unsafe { self.slabs[c].empty.pop_back() } {
                self.stats().slabs_released.add(1);
                // SAFETY: as above; off every list.
                unsafe { self.pool.release(s) };
            }
        }
    }

    /// Moves up to half a bin of blocks from the class's slabs (acquiring one when it has
    /// none with free blocks) into the bin of `class`, growing its capacity towards the
    /// ceiling. `false` if no block could be had.
    fn refill(&mut self, class: usize) -> bool {
        self.stats().refills.add(1);
        self.flush_stash();
        self.note_event(class);
        self.caps[class] = (self.caps[class] * 2).min(ceiling(class));
        let top = self.tops[class] as usize;
        let want = (self.caps[class] as usize / 2).max(1).min(BIN_MAX - top);
        let mut acquired = false;
        loop {
            let Some(slab) = self.slabs[class].avail.head() else {
                // SAFETY: the shared part is ours.
                if !self.shared().inbox.is_empty() {
                    self.drain_inbox();
                    continue;
                }
                // SAFETY: listed slabs are ours.
                if let Some(e) = unsafe { self.slabs[class].empty.pop_front() } {
                    // SAFETY: as above; off every list now.
                    unsafe { self.slabs[class].avail.push_front(e) };
                    continue;
                }
                if acquired || !self.acquire(class) {
                    return false;
                }
                acquired = true;
                continue;
            };
            // SAFETY: we own the slab (it is on our list) and its SuperSlab is mapped.
            unsafe {
                if !slab.has_local() {
                    slab.collect_remote();
                }
                let n = slab.alloc_batch(&mut self.slots[class][top..top + want]);
                if n > 0 {
                    self.tops[class] = (top + n) as u32;
                    self.stats().bytes_out.add((n * CLASS_SIZES[class] as usize) as u64);
                    if !acquired {
                        self.stats().warm_hits.add(1);
                    }
                    return true;
                }
                // Nothing local, nothing remote: the slab is full. Keep it, armed, on the full
                // list: the first block freed into it by another thread brings it back through
                // the inbox; our own frees bring it back in `drain`.
                self.slabs[class].avail.remove(slab);
                if slab.mark_full() {
                    self.slabs[class].full.push_front(slab);
                } else {
                    // A remote free raced in (collect it next round), or the delivery of the
                    // slab's previous life is finishing (wait for it).
                    if !slab.has_remote() {
                        hak_sync::thread::yield_now();
                    }
                    self.slabs[class].avail.push_front(slab);
                }
            }
        }
    }

    /// Acquires a slab of `class` from the shared pool onto the avail list.
    #[cold]
    fn acquire(&mut self, class: usize) -> bool {
        self.stats().warm_misses.add(1);
        // SAFETY: `me` is the inbox of our shared part, which outlives our slabs in place
        // (`activate`'s contract).
        let Some(a) = (unsafe { self.pool.acquire(class, CLASS_SIZES[class], self.me) }) else {
            return false;
        };
        // SAFETY: the pool handed it to us.
        unsafe { self.slabs[class].avail.push_front(a.slab) };
        true
    }

    /// Moves every slab delivered to the inbox from its full list to its avail list. Each one
    /// is disarmed first, which waits until its deliverer has let go of it (it clears
    /// `DELIVERING` after the push that put the slab here): until then the slab must not be
    /// released, since the deliverer still writes its record.
    fn drain_inbox(&mut self) {
        // SAFETY: the shared part is ours; delivered slabs are ours and on our full lists.
        let slabs = self.shared().inbox.take();
        let mut n = 0;
        for s in slabs {
            // SAFETY: as above.
            unsafe {
                let c = s.class() as usize;
                hak_sync::check!(s.tag() == ON_FULL, "inbox slab not on a full list");
                let _ = s.retract_full();
                self.slabs[c].full.remove(s);
                self.slabs[c].avail.push_front(s);
            }
            n += 1;
        }
        self.stats().inbox_slabs.add(n);
    }

    /// Repairs the cache in a child process right after `fork()`: a delivery another thread of
    /// the parent had under way stopped half-way (that thread does not exist here), leaving a
    /// slab marked `DELIVERING` for ever, and it may or may not have reached the inbox. Every
    /// full slab's stale mark is cleared, the inbox drained, and the rest of the full slabs
    /// disarmed and made available again (a refill re-arms those still full).
    ///
    /// # Safety
    /// Called in a forked child, before anything else uses this cache there, by the thread
    /// that owns it (the only thread the child has).
    pub unsafe fn after_fork_in_child(&mut self) {
        if !self.is_active() {
            return;
        }
        for c in 0..NUM_CLASSES {
            let mut s = self.slabs[c].full.head();
            while let Some(slab) = s {
                // SAFETY: listed slabs are ours; no other thread exists to deliver.
                unsafe {
                    s = self.slabs[c].full.next(slab);
                    slab.forget_delivery();
                }
            }
        }
        self.drain_inbox();
        for c in 0..NUM_CLASSES {
            // SAFETY: listed slabs are ours, nobody delivers any more.
            while let Some(slab) = unsafe { self.slabs[c].full.pop_front() } {
                // SAFETY: as above.
                unsafe {
                    let _ = slab.retract_full();
                    self.slabs[c].avail.push_front(slab);
                }
            }
        }
    }

    /// Returns the older half of a full bin to its slabs.
    fn drain(&mut self, class: usize) {
        self.stats().drains.add(1);
        self.flush_stash();
        self.note_event(class);
        let top = self.tops[class] as usize;
        let k = (top / 2).max(1).min(top);
        self.return_oldest(class, k, true);
    }

    /// Gives the `k` oldest blocks of a bin back to their slabs (each run of blocks of one
    /// slab as one batch) and shifts the rest down. Slabs that empty are released if
    /// `release_empty` and the class keeps enough others.
    fn return_oldest(&mut self, class: usize, k: usize, release_empty: bool) {
        let top = self.tops[class] as usize;
        hak_sync::check!(k <= top);
        let mut j = 0;
        while j < k {
            let first = j;
            // SAFETY: blocks in a bin are live blocks of our slabs.
            let slab = unsafe { self.slab_of(self.slots[class][j]) };
            j += 1;
            // SAFETY: as above.
            while j < k && unsafe { self.slab_of(self.slots[class][j]) } == slab {
                j += 1;
            }
            // SAFETY: a run of distinct live blocks of `slab`, which we own.
            unsafe { self.give_back(class, slab, first, j, release_empty) };
        }
        self.slots[class].copy_within(k..top, 0);
        self.tops[class] = (top - k) as u32;
    }

    /// Returns a run of blocks to their slab, which we own: a full slab becomes available
    /// again, and one that empties (if `release_empty`) moves to the class's empty list, or
    /// back to the pool if that list already holds `warm_limit` slabs.
    ///
    /// # Safety
    /// `slots[class][from..to]` holds distinct live blocks of `slab`, which we own.
    unsafe fn give_back(
        &mut self,
        class: usize,
        slab: SlabRef,
        from: usize,
        to: usize,
        release_empty: bool,
    ) {
        // SAFETY: forwarded.
        unsafe {
            hak_sync::check!(slab.owner() == self.me, "a bin block of a slab we do not own");
            let n = (to - from) as u64;
            self.stats().bytes_back.add(n * CLASS_SIZES[class] as u64);
            let used = slab.free_local_batch(&self.slots[class][from..to]);
            if slab.tag() == ON_FULL {
                match slab.retract_full() {
                    Retract::Retracted => {
                        self.slabs[class].full.remove(slab);
                        self.slabs[class].avail.push_front(slab);
                    }
                    // A remote freer delivered it: the inbox holds it (and maybe others).
                    Retract::Delivered => self.drain_inbox(),
                }
            }
            if used == 0 && release_empty {
                self.slabs[class].avail.remove(slab);
                if self.slabs[class].empty.len() >= self.warm_limit as usize {
                    self.stats().slabs_released.add(1);
                    self.pool.release(slab);
                } else {
                    self.slabs[class].empty.push_front(slab);
                }
            }
        }
    }

    /// Returns every cached block and gives up every slab: empty ones to the shared pool,
    /// ones with free blocks published for adoption, full ones detached (the first block freed
    /// back publishes them). Capacities go back to their floors. Used at thread exit and by
    /// `flush_thread_cache()`; afterwards the cache owns nothing and may be reused (by this or
    /// another thread, with the same shared part).
    pub fn flush(&mut self) {
        if !self.is_active() {
            return;
        }
        self.flush_stash();
        for class in 0..NUM_CLASSES {
            let top = self.tops[class] as usize;
            if top > 0 {
                self.return_oldest(class, top, false);
            }
            self.caps[class] = floor(class);
        }
        // Disarm every full slab; afterwards no delivery is in flight, so the inbox is final.
        for class in 0..NUM_CLASSES {
            let mut s = self.slabs[class].full.head();
            while let Some(slab) = s {
                // SAFETY: listed slabs are ours.
                unsafe {
                    s = self.slabs[class].full.next(slab);
                    let _ = slab.retract_full();
                }
            }
        }
        self.drain_inbox();
        for class in 0..NUM_CLASSES {
            loop {
                // SAFETY: listed slabs are ours.
                let s = unsafe {
                    let l = &mut self.slabs[class];
                    match l.avail.pop_front() {
                        Some(s) => s,
                        None => match l.full.pop_front() {
                            Some(s) => s,
                            None => match l.empty.pop_front() {
                                Some(s) => s,
                                None => break,
                            },
                        },
                    }
                };
                // SAFETY: ours, disarmed, off every list.
                unsafe { self.give_up(s) };
            }
        }
        self.events = 0;
        self.active_mask = 0;
    }

    /// Ends this cache's ownership of a slab it no longer lists.
    ///
    /// # Safety
    /// The cache owns `slab`, has disarmed it and taken it off its lists.
    unsafe fn give_up(&mut self, slab: SlabRef) {
        // SAFETY: owned until the end of this function.
        unsafe {
            loop {
                slab.collect_remote();
                if slab.is_empty() {
                    self.stats().slabs_released.add(1);
                    self.pool.release(slab);
                    return;
                }
                if slab.has_local() {
                    slab.disown();
                    self.stats().slabs_published.add(1);
                    self.pool.publish(slab);
                    return;
                }
                if slab.try_detach() {
                    return;
                }
                // A remote free raced in: collect it and decide again (yielding, in case it is
                // a delivery of the slab's past that is finishing).
                hak_sync::thread::yield_now();
            }
        }
    }

    /// Checks the cache's invariants: every listed slab is owned by it, carries its list's
    /// tag, and serves its class; the inbox holds only slabs on full lists; every bin block
    /// belongs to an owned slab. For tests: walks everything.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        for c in 0..NUM_CLASSES {
            if self.tops[c] > self.caps[c] || self.caps[c] as usize > BIN_MAX {
                return Err("bin top above capacity");
            }
            let l = &self.slabs[c];
            for (list, tag) in [(&l.avail, ON_AVAIL), (&l.full, ON_FULL), (&l.empty, ON_EMPTY)] {
                let mut s = list.head();
                let mut n = 0;
                while let Some(slab) = s {
                    // SAFETY: listed slabs are ours and mapped.
                    unsafe {
                        if slab.owner() != self.me {
                            return Err("a listed slab is not owned by this cache");
                        }
                        if slab.tag() != tag || slab.class() as usize != c {
                            return Err("a slab on the wrong list");
                        }
                        if tag == ON_EMPTY && !slab.is_empty() {
                            return Err("a slab with blocks in use on the empty list");
                        }
                        s = list.next(slab);
                    }
                    n += 1;
                }
                if n != list.len() {
                    return Err("list length disagrees with its links");
                }
            }
            for &b in &self.slots[c][..self.tops[c] as usize] {
                // SAFETY: bin blocks lie in mapped SuperSlabs.
                let s = unsafe { self.slab_of(b) };
                // SAFETY: as above.
                if unsafe { s.owner() } != self.me || unsafe { s.tag() } == ON_NONE {
                    return Err("a bin block of a slab this cache does not list");
                }
            }
        }
        Ok(())
    }
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
    unsafe {
        let slab = SsRef::from_block(block.as_ptr(), pool.lg_size()).slab_of(block.as_ptr().addr());
        let size = slab.block_size() as usize;
        if slab.free_remote(block) == RemoteFree::Publish {
            pool.publish(slab);
        }
        size
    }
}

// SAFETY: a cache is moved between threads only as a whole (pooled for reuse after flush);
// its raw pointers refer to pool memory that outlives it.
unsafe impl Send for ThreadCache<'_> {}
