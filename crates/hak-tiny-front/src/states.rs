//! [`ThreadStates`]: the per-thread kit an allocator built on these layers needs around its
//! thread caches — a sentinel every thread starts on, states built in OS pages on a slow path,
//! a flush at thread exit through a pthread key, and recycling of retired states.
//!
//! The kit holds no static and no thread-local of its own (only an allocator's top crate
//! holds those): the caller declares one `static` [`ThreadStates`], one thread-local pointer,
//! and ties the two together with [`StateSlot`]. The thread-local stays entirely the caller's,
//! so its hot path reads it however is cheapest there (the `hakmem` facade uses an
//! initial-exec TLS slot defined in assembly; a plain const-initialised `thread_local!` works
//! everywhere) and the kit never stands between the fast path and its cache.
//!
//! How a thread's state lives:
//! 1. Every thread starts on the sentinel, a state inside the `ThreadStates` static that is
//!    never active and never written: with a [`ThreadCache`](crate::ThreadCache) of capacity
//!    0 every fast-path operation on it misses, so the fast path needs no "has this thread a
//!    state?" branch. Its address is known at compile time ([`ThreadStates::sentinel`], at
//!    [`ThreadStates::SENTINEL_OFFSET`] in the static), so it can be the thread-local's
//!    initial value.
//! 2. The first miss lands in the caller's slow path, which calls
//!    [`ThreadStates::current_or_init`]: it takes a retired state from the free list, or
//!    builds one in fresh pages from hak-os (never through the global allocator, which would
//!    be the allocator being built, re-entered), activates it ([`PerThread::activate`]),
//!    points the thread-local at it and registers it with the kit's pthread key.
//! 3. At thread exit the key's destructor points the thread-local back at the sentinel (frees
//!    from later destructors then take the caller's no-cache path), flushes the state
//!    ([`PerThread::flush`]) and puts it on the free list. The destructor gets the state as its
//!    argument, so it does not depend on the order of Rust's own TLS teardown. An allocation
//!    from a later destructor builds a state again; POSIX runs the destructor again for it (up
//!    to `PTHREAD_DESTRUCTOR_ITERATIONS` rounds).
//! 4. States are never unmapped: a state's address can be an owner identity written into
//!    slabs (the [`CacheShared`](crate::CacheShared) inbox), and the list of every state ever
//!    built ([`ThreadStates::for_each`], push-only) lets statistics be summed without a lock.
//!    So the kit's memory is one state per thread that was ever alive at the same time.
//!
//! A recycled state comes back exactly as its last flush left it: the kit resets nothing.
//! What should not carry over to the next thread is for [`PerThread::activate`] to reset. The
//! counters of a [`CacheShared`](crate::CacheShared) should carry over, and do in hakmem and
//! in the crate's example: totals are sums over every state ever built, and a block taken
//! from a slab through one state is often returned through another (another thread's, or the
//! same state after it moved to a new thread), so only cumulative per-state counts keep those
//! sums right (a reset would lose a retired thread's share, and `bytes_out - bytes_back` would
//! no longer be what is outstanding).
//!
//! Cost: nothing on the fast path (it reads the caller's thread-local and uses the state).
//! The slow path that builds or recycles a state takes the free list's lock, makes a system
//! call (`pthread_setspecific`) and, for a new state, maps pages; it runs once per thread.

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::ptr;

use hak_os::Os;
use hak_sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use hak_sync::Mutex;

/// A per-thread state [`ThreadStates`] manages: typically a `#[repr(C)]` struct with the
/// [`ThreadCache`](crate::ThreadCache) first (so a state pointer is a cache pointer for
/// [`ThreadCache::pop`](crate::ThreadCache::pop) and
/// [`ThreadCache::free_fast`](crate::ThreadCache::free_fast)), its
/// [`CacheShared`](crate::CacheShared), and whatever else the allocator keeps per thread.
///
/// # Safety
/// Implementors promise:
/// - An inactive state (the sentinel given to [`ThreadStates::new`], and what
///   [`PerThread::init_in_place`] builds) is never written by anything the caller does on a
///   thread whose thread-local points at it: the sentinel is shared by every thread that has
///   no state yet. A `ThreadCache` has this property (capacities 0: every operation misses
///   before writing).
/// - [`PerThread::is_active`] only reads, is false for inactive states and true after
///   [`PerThread::activate`] (also after a flush).
/// - A state may change threads: built and used by one thread, flushed by it at exit, then
///   activated and used by another. Nothing in it may be tied to the thread that built it.
pub unsafe trait PerThread: Sized {
    /// Builds an inactive state at `this`.
    ///
    /// # Safety
    /// `this` points to zeroed, writable memory for a `Self` (fresh pages from hak-os), which
    /// nobody else uses and which is never unmapped.
    unsafe fn init_in_place(this: *mut Self);

