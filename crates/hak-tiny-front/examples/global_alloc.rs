//! A `GlobalAlloc` with per-thread caches, built from the layers directly: hak-os maps,
//! hak-registry and hak-shared-pool hand out slabs of 2 MiB SuperSlabs, and a hak-tiny-front
//! `ThreadCache` per thread serves blocks up to 48 KiB with no lock on its hot path. Larger
//! requests get a mapping each from hak-os (a real allocator would use hak-l25 and
//! hak-bigcache there, as the `hakmem` facade does). This program runs on it
//! (`#[global_allocator]`), with threads that pass blocks to each other and exit in two waves.
//!
//! Run with `cargo run -p hak-tiny-front --example global_alloc` (`--release` for speed).
//!
//! The per-thread part comes from hak-tiny-front's `ThreadStates`, the same kit the `hakmem`
//! facade uses; this file declares what it needs and nothing more:
//! - a state type (`State`: the cache, its `CacheShared`) and how it is built in place,
//!   activated and flushed (`PerThread`);
//! - one `static` of the kit, holding the sentinel every thread starts on: a cache with all
//!   capacities 0, so the fast paths need no "has this thread a cache?" branch;
//! - one thread-local pointer, const-initialised at the sentinel, named for the kit by a
//!   marker type (`StateSlot`). The fast paths read it directly.
//!
//! The kit does the rest: on a thread's first miss it builds the state in pages from hak-os
//! (never from the global allocator, which is this allocator, re-entered) or recycles a
//! retired one; a pthread key's destructor flushes the state when the thread exits (its slabs
//! go back to the pool or to adoption) and retires it to a free list; states never move and
//! are never unmapped (a state's `CacheShared` inbox is the owner identity written into its
//! slabs), and a list of all of them lets counters be summed.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::ptr::{self, NonNull};
use std::sync::{mpsc, Barrier};
use std::thread;

use hak_os::{page_size, Os};
use hak_registry::{CacheLimits, Registry};
use hak_shared_pool::SharedPool;
use hak_superslab::LG_SUPERSLAB_DEFAULT;
use hak_tiny_front::{
    class_of, free_without_cache, CacheShared, PerThread, StateSlot, ThreadCache, ThreadStates,
};

// The layers, as statics: each `new` is `const`, and each layer borrows the one below.
static OS: Os = Os::new();
static REGISTRY: Registry<'static> = Registry::new(&OS);
static POOL: SharedPool<'static> =
    SharedPool::new(&REGISTRY, LG_SUPERSLAB_DEFAULT, CacheLimits::DEFAULT);

/// One thread's state. `#[repr(C)]` with the cache first, so a state pointer is a cache
/// pointer for `ThreadCache::pop` and `free_fast`.
#[repr(C)]
struct State {
    tc: ThreadCache<'static>,
    /// The part of the cache other threads touch (its inbox, its counters).
    shared: CacheShared,
}

// SAFETY: an inactive state is never written (its cache's capacities are 0, so `pop` and
// `free_fast` miss before writing, and the slow paths below check `is_active` first);
// `is_active` only reads; a flushed state owns nothing tied to its old thread.
unsafe impl PerThread for State {
    unsafe fn init_in_place(this: *mut Self) {
        // SAFETY: fresh zeroed pages (the kit's contract): zero is a valid inactive cache
        // apart from what `init_in_place` writes. Built in place: the cache is more than
        // 84 KiB, too large for a small thread stack.
        unsafe {
            ThreadCache::init_in_place(ptr::addr_of_mut!((*this).tc), &POOL);
            ptr::addr_of_mut!((*this).shared).write(CacheShared::new());
        }
    }

    unsafe fn is_active(this: *const Self) -> bool {
        // SAFETY: the sentinel or a built state; only reads.
        unsafe { (*this).tc.is_active() }
    }

    unsafe fn activate(this: *mut Self) {
        // SAFETY: a state nobody else uses, in pages that are never unmapped, so its shared
        // part outlives every slab the cache will own and never moves. Counters are kept
        // across recycling: `main` sums them over every state.
        unsafe { (*this).tc.activate(ptr::addr_of!((*this).shared), 4) };
    }

    unsafe fn flush(this: *mut Self) {
        // SAFETY: the calling thread's own active state.
        unsafe { (*this).tc.flush() };
    }
}

/// Every thread's state, and the sentinel.
static STATES: ThreadStates<State, Current> =
    ThreadStates::new(&OS, State { tc: ThreadCache::new(&POOL), shared: CacheShared::new() });

thread_local! {
    /// The calling thread's state. Const-initialised and without `Drop`: a plain TLS access
    /// that never allocates and is valid until the thread is gone, destructors included.
    static CURRENT: Cell<*mut State> = const { Cell::new(STATES.sentinel()) };
}

/// Names `CURRENT` for the kit.
struct Current;

// SAFETY: `CURRENT` starts at `STATES`' sentinel, holds what was set last, has no `Drop`
// and never allocates.
unsafe impl StateSlot<State> for Current {
    #[inline(always)]
    fn get() -> *mut State {
        CURRENT.get()
    }
    #[inline(always)]
    fn set(state: *mut State) {
        CURRENT.set(state)
    }
}

/// The allocator.
struct TinyAlloc;

#[cold]
fn alloc_slow(class: usize) -> *mut u8 {
    let st = STATES.current_or_init();
    if st.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: the calling thread's own, active state.
    unsafe { (*st).tc.alloc_slow(class) }.map_or(ptr::null_mut(), NonNull::as_ptr)
}

