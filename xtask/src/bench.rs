//! `cargo xtask bench`: build what the rows need once per allocator, run the plan interleaved,
//! write the report.
//!
//! Rows come from [`RowSource`]s ([`sources`] lists them): each offers its rows, gets ready once
//! per allocator, and runs one row once. The Rust workloads are [`HakBench`]: it builds
//! `$CARGO build --release -p hak-bench --features ALLOC --target-dir target/bench/build` and
//! copies the binary to `target/bench/bin/hak-bench-ALLOC` (one shared target dir, so the
//! dependencies common to all four builds compile once; the copies keep each build's binary when
//! the next build overwrites `release/hak-bench`). Then for each workload, for each run, for each
//! allocator the row runs once (so run k of every allocator happens close together in time and
//! drift hits all of them alike); then every allocator must have reported the same checksum; the
//! report is rendered and written. Any failed build, run, parse or checksum makes the exit code
//! 1, after the report is written.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use crate::child;
use crate::machine::Machine;
use crate::report::{self, Cell, Report, Row};
use crate::workloads::{Mode, Workload, ALLOCATORS, WORKLOADS};

/// A source of report rows. A new kind of row (another program, another harness) is another
/// implementation listed in [`sources`]; the runner, the checks and the report stay as they are.
pub(crate) trait RowSource {
    /// The rows it offers, in report order; ids must be unique across all sources.
    fn rows(&self) -> &'static [Workload];
    /// Gets ready to run rows under `alloc` (e.g. builds a binary); called once per allocator
    /// before any run. `bench_dir` is `target/bench`.
    fn prepare(&mut self, bench_dir: &Path, alloc: &str) -> Result<(), String>;
    /// Runs `row` once under `alloc` with `args` (the row's arguments at the chosen scale) and
    /// returns what it measured; the run must have printed the row's id and the allocator.
    fn run(
        &self,
        row: &Workload,
        args: &str,
        alloc: &str,
        timeout: Duration,
    ) -> Result<Measured, String>;
}

/// Every row source, in report order.
pub(crate) fn sources() -> Vec<Box<dyn RowSource>> {
    vec![Box::new(HakBench::default())]
}

/// The rows of all sources, in report order.
fn all_rows(sources: &[Box<dyn RowSource>]) -> Vec<Workload> {
    sources.iter().flat_map(|s| s.rows().iter().copied()).collect()
}

/// The Rust workloads: the `hak-bench` binary built once per allocator.
#[derive(Debug, Default)]
struct HakBench {
    /// The binary of each allocator that was built.
    bins: Vec<(String, PathBuf)>,
}

impl RowSource for HakBench {
    fn rows(&self) -> &'static [Workload] {
        WORKLOADS
    }

    fn prepare(&mut self, bench_dir: &Path, alloc: &str) -> Result<(), String> {
        eprintln!("bench: building hak-bench with --features {alloc}");
        let bin = build(bench_dir, alloc)?;
        self.bins.push((alloc.to_string(), bin));
        Ok(())
    }

    fn run(
        &self,
        row: &Workload,
        args: &str,
        alloc: &str,
        timeout: Duration,
    ) -> Result<Measured, String> {
        let (_, bin) = self
            .bins
            .iter()
            .find(|(a, _)| a == alloc)
            .ok_or_else(|| format!("no hak-bench binary for {alloc}"))?;
        let args: Vec<&str> = args.split_ascii_whitespace().collect();
        measure(bin, &args, timeout, row.id, alloc)
    }
}

/// The parsed command line of `cargo xtask bench`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Options {
    /// Scale of the counts.
    pub(crate) mode: Mode,
    /// Runs per workload and allocator.
    pub(crate) runs: usize,
    /// Allocators to build and compare, in report order.
    pub(crate) allocators: Vec<String>,
    /// A run still going after this long is killed and counted as failed.
    pub(crate) timeout: Duration,
    /// The selected workloads, in plan order.
    pub(crate) workloads: Vec<Workload>,
}

