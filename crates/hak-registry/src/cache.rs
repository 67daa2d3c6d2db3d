//! [`SuperSlabCache`]: the LRU cache of empty SuperSlabs (any registered region, in fact).
//!
//! Instead of unmapping a SuperSlab that emptied, the shared pool pushes it here; the next
//! SuperSlab it needs comes from here before the OS. That saves mmap/munmap pairs and registry
//! churn when a program's heap breathes.
//!
//! The list is intrusive: a cached region's first bytes hold its [`Node`] (so the cache has no
//! capacity of its own), most recently pushed at the head. Limits: `max_count` regions,
//! `max_bytes` bytes, `ttl_ns` age; over-limit and expired regions leave from the tail (the
//! oldest) and are unregistered and unmapped outside the lock. With `decommit` set, a pushed
//! region's pages past its first are decommitted, so a cached SuperSlab costs address space,
//! not RSS, except for the first [`HOT_COMMITTED`] regions, which stay committed so that a heap
//! breathing around a SuperSlab or two (threads coming and going) does not pay an madvise and
//! refaults each time; `pop` prefers committed regions.
//!
//! Provenance: nodes are reached only through raw pointers derived from the `base` each region
//! was pushed with (which carries the mapping's provenance), never through `&Node`/`&mut Node`:
//! a node overlays the header of whatever the region was (a SuperSlab), and references into
//! region memory are what Miri's borrow models object to. [`SuperSlabCache::pop`] returns the
//! pushed pointer itself.
//!
//! The list, its count and bytes and the limits are `hak_collections::RegionCache`, the one
//! region cache every tier uses; this module adds the registry and decommit policy.
//!
//! Invariants (under the lock): `count == |list|`, `bytes == Σ node.len`,
//! `committed == |{node : node.committed}| <= HOT_COMMITTED`, every node is a region registered
//! in `registry` that nobody else references.
//!
//! Concurrency: every operation takes the mutex; unmapping happens after it is released.

use core::ptr::NonNull;

use hak_collections::{Limits, Links, List, RegionCache};
use hak_sync::stat::{Derived, StatCounter};
use hak_sync::Mutex;

use crate::map::{OwnerKind, Registry};

/// Cached regions that stay committed even when decommit is on (at most 4 MiB of 2 MiB
/// SuperSlabs).
pub const HOT_COMMITTED: usize = 2;

/// Most cached regions [`SuperSlabCache::pop`] looks at under the lock for one of the right
/// size (a miss costs a fresh mapping, never a wrong answer). The tiers cache one size of
/// region each, so the newest is almost always a match.
const POP_VISITS: usize = 64;

/// The bookkeeping a cached region carries in its own first bytes.
#[repr(C)]
struct Node {
    links: Links<*mut Node>,
    /// Region size in bytes.
    len: usize,
    /// `hak_os::monotonic_ns()` when pushed (the region cache's stamp).
    pushed_ns: u64,
    /// Whether its pages are still committed.
    committed: bool,
}

// SAFETY: `links` is the cache's alone (and its victims list's once a node is out); `len` does
// not change while the region is cached; `pushed_ns` is written only by the region cache.
hak_collections::adapter! {
    /// The cache's view of a region: its [`Node`], reached from the region's base.
    unsafe struct Lru for Node { links: links, bytes: len, stamp: pushed_ns }
}

/// Limits of a [`SuperSlabCache`]. The facade fills them from `HAKMEM_SUPERSLAB_MAX_CACHED`,
/// `HAKMEM_SUPERSLAB_MAX_MEMORY_MB` and `HAKMEM_SUPERSLAB_TTL_SEC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Most regions kept (default 256; 0 disables caching).
    pub max_count: usize,
    /// Most bytes kept (default 512 MiB).
    pub max_bytes: usize,
    /// Oldest age kept, in nanoseconds (default 60 s).
    pub ttl_ns: u64,
    /// Decommit a region's pages (all but the first) when it is pushed (default true).
    pub decommit: bool,
}

