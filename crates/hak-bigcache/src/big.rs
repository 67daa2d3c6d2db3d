//! [`BigCache`]: the big tier's operations (alloc, dealloc, realloc, usable size, ownership,
//! trim, stats) over one OS mapping per block, with freed mappings kept in the cache.
//!
//! Who calls it: the facade, for requests above 1 MiB and for alignments the other tiers cannot
//! serve, and for frees whose registry owner is `Big`.
//!
//! Locking: one `hak_sync::Mutex` guards [`Inner`]. Syscalls (map, unmap of victims, decommit,
//! mremap, copying) happen outside it, except the unmap of a bucket array the table has finished
//! migrating away from (once per doubling). Registry *unregistration* of a block always happens
//! under the lock, and so does every header read of a block the caller does not own (dealloc,
//! realloc and owns validate under it), so a validated header is never unmapped underneath.

use core::ptr::{self, NonNull};

use hak_os::Os;
use hak_registry::{OwnerKind, Registry, GRANULE};
use hak_sync::stat::{GaugeValue, StatCounter, StatGauge};
use hak_sync::{Mutex, MutexGuard};

use crate::cache::{BigLimits, Inner, GROW_FROM_MIN, HUGE_PAGE};
use crate::header::{layout_for, Header, FREEING, LIVE};

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

/// Counters and occupancy of a [`BigCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BigStats {
    /// Allocations served from the cache.
    pub hits: u64,
    /// Allocations that had to map (including those the OS then refused).
    pub misses: u64,
    /// Allocations served by moving the pages of smaller cached blocks into one larger
    /// mapping (neither hits nor misses).
    pub grown: u64,
    /// Cached blocks split for a smaller request; the tail stayed cached.
    pub splits: u64,
    /// Blocks unmapped by the cache: evicted by a limit, trimmed, or too big to keep.
    pub evictions: u64,
    /// Doublings of the hash table.
    pub resizes: u64,
    /// Buckets in the hash table now (0 before the first cached block).
    pub buckets: u64,
    /// Blocks cached now.
    pub cached_entries: u64,
    /// Bytes of mappings cached now.
    pub cached_bytes: u64,
    /// Bytes of mappings held by live blocks (current, peak, total).
    pub live_bytes: GaugeValue,
    /// Live blocks (current, peak, total).
    pub live_blocks: GaugeValue,
    /// Reallocs served inside the block's mapping (including shrinks that unmap the tail).
    pub realloc_in_place: u64,
    /// Reallocs served by `mremap`.
    pub realloc_remap: u64,
    /// Reallocs served by mapping a new block and copying.
    pub realloc_copy: u64,
    /// Cached blocks decommitted on their way into the cache.
    pub decommits: u64,
    /// Pointers refused by `dealloc` or `realloc` (double frees included).
    pub invalid_frees: u64,
    /// Blocks `realloc` had to hand out unregistered because the OS refused every way to keep
    /// them registered after an `mremap` had already moved them (see [`BigCache::realloc`]).
    pub orphans: u64,
}

/// Largest mapping `realloc` grows by copying into a cached block rather than by `mremap`
/// (4 MiB): below it the copy costs less than faulting in fresh pages.
pub const REALLOC_COPY_MAX: usize = 4 << 20;

/// The big tier. See the crate docs for the layout, invariants and concurrency contract.
/// One `BigCache` per registry: it assumes every `Big` owner in the registry is its own.
pub struct BigCache<'r> {
    /// The registry blocks are registered in; its `Os` maps them.
    registry: &'r Registry<'r>,
    /// The cache: table, LRU list, accounting, limits.
    inner: Mutex<Inner>,
    hits: StatCounter,
    misses: StatCounter,
    evictions: StatCounter,
    realloc_in_place: StatCounter,
    realloc_remap: StatCounter,
    realloc_copy: StatCounter,
    decommits: StatCounter,
    invalid_frees: StatCounter,
    orphans: StatCounter,
    grown: StatCounter,
    live_bytes: StatGauge,
    live_blocks: StatGauge,
}

