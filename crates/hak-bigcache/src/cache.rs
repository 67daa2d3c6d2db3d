//! The cache proper: [`Inner`] (the size-class [`Bins`] plus an LRU region cache and the
//! accounting the limits need) and [`BigLimits`].
//!
//! Cached blocks are listed twice, both intrusively through their header: in a bin by length
//! (to find a block that fits a request) and in the LRU, a `hak_collections::RegionCache`
//! newest first (to evict the oldest first; it keeps the count and bytes). Eviction is from the
//! LRU tail while any limit is exceeded: `entries > max_entries`, `bytes > cap()` (the dynamic
//! byte cap, handed to the region cache with each eviction), or the tail's age `> ttl_ns`. The
//! tier keeps what the region cache does not know: the bins, the committed bytes and the
//! decommit policy.
//!
//! Invariants (under the cache mutex; checked by `BigCache::check_invariants`):
//! - `lru.count() == |LRU| == |bins|`; a header is in the LRU iff it is in a bin iff
//!   `state == CACHED`; cached blocks have no reserve (`block_len == map_len`);
//! - `lru.bytes() == Σ map_len` and `committed == Σ map_len [!decommitted]` over the LRU;
//! - every cached block is still mapped and registered as `Big`; eviction unregisters *under
//!   the lock* and unmaps after it, so a thread holding the lock that finds a `Big` owner in the
//!   registry may read its header.
//!
//! Bounded work: every search goes through [`Bins`], which looks only at classes that hold
//! blocks and at most [`VISIT_MAX`](crate::bins::VISIT_MAX) blocks; nothing here loops over a
//! range of sizes.
//!
//! Concurrency: `Inner` is only ever reached through the cache's `hak_sync::Mutex`; its methods
//! take `&mut self`. Victims are returned as a [`Victims`] list (through the LRU links) for the
//! caller to unmap after unlocking.

use hak_collections::{Limits, List, RegionCache};
use hak_registry::{OwnerKind, Registry, GRANULE};

use crate::bins::{Bins, Order};
use crate::header::{Block, Header, CACHED, LIVE};

// SAFETY: `lru` is the LRU's (and, once a block is out of it, its victims or gathered pieces
// list's: never both at once); `map_len` of a cached block does not change (a block is split
// or cut only after it left the cache); nothing but the region cache writes `cached_ns`.
hak_collections::adapter! {
    /// A cached header's place in the LRU: its `lru` links, its `map_len` and its `cached_ns`
    /// stamp. Victims and gathered pieces are listed through the same links once out of the
    /// LRU.
    pub(crate) unsafe struct Lru for Header { links: lru, bytes: map_len, stamp: cached_ns }
}

/// Blocks out of the cache, unregistered, for their owner to unmap (or move) after unlocking.
pub(crate) type Victims = List<Lru>;

/// Limits of a [`BigCache`](crate::BigCache). The facade fills `max_bytes` and `ttl_ns` from
/// `HAKMEM_BIGCACHE_MAX_MB` and `HAKMEM_BIGCACHE_TTL_SEC`.
///
/// Why the defaults evict rather than decommit: a cached block is worth keeping only while its
/// pages are resident (a decommitted one faults all of them in again, like a fresh mapping),
/// so past the cap the oldest blocks are unmapped, which returns their memory just as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BigLimits {
    /// Most bytes of mappings kept in the cache, decommitted or not: this, or a quarter of the
    /// bytes of live big blocks if that is more (default 64 MiB). A block longer than the cap
    /// is unmapped on free instead of cached.
    pub max_bytes: usize,
    /// Most blocks kept (default 1024; 0 disables caching).
    pub max_entries: usize,
    /// Oldest age a cached block may reach, in nanoseconds (default 2 s).
    pub ttl_ns: u64,
    /// Committed-bytes threshold for decommit (default `usize::MAX`, never): a freed block
    /// that would bring the cache's committed (not decommitted) bytes above this has every page
    /// past its header page decommitted before it is cached, so it costs address space, not
    /// RSS. 0 always decommits.
    pub decommit_over: usize,
}

impl BigLimits {
    /// 64 MiB (or a quarter of the live bytes), 1024 blocks, 2 s, no decommit.
    pub const DEFAULT: BigLimits = BigLimits {
        max_bytes: 64 << 20,
        max_entries: 1024,
        ttl_ns: 2_000_000_000,
        decommit_over: usize::MAX,
    };
}

