//! [`Mid`]: the mid tier's shared state and its operations: the thread-cache fast paths, the
//! slow paths through the shards and the per-class central lists, memory return, statistics.
//!
//! Where a free block can be (each block is in exactly one place):
//! with a user | in a thread cache bin | in a shard batch | on its chunk's dirty or clean list |
//! held by a purge in progress | uncarved.
//! Flows: alloc takes from the bin; an empty bin takes a batch from the thread's shard, else
//! `central_alloc` gathers up to the bin's capacity of blocks from partial chunks (dirty blocks, then
//! clean ones, then carving; a new chunk from the empty cache or hak-os when none is left).
//! dealloc pushes onto the bin; a full bin goes to the shard as one batch, or, if the shard
//! already holds `SHARD_BATCHES[c]` of the class, back to the chunks (`central_free`). Bin
//! capacities adapt (`cache.rs`), reviewed on one upkeep in sixteen.
//!
//! Memory return. Freed memory is returned when it has stayed unused for the purge delay
//! (default [`DEFAULT_PURGE_DELAY_NS`], 1 s), or at once when there is too much of it:
//! - *Decay* ([`Mid::decay`], run by the tier's own slow paths and by whoever else calls it,
//!   at most once per eighth of the delay): shards unused for the delay are drained to their
//!   chunks; chunks whose dirty blocks have waited for the delay have them purged (their pages
//!   past the first decommitted, `MADV_DONTNEED`; the blocks move to the clean list); empty
//!   chunks cached for the delay are unregistered and unmapped. Each step uses `try_lock` and
//!   skips what is busy (it is in use, so not idle).
//! - *Budget*: when the committed bytes of free blocks on chunk lists exceed the decommit
//!   budget (default [`DEFAULT_DECOMMIT_BUDGET`], 32 MiB), a `central_free` purges the oldest
//!   dirty chunks of its class until under budget (at most four chunks per call). Oldest
//!   first: the blocks just freed are the next to be reused, and purging those would only
//!   turn the reuse into page faults.
//! - The empty cache holds at most `max_empty_chunks` (default 4) chunks and 16 MiB.
//!
//! A purge detaches a chunk's dirty list under the class lock, decommits the blocks without
//! the lock, and puts them back on the clean list under the lock again; its blocks count as
//! out meanwhile, so the chunk cannot be released under it. Only classes of at least
//! [`DECOMMIT_MIN`] are purged (smaller blocks have too few whole pages; their memory returns
//! when their chunk empties). [`Mid::trim`] does everything at once, whatever the ages.
//!
//! Time: a coarse clock (`clock`, ns) that [`Mid::decay`] advances; slow paths stamp shards
//! and dirty chunks with it, so no fast or slow path reads the system clock except the one in
//! eight slow paths of a thread that calls `decay` itself.
//!
//! Statistics: counts that the fast path would have to touch (allocs, frees, bytes in use) live
//! in the thread cache and are folded in on one slow path in eight and on flushes (each fold
//! is a few atomic read-modify-writes on shared lines, which cost as much as the rest of a
//! slow path when every other operation is one); the rest are relaxed counters updated
//! on slow paths only.

use core::fmt;
use core::ptr::{self, NonNull};
use core::sync::atomic::AtomicU64;

use hak_registry::{OwnerKind, Registry, GRANULE};
use hak_sync::atomic::{AtomicUsize, Ordering};
use hak_sync::stat::{GaugeValue, StatCounter, StatGauge};
use hak_sync::{Mutex, MutexGuard};

use crate::block::{
    clear_mark, is_marked_free, mark_free, next, report_double_free, set_next, set_word, word,
    W_DECOMMITTED,
};
use crate::cache::{Bin, MidThreadCache};
use crate::chunk::{
    decommit_tail, Central, ChunkHeader, ChunkList, EmptyCache, DEFAULT_MAX_EMPTY_CHUNKS,
    MAX_EMPTY_BYTES, NO_CLASS,
};
use crate::class::{
    class_for, CHUNK_BYTES, CLASS_SIZE, NUM_CLASSES, SHARD_BATCHES, TC_CAP, TC_CEIL,
};
use crate::shard::Shards;

