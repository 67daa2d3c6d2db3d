//! Memory return: the coarse clock and [`Mid::decay`] passes, the purge of dirty chunks (for
//! the delay, for the budget, or all at once), the budget it measures against, and
//! [`Mid::trim`]. Locks are tried on decay passes and skipped when busy; decommits run
//! without the class lock (see the `mid` module docs).

use hak_sync::atomic::Ordering;
use hak_sync::MutexGuard;

use super::stats::Tally;
use super::{Mid, FIRST_PURGED};
use crate::block::{next, set_word, word, W_DECOMMITTED};
use crate::chunk::{decommit_tail, Central, ChunkHeader};
use crate::class::{CLASS_SIZE, NUM_CLASSES};

/// Decay passes per purge delay: memory falls between one delay and 9/8 of it after its last
/// use.
const TICKS_PER_DELAY: u64 = 8;
/// Shortest time between decay passes (1 ms), also with a purge delay of 0.
const MIN_TICK_NS: u64 = 1_000_000;

/// Which dirty chunks a purge takes, oldest first.
#[derive(Clone, Copy)]
pub(super) enum Purge {
    /// Those whose dirty blocks came back at or before this time (decay).
    OlderThan(u64),
    /// Until the committed free bytes are within this budget.
    OverBudget(usize),
    /// All of them (trim).
    All,
}