impl Default for BigLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How much larger than the request a cached block may be and still be split for it.
const TRIM_FIT: usize = 4;
/// Smallest request that may split a larger cached block (1 MiB): smaller ones (mid sizes
/// served here) would whittle the big blocks that later big requests reuse into pieces too
/// small for them.
const TRIM_MIN: usize = 1 << 20;
/// Smallest cached block [`Inner::take_pieces`] hands out (1 MiB).
pub(crate) const GROW_FROM_MIN: usize = 1 << 20;
/// How far below the request (in bytes) [`Inner::take_pieces`] looks for pieces (64 MiB).
const GROW_SCAN: usize = 64 << 20;
/// Most cached blocks one request gathers (each is one `mremap`, or one per 2 MiB window).
const MAX_PIECES: usize = 4;
/// Transparent huge page size on x86-64 and arm64 with 4 KiB pages (2 MiB).
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// What a request wants from the cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Want {
    /// Mapping bytes the block needs.
    pub(crate) need: usize,
    /// Alignment of the mapping's base.
    pub(crate) align: usize,
    /// Longest block taken as it is: `need * 5 / 4` for a plain request, more for one that
    /// expects to grow (a block up to this long serves it and its next growths in place).
    pub(crate) most: usize,
    /// Where a larger block is cut (rounded up to a granule): `need` for a plain request,
    /// `most` for one that expects to grow.
    pub(crate) keep: usize,
    /// The user block's offset and size to record in the block taken.
    pub(crate) user_off: usize,
    /// As above.
    pub(crate) size: usize,
}

impl Want {
    /// A plain request: blocks of `need ..= need * 5 / 4` (the 1.25x rule).
    pub(crate) fn plain(need: usize, align: usize, user_off: usize, size: usize) -> Want {
        Want { need, align, most: need.saturating_add(need / 4), keep: need, user_off, size }
    }

    /// A request that expects to grow: any block of `need ..= room` bytes serves it, and a
    /// larger one is cut after `room`.
    pub(crate) fn growing(
        need: usize,
        room: usize,
        align: usize,
        user_off: usize,
        size: usize,
    ) -> Want {
        let most = room.max(need.saturating_add(need / 4));
        Want { need, align, most, keep: most, user_off, size }
    }
}

/// Everything behind the cache mutex. See the module docs.
#[derive(Debug)]
pub(crate) struct Inner {
    /// Cached blocks by length.
    pub(crate) bins: Bins,
    /// Cached blocks, newest first, with their count and bytes.
    pub(crate) lru: RegionCache<Lru>,
    /// Bytes of cached mappings that were not decommitted.
    pub(crate) committed: usize,
    /// The limits in force.
    pub(crate) limits: BigLimits,
    /// Cached blocks split for a smaller request (the tail stayed cached).
    pub(crate) splits: u64,
    /// Bytes of live big blocks as of the last locked operation that set it (for [`Inner::cap`]).
    pub(crate) live: usize,
}

impl Inner {
    /// An empty cache with `limits`.
    pub(crate) const fn new(limits: BigLimits) -> Inner {
        Inner {
            bins: Bins::new(),
            lru: RegionCache::new(),
            committed: 0,
            limits,
            splits: 0,
            live: 0,
        }
    }

    /// The most bytes the cache keeps now: `max_bytes`, or a quarter of the live bytes if more,
    /// so a program with a large big-block heap keeps a cache in proportion.
    pub(crate) fn cap(&self) -> usize {
        self.limits.max_bytes.max(self.live / 4)
    }

    /// Whether a block of `map_len` bytes would be cached on free (rather than unmapped).
    pub(crate) fn would_keep(&self, map_len: usize) -> bool {
        self.limits.max_entries > 0 && map_len <= self.cap()
    }

    /// Whether a block of `map_len` bytes entering the cache now should be decommitted.
    pub(crate) fn wants_decommit(&self, map_len: usize) -> bool {
        self.committed.saturating_add(map_len) > self.limits.decommit_over
    }

    /// Caches `b` (a block leaving its user, without reserve) and evicts what the limits
    /// exclude. A block the limits cannot hold at all is unregistered and returned as a victim
    /// at once. Returns the victims, already unregistered, for the caller to unmap after
    /// unlocking.
    ///
    /// # Safety
    /// `b` heads a mapped block registered in `reg` as `Big` at its own address, with
    /// `block_len == map_len`, not in the cache, and nobody else uses it.
    pub(crate) unsafe fn put(&mut self, reg: &Registry<'_>, b: Block, now: u64) -> Victims {
        // SAFETY: `b` is ours (caller's contract) and we hold the lock.
        let (len, decommitted) = unsafe { (b.map_len(), b.decommitted()) };
        if !self.would_keep(len) {
            let mut victims = Victims::new();
            // SAFETY: as above; it is in no list, and leaves as a victim.
            unsafe {
                b.set_state(LIVE);
                reg.unregister(b.base(), len);
                victims.push_back(b.link());
            }
            return victims;
        }
        // SAFETY: `b` is valid, in no list, and stays mapped while cached (caller); listed
        // headers are valid under the lock.
        unsafe {
            b.set_state(CACHED);
            self.bins.insert(b);
            self.lru.push(b.link(), now);
        }
        if !decommitted {
            self.committed += len;
        }
        self.evict(reg, now)
    }

