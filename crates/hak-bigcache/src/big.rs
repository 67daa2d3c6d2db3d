//! [`BigCache`]: the big tier's operations (alloc, dealloc, realloc, usable size, ownership,
//! trim, stats) over one OS mapping per block, with freed mappings kept in the cache.
//!
//! Who calls it: the facade, for requests above 1 MiB and for alignments the other tiers cannot
//! serve, for frees whose registry owner is `Big`, and for mid blocks that keep growing
//! ([`BigCache::alloc_growing`]).
//!
//! Locking: one `hak_sync::Mutex` guards [`Inner`]. Syscalls (map, unmap of victims and
//! reserves, density probes, decommit, mremap, copying) happen outside it. Registry
//! *unregistration* of a block always happens under the lock, and so does every header read of
//! a block the caller does not own (dealloc, realloc and owns validate under it), so a
//! validated header is never unmapped underneath. Requests no mapping can satisfy
//! ([`MAX_SIZE`]) are refused before the lock, and every search under it is bounded (see the
//! `bins` module), so no request's size makes another thread wait.

use core::ptr::{self, NonNull};

use hak_os::Os;
use hak_registry::{OwnerKind, Registry, GRANULE};
use hak_sync::stat::{GaugeValue, StatCounter, StatGauge};
use hak_sync::{Mutex, MutexGuard};

use crate::cache::{BigLimits, Inner, Want, GROW_FROM_MIN, HUGE_PAGE};
use crate::density::{self, Density};
use crate::header::{layout_for, Block, Header, FREEING, LIVE};

/// The largest size or alignment the big tier tries to map: the user address space a process
/// gets (128 TiB on x86-64, 256 TiB on arm64 with 48-bit addresses). Larger requests are
/// refused before any lock or syscall.
#[cfg(target_arch = "x86_64")]
pub const MAX_SIZE: usize = 1 << 47;
/// The largest size or alignment the big tier tries to map (see the x86-64 item).
#[cfg(target_arch = "aarch64")]
pub const MAX_SIZE: usize = 1 << 48;
/// The largest size or alignment the big tier tries to map (see the x86-64 item).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub const MAX_SIZE: usize = isize::MAX as usize;

/// How much address space a block that grows by `realloc` reserves: its new mapping is this
/// many times the bytes it needs (at most [`GROW_RESERVE_MAX`] more), so a block doubling
/// again and again moves once every third doubling and grows in place in between. The reserve
/// is mapped but never touched, so it costs no memory; it is cut off when the block is freed.
pub const GROW_RESERVE: usize = 4;
/// Most address space one growing block reserves beyond what it needs (1 GiB).
pub const GROW_RESERVE_MAX: usize = 1 << 30;

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
    /// Blocks cached now.
    pub cached_entries: u64,
    /// Bytes of mappings cached now.
    pub cached_bytes: u64,
    /// Bytes of mappings held by live blocks, reserves included (current, peak, total).
    pub live_bytes: GaugeValue,
    /// Live blocks (current, peak, total).
    pub live_blocks: GaugeValue,
    /// Reallocs served inside the block's mapping (including growth into its reserve and
    /// shrinks that unmap the tail).
    pub realloc_in_place: u64,
    /// Reallocs served by `mremap` (the block's pages moved into a larger reserved mapping).
    pub realloc_remap: u64,
    /// Reallocs served by mapping a new block and copying.
    pub realloc_copy: u64,
    /// Cached blocks decommitted on their way into the cache.
    pub decommits: u64,
    /// Density probes made (see the `density` module), and how many found the block dense.
    pub probes: u64,
    /// As above: probes that found the block dense.
    pub dense_probes: u64,
    /// Mappings advised `MADV_HUGEPAGE` (fresh, gathered or grown blocks).
    pub huge_advised: u64,
    /// Pointers refused by `dealloc` or `realloc` (double frees included).
    pub invalid_frees: u64,
    /// Blocks `realloc` had to hand out unregistered because the OS refused every way to keep
    /// them registered after an `mremap` had already moved them (see [`BigCache::realloc`]).
    pub orphans: u64,
}

