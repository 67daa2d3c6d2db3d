//! [`Mid`]: the mid tier's shared state and its operations: the thread-cache fast paths, the
//! slow paths through the shards and the per-class central lists, memory return, statistics.
//!
//! This module holds the type, its construction and settings, the size queries, the fork
//! handlers and the test hooks; the operations live in submodules, one concept each: `front`
//! (the thread-cache paths and their upkeep), `central` (the per-class chunk lists and chunk
//! release), `purge` (the clock, decay, purges and `trim`) and `stats` ([`MidStats`] and the
//! counters behind it). What follows describes the tier as a whole.
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
use core::ptr::NonNull;
use core::sync::atomic::AtomicU64;

use hak_registry::{OwnerKind, Registry};
use hak_sync::atomic::{AtomicUsize, Ordering};
use hak_sync::Mutex;

use crate::chunk::{
    Central, ChunkHeader, ChunkList, EmptyCache, DEFAULT_MAX_EMPTY_CHUNKS, NO_CLASS,
};
use crate::class::{class_for, CLASS_SIZE, NUM_CLASSES};
use crate::shard::Shards;

mod central;
mod front;
mod purge;
mod stats;

use stats::Counters;
pub use stats::MidStats;

/// Blocks at least this large (16 KiB) are purged (decommitted past their first page) when
/// they stay free for the purge delay or free memory exceeds the budget.
pub const DECOMMIT_MIN: usize = 16 << 10;
/// Default decommit budget: committed bytes of free blocks on chunk lists above which the
/// oldest free blocks are purged at once, without waiting for the delay (32 MiB).
pub const DEFAULT_DECOMMIT_BUDGET: usize = 32 << 20;
/// Default purge delay: how long freed memory stays unused before it goes back to the OS
/// (1 s, as the shared pool's).
pub const DEFAULT_PURGE_DELAY_NS: u64 = 1_000_000_000;
/// The first class that is purged.
const FIRST_PURGED: usize = {
    let mut c = 0;
    while CLASS_SIZE[c] < DECOMMIT_MIN {
        c += 1;
    }
    c
};

/// The mid tier: blocks of up to 1 MiB in 36 size classes (2560 B ..= 1 MiB), carved from
/// registered chunks, cached per thread in a [`MidThreadCache`](crate::MidThreadCache) and shared
/// through sharded free lists. See the crate docs for the contract.
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
            // SAFETY: we hold the class lock; listed chunks are live.
            unsafe {
                let (partial, consistent) = g.check_lists();
                assert!(consistent, "class {c}: a central list is malformed");
                for h in partial {
                    assert_eq!((*h).class, c);
                    ChunkHeader::check(h);
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
