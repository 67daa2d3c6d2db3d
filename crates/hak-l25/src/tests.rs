//! Unit, multi-thread and property tests of the mid tier (normal builds; the loom models are in
//! `loom_tests.rs`). Each test builds its own `Os`, `Registry` and `Mid`.

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use std::vec::Vec;

use hak_os::Os;
use hak_registry::Registry;
use proptest::prelude::*;

use crate::class::{
    class_for, class_of, CHUNK_BYTES, CHUNK_CAPACITY, CHUNK_HEADER, CLASS_SIZE, NUM_CLASSES,
    SHARD_BATCHES, TC_CAP, TC_CEIL,
};
use crate::shard::{INITIAL_SHARDS, MAX_SHARDS};
use crate::{
    block_size, can_serve, Mid, MidStats, MidThreadCache, MID_MAX, MID_MAX_ALIGN, MID_MIN,
};

const MIB: usize = 1 << 20;
/// Under Miri, which interprets every instruction, loops over sizes and operations take
/// strides of this many (1 otherwise).
const MIRI_STRIDE: usize = if cfg!(miri) { 61 } else { 1 };

/// A block pointer handed to another thread in a test.
struct SendPtr(NonNull<u8>);
// SAFETY: the tests hand each block to one thread at a time.
unsafe impl Send for SendPtr {}
// SAFETY: as above; shared access only reads the pointer.
unsafe impl Sync for SendPtr {}

/// Fills the first and last `min(16, len)` bytes of a block with `tag`.
fn fill(p: NonNull<u8>, len: usize, tag: u8) {
    let n = len.min(16);
    // SAFETY: the block is ours and at least `len` bytes.
    unsafe {
        p.as_ptr().write_bytes(tag, n);
        p.as_ptr().add(len - n).write_bytes(tag, n);
    }
}

/// Checks what `fill` wrote.
fn check(p: NonNull<u8>, len: usize, tag: u8) {
    let n = len.min(16);
    // SAFETY: the block is ours and at least `len` bytes.
    let (head, tail) = unsafe {
        (
            std::slice::from_raw_parts(p.as_ptr(), n),
            std::slice::from_raw_parts(p.as_ptr().add(len - n), n),
        )
    };
    assert!(head.iter().chain(tail).all(|&b| b == tag), "block contents changed");
}

#[test]
fn classes_waste_under_25_percent_for_every_size() {
    for s in (MID_MIN..=MID_MAX).step_by(MIRI_STRIDE) {
        let c = class_of(s);
        let cs = CLASS_SIZE[c];
        assert!(cs >= s, "size {s} class {cs}");
        assert!((cs - s) * 4 < s, "size {s} wastes {} in class {cs}", cs - s);
        assert!(c == 0 || CLASS_SIZE[c - 1] < s, "size {s} not in its smallest class");
    }
    assert_eq!(class_of(1), 0);
    assert_eq!(class_of(MID_MAX), NUM_CLASSES - 1);
}

#[test]
fn class_tables_are_consistent() {
    for c in 0..NUM_CLASSES {
        assert!(c == 0 || CLASS_SIZE[c] > CLASS_SIZE[c - 1]);
        assert_eq!(CHUNK_BYTES[c] % MIB, 0);
        assert!(CHUNK_CAPACITY[c] >= 7, "class {c}");
        assert!(CHUNK_HEADER + CHUNK_CAPACITY[c] * CLASS_SIZE[c] <= CHUNK_BYTES[c]);
        assert!((1..=32).contains(&TC_CAP[c]));
        assert!((1..=8).contains(&SHARD_BATCHES[c]));
    }
}

#[test]
fn alignment_rule_gives_aligned_classes_and_rejects_the_rest() {
    let mut sizes: Vec<usize> = (1..=MID_MAX).step_by(97 * MIRI_STRIDE).collect();
    sizes.extend([1, 2048, MID_MIN, 4095, 4096, 4097, MID_MAX - 1, MID_MAX]);
    let mut align = 1;
    while align <= MID_MAX_ALIGN {
        for &s in &sizes {
            let Some(b) = block_size(s, align) else {
                assert!(s.max(MID_MIN).next_multiple_of(align) > MID_MAX, "{s} {align}");
                continue;
            };
            assert!(b >= s && b % align == 0, "size {s} align {align} block {b}");
            assert_eq!(Some(b), block_size(b, 1), "the block size is its own class");
        }
        align *= 2;
    }
    assert!(can_serve(MID_MAX, 4096));
    assert!(!can_serve(MID_MAX + 1, 1));
    assert!(!can_serve(4096, 8192));
    assert!(!can_serve(4096, 3));
    assert_eq!(class_for(5000, 4096).map(|c| CLASS_SIZE[c]), Some(8192));
    assert_eq!(class_for(100, 1024).map(|c| CLASS_SIZE[c]), Some(3072));
}

