//! The cache proper: [`Inner`] (the hash [`Table`] plus an LRU list and the accounting the
//! limits need) and [`BigLimits`].
//!
//! Cached blocks are listed twice, both intrusively through their [`Header`]: in the table by
//! key (to find a block that fits a request) and in a doubly linked LRU list, newest at the
//! head (to evict the oldest first). Eviction is from the LRU tail while any limit is exceeded:
//! `entries > max_entries`, `bytes > max_bytes`, or the tail's age `> ttl_ns`.
//!
//! Invariants (under the cache mutex; checked by `BigCache::check_invariants`):
//! - `entries == |LRU| == table.len()`; a header is in the LRU iff it is in the table iff
//!   `state == CACHED`;
//! - `bytes == Σ map_len` and `committed == Σ map_len [!decommitted]` over the LRU;
//! - every cached block is still mapped and registered as `Big`; eviction unregisters *under
//!   the lock* and unmaps after it, so a thread holding the lock that finds a `Big` owner in the
//!   registry may read its header.
//!
//! Concurrency: `Inner` is only ever reached through the cache's `hak_sync::Mutex`; its methods
//! take `&mut self`. Victims are returned as a list (linked through `lru_next`) for the caller
//! to unmap after unlocking.

use core::ptr;

use hak_registry::{OwnerKind, Registry, GRANULE};

use crate::header::{key_of, Header, CACHED, LIVE};
use crate::table::Table;

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
    /// Oldest age a cached block may reach, in nanoseconds (default 30 s).
    pub ttl_ns: u64,
    /// Committed-bytes threshold for decommit (default `usize::MAX`, never): a freed block
    /// that would bring the cache's committed (not decommitted) bytes above this has every page
    /// past its header page decommitted before it is cached, so it costs address space, not
    /// RSS. 0 always decommits.
    pub decommit_over: usize,
}

impl BigLimits {
    /// 64 MiB (or a quarter of the live bytes), 1024 blocks, 30 s, no decommit.
    pub const DEFAULT: BigLimits = BigLimits {
        max_bytes: 64 << 20,
        max_entries: 1024,
        ttl_ns: 30_000_000_000,
        decommit_over: usize::MAX,
    };
}

impl Default for BigLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Everything behind the cache mutex. See the module docs.
#[derive(Debug)]
pub(crate) struct Inner {
    /// Cached blocks by key.
    pub(crate) table: Table,
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
            table: Table::new(),
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

    /// Whether a block of `map_len` bytes entering the cache now should be decommitted.
    pub(crate) fn wants_decommit(&self, map_len: usize) -> bool {
        self.committed.saturating_add(map_len) > self.limits.decommit_over
    }

    /// Caches `h` (a block leaving its user) and evicts what the limits exclude. A block the
    /// limits cannot hold at all, or one the table has no memory for, is unregistered and
    /// returned as a victim at once. Returns the victims (linked through `lru_next`), already
    /// unregistered, for the caller to unmap after unlocking.
    ///
    /// # Safety
    /// `h` is the header of a mapped block registered in `reg` as `Big` at its own address,
    /// not in the cache, and nobody else uses the block.
    pub(crate) unsafe fn put(
        &mut self,
        reg: &Registry<'_>,
        h: *mut Header,
        now: u64,
    ) -> *mut Header {
        // Fields are written through `h` itself, never through a `&mut Header` held across
        // `table.insert`, which writes the header's chain link through the same pointer.
        // SAFETY: `h` is ours (caller's contract) and we hold the lock.
        let len = unsafe {
            (*h).state = CACHED;
            (*h).cached_ns = now;
            (*h).map_len
        };
        let keep = self.limits.max_entries > 0 && len <= self.cap();
        // SAFETY: `h` is valid and not in the table.
        if !keep || !unsafe { self.table.insert(reg.os(), h) } {
            // SAFETY: as above.
            unsafe { (*h).state = LIVE }; // not cached: it leaves as a victim
            return victim(reg, h, ptr::null_mut());
        }
        // SAFETY: as above; the old head, if any, is a cached header.
        let decommitted = unsafe {
            (*h).lru_prev = ptr::null_mut();
            (*h).lru_next = self.lru_head;
            match ptr::NonNull::new(self.lru_head) {
                Some(old) => (*old.as_ptr()).lru_prev = h,
                None => self.lru_tail = h,
            }
            (*h).decommitted
        };
        self.lru_head = h;
        self.entries += 1;
        self.bytes += len;
        if !decommitted {
            self.committed += len;
        }
        self.evict(reg, now)
    }