impl Mid<'_> {
    /// Advances the tier's clock to `now_ns` (`hak_os::monotonic_ns()`) and, if a decay pass
    /// is due (at most one per eighth of the purge delay, and one per millisecond), runs it
    /// on the calling thread: see the module docs. Cheap when none is due (two relaxed loads);
    /// the tier calls it from its own slow paths, and the facade may call it from others so
    /// that memory falls while a program allocates only in other tiers. Never blocks on a
    /// lock another thread holds for long: every lock is tried, and skipped when busy.
    pub fn decay(&self, now_ns: u64) {
        if now_ns > self.clock.load(Ordering::Relaxed) {
            self.clock.store(now_ns, Ordering::Relaxed);
        }
        let due = self.next_tick.load(Ordering::Relaxed);
        if now_ns < due {
            return;
        }
        let delay = self.purge_delay.load(Ordering::Relaxed);
        let tick = (delay / TICKS_PER_DELAY).max(MIN_TICK_NS);
        if self
            .next_tick
            .compare_exchange(
                due,
                now_ns.saturating_add(tick),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return; // another thread runs this pass
        }
        if delay == u64::MAX {
            return;
        }
        self.decay_pass(now_ns.saturating_sub(delay));
    }

    /// One decay pass: returns what was last used at or before `older_than`.
    #[cold]
    fn decay_pass(&self, older_than: u64) {
        self.st.decay_passes.add(1);
        self.shards.drain_idle(older_than, |c, h, n, since| {
            // SAFETY: `drain_idle` hands over batches it took under the shard lock.
            unsafe { self.central_free(c, h, n, since) }
        });
        for c in FIRST_PURGED..NUM_CLASSES {
            let Some(g) = self.central[c].try_lock() else { continue };
            drop(self.purge(c, g, usize::MAX, Purge::OlderThan(older_than)));
        }
        loop {
            let Some(mut cache) = self.empty.try_lock() else { break };
            // SAFETY: we hold the cache lock.
            let Some(h) = (unsafe { cache.take_oldest(older_than) }) else { break };
            drop(cache);
            // SAFETY: `h` left the cache: an empty chunk on no list but the all-chunks list.
            unsafe { self.unmap_chunk(h) };
        }
    }

    /// The coarse time now.
    #[inline]
    pub(super) fn now(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    /// Returns memory now: drains every shard to the chunks, purges every free block of at least
    /// [`DECOMMIT_MIN`](super::DECOMMIT_MIN) and unmaps every cached empty chunk. Blocks in thread
    /// caches stay.
    pub fn trim(&self) {
        let now = self.now();
        self.shards.drain_all(|c, h, n| {
            // SAFETY: `drain_all` hands over batches it took under the shard locks.
            unsafe { self.central_free(c, h, n, now) }
        });
        for c in FIRST_PURGED..NUM_CLASSES {
            drop(self.purge(c, self.central[c].lock(), usize::MAX, Purge::All));
        }
        let mut all = self.empty.lock().take_all();
        // SAFETY: the chunks left the cache: empty chunks on no list but the all-chunks list
        // (and `all`, which reads a chunk's links before it is unmapped).
        while let Some(h) = unsafe { all.pop_front() } {
            // SAFETY: as above.
            unsafe { self.unmap_chunk(h) };
        }
    }

    /// The budget now: the configured one, or the bytes in use if more. Free memory is
    /// counted by class size, as if every page of a free block were resident, which is what a
    /// program that writes its blocks whole makes of it; one that writes only parts of them
    /// leaves most of those pages untouched, and a fixed budget then purged, and refaulted,
    /// memory that was never there (the `mid_mixed` row spent 55% of its time in page faults
    /// and 22% in madvise). Scaling with the heap keeps free memory at most the memory in use
    /// (plus the floor) while a steady heap's free blocks stay.
    pub(super) fn effective_budget(&self) -> usize {
        let floor = self.decommit_budget.load(Ordering::Relaxed);
        floor.saturating_add(self.st.bytes_in_use.get().current as usize / 2)
    }

    /// Purges dirty chunks of class `c`, oldest first, while `which` says so, at most `max`
    /// chunks: each one's dirty blocks are detached under the lock, decommitted past their
    /// first page without it, and put back on the clean list under it again. Takes the
    /// class's guard and gives it back (re-taken).
    pub(super) fn purge<'a>(
        &'a self,
        c: usize,
        mut g: MutexGuard<'a, Central>,
        max: usize,
        which: Purge,
    ) -> MutexGuard<'a, Central> {
        let s = CLASS_SIZE[c];
        let os = self.reg.os();
        let mut tally = Tally::default();
        for _ in 0..max {
            let Some(h) = g.oldest_dirty() else { break };
            let go = match which {
                // SAFETY: a queued chunk is live; we hold its class lock.
                Purge::OlderThan(t) => (unsafe { (*h).since }) <= t,
                Purge::OverBudget(budget) => self.st.bytes_free_committed.current() > budget as u64,
                Purge::All => true,
            };
            if !go {
                break;
            }
            // SAFETY: `h` is a live chunk of class `c` and we hold the class lock. It keeps
            // its place on the partial list even if it has no room left while its blocks are
            // out (`central_alloc` takes nothing from it then and drops it): put back
            // at the head, its clean blocks would be taken before other chunks' resident
            // ones.
            let (list, k) = unsafe {
                let taken = ChunkHeader::take_dirty(h);
                g.unqueue_dirty(h);
                taken
            };
            tally.committed_out += (k * s) as u64;
            drop(g);
            let mut b = list;
            for _ in 0..k {
                if b.is_null() {
                    break;
                }
                // SAFETY: the detached blocks are ours until put back: nobody else can reach
                // them, and their chunk cannot be released (they count as out).
                unsafe {
                    let d = decommit_tail(os, b, s);
                    set_word(b, W_DECOMMITTED, d);
                    b = next(b);
                }
            }
            g = self.central[c].lock();
            let mut b = list;
            for _ in 0..k {
                if b.is_null() {
                    break;
                }
                // SAFETY: as above; `h` is live (its blocks were out until this put).
                unsafe {
                    let nb = next(b);
                    let d = word(b, W_DECOMMITTED);
                    self.put_back(&mut g, c, h, b, Some(d), 0, &mut tally);
                    b = nb;
                }
            }
            self.apply(&mut tally);
            match which {
                Purge::OverBudget(_) => self.st.purges_budget.add(1),
                _ => self.st.purges_decay.add(1),
            }
        }
        g
    }
}
