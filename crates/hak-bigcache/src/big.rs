//! [`BigCache`]: the big tier's operations (alloc, dealloc, realloc, usable size, ownership,
//! trim, stats) over one OS mapping per block, with freed mappings kept in the cache.
//!
//! Who calls it: the facade, for requests above 1 MiB and for alignments the other tiers cannot
//! serve, for frees whose registry owner is `Big`, and for mid blocks that keep growing
//! ([`BigCache::alloc_growing`]).
//!
//! This module holds the type, its construction, limits, statistics, the alloc entries, the
//! cache hand-offs, ownership queries, trim and fork handlers. The other operations live in
//! submodules, one concept each: `gather` (serving a request from smaller cached blocks),
//! `map` (mapping a fresh block), `free` (dealloc and the pointer checks it shares),
//! `realloc` (in place, by moving pages, or by copying).
//!
//! Locking: one `hak_sync::Mutex` guards [`Inner`]. Syscalls (map, unmap of victims and
//! reserves, density probes, decommit, mremap, copying) happen outside it. Registry
//! *unregistration* of a block always happens under the lock, and so does every header read of
//! a block the caller does not own (dealloc, realloc and owns validate under it), so a
//! validated header is never unmapped underneath. Requests no mapping can satisfy
//! ([`MAX_SIZE`]) are refused before the lock, and every search under it is bounded (see the
//! `bins` module), so no request's size makes another thread wait.

use core::ptr::NonNull;

use hak_os::Os;
use hak_registry::{OwnerKind, Registry, GRANULE};
use hak_sync::stat::{Derived, StatCounter, StatGauge};
use hak_sync::{Mutex, MutexGuard};

use crate::cache::{BigLimits, Inner, Victims, Want, GROW_FROM_MIN, HUGE_PAGE};
use crate::density::{self, Density};
use crate::header::{layout_for, Block};

mod free;
mod gather;
mod map;
mod realloc;

pub use free::FreeError;

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