/// The big tier. See the crate docs for the layout, invariants and concurrency contract.
/// One `BigCache` per registry: it assumes every `Big` owner in the registry is its own.
pub struct BigCache<'r> {
    /// The registry blocks are registered in; its `Os` maps them.
    registry: &'r Registry<'r>,
    /// The cache: bins, LRU list, accounting, limits.
    inner: Mutex<Inner>,
    /// Whether the program fills its blocks: huge-page advice, residency of cached blocks,
    /// gathering (see the `density` module).
    density: Density,
    hits: StatCounter,
    misses: StatCounter,
    evictions: StatCounter,
    realloc_in_place: StatCounter,
    realloc_remap: StatCounter,
    realloc_copy: StatCounter,
    decommits: StatCounter,
    probes: StatCounter,
    dense_probes: StatCounter,
    huge_advised: StatCounter,
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
/// kernel backs a range with huge pages only where it covers whole aligned 2 MiB units, so a
/// block ending inside one would fault its last unit in 4 KiB at a time, and every block that
/// `mremap` grows from it would have to split the moved huge pages.
#[inline]
fn block_layout(size: usize, align: usize, page: usize) -> Option<(usize, usize)> {
    let (user_off, need) = layout_for(size, align, page)?;
    if need < HUGE_PAGE {
        return Some((user_off, need));
    }
    let need = need.checked_next_multiple_of(HUGE_PAGE)?;
    (need <= isize::MAX as usize).then_some((user_off, need))
}

/// The mapping length for a block that needs `need` bytes and is expected to grow: see
/// [`GROW_RESERVE`], and at least a huge page, the length of the blocks such growth leaves in
/// the cache (a 1 MiB block needs a page more than 1 MiB), so the next one finds them. A
/// multiple of a granule (and of a huge page from 2 MiB on), at least `need`, at most
/// [`MAX_SIZE`].
fn room_for(need: usize) -> usize {
    let extra = need.saturating_mul(GROW_RESERVE - 1).min(GROW_RESERVE_MAX);
    let unit = if need >= HUGE_PAGE { HUGE_PAGE } else { GRANULE };
    let room = need.saturating_add(extra).checked_next_multiple_of(unit).unwrap_or(need);
    room.clamp(HUGE_PAGE, MAX_SIZE).max(need)
}

/// Where the reserve of a block whose block proper ends at `block_len` is cut off on free:
/// the next granule (huge page from 2 MiB on) boundary, so both sides stay on the registry's
/// grid and huge mappings stay whole huge pages.
fn cut_for(block_len: usize) -> usize {
    let unit = if block_len >= HUGE_PAGE { HUGE_PAGE } else { GRANULE };
    block_len.checked_next_multiple_of(unit).unwrap_or(block_len)
}