impl core::fmt::Debug for BigCache<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BigCache").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

// SAFETY: the raw header pointers inside `Inner` are only followed under the mutex, and the
// blocks they point to belong to the cache while listed.
unsafe impl Send for BigCache<'_> {}
// SAFETY: as above; everything else is atomics.
unsafe impl Sync for BigCache<'_> {}

/// [`layout_for`], with mappings of a huge page or more rounded up to whole huge pages: the
/// kernel backs an advised range with huge pages only where it covers whole aligned 2 MiB
/// units, so a block ending inside one would fault its last unit in 4 KiB at a time, and every
/// block that `mremap` grows from it would have to split the moved huge pages.
#[inline]
fn block_layout(size: usize, align: usize, page: usize) -> Option<(usize, usize)> {
    let (user_off, need) = layout_for(size, align, page)?;
    if need < HUGE_PAGE {
        return Some((user_off, need));
    }
    let need = need.checked_next_multiple_of(HUGE_PAGE)?;
    (need <= isize::MAX as usize).then_some((user_off, need))
}

#[inline]
fn nn(addr: usize) -> NonNull<u8> {
    debug_assert!(addr != 0);
    // SAFETY: callers pass addresses inside mappings, which are never null.
    unsafe { NonNull::new_unchecked(addr as *mut u8) }
}

