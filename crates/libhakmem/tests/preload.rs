//! libhakmem.so and libhakmem.a from the outside: C (and C++) programs in `tests/c/` compiled
//! here with the system's C compiler and run with `LD_PRELOAD` (or linked against the library),
//! and real programs from the machine (python3, sqlite3, perl, sort, gcc) run with and without
//! the preload, whose outputs must be identical.
//!
//! The library is built first with `cargo build -p libhakmem` into this test's own target
//! directory and profile (cargo does not build a cdylib for integration tests), so `cargo test`
//! tests the debug build, with hakmem's internal checks on, and `cargo test --release` the
//! optimised one. Every child runs with a timeout, so a hang (a deadlock after `fork`, say)
//! fails the test instead of blocking the run. A real program missing from the machine is
//! skipped with a note on stderr.

// The clippy.toml ban on `std::env::var` protects the allocator; this test is an ordinary
// program under the system allocator that reads CARGO, CC, CXX and PATH.
#![allow(clippy::disallowed_methods)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where the library and the compiled test programs are.
struct Built {
    /// The profile directory (`target/debug` or `target/release`).
    dir: PathBuf,
    so: PathBuf,
    /// Directory of compiled C programs.
    bin: PathBuf,
}

fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(build_library)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds libhakmem with the profile and target directory this test binary was built with.
fn build_library() -> Built {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/preload-<hash>
    let dir = exe.parent().and_then(Path::parent).expect("profile directory").to_path_buf();
    let target = dir.parent().expect("target directory").to_path_buf();
    let profile = dir.file_name().and_then(|s| s.to_str()).expect("profile name").to_string();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args(["build", "--quiet", "--package", "libhakmem"]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    cmd.arg("--target-dir").arg(&target);
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "cargo build -p libhakmem failed: {status}");
    let so = dir.join("libhakmem.so");
    assert!(so.exists() && dir.join("libhakmem.a").exists(), "no library in {}", dir.display());
    let bin = dir.join("c-tests");
    std::fs::create_dir_all(&bin).expect("create c-tests dir");
    Built { dir, so, bin }
}

/// The C compiler (`$CC`, else `cc`).
fn cc() -> String {
    std::env::var("CC").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "cc".into())
}

const CFLAGS: &[&str] = &[
    "-O1",
    "-g",
    "-fno-builtin",
    "-Wall",
    "-Wno-deprecated-declarations",
    "-Wno-alloc-size-larger-than",
    "-Wno-use-after-free",
    "-pthread",
];

/// Compiles `tests/c/<src>` into `<bin>/<out>` with `extra` arguments after the source.
fn compile(src: &str, out: &str, compiler: &str, extra: &[&str]) -> PathBuf {
    let b = built();
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = b.bin.join(out);
    let status = Command::new(compiler)
        .args(CFLAGS)
        .arg("-I")
        .arg(workspace_root().join("include"))
        .arg("-o")
        .arg(&exe)
        .arg(here.join("tests/c").join(src))
        .args(extra)
        .arg("-ldl")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(status.success(), "compiling {src} failed");
    exe
}

/// What a child did.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

impl Ran {
    fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Lines hakmem wrote on stderr.
    fn hakmem_lines(&self) -> Vec<&str> {
        self.stderr.lines().filter(|l| l.starts_with("hakmem:")).collect()
    }

    fn assert_ok(&self, what: &str) {
        assert_eq!(
            self.code,
            Some(0),
            "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.out(),
            self.stderr
        );
    }
}

