//! Unit tests of the shared pool against real SuperSlabs.

use std::vec::Vec;

use hak_os::Os;
use hak_registry::{CacheLimits, Registry};
use hak_superslab::{LG_SUPERSLAB_DEFAULT, LG_SUPERSLAB_MIN};

use crate::*;

const OWNER: usize = 0x1000;

fn pool<'r>(reg: &'r Registry<'r>) -> SharedPool<'r> {
    SharedPool::new(reg, LG_SUPERSLAB_DEFAULT, CacheLimits::DEFAULT)
}

#[test]
fn first_acquire_maps_a_superslab_then_uses_its_unused_slots() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    let a = p.acquire(3, 64, OWNER).unwrap();
    assert_eq!(a.stage, Stage::NewSuperSlab);
    assert_eq!(a.slab().owner(), OWNER);
    assert_eq!(a.slab().block_size(), 64);
    for _ in 1..a.superslab.nslabs() {
        let b = p.acquire(3, 64, OWNER).unwrap();
        assert_eq!(b.stage, Stage::Unused);
        assert_eq!(b.superslab as *const _, a.superslab as *const _);
    }
    assert_eq!(p.acquire(3, 64, OWNER).unwrap().stage, Stage::NewSuperSlab, "full: a new one");
    let st = p.stats();
    assert_eq!((st.superslabs_mapped, st.stage3_new, st.superslabs_live), (2, 2, 2));
    p.check_invariants().unwrap();
}

#[test]
fn released_slot_is_reused_by_its_class_first() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    let a = p.acquire(5, 96, OWNER).unwrap();
    let _keep = p.acquire(5, 96, OWNER).unwrap();
    // SAFETY: we own `a` and it has no live blocks.
    unsafe { p.release(a.superslab, a.index) };
    assert_eq!(a.slab().owner(), 0);
    let b = p.acquire(5, 96, OWNER).unwrap();
    assert_eq!(b.stage, Stage::EmptySameClass);
    assert_eq!((b.superslab as *const _, b.index), (a.superslab as *const _, a.index));
    p.check_invariants().unwrap();
}

#[test]
fn empty_slot_of_another_class_is_used_before_mapping() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    let first = p.acquire(1, 32, OWNER).unwrap();
    let n = first.superslab.nslabs();
    let all: Vec<_> = (1..n).map(|_| p.acquire(1, 32, OWNER).unwrap()).collect();
    // SAFETY: we own these slabs, all empty.
    unsafe { p.release(all[0].superslab, all[0].index) };
    let b = p.acquire(7, 128, OWNER).unwrap();
    assert_eq!(b.stage, Stage::Unused, "EMPTY of class 1 serves class 7");
    assert_eq!(b.slab().block_size(), 128);
    assert_eq!(p.stats().superslabs_mapped, 1);
}

#[test]
fn superslab_with_no_active_slot_goes_to_the_cache_and_comes_back() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    let a = p.acquire(2, 48, OWNER).unwrap();
    let n = a.superslab.nslabs();
    let mut rest: Vec<_> = (1..n).map(|_| p.acquire(2, 48, OWNER).unwrap()).collect();
    let b = p.acquire(2, 48, OWNER).unwrap(); // a second SuperSlab
    rest.push(a);
    for s in &rest {
        // SAFETY: we own them and they are empty.
        unsafe { p.release(s.superslab, s.index) };
    }
    let st = p.stats();
    assert_eq!(st.superslabs_cached, 1);
    assert_eq!(st.cache.cached, 1);
    assert_eq!(st.superslabs_live, 1);
    p.check_invariants().unwrap();
    // The last live SuperSlab is kept, not cached.
    // SAFETY: as above.
    unsafe { p.release(b.superslab, b.index) };
    assert_eq!(p.stats().superslabs_cached, 1);
    // Its slots serve again; once they run out the cached SuperSlab returns (an LRU hit).
    let m = b.superslab.nslabs();
    for _ in 0..m {
        p.acquire(2, 48, OWNER).unwrap();
    }
    let c = p.acquire(2, 48, OWNER).unwrap();
    assert_eq!(c.stage, Stage::NewSuperSlab);
    assert_eq!(p.stats().lru_hits, 1);
    assert_eq!(p.stats().superslabs_mapped, 2);
}

