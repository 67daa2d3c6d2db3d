//! [`Table`]: the chained hash table of cached blocks, keyed by mapping length in
//! [`KEY_GRANULE`](crate::KEY_GRANULE)s, that doubles incrementally.
//!
//! Buckets are arrays of `*mut Header` in memory from hak-os (never the global allocator); the
//! chains are intrusive through [`Header::chain_next`], so the table itself holds one word per
//! bucket and has no capacity limit.
//!
//! Growth: when `count * 4 > buckets * 3` (load factor 0.75) and no migration is under way, a
//! new array of twice the buckets becomes `cur` and the previous one becomes `old`. Every later
//! operation first moves [`MIGRATE_STEP`] buckets of `old` into `cur` (bucket `i` of `old`
//! splits into buckets `i` and `i + old_len` of `cur`, because the index is `hash & (len - 1)`);
//! when the last one has moved, `old` is unmapped. So no operation ever pays for a whole
//! rehash: lookups go on during a resize and cost at most one extra bucket probe.
//!
//! Invariants (checked by [`Table::check`]):
//! - `count == Σ |chain|` over both arrays; every header in the table has `state == CACHED`;
//! - a header with key `k` sits in `cur[h(k) & (cur_len - 1)]`, or, while migrating, in
//!   `old[h(k) & (old_len - 1)]` with that index `>= moved`;
//! - `old_len == 0` or `cur_len == 2 * old_len`; `moved <= old_len`.
//!
//! Concurrency: none here. The table lives inside the cache's mutex; every method takes
//! `&mut self`.

use core::ptr;

use hak_os::Os;

use crate::header::{Header, CACHED};

/// Buckets of the first array (256; 2 under loom so a model grows after two entries).
#[cfg(not(hak_loom))]
pub(crate) const INITIAL_BUCKETS: usize = 256;
/// Buckets of the first array (shrunk under loom).
#[cfg(hak_loom)]
pub(crate) const INITIAL_BUCKETS: usize = 2;

/// Old buckets migrated per table operation during a resize (8; 1 under loom so a model sees
/// operations in the middle of a migration).
#[cfg(not(hak_loom))]
pub(crate) const MIGRATE_STEP: usize = 8;
/// Old buckets migrated per table operation (shrunk under loom).
#[cfg(hak_loom)]
pub(crate) const MIGRATE_STEP: usize = 1;

const _: () = assert!(INITIAL_BUCKETS.is_power_of_two() && MIGRATE_STEP > 0);

type Bucket = *mut Header;

/// The hash table. See the module docs.
#[derive(Debug)]
pub(crate) struct Table {
    /// The current bucket array (`cur_len` buckets), null before the first insert.
    cur: *mut Bucket,
    /// Buckets in `cur` (0 before the first insert; then a power of two >= INITIAL_BUCKETS).
    cur_len: usize,
    /// The array being migrated away from, or null.
    old: *mut Bucket,
    /// Buckets in `old` (`cur_len / 2` while migrating, else 0).
    old_len: usize,
    /// Old buckets `[0, moved)` have been migrated and are empty.
    moved: usize,
    /// Headers in the table.
    count: usize,
    /// Completed doublings so far.
    grows: u64,
}

/// Fibonacci hashing, folded so the low bits (the ones the mask keeps) depend on all of the key.
#[inline]
fn hash(key: usize) -> usize {
    let h = (key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h ^ (h >> 29) ^ (h >> 47)) as usize
}

fn array_bytes(len: usize) -> usize {
    let page = hak_os::page_size();
    (len * core::mem::size_of::<Bucket>() + page - 1) & !(page - 1)
}

impl Table {
    /// An empty table that maps nothing until the first insert.
    pub(crate) const fn new() -> Table {
        Table {
            cur: ptr::null_mut(),
            cur_len: 0,
            old: ptr::null_mut(),
            old_len: 0,
            moved: 0,
            count: 0,
            grows: 0,
        }
    }

