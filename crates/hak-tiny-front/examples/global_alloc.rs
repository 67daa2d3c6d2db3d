//! A `GlobalAlloc` with per-thread caches, built from the layers directly: hak-os maps,
//! hak-registry and hak-shared-pool hand out slabs of 2 MiB SuperSlabs, and a hak-tiny-front
//! `ThreadCache` per thread serves blocks up to 48 KiB with no lock on its hot path. Larger
//! requests get a mapping each from hak-os (a real allocator would use hak-l25 and
//! hak-bigcache there, as the `hakmem` facade does). This program runs on it
//! (`#[global_allocator]`), with threads that pass blocks to each other and exit in two waves.
//!
//! Run with `cargo run -p hak-tiny-front --example global_alloc` (`--release` for speed).
//!
//! What the per-thread part needs, and how it is done here (a simpler version of
//! `crates/hakmem/src/thread.rs`):
//! - Every thread starts on a shared, never-written sentinel cache with all capacities 0, so
//!   the fast paths need no "has this thread a cache?" branch: every operation on it misses,
//!   and the miss builds the thread's state.
//! - A thread's state lives in pages from hak-os, never in memory from the global allocator
//!   (that would be this allocator, re-entered). A state does not move once built: its
//!   `CacheShared` inbox is the owner identity written into the thread's slabs, and other
//!   threads deliver into it.
//! - A pthread key's destructor flushes the state when the thread exits (its slabs go back to
//!   the pool or to adoption) and puts it on a free list for the next thread: states are
//!   recycled, never unmapped.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::{Cell, UnsafeCell};
use core::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Barrier};
use std::thread;

use hak_os::{page_size, Os};
use hak_registry::{CacheLimits, Registry};
use hak_shared_pool::SharedPool;
use hak_superslab::LG_SUPERSLAB_DEFAULT;
use hak_sync::Mutex;
use hak_tiny_front::{class_of, free_without_cache, CacheShared, ThreadCache, WARM_MAX};

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
    /// Next on the free list.
    next_free: *mut State,
    /// The counters already added to the totals below (a recycled state keeps counting).
    reported: [u64; 2],
}

/// The sentinel every thread starts on. Never written: with capacities 0 every `pop` and
/// `free_fast` on it misses before writing anything.
struct Sentinel(UnsafeCell<State>);
// SAFETY: only ever read (see above).
unsafe impl Sync for Sentinel {}
static SENTINEL: Sentinel = Sentinel(UnsafeCell::new(State {
    tc: ThreadCache::new(&POOL),
    shared: CacheShared::new(),
    next_free: ptr::null_mut(),
    reported: [0; 2],
}));

thread_local! {
    /// The calling thread's state. Const-initialised and without `Drop`: a plain TLS access
    /// that never allocates and is valid until the thread is gone, destructors included.
    static CURRENT: Cell<*mut State> = const { Cell::new(SENTINEL.0.get()) };
}

/// Retired states waiting for a thread.
struct FreeList(*mut State);
// SAFETY: the pointer is only followed under the mutex.
unsafe impl Send for FreeList {}
static FREE: Mutex<FreeList> = Mutex::new(FreeList(ptr::null_mut()));

/// The pthread key whose destructor retires a thread's state (0: not created yet, else
/// key + 1).
static KEY: AtomicUsize = AtomicUsize::new(0);

/// Counters the example checks at the end (slow paths only: the hot paths stay lock- and
/// atomic-free).
static STATES_MAPPED: AtomicUsize = AtomicUsize::new(0);
static STATES_REUSED: AtomicUsize = AtomicUsize::new(0);
static REMOTE_FREES: AtomicU64 = AtomicU64::new(0);
static REFILLS: AtomicU64 = AtomicU64::new(0);

/// The pthread key, created on first use. Creating it allocates nothing from this allocator.
fn key() -> Option<libc::pthread_key_t> {
    let k = KEY.load(Ordering::Acquire);
    if k != 0 {
        return Some((k - 1) as libc::pthread_key_t);
    }
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is writable; the destructor is a plain extern "C" fn.
    if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } != 0 {
        return None;
    }
    match KEY.compare_exchange(0, key as usize + 1, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Some(key),
        Err(won) => {
            // Another thread created one first: use it, drop ours.
            // SAFETY: our key, never used.
            unsafe { libc::pthread_key_delete(key) };
            Some((won - 1) as libc::pthread_key_t)
        }
    }
}

