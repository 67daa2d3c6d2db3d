//! The tier's statistics: the [`MidStats`] snapshot, the relaxed counters behind it, the
//! batched free-byte gauge changes (`Tally`), and folding a thread cache's counts into them.
//! Counts the fast path would touch live in the thread cache and are folded here on slow
//! paths (see the `mid` module docs).

use hak_sync::stat::{GaugeValue, StatCounter, StatGauge};

use super::Mid;
use crate::cache::MidThreadCache;

/// A snapshot of a [`Mid`]'s statistics ([`Mid::stats`]). Allocation and free counts and bytes
/// in use include each thread cache's share as of its last fold (one slow path in eight) or
/// flush.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MidStats {
    /// Blocks handed out.
    pub allocs: u64,
    /// Blocks taken back.
    pub frees: u64,
    /// Chunks mapped from hak-os.
    pub chunk_maps: u64,
    /// Chunks unmapped.
    pub chunk_unmaps: u64,
    /// Chunk mappings (or registrations) that failed.
    pub map_failures: u64,
    /// Chunks mapped now (in use or cached empty).
    pub chunks_live: u64,
    /// Empty chunks cached now.
    pub chunks_cached: u64,
    /// Shards in the current table (0 before first use).
    pub shard_count: u64,
    /// Times the shard table doubled.
    pub shard_growths: u64,
    /// Shard `try_lock`s that found the lock taken.
    pub try_lock_failures: u64,
    /// Chunk purges: for the delay (decay) and for the budget.
    pub purges_decay: u64,
    /// See `purges_decay`.
    pub purges_budget: u64,
    /// Decay passes run.
    pub decay_passes: u64,
    /// Bytes of chunks mapped (current, peak, total).
    pub bytes_mapped: GaugeValue,
    /// Bytes of blocks (class sizes) with users (current, peak, total).
    pub bytes_in_use: GaugeValue,
    /// Committed bytes of free blocks on chunk lists now (what the budget limits).
    pub bytes_free_committed: u64,
    /// Bytes of free blocks decommitted now (current), at most (peak) and ever (total).
    pub bytes_decommitted: GaugeValue,
}

/// Relaxed statistics counters (slow paths only).
pub(super) struct Counters {
    pub(super) allocs: StatCounter,
    pub(super) frees: StatCounter,
    pub(super) chunk_maps: StatCounter,
    pub(super) chunk_unmaps: StatCounter,
    pub(super) map_failures: StatCounter,
    pub(super) purges_decay: StatCounter,
    pub(super) purges_budget: StatCounter,
    pub(super) decay_passes: StatCounter,
    pub(super) mapped: StatGauge,
    /// Folded per thread, so its decreases may run ahead of its increases (the gauge
    /// tolerates that).
    pub(super) in_use: StatGauge,
    pub(super) free_committed: StatGauge,
    pub(super) decommitted: StatGauge,
}

impl Counters {
    pub(super) const fn new() -> Counters {
        Counters {
            allocs: StatCounter::new(),
            frees: StatCounter::new(),
            chunk_maps: StatCounter::new(),
            chunk_unmaps: StatCounter::new(),
            map_failures: StatCounter::new(),
            purges_decay: StatCounter::new(),
            purges_budget: StatCounter::new(),
            decay_passes: StatCounter::new(),
            mapped: StatGauge::new(),
            in_use: StatGauge::new(),
            free_committed: StatGauge::new(),
            decommitted: StatGauge::new(),
        }
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
        let cached = self.empty.lock().count();
        MidStats {
            allocs: self.st.allocs.get(),
            frees: self.st.frees.get(),
            chunk_maps: self.st.chunk_maps.get(),
            chunk_unmaps: self.st.chunk_unmaps.get(),
            map_failures: self.st.map_failures.get(),
            chunks_live: self.all.lock().count() as u64,
            chunks_cached: cached as u64,
            shard_count: self.shards.len() as u64,
            shard_growths: self.shards.growths(),
            try_lock_failures: self.shards.lock_failures(),
            purges_decay: self.st.purges_decay.get(),
            purges_budget: self.st.purges_budget.get(),
            decay_passes: self.st.decay_passes.get(),
            bytes_mapped: self.st.mapped.get(),
            bytes_in_use: self.st.in_use.get(),
            bytes_free_committed: self.st.free_committed.get().current,
            bytes_decommitted: self.st.decommitted.get(),
        }
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
            self.st.in_use.decrease(tc.free_bytes);
        }
        if tc.alloc_bytes > 0 {
            self.st.in_use.increase(tc.alloc_bytes);
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
            self.st.free_committed.decrease(t.committed_out);
        }
        if t.decommitted_out > 0 {
            self.st.decommitted.decrease(t.decommitted_out);
        }
        if t.committed_in > 0 {
            self.st.free_committed.increase(t.committed_in);
        }
        if t.decommitted_in > 0 {
            self.st.decommitted.increase(t.decommitted_in);
        }
        *t = Tally::default();
    }
}