/// Runs `cmd`, preloading hakmem if `preload`, with `HAKMEM_*` cleared and then `env` set;
/// kills it after `timeout`.
fn run(mut cmd: Command, preload: bool, env: &[(&str, &str)], timeout: Duration) -> Ran {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("HAKMEM_") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("LD_PRELOAD");
    if preload {
        cmd.env("LD_PRELOAD", &built().so);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} timed out after {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ran {
        code: status.code(),
        stdout: o.join().unwrap_or_default(),
        stderr: String::from_utf8_lossy(&e.join().unwrap_or_default()).into_owned(),
    }
}

const MINUTE: Duration = Duration::from_secs(60);

fn c_test(src: &str, args: &[&str], env: &[(&str, &str)]) -> Ran {
    let exe = compile(src, src.trim_end_matches(".c"), &cc(), &[]);
    let mut cmd = Command::new(exe);
    cmd.args(args);
    run(cmd, true, env, MINUTE)
}

#[test]
fn every_function_behaves_as_glibc_under_the_preload() {
    let r = c_test("api.c", &[], &[]);
    r.assert_ok("api");
    assert!(r.out().contains("api: ok"));
    assert!(r.stderr.contains("hakmem stats"), "malloc_stats printed nothing:\n{}", r.stderr);
    assert!(r.hakmem_lines().is_empty(), "unexpected complaints:\n{}", r.stderr);
}

#[test]
fn every_function_works_when_linked_as_a_shared_library() {
    let b = built();
    let lib = format!("-L{}", b.dir.display());
    let rpath = format!("-Wl,-rpath,{}", b.dir.display());
    let exe = compile("api.c", "api-shared", &cc(), &[&lib, "-lhakmem", &rpath]);
    let r = run(Command::new(exe), false, &[], MINUTE);
    r.assert_ok("api linked with -lhakmem");
}

#[test]
fn every_function_works_when_linked_statically() {
    let b = built();
    let a = b.dir.join("libhakmem.a");
    let a = a.to_str().expect("utf-8 path");
    // What a Rust staticlib needs from the system on linux-gnu.
    let exe = compile("api.c", "api-static", &cc(), &[a, "-lgcc_s", "-lutil", "-lrt", "-lm"]);
    let r = run(Command::new(exe), false, &[], MINUTE);
    r.assert_ok("api linked with libhakmem.a");
}

#[test]
fn foreign_and_interior_pointers_are_refused_with_one_line_each() {
    let r = c_test("misuse.c", &[], &[]);
    r.assert_ok("misuse");
    assert_eq!(r.hakmem_lines().len(), 9, "{}", r.stderr);
    assert!(r.out().contains("refusals expected: 9"));
}

#[test]
fn check_mode_refuses_tiny_double_frees_and_interior_pointers() {
    let r = c_test("misuse.c", &["check"], &[("HAKMEM_CHECK", "1")]);
    r.assert_ok("misuse in check mode");
    let lines = r.hakmem_lines();
    assert_eq!(lines.len(), 13, "{}", r.stderr);
    assert_eq!(lines.iter().filter(|l| l.contains("HAKMEM_CHECK")).count(), 4, "{}", r.stderr);
}

#[test]
fn threads_free_each_others_blocks_and_their_caches_flush_at_exit() {
    let r = c_test("threads.c", &[], &[]);
    r.assert_ok("threads");
    assert!(r.hakmem_lines().is_empty(), "{}", r.stderr);
}

#[test]
fn fork_children_allocate_while_other_threads_do() {
    let r = c_test("fork.c", &[], &[]);
    r.assert_ok("fork");
}

#[test]
fn options_are_read_when_the_first_allocation_comes_before_environ_is_set() {
    let r = c_test("early.c", &[], &[("HAKMEM_CHECK", "1")]);
    r.assert_ok("early");
    let lines = r.hakmem_lines();
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    assert!(lines[0].contains("HAKMEM_CHECK"), "{}", r.stderr);
}

#[test]
fn initialisation_inside_atexit_neither_deadlocks_nor_loses_the_exit_report() {
    let r = c_test("atexit.c", &[], &[("HAKMEM_STATS", "1")]);
    r.assert_ok("atexit");
    assert!(r.stderr.contains("hakmem stats"), "no report at exit:\n{}", r.stderr);
}

#[test]
fn cxx_new_and_delete_go_through_hakmem() {
    let cxx = std::env::var("CXX").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "c++".into());
    let exe = compile("cxx.cc", "cxx", &cxx, &[]);
    let r = run(Command::new(exe), true, &[], MINUTE);
    r.assert_ok("cxx");
    assert!(r.out().contains("cxx: ok"));
}

/// `program` if it is installed (an absolute path that exists, or found on `PATH`).
fn installed(program: &str) -> Option<PathBuf> {
    let p = Path::new(program);
    if p.is_absolute() {
        return p.exists().then(|| p.to_path_buf());
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|c| c.exists())
}

