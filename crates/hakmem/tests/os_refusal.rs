//! Failure injection through the facade: while hak-os refuses every mapping, requests that
//! need new memory get null (no panic, no abort) in every tier, and once mapping works again
//! the same requests succeed. `Hakmem` is called directly, so the test harness itself keeps
//! running on the system allocator.

use std::alloc::{GlobalAlloc, Layout};

use hakmem::Hakmem;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

#[test]
fn refused_mappings_give_null_in_every_tier_and_allocation_recovers() {
    let a = Hakmem;
    let layouts = [
        Layout::from_size_align(40 * KIB, 8).unwrap(), // tiny (no slab of this class yet)
        Layout::from_size_align(700 * KIB, 8).unwrap(), // mid (no chunk of this class yet)
        Layout::from_size_align(16 * MIB, 8).unwrap(), // big
        Layout::from_size_align(MIB, 2 * MIB).unwrap(), // big, by alignment
    ];
    // Build the thread's state first, so the refusals below hit the tiers, not its setup.
    let warm = Layout::from_size_align(16, 8).unwrap();
    // SAFETY: a non-zero-size layout; the block is freed with it.
    unsafe { a.dealloc(a.alloc(warm), warm) };
    hakmem::fail_next_maps(usize::MAX);
    // SAFETY: as above: a block of the warmed class is still served from the thread cache.
    let cached = unsafe { a.alloc(warm) };
    assert!(!cached.is_null(), "a cache hit needs no mapping");
    // SAFETY: live, allocated with `warm`.
    unsafe { a.dealloc(cached, warm) };
    for l in layouts {
        // Memory already mapped (free slots of a SuperSlab, a chunk's uncarved blocks) may
        // still serve a few; a null must come before the tier needs more than 64 MiB.
        let mut got = Vec::new();
        loop {
            // SAFETY: a non-zero-size layout.
            let p = unsafe {
                if got.len() % 2 == 0 {
                    a.alloc(l)
                } else {
                    a.alloc_zeroed(l)
                }
            };
            if p.is_null() {
                break;
            }
            got.push(p);
            assert!(got.len() * l.size() <= 64 * MIB, "{l:?}: memory while the OS refused");
        }
        for p in got {
            // SAFETY: live blocks allocated with `l`.
            unsafe { a.dealloc(p, l) };
        }
    }
    hakmem::fail_next_maps(0);
    for l in layouts {
        // SAFETY: a non-zero-size layout.
        let p = unsafe { a.alloc(l) };
        assert!(!p.is_null(), "{l:?} after the OS recovered");
        assert_eq!(p as usize % l.align(), 0);
        // SAFETY: `p` holds `l.size()` bytes.
        unsafe {
            p.write_bytes(0xC3, l.size());
            assert_eq!(*p.add(l.size() - 1), 0xC3);
            a.dealloc(p, l);
        }
    }
}
