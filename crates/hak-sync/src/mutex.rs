//! A mutex without poisoning: `std`'s futex mutex normally (no allocation, `const` constructor),
//! loom's under `--cfg hak_loom`.
//!
//! hakmem never panics while holding a lock, so poisoning would only add a branch; a poisoned
//! lock is entered anyway.

#[cfg(hak_loom)]
use loom::sync as imp;
#[cfg(not(hak_loom))]
use std::sync as imp;
// loom reuses std's error types.
use std::sync::TryLockError;

/// A mutual-exclusion lock around `T`.
#[derive(Debug, Default)]
pub struct Mutex<T>(imp::Mutex<T>);

/// Proof of holding a [`Mutex`]; unlocks on drop.
#[derive(Debug)]
pub struct MutexGuard<'a, T>(imp::MutexGuard<'a, T>);

impl<T> Mutex<T> {
    crate::maybe_const_fn! {
        /// Creates an unlocked mutex holding `value`.
        pub fn new(value: T) -> Mutex<T> {
            Mutex(imp::Mutex::new(value))
        }
    }

    /// Blocks until the lock is held.
    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        MutexGuard(self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Takes the lock if it is free right now; `None` if another thread holds it.
    /// Callers use a failure as a measure of contention.
    #[inline]
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
    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> core::ops::DerefMut for MutexGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

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
}