impl<'r> BigCache<'r> {
    hak_sync::maybe_const_fn! {
        /// An empty big tier over `registry` (whose `Os` maps the blocks) with `limits`.
        /// Maps nothing until used.
        pub fn new(registry: &'r Registry<'r>, limits: BigLimits) -> BigCache<'r> {
            BigCache {
                registry,
                inner: Mutex::new(Inner::new(limits)),
                hits: StatCounter::new(),
                misses: StatCounter::new(),
                evictions: StatCounter::new(),
                realloc_in_place: StatCounter::new(),
                realloc_remap: StatCounter::new(),
                realloc_copy: StatCounter::new(),
                decommits: StatCounter::new(),
                invalid_frees: StatCounter::new(),
                orphans: StatCounter::new(),
                grown: StatCounter::new(),
                live_bytes: StatGauge::new(),
                live_blocks: StatGauge::new(),
            }
        }
    }

    #[inline]
    fn os(&self) -> &'r Os {
        self.registry.os()
    }

    /// Replaces the limits and evicts whatever the new ones exclude.
    pub fn set_limits(&self, limits: BigLimits) {
        let victims = {
            let mut g = self.inner.lock();
            g.limits = limits;
            g.evict(self.registry, hak_os::monotonic_ns())
        };
        self.release(victims);
    }

    /// The limits in force.
    pub fn limits(&self) -> BigLimits {
        self.inner.lock().limits
    }

    /// Allocates `size` bytes aligned to `align` (a power of two; any value, including above
    /// 1 MiB). Returns the block and whether it is known to be zero-filled (true only for a
    /// fresh mapping, so the caller can skip a memset for `alloc_zeroed`). `None` if `align` is
    /// not a power of two, the size overflows, or the OS refuses; a later call works again
    /// once the OS does. `size == 0` is served as 1.
    pub fn alloc(&self, size: usize, align: usize) -> Option<(NonNull<u8>, bool)> {
        if !align.is_power_of_two() {
            return None;
        }
        let (user_off, need) = block_layout(size, align, hak_os::page_size())?;
        if let Some(h) = self.cache_take((need, align), (user_off, size), hak_os::monotonic_ns()) {
            // SAFETY: `h` came out of the cache LIVE: the block is ours alone.
            let map_len = unsafe { (*h).map_len };
            self.hits.add(1);
            self.live_bytes.increase(map_len as u64);
            self.live_blocks.increase(1);
            return Some((nn(h as usize + user_off), false));
        }
        if user_off == hak_os::page_size() && need > GROW_FROM_MIN {
            if let Some(base) = self.gather(need, size) {
                return Some((nn(base + user_off), false));
            }
        }
        self.misses.add(1);
        let base = self.map_block(need, user_off, size)?;
        Some((nn(base + user_off), true))
    }

    /// Serves a request no cached block holds by gathering smaller committed cached blocks:
    /// their pages move (`mremap` to a fixed address, no copy, no fault) side by side into a
    /// fresh mapping of `need` bytes, largest first, and only the rest of it faults in. Where a
    /// fresh mapping would fault in everything while the cached blocks sat unused until
    /// evicted, this keeps the resident memory in use. Returns the new block's base, or `None`
    /// if nothing suitable is cached or the OS refused.
    ///
    /// The result is `multi_map`. A `multi_map` piece is taken only for a huge request and
    /// only if 2 MiB-aligned: its mapping boundaries then all lie on 2 MiB boundaries (pieces
    /// of huge requests are whole 2 MiB multiples placed at 2 MiB offsets), so it moves one
    /// 2 MiB window, that is one mapping, per call, which every kernel allows. If any move fails, the kernel may already have
    /// unmapped that piece's place in the new mapping, so the new mapping is given up whole
    /// (with the pieces moved into it, which held nothing anyone needs) and the remaining
    /// pieces are unmapped; the caller then maps a fresh block.
    fn gather(&self, need: usize, size: usize) -> Option<usize> {
        let page = hak_os::page_size();
        let (pieces, _, victims) =
            self.inner.lock().take_pieces(self.registry, need, hak_os::monotonic_ns());
        self.release(victims);
        if pieces.is_null() {
            return None;
        }
        let os = self.os();
        let huge = need >= HUGE_PAGE;
        let Ok(dst) = os.map(need, if huge { HUGE_PAGE } else { GRANULE }) else {
            self.release(pieces);
            return None;
        };
        if huge {
            // Before the moves: advice on the whole range would otherwise have to cover the
            // moved pieces' mappings one by one. Pieces keep their own (huge, if they were).
            // SAFETY: our fresh mapping; advice changes no contents.
            let _ = unsafe { os.advise_huge(dst, need, true) };
        }
        let (mut off, mut moved) = (0, 0);
        let mut p = pieces;
        while let Some(v) = NonNull::new(p) {
            // SAFETY: the pieces left the cache unregistered: ours alone.
            let (next, len, multi) = unsafe { ((*p).lru_next, (*p).map_len, (*p).multi_map) };
            debug_assert!(off + len <= need);
            // A single-mapping piece moves in one call; a gathered one (huge, 2 MiB-aligned,
            // see `take_pieces`) one 2 MiB window at a time, each inside one of its mappings.
            let step = if multi { HUGE_PAGE } else { len };
            let mut done = 0;
            while done < len {
                let n = step.min(len - done);
                let (from, to) = (v.as_ptr() as usize + done, dst.as_ptr() as usize + off + done);
                // SAFETY: `[from, from+n)` lies in one mapping of a block of ours, given up;
                // `[to, to+n)` lies in our fresh mapping and is replaced; they do not overlap.
                if unsafe { os.remap_to(nn(from), n, nn(to), n) }.is_err() {
                    // The rest of the piece is still in place, but its slot in `dst` may be a
                    // hole now: give up `dst` (with what moved into it), the rest of this
                    // piece, and every piece not yet moved.
                    // SAFETY: all ours, unregistered, and holding no one's data.
                    unsafe {
                        let _ = os.unmap(dst, need);
                        let _ = os.unmap(nn(from), len - done);
                    }
                    self.evictions.add(moved + 1);
                    self.release(next);
                    return None;
                }
                done += n;
            }
            off += len;
            moved += 1;
            p = next;
        }
        // SAFETY: `dst` is ours, page-aligned, at least a page.
        unsafe {
            Header::init(dst.as_ptr(), need, page, size);
            (*dst.as_ptr().cast::<Header>()).multi_map = true;
        }
        if self.registry.register(dst, need, OwnerKind::Big).is_err() {
            // SAFETY: never published.
            let _ = unsafe { os.unmap(dst, need) };
            return None;
        }
        self.grown.add(1);
        self.live_bytes.increase(need as u64);
        self.live_blocks.increase(1);
        Some(dst.as_ptr() as usize)
    }

    /// Maps, initialises and registers a fresh LIVE block; returns its base.
    fn map_block(&self, need: usize, user_off: usize, size: usize) -> Option<usize> {
        let os = self.os();
        // Blocks of a huge page or more are aligned to one and advised for transparent huge
        // pages: first touch then faults 2 MiB at a time instead of 4 KiB (the kernel in
        // `madvise` THP mode only does this when asked).
        let huge = need >= HUGE_PAGE;
        let align = if huge { HUGE_PAGE.max(user_off) } else { GRANULE.max(user_off) };
        let base = os.map(need, align).ok()?;
        if huge {
            // SAFETY: the whole fresh mapping is ours; advice changes no contents.
            let _ = unsafe { os.advise_huge(base, need, true) };
        }
        // SAFETY: a fresh mapping of `need >= page` bytes, page-aligned, ours alone.
        unsafe { Header::init(base.as_ptr(), need, user_off, size) };
        if self.registry.register(base, need, OwnerKind::Big).is_err() {
            // SAFETY: never published; nobody else can reach it.
            let _ = unsafe { os.unmap(base, need) };
            return None;
        }
        self.live_bytes.increase(need as u64);
        self.live_blocks.increase(1);
        Some(base.as_ptr() as usize)
    }

    /// The cache half of `alloc`: takes a cached block fitting `(need, align)` and makes it
    /// LIVE with `(user_off, size)`, evicting expired ones on the way.
    pub(crate) fn cache_take(
        &self,
        fit: (usize, usize),
        block: (usize, usize),
        now: u64,
    ) -> Option<*mut Header> {
        let mut g = self.inner.lock();
        g.live = self.live_bytes.get().current as usize;
        let (found, victims) = g.take(self.registry, fit, block, now);
        drop(g);
        self.release(victims);
        found
    }

    /// The cache half of `dealloc`: caches a validated block (LIVE or FREEING, owned by the
    /// caller), evicting what the limits exclude.
    ///
    /// # Safety
    /// As [`Inner::put`]: `h` heads a mapped block registered as `Big` that nobody else uses.
    #[cfg(all(test, hak_loom))]
    pub(crate) unsafe fn cache_put(&self, h: *mut Header, now: u64) {
        // SAFETY: forwarded.
        unsafe { self.cache_put_locked(self.inner.lock(), h, now) }
    }

    /// [`BigCache::cache_put`] with the lock already held (dealloc validates under it).
    ///
    /// # Safety
    /// As [`Inner::put`].
    unsafe fn cache_put_locked(&self, mut g: MutexGuard<'_, Inner>, h: *mut Header, now: u64) {
        // SAFETY: forwarded.
        let victims = unsafe { g.put(self.registry, h, now) };
        drop(g);
        self.release(victims);
    }

    /// Frees a big block: it goes into the cache (still mapped and registered), or is unmapped
    /// if the limits cannot hold it. Any pointer is checked first: one that is not the user
    /// pointer of a live big block is refused with a [`FreeError`] and nothing changes.
    ///
    /// # Safety
    /// If `ptr` is a live big block, nobody uses it after this call. (Pointers that are not
    /// are detected, except one whose block was freed and whose address was since handed out
    /// again: that frees the new block, as in every allocator.)
    pub unsafe fn dealloc(&self, ptr: NonNull<u8>) -> Result<(), FreeError> {
        let now = hak_os::monotonic_ns();
        let mut g = self.inner.lock();
        let h = self.validate(ptr.as_ptr() as usize)?;
        // Header fields are accessed through `h` under the lock only: while the lock is
        // dropped below, a racing second free reads this header to refuse itself.
        // SAFETY: validated under the lock: a LIVE header the caller gives up.
        let len = unsafe { (*h).map_len };
        self.live_bytes.decrease(len as u64);
        self.live_blocks.decrease(1);
        let page = hak_os::page_size();
        g.live = self.live_bytes.get().current as usize;
        let caching = g.limits.max_entries > 0 && len <= g.cap();
        if caching && len > page && g.wants_decommit(len) {
            // Decommit outside the lock; FREEING makes a racing second free a double free.
            // SAFETY: as above.
            unsafe { (*h).state = FREEING };
            drop(g);
            // SAFETY: the pages past the header page are the user's, who gave them up.
            let r = unsafe { self.os().decommit(nn(h as usize + page), len - page) };
            if r.is_ok() {
                self.decommits.add(1);
            }
            g = self.inner.lock();
            // SAFETY: as above (FREEING: nobody else writes it).
            unsafe { (*h).decommitted = r.is_ok() };
        } else {
            // SAFETY: as above.
            unsafe { (*h).decommitted = false };
        }
        // SAFETY: validated block, registered as Big at its base, ours until cached.
        unsafe { self.cache_put_locked(g, h, now) };
        Ok(())
    }

    /// Checks that `addr` is the user pointer of a LIVE big block and returns its header.
    /// Must be called with the cache lock held (see the module docs); counts refusals.
    fn validate(&self, addr: usize) -> Result<*mut Header, FreeError> {
        let r = self.validate_inner(addr);
        if r.is_err() {
            self.invalid_frees.add(1);
        }
        r
    }

    fn validate_inner(&self, addr: usize) -> Result<*mut Header, FreeError> {
        let owner = self.registry.lookup(addr).ok_or(FreeError::NotOwned)?;
        if owner.kind != OwnerKind::Big {
            return Err(FreeError::NotOwned);
        }
        let h = owner.base.as_ptr().cast::<Header>();
        // SAFETY: a registered Big region is mapped with its header at the base, and it stays
        // mapped while we hold the lock (eviction unregisters under the lock).
        let hr = unsafe { &*h };
        if !hr.magic_ok() {
            return Err(FreeError::Corrupt);
        }
        if owner.base.as_ptr() as usize + hr.user_off != addr {
            return Err(FreeError::NotBlockStart);
        }
        if hr.state != LIVE {
            return Err(FreeError::DoubleFree);
        }
        Ok(h)
    }

    /// Resizes a live big block to `new_size` bytes, keeping its alignment and its first
    /// `min(usable, new_size)` bytes. Returns the (possibly moved) block, or `None` with the old block
    /// untouched and still valid (invalid pointer, overflow, or OS refusal).
    ///
    /// Strategy: if the mapping already holds `new_size`, the block stays (a shrink to at most
    /// half the mapping unmaps the tail); else, for blocks of at most [`REALLOC_COPY_MAX`], a
    /// cached block of the new size if there is one (copy); else, for alignments up to a
    /// page and a block that is one kernel mapping (not gathered, see the crate docs), its
    /// pages move (`mremap` to a fixed address) into a fresh granule-aligned mapping
    /// of the new size (the block is unregistered before and registered again at its new
    /// base after); for larger alignments, or if that fails: map a new block, copy, and free
    /// the old one into the cache.
    ///
    /// Orphans: if the registry refuses to register the moved block (its leaf pages could not
    /// be mapped) and the OS then refuses a new block too, the old address is already gone, so
    /// the moved block is returned unregistered: its contents and alignment are right, but
    /// [`BigCache::dealloc`] will refuse it (`NotOwned`) and its mapping leaks. Counted in
    /// [`BigStats::orphans`]; it needs the OS to fail right after succeeding.
    ///
    /// # Safety
    /// `ptr` is a live block of this cache owned by the caller, not used concurrently; on
    /// `Some` only the returned pointer may be used.
    pub unsafe fn realloc(&self, ptr: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        let addr = ptr.as_ptr() as usize;
        let page = hak_os::page_size();
        let mut g = self.inner.lock();
        let h = self.validate(addr).ok()?;
        let base = h as usize;
        // SAFETY: validated LIVE block, owned by the caller.
        let (map_len, user_off, multi_map) =
            unsafe { ((*h).map_len, (*h).user_off, (*h).multi_map) };
        let (_, need) = block_layout(new_size, user_off, page)?;
        if need <= map_len {
            if need <= map_len / 2 {
                // Shrink: release the tail's granules (under the lock), then its pages.
                self.registry.unregister(nn(base), map_len);
                if self.registry.register(nn(base), need, OwnerKind::Big).is_ok() {
                    // SAFETY: our block.
                    unsafe { (*h).map_len = need };
                    drop(g);
                    // SAFETY: the tail is the caller's and unused past `need`; its granules
                    // are no longer registered.
                    let _ = unsafe { self.os().unmap(nn(base + need), map_len - need) };
                    self.live_bytes.decrease((map_len - need) as u64);
                } else {
                    // Cannot happen (the leaves exist); keep the whole mapping registered.
                    let _ = self.registry.register(nn(base), map_len, OwnerKind::Big);
                }
            }
            // SAFETY: our block.
            unsafe { (*h).size = new_size };
            self.realloc_in_place.add(1);
            return Some(ptr);
        }
        if map_len <= REALLOC_COPY_MAX {
            // A cached block of the new size is resident memory: copying up to a few MiB into
            // it costs less than the page faults of the fresh pages `mremap` would add.
            drop(g);
            let now = hak_os::monotonic_ns();
            if let Some(nh) = self.cache_take((need, user_off), (user_off, new_size), now) {
                self.hits.add(1);
                // SAFETY: `nh` came out of the cache LIVE and is ours alone.
                self.live_bytes.increase(unsafe { (*nh).map_len } as u64);
                self.live_blocks.increase(1);
                let np = nn(nh as usize + user_off);
                // SAFETY: distinct blocks; the old one holds `map_len - user_off` usable bytes,
                // the new one room for `new_size`, which is more.
                unsafe { ptr::copy_nonoverlapping(ptr.as_ptr(), np.as_ptr(), map_len - user_off) };
                self.realloc_copy.add(1);
                // SAFETY: the old block is a live block of ours that nobody will use again.
                let _ = unsafe { self.dealloc(ptr) };
                return Some(np);
            }
            g = self.inner.lock();
        }
        if user_off == page && !multi_map {
            self.registry.unregister(nn(base), map_len);
            drop(g);
            let os = self.os();
            let huge = need >= HUGE_PAGE;
            if let Ok(dst) = os.map(need, if huge { HUGE_PAGE } else { GRANULE }) {
                if huge {
                    // SAFETY: our fresh mapping; advice changes no contents.
                    let _ = unsafe { os.advise_huge(dst, need, true) };
                }
                // Same length: the rest of `dst` stays a fresh part of its own mapping. The
                // block is one mapping (not `multi_map`), so a failed move leaves it in place.
                // SAFETY: the block is ours and nobody else uses it; `dst` is a fresh mapping
                // of ours; distinct mappings do not overlap.
                if unsafe { os.remap_to(nn(base), map_len, dst, map_len) }.is_ok() {
                    // SAFETY: the old range is gone; `dst` holds the block with its header.
                    return Some(unsafe { self.adopt_remapped(dst, map_len, need, new_size) });
                }
                // Part of `dst` may already be unmapped by the failed move: all of it goes.
                // SAFETY: fresh, never published.
                let _ = unsafe { os.unmap(dst, need) };
            }
            // Untouched: register it again (its granules are still ours).
            g = self.inner.lock();
            let _ = self.registry.register(nn(base), map_len, OwnerKind::Big);
        }
        drop(g);
        // `user_off` is the block's alignment when above a page, and a page serves any smaller
        // one, so this keeps the alignment (and may reuse a cached block).
        let (np, _) = self.alloc(new_size, user_off)?;
        // Copy all of the old usable bytes (the user may have used them, as
        // `usable_size` allows): `need > map_len` means `new_size > map_len - user_off`.
        let old_usable = map_len - user_off;
        // SAFETY: both blocks are ours and distinct; the old one holds `old_usable` bytes and
        // the new one room for `new_size > old_usable`.
        unsafe { ptr::copy_nonoverlapping(ptr.as_ptr(), np.as_ptr(), old_usable) };
        self.realloc_copy.add(1);
        // SAFETY: the old block is a live block of ours that nobody will use again.
        let _ = unsafe { self.dealloc(ptr) };
        Some(np)
    }

    /// Finishes an `mremap` that moved or grew a page-aligned block to `q`.
    ///
    /// # Safety
    /// `q` is a granule-aligned mapping of `need` bytes holding a LIVE block's header and
    /// contents, unregistered and ours alone; it replaced a mapping of `old_len` bytes.
    unsafe fn adopt_remapped(
        &self,
        q: NonNull<u8>,
        old_len: usize,
        need: usize,
        new_size: usize,
    ) -> NonNull<u8> {
        let qa = q.as_ptr() as usize;
        let h = qa as *mut Header;
        // SAFETY: our block, moved with its header.
        let user_off = unsafe { (*h).user_off };
        self.live_bytes.decrease(old_len as u64);
        self.live_blocks.decrease(1);
        debug_assert!(qa.is_multiple_of(GRANULE));
        // SAFETY: as above; the header now lives at `qa`.
        unsafe { Header::init(q.as_ptr(), need, user_off, new_size) };
        if self.registry.register(q, need, OwnerKind::Big).is_ok() {
            self.live_bytes.increase(need as u64);
            self.live_blocks.increase(1);
            self.realloc_remap.add(1);
            return nn(qa + user_off);
        }
        if let Some((np, _)) = self.alloc(new_size, user_off) {
            // SAFETY: distinct mappings; `q` holds the old usable bytes `old_len - user_off`,
            // the new block room for more; `q` is unregistered and unused afterwards.
            unsafe {
                let old_usable = old_len - user_off;
                ptr::copy_nonoverlapping((qa + user_off) as *const u8, np.as_ptr(), old_usable);
                let _ = self.os().unmap(q, need);
            }
            self.realloc_copy.add(1);
            return np;
        }
        // The OS refused every way to register the moved block: hand it out unregistered.
        self.orphans.add(1);
        nn(qa + user_off)
    }

    /// The bytes usable at `ptr`: `map_len - user_off` (at least the size asked for).
    /// 0 if the registry does not know `ptr` as a big block.
    ///
    /// # Safety
    /// `ptr` is a live block of this cache (its header is then stable and mapped).
    pub unsafe fn usable_size(&self, ptr: NonNull<u8>) -> usize {
        match self.registry.lookup(ptr.as_ptr() as usize) {
            Some(o) if o.kind == OwnerKind::Big => {
                // SAFETY: the caller owns this live block, so its header is mapped and stable.
                let h = unsafe { &*o.base.as_ptr().cast::<Header>() };
                h.map_len - h.user_off
            }
            _ => 0,
        }
    }

    /// The bytes usable at `ptr` if it is the user pointer of a LIVE big block (checked under
    /// the lock, like a free), else `None`: an unknown address, a pointer into a block's
    /// middle, a freed block. Safe for any address. Lets the C ABI refuse a bad `realloc` before
    /// it copies anything.
    pub fn live_usable_size(&self, ptr: NonNull<u8>) -> Option<usize> {
        let _g = self.inner.lock();
        let h = self.validate_inner(ptr.as_ptr() as usize).ok()?;
        // SAFETY: validated under the lock: a LIVE header, mapped while registered.
        Some(unsafe { (*h).map_len - (*h).user_off })
    }

    /// Whether `addr` lies in a block of this tier (live or cached): the registry says `Big`
    /// and the header's magic is right. Safe for any address.
    pub fn owns(&self, addr: usize) -> bool {
        let Some(o) = self.registry.lookup(addr) else { return false };
        if o.kind != OwnerKind::Big {
            return false;
        }
        let _g = self.inner.lock();
        match self.registry.lookup(addr) {
            // SAFETY: registered Big under the lock: mapped, header at the base.
            Some(o) if o.kind == OwnerKind::Big => unsafe {
                (*o.base.as_ptr().cast::<Header>()).magic_ok()
            },
            _ => false,
        }
    }

    /// Evicts cached blocks older than the TTL now (alloc and dealloc also do it as they go).
    pub fn evict_expired(&self) {
        let victims = self.inner.lock().evict(self.registry, hak_os::monotonic_ns());
        self.release(victims);
    }

    /// Evicts every cached block (unregistered and unmapped). Live blocks are untouched.
    pub fn trim(&self) {
        let victims = self.inner.lock().drain(self.registry);
        self.release(victims);
    }

    /// Counters and current occupancy.
    pub fn stats(&self) -> BigStats {
        let (entries, bytes, buckets, resizes, splits) = {
            let g = self.inner.lock();
            (g.entries, g.bytes, g.table.buckets(), g.table.grows(), g.splits)
        };
        BigStats {
            hits: self.hits.get(),
            misses: self.misses.get(),
            grown: self.grown.get(),
            splits,
            evictions: self.evictions.get(),
            resizes,
            buckets: buckets as u64,
            cached_entries: entries as u64,
            cached_bytes: bytes as u64,
            live_bytes: self.live_bytes.get(),
            live_blocks: self.live_blocks.get(),
            realloc_in_place: self.realloc_in_place.get(),
            realloc_remap: self.realloc_remap.get(),
            realloc_copy: self.realloc_copy.get(),
            decommits: self.decommits.get(),
            invalid_frees: self.invalid_frees.get(),
            orphans: self.orphans.get(),
        }
    }

    /// Validates the cache's invariants (crate and `cache` module docs); panics on a violation.
    /// For tests; takes the lock and walks everything cached.
    pub fn check_invariants(&self) {
        let g = self.inner.lock();
        let in_table = g.table.check();
        let (mut n, mut bytes, mut committed) = (0, 0, 0);
        for h in g.lru_iter() {
            // SAFETY: listed headers are valid under the lock.
            let hr = unsafe { &*h };
            assert!(hr.magic_ok(), "cached header with a bad magic");
            assert_eq!(hr.state, crate::header::CACHED);
            assert_eq!((h as usize) % GRANULE, 0, "block base off the granule grid");
            let owner = self.registry.lookup(h as usize);
            assert!(
                owner
                    .is_some_and(|o| o.kind == OwnerKind::Big && ptr::eq(o.base.as_ptr(), h.cast()))
                    || cfg!(hak_loom),
                "cached block not registered as Big at its base"
            );
            n += 1;
            bytes += hr.map_len;
            if !hr.decommitted {
                committed += hr.map_len;
            }
        }
        assert_eq!((n, n), (g.entries, in_table), "LRU, table and count disagree");
        assert_eq!((bytes, committed), (g.bytes, g.committed), "byte accounting is off");
    }

    /// Unmaps a list of victims (already unregistered under the lock).
    fn release(&self, mut victims: *mut Header) {
        while let Some(v) = NonNull::new(victims) {
            // SAFETY: victims are unlisted and unregistered: ours alone.
            let (next, len) = unsafe { ((*v.as_ptr()).lru_next, (*v.as_ptr()).map_len) };
            // SAFETY: as above; nobody can reach the mapping any more.
            let _ = unsafe { self.os().unmap(v.cast(), len) };
            self.evictions.add(1);
            victims = next;
        }
    }
}

impl Drop for BigCache<'_> {
    fn drop(&mut self) {
        self.trim();
        self.inner.lock().table.release(self.registry.os());
    }
}
