//! The `hak-bench` binary: runs one workload of the `hak_bench` library under the allocator the
//! cargo feature picked, and prints one `RESULT` line (plus `HAKMEM_SYSCALLS` under hakmem).
//!
//! `cargo xtask bench` builds this binary once per allocator and parses its stdout. Exit codes:
//! 0 success, 1 a workload failed (content check or allocation failure; message on stderr),
//! 2 bad command line.

#[cfg(feature = "hakmem")]
#[global_allocator]
static GLOBAL: hakmem::Hakmem = hakmem::Hakmem;

#[cfg(all(feature = "mimalloc", not(feature = "hakmem")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(feature = "jemalloc", not(any(feature = "hakmem", feature = "mimalloc"))))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The allocator this binary was built with, as named on the RESULT line.
const ALLOCATOR: &str = if cfg!(feature = "hakmem") {
    "hakmem"
} else if cfg!(feature = "mimalloc") {
    "mimalloc"
} else if cfg!(feature = "jemalloc") {
    "jemalloc"
} else {
    "system"
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args[0] == "--help" || args[0] == "-h" {
        eprintln!(
            "usage: hak-bench WORKLOAD [ARGS...]\nworkloads: {}\nallocator: {ALLOCATOR}",
            hak_bench::WORKLOADS.join(", ")
        );
        std::process::exit(2);
    }
    match hak_bench::run(&args) {
        Ok(outcome) => {
            println!("{}", outcome.result_line(ALLOCATOR));
            print_syscalls();
        }
        Err(msg) => {
            eprintln!("hak-bench ({ALLOCATOR}): {}: {msg}", args[0]);
            let known = hak_bench::WORKLOADS.contains(&args[0].as_str());
            std::process::exit(if known && !is_usage_error(&msg) { 1 } else { 2 });
        }
    }
}

/// Whether `msg` is a bad-argument message (exit code 2) rather than a failed workload.
fn is_usage_error(msg: &str) -> bool {
    msg.contains(": argument ") && msg.contains(" must be ")
}

/// Prints hakmem's OS syscall counters (whole process, including the untimed prefault).
#[cfg(feature = "hakmem")]
fn print_syscalls() {
    let os = hakmem::stats().os;
    println!(
        "HAKMEM_SYSCALLS mmap={} munmap={} madvise={} mremap={}",
        os.mmap_calls, os.munmap_calls, os.madvise_calls, os.mremap_calls
    );
}

#[cfg(not(feature = "hakmem"))]
fn print_syscalls() {}
