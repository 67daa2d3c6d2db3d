//! Tests of the thread front against a real shared pool.

use core::ptr::NonNull;
use std::boxed::Box;
use std::collections::HashSet;
use std::vec::Vec;

use hak_os::Os;
use hak_registry::{CacheLimits, Registry};
use hak_shared_pool::SharedPool;
use hak_superslab::{SuperSlab, LG_SUPERSLAB_DEFAULT};
use proptest::prelude::*;

use crate::*;

const LG: u32 = LG_SUPERSLAB_DEFAULT;

struct World {
    pool: &'static SharedPool<'static>,
}

fn world() -> World {
    let os: &'static Os = Box::leak(Box::new(Os::new()));
    let reg: &'static Registry<'static> = Box::leak(Box::new(Registry::new(os)));
    let pool = Box::leak(Box::new(SharedPool::new(reg, LG, CacheLimits::DEFAULT)));
    World { pool }
}

fn cache(w: &World) -> Box<ThreadCache<'static>> {
    let mut tc = Box::new(ThreadCache::new(w.pool));
    tc.activate(4);
    tc
}

fn alloc(tc: &mut ThreadCache<'static>, class: usize) -> NonNull<u8> {
    // SAFETY: `tc` is ours; class in range.
    let p = unsafe { ThreadCache::pop(tc, class) };
    NonNull::new(p).unwrap_or_else(|| tc.alloc_slow(class).expect("memory"))
}

fn free(tc: &mut ThreadCache<'static>, class: usize, p: NonNull<u8>) {
    // SAFETY: `p` is a live block of `class` from this pool.
    unsafe {
        if !ThreadCache::free_fast(tc, class, p.as_ptr(), LG) {
            tc.free_slow(class, p);
        }
    }
}

#[test]
fn sentinel_misses_every_operation_without_writing() {
    let w = world();
    let tc = ThreadCache::new(w.pool);
    let p = &tc as *const ThreadCache<'static> as *mut ThreadCache<'static>;
    // SAFETY: capacity 0: pop and free_fast only read.
    unsafe {
        assert!(ThreadCache::pop(p, 0).is_null());
        let mut real = cache(&w);
        let b = alloc(&mut real, 0);
        assert!(!ThreadCache::free_fast(p, 0, b.as_ptr(), LG));
        free(&mut real, 0, b);
    }
    assert!(!tc.is_active());
}

#[test]
fn blocks_are_distinct_sized_and_reused_after_free() {
    let w = world();
    let mut tc = cache(&w);
    for (class, &bs) in CLASS_SIZES.iter().enumerate() {
        let bs = bs as usize;
        let blocks: Vec<NonNull<u8>> = (0..300).map(|_| alloc(&mut tc, class)).collect();
        let mut seen = HashSet::new();
        for b in &blocks {
            assert!(seen.insert(b.as_ptr() as usize));
            assert_eq!(b.as_ptr() as usize % (1 << bs.trailing_zeros()).min(4096), 0);
            // SAFETY: the block is ours and `bs` bytes long.
            unsafe { b.as_ptr().write_bytes(class as u8, bs) };
        }
        for b in &blocks {
            // SAFETY: still ours.
            assert!(unsafe { core::slice::from_raw_parts(b.as_ptr(), bs) }
                .iter()
                .all(|&x| x == class as u8));
        }
        for b in blocks {
            free(&mut tc, class, b);
        }
        let again = alloc(&mut tc, class);
        assert!(seen.contains(&(again.as_ptr() as usize)), "freed blocks are reused");
        free(&mut tc, class, again);
    }
}

#[test]
fn refills_grow_the_bin_towards_its_ceiling() {
    let w = world();
    let mut tc = cache(&w);
    let blocks: Vec<_> = (0..1000).map(|_| alloc(&mut tc, 3)).collect();
    let refills = tc.stats().refills.get();
    assert!(refills < 20, "batches grow: {refills} refills for 1000 blocks");
    for b in blocks {
        free(&mut tc, 3, b);
    }
    assert!(tc.stats().drains.get() > 0, "overflow drains in batches");
}

#[test]
fn emptied_slabs_go_back_to_the_pool() {
    let w = world();
    let mut tc = cache(&w);
    let class = 23; // 2 KiB blocks: a slab holds 32
    let blocks: Vec<_> = (0..32 * 6).map(|_| alloc(&mut tc, class)).collect();
    for b in blocks {
        free(&mut tc, class, b);
    }
    tc.flush();
    assert_eq!(tc.stats().bytes_out.get(), tc.stats().bytes_back.get());
    // Full slabs were detached and published when their blocks came back; the pool reclaims
    // the ones that emptied.
    w.pool.trim();
    assert!(w.pool.stats().releases >= 5, "{:?}", w.pool.stats());
}

