//! [`Mid`]: the mid tier's shared state and its operations: the thread-cache fast paths, the
//! slow paths through the shards and the per-class central lists, memory return, statistics.
//!
//! Where a free block can be (each block is in exactly one place):
//! with a user | in a thread cache bin | in a shard batch | on its chunk's free list | uncarved.
//! Flows: alloc takes from the bin; an empty bin takes a batch from the thread's shard, else
//! `central_alloc` gathers up to `TC_CAP[c]` blocks from partial chunks (free list, then
//! carving; a new chunk from the empty cache or hak-os when none is left). dealloc pushes onto
//! the bin; a full bin goes to the shard as one batch, or, if the shard already holds
//! `SHARD_BATCHES[c]` of the class, back to the chunks (`central_free`).
//!
//! Memory return, in `central_free`: a chunk whose blocks all came back goes to the empty cache
//! (at most `max_empty_chunks`, default 4, and 16 MiB; beyond that unregistered and unmapped).
//! A returning block of at least [`DECOMMIT_MIN`] (64 KiB) has its pages past the first
//! decommitted (MADV_DONTNEED) while the committed bytes on chunk free lists exceed the
//! decommit budget (default [`DEFAULT_DECOMMIT_BUDGET`], 32 MiB). [`Mid::trim`] drains every
//! shard, unmaps every cached chunk and decommits every free block of at least 64 KiB.
//!
//! Statistics: counts that the fast path would have to touch (allocs, frees, bytes in use) live
//! in the thread cache and are folded in on slow paths; the rest are relaxed counters updated
//! on slow paths only.

use core::fmt;
use core::ptr::{self, NonNull};

use hak_registry::{OwnerKind, Registry, GRANULE};
use hak_sync::atomic::{AtomicUsize, Ordering};
use hak_sync::stat::{GaugeValue, StatCounter, StatGauge};
use hak_sync::Mutex;

use crate::block::{
    clear_mark, is_marked_free, mark_free, next, report_double_free, set_next, set_word, word,
    W_DECOMMITTED,
};
use crate::cache::{Bin, MidThreadCache};
use crate::chunk::{
    decommit_tail, Central, ChunkHeader, ChunkList, EmptyCache, DEFAULT_MAX_EMPTY_CHUNKS,
    MAX_EMPTY_BYTES, NO_CLASS,
};
use crate::class::{class_for, CHUNK_BYTES, CLASS_SIZE, NUM_CLASSES, SHARD_BATCHES, TC_CAP};
use crate::shard::Shards;

/// Free blocks at least this large (64 KiB) are decommitted past their first page when free
/// memory exceeds the budget.
pub const DECOMMIT_MIN: usize = 64 << 10;
/// Default decommit budget: committed bytes of free blocks on chunk free lists above which
/// returning blocks of at least [`DECOMMIT_MIN`] are decommitted (32 MiB: in a mix of 1 KiB..1 MiB
/// blocks, 8 MiB made every third free an madvise and cost 7x the throughput).
pub const DEFAULT_DECOMMIT_BUDGET: usize = 32 << 20;

/// A snapshot of a [`Mid`]'s statistics ([`Mid::stats`]). Allocation and free counts and bytes
/// in use include each thread cache's share as of its last slow path or flush.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MidStats {
    /// Blocks handed out.
    pub allocs: u64,
    /// Blocks taken back.
    pub frees: u64,
    /// Chunks mapped from hak-os.
    pub chunk_maps: u64,
    /// Chunks unmapped.
    pub chunk_unmaps: u64,
    /// Chunk mappings (or registrations) that failed.
    pub map_failures: u64,
    /// Chunks mapped now (in use or cached empty).
    pub chunks_live: u64,
    /// Empty chunks cached now.
    pub chunks_cached: u64,
    /// Shards in the current table (0 before first use).
    pub shard_count: u64,
    /// Times the shard table doubled.
    pub shard_growths: u64,
    /// Shard `try_lock`s that found the lock taken.
    pub try_lock_failures: u64,
    /// Bytes of chunks mapped (current, peak, total).
    pub bytes_mapped: GaugeValue,
    /// Bytes of blocks (class sizes) with users (current, peak, total).
    pub bytes_in_use: GaugeValue,
    /// Committed bytes of free blocks on chunk free lists now (what the budget limits).
    pub bytes_free_committed: u64,
    /// Bytes of free blocks decommitted now (current), at most (peak) and ever (total).
    pub bytes_decommitted: GaugeValue,
}