    /// Headers in the table.
    #[cfg(all(test, not(hak_loom)))]
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Buckets of the current array (0 before the first insert).
    pub(crate) fn buckets(&self) -> usize {
        self.cur_len
    }

    /// Completed doublings.
    pub(crate) fn grows(&self) -> u64 {
        self.grows
    }

    /// Whether a migration is under way.
    #[cfg(all(test, not(hak_loom)))]
    pub(crate) fn migrating(&self) -> bool {
        !self.old.is_null()
    }

    /// Inserts `h` (a CACHED header not in the table) at the head of its chain. Returns false
    /// if the first bucket array could not be mapped; the table is then unchanged. A failed
    /// growth is not an error: the table stays at its size and tries again on a later insert.
    ///
    /// # Safety
    /// `h` is a valid header, not in the table, that stays valid while it is in the table.
    pub(crate) unsafe fn insert(&mut self, os: &Os, h: *mut Header) -> bool {
        if self.cur.is_null() {
            let Ok(mem) = os.map(array_bytes(INITIAL_BUCKETS), 1) else { return false };
            self.cur = mem.as_ptr().cast();
            self.cur_len = INITIAL_BUCKETS;
        }
        self.step(os);
        // SAFETY: `h` is valid (caller); `cur` has `cur_len` buckets.
        unsafe {
            let b = self.cur.add(hash((*h).key()) & (self.cur_len - 1));
            (*h).chain_next = *b;
            *b = h;
        }
        self.count += 1;
        if self.old.is_null() && self.count * 4 > self.cur_len * 3 {
            self.grow(os);
        }
        true
    }

    /// Removes and returns the first header, scanning keys `lo..=hi` in order, for which
    /// `accept` is true.
    pub(crate) fn take(
        &mut self,
        os: &Os,
        lo: usize,
        hi: usize,
        mut accept: impl FnMut(&Header) -> bool,
    ) -> Option<*mut Header> {
        if self.count == 0 {
            return None;
        }
        self.step(os);
        for key in lo..=hi {
            let hk = hash(key);
            for (arr, len) in self.arrays() {
                // SAFETY: `arr` has `len` buckets; chained headers are valid while listed.
                unsafe {
                    let mut link = arr.add(hk & (len - 1));
                    while let Some(h) = (*link).as_mut() {
                        if h.key() == key && accept(h) {
                            *link = h.chain_next;
                            h.chain_next = ptr::null_mut();
                            self.count -= 1;
                            return Some(h);
                        }
                        link = ptr::addr_of_mut!(h.chain_next);
                    }
                }
            }
        }
        None
    }

    /// Removes `h` from the table. Returns whether it was there.
    pub(crate) fn remove(&mut self, os: &Os, h: *mut Header) -> bool {
        if self.count == 0 {
            return false;
        }
        self.step(os);
        // SAFETY: the caller passes a header it knows to be valid (an LRU entry).
        let hk = hash(unsafe { (*h).key() });
        for (arr, len) in self.arrays() {
            // SAFETY: as in `take`.
            unsafe {
                let mut link = arr.add(hk & (len - 1));
                while let Some(n) = (*link).as_mut() {
                    if ptr::eq(n, h) {
                        *link = n.chain_next;
                        n.chain_next = ptr::null_mut();
                        self.count -= 1;
                        return true;
                    }
                    link = ptr::addr_of_mut!(n.chain_next);
                }
            }
        }
        false
    }

    /// Forgets every header (the caller owns them through its LRU list) and finishes any
    /// migration by dropping the old array. Keeps the current array, zeroed.
    pub(crate) fn clear(&mut self, os: &Os) {
        if !self.cur.is_null() {
            // SAFETY: `cur` has `cur_len` buckets; all-zero is all-null.
            unsafe { self.cur.write_bytes(0, self.cur_len) };
        }
        self.drop_old(os);
        self.count = 0;
    }

