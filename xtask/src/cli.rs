//! The command line of `cargo xtask bench` and `cargo xtask cbench`, parsed with lexopt:
//! `[--quick | --smoke] [--runs N] [--alloc A,B,...] [--timeout SECS] [ROW...]` for both; only
//! the allocators and rows they know differ. Options also take the `--runs=N` form.

use std::ffi::OsString;
use std::time::Duration;

use crate::workloads::Mode;

/// A report row that a ROW argument can select by name.
pub(crate) trait Named: Copy {
    /// The row's name, e.g. `random_mixed/400` or `c/larson`.
    fn id(&self) -> &'static str;
}

/// Whether a ROW argument selects the row named `id`: the name itself, or a prefix of it that
/// ends at a `/` (`random_mixed` selects `random_mixed/400`; `c/rand` selects nothing).
pub(crate) fn selects(id: &str, filter: &str) -> bool {
    let prefix = filter.trim_end_matches('/');
    id == filter || id.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Options<R> {
    /// Scale of the counts.
    pub(crate) mode: Mode,
    /// Runs per row and allocator.
    pub(crate) runs: usize,
    /// A run still going after this long is killed and counted as failed.
    pub(crate) timeout: Duration,
    /// The allocators to compare, in report order (the order of the known allocators, whatever
    /// order `--alloc` named them in, so hakmem keeps its column and its colour).
    pub(crate) allocators: Vec<String>,
    /// The selected rows, in report order.
    pub(crate) rows: Vec<R>,
}

impl<R: Named> Options<R> {
    /// Parses `args`; `allocators` and `rows` are what `--alloc` and ROW may name (and the
    /// defaults), `noun` names a row in error messages.
    pub(crate) fn parse<I>(
        args: I,
        allocators: &[&str],
        rows: &[R],
        noun: &str,
    ) -> Result<Self, String>
    where
        I: IntoIterator,
        I::Item: Into<OsString>,
    {
        use lexopt::prelude::*;
        let mut mode = Mode::Full;
        let (mut runs, mut timeout) = (None, None);
        let mut wanted: Option<Vec<String>> = None;
        let mut filters = Vec::new();
        let mut p = lexopt::Parser::from_args(args);
        let err = |e: lexopt::Error| e.to_string();
        let positive = |name: &str, v: String| {
            v.parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{name} wants a positive number, got `{v}`"))
        };
        while let Some(arg) = p.next().map_err(err)? {
            match arg {
                Long("quick") => mode = Mode::Quick,
                Long("smoke") => mode = Mode::Smoke,
                Long("runs") => {
                    let v = p.value().map_err(err)?.string().map_err(err)?;
                    runs = Some(positive("--runs", v)? as usize);
                }
                Long("timeout") => {
                    let v = p.value().map_err(err)?.string().map_err(err)?;
                    timeout = Some(positive("--timeout", v)?);
                }
                Long("alloc") => {
                    let v = p.value().map_err(err)?.string().map_err(err)?;
                    let names: Vec<String> = v
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect();
                    if let Some(bad) = names.iter().find(|n| !allocators.contains(&n.as_str())) {
                        return Err(format!(
                            "unknown allocator `{bad}` (known: {})",
                            allocators.join(", ")
                        ));
                    }
                    if names.is_empty() {
                        return Err("--alloc needs at least one allocator".into());
                    }
                    wanted = Some(names);
                }
                Value(v) => filters.push(v.string().map_err(err)?),
                other => return Err(other.unexpected().to_string()),
            }
        }
        if let Some(f) = filters.iter().find(|f| !rows.iter().any(|r| selects(r.id(), f))) {
            let ids: Vec<_> = rows.iter().map(|r| r.id()).collect();
            return Err(format!("unknown {noun} `{f}` (known: {})", ids.join(", ")));
        }
        let (default_runs, default_timeout) = match mode {
            Mode::Full => (5, 300),
            Mode::Quick => (3, 120),
            Mode::Smoke => (1, 60),
        };
        Ok(Options {
            mode,
            runs: runs.unwrap_or(default_runs),
            timeout: Duration::from_secs(timeout.unwrap_or(default_timeout)),
            allocators: allocators
                .iter()
                .filter(|a| wanted.as_ref().is_none_or(|w| w.iter().any(|n| n == *a)))
                .map(|a| a.to_string())
                .collect(),
            rows: rows
                .iter()
                .filter(|r| filters.is_empty() || filters.iter().any(|f| selects(r.id(), f)))
                .copied()
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    struct R(&'static str);

    impl Named for R {
        fn id(&self) -> &'static str {
            self.0
        }
    }

    const ROWS: &[R] = &[R("a/1"), R("a/2"), R("b"), R("c/x/1")];
    const ALLOCS: &[&str] = &["hakmem", "system", "mimalloc"];

    fn parse(s: &str) -> Result<Options<R>, String> {
        Options::parse(s.split_whitespace(), ALLOCS, ROWS, "row")
    }

    #[test]
    fn defaults_follow_the_mode() {
        let o = parse("").unwrap();
        assert_eq!((o.mode, o.runs, o.timeout.as_secs()), (Mode::Full, 5, 300));
        assert_eq!((o.allocators.len(), o.rows.len()), (3, 4));
        let q = parse("--quick").unwrap();
        assert_eq!((q.mode, q.runs, q.timeout.as_secs()), (Mode::Quick, 3, 120));
        let s = parse("--smoke --runs 2 --timeout=9").unwrap();
        assert_eq!((s.mode, s.runs, s.timeout.as_secs()), (Mode::Smoke, 2, 9));
    }

    #[test]
    fn allocators_keep_report_order_and_rows_select_by_prefix() {
        let o = parse("--alloc mimalloc,hakmem,mimalloc a c/x").unwrap();
        assert_eq!(o.allocators, ["hakmem", "mimalloc"]);
        assert_eq!(o.rows, [R("a/1"), R("a/2"), R("c/x/1")]);
        assert_eq!(parse("a/ b").unwrap().rows, [R("a/1"), R("a/2"), R("b")]);
    }

    #[test]
    fn bad_command_lines_are_errors() {
        for bad in ["--alloc tcmalloc", "--alloc ,", "--alloc", "--runs 0", "--runs", "--fast"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("nosuch").unwrap_err().contains("unknown row `nosuch`"));
    }

    #[test]
    fn prefixes_end_at_a_slash() {
        assert!(selects("random_mixed/400", "random_mixed"));
        assert!(selects("random_mixed/400", "random_mixed/400"));
        assert!(!selects("random_mixed/400", "random"));
        assert!(!selects("random_mixed/400", "random_mixed/4096"));
        assert!(!selects("c/random_mixed/400", "c/rand"));
        assert!(selects("c/random_mixed/400", "c/random_mixed"));
        assert!(selects("random_mixed/400", "random_mixed/"));
        assert!(!selects("big", "big/"));
        assert!(!selects("big", ""));
    }
}
