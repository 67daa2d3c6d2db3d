//! loom models of the remote-free protocol: remote pushes (single blocks and chains) race the
//! owner's take; a detached full slab is published by exactly one freer; an armed full slab is
//! delivered to its owner's inbox exactly once, and never after the owner retracted it.
//!
//! Run: `RUSTFLAGS="--cfg hak_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p hak-superslab --release --test loom`
#![cfg(hak_loom)]

use std::ptr::NonNull;
use std::sync::Arc;

use hak_os::Os;
use hak_superslab::{Inbox, RemoteFree, Retract, SlabRef, SsRef, LG_SUPERSLAB_DEFAULT};

struct Fixture {
    os: Os,
    ss: SsRef,
    owner: Inbox,
}

// SAFETY: the SuperSlab is shared memory whose fields are atomics or owner-only; the handle is
// only an address.
unsafe impl Send for Fixture {}
// SAFETY: as above.
unsafe impl Sync for Fixture {}

impl Fixture {
    fn new() -> Arc<Self> {
        let os = Os::new();
        let len = 1usize << LG_SUPERSLAB_DEFAULT;
        let base = os.map(len, len).unwrap();
        // SAFETY: fresh aligned mapping, not shared yet.
        let ss = unsafe { SsRef::init(base, LG_SUPERSLAB_DEFAULT) };
        let f = Arc::new(Fixture { os, ss, owner: Inbox::new() });
        // SAFETY: fresh slab; the inbox lives in the Arc as long as the slab is used.
        unsafe { f.slab().assign(&f.owner, 0, 64) };
        f
    }
    fn slab(&self) -> SlabRef {
        // SAFETY: formatted in `new`, mapped until drop.
        unsafe { self.ss.slab(1) }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // SAFETY: all threads joined; nothing uses the region.
        unsafe { self.os.unmap(self.ss.base(), 1 << LG_SUPERSLAB_DEFAULT) }.unwrap();
    }
}

fn nn(p: usize) -> NonNull<u8> {
    NonNull::new(p as *mut u8).unwrap()
}

#[test]
fn remote_pushes_race_owner_take_without_loss() {
    loom::model(|| {
        let f = Fixture::new();
        let slab = f.slab();
        let mut blocks = [std::ptr::null_mut(); 3];
        // SAFETY: this thread owns the slab.
        assert_eq!(unsafe { slab.alloc_batch(&mut blocks) }, 3);
        let b = blocks.map(|p| p as usize);
        let single = {
            let f = f.clone();
            loom::thread::spawn(move || {
                // SAFETY: freed by exactly one thread.
                let r = unsafe { f.slab().free_remote(nn(b[0])) };
                assert_eq!(r, RemoteFree::Pushed);
            })
        };
        let batch = {
            let f = f.clone();
            loom::thread::spawn(move || {
                // SAFETY: the two blocks are this thread's to give up.
                let r = unsafe { f.slab().free_remote_batch(&[b[1] as *mut u8, b[2] as *mut u8]) };
                assert_eq!(r, RemoteFree::Pushed);
            })
        };
        // SAFETY: owner-side collection racing with the pushes.
        let mut got = unsafe { slab.collect_remote() };
        single.join().unwrap();
        batch.join().unwrap();
        // SAFETY: as above.
        got += unsafe { slab.collect_remote() };
        assert_eq!(got, 3, "every block comes back exactly once");
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
        let f = Fixture::new();
        let slab = f.slab();
        let mut blocks = [std::ptr::null_mut(); 2];
        // SAFETY: this thread owns the slab.
        assert_eq!(unsafe { slab.alloc_batch(&mut blocks) }, 2);
        let handles: Vec<_> = blocks
            .iter()
            .map(|&p| {
                let f = f.clone();
                let p = p as usize;
                // SAFETY: each block is freed once.
                loom::thread::spawn(move || unsafe { f.slab().free_remote(nn(p)) })
            })
            .collect();
        // The owner gives the slab up while the frees race in (the real owner detaches only a
        // full slab; here the race is the point). It may fail if a free came first.
        // SAFETY: this thread owns the slab.
        let detached = unsafe { slab.try_detach() };
        let results: Vec<RemoteFree> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let publishes = results.iter().filter(|r| **r == RemoteFree::Publish).count();
        assert!(f.owner.is_empty(), "a detached slab is published, never delivered");
        if detached {
            assert_eq!(publishes, 1, "exactly one freer publishes a detached slab");
            let other = Inbox::new();
            // SAFETY: the publisher would hand it to us; adopt collects everything.
            assert_eq!(unsafe { slab.adopt(&other) }, 2);
        } else {
            assert_eq!(publishes, 0);
            // SAFETY: still the owner.
            assert_eq!(unsafe { slab.collect_remote() }, 2);
        }
    });
}

#[test]
fn armed_full_slab_is_delivered_once_or_retracted() {
    loom::model(|| {
        let f = Fixture::new();
        let slab = f.slab();
        let mut blocks = [std::ptr::null_mut(); 2];
        // SAFETY: this thread owns the slab. Arming needs no local block: drain the slab so
        // the model stays small (the real owner arms only full slabs).
        unsafe {
            assert_eq!(slab.alloc_batch(&mut blocks), 2);
            assert!(slab.mark_full());
        }
        let handles: Vec<_> = blocks
            .iter()
            .map(|&p| {
                let f = f.clone();
                let p = p as usize;
                // SAFETY: each block is freed once.
                loom::thread::spawn(move || unsafe { f.slab().free_remote(nn(p)) })
            })
            .collect();
        // The owner takes the notification back (as it does before giving a slab up or when
        // it frees into it itself) while the frees race in.
        // SAFETY: this thread owns the slab.
        let r = unsafe { slab.retract_full() };
        // After the retract no delivery is in flight: the inbox is final already.
        let delivered: Vec<SlabRef> = f.owner.take().collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), RemoteFree::Pushed);
        }
        match r {
            Retract::Delivered => assert_eq!(delivered, [slab], "delivered exactly once"),
            Retract::Retracted => assert!(delivered.is_empty(), "retracted before any free"),
        }
        assert!(f.owner.is_empty(), "nothing delivered after the retract");
        // SAFETY: still the owner; every block came back.
        unsafe {
            assert_eq!(slab.collect_remote(), 2);
            assert!(slab.is_empty());
        }
    });
}
