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

/// A snapshot field the owner fills in itself when it takes the snapshot (occupancy read under
/// its lock, a value derived from other counters, a nested layer's snapshot). It holds nothing
/// and reads as `T::default()`.
#[derive(Debug, Default)]
pub struct Derived<T>(core::marker::PhantomData<fn() -> T>);

impl<T> Derived<T> {
    /// The placeholder.
    pub const fn new() -> Self {
        Self(core::marker::PhantomData)
    }
}

/// A live statistic: what a [`stats!`](crate::stats) counters struct is made of.
pub trait Stat {
    /// What a snapshot holds for it.
    type Value: StatValue;
    /// Its value now.
    fn read(&self) -> Self::Value;
}

impl Stat for StatCounter {
    type Value = u64;
    #[inline]
    fn read(&self) -> u64 {
        self.get()
    }
}

impl Stat for LocalCounter {
    type Value = u64;
    #[inline]
    fn read(&self) -> u64 {
        self.get()
    }
}

impl Stat for StatGauge {
    type Value = GaugeValue;
    #[inline]
    fn read(&self) -> GaugeValue {
        self.get()
    }
}

impl<T: StatValue> Stat for Derived<T> {
    type Value = T;
    #[inline]
    fn read(&self) -> T {
        T::default()
    }
}

/// The dotted name of a value inside nested snapshots (`"pool.cache.hits"`), kept on the stack:
/// printing statistics must not allocate.
#[derive(Debug, Clone, Copy)]
pub struct StatPath {
    parts: [&'static str; StatPath::DEPTH],
    len: usize,
}

impl StatPath {
    /// Deepest nesting kept; deeper names are cut to this many parts.
    pub const DEPTH: usize = 6;

    /// The empty path.
    pub const fn root() -> StatPath {
        StatPath { parts: [""; StatPath::DEPTH], len: 0 }
    }

    /// This path with `name` appended.
    pub fn join(mut self, name: &'static str) -> StatPath {
        if let Some(p) = self.parts.get_mut(self.len) {
            *p = name;
            self.len += 1;
        }
        self
    }

