//! loom model of the remote-free protocol: two threads push onto a slab's remote stack while
//! the owner takes it with one swap; no block is lost or seen twice, and a detached slab is
//! published by exactly one freer.
//!
//! Run: `RUSTFLAGS="--cfg hak_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p hak-superslab --release --test loom`
#![cfg(hak_loom)]

use std::ptr::NonNull;
use std::sync::Arc;

use hak_os::Os;
use hak_superslab::{RemoteFree, SuperSlab, LG_SUPERSLAB_DEFAULT};

struct Fixture {
    os: Os,
    base: NonNull<u8>,
}

// SAFETY: the SuperSlab header is Sync; the raw base is only used to unmap at the end.
unsafe impl Send for Fixture {}
// SAFETY: as above.
unsafe impl Sync for Fixture {}

impl Fixture {
    fn new() -> Self {
        let os = Os::new();
        let len = 1usize << LG_SUPERSLAB_DEFAULT;
        let base = os.map(len, len).unwrap();
        // SAFETY: fresh aligned mapping, not shared yet.
        let ss = unsafe { SuperSlab::init(base, LG_SUPERSLAB_DEFAULT) };
        let (lo, hi) = ss.slab_range(1);
        // SAFETY: fresh slab.
        unsafe { ss.slab(1).assign(1, 0, 64, lo, hi) };
        Fixture { os, base }
    }
    fn ss(&self) -> &SuperSlab {
        // SAFETY: formatted in `new`, mapped until drop.
        unsafe { SuperSlab::from_block(self.base.as_ptr(), LG_SUPERSLAB_DEFAULT) }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // SAFETY: all threads joined; nothing uses the region.
        unsafe { self.os.unmap(self.base, 1 << LG_SUPERSLAB_DEFAULT) }.unwrap();
    }
}

#[test]
fn remote_pushes_race_owner_take_without_loss() {
    loom::model(|| {
        let f = Arc::new(Fixture::new());
        let slab = f.ss().slab(1);
        let mut blocks = [std::ptr::null_mut(); 4];
        // SAFETY: this thread owns the slab.
        assert_eq!(unsafe { slab.alloc_batch(&mut blocks) }, 4);
        let handles: Vec<_> = [[blocks[0], blocks[1]], [blocks[2], blocks[3]]]
            .into_iter()
            .map(|pair| {
                let f = f.clone();
                let pair = pair.map(|p| p as usize);
                loom::thread::spawn(move || {
                    for p in pair {
                        // SAFETY: each block is freed by exactly one thread.
                        let r = unsafe {
                            f.ss().slab(1).free_remote(NonNull::new(p as *mut u8).unwrap())
                        };
                        assert_eq!(r, RemoteFree::Pushed);
                    }
                })
            })
            .collect();
        // SAFETY: owner-side collection racing with the pushes.
        let mut got = unsafe { slab.collect_remote() };
        for h in handles {
            h.join().unwrap();
        }
        // SAFETY: as above.
        got += unsafe { slab.collect_remote() };
        assert_eq!(got, 4, "every block comes back exactly once");
        // SAFETY: no threads left.
        unsafe {
            assert!(slab.is_empty());
            slab.check_invariants().unwrap();
        }
    });
}

#[test]
fn detached_slab_is_published_by_exactly_one_freer() {
    loom::model(|| {
        let f = Arc::new(Fixture::new());
        let slab = f.ss().slab(1);
        let mut blocks = [std::ptr::null_mut(); 2];
        // SAFETY: this thread owns the slab.
        assert_eq!(unsafe { slab.alloc_batch(&mut blocks) }, 2);
        let handles: Vec<_> = blocks
            .iter()
            .map(|&p| {
                let f = f.clone();
                let p = p as usize;
                loom::thread::spawn(move || {
                    // SAFETY: each block is freed once.
                    unsafe { f.ss().slab(1).free_remote(NonNull::new(p as *mut u8).unwrap()) }
                })
            })
            .collect();
        // The owner gives the slab up while the frees race in (the real owner detaches only a
        // full slab; here the race is the point). It may fail if a free came first.
        // SAFETY: this thread owns the slab.
        let detached = unsafe { slab.try_detach() };
        let results: Vec<RemoteFree> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let publishes = results.iter().filter(|r| **r == RemoteFree::Publish).count();
        if detached {
            assert_eq!(publishes, 1, "exactly one freer publishes a detached slab");
            // SAFETY: the publisher would hand it to us; adopt collects everything.
            assert_eq!(unsafe { slab.adopt(9) }, 2);
        } else {
            assert_eq!(publishes, 0);
            assert_eq!(slab.owner(), 1, "a failed detach keeps ownership");
            // SAFETY: still the owner.
            assert_eq!(unsafe { slab.collect_remote() }, 2);
        }
    });
}
