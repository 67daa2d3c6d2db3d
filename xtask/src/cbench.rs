//! The C rows of the benchmark: C programs (`benches/c/`) and real programs from the machine,
//! each run under `LD_PRELOAD` of hakmem (`libhakmem.so`), of nothing (glibc's malloc,
//! reported as `system`), and of Debian's mimalloc, jemalloc and tcmalloc. `cargo xtask
//! bench` runs them after the Rust rows; `cargo xtask cbench` runs them alone.
//!
//! Order of work: find (or install with `apt-get`, when running as root) each peer's shared
//! library and its package version; build `libhakmem.so` (`cargo build --release -p libhakmem
//! --target-dir target/bench/build`, copied to `target/bench/lib/`) and compile the C programs
//! with `cc -O2` into `target/bench/c/`; then for each row, for each run, for each allocator
//! run the program once (interleaved, as the Rust rows), parse its `RESULT` line, check that
//! the allocator it names (found with `dlsym`, so a preload that did not take is caught) and
//! its checksum are as expected; render the same report as the Rust rows into
//! `target/bench/c-report.{md,json,svg}` (`smoke/` under `--smoke`), with the peers' versions
//! and the skipped peers above the tables.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use serde::Serialize;

use crate::bench::{check_checksums, measure, record, write_reports, Progress};
use crate::cli;
use crate::machine::Machine;
use crate::report::{self, Cell, InOrder, Report, Row};
use crate::workloads::Mode;

/// Allocators of the C rows, in report order.
pub(crate) const C_ALLOCATORS: &[&str] = &["hakmem", "system", "mimalloc", "jemalloc", "tcmalloc"];

/// A peer allocator from the distribution: its shared library and package.
struct Peer {
    name: &'static str,
    file: &'static str,
    package: &'static str,
}

const PEERS: &[Peer] = &[
    Peer { name: "mimalloc", file: "libmimalloc.so.2", package: "libmimalloc2.0" },
    Peer { name: "jemalloc", file: "libjemalloc.so.2", package: "libjemalloc2" },
    Peer { name: "tcmalloc", file: "libtcmalloc_minimal.so.4", package: "libtcmalloc-minimal4" },
];

/// What a row runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A C benchmark from `benches/c/<name>.c`, its arguments per mode.
    Bench(&'static str),
    /// python3 running `benches/c/programs/workload.py N` with `PYTHONMALLOC=malloc`.
    Python,
    /// sqlite3 running an in-memory script of N rows.
    Sqlite,
}

/// One C row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CRow {
    /// Row name; the program prints it on its RESULT line.
    pub(crate) id: &'static str,
    kind: Kind,
    /// Arguments (for programs: N) at full, quick and smoke scale.
    full: &'static str,
    quick: &'static str,
    smoke: &'static str,
}

impl CRow {
    fn args(&self, mode: Mode) -> &'static str {
        match mode {
            Mode::Full => self.full,
            Mode::Quick => self.quick,
            Mode::Smoke => self.smoke,
        }
    }
}

impl cli::Named for CRow {
    fn id(&self) -> &'static str {
        self.id
    }
}

/// Every C row, in report order. `c/random_mixed/400` is the C original's headline benchmark
/// with its reference arguments; `docs/bench.md` describes the rest.
pub(crate) const C_ROWS: &[CRow] = &[
    CRow {
        id: "c/random_mixed/400",
        kind: Kind::Bench("bench_random_mixed"),
        full: "20000000 400 1234567",
        quick: "5000000 400 1234567",
        smoke: "20000 400 1234567",
    },
    CRow {
        id: "c/larson",
        kind: Kind::Bench("bench_larson"),
        full: "2 4000 1000 7",
        quick: "2 1000 1000 7",
        smoke: "2 20 50 7",
    },
    CRow {
        id: "c/xthread",
        kind: Kind::Bench("bench_xthread"),
        full: "8000 1000 11",
        quick: "2000 1000 11",
        smoke: "20 50 11",
    },
    CRow {
        id: "c/mid_big",
        kind: Kind::Bench("bench_mid_big"),
        full: "400000 64 5",
        quick: "100000 64 5",
        smoke: "300 16 5",
    },
    CRow { id: "prog/python3", kind: Kind::Python, full: "150000", quick: "40000", smoke: "2000" },
    CRow { id: "prog/sqlite3", kind: Kind::Sqlite, full: "100000", quick: "25000", smoke: "500" },
];