    /// Takes a cached block for `w`: one of `need ..= most` bytes whose base satisfies the
    /// alignment, else (for requests of at least 1 MiB) one of up to 4x `need`, split at the
    /// first granule boundary past `keep` (the tail stays cached). It becomes LIVE with
    /// `user_off` and `size` written here, under the lock, so a racing (invalid) free of the
    /// same address reads a consistent header. Also evicts expired blocks first. Returns the
    /// block, if any, and the victims.
    pub(crate) fn take(
        &mut self,
        reg: &Registry<'_>,
        w: Want,
        now: u64,
    ) -> (Option<Block>, Victims) {
        let mut victims = self.evict(reg, now);
        let aligned = |b: Block| b.addr().is_multiple_of(w.align);
        let mut found = self.bins.find(w.need, w.most, Order::Smallest, aligned);
        let mut trimmed = false;
        if found.is_none() && w.need >= TRIM_MIN {
            // A larger cached block (up to TRIM_FIT times the request), split at the first
            // granule boundary past `keep`: the block handed out keeps less than 1 MiB of
            // slack beyond what the request asked for, the cache spares a fresh mapping and its
            // page faults, and the tail stays cached (still committed) for the next request.
            let widest = w.need.saturating_mul(TRIM_FIT).max(w.most);
            found = self.bins.find(w.most.saturating_add(1), widest, Order::Smallest, aligned);
            trimmed = found.is_some();
        }
        let Some(b) = found else { return (None, victims) };
        // SAFETY: `b` is listed, so it is a cached header in the bins and the LRU; it is ours
        // from here on.
        unsafe { self.unlist(b) };
        if trimmed {
            // SAFETY: `b` is ours now (unlisted); we hold the lock.
            if let Some(tail) = unsafe { split(reg, b, w.keep) } {
                self.splits += 1;
                // SAFETY: the tail is a fresh header of a mapped block registered as Big at
                // its own address, without reserve, in no list, and nobody else can reach it.
                let mut more = unsafe { self.put(reg, tail, now) };
                // SAFETY: victims are valid headers in no other list of these links.
                while let Some(v) = unsafe { more.pop_front() } {
                    // SAFETY: as above.
                    unsafe { victims.push_back(v) };
                }
            }
        }
        // SAFETY: as above; it is ours now.
        unsafe {
            b.set_state(LIVE);
            b.set_user_off(w.user_off);
            b.set_size(w.size);
        }
        (Some(b), victims)
    }

    /// Takes committed cached blocks shorter than `need` bytes whose lengths add up to at
    /// most `need`, largest first (at most [`MAX_PIECES`], each at least [`GROW_FROM_MIN`]
    /// and at least `need - GROW_SCAN`), for the caller to move into one fresh mapping
    /// (`BigCache::alloc`). For requests of a huge page or more only blocks of whole huge pages
    /// qualify, so every piece lands huge-page-aligned. The pieces leave the cache
    /// unregistered, reachable by nobody but the caller, listed largest first; returns them,
    /// their total length, and the victims of expiry.
    pub(crate) fn take_pieces(
        &mut self,
        reg: &Registry<'_>,
        need: usize,
        now: u64,
    ) -> (Victims, usize, Victims) {
        let victims = self.evict(reg, now);
        let unit = if need >= HUGE_PAGE { HUGE_PAGE } else { 1 };
        let least = need.saturating_sub(GROW_SCAN).max(GROW_FROM_MIN);
        let (mut pieces, mut total) = (Victims::new(), 0);
        while pieces.len() < MAX_PIECES && need - total >= least {
            let room = (need - total).min(need - 1);
            let found = self.bins.find(least, room, Order::Largest, |b| {
                // SAFETY: listed headers are valid under the lock.
                unsafe {
                    !b.decommitted()
                        && b.map_len().is_multiple_of(unit)
                        && (!b.multi_map()
                            || (unit == HUGE_PAGE && b.addr().is_multiple_of(HUGE_PAGE)))
                }
            });
            let Some(b) = found else { break };
            // SAFETY: `b` is listed; it is ours from here on, in no list once unlisted.
            unsafe {
                self.unlist(b);
                b.set_state(LIVE);
                let len = b.map_len();
                reg.unregister(b.base(), len);
                total += len;
                pieces.push_back(b.link());
            }
        }
        (pieces, total, victims)
    }