    /// Whether the state is active (false for the sentinel).
    ///
    /// # Safety
    /// `this` is the sentinel or a state built by [`PerThread::init_in_place`], and the caller
    /// is the thread using it.
    unsafe fn is_active(this: *const Self) -> bool;

    /// Makes an inactive or flushed state the calling thread's (for a `ThreadCache`:
    /// [`ThreadCache::activate`](crate::ThreadCache::activate) with the state's own
    /// `CacheShared`, which never moves because states are never unmapped).
    ///
    /// # Safety
    /// `this` is a built state that no thread uses (fresh, or retired and flushed), and the
    /// calling thread is about to use it.
    unsafe fn activate(this: *mut Self);

    /// Gives back everything the state holds (thread exit, or a flush the program asks for);
    /// the state stays usable by the calling thread.
    ///
    /// # Safety
    /// `this` is an active state that only the calling thread uses.
    unsafe fn flush(this: *mut Self);
}

/// The caller's thread-local pointer to the calling thread's state, as [`ThreadStates`] reads
/// and writes it. Implemented on a marker type:
///
/// ```rust,ignore
/// thread_local! {
///     static CURRENT: Cell<*mut State> = const { Cell::new(THREADS.sentinel()) };
/// }
/// struct Current;
/// // SAFETY: a const-initialised thread-local without `Drop`, starting at THREADS' sentinel.
/// unsafe impl StateSlot<State> for Current {
///     fn get() -> *mut State { CURRENT.get() }
///     fn set(state: *mut State) { CURRENT.set(state) }
/// }
/// ```
///
/// # Safety
/// [`StateSlot::get`] returns what the calling thread last passed to [`StateSlot::set`], and
/// before any `set` the [`ThreadStates::sentinel`] of the one `ThreadStates` that uses this
/// slot. Both work at any point of a thread's life, thread-exit destructors included (a
/// const-initialised thread-local without `Drop` does), and neither allocates.
pub unsafe trait StateSlot<S> {
    /// The calling thread's state pointer (the sentinel until its first slow path).
    fn get() -> *mut S;
    /// Sets the calling thread's state pointer.
    fn set(state: *mut S);
}

/// A state with the kit's links. `#[repr(C)]` with the state first, so a node pointer is a
/// state pointer (cast, same provenance).
#[repr(C)]
struct Node<S, T> {
    state: S,
    /// The `ThreadStates` that built the node: the pthread destructor's only context.
    home: *const ThreadStates<S, T>,
    /// Next on the list of every state ever built (push-only).
    next_all: AtomicPtr<Node<S, T>>,
    /// Next on the free list (under its lock).
    next_free: *mut Node<S, T>,
}

/// Retired states waiting for a thread, and how many were handed out again.
struct FreeList<S, T> {
    head: *mut Node<S, T>,
    recycled: u64,
}

// SAFETY: the pointers are only followed under the mutex; the states they lead to are
// retired (no thread uses them), and `PerThread` states may change threads.
unsafe impl<S, T> Send for FreeList<S, T> {}

