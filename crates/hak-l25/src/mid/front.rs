//! The thread-cache paths: [`Mid::alloc`] and [`Mid::dealloc`] with their slow paths (a batch
//! from the thread's shard or the chunks; a full bin spilled to the shard or the chunks), the
//! review of bin capacities, [`Mid::flush_thread`], and the upkeep a thread runs on one slow
//! path in eight (statistics fold, clock, decay).

use core::ptr::{self, NonNull};

use super::Mid;
use crate::block::{clear_mark, is_marked_free, mark_free, next, report_double_free, set_next};
use crate::cache::{Bin, MidThreadCache};
use crate::class::{class_for, CLASS_SIZE, NUM_CLASSES, SHARD_BATCHES, TC_CAP, TC_CEIL};

/// A thread reads the clock (and may run a decay pass) once in this many of its slow paths,
/// and once in this many times that many allocations (the thread-cache hits included, so a
/// thread whose every request hits its cache still lets memory fall).
const CLOCK_EVERY: u32 = 8;
/// See [`CLOCK_EVERY`]: allocations between upkeeps (64).
const ALLOCS_EVERY: u64 = 8 * CLOCK_EVERY as u64;
/// A thread reviews its bins' capacities once in this many upkeeps (4 under Miri, whose
/// interpreter makes the tests' thousands of operations slow).
const REVIEW_EVERY: u32 = if cfg!(miri) { 4 } else { 16 };