impl Options {
    /// Parses `[--quick | --smoke] [--runs N] [--alloc A,B] [--timeout S] [WORKLOAD...]`;
    /// `known` are the rows a WORKLOAD may name.
    pub(crate) fn parse<I>(args: I, known: &[Workload]) -> Result<Options, String>
    where
        I: IntoIterator,
        I::Item: Into<std::ffi::OsString>,
    {
        use lexopt::prelude::*;
        let mut mode = Mode::Full;
        let mut runs = None;
        let mut timeout = None;
        let mut allocators: Vec<String> = ALLOCATORS.iter().map(|s| s.to_string()).collect();
        let mut filters = Vec::new();
        let mut p = lexopt::Parser::from_args(args);
        let err = |e: lexopt::Error| e.to_string();
        while let Some(arg) = p.next().map_err(err)? {
            match arg {
                Long("quick") => mode = Mode::Quick,
                Long("smoke") => mode = Mode::Smoke,
                Long("runs") => {
                    let v = p.value().map_err(err)?.string().map_err(err)?;
                    runs = Some(
                        v.parse::<usize>()
                            .ok()
                            .filter(|&n| n > 0)
                            .ok_or_else(|| format!("--runs wants a positive number, got `{v}`"))?,
                    );
                }
                Long("timeout") => {
                    let v = p.value().map_err(err)?.string().map_err(err)?;
                    let secs = v.parse::<u64>().ok().filter(|&n| n > 0);
                    timeout = Some(Duration::from_secs(secs.ok_or_else(|| {
                        format!("--timeout wants a positive number of seconds, got `{v}`")
                    })?));
                }
                Long("alloc") => {
                    let v = p.value().map_err(err)?.string().map_err(err)?;
                    allocators = Vec::new();
                    for name in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        if !ALLOCATORS.contains(&name) {
                            return Err(format!(
                                "unknown allocator `{name}` (known: {})",
                                ALLOCATORS.join(", ")
                            ));
                        }
                        if !allocators.iter().any(|a| a == name) {
                            allocators.push(name.to_string());
                        }
                    }
                    if allocators.is_empty() {
                        return Err("--alloc needs at least one allocator".into());
                    }
                }
                Value(v) => filters.push(v.string().map_err(err)?),
                other => return Err(other.unexpected().to_string()),
            }
        }
        for f in &filters {
            if !known.iter().any(|w| w.matches(f)) {
                let ids: Vec<_> = known.iter().map(|w| w.id).collect();
                return Err(format!("unknown workload `{f}` (known: {})", ids.join(", ")));
            }
        }
        let workloads = known
            .iter()
            .filter(|w| filters.is_empty() || filters.iter().any(|f| w.matches(f)))
            .copied()
            .collect();
        let (default_runs, default_timeout) = match mode {
            Mode::Full => (5, 300),
            Mode::Quick => (3, 120),
            Mode::Smoke => (1, 60),
        };
        Ok(Options {
            mode,
            runs: runs.unwrap_or(default_runs),
            allocators,
            timeout: timeout.unwrap_or(Duration::from_secs(default_timeout)),
            workloads,
        })
    }
}

/// Parses the command line and runs the whole benchmark; exit code 2 for a bad command line,
/// else as [`run`].
pub(crate) fn main(args: Vec<std::ffi::OsString>, help: &str) -> ExitCode {
    let sources = sources();
    match Options::parse(args, &all_rows(&sources)) {
        Ok(opts) => run(&opts, sources),
        Err(e) => {
            eprintln!("xtask bench: {e}\n\n{help}");
            ExitCode::from(2)
        }
    }
}