    /// Takes a cached block that can hold a mapping of `need` bytes aligned to `align`:
    /// `need <= map_len <= need * 5 / 4` and `base % align == 0`. It becomes LIVE with
    /// `user_off` and `size` written here, under the lock, so a racing (invalid) free of the
    /// same address reads a consistent header. Also evicts expired blocks first. Returns the
    /// block, if any, and the victims.
    pub(crate) fn take(
        &mut self,
        reg: &Registry<'_>,
        (need, align): (usize, usize),
        (user_off, size): (usize, usize),
        now: u64,
    ) -> (Option<*mut Header>, *mut Header) {
        let mut victims = self.evict(reg, now);
        // No cached block is longer than all cached bytes together: bounding the key ranges by
        // that keeps the scans below independent of the request (a request of 2^62 bytes would
        // otherwise walk 2^42 keys before the OS refuses it).
        let most = need.saturating_add(need / 4).min(self.bytes);
        let aligned = |h: &Header| (h as *const Header as usize).is_multiple_of(align);
        let mut found = self.table.take(reg.os(), key_of(need), key_of(most), |h| {
            h.map_len >= need && h.map_len <= most && aligned(h)
        });
        let mut trimmed = false;
        if found.is_none() && need >= TRIM_MIN {
            // A larger cached block (up to TRIM_FIT times the request), split at the first
            // granule boundary past the request: the block handed out keeps at most 1 MiB of
            // slack, the cache spares a fresh mapping and its page faults, and the tail stays
            // cached (still committed) for the next request.
            let widest = need.saturating_mul(TRIM_FIT).min(self.bytes);
            found = self.table.take(reg.os(), key_of(most), key_of(widest), |h| {
                h.map_len > most && h.map_len <= widest && aligned(h)
            });
            trimmed = found.is_some();
        }
        if let Some(h) = found {
            // SAFETY: `h` was in the table, so it is a cached header listed in the LRU.
            unsafe { self.lru_unlink(h) };
            if trimmed {
                // SAFETY: `h` is ours now (unlisted); we hold the lock.
                if let Some(tail) = unsafe { split(reg, h, need) } {
                    self.splits += 1;
                    // SAFETY: the tail is a fresh header of a mapped block registered as Big
                    // at its own address, in no list, and nobody else can reach it.
                    let more = unsafe { self.put(reg, tail, now) };
                    victims = append(victims, more);
                }
            }
            // SAFETY: as above; it is ours now.
            unsafe {
                (*h).state = LIVE;
                (*h).user_off = user_off;
                (*h).size = size;
            }
        }
        (found, victims)
    }

