//! Model test through the facade: random alloc / alloc_zeroed / dealloc / realloc sequences
//! checked against a shadow heap (live address ranges and their fill bytes): blocks never
//! overlap, are aligned, keep their contents while others come and go, zeroed blocks are zero,
//! and realloc keeps the prefix.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;

use hakmem::Hakmem;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Alloc { size: usize, align_log: u32, zeroed: bool },
    Free(usize),
    Realloc(usize, usize),
}

/// The shadow heap: start address -> (layout, fill byte).
#[derive(Default)]
struct Shadow {
    live: BTreeMap<usize, (Layout, u8)>,
}

impl Shadow {
    fn check_disjoint(&self, p: usize, size: usize) -> Result<(), TestCaseError> {
        if let Some((&q, &(l, _))) = self.live.range(..=p).next_back() {
            prop_assert!(q + l.size().max(1) <= p, "overlaps the block below");
        }
        if let Some((&q, _)) = self.live.range(p..).next() {
            prop_assert!(p + size.max(1) <= q, "overlaps the block above");
        }
        Ok(())
    }
    fn verify(&self, p: usize) -> Result<(), TestCaseError> {
        let (l, fill) = self.live[&p];
        // SAFETY: a live block of `l.size()` bytes.
        let s = unsafe { std::slice::from_raw_parts(p as *const u8, l.size()) };
        prop_assert!(s.iter().all(|&b| b == fill), "contents changed");
        Ok(())
    }
}

fn op(max_size: usize, max_align_log: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..=max_size, 0u32..=max_align_log, any::<bool>())
            .prop_map(|(size, align_log, zeroed)| Op::Alloc { size, align_log, zeroed }),
        3 => any::<usize>().prop_map(Op::Free),
        2 => (any::<usize>(), 1..=max_size).prop_map(|(i, s)| Op::Realloc(i, s)),
    ]
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let a = Hakmem;
    let mut sh = Shadow::default();
    for (k, o) in ops.into_iter().enumerate() {
        let fill = (k % 251) as u8 + 1;
        match o {
            Op::Alloc { size, align_log, zeroed } => {
                let l = Layout::from_size_align(size, 1 << align_log).unwrap();
                // SAFETY: non-zero size.
                let p = unsafe {
                    if zeroed {
                        a.alloc_zeroed(l)
                    } else {
                        a.alloc(l)
                    }
                } as usize;
                prop_assert!(p != 0);
                prop_assert_eq!(p % l.align(), 0, "misaligned");
                sh.check_disjoint(p, size)?;
                if zeroed {
                    // SAFETY: fresh block of `size` bytes.
                    let s = unsafe { std::slice::from_raw_parts(p as *const u8, size) };
                    prop_assert!(s.iter().all(|&b| b == 0), "alloc_zeroed not zero");
                }
                // SAFETY: ours.
                unsafe { (p as *mut u8).write_bytes(fill, size) };
                sh.live.insert(p, (l, fill));
            }
            Op::Free(i) if !sh.live.is_empty() => {
                let p = *sh.live.keys().nth(i % sh.live.len()).unwrap();
                sh.verify(p)?;
                let (l, _) = sh.live.remove(&p).unwrap();
                // SAFETY: live block with its layout.
                unsafe { a.dealloc(p as *mut u8, l) };
            }
            Op::Realloc(i, new) if !sh.live.is_empty() => {
                let p = *sh.live.keys().nth(i % sh.live.len()).unwrap();
                sh.verify(p)?;
                let (l, old_fill) = sh.live.remove(&p).unwrap();
                // SAFETY: live block, valid new size.
                let q = unsafe { a.realloc(p as *mut u8, l, new) } as usize;
                prop_assert!(q != 0);
                prop_assert_eq!(q % l.align(), 0);
                let keep = l.size().min(new);
                // SAFETY: `q` has `new` bytes.
                let s = unsafe { std::slice::from_raw_parts(q as *const u8, keep) };
                prop_assert!(s.iter().all(|&b| b == old_fill), "realloc lost the prefix");
                sh.check_disjoint(q, new)?;
                // SAFETY: ours.
                unsafe { (q as *mut u8).write_bytes(fill, new) };
                sh.live.insert(q, (Layout::from_size_align(new, l.align()).unwrap(), fill));
            }
            _ => {}
        }
        if k % 64 == 0 {
            for &p in sh.live.keys() {
                sh.verify(p)?;
            }
        }
    }
    for (p, (l, _)) in std::mem::take(&mut sh.live) {
        sh.live.clear();
        // SAFETY: live block.
        unsafe { a.dealloc(p as *mut u8, l) };
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Tiny sizes (1..=1040 B, alignments 1..=64).
    #[test]
    fn tiny_sequences_match_the_model(ops in proptest::collection::vec(op(1040, 6), 1..600)) {
        run(ops)?;
    }

    /// Sizes across the tiny bound and into the tiers above.
    #[test]
    fn mixed_sequences_match_the_model(ops in proptest::collection::vec(op(64 << 10, 12), 1..200)) {
        run(ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Every tier: sizes up to 8 MiB, alignments up to 2 MiB.
    #[test]
    fn all_tier_sequences_match_the_model(ops in proptest::collection::vec(op(8 << 20, 21), 1..60)) {
        run(ops)?;
    }
}