/// The C programs to compile (the benchmarks and the real-program wrapper).
const C_SOURCES: &[&str] =
    &["bench_random_mixed", "bench_larson", "bench_xthread", "bench_mid_big", "run_program"];

/// The sqlite3 script of the `prog/sqlite3` row for `n` rows.
fn sqlite_script(n: &str) -> String {
    format!(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB);\
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) \
         INSERT INTO t(k, v) SELECT printf('key%07d', (x * 7919) % 1000003), zeroblob(x % 300) \
         FROM c;\
         CREATE INDEX tk ON t(k);\
         SELECT count(*), sum(length(v)), min(k), max(k) FROM t;\
         SELECT substr(k, 1, 5), count(*) FROM t GROUP BY 1 ORDER BY 1;\
         DELETE FROM t WHERE id % 3 = 0;\
         SELECT count(*), sum(length(k)) FROM t;"
    )
}

/// The options of a C run (`cargo xtask cbench`'s command line, or what `bench` passes on).
pub(crate) type COptions = cli::Options<CRow>;

/// The options `cargo xtask bench` passes on: its scale, runs and timeout, every C row, and its
/// allocators plus tcmalloc when it compares all of its own.
pub(crate) fn options_from_bench(bench: &crate::bench::Options) -> COptions {
    let mut allocators = bench.allocators.clone();
    if crate::workloads::ALLOCATORS.iter().all(|a| allocators.iter().any(|b| b == a)) {
        allocators.push("tcmalloc".into());
    }
    COptions {
        mode: bench.mode,
        runs: bench.runs,
        timeout: bench.timeout,
        allocators,
        rows: C_ROWS.to_vec(),
    }
}

/// Parses `cargo xtask cbench`'s command line and runs the C rows; exit code 2 for a bad
/// command line, else as [`run`].
pub(crate) fn main(args: Vec<std::ffi::OsString>, help: &str) -> ExitCode {
    match COptions::parse(args, C_ALLOCATORS, C_ROWS, "C row") {
        Ok(opts) => run(&opts),
        Err(e) => {
            eprintln!("xtask cbench: {e}\n\n{help}");
            ExitCode::from(2)
        }
    }
}

/// An allocator ready to run: what to preload (none for the system allocator) and what the
/// report says about it.
struct Ready {
    name: String,
    preload: Option<PathBuf>,
    version: String,
}