    /// Takes every cached block out, unregistered, as victims.
    pub(crate) fn drain(&mut self, reg: &Registry<'_>) -> Victims {
        let none = Limits { max_count: 0, max_bytes: 0, ttl_ns: 0 };
        self.evict_to(reg, 0, &none)
    }

    /// Evicts from the LRU tail while a limit is exceeded; returns the victims.
    pub(crate) fn evict(&mut self, reg: &Registry<'_>, now: u64) -> Victims {
        let limits = Limits {
            max_count: self.limits.max_entries,
            max_bytes: self.cap(),
            ttl_ns: self.limits.ttl_ns,
        };
        self.evict_to(reg, now, &limits)
    }

    /// Evicts from the LRU tail what `limits` exclude at `now`: out of the bins and the
    /// accounting, LIVE (no longer findable as cached), unregistered.
    fn evict_to(&mut self, reg: &Registry<'_>, now: u64, limits: &Limits) -> Victims {
        // SAFETY: cached headers are valid under the lock.
        let victims = unsafe { self.lru.evict(now, limits) };
        // SAFETY: the victims are valid headers, out of the LRU but still in the bins; the
        // iterator is not disturbed (their LRU links do not change).
        for p in unsafe { victims.iter() } {
            let Some(b) = Block::from_link(p) else { continue };
            // SAFETY: as above.
            unsafe {
                self.forget(b);
                b.set_state(LIVE);
                reg.unregister(b.base(), b.map_len());
            }
        }
        victims
    }

    /// Takes the cached `b` out of the LRU, the bins and the accounting.
    ///
    /// # Safety
    /// `b` is cached.
    unsafe fn unlist(&mut self, b: Block) {
        // SAFETY: forwarded; listed headers are valid under the lock.
        unsafe {
            self.lru.remove(b.link());
            self.forget(b);
        }
    }

    /// Takes `b`, out of the LRU already, out of the bins and the committed bytes.
    ///
    /// # Safety
    /// `b` is in the bins.
    unsafe fn forget(&mut self, b: Block) {
        // SAFETY: forwarded; listed headers are valid under the lock.
        unsafe {
            self.bins.remove(b);
            if !b.decommitted() {
                self.committed -= b.map_len();
            }
        }
    }
}

/// Splits the unlisted block `b` after `round_up(keep, GRANULE)` bytes, so both parts start
/// on the registry's grid: `b` keeps the front (registered again at its new length) and the
/// tail becomes a block of its own, registered as `Big`, with a LIVE header and `b`'s
/// decommit, huge-page and `multi_map` flags and spread count, for the caller to cache. `None` (nothing changed)
/// if the tail would be empty or the registry refused.
///
/// # Safety
/// `b` heads a block taken out of the cache (ours alone), without reserve, and the lock is
/// held.
unsafe fn split(reg: &Registry<'_>, b: Block, keep: usize) -> Option<Block> {
    // SAFETY: forwarded: our block.
    let (old, decommitted, multi_map, huge, spread) =
        unsafe { (b.map_len(), b.decommitted(), b.multi_map(), b.huge(), b.spread()) };
    let front = keep.checked_next_multiple_of(GRANULE)?;
    if front >= old {
        return None;
    }
    // SAFETY: `front < old`, inside the mapping; the handle keeps the mapping's provenance.
    let t = unsafe { Block::from_base(b.at(front)) };
    reg.unregister(b.base(), old);
    if reg.register(b.base(), front, OwnerKind::Big).is_err()
        || reg.register(t.base(), old - front, OwnerKind::Big).is_err()
    {
        // The leaves exist, so this cannot fail; if it did, keep the block whole.
        reg.unregister(b.base(), old);
        let _ = reg.register(b.base(), old, OwnerKind::Big);
        return None;
    }
    // SAFETY: our block; the tail is granule-aligned, at least a granule, and nobody else's.
    unsafe {
        b.set_map_len(front);
        b.set_block_len(front);
        t.init(old - front, 0, 0);
        t.set_decommitted(decommitted);
        // Either part may hold pages of several mappings.
        t.set_multi_map(multi_map);
        t.set_huge(huge);
        t.set_spread(spread);
    }
    Some(t)
}
