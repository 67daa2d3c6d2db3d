//! [`Bins`]: the cached blocks indexed by mapping length in size classes, with a bitmap of the
//! classes that hold any, so a lookup costs what is cached, never what was asked for.
//!
//! Classes: a length `n` with `2^k <= n < 2^(k+1)` falls in one of [`SUB`] classes of that
//! power of two, each an equal slice of it (so a class spans at most 1/8 of its lower bound).
//! There are [`CLASSES`] classes for every length a mapping can have; each is an intrusive
//! doubly linked list through [`Header::bin_next`](crate::header::Header::bin_next) and
//! `bin_prev`, newest first, and a bit of `nonempty` says whether it holds anything.
//!
//! A search names a range of lengths and a predicate; it visits only classes whose bit is set
//! (a few word scans of the bitmap) and at most [`VISIT_MAX`] blocks, so the time under the
//! cache lock is bounded by a constant whatever the request's size and however many blocks are
//! cached. A search that runs out of visits reports nothing found, which costs a fresh mapping,
//! never a wrong answer.
//!
//! Invariants (checked by [`Bins::check`]): `count == Σ |bin|`; every listed header has
//! `state == CACHED` and sits in the bin of its `map_len`; a class's bit is set iff its bin is
//! non-empty; `bin_prev` of a bin's head is null and every other `bin_prev` points at the
//! header whose `bin_next` points back.
//!
//! Concurrency: none here. The bins live inside the cache's mutex; every method takes
//! `&mut self` (or `&self` for the checker).

use core::ptr;

use crate::header::{Block, Header, CACHED};

/// log2 of the classes per power of two.
const SUB_BITS: u32 = 3;
/// Classes per power of two (8).
pub(crate) const SUB: usize = 1 << SUB_BITS;
/// log2 of the smallest length with classes of its own (4 KiB, the smallest page); shorter
/// lengths, which no mapping has, share class 0.
const MIN_LG: u32 = 12;
/// Classes covering every length up to `usize::MAX`.
pub(crate) const CLASSES: usize = (usize::BITS - MIN_LG) as usize * SUB;
const WORDS: usize = CLASSES.div_ceil(64);

/// Most blocks one search looks at (their headers are one cache miss each).
pub(crate) const VISIT_MAX: usize = 64;

/// The size class of a mapping of `len` bytes.
#[inline]
pub(crate) fn class_of(len: usize) -> usize {
    if len < 1 << MIN_LG {
        return 0;
    }
    let lg = usize::BITS - 1 - len.leading_zeros();
    let sub = (len >> (lg - SUB_BITS)) & (SUB - 1);
    (lg - MIN_LG) as usize * SUB + sub
}

/// The bins. See the module docs.
#[derive(Debug)]
pub(crate) struct Bins {
    heads: [*mut Header; CLASSES],
    nonempty: [u64; WORDS],
    count: usize,
}

impl Bins {
    /// No block cached.
    pub(crate) const fn new() -> Bins {
        Bins { heads: [ptr::null_mut(); CLASSES], nonempty: [0; WORDS], count: 0 }
    }

    /// Lists `b` at the head of its class.
    ///
    /// # Safety
    /// `b` is a valid header, in no bin, that stays valid while listed; its `map_len` does not
    /// change while it is listed.
    pub(crate) unsafe fn insert(&mut self, b: Block) {
        // SAFETY: `b` is valid (caller); the old head, if any, is a listed header.
        unsafe {
            let c = class_of(b.map_len());
            let Some(slot) = self.heads.get_mut(c) else { return };
            let old = *slot;
            b.set_bin_prev(ptr::null_mut());
            b.set_bin_next(old);
            if let Some(o) = Block::from_link(old) {
                o.set_bin_prev(b.link());
            }
            *slot = b.link();
            set_bit(&mut self.nonempty, c);
        }
        self.count += 1;
    }

    /// Unlists `b`.
    ///
    /// # Safety
    /// `b` is listed in these bins.
    pub(crate) unsafe fn remove(&mut self, b: Block) {
        // SAFETY: `b` and its neighbours are listed headers (caller).
        unsafe {
            let (prev, next) = (b.bin_prev(), b.bin_next());
            if let Some(n) = Block::from_link(next) {
                n.set_bin_prev(prev);
            }
            match Block::from_link(prev) {
                Some(p) => p.set_bin_next(next),
                None => {
                    let c = class_of(b.map_len());
                    if let Some(slot) = self.heads.get_mut(c) {
                        *slot = next;
                        if next.is_null() {
                            clear_bit(&mut self.nonempty, c);
                        }
                    }
                }
            }
            b.set_bin_next(ptr::null_mut());
            b.set_bin_prev(ptr::null_mut());
        }
        self.count -= 1;
    }

