//! Freed small-block memory is not kept per size class: 256 MiB of one class is allocated and
//! freed, then the next class, through ten classes. Each class must reuse what the previous
//! one freed, so resident memory never grows past one class's worth; and once the program has
//! stopped freeing, the purge delay later, it falls back near where it started. (Until this was
//! fixed, full slabs were detached and the freed ones waited on their class's abandoned list
//! until `trim()`: RSS climbed from about 290 MiB to 2.6 GiB over the ten classes; glibc keeps
//! about 350 MiB.)
//!
//! The bounds come from what the allocator is documented to keep: freed slabs keep their pages
//! for the purge delay (so right after a free, up to the 256 MiB just freed), plus the thread's
//! bins (at most 64 KiB per class, 42 classes: 2.7 MiB), its empty slabs (4 per class, 64 KiB
//! each: 2.5 MiB for ten classes), the SuperSlab cache's two committed SuperSlabs (4 MiB) and
//! metadata: 32 MiB above the start once the delay has passed, 256 + 32 MiB before. It runs as
//! its own process (`harness = false`) so that only its own memory is measured.

#[global_allocator]
static A: hakmem::Hakmem = hakmem::Hakmem;

const MIB: usize = 1 << 20;

fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// Allocates `bytes` worth of `size`-byte blocks, chained through their first word (no
/// container, whose own big buffer would be measured too), and returns the chain.
fn build(size: usize, bytes: usize, tag: u8) -> *mut u8 {
    let layout = std::alloc::Layout::from_size_align(size, 8).unwrap();
    let mut head: *mut u8 = std::ptr::null_mut();
    for _ in 0..bytes / size {
        // SAFETY: a non-zero layout; the block is written within its size.
        unsafe {
            let b = std::alloc::alloc(layout);
            assert!(!b.is_null());
            b.cast::<*mut u8>().write(head);
            b.add(size - 1).write(tag);
            head = b;
        }
    }
    head
}

/// Checks and frees a chain made by `build`.
fn free_all(mut head: *mut u8, size: usize, tag: u8) {
    let layout = std::alloc::Layout::from_size_align(size, 8).unwrap();
    while !head.is_null() {
        // SAFETY: every block of the chain is live, `size` bytes, freed once.
        unsafe {
            let next = head.cast::<*mut u8>().read();
            assert_eq!(head.add(size - 1).read(), tag, "contents kept");
            std::alloc::dealloc(head, layout);
            head = next;
        }
    }
}

fn main() {
    let base = rss();
    for (k, size) in
        [64usize, 96, 160, 256, 384, 640, 1024, 2048, 4096, 8192].into_iter().enumerate()
    {
        let chain = build(size, 256 * MIB, k as u8);
        let peak = rss();
        free_all(chain, size, k as u8);
        let after = rss();
        println!(
            "class of {size:5} B: peak {:4} MiB, after free {:3} MiB (start {} MiB)",
            peak / MIB,
            after / MIB,
            base / MIB
        );
        assert!(peak >= base + 200 * MIB, "the blocks were really touched");
        assert!(
            peak <= base + (256 + 32) * MIB,
            "allocating 256 MiB of {size}-byte blocks after freeing other classes took RSS to \
             {} MiB (started at {} MiB): freed memory was kept per class",
            peak / MIB,
            base / MIB
        );
        assert!(after <= base + (256 + 32) * MIB);
    }
    // Light activity for twice the purge delay: the freed memory goes back.
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(2) {
        free_all(build(64, 64 << 10, 1), 64, 1);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let settled = rss();
    println!("after 2 s of light activity: {} MiB", settled / MIB);
    assert!(
        settled <= base + 32 * MIB,
        "RSS {} MiB two seconds after the frees (started at {} MiB)",
        settled / MIB,
        base / MIB
    );
    println!("1 passed, 0 failed");
}