impl CacheLimits {
    /// 256 regions, 512 MiB, 60 s, decommit on push.
    pub const DEFAULT: CacheLimits = CacheLimits {
        max_count: 256,
        max_bytes: 512 << 20,
        ttl_ns: 60_000_000_000,
        decommit: true,
    };

    /// The count, bytes and age limits, as the region cache takes them.
    fn region(&self) -> Limits {
        Limits { max_count: self.max_count, max_bytes: self.max_bytes, ttl_ns: self.ttl_ns }
    }
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

hak_sync::stats! {
    /// The live counters of a [`SuperSlabCache`].
    pub struct CacheCounters => {
        /// Counters of a [`SuperSlabCache`].
        pub struct CacheStats;
    }
    /// Regions pushed.
    pushes: StatCounter,
    /// Pops served from the cache.
    hits: StatCounter,
    /// Pops that found nothing of the size asked for.
    misses: StatCounter,
    /// Regions evicted (unregistered and unmapped).
    evictions: StatCounter,
    /// Regions cached now.
    cached: Derived<u64>,
    /// Bytes cached now.
    cached_bytes: Derived<u64>,
}

struct Inner {
    /// The regions, newest first, with their count and bytes.
    regions: RegionCache<Lru>,
    /// Listed nodes whose pages are committed.
    committed: usize,
    limits: CacheLimits,
}

/// The LRU cache of empty SuperSlabs. See the module docs.
pub struct SuperSlabCache<'r> {
    registry: &'r Registry<'r>,
    inner: Mutex<Inner>,
    counters: CacheCounters,
}

impl core::fmt::Debug for SuperSlabCache<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SuperSlabCache").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

// SAFETY: the raw node pointers are only touched under the mutex; the regions they live in are
// owned by the cache while listed.
unsafe impl Send for SuperSlabCache<'_> {}
// SAFETY: as above.
unsafe impl Sync for SuperSlabCache<'_> {}

