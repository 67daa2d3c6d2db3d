//! Misuse the mid tier can detect: `dealloc` with a layout of another class, or with a pointer
//! into a block's middle, is refused (a message on stderr, the block untouched) instead of
//! putting a block on the wrong free list. `Hakmem` is called directly, so the harness keeps
//! running on the system allocator.

use std::alloc::{GlobalAlloc, Layout};

use hakmem::Hakmem;

const KIB: usize = 1 << 10;

#[test]
fn mid_dealloc_with_wrong_layout_or_interior_pointer_is_refused() {
    let a = Hakmem;
    let right = Layout::from_size_align(100 * KIB, 8).unwrap();
    let wrong = Layout::from_size_align(300 * KIB, 8).unwrap();
    // SAFETY: a non-zero-size layout.
    let p = unsafe { a.alloc(right) };
    assert!(!p.is_null());
    // SAFETY: `p` is live with `right.size()` bytes.
    unsafe { std::ptr::write_bytes(p, 0xA5, right.size()) };
    // SAFETY: deliberately wrong; the allocator documents that it refuses these.
    unsafe {
        a.dealloc(p, wrong);
        a.dealloc(p.add(4 * KIB), right);
    }
    // Were either accepted, the block would be on a free list: the next allocations of both
    // classes would hand it (or part of it) out again and the writes below would land in it.
    let mut others = Vec::new();
    for l in [right, wrong, right, wrong] {
        // SAFETY: a non-zero-size layout.
        let q = unsafe { a.alloc(l) };
        assert!(!q.is_null());
        let (lo, hi) = (q as usize, q as usize + l.size());
        assert!(
            hi <= p as usize || lo >= p as usize + right.size(),
            "a refused block was handed out again"
        );
        // SAFETY: `q` is live with `l.size()` bytes.
        unsafe { std::ptr::write_bytes(q, 0x5A, l.size()) };
        others.push((q, l));
    }
    // SAFETY: `p` is still live and was only written by us.
    let intact = unsafe { std::slice::from_raw_parts(p, right.size()) }.iter().all(|&b| b == 0xA5);
    assert!(intact, "the refused block's contents changed");
    // SAFETY: each block is live and freed once with its own layout.
    unsafe {
        a.dealloc(p, right);
        for (q, l) in others {
            a.dealloc(q, l);
        }
    }
}