/// Blocks at least this large (16 KiB) are purged (decommitted past their first page) when
/// they stay free for the purge delay or free memory exceeds the budget.
pub const DECOMMIT_MIN: usize = 16 << 10;
/// Default decommit budget: committed bytes of free blocks on chunk lists above which the
/// oldest free blocks are purged at once, without waiting for the delay (32 MiB).
pub const DEFAULT_DECOMMIT_BUDGET: usize = 32 << 20;
/// Default purge delay: how long freed memory stays unused before it goes back to the OS
/// (1 s, as the shared pool's).
pub const DEFAULT_PURGE_DELAY_NS: u64 = 1_000_000_000;
/// Decay passes per purge delay: memory falls between one delay and 9/8 of it after its last
/// use.
const TICKS_PER_DELAY: u64 = 8;
/// Shortest time between decay passes (1 ms), also with a purge delay of 0.
const MIN_TICK_NS: u64 = 1_000_000;
/// A thread reads the clock (and may run a decay pass) once in this many of its slow paths,
/// and once in this many times that many allocations (the thread-cache hits included, so a
/// thread whose every request hits its cache still lets memory fall).
const CLOCK_EVERY: u32 = 8;
/// See [`CLOCK_EVERY`]: allocations between upkeeps (64).
const ALLOCS_EVERY: u64 = 8 * CLOCK_EVERY as u64;
/// A thread reviews its bins' capacities once in this many upkeeps (4 under Miri, whose
/// interpreter makes the tests' thousands of operations slow).
const REVIEW_EVERY: u32 = if cfg!(miri) { 4 } else { 16 };
/// Most chunks one `central_free` purges for the budget.
const BUDGET_PURGE_CHUNKS: usize = 4;
/// The first class that is purged.
const FIRST_PURGED: usize = {
    let mut c = 0;
    while CLASS_SIZE[c] < DECOMMIT_MIN {
        c += 1;
    }
    c
};

/// A snapshot of a [`Mid`]'s statistics ([`Mid::stats`]). Allocation and free counts and bytes
/// in use include each thread cache's share as of its last fold (one slow path in eight) or
/// flush.
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
    /// Chunk purges: for the delay (decay) and for the budget.
    pub purges_decay: u64,
    /// See `purges_decay`.
    pub purges_budget: u64,
    /// Decay passes run.
    pub decay_passes: u64,
    /// Bytes of chunks mapped (current, peak, total).
    pub bytes_mapped: GaugeValue,
    /// Bytes of blocks (class sizes) with users (current, peak, total).
    pub bytes_in_use: GaugeValue,
    /// Committed bytes of free blocks on chunk lists now (what the budget limits).
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
    purges_decay: StatCounter,
    purges_budget: StatCounter,
    decay_passes: StatCounter,
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
            purges_decay: StatCounter::new(),
            purges_budget: StatCounter::new(),
            decay_passes: StatCounter::new(),
            mapped: StatGauge::new(),
            in_use: StatGauge::new(),
            free_committed: StatGauge::new(),
            decommitted: StatGauge::new(),
        }
    }
}

/// Changes to the free-byte gauges, gathered over a batch and applied at once (each gauge
/// update is an atomic read-modify-write on a shared line).
#[derive(Default)]
struct Tally {
    committed_in: u64,
    committed_out: u64,
    decommitted_in: u64,
    decommitted_out: u64,
}

/// Which dirty chunks a purge takes, oldest first.
#[derive(Clone, Copy)]
enum Purge {
    /// Those whose dirty blocks came back at or before this time (decay).
    OlderThan(u64),
    /// Until the committed free bytes are within this budget.
    OverBudget(usize),
    /// All of them (trim).
    All,
}

