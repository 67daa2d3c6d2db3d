//! Unit tests of the shared pool against real SuperSlabs.

use std::vec::Vec;

use hak_os::Os;
use hak_registry::{CacheLimits, Registry};
use hak_superslab::{Inbox, SsRef, LG_SUPERSLAB_DEFAULT, LG_SUPERSLAB_MIN};
use hak_sync::stat::{StatPath, StatValue};

use crate::*;

/// Owner identities for tests (inboxes that live for the whole test run).
static OWNERS: [Inbox; 8] = [const { Inbox::new() }; 8];
const OWNER: &Inbox = &OWNERS[0];

/// `SharedPool::acquire` for the tests' owners, which are statics (valid and in place for
/// every slab's life).
fn acq(p: &SharedPool<'_>, class: usize, bs: u32, owner: &'static Inbox) -> Option<Acquired> {
    // SAFETY: see above.
    unsafe { p.acquire(class, bs, owner) }
}

fn ss_of(a: &Acquired) -> SsRef {
    a.slab.superslab()
}

fn pool<'r>(reg: &'r Registry<'r>) -> SharedPool<'r> {
    SharedPool::new(reg, LG_SUPERSLAB_DEFAULT, CacheLimits::DEFAULT)
}

#[test]
fn first_acquire_maps_a_superslab_then_uses_its_unused_slots() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    let a = acq(&p, 3, 64, OWNER).unwrap();
    assert_eq!(a.stage, Stage::NewSuperSlab);
    // SAFETY: the SuperSlab is mapped: the test holds a live slot of it.
    assert_eq!(unsafe { a.slab.owner() }, OWNER as *const Inbox);
    // SAFETY: the SuperSlab is mapped: the test holds a live slot of it.
    assert_eq!(unsafe { a.slab.block_size() }, 64);
    // SAFETY: the SuperSlab is mapped: the test holds a live slot of it.
    for _ in 1..unsafe { ss_of(&a).nslabs() } {
        let b = acq(&p, 3, 64, OWNER).unwrap();
        assert_eq!(b.stage, Stage::Unused);
        assert_eq!(ss_of(&b), ss_of(&a));
    }
    assert_eq!(acq(&p, 3, 64, OWNER).unwrap().stage, Stage::NewSuperSlab, "full: a new one");
    let st = p.stats();
    assert_eq!((st.superslabs_mapped, st.stage3_new, st.superslabs_live), (2, 2, 2));
    p.check_invariants().unwrap();
}

#[test]
fn released_slot_is_reused_by_its_class_first() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    let a = acq(&p, 5, 96, OWNER).unwrap();
    let _keep = acq(&p, 5, 96, OWNER).unwrap();
    // SAFETY: we own `a` and it has no live blocks.
    unsafe { p.release(a.slab) };
    // SAFETY: the SuperSlab is mapped: the test holds a live slot of it.
    assert!(unsafe { a.slab.owner() }.is_null());
    let b = acq(&p, 5, 96, OWNER).unwrap();
    assert_eq!(b.stage, Stage::EmptySameClass);
    assert_eq!(b.slab, a.slab);
    p.check_invariants().unwrap();
}

#[test]
fn empty_slot_of_another_class_is_used_before_mapping() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    let first = acq(&p, 1, 32, OWNER).unwrap();
    // SAFETY: the SuperSlab is mapped: the test holds a live slot of it.
    let n = unsafe { ss_of(&first).nslabs() };
    let all: Vec<_> = (1..n).map(|_| acq(&p, 1, 32, OWNER).unwrap()).collect();
    // SAFETY: we own these slabs, all empty.
    unsafe { p.release(all[0].slab) };
    let b = acq(&p, 7, 128, OWNER).unwrap();
    assert_eq!(b.stage, Stage::EmptyOtherClass, "EMPTY of class 1 serves class 7");
    // SAFETY: the SuperSlab is mapped: the test holds a live slot of it.
    assert_eq!(unsafe { b.slab.block_size() }, 128);
    assert_eq!(p.stats().superslabs_mapped, 1);
}

