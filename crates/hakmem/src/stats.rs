//! `hakmem::stats()`: counters of every layer, summed on read; and the `HAKMEM_STATS=1`
//! printout at exit (written with `write(2)`, no allocation).

pub use hak_bigcache::BigStats;
pub use hak_l25::MidStats;
use hak_os::{write_stderr, write_stderr_u64, OsStats};
use hak_shared_pool::PoolStats;
use hak_sync::stat::{StatPath, StatValue};
pub use hak_tiny_front::TinyStats;

use crate::global::{LG_SS, OS, POOL, REGISTRY};
use crate::large;
use crate::thread;

hak_sync::stats! {
    /// Allocator-wide counters: every layer's snapshot. `HAKMEM_STATS=1` prints them all, each
    /// under its dotted name (`pool.cache.hits`, `os.mapped.peak`), and the C library's
    /// `hakmem_stat` takes the same names.
    pub struct Stats {
        /// The OS box: mmap/munmap/madvise calls, bytes mapped.
        os: OsStats,
        /// The shared pool: acquire stages, releases, SuperSlabs live and cached, LRU hits.
        pool: PoolStats,
        /// The tiny tier's thread fronts, summed over every thread cache.
        tiny: TinyStats,
        /// The mid tier: blocks, chunks mapped and cached, shard count and growths, failed
        /// shard `try_lock`s, bytes in use, free and decommitted. Block counts include each
        /// thread's cache as of its last slow path or flush.
        mid: MidStats,
        /// The big tier: cache hits, misses, evictions, table resizes, live and cached bytes.
        big: BigStats,
        /// Registry leaves mapped (each covers 64 GiB of address space).
        registry_leaves: u64,
    }
}

impl Stats {
    /// The value the report prints under the dotted `name` (`b"pool.cache.hits"`,
    /// `b"os.mapped.peak"`), or `None` if it prints no such line. A walk of the whole report:
    /// for reading a few values, not for a hot loop.
    pub fn value(&self, name: &[u8]) -> Option<u64> {
        let mut found = None;
        self.visit(StatPath::root(), &mut |p, v| {
            if found.is_none() && path_is(p, name) {
                found = Some(v);
            }
        });
        found
    }
}

/// Whether `name` is `p`'s parts joined with dots.
fn path_is(p: &StatPath, name: &[u8]) -> bool {
    let mut rest = name;
    for (i, part) in p.parts().iter().enumerate() {
        if i > 0 {
            let Some(r) = rest.strip_prefix(b".") else { return false };
            rest = r;
        }
        let Some(r) = rest.strip_prefix(part.as_bytes()) else { return false };
        rest = r;
    }
    rest.is_empty()
}

/// Bytes freed by threads without a cache (during teardown), counted here because no front
/// saw them.
pub(crate) static UNCACHED_FREE_BYTES: hak_sync::stat::StatCounter =
    hak_sync::stat::StatCounter::new();

/// A snapshot of every counter. Per-thread counters are summed over all thread caches.
pub fn stats() -> Stats {
    let mut t = TinyStats::default();
    thread::for_each_front_stats(|f| t.merge(&f.snapshot()));
    let back = t.bytes_back + UNCACHED_FREE_BYTES.get();
    t.bytes_held = t.bytes_out.saturating_sub(back);
    let pool = POOL.stats();
    t.bytes_mapped = (pool.superslabs_live << LG_SS) + pool.cache.cached_bytes;
    Stats {
        os: OS.stats(),
        pool,
        tiny: t,
        mid: large::MID.stats(),
        big: large::BIG.stats(),
        registry_leaves: REGISTRY.leaf_count(),
    }
}

/// One report line, `  a.b.c: v`, written without allocating.
fn line(path: &StatPath, v: u64) {
    write_stderr(b"  ");
    for (i, part) in path.parts().iter().enumerate() {
        if i > 0 {
            write_stderr(b".");
        }
        write_stderr(part.as_bytes());
    }
    write_stderr(b": ");
    write_stderr_u64(v);
    write_stderr(b"\n");
}

/// Whether `HAKMEM_STATS=1` asked for the report at exit.
static PRINT_AT_EXIT: hak_sync::atomic::AtomicBool = hak_sync::atomic::AtomicBool::new(false);

/// The report at exit runs as an ELF destructor (`.fini_array`): at `exit()` after every
/// `atexit` handler, and nothing has to be registered at initialisation, which may run inside
/// glibc's `atexit` (see `global.rs`).
#[used]
#[link_section = ".fini_array"]
static AT_EXIT: extern "C" fn() = at_exit;

extern "C" fn at_exit() {
    if PRINT_AT_EXIT.load(hak_sync::atomic::Ordering::Relaxed) {
        print_at_exit();
    }
}

/// Turns the report at exit on (initialisation, `HAKMEM_STATS=1`).
pub(crate) fn print_at_exit_if(on: bool) {
    // Naming the destructor keeps the object that holds it in every link.
    core::hint::black_box(&AT_EXIT);
    PRINT_AT_EXIT.store(on, hak_sync::atomic::Ordering::Relaxed);
}

/// Prints the counters to stderr (at exit when `HAKMEM_STATS=1`; `malloc_stats()`).
pub(crate) extern "C" fn print_at_exit() {
    // The exiting thread's caches still hold counts no one has folded (the mid tier folds
    // per thread); flushing them makes the totals describe the whole run. Later allocations
    // by other exit handlers simply refill the caches.
    crate::thread::flush_current();
    write_stderr(b"hakmem stats\n");
    stats().visit(StatPath::root(), &mut line);
}
