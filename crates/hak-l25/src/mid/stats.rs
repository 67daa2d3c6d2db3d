//! The tier's statistics: the [`MidStats`] snapshot, the relaxed counters behind it, the
//! batched free-byte gauge changes (`Tally`), and folding a thread cache's counts into them.
//! Counts the fast path would touch live in the thread cache and are folded here on slow
//! paths (see the `mid` module docs).

use hak_sync::stat::{Derived, Stat, StatCounter, StatGauge};

use super::Mid;
use crate::cache::MidThreadCache;

hak_sync::stats! {
    /// The tier's live counters: relaxed, updated on slow paths only (the thread caches' counts
    /// are folded in; see the `mid` module docs).
    pub(super) struct Counters => {
        /// A snapshot of a [`Mid`]'s statistics ([`Mid::stats`]). Allocation and free counts
        /// and bytes in use include each thread cache's share as of its last fold (one slow
        /// path in eight) or flush.
        pub struct MidStats;
    }
    /// Blocks handed out.
    allocs: StatCounter,
    /// Blocks taken back.
    frees: StatCounter,
    /// Chunks mapped from hak-os.
    chunk_maps: StatCounter,
    /// Chunks unmapped.
    chunk_unmaps: StatCounter,
    /// Chunk mappings (or registrations) that failed.
    map_failures: StatCounter,
    /// Chunks mapped now (in use or cached empty).
    chunks_live: Derived<u64>,
    /// Empty chunks cached now.
    chunks_cached: Derived<u64>,
    /// Shards in the current table (0 before first use).
    shard_count: Derived<u64>,
    /// Times the shard table doubled.
    shard_growths: Derived<u64>,
    /// Shard `try_lock`s that found the lock taken.
    try_lock_failures: Derived<u64>,
    /// Chunk purges: for the delay (decay) and for the budget.
    purges_decay: StatCounter,
    /// See `purges_decay`.
    purges_budget: StatCounter,
    /// Decay passes run.
    decay_passes: StatCounter,
    /// Bytes of chunks mapped (current, peak, total).
    bytes_mapped: StatGauge,
    /// Bytes of blocks (class sizes) with users (current, peak, total). Folded per thread, so
    /// its decreases may run ahead of its increases (the gauge tolerates that).
    bytes_in_use: StatGauge,
    /// Committed bytes of free blocks on chunk lists now (what the budget limits).
    bytes_free_committed: Level,
    /// Bytes of free blocks decommitted now (current), at most (peak) and ever (total).
    bytes_decommitted: StatGauge,
}

/// A gauge reported by its current value alone: the committed free bytes are what the budget
/// compares against, and their peak and total have never been reported.
#[derive(Debug, Default)]
pub(super) struct Level(StatGauge);

impl Level {
    /// At zero.
    pub(super) const fn new() -> Level {
        Level(StatGauge::new())
    }
    /// Raises it by `n`.
    pub(super) fn increase(&self, n: u64) {
        self.0.increase(n);
    }
    /// Lowers it by `n`.
    pub(super) fn decrease(&self, n: u64) {
        self.0.decrease(n);
    }
    /// The value now.
    pub(super) fn current(&self) -> u64 {
        self.0.get().current
    }
}

impl Stat for Level {
    type Value = u64;
    fn read(&self) -> u64 {
        self.current()
    }
}

/// Changes to the free-byte gauges, gathered over a batch and applied at once (each gauge
/// update is an atomic read-modify-write on a shared line).
#[derive(Default)]
pub(super) struct Tally {
    pub(super) committed_in: u64,
    pub(super) committed_out: u64,
    pub(super) decommitted_in: u64,
    pub(super) decommitted_out: u64,
}

impl Mid<'_> {
    /// The statistics now.
    pub fn stats(&self) -> MidStats {
        let mut s = self.st.snapshot();
        s.chunks_cached = self.empty.lock().count() as u64;
        s.chunks_live = self.all.lock().count() as u64;
        s.shard_count = self.shards.len() as u64;
        s.shard_growths = self.shards.growths();
        s.try_lock_failures = self.shards.lock_failures();
        s
    }

    /// Folds `tc`'s counters into the statistics.
    pub(super) fn fold(&self, tc: &mut MidThreadCache) {
        if tc.allocs > 0 {
            self.st.allocs.add(tc.allocs);
        }
        if tc.frees > 0 {
            self.st.frees.add(tc.frees);
        }
        // Frees first, so the peak is taken with this fold's frees already counted.
        if tc.free_bytes > 0 {
            self.st.bytes_in_use.decrease(tc.free_bytes);
        }
        if tc.alloc_bytes > 0 {
            self.st.bytes_in_use.increase(tc.alloc_bytes);
        }
        tc.allocs = 0;
        tc.frees = 0;
        tc.alloc_bytes = 0;
        tc.free_bytes = 0;
    }

    /// Applies a batch's changes to the free-byte gauges (decreases first, so the peaks are
    /// not inflated).
    pub(super) fn apply(&self, t: &mut Tally) {
        if t.committed_out > 0 {
            self.st.bytes_free_committed.decrease(t.committed_out);
        }
        if t.decommitted_out > 0 {
            self.st.bytes_decommitted.decrease(t.decommitted_out);
        }
        if t.committed_in > 0 {
            self.st.bytes_free_committed.increase(t.committed_in);
        }
        if t.decommitted_in > 0 {
            self.st.bytes_decommitted.increase(t.decommitted_in);
        }
        *t = Tally::default();
    }
}