/// # Safety
/// `block` is a live tiny block of `class` that the caller gives up.
#[cold]
unsafe fn free_slow(class: usize, block: *mut u8) {
    let Some(block) = NonNull::new(block) else { return };
    let st = STATES.current();
    // SAFETY: this thread's state or the (inactive) sentinel; the block is live.
    unsafe {
        if (*st).tc.is_active() {
            (*st).tc.free_slow(class, block);
        } else {
            // No cache (a thread that only frees, or one past its exit destructor): the block
            // goes onto its slab's remote stack; no state is built for a free.
            free_without_cache(&POOL, block);
        }
    }
}

/// Bytes of the mapping that holds a large block.
fn large_len(layout: Layout) -> usize {
    layout.size().max(1).next_multiple_of(page_size())
}

// SAFETY: tiny blocks come from slabs whose blocks never overlap and are handed out once
// until freed; their class size covers the size rounded up to the alignment and keeps that
// alignment (`class_of`). Large blocks are whole mappings aligned as asked. Failure is null.
unsafe impl GlobalAlloc for TinyAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(class) = class_of(layout.size(), layout.align()) {
            // SAFETY: this thread's state or the sentinel (never written: capacity 0), and a
            // class from `class_of`.
            let p = unsafe { ThreadCache::pop(CURRENT.get().cast(), class) };
            if !p.is_null() {
                return p;
            }
            return alloc_slow(class);
        }
        OS.map(large_len(layout), layout.align()).map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(class) = class_of(layout.size(), layout.align()) {
            // SAFETY: `ptr` is a live block of `class` (same layout as its allocation) in a
            // SuperSlab of the pool's size.
            unsafe {
                if !ThreadCache::free_fast(CURRENT.get().cast(), class, ptr, POOL.lg_size()) {
                    free_slow(class, ptr);
                }
            }
            return;
        }
        // SAFETY: a large block is a whole mapping of this length, given up by the caller.
        let _ = unsafe { OS.unmap(NonNull::new_unchecked(ptr), large_len(layout)) };
    }
}

#[global_allocator]
static GLOBAL: TinyAlloc = TinyAlloc;

/// Threads per wave.
const THREADS: usize = 4;
/// Rounds of allocate / pass on / check per thread.
const ROUNDS: usize = 50;
/// Blocks per round.
const BATCH: usize = 200;

/// A block whose contents say who made it.
fn block(thread: usize, round: usize, i: usize) -> Vec<u64> {
    let len = 1 + (i * 7 + round) % 300; // 8 B .. 2.4 KiB
    vec![(thread * 1_000_000 + round * 1000 + i) as u64; len]
}

fn check(b: &[u64]) {
    assert!(b.iter().all(|&w| w == b[0]), "a block's contents changed");
}

/// One wave: threads in a ring, each keeping half of what it allocates and sending the other
/// half to the next thread, which checks and frees it (a free into a slab another thread
/// owns). A barrier keeps every thread alive until all exchanges are done. Each thread
/// returns one large buffer, freed by the main thread.
fn wave(w: usize) -> usize {
    let (txs, rxs): (Vec<_>, Vec<_>) =
        (0..THREADS).map(|_| mpsc::channel::<Vec<Vec<u64>>>()).unzip();
    let barrier = Barrier::new(THREADS);
    let mut rxs: Vec<Option<_>> = rxs.into_iter().map(Some).collect();
    thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let tx = txs[(t + 1) % THREADS].clone();
                let rx = rxs[t].take().expect("one receiver per thread");
                let barrier = &barrier;
                s.spawn(move || {
                    let id = w * THREADS + t;
                    let mut kept = Vec::new();
                    for r in 0..ROUNDS {
                        let mut mine: Vec<Vec<u64>> = (0..BATCH).map(|i| block(id, r, i)).collect();
                        tx.send(mine.split_off(BATCH / 2)).expect("next thread");
                        let theirs = rx.recv().expect("previous thread");
                        theirs.iter().for_each(|b| check(b));
                        drop(theirs);
                        mine.iter().for_each(|b| check(b));
                        kept.extend(mine.into_iter().step_by(10));
                    }
                    barrier.wait();
                    kept.iter().for_each(|b| check(b));
                    vec![id as u8; 256 << 10] // above the tiny tier: a mapping of its own
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("worker").len()).sum()
    })
}

fn main() {
    let large: usize = (0..2).map(wave).sum();
    assert_eq!(large, 2 * THREADS * (256 << 10));

    // Every worker's state was retired at its exit and the second wave reused them, so the
    // states ever built are at most one per thread alive at once (plus the main thread's).
    let counts = STATES.counts();
    let (built, recycled) = (counts.built, counts.recycled);
    assert!(built <= THREADS as u64 + 1, "{built} states built");
    assert!(recycled >= THREADS as u64, "the second wave reuses the first one's states");
    // Counters summed over every state ever built: a recycled state kept counting.
    let (mut remote, mut refills) = (0, 0);
    STATES.for_each(|st| {
        // SAFETY: states are never unmapped; the counters are safe to read from any thread,
        // and only they are read (through the raw pointer, not a reference to the state).
        let stats = unsafe { &(*ptr::addr_of!((*st).shared)).stats };
        remote += stats.remote_frees.get();
        refills += stats.refills.get();
    });
    // Blocks crossed threads: each was freed into a slab its freer did not own.
    assert!(remote >= (2 * THREADS * ROUNDS * BATCH / 2) as u64, "{remote} remote frees");
    let pool = POOL.stats();
    assert!(pool.superslabs_mapped >= 1);
    POOL.check_invariants().expect("shared pool invariants");

    println!(
        "hak-tiny-front: {} threads in 2 waves, {} blocks passed between threads; \
         {built} thread states built, {recycled} recycled; {refills} refills, {} SuperSlabs mapped",
        2 * THREADS,
        2 * THREADS * ROUNDS * BATCH / 2,
        pool.superslabs_mapped
    );
}
