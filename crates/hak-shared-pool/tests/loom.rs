//! loom model: two threads acquire and release slabs concurrently; each gets a distinct slab,
//! released slots are reused, and the pool's invariants hold at the end.
//!
//! Run: `RUSTFLAGS="--cfg hak_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p hak-shared-pool --release --test loom`
#![cfg(hak_loom)]

use hak_os::Os;
use hak_registry::{CacheLimits, Registry};
use hak_shared_pool::SharedPool;
use hak_superslab::LG_SUPERSLAB_DEFAULT;

#[test]
fn acquire_release_race_hands_out_distinct_slabs() {
    loom::model(|| {
        let os: &'static Os = Box::leak(Box::new(Os::new()));
        let reg: &'static Registry<'static> = Box::leak(Box::new(Registry::new(os)));
        let pool: &'static SharedPool<'static> = Box::leak(Box::new(SharedPool::new(
            reg,
            LG_SUPERSLAB_DEFAULT,
            CacheLimits { decommit: false, ..CacheLimits::DEFAULT },
        )));
        // One SuperSlab exists before the race (the model is about slots, not mapping).
        let first = pool.acquire(0, 64, 1).unwrap();
        let t = loom::thread::spawn(move || {
            let a = pool.acquire(1, 64, 2).unwrap();
            let id = (a.superslab as *const _ as usize, a.index);
            // SAFETY: owned and empty.
            unsafe { pool.release(a.superslab, a.index) };
            id
        });
        let b = pool.acquire(1, 64, 3).unwrap();
        assert_eq!(b.slab().owner(), 3, "nobody else took our slab");
        let theirs = t.join().unwrap();
        let mine = (b.superslab as *const _ as usize, b.index);
        assert!(mine != theirs || b.stage == hak_shared_pool::Stage::EmptySameClass);
        // SAFETY: owned and empty.
        unsafe {
            pool.release(b.superslab, b.index);
            pool.release(first.superslab, first.index);
        }
        pool.check_invariants().unwrap();
        // SAFETY: every thread is joined and no slab is in use: drop the pool (unmapping its
        // SuperSlabs) so iterations do not pile up mappings.
        drop(unsafe {
            Box::from_raw(pool as *const SharedPool<'static> as *mut SharedPool<'static>)
        });
    });
}
