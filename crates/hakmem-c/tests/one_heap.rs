//! A Rust program that links `hakmem-c` exports `malloc` and friends itself: the C library's
//! own allocations (here `strdup`, which calls `malloc` inside libc) come from the same hakmem
//! instance as the Rust side's, and either side can free the other's C-style blocks.

use hakmem_c as _;

#[global_allocator]
static A: hakmem::Hakmem = hakmem::Hakmem;

#[test]
fn the_c_library_allocates_from_the_rust_programs_hakmem() {
    // SAFETY: a NUL-terminated string.
    let s = unsafe { libc::strdup(c"one heap for both".as_ptr()) };
    assert!(!s.is_null());
    // The registry knows the block: libc's malloc call reached hakmem, not glibc's malloc
    // (for a glibc block this is 0).
    // SAFETY: a live block from malloc.
    assert!(unsafe { hakmem::raw::usable_size(s.cast()) } >= 18);
    // SAFETY: freed once, through the C symbol.
    unsafe { libc::free(s.cast()) };

    // A buffer made on the Rust side with the malloc-style API, freed by C code.
    let p = hakmem::raw::malloc(4000);
    assert!(!p.is_null());
    // SAFETY: a live block, freed once by libc's free (which is hakmem's).
    unsafe { libc::free(p.cast()) };
}

#[test]
fn c_blocks_show_in_hakmems_statistics() {
    // SAFETY: plain C allocation through the exported symbol. `black_box`: the compiler
    // knows `malloc` and would otherwise drop an allocation whose only use is `free`.
    let p = core::hint::black_box(unsafe { libc::malloc(8 << 20) });
    assert!(!p.is_null());
    let s = hakmem::stats();
    assert!(s.big.live_bytes.current >= 8 << 20, "{s:?}");
    let v: Vec<u8> = vec![7; 1 << 20];
    assert_eq!(v.iter().map(|&b| b as usize).sum::<usize>(), 7 << 20);
    // SAFETY: freed once.
    unsafe { libc::free(p) };
}
