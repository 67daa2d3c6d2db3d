//! Unit and property tests of the SuperSlab box against real hak-os memory.

use core::ptr::NonNull;
use std::collections::HashSet;
use std::vec::Vec;

use hak_collections::{Adapter, Links, List};
use hak_os::Os;
use proptest::prelude::*;

use crate::*;

struct Region<'a> {
    os: &'a Os,
    ss: SsRef,
    len: usize,
}

impl Drop for Region<'_> {
    fn drop(&mut self) {
        // SAFETY: the test owns the mapping and nothing uses it any more.
        unsafe { self.os.unmap(self.ss.base(), self.len) }.unwrap();
    }
}

fn superslab(os: &Os, lg: u32) -> Region<'_> {
    let len = 1usize << lg;
    let base = os.map(len, len).unwrap();
    // SAFETY: a fresh aligned mapping of the right size, not shared.
    let ss = unsafe { SsRef::init(base, lg) };
    Region { os, ss, len }
}

/// An owner identity for tests that play the owner (kept alive by the test).
fn owner() -> std::boxed::Box<Inbox> {
    std::boxed::Box::new(Inbox::new())
}

fn assign(ss: SsRef, i: usize, bs: u32, me: &Inbox) -> SlabRef {
    // SAFETY: fresh slab of a live SuperSlab, exclusive in the test.
    unsafe {
        let s = ss.slab(i);
        s.assign(me, 3, bs);
        s
    }
}

fn nn(p: *mut u8) -> NonNull<u8> {
    NonNull::new(p).unwrap()
}

#[test]
fn init_formats_a_valid_header_for_2_and_1_mib() {
    let os = Os::new();
    for lg in [LG_SUPERSLAB_DEFAULT, LG_SUPERSLAB_MIN] {
        let r = superslab(&os, lg);
        // SAFETY: the region is mapped until `r` drops.
        unsafe {
            assert!(r.ss.is_valid());
            assert_eq!(r.ss.nslabs(), 1 << (lg - SLAB_SHIFT));
            assert_eq!(r.ss.size(), 1 << lg);
            for i in 0..r.ss.nslabs() {
                let s = r.ss.slab(i);
                assert!(s.owner().is_null(), "slabs start detached");
                assert_eq!((s.index(), s.superslab()), (i, r.ss), "a record knows its place");
            }
            r.ss.invalidate();
            assert!(!r.ss.is_valid());
        }
    }
}

#[test]
fn header_bytes_are_never_handed_out() {
    let os = Os::new();
    let r = superslab(&os, LG_SUPERSLAB_DEFAULT);
    let me = owner();
    let slab = assign(r.ss, 0, 16, &me);
    let header_end = r.ss.base().as_ptr() as usize + core::mem::size_of::<SuperSlab>();
    // SAFETY: we own the slab.
    while let Some(b) = unsafe { slab.alloc() } {
        assert!(b.as_ptr() as usize >= header_end);
        assert!(b.as_ptr() as usize >= r.ss.base().as_ptr() as usize + SuperSlab::data_offset());
    }
}

#[test]
fn carving_fills_the_slab_and_never_crosses_its_end() {
    let os = Os::new();
    let r = superslab(&os, LG_SUPERSLAB_DEFAULT);
    let me = owner();
    for (i, bs) in [(1usize, 16u32), (2, 48), (3, 1024), (4, 2048), (5, 1040)] {
        let slab = assign(r.ss, i, bs, &me);
        let (lo, hi) = r.ss.slab_range(i);
        let mut got = Vec::new();
        // SAFETY: we own the slab.
        while let Some(b) = unsafe { slab.alloc() } {
            let a = b.as_ptr() as usize;
            assert!(a >= lo as usize && a + bs as usize <= hi as usize, "block inside slab {i}");
            assert_eq!(r.ss.slab_index_of(a), i);
            // SAFETY: `b` is a block of the live SuperSlab.
            let found = unsafe { SsRef::from_block(b.as_ptr(), LG_SUPERSLAB_DEFAULT) };
            assert_eq!(found, r.ss);
            // The block is writable through the pointer handed out (mapping provenance).
            // SAFETY: a live block of `bs` bytes.
            unsafe { b.as_ptr().add(bs as usize - 1).write(0xA5) };
            got.push(a);
        }
        assert_eq!(got.len(), (hi as usize - lo as usize) / bs as usize, "capacity of bs {bs}");
        // SAFETY: we own the slab.
        let (used, carved, cap) = unsafe { slab.counts() };
        assert_eq!((used, carved), (cap, cap));
    }
}

