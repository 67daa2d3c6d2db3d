//! loom models of the cache protocol: put and take racing with a table doubling, and two takers
//! racing for one block. They drive `BigCache::cache_put` / `cache_take`, the very code
//! `dealloc` and `alloc` run after validation and before mapping. The registry's page map only
//! covers addresses below 16 MiB under loom, so the blocks (real 1 MiB-aligned mappings with
//! real headers) are not registered; unregistering them is then a no-op, as the model needs.
//! Under loom the table starts at 2 buckets and migrates 1 bucket per operation, so the second
//! put doubles it and the next operations run mid-migration.

use loom::sync::Arc;
use loom::thread;

use hak_os::Os;
use hak_registry::{Registry, GRANULE};

use crate::header::Header;
use crate::{BigCache, BigLimits};

static OS: Os = Os::new();

loom::lazy_static! {
    static ref REG: Registry<'static> = Registry::new(&OS);
}

const KEEP_ALL: BigLimits = BigLimits {
    max_bytes: usize::MAX,
    max_entries: usize::MAX,
    ttl_ns: u64::MAX,
    decommit_over: usize::MAX,
};

/// A LIVE block of `mib` MiB with a real header, as `alloc` would make it (unregistered).
fn block(mib: usize) -> usize {
    let len = mib * GRANULE;
    let base = OS.map(len, GRANULE).expect("map");
    // SAFETY: a fresh mapping, ours alone.
    unsafe { Header::init(base.as_ptr(), len, hak_os::page_size(), 1) };
    base.as_ptr() as usize
}

fn put(c: &BigCache<'_>, h: usize) {
    // SAFETY: `h` heads a block of ours that nobody else uses.
    unsafe { c.cache_put(h as *mut Header, 0) };
}

fn take(c: &BigCache<'_>, mib: usize) -> Option<usize> {
    c.cache_take((mib * GRANULE, 1), (hak_os::page_size(), 1), 0).map(|h| h as usize)
}

fn unmap(h: usize, mib: usize) {
    // SAFETY: a block taken back out of the cache, ours alone.
    unsafe { OS.unmap(core::ptr::NonNull::new(h as *mut u8).unwrap(), mib * GRANULE) }.unwrap();
}

#[test]
fn put_and_take_race_with_a_table_doubling() {
    loom::model(|| {
        let c = Arc::new(BigCache::new(&REG, KEEP_ALL));
        let (h1, h2, h3) = (block(1), block(2), block(3));
        put(&c, h1);
        let c2 = c.clone();
        let t = thread::spawn(move || {
            put(&c2, h2); // doubles 2 -> 4 buckets
            put(&c2, h3); // migrates under way
        });
        assert_eq!(take(&c, 1), Some(h1), "found before, during or after the doubling");
        put(&c, h1);
        t.join().unwrap();
        c.check_invariants();
        assert_eq!(c.stats().resizes, 1);
        for (h, mib) in [(h1, 1), (h2, 2), (h3, 3)] {
            assert_eq!(take(&c, mib), Some(h), "every block findable after the race");
            unmap(h, mib);
        }
        c.check_invariants();
    });
}

#[test]
fn two_takers_never_get_the_same_block() {
    loom::model(|| {
        let c = Arc::new(BigCache::new(&REG, KEEP_ALL));
        // The second block is more than 4x the request, so no taker may cut it down: the race
        // is over h1 alone.
        let (h1, h2) = (block(1), block(5));
        put(&c, h1);
        put(&c, h2); // the doubling: both takes run mid-migration
        let c2 = c.clone();
        let t = thread::spawn(move || take(&c2, 1));
        let mine = take(&c, 1);
        let theirs = t.join().unwrap();
        assert!(mine.is_some() != theirs.is_some(), "exactly one taker wins");
        assert_eq!(mine.or(theirs), Some(h1));
        unmap(h1, 1);
        c.check_invariants();
        assert_eq!(c.stats().cached_entries, 1);
    });
}