/// Runs the C rows and writes their report; the exit code is 1 if anything failed.
pub(crate) fn run(opts: &COptions) -> ExitCode {
    let bench_dir = crate::target_dir().join("bench");
    let out_dir =
        if opts.mode == Mode::Smoke { bench_dir.join("smoke") } else { bench_dir.clone() };
    let machine = Machine::probe();
    let mut notes = Vec::new();
    let mut failed = false;
    let mut ready = Vec::new();
    for name in &opts.allocators {
        match prepare(name, &bench_dir) {
            Ok(r) => ready.push(r),
            Err(why) => {
                // A missing peer is skipped, not a failure; a hakmem that does not build is.
                eprintln!("cbench: skipping {name}: {why}");
                notes.push(format!("{name} skipped: {why}"));
                failed |= name == "hakmem";
            }
        }
    }
    let bins = match compile_all(&bench_dir.join("c")) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cbench: FAILED to compile the C programs: {e}");
            return ExitCode::FAILURE;
        }
    };
    let allocators: Vec<String> = ready.iter().map(|r| r.name.clone()).collect();
    let mut rows = Vec::new();
    let total =
        opts.rows.iter().filter(|r| missing_program(r).is_none()).count() * opts.runs * ready.len();
    let mut progress = Progress::new(total);
    for crow in &opts.rows {
        if let Some(missing) = missing_program(crow) {
            progress.message(&format!("cbench: skipping {}: {missing} is not installed", crow.id));
            notes.push(format!("{} skipped: {missing} is not installed", crow.id));
            continue;
        }
        let (program, args, env) = command(crow, opts.mode, &bins);
        let mut row = Row {
            workload: crow.id.to_string(),
            command: describe(crow, opts.mode),
            cells: vec![Cell::default(); ready.len()],
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        for run in 1..=opts.runs {
            for (a, r) in ready.iter().enumerate() {
                progress.step(&format!("{} {} run {run}/{}", crow.id, r.name, opts.runs));
                let preload = r.preload.as_ref().map(|p| p.to_string_lossy().into_owned());
                let env: Vec<(&str, &str)> = env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .chain(preload.as_deref().map(|p| ("LD_PRELOAD", p)))
                    .collect();
                let cell = &mut row.cells[a];
                match measure(&program, &args, &env, opts.timeout, crow.id, &r.name) {
                    Ok(m) => record(cell, m),
                    Err(e) => {
                        progress.message(&format!("FAIL {} {} run {run}: {e}", crow.id, r.name));
                        cell.errors.push(e);
                    }
                }
            }
        }
        check_checksums(&mut row, &allocators);
        rows.push(row);
    }
    progress.finish();
    let report = Report { machine, mode: opts.mode, runs: opts.runs, allocators, rows };
    let mut md = String::from("# C programs under LD_PRELOAD\n\n");
    for r in &ready {
        md.push_str(&format!("- {}: {}\n", r.name, r.version));
    }
    for n in &notes {
        md.push_str(&format!("- {n}\n"));
    }
    md.push('\n');
    md.push_str(&report::markdown_with(
        &report,
        "Each row runs the command below once per allocator, with `LD_PRELOAD` set to the \
         allocator's library (none for system; hakmem: `target/bench/lib/libhakmem.so`, the \
         peers: the Debian packages listed above):",
    ));
    print!("{md}");
    let head = Provenance {
        peers: InOrder(ready.iter().map(|r| (r.name.as_str(), r.version.as_str())).collect()),
        notes: &notes,
    };
    let json = report::json_with(&report, head);
    match write_reports(&out_dir, "c-report", &report, &md, &json) {
        Ok(()) => eprintln!("cbench: wrote {}/c-report.{{md,json,svg}}", out_dir.display()),
        Err(e) => {
            eprintln!("cbench: could not write the report: {e}");
            failed = true;
        }
    }
    if failed || !report.failures().is_empty() {
        eprintln!("cbench: {} failed runs", report.failures().len());
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// What the C report's JSON has above the Rust report's fields: each allocator's version
/// (`"peers"`, in report order) and why rows or peers were skipped (`"notes"`).
#[derive(Serialize)]
struct Provenance<'a> {
    peers: InOrder<'a, &'a str>,
    notes: &'a [String],
}

/// Gets an allocator ready: hakmem is built, the system allocator needs nothing, a peer's
/// library is found (or installed).
fn prepare(name: &str, bench_dir: &Path) -> Result<Ready, String> {
    match name {
        "hakmem" => {
            let so = build_hakmem(bench_dir)?;
            let git = Machine::probe().git;
            Ok(Ready {
                name: name.into(),
                preload: Some(so),
                version: format!("this tree ({git})"),
            })
        }
        "system" => Ok(Ready {
            name: name.into(),
            preload: None,
            version: format!("glibc {}", package_version("libc6").unwrap_or("unknown".into())),
        }),
        _ => {
            let peer = PEERS.iter().find(|p| p.name == name).ok_or("unknown allocator")?;
            let lib = match find_library(peer.file) {
                Some(l) => l,
                None => {
                    install(peer.package)?;
                    find_library(peer.file)
                        .ok_or_else(|| format!("{} still missing after installing", peer.file))?
                }
            };
            let version = package_version(peer.package)
                .map(|v| format!("{} {v}", peer.package))
                .unwrap_or_else(|| format!("{} (version unknown)", lib.display()));
            Ok(Ready { name: name.into(), preload: Some(lib), version })
        }
    }
}

/// Builds libhakmem.so in the bench's target dir and copies it to `bench_dir/lib`.
fn build_hakmem(bench_dir: &Path) -> Result<PathBuf, String> {
    eprintln!("cbench: building libhakmem.so");
    let to = bench_dir.join("lib").join("libhakmem.so");
    crate::bench::build_release(bench_dir, "libhakmem", &[], "libhakmem.so", &to)?;
    eprintln!("cbench: LD_PRELOAD={}", to.display());
    Ok(to)
}

/// Where distributions put shared libraries, for this machine's architecture.
fn library_dirs() -> Vec<PathBuf> {
    let arch = std::env::consts::ARCH;
    [
        format!("/usr/lib/{arch}-linux-gnu"),
        format!("/lib/{arch}-linux-gnu"),
        "/usr/lib64".into(),
        "/usr/lib".into(),
        "/usr/local/lib".into(),
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect()
}

fn find_library(file: &str) -> Option<PathBuf> {
    library_dirs().into_iter().map(|d| d.join(file)).find(|p| p.exists())
}

/// `dpkg-query`'s version of an installed package.
fn package_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", package])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !v.is_empty()).then_some(v)
}

/// Installs a Debian package with apt-get (as root only); an `apt-get update` first if the
/// plain install fails.
fn install(package: &str) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(format!(
            "not installed, and not root to install it (apt-get install {package})"
        ));
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    eprintln!("cbench: apt-get install {package}");
    let install = ["install", "-y", "-q", "--no-install-recommends", package];
    if apt(&install) || (apt(&["update", "-q"]) && apt(&install)) {
        Ok(())
    } else {
        Err(format!("not installed, and apt-get install {package} failed"))
    }
}

