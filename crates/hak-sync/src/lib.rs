//! The sync shim every hakmem layer takes its concurrency primitives from.
//!
//! Normally the items here are `core`'s atomics, a futex-backed mutex from `std` (which never
//! allocates on Linux) and the CPU spin hint. Built with `RUSTFLAGS="--cfg hak_loom"` they become
//! `loom`'s, so the very code that runs in production is model-checked. A project cfg is used
//! instead of bare `loom` so third-party crates that react to `cfg(loom)` stay as they are.
//!
//! What it offers:
//! - [`atomic`]: `AtomicUsize`, `AtomicPtr`, `AtomicU32`, `AtomicU64`, `AtomicU8`, `AtomicBool`, `Ordering`,
//!   `fence`, mirroring `core::sync::atomic`; and [`atomic::acquire_fence_after`], the
//!   "`fence(Acquire)` after a relaxed load or CAS" that ThreadSanitizer understands.
//! - [`cell::UnsafeCell`] with loom's closure API (`with`, `with_mut`).
//! - [`Mutex`] and [`MutexGuard`]: `lock` and `try_lock`, no poisoning; [`Mutex::fork_lock`] and
//!   [`Mutex::fork_unlock`] hold a lock across `fork()` without a guard (not under loom).
//! - [`check!`] and [`fatal`]: internal consistency checks that report on stderr and abort
//!   instead of panicking (a panic allocates, and inside the allocator that hangs).
//! - [`hint::spin_loop`] and [`thread::yield_now`].
//! - [`stat`]: relaxed counters and gauges for statistics (always `core`'s, see its docs), and
//!   [`stats!`], which declares a layer's counters once: the live struct, its snapshot, merge
//!   and the named walk every report prints from.
//! - [`maybe_const_fn!`]: declares a function `const` except under loom, whose atomics have no
//!   `const fn new`.
//!
//! Concurrency contract: the same as the primitives it re-exports. Every hand-off between
//! threads in hakmem must go through these types so that loom can see it (a link written into
//! raw block memory is invisible to loom).
//!
//! # Example
//!
//! ```rust
//! use hak_sync::Mutex;
//!
//! static COUNT: Mutex<u64> = Mutex::new(0); // `const`: fine in a static, no allocation
//! *COUNT.lock() += 1;
//! assert_eq!(*COUNT.lock(), 1);
//!
//! // A `pthread_atfork` prepare handler holds the lock across `fork()` without a guard...
//! COUNT.fork_lock();
//! assert!(COUNT.try_lock().is_none());
//! // ...and the parent and child handlers release it.
//! // SAFETY: this thread took the lock with `fork_lock` and holds no guard of it.
//! unsafe { COUNT.fork_unlock() };
//! assert_eq!(COUNT.try_lock().map(|g| *g), Some(1));
//! ```
//!
//! A complete program with `pthread_atfork` handlers, forking while another thread takes the
//! locks: `cargo run -p hak-sync --example fork_lock` (`examples/fork_lock.rs`).
#![deny(unsafe_op_in_unsafe_fn)]
#![no_std]

extern crate std;

/// Atomic types, from `core` normally and from `loom` under `--cfg hak_loom`.
pub mod atomic {
    #[cfg(not(hak_loom))]
    pub use core::sync::atomic::{
        fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
    };
    #[cfg(hak_loom)]
    pub use loom::sync::atomic::{
        fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
    };

    /// The acquire half of "relaxed load (or CAS) of `a`, then `fence(Acquire)`": call it right
    /// after that load, passing the same atomic. Normally it is exactly `fence(Acquire)`.
    /// Built with `--cfg hak_sanitize` (what `cargo xtask sanitize` sets) it is an acquire
    /// load of `a` instead, because ThreadSanitizer does not model fences and would report the
    /// accesses the fence orders as races; std's `Arc` makes the same substitution under TSan.
    ///
    /// The substitute is only as strong as the fence if every write to `a` after the release
    /// store the fence pairs with is a read-modify-write (or itself a release): then the
    /// acquire load reads a value from that store's release sequence and synchronises with it.
    /// A plain relaxed store to `a` in between would break the chain; do not use the helper
    /// for such an atomic.
    #[inline]
    pub fn acquire_fence_after<A: AcquireLoad>(a: &A) {
        #[cfg(not(hak_sanitize))]
        {
            let _ = a;
            fence(Ordering::Acquire);
        }
        #[cfg(hak_sanitize)]
        a.acquire_load();
    }

