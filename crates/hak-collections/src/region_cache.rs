//! [`RegionCache`]: empty regions kept for reuse, newest first, with count, byte and age
//! limits.
//!
//! Every tier keeps some memory it no longer uses rather than unmapping it at once (empty
//! SuperSlabs, empty mid chunks, freed big blocks), because the next request often wants the
//! same again. This is the one mechanism for that: an LRU [`List`] of regions plus the count
//! and bytes the limits need. The region's bookkeeping lives in the region itself (an
//! [`Adapter`] gives its [`Links`](crate::Links), a [`Region`] its length and the word the
//! cache stamps with the time it was cached), so the cache has no capacity of its own. What a
//! tier does with a region on its way in or out (decommit, registry bookkeeping, unmapping)
//! stays with the tier: the cache hands evicted regions back as a list, for the tier to release
//! after it has dropped its lock.
//!
//! Invariants: `count() == |list|`, `bytes() == Σ Region::bytes` over the list, stamps do not
//! decrease from tail to head when `push` is given a non-decreasing clock. After
//! [`RegionCache::evict`] with limits `L` and time `now`: `count() <= L.max_count`,
//! `bytes() <= L.max_bytes`, and no region is older than `L.ttl_ns`.
//!
//! Bounded work: `push`, `remove`, `take_oldest` are constant time; `evict` is proportional
//! to what it evicts; searches take a visit bound ([`RegionCache::find_newest`]).
//!
//! Concurrency: none; the owning tier serialises access (a mutex around it).

use crate::list::{Adapter, List};

/// Limits of a [`RegionCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most regions kept.
    pub max_count: usize,
    /// Most bytes kept.
    pub max_bytes: usize,
    /// Oldest age kept, in the clock's unit (hakmem passes nanoseconds).
    pub ttl_ns: u64,
}

/// A region a [`RegionCache`] can hold.
///
/// # Safety
/// In addition to [`Adapter`]'s contract: for a valid node, `bytes` returns the same value
/// while it is cached, and `stamp` returns a pointer valid for reads and writes of a `u64`,
/// derived from the node, that overlaps neither its links nor anything else the cache's user
/// writes while the region is cached.
pub unsafe trait Region: Adapter {
    /// Bytes the region counts for.
    ///
    /// # Safety
    /// `n` is a valid node.
    unsafe fn bytes(n: Self::Node) -> usize;
    /// Where the cache records when the region was cached.
    ///
    /// # Safety
    /// `n` is a valid node.
    unsafe fn stamp(n: Self::Node) -> *mut u64;
}

/// The cache. See the module docs.
pub struct RegionCache<A: Region> {
    lru: List<A>,
    bytes: usize,
}

