//! Stress: 8 threads allocate, hand blocks to each other for freeing, and exit with live blocks
//! that other threads free later; contents are checked at every hand-off.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::{mpsc, Mutex};

use hakmem::Hakmem;

/// The tests share the process's allocator, and the second asserts on a process-wide count
/// (SuperSlabs mapped): they take turns, or the other test's mappings land in that count.
static SERIAL: Mutex<()> = Mutex::new(());

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

fn fill(p: *mut u8, size: usize, v: u8) {
    // SAFETY: callers pass a live block of `size` bytes.
    unsafe { p.write_bytes(v, size) };
}

fn check(p: *mut u8, size: usize, v: u8) {
    // SAFETY: callers pass a live block of `size` bytes.
    let s = unsafe { std::slice::from_raw_parts(p, size) };
    assert!(s.iter().all(|&b| b == v), "block contents changed");
}

#[test]
fn eight_threads_with_cross_thread_frees() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const T: usize = 8;
    const N: usize = 20_000;
    let (txs, rxs): (Vec<_>, Vec<_>) =
        (0..T).map(|_| mpsc::channel::<(usize, usize, u8)>()).unzip();
    let handles: Vec<_> = rxs
        .into_iter()
        .enumerate()
        .map(|(t, rx)| {
            let txs = txs.clone();
            std::thread::spawn(move || {
                let a = Hakmem;
                let mut x = (t as u32 + 1).wrapping_mul(2_654_435_761);
                for i in 0..N {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    let size = 1 + (x as usize % 1500);
                    // SAFETY: non-zero size.
                    let p = unsafe { a.alloc(layout(size)) };
                    assert!(!p.is_null());
                    let v = (i % 255) as u8;
                    fill(p, size, v);
                    // Hand it to another thread, which frees it.
                    txs[(t + 1 + i % (T - 1)) % T].send((p as usize, size, v)).unwrap();
                    while let Ok((q, s, w)) = rx.try_recv() {
                        check(q as *mut u8, s, w);
                        // SAFETY: a live block handed to us.
                        unsafe { a.dealloc(q as *mut u8, layout(s)) };
                    }
                }
                rx
            })
        })
        .collect();
    drop(txs);
    let rxs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // Every sender has exited: drain what is left, here on the main thread.
    let a = Hakmem;
    for rx in rxs {
        for (q, s, w) in rx.try_iter() {
            check(q as *mut u8, s, w);
            // SAFETY: a live block whose allocating thread has exited.
            unsafe { a.dealloc(q as *mut u8, layout(s)) };
        }
    }
}

#[test]
fn threads_exit_with_live_blocks_freed_later_by_others() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for round in 0..4u8 {
        let blocks: Vec<(usize, usize)> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let a = Hakmem;
                    (0..3000)
                        .map(|i| {
                            let size = 8 + (i * 37 + t) % 2000;
                            // SAFETY: non-zero size.
                            let p = unsafe { a.alloc(layout(size)) };
                            fill(p, size, round);
                            (p as usize, size)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .flat_map(|h| h.join().unwrap())
            .collect();
        // The allocating threads are gone; free from two other threads at once.
        let (l, r) = blocks.split_at(blocks.len() / 2);
        std::thread::scope(|s| {
            for half in [l, r] {
                s.spawn(move || {
                    for &(p, size) in half {
                        check(p as *mut u8, size, round);
                        // SAFETY: live blocks handed over.
                        unsafe { Hakmem.dealloc(p as *mut u8, layout(size)) };
                    }
                });
            }
        });
        // New threads reuse the abandoned slabs before mapping more.
        let before = hakmem::stats().pool.superslabs_mapped;
        std::thread::spawn(move || {
            let v: Vec<_> = (0..3000)
                // SAFETY: non-zero size.
                .map(|i| (unsafe { Hakmem.alloc(layout(8 + i % 2000)) }, 8 + i % 2000))
                .collect();
            for (p, s) in v {
                // SAFETY: live blocks.
                unsafe { Hakmem.dealloc(p, layout(s)) };
            }
        })
        .join()
        .unwrap();
        assert!(hakmem::stats().pool.superslabs_mapped <= before + 1);
    }
}