#[test]
fn alloc_gives_aligned_writable_blocks_of_the_class_size() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let mid = Mid::new(&reg);
    let mut tc = MidThreadCache::new();
    let mut live = Vec::new();
    for (i, &(size, align)) in [
        (MID_MIN, 1),
        (3000, 16),
        (4096, 4096),
        (5000, 4096),
        (100, 1024),
        (70_000, 512),
        (MID_MAX, 8),
        (MID_MAX, 4096),
    ]
    .iter()
    .enumerate()
    {
        let p = mid.alloc(&mut tc, size, align).expect("alloc");
        assert_eq!(p.as_ptr().addr() % align, 0);
        let usable = block_size(size, align).unwrap();
        // SAFETY: `p` is live.
        assert_eq!(unsafe { mid.usable_size(p) }, Some(usable));
        fill(p, usable, i as u8);
        live.push((p, size, align, usable, i as u8));
    }
    for &(p, size, align, usable, tag) in &live {
        check(p, usable, tag);
        // SAFETY: allocated above with this pair.
        unsafe { mid.dealloc(&mut tc, p, size, align) };
    }
    mid.flush_thread(&mut tc);
    mid.check_invariants();
    let st = mid.stats();
    assert_eq!(st.allocs, live.len() as u64);
    assert_eq!(st.frees, live.len() as u64);
    assert_eq!(st.bytes_in_use.current, 0);
}

#[test]
fn alloc_rejects_what_it_cannot_serve() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let mid = Mid::new(&reg);
    let mut tc = MidThreadCache::new();
    assert!(mid.alloc(&mut tc, MID_MAX + 1, 1).is_none());
    assert!(mid.alloc(&mut tc, 4096, 8192).is_none());
    assert_eq!(os.stats().mmap_calls, 0);
}

#[test]
fn usable_size_is_none_outside_mid_blocks() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let mid = Mid::new(&reg);
    let mut tc = MidThreadCache::new();
    let x = 5u64;
    // SAFETY: not a mid block: the registry knows nothing about it.
    assert_eq!(unsafe { mid.usable_size(NonNull::from(&x).cast()) }, None);
    let p = mid.alloc(&mut tc, 3000, 1).unwrap();
    let base = reg.lookup(p.as_ptr().addr()).unwrap().base;
    // SAFETY: the chunk header is inside a mid chunk but is no block.
    assert_eq!(unsafe { mid.usable_size(base) }, None);
    // SAFETY: `p` is live.
    unsafe {
        assert_eq!(mid.usable_size(p), Some(3072));
        // A pointer into the block's middle is no block start.
        assert_eq!(mid.usable_size(p.add(8)), None);
        assert_eq!(mid.usable_size(p.add(3071)), None);
        // The next block slot is a block start (of a block not yet carved, but of this class).
        assert_eq!(mid.usable_size(p.add(3072)), Some(3072));
        // The C ABI's free: no size, ask for the usable size first.
        let u = mid.usable_size(p).unwrap();
        mid.dealloc(&mut tc, p, u, 1);
    }
    mid.flush_thread(&mut tc);
}

#[test]
fn os_refusal_is_none_and_allocation_recovers() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let mid = Mid::new(&reg);
    let mut tc = MidThreadCache::new();
    os.fail_next_maps(usize::MAX);
    assert!(mid.alloc(&mut tc, 10_000, 1).is_none());
    assert!(mid.stats().map_failures >= 1);
    os.fail_next_maps(0);
    let p = mid.alloc(&mut tc, 10_000, 1).expect("recovers once mapping works");
    // Exhaust the first chunk of another class, then refuse the next chunk.
    let c = class_of(300_000);
    let mut held = Vec::new();
    for _ in 0..CHUNK_CAPACITY[c] {
        held.push(mid.alloc(&mut tc, 300_000, 1).unwrap());
    }
    os.fail_next_maps(1);
    assert!(mid.alloc(&mut tc, 300_000, 1).is_none());
    let q = mid.alloc(&mut tc, 300_000, 1).expect("next chunk maps");
    held.push(q);
    // SAFETY: all allocated above with these pairs.
    unsafe {
        mid.dealloc(&mut tc, p, 10_000, 1);
        for h in held {
            mid.dealloc(&mut tc, h, 300_000, 1);
        }
    }
    mid.flush_thread(&mut tc);
    mid.check_invariants();
}

