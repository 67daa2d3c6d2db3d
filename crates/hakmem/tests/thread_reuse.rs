//! A thread's state is reused by the next thread after it exits, mid cache and shard included.
//! The exit must leave nothing of the old thread's blocks listed: its shard is drained to the
//! chunks, so a block the next thread gets from the shard and one it gets from a chunk are
//! never the same. (An optimised build once skipped the write that empties the drained shard,
//! so the next thread was handed blocks twice.) Alone in its binary so no other test thread
//! takes the retired state first; `Hakmem` is called directly, so the harness itself runs on
//! the system allocator.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;

use hakmem::Hakmem;

const KIB: usize = 1 << 10;

/// Allocates `n` blocks of `l` and writes each one's index into all its bytes.
fn alloc_tagged(a: &Hakmem, l: Layout, n: usize) -> Vec<*mut u8> {
    (0..n)
        .map(|i| {
            // SAFETY: a non-zero-size layout.
            let p = unsafe { a.alloc(l) };
            assert!(!p.is_null());
            // SAFETY: `p` is live with `l.size()` bytes.
            unsafe { std::ptr::write_bytes(p, i as u8, l.size()) };
            p
        })
        .collect()
}

#[test]
fn a_thread_reusing_a_retired_state_never_gets_a_block_twice() {
    // 64 KiB blocks: 4 per thread-cache bin, so 40 frees push several batches to the shard
    // (the shard keeps up to 4 of this class) and the rest go back to their chunks.
    let l = Layout::from_size_align(64 * KIB, 8).unwrap();
    for round in 0..8 {
        std::thread::spawn(move || {
            let a = Hakmem;
            for p in alloc_tagged(&a, l, 40) {
                // SAFETY: live, freed once, with its layout.
                unsafe { a.dealloc(p, l) };
            }
        })
        .join()
        .unwrap();
        std::thread::spawn(move || {
            let a = Hakmem;
            let blocks = alloc_tagged(&a, l, 80);
            let mut seen = BTreeMap::new();
            for (i, &p) in blocks.iter().enumerate() {
                if let Some(j) = seen.insert(p as usize, i) {
                    panic!("round {round}: block {p:?} handed out as #{j} and #{i}");
                }
                // SAFETY: `p` is live with `l.size()` bytes, written by `alloc_tagged`.
                let s = unsafe { std::slice::from_raw_parts(p, l.size()) };
                assert!(s.iter().all(|&b| b == i as u8), "round {round}: block #{i} overwritten");
            }
            for p in blocks {
                // SAFETY: live, freed once, with its layout.
                unsafe { a.dealloc(p, l) };
            }
        })
        .join()
        .unwrap();
    }
}