/// Relaxed statistics counters (slow paths only).
struct Counters {
    allocs: StatCounter,
    frees: StatCounter,
    chunk_maps: StatCounter,
    chunk_unmaps: StatCounter,
    map_failures: StatCounter,
    mapped: StatGauge,
    /// Folded per thread, so its decreases may run ahead of its increases (the gauge
    /// tolerates that).
    in_use: StatGauge,
    free_committed: StatGauge,
    decommitted: StatGauge,
}

impl Counters {
    const fn new() -> Counters {
        Counters {
            allocs: StatCounter::new(),
            frees: StatCounter::new(),
            chunk_maps: StatCounter::new(),
            chunk_unmaps: StatCounter::new(),
            map_failures: StatCounter::new(),
            mapped: StatGauge::new(),
            in_use: StatGauge::new(),
            free_committed: StatGauge::new(),
            decommitted: StatGauge::new(),
        }
    }
}

/// The mid tier: blocks of 2049 B ..= 1 MiB in 36 size classes, carved from registered chunks,
/// cached per thread in a [`MidThreadCache`] and shared through sharded free lists. See the
/// crate docs for the contract.
pub struct Mid<'r> {
    /// Where chunks are registered; its `os()` maps them.
    reg: &'r Registry<'r>,
    /// The sharded batch lists.
    shards: Shards,
    /// Per class: the partial chunks.
    central: [Mutex<Central>; NUM_CLASSES],
    /// Empty chunks kept for reuse.
    empty: Mutex<EmptyCache>,
    /// Every chunk mapped.
    all: Mutex<ChunkList>,
    /// Bytes; see [`DEFAULT_DECOMMIT_BUDGET`].
    decommit_budget: AtomicUsize,
    /// Empty chunks kept at most.
    max_empty_chunks: AtomicUsize,
    /// Statistics.
    st: Counters,
}

