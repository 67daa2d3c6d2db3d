//! `cargo xtask test`: every check CI runs, in order, stopping at the first failure:
//! formatting, clippy with `-D warnings`, the workspace's tests (unoptimised, then release with
//! debug assertions), every example (each checks its own results), the loom models of every
//! crate that has shared state (release mode, `LOOM_MAX_PREEMPTIONS=2`, own target dir so the normal
//! build cache survives the different RUSTFLAGS), one smoke run of every bench workload
//! under every allocator (tiny counts, no timing asserted) so the harness cannot rot, Miri over
//! the crates that are clean under it (`cargo xtask miri --ci`) and the multi-threaded tests
//! under AddressSanitizer and ThreadSanitizer (`cargo xtask sanitize`).
//!
//! `cargo xtask miri` and `cargo xtask sanitize` are here too: they need the nightly toolchain
//! (with Miri and rust-src), which they install through rustup when it is missing.
//! docs/checking.md describes both.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Crates with loom models (`--cfg hak_loom`).
const LOOM_CRATES: &[&str] = &[
    "hak-superslab",
    "hak-registry",
    "hak-shared-pool",
    "hak-tiny-front",
    "hak-l25",
    "hak-bigcache",
];

/// Every example, `(crate, example)`: programs a user starts from (the layer crates' check their
/// own results), so CI runs them all with `cargo run -p CRATE --example NAME` in the default
/// dev profile, which `cargo test` has already built. A new example is one line here.
const EXAMPLES: &[(&str, &str)] = &[
    ("hak-sync", "fork_lock"),
    ("hak-collections", "buffer_cache"),
    ("hak-os", "mapping"),
    ("hak-superslab", "pool"),
    ("hak-registry", "arena"),
    ("hak-tiny-front", "global_alloc"),
    ("hak-l25", "mid"),
    ("hak-bigcache", "big"),
    ("hakmem", "global"),
];

