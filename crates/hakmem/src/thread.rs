//! Per-thread state: the thread-local pointer, the sentinel, creation on a slow path, and
//! cleanup at thread exit.
//!
//! Every thread starts on [`SENTINEL`], a static state whose caches have capacity 0, so the
//! fast paths need no "initialised?" branch: the first miss lands in the slow path, which
//! builds a real [`ThreadState`] in OS pages (never through the global allocator) and
//! registers it with a pthread key whose destructor flushes it at thread exit. The pthread
//! destructor gets the state as its argument, so it does not depend on the order of Rust's own
//! TLS teardown; afterwards the thread-local points at the sentinel again, and a later
//! allocation on the same thread simply builds a new state (POSIX re-runs destructors for keys
//! set during destruction, up to `PTHREAD_DESTRUCTOR_ITERATIONS` rounds).
//!
//! States are never unmapped: flushed ones go on a free list for the next thread, and all are
//! on a push-only list that `stats()` walks.

use core::cell::{Cell, UnsafeCell};
use core::ptr;

use hak_l25::MidThreadCache;
use hak_sync::atomic::{AtomicPtr, Ordering};
use hak_sync::Mutex;
use hak_tiny_front::{CacheShared, ThreadCache};

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
    /// Next on the list of every state ever built (push-only).
    next_all: AtomicPtr<ThreadState>,
    /// Next on the free list (under `FREE`'s lock).
    next_free: *mut ThreadState,
}

/// The shared, never-written sentinel state.
pub(crate) struct Sentinel(UnsafeCell<ThreadState>);
// SAFETY: the sentinel is only ever read (its caches have capacity 0, so every operation on it
// misses before writing), and its atomics are never used.
unsafe impl Sync for Sentinel {}

pub(crate) static SENTINEL: Sentinel = Sentinel(UnsafeCell::new(ThreadState {
    tc: ThreadCache::new(&POOL),
    shared: CacheShared::new(),
    mid: MidThreadCache::new(),
    ticks: 0,
    next_all: AtomicPtr::new(ptr::null_mut()),
    next_free: ptr::null_mut(),
}));

thread_local! {
    /// The calling thread's state; const-initialised and without `Drop`, so access is a plain
    /// TLS load with no lazy-init check and no registered destructor.
    static STATE: Cell<*mut ThreadState> = const { Cell::new(SENTINEL.0.get()) };
}

static ALL: AtomicPtr<ThreadState> = AtomicPtr::new(ptr::null_mut());

pub(crate) struct FreeList(*mut ThreadState);
// SAFETY: the pointer is only followed under the mutex.
unsafe impl Send for FreeList {}
pub(crate) static FREE: Mutex<FreeList> = Mutex::new(FreeList(ptr::null_mut()));

/// The calling thread's state (maybe the sentinel).
#[inline(always)]
pub(crate) fn current() -> *mut ThreadState {
    STATE.with(|s| s.get())
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
    let cfg = global::ensure_init();
    let ts = take_free().unwrap_or_else(new_state);
    if ts.is_null() {
        return ts;
    }
    // SAFETY: `ts` is a state nobody else uses (fresh or taken off the free list); its shared
    // part lives beside the cache in pages that are never unmapped.
    unsafe { (*ts).tc.activate(ptr::addr_of!((*ts).shared), cfg.warm_pool_size) };
    // SAFETY: the key was created by `ensure_init`; the value is our state.
    unsafe { libc::pthread_setspecific(cfg.key, ts.cast()) };
    STATE.with(|s| s.set(ts));
    ts
}

fn take_free() -> Option<*mut ThreadState> {
    let mut f = FREE.lock();
    let ts = f.0;
    if ts.is_null() {
        return None;
    }
    // SAFETY: states on the free list are live and owned by the list.
    f.0 = unsafe { (*ts).next_free };
    Some(ts)
}

fn new_state() -> *mut ThreadState {
    let page = hak_os::page_size();
    let bytes = (core::mem::size_of::<ThreadState>() + page - 1) & !(page - 1);
    let Ok(mem) = OS.map(bytes, page) else { return ptr::null_mut() };
    let ts = mem.as_ptr().cast::<ThreadState>();
    // SAFETY: fresh zeroed pages of the right size; zero is a valid inactive cache apart from
    // what `init_in_place` writes, an empty shared part (written here), a null `next_all` and
    // a null `next_free`.
    unsafe {
        ThreadCache::init_in_place(ptr::addr_of_mut!((*ts).tc), &POOL);
        ptr::addr_of_mut!((*ts).shared).write(CacheShared::new());
    }
    let mut head = ALL.load(Ordering::Relaxed);
    loop {
        // SAFETY: not yet published.
        unsafe { (*ts).next_all.store(head, Ordering::Relaxed) };
        match ALL.compare_exchange_weak(head, ts, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return ts,
            Err(h) => head = h,
        }
    }
}

/// The pthread key destructor: flush the state and put it on the free list.
pub(crate) extern "C" fn thread_exit(arg: *mut libc::c_void) {
    let ts = arg.cast::<ThreadState>();
    if ts.is_null() {
        return;
    }
    // Frees from later destructors must not reach the state being retired.
    STATE.with(|s| {
        if s.get() == ts {
            s.set(SENTINEL.0.get());
        }
    });
    // SAFETY: the state belonged to the exiting thread, which no longer uses it.
    unsafe {
        (*ts).tc.flush();
        crate::large::MID.flush_thread(&mut (*ts).mid);
    }
    let mut f = FREE.lock();
    // SAFETY: we own the state until it is on the list.
    unsafe { (*ts).next_free = f.0 };
    f.0 = ts;
}

/// Flushes the calling thread's caches (`flush_thread_cache()`).
pub(crate) fn flush_current() {
    let ts = current();
    // SAFETY: the calling thread's own state (or the sentinel, which is inactive).
    unsafe {
        if (*ts).tc.is_active() {
            (*ts).tc.flush();
            crate::large::MID.flush_thread(&mut (*ts).mid);
        }
    }
}

/// Calls `f` with the tiny-front counters of every state ever built (live, flushed or free).
pub(crate) fn for_each_front_stats(mut f: impl FnMut(&hak_tiny_front::FrontStats)) {
    let mut p = ALL.load(Ordering::Acquire);
    while !p.is_null() {
        // SAFETY: states are never unmapped; only their atomic fields are read, never the rest
        // of a state another thread may be using.
        unsafe {
            f(&(*ptr::addr_of!((*p).shared)).stats);
            p = (*ptr::addr_of!((*p).next_all)).load(Ordering::Acquire);
        }
    }
}
