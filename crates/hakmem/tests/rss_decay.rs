//! Memory falls by itself: about 1 GiB of small and mid blocks is allocated and freed, then
//! the program keeps allocating a little for two seconds without ever calling `trim()`; its
//! resident memory must fall to at most 10% of the peak. (glibc keeps about 74% here and
//! mimalloc all of it; hakmem kept 910 MiB until `trim()` before freed memory was purged
//! after a delay.) It runs as its own process (`harness = false`).

use std::time::{Duration, Instant};

#[global_allocator]
static A: hakmem::Hakmem = hakmem::Hakmem;

const MIB: usize = 1 << 20;

fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

fn main() {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Blocks from 16 B to 256 KiB (tiny and mid), about 1 GiB in all, each written whole.
    let mut blocks: Vec<(*mut u8, std::alloc::Layout)> = Vec::new();
    let mut total = 0usize;
    while total < 1024 * MIB {
        let r = next();
        let size = if r % 8 == 0 {
            49_152 + (r >> 8) as usize % (200 << 10)
        } else {
            16 + (r >> 8) as usize % 4000
        };
        let layout = std::alloc::Layout::from_size_align(size, 8).unwrap();
        // SAFETY: a non-zero layout; writes stay inside the block.
        let p = unsafe { std::alloc::alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: as above.
        unsafe { p.write_bytes(1, size) };
        blocks.push((p, layout));
        total += size;
    }
    let peak = rss();
    for (p, l) in blocks.drain(..) {
        // SAFETY: each block is live and freed once, with its layout.
        unsafe { std::alloc::dealloc(p, l) };
    }
    drop(blocks);
    let freed = rss();
    // Light activity: a few small and mid allocations now and then.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let v: Vec<u8> = vec![7; 100 + (next() % 100_000) as usize];
        std::hint::black_box(&v);
        drop(v);
        std::thread::sleep(Duration::from_millis(5));
    }
    let after = rss();
    println!(
        "peak {} MiB, right after the frees {} MiB, after 2 s of light activity {} MiB",
        peak / MIB,
        freed / MIB,
        after / MIB
    );
    assert!(peak >= 900 * MIB, "the blocks were really touched ({} MiB)", peak / MIB);
    assert!(
        after * 10 <= peak,
        "RSS {} MiB after 2 s is more than 10% of the peak {} MiB",
        after / MIB,
        peak / MIB
    );
    println!("1 passed, 0 failed");
}
