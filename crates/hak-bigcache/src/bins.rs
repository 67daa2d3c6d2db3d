//! [`Bins`]: the cached blocks indexed by mapping length in size classes, with a bitmap of the
//! classes that hold any, so a lookup costs what is cached, never what was asked for.
//!
//! Classes: a length `n` with `2^k <= n < 2^(k+1)` falls in one of [`SUB`] classes of that
//! power of two, each an equal slice of it (so a class spans at most 1/8 of its lower bound).
//! There are [`CLASSES`] classes for every length a mapping can have; each is a
//! `hak_collections::List` through [`Header::bin`](crate::header::Header::bin), newest first,
//! and a bit of `nonempty` says whether it holds anything.
//!
//! A search names a range of lengths, which end to start from, and a predicate; it visits only
//! classes whose bit is set (a few word scans of the bitmap) and at most [`VISIT_MAX`] blocks,
//! so the time under the cache lock is bounded by a constant whatever the request's size and
//! however many blocks are cached. A search that runs out of visits reports nothing found,
//! which costs a fresh mapping, never a wrong answer.
//!
//! Invariants (checked by [`Bins::check`]): every bin is a consistent list; every listed header
//! has `state == CACHED` and sits in the bin of its `map_len`; a class's bit is set iff its bin
//! is non-empty.
//!
//! Concurrency: none here. The bins live inside the cache's mutex; every method takes
//! `&mut self` (or `&self` for searches and the checker).

use hak_collections::List;

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

// SAFETY: `bin` is the bins' alone.
hak_collections::adapter! {
    /// A cached header's links in its bin.
    pub(crate) unsafe struct ByLength for Header { links: bin }
}

/// Which end of a length range a search starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// Smallest class first (the tightest fit).
    Smallest,
    /// Largest class first (the fewest pieces).
    Largest,
}

/// The bins. See the module docs.
pub(crate) struct Bins {
    bins: [List<ByLength>; CLASSES],
    nonempty: [u64; WORDS],
}

impl core::fmt::Debug for Bins {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Bins").field("nonempty", &self.nonempty).finish_non_exhaustive()
    }
}

impl Bins {
    /// No block cached.
    pub(crate) const fn new() -> Bins {
        Bins { bins: [const { List::new() }; CLASSES], nonempty: [0; WORDS] }
    }

    /// Lists `b` at the head of its class.
    ///
    /// # Safety
    /// `b` is a valid header, in no bin, that stays valid while listed; its `map_len` does not
    /// change while it is listed.
    pub(crate) unsafe fn insert(&mut self, b: Block) {
        // SAFETY: `b` is valid (caller).
        let c = class_of(unsafe { b.map_len() });
        let Some(bin) = self.bins.get_mut(c) else { return };
        // SAFETY: `b` is valid and in no bin (caller); listed headers are valid.
        unsafe { bin.push_front(b.link()) };
        set_bit(&mut self.nonempty, c);
    }

    /// Unlists `b`.
    ///
    /// # Safety
    /// `b` is listed in these bins.
    pub(crate) unsafe fn remove(&mut self, b: Block) {
        // SAFETY: `b` is listed, hence valid, and in the bin of its length (caller).
        let c = class_of(unsafe { b.map_len() });
        let Some(bin) = self.bins.get_mut(c) else { return };
        // SAFETY: as above; its neighbours are listed headers.
        unsafe { bin.remove(b.link()) };
        if bin.is_empty() {
            clear_bit(&mut self.nonempty, c);
        }
    }

    /// The first block with `lo <= map_len <= hi` for which `accept` holds, visiting the
    /// non-empty classes of the range from the end `order` names (within a class, newest
    /// first) and at most [`VISIT_MAX`] blocks in all. The block stays listed.
    pub(crate) fn find(
        &self,
        lo: usize,
        hi: usize,
        order: Order,
        mut accept: impl FnMut(Block) -> bool,
    ) -> Option<Block> {
        if lo > hi {
            return None;
        }
        let (first, last) = (class_of(lo), class_of(hi));
        let set = |c: usize| match order {
            Order::Smallest => next_set(&self.nonempty, c),
            Order::Largest => prev_set(&self.nonempty, c),
        };
        let mut left = VISIT_MAX;
        let mut c = Some(if order == Order::Smallest { first } else { last });
        while let Some(k) = c.and_then(set).filter(|k| (first..=last).contains(k)) {
            let mut visited = 0;
            let mut fits = |p: *mut Header| {
                visited += 1;
                // SAFETY: listed headers are valid while listed (insert's contract).
                Block::from_link(p)
                    .filter(|&b| (lo..=hi).contains(&unsafe { b.map_len() }))
                    .is_some_and(&mut accept)
            };
            // SAFETY: as above.
            if let Some(p) = unsafe { self.bins.get(k)?.find(left, &mut fits) } {
                return Block::from_link(p);
            }
            left = left.saturating_sub(visited);
            if left == 0 {
                return None;
            }
            c = if order == Order::Smallest { k.checked_add(1) } else { k.checked_sub(1) };
        }
        None
    }