#[test]
fn blocks_keep_alignment_of_power_of_two_classes() {
    let os = Os::new();
    let r = superslab(&os, LG_SUPERSLAB_DEFAULT);
    let me = owner();
    for (i, bs) in [(0usize, 64u32), (1, 1024), (2, 2048), (3, 192)] {
        let slab = assign(r.ss, i, bs, &me);
        let want = 1usize << bs.trailing_zeros();
        // SAFETY: we own the slab.
        while let Some(b) = unsafe { slab.alloc() } {
            assert_eq!(b.as_ptr() as usize % want, 0, "bs {bs}");
        }
    }
}

#[test]
fn local_free_is_reused_before_carving_and_counts_used() {
    let os = Os::new();
    let r = superslab(&os, LG_SUPERSLAB_DEFAULT);
    let me = owner();
    let slab = assign(r.ss, 1, 64, &me);
    // SAFETY: we own the slab and its blocks.
    unsafe {
        let a = slab.alloc().unwrap();
        let b = slab.alloc().unwrap();
        assert_eq!(slab.free_local(a), 1);
        assert_eq!(slab.alloc(), Some(a), "free list first");
        assert_eq!(slab.counts().1, 2, "nothing new carved");
        assert_eq!(slab.free_local(a), 1);
        assert_eq!(slab.free_local(b), 0);
        assert!(slab.is_empty());
        slab.check_invariants().unwrap();
    }
}

#[test]
fn a_batch_goes_back_with_one_splice_and_comes_back_whole() {
    let os = Os::new();
    let r = superslab(&os, LG_SUPERSLAB_DEFAULT);
    for (i, bs) in [(2usize, 16u32), (3, 32), (4, 256)] {
        let me = owner();
        let slab = assign(r.ss, i, bs, &me);
        let mut out = [core::ptr::null_mut(); 40];
        // SAFETY: we own the slab and its blocks.
        unsafe {
            assert_eq!(slab.alloc_batch(&mut out), 40);
            assert_eq!(slab.free_local_batch(&out[..37]), 3);
            slab.check_invariants().unwrap();
            let mut again = [core::ptr::null_mut(); 37];
            assert_eq!(slab.alloc_batch(&mut again), 37);
            let mut a: Vec<_> = again.to_vec();
            let mut b: Vec<_> = out[..37].to_vec();
            a.sort();
            b.sort();
            assert_eq!(a, b, "bs {bs}: the same blocks come back");
            assert_eq!(slab.counts().1, 40, "nothing new carved");
        }
    }
}

#[test]
fn a_refill_from_carriers_reads_only_the_carriers() {
    // 256-byte blocks carry 30 others: a batch of 31 is one node, and taking it back must not
    // read the carried blocks (scribbled over here, as a user would after the free).
    let os = Os::new();
    let r = superslab(&os, LG_SUPERSLAB_DEFAULT);
    let me = owner();
    let slab = assign(r.ss, 5, 256, &me);
    let mut out = [core::ptr::null_mut(); 31];
    // SAFETY: we own the slab; the scribbled blocks are free and ours until reused.
    unsafe {
        assert_eq!(slab.alloc_batch(&mut out), 31);
        assert_eq!(slab.free_remote_batch(&out), RemoteFree::Pushed);
        for &b in &out[1..] {
            b.write_bytes(0xEE, 256);
        }
        assert_eq!(slab.collect_remote(), 31);
        let mut again = [core::ptr::null_mut(); 31];
        assert_eq!(slab.alloc_batch(&mut again), 31);
        let mut a = again.to_vec();
        a.sort();
        let mut b = out.to_vec();
        b.sort();
        assert_eq!(a, b);
    }
}

#[test]
fn a_partly_taken_carrier_keeps_the_rest() {
    let os = Os::new();
    let r = superslab(&os, LG_SUPERSLAB_DEFAULT);
    let me = owner();
    let slab = assign(r.ss, 6, 128, &me);
    let mut out = [core::ptr::null_mut(); 15]; // one node carrying 14
                                               // SAFETY: we own the slab and its blocks.
    unsafe {
        assert_eq!(slab.alloc_batch(&mut out), 15);
        assert_eq!(slab.free_local_batch(&out), 0);
        let mut some = [core::ptr::null_mut(); 4];
        assert_eq!(slab.alloc_batch(&mut some), 4);
        slab.check_invariants().unwrap();
        assert_eq!(slab.counts().0, 4);
        let mut rest = [core::ptr::null_mut(); 11];
        assert_eq!(slab.alloc_batch(&mut rest), 11);
        let mut all: Vec<_> = some.iter().chain(rest.iter()).copied().collect();
        all.sort();
        let mut want = out.to_vec();
        want.sort();
        assert_eq!(all, want);
        assert_eq!(slab.counts().1, 15, "nothing new carved");
    }
}