/// A state for the calling thread: a retired one, or a new one in pages from hak-os. Null if
/// the OS refuses memory.
fn new_state() -> *mut State {
    {
        let mut free = FREE.lock();
        let st = free.0;
        if !st.is_null() {
            // SAFETY: states on the list are live, flushed, and owned by the list.
            free.0 = unsafe { (*st).next_free };
            STATES_REUSED.fetch_add(1, Ordering::Relaxed);
            return st;
        }
    }
    let bytes = core::mem::size_of::<State>().next_multiple_of(page_size());
    let Ok(mem) = OS.map(bytes, page_size()) else { return ptr::null_mut() };
    let st = mem.as_ptr().cast::<State>();
    // SAFETY: fresh zeroed pages, large enough and page-aligned; zero is a valid inactive
    // cache apart from what `init_in_place` writes, a null `next_free` and zero counts
    // reported. The cache is
    // built in place: it is more than 84 KiB, too large for a small thread stack.
    unsafe {
        ThreadCache::init_in_place(ptr::addr_of_mut!((*st).tc), &POOL);
        ptr::addr_of_mut!((*st).shared).write(CacheShared::new());
    }
    STATES_MAPPED.fetch_add(1, Ordering::Relaxed);
    st
}

/// The calling thread's active state, built on its first slow path; null if the OS refuses.
#[cold]
fn current_or_init() -> *mut State {
    let st = CURRENT.get();
    // SAFETY: the sentinel or this thread's state; `is_active` only reads.
    if unsafe { (*st).tc.is_active() } {
        return st;
    }
    let Some(key) = key() else { return ptr::null_mut() };
    let st = new_state();
    if st.is_null() {
        return st;
    }
    // SAFETY: a state nobody else uses, in pages that are never unmapped, so its shared part
    // outlives every slab the cache will own and never moves.
    unsafe { (*st).tc.activate(ptr::addr_of!((*st).shared), 4.min(WARM_MAX)) };
    // SAFETY: a valid key; the value is our state, handed to `thread_exit` at exit.
    unsafe { libc::pthread_setspecific(key, st.cast()) };
    CURRENT.set(st);
    st
}

/// The key's destructor, run by the exiting thread: flush its state and retire it.
extern "C" fn thread_exit(arg: *mut libc::c_void) {
    let st = arg.cast::<State>();
    if st.is_null() {
        return;
    }
    // Frees from later destructors must not reach the state being retired: they take the
    // sentinel's slow path (a remote free). An allocation there builds a state again, and
    // POSIX runs this destructor again for it.
    CURRENT.set(SENTINEL.0.get());
    // SAFETY: the exiting thread's own state, no longer used by it.
    unsafe {
        (*st).tc.flush();
        let stats = &(*st).shared.stats;
        let now = [stats.remote_frees.get(), stats.refills.get()];
        let reported = &mut *ptr::addr_of_mut!((*st).reported);
        REMOTE_FREES.fetch_add(now[0] - reported[0], Ordering::Relaxed);
        REFILLS.fetch_add(now[1] - reported[1], Ordering::Relaxed);
        *reported = now;
    }
    let mut free = FREE.lock();
    // SAFETY: we own the state until it is on the list.
    unsafe { (*st).next_free = free.0 };
    free.0 = st;
}

/// The allocator.
struct TinyAlloc;

#[cold]
fn alloc_slow(class: usize) -> *mut u8 {
    let st = current_or_init();
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
    let st = CURRENT.get();
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
    // states ever mapped are at most one per thread alive at once (plus the main thread's).
    let mapped = STATES_MAPPED.load(Ordering::Relaxed);
    let reused = STATES_REUSED.load(Ordering::Relaxed);
    assert!(mapped <= THREADS + 1, "{mapped} states mapped");
    assert!(reused >= THREADS, "the second wave reuses the first one's states ({reused})");
    // Blocks crossed threads: each was freed into a slab its freer did not own.
    let remote = REMOTE_FREES.load(Ordering::Relaxed);
    assert!(remote >= (2 * THREADS * ROUNDS * BATCH / 2) as u64, "{remote} remote frees");
    let pool = POOL.stats();
    assert!(pool.superslabs_mapped >= 1);
    POOL.check_invariants().expect("shared pool invariants");

    println!(
        "hak-tiny-front: {} threads in 2 waves, {} blocks passed between threads; \
         {mapped} thread states mapped, {reused} reused; {} refills, {} SuperSlabs mapped",
        2 * THREADS,
        2 * THREADS * ROUNDS * BATCH / 2,
        REFILLS.load(Ordering::Relaxed),
        pool.superslabs_mapped
    );
}