    /// The first block with `lo <= map_len <= hi` for which `accept` holds, searching classes
    /// from the smallest up (within a class, newest first), visiting at most [`VISIT_MAX`]
    /// blocks. The block stays listed.
    pub(crate) fn find_up(
        &self,
        lo: usize,
        hi: usize,
        mut accept: impl FnMut(Block) -> bool,
    ) -> Option<Block> {
        if self.count == 0 || lo > hi {
            return None;
        }
        let (mut c, last) = (class_of(lo), class_of(hi));
        let mut visits = 0;
        while let Some(k) = next_set(&self.nonempty, c).filter(|&k| k <= last) {
            if let Some(b) = self.scan(k, lo, hi, &mut visits, &mut accept) {
                return Some(b);
            }
            if visits >= VISIT_MAX {
                return None;
            }
            c = k + 1;
        }
        None
    }

    /// As [`Bins::find_up`], but from the largest class down.
    pub(crate) fn find_down(
        &self,
        lo: usize,
        hi: usize,
        mut accept: impl FnMut(Block) -> bool,
    ) -> Option<Block> {
        if self.count == 0 || lo > hi {
            return None;
        }
        let (first, mut c) = (class_of(lo), class_of(hi));
        let mut visits = 0;
        while let Some(k) = prev_set(&self.nonempty, c).filter(|&k| k >= first) {
            if let Some(b) = self.scan(k, lo, hi, &mut visits, &mut accept) {
                return Some(b);
            }
            if visits >= VISIT_MAX || k == 0 {
                return None;
            }
            c = k - 1;
        }
        None
    }

    /// Walks bin `k` for a block in `[lo, hi]` that `accept` takes, counting visits.
    fn scan(
        &self,
        k: usize,
        lo: usize,
        hi: usize,
        visits: &mut usize,
        accept: &mut impl FnMut(Block) -> bool,
    ) -> Option<Block> {
        let mut p = self.heads.get(k).copied().unwrap_or(ptr::null_mut());
        while let Some(b) = Block::from_link(p) {
            if *visits >= VISIT_MAX {
                return None;
            }
            *visits += 1;
            // SAFETY: listed headers are valid while listed (insert's contract).
            let len = unsafe { b.map_len() };
            if len >= lo && len <= hi && accept(b) {
                return Some(b);
            }
            // SAFETY: as above.
            p = unsafe { b.bin_next() };
        }
        None
    }

    /// Forgets every block (their owner holds them through another list).
    pub(crate) fn clear(&mut self) {
        *self = Bins::new();
    }

    /// Validates the invariants in the module docs; returns the number of blocks listed.
    /// Panics on a violation (a test validator).
    pub(crate) fn check(&self) -> usize {
        let mut n = 0;
        for (c, &head) in self.heads.iter().enumerate() {
            let bit = self.nonempty[c / 64] >> (c % 64) & 1 == 1;
            assert_eq!(bit, !head.is_null(), "bitmap disagrees with bin {c}");
            let mut prev: *mut Header = ptr::null_mut();
            let mut p = head;
            while let Some(b) = Block::from_link(p) {
                // SAFETY: listed headers are valid.
                unsafe {
                    assert_eq!(class_of(b.map_len()), c, "header in the wrong bin");
                    assert_eq!(b.state(), CACHED, "bins hold a header that is not CACHED");
                    assert_eq!(b.bin_prev(), prev, "broken back link");
                    prev = p;
                    p = b.bin_next();
                }
                n += 1;
            }
        }
        assert_eq!(n, self.count, "count disagrees with the bins");
        n
    }
}

fn set_bit(words: &mut [u64; WORDS], c: usize) {
    if let Some(w) = words.get_mut(c / 64) {
        *w |= 1 << (c % 64);
    }
}

fn clear_bit(words: &mut [u64; WORDS], c: usize) {
    if let Some(w) = words.get_mut(c / 64) {
        *w &= !(1 << (c % 64));
    }
}

/// The first set bit at or after `c`.
fn next_set(words: &[u64; WORDS], c: usize) -> Option<usize> {
    let mut i = c / 64;
    let mut w = words.get(i)? & (!0u64 << (c % 64));
    loop {
        if w != 0 {
            return Some(i * 64 + w.trailing_zeros() as usize);
        }
        i += 1;
        w = *words.get(i)?;
    }
}

/// The last set bit at or before `c`.
fn prev_set(words: &[u64; WORDS], c: usize) -> Option<usize> {
    let c = c.min(CLASSES - 1);
    let mut i = c / 64;
    let mut w = words.get(i)? & (!0u64 >> (63 - c % 64));
    loop {
        if w != 0 {
            return Some(i * 64 + 63 - w.leading_zeros() as usize);
        }
        i = i.checked_sub(1)?;
        w = *words.get(i)?;
    }
}

#[cfg(all(test, not(hak_loom)))]
mod tests {
    use super::*;
    use crate::header::MAGIC;
    use std::vec::Vec;

    const MIB: usize = 1 << 20;