/// Runs the whole benchmark; the exit code is 1 if anything failed.
pub(crate) fn run(opts: &Options, mut sources: Vec<Box<dyn RowSource>>) -> ExitCode {
    let started = Instant::now();
    let machine = Machine::probe();
    let bench_dir = crate::target_dir().join("bench");
    let out_dir =
        if opts.mode == Mode::Smoke { bench_dir.join("smoke") } else { bench_dir.clone() };

    // Which source owns each selected row; only sources with selected rows get ready.
    let owner: Vec<usize> = opts
        .workloads
        .iter()
        .map(|w| sources.iter().position(|s| s.rows().iter().any(|r| r.id == w.id)).unwrap_or(0))
        .collect();
    // ready[source][allocator]: Ok, or why it could not get ready.
    let mut ready: Vec<Vec<Result<(), String>>> = Vec::new();
    let mut prepare_failed = false;
    for (si, source) in sources.iter_mut().enumerate() {
        let mut per_alloc = Vec::new();
        for alloc in &opts.allocators {
            let r = if owner.contains(&si) { source.prepare(&bench_dir, alloc) } else { Ok(()) };
            if let Err(e) = &r {
                eprintln!("bench: FAILED to get ready for {alloc}: {e}");
                prepare_failed = true;
            }
            per_alloc.push(r);
        }
        ready.push(per_alloc);
    }
    let build_secs = started.elapsed().as_secs_f64();

    let mut rows: Vec<Row> = opts
        .workloads
        .iter()
        .map(|w| Row {
            workload: w.id.to_string(),
            command: w.args(opts.mode).to_string(),
            cells: vec![Cell::default(); opts.allocators.len()],
        })
        .collect();
    let total = opts.workloads.len() * opts.runs * opts.allocators.len();
    let mut progress = Progress::new(total);
    let runs_started = Instant::now();
    for ((w, row), &si) in opts.workloads.iter().zip(rows.iter_mut()).zip(&owner) {
        for run in 1..=opts.runs {
            for (a, alloc) in opts.allocators.iter().enumerate() {
                progress.step(&format!("{} {alloc} run {run}/{}", w.id, opts.runs));
                let cell = &mut row.cells[a];
                let outcome = match &ready[si][a] {
                    Err(_) => Err("build failed".to_string()),
                    Ok(()) => sources[si].run(w, w.args(opts.mode), alloc, opts.timeout),
                };
                match outcome {
                    Ok(m) => record(cell, m),
                    Err(e) => {
                        progress.message(&format!("FAIL {} {alloc} run {run}: {e}", w.id));
                        cell.errors.push(e);
                    }
                }
            }
        }
        check_checksums(row, &opts.allocators);
    }
    progress.finish();
    let run_secs = runs_started.elapsed().as_secs_f64();

    let report = Report {
        machine,
        mode: opts.mode,
        runs: opts.runs,
        allocators: opts.allocators.clone(),
        rows,
    };
    let md = report::markdown(&report);
    print!("{md}");
    let written = write_reports(&out_dir, &report, &md);
    let failures = report.failures().len();
    eprintln!(
        "bench: {} mode, builds {build_secs:.0} s, {total} runs {run_secs:.0} s, total {:.0} s",
        opts.mode.name(),
        started.elapsed().as_secs_f64()
    );
    match written {
        Ok(()) => eprintln!("bench: wrote {}/report.{{md,json,svg}}", out_dir.display()),
        Err(e) => {
            eprintln!("bench: could not write the report to {}: {e}", out_dir.display());
            return ExitCode::FAILURE;
        }
    }
    // The C rows (cbench.rs: their own allocators, tcmalloc among them, and their own report)
    // follow when every row was asked for.
    let c_ok = opts.workloads.len() != all_rows(&sources).len()
        || crate::cbench::run(&crate::cbench::COptions::from_bench(
            opts.mode,
            opts.runs,
            opts.timeout,
            &opts.allocators,
        )) == ExitCode::SUCCESS;
    if failures > 0 || prepare_failed || !c_ok {
        eprintln!("bench: {failures} failed runs (see the Failures section)");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Builds `hak-bench` for `alloc` and copies it to `bench_dir/bin/hak-bench-ALLOC`.
fn build(bench_dir: &Path, alloc: &str) -> Result<PathBuf, String> {
    let target = bench_dir.join("build");
    let status = Command::new(crate::cargo())
        .current_dir(crate::workspace_root())
        .args(["build", "--release", "--package", "hak-bench", "--features", alloc])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build {status}"));
    }
    let bin_dir = bench_dir.join("bin");
    std::fs::create_dir_all(&bin_dir).map_err(|e| format!("{}: {e}", bin_dir.display()))?;
    let from = target.join("release").join("hak-bench");
    let to = bin_dir.join(format!("hak-bench-{alloc}"));
    // Copy to a temporary name and rename, so a binary that is still running is never
    // overwritten in place.
    let tmp = bin_dir.join(format!(".hak-bench-{alloc}.tmp"));
    std::fs::copy(&from, &tmp).map_err(|e| format!("copying {}: {e}", from.display()))?;
    std::fs::rename(&tmp, &to).map_err(|e| format!("renaming to {}: {e}", to.display()))?;
    Ok(to)
}

/// One successful run.
#[derive(Debug)]
pub(crate) struct Measured {
    /// What the run printed.
    pub(crate) parsed: child::Parsed,
    /// Its peak RSS (`ru_maxrss`).
    pub(crate) max_rss_kib: u64,
}

/// Runs one binary once (see [`child::run`]) and checks that it ran the expected workload under the expected
/// allocator.
pub(crate) fn measure(
    bin: &Path,
    args: &[&str],
    timeout: Duration,
    workload: &str,
    alloc: &str,
) -> Result<Measured, String> {
    let f = child::run(bin, args, timeout).map_err(|e| format!("could not run: {e}"))?;
    if let Err(e) = f.status {
        let stderr = f.stderr.trim();
        return Err(if stderr.is_empty() { e } else { format!("{e}: {stderr}") });
    }
    let parsed = child::parse_output(&f.stdout)?;
    if parsed.alloc != alloc || parsed.workload != workload {
        return Err(format!(
            "binary reported workload={} alloc={}, expected {workload} under {alloc}",
            parsed.workload, parsed.alloc
        ));
    }
    Ok(Measured { parsed, max_rss_kib: f.max_rss_kib })
}

/// Adds a successful run to its cell; a checksum different from the cell's earlier runs is
/// an error instead.
fn record(cell: &mut Cell, m: Measured) {
    match cell.checksum {
        Some(c) if c != m.parsed.checksum => {
            cell.errors
                .push(format!("checksum {} differs from earlier run's {c}", m.parsed.checksum));
            return;
        }
        _ => cell.checksum = Some(m.parsed.checksum),
    }
    cell.ops_per_sec.push(m.parsed.ops_per_sec);
    cell.rss_kib.push(m.max_rss_kib);
    if let Some(s) = m.parsed.syscalls {
        cell.syscalls.push(s);
    }
}

/// Every allocator runs identical code, so every cell of a row must report the same checksum.
/// A cell that disagrees with the most common value gets an error.
pub(crate) fn check_checksums(row: &mut Row, allocators: &[String]) {
    let sums: Vec<u64> = row.cells.iter().filter_map(|c| c.checksum).collect();
    let Some(&majority) =
        sums.iter().max_by_key(|&&s| (sums.iter().filter(|&&t| t == s).count(), s))
    else {
        return;
    };
    for (cell, alloc) in row.cells.iter_mut().zip(allocators) {
        if let Some(c) = cell.checksum.filter(|&c| c != majority) {
            cell.errors.push(format!(
                "checksum {c} under {alloc} differs from the other allocators' {majority}"
            ));
        }
    }
}

/// Writes report.md, report.json and report.svg into `dir`.
fn write_reports(dir: &Path, report: &Report, md: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.md"), md)?;
    std::fs::write(dir.join("report.json"), report::json(report))?;
    std::fs::write(dir.join("report.svg"), report::svg(report).map_err(std::io::Error::other)?)
}

/// The `[i/n] what` line on stderr: rewritten in place on a terminal, one line per step
/// otherwise (CI logs).
#[derive(Debug)]
struct Progress {
    done: usize,
    total: usize,
    tty: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        Progress { done: 0, total, tty: std::io::stderr().is_terminal() }
    }

    fn step(&mut self, what: &str) {
        self.done += 1;
        let line = format!("[{}/{}] {what}", self.done, self.total);
        let mut e = std::io::stderr().lock();
        let _ = if self.tty { write!(e, "\r\x1b[K{line}") } else { writeln!(e, "{line}") };
        let _ = e.flush();
    }

    fn message(&self, msg: &str) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
        eprintln!("{msg}");
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: &str) -> Result<Options, String> {
        Options::parse(s.split_whitespace(), WORKLOADS)
    }

    #[test]
    fn defaults_and_modes() {
        let o = opts("").unwrap();
        assert_eq!((o.mode, o.runs, o.timeout.as_secs()), (Mode::Full, 5, 300));
        assert_eq!(o.allocators, ALLOCATORS);
        assert_eq!(o.workloads.len(), WORKLOADS.len());
        let q = opts("--quick").unwrap();
        assert_eq!((q.mode, q.runs), (Mode::Quick, 3));
        let s = opts("--smoke --runs 2 --timeout 9").unwrap();
        assert_eq!((s.mode, s.runs, s.timeout.as_secs()), (Mode::Smoke, 2, 9));
    }

    #[test]
    fn allocator_and_workload_selection() {
        let o = opts("--alloc system,jemalloc,system random_mixed big").unwrap();
        assert_eq!(o.allocators, ["system", "jemalloc"]);
        let ids: Vec<_> = o.workloads.iter().map(|w| w.id).collect();
        assert_eq!(
            ids,
            [
                "random_mixed/400",
                "random_mixed/4096",
                "random_mixed/65536",
                "big/dense",
                "big/sparse"
            ]
        );
        assert!(opts("--alloc tcmalloc").is_err());
        assert!(opts("--alloc ,").is_err());
        assert!(opts("nosuch").is_err());
        assert!(opts("--runs 0").is_err());
        assert!(opts("--runs").is_err());
        assert!(opts("--fast").is_err());
    }

    #[test]
    fn checksum_outliers_are_flagged() {
        let allocs: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let c = |sum| Cell { checksum: Some(sum), ..Cell::default() };
        let mut row =
            Row { workload: "w".into(), command: "w".into(), cells: vec![c(1), c(2), c(1)] };
        check_checksums(&mut row, &allocs);
        assert!(row.cells[0].errors.is_empty() && row.cells[2].errors.is_empty());
        assert_eq!(row.cells[1].errors.len(), 1);
        assert!(row.cells[1].errors[0].contains("under b"));
    }

    #[test]
    fn a_changed_checksum_between_runs_is_an_error() {
        let parsed = |checksum| child::Parsed {
            workload: "w".into(),
            alloc: "a".into(),
            ops: 1,
            secs: 1.0,
            ops_per_sec: 1.0,
            checksum,
            syscalls: None,
        };
        let mut cell = Cell::default();
        record(&mut cell, Measured { parsed: parsed(5), max_rss_kib: 10 });
        record(&mut cell, Measured { parsed: parsed(6), max_rss_kib: 10 });
        assert_eq!(cell.ops_per_sec.len(), 1);
        assert_eq!(cell.errors.len(), 1);
    }
}
