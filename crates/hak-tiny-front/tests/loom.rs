//! loom models of the thread front: a batched remote free racing the owner's refill of its
//! full slab, and racing the owner's thread-exit flush. No block is lost or handed out twice,
//! a full slab comes back to its owner exactly once, and a slab reaches the adopters' list
//! only when its owner has gone.
//!
//! Run: `RUSTFLAGS="--cfg hak_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p hak-tiny-front --release --test loom`
#![cfg(hak_loom)]

use std::ptr::NonNull;

use hak_os::Os;
use hak_registry::{CacheLimits, Registry};
use hak_shared_pool::SharedPool;
use hak_superslab::LG_SUPERSLAB_DEFAULT;
use hak_tiny_front::{CacheShared, ThreadCache, NUM_CLASSES};

const LG: u32 = LG_SUPERSLAB_DEFAULT;
const CLASS: usize = NUM_CLASSES - 1; // 48 KiB blocks: 10 per slab under loom's 512 KiB slabs

fn pool() -> &'static SharedPool<'static> {
    let os: &'static Os = Box::leak(Box::new(Os::new()));
    let reg: &'static Registry<'static> = Box::leak(Box::new(Registry::new(os)));
    let limits = CacheLimits { decommit: false, ..CacheLimits::DEFAULT };
    Box::leak(Box::new(SharedPool::new(reg, LG, limits)))
}

fn drop_pool(p: &'static SharedPool<'static>) {
    // SAFETY: all threads joined, no block in use: unmap the pool's SuperSlabs.
    drop(unsafe { Box::from_raw(p as *const SharedPool<'static> as *mut SharedPool<'static>) });
}

fn new_cache(
    pool: &'static SharedPool<'static>,
) -> (Box<ThreadCache<'static>>, &'static CacheShared) {
    let shared: &'static CacheShared = Box::leak(Box::new(CacheShared::new()));
    // Built in place: the cache is too large for a loom thread's stack.
    let mut tc = Box::<ThreadCache<'static>>::new_zeroed();
    // SAFETY: zeroed memory of the right size and alignment, ours; then a valid inactive
    // cache. The shared part is leaked: stable and outlives the cache.
    let mut tc = unsafe {
        ThreadCache::init_in_place(tc.as_mut_ptr(), pool);
        tc.assume_init()
    };
    // SAFETY: as above.
    unsafe { tc.activate(shared, 1) };
    (tc, shared)
}

fn alloc(tc: &mut ThreadCache<'static>) -> NonNull<u8> {
    // SAFETY: our cache, valid class.
    let p = unsafe { ThreadCache::pop(tc, CLASS) };
    NonNull::new(p).unwrap_or_else(|| tc.alloc_slow(CLASS).expect("memory"))
}

/// Another thread frees `blocks` (blocks of a slab it does not own) as one batch, then exits.
fn remote_free(pool: &'static SharedPool<'static>, blocks: &[usize]) {
    let (mut other, _) = new_cache(pool);
    for &p in blocks {
        let p = NonNull::new(p as *mut u8).unwrap();
        // SAFETY: live blocks handed to this thread; their slab is not ours.
        unsafe {
            assert!(!ThreadCache::free_fast(&mut *other, CLASS, p.as_ptr(), LG));
            other.free_slow(CLASS, p);
        }
    }
    // Thread exit: the stash is handed over as one chain.
    other.flush();
}

fn free(tc: &mut ThreadCache<'static>, p: usize) {
    let p = NonNull::new(p as *mut u8).unwrap();
    // SAFETY: a live block of this cache's slabs.
    unsafe {
        if !ThreadCache::free_fast(tc, CLASS, p.as_ptr(), LG) {
            tc.free_slow(CLASS, p);
        }
    }
}

#[test]
fn remote_free_races_the_owner_freeing_into_its_full_slab() {
    loom::model(|| {
        let pool = pool();
        let (mut owner, _) = new_cache(pool);
        // Take every block of the first slab: the refill that finds it full arms it and moves
        // on to a second slab. Then empty the bin, so every block is out.
        let mut blocks = vec![alloc(&mut owner).as_ptr() as usize];
        while pool.stats().stage2_unused + pool.stats().stage3_new < 2 {
            blocks.push(alloc(&mut owner).as_ptr() as usize);
        }
        loop {
            // SAFETY: our cache.
            let p = unsafe { ThreadCache::pop(&mut *owner, CLASS) };
            if p.is_null() {
                break;
            }
            blocks.push(p as usize);
        }
        let x = blocks[0];
        let t = loom::thread::spawn(move || remote_free(pool, &[x]));
        // Meanwhile the owner frees three blocks of the full slab: the bin holds two, the
        // third drains one into the slab, which disarms it (racing the delivery).
        for &b in &blocks[1..4] {
            free(&mut owner, b);
        }
        t.join().unwrap();
        owner.check_invariants().unwrap();
        assert_eq!(pool.stats().published, 0, "the owner is alive: nothing is published");
        // The remotely freed block comes back to this owner.
        let mut got = Vec::new();
        while !got.contains(&x) {
            assert!(got.len() < 12, "the remote free was lost");
            let g = alloc(&mut owner).as_ptr() as usize;
            assert!(!got.contains(&g), "a block handed out twice");
            assert!(!blocks[4..].contains(&g), "a live block handed out");
            got.push(g);
        }
        owner.check_invariants().unwrap();
        owner.flush();
        drop(owner);
        drop_pool(pool);
    });
}

#[test]
fn batched_remote_free_races_thread_exit() {
    loom::model(|| {
        let pool = pool();
        let (mut owner, _) = new_cache(pool);
        let a = alloc(&mut owner).as_ptr() as usize;
        let b = alloc(&mut owner).as_ptr() as usize;
        let t = loom::thread::spawn(move || remote_free(pool, &[a, b]));
        owner.flush(); // thread exit
        t.join().unwrap();
        // Whatever the interleaving, the slab ends up released: by the flush (the batch came
        // first), or by the pool's trim after the batch (the slab was published).
        pool.trim();
        assert_eq!(pool.stats().releases, 1, "{:?}", pool.stats());
        pool.check_invariants().unwrap();
        drop(owner);
        drop_pool(pool);
    });
}