impl fmt::Debug for Mid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mid").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl<'r> Mid<'r> {
    /// A mid tier with no memory yet, mapping chunks through `reg.os()` and registering them
    /// in `reg`. Defaults: decommit budget 32 MiB, 4 empty chunks kept.
    #[cfg(not(hak_loom))]
    pub const fn new(reg: &'r Registry<'r>) -> Mid<'r> {
        Mid {
            reg,
            shards: Shards::new(),
            central: [const { Mutex::new(Central::EMPTY) }; NUM_CLASSES],
            empty: Mutex::new(EmptyCache::EMPTY),
            all: Mutex::new(ChunkList::EMPTY),
            decommit_budget: AtomicUsize::new(DEFAULT_DECOMMIT_BUDGET),
            max_empty_chunks: AtomicUsize::new(DEFAULT_MAX_EMPTY_CHUNKS),
            st: Counters::new(),
        }
    }

    /// A mid tier with no memory yet (loom build: not `const`).
    #[cfg(hak_loom)]
    pub fn new(reg: &'r Registry<'r>) -> Mid<'r> {
        Mid {
            reg,
            shards: Shards::new(),
            central: core::array::from_fn(|_| Mutex::new(Central::EMPTY)),
            empty: Mutex::new(EmptyCache::EMPTY),
            all: Mutex::new(ChunkList::EMPTY),
            decommit_budget: AtomicUsize::new(DEFAULT_DECOMMIT_BUDGET),
            max_empty_chunks: AtomicUsize::new(DEFAULT_MAX_EMPTY_CHUNKS),
            st: Counters::new(),
        }
    }

    /// Sets the decommit budget in bytes (0: decommit every returning block of at least
    /// 64 KiB; `usize::MAX`: never, except in [`Mid::trim`]).
    pub fn set_decommit_budget(&self, bytes: usize) {
        self.decommit_budget.store(bytes, Ordering::Relaxed);
    }

    /// Sets how many empty chunks are kept for reuse (0: unmap at once). Applies from the next
    /// chunk that empties.
    pub fn set_max_empty_chunks(&self, n: usize) {
        self.max_empty_chunks.store(n, Ordering::Relaxed);
    }

    /// Allocates a block for `size` bytes aligned to `align`, or `None` if the mid tier does
    /// not serve the pair (see [`can_serve`](crate::can_serve)) or the OS refused memory.
    ///
    /// The block is `block_size(size, align)` bytes, `align`-aligned, and uninitialised.
    /// A thread-cache hit takes no lock and no atomic read-modify-write.
    #[inline]
    pub fn alloc(&self, tc: &mut MidThreadCache, size: usize, align: usize) -> Option<NonNull<u8>> {
        let c = class_for(size, align)?;
        let bin = &mut tc.bins[c];
        if let Some(b) = NonNull::new(bin.head) {
            // SAFETY: `b` is a free block on this thread cache's list: ours to read and, as it
            // goes to the caller, to unmark.
            unsafe {
                bin.head = next(b.as_ptr());
                clear_mark(b.as_ptr());
            }
            hak_sync::check!(bin.count > 0, "thread cache count");
            bin.count = bin.count.wrapping_sub(1);
            tc.allocs += 1;
            tc.alloc_bytes += CLASS_SIZE[c] as u64;
            return Some(b);
        }
        self.alloc_slow(tc, c)
    }

    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, tc: &mut MidThreadCache, c: usize) -> Option<NonNull<u8>> {
        self.fold(tc);
        self.shards.seed(&mut tc.cursor);
        let (head, n) = match self.shards.pop(self.reg.os(), &mut tc.cursor, c) {
            Some(batch) => batch,
            None => self.central_alloc(c, TC_CAP[c] as usize)?,
        };
        // SAFETY: the batch (`n >= 1` blocks, null-terminated) is ours now; its head goes to
        // the caller.
        let rest = unsafe {
            clear_mark(head);
            next(head)
        };
        tc.bins[c] = Bin { head: rest, count: (n as u32).wrapping_sub(1) };
        tc.allocs += 1;
        tc.alloc_bytes += CLASS_SIZE[c] as u64;
        NonNull::new(head)
    }

    /// Frees a block.
    ///
    /// # Safety
    /// `ptr` came from [`Mid::alloc`] of this `Mid` with the same `(size, align)` (or with any
    /// pair whose [`block_size`](crate::block_size) is the same, e.g. `(usable_size, 1)`), and
    /// is not used afterwards. `tc` may belong to any thread.
    #[inline]
    pub unsafe fn dealloc(
        &self,
        tc: &mut MidThreadCache,
        ptr: NonNull<u8>,
        size: usize,
        align: usize,
    ) {
        let Some(c) = class_for(size, align) else {
            hak_sync::check!(false, "mid dealloc of a size it does not serve");
            return;
        };
        hak_sync::check!(
            // SAFETY: `ptr` is a mid block its user gave back (contract).
            unsafe { self.usable_size(ptr) } == Some(CLASS_SIZE[c]),
            "mid dealloc with a size of another class"
        );
        let b = ptr.as_ptr();
        // SAFETY: the block is ours again (contract): its first words are ours to read and
        // write. A block that already carries the free mark was freed before: linking it a
        // second time would hand it to two users, so the free is refused.
        unsafe {
            if is_marked_free(b) {
                report_double_free();
                return;
            }
            mark_free(b);
        }
        let bin = &mut tc.bins[c];
        if bin.count < TC_CAP[c] {
            // SAFETY: as above; its first word becomes the link.
            unsafe { set_next(b, bin.head) };
            bin.head = ptr.as_ptr();
            bin.count += 1;
            tc.frees += 1;
            tc.free_bytes += CLASS_SIZE[c] as u64;
            return;
        }
        // SAFETY: forwarded.
        unsafe { self.dealloc_slow(tc, c, b) }
    }

    /// # Safety
    /// `b` is a block of class `c` that is ours, marked free; `tc.bins[c]` is full.
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_slow(&self, tc: &mut MidThreadCache, c: usize, b: *mut u8) {
        self.fold(tc);
        self.shards.seed(&mut tc.cursor);
        let full = core::mem::replace(&mut tc.bins[c], Bin::EMPTY);
        if full.count > 0 {
            let n = full.count as usize;
            // SAFETY: the bin's list is ours; it becomes one batch.
            let pushed = unsafe {
                self.shards.push(self.reg.os(), &mut tc.cursor, c, full.head, n, SHARD_BATCHES[c])
            };
            if !pushed {
                // SAFETY: the shard refused, so the list is still ours.
                unsafe { self.central_free(c, full.head, n) };
            }
        }
        // SAFETY: `b` is ours (contract).
        unsafe { set_next(b, ptr::null_mut()) };
        tc.bins[c] = Bin { head: b, count: 1 };
        tc.frees += 1;
        tc.free_bytes += CLASS_SIZE[c] as u64;
    }

    /// The usable size (class size) of the mid block starting at `ptr`, found through the
    /// registry and the chunk header; `None` if `ptr` is in no mid chunk or is not the start of
    /// a block (a pointer into a block's middle). Lets the C ABI free without a size:
    /// `dealloc(tc, ptr, usable, 1)`.
    ///
    /// # Safety
    /// If `ptr` is in a mid chunk, it points into a block that is live (not freed).
    pub unsafe fn usable_size(&self, ptr: NonNull<u8>) -> Option<usize> {
        let h = self.chunk_of(ptr.as_ptr())?;
        // SAFETY: `h` is the header of a live chunk holding a live block, so its class fields
        // are fixed (see chunk.rs).
        unsafe {
            if (*h).class == NO_CLASS || !ChunkHeader::is_block_start(h, ptr.as_ptr() as usize) {
                return None;
            }
            Some((*h).block_size)
        }
    }

    /// The header of the registered mid chunk holding `addr`.
    fn chunk_of(&self, addr: *mut u8) -> Option<*mut ChunkHeader> {
        let owner = self.reg.lookup(addr as usize)?;
        if owner.kind != OwnerKind::Mid {
            return None;
        }
        // SAFETY: a region registered as Mid is one of our chunks (the facade shares one
        // registry among tiers, and only hak-l25 registers `Mid`), mapped while registered.
        unsafe { ChunkHeader::at(owner.base) }
    }

    /// Returns every block cached in `tc` (and the blocks in its shard) to the chunks, and
    /// folds its counters into the statistics. Call it at thread exit or on
    /// `flush_thread_cache()`; `tc` stays usable.
    pub fn flush_thread(&self, tc: &mut MidThreadCache) {
        self.fold(tc);
        for c in 0..NUM_CLASSES {
            let bin = core::mem::replace(&mut tc.bins[c], Bin::EMPTY);
            if bin.count > 0 {
                // SAFETY: the bin's blocks are ours.
                unsafe { self.central_free(c, bin.head, bin.count as usize) };
            }
        }
        self.shards.drain_own(&tc.cursor, |c, h, n| {
            // SAFETY: `drain_own` hands over batches it took under the shard lock.
            unsafe { self.central_free(c, h, n) }
        });
        self.shards.flush_cursor(&mut tc.cursor);
    }

    /// Returns memory now: drains every shard to the chunks, unmaps every cached empty chunk,
    /// and decommits every free block of at least 64 KiB. Blocks in thread caches stay.
    pub fn trim(&self) {
        self.shards.drain_all(|c, h, n| {
            // SAFETY: `drain_all` hands over batches it took under the shard locks.
            unsafe { self.central_free(c, h, n) }
        });
        loop {
            // SAFETY: we hold the cache lock for the call.
            let Some(h) = (unsafe { self.empty.lock().take_oldest() }) else { break };
            // SAFETY: `h` left the cache: an empty chunk on no list but the all-chunks list.
            unsafe { self.unmap_chunk(h) };
        }
        let os = self.reg.os();
        for (c, &s) in CLASS_SIZE.iter().enumerate() {
            if s < DECOMMIT_MIN {
                continue;
            }
            let g = self.central[c].lock();
            let mut h = g.first();
            while !h.is_null() {
                // SAFETY: `h` is on this class's partial list and we hold its lock.
                unsafe {
                    let d = ChunkHeader::decommit_free(h, os, DECOMMIT_MIN);
                    self.st.free_committed.decrease(d as u64);
                    self.st.decommitted.increase(d as u64);
                    h = Central::after(h);
                }
            }
        }
    }

    /// The statistics now.
    pub fn stats(&self) -> MidStats {
        let (cached, _) = {
            let e = self.empty.lock();
            (e.count, e.bytes)
        };
        MidStats {
            allocs: self.st.allocs.get(),
            frees: self.st.frees.get(),
            chunk_maps: self.st.chunk_maps.get(),
            chunk_unmaps: self.st.chunk_unmaps.get(),
            map_failures: self.st.map_failures.get(),
            chunks_live: self.all.lock().count as u64,
            chunks_cached: cached as u64,
            shard_count: self.shards.len() as u64,
            shard_growths: self.shards.growths(),
            try_lock_failures: self.shards.lock_failures(),
            bytes_mapped: self.st.mapped.get(),
            bytes_in_use: self.st.in_use.get(),
            bytes_free_committed: self.st.free_committed.get().current,
            bytes_decommitted: self.st.decommitted.get(),
        }
    }

    /// Folds `tc`'s counters into the statistics.
    fn fold(&self, tc: &mut MidThreadCache) {
        if tc.allocs > 0 {
            self.st.allocs.add(tc.allocs);
        }
        if tc.frees > 0 {
            self.st.frees.add(tc.frees);
        }
        // Frees first, so the peak is taken with this fold's frees already counted.
        if tc.free_bytes > 0 {
            self.st.in_use.decrease(tc.free_bytes);
        }
        if tc.alloc_bytes > 0 {
            self.st.in_use.increase(tc.alloc_bytes);
        }
        tc.allocs = 0;
        tc.frees = 0;
        tc.alloc_bytes = 0;
        tc.free_bytes = 0;
    }

    /// Gathers up to `want` blocks of class `c` from its chunks (mapping one if none has
    /// room): a null-terminated list and its length, or `None` if no block could be had.
    fn central_alloc(&self, c: usize, want: usize) -> Option<(*mut u8, usize)> {
        let mut g = self.central[c].lock();
        let mut head = ptr::null_mut();
        let mut n = 0;
        while n < want {
            let mut h = g.first();
            if h.is_null() {
                let Some(fresh) = self.chunk_for(c) else { break };
                // SAFETY: a fresh (or reassigned) chunk of class `c`, on no partial list; we
                // hold the class lock.
                unsafe { g.push(fresh) };
                h = fresh;
            }
            // SAFETY: `h` is on the partial list of class `c`, whose lock we hold.
            unsafe {
                let (k, committed, decommitted) = ChunkHeader::take(h, want - n, &mut head);
                n += k;
                self.st.free_committed.decrease(committed as u64);
                self.st.decommitted.decrease(decommitted as u64);
                if !ChunkHeader::has_room(h) {
                    g.remove(h);
                }
            }
        }
        drop(g);
        (n > 0).then_some((head, n))
    }

    /// An empty chunk assigned to class `c`: from the empty cache, else newly mapped and
    /// registered. Called with class `c`'s central lock held.
    fn chunk_for(&self, c: usize) -> Option<*mut ChunkHeader> {
        let bytes = CHUNK_BYTES[c];
        // SAFETY: we hold the cache lock for the call.
        if let Some(h) = unsafe { self.empty.lock().take(bytes) } {
            // SAFETY: a cached chunk is empty and on no list but the all-chunks list.
            unsafe { ChunkHeader::assign(h, c) };
            return Some(h);
        }
        let os = self.reg.os();
        let Ok(base) = os.map(bytes, GRANULE) else {
            self.st.map_failures.add(1);
            return None;
        };
        // SAFETY: a fresh mapping of `bytes >= CHUNK_HEADER` bytes nobody else has seen.
        let h = unsafe {
            let h = ChunkHeader::init(base, bytes);
            ChunkHeader::assign(h, c);
            h
        };
        if self.reg.register(base, bytes, OwnerKind::Mid).is_err() {
            // SAFETY: never registered nor shared: still all ours.
            let _ = unsafe { os.unmap(base, bytes) };
            self.st.map_failures.add(1);
            return None;
        }
        // SAFETY: a live chunk, not yet on the list; we hold its lock.
        unsafe { self.all.lock().push(h) };
        self.st.chunk_maps.add(1);
        self.st.mapped.increase(bytes as u64);
        Some(h)
    }

    /// Returns a list of `n` blocks of class `c` to their chunks, decommitting large ones
    /// while over budget and releasing chunks that become empty.
    ///
    /// # Safety
    /// `head` starts a null-terminated list (word 0) of `n` blocks of class `c` of this `Mid`
    /// that are the caller's.
    unsafe fn central_free(&self, c: usize, head: *mut u8, n: usize) {
        let s = CLASS_SIZE[c];
        let os = self.reg.os();
        // Pass 1, no lock: the blocks are still ours, so they can be decommitted safely.
        // Word 2 carries the bytes decommitted to pass 2. Both passes walk exactly `n` blocks,
        // so a list corrupted into a cycle cannot make them loop.
        let budget = self.decommit_budget.load(Ordering::Relaxed);
        let mut pending = self.st.free_committed.get().current as usize;
        let mut b = head;
        for _ in 0..n {
            if b.is_null() {
                hak_sync::check!(false, "mid list shorter than its count");
                break;
            }
            let mut d = 0;
            if s >= DECOMMIT_MIN {
                pending += s;
                if pending > budget {
                    // SAFETY: `b` is ours (contract).
                    d = unsafe { decommit_tail(os, b, s) };
                    pending -= d;
                }
            }
            // SAFETY: as above.
            unsafe {
                set_word(b, W_DECOMMITTED, d);
                b = next(b);
            }
        }
        hak_sync::check!(b.is_null(), "mid list longer than its count");
        // Pass 2, under the class lock.
        let mut g = self.central[c].lock();
        let mut last: *mut ChunkHeader = ptr::null_mut();
        let mut b = head;
        for _ in 0..n {
            if b.is_null() {
                break;
            }
            // SAFETY: `b` is ours until `put` hands it to its chunk; the chunk is live while
            // it has blocks out, and we hold its class lock.
            unsafe {
                let nb = next(b);
                let d = word(b, W_DECOMMITTED);
                // SAFETY: `last` is live: it had blocks out when we last saw it.
                let h = if !last.is_null() && ChunkHeader::contains(last, b as usize) {
                    last
                } else if let Some(h) = self.chunk_of(b) {
                    h
                } else {
                    hak_sync::check!(false, "mid block outside any mid chunk");
                    b = nb;
                    continue;
                };
                if (*h).class != c {
                    hak_sync::check!(false, "mid block on a list of another class");
                    b = nb;
                    continue;
                }
                let empty = ChunkHeader::put(h, b, d);
                self.st.free_committed.increase((s - d) as u64);
                if d > 0 {
                    self.st.decommitted.increase(d as u64);
                }
                if empty {
                    if (*h).in_partial {
                        g.remove(h);
                    }
                    self.release_chunk(h);
                    last = ptr::null_mut();
                } else {
                    if !(*h).in_partial {
                        g.push(h);
                    }
                    last = h;
                }
                b = nb;
            }
        }
    }

    /// Moves an empty chunk to the empty cache, unmapping what the cache cannot keep.
    ///
    /// # Safety
    /// `h` is empty (`used == 0`), on no partial list, and we hold its class's central lock.
    unsafe fn release_chunk(&self, h: *mut ChunkHeader) {
        // SAFETY: per the contract the header is ours.
        let (bytes, committed, decommitted) =
            unsafe { ((*h).bytes, (*h).free_committed, (*h).free_decommitted) };
        self.st.free_committed.decrease(committed as u64);
        self.st.decommitted.decrease(decommitted as u64);
        let max = self.max_empty_chunks.load(Ordering::Relaxed);
        if max == 0 || bytes > MAX_EMPTY_BYTES {
            // SAFETY: per the contract.
            unsafe { self.unmap_chunk(h) };
            return;
        }
        let mut cache = self.empty.lock();
        // SAFETY: per the contract; we hold the cache lock.
        unsafe { cache.push(h) };
        while cache.count > max || cache.bytes > MAX_EMPTY_BYTES {
            // SAFETY: we hold the cache lock; an evicted chunk is empty and listed nowhere
            // else but the all-chunks list.
            unsafe {
                let Some(old) = cache.take_oldest() else { break };
                self.unmap_chunk(old);
            }
        }
    }

    /// Unregisters and unmaps an empty chunk.
    ///
    /// # Safety
    /// `h` is empty and on no list but the all-chunks list; nobody references its blocks.
    unsafe fn unmap_chunk(&self, h: *mut ChunkHeader) {
        // SAFETY: per the contract.
        unsafe {
            let bytes = (*h).bytes;
            self.all.lock().remove(h);
            let base = NonNull::new_unchecked(h.cast::<u8>());
            self.reg.unregister(base, bytes);
            let _ = self.reg.os().unmap(base, bytes);
            self.st.chunk_unmaps.add(1);
            self.st.mapped.decrease(bytes as u64);
        }
    }

    /// Checks every partial chunk's invariants (tests).
    #[cfg(all(test, not(hak_loom)))]
    pub(crate) fn check_invariants(&self) {
        for c in 0..NUM_CLASSES {
            let g = self.central[c].lock();
            let mut h = g.first();
            while !h.is_null() {
                // SAFETY: on the partial list, under its lock.
                unsafe {
                    assert_eq!((*h).class, c);
                    ChunkHeader::check(h);
                    h = Central::after(h);
                }
            }
        }
    }

    /// The shard layer (tests).
    #[cfg(all(test, not(hak_loom)))]
    pub(crate) fn shards(&self) -> &Shards {
        &self.shards
    }
}

impl Drop for Mid<'_> {
    fn drop(&mut self) {
        let os = self.reg.os();
        // SAFETY: `&mut self`: no other thread uses this `Mid`.
        unsafe { self.shards.release(os) };
        loop {
            // SAFETY: we hold the list lock for the call.
            let Some(h) = (unsafe { self.all.lock().pop() }) else { break };
            // SAFETY: the `Mid` is going away with all its blocks (the owner's choice).
            unsafe {
                let bytes = (*h).bytes;
                let base = NonNull::new_unchecked(h.cast::<u8>());
                self.reg.unregister(base, bytes);
                let _ = os.unmap(base, bytes);
            }
        }
    }
}