struct Step {
    name: String,
    cmd: Command,
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The loom step for one crate: its unit and integration tests (`--tests`), not its examples
/// and doc tests, which use the layers as ordinary programs do (`const` constructors in
/// statics, atomics outside any loom model).
fn loom(krate: &str) -> Command {
    let mut c = cargo();
    c.args(["test", "--release", "--tests", "-p", krate, "--target-dir", "target/loom"]);
    c.env("RUSTFLAGS", "--cfg hak_loom").env("LOOM_MAX_PREEMPTIONS", "2");
    c
}

/// The workspace's tests again, optimised as users build (release profile) but with debug
/// assertions on. Undefined behaviour that the optimiser exploits only shows here: a write
/// through a pointer derived from a shared reference was dropped in release builds, which
/// handed mid blocks out twice, while every unoptimised test passed. Own target dir, so it
/// does not rebuild over a plain `cargo build --release`.
fn release_tests() -> Command {
    let mut c = cargo();
    c.args(["test", "--workspace", "--release", "--target-dir", "target/release-checked"]);
    // The bench crates' tests (real crates from crates.io, checked unoptimised above and run
    // optimised by the bench smoke step) would add minutes of release builds for nothing the
    // allocator's own debug assertions could catch.
    c.args([
        "--exclude",
        "hak-bench",
        "--exclude",
        "hak-bench-workloads",
        "--exclude",
        "hak-micro",
    ]);
    c.env("CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS", "true");
    c.env("CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS", "true");
    c
}

/// `cargo xtask loom [CRATE...]`: the loom models alone (all crates by default).
pub(crate) fn run_loom(args: &[String]) -> i32 {
    let crates: Vec<&str> = if args.is_empty() {
        LOOM_CRATES.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    for k in crates {
        eprintln!("==> loom {k}");
        if !loom(k).status().map(|s| s.success()).unwrap_or(false) {
            return 1;
        }
    }
    0
}

fn steps() -> Vec<Step> {
    let mut v = Vec::new();
    let mut c = cargo();
    c.args(["fmt", "--all", "--", "--check"]);
    v.push(Step { name: "fmt".into(), cmd: c });
    let mut c = cargo();
    c.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
    v.push(Step { name: "clippy".into(), cmd: c });
    let mut c = cargo();
    c.args(["test", "--workspace"]);
    v.push(Step { name: "tests".into(), cmd: c });
    v.push(Step { name: "tests (release, debug assertions)".into(), cmd: release_tests() });
    for (krate, example) in EXAMPLES {
        let mut c = cargo();
        c.args(["run", "--quiet", "-p", krate, "--example", example]);
        v.push(Step { name: format!("example {krate}/{example}"), cmd: c });
    }
    for krate in LOOM_CRATES {
        v.push(Step { name: format!("loom {krate}"), cmd: loom(krate) });
    }
    let mut c = cargo();
    c.args(["xtask", "bench", "--smoke"]);
    v.push(Step { name: "bench smoke".into(), cmd: c });
    let mut c = cargo();
    c.args(["xtask", "miri", "--ci"]);
    v.push(Step { name: "miri (clean crates, both borrow models)".into(), cmd: c });
    let mut c = cargo();
    c.args(["xtask", "sanitize"]);
    v.push(Step { name: "sanitizers (address, thread)".into(), cmd: c });
    v
}

/// Runs every step; returns the process exit code.
pub(crate) fn run(args: &[String]) -> i32 {
    if let Some(a) = args.first() {
        eprintln!("xtask test takes no arguments (got {a})");
        return 2;
    }
    let all = steps();
    let total = all.len();
    let start = Instant::now();
    for (i, mut s) in all.into_iter().enumerate() {
        eprintln!("==> [{}/{}] {}", i + 1, total, s.name);
        let t = Instant::now();
        let ok = s.cmd.status().map(|st| st.success()).unwrap_or(false);
        let verdict = if ok { "ok" } else { "FAILED" };
        eprintln!("<== {} {verdict} in {:.1}s", s.name, t.elapsed().as_secs_f64());
        if !ok {
            println!("checks: {} passed, 1 failed", i);
            return 1;
        }
    }
    eprintln!("all checks passed in {:.0}s", start.elapsed().as_secs_f64());
    println!("checks: {total} passed, 0 failed");
    0
}

// ---------------------------------------------------------------------------------------------
// Miri and the sanitizers: nightly tools, installed by the tasks themselves.

/// The toolchain Miri and the sanitizers come from.
const NIGHTLY: &str = "nightly";

/// Every crate Miri runs over, in dependency order (`cargo xtask miri` with no crate names).
const MIRI_CRATES: &[&str] = &[
    "hak-sync",
    "hak-collections",
    "hak-os",
    "hak-superslab",
    "hak-registry",
    "hak-shared-pool",
    "hak-tiny-front",
    "hak-l25",
    "hak-bigcache",
    "hakmem",
];

/// What CI runs under Miri (`cargo xtask miri --ci`), under both borrow models: the crates
/// whose every test is known clean and fits the time budget, with the `cargo test` arguments
/// that select the tests. docs/checking.md says why the others wait.
const MIRI_CI: &[(&str, &[&str])] = &[
    ("hak-sync", &[]),
    ("hak-collections", &[]),
    ("hak-os", &[]),
    ("hak-registry", &[]),
    ("hak-superslab", &["--lib"]),
    ("hak-shared-pool", &["--lib"]),
    // The per-thread kit (a second per model); the rest of the tiny front takes minutes.
    ("hak-tiny-front", &["--lib", "--", "states::"]),
    // The two heaviest crates (minutes per model): a sample covering their provenance-heavy
    // paths (gathering and growth by moving pages, free marks, decay, threads, the models).
    (
        "hak-l25",
        &[
            "--lib",
            "--",
            "a_second_free",
            "decay_returns",
            "model_blocks",
            "threads_with_live_blocks",
            "usable_size",
            "flush_thread",
        ],
    ),
    (
        "hak-bigcache",
        &[
            "--lib",
            "--",
            "a_larger_request_gathers",
            "realloc_growth",
            "double_free_and_foreign",
            "model::",
            "concurrent_alloc_free_realloc",
        ],
    ),
];

/// Proptest cases per property under Miri, for properties that keep proptest's default count
/// (properties that set their own count ignore this).
const MIRI_PROPTEST_CASES: &str = "4";

/// The integration tests `cargo xtask sanitize` runs: the multi-threaded ones.
const SANITIZE_TESTS: &[&str] = &["stress", "thread_reuse", "global_allocator"];

/// A Miri borrow model.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Model {
    Stacked,
    Tree,
}

impl Model {
    fn name(self) -> &'static str {
        match self {
            Model::Stacked => "stacked",
            Model::Tree => "tree",
        }
    }
    fn flags(self) -> &'static str {
        match self {
            Model::Stacked => "",
            Model::Tree => "-Zmiri-tree-borrows",
        }
    }
}

