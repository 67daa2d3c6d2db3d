//! The mid tier on its own: a [`Mid`] over a [`Registry`], serving blocks up to 1 MiB in 36
//! size classes, each thread through its own [`MidThreadCache`]. Shows the sizes it serves
//! and refuses, usable sizes, frees from another thread, what a double free does, and how
//! memory goes back (`flush_thread`, `trim`, dropping the `Mid`).
//!
//! Run with `cargo run -p hak-l25 --example mid`.

use core::ptr::NonNull;
use std::thread;

use hak_l25::{block_size, can_serve, Mid, MidThreadCache, MID_MAX, MID_MAX_ALIGN};
use hak_os::Os;
use hak_registry::{OwnerKind, Registry};

/// A block pointer handed to another thread.
struct Sent(NonNull<u8>, usize, usize);
// SAFETY: a block is plain memory its sender gives up.
unsafe impl Send for Sent {}

fn fill(p: NonNull<u8>, len: usize, byte: u8) {
    // SAFETY: callers pass a live block of at least `len` bytes that they own.
    unsafe { p.as_ptr().write_bytes(byte, len) };
}

fn holds(p: NonNull<u8>, len: usize, byte: u8) -> bool {
    // SAFETY: as for `fill`.
    unsafe { core::slice::from_raw_parts(p.as_ptr(), len) }.iter().all(|&b| b == byte)
}

fn main() {
    let os = Os::new();
    let reg = Registry::new(&os);
    // The tier maps 1 MiB-aligned chunks through `reg.os()` and registers them as
    // `OwnerKind::Mid`: one `Mid` per registry (it takes every `Mid` region there as its own).
    let mid = Mid::new(&reg);
    let mut tc = MidThreadCache::new();

    // Sizes: the facade sends it 48 KiB < size <= 1 MiB, but it serves anything up to
    // MID_MAX (classes start at 2560 B), at alignments up to MID_MAX_ALIGN (4 KiB).
    let requests = [(3000, 8), (48 << 10 | 1, 8), (100 << 10, 4096), (700_000, 64), (MID_MAX, 8)];
    let mut live = Vec::new();
    for (i, &(size, align)) in requests.iter().enumerate() {
        let p = mid.alloc(&mut tc, size, align).expect("the OS refused a chunk");
        assert_eq!(p.as_ptr() as usize % align, 0, "aligned as asked");
        let usable = block_size(size, align).expect("a size the tier serves");
        assert!(usable >= size && (usable - size) * 4 < size.max(2560), "waste under 25%");
        // SAFETY: `p` is a live block of this `Mid`.
        assert_eq!(unsafe { mid.usable_size(p) }, Some(usable));
        assert_eq!(reg.lookup(p.as_ptr() as usize).map(|o| o.kind), Some(OwnerKind::Mid));
        fill(p, usable, i as u8 + 1);
        live.push((p, size, align, usable));
    }
    // What it refuses: larger sizes and larger alignments (the big tier's), as `None`.
    assert!(!can_serve(MID_MAX + 1, 8) && mid.alloc(&mut tc, MID_MAX + 1, 8).is_none());
    assert!(!can_serve(4096, 2 * MID_MAX_ALIGN));
    assert!(mid.alloc(&mut tc, 4096, 2 * MID_MAX_ALIGN).is_none());
    // A pointer into a block's middle, or one the tier never made, has no usable size.
    let (p0, ..) = live[0];
    let inner = NonNull::new(p0.as_ptr().wrapping_add(16)).unwrap();
    // SAFETY: `inner` points into a live block (what `usable_size` requires of mid addresses).
    assert_eq!(unsafe { mid.usable_size(inner) }, None);
    let local = 0u64;
    let foreign = NonNull::from(&local).cast::<u8>();
    // SAFETY: not in a mid chunk at all: answered from the registry alone.
    assert_eq!(unsafe { mid.usable_size(foreign) }, None);
    // `realloc_in_place` says whether a resize stays in the block's class (no copy needed).
    assert!(mid.realloc_in_place(100 << 10, 4096, 100 << 10 | 100));
    assert!(!mid.realloc_in_place(100 << 10, 4096, 200 << 10));
    for (i, &(p, _, _, usable)) in live.iter().enumerate() {
        assert!(holds(p, usable, i as u8 + 1), "blocks do not overlap");
    }

    // Another thread frees the blocks into its own cache: a block may be freed through any
    // thread's cache, and goes back to its chunk from there.
    let sent: Vec<Sent> = live.drain(..).map(|(p, size, align, _)| Sent(p, size, align)).collect();
    thread::scope(|s| {
        s.spawn(|| {
            let mut other = MidThreadCache::new();
            for Sent(p, size, align) in sent {
                // SAFETY: a live block of `mid` with the size and alignment it was made with.
                unsafe { mid.dealloc(&mut other, p, size, align) };
            }
            // Before a cache is dropped its blocks must go back, or they stay out for good.
            mid.flush_thread(&mut other);
        });
    });

    // A double free: the second `dealloc` finds the block's free mark, reports it on stderr
    // ("double free of a mid block detected; ignored") and changes nothing, so the block is
    // not handed out twice. Once the block is handed out again, a stale second free would
    // free the new user's block: that no allocator can tell.
    let p = mid.alloc(&mut tc, 64 << 10, 8).expect("memory");
    // SAFETY: a live block, freed once...
    unsafe { mid.dealloc(&mut tc, p, 64 << 10, 8) };
    eprintln!("(the next line is the example's deliberate double free)");
    // SAFETY: ...and again: the misuse the free mark catches while the block is free.
    unsafe { mid.dealloc(&mut tc, p, 64 << 10, 8) };
    let a = mid.alloc(&mut tc, 64 << 10, 8).expect("memory");
    let b = mid.alloc(&mut tc, 64 << 10, 8).expect("memory");
    assert_ne!(a, b, "the double free did not put the block on a list twice");
    for q in [a, b] {
        // SAFETY: live blocks of this size.
        unsafe { mid.dealloc(&mut tc, q, 64 << 10, 8) };
    }

    // Memory return: the thread's cached blocks go back to their chunks, then `trim` drains
    // the shards, decommits free blocks and unmaps empty chunks (a decay pass does the same
    // for memory unused for the purge delay, 1 s by default).
    assert!(tc.cached_blocks() > 0);
    mid.flush_thread(&mut tc);
    assert_eq!(tc.cached_blocks(), 0);
    let before = mid.stats();
    mid.trim();
    let after = mid.stats();
    assert_eq!(after.allocs, after.frees, "every block came back");
    assert_eq!(after.chunks_live, 0, "trim unmapped every empty chunk");
    println!(
        "hak-l25: {} blocks (3000 B .. 1 MiB) in {} chunks, {} MiB peak; refused > 1 MiB and \
         > 4 KiB alignment; a double free was ignored; trim unmapped {} chunks",
        after.allocs,
        after.chunk_maps,
        after.bytes_mapped.peak >> 20,
        before.chunks_live
    );
    // Dropping the `Mid` unmaps whatever it still holds (its chunks, shard tables).
    drop(mid);
    drop(reg);
    assert_eq!(os.stats().mapped.current, 0);
}
