//! loom models of the shard protocol (`--cfg hak_loom`): table growth and migration racing
//! pushes and pops. Constants shrink under loom (2 shards growing to 4, a contention window of
//! one acquisition). The models drive `Shards` — the code `Mid` uses — with blocks from test
//! buffers instead of registered chunks, because under loom the registry only covers
//! addresses below 16 MiB.

use std::boxed::Box;
use std::vec;
use std::vec::Vec;

use hak_os::Os;
use loom::sync::Arc;
use loom::thread;

use crate::block::BLOCK_WORDS;
use crate::shard::{ShardCursor, Shards, MAX_SHARDS};

/// Test blocks: `n` zeroed buffers of `BLOCK_WORDS` words; addresses are passed as `usize`.
struct Blocks(Vec<[usize; BLOCK_WORDS]>);

impl Blocks {
    fn new(n: usize) -> Blocks {
        Blocks(vec![[0; BLOCK_WORDS]; n])
    }
    fn addr(&mut self, i: usize) -> usize {
        self.0[i].as_mut_ptr() as usize
    }
}

/// Pushes a one-block batch of class 0 made of the block at `addr`.
fn push_one(shards: &Shards, os: &Os, cur: &mut ShardCursor, addr: usize) -> bool {
    let b = addr as *mut u8;
    // SAFETY: the test block is ours and has `BLOCK_WORDS` words; a one-block batch ends in
    // a null link.
    unsafe {
        crate::block::set_next(b, core::ptr::null_mut());
        shards.push(os, cur, 0, b, 1, 8, 0)
    }
}

/// What every model starts from: an `Os`, empty shards, and two test blocks (kept alive by the
/// returned `Blocks`) with their addresses.
fn setup() -> (&'static Os, Arc<Shards>, Blocks, [usize; 2]) {
    let os: &'static Os = Box::leak(Box::new(Os::new()));
    let mut blocks = Blocks::new(2);
    let addrs = [blocks.addr(0), blocks.addr(1)];
    (os, Arc::new(Shards::new()), blocks, addrs)
}

/// Checks conservation and that old tables were emptied, then unmaps the tables.
fn finish(shards: Arc<Shards>, os: &Os, expect: usize) {
    let (current, old) = shards.count_blocks();
    assert_eq!(old, 0, "a batch was stranded in a replaced table");
    assert_eq!(current, expect, "a batch was lost or duplicated");
    let mut shards = Arc::try_unwrap(shards).expect("threads joined");
    // SAFETY: the only reference; nothing uses it afterwards.
    unsafe { shards.release(os) };
}

#[test]
fn growth_while_another_thread_pushes_and_pops_loses_no_batch() {
    loom::model(|| {
        let (os, shards, blocks, [b0, b1]) = setup();
        let mut cur = ShardCursor::with_seed(1);
        assert!(push_one(&shards, os, &mut cur, b0));

        let s2 = shards.clone();
        let t = thread::spawn(move || {
            let mut cur = ShardCursor::with_seed(1);
            assert!(push_one(&s2, os, &mut cur, b1));
            s2.pop(os, &mut cur, 0, 0).is_some()
        });
        shards.grow_now(os);
        // The pop may miss while a batch is in flight between tables: conservation is what
        // must hold.
        let popped = usize::from(t.join().unwrap());
        assert_eq!(shards.len(), 2 * crate::shard::INITIAL_SHARDS);
        finish(shards, os, 2 - popped);
        drop(blocks);
    });
}

#[test]
fn contention_triggers_growth_without_losing_batches() {
    loom::model(|| {
        let (os, shards, blocks, [b0, b1]) = setup();
        // Map the first table before the threads start, to keep the model small.
        assert_eq!(shards.pop(os, &mut ShardCursor::with_seed(0), 0, 0), None);

        let s2 = shards.clone();
        let t = thread::spawn(move || {
            let mut cur = ShardCursor::with_seed(0);
            assert!(push_one(&s2, os, &mut cur, b1));
            usize::from(s2.pop(os, &mut cur, 0, 0).is_some())
        });
        let mut cur = ShardCursor::with_seed(0);
        assert!(push_one(&shards, os, &mut cur, b0));
        let mine = usize::from(shards.pop(os, &mut cur, 0, 0).is_some());
        let theirs = t.join().unwrap();
        assert!(shards.len() <= MAX_SHARDS);
        if shards.len() > crate::shard::INITIAL_SHARDS {
            GREW.store(true, core::sync::atomic::Ordering::Relaxed);
        }
        finish(shards, os, 2 - mine - theirs);
        drop(blocks);
    });
    assert!(GREW.load(core::sync::atomic::Ordering::Relaxed), "no execution grew the table");
}

/// Set when some execution of the contention model grew the table (std's atomic: outside the
/// model, it only reports that the growth path was explored).
static GREW: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

#[test]
fn drain_at_thread_exit_racing_growth_neither_loses_nor_repeats_a_batch() {
    loom::model(|| {
        let (os, shards, blocks, [b0, b1]) = setup();
        // Map the first table before the threads start, to keep the model small.
        assert_eq!(shards.pop(os, &mut ShardCursor::with_seed(1), 0, 0), None);

        let s2 = shards.clone();
        let t = thread::spawn(move || {
            // A thread pushes twice and exits: its exit drains its own shard.
            let mut cur = ShardCursor::with_seed(1);
            assert!(push_one(&s2, os, &mut cur, b0));
            assert!(push_one(&s2, os, &mut cur, b1));
            let mut drained = Vec::new();
            s2.drain_own(&cur, |c, h, n| {
                assert_eq!((c, n), (0, 1));
                drained.push(h as usize);
            });
            drained
        });
        shards.grow_now(os);
        let drained = t.join().unwrap();
        let mut uniq = drained.clone();
        uniq.sort_unstable();
        uniq.dedup();
        assert_eq!(uniq.len(), drained.len(), "a batch was drained twice");
        // A batch in flight between tables during the drain stays listed (the next drain or
        // pop gets it): what must hold is that every batch is in exactly one place.
        finish(shards, os, 2 - drained.len());
        drop(blocks);
    });
}