#[test]
fn remote_batches_are_collected_with_one_exchange() {
    let os = Os::new();
    let r = superslab(&os, LG_SUPERSLAB_DEFAULT);
    let me = owner();
    let slab = assign(r.ss, 2, 32, &me);
    let mut out = [core::ptr::null_mut(); 10];
    // SAFETY: we own the slab; remote frees give blocks up.
    unsafe {
        assert_eq!(slab.alloc_batch(&mut out), 10);
        std::thread::scope(|s| {
            let (l, rest) = out.split_at(5);
            let l: Vec<usize> = l.iter().map(|&p| p as usize).collect();
            s.spawn(move || {
                for p in l {
                    assert_eq!(slab.free_remote(nn(p as *mut u8)), RemoteFree::Pushed);
                }
            });
            // The other five as one batch: one compare-exchange.
            let rest: Vec<usize> = rest.iter().map(|&p| p as usize).collect();
            s.spawn(move || {
                let rest: Vec<*mut u8> = rest.iter().map(|&p| p as *mut u8).collect();
                assert_eq!(slab.free_remote_batch(&rest), RemoteFree::Pushed);
            });
        });
        assert!(slab.has_remote());
        assert_eq!(slab.collect_remote(), 10);
        assert!(slab.is_empty());
        assert!(!slab.has_remote());
        assert_eq!(slab.collect_remote(), 0);
        slab.check_invariants().unwrap();
    }
}

#[test]
fn an_armed_full_slab_is_delivered_to_its_owner_exactly_once() {
    let os = Os::new();
    let r = superslab(&os, LG_SUPERSLAB_DEFAULT);
    let me = owner();
    let slab = assign(r.ss, 3, 2048, &me);
    let mut blocks = [core::ptr::null_mut(); 64];
    // SAFETY: we own the slab; the test plays owner and remote freers.
    unsafe {
        let n = slab.alloc_batch(&mut blocks);
        assert!(!slab.has_local(), "full");
        assert!(slab.mark_full());
        assert!(me.is_empty());
        assert_eq!(slab.free_remote(nn(blocks[0])), RemoteFree::Pushed);
        assert_eq!(me.take().collect::<Vec<_>>(), [slab], "delivered into the owner's inbox");
        for &b in &blocks[1..n] {
            assert_eq!(slab.free_remote(nn(b)), RemoteFree::Pushed);
        }
        assert!(me.is_empty(), "delivered once, not per block");
        assert_eq!(slab.retract_full(), Retract::Delivered);
        assert_eq!(slab.collect_remote() as usize, n);
        assert!(slab.is_empty());
        slab.check_invariants().unwrap();
    }
}

#[test]
fn a_retracted_slab_is_not_delivered() {
    let os = Os::new();
    let r = superslab(&os, LG_SUPERSLAB_DEFAULT);
    let me = owner();
    let slab = assign(r.ss, 4, 4096, &me);
    let mut blocks = [core::ptr::null_mut(); 16];
    // SAFETY: we own the slab.
    unsafe {
        let n = slab.alloc_batch(&mut blocks);
        assert!(slab.mark_full());
        assert_eq!(slab.retract_full(), Retract::Retracted);
        assert_eq!(slab.retract_full(), Retract::Retracted, "nothing armed any more");
        assert_eq!(slab.free_local(nn(blocks[0])) as usize, n - 1);
        assert_eq!(slab.free_remote(nn(blocks[1])), RemoteFree::Pushed);
        assert!(me.is_empty());
        assert!(!slab.mark_full(), "remote frees are waiting: collect them instead");
    }
}

#[test]
fn detach_fails_with_pending_remote_frees_and_notifies_exactly_once_after() {
    let os = Os::new();
    let r = superslab(&os, LG_SUPERSLAB_DEFAULT);
    let me = owner();
    let other = owner();
    let slab = assign(r.ss, 3, 2048, &me);
    let mut blocks = [core::ptr::null_mut(); 64];
    // SAFETY: we own the slab; the test plays owner and remote freers.
    unsafe {
        let n = slab.alloc_batch(&mut blocks);
        assert!(!slab.has_local(), "full");
        assert_eq!(slab.free_remote(nn(blocks[0])), RemoteFree::Pushed);
        assert!(!slab.try_detach(), "pending remote free keeps it owned");
        assert_eq!(slab.owner(), &*me as *const Inbox);
        assert_eq!(slab.collect_remote(), 1);
        assert_eq!(slab.alloc(), Some(nn(blocks[0])));
        assert!(slab.try_detach());
        assert!(slab.owner().is_null());
        assert_eq!(slab.free_remote(nn(blocks[1])), RemoteFree::Publish);
        for &b in &blocks[2..n] {
            assert_eq!(slab.free_remote(nn(b)), RemoteFree::Pushed);
        }
        assert!(me.is_empty(), "a detached slab goes to no inbox");
        assert_eq!(slab.adopt(&*other) as usize, n - 1);
        assert_eq!(slab.owner(), &*other as *const Inbox);
        assert_eq!(slab.counts().0, 1, "blocks[0] is still out");
        slab.check_invariants().unwrap();
    }
}