#[test]
fn empty_chunks_are_cached_briefly_then_unmapped() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let mid = Mid::new(&reg);
    mid.set_max_empty_chunks(1);
    let mut tc = MidThreadCache::new();
    let n = CHUNK_CAPACITY[0] * 3 + 5;
    let blocks: Vec<_> = (0..n).map(|_| mid.alloc(&mut tc, 2500, 1).unwrap()).collect();
    assert_eq!(mid.stats().chunk_maps, 4);
    for p in blocks {
        // SAFETY: allocated above.
        unsafe { mid.dealloc(&mut tc, p, 2500, 1) };
    }
    mid.flush_thread(&mut tc);
    mid.check_invariants();
    let st = mid.stats();
    assert_eq!(st.chunks_cached, 1, "{st:?}");
    assert_eq!(st.chunk_unmaps, 3);
    assert_eq!(st.chunks_live, 1);
    // The cached chunk is reused before a new mapping.
    let p = mid.alloc(&mut tc, 2500, 1).unwrap();
    assert_eq!(mid.stats().chunk_maps, 4);
    // SAFETY: allocated above.
    unsafe { mid.dealloc(&mut tc, p, 2500, 1) };
    mid.flush_thread(&mut tc);
    mid.trim();
    let st = mid.stats();
    assert_eq!((st.chunks_live, st.chunks_cached, st.bytes_mapped.current), (0, 0, 0));
    assert!(reg.lookup(p.as_ptr().addr()).is_none(), "unregistered before unmapping");
}

#[test]
fn large_free_blocks_are_decommitted_over_budget() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let mid = Mid::new(&reg);
    mid.set_decommit_budget(0);
    mid.set_max_empty_chunks(0);
    let mut tc = MidThreadCache::new();
    let size = 256 << 10;
    let blocks: Vec<_> = (0..6).map(|_| mid.alloc(&mut tc, size, 1).unwrap()).collect();
    for (i, &p) in blocks.iter().enumerate() {
        fill(p, size, i as u8);
    }
    // Keep block 0 so its chunk stays; the rest return and are decommitted past page one.
    for &p in &blocks[1..] {
        // SAFETY: allocated above.
        unsafe { mid.dealloc(&mut tc, p, size, 1) };
    }
    mid.flush_thread(&mut tc);
    mid.check_invariants();
    let st = mid.stats();
    let page = hak_os::page_size();
    assert_eq!(st.bytes_decommitted.current, 5 * (size - page) as u64, "{st:?}");
    assert_eq!(st.bytes_free_committed, 5 * page as u64);
    assert!(os.stats().decommitted_dontneed >= 5 * (size - page) as u64);
    check(blocks[0], size, 0);
    // Reused blocks read back as zero past their first page and are fully usable.
    let again: Vec<_> = (0..5).map(|_| mid.alloc(&mut tc, size, 1).unwrap()).collect();
    assert_eq!(mid.stats().bytes_decommitted.current, 0);
    for &p in &again {
        // SAFETY: a live block of `size` bytes.
        assert_eq!(unsafe { *p.as_ptr().add(size - 1) }, 0);
        fill(p, size, 0xEE);
    }
    for p in again.into_iter().chain([blocks[0]]) {
        // SAFETY: allocated above.
        unsafe { mid.dealloc(&mut tc, p, size, 1) };
    }
    mid.flush_thread(&mut tc);
    assert_eq!(mid.stats().chunks_live, 0);
}

#[test]
fn within_budget_nothing_is_decommitted_until_trim() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let mid = Mid::new(&reg);
    let mut tc = MidThreadCache::new();
    let size = 100_000;
    let blocks: Vec<_> = (0..4).map(|_| mid.alloc(&mut tc, size, 1).unwrap()).collect();
    for &p in &blocks[1..] {
        // SAFETY: allocated above.
        unsafe { mid.dealloc(&mut tc, p, size, 1) };
    }
    mid.flush_thread(&mut tc);
    assert_eq!(mid.stats().bytes_decommitted.total, 0);
    mid.trim();
    mid.check_invariants();
    let tail = block_size(size, 1).unwrap() - hak_os::page_size();
    assert_eq!(mid.stats().bytes_decommitted.current, 3 * tail as u64);
    // SAFETY: allocated above.
    unsafe { mid.dealloc(&mut tc, blocks[0], size, 1) };
    mid.flush_thread(&mut tc);
    mid.trim();
    assert_eq!(mid.stats().bytes_mapped.current, 0);
}

#[test]
fn flush_thread_returns_every_cached_block() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let mid = Mid::new(&reg);
    let mut tc = MidThreadCache::new();
    for &size in &[3000, 9000, 40_000, 200_000] {
        let v: Vec<_> = (0..50).map(|_| mid.alloc(&mut tc, size, 1).unwrap()).collect();
        for p in v {
            // SAFETY: allocated above.
            unsafe { mid.dealloc(&mut tc, p, size, 1) };
        }
    }
    assert!(tc.cached_blocks() > 0);
    mid.flush_thread(&mut tc);
    assert_eq!(tc.cached_blocks(), 0);
    // The thread's shard was drained: no batch may stay listed after its blocks went back to
    // their chunks (optimised builds once kept them, and a later drain freed them twice).
    assert_eq!(mid.shards().count_blocks(), (0, 0), "blocks left in the shards");
    mid.check_invariants();
    let st = mid.stats();
    assert_eq!((st.allocs, st.frees, st.bytes_in_use.current), (200, 200, 0));
    assert!(st.bytes_in_use.peak > 0);
    // Every chunk emptied: at most the cache's worth is still mapped.
    assert!(st.chunks_live <= 4 && st.chunks_live == st.chunks_cached, "{st:?}");
}

