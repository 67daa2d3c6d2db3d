//! loom model: two threads acquire and release slabs concurrently; each gets a distinct slab,
//! released slots are reused, and the pool's invariants hold at the end.
//!
//! Run: `RUSTFLAGS="--cfg hak_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p hak-shared-pool --release --test loom`
#![cfg(hak_loom)]

use hak_os::Os;
use hak_registry::{CacheLimits, Registry};
use hak_shared_pool::SharedPool;
use hak_superslab::{Inbox, LG_SUPERSLAB_DEFAULT};

/// `SharedPool::acquire` for the model's owners, which are leaked (valid and in place for
/// every slab's life).
fn acq(
    pool: &SharedPool<'static>,
    class: usize,
    bs: u32,
    owner: &'static Inbox,
) -> Option<hak_shared_pool::Acquired> {
    // SAFETY: see above.
    unsafe { pool.acquire(class, bs, owner) }
}

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
        let owners: &'static [Inbox; 3] =
            Box::leak(Box::new([Inbox::new(), Inbox::new(), Inbox::new()]));
        // One SuperSlab exists before the race (the model is about slots, not mapping).
        let first = acq(pool, 0, 64, &owners[0]).unwrap();
        let t = loom::thread::spawn(move || {
            let a = acq(pool, 1, 64, &owners[1]).unwrap();
            let id = a.slab.as_ptr() as usize;
            // SAFETY: owned and empty.
            unsafe { pool.release(a.slab) };
            id
        });
        let b = acq(pool, 1, 64, &owners[2]).unwrap();
        // SAFETY: an ACTIVE slab's SuperSlab is mapped.
        let owner = unsafe { b.slab.owner() };
        assert_eq!(owner, &owners[2] as *const Inbox, "nobody else took our slab");
        let theirs = t.join().unwrap();
        let mine = b.slab.as_ptr() as usize;
        assert!(mine != theirs || b.stage == hak_shared_pool::Stage::EmptySameClass);
        // SAFETY: owned and empty.
        unsafe {
            pool.release(b.slab);
            pool.release(first.slab);
        }
        pool.check_invariants().unwrap();
        // SAFETY: every thread is joined and no slab is in use: drop the pool (unmapping its
        // SuperSlabs) so iterations do not pile up mappings.
        drop(unsafe {
            Box::from_raw(pool as *const SharedPool<'static> as *mut SharedPool<'static>)
        });
    });
}