/// An owner's list of slabs, as the layer above keeps one.
struct Mine;

// SAFETY: the pointer comes from `owner_links`; the test owns every slab it lists.
unsafe impl Adapter for Mine {
    type Node = *mut Slab;
    unsafe fn links(n: *mut Slab) -> *mut Links<*mut Slab> {
        // SAFETY: a listed record of a mapped SuperSlab, owned by the test.
        unsafe { SlabRef::from_raw(NonNull::new_unchecked(n)).owner_links() }
    }
}

#[test]
fn owner_links_round_trip_and_start_clear() {
    let os = Os::new();
    let r = superslab(&os, LG_SUPERSLAB_DEFAULT);
    let me = owner();
    let a = assign(r.ss, 5, 64, &me);
    let b = assign(r.ss, 6, 64, &me);
    // SAFETY: we own both slabs.
    unsafe {
        let mut l = List::<Mine>::new();
        assert_eq!(a.tag(), 0);
        l.push_back(a.as_ptr());
        l.push_back(b.as_ptr());
        a.set_tag(2);
        assert_eq!((l.next(a.as_ptr()), a.tag()), (Some(b.as_ptr()), 2));
        assert!(l.is_consistent());
        a.assign(&*me, 3, 64);
        assert_eq!(a.tag(), 0, "assign starts a slab on no list");
        assert_eq!(l.next(a.as_ptr()), None, "assign clears the links");
    }
}

proptest! {
    // Miri keeps the program away from the file system, where proptest stores failing seeds,
    // and interprets every step: two cases there.
    #![proptest_config(ProptestConfig {
        failure_persistence: if cfg!(miri) { None } else { ProptestConfig::default().failure_persistence },
        cases: if cfg!(miri) { 2 } else { ProptestConfig::default().cases },
        ..ProptestConfig::default()
    })]
    /// Random carve/free sequences (local and remote) never hand out a live block twice,
    /// blocks never overlap, and the counts stay consistent.
    #[test]
    fn random_carve_free_never_duplicates_or_overlaps(
        bs_idx in 0usize..6,
        ops in proptest::collection::vec((0u8..4, any::<u16>()), 1..if cfg!(miri) { 120 } else { 400 }),
    ) {
        let bs = [16u32, 48, 64, 208, 1024, 2048][bs_idx];
        let os = Os::new();
        let r = superslab(&os, LG_SUPERSLAB_DEFAULT);
        let me = owner();
        let slab = assign(r.ss, 7, bs, &me);
        let mut live: Vec<usize> = Vec::new();
        let mut set: HashSet<usize> = HashSet::new();
        for (op, x) in ops {
            // SAFETY: the test is the owner; freed blocks come from `live`.
            unsafe {
                match op {
                    0 | 1 => {
                        if let Some(b) = slab.alloc() {
                            let a = b.as_ptr() as usize;
                            prop_assert!(set.insert(a), "block handed out twice");
                            for &o in &live {
                                prop_assert!(a + bs as usize <= o || o + bs as usize <= a);
                            }
                            live.push(a);
                        } else if slab.collect_remote() == 0 {
                            prop_assert_eq!(live.len(), slab.counts().2 as usize);
                        }
                    }
                    2 if !live.is_empty() => {
                        let a = live.swap_remove(x as usize % live.len());
                        set.remove(&a);
                        slab.free_local(nn(a as *mut u8));
                    }
                    3 if !live.is_empty() => {
                        let a = live.swap_remove(x as usize % live.len());
                        set.remove(&a);
                        let _ = slab.free_remote(nn(a as *mut u8));
                        if x % 3 == 0 {
                            slab.collect_remote();
                        }
                    }
                    _ => {}
                }
            }
        }
        // SAFETY: the test is the owner and no other thread runs.
        unsafe {
            slab.collect_remote();
            prop_assert_eq!(slab.counts().0 as usize, live.len());
            prop_assert_eq!(slab.check_invariants(), Ok(()));
        }
    }
}
