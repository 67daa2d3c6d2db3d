//! The decay tick: freed memory that stays unused goes back to the OS after the purge delay
//! (`HAKMEM_PURGE_DELAY_MS`) without the program calling `trim()`, and without a background
//! thread: every tier's slow paths look at the deadline now and then. The tiny tier's thread
//! caches do it on their refills and drains; the mid and big tiers' paths, which the facade
//! runs for every request above the tiny tier, do it here every 32 calls per thread, so a
//! program that keeps allocating a little keeps shrinking.

use crate::global::POOL;
use crate::thread;

/// Calls between two looks at the deadlines.
const EVERY: u32 = 32;

/// Counts one slow-path call of the calling thread; every [`EVERY`] calls, runs whatever purge
/// is due. Cheap otherwise: a counter in the thread's state.
#[inline]
pub(crate) fn tick() {
    let ts = thread::current();
    // SAFETY: the calling thread's own state, or the sentinel (inactive, never written).
    unsafe {
        if !(*ts).tc.is_active() {
            return;
        }
        let t = (*ts).ticks.wrapping_add(1);
        (*ts).ticks = t;
        if !t.is_multiple_of(EVERY) {
            return;
        }
    }
    POOL.maybe_purge();
}
