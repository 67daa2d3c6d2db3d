//! [`Shards`]: the sharded global free lists between the thread caches and the chunks, and the
//! growth of their shard table under contention.
//!
//! A [`Table`] is one hak-os mapping: a header (`len`, `prev`) and `len` shards (a power of
//! two, [`INITIAL_SHARDS`] ..= [`MAX_SHARDS`]); each [`Shard`] is a mutex over one list of
//! *batches* per class. A batch is a null-terminated list of free blocks linked by word 0 whose
//! head carries the next batch (word 3) and its length (word 4) (see `block.rs`), so a thread
//! cache hands over or takes a whole batch in O(1) under the lock. A thread uses shard
//! `seed & (len - 1)` of the current table, `seed` coming from its [`ShardCursor`].
//!
//! Growth without stopping anyone: every thread counts, in its own cursor, its shard lock
//! acquisitions and how many of them found the lock taken (`try_lock` failed). After
//! [`WINDOW`] acquisitions, if at least [`GROW_FAILS`] failed, it asks for growth: the one
//! thread that gets `grow_lock` maps a table twice as large (`prev` = the old one), publishes
//! it with a release store of `table`, then moves every old shard's batches to the shard of
//! the same index in the new table. Old tables are never unmapped while the `Shards` lives, so
//! a thread still holding an old table pointer stays memory-safe.
//!
//! Invariant (*no stranded blocks*): after every operation returns, a batch lies in an old
//! table only while a migration that will move it is still running. Proof sketch: a pusher
//! reloads `table` after unlocking the shard it pushed to; if the table changed, it migrates
//! that shard itself. Otherwise its reload did not see the publication, so the grower's later
//! drain of that shard must lock it after the push (had it locked before, the mutex would order
//! publish → grower's unlock → pusher's lock → reload and the reload would see the new table).
//! Migration into a table that has meanwhile become old repeats the same check. The loom model
//! in `loom_tests.rs` checks this: after the threads join, old tables are empty and no batch
//! is lost.
//!
//! Conservation: `Σ batches over all tables + blocks in flight in a migration` is the number of
//! batches pushed minus popped or drained.
//!
//! Concurrency: `table` is an `AtomicPtr` (acquire loads, release publication); each shard's
//! lists are owned by whoever holds its mutex; `grow_lock` serialises growers (a loser just
//! returns) and the first table's creation. Lock order: `grow_lock` → one shard; a thread
//! holds at most one shard lock at a time, so there is no cycle. [`Shards::prefork`] takes
//! `grow_lock`, then every shard of every table.

use core::mem;
use core::ptr;

use hak_os::Os;
use hak_sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use hak_sync::stat::StatCounter;
use hak_sync::{Mutex, MutexGuard};

use crate::block::{link, list_len, set_link, set_word, word, W_BATCH_LEN, W_BATCH_NEXT};
use crate::class::NUM_CLASSES;

/// Shards in the first table (64; 2 under loom, 4 under Miri, where every shard a decay pass
/// tries costs interpreter time).
#[cfg(not(hak_loom))]
pub(crate) const INITIAL_SHARDS: usize = if cfg!(miri) { 4 } else { 64 };
/// Shards in the largest table (1024; 4 under loom, 16 under Miri).
#[cfg(not(hak_loom))]
pub(crate) const MAX_SHARDS: usize = if cfg!(miri) { 16 } else { 1024 };
/// Shard lock acquisitions per contention window, per thread (128; 1 under loom).
#[cfg(not(hak_loom))]
pub(crate) const WINDOW: u32 = 128;
/// Failed `try_lock`s within a window that ask for growth (8, i.e. 1 in 16; 1 under loom).
#[cfg(not(hak_loom))]
pub(crate) const GROW_FAILS: u32 = 8;
#[cfg(hak_loom)]
pub(crate) const INITIAL_SHARDS: usize = 2;
#[cfg(hak_loom)]
pub(crate) const MAX_SHARDS: usize = 4;
#[cfg(hak_loom)]
pub(crate) const WINDOW: u32 = 1;
#[cfg(hak_loom)]
pub(crate) const GROW_FAILS: u32 = 1;

const _: () = assert!(INITIAL_SHARDS.is_power_of_two() && MAX_SHARDS.is_power_of_two());
const _: () = assert!(INITIAL_SHARDS <= MAX_SHARDS && GROW_FAILS <= WINDOW);