/// The mid tier: blocks of up to 1 MiB in 36 size classes (2560 B ..= 1 MiB), carved from
/// registered chunks, cached per thread in a [`MidThreadCache`] and shared through sharded free
/// lists. See the crate docs for the contract.
pub struct Mid<'r> {
    /// Where chunks are registered; its `os()` maps them.
    reg: &'r Registry<'r>,
    /// The sharded batch lists.
    shards: Shards,
    /// Per class: the partial chunks and the dirty queue.
    central: [Mutex<Central>; NUM_CLASSES],
    /// Empty chunks kept for reuse.
    empty: Mutex<EmptyCache>,
    /// Every chunk mapped.
    all: Mutex<ChunkList>,
    /// Bytes; see [`DEFAULT_DECOMMIT_BUDGET`].
    decommit_budget: AtomicUsize,
    /// Empty chunks kept at most.
    max_empty_chunks: AtomicUsize,
    /// The coarse clock (ns), advanced by [`Mid::decay`]. Plain `core` atomics here and below:
    /// they order nothing (every hand-off goes through a lock), so the loom models need not
    /// see them.
    clock: AtomicU64,
    /// When the next decay pass is due (ns).
    next_tick: AtomicU64,
    /// See [`DEFAULT_PURGE_DELAY_NS`].
    purge_delay: AtomicU64,
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
    /// in `reg`. Defaults: decommit budget 32 MiB, 4 empty chunks kept, purge delay 1 s.
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
            clock: AtomicU64::new(0),
            next_tick: AtomicU64::new(0),
            purge_delay: AtomicU64::new(DEFAULT_PURGE_DELAY_NS),
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
            clock: AtomicU64::new(0),
            next_tick: AtomicU64::new(0),
            purge_delay: AtomicU64::new(DEFAULT_PURGE_DELAY_NS),
            st: Counters::new(),
        }
    }

    /// Sets the decommit budget in bytes (0: purge every block of at least [`DECOMMIT_MIN`]
    /// as it returns to its chunk; `usize::MAX`: only the delay and [`Mid::trim`] purge).
    pub fn set_decommit_budget(&self, bytes: usize) {
        self.decommit_budget.store(bytes, Ordering::Relaxed);
    }

    /// Sets how many empty chunks are kept for reuse (0: unmap at once). Applies from the next
    /// chunk that empties.
    pub fn set_max_empty_chunks(&self, n: usize) {
        self.max_empty_chunks.store(n, Ordering::Relaxed);
    }

    /// Sets the purge delay in nanoseconds: free memory unused for that long is returned by
    /// the next decay pass (`u64::MAX`: never, except for the budget and [`Mid::trim`]).
    pub fn set_purge_delay(&self, ns: u64) {
        self.purge_delay.store(ns, Ordering::Relaxed);
    }

    /// Advances the tier's clock to `now_ns` (`hak_os::monotonic_ns()`) and, if a decay pass
    /// is due (at most one per eighth of the purge delay, and one per millisecond), runs it
    /// on the calling thread: see the module docs. Cheap when none is due (two relaxed loads);
    /// the tier calls it from its own slow paths, and the facade may call it from others so
    /// that memory falls while a program allocates only in other tiers. Never blocks on a
    /// lock another thread holds for long: every lock is tried, and skipped when busy.
    pub fn decay(&self, now_ns: u64) {
        if now_ns > self.clock.load(Ordering::Relaxed) {
            self.clock.store(now_ns, Ordering::Relaxed);
        }
        let due = self.next_tick.load(Ordering::Relaxed);
        if now_ns < due {
            return;
        }
        let delay = self.purge_delay.load(Ordering::Relaxed);
        let tick = (delay / TICKS_PER_DELAY).max(MIN_TICK_NS);
        if self
            .next_tick
            .compare_exchange(
                due,
                now_ns.saturating_add(tick),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return; // another thread runs this pass
        }
        if delay == u64::MAX {
            return;
        }
        self.decay_pass(now_ns.saturating_sub(delay));
    }

    /// One decay pass: returns what was last used at or before `older_than`.
    #[cold]
    fn decay_pass(&self, older_than: u64) {
        self.st.decay_passes.add(1);
        self.shards.drain_idle(older_than, |c, h, n, since| {
            // SAFETY: `drain_idle` hands over batches it took under the shard lock.
            unsafe { self.central_free(c, h, n, since) }
        });
        for c in FIRST_PURGED..NUM_CLASSES {
            let Some(g) = self.central[c].try_lock() else { continue };
            drop(self.purge(c, g, usize::MAX, Purge::OlderThan(older_than)));
        }
        loop {
            let Some(mut cache) = self.empty.try_lock() else { break };
            // SAFETY: we hold the cache lock.
            let Some(h) = (unsafe { cache.take_oldest(older_than) }) else { break };
            drop(cache);
            // SAFETY: `h` left the cache: an empty chunk on no list but the all-chunks list.
            unsafe { self.unmap_chunk(h) };
        }
    }

    /// The coarse time now.
    #[inline]
    fn now(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    /// Slow-path upkeep: one in [`CLOCK_EVERY`] slow paths of a thread, its first one
    /// included (so nothing it frees is stamped with a clock that never ran), folds its
    /// counters into the statistics, reads the clock and gives [`Mid::decay`] a chance.
    #[inline]
    fn upkeep(&self, tc: &mut MidThreadCache) {
        if tc.slow_ops.is_multiple_of(CLOCK_EVERY) || tc.allocs >= ALLOCS_EVERY {
            self.upkeep_now(tc);
        }
        tc.slow_ops = tc.slow_ops.wrapping_add(1);
    }

    /// Folds `tc`'s counters and runs [`Mid::decay`] with the time now.
    #[cold]
    #[inline(never)]
    fn upkeep_now(&self, tc: &mut MidThreadCache) {
        self.fold(tc);
        self.decay(hak_os::monotonic_ns());
        tc.upkeeps = tc.upkeeps.wrapping_add(1);
        if tc.upkeeps.is_multiple_of(REVIEW_EVERY) {
            self.review(tc);
        }
    }

    /// Applies a batch's changes to the free-byte gauges (decreases first, so the peaks are
    /// not inflated).
    fn apply(&self, t: &mut Tally) {
        if t.committed_out > 0 {
            self.st.free_committed.decrease(t.committed_out);
        }
        if t.decommitted_out > 0 {
            self.st.decommitted.decrease(t.decommitted_out);
        }
        if t.committed_in > 0 {
            self.st.free_committed.increase(t.committed_in);
        }
        if t.decommitted_in > 0 {
            self.st.decommitted.increase(t.decommitted_in);
        }
        *t = Tally::default();
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
            if bin.count < u32::from(bin.low) {
                bin.low = bin.count as u16;
            }
            tc.allocs += 1;
            tc.alloc_bytes += CLASS_SIZE[c] as u64;
            if tc.allocs >= ALLOCS_EVERY {
                self.upkeep_now(tc);
            }
            return Some(b);
        }
        self.alloc_slow(tc, c)
    }

    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, tc: &mut MidThreadCache, c: usize) -> Option<NonNull<u8>> {
        self.upkeep(tc);
        self.shards.seed(&mut tc.cursor);
        let cap = tc.bins[c].cap_or(TC_CAP[c]);
        let (head, n) = match self.shards.pop(self.reg.os(), &mut tc.cursor, c, self.now()) {
            Some(batch) => batch,
            None => self.central_alloc(c, cap as usize)?,
        };
        // SAFETY: the batch (`n >= 1` blocks, null-terminated) is ours now; its head goes to
        // the caller.
        let rest = unsafe {
            clear_mark(head);
            next(head)
        };
        let bin = &mut tc.bins[c];
        hak_sync::check!(n as u32 <= TC_CEIL[c], "a batch larger than any bin");
        bin.head = rest;
        bin.count = (n as u32).wrapping_sub(1);
        bin.cap = cap;
        bin.low = 0;
        bin.refills = bin.refills.saturating_add(1);
        tc.allocs += 1;
        tc.alloc_bytes += CLASS_SIZE[c] as u64;
        NonNull::new(head)
    }

    /// Frees a block. A block already free (its free mark set: see `block.rs`) is reported on
    /// stderr and left alone.
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
        if bin.count < u32::from(bin.cap) {
            // SAFETY: as above; its first word becomes the link.
            unsafe { set_next(b, bin.head) };
            bin.head = b;
            bin.count += 1;
            tc.frees += 1;
            tc.free_bytes += CLASS_SIZE[c] as u64;
            return;
        }
        // SAFETY: forwarded.
        unsafe { self.dealloc_slow(tc, c, b) }
    }

    /// # Safety
    /// `b` is a block of class `c` that is ours, marked free; `tc.bins[c]` is full (or not
    /// used yet: `cap == 0`).
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_slow(&self, tc: &mut MidThreadCache, c: usize, b: *mut u8) {
        self.upkeep(tc);
        self.shards.seed(&mut tc.cursor);
        let bin = &mut tc.bins[c];
        if bin.cap == 0 {
            bin.cap = TC_CAP[c] as u16;
        }
        if bin.count >= u32::from(bin.cap) {
            let (head, n) = (bin.head, bin.count as usize);
            bin.head = ptr::null_mut();
            bin.count = 0;
            bin.low = 0;
            bin.spills = bin.spills.saturating_add(1);
            // SAFETY: the bin's list (`n >= 1` blocks: `cap >= 1`) is ours.
            unsafe { self.spill(tc, c, head, n, true) };
        }
        let bin = &mut tc.bins[c];
        // SAFETY: `b` is ours (contract).
        unsafe { set_next(b, bin.head) };
        bin.head = b;
        bin.count += 1;
        tc.frees += 1;
        tc.free_bytes += CLASS_SIZE[c] as u64;
    }

    /// Hands a list of `n >= 1` blocks of class `c` out of a thread cache: to the thread's
    /// shard as one batch if `to_shard` and it has room, else back to the chunks.
    ///
    /// # Safety
    /// `head` starts a null-terminated list of `n` free blocks of class `c` that are ours.
    unsafe fn spill(
        &self,
        tc: &mut MidThreadCache,
        c: usize,
        head: *mut u8,
        n: usize,
        to_shard: bool,
    ) {
        let now = self.now();
        // SAFETY: the list is ours (contract); it becomes one batch.
        let pushed = to_shard
            && unsafe {
                self.shards.push(self.reg.os(), &mut tc.cursor, c, head, n, SHARD_BATCHES[c], now)
            };
        if !pushed {
            // SAFETY: not pushed, so the list is still ours.
            unsafe { self.central_free(c, head, n, now) };
        }
    }

    /// Reviews every bin's capacity (see `cache.rs`): a bin's capacity shrinks by its
    /// low-water mark (blocks it never needed since the last review) and half of those blocks
    /// (rounded up) go back to the chunks; a bin that both ran empty and overflowed doubles its
    /// capacity.
    #[cold]
    fn review(&self, tc: &mut MidThreadCache) {
        for (c, &ceil) in TC_CEIL.iter().enumerate() {
            let bin = &mut tc.bins[c];
            if bin.cap == 0 {
                continue;
            }
            let unused = u32::from(bin.low).min(bin.count);
            if unused > 0 {
                let k = unused.div_ceil(2);
                let head = bin.head;
                let mut last = head;
                // SAFETY: the bin's list is ours and holds `count >= k` blocks.
                unsafe {
                    for _ in 1..k {
                        last = next(last);
                    }
                    bin.head = next(last);
                    set_next(last, ptr::null_mut());
                }
                bin.count -= k;
                bin.cap = bin.cap.saturating_sub(unused as u16).max(1);
                // SAFETY: the `k` blocks just cut off the bin are ours; cold, so to the chunks.
                unsafe { self.spill(tc, c, head, k as usize, true) };
            } else if bin.refills > 0 && bin.spills > 0 {
                bin.cap = bin.cap.saturating_mul(2).min(ceil as u16);
            }
            let bin = &mut tc.bins[c];
            bin.low = bin.count as u16;
            bin.refills = 0;
            bin.spills = 0;
        }
    }

    /// Whether a live block allocated for `(old_size, align)` can serve `new_size` in place,
    /// i.e. `new_size` (with `align`) has the block's size class; the caller then keeps the
    /// pointer and frees it later with `new_size`. Otherwise (another class, or a size this
    /// tier does not serve) the caller must move the block: a class is a fixed block size in
    /// a chunk of equal blocks, so a block has no neighbour to grow into, and shrinking into a
    /// smaller class in place would leave a block that a free with the smaller size puts on the
    /// wrong list. Reads nothing but the sizes: O(1), no lock.
    ///
    /// Routing for the facade (Vec-style growth through the mid range copies at every class
    /// step here, four steps per doubling at most): keep in-place resizes here; for a growth to
    /// another class, a tier whose blocks can grow without a copy (remapping pages, or
    /// address space reserved past the block) is the better destination once the block is
    /// large, because every later growth is then free, where here each one costs a copy of the
    /// whole block.
    #[inline]
    pub fn realloc_in_place(&self, old_size: usize, align: usize, new_size: usize) -> bool {
        match (class_for(old_size, align), class_for(new_size, align)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
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
            if (*h).class == NO_CLASS || !ChunkHeader::is_block_start(h, ptr.as_ptr().addr()) {
                return None;
            }
            Some((*h).block_size)
        }
    }

    /// The header of the registered mid chunk holding `addr`.
    fn chunk_of(&self, addr: *mut u8) -> Option<*mut ChunkHeader> {
        let owner = self.reg.lookup(addr.addr())?;
        if owner.kind != OwnerKind::Mid {
            return None;
        }
        // SAFETY: a region registered as Mid is one of our chunks (the facade shares one
        // registry among tiers, and only hak-l25 registers `Mid`), mapped while registered;
        // the registry hands back the base pointer the chunk was registered with.
        unsafe { ChunkHeader::at(owner.base) }
    }

    /// Returns every block cached in `tc` (and the blocks in its shard) to the chunks, and
    /// folds its counters into the statistics. Call it at thread exit or on
    /// `flush_thread_cache()`; `tc` stays usable.
    pub fn flush_thread(&self, tc: &mut MidThreadCache) {
        self.fold(tc);
        let now = self.now();
        for c in 0..NUM_CLASSES {
            let bin = core::mem::replace(&mut tc.bins[c], Bin::EMPTY);
            tc.bins[c].cap = bin.cap;
            if bin.count > 0 {
                // SAFETY: the bin's blocks are ours.
                unsafe { self.central_free(c, bin.head, bin.count as usize, now) };
            }
        }
        self.shards.drain_own(&tc.cursor, |c, h, n| {
            // SAFETY: `drain_own` hands over batches it took under the shard lock.
            unsafe { self.central_free(c, h, n, now) }
        });
        self.shards.flush_cursor(&mut tc.cursor);
    }

    /// Returns memory now: drains every shard to the chunks, purges every free block of at
    /// least [`DECOMMIT_MIN`] and unmaps every cached empty chunk. Blocks in thread caches
    /// stay.
    pub fn trim(&self) {
        let now = self.now();
        self.shards.drain_all(|c, h, n| {
            // SAFETY: `drain_all` hands over batches it took under the shard locks.
            unsafe { self.central_free(c, h, n, now) }
        });
        for c in FIRST_PURGED..NUM_CLASSES {
            drop(self.purge(c, self.central[c].lock(), usize::MAX, Purge::All));
        }
        loop {
            // SAFETY: we hold the cache lock for the call.
            let Some(h) = (unsafe { self.empty.lock().take_oldest(u64::MAX) }) else { break };
            // SAFETY: `h` left the cache: an empty chunk on no list but the all-chunks list.
            unsafe { self.unmap_chunk(h) };
        }
    }

    /// The statistics now.
    pub fn stats(&self) -> MidStats {
        let cached = self.empty.lock().count;
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
            purges_decay: self.st.purges_decay.get(),
            purges_budget: self.st.purges_budget.get(),
            decay_passes: self.st.decay_passes.get(),
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
        let mut tally = Tally::default();
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
                tally.committed_out += committed as u64;
                tally.decommitted_out += decommitted as u64;
                if (*h).dirty_count == 0 {
                    g.unqueue_dirty(h);
                }
                if !ChunkHeader::has_room(h) {
                    g.remove(h);
                }
            }
        }
        drop(g);
        self.apply(&mut tally);
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

    /// Returns a list of `n` blocks of class `c`, freed at (coarse) time `since`, to their
    /// chunks' dirty lists, releasing chunks that become empty; then purges the class's oldest
    /// dirty chunks while free memory is over the budget.
    ///
    /// # Safety
    /// `head` starts a null-terminated list (word 0) of `n` blocks of class `c` of this `Mid`
    /// that are the caller's.
    unsafe fn central_free(&self, c: usize, head: *mut u8, n: usize, since: u64) {
        let mut tally = Tally::default();
        let mut g = self.central[c].lock();
        let mut last: *mut ChunkHeader = ptr::null_mut();
        let mut b = head;
        // Exactly `n` steps: a list corrupted into a cycle cannot make this loop.
        for _ in 0..n {
            if b.is_null() {
                hak_sync::check!(false, "mid list shorter than its count");
                break;
            }
            // SAFETY: `b` is ours until `put_back` hands it to its chunk; the chunk is live
            // while it has blocks out, and we hold its class lock.
            unsafe {
                let nb = next(b);
                // `last` is live: it had blocks out when we last saw it.
                let h = if !last.is_null() && ChunkHeader::contains(last, b.addr()) {
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
                let released = self.put_back(&mut g, c, h, b, None, since, &mut tally);
                last = if released { ptr::null_mut() } else { h };
                b = nb;
            }
        }
        hak_sync::check!(b.is_null(), "mid list longer than its count");
        self.apply(&mut tally);
        let budget = self.effective_budget();
        if c >= FIRST_PURGED && self.st.free_committed.get().current > budget as u64 {
            drop(self.purge(c, g, BUDGET_PURGE_CHUNKS, Purge::OverBudget(budget)));
        }
    }

    /// The budget now: the configured one, or the bytes in use if more. Free memory is
    /// counted by class size, as if every page of a free block were resident, which is what a
    /// program that writes its blocks whole makes of it; one that writes only parts of them
    /// leaves most of those pages untouched, and a fixed budget then purged, and refaulted,
    /// memory that was never there (the `mid_mixed` row spent 55% of its time in page faults
    /// and 22% in madvise). Scaling with the heap keeps free memory at most the memory in use
    /// (plus the floor) while a steady heap's free blocks stay.
    fn effective_budget(&self) -> usize {
        let floor = self.decommit_budget.load(Ordering::Relaxed);
        floor.saturating_add(self.st.in_use.get().current as usize / 2)
    }

    /// Puts block `b` back on chunk `h` of class `c`: on the clean list with `purged =
    /// Some(bytes decommitted)`, else on the dirty list (and, if the chunk had no dirty
    /// block, it joins the dirty queue stamped `since`); a chunk that had no room joins the
    /// partial list.
    /// Releases the chunk if it empties; returns whether it did. Gauge changes go to `t`.
    ///
    /// # Safety
    /// `g` is class `c`'s central lock; `h` is a live chunk of class `c` and `b` one of its
    /// blocks that was out and is the caller's.
    #[allow(clippy::too_many_arguments)]
    unsafe fn put_back(
        &self,
        g: &mut MutexGuard<'_, Central>,
        c: usize,
        h: *mut ChunkHeader,
        b: *mut u8,
        purged: Option<usize>,
        since: u64,
        t: &mut Tally,
    ) -> bool {
        let s = CLASS_SIZE[c];
        let d = purged.unwrap_or(0);
        // SAFETY: per the contract.
        unsafe {
            let empty = ChunkHeader::put(h, b, purged.is_some(), d);
            t.committed_in += (s - d) as u64;
            t.decommitted_in += d as u64;
            if empty {
                if (*h).in_partial {
                    g.remove(h);
                }
                g.unqueue_dirty(h);
                self.release_chunk(h, since, t);
                return true;
            }
            if purged.is_some() {
                if !(*h).in_partial {
                    g.push(h);
                }
            } else {
                if !(*h).in_partial {
                    g.push(h);
                }
                if !(*h).in_dirty && c >= FIRST_PURGED {
                    g.queue_dirty(h, since);
                }
            }
        }
        false
    }

    /// Purges dirty chunks of class `c`, oldest first, while `which` says so, at most `max`
    /// chunks: each one's dirty blocks are detached under the lock, decommitted past their
    /// first page without it, and put back on the clean list under it again. Takes the
    /// class's guard and gives it back (re-taken).
    fn purge<'a>(
        &'a self,
        c: usize,
        mut g: MutexGuard<'a, Central>,
        max: usize,
        which: Purge,
    ) -> MutexGuard<'a, Central> {
        let s = CLASS_SIZE[c];
        let os = self.reg.os();
        let mut tally = Tally::default();
        for _ in 0..max {
            let h = g.oldest_dirty();
            if h.is_null() {
                break;
            }
            let go = match which {
                // SAFETY: a queued chunk is live; we hold its class lock.
                Purge::OlderThan(t) => (unsafe { (*h).since }) <= t,
                Purge::OverBudget(budget) => self.st.free_committed.get().current > budget as u64,
                Purge::All => true,
            };
            if !go {
                break;
            }
            // SAFETY: `h` is a live chunk of class `c` and we hold the class lock. It keeps
            // its place on the partial list even if it has no room left while its blocks are
            // out (`central_alloc` takes nothing from it then and drops it): put back
            // at the head, its clean blocks would be taken before other chunks' resident
            // ones.
            let (list, k) = unsafe {
                let taken = ChunkHeader::take_dirty(h);
                g.unqueue_dirty(h);
                taken
            };
            tally.committed_out += (k * s) as u64;
            drop(g);
            let mut b = list;
            for _ in 0..k {
                if b.is_null() {
                    break;
                }
                // SAFETY: the detached blocks are ours until put back: nobody else can reach
                // them, and their chunk cannot be released (they count as out).
                unsafe {
                    let d = decommit_tail(os, b, s);
                    set_word(b, W_DECOMMITTED, d);
                    b = next(b);
                }
            }
            g = self.central[c].lock();
            let mut b = list;
            for _ in 0..k {
                if b.is_null() {
                    break;
                }
                // SAFETY: as above; `h` is live (its blocks were out until this put).
                unsafe {
                    let nb = next(b);
                    let d = word(b, W_DECOMMITTED);
                    self.put_back(&mut g, c, h, b, Some(d), 0, &mut tally);
                    b = nb;
                }
            }
            self.apply(&mut tally);
            match which {
                Purge::OverBudget(_) => self.st.purges_budget.add(1),
                _ => self.st.purges_decay.add(1),
            }
        }
        g
    }

    /// Moves an empty chunk, whose last block came back at `since`, to the empty cache,
    /// unmapping what the cache cannot keep. Gauge changes go to `t`.
    ///
    /// # Safety
    /// `h` is empty (`used == 0`), on no partial list or dirty queue, and we hold its class's
    /// central lock.
    unsafe fn release_chunk(&self, h: *mut ChunkHeader, since: u64, t: &mut Tally) {
        // SAFETY: per the contract the header is ours.
        let (bytes, committed, decommitted) =
            unsafe { ((*h).bytes, (*h).free_committed, (*h).free_decommitted) };
        t.committed_out += committed as u64;
        t.decommitted_out += decommitted as u64;
        let max = self.max_empty_chunks.load(Ordering::Relaxed);
        if max == 0 || bytes > MAX_EMPTY_BYTES {
            // SAFETY: per the contract.
            unsafe { self.unmap_chunk(h) };
            return;
        }
        let mut cache = self.empty.lock();
        // SAFETY: per the contract; we hold the cache lock.
        unsafe { cache.push(h, since) };
        while cache.count > max || cache.bytes > MAX_EMPTY_BYTES {
            // SAFETY: we hold the cache lock; an evicted chunk is empty and listed nowhere
            // else but the all-chunks list.
            unsafe {
                let Some(old) = cache.take_oldest(u64::MAX) else { break };
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

    /// Takes every lock of the tier for `fork()` (see the crate docs for the order), so that
    /// the child, in which only the forking thread exists, finds none of them held by a
    /// thread that is gone. Pair with [`Mid::postfork`] in the parent and in the child.
    #[cfg(not(hak_loom))]
    pub fn prefork(&self) {
        self.shards.prefork();
        for m in &self.central {
            m.fork_lock();
        }
        self.empty.fork_lock();
        self.all.fork_lock();
    }

    /// Releases what [`Mid::prefork`] took, in reverse order; call it in the parent and in the
    /// child after `fork()`.
    ///
    /// # Safety
    /// The calling thread ran `prefork` (or is the child of the thread that did), and has not
    /// released those locks since.
    #[cfg(not(hak_loom))]
    pub unsafe fn postfork(&self) {
        // SAFETY: `prefork` took each of these and no guard of them exists (contract).
        unsafe {
            self.all.fork_unlock();
            self.empty.fork_unlock();
            for m in self.central.iter().rev() {
                m.fork_unlock();
            }
            self.shards.postfork();
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

    /// Counts the tier's locks that are held and free now, by trying each (tests).
    #[cfg(all(test, not(hak_loom)))]
    pub(crate) fn lock_states(&self) -> (usize, usize) {
        let (mut held, mut free) = self.shards.lock_states();
        let mut count = |is_free: bool| {
            if is_free {
                free += 1;
            } else {
                held += 1;
            }
        };
        for m in &self.central {
            count(m.try_lock().is_some());
        }
        count(self.empty.try_lock().is_some());
        count(self.all.try_lock().is_some());
        (held, free)
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