#[test]
fn blocks_freed_by_another_thread_are_reused() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let mid = Mid::new(&reg);
    // Chunks that empty stay cached, so reuse needs no new mapping.
    mid.set_max_empty_chunks(16);
    // Cached chunks stay cached however long the test takes (under Miri, its clock runs ahead).
    mid.set_purge_delay(u64::MAX);
    let mut a = MidThreadCache::new();
    let ptrs: Vec<SendPtr> =
        (0..500).map(|_| SendPtr(mid.alloc(&mut a, 12_000, 1).unwrap())).collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut b = MidThreadCache::new();
            for p in &ptrs {
                // SAFETY: allocated by thread A, freed once here.
                unsafe { mid.dealloc(&mut b, p.0, 12_000, 1) };
            }
            mid.flush_thread(&mut b);
        });
    });
    let maps = mid.stats().chunk_maps;
    let again: Vec<_> = (0..500).map(|_| mid.alloc(&mut a, 12_000, 1).unwrap()).collect();
    assert_eq!(mid.stats().chunk_maps, maps, "freed blocks were reused, nothing new mapped");
    for p in again {
        // SAFETY: allocated above.
        unsafe { mid.dealloc(&mut a, p, 12_000, 1) };
    }
    mid.flush_thread(&mut a);
    mid.check_invariants();
}

// Under Miri threads interleave at its own preemption points and a 20 s wait is far longer:
// the growth protocol is checked by the loom models instead.
#[cfg_attr(miri, ignore)]
#[test]
fn contention_grows_the_shard_table() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let mid = Mid::new(&reg);
    let stop = AtomicBool::new(false);
    // Seeds that share a shard at 64 and 128 shards, and are apart from 256 on.
    let seeds = [0, INITIAL_SHARDS, 2 * INITIAL_SHARDS, 3 * INITIAL_SHARDS];
    std::thread::scope(|s| {
        for &seed in &seeds {
            let (mid, stop) = (&mid, &stop);
            s.spawn(move || {
                let mut tc = MidThreadCache::with_seed(seed);
                // More than a bin can grow to, so every round goes through the shards.
                let n = 3 * TC_CEIL[class_of(2500)] as usize;
                let mut held = Vec::with_capacity(n);
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..n {
                        held.push(mid.alloc(&mut tc, 2500, 1).unwrap());
                    }
                    for p in held.drain(..) {
                        // SAFETY: allocated above.
                        unsafe { mid.dealloc(&mut tc, p, 2500, 1) };
                    }
                }
                mid.flush_thread(&mut tc);
            });
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while mid.stats().shard_count < 4 * INITIAL_SHARDS as u64 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let st = mid.stats();
    assert!(st.shard_count >= 2 * INITIAL_SHARDS as u64, "{st:?}");
    assert!(st.shard_count <= MAX_SHARDS as u64);
    assert!(st.shard_growths >= 1 && st.try_lock_failures > 0);
    // No block was lost in a migration: everything comes back to the chunks.
    mid.trim();
    let (current, old) = mid.shards().count_blocks();
    assert_eq!((current, old), (0, 0));
    mid.check_invariants();
    let st = mid.stats();
    assert_eq!(st.allocs, st.frees);
    assert_eq!(st.chunks_live, 0, "{st:?}");
}

#[test]
fn threads_with_live_blocks_and_flushes_keep_contents() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let mid = Mid::new(&reg);
    std::thread::scope(|s| {
        for t in 0..3u8 {
            let mid = &mid;
            s.spawn(move || {
                let mut tc = MidThreadCache::new();
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(t);
                let mut slots: Vec<Option<(NonNull<u8>, usize, u8)>> =
                    (0..64).map(|_| None).collect();
                for i in 0..(4000 / MIRI_STRIDE as u32).max(200) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let k = (rng % 64) as usize;
                    match slots[k].take() {
                        Some((p, size, tag)) => {
                            check(p, size, tag);
                            // SAFETY: allocated below with `(size, 1)`.
                            unsafe { mid.dealloc(&mut tc, p, size, 1) };
                        }
                        None => {
                            let size = MID_MIN + (rng >> 20) as usize % 60_000;
                            let p = mid.alloc(&mut tc, size, 1).unwrap();
                            let tag = (i as u8) ^ t;
                            fill(p, size, tag);
                            slots[k] = Some((p, size, tag));
                        }
                    }
                    if i % 1000 == 999 {
                        mid.flush_thread(&mut tc);
                    }
                }
                for (p, size, tag) in slots.into_iter().flatten() {
                    check(p, size, tag);
                    // SAFETY: as above.
                    unsafe { mid.dealloc(&mut tc, p, size, 1) };
                }
                mid.flush_thread(&mut tc);
            });
        }
    });
    mid.trim();
    mid.check_invariants();
    assert_eq!(mid.stats().chunks_live, 0);
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    Alloc { size: usize, align_shift: u32 },
    Free(usize),
    Flush,
    Trim,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop_oneof![MID_MIN..=70_000usize, MID_MIN..=MID_MAX], 0u32..=12)
            .prop_map(|(size, align_shift)| Op::Alloc { size, align_shift }),
        5 => any::<usize>().prop_map(Op::Free),
        1 => Just(Op::Flush),
        1 => Just(Op::Trim),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 64 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random allocs and frees against a shadow map of live blocks: blocks never overlap, are
    /// aligned, have the promised usable size, and keep their contents while others are freed.
    #[test]
    fn model_blocks_are_disjoint_aligned_and_keep_contents(
        ops in proptest::collection::vec(op(), 1..120)
    ) {
        let os = Os::new();
        let reg = Registry::new(&os);
        let mid = Mid::new(&reg);
        mid.set_decommit_budget(1 << 20);
        let mut tc = MidThreadCache::new();
        // start address -> (end, size, align, tag, pointer)
        let mut live: BTreeMap<usize, (usize, usize, usize, u8, NonNull<u8>)> = BTreeMap::new();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Alloc { size, align_shift } => {
                    let align = 1usize << align_shift;
                    let Some(p) = mid.alloc(&mut tc, size, align) else {
                        prop_assert!(!can_serve(size, align));
                        continue;
                    };
                    let a = p.as_ptr().addr();
                    let usable = block_size(size, align).unwrap();
                    prop_assert_eq!(a % align, 0);
                    // SAFETY: `p` is live.
                    prop_assert_eq!(unsafe { mid.usable_size(p) }, Some(usable));
                    if let Some((&s, &(e, ..))) = live.range(..=a).next_back() {
                        prop_assert!(e <= a, "overlaps block at {s:#x}");
                    }
                    if let Some((&s, _)) = live.range(a..).next() {
                        prop_assert!(a + usable <= s, "overlaps block at {s:#x}");
                    }
                    fill(p, usable, i as u8);
                    live.insert(a, (a + usable, size, align, i as u8, p));
                }
                Op::Free(k) => {
                    if live.is_empty() {
                        continue;
                    }
                    let a = *live.keys().nth(k % live.len()).unwrap();
                    let (e, size, align, tag, p) = live.remove(&a).unwrap();
                    check(p, e - a, tag);
                    // SAFETY: allocated with `(size, align)` and not yet freed.
                    unsafe { mid.dealloc(&mut tc, p, size, align) };
                }
                Op::Flush => mid.flush_thread(&mut tc),
                Op::Trim => mid.trim(),
            }
        }
        for (&a, &(e, _, _, tag, p)) in &live {
            check(p, e - a, tag);
        }
        for (_, (_, size, align, _, p)) in live {
            // SAFETY: as above.
            unsafe { mid.dealloc(&mut tc, p, size, align) };
        }
        mid.flush_thread(&mut tc);
        mid.trim();
        mid.check_invariants();
        let st = mid.stats();
        prop_assert_eq!(st.allocs, st.frees);
        prop_assert_eq!(st.chunks_live, 0);
    }
}