hak_sync::stats! {
    /// The live counters of a [`BigCache`] (its occupancy and splits are counted under its
    /// lock and filled in by [`BigCache::stats`]).
    pub struct BigCounters => {
        /// Counters and occupancy of a [`BigCache`].
        pub struct BigStats;
    }
    /// Allocations served from the cache.
    hits: StatCounter,
    /// Allocations that had to map (including those the OS then refused).
    misses: StatCounter,
    /// Allocations served by moving the pages of smaller cached blocks into one larger
    /// mapping (neither hits nor misses).
    grown: StatCounter,
    /// Cached blocks split for a smaller request; the tail stayed cached.
    splits: Derived<u64>,
    /// Blocks unmapped by the cache: evicted by a limit, trimmed, or too big to keep.
    evictions: StatCounter,
    /// Blocks cached now.
    cached_entries: Derived<u64>,
    /// Bytes of mappings cached now.
    cached_bytes: Derived<u64>,
    /// Bytes of mappings held by live blocks, reserves included (current, peak, total).
    live_bytes: StatGauge,
    /// Live blocks (current, peak, total).
    live_blocks: StatGauge,
    /// Reallocs served inside the block's mapping (including growth into its reserve and
    /// shrinks that unmap the tail).
    realloc_in_place: StatCounter,
    /// Reallocs served by `mremap` (the block's pages moved into a larger reserved mapping).
    realloc_remap: StatCounter,
    /// Reallocs served by mapping a new block and copying.
    realloc_copy: StatCounter,
    /// Cached blocks decommitted on their way into the cache.
    decommits: StatCounter,
    /// Density probes made (see the `density` module), and how many found the block dense.
    probes: StatCounter,
    /// As above: probes that found the block dense.
    dense_probes: StatCounter,
    /// Mappings advised `MADV_HUGEPAGE` (fresh, gathered or grown blocks).
    huge_advised: StatCounter,
    /// Pointers refused by `dealloc` or `realloc` (double frees included).
    invalid_frees: StatCounter,
    /// Blocks `realloc` had to hand out unregistered because the OS refused every way to keep
    /// them registered after an `mremap` had already moved them (see [`BigCache::realloc`]).
    orphans: StatCounter,
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
    /// Counters (`stats` adds the cache's occupancy).
    counters: BigCounters,
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
                counters: BigCounters::new(),
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
        self.counters.misses.add(1);
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
        self.counters.misses.add(1);
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
        self.counters.hits.add(1);
        self.counters.live_bytes.increase(map_len as u64);
        self.counters.live_blocks.increase(1);
        // SAFETY: `user_off < map_len` (the cache checked the length).
        unsafe { b.at(user_off) }
    }

    /// The cache half of `alloc`: takes a cached block for `want` and makes it LIVE, evicting
    /// expired ones on the way.
    pub(crate) fn cache_take(&self, want: Want, now: u64) -> Option<Block> {
        let mut g = self.inner.lock();
        g.live = self.counters.live_bytes.get().current as usize;
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

    /// Feeds a probe's answer to the huge-page policy.
    fn note_density(&self, dense: Option<bool>) {
        if let Some(d) = dense {
            self.counters.probes.add(1);
            if d {
                self.counters.dense_probes.add(1);
            }
            self.density.record(d);
        }
    }

    /// The bytes usable at `ptr`: the block proper less the header part (at least the size
    /// asked for; the reserve of a growing block does not count). `None` if the registry does
    /// not know `ptr` as a big block (as `hak_l25::Mid::usable_size` answers for the mid tier).
    ///
    /// # Safety
    /// `ptr` is a live block of this cache (its header is then stable and mapped).
    pub unsafe fn usable_size(&self, ptr: NonNull<u8>) -> Option<usize> {
        let b = self.registered(ptr.as_ptr() as usize)?;
        // SAFETY: the caller owns this live block, so its header is mapped and stable.
        Some(unsafe { b.block_len() - b.user_off() })
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
        let mut s = self.counters.snapshot();
        let g = self.inner.lock();
        s.cached_entries = g.lru.count() as u64;
        s.cached_bytes = g.lru.bytes() as u64;
        s.splits = g.splits;
        s
    }

    /// Validates the cache's invariants (crate and `cache` module docs); panics on a violation.
    /// For tests; takes the lock and walks everything cached.
    pub fn check_invariants(&self) {
        let g = self.inner.lock();
        let in_bins = g.bins.check();
        // SAFETY: listed headers are valid under the lock.
        assert!(unsafe { g.lru.is_consistent() }, "LRU links, count or bytes are off");
        let (mut n, mut committed) = (0, 0);
        // SAFETY: as above.
        for p in unsafe { g.lru.list().iter() } {
            let b = Block::from_link(p).expect("a listed header is not null");
            // SAFETY: as above.
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
            if !decommitted {
                committed += map_len;
            }
        }
        assert_eq!((n, n), (g.lru.count(), in_bins), "LRU, bins and count disagree");
        assert_eq!(committed, g.committed, "committed bytes are off");
    }

    /// Unmaps a list of victims (already unregistered under the lock).
    fn release(&self, mut victims: Victims) {
        // SAFETY: victims are unlisted and unregistered: ours alone, valid until unmapped.
        while let Some(v) = unsafe { victims.pop_front() }.and_then(Block::from_link) {
            self.unmap_victim(v);
        }
    }

    /// Unmaps one victim (unregistered, in no list).
    fn unmap_victim(&self, v: Block) {
        // SAFETY: the victim is ours alone; nobody can reach the mapping any more.
        let _ = unsafe { self.os().unmap(v.base(), v.map_len()) };
        self.counters.evictions.add(1);
    }
}

impl Drop for BigCache<'_> {
    fn drop(&mut self) {
        self.trim();
    }
}