impl<'r> SuperSlabCache<'r> {
    hak_sync::maybe_const_fn! {
        /// An empty cache over `registry` with `limits`.
        pub fn new(registry: &'r Registry<'r>, limits: CacheLimits) -> SuperSlabCache<'r> {
            SuperSlabCache {
                registry,
                inner: Mutex::new(Inner { regions: RegionCache::new(), committed: 0, limits }),
                counters: CacheCounters::new(),
            }
        }
    }

    /// Replaces the limits and evicts whatever the new ones exclude.
    pub fn set_limits(&self, limits: CacheLimits) {
        let victims = {
            let mut g = self.inner.lock();
            g.limits = limits;
            Self::evict_locked(&mut g, hak_os::monotonic_ns())
        };
        self.release(victims);
    }

    /// The limits in force.
    pub fn limits(&self) -> CacheLimits {
        self.inner.lock().limits
    }

    /// Counters and current occupancy.
    pub fn stats(&self) -> CacheStats {
        let mut s = self.counters.snapshot();
        let g = self.inner.lock();
        s.cached = g.regions.count() as u64;
        s.cached_bytes = g.regions.bytes() as u64;
        s
    }

    /// Caches an empty region; over-limit or expired regions are evicted.
    ///
    /// # Safety
    /// `[base, base+len)` is a region mapped by the registry's `Os`, registered in the
    /// registry, page-aligned and a page multiple, at least one page long, and nobody uses it
    /// any more: the cache overwrites its first bytes and may unmap it at any time, even before
    /// `push` returns (no reference into the region may be alive across the call). `base`
    /// carries the mapping's provenance: the cache writes through it and `pop` returns it.
    pub unsafe fn push(&self, base: NonNull<u8>, len: usize) {
        self.counters.pushes.add(1);
        let page = hak_os::page_size();
        let decommit = {
            let mut g = self.inner.lock();
            let d = g.limits.decommit && len > page && g.committed >= HOT_COMMITTED;
            if !d {
                // Reserve a hot slot now, so racing pushes cannot exceed the bound.
                g.committed += 1;
            }
            d
        };
        if decommit {
            // SAFETY: the caller gives us the whole unused region; its tail is page-aligned.
            let _ = unsafe {
                self.registry
                    .os()
                    .decommit(NonNull::new_unchecked(base.as_ptr().add(page)), len - page)
            };
        }
        let node = base.as_ptr().cast::<Node>();
        let now = hak_os::monotonic_ns();
        let victims = {
            let mut g = self.inner.lock();
            // SAFETY: the region is ours and at least a page long, so the node fits; it is
            // written through the raw pointer only, then cached once.
            unsafe {
                node.write(Node { links: Links::new(), len, pushed_ns: now, committed: !decommit });
                g.regions.push(node, now);
            }
            Self::evict_locked(&mut g, now)
        };
        self.release(victims);
    }

    /// Takes the most recently cached region of exactly `len` bytes, if any, preferring one
    /// whose pages are committed; it looks at the newest [`POP_VISITS`] regions only. Its first
    /// bytes are garbage (the node); the rest is what it held, or zero if it was decommitted.
    /// The region is still registered as it was.
    pub fn pop(&self, len: usize) -> Option<NonNull<u8>> {
        let now = hak_os::monotonic_ns();
        let (found, victims) = {
            let mut g = self.inner.lock();
            let victims = Self::evict_locked(&mut g, now);
            // The most recent committed region of that size, else the most recent of that size.
            let mut any: *mut Node = core::ptr::null_mut();
            // SAFETY: listed nodes are valid while the lock is held; read in place.
            let hot = unsafe {
                g.regions.find_newest(POP_VISITS, |n| {
                    let (n_len, committed) = ((*n).len, (*n).committed);
                    if n_len == len && !committed && any.is_null() {
                        any = n;
                    }
                    n_len == len && committed
                })
            };
            let n = hot.unwrap_or(any);
            if !n.is_null() {
                // SAFETY: `n` is a listed node.
                unsafe { Self::unlink(&mut g, n) };
            }
            (NonNull::new(n.cast::<u8>()), victims)
        };
        self.release(victims);
        if found.is_some() {
            self.counters.hits.add(1);
        } else {
            self.counters.misses.add(1);
        }
        found
    }

    /// Evicts regions older than the TTL now (the cache also does this on every push and pop).
    pub fn evict_expired(&self) {
        let victims = {
            let mut g = self.inner.lock();
            Self::evict_locked(&mut g, hak_os::monotonic_ns())
        };
        self.release(victims);
    }

    /// Evicts every cached region (unregistered and unmapped). Returns how many.
    pub fn flush(&self) -> usize {
        let victims = {
            let mut g = self.inner.lock();
            g.committed = 0;
            g.regions.take_all()
        };
        let n = victims.len();
        self.release(victims);
        n
    }

    /// Takes the cache's lock before `fork()` (see `hak_sync::Mutex::fork_lock`).
    #[cfg(not(hak_loom))]
    pub fn prefork(&self) {
        self.inner.fork_lock();
    }

    /// Releases the lock [`SuperSlabCache::prefork`] took, in the parent and in the child.
    ///
    /// # Safety
    /// The calling thread ran `prefork` (or is the child of the thread that did).
    #[cfg(not(hak_loom))]
    pub unsafe fn postfork(&self) {
        // SAFETY: forwarded.
        unsafe { self.inner.fork_unlock() };
    }

    /// Maps `n` regions of `len` bytes aligned to `align`, registers them as SuperSlabs and
    /// caches them, so the first allocations find memory without a syscall
    /// (`HAKMEM_PREWARM_SUPERSLABS`). Stops at the first failure; returns how many it cached.
    /// Prewarmed regions still obey the limits.
    pub fn prewarm(&self, n: usize, len: usize, align: usize) -> usize {
        let os = self.registry.os();
        for i in 0..n {
            let Ok(p) = os.map(len, align) else { return i };
            if self.registry.register(p, len, OwnerKind::SuperSlab).is_err() {
                // SAFETY: the region was just mapped and never shared.
                let _ = unsafe { os.unmap(p, len) };
                return i;
            }
            // SAFETY: freshly mapped, registered, unused.
            unsafe { self.push(p, len) };
        }
        n
    }

    /// Takes `n` out of the cache, keeping the committed count.
    ///
    /// # Safety
    /// `n` is listed in `g`.
    unsafe fn unlink(g: &mut Inner, n: *mut Node) {
        // SAFETY: listed nodes are valid under the lock.
        unsafe {
            if (*n).committed {
                g.committed -= 1;
            }
            g.regions.remove(n);
        }
    }

    /// Takes over-limit and expired nodes out, oldest first; returns them as a list.
    fn evict_locked(g: &mut Inner, now: u64) -> List<Lru> {
        let limits = g.limits.region();
        // SAFETY: listed nodes are valid under the lock.
        let victims = unsafe { g.regions.evict(now, &limits) };
        // SAFETY: the victims were just listed, so they are valid; off the cache now.
        for v in unsafe { victims.iter() } {
            // SAFETY: as above.
            if unsafe { (*v).committed } {
                g.committed -= 1;
            }
        }
        victims
    }

    /// Unregisters and unmaps a list of nodes taken out of the cache.
    fn release(&self, mut victims: List<Lru>) {
        let os = self.registry.os();
        // SAFETY: the victims were taken out under the lock and are ours alone; each is read
        // before it is unmapped, and the list is advanced before the next unmap.
        while let Some(v) = unsafe { victims.pop_front() } {
            // SAFETY: as above.
            let len = unsafe { (*v).len };
            // SAFETY: `v` is the region's base pointer, non-null.
            let base = unsafe { NonNull::new_unchecked(v.cast::<u8>()) };
            self.registry.unregister(base, len);
            // SAFETY: unregistered, unlisted, unused: nobody can reach the region any more.
            let _ = unsafe { os.unmap(base, len) };
            self.counters.evictions.add(1);
        }
    }
}