/// Runs `program args` with and without the preload and checks both succeed with the same
/// stdout; returns the preloaded run.
fn same_output(program: &str, args: &[&str], env: &[(&str, &str)]) -> Option<Ran> {
    let Some(exe) = installed(program) else {
        eprintln!("note: {program} is not installed; skipped");
        return None;
    };
    let cmd = || {
        let mut c = Command::new(&exe);
        c.args(args).current_dir(workspace_root());
        c
    };
    let plain = run(cmd(), false, env, MINUTE);
    plain.assert_ok(&format!("{program} without hakmem"));
    let pre = run(cmd(), true, env, MINUTE);
    pre.assert_ok(&format!("{program} with hakmem"));
    assert_eq!(plain.out(), pre.out(), "{program}: outputs differ");
    assert!(pre.hakmem_lines().is_empty(), "{program}:\n{}", pre.stderr);
    Some(pre)
}

const PYTHON: &str = r#"
import json, hashlib, random
random.seed(7)
d = {}
for i in range(60000):
    k = "k%d" % random.randrange(20000)
    d.setdefault(k, []).append("v" * (i % 50) + str(i))
words = sorted(d, key=lambda k: (len(d[k]), k))
blob = json.dumps({k: d[k][:3] for k in words[:5000]}, sort_keys=True)
again = json.loads(blob)
h = hashlib.sha256(blob.encode()).hexdigest()
print(len(d), len(blob), len(again), h)
"#;

#[test]
fn python_runs_the_same_under_the_preload() {
    // Both with Python's own small-object allocator and with every object from malloc.
    same_output("python3", &["-c", PYTHON], &[]);
    same_output("python3", &["-c", PYTHON], &[("PYTHONMALLOC", "malloc")]);
}

const SQL: &str = "\
CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000)
  INSERT INTO t(k, v) SELECT printf('key%05d', (x * 7919) % 50021), zeroblob(x % 700) FROM c;
CREATE INDEX tk ON t(k);
SELECT count(*), sum(length(v)), min(k), max(k) FROM t;
SELECT substr(k, 1, 4), count(*), sum(length(v)) FROM t GROUP BY substr(k, 1, 4) ORDER BY 1;
DELETE FROM t WHERE id % 3 = 0;
VACUUM;
SELECT count(*), group_concat(k) IS NOT NULL FROM t;";

#[test]
fn sqlite_runs_the_same_under_the_preload() {
    same_output("sqlite3", &[":memory:", SQL], &[]);
}

#[test]
fn perl_and_sort_run_the_same_under_the_preload() {
    let script = r#"my %h; for my $i (1..100000) { $h{"k" . ($i * 7919 % 30011)} .= chr(65 + $i % 26); }
my $n = 0; $n += length($h{$_}) for sort keys %h; print scalar(keys %h), " $n\n";"#;
    same_output("perl", &["-e", script], &[]);
    // sort reads a file of the workspace; its output is the sorted lines.
    same_output("sort", &["-r", "crates/hakmem/src/lib.rs", "README.md", "docs/bench.md"], &[]);
}

#[test]
fn gcc_compiles_the_same_object_under_the_preload_and_stats_print_at_exit() {
    let b = built();
    for (preload, name) in [(false, "plain.o"), (true, "preloaded.o")] {
        let mut c = Command::new(cc());
        let out = b.bin.join(name);
        c.args(["-O2", "-c", "-o"])
            .arg(&out)
            .arg(workspace_root().join("benches/c/bench_random_mixed.c"));
        let env: &[(&str, &str)] = if preload { &[("HAKMEM_STATS", "1")] } else { &[] };
        let r = run(c, preload, env, MINUTE);
        r.assert_ok(&format!("cc -c (preload {preload})"));
        if preload {
            assert!(
                r.stderr.contains("hakmem stats"),
                "HAKMEM_STATS=1 printed nothing:\n{}",
                r.stderr
            );
        }
    }
    let a = std::fs::read(b.bin.join("plain.o")).expect("plain object");
    let p = std::fs::read(b.bin.join("preloaded.o")).expect("preloaded object");
    assert!(a == p, "the compiler produced different objects under the preload");
}