    /// Headers in ordinary test memory (the bins never touch a block beyond its header).
    fn headers(lens: &[usize]) -> Vec<Header> {
        lens.iter()
            .map(|&map_len| Header {
                magic: MAGIC,
                state: CACHED,
                map_len,
                block_len: map_len,
                user_off: 4096,
                size: 0,
                decommitted: false,
                multi_map: false,
                huge: false,
                probe: false,
                spread: 0,
                last_end: 0,
                cached_ns: 0,
                bin_next: ptr::null_mut(),
                bin_prev: ptr::null_mut(),
                lru_prev: ptr::null_mut(),
                lru_next: ptr::null_mut(),
            })
            .collect()
    }

    fn handles(hs: &mut [Header]) -> Vec<Block> {
        let base = hs.as_mut_ptr();
        // SAFETY: every element of `hs` is a header; the test keeps `hs` alive and unmoved.
        (0..hs.len())
            .map(|i| unsafe { Block::from_base(ptr::NonNull::new_unchecked(base.add(i).cast())) })
            .collect()
    }

    #[test]
    fn classes_are_monotone_and_eight_per_power_of_two() {
        assert_eq!(class_of(4096), 0);
        assert_eq!(class_of(MIB), (20 - 12) * SUB);
        assert_eq!(class_of(MIB + MIB / 8), (20 - 12) * SUB + 1);
        assert_eq!(class_of(2 * MIB - 4096), (20 - 12) * SUB + 7);
        assert_eq!(class_of(usize::MAX), CLASSES - 1);
        let mut last = 0;
        for len in (1..4096).map(|i| i * 4096 * 37) {
            let c = class_of(len);
            assert!(c >= last && c < CLASSES);
            last = c;
        }
    }

    #[test]
    fn bit_scans_find_the_nearest_set_class() {
        let mut w = [0u64; WORDS];
        for c in [3, 64, 200, CLASSES - 1] {
            set_bit(&mut w, c);
        }
        assert_eq!(next_set(&w, 0), Some(3));
        assert_eq!(next_set(&w, 4), Some(64));
        assert_eq!(next_set(&w, 65), Some(200));
        assert_eq!(next_set(&w, 201), Some(CLASSES - 1));
        assert_eq!(prev_set(&w, CLASSES - 2), Some(200));
        assert_eq!(prev_set(&w, 63), Some(3));
        assert_eq!(prev_set(&w, 2), None);
        clear_bit(&mut w, 3);
        assert_eq!(prev_set(&w, 63), None);
    }

    #[test]
    fn find_searches_by_length_and_accept_and_remove_relinks() {
        let mut hs = headers(&[3 * MIB, 3 * MIB, 5 * MIB, 40 * MIB]);
        let b = handles(&mut hs);
        let mut bins = Bins::new();
        for &x in &b {
            // SAFETY: the headers outlive the bins' use of them.
            unsafe { bins.insert(x) };
        }
        assert_eq!(bins.check(), 4);
        assert_eq!(bins.find_up(MIB, 2 * MIB, |_| true), None);
        assert_eq!(bins.find_up(4 * MIB, 6 * MIB, |_| true), Some(b[2]));
        assert_eq!(bins.find_up(3 * MIB, 3 * MIB, |_| true), Some(b[1]), "newest first");
        assert_eq!(bins.find_up(3 * MIB, 3 * MIB, |x| x != b[1]), Some(b[0]));
        assert_eq!(bins.find_down(MIB, 39 * MIB, |_| true), Some(b[2]), "largest first");
        assert_eq!(bins.find_down(MIB, usize::MAX, |_| true), Some(b[3]));
        // SAFETY: listed.
        unsafe { bins.remove(b[1]) };
        assert_eq!(bins.check(), 3);
        assert_eq!(bins.find_up(3 * MIB, 3 * MIB, |_| true), Some(b[0]));
        // SAFETY: listed.
        unsafe { bins.remove(b[0]) };
        assert_eq!(bins.find_up(3 * MIB, 3 * MIB, |_| true), None);
        assert_eq!(bins.check(), 2);
        bins.clear();
        assert_eq!(bins.check(), 0);
    }

    #[test]
    fn an_absurd_range_costs_a_bitmap_scan_and_visits_are_bounded() {
        let lens: Vec<usize> = (0..200).map(|_| 8 * MIB).collect();
        let mut hs = headers(&lens);
        let b = handles(&mut hs);
        let mut bins = Bins::new();
        for &x in &b {
            // SAFETY: the headers outlive the bins' use of them.
            unsafe { bins.insert(x) };
        }
        assert_eq!(bins.find_up(1 << 50, (1 << 50) + (1 << 48), |_| true), None);
        assert_eq!(bins.find_up(1 << 62, usize::MAX, |_| true), None);
        let mut seen = 0;
        assert_eq!(
            bins.find_up(MIB, usize::MAX, |_| {
                seen += 1;
                false
            }),
            None
        );
        assert_eq!(seen, VISIT_MAX, "a search gives up after VISIT_MAX blocks");
    }
}