/// The batches of one shard, per class. Owned by the holder of the shard's mutex.
#[derive(Clone, Copy)]
pub(crate) struct ShardLists {
    /// First batch head of each class (null: none); batches chain through word 3.
    head: [*mut u8; NUM_CLASSES],
    /// Batches in each class's chain.
    batches: [u32; NUM_CLASSES],
    /// When a batch was last pushed or popped (the `Mid`'s coarse clock, ns): a shard idle
    /// for the purge delay is drained to the chunks by [`Shards::drain_idle`].
    last_used: u64,
}

// SAFETY: the lists are plain pointers to free blocks; whoever holds the mutex owns them, from
// any thread.
unsafe impl Send for ShardLists {}

impl ShardLists {
    const EMPTY: ShardLists = ShardLists {
        head: [ptr::null_mut(); NUM_CLASSES],
        batches: [0; NUM_CLASSES],
        last_used: 0,
    };

    fn is_empty(&self) -> bool {
        self.batches.iter().all(|&b| b == 0)
    }

    /// Pushes a batch (`head` of `n` blocks) of class `c`.
    ///
    /// # Safety
    /// The caller owns the batch and the lists (holds the shard lock).
    unsafe fn push(&mut self, c: usize, head: *mut u8, n: usize) {
        // SAFETY: the batch head is ours (contract); words 3 and 4 of a batch head are its
        // batch link and length.
        unsafe {
            set_link(head, W_BATCH_NEXT, self.head[c]);
            set_word(head, W_BATCH_LEN, n);
        }
        self.head[c] = head;
        self.batches[c] += 1;
    }

    /// Pops a batch of class `c`: its head and length.
    ///
    /// # Safety
    /// The caller holds the shard lock.
    unsafe fn pop(&mut self, c: usize) -> Option<(*mut u8, usize)> {
        let h = self.head[c];
        if h.is_null() {
            return None;
        }
        // SAFETY: `h` is a batch head in these lists, which the caller owns.
        let (link, n) = unsafe { (link(h, W_BATCH_NEXT), word(h, W_BATCH_LEN)) };
        // SAFETY: the batch is in these lists, which the caller owns.
        hak_sync::check!(unsafe { list_len(h, n) } == n, "shard pop: batch length");
        self.head[c] = link;
        hak_sync::check!(self.batches[c] > 0, "shard batch count");
        self.batches[c] = self.batches[c].wrapping_sub(1);
        Some((h, n))
    }
}

/// One shard: a mutex over its lists, alone on its cache lines.
#[repr(C, align(128))]
struct Shard {
    lists: Mutex<ShardLists>,
}

/// A shard table's header; its `len` shards follow it in the same mapping.
#[repr(C, align(128))]
pub(crate) struct Table {
    /// Number of shards (a power of two).
    len: usize,
    /// The table this one replaced (null for the first); kept mapped.
    prev: *mut Table,
    /// Bytes of the mapping.
    bytes: usize,
}

impl Table {
    fn bytes_for(len: usize) -> usize {
        let raw = mem::size_of::<Table>() + len * mem::size_of::<Shard>();
        raw.next_multiple_of(hak_os::page_size())
    }

    /// Maps and initialises a table of `len` shards, all empty.
    fn create(os: &Os, len: usize, prev: *mut Table) -> Option<*mut Table> {
        let bytes = Self::bytes_for(len);
        let mem = os.map(bytes, 1).ok()?;
        let t = mem.as_ptr().cast::<Table>();
        // SAFETY: the mapping is `bytes >= size_of::<Table>() + len * size_of::<Shard>()`
        // writable, page-aligned (so 128-aligned) bytes nobody else has seen yet.
        unsafe {
            ptr::write(t, Table { len, prev, bytes });
            for i in 0..len {
                ptr::write(Self::shard_ptr(t, i), Shard { lists: Mutex::new(ShardLists::EMPTY) });
            }
        }
        Some(t)
    }

    fn shard_ptr(t: *mut Table, i: usize) -> *mut Shard {
        // The shards start right after the (128-byte) header.
        t.cast::<u8>().wrapping_add(mem::size_of::<Table>() + i * mem::size_of::<Shard>()).cast()
    }
}

/// A published table, by raw pointer. The shards live past the end of the [`Table`] header,
/// so they must be reached from the pointer the mapping gave, never through a `&Table`: a
/// shared reference to a type without interior mutability lets the compiler assume nothing is
/// written through it (and covers only the header's bytes), and it did drop the write that
/// empties a drained shard, leaving its batches listed after they went back to the chunks.
#[derive(Clone, Copy)]
struct TableRef<'s> {
    ptr: ptr::NonNull<Table>,
    _shards: core::marker::PhantomData<&'s Shards>,
}

