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
use crate::cli;
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
        measure(bin, &args, &[], timeout, row.id, alloc)
    }
}

/// The parsed command line of `cargo xtask bench`.
pub(crate) type Options = cli::Options<Workload>;

/// Parses the command line and runs the whole benchmark; exit code 2 for a bad command line,
/// else as [`run`].
pub(crate) fn main(args: Vec<std::ffi::OsString>, help: &str) -> ExitCode {
    let sources = sources();
    match Options::parse(args, ALLOCATORS, &all_rows(&sources), "workload") {
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
        .rows
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
        .rows
        .iter()
        .map(|w| Row {
            workload: w.id.to_string(),
            command: w.args(opts.mode).to_string(),
            cells: vec![Cell::default(); opts.allocators.len()],
        })
        .collect();
    let total = opts.rows.len() * opts.runs * opts.allocators.len();
    let mut progress = Progress::new(total);
    let runs_started = Instant::now();
    for ((w, row), &si) in opts.rows.iter().zip(rows.iter_mut()).zip(&owner) {
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
    let written = write_reports(&out_dir, "report", &report, &md, &report::json(&report));
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
    let c_ok = opts.rows.len() != all_rows(&sources).len()
        || crate::cbench::run(&crate::cbench::options_from_bench(opts)) == ExitCode::SUCCESS;
    if failures > 0 || prepare_failed || !c_ok {
        eprintln!("bench: {failures} failed runs (see the Failures section)");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Builds `hak-bench` for `alloc` and copies it to `bench_dir/bin/hak-bench-ALLOC`.
fn build(bench_dir: &Path, alloc: &str) -> Result<PathBuf, String> {
    let to = bench_dir.join("bin").join(format!("hak-bench-{alloc}"));
    build_release(bench_dir, "hak-bench", &["--features", alloc], "hak-bench", &to)?;
    Ok(to)
}

/// `cargo build --release --package PACKAGE EXTRA...` in `bench_dir/build` (one target dir for
/// every allocator, so what the builds share compiles once), then copies `release/ARTIFACT` to
/// `to` through a temporary name and a rename, so a binary that is still running is never
/// overwritten in place.
pub(crate) fn build_release(
    bench_dir: &Path,
    package: &str,
    extra: &[&str],
    artifact: &str,
    to: &Path,
) -> Result<(), String> {
    let target = bench_dir.join("build");
    let status = Command::new(crate::cargo())
        .current_dir(crate::workspace_root())
        .args(["build", "--release", "--package", package])
        .args(extra)
        .arg("--target-dir")
        .arg(&target)
        .status()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build -p {package}: {status}"));
    }
    let dir = to.parent().unwrap_or(bench_dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let from = target.join("release").join(artifact);
    let name = to.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::copy(&from, &tmp).map_err(|e| format!("copying {}: {e}", from.display()))?;
    std::fs::rename(&tmp, to).map_err(|e| format!("renaming to {}: {e}", to.display()))
}

/// One successful run.
#[derive(Debug)]
pub(crate) struct Measured {
    /// What the run printed.
    pub(crate) parsed: child::Parsed,
    /// Its peak RSS (`ru_maxrss`).
    pub(crate) max_rss_kib: u64,
}

/// Runs one program once with `env` added to its environment (see [`child::run`]) and
/// checks that it ran the expected workload under the expected allocator.
pub(crate) fn measure(
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
    workload: &str,
    alloc: &str,
) -> Result<Measured, String> {
    let f = child::run(program, args, env, timeout).map_err(|e| format!("could not run: {e}"))?;
    if let Err(e) = f.status {
        let stderr = f.stderr.trim();
        return Err(if stderr.is_empty() { e } else { format!("{e}: {stderr}") });
    }
    let parsed = child::parse_output(&f.stdout)?;
    if parsed.alloc != alloc || parsed.workload != workload {
        return Err(format!(
            "the run reported workload={} alloc={}, expected {workload} under {alloc}",
            parsed.workload, parsed.alloc
        ));
    }
    Ok(Measured { parsed, max_rss_kib: f.max_rss_kib })
}

/// Adds a successful run to its cell; a checksum different from the cell's earlier runs is
/// an error instead.
pub(crate) fn record(cell: &mut Cell, m: Measured) {
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

/// Writes `STEM.md`, `STEM.json` and `STEM.svg` (the chart of `report`) into `dir`.
pub(crate) fn write_reports(
    dir: &Path,
    stem: &str,
    report: &Report,
    md: &str,
    json: &str,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(format!("{stem}.md")), md)?;
    std::fs::write(dir.join(format!("{stem}.json")), json)?;
    let svg = report::svg(report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(format!("{stem}.svg")), svg)
}

/// The `[i/n] what` line on stderr: rewritten in place on a terminal, one line per step
/// otherwise (CI logs).
#[derive(Debug)]
pub(crate) struct Progress {
    done: usize,
    total: usize,
    tty: bool,
}

impl Progress {
    pub(crate) fn new(total: usize) -> Self {
        Progress { done: 0, total, tty: std::io::stderr().is_terminal() }
    }

    pub(crate) fn step(&mut self, what: &str) {
        self.done += 1;
        let line = format!("[{}/{}] {what}", self.done, self.total);
        let mut e = std::io::stderr().lock();
        let _ = if self.tty { write!(e, "\r\x1b[K{line}") } else { writeln!(e, "{line}") };
        let _ = e.flush();
    }

    pub(crate) fn message(&self, msg: &str) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
        eprintln!("{msg}");
    }

    pub(crate) fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: &str) -> Result<Options, String> {
        Options::parse(s.split_whitespace(), ALLOCATORS, WORKLOADS, "workload")
    }

    #[test]
    fn the_command_line_selects_allocators_and_workloads() {
        let o = opts("").unwrap();
        assert_eq!((o.mode, o.runs, o.timeout.as_secs()), (Mode::Full, 5, 300));
        assert_eq!((o.allocators.len(), o.rows.len()), (ALLOCATORS.len(), WORKLOADS.len()));
        let o = opts("--alloc system,jemalloc,system random_mixed big").unwrap();
        assert_eq!(o.allocators, ["system", "jemalloc"]);
        let ids: Vec<_> = o.rows.iter().map(|w| w.id).collect();
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
        assert!(opts("--alloc tcmalloc").is_err(), "tcmalloc is a C-row allocator only");
        assert!(opts("c/larson").unwrap_err().contains("unknown workload"));
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