#[test]
fn a_resident_empty_slot_of_another_class_is_taken_before_an_unused_one() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    // One SuperSlab with UNUSED slots left, and a slab of class 1 just emptied (its pages
    // still resident: the purge delay has not passed).
    let a = acq(&p, 1, 32, OWNER).unwrap();
    let _keep = acq(&p, 1, 32, OWNER).unwrap();
    // SAFETY: owned, no block handed out.
    unsafe { p.release(a.slab) };
    let b = acq(&p, 7, 128, OWNER).unwrap();
    assert_eq!(b.stage, Stage::EmptyOtherClass, "warm memory first, not a fresh slot");
    assert_eq!(b.slab, a.slab);
    // Once purged, an EMPTY slot is no better than an UNUSED one: the UNUSED one is taken.
    // SAFETY: owned, empty.
    unsafe { p.release(b.slab) };
    p.purge(hak_os::monotonic_ns() + 100 * crate::DEFAULT_PURGE_DELAY_NS, false);
    let c = acq(&p, 9, 256, OWNER).unwrap();
    assert_eq!(c.stage, Stage::Unused);
    assert_ne!(c.slab, a.slab);
}

#[test]
fn superslab_with_no_active_slot_goes_to_the_cache_and_comes_back() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    let a = acq(&p, 2, 48, OWNER).unwrap();
    // SAFETY: the SuperSlab is mapped: the test holds a live slot of it.
    let n = unsafe { ss_of(&a).nslabs() };
    let mut rest: Vec<_> = (1..n).map(|_| acq(&p, 2, 48, OWNER).unwrap()).collect();
    let b = acq(&p, 2, 48, OWNER).unwrap(); // a second SuperSlab
    rest.push(a);
    for s in &rest {
        // SAFETY: we own them and they are empty.
        unsafe { p.release(s.slab) };
    }
    assert_eq!(p.stats().superslabs_live, 2, "kept warm while its slabs hold their pages");
    assert_eq!(p.stats().superslabs_cached, 0);
    p.check_invariants().unwrap();
    p.purge(hak_os::monotonic_ns(), true);
    let st = p.stats();
    assert_eq!(st.superslabs_cached, 1, "cached once purged");
    assert_eq!(st.cache.cached, 1);
    assert_eq!(st.superslabs_live, 1);
    // A report names the occupancy and the nested cache snapshot the pool filled in.
    let mut seen = Vec::new();
    st.visit(StatPath::root(), &mut |path, v| {
        if matches!(path.parts(), ["superslabs_live"] | ["cache", "cached"]) {
            seen.push(v);
        }
    });
    assert_eq!(seen, [1, 1]);
    p.check_invariants().unwrap();
    // The last live SuperSlab is kept, not cached.
    // SAFETY: as above.
    unsafe { p.release(b.slab) };
    assert_eq!(p.stats().superslabs_cached, 1);
    // Its slots serve again; once they run out the cached SuperSlab returns (an LRU hit).
    // SAFETY: the SuperSlab is mapped: the test holds a live slot of it.
    let m = unsafe { ss_of(&b).nslabs() };
    for _ in 0..m {
        acq(&p, 2, 48, OWNER).unwrap();
    }
    let c = acq(&p, 2, 48, OWNER).unwrap();
    assert_eq!(c.stage, Stage::NewSuperSlab);
    assert_eq!(p.stats().lru_hits, 1);
    assert_eq!(p.stats().superslabs_mapped, 2);
}

#[test]
fn empty_lists_grow_past_256_entries() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    let held: Vec<_> = (0..300).map(|_| acq(&p, 4, 64, OWNER).unwrap()).collect();
    // Keep one slot ACTIVE per SuperSlab so they stay in the pool, release the rest.
    let mut released = 0;
    for s in &held {
        if s.slab.index() != 0 {
            // SAFETY: owned and empty.
            unsafe { p.release(s.slab) };
            released += 1;
        }
    }
    assert!(released > 256);
    for _ in 0..released {
        assert_eq!(acq(&p, 4, 64, OWNER).unwrap().stage, Stage::EmptySameClass);
    }
    p.check_invariants().unwrap();
}

