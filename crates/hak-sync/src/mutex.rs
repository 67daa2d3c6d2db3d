//! A mutex without poisoning that a `fork` handler can hold across `fork()`: a futex lock of
//! our own normally, loom's under `--cfg hak_loom`.
//!
//! Why not `std::sync::Mutex`: a process that forks while another thread holds an allocator
//! lock gets a child in which that lock is held forever (only the forking thread survives).
//! The cure is `pthread_atfork`: the prepare handler takes every lock, the parent and child
//! handlers release them. That needs a lock that can be taken without keeping a guard around
//! and released later by a different call ([`Mutex::fork_lock`] / [`Mutex::fork_unlock`]);
//! std's mutex cannot be unlocked without its guard.
//!
//! The lock word: 0 free, 1 held, 2 held with (possible) sleepers. `lock` tries 0 -> 1, spins
//! briefly, then marks the word 2 and sleeps on it with `FUTEX_WAIT`; `unlock` swaps in 0 and
//! wakes one sleeper if the word was 2 (the Drepper "futexes are tricky" mutex 2). Never
//! allocates, never panics. hakmem never panics while holding a lock, so there is no poisoning.

#[cfg(hak_loom)]
mod imp {
    use std::sync::TryLockError;

    /// A mutual-exclusion lock around `T` (loom's mutex under the model checker).
    #[derive(Debug, Default)]
    pub struct Mutex<T>(loom::sync::Mutex<T>);

    /// Proof of holding a [`Mutex`]; unlocks on drop.
    #[derive(Debug)]
    pub struct MutexGuard<'a, T>(loom::sync::MutexGuard<'a, T>);

    impl<T> Mutex<T> {
        /// Creates an unlocked mutex holding `value`.
        pub fn new(value: T) -> Mutex<T> {
            Mutex(loom::sync::Mutex::new(value))
        }
        /// Blocks until the lock is held.
        pub fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard(self.0.lock().unwrap_or_else(|e| e.into_inner()))
        }
        /// Takes the lock if it is free right now.
        pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            match self.0.try_lock() {
                Ok(g) => Some(MutexGuard(g)),
                Err(TryLockError::Poisoned(e)) => Some(MutexGuard(e.into_inner())),
                Err(TryLockError::WouldBlock) => None,
            }
        }
    }

    impl<T> core::ops::Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            &self.0
        }
    }
    impl<T> core::ops::DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            &mut self.0
        }
    }
}

