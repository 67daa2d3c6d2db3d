//! The decay tick: freed memory that stays unused goes back to the OS after a delay without the
//! program calling `trim()`, and without a background thread: slow paths look at the deadlines
//! now and then. The tiny tier's thread caches purge the shared pool on their own refills and
//! drains; the facade counts every slow-path call of a thread (tiny refills and drains, every
//! mid and big request) and every [`EVERY`] calls runs what is due in every tier: the pool's
//! purge, the mid tier's decay pass, and the big tier's eviction of blocks cached longer than
//! `HAKMEM_BIGCACHE_TTL_SEC`. So a program that keeps allocating a little in any tier keeps
//! shrinking in all of them — one that frees its big buffers and goes on with small objects
//! gets the big cache's memory back too.

use hak_sync::atomic::{AtomicU64, Ordering};

use crate::global::POOL;
use crate::large::{BIG, MID};
use crate::thread;

/// Slow-path calls of a thread between two looks at the deadlines.
const EVERY: u32 = 32;

/// When the big cache is next asked to evict expired blocks (monotonic ns). Checked without
/// the big tier's lock, so the lock is taken a few times per TTL at most.
static NEXT_BIG_EVICT: AtomicU64 = AtomicU64::new(0);

/// Time between two evictions of the big cache: a quarter of its TTL (set at initialisation
/// from `HAKMEM_BIGCACHE_TTL_SEC`), so a block leaves at most 1.25 TTL after it was cached.
static BIG_EVICT_PERIOD: AtomicU64 = AtomicU64::new(DEFAULT_BIG_TTL_NS / 4);

/// `HAKMEM_BIGCACHE_TTL_SEC`'s default, in ns.
pub(crate) const DEFAULT_BIG_TTL_NS: u64 = 2_000_000_000;

/// Records the big cache's TTL (initialisation).
pub(crate) fn set_big_ttl(ttl_ns: u64) {
    BIG_EVICT_PERIOD.store((ttl_ns / 4).max(1_000_000), Ordering::Relaxed);
}

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
    run_due();
}

#[cold]
#[inline(never)]
fn run_due() {
    POOL.maybe_purge();
    let now = hak_os::monotonic_ns();
    MID.decay(now);
    let due = NEXT_BIG_EVICT.load(Ordering::Relaxed);
    // One thread per period wins the exchange and evicts; the others go on.
    if now >= due
        && NEXT_BIG_EVICT
            .compare_exchange(
                due,
                now + BIG_EVICT_PERIOD.load(Ordering::Relaxed),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    {
        BIG.evict_expired();
    }
}