#[test]
fn empty_lists_grow_past_256_entries() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    let held: Vec<_> = (0..300).map(|_| p.acquire(4, 64, OWNER).unwrap()).collect();
    // Keep one slot ACTIVE per SuperSlab so they stay in the pool, release the rest.
    let mut released = 0;
    for s in &held {
        if s.index != 0 {
            // SAFETY: owned and empty.
            unsafe { p.release(s.superslab, s.index) };
            released += 1;
        }
    }
    assert!(released > 256);
    for _ in 0..released {
        assert_eq!(p.acquire(4, 64, OWNER).unwrap().stage, Stage::EmptySameClass);
    }
    p.check_invariants().unwrap();
}

#[test]
fn published_slab_is_adopted_with_its_remote_frees() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    let a = p.acquire(6, 112, OWNER).unwrap();
    let slab = a.slab();
    let mut blocks = [core::ptr::null_mut(); 8];
    // SAFETY: we own the slab; then give it up and free remotely as another thread would.
    unsafe {
        assert_eq!(slab.alloc_batch(&mut blocks), 8);
        slab.disown();
        p.publish(a.superslab, a.index);
        for b in &blocks[..3] {
            let _ = slab.free_remote(core::ptr::NonNull::new(*b).unwrap());
        }
    }
    let b = p.acquire(6, 112, OWNER + 1).unwrap();
    assert_eq!(b.stage, Stage::Adopted);
    assert_eq!(b.slab().owner(), OWNER + 1);
    // SAFETY: we own it now.
    assert_eq!(unsafe { b.slab().counts() }.0, 5, "remote frees collected on adoption");
}

#[test]
fn trim_releases_abandoned_slabs_that_emptied() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    let _anchor = p.acquire(0, 16, OWNER).unwrap();
    let a = p.acquire(9, 192, OWNER).unwrap();
    let b = p.acquire(9, 192, OWNER).unwrap();
    let mut x = [core::ptr::null_mut(); 2];
    // SAFETY: owner operations, then remote frees of every block of `a`.
    unsafe {
        a.slab().alloc_batch(&mut x);
        b.slab().alloc_batch(&mut x[..1]);
        a.slab().disown();
        b.slab().disown();
        p.publish(a.superslab, a.index);
        p.publish(b.superslab, b.index);
        for blk in x {
            let _ = a.slab().free_remote(core::ptr::NonNull::new(blk).unwrap());
        }
    }
    assert_eq!(p.trim(), 1, "`a` emptied; `b` still has a live block");
    let c = p.acquire(9, 192, OWNER).unwrap();
    assert_eq!(c.stage, Stage::Adopted, "`b` is listed again");
    assert_eq!(c.index, b.index);
    p.check_invariants().unwrap();
}

#[test]
fn os_refusal_gives_none_and_the_pool_recovers() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    os.fail_next_maps(1);
    assert!(p.acquire(0, 16, OWNER).is_none());
    assert!(p.acquire(0, 16, OWNER).is_some());
}

#[test]
fn one_mib_superslabs_work() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = SharedPool::new(&reg, LG_SUPERSLAB_MIN, CacheLimits::DEFAULT);
    let a = p.acquire(0, 16, OWNER).unwrap();
    assert_eq!(a.superslab.size(), 1 << 20);
    assert_eq!(a.superslab.nslabs(), 16);
}

#[test]
fn concurrent_acquire_release_keeps_the_invariants() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    std::thread::scope(|s| {
        for t in 0..4usize {
            let p = &p;
            s.spawn(move || {
                let mut held = Vec::new();
                for k in 0..500usize {
                    let a = p.acquire((t + k) % 8, 64, OWNER + t).unwrap();
                    held.push(a);
                    if k % 3 != 0 {
                        let r = held.swap_remove((k * 7) % held.len());
                        // SAFETY: owned and empty.
                        unsafe { p.release(r.superslab, r.index) };
                    }
                }
                for r in held {
                    // SAFETY: as above.
                    unsafe { p.release(r.superslab, r.index) };
                }
            });
        }
    });
    p.check_invariants().unwrap();
    assert_eq!(p.stats().superslabs_live, 1, "everything but the last SuperSlab was cached");
}