#[test]
fn cross_thread_frees_come_back_to_the_owner() {
    let w = world();
    let mut owner = cache(&w);
    let class = 5;
    let blocks: Vec<usize> = (0..500).map(|_| alloc(&mut owner, class).as_ptr() as usize).collect();
    let pool = w.pool;
    std::thread::spawn(move || {
        let mut other = Box::new(ThreadCache::new(pool));
        other.activate(4);
        for b in blocks {
            let p = NonNull::new(b as *mut u8).unwrap();
            // SAFETY: live blocks handed over to this thread.
            unsafe {
                assert!(!ThreadCache::free_fast(&mut *other, class, p.as_ptr(), LG));
                other.free_slow(class, p);
            }
        }
        assert_eq!(other.stats().remote_frees.get(), 500);
    })
    .join()
    .unwrap();
    // The owner's refills collect the remote frees instead of acquiring new slabs.
    let before = w.pool.stats();
    let again: Vec<_> = (0..400).map(|_| alloc(&mut owner, class)).collect();
    let after = w.pool.stats();
    assert_eq!(after.stage3_new, before.stage3_new, "no new SuperSlab");
    for b in again {
        free(&mut owner, class, b);
    }
    owner.flush();
}

#[test]
fn flush_gives_up_every_slab_and_others_adopt_them() {
    let w = world();
    let mut a = cache(&w);
    let class = 8;
    let live: Vec<usize> = (0..100).map(|_| alloc(&mut a, class).as_ptr() as usize).collect();
    a.flush();
    for &b in &live {
        // SAFETY: live block.
        let ss = unsafe { SuperSlab::from_block(b as *const u8, LG) };
        assert_eq!(ss.slab_of(b as *const u8).owner(), 0, "no slab stays owned after flush");
    }
    let mut b = cache(&w);
    let x = alloc(&mut b, class);
    assert!(w.pool.stats().stage0_adopted >= 1, "the published slab is adopted");
    free(&mut b, class, x);
    for p in live {
        free(&mut b, class, NonNull::new(p as *mut u8).unwrap());
    }
    b.flush();
    w.pool.check_invariants().unwrap();
}

#[test]
fn free_without_cache_uses_the_remote_path() {
    let w = world();
    let mut a = cache(&w);
    let p = alloc(&mut a, 2);
    // SAFETY: live tiny block of this pool; this "thread" owns no slab of its own.
    assert_eq!(unsafe { free_without_cache(w.pool, p) }, 48);
    let q = alloc(&mut a, 2);
    free(&mut a, 2, q);
}

#[test]
fn os_refusal_is_none_and_recovers() {
    let w = world();
    let mut a = cache(&w);
    w.pool.registry().os().fail_next_maps(1);
    assert!(a.alloc_slow(4).is_none());
    let p = alloc(&mut a, 4);
    free(&mut a, 4, p);
}

proptest! {
    /// Random alloc/free across classes on two caches (with cross frees): blocks never overlap
    /// and keep their contents while others come and go.
    #[test]
    fn random_ops_keep_blocks_disjoint_and_intact(ops in proptest::collection::vec((0u8..3, 0usize..NUM_CLASSES, any::<u16>()), 1..300)) {
        let w = world();
        let mut caches = [cache(&w), cache(&w)];
        let mut live: Vec<(usize, usize, u8)> = Vec::new(); // (addr, class, fill)
        for (k, (op, class, x)) in ops.into_iter().enumerate() {
            let who = (x & 1) as usize;
            if op < 2 || live.is_empty() {
                let p = alloc(&mut caches[who], class).as_ptr() as usize;
                let bs = CLASS_SIZES[class] as usize;
                for &(q, qc, _) in &live {
                    let qs = CLASS_SIZES[qc] as usize;
                    prop_assert!(p + bs <= q || q + qs <= p, "overlap");
                }
                let fill = k as u8;
                // SAFETY: fresh block of `bs` bytes.
                unsafe { (p as *mut u8).write_bytes(fill, bs) };
                live.push((p, class, fill));
            } else {
                let (p, c, fill) = live.swap_remove(x as usize % live.len());
                let bs = CLASS_SIZES[c] as usize;
                // SAFETY: live block of `bs` bytes.
                let ok = unsafe { core::slice::from_raw_parts(p as *const u8, bs) }.iter().all(|&b| b == fill);
                prop_assert!(ok, "contents changed");
                free(&mut caches[who], c, NonNull::new(p as *mut u8).unwrap());
            }
        }
        for (p, c, _) in live {
            free(&mut caches[0], c, NonNull::new(p as *mut u8).unwrap());
        }
        for c in caches.iter_mut() {
            c.flush();
        }
        w.pool.check_invariants().unwrap();
    }
}
