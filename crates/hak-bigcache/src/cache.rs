//! The cache proper: [`Inner`] (the size-class [`Bins`] plus an LRU list and the accounting the
//! limits need) and [`BigLimits`].
//!
//! Cached blocks are listed twice, both intrusively through their header: in a bin by length
//! (to find a block that fits a request) and in a doubly linked LRU list, newest at the head
//! (to evict the oldest first). Eviction is from the LRU tail while any limit is exceeded:
//! `entries > max_entries`, `bytes > cap()`, or the tail's age `> ttl_ns`.
//!
//! Invariants (under the cache mutex; checked by `BigCache::check_invariants`):
//! - `entries == |LRU| == bins.len()`; a header is in the LRU iff it is in a bin iff
//!   `state == CACHED`; cached blocks have no reserve (`block_len == map_len`);
//! - `bytes == Σ map_len` and `committed == Σ map_len [!decommitted]` over the LRU;
//! - every cached block is still mapped and registered as `Big`; eviction unregisters *under
//!   the lock* and unmaps after it, so a thread holding the lock that finds a `Big` owner in the
//!   registry may read its header.
//!
//! Bounded work: every search goes through [`Bins`], which looks only at classes that hold
//! blocks and at most [`VISIT_MAX`](crate::bins::VISIT_MAX) blocks; nothing here loops over a
//! range of sizes.
//!
//! Concurrency: `Inner` is only ever reached through the cache's `hak_sync::Mutex`; its methods
//! take `&mut self`. Victims are returned as a list (linked through `lru_next`) for the caller
//! to unmap after unlocking.

use core::ptr;

use hak_registry::{OwnerKind, Registry, GRANULE};

