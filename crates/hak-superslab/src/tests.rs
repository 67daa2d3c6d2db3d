//! Unit and property tests of the SuperSlab box against real hak-os memory.

use core::ptr::NonNull;
use std::collections::HashSet;
use std::vec::Vec;

use hak_os::Os;
use proptest::prelude::*;

use crate::*;

struct Region<'a> {
    os: &'a Os,
    base: NonNull<u8>,
    len: usize,
}

impl Drop for Region<'_> {
    fn drop(&mut self) {
        // SAFETY: the test owns the mapping and nothing uses it any more.
        unsafe { self.os.unmap(self.base, self.len) }.unwrap();
    }
}

fn superslab(os: &Os, lg: u32) -> (Region<'_>, &'static SuperSlab) {
    let len = 1usize << lg;
    let base = os.map(len, len).unwrap();
    // SAFETY: a fresh aligned mapping of the right size; the region outlives the uses in each
    // test because `Region` is dropped last.
    let ss = unsafe { SuperSlab::init(base, lg) };
    (Region { os, base, len }, ss)
}

fn assign(ss: &SuperSlab, i: usize, bs: u32) -> &Slab {
    let (lo, hi) = ss.slab_range(i);
    // SAFETY: fresh slab, exclusive in the test.
    unsafe { ss.slab(i).assign(1, 3, bs, lo, hi) };
    ss.slab(i)
}

#[test]
fn init_formats_a_valid_header_for_2_and_1_mib() {
    let os = Os::new();
    for lg in [LG_SUPERSLAB_DEFAULT, LG_SUPERSLAB_MIN] {
        let (_r, ss) = superslab(&os, lg);
        assert!(ss.is_valid());
        assert_eq!(ss.nslabs(), 1 << (lg - SLAB_SHIFT));
        assert_eq!(ss.size(), 1 << lg);
        for i in 0..ss.nslabs() {
            assert_eq!(ss.slab(i).owner(), 0, "slabs start detached");
        }
        ss.invalidate();
        assert!(!ss.is_valid());
    }
}

#[test]
fn header_bytes_are_never_handed_out() {
    let os = Os::new();
    let (_r, ss) = superslab(&os, LG_SUPERSLAB_DEFAULT);
    let slab = assign(ss, 0, 16);
    let header_end = ss.base().as_ptr() as usize + core::mem::size_of::<SuperSlab>();
    // SAFETY: we own the slab.
    while let Some(b) = unsafe { slab.alloc() } {
        assert!(b.as_ptr() as usize >= header_end);
        assert!(b.as_ptr() as usize >= ss.base().as_ptr() as usize + SuperSlab::data_offset());
    }
}

#[test]
fn carving_fills_the_slab_and_never_crosses_its_end() {
    let os = Os::new();
    let (_r, ss) = superslab(&os, LG_SUPERSLAB_DEFAULT);
    for (i, bs) in [(1usize, 16u32), (2, 48), (3, 1024), (4, 2048), (5, 1040)] {
        let slab = assign(ss, i, bs);
        let (lo, hi) = ss.slab_range(i);
        let mut got = Vec::new();
        // SAFETY: we own the slab.
        while let Some(b) = unsafe { slab.alloc() } {
            let a = b.as_ptr() as usize;
            assert!(a >= lo as usize && a + bs as usize <= hi as usize, "block inside slab {i}");
            assert_eq!(ss.slab_index_of(b.as_ptr()), i);
            // SAFETY: `b` is a block of the live SuperSlab `ss`.
            let found = unsafe { SuperSlab::from_block(b.as_ptr(), LG_SUPERSLAB_DEFAULT) };
            assert_eq!(found as *const SuperSlab, ss as *const SuperSlab);
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
    let (_r, ss) = superslab(&os, LG_SUPERSLAB_DEFAULT);
    for (i, bs) in [(0usize, 64u32), (1, 1024), (2, 2048), (3, 192)] {
        let slab = assign(ss, i, bs);
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
    let (_r, ss) = superslab(&os, LG_SUPERSLAB_DEFAULT);
    let slab = assign(ss, 1, 64);
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
fn remote_frees_are_collected_with_one_swap() {
    let os = Os::new();
    let (_r, ss) = superslab(&os, LG_SUPERSLAB_DEFAULT);
    let slab = assign(ss, 2, 32);
    let mut out = [core::ptr::null_mut(); 10];
    // SAFETY: we own the slab; remote frees give blocks up.
    unsafe {
        assert_eq!(slab.alloc_batch(&mut out), 10);
        std::thread::scope(|s| {
            let (l, r) = out.split_at(5);
            for half in [l, r] {
                let half: Vec<usize> = half.iter().map(|&p| p as usize).collect();
                s.spawn(move || {
                    for p in half {
                        let r = slab.free_remote(NonNull::new(p as *mut u8).unwrap());
                        assert_eq!(r, RemoteFree::Pushed);
                    }
                });
            }
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
fn detach_fails_with_pending_remote_frees_and_notifies_exactly_once_after() {
    let os = Os::new();
    let (_r, ss) = superslab(&os, LG_SUPERSLAB_DEFAULT);
    let slab = assign(ss, 3, 2048);
    let mut blocks = [core::ptr::null_mut(); 64];
    // SAFETY: we own the slab; the test plays owner and remote freers.
    unsafe {
        let n = slab.alloc_batch(&mut blocks);
        assert!(!slab.has_local(), "full");
        let nn = |p: *mut u8| NonNull::new(p).unwrap();
        assert_eq!(slab.free_remote(nn(blocks[0])), RemoteFree::Pushed);
        assert!(!slab.try_detach(), "pending remote free keeps it owned");
        assert_eq!(slab.owner(), 1);
        assert_eq!(slab.collect_remote(), 1);
        assert_eq!(slab.alloc(), Some(nn(blocks[0])));
        assert!(slab.try_detach());
        assert_eq!(slab.owner(), 0);
        assert_eq!(slab.free_remote(nn(blocks[1])), RemoteFree::Publish);
        for &b in &blocks[2..n] {
            assert_eq!(slab.free_remote(nn(b)), RemoteFree::Pushed);
        }
        assert_eq!(slab.adopt(7) as usize, n - 1);
        assert_eq!(slab.owner(), 7);
        assert_eq!(slab.counts().0, 1, "blocks[0] is still out");
        slab.check_invariants().unwrap();
    }
}

proptest! {
    /// Random carve/free sequences (local and remote) never hand out a live block twice,
    /// blocks never overlap, and the counts stay consistent.
    #[test]
    fn random_carve_free_never_duplicates_or_overlaps(
        bs_idx in 0usize..6,
        ops in proptest::collection::vec((0u8..4, any::<u16>()), 1..400),
    ) {
        let bs = [16u32, 48, 64, 208, 1024, 2048][bs_idx];
        let os = Os::new();
        let (_r, ss) = superslab(&os, LG_SUPERSLAB_DEFAULT);
        let slab = assign(ss, 7, bs);
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
                        }
                    }
                    2 if !live.is_empty() => {
                        let a = live.swap_remove(x as usize % live.len());
                        set.remove(&a);
                        slab.free_local(NonNull::new(a as *mut u8).unwrap());
                    }
                    3 if !live.is_empty() => {
                        let a = live.swap_remove(x as usize % live.len());
                        set.remove(&a);
                        let _ = slab.free_remote(NonNull::new(a as *mut u8).unwrap());
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
