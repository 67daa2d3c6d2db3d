//! `hakmem::stats()`: counters of every layer, summed on read; and the `HAKMEM_STATS=1`
//! printout at exit (written with `write(2)`, no allocation).

pub use hak_l25::MidStats;
use hak_os::{write_stderr, write_stderr_u64, OsStats};
use hak_shared_pool::PoolStats;
use hak_sync::stat::StatValue;
pub use hak_tiny_front::TinyStats;

use crate::global::{LG_SS, OS, POOL, REGISTRY};
use crate::large;
use crate::thread;

/// Allocator-wide counters.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// The OS box: mmap/munmap/madvise calls, bytes mapped.
    pub os: OsStats,
    /// The shared pool: acquire stages, releases, SuperSlabs live and cached, LRU hits.
    pub pool: PoolStats,
    /// The tiny tier's thread fronts.
    pub tiny: TinyStats,
    /// The mid tier: blocks, chunks mapped and cached, shard count and growths, failed shard
    /// `try_lock`s, bytes in use, free and decommitted. Block counts include each thread's
    /// cache as of its last slow path or flush.
    pub mid: MidStats,
    /// The big tier: cache hits, misses, evictions, table resizes, live and cached bytes.
    pub big: hak_bigcache::BigStats,
    /// Registry leaves mapped (each covers 64 GiB of address space).
    pub registry_leaves: u64,
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

fn line(name: &[u8], v: u64) {
    write_stderr(b"  ");
    write_stderr(name);
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
    let s = stats();
    write_stderr(b"hakmem stats\n");
    line(b"mmap calls", s.os.mmap_calls);
    line(b"munmap calls", s.os.munmap_calls);
    line(b"madvise calls", s.os.madvise_calls);
    line(b"mapped bytes (now)", s.os.mapped.current);
    line(b"mapped bytes (peak)", s.os.mapped.peak);
    line(b"decommitted bytes, MADV_DONTNEED", s.os.decommitted_dontneed);
    line(b"decommitted bytes, MADV_FREE", s.os.decommitted_free);
    line(b"superslabs live", s.pool.superslabs_live);
    line(b"superslabs cached", s.pool.cache.cached);
    line(b"superslabs mapped", s.pool.superslabs_mapped);
    line(b"pool stage 0 (adopted)", s.pool.stage0_adopted);
    line(b"pool stage 1 (empty slab: same class, or resident)", s.pool.stage1_empty);
    line(b"pool stage 2 (unused)", s.pool.stage2_unused);
    line(b"pool stage 3 (new superslab)", s.pool.stage3_new);
    line(b"lru hits", s.pool.lru_hits);
    line(b"pool slabs purged", s.pool.purged);
    line(b"tiny refills", s.tiny.refills);
    line(b"tiny warm-pool hits", s.tiny.warm_hits);
    line(b"tiny warm-pool misses", s.tiny.warm_misses);
    line(b"tiny drains", s.tiny.drains);
    line(b"tiny remote frees", s.tiny.remote_frees);
    line(b"tiny remote batches", s.tiny.remote_batches);
    line(b"tiny full slabs back through the inbox", s.tiny.inbox_slabs);
    line(b"tiny blocks given back by idle bins", s.tiny.gc_blocks);
    line(b"tiny slabs released", s.tiny.slabs_released);
    line(b"tiny slabs published", s.tiny.slabs_published);
    line(b"tiny bytes held", s.tiny.bytes_held);
    line(b"mid allocs", s.mid.allocs);
    line(b"mid frees", s.mid.frees);
    line(b"mid chunks live", s.mid.chunks_live);
    line(b"mid chunks cached", s.mid.chunks_cached);
    line(b"mid shards", s.mid.shard_count);
    line(b"mid shard growths", s.mid.shard_growths);
    line(b"mid bytes in use", s.mid.bytes_in_use.current);
    line(b"mid bytes decommitted", s.mid.bytes_decommitted.current);
    line(b"big cache hits", s.big.hits);
    line(b"big cache misses", s.big.misses);
    line(b"big cache evictions", s.big.evictions);
    line(b"big grown from a smaller cached block", s.big.grown);
    line(b"big cached blocks split", s.big.splits);
    line(b"big decommits", s.big.decommits);
    line(b"big bytes live", s.big.live_bytes.current);
    line(b"big bytes cached", s.big.cached_bytes);
}
