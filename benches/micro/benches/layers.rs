//! Micro-benchmarks of each layer's operations, on instances built here (no globals):
//! thread-cache pop/push, a refill batch, shared-pool acquire/release, registry lookup,
//! remote push/take, big-cache put/get. Run: `cargo bench -p hak-micro`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::ptr::NonNull;

use criterion::{criterion_group, criterion_main, Criterion};
use hak_bigcache::{BigCache, BigLimits};
use hak_os::Os;
use hak_registry::{CacheLimits, Registry};
use hak_shared_pool::{Acquired, SharedPool};
use hak_superslab::{Inbox, LG_SUPERSLAB_DEFAULT};
use hak_tiny_front::{CacheShared, ThreadCache};

const LG: u32 = LG_SUPERSLAB_DEFAULT;

fn world() -> (&'static Registry<'static>, &'static SharedPool<'static>) {
    let os: &'static Os = Box::leak(Box::new(Os::new()));
    let reg: &'static Registry<'static> = Box::leak(Box::new(Registry::new(os)));
    let pool = Box::leak(Box::new(SharedPool::new(reg, LG, CacheLimits::DEFAULT)));
    (reg, pool)
}

/// An owner identity that lives for the whole run.
static OWNER: Inbox = Inbox::new();

fn acquire(pool: &SharedPool<'static>, class: usize, bs: u32) -> Acquired {
    // SAFETY: the owner is a static: valid and in place for every slab's life.
    unsafe { pool.acquire(class, bs, &OWNER) }.unwrap()
}

fn thread_cache(c: &mut Criterion) {
    let (_, pool) = world();
    let shared: &'static CacheShared = Box::leak(Box::new(CacheShared::new()));
    let mut tc = Box::new(ThreadCache::new(pool));
    // SAFETY: the shared part is leaked: stable, outlives the cache.
    unsafe { tc.activate(shared, 1) };
    let tcp: *mut ThreadCache<'static> = &mut *tc;
    // Warm the bin.
    // SAFETY: our cache, valid class.
    let p = unsafe { ThreadCache::pop(tcp, 3) };
    let p = if p.is_null() { tc.alloc_slow(3).unwrap().as_ptr() } else { p };
    // SAFETY: live block of class 3.
    unsafe { assert!(ThreadCache::free_fast(tcp, 3, p, LG)) };
    c.bench_function("tiny-front: pop + free_fast (bin hit)", |b| {
        b.iter(|| {
            // SAFETY: the bin holds blocks; each popped block is freed back at once.
            unsafe {
                let p = ThreadCache::pop(tcp, 3);
                black_box(p);
                ThreadCache::free_fast(tcp, 3, p, LG)
            }
        })
    });
    c.bench_function("tiny-front: refill batch (alloc_slow after flush)", |b| {
        b.iter(|| {
            let p = tc.alloc_slow(5).unwrap();
            // SAFETY: our cache; the block goes back through the slow free.
            unsafe { tc.free_slow(5, p) };
            tc.flush();
        })
    });
}

fn shared_pool(c: &mut Criterion) {
    let (_, pool) = world();
    let _anchor = acquire(pool, 0, 16);
    c.bench_function("shared-pool: acquire + release (stage 1)", |b| {
        b.iter(|| {
            let a = acquire(pool, 4, 80);
            // SAFETY: owned, nothing allocated from it.
            unsafe { pool.release(a.slab) };
        })
    });
}

fn registry(c: &mut Criterion) {
    let (reg, pool) = world();
    let a = acquire(pool, 0, 16);
    let addr = a.slab.superslab().base().as_ptr() as usize + 12345;
    c.bench_function("registry: lookup (hit)", |b| b.iter(|| reg.lookup(black_box(addr))));
    c.bench_function("registry: lookup (miss)", |b| {
        b.iter(|| reg.lookup(black_box(0x7000_0000_0000)))
    });
}

fn remote(c: &mut Criterion) {
    let (_, pool) = world();
    let slab = acquire(pool, 2, 48).slab;
    let mut blocks = [std::ptr::null_mut(); 64];
    c.bench_function("superslab: 64 remote pushes + one take", |b| {
        b.iter(|| {
            // SAFETY: this thread owns the slab; every block is pushed once and taken back.
            unsafe {
                let n = slab.alloc_batch(&mut blocks);
                for &p in &blocks[..n] {
                    let _ = slab.free_remote(NonNull::new_unchecked(p));
                }
                let got = slab.collect_remote();
                let mut back = [std::ptr::null_mut(); 64];
                slab.alloc_batch(&mut back[..got as usize]);
                for &p in &back[..got as usize] {
                    slab.free_local(NonNull::new_unchecked(p));
                }
            }
        })
    });
}

fn big_cache(c: &mut Criterion) {
    let (reg, _) = world();
    let big = Box::leak(Box::new(BigCache::new(reg, BigLimits::DEFAULT)));
    c.bench_function("bigcache: alloc + dealloc 4 MiB (cache hit)", |b| {
        b.iter(|| {
            let (p, _) = big.alloc(4 << 20, 16).unwrap();
            // SAFETY: the block we just got.
            unsafe { big.dealloc(p) }.unwrap();
        })
    });
}

criterion_group!(layers, thread_cache, shared_pool, registry, remote, big_cache);
criterion_main!(layers);