/// The per-thread kit: a sentinel state, the free list of retired states, the list of every
/// state ever built, and the pthread key whose destructor flushes a state at thread exit. See
/// the module docs; `S` is the caller's state type, `T` names the caller's thread-local.
///
/// Meant for a `static` (its `new` is `const`); everything that needs the static's address
/// takes `&'static self`. `#[repr(C)]` with the sentinel first: a thread-local defined in
/// assembly can name the static's symbol plus [`ThreadStates::SENTINEL_OFFSET`] as its initial
/// value.
#[repr(C)]
pub struct ThreadStates<S, T> {
    /// Only ever read (see `PerThread`'s contract); never linked, never activated.
    sentinel: UnsafeCell<Node<S, T>>,
    os: &'static Os,
    all: AtomicPtr<Node<S, T>>,
    free: Mutex<FreeList<S, T>>,
    /// The pthread key: 0 until created, then key + 1.
    key: AtomicUsize,
    _slot: PhantomData<fn() -> T>,
}

// SAFETY: the sentinel is only read, by any thread (`PerThread`'s contract: nothing writes an
// inactive state); built states are reached through raw pointers by the thread using them
// (or, retired, under the free list's lock), and the list of all states is atomics. The only
// other shared state is an atomic and a mutex.
unsafe impl<S: PerThread, T> Sync for ThreadStates<S, T> {}

impl<S, T> fmt::Debug for ThreadStates<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadStates")
            .field("key", &self.key.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// How many states a [`ThreadStates`] has built and handed out again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// States built in fresh pages (each maps `size_of` the state, rounded up to pages).
    pub built: u64,
    /// Retired states handed to a new thread.
    pub recycled: u64,
}

impl<S: PerThread, T: StateSlot<S>> ThreadStates<S, T> {
    /// Byte offset of the sentinel state inside a `ThreadStates` (0: it is the first field).
    pub const SENTINEL_OFFSET: usize = core::mem::offset_of!(Self, sentinel);

    /// A kit with `sentinel` as the state of threads that have none, taking pages from `os`.
    /// `sentinel` must be inactive (see [`PerThread`]).
    pub const fn new(os: &'static Os, sentinel: S) -> ThreadStates<S, T> {
        ThreadStates {
            sentinel: UnsafeCell::new(Node {
                state: sentinel,
                home: ptr::null(),
                next_all: AtomicPtr::new(ptr::null_mut()),
                next_free: ptr::null_mut(),
            }),
            os,
            all: AtomicPtr::new(ptr::null_mut()),
            free: Mutex::new(FreeList { head: ptr::null_mut(), recycled: 0 }),
            key: AtomicUsize::new(0),
            _slot: PhantomData,
        }
    }

    /// The sentinel: the thread-local's initial value. `const`, so a `const`-initialised
    /// thread-local can start there.
    #[inline(always)]
    pub const fn sentinel(&self) -> *mut S {
        self.sentinel.get().cast()
    }

    /// The calling thread's state (the sentinel until its first slow path): the caller's
    /// thread-local, read once.
    #[inline(always)]
    pub fn current(&self) -> *mut S {
        T::get()
    }

    /// The calling thread's active state, built or recycled if it has none. Null if the OS
    /// refuses memory or no pthread key can be created. For slow paths (cold, not inlined).
    ///
    /// The thread-local points at the new state before `pthread_setspecific` runs, so an
    /// allocation glibc makes inside that call (its second-level key array, for keys past
    /// the first 32) is served by the new state instead of coming back here.
    #[cold]
    #[inline(never)]
    pub fn current_or_init(&'static self) -> *mut S {
        let cur = T::get();
        // SAFETY: the sentinel or this thread's state (slot contract); `is_active` only reads.
        if unsafe { S::is_active(cur) } {
            return cur;
        }
        let Some(key) = self.key() else { return ptr::null_mut() };
        let node = match self.take_free() {
            Some(n) => n,
            None => self.build(),
        };
        if node.is_null() {
            return ptr::null_mut();
        }
        let st = node.cast::<S>();
        // SAFETY: a built state nobody uses (fresh, or retired and flushed), in pages that are
        // never unmapped; from now on this thread's.
        unsafe { S::activate(st) };
        T::set(st);
        // SAFETY: a valid key; the value is our node, handed to `exit_thread` at exit. A
        // failure (glibc: no memory for a key past the first 32) leaves the thread working
        // without the exit flush: its state is then never recycled.
        unsafe { libc::pthread_setspecific(key, node.cast()) };
        st
    }