    /// Validates the invariants in the module docs; returns the number of blocks listed.
    /// Panics on a violation (a test validator).
    pub(crate) fn check(&self) -> usize {
        let mut n = 0;
        for (c, bin) in self.bins.iter().enumerate() {
            let bit = self.nonempty[c / 64] >> (c % 64) & 1 == 1;
            assert_eq!(bit, !bin.is_empty(), "bitmap disagrees with bin {c}");
            // SAFETY: listed headers are valid.
            unsafe {
                assert!(bin.is_consistent(), "bin {c}'s links are broken");
                for p in bin.iter() {
                    let b = Block::from_link(p).expect("a listed header is not null");
                    assert_eq!(class_of(b.map_len()), c, "header in the wrong bin");
                    assert_eq!(b.state(), CACHED, "bins hold a header that is not CACHED");
                }
            }
            n += bin.len();
        }
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
    use core::ptr;
    use std::vec::Vec;

    const MIB: usize = 1 << 20;

    /// Headers in ordinary test memory (the bins never touch a block beyond its header).
    fn headers(lens: &[usize]) -> Vec<Header> {
        lens.iter()
            .map(|&map_len| Header { state: CACHED, ..Header::live(0, map_len, 4096, 0) })
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
        assert_eq!(bins.find(MIB, 2 * MIB, Order::Smallest, |_| true), None);
        assert_eq!(bins.find(4 * MIB, 6 * MIB, Order::Smallest, |_| true), Some(b[2]));
        assert_eq!(
            bins.find(3 * MIB, 3 * MIB, Order::Smallest, |_| true),
            Some(b[1]),
            "newest first"
        );
        assert_eq!(bins.find(3 * MIB, 3 * MIB, Order::Smallest, |x| x != b[1]), Some(b[0]));
        assert_eq!(bins.find(MIB, 39 * MIB, Order::Largest, |_| true), Some(b[2]), "largest first");
        assert_eq!(bins.find(MIB, usize::MAX, Order::Largest, |_| true), Some(b[3]));
        // SAFETY: listed.
        unsafe { bins.remove(b[1]) };
        assert_eq!(bins.check(), 3);
        assert_eq!(bins.find(3 * MIB, 3 * MIB, Order::Smallest, |_| true), Some(b[0]));
        // SAFETY: listed.
        unsafe { bins.remove(b[0]) };
        assert_eq!(bins.find(3 * MIB, 3 * MIB, Order::Smallest, |_| true), None);
        assert_eq!(bins.check(), 2);
        for x in [b[2], b[3]] {
            // SAFETY: listed.
            unsafe { bins.remove(x) };
        }
        assert_eq!(bins.check(), 0);
        assert_eq!(bins.find(0, usize::MAX, Order::Largest, |_| true), None);
    }

    #[test]
    fn an_absurd_range_costs_a_bitmap_scan_and_visits_are_bounded() {
        // Several classes, so the bound holds across bins.
        let lens: Vec<usize> = (0..200).map(|i| (8 + i % 5) * MIB).collect();
        let mut hs = headers(&lens);
        let b = handles(&mut hs);
        let mut bins = Bins::new();
        for &x in &b {
            // SAFETY: the headers outlive the bins' use of them.
            unsafe { bins.insert(x) };
        }
        assert_eq!(bins.find(1 << 50, (1 << 50) + (1 << 48), Order::Smallest, |_| true), None);
        assert_eq!(bins.find(1 << 62, usize::MAX, Order::Smallest, |_| true), None);
        for order in [Order::Smallest, Order::Largest] {
            let mut seen = 0;
            assert_eq!(
                bins.find(MIB, usize::MAX, order, |_| {
                    seen += 1;
                    false
                }),
                None
            );
            assert_eq!(seen, VISIT_MAX, "a search gives up after VISIT_MAX blocks");
        }
    }
}
