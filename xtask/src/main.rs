//! xtask: hakmem's developer tasks, in the cargo-xtask style (`cargo xtask <TASK>` through the
//! alias in `.cargo/config.toml`; cargo is invoked through `$CARGO`).
//!
//! Tasks:
//! - `cargo xtask test`: every check CI runs (see `test.rs`).
//! - `cargo xtask loom [CRATE...]`: the loom models alone.
//! - `cargo xtask miri [...]` and `cargo xtask sanitize [...]`: Miri over the layer crates, and
//!   the multi-threaded tests under ASan/TSan (nightly, installed on demand; see `test.rs`).
//! - `cargo xtask bench`: builds `benches/` (`hak-bench`) once per allocator and compares them
//!   ([`bench`] runs it, [`cli`] parses its command line, [`workloads`] lists what runs,
//!   [`report`] renders Markdown, JSON and SVG, [`child`] spawns and measures one run,
//!   [`machine`] describes the host); `cargo xtask cbench`: the C rows alone ([`cbench`]).
//!
//! Exit codes: 0 success, 1 a task failed (a workload failed its check, crashed or timed out),
//! 2 bad command line.
// The clippy.toml ban on `std::env::var` protects the allocator from allocating while it reads
// its options; xtask is an ordinary program run under the system allocator.
#![allow(clippy::disallowed_methods)]

mod bench;
mod cbench;
mod child;
mod cli;
mod machine;
mod report;
mod test;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;

const HELP: &str = "\
usage: cargo xtask <TASK> [ARGS...]   (`--help` after any task prints this text)

tasks:
  test  Every check CI runs: fmt, clippy -D warnings, the workspace tests, the loom models,
        bench smoke, Miri (the crates clean under it), ASan and TSan.
  loom [CRATE...]
        The loom models alone (all crates with models by default).
  miri [--ci] [--model stacked|tree|both] [--jobs N] [CRATE...]
        Every test of the layer crates under Miri (nightly; installed if missing), with
        Stacked Borrows and with Tree Borrows, N interpreters at a time (default: one per
        core). --ci: the subset CI runs. Logs in target/miri/logs/. See docs/checking.md.
  sanitize [address|thread]...
        hakmem's multi-threaded tests under AddressSanitizer and ThreadSanitizer (nightly,
        std rebuilt with -Zbuild-std; both by default). See docs/checking.md.
  bench [--quick | --smoke] [--runs N] [--alloc A,B,...] [--timeout SECS] [WORKLOAD...]
        Build benches/ once per allocator (hakmem, system, mimalloc, jemalloc), run every
        workload N times interleaved (A B C D, A B C D, ...), and report the median ops/s,
        hakmem's ratio to each peer, peak RSS and hakmem's syscalls: a Markdown table on
        stdout plus target/bench/report.{md,json,svg} (--smoke: target/bench/smoke/).
        --quick   3 runs, smaller counts (a few minutes)
        --smoke   1 run, tiny counts: proves the harness and workloads work (CI)
        --runs N  runs per allocator (default 5; --quick 3; --smoke 1)
        --alloc   comma-separated subset of hakmem,system,mimalloc,jemalloc
        --timeout seconds before a run is killed and counted as failed
                  (default 300; --quick 120; --smoke 60)
        WORKLOAD  names or prefixes (e.g. random_mixed, random_mixed/400, big);
                  default: all of them, followed by the C rows (see cbench)
  cbench [--quick | --smoke] [--runs N] [--alloc A,B,...] [--timeout SECS] [ROW...]
        The C rows alone: C programs (benches/c/) and real programs (python3, sqlite3)
        under LD_PRELOAD of libhakmem.so, glibc (system), mimalloc, jemalloc and tcmalloc
        (Debian's libraries, installed with apt-get when missing and running as root).
        Same options; --alloc also takes tcmalloc; ROW: c/random_mixed/400, c/larson,
        c/xthread, c/mid_big, prog/python3, prog/sqlite3, or a prefix (c, prog).
        Writes target/bench/c-report.{md,json,svg}.
  help  Print this text.

docs/bench.md explains the workloads and the report.
";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(task) = args.next() else {
        eprint!("{HELP}");
        return ExitCode::from(2);
    };
    let rest: Vec<std::ffi::OsString> = args.collect();
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let strings =
        || -> Vec<String> { rest.iter().map(|a| a.to_string_lossy().into_owned()).collect() };
    match task.to_string_lossy().as_ref() {
        "bench" => bench::main(rest, HELP),
        "cbench" => cbench::main(rest, HELP),
        "test" => exit_code(test::run(&strings())),
        "loom" => exit_code(test::run_loom(&strings())),
        "miri" => exit_code(test::run_miri(&strings())),
        "sanitize" => exit_code(test::run_sanitize(&strings())),
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("xtask: unknown task `{other}`\n\n{HELP}");
            ExitCode::from(2)
        }
    }
}

/// A task's integer exit status as an `ExitCode`.
fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// An environment variable, for xtask's own configuration (`CARGO`, `CARGO_TARGET_DIR`).
fn env_var(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// The cargo that launched us (`$CARGO`, set by `cargo run`), else `cargo` from `PATH`.
fn cargo() -> std::ffi::OsString {
    env_var("CARGO").unwrap_or_else(|| "cargo".into())
}

/// `$CARGO_TARGET_DIR`, else `<root>/target`.
fn target_dir() -> PathBuf {
    match env_var("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        None => workspace_root().join("target"),
    }
}