#[test]
fn a_second_free_of_a_block_is_refused() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let mid = Mid::new(&reg);
    let mut tc = MidThreadCache::new();
    for size in [3000, 100_000, MID_MAX] {
        let p = mid.alloc(&mut tc, size, 1).unwrap();
        // SAFETY: allocated above; the second free is the misuse under test, which `dealloc`
        // detects by the free mark and ignores.
        unsafe {
            mid.dealloc(&mut tc, p, size, 1);
            mid.dealloc(&mut tc, p, size, 1);
        }
        // Were the second free taken, the block would be listed twice and handed out twice.
        let a = mid.alloc(&mut tc, size, 1).unwrap();
        let b = mid.alloc(&mut tc, size, 1).unwrap();
        assert_ne!(a, b);
        // A block handed out again is live: freeing it is no double free.
        // SAFETY: allocated above.
        unsafe {
            mid.dealloc(&mut tc, a, size, 1);
            mid.dealloc(&mut tc, b, size, 1);
        }
    }
    mid.flush_thread(&mut tc);
    mid.check_invariants();
    let st = mid.stats();
    assert_eq!((st.allocs, st.frees), (9, 9), "{st:?}");
}

/// A `Mid` whose coarse clock starts at `t0`, far enough ahead of the real clock that the
/// slow paths' own clock reads never move it: the test drives time through `decay`.
fn future_clock(mid: &Mid<'_>) -> u64 {
    let t0 = hak_os::monotonic_ns() + 3_600_000_000_000;
    mid.decay(t0);
    t0
}