    /// Unmaps both arrays. The table must be empty (or its headers otherwise owned).
    pub(crate) fn release(&mut self, os: &Os) {
        self.drop_old(os);
        if let Some(p) = ptr::NonNull::new(self.cur.cast::<u8>()) {
            // SAFETY: `cur` came from `os.map(array_bytes(cur_len))` and nobody else holds it.
            let _ = unsafe { os.unmap(p, array_bytes(self.cur_len)) };
        }
        *self = Table::new();
    }

    /// Validates the invariants in the module docs and returns the number of headers found.
    /// Panics on a violation (a test validator).
    pub(crate) fn check(&self) -> usize {
        let mut n = 0;
        let bounds = [(self.cur, self.cur_len, 0), (self.old, self.old_len, self.moved)];
        for (arr, len, first_live) in bounds {
            for i in 0..len {
                // SAFETY: `arr` has `len` buckets; listed headers are valid.
                let mut p = unsafe { *arr.add(i) };
                // SAFETY: as above.
                while let Some(h) = unsafe { p.as_ref() } {
                    assert!(i >= first_live, "header left in a migrated old bucket");
                    assert_eq!(hash(h.key()) & (len - 1), i, "header in the wrong bucket");
                    assert_eq!(h.state, CACHED, "table holds a header that is not CACHED");
                    n += 1;
                    p = h.chain_next;
                }
            }
        }
        assert_eq!(n, self.count, "count disagrees with the chains");
        assert!(self.old_len == 0 || self.cur_len == 2 * self.old_len);
        assert!(self.moved <= self.old_len);
        n
    }

    /// The arrays a lookup must probe: `cur`, then `old` while migrating.
    fn arrays(&self) -> impl Iterator<Item = (*mut Bucket, usize)> {
        let old = (!self.old.is_null()).then_some((self.old, self.old_len));
        let cur = (!self.cur.is_null()).then_some((self.cur, self.cur_len));
        cur.into_iter().chain(old)
    }

    /// Starts a doubling; on a refused mapping the table just stays at its size.
    #[cold]
    fn grow(&mut self, os: &Os) {
        let len = self.cur_len * 2;
        let Ok(mem) = os.map(array_bytes(len), 1) else { return };
        self.old = self.cur;
        self.old_len = self.cur_len;
        self.moved = 0;
        self.cur = mem.as_ptr().cast();
        self.cur_len = len;
        self.grows += 1;
    }

    /// Migrates up to `MIGRATE_STEP` old buckets.
    fn step(&mut self, os: &Os) {
        if self.old.is_null() {
            return;
        }
        let end = (self.moved + MIGRATE_STEP).min(self.old_len);
        for i in self.moved..end {
            // SAFETY: `old` has `old_len > i` buckets and `cur` has `cur_len`; listed headers
            // are valid. Each header is unlinked from old before being linked into cur.
            unsafe {
                let mut p = *self.old.add(i);
                *self.old.add(i) = ptr::null_mut();
                while let Some(h) = p.as_mut() {
                    p = h.chain_next;
                    let b = self.cur.add(hash(h.key()) & (self.cur_len - 1));
                    h.chain_next = *b;
                    *b = h;
                }
            }
        }
        self.moved = end;
        if self.moved == self.old_len {
            self.drop_old(os);
        }
    }

    /// Unmaps `old` (its buckets must be migrated or forgotten).
    fn drop_old(&mut self, os: &Os) {
        if let Some(p) = ptr::NonNull::new(self.old.cast::<u8>()) {
            // SAFETY: `old` came from `os.map(array_bytes(old_len))`; every bucket has moved
            // to `cur` (or been forgotten by `clear`), so nothing points into it.
            let _ = unsafe { os.unmap(p, array_bytes(self.old_len)) };
        }
        self.old = ptr::null_mut();
        self.old_len = 0;
        self.moved = 0;
    }
}

#[cfg(all(test, not(hak_loom)))]
mod tests {
    use super::*;
    use crate::header::{Header, MAGIC};
    use std::vec::Vec;

