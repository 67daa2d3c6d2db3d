//! Mid-tier memory falls by itself: about 300 MiB of mid blocks (48 KiB..1 MiB, written whole)
//! are allocated and freed, then the program keeps allocating a few mid blocks for two
//! seconds without calling `trim()`; the process's resident memory must fall to at most 10%
//! of the peak. Before the mid tier purged by age, it kept its 32 MiB decommit budget, its
//! empty-chunk cache and its shards' batches resident for as long as the program ran.
//!
//! Alone in its binary (one test), so the process's RSS is this test's.

use std::alloc::Layout;
use std::time::{Duration, Instant};

#[global_allocator]
static A: hakmem::Hakmem = hakmem::Hakmem;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

#[test]
fn freed_mid_memory_falls_without_trim() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mid_size = |r: u64| 48 * KIB + 1 + (r % (MIB as u64 - 48 * KIB as u64)) as usize;
    let mut blocks: Vec<(*mut u8, Layout)> = Vec::with_capacity(2048);
    let mut total = 0;
    while total < 300 * MIB {
        let l = Layout::from_size_align(mid_size(next()), 16).unwrap();
        // SAFETY: a non-zero layout; the writes stay inside the block.
        let p = unsafe { std::alloc::alloc(l) };
        assert!(!p.is_null());
        // SAFETY: as above.
        unsafe { p.write_bytes(0x5A, l.size()) };
        blocks.push((p, l));
        total += l.size();
    }
    let peak = rss();
    // Free in an order unlike the allocation's, so chunks empty late.
    let n = blocks.len();
    for i in 0..n {
        let (p, l) = blocks[(i * 7919) % n];
        // SAFETY: each block is live and freed once (7919 is prime and does not divide `n`
        // unless `n` is a multiple of it, which 300 MiB of blocks of at most 1 MiB is not).
        unsafe { std::alloc::dealloc(p, l) };
    }
    drop(blocks);
    let freed = rss();
    // Light activity: a few mid blocks now and then.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let l = Layout::from_size_align(mid_size(next()), 16).unwrap();
        // SAFETY: a non-zero layout; the block is freed right away.
        unsafe {
            // black_box: an optimised build may otherwise drop an allocation that is only
            // written and freed, and with it the activity this test is about.
            let p = std::hint::black_box(std::alloc::alloc(l));
            assert!(!p.is_null());
            p.write_bytes(1, l.size());
            std::alloc::dealloc(p, l);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let after = rss();
    eprintln!(
        "peak {} MiB, right after the frees {} MiB, after 2 s of light activity {} MiB",
        peak / MIB,
        freed / MIB,
        after / MIB
    );
    assert!(peak >= 280 * MIB, "the blocks were really touched ({} MiB)", peak / MIB);
    assert!(
        after * 10 <= peak,
        "RSS {} MiB after 2 s is more than 10% of the peak {} MiB",
        after / MIB,
        peak / MIB
    );
}