    /// Flushes the calling thread's state if it has one (the sentinel has nothing to flush).
    pub fn flush_current(&self) {
        let st = T::get();
        // SAFETY: this thread's state or the sentinel (inactive, skipped).
        unsafe {
            if S::is_active(st) {
                S::flush(st);
            }
        }
    }

    /// Calls `f` with every state ever built: live, flushed or retired; not the sentinel.
    ///
    /// Other threads may be using the states meanwhile: `f` may only read what is safe to read
    /// concurrently (atomics, [`LocalCounter`](hak_sync::stat::LocalCounter)s), through the
    /// raw pointer, never through a reference to the whole state.
    pub fn for_each(&self, mut f: impl FnMut(*const S)) {
        let mut p = self.all.load(Ordering::Acquire);
        while !p.is_null() {
            f(p.cast_const().cast());
            // SAFETY: nodes are never unmapped, and `next_all` is written before the node is
            // published (the acquire load above pairs with that release).
            p = unsafe { (*ptr::addr_of!((*p).next_all)).load(Ordering::Acquire) };
        }
    }

    /// States built and recycled so far.
    pub fn counts(&self) -> StateCounts {
        let mut built = 0;
        self.for_each(|_| built += 1);
        StateCounts { built, recycled: self.free.lock().recycled }
    }

    /// Takes the free list's lock across `fork()` (the layers' fork convention: call it from
    /// the `pthread_atfork` prepare handler, before the other layers' `prefork`).
    pub fn prefork(&self) {
        self.free.fork_lock();
    }

    /// Releases what [`ThreadStates::prefork`] took (parent and child handlers).
    ///
    /// # Safety
    /// The calling thread took the lock with `prefork` (in this process, or in the parent this
    /// child was forked from) and holds no guard of it.
    pub unsafe fn postfork(&self) {
        // SAFETY: forwarded.
        unsafe { self.free.fork_unlock() };
    }

    /// The pthread key, created on first use (creating one allocates nothing).
    fn key(&self) -> Option<libc::pthread_key_t> {
        let k = self.key.load(Ordering::Acquire);
        if k != 0 {
            return Some((k - 1) as libc::pthread_key_t);
        }
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is writable; the destructor is a plain extern "C" fn.
        if unsafe { libc::pthread_key_create(&mut key, Some(exit_thread::<S, T>)) } != 0 {
            return None;
        }
        match self.key.compare_exchange(0, key as usize + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Some(key),
            Err(won) => {
                // Another thread created one first: use it, drop ours (never set anywhere).
                // SAFETY: our key, unused.
                unsafe { libc::pthread_key_delete(key) };
                Some((won - 1) as libc::pthread_key_t)
            }
        }
    }

    fn take_free(&self) -> Option<*mut Node<S, T>> {
        let mut f = self.free.lock();
        let n = f.head;
        if n.is_null() {
            return None;
        }
        // SAFETY: nodes on the free list are built, retired, and owned by the list.
        f.head = unsafe { (*n).next_free };
        f.recycled += 1;
        Some(n)
    }

    /// A new node in fresh pages, inactive and on the list of all states; null if the OS
    /// refuses.
    fn build(&'static self) -> *mut Node<S, T> {
        let page = hak_os::page_size();
        let bytes = core::mem::size_of::<Node<S, T>>().next_multiple_of(page);
        let align = core::mem::align_of::<Node<S, T>>().max(page);
        let Ok(mem) = self.os.map(bytes, align) else { return ptr::null_mut() };
        let node = mem.as_ptr().cast::<Node<S, T>>();
        // SAFETY: fresh zeroed pages, large and aligned enough, seen by no one else and never
        // unmapped: what `init_in_place` asks for. Zero is a null `next_all` and `next_free`.
        unsafe {
            S::init_in_place(node.cast());
            ptr::addr_of_mut!((*node).home).write(self);
        }
        let mut head = self.all.load(Ordering::Relaxed);
        loop {
            // SAFETY: not yet published; only this thread sees the node.
            unsafe { (*ptr::addr_of!((*node).next_all)).store(head, Ordering::Relaxed) };
            match self.all.compare_exchange_weak(head, node, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return node,
                Err(h) => head = h,
            }
        }
    }
}

