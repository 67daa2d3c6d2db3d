//! loom models of the cache protocol: puts and takes of blocks of several size classes racing
//! (every block findable, the accounting consistent), two takers racing for one block, and a
//! put whose eviction races a take. They drive `BigCache::cache_put` / `cache_take`, the very
//! code `dealloc` and `alloc` run after validation and before mapping. The registry's page map
//! only covers the low addresses under loom, so the blocks (real 1 MiB-aligned mappings with
//! real headers) are not registered; unregistering them is then a no-op, as the model needs.

use loom::sync::Arc;
use loom::thread;

use hak_os::Os;
use hak_registry::{Registry, GRANULE};

use crate::cache::Want;
use crate::header::Block;
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
fn block(mib: usize) -> Block {
    let len = mib * GRANULE;
    let base = OS.map(len, GRANULE).expect("map");
    // SAFETY: a fresh mapping, ours alone, with hak-os's provenance.
    let b = unsafe { Block::from_base(base) };
    // SAFETY: as above.
    unsafe { b.init(len, hak_os::page_size(), 1) };
    b
}

fn put(c: &BigCache<'_>, b: Block) {
    // SAFETY: `b` heads a block of ours that nobody else uses.
    unsafe { c.cache_put(b, 0) };
}

fn take(c: &BigCache<'_>, mib: usize) -> Option<Block> {
    let want = Want::plain(mib * GRANULE, 1, hak_os::page_size(), 1);
    c.cache_take(want, 0)
}

fn unmap(b: Block, mib: usize) {
    // SAFETY: a block taken back out of the cache, ours alone.
    unsafe { OS.unmap(b.base(), mib * GRANULE) }.unwrap();
}

#[test]
fn puts_and_takes_of_several_classes_race_and_every_block_stays_findable() {
    loom::model(|| {
        let c = Arc::new(BigCache::new(&REG, KEEP_ALL));
        let (h1, h2, h3) = (block(1), block(2), block(3));
        put(&c, h1);
        let c2 = c.clone();
        let t = thread::spawn(move || {
            put(&c2, h2);
            put(&c2, h3);
        });
        assert_eq!(take(&c, 1), Some(h1), "found before, during or after the other puts");
        put(&c, h1);
        t.join().unwrap();
        c.check_invariants();
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
        put(&c, h2);
        let c2 = c.clone();
        let t = thread::spawn(move || take(&c2, 1));
        let mine = take(&c, 1);
        let theirs = t.join().unwrap();
        assert!(mine.is_some() != theirs.is_some(), "exactly one taker wins");
        assert_eq!(mine.or(theirs), Some(h1));
        unmap(h1, 1);
        c.check_invariants();
        assert_eq!(c.stats().cached_entries, 1);
        assert_eq!(take(&c, 5), Some(h2));
        unmap(h2, 5);
    });
}

#[test]
fn an_eviction_racing_a_take_hands_each_block_to_one_side() {
    loom::model(|| {
        // Room for one block: the second put evicts the oldest, unless the taker got it first.
        // The second block is more than 4x the request, so the taker cannot cut it down.
        let c = Arc::new(BigCache::new(&REG, BigLimits { max_entries: 1, ..KEEP_ALL }));
        let (h1, h2) = (block(1), block(5));
        put(&c, h1);
        let c2 = c.clone();
        let t = thread::spawn(move || take(&c2, 1));
        put(&c, h2);
        let taken = t.join().unwrap();
        let st = c.stats();
        match taken {
            Some(h) => {
                assert_eq!(h, h1);
                assert_eq!(st.evictions, 0, "nothing to evict once h1 was taken");
                unmap(h1, 1);
            }
            None => assert_eq!(st.evictions, 1, "h1 was evicted (and unmapped) first"),
        }
        assert_eq!(st.cached_entries, 1);
        c.check_invariants();
        assert_eq!(take(&c, 5), Some(h2));
        unmap(h2, 5);
    });
}