#[test]
fn decay_returns_free_memory_after_the_delay_and_not_before() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let mid = Mid::new(&reg);
    let delay = crate::DEFAULT_PURGE_DELAY_NS;
    let t0 = future_clock(&mid);
    let mut tc = MidThreadCache::new();
    let size = 256 << 10;
    let keep = mid.alloc(&mut tc, size, 1).unwrap();
    let blocks: Vec<_> = (0..40).map(|_| mid.alloc(&mut tc, size, 1).unwrap()).collect();
    for &p in &blocks {
        fill(p, size, 7);
    }
    for p in blocks {
        // SAFETY: allocated above.
        unsafe { mid.dealloc(&mut tc, p, size, 1) };
    }
    // The frees went to the thread cache, the shard and the chunks; some chunks emptied.
    let (in_shards, _) = mid.shards().count_blocks();
    assert!(in_shards > 0);
    let before = mid.stats();
    assert!(before.chunks_cached > 0, "{before:?}");
    mid.decay(t0 + delay / 2);
    let st = mid.stats();
    assert_eq!((st.purges_decay, st.bytes_decommitted.total, st.chunk_unmaps), (0, 0, 0));
    assert_eq!(mid.shards().count_blocks().0, in_shards, "a busy shard was drained early");
    mid.decay(t0 + delay + delay / 4);
    let st = mid.stats();
    assert_eq!(mid.shards().count_blocks(), (0, 0), "the idle shard was drained");
    assert!(st.purges_decay > 0, "{st:?}");
    assert_eq!(st.chunks_cached, 0, "cached empty chunks were unmapped: {st:?}");
    // What is left committed: the first page of every free block on a chunk (its links).
    let page = hak_os::page_size() as u64;
    assert!(st.bytes_free_committed <= 40 * page, "{st:?}");
    assert!(st.bytes_decommitted.current > 0);
    mid.check_invariants();
    // SAFETY: allocated above.
    unsafe { mid.dealloc(&mut tc, keep, size, 1) };
    mid.flush_thread(&mut tc);
    mid.trim();
    assert_eq!(mid.stats().chunks_live, 0);
}

#[test]
fn the_budget_purges_the_oldest_free_blocks_first() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let mid = Mid::new(&reg);
    let t1 = future_clock(&mid);
    let mut tc = MidThreadCache::new();
    let size = 256 << 10;
    let c = class_of(size);
    let cap = CHUNK_CAPACITY[c];
    // Two chunks, A then B, each full; one block of each stays live so neither empties.
    let all: Vec<_> = (0..2 * cap).map(|_| mid.alloc(&mut tc, size, 1).unwrap()).collect();
    let base = |p: NonNull<u8>| reg.lookup(p.as_ptr().addr()).unwrap().base;
    let (a, b): (Vec<_>, Vec<_>) = all.iter().partition(|&&p| base(p) == base(all[0]));
    assert_eq!((a.len(), b.len()), (cap, cap));
    for &p in &all {
        fill(p, size, 0xAB);
    }
    // A's blocks come back at t1, B's 10 ms later; flushing puts them on the chunks.
    for &p in &a[1..] {
        // SAFETY: allocated above.
        unsafe { mid.dealloc(&mut tc, p, size, 1) };
    }
    mid.flush_thread(&mut tc);
    assert_eq!(mid.stats().purges_budget, 0, "within the default budget");
    mid.set_decommit_budget((cap * size) * 3 / 2);
    mid.decay(t1 + 10_000_000);
    for &p in &b[1..] {
        // SAFETY: allocated above.
        unsafe { mid.dealloc(&mut tc, p, size, 1) };
    }
    mid.flush_thread(&mut tc);
    let st = mid.stats();
    let tail = (size - hak_os::page_size()) as u64;
    assert_eq!(st.purges_budget, 1, "{st:?}");
    assert_eq!(st.bytes_decommitted.current, (cap as u64 - 1) * tail, "A's blocks, all of them");
    mid.check_invariants();
    // B's blocks are still resident and come first (dirty before clean): their tails kept
    // their bytes; A's read back as zero.
    let again: Vec<_> = (1..cap).map(|_| mid.alloc(&mut tc, size, 1).unwrap()).collect();
    for &p in &again {
        assert_eq!(base(p), base(b[0]), "a dirty block of B before any clean one of A");
        check(NonNull::new(p.as_ptr().wrapping_add(size - 16)).unwrap(), 16, 0xAB);
    }
    let more = mid.alloc(&mut tc, size, 1).unwrap();
    assert_eq!(base(more), base(a[0]));
    // SAFETY: a purged block: its last byte was decommitted and reads zero.
    assert_eq!(unsafe { *more.as_ptr().add(size - 1) }, 0);
    // SAFETY: all allocated above, each freed once.
    unsafe {
        for p in again.into_iter().chain([more, a[0], b[0]]) {
            mid.dealloc(&mut tc, p, size, 1);
        }
    }
    mid.flush_thread(&mut tc);
    mid.check_invariants();
}

