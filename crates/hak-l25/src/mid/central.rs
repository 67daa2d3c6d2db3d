//! The per-class central lists: gathering blocks from partial chunks (mapping a chunk when none
//! has room), putting blocks back on their chunks' dirty or clean lists with the budget purge
//! that follows, and releasing chunks that empty to the empty cache or the OS. Every list
//! operation here runs under the class's central lock.

use core::ptr::{self, NonNull};

use hak_registry::{OwnerKind, GRANULE};
use hak_sync::atomic::Ordering;
use hak_sync::MutexGuard;

use super::purge::Purge;
use super::stats::Tally;
use super::{Mid, FIRST_PURGED};
use crate::block::next;
use crate::chunk::{Central, ChunkHeader, MAX_EMPTY_BYTES};
use crate::class::{CHUNK_BYTES, CLASS_SIZE};

/// Most chunks one `central_free` purges for the budget.
const BUDGET_PURGE_CHUNKS: usize = 4;

impl Mid<'_> {
    /// Gathers up to `want` blocks of class `c` from its chunks (mapping one if none has
    /// room): a null-terminated list and its length, or `None` if no block could be had.
    pub(super) fn central_alloc(&self, c: usize, want: usize) -> Option<(*mut u8, usize)> {
        let mut tally = Tally::default();
        let mut g = self.central[c].lock();
        let mut head = ptr::null_mut();
        let mut n = 0;
        while n < want {
            let h = match g.first() {
                Some(h) => h,
                None => {
                    let Some(fresh) = self.chunk_for(c) else { break };
                    // SAFETY: a fresh (or reassigned) chunk of class `c`, on no partial list;
                    // we hold the class lock.
                    unsafe { g.push(fresh) };
                    fresh
                }
            };
            // SAFETY: `h` is on the partial list of class `c`, whose lock we hold.
            unsafe {
                let (k, committed, decommitted) = ChunkHeader::take(h, want - n, &mut head);
                n += k;
                tally.committed_out += committed as u64;
                tally.decommitted_out += decommitted as u64;
                if (*h).dirty_count == 0 {
                    g.unqueue_dirty(h);
                }
                if !ChunkHeader::has_room(h) {
                    g.remove(h);
                }
            }
        }
        drop(g);
        self.apply(&mut tally);
        (n > 0).then_some((head, n))
    }

    /// An empty chunk assigned to class `c`: from the empty cache, else newly mapped and
    /// registered. Called with class `c`'s central lock held.
    fn chunk_for(&self, c: usize) -> Option<*mut ChunkHeader> {
        let bytes = CHUNK_BYTES[c];
        // SAFETY: we hold the cache lock for the call.
        if let Some(h) = unsafe { self.empty.lock().take(bytes) } {
            // SAFETY: a cached chunk is empty and on no list but the all-chunks list.
            unsafe { ChunkHeader::assign(h, c) };
            return Some(h);
        }
        let os = self.reg.os();
        let Ok(base) = os.map(bytes, GRANULE) else {
            self.st.map_failures.add(1);
            return None;
        };
        // SAFETY: a fresh mapping of `bytes >= CHUNK_HEADER` bytes nobody else has seen.
        let h = unsafe {
            let h = ChunkHeader::init(base, bytes);
            ChunkHeader::assign(h, c);
            h
        };
        if self.reg.register(base, bytes, OwnerKind::Mid).is_err() {
            // SAFETY: never registered nor shared: still all ours.
            let _ = unsafe { os.unmap(base, bytes) };
            self.st.map_failures.add(1);
            return None;
        }
        // SAFETY: a live chunk, not yet on the list; we hold its lock.
        unsafe { self.all.lock().push(h) };
        self.st.chunk_maps.add(1);
        self.st.bytes_mapped.increase(bytes as u64);
        Some(h)
    }

    /// Returns a list of `n` blocks of class `c`, freed at (coarse) time `since`, to their
    /// chunks' dirty lists, releasing chunks that become empty; then purges the class's oldest
    /// dirty chunks while free memory is over the budget.
    ///
    /// # Safety
    /// `head` starts a null-terminated list (word 0) of `n` blocks of class `c` of this `Mid`
    /// that are the caller's.
    pub(super) unsafe fn central_free(&self, c: usize, head: *mut u8, n: usize, since: u64) {
        let mut tally = Tally::default();
        let mut g = self.central[c].lock();
        let mut last: *mut ChunkHeader = ptr::null_mut();
        let mut b = head;
        // Exactly `n` steps: a list corrupted into a cycle cannot make this loop.
        for _ in 0..n {
            if b.is_null() {
                hak_sync::check!(false, "mid list shorter than its count");
                break;
            }
            // SAFETY: `b` is ours until `put_back` hands it to its chunk; the chunk is live
            // while it has blocks out, and we hold its class lock.
            unsafe {
                let nb = next(b);
                // `last` is live: it had blocks out when we last saw it.
                let h = if !last.is_null() && ChunkHeader::contains(last, b.addr()) {
                    last
                } else if let Some(h) = self.chunk_of(b) {
                    h
                } else {
                    hak_sync::check!(false, "mid block outside any mid chunk");
                    b = nb;
                    continue;
                };
                if (*h).class != c {
                    hak_sync::check!(false, "mid block on a list of another class");
                    b = nb;
                    continue;
                }
                let released = self.put_back(&mut g, c, h, b, None, since, &mut tally);
                last = if released { ptr::null_mut() } else { h };
                b = nb;
            }
        }
        hak_sync::check!(b.is_null(), "mid list longer than its count");
        self.apply(&mut tally);
        let budget = self.effective_budget();
        if c >= FIRST_PURGED && self.st.bytes_free_committed.current() > budget as u64 {
            drop(self.purge(c, g, BUDGET_PURGE_CHUNKS, Purge::OverBudget(budget)));
        }
    }

    /// Puts block `b` back on chunk `h` of class `c`: on the clean list with `purged =
    /// Some(bytes decommitted)`, else on the dirty list (and, if the chunk had no dirty
    /// block, it joins the dirty queue stamped `since`); a chunk that had no room joins the
    /// partial list.
    /// Releases the chunk if it empties; returns whether it did. Gauge changes go to `t`.
    ///
    /// # Safety
    /// `g` is class `c`'s central lock; `h` is a live chunk of class `c` and `b` one of its
    /// blocks that was out and is the caller's.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn put_back(
        &self,
        g: &mut MutexGuard<'_, Central>,
        c: usize,
        h: *mut ChunkHeader,
        b: *mut u8,
        purged: Option<usize>,
        since: u64,
        t: &mut Tally,
    ) -> bool {
        let s = CLASS_SIZE[c];
        let d = purged.unwrap_or(0);
        // SAFETY: per the contract.
        unsafe {
            let empty = ChunkHeader::put(h, b, purged.is_some(), d);
            t.committed_in += (s - d) as u64;
            t.decommitted_in += d as u64;
            if empty {
                if (*h).in_partial {
                    g.remove(h);
                }
                g.unqueue_dirty(h);
                self.release_chunk(h, since, t);
                return true;
            }
            if purged.is_some() {
                if !(*h).in_partial {
                    g.push(h);
                }
            } else {
                if !(*h).in_partial {
                    g.push(h);
                }
                if !(*h).in_dirty && c >= FIRST_PURGED {
                    g.queue_dirty(h, since);
                }
            }
        }
        false
    }

    /// Moves an empty chunk, whose last block came back at `since`, to the empty cache,
    /// unmapping what the cache cannot keep. Gauge changes go to `t`.
    ///
    /// # Safety
    /// `h` is empty (`used == 0`), on no partial list or dirty queue, and we hold its class's
    /// central lock.
    unsafe fn release_chunk(&self, h: *mut ChunkHeader, since: u64, t: &mut Tally) {
        // SAFETY: per the contract the header is ours.
        let (bytes, committed, decommitted) =
            unsafe { ((*h).bytes, (*h).free_committed, (*h).free_decommitted) };
        t.committed_out += committed as u64;
        t.decommitted_out += decommitted as u64;
        let max = self.max_empty_chunks.load(Ordering::Relaxed);
        if max == 0 || bytes > MAX_EMPTY_BYTES {
            // SAFETY: per the contract.
            unsafe { self.unmap_chunk(h) };
            return;
        }
        // SAFETY: per the contract; we hold the cache lock for the call.
        let mut victims = unsafe { self.empty.lock().push(h, since, max) };
        // SAFETY: a victim left the cache: an empty chunk on no list but the all-chunks list
        // (and `victims`, which reads its links before it is unmapped).
        while let Some(old) = unsafe { victims.pop_front() } {
            // SAFETY: as above.
            unsafe { self.unmap_chunk(old) };
        }
    }

    /// Unregisters and unmaps an empty chunk.
    ///
    /// # Safety
    /// `h` is empty and on no list but the all-chunks list; nobody references its blocks.
    pub(super) unsafe fn unmap_chunk(&self, h: *mut ChunkHeader) {
        // SAFETY: per the contract.
        unsafe {
            let bytes = (*h).bytes;
            self.all.lock().remove(h);
            let base = NonNull::new_unchecked(h.cast::<u8>());
            self.reg.unregister(base, bytes);
            let _ = self.reg.os().unmap(base, bytes);
            self.st.chunk_unmaps.add(1);
            self.st.bytes_mapped.decrease(bytes as u64);
        }
    }
}