impl<'s> TableRef<'s> {
    /// # Safety
    /// `t` is a table made by `Table::create` that stays mapped for `'s`.
    unsafe fn new(t: *mut Table) -> Option<TableRef<'s>> {
        Some(TableRef { ptr: ptr::NonNull::new(t)?, _shards: core::marker::PhantomData })
    }

    fn as_ptr(self) -> *mut Table {
        self.ptr.as_ptr()
    }

    fn len(self) -> usize {
        // SAFETY: a live, initialised table (`new`'s contract); `len` never changes.
        unsafe { (*self.as_ptr()).len }
    }

    /// The table this one replaced, if any.
    fn prev(self) -> Option<TableRef<'s>> {
        // SAFETY: as in `len`; replaced tables stay mapped while the `Shards` lives.
        unsafe { TableRef::new((*self.as_ptr()).prev) }
    }

    fn shard(self, i: usize) -> &'s Shard {
        hak_sync::check!(i < self.len(), "shard index");
        // SAFETY: `i < len`, the shards of a live table were initialised by `create`, and the
        // pointer carries the whole mapping's provenance.
        unsafe { &*Table::shard_ptr(self.as_ptr(), i) }
    }
}

/// A thread's view of the shards: its seed and its contention window. Plain data inside
/// [`MidThreadCache`](crate::MidThreadCache); all-zero is a valid "unseeded" cursor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShardCursor {
    /// Picks the shard: `seed & (len - 1)`.
    pub(crate) seed: usize,
    /// Whether `seed` was assigned (by [`Shards::seed`] or `MidThreadCache::with_seed`).
    pub(crate) seeded: bool,
    /// Shard lock acquisitions in the current window.
    ops: u32,
    /// Of those, how many found the lock taken.
    fails: u32,
}

impl ShardCursor {
    /// An unseeded cursor (all zero).
    pub(crate) const UNSEEDED: ShardCursor =
        ShardCursor { seed: 0, seeded: false, ops: 0, fails: 0 };

    /// A cursor with a chosen seed.
    pub(crate) const fn with_seed(seed: usize) -> ShardCursor {
        ShardCursor { seed, seeded: true, ops: 0, fails: 0 }
    }
}

/// The sharded free lists: the current table, growth, and their counters.
pub(crate) struct Shards {
    /// The current table (null until first use).
    table: AtomicPtr<Table>,
    /// Held by the one thread growing the table.
    grow_lock: Mutex<()>,
    /// Seeds handed to threads that have none.
    next_seed: AtomicUsize,
    /// Tables replaced by a larger one.
    growths: StatCounter,
    /// Shard `try_lock`s that failed (folded in per window).
    lock_failures: StatCounter,
}

impl core::fmt::Debug for Shards {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Shards").field("growths", &self.growths.get()).finish_non_exhaustive()
    }
}

impl Shards {
    hak_sync::maybe_const_fn! {
        /// No table yet; the first is mapped on first use.
        pub(crate) fn new() -> Shards {
            Shards {
                table: AtomicPtr::new(ptr::null_mut()),
                grow_lock: Mutex::new(()),
                next_seed: AtomicUsize::new(0),
                growths: StatCounter::new(),
                lock_failures: StatCounter::new(),
            }
        }
    }

    /// Gives `cur` a seed if it has none: consecutive threads get consecutive shards.
    #[inline]
    pub(crate) fn seed(&self, cur: &mut ShardCursor) {
        if !cur.seeded {
            cur.seed = self.next_seed.fetch_add(1, Ordering::Relaxed);
            cur.seeded = true;
        }
    }

