//! The big tier through the allocator's front door: an absurd size is refused at once without
//! holding up other threads' big allocations; a buffer grown by `realloc` from 8 bytes to
//! 64 MiB is copied a little at the start and then grows in place or by moving its pages; big
//! buffers written only at both ends cost a few pages each, not huge pages.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use hakmem::Hakmem;

const MIB: usize = 1 << 20;

/// The tests read process-wide counters and RSS: they take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// Runs `f` on its own thread; fails the test if it has not finished within `secs` seconds
/// (the thread is left behind, so a stall fails the test instead of hanging it).
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what} did not finish within {secs} s"))
}

#[test]
fn an_absurd_size_returns_null_at_once_and_does_not_delay_other_threads() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Big blocks in the cache: the old lookup scanned every 1 MiB size between the request
    // and 1.25x it, under the lock, when anything was cached.
    let cached: Vec<_> = (1..=6)
        .map(|i| {
            // SAFETY: a valid layout; freed below with the same.
            let p = unsafe { Hakmem.alloc(layout(i * MIB)) };
            assert!(!p.is_null());
            (p, i * MIB)
        })
        .collect();
    for (p, size) in cached {
        // SAFETY: allocated above with this layout.
        unsafe { Hakmem.dealloc(p, layout(size)) };
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let other = std::thread::spawn(move || {
        let mut worst = Duration::ZERO;
        let mut n = 0;
        while !stop2.load(Ordering::Relaxed) || n < 20 {
            let t = Instant::now();
            // SAFETY: a valid layout; freed right after.
            unsafe {
                let p = Hakmem.alloc(layout(5 * MIB));
                assert!(!p.is_null());
                p.write(1);
                Hakmem.dealloc(p, layout(5 * MIB));
            }
            worst = worst.max(t.elapsed());
            n += 1;
        }
        worst
    });
    let slowest = within(10, "absurd requests", || {
        let mut slowest = Duration::ZERO;
        for i in 0..200usize {
            let size = (1usize << (47 + i % 16)) + i * 4096;
            let t = Instant::now();
            // SAFETY: a valid layout (size <= isize::MAX).
            let p = unsafe { Hakmem.alloc(layout(size)) };
            slowest = slowest.max(t.elapsed());
            assert!(p.is_null(), "2^{} bytes cannot be mapped", 47 + i % 16);
        }
        slowest
    });
    stop.store(true, Ordering::Relaxed);
    let worst = within(10, "the other thread", move || other.join().unwrap());
    // Generous bounds for a loaded 2-core machine (a preempted thread waits tens of ms); the
    // stalls these catch were seconds (a 2^47 request walked its size) or forever.
    assert!(slowest < Duration::from_millis(500), "a refusal took {slowest:?}");
    assert!(worst < Duration::from_millis(500), "another thread's 5 MiB alloc took {worst:?}");
}

/// Grows a buffer from 8 bytes to 64 MiB by doubling through `grow(p, old, new)`, checking and
/// extending its contents, and checks that it skipped the mid tier and the big tier never copied
/// it: out of the tiny tier into a big mapping with room to grow (a copy of 32 KiB), then 128 KiB..64 MiB (ten doublings)
/// grow in place or move their pages.
fn grow_to_64_mib(grow: impl Fn(*mut u8, usize, usize) -> *mut u8, free: impl Fn(*mut u8, usize)) {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = hakmem::stats().big;
    let mut size = 8;
    let mut p = grow(std::ptr::null_mut(), 0, size);
    assert!(!p.is_null());
    // SAFETY: `p` holds `size` bytes.
    unsafe { p.write_bytes(0xC3, size) };
    while size < 64 * MIB {
        let new = size * 2;
        p = grow(p, size, new);
        assert!(!p.is_null());
        // SAFETY: the first `size` bytes were kept; the block holds `new` bytes.
        unsafe {
            assert_eq!(p.read(), 0xC3);
            assert_eq!(p.add(size - 1).read(), 0xC3, "contents kept at {size} -> {new}");
            p.add(size).write_bytes(0xC3, new - size);
        }
        if new > 32 << 10 {
            assert_eq!(hakmem::tier_of(p as usize), Some("big"), "a {new}-byte growing buffer");
        }
        size = new;
    }
    let after = hakmem::stats().big;
    free(p, size);
    assert_eq!(after.realloc_copy - before.realloc_copy, 0, "no big block was copied");
    let moves = after.realloc_remap - before.realloc_remap;
    let in_place = after.realloc_in_place - before.realloc_in_place;
    assert!(moves <= 4 && in_place >= 5, "{moves} moves, {in_place} in place");
}