use crate::bins::Bins;
use crate::header::{Block, Header, CACHED, LIVE};

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
    /// Most recently cached block, or null.
    lru_head: *mut Header,
    /// Least recently cached block (the next to evict), or null.
    lru_tail: *mut Header,
    /// Blocks cached.
    pub(crate) entries: usize,
    /// Bytes of mappings cached.
    pub(crate) bytes: usize,
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
            lru_head: ptr::null_mut(),
            lru_tail: ptr::null_mut(),
            entries: 0,
            bytes: 0,
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
    /// at once. Returns the victims (linked through `lru_next`), already unregistered, for the
    /// caller to unmap after unlocking.
    ///
    /// # Safety
    /// `b` heads a mapped block registered in `reg` as `Big` at its own address, with
    /// `block_len == map_len`, not in the cache, and nobody else uses it.
    pub(crate) unsafe fn put(&mut self, reg: &Registry<'_>, b: Block, now: u64) -> *mut Header {
        // SAFETY: `b` is ours (caller's contract) and we hold the lock.
        let (len, decommitted) = unsafe {
            b.set_state(CACHED);
            b.set_cached_ns(now);
            (b.map_len(), b.decommitted())
        };
        if !self.would_keep(len) {
            // SAFETY: as above.
            unsafe { b.set_state(LIVE) }; // not cached: it leaves as a victim
            return victim(reg, b, ptr::null_mut());
        }
        // SAFETY: `b` is valid and in no bin; the old head, if any, is a cached header.
        unsafe {
            self.bins.insert(b);
            b.set_lru_prev(ptr::null_mut());
            b.set_lru_next(self.lru_head);
            match Block::from_link(self.lru_head) {
                Some(old) => old.set_lru_prev(b.link()),
                None => self.lru_tail = b.link(),
            }
        }
        self.lru_head = b.link();
        self.entries += 1;
        self.bytes += len;
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
    ) -> (Option<Block>, *mut Header) {
        let mut victims = self.evict(reg, now);
        let aligned = |b: Block| b.addr().is_multiple_of(w.align);
        let mut found = self.bins.find_up(w.need, w.most, aligned);
        let mut trimmed = false;
        if found.is_none() && w.need >= TRIM_MIN {
            // A larger cached block (up to TRIM_FIT times the request), split at the first
            // granule boundary past `keep`: the block handed out keeps less than 1 MiB of
            // slack beyond what the request asked for, the cache spares a fresh mapping and its
            // page faults, and the tail stays cached (still committed) for the next request.
            let widest = w.need.saturating_mul(TRIM_FIT).max(w.most);
            found = self.bins.find_up(w.most.saturating_add(1), widest, aligned);
            trimmed = found.is_some();
        }
        let Some(b) = found else { return (None, victims) };
        // SAFETY: `b` is listed, so it is a cached header in the bins and the LRU; it is ours
        // from here on.
        unsafe {
            self.bins.remove(b);
            self.lru_unlink(b);
        }
        if trimmed {
            // SAFETY: `b` is ours now (unlisted); we hold the lock.
            if let Some(tail) = unsafe { split(reg, b, w.keep) } {
                self.splits += 1;
                // SAFETY: the tail is a fresh header of a mapped block registered as Big at
                // its own address, without reserve, in no list, and nobody else can reach it.
                let more = unsafe { self.put(reg, tail, now) };
                victims = append(victims, more);
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
    /// unregistered, reachable by nobody but the caller, linked through `lru_next`; returns
    /// them, their total length, and the victims of expiry.
    pub(crate) fn take_pieces(
        &mut self,
        reg: &Registry<'_>,
        need: usize,
        now: u64,
    ) -> (*mut Header, usize, *mut Header) {
        let victims = self.evict(reg, now);
        let unit = if need >= HUGE_PAGE { HUGE_PAGE } else { 1 };
        let least = need.saturating_sub(GROW_SCAN).max(GROW_FROM_MIN);
        let (mut pieces, mut total, mut n) = (ptr::null_mut(), 0, 0);
        let mut tail: Option<Block> = None;
        while n < MAX_PIECES && need - total >= least {
            let room = (need - total).min(need - 1);
            let found = self.bins.find_down(least, room, |b| {
                // SAFETY: listed headers are valid under the lock.
                unsafe {
                    !b.decommitted()
                        && b.map_len().is_multiple_of(unit)
                        && (!b.multi_map()
                            || (unit == HUGE_PAGE && b.addr().is_multiple_of(HUGE_PAGE)))
                }
            });
            let Some(b) = found else { break };
            // SAFETY: `b` is listed; it is ours from here on.
            unsafe {
                self.bins.remove(b);
                self.lru_unlink(b);
                b.set_state(LIVE);
                let len = b.map_len();
                reg.unregister(b.base(), len);
                total += len;
                match tail {
                    Some(t) => t.set_lru_next(b.link()),
                    None => pieces = b.link(),
                }
            }
            tail = Some(b);
            n += 1;
        }
        (pieces, total, victims)
    }

    /// Unlinks every cached block, unregisters it and returns them all as victims.
    pub(crate) fn drain(&mut self, reg: &Registry<'_>) -> *mut Header {
        let mut victims = ptr::null_mut();
        let mut p = self.lru_head;
        while let Some(b) = Block::from_link(p) {
            // SAFETY: listed headers are valid under the lock.
            p = unsafe { b.lru_next() };
            // SAFETY: as above; it leaves every list here.
            unsafe { b.set_state(LIVE) };
            victims = victim(reg, b, victims);
        }
        self.bins.clear();
        self.lru_head = ptr::null_mut();
        self.lru_tail = ptr::null_mut();
        self.entries = 0;
        self.bytes = 0;
        self.committed = 0;
        victims
    }

    /// Evicts from the LRU tail while a limit is exceeded; returns the victims.
    pub(crate) fn evict(&mut self, reg: &Registry<'_>, now: u64) -> *mut Header {
        let mut victims = ptr::null_mut();
        while let Some(t) = Block::from_link(self.lru_tail) {
            // SAFETY: the tail is a cached header, valid under the lock.
            let expired = now.saturating_sub(unsafe { t.cached_ns() }) > self.limits.ttl_ns;
            if !expired && self.entries <= self.limits.max_entries && self.bytes <= self.cap() {
                break;
            }
            // SAFETY: `t` is listed in the LRU and the bins.
            unsafe {
                self.bins.remove(t);
                self.lru_unlink(t);
                t.set_state(LIVE);
            }
            victims = victim(reg, t, victims);
        }
        victims
    }

    /// The LRU list from newest to oldest (for the invariant check).
    pub(crate) fn lru_iter(&self) -> impl Iterator<Item = Block> + '_ {
        let mut p = self.lru_head;
        core::iter::from_fn(move || {
            let b = Block::from_link(p)?;
            // SAFETY: listed headers are valid under the lock (we hold `&self` of `Inner`).
            p = unsafe { b.lru_next() };
            Some(b)
        })
    }

    /// Removes `b` from the LRU list and the accounting.
    ///
    /// # Safety
    /// `b` is in the LRU list.
    unsafe fn lru_unlink(&mut self, b: Block) {
        // SAFETY: listed headers and their neighbours are valid under the lock.
        unsafe {
            let (prev, next) = (b.lru_prev(), b.lru_next());
            match Block::from_link(prev) {
                Some(p) => p.set_lru_next(next),
                None => self.lru_head = next,
            }
            match Block::from_link(next) {
                Some(n) => n.set_lru_prev(prev),
                None => self.lru_tail = prev,
            }
            b.set_lru_prev(ptr::null_mut());
            b.set_lru_next(ptr::null_mut());
            self.entries -= 1;
            self.bytes -= b.map_len();
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

/// `a` followed by `b` (victim lists linked through `lru_next`).
pub(crate) fn append(a: *mut Header, b: *mut Header) -> *mut Header {
    let Some(mut p) = Block::from_link(a) else { return b };
    // SAFETY: victim lists hold valid, unlisted headers owned by the caller.
    unsafe {
        while let Some(n) = Block::from_link(p.lru_next()) {
            p = n;
        }
        p.set_lru_next(b);
    }
    a
}

/// Unregisters the block of `b` and pushes it on the `victims` list; returns the new list.
pub(crate) fn victim(reg: &Registry<'_>, b: Block, victims: *mut Header) -> *mut Header {
    // SAFETY: `b` is a valid header no longer listed anywhere; we hold the lock.
    let len = unsafe { b.map_len() };
    reg.unregister(b.base(), len);
    // SAFETY: as above.
    unsafe { b.set_lru_next(victims) };
    b.link()
}