    /// The current table, mapping the first one if needed; `None` if that mapping fails.
    fn current(&self, os: &Os) -> Option<TableRef<'_>> {
        self.published().or_else(|| self.init(os))
    }

    /// The current table, if one was published.
    fn published(&self) -> Option<TableRef<'_>> {
        // SAFETY: published tables are initialised (release/acquire) and never unmapped while
        // `self` lives.
        unsafe { TableRef::new(self.table.load(Ordering::Acquire)) }
    }

    /// Maps and publishes the first table, under `grow_lock` (so a fork handler holding that
    /// lock knows every table there is).
    #[cold]
    fn init(&self, os: &Os) -> Option<TableRef<'_>> {
        let _g = self.grow_lock.lock();
        if let Some(t) = self.published() {
            return Some(t);
        }
        let fresh = Table::create(os, INITIAL_SHARDS, ptr::null_mut())?;
        self.table.store(fresh, Ordering::Release);
        // SAFETY: as in `published`.
        unsafe { TableRef::new(fresh) }
    }

    /// Takes every lock of the shard layer for `fork()`: `grow_lock` (so no table is published
    /// meanwhile), then every shard of every table, newest table first, in index order.
    #[cfg(not(hak_loom))]
    pub(crate) fn prefork(&self) {
        self.grow_lock.fork_lock();
        let mut t = self.published();
        while let Some(table) = t {
            for idx in 0..table.len() {
                table.shard(idx).lists.fork_lock();
            }
            t = table.prev();
        }
    }

    /// Releases what [`Shards::prefork`] took.
    ///
    /// # Safety
    /// The calling thread ran `prefork` (or is the child of the thread that did), and no
    /// guard of these locks exists.
    #[cfg(not(hak_loom))]
    pub(crate) unsafe fn postfork(&self) {
        let mut t = self.published();
        while let Some(table) = t {
            for idx in 0..table.len() {
                // SAFETY: taken by `prefork` (contract); the tables are the same, since
                // `grow_lock` kept any new one from being published.
                unsafe { table.shard(idx).lists.fork_unlock() };
            }
            t = table.prev();
        }
        // SAFETY: as above.
        unsafe { self.grow_lock.fork_unlock() };
    }

    /// Number of shards in the current table (0 before first use).
    pub(crate) fn len(&self) -> usize {
        self.published().map_or(0, TableRef::len)
    }

    /// Tables replaced so far.
    pub(crate) fn growths(&self) -> u64 {
        self.growths.get()
    }

    /// Failed `try_lock`s counted so far (whole windows, plus flushed cursors).
    pub(crate) fn lock_failures(&self) -> u64 {
        self.lock_failures.get()
    }

    /// Locks shard `idx` of `t`, counting the attempt (and a failed `try_lock`) in `cur`.
    fn lock<'s>(
        &'s self,
        cur: &mut ShardCursor,
        t: TableRef<'s>,
        idx: usize,
    ) -> MutexGuard<'s, ShardLists> {
        let shard = t.shard(idx);
        cur.ops += 1;
        let g = match shard.lists.try_lock() {
            Some(g) => g,
            None => {
                cur.fails += 1;
                shard.lists.lock()
            }
        };
        // loom switches threads only at its own operations, and the critical sections touch
        // only block memory; this read-modify-write (conflicting with the other threads' own)
        // lets the model preempt a lock holder, so failed `try_lock`s and the growth they
        // trigger are explored.
        #[cfg(hak_loom)]
        self.next_seed.fetch_add(0, Ordering::Relaxed);
        #[cfg(not(hak_loom))]
        let _ = self;
        g
    }

    /// Ends a shard operation (no lock held): closes the window if it is full, growing the
    /// table if it saw enough contention.
    #[inline]
    fn end_op<'s>(&'s self, os: &Os, cur: &mut ShardCursor, t: TableRef<'s>) {
        if cur.ops >= WINDOW {
            self.end_window(os, cur, t);
        }
    }

    #[cold]
    fn end_window<'s>(&'s self, os: &Os, cur: &mut ShardCursor, t: TableRef<'s>) {
        if cur.fails >= GROW_FAILS {
            self.grow(os, t);
        }
        self.flush_cursor(cur);
    }

    /// Folds `cur`'s window into the counters and restarts it.
    pub(crate) fn flush_cursor(&self, cur: &mut ShardCursor) {
        if cur.fails > 0 {
            self.lock_failures.add(u64::from(cur.fails));
        }
        cur.ops = 0;
        cur.fails = 0;
    }

    /// Pushes a batch of class `c` (`head`, `n` blocks, null-terminated through word 0) onto
    /// the caller's shard, unless that shard already holds `max_batches` of the class (or no
    /// table can be mapped): then returns `false` and the batch stays the caller's. `now` is
    /// the coarse time of the push.
    ///
    /// # Safety
    /// The caller owns the batch: `n >= 1` free blocks of class `c` (at least `BLOCK_WORDS`
    /// words each), which nobody else references.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn push(
        &self,
        os: &Os,
        cur: &mut ShardCursor,
        c: usize,
        head: *mut u8,
        n: usize,
        max_batches: u32,
        now: u64,
    ) -> bool {
        // SAFETY: the batch is ours (contract).
        hak_sync::check!(unsafe { list_len(head, n) } == n, "shard push: batch length");
        let Some(t) = self.current(os) else { return false };
        let idx = cur.seed & (t.len() - 1);
        let pushed = {
            let mut g = self.lock(cur, t, idx);
            if g.batches[c] >= max_batches {
                false
            } else {
                // SAFETY: we hold the lock, and the batch is ours (contract).
                unsafe { g.push(c, head, n) };
                g.last_used = now;
                true
            }
        };
        if pushed && !ptr::eq(self.table.load(Ordering::Acquire), t.as_ptr()) {
            // The table was replaced: our push may have come after its migration.
            self.migrate(t, idx);
        }
        self.end_op(os, cur, t);
        pushed
    }

    /// Pops a batch of class `c` from the caller's shard: its head and length. `now` is the
    /// coarse time of the pop.
    pub(crate) fn pop(
        &self,
        os: &Os,
        cur: &mut ShardCursor,
        c: usize,
        now: u64,
    ) -> Option<(*mut u8, usize)> {
        let t = self.current(os)?;
        let idx = cur.seed & (t.len() - 1);
        let got = {
            let mut g = self.lock(cur, t, idx);
            g.last_used = now;
            // SAFETY: we hold the lock.
            unsafe { g.pop(c) }
        };
        self.end_op(os, cur, t);
        got
    }

    /// Moves the batches of shard `idx` of the old table `from` into the current table,
    /// repeating if the target is replaced meanwhile (see the module docs).
    fn migrate<'s>(&'s self, mut from: TableRef<'s>, idx: usize) {
        loop {
            // `from` was replaced, so `table` holds a newer, live, initialised table.
            let Some(to) = self.published() else { return };
            hak_sync::check!(
                !ptr::eq(to.as_ptr(), from.as_ptr()) && idx < to.len(),
                "migration target"
            );
            let taken = mem::replace(&mut *from.shard(idx).lists.lock(), ShardLists::EMPTY);
            if taken.is_empty() {
                return;
            }
            {
                let mut g = to.shard(idx).lists.lock();
                g.last_used = g.last_used.max(taken.last_used);
                for c in 0..NUM_CLASSES {
                    let mut h = taken.head[c];
                    while !h.is_null() {
                        // SAFETY: the batches were taken out of `from` under its lock, so they
                        // are ours until pushed under `to`'s lock, which we hold.
                        unsafe {
                            let next_batch = link(h, W_BATCH_NEXT);
                            let n = word(h, W_BATCH_LEN);
                            g.push(c, h, n);
                            h = next_batch;
                        }
                    }
                }
            }
            if ptr::eq(self.table.load(Ordering::Acquire), to.as_ptr()) {
                return;
            }
            from = to;
        }
    }

    /// Replaces the table `seen` by one twice as large, unless it is already at
    /// [`MAX_SHARDS`], was already replaced, or another thread is growing it.
    fn grow<'s>(&'s self, os: &Os, seen: TableRef<'s>) {
        let Some(_g) = self.grow_lock.try_lock() else { return };
        let cur = self.table.load(Ordering::Acquire);
        if !ptr::eq(cur, seen.as_ptr()) || seen.len() >= MAX_SHARDS {
            return;
        }
        let Some(new) = Table::create(os, seen.len() * 2, cur) else { return };
        self.table.store(new, Ordering::Release);
        self.growths.add(1);
        for idx in 0..seen.len() {
            self.migrate(seen, idx);
        }
    }

    /// Counts the shard layer's locks that are held and free now, by trying each (tests).
    #[cfg(all(test, not(hak_loom)))]
    pub(crate) fn lock_states(&self) -> (usize, usize) {
        let mut held_free = (0, 0);
        let mut count = |free: bool| {
            if free {
                held_free.1 += 1;
            } else {
                held_free.0 += 1;
            }
        };
        count(self.grow_lock.try_lock().is_some());
        let mut t = self.published();
        while let Some(table) = t {
            for idx in 0..table.len() {
                count(table.shard(idx).lists.try_lock().is_some());
            }
            t = table.prev();
        }
        held_free
    }

    /// Grows the current table once (tests and the loom model).
    #[cfg(test)]
    pub(crate) fn grow_now(&self, os: &Os) {
        if let Some(t) = self.current(os) {
            self.grow(os, t);
        }
    }

    /// Takes every batch of the caller's shard in the current table and gives each to `f`
    /// as `(class, head, n)`.
    pub(crate) fn drain_own(&self, cur: &ShardCursor, mut f: impl FnMut(usize, *mut u8, usize)) {
        let Some(t) = self.published() else { return };
        if !cur.seeded {
            return;
        }
        Self::drain_shard(t, cur.seed & (t.len() - 1), &mut f);
    }

    /// Takes every batch of every shard of the current table that holds batches and was last
    /// used at or before `older_than`, and gives each to `f` as `(class, head, n, last_used)`.
    /// Shards whose lock is busy are skipped (they are in use). Batches in old tables are
    /// left to their migration.
    pub(crate) fn drain_idle(
        &self,
        older_than: u64,
        mut f: impl FnMut(usize, *mut u8, usize, u64),
    ) {
        let Some(t) = self.published() else { return };
        for idx in 0..t.len() {
            let taken = {
                let Some(mut g) = t.shard(idx).lists.try_lock() else { continue };
                if g.last_used > older_than || g.is_empty() {
                    continue;
                }
                mem::replace(&mut *g, ShardLists::EMPTY)
            };
            let since = taken.last_used;
            Self::give_all(taken, &mut |c, h, n| f(c, h, n, since));
        }
    }

    /// Takes every batch of every shard of every table (current and old) and gives each to
    /// `f` as `(class, head, n)`.
    pub(crate) fn drain_all(&self, mut f: impl FnMut(usize, *mut u8, usize)) {
        let mut t = self.published();
        while let Some(table) = t {
            for idx in 0..table.len() {
                Self::drain_shard(table, idx, &mut f);
            }
            t = table.prev();
        }
    }

    fn drain_shard(t: TableRef<'_>, idx: usize, f: &mut impl FnMut(usize, *mut u8, usize)) {
        let taken = mem::replace(&mut *t.shard(idx).lists.lock(), ShardLists::EMPTY);
        Self::give_all(taken, f);
    }

    /// Gives every batch of lists taken out of a shard to `f`.
    fn give_all(mut taken: ShardLists, f: &mut impl FnMut(usize, *mut u8, usize)) {
        for c in 0..NUM_CLASSES {
            // SAFETY: the lists were taken under the lock: they are ours now.
            while let Some((h, n)) = unsafe { taken.pop(c) } {
                f(c, h, n);
            }
        }
    }

    /// Counts the blocks in every table (`current`, then old ones): for checks in tests.
    #[cfg(test)]
    pub(crate) fn count_blocks(&self) -> (usize, usize) {
        let mut current = 0;
        let mut old = 0;
        let mut t = self.published();
        let mut first = true;
        while let Some(table) = t {
            for idx in 0..table.len() {
                let g = table.shard(idx).lists.lock();
                for c in 0..NUM_CLASSES {
                    let mut h = g.head[c];
                    while !h.is_null() {
                        // SAFETY: we hold the lock that owns these batches.
                        unsafe {
                            let k = list_len(h, word(h, W_BATCH_LEN));
                            assert_eq!(k, word(h, W_BATCH_LEN), "batch length");
                            if first {
                                current += k;
                            } else {
                                old += k;
                            }
                            h = link(h, W_BATCH_NEXT);
                        }
                    }
                }
            }
            first = false;
            t = table.prev();
        }
        (current, old)
    }

    /// Unmaps every table. Blocks still listed are forgotten (their chunks go too).
    ///
    /// # Safety
    /// Nobody uses `self` concurrently or afterwards (called from `Drop`).
    pub(crate) unsafe fn release(&mut self, os: &Os) {
        let mut t = self.table.load(Ordering::Acquire);
        self.table.store(ptr::null_mut(), Ordering::Relaxed);
        while !t.is_null() {
            // SAFETY: tables in the chain are ours alone now (contract).
            let prev = unsafe { (*t).prev };
            // SAFETY: as above; each is destroyed once.
            unsafe { Self::destroy(os, t) };
            t = prev;
        }
    }

    /// Drops a table's mutexes and unmaps it.
    ///
    /// # Safety
    /// `t` came from `Table::create` and nobody else references it.
    unsafe fn destroy(os: &Os, t: *mut Table) {
        // SAFETY: `t` is a live table we own (contract).
        unsafe {
            let len = (*t).len;
            let bytes = (*t).bytes;
            for i in 0..len {
                ptr::drop_in_place(Table::shard_ptr(t, i));
            }
            let _ = os.unmap(ptr::NonNull::new_unchecked(t.cast()), bytes);
        }
    }
}
