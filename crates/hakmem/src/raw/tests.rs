//! The malloc-style entry points from Rust: every tier, edge cases and errno. The C programs in
//! `crates/libhakmem/tests/` test the same through the exported symbols.

use super::*;

const SIZES: &[usize] = &[
    0,
    1,
    15,
    16,
    17,
    100,
    1024,
    2048,
    4000,
    48 << 10,
    (48 << 10) + 1,
    100 << 10,
    1 << 20,
    (1 << 20) + 1,
    3 << 20,
];

fn fill(p: *mut u8, n: usize, seed: u8) {
    for i in 0..n {
        // SAFETY: callers pass blocks of at least `n` bytes.
        unsafe { p.add(i).write(seed.wrapping_add(i as u8)) };
    }
}

fn holds(p: *mut u8, n: usize, seed: u8) -> bool {
    // SAFETY: as in `fill`.
    (0..n).all(|i| unsafe { p.add(i).read() } == seed.wrapping_add(i as u8))
}

#[test]
fn malloc_serves_every_tier_aligned_with_a_usable_size_that_covers_the_request() {
    for (k, &size) in SIZES.iter().enumerate() {
        let p = malloc(size);
        assert!(!p.is_null(), "size {size}");
        assert_eq!(p as usize % MALLOC_ALIGN, 0, "size {size}");
        // SAFETY: live block from malloc.
        let usable = unsafe { usable_size(p) };
        assert!(usable >= size.max(1), "size {size}: usable {usable}");
        fill(p, usable, k as u8);
        assert!(holds(p, usable, k as u8));
        // SAFETY: live block, freed once.
        unsafe { free(p) };
    }
}

#[test]
fn malloc_zero_gives_distinct_blocks() {
    let a = malloc(0);
    let b = malloc(0);
    assert!(!a.is_null() && !b.is_null() && a != b);
    // SAFETY: live blocks, freed once.
    unsafe {
        free(a);
        free(b);
    }
}

#[test]
fn calloc_zeroes_and_refuses_overflow_with_enomem() {
    for &size in SIZES {
        // Dirty a block of the same size first, so a reused block must be cleared.
        let d = malloc(size);
        fill(d, size, 0xAB);
        // SAFETY: live block.
        unsafe { free(d) };
        let p = calloc(1, size);
        assert!(!p.is_null());
        // SAFETY: `size` bytes.
        assert!((0..size).all(|i| unsafe { p.add(i).read() } == 0), "size {size}");
        // SAFETY: live block.
        unsafe { free(p) };
    }
    set_errno(0);
    assert!(calloc(usize::MAX / 2, 3).is_null());
    assert_eq!(errno(), libc::ENOMEM);
}

#[test]
fn failures_set_enomem_and_successes_leave_errno_alone() {
    set_errno(1234);
    for &size in SIZES {
        let p = malloc(size);
        // SAFETY: live block.
        unsafe { free(p) };
    }
    assert_eq!(errno(), 1234, "a successful malloc/free pair kept errno");
    for huge in [usize::MAX, isize::MAX as usize, 1 << 62] {
        set_errno(0);
        assert!(malloc(huge).is_null(), "{huge}");
        assert_eq!(errno(), libc::ENOMEM);
        set_errno(0);
        assert!(aligned_alloc(64, huge).is_null());
        assert_eq!(errno(), libc::ENOMEM);
    }
}

#[test]
fn realloc_keeps_contents_across_every_tier_and_follows_glibc_at_the_edges() {
    // null -> malloc
    // SAFETY: null is allowed.
    let mut p = unsafe { realloc(ptr::null_mut(), 10) };
    assert!(!p.is_null());
    fill(p, 10, 3);
    let mut have = 10;
    for &size in &[20, 1000, 40 << 10, 200 << 10, 2 << 20, 5 << 20, 300 << 10, 30, 5] {
        // SAFETY: `p` is live.
        let q = unsafe { realloc(p, size) };
        assert!(!q.is_null(), "to {size}");
        let keep = have.min(size);
        assert!(holds(q, keep, 3), "to {size}");
        fill(q, size, 3);
        (p, have) = (q, size);
    }
    // Shrinking within a class keeps the block.
    // SAFETY: `p` is live.
    assert_eq!(unsafe { realloc(p, 4) }, p);
    // realloc(p, 0) frees and returns null.
    // SAFETY: `p` is live; afterwards it is gone.
    assert!(unsafe { realloc(p, 0) }.is_null());
    // A failed realloc leaves the old block alone.
    let p = malloc(100);
    fill(p, 100, 9);
    set_errno(0);
    // SAFETY: `p` is live.
    assert!(unsafe { realloc(p, usize::MAX) }.is_null());
    assert_eq!(errno(), libc::ENOMEM);
    assert!(holds(p, 100, 9));
    // SAFETY: still live.
    unsafe { free(p) };
}

#[test]
fn aligned_alloc_honours_every_power_of_two() {
    let mut align = 1;
    while align <= 4 << 20 {
        for &size in &[0, 1, 100, 5000, 70 << 10, 2 << 20] {
            let p = aligned_alloc(align, size);
            assert!(!p.is_null(), "align {align} size {size}");
            assert_eq!(p as usize % align, 0, "align {align} size {size}");
            // SAFETY: live block.
            assert!(unsafe { usable_size(p) } >= size);
            fill(p, size, 1);
            // SAFETY: live block, freed without its alignment.
            unsafe { free(p) };
        }
        align *= 2;
    }
}

#[test]
fn foreign_and_interior_pointers_are_refused_and_leave_blocks_alone() {
    let mut local = [0u8; 64];
    let foreign = local.as_mut_ptr();
    set_errno(77);
    // SAFETY: refused before anything is touched (the registry does not know the stack).
    unsafe { free(foreign) };
    assert_eq!(errno(), 77, "a refused free keeps errno");
    // SAFETY: as above.
    assert!(unsafe { realloc(foreign, 10) }.is_null());
    assert_eq!(errno(), libc::EINVAL);
    // SAFETY: unknown pointers have no usable size.
    assert_eq!(unsafe { usable_size(foreign) }, 0);

    for size in [100 << 10, 3 << 20] {
        let p = malloc(size);
        fill(p, size, 5);
        let inner = p.wrapping_add(4096);
        // SAFETY: an interior pointer of a mid or big block is refused.
        unsafe { free(inner) };
        set_errno(0);
        // SAFETY: as above.
        assert!(unsafe { realloc(inner, size * 2) }.is_null(), "size {size}");
        assert_eq!(errno(), libc::EINVAL);
        assert!(holds(p, size, 5), "the block is untouched");
        // SAFETY: still live.
        unsafe { free(p) };
    }
}

#[test]
fn blocks_move_between_threads() {
    let blocks: std::vec::Vec<usize> =
        (0..2000).map(|i| malloc(16 + (i % 700) * 3) as usize).collect();
    for (i, &b) in blocks.iter().enumerate() {
        fill(b as *mut u8, 16, i as u8);
    }
    std::thread::spawn(move || {
        for (i, &b) in blocks.iter().enumerate() {
            assert!(holds(b as *mut u8, 16, i as u8));
            // SAFETY: live blocks handed over by the spawning thread.
            unsafe { free(b as *mut u8) };
        }
    })
    .join()
    .unwrap();
}