    /// Takes committed cached blocks shorter than `need` bytes whose lengths add up to at
    /// most `need`, largest first (at most [`MAX_PIECES`], each at least [`GROW_FROM_MIN`],
    /// looking at most [`GROW_SCAN`] keys below the request), for the caller to move into one
    /// fresh mapping (`BigCache::alloc`). For requests of a huge page or more only blocks of
    /// whole huge pages qualify, so every piece lands huge-page-aligned. The pieces leave the
    /// cache unregistered, reachable by nobody but the caller, linked through `lru_next`;
    /// returns them, their total length, and the victims of expiry.
    pub(crate) fn take_pieces(
        &mut self,
        reg: &Registry<'_>,
        need: usize,
        now: u64,
    ) -> (*mut Header, usize, *mut Header) {
        let victims = self.evict(reg, now);
        let top = key_of(need);
        let bottom = top.saturating_sub(GROW_SCAN).max(key_of(GROW_FROM_MIN));
        let unit = if need >= HUGE_PAGE { HUGE_PAGE } else { 1 };
        let os = reg.os();
        let (mut pieces, mut total, mut n) = (ptr::null_mut(), 0, 0);
        let mut tail: *mut Header = ptr::null_mut();
        let mut key = top;
        while key >= bottom && n < MAX_PIECES && need - total >= GROW_FROM_MIN {
            let room = need - total;
            let found = self.table.take(os, key, key, |h| {
                h.map_len < need
                    && h.map_len <= room
                    && !h.decommitted
                    && h.map_len.is_multiple_of(unit)
                    && (!h.multi_map
                        || (unit == HUGE_PAGE
                            && (h as *const Header as usize).is_multiple_of(HUGE_PAGE)))
            });
            let Some(h) = found else {
                key -= 1;
                continue;
            };
            // SAFETY: `h` was in the table, so it is a cached header listed in the LRU; it is
            // ours from here on.
            unsafe {
                self.lru_unlink(h);
                (*h).state = LIVE;
                reg.unregister(ptr::NonNull::new_unchecked(h.cast::<u8>()), (*h).map_len);
                total += (*h).map_len;
                match tail.as_mut() {
                    Some(t) => t.lru_next = h,
                    None => pieces = h,
                }
            }
            tail = h;
            n += 1;
        }
        (pieces, total, victims)
    }

    /// Unlinks every cached block, unregisters it and returns them all as victims.
    pub(crate) fn drain(&mut self, reg: &Registry<'_>) -> *mut Header {
        let mut victims = ptr::null_mut();
        let mut p = self.lru_head;
        while !p.is_null() {
            // SAFETY: listed headers are valid under the lock.
            let next = unsafe { (*p).lru_next };
            victims = victim(reg, p, victims);
            p = next;
        }
        self.table.clear(reg.os());
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
        // A raw pointer, not `&mut Header`: `table.remove` rewrites chain links, this
        // header's neighbours' included, through the table's own pointers.
        while let Some(t) = ptr::NonNull::new(self.lru_tail) {
            let t = t.as_ptr();
            // SAFETY: the tail is a cached header, valid under the lock.
            let expired = now.saturating_sub(unsafe { (*t).cached_ns }) > self.limits.ttl_ns;
            if !expired && self.entries <= self.limits.max_entries && self.bytes <= self.cap() {
                break;
            }
            let removed = self.table.remove(reg.os(), t);
            debug_assert!(removed, "LRU entry missing from the table");
            // SAFETY: `t` is listed in the LRU.
            unsafe {
                self.lru_unlink(t);
                (*t).state = LIVE;
            }
            victims = victim(reg, t, victims);
        }
        victims
    }

    /// The LRU list from newest to oldest (for the invariant check).
    pub(crate) fn lru_iter(&self) -> impl Iterator<Item = *mut Header> + '_ {
        let mut p = self.lru_head;
        core::iter::from_fn(move || {
            let cur = p;
            // SAFETY: listed headers are valid under the lock (we hold `&self` of `Inner`).
            p = unsafe { cur.as_ref()?.lru_next };
            Some(cur)
        })
    }

    /// Removes `h` from the LRU list and the accounting.
    ///
    /// # Safety
    /// `h` is in the LRU list.
    unsafe fn lru_unlink(&mut self, h: *mut Header) {
        // SAFETY: listed headers and their neighbours are valid under the lock.
        unsafe {
            let (prev, next) = ((*h).lru_prev, (*h).lru_next);
            match prev.as_mut() {
                Some(p) => p.lru_next = next,
                None => self.lru_head = next,
            }
            match next.as_mut() {
                Some(n) => n.lru_prev = prev,
                None => self.lru_tail = prev,
            }
            (*h).lru_prev = ptr::null_mut();
            (*h).lru_next = ptr::null_mut();
            self.entries -= 1;
            self.bytes -= (*h).map_len;
            if !(*h).decommitted {
                self.committed -= (*h).map_len;
            }
        }
    }
}

