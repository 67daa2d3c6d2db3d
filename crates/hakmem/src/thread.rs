//! Per-thread state: what a thread keeps ([`ThreadState`]) and the kit that manages it
//! ([`THREADS`], a [`hak_tiny_front::ThreadStates`]).
//!
//! The kit does the lifecycle: every thread starts on the sentinel (a state whose caches have
//! capacity 0, so the fast paths need no "initialised?" branch); the first miss builds or
//! recycles a real state in OS pages (never through the global allocator) and registers it
//! with a pthread key whose destructor flushes it at thread exit and retires it to a free list
//! for the next thread; states are never unmapped, and `stats()` walks the list of all of
//! them. This module says what a state is and how it activates and flushes; the thread-local
//! pointer lives in `tls.rs`, read directly by the fast paths.
//!
//! A recycled state keeps its tiny-front counters on purpose: `stats()` sums every state ever
//! built, and blocks move between states (freed by another thread, or through the same state
//! after it changed threads), so only cumulative counts keep totals such as `bytes_held` right.

use core::ptr;

use hak_l25::MidThreadCache;
use hak_tiny_front::{CacheShared, PerThread, StateSlot, ThreadCache, ThreadStates};

use crate::global::{self, OS, POOL};

/// One thread's state. `#[repr(C)]` with the tiny cache first, so a state pointer is a cache
/// pointer for the hot paths.
#[repr(C)]
pub(crate) struct ThreadState {
    pub(crate) tc: ThreadCache<'static>,
    /// What other threads touch of the tiny cache (its inbox and counters); outside `tc` so
    /// that the owner's `&mut` of the cache never covers it. Its address is the thread's
    /// owner identity, stable because states are never unmapped.
    pub(crate) shared: CacheShared,
    /// The mid tier's cache. Only used once `tc` is active: the sentinel's is never touched.
    pub(crate) mid: MidThreadCache,
    /// Slow-path calls above the tiny tier, counted for the decay tick (`decay.rs`). Only
    /// written once `tc` is active.
    pub(crate) ticks: u32,
}

// SAFETY: an inactive state is never written: its tiny cache has capacity 0 (every operation
// misses before writing), and the mid cache and `ticks` are only touched once `tc` is active.
// `is_active` only reads. Nothing in a state belongs to a thread: a flushed one holds no
// block and owns no slab.
unsafe impl PerThread for ThreadState {
    unsafe fn init_in_place(this: *mut Self) {
        // SAFETY: fresh zeroed pages (contract): zero is a valid inactive cache apart from what
        // `init_in_place` writes, an empty mid cache and zero ticks; the shared part is written.
        unsafe {
            ThreadCache::init_in_place(ptr::addr_of_mut!((*this).tc), &POOL);
            ptr::addr_of_mut!((*this).shared).write(CacheShared::new());
        }
    }

    #[inline]
    unsafe fn is_active(this: *const Self) -> bool {
        // SAFETY: the sentinel or a built state (contract); only reads.
        unsafe { (*this).tc.is_active() }
    }

    unsafe fn activate(this: *mut Self) {
        let cfg = global::ensure_init();
        // SAFETY: a state nobody else uses; its shared part lives beside the cache in pages
        // that are never unmapped, and no other cache uses it. A recycled state was flushed.
        unsafe { (*this).tc.activate(ptr::addr_of!((*this).shared), cfg.warm_pool_size) };
    }

    unsafe fn flush(this: *mut Self) {
        // SAFETY: the calling thread's own active state (contract).
        unsafe {
            (*this).tc.flush();
            crate::large::MID.flush_thread(&mut (*this).mid);
        }
    }
}

/// Names the thread-local of `tls.rs` for the kit.
pub(crate) struct Tls;

// SAFETY: `tls.rs`'s slot starts at `THREADS`' sentinel in every thread, holds what was last
// set, never allocates and has no destructor (so it works in thread-exit destructors).
unsafe impl StateSlot<ThreadState> for Tls {
    #[inline(always)]
    fn get() -> *mut ThreadState {
        crate::tls::get()
    }
    #[inline(always)]
    fn set(state: *mut ThreadState) {
        crate::tls::set(state)
    }
}

/// Every thread's state, and the sentinel.
pub(crate) static THREADS: ThreadStates<ThreadState, Tls> = ThreadStates::new(
    &OS,
    ThreadState {
        tc: ThreadCache::new(&POOL),
        shared: CacheShared::new(),
        mid: MidThreadCache::new(),
        ticks: 0,
    },
);

/// The calling thread's state (maybe the sentinel). The pointer lives in `tls.rs`.
#[inline(always)]
pub(crate) fn current() -> *mut ThreadState {
    crate::tls::get()
}

/// The calling thread's real state, built if it has none. Null if the OS refuses memory.
#[cold]
#[inline(never)]
pub(crate) fn current_or_init() -> *mut ThreadState {
    let ts = current();
    // SAFETY: `ts` is the sentinel or a live state; reading `is_active` writes nothing.
    if unsafe { (*ts).tc.is_active() } {
        return ts;
    }
    // Options, cache limits and the fork handlers first: the state's activation reads them.
    global::ensure_init();
    THREADS.current_or_init()
}

/// Flushes the calling thread's caches (`flush_thread_cache()`).
pub(crate) fn flush_current() {
    THREADS.flush_current();
}

/// Calls `f` with the tiny-front counters of every state ever built (live, flushed or free).
pub(crate) fn for_each_front_stats(mut f: impl FnMut(&hak_tiny_front::FrontStats)) {
    THREADS.for_each(|p| {
        // SAFETY: states are never unmapped; only the counters are read (`LocalCounter`s,
        // safe from any thread), never the rest of a state another thread may be using.
        f(unsafe { &(*ptr::addr_of!((*p).shared)).stats })
    });
}