    /// The atomics [`acquire_fence_after`] takes (sealed: implemented for this module's
    /// atomic types only).
    pub trait AcquireLoad: sealed::Sealed {
        /// Loads with `Ordering::Acquire` and discards the value.
        fn acquire_load(&self);
    }

    mod sealed {
        pub trait Sealed {}
    }

    macro_rules! acquire_load {
        ($($t:ty),* $(,)?) => {$(
            impl sealed::Sealed for $t {}
            impl AcquireLoad for $t {
                #[inline]
                fn acquire_load(&self) {
                    let _ = self.load(Ordering::Acquire);
                }
            }
        )*};
    }
    acquire_load!(AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize);

    impl<T> sealed::Sealed for AtomicPtr<T> {}
    impl<T> AcquireLoad for AtomicPtr<T> {
        #[inline]
        fn acquire_load(&self) {
            let _ = self.load(Ordering::Acquire);
        }
    }

    #[cfg(all(test, not(hak_loom)))]
    mod tests {
        use super::*;
        use core::cell::UnsafeCell;

        struct Slot(UnsafeCell<u64>);
        // SAFETY: the test hands the cell from writer to reader through `ready`.
        unsafe impl Sync for Slot {}
        impl Slot {
            fn get(&self) -> *mut u64 {
                self.0.get()
            }
        }

        /// Message passing through a relaxed load plus the helper. Without the acquire half
        /// the read of `data` races with its write: Miri's data-race detector (which models
        /// fences) and ThreadSanitizer (with `--cfg hak_sanitize`) report it.
        #[test]
        fn acquire_fence_after_orders_a_relaxed_load() {
            for _ in 0..if cfg!(miri) { 20 } else { 1000 } {
                let data = Slot(UnsafeCell::new(0));
                let ready = AtomicUsize::new(0);
                std::thread::scope(|s| {
                    s.spawn(|| {
                        // SAFETY: the reader touches `data` only after seeing `ready`.
                        unsafe { *data.get() = 42 };
                        ready.fetch_add(1, Ordering::Release);
                    });
                    while ready.load(Ordering::Relaxed) == 0 {
                        core::hint::spin_loop();
                        std::thread::yield_now();
                    }
                    acquire_fence_after(&ready);
                    // SAFETY: ordered after the writer's store by the release/acquire pair.
                    assert_eq!(unsafe { *data.get() }, 42);
                });
            }
        }
    }
}

/// Spin-wait hint.
pub mod hint {
    #[cfg(not(hak_loom))]
    pub use core::hint::spin_loop;
    #[cfg(hak_loom)]
    pub use loom::hint::spin_loop;
}

/// Yielding the CPU while waiting for another thread.
pub mod thread {
    /// Gives the CPU to another thread (`sched_yield`; loom's scheduler point under loom).
    #[cfg(not(hak_loom))]
    #[inline]
    pub fn yield_now() {
        std::thread::yield_now();
    }
    #[cfg(hak_loom)]
    pub use loom::thread::yield_now;
}

/// `UnsafeCell` with loom's closure-based access API.
pub mod cell {
    /// An `UnsafeCell` whose accesses loom can track; without loom, a zero-cost wrapper.
    #[cfg(not(hak_loom))]
    #[derive(Debug, Default)]
    #[repr(transparent)]
    pub struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

    #[cfg(not(hak_loom))]
    impl<T> UnsafeCell<T> {
        /// Wraps `value`.
        #[inline]
        pub const fn new(value: T) -> Self {
            Self(core::cell::UnsafeCell::new(value))
        }
        /// Calls `f` with a shared raw pointer to the contents.
        #[inline]
        pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }
        /// Calls `f` with a unique raw pointer to the contents.
        #[inline]
        pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    #[cfg(hak_loom)]
    pub use loom::cell::UnsafeCell;
}

mod mutex;
pub use mutex::{Mutex, MutexGuard};

mod check;
pub use check::{fatal, fatal_at};

pub mod stat;

/// Declares a function that is `const` normally and non-`const` under `--cfg hak_loom`,
/// because loom's atomics have no `const fn new`.
///
/// ```
/// hak_sync::maybe_const_fn! {
///     /// Doubles.
///     pub fn double(x: u32) -> u32 { x * 2 }
/// }
/// assert_eq!(double(2), 4);
/// ```
#[macro_export]
macro_rules! maybe_const_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident ($($args:tt)*) -> $ret:ty $body:block) => {
        #[cfg(not(hak_loom))]
        $(#[$meta])* $vis const fn $name($($args)*) -> $ret $body
        #[cfg(hak_loom)]
        $(#[$meta])* $vis fn $name($($args)*) -> $ret $body
    };
}