/// Unregisters the block of `h` and pushes it on the `victims` list; returns the new list.
/// How much larger than the request a cached block may be and still be split for it.
const TRIM_FIT: usize = 4;
/// Smallest request that may split a larger cached block (1 MiB): smaller ones (mid sizes
/// served here, or the steps of a growing `realloc`) would whittle the big blocks that later
/// big requests reuse into pieces too small for them.
const TRIM_MIN: usize = 1 << 20;
/// Smallest cached block [`Inner::take_pieces`] hands out (1 MiB).
pub(crate) const GROW_FROM_MIN: usize = 1 << 20;
/// Keys (MiB) below the request [`Inner::take_pieces`] looks at.
const GROW_SCAN: usize = 64;
/// Most cached blocks one request gathers (each is one `mremap`).
const MAX_PIECES: usize = 4;
/// Transparent huge page size on x86-64 and arm64 with 4 KiB pages (2 MiB).
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// Splits the unlisted block `h` after `round_up(need, GRANULE)` bytes, so both parts start
/// on the registry's grid: `h` keeps the front (registered again at its new length) and the
/// tail becomes a block of its own, registered as `Big`, with a LIVE header and `h`'s
/// decommit state and `multi_map` flag, for the caller to cache. `None` (nothing changed) if
/// the tail would be empty or the registry refused.
///
/// # Safety
/// `h` heads a block taken out of the cache (ours alone), `need <= map_len`, and the lock is
/// held.
unsafe fn split(reg: &Registry<'_>, h: *mut Header, need: usize) -> Option<*mut Header> {
    let base = h as usize;
    // SAFETY: forwarded: our block.
    let (old, decommitted, multi_map) = unsafe { ((*h).map_len, (*h).decommitted, (*h).multi_map) };
    let front = need.checked_next_multiple_of(GRANULE)?;
    if front >= old {
        return None;
    }
    // SAFETY: a header lives at the (non-null) base of its mapping.
    let b = unsafe { ptr::NonNull::new_unchecked(h.cast::<u8>()) };
    let t = (base + front) as *mut u8;
    // SAFETY: inside the mapping, so not null.
    let tb = unsafe { ptr::NonNull::new_unchecked(t) };
    reg.unregister(b, old);
    if reg.register(b, front, OwnerKind::Big).is_err()
        || reg.register(tb, old - front, OwnerKind::Big).is_err()
    {
        // The leaves exist, so this cannot fail; if it did, keep the block whole.
        reg.unregister(b, old);
        let _ = reg.register(b, old, OwnerKind::Big);
        return None;
    }
    // SAFETY: our block; the tail is granule-aligned, at least a granule, and nobody else's.
    unsafe {
        (*h).map_len = front;
        Header::init(t, old - front, 0, 0);
        let th = t.cast::<Header>();
        (*th).decommitted = decommitted;
        // Either part may hold pages of several mappings.
        (*th).multi_map = multi_map;
        Some(th)
    }
}

/// `a` followed by `b` (victim lists linked through `lru_next`).
fn append(a: *mut Header, b: *mut Header) -> *mut Header {
    if a.is_null() {
        return b;
    }
    let mut p = a;
    // SAFETY: victim lists hold valid, unlisted headers.
    unsafe {
        while !(*p).lru_next.is_null() {
            p = (*p).lru_next;
        }
        (*p).lru_next = b;
    }
    a
}

fn victim(reg: &Registry<'_>, h: *mut Header, victims: *mut Header) -> *mut Header {
    // SAFETY: `h` is a valid header no longer listed anywhere; we hold the lock.
    let len = unsafe { (*h).map_len };
    // SAFETY: a header lives at the (non-null) base of its mapping.
    reg.unregister(unsafe { ptr::NonNull::new_unchecked(h.cast::<u8>()) }, len);
    // SAFETY: as above.
    unsafe { (*h).lru_next = victims };
    h
}