#[cfg(not(hak_loom))]
mod imp {
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicU32, Ordering};

    const FREE: u32 = 0;
    const HELD: u32 = 1;
    const CONTENDED: u32 = 2;
    /// Spins before sleeping: critical sections here are short (list edits).
    const SPINS: u32 = 100;

    /// A mutual-exclusion lock around `T`. See the module docs.
    pub struct Mutex<T> {
        word: AtomicU32,
        value: UnsafeCell<T>,
    }

    // SAFETY: the lock serialises every access to `value`, so sharing the mutex shares `T`
    // between threads one at a time, which needs `T: Send` only (as for std's mutex).
    unsafe impl<T: Send> Sync for Mutex<T> {}
    // SAFETY: moving the mutex moves the `T`.
    unsafe impl<T: Send> Send for Mutex<T> {}

    impl<T: Default> Default for Mutex<T> {
        fn default() -> Self {
            Mutex::new(T::default())
        }
    }

    impl<T> core::fmt::Debug for Mutex<T> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.debug_struct("Mutex").field("word", &self.word.load(Ordering::Relaxed)).finish()
        }
    }

    /// Proof of holding a [`Mutex`]; unlocks on drop.
    pub struct MutexGuard<'a, T> {
        m: &'a Mutex<T>,
    }

    impl<T> core::fmt::Debug for MutexGuard<'_, T> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str("MutexGuard")
        }
    }

    impl<T> Mutex<T> {
        /// Creates an unlocked mutex holding `value`.
        pub const fn new(value: T) -> Mutex<T> {
            Mutex { word: AtomicU32::new(FREE), value: UnsafeCell::new(value) }
        }

        /// Blocks until the lock is held.
        #[inline]
        pub fn lock(&self) -> MutexGuard<'_, T> {
            if self.word.compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed).is_err()
            {
                self.lock_contended();
            }
            MutexGuard { m: self }
        }

        #[cold]
        fn lock_contended(&self) {
            for _ in 0..SPINS {
                if self.word.load(Ordering::Relaxed) == FREE
                    && self
                        .word
                        .compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                {
                    return;
                }
                core::hint::spin_loop();
            }
            // Mark the word contended; whoever unlocks will wake a sleeper. If the swap finds it
            // free we own it (marked contended, which costs at most one spurious wake).
            while self.word.swap(CONTENDED, Ordering::Acquire) != FREE {
                futex_wait(&self.word, CONTENDED);
            }
        }

        /// Takes the lock if it is free right now; `None` if another thread holds it.
        /// Callers use a failure as a measure of contention.
        #[inline]
        pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            // Not `then_some`: its argument is built (and, on failure, dropped, which would
            // unlock another thread's lock) whatever the outcome.
            match self.word.compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => Some(MutexGuard { m: self }),
                Err(_) => None,
            }
        }

        #[inline]
        fn unlock(&self) {
            if self.word.swap(FREE, Ordering::Release) == CONTENDED {
                futex_wake(&self.word);
            }
        }

        /// Takes the lock and keeps it without a guard: for a `pthread_atfork` prepare handler,
        /// which must hold every allocator lock across `fork()`. Pair with
        /// [`Mutex::fork_unlock`] in both the parent and the child handler.
        pub fn fork_lock(&self) {
            core::mem::forget(self.lock());
        }

        /// Releases a lock taken by [`Mutex::fork_lock`]. In a forked child the lock word may
        /// still say "contended" (threads of the parent were waiting); they do not exist in the
        /// child, and the wake finds no one.
        ///
        /// # Safety
        /// The calling thread took the lock with `fork_lock` (or is the child of the thread that
        /// did) and no guard of it exists.
        pub unsafe fn fork_unlock(&self) {
            self.unlock();
        }
    }

    impl<T> core::ops::Deref for MutexGuard<'_, T> {
        type Target = T;
        #[inline]
        fn deref(&self) -> &T {
            // SAFETY: the guard proves the lock is held, so no one else touches the value.
            unsafe { &*self.m.value.get() }
        }
    }

    impl<T> core::ops::DerefMut for MutexGuard<'_, T> {
        #[inline]
        fn deref_mut(&mut self) -> &mut T {
            // SAFETY: as for `deref`, and `&mut self` makes this the only borrow via the guard.
            unsafe { &mut *self.m.value.get() }
        }
    }

    impl<T> Drop for MutexGuard<'_, T> {
        #[inline]
        fn drop(&mut self) {
            self.m.unlock();
        }
    }

    /// Sleeps while `*word == expected` (returns at once otherwise, or on a wake or signal).
    fn futex_wait(word: &AtomicU32, expected: u32) {
        // SAFETY: FUTEX_WAIT reads the aligned u32 at `word`, which lives as long as the call.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                expected,
                core::ptr::null::<libc::timespec>(),
            );
        }
    }

    /// Wakes one thread sleeping on `word`.
    fn futex_wake(word: &AtomicU32) {
        // SAFETY: FUTEX_WAKE only uses the address as a key.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                1,
            );
        }
    }
}

pub use imp::{Mutex, MutexGuard};

#[cfg(all(test, not(hak_loom)))]
mod tests {
    use super::Mutex;

    #[test]
    fn try_lock_fails_while_held_and_succeeds_after() {
        let m = Mutex::new(5u32);
        let g = m.lock();
        assert!(m.try_lock().is_none());
        drop(g);
        let mut g = m.try_lock().expect("free lock");
        *g += 1;
        drop(g);
        assert_eq!(*m.lock(), 6);
    }

    #[test]
    fn a_failed_try_lock_leaves_the_holder_s_lock_alone() {
        let m = Mutex::new(0u32);
        let g = m.lock();
        for _ in 0..3 {
            assert!(m.try_lock().is_none());
        }
        assert!(m.try_lock().is_none(), "still held by `g`");
        drop(g);
    }

    #[test]
    fn fork_lock_holds_until_fork_unlock() {
        let m = Mutex::new(0u32);
        m.fork_lock();
        assert!(m.try_lock().is_none(), "held without a guard");
        // SAFETY: taken by fork_lock just above, no guard exists.
        unsafe { m.fork_unlock() };
        assert!(m.try_lock().is_some());
    }

    #[test]
    fn contended_lock_serialises_increments() {
        // Miri interprets every instruction: a few hundred rounds still make the threads meet.
        const ROUNDS: u64 = if cfg!(miri) { 300 } else { 20_000 };
        let m = std::sync::Arc::new(Mutex::new(0u64));
        let threads: std::vec::Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        *m.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*m.lock(), 4 * ROUNDS);
    }
}