#[test]
fn prefork_holds_every_lock_until_postfork() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let mid = Mid::new(&reg);
    let mut tc = MidThreadCache::new();
    // A table, a grown one, chunks of a few classes: every kind of lock exists.
    let p = mid.alloc(&mut tc, 3000, 1).unwrap();
    let q = mid.alloc(&mut tc, 300_000, 1).unwrap();
    mid.shards().grow_now(&os);
    let (held, free) = mid.lock_states();
    assert_eq!(held, 0);
    // grow_lock, the first table and the grown one, 36 classes, the empty cache, the chunk list.
    assert_eq!(free, 1 + 3 * INITIAL_SHARDS + NUM_CLASSES + 2);
    mid.prefork();
    assert_eq!(mid.lock_states(), (free, 0), "prefork left a lock free");
    // SAFETY: this thread ran `prefork` just above.
    unsafe { mid.postfork() };
    assert_eq!(mid.lock_states(), (0, free), "postfork left a lock held");
    // SAFETY: allocated above.
    unsafe {
        mid.dealloc(&mut tc, p, 3000, 1);
        mid.dealloc(&mut tc, q, 300_000, 1);
    }
    mid.flush_thread(&mut tc);
    mid.trim();
    assert_eq!(mid.stats().chunks_live, 0);
}

/// Forks while other threads allocate and free through the same `Mid`; each child allocates
/// and frees blocks of every class and exits. Without `prefork`/`postfork` a child can find a
/// lock held by a thread that does not exist in it, and hangs: the parent then kills it and
/// the test fails.
// Miri does not model fork().
#[cfg_attr(miri, ignore)]
#[test]
fn children_forked_while_threads_allocate_never_hang() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let mid = Mid::new(&reg);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (mid, stop) = (&mid, &stop);
            s.spawn(move || {
                let mut tc = MidThreadCache::new();
                let mut held = Vec::new();
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let size = MID_MIN + (i * 7919 % MID_MAX as u64) as usize % (MID_MAX - MID_MIN);
                    held.push((mid.alloc(&mut tc, size, 1).unwrap(), size));
                    if held.len() > 16 {
                        for (p, size) in held.drain(..) {
                            // SAFETY: allocated above with `(size, 1)`.
                            unsafe { mid.dealloc(&mut tc, p, size, 1) };
                        }
                        if i % 64 == 0 {
                            mid.flush_thread(&mut tc);
                            mid.trim();
                        }
                    }
                }
                for (p, size) in held {
                    // SAFETY: as above.
                    unsafe { mid.dealloc(&mut tc, p, size, 1) };
                }
                mid.flush_thread(&mut tc);
            });
        }
        let mut hung = 0;
        for _ in 0..100 {
            if hung > 0 {
                break;
            }
            mid.prefork();
            // SAFETY: fork has no preconditions; the child only uses `mid` (whose locks this
            // thread holds) and exits with `_exit`, never returning into the test harness.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: the child of the thread that ran `prefork`.
                unsafe { mid.postfork() };
                let mut tc = MidThreadCache::new();
                for &size in &CLASS_SIZE {
                    let p = mid.alloc(&mut tc, size, 1);
                    if let Some(p) = p {
                        // SAFETY: allocated just above.
                        unsafe { mid.dealloc(&mut tc, p, size, 1) };
                    }
                }
                mid.flush_thread(&mut tc);
                mid.trim();
                // SAFETY: ends the child without running the parent's atexit work.
                unsafe { libc::_exit(0) };
            }
            // SAFETY: this thread ran `prefork` just above.
            unsafe { mid.postfork() };
            assert!(pid > 0, "fork failed");
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let mut status = 0;
                // SAFETY: `pid` is our child; `status` is writable.
                let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                if r == pid {
                    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
                    break;
                }
                if Instant::now() > deadline {
                    // SAFETY: our child, hung: kill and reap it.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                        libc::waitpid(pid, &mut status, 0);
                    }
                    hung += 1;
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert_eq!(hung, 0, "children hung");
    });
}

#[test]
fn a_class_that_goes_quiet_gives_its_cached_blocks_back() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let mid = Mid::new(&reg);
    let mut tc = MidThreadCache::new();
    let quiet = 8 << 10;
    let c = class_of(quiet);
    let v: Vec<_> = (0..40).map(|_| mid.alloc(&mut tc, quiet, 1).unwrap()).collect();
    for p in v {
        // SAFETY: allocated above.
        unsafe { mid.dealloc(&mut tc, p, quiet, 1) };
    }
    assert_eq!((tc.bins[c].count, tc.bins[c].cap), (TC_CAP[c], TC_CAP[c] as u16));
    // Another class keeps the thread busy; the quiet one is reviewed meanwhile.
    for _ in 0..20_000 {
        if tc.bins[c].count == 0 {
            break;
        }
        let p = mid.alloc(&mut tc, 100_000, 1).unwrap();
        // SAFETY: allocated just above.
        unsafe { mid.dealloc(&mut tc, p, 100_000, 1) };
    }
    assert_eq!((tc.bins[c].count, tc.bins[c].cap), (0, 1), "the quiet bin gave its blocks back");
    // The busy class keeps what it uses: one block (its low-water mark is 0 or 1).
    let busy = &tc.bins[class_of(100_000)];
    assert!(busy.count <= 1 && busy.cap >= 1, "{} {}", busy.count, busy.cap);
    mid.flush_thread(&mut tc);
    mid.check_invariants();
    assert_eq!(mid.stats().bytes_in_use.current, 0);
}