/// Compiles every C program into `dir`; returns `dir`.
fn compile_all(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let src_dir = crate::workspace_root().join("benches").join("c");
    let cc = crate::env_var("CC").unwrap_or_else(|| "cc".into());
    for name in C_SOURCES {
        let status = Command::new(&cc)
            .args(["-O2", "-g", "-Wall", "-pthread", "-o"])
            .arg(dir.join(name))
            .arg(src_dir.join(format!("{name}.c")))
            .arg("-ldl")
            .status()
            .map_err(|e| format!("could not start {}: {e}", cc.to_string_lossy()))?;
        if !status.success() {
            return Err(format!("{name}.c: {status}"));
        }
    }
    Ok(dir.to_path_buf())
}

/// The program, arguments and environment of a row at `mode`.
fn command(row: &CRow, mode: Mode, bins: &Path) -> (PathBuf, Vec<String>, Vec<(String, String)>) {
    let n = row.args(mode);
    match row.kind {
        Kind::Bench(bin) => {
            (bins.join(bin), n.split_whitespace().map(String::from).collect(), Vec::new())
        }
        Kind::Python => {
            let script = crate::workspace_root().join("benches/c/programs/workload.py");
            let args = vec![
                row.id.to_string(),
                n.to_string(),
                "python3".into(),
                script.to_string_lossy().into_owned(),
                n.to_string(),
            ];
            // Every object from malloc instead of Python's own small-object allocator.
            (bins.join("run_program"), args, vec![("PYTHONMALLOC".into(), "malloc".into())])
        }
        Kind::Sqlite => {
            let args = vec![
                row.id.to_string(),
                n.to_string(),
                "sqlite3".into(),
                ":memory:".into(),
                sqlite_script(n),
            ];
            (bins.join("run_program"), args, Vec::new())
        }
    }
}

