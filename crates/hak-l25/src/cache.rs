//! [`MidThreadCache`]: one thread's stack of free blocks per class, kept by the facade in its
//! per-thread state.
//!
//! Per class `c` a bin holds a null-terminated list of free blocks (word 0 links) and its
//! length: `bins[c].count == |bins[c].head| <= TC_CEIL[c]`. A full bin (`count == cap`) is
//! exactly one shard batch, so overflow hands the whole list to a shard in O(1), and an empty
//! bin takes one batch back in O(1).
//!
//! Adaptive capacity: each bin's `cap` starts at `TC_CAP[c]` (a `cap` of 0 means "not used
//! yet") and moves between 1 and `TC_CEIL[c]`. A bin tracks, since its last review, its
//! low-water mark `low` (the fewest blocks it held: that many were never needed), its
//! `refills` (allocations that found it empty) and its `spills` (frees that found it full).
//! The owner reviews all bins on one upkeep in sixteen (about every 1024 allocations or 128
//! slow paths; reviewing four times as often cost `mid_mixed` 4% more instructions for
//! nothing): a bin whose low-water mark is above 0 lowers `cap` by that mark and gives half of
//! those blocks (rounded up) away, to the thread's shard (still at hand there; idle shards are
//! drained by the decay) or to the chunks; a bin that both ran empty and overflowed in the
//! window doubles `cap`. So a class that goes quiet gives its blocks back over a few reviews,
//! a working set settles just under `cap`, and a class that keeps crossing its bounds both
//! ways gets room. The alloc hit path pays one compare for the low-water mark.
//!
//! Everything here belongs to the owning thread: plain fields, no atomics, no `Drop`. All-zero
//! bytes are a valid cache equal to [`MidThreadCache::new`], so the facade may place one in
//! zeroed OS pages. Before the thread goes away (or the cache is abandoned) the facade calls
//! [`Mid::flush_thread`](crate::Mid::flush_thread), or the cached blocks stay unreachable.
//! Counters (allocs, frees, bytes) are plain and folded into the `Mid`'s statistics on one
//! slow path in eight and on flush.

use core::fmt;
use core::ptr;

use crate::class::NUM_CLASSES;
use crate::shard::ShardCursor;

/// One class's free blocks in a thread cache.
#[derive(Clone, Copy)]
pub(crate) struct Bin {
    /// First free block (null: empty); word 0 links the rest.
    pub(crate) head: *mut u8,
    /// Blocks on the list.
    pub(crate) count: u32,
    /// Capacity now (0: not used yet, taken as `TC_CAP`).
    pub(crate) cap: u16,
    /// The fewest blocks on the list since the last review.
    pub(crate) low: u16,
    /// Allocations that found the bin empty since the last review.
    pub(crate) refills: u16,
    /// Frees that found the bin full since the last review.
    pub(crate) spills: u16,
}

impl Bin {
    /// No blocks, not used yet.
    pub(crate) const EMPTY: Bin =
        Bin { head: ptr::null_mut(), count: 0, cap: 0, low: 0, refills: 0, spills: 0 };

    /// The capacity, `TC_CAP[c]` for a bin not used yet.
    #[inline]
    pub(crate) fn cap_or(&self, start: u32) -> u16 {
        if self.cap == 0 {
            start as u16
        } else {
            self.cap
        }
    }
}

/// A thread's cache of mid blocks. Create it with [`MidThreadCache::new`] (or zeroed memory);
/// pass it as `&mut` to every [`Mid`](crate::Mid) operation of its thread; call
/// [`Mid::flush_thread`](crate::Mid::flush_thread) before dropping it. A cache must be used
/// with one `Mid` only.
pub struct MidThreadCache {
    /// Free blocks per class.
    pub(crate) bins: [Bin; NUM_CLASSES],
    /// Which shard this thread uses, and its contention window.
    pub(crate) cursor: ShardCursor,
    /// Allocations served since the last fold.
    pub(crate) allocs: u64,
    /// Frees taken since the last fold.
    pub(crate) frees: u64,
    /// Block bytes handed out since the last fold.
    pub(crate) alloc_bytes: u64,
    /// Block bytes taken back since the last fold.
    pub(crate) free_bytes: u64,
    /// Slow paths taken (one in `CLOCK_EVERY` reads the clock for the decay).
    pub(crate) slow_ops: u32,
    /// Upkeeps run (one in `REVIEW_EVERY` reviews the bins' capacities).
    pub(crate) upkeeps: u32,
}

// SAFETY: the cache owns its blocks exclusively; nothing in it is tied to a thread, so it may
// move to another thread (it is then that thread's cache).
unsafe impl Send for MidThreadCache {}

impl Default for MidThreadCache {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MidThreadCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MidThreadCache")
            .field("cached_blocks", &self.cached_blocks())
            .field("seed", &self.cursor.seed)
            .finish_non_exhaustive()
    }
}

impl MidThreadCache {
    /// An empty cache; the `Mid` gives it a shard seed on its first slow path. Equal to
    /// all-zero bytes.
    pub const fn new() -> MidThreadCache {
        Self::with_cursor(ShardCursor::UNSEEDED)
    }

    /// An empty cache that uses shard `seed & (shard_count - 1)`: threads with equal seeds
    /// share a shard (the facade may seed by CPU, tests use it to force contention).
    pub const fn with_seed(seed: usize) -> MidThreadCache {
        Self::with_cursor(ShardCursor::with_seed(seed))
    }

    const fn with_cursor(cursor: ShardCursor) -> MidThreadCache {
        MidThreadCache {
            bins: [Bin::EMPTY; NUM_CLASSES],
            cursor,
            allocs: 0,
            frees: 0,
            alloc_bytes: 0,
            free_bytes: 0,
            slow_ops: 0,
            upkeeps: 0,
        }
    }

    /// Blocks held, all classes together.
    pub fn cached_blocks(&self) -> usize {
        self.bins.iter().map(|b| b.count as usize).sum()
    }
}