impl<'r> BigCache<'r> {
    hak_sync::maybe_const_fn! {
        /// An empty big tier over `registry` (whose `Os` maps the blocks) with `limits`.
        /// Maps nothing until used.
        pub fn new(registry: &'r Registry<'r>, limits: BigLimits) -> BigCache<'r> {
            BigCache {
                registry,
                inner: Mutex::new(Inner::new(limits)),
                density: Density::new(),
                hits: StatCounter::new(),
                misses: StatCounter::new(),
                evictions: StatCounter::new(),
                realloc_in_place: StatCounter::new(),
                realloc_remap: StatCounter::new(),
                realloc_copy: StatCounter::new(),
                decommits: StatCounter::new(),
                probes: StatCounter::new(),
                dense_probes: StatCounter::new(),
                huge_advised: StatCounter::new(),
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

    /// Makes the huge-page policy act as on a host whose THP mode is `mode` (`None`: the
    /// host's own, read once from sysfs). For tests of the `always` and `never` paths on any
    /// host; advice the host ignores changes nothing else.
    #[doc(hidden)]
    pub fn set_thp_mode(&self, mode: Option<hak_os::ThpMode>) {
        self.density.set_mode(mode);
    }

    /// Whether the density policy currently counts the program's big blocks as dense.
    #[doc(hidden)]
    pub fn counts_as_dense(&self) -> bool {
        self.density.dense()
    }

    /// Tells the density policy the program is dense (or not), as a measured block would. For
    /// tests where the kernel cannot be asked (Miri); the next measurement overrides it.
    #[doc(hidden)]
    pub fn set_counts_as_dense(&self, dense: bool) {
        self.density.record(dense);
    }

    /// Allocates `size` bytes aligned to `align` (a power of two; any value, including above
    /// 1 MiB). Returns the block and whether it is known to be zero-filled (true only for a
    /// fresh mapping, so the caller can skip a memset for `alloc_zeroed`). `None` if `align` is
    /// not a power of two, the size or alignment exceeds [`MAX_SIZE`], or the OS refuses; a
    /// later call works again once the OS does. `size == 0` is served as 1.
    pub fn alloc(&self, size: usize, align: usize) -> Option<(NonNull<u8>, bool)> {
        if !align.is_power_of_two() || size > MAX_SIZE || align > MAX_SIZE {
            return None;
        }
        let page = hak_os::page_size();
        let (user_off, need) = block_layout(size, align, page)?;
        let want = Want::plain(need, align, user_off, size);
        if let Some(b) = self.cache_take(want, hak_os::monotonic_ns()) {
            return Some((self.hand_out_hit(b, user_off), false));
        }
        if user_off == page && need > GROW_FROM_MIN && self.density.dense() {
            if let Some(b) = self.gather(need, size) {
                // SAFETY: `user_off < need`, inside the block.
                return Some((unsafe { b.at(user_off) }, false));
            }
        }
        self.misses.add(1);
        let b = self.map_block(need, need, user_off, size)?;
        // SAFETY: as above.
        Some((unsafe { b.at(user_off) }, true))
    }

    /// As [`BigCache::alloc`], for a block that is expected to grow by `realloc` (the facade
    /// moves a mid block here once it keeps growing): it gets room to grow in place, a cached
    /// block of up to [`GROW_RESERVE`] times the request or a fresh mapping with a reserve (see
    /// [`GROW_RESERVE`]), which costs address space, not memory.
    pub fn alloc_growing(&self, size: usize, align: usize) -> Option<(NonNull<u8>, bool)> {
        if !align.is_power_of_two() || size > MAX_SIZE || align > MAX_SIZE {
            return None;
        }
        let (user_off, need) = block_layout(size, align, hak_os::page_size())?;
        let room = room_for(need);
        let want = Want::growing(need, room, align, user_off, size);
        if let Some(b) = self.cache_take(want, hak_os::monotonic_ns()) {
            return Some((self.hand_out_hit(b, user_off), false));
        }
        self.misses.add(1);
        let b = self.map_block(room, need, user_off, size).or_else(|| {
            // No address space for the reserve (`ulimit -v`, strict overcommit): no reserve.
            (room > need).then(|| self.map_block(need, need, user_off, size)).flatten()
        })?;
        // SAFETY: `user_off < need`, inside the block.
        Some((unsafe { b.at(user_off) }, true))
    }

    /// Accounts a block taken from the cache and returns its user pointer. While the program
    /// counts as sparse, some reused blocks on base pages are measured at their free too (see
    /// the `density` module): a program that fills reused blocks is recognised without
    /// waiting for a fresh mapping.
    fn hand_out_hit(&self, b: Block, user_off: usize) -> NonNull<u8> {
        // SAFETY: `b` came out of the cache LIVE: the block is ours alone.
        let (map_len, huge) = unsafe { (b.map_len(), b.huge()) };
        if !huge && map_len >= density::PROBE_MIN && self.density.probe_reused() {
            // SAFETY: as above.
            unsafe { b.set_probe(true) };
        }
        self.hits.add(1);
        self.live_bytes.increase(map_len as u64);
        self.live_blocks.increase(1);
        // SAFETY: `user_off < map_len` (the cache checked the length).
        unsafe { b.at(user_off) }
    }

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
    fn gather(&self, need: usize, size: usize) -> Option<Block> {
        let page = hak_os::page_size();
        let (pieces, _, victims) =
            self.inner.lock().take_pieces(self.registry, need, hak_os::monotonic_ns());
        self.release(victims);
        Block::from_link(pieces)?;
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
                self.huge_advised.add(1);
            }
        }
        let (mut off, mut moved) = (0, 0);
        let mut p = pieces;
        while let Some(v) = Block::from_link(p) {
            // SAFETY: the pieces left the cache unregistered: ours alone.
            let (next, len, multi) = unsafe { (v.lru_next(), v.map_len(), v.multi_map()) };
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
        self.grown.add(1);
        self.live_bytes.increase(need as u64);
        self.live_blocks.increase(1);
        Some(b)
    }

    /// Puts pieces taken for a gathering that could not happen back into the cache (registered
    /// again), or unmaps them if the registry refuses.
    fn restore(&self, mut pieces: *mut Header) {
        let now = hak_os::monotonic_ns();
        while let Some(v) = Block::from_link(pieces) {
            // SAFETY: unregistered pieces, ours alone.
            let (next, len) = unsafe { (v.lru_next(), v.map_len()) };
            // SAFETY: as above; it leaves the list here.
            unsafe { v.set_lru_next(ptr::null_mut()) };
            pieces = next;
            if self.registry.register(v.base(), len, OwnerKind::Big).is_err() {
                self.release(v.link());
                continue;
            }
            let g = self.inner.lock();
            // SAFETY: registered as Big at its base again, without reserve, ours alone.
            unsafe { self.cache_put_locked(g, v, now) };
        }
    }

    /// Maps, advises, initialises and registers a fresh LIVE block of `map_len` bytes whose
    /// block proper ends at `block_len` (the rest is a reserve for growth).
    fn map_block(
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
                self.huge_advised.add(1);
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
        self.live_bytes.increase(map_len as u64);
        self.live_blocks.increase(1);
        Some(b)
    }

    /// The cache half of `alloc`: takes a cached block for `want` and makes it LIVE, evicting
    /// expired ones on the way.
    pub(crate) fn cache_take(&self, want: Want, now: u64) -> Option<Block> {
        let mut g = self.inner.lock();
        g.live = self.live_bytes.get().current as usize;
        let (found, victims) = g.take(self.registry, want, now);
        drop(g);
        self.release(victims);
        found
    }

    /// The cache half of `dealloc`: caches a validated block (LIVE or FREEING, owned by the
    /// caller, without reserve), evicting what the limits exclude.
    ///
    /// # Safety
    /// As [`Inner::put`]: `b` heads a mapped block registered as `Big` that nobody else uses.
    #[cfg(all(test, hak_loom))]
    pub(crate) unsafe fn cache_put(&self, b: Block, now: u64) {
        // SAFETY: forwarded.
        unsafe { self.cache_put_locked(self.inner.lock(), b, now) }
    }

    /// [`BigCache::cache_put`] with the lock already held (dealloc validates under it).
    ///
    /// # Safety
    /// As [`Inner::put`].
    unsafe fn cache_put_locked(&self, mut g: MutexGuard<'_, Inner>, b: Block, now: u64) {
        // SAFETY: forwarded.
        let victims = unsafe { g.put(self.registry, b, now) };
        drop(g);
        self.release(victims);
    }

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
        self.live_bytes.decrease(len as u64);
        self.live_blocks.decrease(1);
        g.live = self.live_bytes.get().current as usize;
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
                    self.decommits.add(1);
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

    /// Feeds a probe's answer to the huge-page policy.
    fn note_density(&self, dense: Option<bool>) {
        if let Some(d) = dense {
            self.probes.add(1);
            if d {
                self.dense_probes.add(1);
            }
            self.density.record(d);
        }
    }

    /// Checks that `addr` is the user pointer of a LIVE big block and returns its handle.
    /// Must be called with the cache lock held (see the module docs); counts refusals.
    fn validate(&self, addr: usize) -> Result<Block, FreeError> {
        let r = self.validate_inner(addr);
        if r.is_err() {
            self.invalid_frees.add(1);
        }
        r
    }

    fn validate_inner(&self, addr: usize) -> Result<Block, FreeError> {
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
    fn registered(&self, addr: usize) -> Option<Block> {
        let owner = self.registry.lookup(addr)?;
        if owner.kind != OwnerKind::Big {
            return None;
        }
        // SAFETY: the registry hands back the pointer the block was registered with, which
        // carries its mapping's provenance, and a registered block is mapped (the caller keeps
        // it so: it holds the lock, or owns the block).
        Some(unsafe { Block::from_base(owner.base) })
    }

    /// Resizes a live big block to `new_size` bytes, keeping its alignment and its first
    /// `min(usable, new_size)` bytes. Returns the (possibly moved) block, or `None` with the old
    /// block untouched and still valid (invalid pointer, a size beyond [`MAX_SIZE`], overflow,
    /// or OS refusal).
    ///
    /// Strategy: if the mapping already holds `new_size` (in the block or in its reserve), the
    /// block stays (a shrink to at most half the block unmaps the tail, reserve included; a
    /// growth never does, even into a block much longer than it asks for).
    /// Else, for alignments up to a page and a block that is one kernel mapping (not gathered,
    /// see the crate docs), its pages move (`mremap` to a fixed address, no copy) into a fresh
    /// granule-aligned mapping of [`GROW_RESERVE`] times the new size, which the move grows
    /// the block's own mapping into; its density is probed first and the new mapping advised
    /// to match (see the `density` module). For larger alignments, gathered blocks, or if that
    /// fails: a new block with room to grow ([`BigCache::alloc_growing`]), a copy of the old
    /// usable bytes, and the old block freed into the cache.
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
        if new_size > MAX_SIZE {
            return None;
        }
        let addr = ptr.as_ptr() as usize;
        let page = hak_os::page_size();
        let mut g = self.inner.lock();
        let b = self.validate(addr).ok()?;
        // SAFETY: validated LIVE block, owned by the caller.
        let (map_len, block_len, user_off, multi_map, huge, size) = unsafe {
            (b.map_len(), b.block_len(), b.user_off(), b.multi_map(), b.huge(), b.size())
        };
        let (_, need) = block_layout(new_size, user_off, page)?;
        if need <= map_len {
            if new_size < size && need <= block_len / 2 {
                // Shrink: release the tail's granules (under the lock), then its pages.
                let cut = cut_for(need);
                if cut < map_len {
                    self.registry.unregister(b.base(), map_len);
                    if self.registry.register(b.base(), cut, OwnerKind::Big).is_ok() {
                        // SAFETY: our block.
                        unsafe {
                            b.set_map_len(cut);
                            b.set_block_len(cut);
                        }
                        drop(g);
                        // SAFETY: the tail is the caller's and unused past `need`; its granules
                        // are no longer registered.
                        let _ = unsafe { self.os().unmap(b.at(cut), map_len - cut) };
                        self.live_bytes.decrease((map_len - cut) as u64);
                    } else {
                        // Cannot happen (the leaves exist); keep the whole mapping registered.
                        let _ = self.registry.register(b.base(), map_len, OwnerKind::Big);
                    }
                }
            } else if need > block_len {
                // Growth into the reserve: it was never handed out, so it is untouched.
                // SAFETY: our block.
                unsafe { b.set_block_len(need) };
            }
            // SAFETY: our block.
            unsafe { b.set_size(new_size) };
            self.realloc_in_place.add(1);
            return Some(ptr);
        }
        if user_off == page && !multi_map {
            self.registry.unregister(b.base(), map_len);
            drop(g);
            let old = (map_len, block_len, size);
            if let Some(np) = self.move_growing(b, old, (need, new_size), huge) {
                return Some(np);
            }
            // Untouched: register it again (its granules are still ours).
            g = self.inner.lock();
            let _ = self.registry.register(b.base(), map_len, OwnerKind::Big);
        }
        drop(g);
        // `user_off` is the block's alignment when above a page, and a page serves any smaller
        // one, so this keeps the alignment (and may reuse a cached block).
        let (np, _) = self.alloc_growing(new_size, user_off)?;
        // Copy all of the old usable bytes (the user may have used them, as `usable_size`
        // allows): `need > map_len >= block_len` means `new_size > block_len - user_off`.
        let old_usable = block_len - user_off;
        // SAFETY: both blocks are ours and distinct; the old one holds `old_usable` bytes and
        // the new one room for `new_size > old_usable`.
        unsafe { ptr::copy_nonoverlapping(ptr.as_ptr(), np.as_ptr(), old_usable) };
        self.realloc_copy.add(1);
        // SAFETY: the old block is a live block of ours that nobody will use again.
        let _ = unsafe { self.dealloc(ptr) };
        Some(np)
    }

    /// Moves the pages of the unregistered, page-aligned, single-mapping block `b` into a fresh
    /// reserved mapping, growing its mapping to fill it (see [`BigCache::realloc`]). `None`
    /// with the block untouched where it was (still unregistered) if the OS refused.
    fn move_growing(
        &self,
        b: Block,
        (map_len, block_len, size): (usize, usize, usize),
        (need, new_size): (usize, usize),
        huge: bool,
    ) -> Option<NonNull<u8>> {
        let os = self.os();
        let page = hak_os::page_size();
        // Whether the program fills this block: the part it asked for, whole pages.
        let end = (page + size) & !(page - 1);
        let dense = if huge {
            Some(true) // on huge pages `mincore` cannot tell; it was advised for being dense
        } else {
            // SAFETY: `page < map_len`, inside the block, which is ours.
            let start = unsafe { b.at(page) };
            let d = density::is_dense(os, start, end.saturating_sub(page), page);
            self.note_density(d);
            d
        };
        let align = if need >= HUGE_PAGE { HUGE_PAGE } else { GRANULE };
        let room = room_for(need);
        let (dst, dst_len) = match os.map(room, align) {
            Ok(d) => (d, room),
            Err(_) => (os.map(need, align).ok()?, need),
        };
        // The block's own mapping moves and grows to `dst_len` in one call, so the block stays
        // one kernel mapping with one set of flags. The block is one mapping (not
        // `multi_map`), so a failed move leaves it in place.
        // SAFETY: the block is ours and nobody else uses it; `dst` is a fresh mapping of ours;
        // distinct mappings do not overlap.
        if unsafe { os.remap_to(b.base(), map_len, dst, dst_len) }.is_err() {
            // Part of `dst` may already be unmapped by the failed move: all of it goes.
            // SAFETY: fresh, never published.
            let _ = unsafe { os.unmap(dst, dst_len) };
            return None;
        }
        let (advice, now_huge) = self.density.growing(dst_len, dense.unwrap_or(false), huge);
        if let Some(on) = advice {
            // SAFETY: our mapping; advice changes no contents.
            if unsafe { os.advise_huge(dst, dst_len, on) }.is_ok() && on {
                self.huge_advised.add(1);
            }
        }
        let old = (map_len, block_len - page);
        // SAFETY: the old range is gone; `dst` holds the block with its header.
        Some(unsafe { self.adopt_remapped(dst, old, (dst_len, need), new_size, now_huge) })
    }

    /// Finishes an `mremap` that moved and grew a page-aligned block to `q`.
    ///
    /// # Safety
    /// `q` is a granule-aligned mapping of `map_len` bytes holding a LIVE block's header and
    /// contents (`old_used` bytes of them past the header page in use), unregistered and ours
    /// alone; it replaced a mapping of `old_len` bytes. The block proper now ends at `need`.
    unsafe fn adopt_remapped(
        &self,
        q: NonNull<u8>,
        (old_len, old_used): (usize, usize),
        (map_len, need): (usize, usize),
        new_size: usize,
        huge: bool,
    ) -> NonNull<u8> {
        // SAFETY: our mapping (the caller's contract), with the provenance hak-os gave it.
        let b = unsafe { Block::from_base(q) };
        // SAFETY: our block, moved with its header.
        let user_off = unsafe { b.user_off() };
        self.live_bytes.decrease(old_len as u64);
        self.live_blocks.decrease(1);
        hak_sync::check!(b.addr().is_multiple_of(GRANULE), "moved block off the granule grid");
        // SAFETY: as above; the header now lives at `q`.
        unsafe {
            b.init(map_len, user_off, new_size);
            b.set_block_len(need);
            b.set_huge(huge);
        }
        if self.registry.register(q, map_len, OwnerKind::Big).is_ok() {
            self.live_bytes.increase(map_len as u64);
            self.live_blocks.increase(1);
            self.realloc_remap.add(1);
            // SAFETY: `user_off < need <= map_len`.
            return unsafe { b.at(user_off) };
        }
        if let Some((np, _)) = self.alloc_growing(new_size, user_off) {
            // SAFETY: distinct mappings; `q` holds the old contents (`old_used` bytes past the
            // header page, whole pages), the new block room for more; `q` is unregistered and
            // unused afterwards.
            unsafe {
                ptr::copy_nonoverlapping(b.at(user_off).as_ptr(), np.as_ptr(), old_used);
                let _ = self.os().unmap(q, map_len);
            }
            self.realloc_copy.add(1);
            return np;
        }
        // The OS refused every way to register the moved block: hand it out unregistered.
        self.orphans.add(1);
        // SAFETY: as above.
        unsafe { b.at(user_off) }
    }

    /// The bytes usable at `ptr`: the block proper less the header part (at least the size
    /// asked for; the reserve of a growing block does not count). 0 if the registry does not
    /// know `ptr` as a big block.
    ///
    /// # Safety
    /// `ptr` is a live block of this cache (its header is then stable and mapped).
    pub unsafe fn usable_size(&self, ptr: NonNull<u8>) -> usize {
        match self.registered(ptr.as_ptr() as usize) {
            // SAFETY: the caller owns this live block, so its header is mapped and stable.
            Some(b) => unsafe { b.block_len() - b.user_off() },
            None => 0,
        }
    }

    /// The bytes usable at `ptr` if it is the user pointer of a LIVE big block (checked under
    /// the lock, like a free), else `None`: an unknown address, a pointer into a block's
    /// middle, a freed block. Safe for any address. Lets the C ABI refuse a bad `realloc` before
    /// it copies anything.
    pub fn live_usable_size(&self, ptr: NonNull<u8>) -> Option<usize> {
        let _g = self.inner.lock();
        let b = self.validate_inner(ptr.as_ptr() as usize).ok()?;
        // SAFETY: validated under the lock: a LIVE header, mapped while registered.
        Some(unsafe { b.block_len() - b.user_off() })
    }

    /// Whether `addr` lies in a block of this tier (live or cached): the registry says `Big`
    /// and the header's magic is right. Safe for any address.
    pub fn owns(&self, addr: usize) -> bool {
        if self.registered(addr).is_none() {
            return false;
        }
        let _g = self.inner.lock();
        match self.registered(addr) {
            // SAFETY: registered Big under the lock: mapped, header at the base.
            Some(b) => unsafe { b.magic_ok() },
            None => false,
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

    /// Takes the cache's lock and keeps it, for a `pthread_atfork` prepare handler: no other
    /// thread is then inside the big tier's critical section when the process forks. Pair with
    /// [`BigCache::postfork`] in the parent and in the child.
    #[cfg(not(hak_loom))]
    pub fn prefork(&self) {
        self.inner.fork_lock();
    }

    /// Releases the lock [`BigCache::prefork`] took.
    ///
    /// # Safety
    /// The calling thread called `prefork` (or is the child of the thread that did), and
    /// calls this once.
    #[cfg(not(hak_loom))]
    pub unsafe fn postfork(&self) {
        // SAFETY: forwarded: the lock was taken by `prefork` and no guard exists.
        unsafe { self.inner.fork_unlock() };
    }

    /// Counters and current occupancy.
    pub fn stats(&self) -> BigStats {
        let (entries, bytes, splits) = {
            let g = self.inner.lock();
            (g.entries, g.bytes, g.splits)
        };
        BigStats {
            hits: self.hits.get(),
            misses: self.misses.get(),
            grown: self.grown.get(),
            splits,
            evictions: self.evictions.get(),
            cached_entries: entries as u64,
            cached_bytes: bytes as u64,
            live_bytes: self.live_bytes.get(),
            live_blocks: self.live_blocks.get(),
            realloc_in_place: self.realloc_in_place.get(),
            realloc_remap: self.realloc_remap.get(),
            realloc_copy: self.realloc_copy.get(),
            decommits: self.decommits.get(),
            probes: self.probes.get(),
            dense_probes: self.dense_probes.get(),
            huge_advised: self.huge_advised.get(),
            invalid_frees: self.invalid_frees.get(),
            orphans: self.orphans.get(),
        }
    }

    /// Validates the cache's invariants (crate and `cache` module docs); panics on a violation.
    /// For tests; takes the lock and walks everything cached.
    pub fn check_invariants(&self) {
        let g = self.inner.lock();
        let in_bins = g.bins.check();
        let (mut n, mut bytes, mut committed) = (0, 0, 0);
        for b in g.lru_iter() {
            // SAFETY: listed headers are valid under the lock.
            let (magic_ok, state, map_len, block_len, decommitted) =
                unsafe { (b.magic_ok(), b.state(), b.map_len(), b.block_len(), b.decommitted()) };
            assert!(magic_ok, "cached header with a bad magic");
            assert_eq!(state, crate::header::CACHED);
            assert_eq!(block_len, map_len, "a cached block kept a reserve");
            assert_eq!(b.addr() % GRANULE, 0, "block base off the granule grid");
            let owner = self.registry.lookup(b.addr());
            assert!(
                owner.is_some_and(
                    |o| o.kind == OwnerKind::Big && o.base.as_ptr() as usize == b.addr()
                ) || cfg!(hak_loom),
                "cached block not registered as Big at its base"
            );
            n += 1;
            bytes += map_len;
            if !decommitted {
                committed += map_len;
            }
        }
        assert_eq!((n, n), (g.entries, in_bins), "LRU, bins and count disagree");
        assert_eq!((bytes, committed), (g.bytes, g.committed), "byte accounting is off");
    }

    /// Unmaps a list of victims (already unregistered under the lock).
    fn release(&self, mut victims: *mut Header) {
        while let Some(v) = Block::from_link(victims) {
            // SAFETY: victims are unlisted and unregistered: ours alone.
            let (next, len) = unsafe { (v.lru_next(), v.map_len()) };
            // SAFETY: as above; nobody can reach the mapping any more.
            let _ = unsafe { self.os().unmap(v.base(), len) };
            self.evictions.add(1);
            victims = next;
        }
    }
}

impl Drop for BigCache<'_> {
    fn drop(&mut self) {
        self.trim();
    }
}