/// The real program a row needs, if it is not on `PATH`.
fn missing_program(row: &CRow) -> Option<&'static str> {
    let program = match row.kind {
        Kind::Bench(_) => return None,
        Kind::Python => "python3",
        Kind::Sqlite => "sqlite3",
    };
    let path = crate::env_var("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|d| d.join(program).is_file());
    (!found).then_some(program)
}

/// The command of a row as the report shows it.
fn describe(row: &CRow, mode: Mode) -> String {
    let n = row.args(mode);
    match row.kind {
        Kind::Bench(bin) => format!("target/bench/c/{bin} {n}"),
        Kind::Python => {
            format!("PYTHONMALLOC=malloc python3 benches/c/programs/workload.py {n}")
        }
        Kind::Sqlite => format!("sqlite3 :memory: (the script of xtask/src/cbench.rs, {n} rows)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: &str) -> Result<COptions, String> {
        COptions::parse(s.split_whitespace(), C_ALLOCATORS, C_ROWS, "C row")
    }

    #[test]
    fn parsing_selects_rows_and_allocators() {
        let o = opts("").unwrap();
        assert_eq!((o.mode, o.runs, o.rows.len()), (Mode::Full, 5, C_ROWS.len()));
        assert_eq!(o.allocators, C_ALLOCATORS);
        let o = opts("--smoke --alloc tcmalloc,hakmem c/larson prog").unwrap();
        assert_eq!(o.allocators, ["hakmem", "tcmalloc"], "report order, not argument order");
        let ids: Vec<_> = o.rows.iter().map(|r| r.id).collect();
        assert_eq!(ids, ["c/larson", "prog/python3", "prog/sqlite3"]);
        assert!(opts("c/rand").is_err(), "prefixes end at a slash");
        assert!(opts("--alloc nosuch").is_err());
        assert!(opts("--runs 0").is_err());
    }

    #[test]
    fn the_headline_row_keeps_the_reference_arguments() {
        let r = C_ROWS.iter().find(|r| r.id == "c/random_mixed/400").unwrap();
        assert_eq!(r.full, "20000000 400 1234567");
        for r in C_ROWS {
            if let Kind::Bench(b) = r.kind {
                assert!(C_SOURCES.contains(&b), "{b}");
            }
        }
    }

    #[test]
    fn bench_options_add_tcmalloc_only_to_a_full_comparison() {
        let bench = |s: &str| {
            crate::bench::Options::parse(
                s.split_whitespace(),
                crate::workloads::ALLOCATORS,
                crate::workloads::WORKLOADS,
                "workload",
            )
            .unwrap()
        };
        let o = options_from_bench(&bench("--quick --runs 4"));
        assert_eq!((o.mode, o.runs, o.rows.len()), (Mode::Quick, 4, C_ROWS.len()));
        assert_eq!(o.allocators, C_ALLOCATORS);
        assert_eq!(
            options_from_bench(&bench("--alloc hakmem,system")).allocators,
            ["hakmem", "system"]
        );
    }

    #[test]
    fn peers_and_notes_go_at_the_top_of_the_json() {
        let head = Provenance {
            peers: InOrder(vec![("system", "glibc 2.41"), ("mimalloc", "2.0 \"x\"")]),
            notes: &["prog/python3 skipped".to_string()],
        };
        let j = report::json_with(&report::tests::sample(), head);
        assert!(j.starts_with("{\n  \"peers\": {\n    \"system\": \"glibc 2.41\","), "{j}");
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["peers"]["mimalloc"], "2.0 \"x\"");
        assert_eq!(v["notes"], serde_json::json!(["prog/python3 skipped"]));
        assert_eq!(v["mode"], "quick", "the Rust report's fields follow");
    }
}
