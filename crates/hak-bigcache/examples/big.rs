//! The big tier on its own: a [`BigCache`] over a [`Registry`] gives each block a mapping of
//! its own, grows blocks in place by `realloc`, keeps freed mappings in a cache for the next
//! request of about the same size, refuses bad frees with an error, and unmaps what it holds
//! on `trim`.
//!
//! Run with `cargo run -p hak-bigcache --example big`.

use core::ptr::NonNull;

use hak_bigcache::{BigCache, BigLimits, FreeError};
use hak_os::Os;
use hak_registry::Registry;

const MIB: usize = 1 << 20;

/// Writes a pattern that depends on the offset over `[from, to)`.
fn fill(p: NonNull<u8>, from: usize, to: usize) {
    for off in (from..to).step_by(4096) {
        // SAFETY: callers pass a live block of at least `to` bytes.
        unsafe { p.as_ptr().add(off).write((off / 4096) as u8) };
    }
}

/// Whether the pattern of `fill` is intact over `[0, to)`.
fn intact(p: NonNull<u8>, to: usize) -> bool {
    // SAFETY: as for `fill`.
    (0..to).step_by(4096).all(|off| unsafe { p.as_ptr().add(off).read() } == (off / 4096) as u8)
}

fn main() {
    let os = Os::new();
    let reg = Registry::new(&os);
    // Limits: 64 MiB of cached mappings (or a quarter of the live bytes), 1024 blocks, 30 s.
    let big = BigCache::new(&reg, BigLimits::DEFAULT);

    // A fresh mapping is known to be zero, which `alloc` reports (an `alloc_zeroed` can skip
    // the memset).
    let (a, zeroed) = big.alloc(3 * MIB, 8).expect("the OS refused a mapping");
    assert!(zeroed);
    // Any power-of-two alignment works; above a page it costs address space, because the
    // block's header page sits one alignment before the block.
    let (c, _) = big.alloc(MIB, 4 * MIB).expect("memory");
    assert_eq!(c.as_ptr() as usize % (4 * MIB), 0);
    // SAFETY: `a` is a live block of this cache.
    let usable = unsafe { big.usable_size(a) }.expect("a live big block");
    assert!(usable >= 3 * MIB);
    fill(a, 0, 3 * MIB);

    // A block expected to grow gets address space reserved behind it (GROW_RESERVE times its
    // size: address space, not memory), so `realloc` grows it where it is.
    let (g, _) = big.alloc_growing(2 * MIB, 8).expect("memory");
    fill(g, 0, 2 * MIB);
    // SAFETY: `g` is a live block of ours; on success only the returned pointer is used.
    let g2 = unsafe { big.realloc(g, 6 * MIB) }.expect("memory");
    assert_eq!(g2, g, "grew in place, into its reserve");
    fill(g2, 2 * MIB, 6 * MIB);
    // Past the reserve the pages move (one `mremap` into a larger reserved mapping), or the
    // block is copied: either way the contents come along.
    // SAFETY: as above.
    let g3 = unsafe { big.realloc(g2, 40 * MIB) }.expect("memory");
    assert!(intact(g3, 6 * MIB), "contents survive growth");
    let s = big.stats();
    assert!(s.realloc_in_place >= 1 && s.realloc_remap + s.realloc_copy >= 1);

    // Freeing caches the mapping (still mapped and registered). Bad frees are refused and
    // change nothing.
    // SAFETY: `a` is live and not used after this.
    assert_eq!(unsafe { big.dealloc(a) }, Ok(()));
    assert_eq!(big.stats().cached_entries, 1);
    // SAFETY: each of these is refused before anything is touched; that is what they show.
    unsafe {
        assert_eq!(big.dealloc(a), Err(FreeError::DoubleFree));
        let inside = NonNull::new(g3.as_ptr().add(4096)).unwrap();
        assert_eq!(big.dealloc(inside), Err(FreeError::NotBlockStart));
        let local = 0u64;
        assert_eq!(big.dealloc(NonNull::from(&local).cast()), Err(FreeError::NotOwned));
    }
    assert_eq!(big.stats().invalid_frees, 3);

    // The next request of about that size (within 1.25x) reuses the cached mapping: no
    // syscall, no page faults for pages it had touched, but not known to be zero.
    let maps_before = os.stats().mmap_calls;
    let (b, zeroed) = big.alloc(3 * MIB - 100, 8).expect("memory");
    assert!(!zeroed, "a reused block is never reported zeroed");
    assert_eq!(big.stats().hits, 1, "served from the cache");
    assert_eq!(b, a, "the same mapping");
    assert_eq!(os.stats().mmap_calls, maps_before, "without mapping anything");
    println!(
        "hak-bigcache: a 3 MiB block freed and reused from the cache; 2 MiB grew to 6 MiB in \
         place and to 40 MiB by {}; 3 bad frees refused",
        if big.stats().realloc_remap > 0 { "moving its pages" } else { "a copy" }
    );

    // SAFETY: live blocks, not used afterwards.
    unsafe {
        big.dealloc(b).expect("a live block");
        big.dealloc(c).expect("a live block");
        big.dealloc(g3).expect("a live block");
    }
    // `trim` unmaps every cached block now (eviction by age, count and bytes happens on the
    // way otherwise); live blocks would stay.
    assert!(big.stats().cached_entries >= 1);
    big.trim();
    let s = big.stats();
    assert_eq!((s.cached_entries, s.live_blocks.current), (0, 0));
    big.check_invariants();
    drop(big);
    drop(reg);
    assert_eq!(os.stats().mapped.current, 0, "everything unmapped");
}