#[test]
fn published_slab_is_adopted_with_its_remote_frees() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    let a = acq(&p, 6, 112, OWNER).unwrap();
    let slab = a.slab;
    let mut blocks = [core::ptr::null_mut(); 8];
    // SAFETY: we own the slab; then give it up and free remotely as another thread would.
    unsafe {
        assert_eq!(slab.alloc_batch(&mut blocks), 8);
        slab.disown();
        p.publish(a.slab);
        for b in &blocks[..3] {
            let _ = slab.free_remote(core::ptr::NonNull::new(*b).unwrap());
        }
    }
    let b = acq(&p, 6, 112, &OWNERS[1]).unwrap();
    assert_eq!(b.stage, Stage::Adopted);
    // SAFETY: the SuperSlab is mapped: the test holds a live slot of it.
    assert_eq!(unsafe { b.slab.owner() }, &OWNERS[1] as *const Inbox);
    // SAFETY: we own it now.
    assert_eq!(unsafe { b.slab.counts() }.0, 5, "remote frees collected on adoption");
}

#[test]
fn trim_releases_abandoned_slabs_that_emptied() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    let _anchor = acq(&p, 0, 16, OWNER).unwrap();
    let a = acq(&p, 9, 192, OWNER).unwrap();
    let b = acq(&p, 9, 192, OWNER).unwrap();
    let mut x = [core::ptr::null_mut(); 2];
    // SAFETY: owner operations, then remote frees of every block of `a`.
    unsafe {
        a.slab.alloc_batch(&mut x);
        b.slab.alloc_batch(&mut x[..1]);
        a.slab.disown();
        b.slab.disown();
        p.publish(a.slab);
        p.publish(b.slab);
        for blk in x {
            let _ = a.slab.free_remote(core::ptr::NonNull::new(blk).unwrap());
        }
    }
    assert_eq!(p.trim(), 1, "`a` emptied; `b` still has a live block");
    let c = acq(&p, 9, 192, OWNER).unwrap();
    assert_eq!(c.stage, Stage::Adopted, "`b` is listed again");
    assert_eq!(c.slab, b.slab);
    p.check_invariants().unwrap();
}

#[test]
fn os_refusal_gives_none_and_the_pool_recovers() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    os.fail_next_maps(1);
    assert!(acq(&p, 0, 16, OWNER).is_none());
    assert!(acq(&p, 0, 16, OWNER).is_some());
}

#[test]
fn one_mib_superslabs_work() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = SharedPool::new(&reg, LG_SUPERSLAB_MIN, CacheLimits::DEFAULT);
    let a = acq(&p, 0, 16, OWNER).unwrap();
    // SAFETY: an ACTIVE slot keeps its SuperSlab mapped.
    unsafe {
        assert_eq!(ss_of(&a).size(), 1 << 20);
        assert_eq!(ss_of(&a).nslabs(), 16);
    }
}

#[test]
fn concurrent_acquire_release_keeps_the_invariants() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    std::thread::scope(|s| {
        for (t, owner) in OWNERS[..4].iter().enumerate() {
            let p = &p;
            s.spawn(move || {
                let mut held = Vec::new();
                for k in 0..500usize {
                    let a = acq(p, (t + k) % 8, 64, owner).unwrap();
                    held.push(a);
                    if k % 3 != 0 {
                        let r = held.swap_remove((k * 7) % held.len());
                        // SAFETY: owned and empty.
                        unsafe { p.release(r.slab) };
                    }
                }
                for r in held {
                    // SAFETY: as above.
                    unsafe { p.release(r.slab) };
                }
            });
        }
    });
    p.check_invariants().unwrap();
    p.purge(hak_os::monotonic_ns(), true);
    p.check_invariants().unwrap();
    assert_eq!(p.stats().superslabs_live, 1, "everything but the last SuperSlab was cached");
}

/// Resident pages of `[p, p+len)` (mincore), to see decommit happen; `None` under Miri,
/// which has no `mincore` (the purge counters are checked there instead).
fn resident_pages(p: *mut u8, len: usize) -> Option<usize> {
    if cfg!(miri) {
        return None;
    }
    let page = hak_os::page_size();
    let n = len.div_ceil(page);
    let mut v = std::vec![0u8; n];
    // SAFETY: a page-aligned range of our own mapping and a vector of one byte per page.
    let rc = unsafe { libc::mincore(p.cast(), len, v.as_mut_ptr()) };
    assert_eq!(rc, 0);
    Some(v.iter().filter(|&&b| b & 1 != 0).count())
}