impl Drop for SuperSlabCache<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(all(test, not(hak_loom)))]
mod tests {
    use super::*;
    use hak_os::Os;

    const SS: usize = 2 << 20;

    fn cached_ss(os: &Os, reg: &Registry<'_>) -> NonNull<u8> {
        let p = os.map(SS, SS).unwrap();
        reg.register(p, SS, OwnerKind::SuperSlab).unwrap();
        p
    }

    #[test]
    fn pop_returns_the_most_recent_region_of_that_size() {
        let os = Os::new();
        let reg = Registry::new(&os);
        let cache = SuperSlabCache::new(&reg, CacheLimits::DEFAULT);
        let a = cached_ss(&os, &reg);
        let b = cached_ss(&os, &reg);
        // SAFETY: fresh registered regions.
        unsafe {
            cache.push(a, SS);
            cache.push(b, SS);
        }
        assert_eq!(cache.pop(SS), Some(b));
        assert_eq!(cache.pop(4096), None, "no region of that size");
        assert_eq!(cache.pop(SS), Some(a));
        assert_eq!(cache.pop(SS), None);
        let st = cache.stats();
        assert_eq!((st.pushes, st.hits, st.misses, st.cached), (2, 2, 2, 0));
        assert!(reg.lookup(a.as_ptr() as usize).is_some(), "popped regions stay registered");
        // SAFETY: ours again after pop.
        unsafe {
            cache.push(a, SS);
            cache.push(b, SS);
        }
    }

    #[test]
    fn count_limit_evicts_the_oldest_and_unregisters_it() {
        let os = Os::new();
        let reg = Registry::new(&os);
        let limits = CacheLimits { max_count: 2, ..CacheLimits::DEFAULT };
        let cache = SuperSlabCache::new(&reg, limits);
        let r: [_; 3] = core::array::from_fn(|_| cached_ss(&os, &reg));
        // SAFETY: fresh registered regions.
        unsafe { r.iter().for_each(|&p| cache.push(p, SS)) };
        let st = cache.stats();
        assert_eq!((st.cached, st.evictions), (2, 1));
        assert_eq!(reg.lookup(r[0].as_ptr() as usize), None, "oldest went");
        assert!(reg.lookup(r[2].as_ptr() as usize).is_some());
        assert_eq!(cache.flush(), 2);
        assert_eq!(os.stats().mapped.current, reg_leaf_bytes(&reg));
    }