/// `cargo` of the nightly toolchain, through rustup. `CARGO` (the stable cargo that runs
/// xtask) is removed so cargo-miri does not call back into it.
fn nightly_cargo() -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", NIGHTLY, "cargo"]).current_dir(crate::workspace_root());
    c.env_remove("CARGO").env_remove("RUSTUP_TOOLCHAIN").env_remove("RUSTC");
    c
}

fn quietly_succeeds(mut c: Command) -> bool {
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c.status().map(|s| s.success()).unwrap_or(false)
}

/// Installs the nightly toolchain with `components` unless `probe` already works.
fn ensure_nightly(probe: Command, components: &str) -> bool {
    if quietly_succeeds(probe) {
        return true;
    }
    eprintln!("==> installing the {NIGHTLY} toolchain with {components}");
    let mut c = Command::new("rustup");
    c.args(["toolchain", "install", NIGHTLY, "--profile", "minimal", "--component", components]);
    if !c.status().map(|s| s.success()).unwrap_or(false) {
        eprintln!("xtask: `rustup toolchain install {NIGHTLY}` failed (rustup is required)");
        return false;
    }
    true
}

/// Nightly with Miri and its sysroot (`cargo miri setup` is a no-op once done).
fn ensure_miri() -> bool {
    let mut probe = nightly_cargo();
    probe.args(["miri", "--version"]);
    if !ensure_nightly(probe, "miri,rust-src") {
        return false;
    }
    let mut setup = nightly_cargo();
    setup.args(["miri", "setup"]).stdout(Stdio::null());
    setup.status().map(|s| s.success()).unwrap_or(false)
}

/// One `cargo miri test` to run.
struct MiriJob {
    krate: String,
    model: Model,
    args: Vec<String>,
}

impl MiriJob {
    fn command(&self, log: &Path) -> std::io::Result<Command> {
        let mut c = nightly_cargo();
        c.args(["miri", "test", "--target-dir", "target/miri", "-p", &self.krate]);
        c.args(&self.args);
        let user = std::env::var("MIRIFLAGS").unwrap_or_default();
        // The tests leak their fixtures on purpose (`Box::leak` gives the `'static` lifetime the
        // layers' handles carry), which Miri's leak check would report at exit; the allocator's
        // own memory comes from mappings, which Miri never counts as leaks.
        c.env("MIRIFLAGS", format!("-Zmiri-ignore-leaks {} {user}", self.model.flags()).trim());
        if std::env::var_os("PROPTEST_CASES").is_none() {
            c.env("PROPTEST_CASES", MIRI_PROPTEST_CASES);
        }
        // Miri isolates the program from the file system, where proptest keeps its
        // regression seeds.
        c.env("PROPTEST_DISABLE_FAILURE_PERSISTENCE", "1");
        let out = std::fs::File::create(log)?;
        c.stderr(out.try_clone()?).stdout(out);
        Ok(c)
    }
}

/// Options of `cargo xtask miri`.
struct MiriOptions {
    ci: bool,
    models: Vec<Model>,
    jobs: usize,
    crates: Vec<String>,
}

