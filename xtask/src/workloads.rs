//! The benchmark plan: every report row, the `hak-bench` command line that produces it at each
//! scale, and the allocators `hak-bench` can be built with.
//!
//! Counts are chosen so one run takes about 0.3–2 s under the fast peers on a 2-core machine
//! (`full`), a quarter of that or less (`quick`), or a few milliseconds (`smoke`, which only proves
//! the workloads still work). `docs/bench.md` describes each workload.

/// How big the runs are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Full counts, 5 runs by default.
    Full,
    /// Smaller counts, 3 runs by default.
    Quick,
    /// Tiny counts, 1 run: a correctness check for CI.
    Smoke,
}

impl Mode {
    /// Lower-case name, as shown in the report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Quick => "quick",
            Mode::Smoke => "smoke",
        }
    }
}

/// One report row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Workload {
    /// Row name; `hak-bench` prints the same name on its RESULT line.
    pub(crate) id: &'static str,
    /// `hak-bench` arguments (subcommand first) at full scale.
    pub(crate) full: &'static str,
    /// ... at `--quick` scale.
    pub(crate) quick: &'static str,
    /// ... at `--smoke` scale.
    pub(crate) smoke: &'static str,
}

impl Workload {
    /// The `hak-bench` arguments for `mode`.
    pub(crate) fn args(&self, mode: Mode) -> &'static str {
        match mode {
            Mode::Full => self.full,
            Mode::Quick => self.quick,
            Mode::Smoke => self.smoke,
        }
    }
}

impl crate::cli::Named for Workload {
    fn id(&self) -> &'static str {
        self.id
    }
}

/// Every row, in report order.
pub(crate) const WORKLOADS: &[Workload] = &[
    Workload {
        id: "random_mixed/400",
        full: "random_mixed 20000000 400 1234567",
        quick: "random_mixed 5000000 400 1234567",
        smoke: "random_mixed 20000 400 1234567",
    },
    Workload {
        id: "random_mixed/4096",
        full: "random_mixed 10000000 4096 1234567",
        quick: "random_mixed 2500000 4096 1234567",
        smoke: "random_mixed 20000 4096 1234567",
    },
    Workload {
        id: "random_mixed/65536",
        full: "random_mixed 4000000 65536 7",
        quick: "random_mixed 1000000 65536 7",
        smoke: "random_mixed 20000 65536 7",
    },
    Workload {
        id: "tiny_hot",
        full: "tiny_hot 64 100 200000",
        quick: "tiny_hot 64 100 50000",
        smoke: "tiny_hot 64 100 20",
    },
    Workload {
        id: "mid_large_mt",
        full: "mid_large_mt 2 2000000 2048 42",
        quick: "mid_large_mt 2 500000 2048 42",
        smoke: "mid_large_mt 2 500 256 42",
    },
    Workload {
        id: "larson",
        full: "larson 2 10000 100 7",
        quick: "larson 2 2500 100 7",
        smoke: "larson 2 50 20 7",
    },
    Workload {
        id: "xthread",
        full: "xthread 40000 100 11",
        quick: "xthread 10000 100 11",
        smoke: "xthread 50 20 11",
    },
    Workload {
        id: "mid_mixed",
        full: "mid_mixed 1200000 64 5",
        quick: "mid_mixed 300000 64 5",
        smoke: "mid_mixed 200 16 5",
    },
    Workload {
        id: "big/dense",
        full: "big 1000 8 3 dense",
        quick: "big 250 8 3 dense",
        smoke: "big 10 2 3 dense",
    },
    Workload {
        id: "big/sparse",
        full: "big 4000 8 3 sparse",
        quick: "big 1000 8 3 sparse",
        smoke: "big 10 2 3 sparse",
    },
    Workload {
        id: "realloc_grow/1m_dense",
        full: "realloc_grow 8000 1048576 dense",
        quick: "realloc_grow 2000 1048576 dense",
        smoke: "realloc_grow 5 1048576 dense",
    },
    Workload {
        id: "realloc_grow/1m_sparse",
        full: "realloc_grow 4000 1048576 sparse",
        quick: "realloc_grow 1000 1048576 sparse",
        smoke: "realloc_grow 5 1048576 sparse",
    },
    Workload {
        id: "realloc_grow/64m_dense",
        full: "realloc_grow 4 67108864 dense",
        quick: "realloc_grow 2 67108864 dense",
        smoke: "realloc_grow 1 67108864 dense",
    },
    Workload {
        id: "realloc_grow/64m_sparse",
        full: "realloc_grow 20 67108864 sparse",
        quick: "realloc_grow 5 67108864 sparse",
        smoke: "realloc_grow 1 67108864 sparse",
    },
    Workload {
        id: "thread_churn",
        full: "thread_churn 3000 400 9",
        quick: "thread_churn 750 400 9",
        smoke: "thread_churn 10 100 9",
    },
    Workload { id: "json", full: "json 20000 1", quick: "json 5000 1", smoke: "json 200 1" },
    Workload { id: "syn", full: "syn 400 2", quick: "syn 100 2", smoke: "syn 5 2" },
    Workload { id: "regex", full: "regex 50000 3", quick: "regex 12500 3", smoke: "regex 500 3" },
    Workload {
        id: "collections",
        full: "collections 100000 4",
        quick: "collections 25000 4",
        smoke: "collections 1000 4",
    },
    Workload {
        id: "vec_grow",
        full: "vec_grow 8388608 5",
        quick: "vec_grow 2097152 5",
        smoke: "vec_grow 65536 5",
    },
    Workload {
        id: "reserve",
        full: "reserve 20000 8 6",
        quick: "reserve 5000 8 6",
        smoke: "reserve 20 2 6",
    },
    Workload {
        id: "tokio",
        full: "tokio 64 8000 7",
        quick: "tokio 64 2000 7",
        smoke: "tokio 4 50 7",
    },
    Workload { id: "rayon", full: "rayon 200000 8", quick: "rayon 50000 8", smoke: "rayon 1000 8" },
];

/// The allocators `hak-bench` has a feature for, in report order (hakmem first: the ratios
/// are hakmem's).
pub(crate) const ALLOCATORS: &[&str] = &["hakmem", "system", "mimalloc", "jemalloc"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_args_name_the_subcommand() {
        for (i, w) in WORKLOADS.iter().enumerate() {
            assert!(WORKLOADS[..i].iter().all(|o| o.id != w.id), "{} twice", w.id);
            let sub = w.id.split('/').next().unwrap();
            for mode in [Mode::Full, Mode::Quick, Mode::Smoke] {
                assert_eq!(w.args(mode).split(' ').next(), Some(sub), "{} {mode:?}", w.id);
            }
        }
    }
}
