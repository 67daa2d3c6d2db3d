//! A cache of freed I/O buffers on hak-collections: buffers are raw allocations whose first
//! bytes are their own bookkeeping (links, length, when they were cached), kept for reuse under
//! count, byte and age limits, and freed when a limit evicts them.
//!
//! It shows the two containers together: a `RegionCache` for the LRU and its limits, and a
//! second `List` per buffer size through a second set of links, so a request finds a buffer of
//! its size without walking the LRU. The same shapes hold hakmem's big blocks (bins by size
//! plus an LRU) and empty SuperSlabs.
//!
//! Run: `cargo run -p hak-collections --example buffer_cache`

use std::alloc::{alloc, dealloc, Layout};
use std::time::Instant;

use hak_collections::{Limits, Links, List, RegionCache};

/// A buffer's header, at its start.
struct Header {
    /// Place in the LRU (the region cache's list).
    lru: Links<*mut Header>,
    /// Place in the list of cached buffers of its size.
    by_size: Links<*mut Header>,
    /// Bytes of the whole buffer, header included.
    len: usize,
    /// When it was cached (nanoseconds since the cache's start).
    cached_at: u64,
}

// SAFETY: `lru` is the LRU's alone (and its victims list's once out of it), `len` is fixed for
// the buffer's life, and only the region cache writes `cached_at`.
hak_collections::adapter! {
    /// A buffer's place in the LRU.
    unsafe struct Lru for Header { links: lru, bytes: len, stamp: cached_at }
}
// SAFETY: `by_size` is the size lists' alone; a buffer is on one size list at most.
hak_collections::adapter! {
    /// A buffer's place among the cached buffers of its size.
    unsafe struct BySize for Header { links: by_size }
}

/// Buffer sizes served (header included): 4 KiB, 16 KiB, 64 KiB.
const SIZES: [usize; 3] = [4 << 10, 16 << 10, 64 << 10];

struct BufferCache {
    lru: RegionCache<Lru>,
    by_size: [List<BySize>; SIZES.len()],
    limits: Limits,
    start: Instant,
    /// Buffers allocated from the system, and freed back to it.
    allocated: usize,
    freed: usize,
}

fn layout(len: usize) -> Layout {
    Layout::from_size_align(len, 64).unwrap()
}

impl BufferCache {
    fn new(limits: Limits) -> BufferCache {
        BufferCache {
            lru: RegionCache::new(),
            by_size: [List::new(), List::new(), List::new()],
            limits,
            start: Instant::now(),
            allocated: 0,
            freed: 0,
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// A buffer of `SIZES[class]` bytes: the newest cached one of that size, or a new one.
    fn get(&mut self, class: usize) -> *mut Header {
        // SAFETY: every cached buffer is a live allocation of ours, on both lists.
        if let Some(h) = unsafe { self.by_size[class].pop_front() } {
            // SAFETY: as above; it was in the LRU too.
            unsafe { self.lru.remove(h) };
            return h;
        }
        let len = SIZES[class];
        // SAFETY: a non-zero size.
        let h = unsafe { alloc(layout(len)) }.cast::<Header>();
        assert!(!h.is_null());
        // SAFETY: fresh, large enough for the header.
        unsafe { h.write(Header { lru: Links::new(), by_size: Links::new(), len, cached_at: 0 }) };
        self.allocated += 1;
        h
    }

    /// Takes `h` back; evicts what the limits exclude.
    fn put(&mut self, h: *mut Header) {
        let now = self.now();
        // SAFETY: `h` came from `get` and is on no list.
        unsafe {
            let class = SIZES.iter().position(|&s| s == (*h).len).unwrap();
            self.by_size[class].push_front(h);
            self.lru.push(h, now);
        }
        self.evict(now);
    }

    /// Frees every buffer the limits exclude at `now`, oldest first.
    fn evict(&mut self, now: u64) {
        // SAFETY: cached buffers are live; victims are off the LRU and still on their size
        // list, which they leave before being freed.
        unsafe {
            let mut victims = self.lru.evict(now, &self.limits);
            while let Some(v) = victims.pop_front() {
                let class = SIZES.iter().position(|&s| s == (*v).len).unwrap();
                self.by_size[class].remove(v);
                dealloc(v.cast(), layout((*v).len));
                self.freed += 1;
            }
        }
    }
}

fn main() {
    let limits = Limits { max_count: 8, max_bytes: 256 << 10, ttl_ns: 50_000_000 };
    let mut c = BufferCache::new(limits);

    // A request loop: take a few buffers of mixed sizes, use them, give them back.
    for round in 0..1000usize {
        let held: Vec<*mut Header> = (0..4).map(|i| c.get((round + i) % SIZES.len())).collect();
        for &h in &held {
            // Use the buffer past its header.
            // SAFETY: the buffer is ours and longer than the header.
            unsafe { h.cast::<u8>().add(size_of::<Header>()).write_bytes(round as u8, 64) };
        }
        held.into_iter().for_each(|h| c.put(h));
    }
    // Reuse: four buffers live at a time, so the cache keeps the system allocations few.
    assert!(c.allocated <= 8, "{} buffers allocated for 4000 requests", c.allocated);
    assert!(c.lru.count() <= limits.max_count && c.lru.bytes() <= limits.max_bytes);
    // SAFETY: every cached buffer is live.
    assert!(unsafe { c.lru.is_consistent() });
    println!(
        "4000 requests: {} buffers allocated, {} cached ({} KiB)",
        c.allocated,
        c.lru.count(),
        c.lru.bytes() >> 10
    );

    // Age: after the TTL, the next eviction frees everything cached.
    std::thread::sleep(std::time::Duration::from_millis(60));
    let now = c.now();
    c.evict(now);
    assert_eq!(c.lru.count(), 0);
    assert!(c.by_size.iter().all(|l| l.is_empty()));
    assert_eq!(c.freed, c.allocated, "every buffer went back to the system");
    println!("after {} ms idle: all {} buffers freed", limits.ttl_ns / 1_000_000 + 10, c.freed);
}