impl Mid<'_> {
    /// Slow-path upkeep: one in [`CLOCK_EVERY`] slow paths of a thread, its first one
    /// included (so nothing it frees is stamped with a clock that never ran), folds its
    /// counters into the statistics, reads the clock and gives [`Mid::decay`] a chance.
    #[inline]
    fn upkeep(&self, tc: &mut MidThreadCache) {
        if tc.slow_ops.is_multiple_of(CLOCK_EVERY) || tc.allocs >= ALLOCS_EVERY {
            self.upkeep_now(tc);
        }
        tc.slow_ops = tc.slow_ops.wrapping_add(1);
    }

    /// Folds `tc`'s counters and runs [`Mid::decay`] with the time now.
    #[cold]
    #[inline(never)]
    fn upkeep_now(&self, tc: &mut MidThreadCache) {
        self.fold(tc);
        self.decay(hak_os::monotonic_ns());
        tc.upkeeps = tc.upkeeps.wrapping_add(1);
        if tc.upkeeps.is_multiple_of(REVIEW_EVERY) {
            self.review(tc);
        }
    }

    /// Allocates a block for `size` bytes aligned to `align`, or `None` if the mid tier does
    /// not serve the pair (see [`can_serve`](crate::can_serve)) or the OS refused memory.
    ///
    /// The block is `block_size(size, align)` bytes, `align`-aligned, and uninitialised.
    /// A thread-cache hit takes no lock and no atomic read-modify-write.
    #[inline]
    pub fn alloc(&self, tc: &mut MidThreadCache, size: usize, align: usize) -> Option<NonNull<u8>> {
        let c = class_for(size, align)?;
        let bin = &mut tc.bins[c];
        if let Some(b) = NonNull::new(bin.head) {
            // SAFETY: `b` is a free block on this thread cache's list: ours to read and, as it
            // goes to the caller, to unmark.
            unsafe {
                bin.head = next(b.as_ptr());
                clear_mark(b.as_ptr());
            }
            hak_sync::check!(bin.count > 0, "thread cache count");
            bin.count = bin.count.wrapping_sub(1);
            if bin.count < u32::from(bin.low) {
                bin.low = bin.count as u16;
            }
            tc.allocs += 1;
            tc.alloc_bytes += CLASS_SIZE[c] as u64;
            if tc.allocs >= ALLOCS_EVERY {
                self.upkeep_now(tc);
            }
            return Some(b);
        }
        self.alloc_slow(tc, c)
    }

    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, tc: &mut MidThreadCache, c: usize) -> Option<NonNull<u8>> {
        self.upkeep(tc);
        self.shards.seed(&mut tc.cursor);
        let cap = tc.bins[c].cap_or(TC_CAP[c]);
        let (head, n) = match self.shards.pop(self.reg.os(), &mut tc.cursor, c, self.now()) {
            Some(batch) => batch,
            None => self.central_alloc(c, cap as usize)?,
        };
        // SAFETY: the batch (`n >= 1` blocks, null-terminated) is ours now; its head goes to
        // the caller.
        let rest = unsafe {
            clear_mark(head);
            next(head)
        };
        let bin = &mut tc.bins[c];
        hak_sync::check!(n as u32 <= TC_CEIL[c], "a batch larger than any bin");
        bin.head = rest;
        bin.count = (n as u32).wrapping_sub(1);
        bin.cap = cap;
        bin.low = 0;
        bin.refills = bin.refills.saturating_add(1);
        tc.allocs += 1;
        tc.alloc_bytes += CLASS_SIZE[c] as u64;
        NonNull::new(head)
    }

    /// Frees a block. A block already free (its free mark set: see `block.rs`) is reported on
    /// stderr and left alone.
    ///
    /// # Safety
    /// `ptr` came from [`Mid::alloc`] of this `Mid` with the same `(size, align)` (or with any
    /// pair whose [`block_size`](crate::block_size) is the same, e.g. `(usable_size, 1)`), and
    /// is not used afterwards. `tc` may belong to any thread.
    #[inline]
    pub unsafe fn dealloc(
        &self,
        tc: &mut MidThreadCache,
        ptr: NonNull<u8>,
        size: usize,
        align: usize,
    ) {
        let Some(c) = class_for(size, align) else {
            hak_sync::check!(false, "mid dealloc of a size it does not serve");
            return;
        };
        hak_sync::check!(
            // SAFETY: `ptr` is a mid block its user gave back (contract).
            unsafe { self.usable_size(ptr) } == Some(CLASS_SIZE[c]),
            "mid dealloc with a size of another class"
        );
        let b = ptr.as_ptr();
        // SAFETY: the block is ours again (contract): its first words are ours to read and
        // write. A block that already carries the free mark was freed before: linking it a
        // second time would hand it to two users, so the free is refused.
        unsafe {
            if is_marked_free(b) {
                report_double_free();
                return;
            }
            mark_free(b);
        }
        let bin = &mut tc.bins[c];
        if bin.count < u32::from(bin.cap) {
            // SAFETY: as above; its first word becomes the link.
            unsafe { set_next(b, bin.head) };
            bin.head = b;
            bin.count += 1;
            tc.frees += 1;
            tc.free_bytes += CLASS_SIZE[c] as u64;
            return;
        }
        // SAFETY: forwarded.
        unsafe { self.dealloc_slow(tc, c, b) }
    }

    /// # Safety
    /// `b` is a block of class `c` that is ours, marked free; `tc.bins[c]` is full (or not
    /// used yet: `cap == 0`).
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_slow(&self, tc: &mut MidThreadCache, c: usize, b: *mut u8) {
        self.upkeep(tc);
        self.shards.seed(&mut tc.cursor);
        let bin = &mut tc.bins[c];
        if bin.cap == 0 {
            bin.cap = TC_CAP[c] as u16;
        }
        if bin.count >= u32::from(bin.cap) {
            let (head, n) = (bin.head, bin.count as usize);
            bin.head = ptr::null_mut();
            bin.count = 0;
            bin.low = 0;
            bin.spills = bin.spills.saturating_add(1);
            // SAFETY: the bin's list (`n >= 1` blocks: `cap >= 1`) is ours.
            unsafe { self.spill(tc, c, head, n, true) };
        }
        let bin = &mut tc.bins[c];
        // SAFETY: `b` is ours (contract).
        unsafe { set_next(b, bin.head) };
        bin.head = b;
        bin.count += 1;
        tc.frees += 1;
        tc.free_bytes += CLASS_SIZE[c] as u64;
    }

    /// Hands a list of `n >= 1` blocks of class `c` out of a thread cache: to the thread's
    /// shard as one batch if `to_shard` and it has room, else back to the chunks.
    ///
    /// # Safety
    /// `head` starts a null-terminated list of `n` free blocks of class `c` that are ours.
    unsafe fn spill(
        &self,
        tc: &mut MidThreadCache,
        c: usize,
        head: *mut u8,
        n: usize,
        to_shard: bool,
    ) {
        let now = self.now();
        // SAFETY: the list is ours (contract); it becomes one batch.
        let pushed = to_shard
            && unsafe {
                self.shards.push(self.reg.os(), &mut tc.cursor, c, head, n, SHARD_BATCHES[c], now)
            };
        if !pushed {
            // SAFETY: not pushed, so the list is still ours.
            unsafe { self.central_free(c, head, n, now) };
        }
    }

    /// Reviews every bin's capacity (see `cache.rs`): a bin's capacity shrinks by its
    /// low-water mark (blocks it never needed since the last review) and half of those blocks
    /// (rounded up) go back to the chunks; a bin that both ran empty and overflowed doubles its
    /// capacity.
    #[cold]
    fn review(&self, tc: &mut MidThreadCache) {
        for (c, &ceil) in TC_CEIL.iter().enumerate() {
            let bin = &mut tc.bins[c];
            if bin.cap == 0 {
                continue;
            }
            let unused = u32::from(bin.low).min(bin.count);
            if unused > 0 {
                let k = unused.div_ceil(2);
                let head = bin.head;
                let mut last = head;
                // SAFETY: the bin's list is ours and holds `count >= k` blocks.
                unsafe {
                    for _ in 1..k {
                        last = next(last);
                    }
                    bin.head = next(last);
                    set_next(last, ptr::null_mut());
                }
                bin.count -= k;
                bin.cap = bin.cap.saturating_sub(unused as u16).max(1);
                // SAFETY: the `k` blocks just cut off the bin are ours; cold, so to the chunks.
                unsafe { self.spill(tc, c, head, k as usize, true) };
            } else if bin.refills > 0 && bin.spills > 0 {
                bin.cap = bin.cap.saturating_mul(2).min(ceil as u16);
            }
            let bin = &mut tc.bins[c];
            bin.low = bin.count as u16;
            bin.refills = 0;
            bin.spills = 0;
        }
    }

    /// Returns every block cached in `tc` (and the blocks in its shard) to the chunks, and
    /// folds its counters into the statistics. Call it at thread exit or on
    /// `flush_thread_cache()`; `tc` stays usable.
    pub fn flush_thread(&self, tc: &mut MidThreadCache) {
        self.fold(tc);
        let now = self.now();
        for c in 0..NUM_CLASSES {
            let bin = core::mem::replace(&mut tc.bins[c], Bin::EMPTY);
            tc.bins[c].cap = bin.cap;
            if bin.count > 0 {
                // SAFETY: the bin's blocks are ours.
                unsafe { self.central_free(c, bin.head, bin.count as usize, now) };
            }
        }
        self.shards.drain_own(&tc.cursor, |c, h, n| {
            // SAFETY: `drain_own` hands over batches it took under the shard lock.
            unsafe { self.central_free(c, h, n, now) }
        });
        self.shards.flush_cursor(&mut tc.cursor);
    }
}