/// The pthread key's destructor, run by the exiting thread with its node: back to the
/// sentinel, flush, retire.
extern "C" fn exit_thread<S: PerThread, T: StateSlot<S>>(arg: *mut libc::c_void) {
    let node = arg.cast::<Node<S, T>>();
    if node.is_null() {
        return;
    }
    // SAFETY: the node was built by `build`, which wrote `home`, a `&'static ThreadStates`.
    let home = unsafe { &*(*ptr::addr_of!((*node).home)) };
    let st = node.cast::<S>();
    // Frees from later destructors must not reach the state being retired.
    if T::get() == st {
        T::set(home.sentinel());
    }
    // SAFETY: the exiting thread's own active state, which it no longer uses.
    unsafe { S::flush(st) };
    let mut f = home.free.lock();
    // SAFETY: the node is ours until it is on the list.
    unsafe { (*node).next_free = f.head };
    f.head = node;
}

#[cfg(test)]
mod tests {
    use core::cell::Cell;
    use std::sync::Barrier;
    use std::thread;
    use std::vec::Vec;

    use hak_sync::stat::LocalCounter;

    use super::*;

    /// A state that counts what the kit does to it.
    #[derive(Debug)]
    #[repr(C)]
    struct Counted {
        active: bool,
        /// Written by the thread using the state (activations, flushes, work), read by the
        /// test after that thread is gone or through `for_each`.
        activations: LocalCounter,
        flushes: LocalCounter,
        work: LocalCounter,
    }

    const fn inactive() -> Counted {
        Counted {
            active: false,
            activations: LocalCounter::new(),
            flushes: LocalCounter::new(),
            work: LocalCounter::new(),
        }
    }

    // SAFETY: nothing writes an inactive `Counted` (the tests only `work` on active states);
    // `is_active` only reads; nothing in it belongs to a thread.
    unsafe impl PerThread for Counted {
        unsafe fn init_in_place(this: *mut Self) {
            // SAFETY: writable memory for a `Counted` (contract).
            unsafe { this.write(inactive()) };
        }
        unsafe fn is_active(this: *const Self) -> bool {
            // SAFETY: a live state (contract).
            unsafe { (*this).active }
        }
        unsafe fn activate(this: *mut Self) {
            // SAFETY: a state nobody else uses (contract).
            unsafe {
                (*this).active = true;
                (*this).activations.add(1);
            }
        }
        unsafe fn flush(this: *mut Self) {
            // SAFETY: the calling thread's active state (contract).
            unsafe { (*this).flushes.add(1) };
        }
    }

    /// A kit of its own per test (tests run in parallel): a static, a thread-local and the
    /// marker type tying them together.
    macro_rules! kit {
        ($states:ident, $slot:ident) => {
            static OS: Os = Os::new();
            static $states: ThreadStates<Counted, $slot> = ThreadStates::new(&OS, inactive());
            std::thread_local! {
                static CURRENT: Cell<*mut Counted> = const { Cell::new($states.sentinel()) };
            }
            struct $slot;
            // SAFETY: const-initialised at the kit's sentinel, no `Drop`.
            unsafe impl StateSlot<Counted> for $slot {
                fn get() -> *mut Counted {
                    CURRENT.get()
                }
                fn set(state: *mut Counted) {
                    CURRENT.set(state)
                }
            }
        };
    }

    /// A state pointer handed back by a test thread (a pointer, so it keeps its provenance).
    struct Sent(*mut Counted);
    // SAFETY: only read after the thread that used the state is gone (counters, any thread).
    unsafe impl Send for Sent {}

    /// Reads a counter of a state (no thread uses it, or only the caller).
    fn read(p: *const Counted, f: fn(&Counted) -> &LocalCounter) -> u64 {
        // SAFETY: states are never unmapped; counters are safe to read from any thread.
        f(unsafe { &*p }).get()
    }