impl<A: Region> core::fmt::Debug for RegionCache<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RegionCache")
            .field("count", &self.lru.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl<A: Region> Default for RegionCache<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Region> RegionCache<A> {
    /// Nothing cached.
    pub const fn new() -> RegionCache<A> {
        RegionCache { lru: List::new(), bytes: 0 }
    }

    /// Regions cached.
    #[inline]
    pub fn count(&self) -> usize {
        self.lru.len()
    }

    /// Bytes cached.
    #[inline]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is cached.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.lru.is_empty()
    }

    /// The most recently cached region.
    #[inline]
    pub fn newest(&self) -> Option<A::Node> {
        self.lru.head()
    }

    /// The region cached longest ago (the next to evict).
    #[inline]
    pub fn oldest(&self) -> Option<A::Node> {
        self.lru.tail()
    }

    /// The LRU list itself, newest first (to walk it; changes go through the cache).
    #[inline]
    pub fn list(&self) -> &List<A> {
        &self.lru
    }

    /// When `n` was cached.
    ///
    /// # Safety
    /// `n` is a cached region.
    #[inline]
    pub unsafe fn cached_at(n: A::Node) -> u64 {
        // SAFETY: `n` is valid (caller); the stamp is readable.
        unsafe { *A::stamp(n) }
    }

    /// Caches `n` as the newest region, stamped `now`. Limits are not applied here: call
    /// [`RegionCache::evict`] when convenient (usually right after, under the same lock).
    ///
    /// # Safety
    /// `n` is a valid region, not cached here, on no other list of this adapter, and stays
    /// valid while cached; every cached region is valid.
    pub unsafe fn push(&mut self, n: A::Node, now: u64) {
        // SAFETY: `n` is valid (caller); the stamp is writable.
        unsafe {
            A::stamp(n).write(now);
            self.bytes += A::bytes(n);
            self.lru.push_front(n);
        }
    }

    /// Takes `n` out (found through an index of the tier's own, or by a search).
    ///
    /// # Safety
    /// `n` is cached here; every cached region is valid.
    pub unsafe fn remove(&mut self, n: A::Node) {
        // SAFETY: per the contract.
        unsafe {
            self.bytes -= A::bytes(n);
            self.lru.remove(n);
        }
    }

    /// The newest region for which `pred` holds, looking at no more than `max_visits`; it stays
    /// cached.
    ///
    /// # Safety
    /// Every cached region is valid.
    pub unsafe fn find_newest(
        &self,
        max_visits: usize,
        pred: impl FnMut(A::Node) -> bool,
    ) -> Option<A::Node> {
        // SAFETY: forwarded.
        unsafe { self.lru.find(max_visits, pred) }
    }

    /// Takes the oldest region out if it was cached at or before `older_than`.
    ///
    /// # Safety
    /// Every cached region is valid.
    pub unsafe fn take_oldest(&mut self, older_than: u64) -> Option<A::Node> {
        let n = self.lru.tail()?;
        // SAFETY: `n` is cached.
        unsafe {
            if Self::cached_at(n) > older_than {
                return None;
            }
            self.remove(n);
        }
        Some(n)
    }

    /// Takes out, oldest first, every region the limits exclude at time `now` (over the count,
    /// over the bytes, or older than the TTL) and returns them as a list (linked through the
    /// same links, oldest first) for the caller to release, typically after unlocking.
    ///
    /// # Safety
    /// Every cached region is valid.
    pub unsafe fn evict(&mut self, now: u64, limits: &Limits) -> List<A> {
        let mut victims = List::new();
        while let Some(t) = self.lru.tail() {
            // SAFETY: `t` is cached.
            let age = now.saturating_sub(unsafe { Self::cached_at(t) });
            if self.count() <= limits.max_count
                && self.bytes <= limits.max_bytes
                && age <= limits.ttl_ns
            {
                break;
            }
            // SAFETY: `t` is cached; once out it is on no list and may go on `victims`.
            unsafe {
                self.remove(t);
                victims.push_back(t);
            }
        }
        victims
    }

    /// Takes every region out, newest first, as a list.
    pub fn take_all(&mut self) -> List<A> {
        self.bytes = 0;
        self.lru.take()
    }

    /// Whether the count, bytes and links agree (tests and debug checks; walks the list).
    ///
    /// # Safety
    /// Every cached region is valid.
    pub unsafe fn is_consistent(&self) -> bool {
        // SAFETY: forwarded.
        unsafe {
            let mut sum = 0usize;
            for n in self.lru.iter() {
                sum += A::bytes(n);
            }
            self.lru.is_consistent() && sum == self.bytes
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list::Links;
    use std::boxed::Box;
    use std::vec::Vec;

    struct Reg {
        links: Links<*mut Reg>,
        len: usize,
        stamp: u64,
    }
    struct R;
    // SAFETY: field pointers derived from `n`, no references.
    unsafe impl Adapter for R {
        type Node = *mut Reg;
        unsafe fn links(n: *mut Reg) -> *mut Links<*mut Reg> {
            // SAFETY: `n` valid (caller).
            unsafe { &raw mut (*n).links }
        }
    }
    // SAFETY: `len` is never changed while cached; `stamp` is a field of its own.
    unsafe impl Region for R {
        unsafe fn bytes(n: *mut Reg) -> usize {
            // SAFETY: `n` valid (caller).
            unsafe { (*n).len }
        }
        unsafe fn stamp(n: *mut Reg) -> *mut u64 {
            // SAFETY: `n` valid (caller).
            unsafe { &raw mut (*n).stamp }
        }
    }

    fn regions(lens: &[usize]) -> *mut Reg {
        let v: Vec<Reg> =
            lens.iter().map(|&len| Reg { links: Links::new(), len, stamp: 0 }).collect();
        Box::into_raw(v.into_boxed_slice()).cast::<Reg>()
    }
    fn free(p: *mut Reg, n: usize) {
        // SAFETY: made by `regions` with `n` entries.
        drop(unsafe { Box::from_raw(core::ptr::slice_from_raw_parts_mut(p, n)) });
    }
    fn lens(l: &List<R>) -> Vec<usize> {
        // SAFETY: the regions outlive the walk.
        unsafe { l.iter().map(|n| (*n).len).collect() }
    }

    const NONE: Limits = Limits { max_count: usize::MAX, max_bytes: usize::MAX, ttl_ns: u64::MAX };

    #[test]
    fn evict_applies_count_bytes_and_age_from_the_oldest() {
        let base = regions(&[10, 20, 30, 40]);
        let mut c = RegionCache::<R>::new();
        // SAFETY: the regions are valid for the whole test.
        unsafe {
            for i in 0..4 {
                c.push(base.add(i), 100 + i as u64);
            }
            assert_eq!((c.count(), c.bytes()), (4, 100));
            assert!(c.evict(103, &NONE).is_empty());

            let v = c.evict(103, &Limits { max_count: 3, ..NONE });
            assert_eq!(lens(&v), [10], "count: the oldest leaves");
            let v = c.evict(103, &Limits { max_bytes: 70, ..NONE });
            assert_eq!(lens(&v), [20], "bytes: 90 > 70, one more leaves");
            let v = c.evict(113, &Limits { ttl_ns: 10, ..NONE });
            assert_eq!(lens(&v), [30], "age: at 113, region 2 (stamped 102) is 11 old and leaves, region 3 is 10 old and stays");
            assert_eq!((c.count(), c.bytes()), (1, 40));
            assert!(c.is_consistent());
            assert_eq!(c.newest(), Some(base.add(3)));
        }
        free(base, 4);
    }

    #[test]
    fn remove_find_take_oldest_and_take_all_keep_the_accounting() {
        let base = regions(&[8, 16, 8, 32]);
        let mut c = RegionCache::<R>::new();
        // SAFETY: as above.
        unsafe {
            for i in 0..4 {
                c.push(base.add(i), i as u64);
            }
            // Newest of 8 bytes is region 2.
            assert_eq!(c.find_newest(8, |n| (*n).len == 8), Some(base.add(2)));
            assert_eq!(c.find_newest(1, |n| (*n).len == 8), None, "bounded visits");
            c.remove(base.add(2));
            assert_eq!((c.count(), c.bytes()), (3, 56));
            assert_eq!(c.take_oldest(0), Some(base.add(0)));
            assert_eq!(c.take_oldest(0), None, "region 1 was cached at 1");
            assert!(c.is_consistent());
            let all = c.take_all();
            assert_eq!(lens(&all), [32, 16]);
            assert!(c.is_empty() && c.bytes() == 0);
        }
        free(base, 4);
    }
}