    /// Headers in ordinary test memory: the table never touches a block beyond its header.
    fn headers(keys: impl Iterator<Item = usize>) -> Vec<Header> {
        keys.map(|k| Header {
            magic: MAGIC,
            state: CACHED,
            map_len: k << crate::KEY_GRANULE_SHIFT,
            user_off: 4096,
            size: 0,
            decommitted: false,
            multi_map: false,
            cached_ns: 0,
            chain_next: ptr::null_mut(),
            lru_prev: ptr::null_mut(),
            lru_next: ptr::null_mut(),
        })
        .collect()
    }

    #[test]
    fn grows_256_512_1024_and_every_entry_stays_findable_mid_migration() {
        let os = Os::new();
        let mut t = Table::new();
        let mut hs = headers(1..=700);
        let mut saw_migration = false;
        let base = hs.as_mut_ptr();
        for i in 0..hs.len() {
            // SAFETY: `hs` outlives the table's use of it and is never moved meanwhile.
            assert!(unsafe { t.insert(&os, base.add(i)) });
            if t.migrating() {
                saw_migration = true;
                // Mid-resize: an early key and the one just inserted are both findable; put
                // them back.
                for k in [1, i + 1] {
                    let h = t.take(&os, k, k, |_| true).expect("findable during migration");
                    // SAFETY: as above.
                    assert!(unsafe { t.insert(&os, h) });
                }
            }
            assert_eq!(t.check(), i + 1);
            let expect = match i + 1 {
                0..=192 => 256,
                193..=384 => 512,
                _ => 1024,
            };
            assert_eq!(t.buckets(), expect, "after {} inserts", i + 1);
        }
        assert!(saw_migration);
        assert_eq!(t.grows(), 2);
        for k in (1..=700).rev() {
            let h = t.take(&os, k, k, |_| true).expect("every key findable after growth");
            // SAFETY: `h` points into `hs`.
            assert_eq!(unsafe { (*h).key() }, k);
        }
        assert_eq!(t.len(), 0);
        t.release(&os);
        assert_eq!(os.stats().mapped.current, 0, "bucket arrays unmapped");
    }

    #[test]
    fn take_scans_the_key_range_and_respects_accept() {
        let os = Os::new();
        let mut t = Table::new();
        let mut hs = headers([3usize, 3, 5].into_iter());
        for h in hs.iter_mut() {
            // SAFETY: `hs` outlives the table's use of it.
            assert!(unsafe { t.insert(&os, h) });
        }
        assert!(t.take(&os, 1, 2, |_| true).is_none());
        assert!(t.take(&os, 4, 4, |_| true).is_none());
        let five: *mut Header = &mut hs[2];
        assert_eq!(t.take(&os, 4, 6, |_| true), Some(five));
        let first: *mut Header = &mut hs[0];
        assert!(t.take(&os, 3, 3, |h| !ptr::eq(h, first)).is_some());
        assert!(t.remove(&os, first));
        assert!(!t.remove(&os, first), "already gone");
        assert_eq!(t.check(), 0);
        t.release(&os);
    }

    #[test]
    fn first_array_mapping_failure_is_reported_and_growth_failure_is_tolerated() {
        let os = Os::new();
        let mut t = Table::new();
        let mut hs = headers(1..=200);
        os.fail_next_maps(1);
        // SAFETY: `hs` outlives the table's use of it.
        assert!(!unsafe { t.insert(&os, &mut hs[0]) });
        assert_eq!(t.len(), 0);
        for (i, h) in hs.iter_mut().enumerate() {
            if i == 192 {
                os.fail_next_maps(1); // the doubling at 193 entries is refused
            }
            // SAFETY: as above.
            assert!(unsafe { t.insert(&os, h) });
        }
        assert_eq!(t.buckets(), 512, "growth retried on the next insert");
        assert_eq!(t.check(), 200);
        t.clear(&os);
        assert_eq!(t.check(), 0);
        t.release(&os);
    }
}