    fn reg_leaf_bytes(reg: &Registry<'_>) -> u64 {
        reg.leaf_count() * super::super::map::LEAF_BYTES_FOR_TESTS as u64
    }

    #[test]
    fn memory_limit_and_zero_count_evict() {
        let os = Os::new();
        let reg = Registry::new(&os);
        let cache =
            SuperSlabCache::new(&reg, CacheLimits { max_bytes: SS, ..CacheLimits::DEFAULT });
        let (a, b) = (cached_ss(&os, &reg), cached_ss(&os, &reg));
        // SAFETY: fresh registered regions.
        unsafe {
            cache.push(a, SS);
            cache.push(b, SS);
        }
        assert_eq!(cache.stats().cached, 1);
        cache.set_limits(CacheLimits { max_count: 0, ..CacheLimits::DEFAULT });
        assert_eq!(cache.stats().cached, 0);
        assert_eq!(cache.stats().evictions, 2);
    }

    #[test]
    fn expired_regions_are_evicted() {
        let os = Os::new();
        let reg = Registry::new(&os);
        let cache = SuperSlabCache::new(&reg, CacheLimits { ttl_ns: 1, ..CacheLimits::DEFAULT });
        let a = cached_ss(&os, &reg);
        // SAFETY: fresh registered region.
        unsafe { cache.push(a, SS) };
        std::thread::sleep(std::time::Duration::from_millis(2));
        cache.evict_expired();
        assert_eq!(cache.stats().cached, 0);
        assert_eq!(reg.lookup(a.as_ptr() as usize), None);
    }

    #[test]
    fn push_past_the_hot_regions_decommits_all_but_the_first_page() {
        let os = Os::new();
        let reg = Registry::new(&os);
        let cache = SuperSlabCache::new(&reg, CacheLimits::DEFAULT);
        let hot: [_; HOT_COMMITTED] = core::array::from_fn(|_| cached_ss(&os, &reg));
        let a = cached_ss(&os, &reg);
        // SAFETY: the regions are ours until pushed; read back after pop.
        unsafe {
            for &h in &hot {
                h.as_ptr().add(SS - 1).write(7);
                cache.push(h, SS);
            }
            assert_eq!(os.stats().madvise_calls, 0, "the first regions stay committed");
            a.as_ptr().add(SS - 1).write(9);
            cache.push(a, SS);
            assert_eq!(os.stats().decommitted_dontneed, (SS - hak_os::page_size()) as u64);
            // Pop prefers committed regions: the hot ones come back first, intact.
            for _ in 0..HOT_COMMITTED {
                let p = cache.pop(SS).unwrap();
                assert_ne!(p, a);
                assert_eq!(*p.as_ptr().add(SS - 1), 7, "a hot region keeps its pages");
            }
            let p = cache.pop(SS).unwrap();
            assert_eq!(p, a);
            assert_eq!(*p.as_ptr().add(SS - 1), 0, "decommitted with DONTNEED reads zero");
            cache.push(p, SS);
        }
    }

    #[test]
    fn prewarm_maps_registers_and_caches() {
        let os = Os::new();
        let reg = Registry::new(&os);
        let cache = SuperSlabCache::new(&reg, CacheLimits::DEFAULT);
        assert_eq!(cache.prewarm(3, SS, SS), 3);
        assert_eq!(cache.stats().cached, 3);
        os.fail_next_maps(1);
        assert_eq!(cache.prewarm(2, SS, SS), 0, "stops at the first refused mapping");
        let p = cache.pop(SS).unwrap();
        assert_eq!(reg.lookup(p.as_ptr() as usize).unwrap().kind, OwnerKind::SuperSlab);
        // SAFETY: ours after pop.
        unsafe { cache.push(p, SS) };
    }
}
