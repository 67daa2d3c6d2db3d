//! [`SharedPool`]: the type, its locked state, statistics, fork handlers and invariant check.
//! Its operations live in submodules, one concept each: `acquire` (the stage policy: where a
//! slab comes from), `release` (taking slabs back and publishing abandoned ones), `purge` (the
//! delayed purge of EMPTY slots, the reclaim of abandoned slabs, and `trim`). Slot encoding and
//! the intrusive lists are in the `slots` module.

use hak_registry::{CacheLimits, Registry, SuperSlabCache};
use hak_superslab::{Inbox, SlabRef};
use hak_sync::atomic::{AtomicU64, Ordering};
use hak_sync::stat::{Derived, StatCounter};
use hak_sync::Mutex;

use crate::slots::{
    ext, ss, SlotList, SsList, ACTIVE, EMPTY, ON_ALL, ON_DIRTY, ON_UNUSED, PURGING, UNUSED,
};

mod acquire;
mod purge;
mod release;

/// Size classes the pool keeps lists for (the front uses fewer).
pub const MAX_CLASSES: usize = 64;

/// Default delay after which an EMPTY slab's pages go back to the OS: 1 s.
pub const DEFAULT_PURGE_DELAY_NS: u64 = 1_000_000_000;

/// Which source [`SharedPool::acquire`] used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Stage 0: an abandoned slab of the class with free blocks, adopted.
    Adopted,
    /// Stage 1: an EMPTY slot that last served the class.
    EmptySameClass,
    /// Stage 1 too: an EMPTY slot of another class whose pages are still resident.
    EmptyOtherClass,
    /// Stage 2: an UNUSED slot of an existing SuperSlab, or an EMPTY (purged) slot of another
    /// class.
    Unused,
    /// Stage 3: a new SuperSlab (from the cache or the OS).
    NewSuperSlab,
}

/// A slab handed out by [`SharedPool::acquire`], owned by the caller and assigned to its class.
#[derive(Debug, Clone, Copy)]
pub struct Acquired {
    /// The slab.
    pub slab: SlabRef,
    /// The source it came from.
    pub stage: Stage,
}

hak_sync::stats! {
    /// The live counters of a [`SharedPool`].
    pub struct PoolCounters => {
        /// Counters of a [`SharedPool`].
        pub struct PoolStats;
    }
    /// Stage 0 acquisitions (abandoned slabs adopted).
    stage0_adopted: StatCounter,
    /// Stage 1 acquisitions (EMPTY slots of the class, or resident ones of another class).
    stage1_empty: StatCounter,
    /// Stage 2 acquisitions.
    stage2_unused: StatCounter,
    /// Stage 3 acquisitions.
    stage3_new: StatCounter,
    /// SuperSlabs taken from the LRU cache (LRU hits).
    lru_hits: StatCounter,
    /// SuperSlabs mapped from the OS.
    superslabs_mapped: StatCounter,
    /// Slabs released (ACTIVE -> EMPTY).
    releases: StatCounter,
    /// Slabs published for adoption.
    published: StatCounter,
    /// EMPTY slabs whose pages were given back after the purge delay (or by `trim`).
    purged: StatCounter,
    /// SuperSlabs handed to the LRU cache.
    superslabs_cached: StatCounter,
    /// SuperSlabs the pool holds now.
    superslabs_live: Derived<u64>,
    /// The LRU cache's own counters.
    cache: Derived<hak_registry::CacheStats>,
}

struct State {
    empty: [SlotList; MAX_CLASSES],
    abandoned: [SlotList; MAX_CLASSES],
    /// SuperSlabs with at least one UNUSED slot.
    unused: SsList<ON_UNUSED>,
    /// Every SuperSlab the pool holds (`live` of them).
    all: SsList<ON_ALL>,
    /// SuperSlabs with EMPTY slots whose pages are still committed, roughly oldest first.
    dirty: SsList<ON_DIRTY>,
    live: usize,
    /// Slabs on the abandoned lists, and the class the bounded reclaim looks at next.
    abandoned_count: usize,
    reclaim_cursor: usize,
}

/// The shared pool. See the crate docs.
pub struct SharedPool<'r> {
    registry: &'r Registry<'r>,
    cache: SuperSlabCache<'r>,
    lg_size: u32,
    state: Mutex<State>,
    /// Owner identity for slabs `trim` holds while it inspects them.
    trim_owner: Inbox,
    /// How long an EMPTY slot keeps its pages (ns).
    purge_delay: AtomicU64,
    /// Monotonic time (ns) after which a purge pass is due; `u64::MAX` when nothing is dirty.
    /// A hint read without the lock.
    next_purge: AtomicU64,
    counters: PoolCounters,
}

impl core::fmt::Debug for SharedPool<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SharedPool").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

// SAFETY: raw SuperSlab pointers in `State` are only followed under the mutex; SuperSlabs are
// shared memory whose own fields are Sync.
unsafe impl Send for SharedPool<'_> {}
// SAFETY: as above.
unsafe impl Sync for SharedPool<'_> {}

/// Wrapping milliseconds of a monotonic nanosecond time (slot ages are short).
#[inline]
fn ms(ns: u64) -> u32 {
    (ns / 1_000_000) as u32
}