    #[test]
    fn a_thread_starts_on_the_sentinel_and_builds_its_state_once() {
        kit!(STATES, Slot);
        thread::spawn(|| {
            let s0 = STATES.current();
            assert_eq!(s0, STATES.sentinel());
            // SAFETY: the sentinel.
            assert!(!unsafe { Counted::is_active(s0) });
            let s = STATES.current_or_init();
            assert!(!s.is_null() && s != s0);
            assert_eq!(STATES.current(), s);
            assert_eq!(STATES.current_or_init(), s, "an active thread keeps its state");
            assert_eq!(read(s, |c| &c.activations), 1);
            assert_eq!(s as usize % hak_os::page_size(), 0, "states start pages of their own");
        })
        .join()
        .unwrap();
        assert_eq!(STATES.counts(), StateCounts { built: 1, recycled: 0 });
        assert_eq!(ThreadStates::<Counted, Slot>::SENTINEL_OFFSET, 0);
        assert_eq!(STATES.sentinel().cast_const().cast(), ptr::addr_of!(STATES));
    }

    #[test]
    fn thread_exit_flushes_the_state_and_the_next_thread_gets_it_with_its_counts() {
        kit!(STATES, Slot);
        let first = thread::spawn(|| {
            let s = STATES.current_or_init();
            // SAFETY: this thread's active state.
            unsafe { (*s).work.add(5) };
            Sent(s)
        })
        .join()
        .unwrap()
        .0;
        assert_eq!(read(first, |c| &c.flushes), 1, "flushed by the exit destructor");
        let second = thread::spawn(|| {
            let s = STATES.current_or_init();
            // SAFETY: this thread's active state.
            unsafe { (*s).work.add(2) };
            Sent(s)
        })
        .join()
        .unwrap()
        .0;
        assert_eq!(second, first, "the retired state was recycled");
        assert_eq!(read(first, |c| &c.activations), 2);
        assert_eq!(read(first, |c| &c.flushes), 2);
        assert_eq!(read(first, |c| &c.work), 7, "counters carry over a recycling");
        assert_eq!(STATES.counts(), StateCounts { built: 1, recycled: 1 });
    }

    #[test]
    fn threads_alive_together_get_states_of_their_own_and_all_are_listed() {
        kit!(STATES, Slot);
        const N: usize = 4;
        let barrier = Barrier::new(N);
        let mut got: Vec<usize> = thread::scope(|sc| {
            let hs: Vec<_> = (0..N)
                .map(|_| {
                    sc.spawn(|| {
                        let s = STATES.current_or_init() as usize;
                        barrier.wait(); // nobody retires a state before all have one
                        s
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        got.sort_unstable();
        got.dedup();
        assert_eq!(got.len(), N);
        let mut listed = Vec::new();
        STATES.for_each(|p| listed.push(p as usize));
        listed.sort_unstable();
        assert_eq!(listed, got);
        STATES.for_each(|p| assert_eq!(read(p, |c| &c.flushes), 1));
        assert_eq!(STATES.counts(), StateCounts { built: N as u64, recycled: 0 });
    }

    #[test]
    fn flush_current_flushes_an_active_state_and_skips_the_sentinel() {
        kit!(STATES, Slot);
        thread::spawn(|| {
            STATES.flush_current(); // on the sentinel: nothing to do, nothing built
            assert_eq!(STATES.counts().built, 0);
            let s = STATES.current_or_init();
            STATES.flush_current();
            assert_eq!(read(s, |c| &c.flushes), 1);
            assert_eq!(STATES.current(), s, "a flush keeps the state");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn after_the_exit_destructor_the_thread_is_on_the_sentinel_and_can_build_again() {
        kit!(STATES, Slot);
        thread::spawn(|| {
            let s = STATES.current_or_init();
            // What the key's destructor does at exit, run here so the test can look after it.
            exit_thread::<Counted, Slot>(s.cast());
            assert_eq!(STATES.current(), STATES.sentinel(), "later frees miss");
            assert_eq!(read(s, |c| &c.flushes), 1);
            // An allocation from a later destructor: the same (retired) state comes back and
            // is registered again, so the real exit flushes it once more.
            assert_eq!(STATES.current_or_init(), s);
            Sent(s)
        })
        .join()
        .map(|s| assert_eq!(read(s.0, |c| &c.flushes), 2))
        .unwrap();
        assert_eq!(STATES.counts(), StateCounts { built: 1, recycled: 1 });
    }
}