fn parse_miri(args: &[String]) -> Result<MiriOptions, String> {
    use lexopt::prelude::*;
    let mut o = MiriOptions {
        ci: false,
        models: vec![Model::Stacked, Model::Tree],
        jobs: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        crates: Vec::new(),
    };
    let mut p = lexopt::Parser::from_args(args);
    let err = |e: lexopt::Error| e.to_string();
    while let Some(arg) = p.next().map_err(err)? {
        match arg {
            Long("ci") => o.ci = true,
            Long("model") => {
                o.models = match p.value().map_err(err)?.string().map_err(err)?.as_str() {
                    "stacked" => vec![Model::Stacked],
                    "tree" => vec![Model::Tree],
                    "both" => vec![Model::Stacked, Model::Tree],
                    other => return Err(format!("--model wants stacked|tree|both, got `{other}`")),
                }
            }
            Long("jobs") => {
                o.jobs = p
                    .value()
                    .map_err(err)?
                    .string()
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or("--jobs wants a positive number")?
            }
            Value(k) => {
                let k = k.string().map_err(err)?;
                if !MIRI_CRATES.contains(&k.as_str()) {
                    return Err(format!("{k} is not one of {}", MIRI_CRATES.join(", ")));
                }
                o.crates.push(k);
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    if o.ci && !o.crates.is_empty() {
        return Err("--ci runs a fixed set of crates; give either --ci or crate names".into());
    }
    Ok(o)
}

/// `cargo xtask miri [--ci] [--model stacked|tree|both] [--jobs N] [CRATE...]`: every test of
/// the given crates (all layer crates by default) under Miri, with Stacked Borrows and with Tree
/// Borrows, `N` interpreters at a time (one per core by default). Logs go to
/// `target/miri/logs/`; a failed run's log tail is printed.
pub(crate) fn run_miri(args: &[String]) -> i32 {
    let o = match parse_miri(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("xtask miri: {e}");
            return 2;
        }
    };
    let selection: Vec<(String, Vec<String>)> = if o.ci {
        MIRI_CI
            .iter()
            .map(|(k, a)| (k.to_string(), a.iter().map(|s| s.to_string()).collect()))
            .collect()
    } else if o.crates.is_empty() {
        MIRI_CRATES.iter().map(|k| (k.to_string(), Vec::new())).collect()
    } else {
        o.crates.iter().map(|k| (k.clone(), Vec::new())).collect()
    };
    if !ensure_miri() {
        return 1;
    }
    let start = Instant::now();
    // Build every test binary once; the runs then share the build (cargo holds its lock only
    // while building).
    eprintln!("==> miri: building");
    let mut build = nightly_cargo();
    build.args(["miri", "test", "--no-run", "--target-dir", "target/miri"]);
    for (k, _) in &selection {
        build.args(["-p", k]);
    }
    if !build.status().map(|s| s.success()).unwrap_or(false) {
        eprintln!("xtask miri: the build failed");
        return 1;
    }
    let logs = crate::workspace_root().join("target/miri/logs");
    if let Err(e) = std::fs::create_dir_all(&logs) {
        eprintln!("xtask miri: cannot create {}: {e}", logs.display());
        return 1;
    }
    let mut queue: std::collections::VecDeque<MiriJob> = selection
        .iter()
        .flat_map(|(k, a)| {
            o.models.iter().map(|&model| MiriJob { krate: k.clone(), model, args: a.clone() })
        })
        .collect();
    let mut running: Vec<(MiriJob, std::process::Child, Instant, PathBuf)> = Vec::new();
    let mut results: Vec<(String, Model, f64, bool)> = Vec::new();
    while !queue.is_empty() || !running.is_empty() {
        while running.len() < o.jobs {
            let Some(job) = queue.pop_front() else { break };
            let log = logs.join(format!("{}.{}.log", job.krate, job.model.name()));
            let child = job.command(&log).and_then(|mut c| c.spawn());
            match child {
                Ok(ch) => {
                    eprintln!("==> miri {} ({} borrows)", job.krate, job.model.name());
                    running.push((job, ch, Instant::now(), log));
                }
                Err(e) => {
                    eprintln!("xtask miri: cannot start cargo miri: {e}");
                    results.push((job.krate, job.model, 0.0, false));
                }
            }
        }
        let mut i = 0;
        while i < running.len() {
            match running[i].1.try_wait() {
                Ok(None) => i += 1,
                done => {
                    let (job, _, t, log) = running.swap_remove(i);
                    let ok = matches!(done, Ok(Some(s)) if s.success());
                    let secs = t.elapsed().as_secs_f64();
                    let verdict = if ok { "ok" } else { "FAILED" };
                    eprintln!(
                        "<== miri {} ({} borrows) {verdict} in {secs:.0}s",
                        job.krate,
                        job.model.name()
                    );
                    if !ok {
                        print_tail(&log, 120);
                    }
                    results.push((job.krate, job.model, secs, ok));
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    eprintln!("miri summary (wall seconds per crate and model; logs in {}):", logs.display());
    for (k, model, secs, ok) in &results {
        let verdict = if *ok { "ok" } else { "FAILED" };
        eprintln!("  {k:<16} {:<8} {secs:>6.0}s  {verdict}", model.name());
    }
    let failed = results.iter().filter(|r| !r.3).count();
    eprintln!(
        "miri: {} runs, {failed} failed, {:.0}s",
        results.len(),
        start.elapsed().as_secs_f64()
    );
    i32::from(failed > 0)
}

/// Prints the last `n` lines of a log, without Miri's memory dumps.
fn print_tail(log: &Path, n: usize) {
    let Ok(text) = std::fs::read_to_string(log) else { return };
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains('│')).collect();
    eprintln!("---- last lines of {} ----", log.display());
    for l in &lines[lines.len().saturating_sub(n)..] {
        eprintln!("{l}");
    }
    eprintln!("----");
}

/// The host's target triple (`-Zbuild-std` needs an explicit `--target`).
fn host_triple() -> Option<String> {
    let mut c = Command::new("rustup");
    c.args(["run", NIGHTLY, "rustc", "-vV"]);
    let out = c.output().ok()?;
    String::from_utf8(out.stdout)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
}

/// `cargo xtask sanitize [address|thread]...`: the multi-threaded integration tests of
/// `hakmem` (see [`SANITIZE_TESTS`]) under AddressSanitizer and ThreadSanitizer (both by
/// default), with a std rebuilt for the sanitizer and `--cfg hak_sanitize` (no mapping hints,
/// acquire loads instead of fences). One target dir per sanitizer under `target/sanitize/`.
pub(crate) fn run_sanitize(args: &[String]) -> i32 {
    let mut sanitizers: Vec<&str> = Vec::new();
    for a in args {
        match a.as_str() {
            "address" | "thread" => sanitizers.push(a),
            other => {
                eprintln!("xtask sanitize: unknown sanitizer {other} (address, thread)");
                return 2;
            }
        }
    }
    if sanitizers.is_empty() {
        sanitizers = vec!["address", "thread"];
    }
    let mut probe = Command::new("rustup");
    probe.args(["run", NIGHTLY, "rustc", "--print", "sysroot"]);
    if !ensure_nightly(probe, "rust-src") {
        return 1;
    }
    // rust-src may be missing from a nightly installed without it.
    let mut add = Command::new("rustup");
    add.args(["component", "add", "--toolchain", NIGHTLY, "rust-src"]);
    if !quietly_succeeds(add) {
        eprintln!("xtask sanitize: cannot add rust-src to {NIGHTLY}");
        return 1;
    }
    let Some(triple) = host_triple() else {
        eprintln!("xtask sanitize: cannot ask rustc for the host triple");
        return 1;
    };
    let start = Instant::now();
    for s in sanitizers {
        let t = Instant::now();
        eprintln!("==> sanitize {s}");
        let mut c = nightly_cargo();
        c.args(["test", "-Zbuild-std", "--target", &triple, "-p", "hakmem"]);
        c.args(["--target-dir", &format!("target/sanitize/{s}")]);
        for test in SANITIZE_TESTS {
            c.args(["--test", test]);
        }
        let flags = format!("-Zsanitizer={s} --cfg hak_sanitize");
        c.env("RUSTFLAGS", &flags).env("RUSTDOCFLAGS", &flags);
        // Fail on the first report; TSan's reports of a thread's exit without joining are
        // not ours (libtest's harness).
        c.env("ASAN_OPTIONS", "halt_on_error=1:detect_stack_use_after_return=1");
        c.env("TSAN_OPTIONS", "halt_on_error=1:second_deadlock_stack=1:report_thread_leaks=0");
        let ok = c.status().map(|st| st.success()).unwrap_or(false);
        let verdict = if ok { "ok" } else { "FAILED" };
        eprintln!("<== sanitize {s} {verdict} in {:.0}s", t.elapsed().as_secs_f64());
        if !ok {
            return 1;
        }
    }
    eprintln!("sanitize: clean in {:.0}s", start.elapsed().as_secs_f64());
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn miri(s: &str) -> Result<MiriOptions, String> {
        parse_miri(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn miri_command_line() {
        let o = miri("--model tree --jobs=3 hak-os hak-sync").unwrap();
        assert!(!o.ci && o.models == [Model::Tree] && o.jobs == 3);
        assert_eq!(o.crates, ["hak-os", "hak-sync"]);
        assert!(miri("--ci --model=both").unwrap().models == [Model::Stacked, Model::Tree]);
        for bad in
            ["--model", "--model heap", "--jobs 0", "--jobs", "--fast", "nosuch", "--ci hak-os"]
        {
            assert!(miri(bad).is_err(), "{bad}");
        }
    }
}