impl<'r> SharedPool<'r> {
    hak_sync::maybe_const_fn! {
        /// A pool of SuperSlabs of `2^lg_size` bytes registered in `registry`, caching empty
        /// ones within `limits`.
        pub fn new(registry: &'r Registry<'r>, lg_size: u32, limits: CacheLimits) -> SharedPool<'r> {
            SharedPool {
                registry,
                cache: SuperSlabCache::new(registry, limits),
                lg_size,
                state: Mutex::new(State {
                    empty: [const { SlotList::new() }; MAX_CLASSES],
                    abandoned: [const { SlotList::new() }; MAX_CLASSES],
                    unused: SsList::new(),
                    all: SsList::new(),
                    dirty: SsList::new(),
                    live: 0,
                    abandoned_count: 0,
                    reclaim_cursor: 0,
                }),
                trim_owner: Inbox::new(),
                purge_delay: AtomicU64::new(DEFAULT_PURGE_DELAY_NS),
                next_purge: AtomicU64::new(u64::MAX),
                counters: PoolCounters::new(),
            }
        }
    }

    /// The LRU cache of empty SuperSlabs (for limits, prewarm and stats).
    pub fn cache(&self) -> &SuperSlabCache<'r> {
        &self.cache
    }

    /// The registry SuperSlabs are registered in.
    pub fn registry(&self) -> &'r Registry<'r> {
        self.registry
    }

    /// log2 of the SuperSlab size.
    #[inline]
    pub fn lg_size(&self) -> u32 {
        self.lg_size
    }

    /// Sets how long an EMPTY slab keeps its pages before a purge gives them back (0: at the
    /// next purge check).
    pub fn set_purge_delay(&self, ns: u64) {
        self.purge_delay.store(ns, Ordering::Relaxed);
    }

    /// Counters.
    pub fn stats(&self) -> PoolStats {
        let mut s = self.counters.snapshot();
        s.superslabs_live = self.state.lock().live as u64;
        s.cache = self.cache.stats();
        s
    }

    /// Takes the pool's locks (its own, then the SuperSlab cache's) before `fork()`.
    #[cfg(not(hak_loom))]
    pub fn prefork(&self) {
        self.state.fork_lock();
        self.cache.prefork();
    }

    /// Releases what [`SharedPool::prefork`] took, in the parent and in the child.
    ///
    /// # Safety
    /// The calling thread ran `prefork` (or is the child of the thread that did).
    #[cfg(not(hak_loom))]
    pub unsafe fn postfork(&self) {
        // SAFETY: forwarded.
        unsafe {
            self.cache.postfork();
            self.state.fork_unlock();
        }
    }

    /// Checks the pool's invariants (see the crate docs) over every SuperSlab it holds,
    /// returning the first violation. For tests.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        let st = self.state.lock();
        let mut live = 0;
        // SAFETY: lock held; listed SuperSlabs are live; nothing is unlinked while we walk.
        for s in unsafe { st.all.iter() }.map(ss) {
            live += 1;
            // SAFETY: as above.
            let (e, n) = unsafe { (ext(s), s.nslabs()) };
            let mut counted = [0u32; 4];
            for i in 0..n {
                counted[e.state[i] as usize] += 1;
                if (e.unused_mask >> i) & 1 != (e.state[i] == UNUSED) as u64 {
                    return Err("unused_mask disagrees with slot states");
                }
                if (e.dirty_mask >> i) & 1 == 1 && e.state[i] != EMPTY {
                    return Err("a dirty slot that is not EMPTY");
                }
            }
            if counted[ACTIVE as usize] + counted[PURGING as usize] != e.active {
                return Err("active count disagrees with slot states");
            }
        }
        if live != st.live {
            return Err("live count disagrees with the list of SuperSlabs");
        }
        // SAFETY: as above.
        let linked = unsafe {
            st.all.is_consistent()
                && st.unused.is_consistent()
                && st.dirty.is_consistent()
                && st.empty.iter().chain(st.abandoned.iter()).all(|l| l.is_consistent())
        };
        if !linked {
            return Err("a list's links disagree with its head, tail or length");
        }
        if st.abandoned.iter().map(|l| l.len()).sum::<usize>() != st.abandoned_count {
            return Err("abandoned count disagrees with the abandoned lists");
        }
        for list in st.empty.iter() {
            // SAFETY: lock held; listed slots' SuperSlabs are live.
            for s in unsafe { list.iter() } {
                // SAFETY: as above.
                if unsafe { ext(s.ss()) }.state[s.index()] != EMPTY {
                    return Err("non-EMPTY slot on an EMPTY list");
                }
            }
        }
        Ok(())
    }
}

impl Drop for SharedPool<'_> {
    /// Unregisters and unmaps every SuperSlab the pool holds, like dropping an arena: blocks
    /// still handed out dangle afterwards, so a pool is dropped only when none is used.
    fn drop(&mut self) {
        let size = 1usize << self.lg_size;
        let os = self.registry.os();
        let mut all = self.state.lock().all.take();
        // SAFETY: `&mut self`: no other user; listed SuperSlabs are live pool SuperSlabs, and
        // each leaves the list before it is unmapped.
        while let Some(s) = unsafe { all.pop_front() }.map(ss) {
            // SAFETY: as above.
            unsafe {
                self.registry.unregister(s.base(), size);
                let _ = os.unmap(s.base(), size);
            }
        }
        self.cache.flush();
    }
}