    /// The parts, outermost first.
    pub fn parts(&self) -> &[&'static str] {
        self.parts.get(..self.len).unwrap_or(&[])
    }
}

/// A value in a statistics snapshot: a count, a [`GaugeValue`], or a whole snapshot made by
/// [`stats!`](crate::stats) (so snapshots nest).
pub trait StatValue: Copy + Default {
    /// Adds `other` in: counts add; gauges add their current values and totals, and their
    /// peaks (an upper bound of the combined peak, which separate gauges cannot know).
    fn merge(&mut self, other: &Self);
    /// Calls `f` with the name and value of every count in it, in declaration order; a gauge
    /// gives its current value under its own name and its peak under `peak`.
    fn visit(&self, path: StatPath, f: &mut dyn FnMut(&StatPath, u64));
}

impl StatValue for u64 {
    #[inline]
    fn merge(&mut self, other: &Self) {
        *self = self.wrapping_add(*other);
    }
    fn visit(&self, path: StatPath, f: &mut dyn FnMut(&StatPath, u64)) {
        f(&path, *self);
    }
}

impl StatValue for GaugeValue {
    fn merge(&mut self, other: &Self) {
        self.current = self.current.wrapping_add(other.current);
        self.peak = self.peak.wrapping_add(other.peak);
        self.total = self.total.wrapping_add(other.total);
    }
    fn visit(&self, path: StatPath, f: &mut dyn FnMut(&StatPath, u64)) {
        f(&path, self.current);
        f(&path.join("peak"), self.peak);
    }
}

/// Declares a layer's statistics once: the live struct (one [`Stat`] per field), the snapshot
/// struct (its [`Stat::Value`] per field, `Copy + Default + Eq`), `new`/`Default`, `snapshot`,
/// and [`StatValue`] for the snapshot (merge and visit, so every report prints it the same way).
///
/// A second form, `stats! { pub struct Snap { a: u64, b: OtherSnap } }`, declares only a
/// snapshot (fields are values: `u64`, [`GaugeValue`] or other snapshots), for a report that
/// gathers several layers' snapshots.
///
/// Field types: [`StatCounter`] (any thread adds), [`LocalCounter`] (one writer),
/// [`StatGauge`] (up and down, with peak), and [`Derived<T>`] for what the owner fills into the
/// snapshot itself (occupancy counted under its lock, or a nested layer's snapshot).
///
/// ```
/// use hak_sync::stat::{Derived, StatCounter, StatGauge, StatPath, StatValue};
///
/// hak_sync::stats! {
///     /// Live counters of a pool.
///     pub struct PoolCounters => {
///         /// A snapshot of [`PoolCounters`].
///         pub struct PoolStats;
///     }
///     /// Blocks handed out.
///     allocs: StatCounter,
///     /// Bytes mapped.
///     mapped: StatGauge,
///     /// Blocks cached now (the pool counts them under its lock).
///     cached: Derived<u64>,
/// }
///
/// static COUNTERS: PoolCounters = PoolCounters::new();
/// COUNTERS.allocs.add(2);
/// COUNTERS.mapped.increase(4096);
/// let mut s = COUNTERS.snapshot();
/// s.cached = 7;
/// let mut total = PoolStats::default();
/// total.merge(&s);
/// total.merge(&s);
/// assert_eq!((total.allocs, total.mapped.current, total.cached), (4, 8192, 14));
///
/// let mut lines = 0;
/// total.visit(StatPath::root().join("pool"), &mut |path, _v| {
///     assert_eq!(path.parts()[0], "pool");
///     lines += 1;
/// });
/// assert_eq!(lines, 4); // allocs, mapped, mapped.peak, cached
/// ```
#[macro_export]
macro_rules! stats {
    (
        $(#[$lmeta:meta])* $lvis:vis struct $live:ident => {
            $(#[$smeta:meta])* $svis:vis struct $snap:ident;
        }
        $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
    ) => {
        $(#[$lmeta])*
        #[derive(Debug, Default)]
        $lvis struct $live {
            $( $(#[$fmeta])* $lvis $field: $ty, )*
        }

        impl $live {
            /// Everything at zero.
            #[allow(clippy::new_without_default)]
            $lvis const fn new() -> $live {
                $live { $( $field: <$ty>::new(), )* }
            }

            /// The values now (each read on its own, relaxed); `Derived` fields are left at
            /// their default for the owner to fill.
            $lvis fn snapshot(&self) -> $snap {
                $snap { $( $field: $crate::stat::Stat::read(&self.$field), )* }
            }
        }

        $crate::stats! {
            $(#[$smeta])* $svis struct $snap {
                $( $(#[$fmeta])* $field: <$ty as $crate::stat::Stat>::Value, )*
            }
        }
    };
    (
        $(#[$smeta:meta])* $svis:vis struct $snap:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$smeta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        $svis struct $snap {
            $( $(#[$fmeta])* $svis $field: $ty, )*
        }

        impl $crate::stat::StatValue for $snap {
            fn merge(&mut self, other: &Self) {
                $( $crate::stat::StatValue::merge(&mut self.$field, &other.$field); )*
            }
            fn visit(
                &self,
                path: $crate::stat::StatPath,
                f: &mut dyn FnMut(&$crate::stat::StatPath, u64),
            ) {
                $( $crate::stat::StatValue::visit(&self.$field, path.join(stringify!($field)), f); )*
            }
        }
    };
}

#[cfg(test)]
mod macro_tests {
    use super::*;

    crate::stats! {
        /// Inner live.
        pub(crate) struct InnerLive => {
            /// Inner snapshot.
            pub(crate) struct InnerSnap;
        }
        /// Hits.
        hits: StatCounter,
    }

    crate::stats! {
        /// Outer live.
        pub(crate) struct OuterLive => {
            /// Outer snapshot.
            pub(crate) struct OuterSnap;
        }
        /// Local.
        local: LocalCounter,
        /// Gauge.
        bytes: StatGauge,
        /// Nested.
        inner: Derived<InnerSnap>,
    }

    crate::stats! {
        /// A report of two layers.
        pub(crate) struct Report {
            /// One layer.
            outer: OuterSnap,
            /// A plain value.
            leaves: u64,
        }
    }

    #[test]
    fn a_snapshot_only_struct_merges_and_visits_its_parts() {
        let mut r = Report { outer: OuterSnap { local: 2, ..Default::default() }, leaves: 1 };
        r.merge(&r.clone());
        assert_eq!((r.outer.local, r.leaves), (4, 2));
        let mut names = 0;
        r.visit(StatPath::root(), &mut |p, _| {
            assert!(matches!(p.parts(), ["outer", ..] | ["leaves"]));
            names += 1;
        });
        assert_eq!(names, 5); // local, bytes, bytes.peak, inner.hits, leaves
    }

    #[test]
    fn snapshot_reads_every_field_and_leaves_derived_at_default() {
        let l = OuterLive::new();
        l.local.add(3);
        l.bytes.increase(10);
        l.bytes.decrease(4);
        let s = l.snapshot();
        assert_eq!(s.local, 3);
        assert_eq!(s.bytes, GaugeValue { current: 6, peak: 10, total: 10 });
        assert_eq!(s.inner, InnerSnap::default());
        let i = InnerLive::new();
        i.hits.add(2);
        assert_eq!(i.snapshot(), InnerSnap { hits: 2 });
    }

    #[test]
    fn merge_adds_counts_gauges_and_nested_snapshots() {
        let mut a = OuterSnap {
            local: 1,
            bytes: GaugeValue { current: 2, peak: 5, total: 7 },
            inner: InnerSnap { hits: 4 },
        };
        let b = OuterSnap {
            local: 10,
            bytes: GaugeValue { current: 1, peak: 3, total: 4 },
            inner: InnerSnap { hits: 6 },
        };
        a.merge(&b);
        assert_eq!(a.local, 11);
        assert_eq!(a.bytes, GaugeValue { current: 3, peak: 8, total: 11 });
        assert_eq!(a.inner.hits, 10);
    }

    #[test]
    fn visit_names_every_value_with_its_path_in_order() {
        let s = OuterSnap {
            local: 1,
            bytes: GaugeValue { current: 2, peak: 5, total: 7 },
            inner: InnerSnap { hits: 4 },
        };
        let mut seen: std::vec::Vec<(std::vec::Vec<&str>, u64)> = std::vec::Vec::new();
        s.visit(StatPath::root().join("top"), &mut |p, v| seen.push((p.parts().to_vec(), v)));
        let want: [(&[&str], u64); 4] = [
            (&["top", "local"], 1),
            (&["top", "bytes"], 2),
            (&["top", "bytes", "peak"], 5),
            (&["top", "inner", "hits"], 4),
        ];
        assert_eq!(seen.len(), want.len());
        for ((p, v), (wp, wv)) in seen.iter().zip(want.iter()) {
            assert_eq!((p.as_slice(), *v), (*wp, *wv));
        }
    }

    #[test]
    fn a_path_deeper_than_its_capacity_is_cut_not_overrun() {
        let mut p = StatPath::root();
        for _ in 0..StatPath::DEPTH + 3 {
            p = p.join("x");
        }
        assert_eq!(p.parts().len(), StatPath::DEPTH);
    }
}