#[test]
fn a_class_that_keeps_crossing_its_bounds_grows_its_cache() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let mid = Mid::new(&reg);
    let mut tc = MidThreadCache::new();
    let size = 8 << 10;
    let c = class_of(size);
    assert!(TC_CEIL[c] > TC_CAP[c]);
    let n = TC_CAP[c] as usize + TC_CAP[c] as usize / 2;
    // Enough rounds for the reviews to settle (reviews come four times as often under Miri).
    for _ in 0..if cfg!(miri) { 60 } else { 200 } {
        let v: Vec<_> = (0..n).map(|_| mid.alloc(&mut tc, size, 1).unwrap()).collect();
        for p in v {
            // SAFETY: allocated above.
            unsafe { mid.dealloc(&mut tc, p, size, 1) };
        }
    }
    // It grew past the working set, then settled just above it (blocks it held but never
    // needed went back).
    let cap = u32::from(tc.bins[c].cap);
    assert!(cap as usize >= n && cap <= TC_CEIL[c], "cap {cap} for a working set of {n}");
    // With the room, the same loop no longer takes slow paths every round.
    let before = tc.slow_ops;
    for _ in 0..10 {
        let v: Vec<_> = (0..n).map(|_| mid.alloc(&mut tc, size, 1).unwrap()).collect();
        for p in v {
            // SAFETY: allocated above.
            unsafe { mid.dealloc(&mut tc, p, size, 1) };
        }
    }
    assert!(tc.slow_ops - before <= 1, "{} slow paths", tc.slow_ops - before);
    mid.flush_thread(&mut tc);
    mid.check_invariants();
}

#[test]
fn realloc_in_place_within_the_class_only() {
    let os = Os::new();
    let reg = Registry::new(&os);
    let mid = Mid::new(&reg);
    // 100 000 B is in the 112 KiB class (98 305 ..= 114 688 B).
    assert!(mid.realloc_in_place(100_000, 8, 114_688));
    assert!(mid.realloc_in_place(100_000, 8, 98_305));
    assert!(!mid.realloc_in_place(100_000, 8, 114_689), "a larger class");
    assert!(!mid.realloc_in_place(100_000, 8, 98_304), "a smaller class");
    assert!(!mid.realloc_in_place(MID_MAX, 8, MID_MAX + 1), "beyond the tier");
    // Alignment counts: 5000 B at 4096 is the 8 KiB class, as is 8192 B.
    assert!(mid.realloc_in_place(5000, 4096, 8192));
    assert!(!mid.realloc_in_place(5000, 8, 8192));
    // A block resized in place is freed with its new size.
    let mut tc = MidThreadCache::new();
    let p = mid.alloc(&mut tc, 100_000, 8).unwrap();
    assert!(mid.realloc_in_place(100_000, 8, 110_000));
    fill(p, 110_000, 3);
    // SAFETY: allocated above; resized in place to 110 000 B.
    unsafe { mid.dealloc(&mut tc, p, 110_000, 8) };
    mid.flush_thread(&mut tc);
    mid.check_invariants();
}

#[test]
fn stats_fill_the_derived_counts_and_nest_in_a_report() {
    use hak_sync::stat::{StatPath, StatValue};
    let os = Os::new();
    let reg = Registry::new(&os);
    let mid = Mid::new(&reg);
    let mut tc = MidThreadCache::new();
    let p = mid.alloc(&mut tc, 100_000, 8).unwrap();
    mid.flush_thread(&mut tc);
    let st = mid.stats();
    assert_eq!((st.allocs, st.chunks_live, st.chunk_maps), (1, 1, 1), "{st:?}");
    assert_eq!(st.bytes_in_use.current, CLASS_SIZE[class_of(100_000)] as u64);
    assert!(st.shard_count > 0 && st.bytes_free_committed > 0, "{st:?}");
    let mut sum = MidStats::default();
    sum.merge(&st);
    sum.merge(&st);
    assert_eq!((sum.allocs, sum.chunks_live), (2, 2));
    let mut names = Vec::new();
    st.visit(StatPath::root().join("mid"), &mut |path, _| names.push(path.parts().join(".")));
    // Seventeen values, the three gauges with their peaks; the committed free bytes are one.
    assert_eq!(names.len(), 20, "{names:?}");
    assert_eq!(names[0], "mid.allocs");
    assert!(names.iter().any(|n| n == "mid.bytes_free_committed"), "{names:?}");
    assert!(names.iter().any(|n| n == "mid.bytes_in_use.peak"), "{names:?}");
    // SAFETY: allocated above.
    unsafe { mid.dealloc(&mut tc, p, 100_000, 8) };
    mid.flush_thread(&mut tc);
}
