//! A program with `Hakmem` as its `#[global_allocator]`: threads using Vec, String, HashMap and
//! BTreeMap, cross-thread frees, threads that exit with live blocks; at the end the stats show
//! every tiny and mid block returned. It runs without the libtest harness (`harness = false`), whose
//! own live allocations would otherwise show in the accounting.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;

#[global_allocator]
static A: hakmem::Hakmem = hakmem::Hakmem;

fn churn(seed: u64) -> u64 {
    let mut map: HashMap<String, Vec<u64>> = HashMap::new();
    let mut tree = BTreeMap::new();
    let mut x = seed | 1;
    for i in 0..20_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = format!("k{}", x % 997);
        map.entry(key.clone()).or_default().push(i);
        tree.insert(x % 5000, key);
        if i % 3 == 0 {
            map.remove(&format!("k{}", (x >> 5) % 997));
        }
    }
    let total: usize = map.values().map(Vec::len).sum();
    assert!(total > 0 && !tree.is_empty());
    // Contents survive: every vector is strictly increasing.
    for v in map.values() {
        assert!(v.windows(2).all(|w| w[0] < w[1]));
    }
    total as u64 + tree.len() as u64
}

fn main() {
    program_runs_on_hakmem_and_returns_every_block();
    mid_blocks_come_from_l25_and_all_come_back();
    println!("2 passed, 0 failed");
}

fn program_runs_on_hakmem_and_returns_every_block() {
    // std keeps a few allocations for the life of the process (the main thread's handle, TLS
    // destructor lists, ...): create them first and measure from there.
    let _ = std::thread::current();
    std::thread::spawn(|| churn(7)).join().unwrap();
    hakmem::flush_thread_cache();
    let baseline = hakmem::stats().tiny.bytes_held;

    // Threads with ordinary collections.
    let handles: Vec<_> = (0..8).map(|t| std::thread::spawn(move || churn(t + 1))).collect();
    for h in handles {
        assert!(h.join().unwrap() > 0);
    }

    // Cross-thread frees: producers hand boxes and strings to a consumer.
    let (tx, rx) = mpsc::channel::<(Box<[u8; 100]>, String)>();
    let producers: Vec<_> = (0..3u8)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..5000u32 {
                    tx.send((Box::new([t; 100]), i.to_string())).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let consumer = std::thread::spawn(move || {
        let mut n = 0;
        for (b, s) in rx {
            assert!(b.iter().all(|&x| x == b[0]));
            assert!(s.parse::<u32>().is_ok());
            n += 1;
        }
        n
    });
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(consumer.join().unwrap(), 15000);

    // Threads that exit with live blocks, freed later by another thread.
    let survivors: Vec<Vec<String>> = (0..4)
        .map(|t| {
            std::thread::spawn(move || (0..2000).map(|i| format!("{t}-{i}")).collect())
                .join()
                .unwrap()
        })
        .collect();
    for (t, v) in survivors.iter().enumerate() {
        assert_eq!(v[1999], format!("{t}-1999"));
    }
    drop(survivors);

    // Every tiny block is back once this thread's cache is flushed too.
    hakmem::flush_thread_cache();
    let s = hakmem::stats();
    assert_eq!(s.tiny.bytes_held, baseline, "{s:#?}");
    assert!(s.tiny.remote_frees > 0, "cross-thread frees took the remote path");
    assert!(s.pool.superslabs_mapped > 0);
    hakmem::trim();
}

fn mid_blocks_come_from_l25_and_all_come_back() {
    hakmem::flush_thread_cache();
    let before = hakmem::stats();

    // Vectors of 64 KiB .. 1 MiB: mid sizes. Half are freed by the thread that made them, half
    // by another thread after their maker exited.
    let made: Vec<Vec<Vec<u8>>> = (0..4u8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut keep = Vec::new();
                for i in 0..200usize {
                    let n = (64 << 10) + (i * 4999 + t as usize * 7919) % (960 << 10);
                    let v = vec![t ^ i as u8; n];
                    if i % 2 == 0 {
                        keep.push(v);
                    }
                }
                keep
            })
            .join()
            .unwrap()
        })
        .collect();
    let mid = hakmem::stats().mid;
    assert!(mid.chunks_live > before.mid.chunks_live || mid.chunk_maps > 0, "{mid:#?}");
    assert!(mid.allocs >= before.mid.allocs + 400, "exited threads folded their counts: {mid:#?}");
    for (t, keep) in made.iter().enumerate() {
        for (j, v) in keep.iter().enumerate() {
            let want = t as u8 ^ (2 * j) as u8;
            assert!(v[0] == want && v[v.len() - 1] == want, "block contents survived");
        }
    }
    drop(made);

    // Zeroed requests of 256 KiB and more are big-tier mappings (zero without a memset).
    let big_before = hakmem::stats().big.live_bytes.current;
    let z = vec![0u8; 512 << 10];
    assert!(z.iter().all(|&b| b == 0));
    assert!(hakmem::stats().big.live_bytes.current > big_before);
    drop(z);

    hakmem::flush_thread_cache();
    let after = hakmem::stats().mid;
    assert_eq!(after.bytes_in_use.current, before.mid.bytes_in_use.current, "{after:#?}");
    assert_eq!(after.allocs - before.mid.allocs, after.frees - before.mid.frees, "{after:#?}");
    hakmem::trim();
    assert_eq!(hakmem::stats().mid.chunks_cached, 0, "trim unmaps cached empty chunks");
}
