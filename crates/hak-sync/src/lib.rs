//! The sync shim every hakmem layer takes its concurrency primitives from.
//!
//! Normally the items here are `core`'s atomics, a futex-backed mutex from `std` (which never
//! allocates on Linux) and the CPU spin hint. Built with `RUSTFLAGS="--cfg hak_loom"` they become
//! `loom`'s, so the very code that runs in production is model-checked. A project cfg is used
//! instead of bare `loom` so third-party crates that react to `cfg(loom)` stay as they are.
//!
//! What it offers:
//! - [`atomic`]: `AtomicUsize`, `AtomicPtr`, `AtomicU32`, `AtomicU64`, `AtomicU8`, `AtomicBool`, `Ordering`,
//!   `fence`, mirroring `core::sync::atomic`.
//! - [`cell::UnsafeCell`] with loom's closure API (`with`, `with_mut`).
//! - [`Mutex`] and [`MutexGuard`]: `lock` and `try_lock`, no poisoning; [`Mutex::fork_lock`] and
//!   [`Mutex::fork_unlock`] hold a lock across `fork()` without a guard (not under loom).
//! - [`check!`] and [`fatal`]: internal consistency checks that report on stderr and abort
//!   instead of panicking (a panic allocates, and inside the allocator that hangs).
//! - [`hint::spin_loop`] and [`thread::yield_now`].
//! - [`stat::StatCounter`]: a relaxed counter for statistics, always `core`'s (see its docs).
//! - [`maybe_const_fn!`]: declares a function `const` except under loom, whose atomics have no
//!   `const fn new`.
//!
//! Concurrency contract: the same as the primitives it re-exports. Every hand-off between
//! threads in hakmem must go through these types so that loom can see it (a link written into
//! raw block memory is invisible to loom).
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
