//! loom models of the registry: a reader racing registration and unregistration sees nothing or
//! a fully initialised owner; two threads pushing and popping the SuperSlab cache lose nothing.
//!
//! Run: `RUSTFLAGS="--cfg hak_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p hak-registry --release --test loom`
#![cfg(hak_loom)]

use std::ptr::NonNull;

use hak_os::Os;
use hak_registry::{CacheLimits, OwnerKind, Registry, SuperSlabCache, GRANULE};
use hak_sync::atomic::{AtomicUsize, Ordering};

/// An owner's "header": the reader must never see the registration without it.
struct Header {
    magic: AtomicUsize,
}

#[test]
fn lookup_sees_nothing_or_an_initialised_owner() {
    loom::model(|| {
        let os: &'static Os = Box::leak(Box::new(Os::new()));
        let reg: &'static Registry<'static> = Box::leak(Box::new(Registry::new(os)));
        // A fake region address in the loom-sized map; its header lives in ordinary memory,
        // published through the registry entry (a real owner's header is at `base`).
        let header: &'static Header = Box::leak(Box::new(Header { magic: AtomicUsize::new(0) }));
        let base = 8 * GRANULE;
        // Create the leaf up front, so the entry's own release/acquire is what the model checks
        // (leaf publication would otherwise order the header by itself).
        reg.register(NonNull::new(GRANULE as *mut u8).unwrap(), GRANULE, OwnerKind::Mid).unwrap();
        let writer = loom::thread::spawn(move || {
            header.magic.store(0xC0FFEE, Ordering::Relaxed);
            let b = NonNull::new(base as *mut u8).unwrap();
            reg.register(b, 2 * GRANULE, OwnerKind::SuperSlab).unwrap();
            reg.unregister(b, 2 * GRANULE);
        });
        for addr in [base + GRANULE + 5, base] {
            if let Some(owner) = reg.lookup(addr) {
                assert_eq!(owner.base.as_ptr() as usize, base);
                assert_eq!(owner.kind, OwnerKind::SuperSlab);
                assert_eq!(header.magic.load(Ordering::Relaxed), 0xC0FFEE, "init visible");
            }
        }
        writer.join().unwrap();
        assert_eq!(reg.lookup(base), None);
    });
}

#[test]
fn racing_leaf_creation_publishes_one_leaf() {
    loom::model(|| {
        let os: &'static Os = Box::leak(Box::new(Os::new()));
        let reg: &'static Registry<'static> = Box::leak(Box::new(Registry::new(os)));
        let t = loom::thread::spawn(move || {
            reg.register(NonNull::new(GRANULE as *mut u8).unwrap(), GRANULE, OwnerKind::Mid)
                .unwrap();
        });
        reg.register(NonNull::new((2 * GRANULE) as *mut u8).unwrap(), GRANULE, OwnerKind::Big)
            .unwrap();
        t.join().unwrap();
        assert_eq!(reg.leaf_count(), 1);
        assert_eq!(reg.lookup(GRANULE).unwrap().kind, OwnerKind::Mid);
        assert_eq!(reg.lookup(2 * GRANULE).unwrap().kind, OwnerKind::Big);
    });
}

#[test]
fn cache_push_pop_from_two_threads_loses_nothing() {
    loom::model(|| {
        let os: &'static Os = Box::leak(Box::new(Os::new()));
        let reg: &'static Registry<'static> = Box::leak(Box::new(Registry::new(os)));
        let limits = CacheLimits { decommit: false, ..CacheLimits::DEFAULT };
        let cache: &'static SuperSlabCache<'static> =
            Box::leak(Box::new(SuperSlabCache::new(reg, limits)));
        let page = hak_os::page_size();
        let a = os.map(page, page).unwrap();
        let b = os.map(page, page).unwrap();
        let (ua, ub) = (a.as_ptr() as usize, b.as_ptr() as usize);
        let t = loom::thread::spawn(move || {
            // SAFETY: the region is this thread's to give.
            unsafe { cache.push(NonNull::new(ua as *mut u8).unwrap(), page) };
            cache.pop(page).map(|p| p.as_ptr() as usize)
        });
        // SAFETY: as above.
        unsafe { cache.push(b, page) };
        let mine = cache.pop(page).map(|p| p.as_ptr() as usize);
        let theirs = t.join().unwrap();
        let rest = cache.pop(page).map(|p| p.as_ptr() as usize);
        let mut got: Vec<usize> = [mine, theirs, rest].into_iter().flatten().collect();
        got.sort();
        let mut want = vec![ua, ub];
        want.sort();
        assert_eq!(got, want, "both regions come back exactly once");
        assert_eq!(cache.stats().cached, 0);
        for p in [a, b] {
            // SAFETY: popped, ours again.
            unsafe { os.unmap(p, page) }.unwrap();
        }
    });
}
