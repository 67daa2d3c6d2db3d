//! Statistics counters.
//!
//! These are always `core` atomics, also under loom: a statistic is never part of a hand-off
//! between threads (nothing is published or ordered through it), so there is nothing for loom to
//! check, and keeping them out of the model keeps models small and constructors `const`.
//! All accesses are `Relaxed`; a reader sees a value that was true at some recent moment.

use core::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing event counter.
#[derive(Debug, Default)]
pub struct StatCounter(AtomicU64);

impl StatCounter {
    /// A counter at zero.
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }
    /// Adds `n` events.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The total so far.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A quantity that goes up and down, with its peak (`Count { current, peak, total }`).
///
/// Decreases may arrive before the increases they undo: threads fold their per-thread shares
/// at different times, and the thread that frees a block may fold before the one that
/// allocated it. `current` then runs below zero for a while (it wraps, and wraps back when the
/// increases land); [`StatGauge::get`] reads such a value as 0 and the peak ignores it.
#[derive(Debug, Default)]
pub struct StatGauge {
    current: AtomicU64,
    peak: AtomicU64,
    total: AtomicU64,
}

/// A snapshot of a [`StatGauge`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GaugeValue {
    /// The value now.
    pub current: u64,
    /// The highest value seen.
    pub peak: u64,
    /// The sum of all increases.
    pub total: u64,
}

impl StatGauge {
    /// A gauge at zero.
    pub const fn new() -> Self {
        Self { current: AtomicU64::new(0), peak: AtomicU64::new(0), total: AtomicU64::new(0) }
    }
    /// Raises the gauge by `n`, updating the peak.
    #[inline]
    pub fn increase(&self, n: u64) {
        let now = self.current.fetch_add(n, Ordering::Relaxed).wrapping_add(n);
        self.total.fetch_add(n, Ordering::Relaxed);
        if !is_below_zero(now) {
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
    }
    /// Lowers the gauge by `n`.
    #[inline]
    pub fn decrease(&self, n: u64) {
        self.current.fetch_sub(n, Ordering::Relaxed);
    }
    /// The current, peak and total values.
    pub fn get(&self) -> GaugeValue {
        let current = self.current.load(Ordering::Relaxed);
        GaugeValue {
            current: if is_below_zero(current) { 0 } else { current },
            peak: self.peak.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
        }
    }
}

/// Whether a wrapped gauge value stands for a negative one (decreases folded first).
#[inline]
fn is_below_zero(v: u64) -> bool {
    (v as i64) < 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge_tracks_current_peak_and_total() {
        let g = StatGauge::new();
        g.increase(10);
        g.decrease(4);
        g.increase(2);
        assert_eq!(g.get(), GaugeValue { current: 8, peak: 10, total: 12 });
    }

    #[test]
    fn gauge_reads_zero_while_decreases_run_ahead_of_increases() {
        let g = StatGauge::new();
        g.increase(5);
        g.decrease(12); // another thread's frees, folded before its allocations
        assert_eq!(g.get(), GaugeValue { current: 0, peak: 5, total: 5 });
        g.increase(3); // still below zero: no peak from a wrapped value
        assert_eq!(g.get(), GaugeValue { current: 0, peak: 5, total: 8 });
        g.increase(10);
        assert_eq!(g.get(), GaugeValue { current: 6, peak: 6, total: 18 });
    }

    #[test]
    fn counter_adds() {
        let c = StatCounter::new();
        c.add(3);
        c.add(4);
        assert_eq!(c.get(), 7);
    }
}

/// A counter written by one thread and read by any: the writer does a relaxed load and store
/// (plain moves on x86-64, no read-modify-write), readers a relaxed load.
#[derive(Debug, Default)]
pub struct LocalCounter(AtomicU64);

impl LocalCounter {
    /// A counter at zero.
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }
    /// Adds `n`. Only the owning thread may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
    /// The total so far.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
