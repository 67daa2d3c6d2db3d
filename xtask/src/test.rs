//! `cargo xtask test`: every check CI runs, in order, stopping at the first failure:
//! formatting, clippy with `-D warnings`, the workspace's tests (unoptimised, then release with
//! debug assertions), the loom models of every crate
//! that has shared state (release mode, `LOOM_MAX_PREEMPTIONS=2`, own target dir so the normal
//! build cache survives the different RUSTFLAGS), and one smoke run of every bench workload
//! under every allocator (tiny counts, no timing asserted) so the harness cannot rot.

use std::process::Command;
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

struct Step {
    name: String,
    cmd: Command,
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The loom step for one crate.
fn loom(krate: &str) -> Command {
    let mut c = cargo();
    c.args(["test", "--release", "-p", krate, "--target-dir", "target/loom"]);
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
    for krate in LOOM_CRATES {
        v.push(Step { name: format!("loom {krate}"), cmd: loom(krate) });
    }
    let mut c = cargo();
    c.args(["xtask", "bench", "--smoke"]);
    v.push(Step { name: "bench smoke".into(), cmd: c });
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
