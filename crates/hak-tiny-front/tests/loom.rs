//! loom models of the thread front: a remote free racing the owner's refill of a full slab,
//! and racing the owner's thread-exit flush. No block is lost or handed out twice, and a slab
//! reaches the adopters' list exactly when it should.
//!
//! Run: `RUSTFLAGS="--cfg hak_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p hak-tiny-front --release --test loom`
#![cfg(hak_loom)]

use std::ptr::NonNull;

use hak_os::Os;
use hak_registry::{CacheLimits, Registry};
use hak_shared_pool::SharedPool;
use hak_superslab::LG_SUPERSLAB_DEFAULT;
use hak_tiny_front::{ThreadCache, NUM_CLASSES};

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

fn new_cache(pool: &'static SharedPool<'static>) -> Box<ThreadCache<'static>> {
    let mut tc = Box::new(ThreadCache::new(pool));
    tc.activate(1);
    tc
}

fn alloc(tc: &mut ThreadCache<'static>) -> NonNull<u8> {
    // SAFETY: our cache, valid class.
    let p = unsafe { ThreadCache::pop(tc, CLASS) };
    NonNull::new(p).unwrap_or_else(|| {
        tc.alloc_slow(CLASS).unwrap_or_else(|| {
            panic!("{:?} {:?}", tc.pool().stats(), tc.pool().registry().os().stats())
        })
    })
}

fn remote_free(pool: &'static SharedPool<'static>, p: usize) {
    let mut other = new_cache(pool);
    let p = NonNull::new(p as *mut u8).unwrap();
    // SAFETY: a live block handed to this thread; its slab is not ours.
    unsafe {
        if !ThreadCache::free_fast(&mut *other, CLASS, p.as_ptr(), LG) {
            other.free_slow(CLASS, p);
        }
    }
    // This thread exits: its cache gives everything back (the block may be in its bin if the
    // slab was detached when it was freed).
    other.flush();
}

#[test]
fn remote_free_races_refill_of_a_full_slab() {
    loom::model(|| {
        let pool = pool();
        let mut owner = new_cache(pool);
        // Fill the first slab completely.
        let first = alloc(&mut owner);
        let mut blocks = vec![first];
        loop {
            // SAFETY: our cache.
            let p = unsafe { ThreadCache::pop(&mut *owner, CLASS) };
            if !p.is_null() {
                blocks.push(NonNull::new(p).unwrap());
                continue;
            }
            if pool.stats().stage3_new + pool.stats().stage2_unused > 0 {
                break; // the next refill would need a new slab
            }
            let b = owner.alloc_slow(CLASS).unwrap();
            if pool.stats().stage2_unused > 0 {
                // That refill already moved on: the first slab is full and detached.
                blocks.push(b);
                break;
            }
            blocks.push(b);
        }
        let x = blocks[0].as_ptr() as usize;
        let t = loom::thread::spawn(move || remote_free(pool, x));
        // The owner refills while the free races in.
        let y = owner.alloc_slow(CLASS).unwrap().as_ptr() as usize;
        t.join().unwrap();
        let published = pool.stats().published;
        if y == x {
            assert_eq!(published, 0, "collected by the owner: nobody publishes");
        } else {
            assert!(published <= 1, "published at most once");
        }
        assert!(blocks.iter().all(|b| b.as_ptr() as usize != y || y == x), "no block twice");
        drop(owner);
        drop_pool(pool);
    });
}

#[test]
fn remote_free_races_thread_exit() {
    loom::model(|| {
        let pool = pool();
        let mut owner = new_cache(pool);
        let x = alloc(&mut owner).as_ptr() as usize;
        let t = loom::thread::spawn(move || remote_free(pool, x));
        owner.flush(); // thread exit
        t.join().unwrap();
        // Whatever the interleaving, the slab ends up released, either by the flush (the free
        // came first) or by the pool's trim after the free (the slab was published).
        pool.trim();
        assert_eq!(pool.stats().releases, 1, "{:?}", pool.stats());
        pool.check_invariants().unwrap();
        drop(owner);
        drop_pool(pool);
    });
}