/// Checks that `[p, p+len)` has `expect` resident pages, where the kernel can be asked.
fn assert_resident(p: *mut u8, len: usize, expect: usize, what: &str) {
    if let Some(n) = resident_pages(p, len) {
        assert_eq!(n, expect, "{what}");
    }
}

#[test]
fn empty_slabs_give_their_pages_back_after_the_purge_delay() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    // A long delay, and time moved forward by hand: the test must not depend on how fast it
    // runs (under Miri, milliseconds pass between any two lines).
    const DELAY: u64 = 10_000_000_000;
    p.set_purge_delay(DELAY);
    let anchor = acq(&p, 0, 16, OWNER).unwrap();
    let a = acq(&p, 3, 64, OWNER).unwrap();
    let (lo, hi) = ss_of(&a).slab_range(a.slab.index());
    let len = hi as usize - lo as usize;
    // SAFETY: we own the slab; touch every page of it, then give its blocks back.
    unsafe { lo.write_bytes(0xAB, len) };
    assert_resident(lo, len, len / hak_os::page_size(), "touched");
    // SAFETY: owned, no block handed out.
    unsafe { p.release(a.slab) };
    let now = hak_os::monotonic_ns();
    p.maybe_purge();
    p.purge(now, false);
    assert_eq!(p.stats().purged, 0, "not before the delay");
    assert_resident(lo, len, len / hak_os::page_size(), "still warm");
    p.purge(now + 2 * DELAY, false);
    assert_eq!(p.stats().purged, 1);
    assert_resident(lo, len, 0, "the slab's pages went back");
    p.check_invariants().unwrap();
    // The purged slot serves again, any class, reading zero.
    let b = acq(&p, 3, 64, OWNER).unwrap();
    assert_eq!(b.slab, a.slab);
    // SAFETY: we own it; its first block is in the purged range.
    unsafe {
        let blk = b.slab.alloc().unwrap();
        assert_eq!(blk.as_ptr().read(), 0);
        b.slab.free_local(blk);
        p.release(b.slab);
        p.release(anchor.slab);
    }
    p.check_invariants().unwrap();
}

#[test]
fn a_slot_reused_before_the_delay_is_not_purged() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    const DELAY: u64 = 10_000_000_000;
    p.set_purge_delay(DELAY);
    let _anchor = acq(&p, 0, 16, OWNER).unwrap();
    let a = acq(&p, 3, 64, OWNER).unwrap();
    // SAFETY: owned and empty.
    unsafe { p.release(a.slab) };
    let b = acq(&p, 3, 64, OWNER).unwrap();
    assert_eq!(b.slab, a.slab);
    p.purge(hak_os::monotonic_ns() + 2 * DELAY, false);
    assert_eq!(p.stats().purged, 0, "an ACTIVE slab is never purged");
    p.check_invariants().unwrap();
}

#[test]
fn trim_purges_every_empty_slab_at_once() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    let _anchor = acq(&p, 0, 16, OWNER).unwrap();
    let held: Vec<_> = (0..10).map(|i| acq(&p, 1 + i % 5, 64, OWNER).unwrap()).collect();
    for h in &held {
        // SAFETY: owned and empty.
        unsafe { p.release(h.slab) };
    }
    p.trim();
    assert_eq!(p.stats().purged, 10);
    p.check_invariants().unwrap();
}

#[test]
fn the_purge_schedule_releases_abandoned_slabs_that_emptied() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let p = pool(&reg);
    const DELAY: u64 = 10_000_000_000;
    p.set_purge_delay(DELAY);
    let _anchor = acq(&p, 0, 16, OWNER).unwrap();
    let a = acq(&p, 9, 192, OWNER).unwrap();
    let mut x = [core::ptr::null_mut(); 3];
    // SAFETY: owner operations, then remote frees of every block, as other threads would.
    unsafe {
        assert_eq!(a.slab.alloc_batch(&mut x), 3);
        a.slab.disown();
        p.publish(a.slab);
        for blk in x {
            let _ = a.slab.free_remote(core::ptr::NonNull::new(blk).unwrap());
        }
    }
    assert_eq!(p.stats().releases, 0);
    // No acquire of class 9 comes, no trim(): the purge schedule finds it.
    p.purge(hak_os::monotonic_ns() + 2 * DELAY, false);
    assert_eq!(p.stats().releases, 1, "the emptied abandoned slab went back");
    p.check_invariants().unwrap();
}