#[test]
fn a_buffer_grown_by_realloc_to_64_mib_is_copied_only_while_small() {
    grow_to_64_mib(
        |p, old, new| {
            if p.is_null() {
                // SAFETY: a valid layout.
                return unsafe { Hakmem.alloc(layout(new)) };
            }
            // SAFETY: `p` is live with `layout(old)`; the new size is valid.
            unsafe { Hakmem.realloc(p, layout(old), new) }
        },
        // SAFETY: live with this layout.
        |p, size| unsafe { Hakmem.dealloc(p, layout(size)) },
    );
}

#[test]
fn a_buffer_grown_by_c_realloc_to_64_mib_is_copied_only_while_small() {
    grow_to_64_mib(
        // SAFETY: `p` is null or live (returned by the previous call).
        |p, _, new| unsafe { hakmem::raw::realloc(p, new) },
        // SAFETY: live.
        |p, _| unsafe { hakmem::raw::free(p) },
    );
}

/// Resident bytes of this process (from /proc/self/statm).
fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

#[test]
fn big_buffers_written_at_both_ends_cost_pages_not_huge_pages() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A sparse phase first, one buffer at a time: whatever the other tests left the huge-page
    // policy believing (a dense 64 MiB buffer), it learns from these within a few blocks.
    for _ in 0..32 {
        // SAFETY: a valid layout; the block holds 8 MiB; freed right after.
        unsafe {
            let p = Hakmem.alloc(layout(8 * MIB));
            assert!(!p.is_null());
            p.write_bytes(1, 64);
            p.add(8 * MIB - 64).write_bytes(1, 64);
            Hakmem.dealloc(p, layout(8 * MIB));
        }
        hakmem::trim(); // so the next one is a fresh mapping
    }
    let start = rss();
    let blocks: Vec<*mut u8> = (0..16)
        .map(|_| {
            // SAFETY: a valid layout; the block holds 8 MiB.
            unsafe {
                let p = Hakmem.alloc(layout(8 * MIB));
                assert!(!p.is_null());
                p.write_bytes(1, 64);
                p.add(8 * MIB - 64).write_bytes(1, 64);
                p
            }
        })
        .collect();
    let grown = rss().saturating_sub(start);
    for p in blocks {
        // SAFETY: allocated above with this layout.
        unsafe { Hakmem.dealloc(p, layout(8 * MIB)) };
    }
    hakmem::trim();
    // Two pages (and a header page) per block, where huge pages would be 4 MiB per block.
    assert!(grown < 16 * 256 * 1024, "16 sparse 8 MiB buffers took {} KiB", grown >> 10);
}

#[test]
fn cached_big_blocks_are_unmapped_while_the_program_only_allocates_small_objects() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Big buffers filled and freed: the cache keeps them mapped (and resident) for reuse.
    let blocks: Vec<_> = (0..6)
        .map(|i| {
            let size = 3 * MIB + i * 4096;
            // SAFETY: a valid layout; written within its size; freed below.
            let p = unsafe { Hakmem.alloc(layout(size)) };
            assert!(!p.is_null());
            // SAFETY: `p` holds `size` bytes.
            unsafe { p.write_bytes(0x5C, size) };
            (p, size)
        })
        .collect();
    for (p, size) in blocks {
        // SAFETY: allocated above with this layout.
        unsafe { Hakmem.dealloc(p, layout(size)) };
    }
    assert!(hakmem::stats().big.cached_bytes > 0, "freed big blocks are cached");
    // From now on only small objects, for longer than the cache's TTL (2 s by default): the
    // small objects' slow paths must get the cached big blocks unmapped.
    let start = Instant::now();
    let mut v = Vec::with_capacity(2000);
    while hakmem::stats().big.cached_bytes > 0 && start.elapsed() < Duration::from_secs(6) {
        // SAFETY: a valid layout; each block is freed once with it.
        unsafe {
            v.extend((0..2000).map(|_| Hakmem.alloc(layout(200))));
            for p in v.drain(..) {
                assert!(!p.is_null());
                Hakmem.dealloc(p, layout(200));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let left = hakmem::stats().big.cached_bytes;
    assert_eq!(left, 0, "{left} bytes of big blocks still cached after {:?}", start.elapsed());
}
