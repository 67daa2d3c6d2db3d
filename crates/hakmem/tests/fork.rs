//! `fork()` while other threads allocate, free and trade blocks in every tier: each child
//! allocates and frees in every tier (tiny, mid, big, and realloc across them), frees blocks the
//! parent's other threads allocated before the fork, checks contents and exits. A child that
//! does not finish within a few seconds (a lock another thread held at fork time, never
//! released in the child) is killed and counted as hung: the test fails instead of hanging.
//! Before the allocator's `pthread_atfork` handlers covered every lock, children hung on the
//! shared pool's lock, a mid class lock or the big tier's lock.
//!
//! It runs as its own process (`harness = false`) under hakmem as the global allocator, so the
//! test's own threads, vectors and formatting go through hakmem too. Forks: `HAKMEM_TEST_FORKS`
//! (default 500).

// The clippy.toml ban on `std::env::var` protects the allocator; this is a test program.
#![allow(clippy::disallowed_methods)]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hakmem::Hakmem;

#[global_allocator]
static A: Hakmem = Hakmem;

const WORKERS: usize = 3;
/// Blocks the workers trade through (one size per slot, so any thread can free any slot).
const SLOTS: usize = 256;
static SLOT: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];

/// The size of the blocks that live in slot `i`: mostly tiny, some mid, a few big.
fn slot_size(i: usize) -> usize {
    match i % 16 {
        0 => (64 << 10) + i * 1024,               // mid
        1 if i % 64 == 1 => (2 << 20) + i * 4096, // big
        _ => 16 + i * 37,                         // tiny
    }
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Writes a pattern for `seed` at both ends and in the middle of a `size`-byte block.
///
/// # Safety
/// `p` holds `size >= 1` bytes.
unsafe fn mark(p: *mut u8, size: usize, seed: u8) {
    // SAFETY: the three offsets are inside the block.
    unsafe {
        p.write(seed);
        p.add(size / 2).write(seed ^ 0x5A);
        p.add(size - 1).write(seed ^ 0xA5);
    }
}

/// Whether [`mark`] with `seed` is still there.
///
/// # Safety
/// As for [`mark`].
unsafe fn marked(p: *const u8, size: usize, seed: u8) -> bool {
    // SAFETY: the three offsets are inside the block.
    unsafe {
        p.read() == seed
            && p.add(size / 2).read() == seed ^ 0x5A
            && p.add(size - 1).read() == seed ^ 0xA5
    }
}

/// Takes slot `i`'s block, if any, checks it and frees it.
fn free_slot(i: usize) -> bool {
    let p = SLOT[i].swap(0, Ordering::AcqRel) as *mut u8;
    if p.is_null() {
        return true;
    }
    let size = slot_size(i);
    // SAFETY: the slot held a live block of `slot_size(i)` bytes marked with seed `i`; taking it
    // out made it ours.
    unsafe {
        let ok = marked(p, size, i as u8);
        A.dealloc(p, layout(size));
        ok
    }
}

/// A parent thread: fills and empties slots at random (frees of blocks other workers
/// allocated included), with a growing `Vec` and a `String` now and then.
fn worker(seed: u64, stop: &AtomicBool, bad: &AtomicUsize) {
    let mut x = seed;
    while !stop.load(Ordering::Relaxed) {
        let r = xorshift(&mut x);
        let i = (r % SLOTS as u64) as usize;
        if SLOT[i].load(Ordering::Relaxed) != 0 {
            if !free_slot(i) {
                bad.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            let size = slot_size(i);
            // SAFETY: a non-zero layout.
            let p = unsafe { A.alloc(layout(size)) };
            assert!(!p.is_null());
            // SAFETY: `p` holds `size` bytes.
            unsafe { mark(p, size, i as u8) };
            if SLOT[i].compare_exchange(0, p as usize, Ordering::AcqRel, Ordering::Relaxed).is_err()
            {
                // SAFETY: still ours: nobody saw it.
                unsafe { A.dealloc(p, layout(size)) };
            }
        }
        if r.is_multiple_of(512) {
            let v: Vec<u64> = (0..(r % 40_000)).collect();
            let s = format!("{}", v.len());
            std::hint::black_box((v, s));
        }
    }
}

/// What a child does: every tier, realloc across tiers, and frees of blocks the parent's other
/// threads allocated (their owners do not exist here). 0 on success.
fn child_work() -> i32 {
    let sizes = [24usize, 200, 3000, 40 << 10, 100 << 10, 700 << 10, 3 << 20, 9 << 20];
    for round in 0..20u8 {
        let mut held = Vec::with_capacity(sizes.len());
        for (k, &size) in sizes.iter().enumerate() {
            // SAFETY: a non-zero layout.
            let p = unsafe { A.alloc(layout(size)) };
            if p.is_null() {
                return 2;
            }
            // SAFETY: `p` holds `size` bytes.
            unsafe { mark(p, size, round ^ k as u8) };
            held.push((p, size, round ^ k as u8));
        }
        for (p, size, seed) in held {
            // SAFETY: allocated above with this size, marked with `seed`.
            unsafe {
                if !marked(p, size, seed) {
                    return 3;
                }
                A.dealloc(p, layout(size));
            }
        }
    }
    // A buffer grown from 8 bytes through every tier.
    let mut v: Vec<u8> = Vec::new();
    for i in 0..(4u32 << 20) {
        v.push(i as u8);
    }
    if v.iter().enumerate().step_by(4099).any(|(i, &b)| b != i as u8) {
        return 4;
    }
    drop(v);
    for i in 0..SLOTS {
        if !free_slot(i) {
            return 5;
        }
    }
    0
}

/// Waits for `pid` up to `limit`; `None` if it is still running then (it is killed).
fn wait_for(pid: libc::pid_t, limit: Duration) -> Option<libc::c_int> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: our child; `status` is a valid out-pointer.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            return Some(status);
        }
        if start.elapsed() > limit {
            // SAFETY: as above.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn main() {
    let forks: usize =
        std::env::var("HAKMEM_TEST_FORKS").ok().and_then(|s| s.parse().ok()).unwrap_or(500);
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (stop, bad) = (stop.clone(), bad.clone());
            std::thread::spawn(move || worker(0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1), &stop, &bad))
        })
        .collect();
    let (mut hung, mut failed) = (0, 0);
    let start = Instant::now();
    for f in 0..forks {
        // Let the workers get into every path between forks.
        std::thread::sleep(Duration::from_micros(100 + (f as u64 % 7) * 100));
        // SAFETY: the child only allocates, frees and calls _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = child_work();
            // SAFETY: ends the child without running the parent's exit handlers twice.
            unsafe { libc::_exit(code) };
        }
        match wait_for(pid, Duration::from_secs(10)) {
            None => hung += 1,
            Some(st) if !libc::WIFEXITED(st) || libc::WEXITSTATUS(st) != 0 => {
                eprintln!("fork {f}: child ended with status {st:#x}");
                failed += 1;
            }
            Some(_) => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    for i in 0..SLOTS {
        assert!(free_slot(i), "slot {i} corrupted");
    }
    let bad = bad.load(Ordering::Relaxed);
    eprintln!(
        "fork: {forks} forks in {:.1} s, {hung} children hung, {failed} failed, {bad} corrupted blocks",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(hung, 0, "{hung} of {forks} children hung after fork");
    assert_eq!(failed, 0, "{failed} of {forks} children failed");
    assert_eq!(bad, 0, "blocks traded between threads were corrupted");
}
