//! Drives operation sequences through the facade (`Hakmem` called directly): alloc,
//! alloc_zeroed, dealloc, realloc with sizes across all tiers and alignments up to 4 KiB.
//! Checks alignment, zeroing, contents and realloc prefixes against the bytes each block was
//! filled with.
#![no_main]

use std::alloc::{GlobalAlloc, Layout};

use hakmem::Hakmem;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let a = Hakmem;
    let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
    for (k, c) in data.chunks_exact(4).enumerate() {
        let fill = (k as u8).wrapping_mul(31) | 1;
        let size = 1 + (u16::from_le_bytes([c[1], c[2]]) as usize) * ((c[3] as usize % 4) * 7 + 1);
        let align = 1usize << (c[3] >> 4).min(12);
        match c[0] % 4 {
            0 | 1 => {
                let l = Layout::from_size_align(size, align).unwrap();
                let zeroed = c[0] % 4 == 1;
                // SAFETY: non-zero size.
                let p = unsafe { if zeroed { a.alloc_zeroed(l) } else { a.alloc(l) } };
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0);
                if zeroed {
                    // SAFETY: fresh block of `size` bytes.
                    assert!(unsafe { std::slice::from_raw_parts(p, size) }.iter().all(|&b| b == 0));
                }
                // SAFETY: ours.
                unsafe { p.write_bytes(fill, size) };
                live.push((p, l, fill));
            }
            2 if !live.is_empty() => {
                let (p, l, f) = live.swap_remove(c[1] as usize % live.len());
                // SAFETY: live block.
                assert!(unsafe { std::slice::from_raw_parts(p, l.size()) }.iter().all(|&b| b == f));
                // SAFETY: live block with its layout.
                unsafe { a.dealloc(p, l) };
            }
            3 if !live.is_empty() => {
                let i = c[1] as usize % live.len();
                let (p, l, f) = live[i];
                // SAFETY: live block; `size` is valid with the old alignment.
                let q = unsafe { a.realloc(p, l, size) };
                assert!(!q.is_null() && q as usize % l.align() == 0);
                let keep = l.size().min(size);
                // SAFETY: `q` has at least `keep` bytes.
                assert!(unsafe { std::slice::from_raw_parts(q, keep) }.iter().all(|&b| b == f));
                // SAFETY: ours.
                unsafe { q.write_bytes(fill, size) };
                live[i] = (q, Layout::from_size_align(size, l.align()).unwrap(), fill);
            }
            _ => {}
        }
    }
    for (p, l, _) in live {
        // SAFETY: live blocks.
        unsafe { a.dealloc(p, l) };
    }
});
