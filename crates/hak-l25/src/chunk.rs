//! Chunks: the hak-os mappings blocks are carved from, their header, and the per-class central
//! lists behind the shards.
//!
//! A chunk of class `c` is `CHUNK_BYTES[c]` bytes mapped 1 MiB-aligned and registered in
//! hak-registry as `OwnerKind::Mid`. Its first `CHUNK_HEADER` (4096) bytes hold its
//! [`ChunkHeader`] and are never handed out; block `i` is at
//! `base + CHUNK_HEADER + i · block_size`, `i < capacity`. Blocks are carved lazily (a bump
//! index), so untouched blocks cost address space, not RSS.
//!
//! A chunk keeps its free blocks on two lists: *dirty* ones, whose pages may be resident (they
//! came back from users), and *clean* ones, whose tail was decommitted by a purge (word 2 says
//! how many bytes). Blocks are taken dirty first, then clean, then carved: reusing resident
//! memory costs no page fault, and memory left unused is what a purge finds.
//!
//! Per chunk, under the central lock of its class:
//! `used + free_count == carved <= capacity`, where `used` counts blocks outside the chunk
//! (with users, in thread caches or shards, or held by a purge in progress) and
//! `free_count = |dirty| + |clean|`, `dirty_count = |dirty|`;
//! `free_committed + free_decommitted == free_count · block_size`.
//! A chunk is on its class's *partial* list iff `free_count > 0 || carved < capacity` (or a
//! purge holds its blocks out: it keeps its place meanwhile), and on
//! its class's *dirty queue* iff `dirty_count > 0` and its class is purgeable
//! (`block_size >= DECOMMIT_MIN`). Allocation starts at the head of the partial list, where a
//! chunk goes when it gets room back (or is new); the dirty queue is ordered roughly by
//! `since`, the time its oldest dirty block came back, oldest first (purges start there).
//! (Moving a chunk to the head on every free, or taking resident blocks from other chunks
//! first, spread allocations over more chunks: fewer chunks emptied for reuse whole, more
//! were carved fresh, and `mid_mixed` took twice the page faults.)
//! When `used` reaches 0 the chunk leaves its class for the empty cache ([`EmptyCache`]), which
//! keeps at most `max_empty_chunks` chunks and [`MAX_EMPTY_BYTES`], each for at most the purge
//! delay; the rest are unregistered and unmapped. A cached chunk is reused by any class of the
//! same chunk size.
//!
//! Every chunk, whatever its state, is on the all-chunks list ([`ChunkList`]) so the owning
//! `Mid` can unmap it when dropped.
//!
//! The partial lists, dirty queues and all-chunks list are `hak_collections::List`s and the
//! empty cache a `hak_collections::RegionCache`, linked through [`Links`] in the header (one
//! adapter per list: [`Partial`], [`DirtyQueue`], [`AllChunks`], [`Empty`]; the partial list
//! and the empty cache share their links, as a chunk is on at most one of them). Each operation
//! on them is O(1) except taking a cached chunk of a given size, which looks at every cached
//! chunk (at most 16: the cache holds 16 MiB of chunks of at least 1 MiB).
//!
//! `class` and `block_size` are written before any block of the chunk is handed out (under the
//! central lock) and stay fixed while any block is out, so [`ChunkHeader::block_size`] may be
//! read without a lock through a live block (usable size, free without size).
//!
//! Headers are reached through `*mut ChunkHeader` derived from the mapping's base pointer, never
//! through a reference, and block pointers are derived from that same pointer, so every access
//! keeps the mapping's provenance.
//!
//! Lock order: central (one class) → empty cache → all-chunks list.

use core::ptr::{self, NonNull};

use hak_collections::{Limits, Links, List, RegionCache};

use crate::block::{dec, mark_free, next, set_next, set_word, word, W_DECOMMITTED};
use crate::class::{CHUNK_BYTES, CHUNK_CAPACITY, CHUNK_HEADER, CLASS_SIZE};

/// Tag in every chunk header ("MIDCHUNK").
pub(crate) const MAGIC: usize = 0x4D49_4443_4855_4E4B;
/// `class` of a chunk in the empty cache.
pub(crate) const NO_CLASS: usize = usize::MAX;
/// Most bytes the empty cache keeps (16 MiB).
pub(crate) const MAX_EMPTY_BYTES: usize = 16 << 20;
/// Default most chunks the empty cache keeps (4).
pub(crate) const DEFAULT_MAX_EMPTY_CHUNKS: usize = 4;

/// The header at the base of every chunk.
#[repr(C)]
pub(crate) struct ChunkHeader {
    /// [`MAGIC`].
    magic: usize,
    /// Size class (index), or [`NO_CLASS`] while cached empty.
    pub(crate) class: usize,
    /// Bytes per block (`CLASS_SIZE[class]`).
    pub(crate) block_size: usize,
    /// Bytes mapped (`CHUNK_BYTES[class]`), the length registered.
    pub(crate) bytes: usize,
    /// Blocks the chunk holds.
    capacity: usize,
    /// Blocks carved so far (the bump index).
    carved: usize,
    /// Blocks on `dirty` and `clean`.
    free_count: usize,
    /// Free blocks whose pages may be resident (word 0 links, most recent first).
    dirty: *mut u8,
    /// Blocks on `dirty`.
    pub(crate) dirty_count: usize,
    /// Free blocks whose tail was decommitted (word 0 links; word 2 holds the bytes).
    clean: *mut u8,
    /// Partial-list ([`Partial`]) or empty-cache ([`Empty`]) links: a chunk with a class may be
    /// partial, one without may be cached, never both.
    link: Links<*mut ChunkHeader>,
    /// Whether the chunk is on its class's partial list (the list cannot say in O(1)).
    pub(crate) in_partial: bool,
    /// Dirty-queue links ([`DirtyQueue`]).
    dq: Links<*mut ChunkHeader>,
    /// Whether the chunk is on its class's dirty queue.
    pub(crate) in_dirty: bool,
    /// When the oldest block on `dirty` came back (coarse clock, ns); or, in the empty cache,
    /// when the chunk emptied (the cache's stamp).
    pub(crate) since: u64,
    /// All-chunks list links ([`AllChunks`]).
    all: Links<*mut ChunkHeader>,
    /// Bytes of free blocks whose pages are committed.
    pub(crate) free_committed: usize,
    /// Bytes of free blocks that were decommitted.
    pub(crate) free_decommitted: usize,
}

impl ChunkHeader {
    /// Writes a fresh header for a chunk of `bytes` at `base` (class unset) and returns the
    /// handle every later access goes through.
    ///
    /// # Safety
    /// `base` is the start of a writable mapping of at least `CHUNK_HEADER` bytes nobody else
    /// references.
    pub(crate) unsafe fn init(base: NonNull<u8>, bytes: usize) -> *mut ChunkHeader {
        let h = base.as_ptr().cast::<ChunkHeader>();
        // SAFETY: per the contract; the mapping is page-aligned, so aligned for the header.
        unsafe {
            ptr::write(
                h,
                ChunkHeader {
                    magic: MAGIC,
                    class: NO_CLASS,
                    block_size: 0,
                    bytes,
                    capacity: 0,
                    carved: 0,
                    free_count: 0,
                    dirty: ptr::null_mut(),
                    dirty_count: 0,
                    clean: ptr::null_mut(),
                    link: Links::new(),
                    in_partial: false,
                    dq: Links::new(),
                    in_dirty: false,
                    since: 0,
                    all: Links::new(),
                    free_committed: 0,
                    free_decommitted: 0,
                },
            )
        };
        h
    }

    /// The header of the chunk at `base`, if it carries the magic tag.
    ///
    /// # Safety
    /// `base` is the base of a live region registered as `OwnerKind::Mid`, carrying the
    /// mapping's provenance.
    pub(crate) unsafe fn at(base: NonNull<u8>) -> Option<*mut ChunkHeader> {
        let h = base.as_ptr().cast::<ChunkHeader>();
        // SAFETY: a registered mid region starts with an initialised header (contract).
        (unsafe { (*h).magic } == MAGIC).then_some(h)
    }

    /// Assigns an empty chunk to class `c`.
    ///
    /// # Safety
    /// The chunk is empty (`used == 0`), on no list but the all-chunks list, and owned by the
    /// caller (who holds class `c`'s central lock).
    pub(crate) unsafe fn assign(h: *mut ChunkHeader, c: usize) {
        // SAFETY: the caller owns the header (contract).
        unsafe {
            hak_sync::check!((*h).bytes == CHUNK_BYTES[c], "chunk size of its class");
            (*h).class = c;
            (*h).block_size = CLASS_SIZE[c];
            (*h).capacity = CHUNK_CAPACITY[c];
            (*h).carved = 0;
            (*h).free_count = 0;
            (*h).dirty = ptr::null_mut();
            (*h).dirty_count = 0;
            (*h).clean = ptr::null_mut();
            (*h).free_committed = 0;
            (*h).free_decommitted = 0;
            (*h).in_partial = false;
            (*h).in_dirty = false;
            (*h).since = 0;
        }
    }

    /// Takes up to `want` blocks out of the chunk (dirty ones, then clean ones, then carving),
    /// appending them to the list `*head` (word 0 links). Returns `(taken,
    /// bytes_committed_freed, bytes_decommitted_freed)`: how the chunk's free-byte tallies
    /// changed.
    ///
    /// # Safety
    /// The caller holds the central lock of the chunk's class.
    pub(crate) unsafe fn take(
        h: *mut ChunkHeader,
        want: usize,
        head: &mut *mut u8,
    ) -> (usize, usize, usize) {
        let mut n = 0;
        let mut committed = 0;
        let mut decommitted = 0;
        // SAFETY: the caller holds the lock owning the header and the chunk's free blocks;
        // carved blocks lie inside the mapping (`carved < capacity`) and are derived from the
        // header pointer, so they carry the mapping's provenance.
        unsafe {
            let s = (*h).block_size;
            while n < want && !(*h).dirty.is_null() {
                let b = (*h).dirty;
                (*h).dirty = next(b);
                dec(&mut (*h).dirty_count, 1);
                dec(&mut (*h).free_count, 1);
                committed += s;
                set_next(b, *head);
                *head = b;
                n += 1;
            }
            while n < want && !(*h).clean.is_null() {
                let b = (*h).clean;
                (*h).clean = next(b);
                dec(&mut (*h).free_count, 1);
                // A record larger than the block means a write after free; never let it make
                // the arithmetic below overflow (which would panic in checked builds).
                let d = word(b, W_DECOMMITTED);
                hak_sync::check!(d < s, "decommitted bytes of a free block");
                let d = d.min(s);
                decommitted += d;
                committed += s - d;
                set_word(b, W_DECOMMITTED, 0);
                set_next(b, *head);
                *head = b;
                n += 1;
            }
            while n < want && (*h).carved < (*h).capacity {
                let b = h.cast::<u8>().add(CHUNK_HEADER + (*h).carved * s);
                (*h).carved += 1;
                // Every free block carries its mark, fresh ones too (the link below touches
                // the same line anyway).
                mark_free(b);
                set_next(b, *head);
                *head = b;
                n += 1;
            }
            dec(&mut (*h).free_committed, committed);
            dec(&mut (*h).free_decommitted, decommitted);
        }
        (n, committed, decommitted)
    }

    /// Returns block `b` to the chunk: to the clean list if `purged` (a purge decommitted
    /// `decommitted` bytes of its tail, possibly 0 when its pages were too few), else to the
    /// dirty list. Returns whether the chunk is now empty.
    ///
    /// # Safety
    /// The caller holds the central lock of the chunk's class, and `b` is a block of this
    /// chunk that was out (`used > 0`) and is now the caller's.
    pub(crate) unsafe fn put(
        h: *mut ChunkHeader,
        b: *mut u8,
        purged: bool,
        decommitted: usize,
    ) -> bool {
        // SAFETY: per the contract.
        unsafe {
            hak_sync::check!((*h).free_count < (*h).carved, "more blocks back than out");
            if purged {
                set_next(b, (*h).clean);
                set_word(b, W_DECOMMITTED, decommitted);
                (*h).clean = b;
            } else {
                set_next(b, (*h).dirty);
                (*h).dirty = b;
                (*h).dirty_count += 1;
            }
            (*h).free_count += 1;
            (*h).free_committed += (*h).block_size - decommitted;
            (*h).free_decommitted += decommitted;
            (*h).free_count == (*h).carved
        }
    }

    /// Detaches the whole dirty list for a purge: its head and length. The blocks count as
    /// out (`used`) until they are put back, so the chunk cannot empty meanwhile.
    ///
    /// # Safety
    /// The caller holds the chunk's central lock.
    pub(crate) unsafe fn take_dirty(h: *mut ChunkHeader) -> (*mut u8, usize) {
        // SAFETY: per the contract.
        unsafe {
            let (list, k) = ((*h).dirty, (*h).dirty_count);
            (*h).dirty = ptr::null_mut();
            (*h).dirty_count = 0;
            dec(&mut (*h).free_count, k);
            dec(&mut (*h).free_committed, k * (*h).block_size);
            (list, k)
        }
    }

    /// Whether `addr` lies in the block area of this chunk.
    ///
    /// # Safety
    /// `h` is a live header.
    #[inline]
    pub(crate) unsafe fn contains(h: *mut ChunkHeader, addr: usize) -> bool {
        let base = h.addr();
        // SAFETY: per the contract.
        addr >= base + CHUNK_HEADER && addr < base + unsafe { (*h).bytes }
    }

    /// Whether `addr` is the start of one of this chunk's blocks (not a header byte, not a
    /// block's interior, not the unused tail after the last block).
    ///
    /// # Safety
    /// `h` is a live header whose class fields are fixed (it holds a live block).
    #[inline]
    pub(crate) unsafe fn is_block_start(h: *mut ChunkHeader, addr: usize) -> bool {
        let first = h.addr() + CHUNK_HEADER;
        // SAFETY: per the contract.
        let (size, capacity) = unsafe { ((*h).block_size, (*h).capacity) };
        if addr < first || size == 0 {
            return false;
        }
        let off = addr - first;
        off.is_multiple_of(size) && off / size < capacity
    }

    /// Whether block carving or the free lists can still give blocks.
    ///
    /// # Safety
    /// The caller holds the chunk's central lock.
    pub(crate) unsafe fn has_room(h: *mut ChunkHeader) -> bool {
        // SAFETY: per the contract.
        unsafe { (*h).free_count > 0 || (*h).carved < (*h).capacity }
    }

    /// Checks the chunk's invariants (tests).
    ///
    /// # Safety
    /// The caller holds the chunk's central lock and no purge of it is in progress.
    #[cfg(all(test, not(hak_loom)))]
    pub(crate) unsafe fn check(h: *mut ChunkHeader) {
        // SAFETY: per the contract.
        unsafe {
            assert_eq!((*h).magic, MAGIC);
            assert!((*h).carved <= (*h).capacity);
            assert!((*h).free_count <= (*h).carved);
            let mut n = 0;
            let mut b = (*h).dirty;
            while !b.is_null() {
                assert!(ChunkHeader::contains(h, b.addr()));
                assert!(crate::block::is_marked_free(b), "a dirty block without its free mark");
                n += 1;
                b = next(b);
            }
            assert_eq!(n, (*h).dirty_count);
            let mut decommitted = 0;
            b = (*h).clean;
            while !b.is_null() {
                assert!(ChunkHeader::contains(h, b.addr()));
                assert!(crate::block::is_marked_free(b), "a clean block without its free mark");
                decommitted += word(b, W_DECOMMITTED);
                n += 1;
                b = next(b);
            }
            assert_eq!(n, (*h).free_count);
            assert_eq!(decommitted, (*h).free_decommitted);
            assert_eq!(
                (*h).free_committed + (*h).free_decommitted,
                (*h).free_count * (*h).block_size
            );
            assert_eq!((*h).in_partial, ChunkHeader::has_room(h));
            if (*h).block_size >= crate::mid::DECOMMIT_MIN {
                assert_eq!((*h).in_dirty, (*h).dirty_count > 0);
            } else {
                assert!(!(*h).in_dirty);
            }
        }
    }
}

/// Decommits the pages of block `b` (of `s` bytes) past the page holding its links. Returns
/// the bytes decommitted (0 if none or if madvise failed).
///
/// # Safety
/// `b` is a free block the caller owns.
pub(crate) unsafe fn decommit_tail(os: &hak_os::Os, b: *mut u8, s: usize) -> usize {
    let page = hak_os::page_size();
    let start = (b.addr() + 1).next_multiple_of(page);
    let end = (b.addr() + s) & !(page - 1);
    if end <= start {
        return 0;
    }
    // SAFETY: `[start, end)` is page-aligned, inside the block (so inside a mapping of `os`),
    // past the words holding the block's links, and holds nothing anyone needs (contract).
    // The pointer is derived from `b`, keeping its provenance.
    match unsafe { os.decommit(NonNull::new_unchecked(b.add(start - b.addr())), end - start) } {
        Ok(()) => end - start,
        Err(_) => 0,
    }
}

// SAFETY: each links field belongs to one list, except `link`, which the partial list and the
// empty cache share because a cached chunk has no class and so is on no partial list.
hak_collections::adapter! {
    /// A chunk's place on its class's partial list.
    pub(crate) unsafe struct Partial for ChunkHeader { links: link }
}
// SAFETY: as above; `bytes` is fixed for the life of the mapping, and `since` is written by
// nobody but the cache while the chunk is cached.
hak_collections::adapter! {
    /// A chunk's place in the empty cache: the same links as [`Partial`] (a cached chunk has
    /// no class, so it is on no partial list), stamped in `since`.
    pub(crate) unsafe struct Empty for ChunkHeader { links: link, bytes: bytes, stamp: since }
}
// SAFETY: `dq` is the dirty queue's alone.
hak_collections::adapter! {
    /// A chunk's place on its class's dirty queue.
    pub(crate) unsafe struct DirtyQueue for ChunkHeader { links: dq }
}
// SAFETY: `all` is the all-chunks list's alone.
hak_collections::adapter! {
    /// A chunk's place on the all-chunks list.
    pub(crate) unsafe struct AllChunks for ChunkHeader { links: all }
}

/// The per-class central state: its partial chunks and its dirty queue. Owned by the class's
/// central lock.
pub(crate) struct Central {
    /// Chunks of this class with blocks to give (free or uncarved), the one that most recently
    /// got room back first.
    partial: List<Partial>,
    /// Chunks with dirty blocks, oldest `since` first (head) to newest (tail).
    dirty: List<DirtyQueue>,
}

// SAFETY: the chunk pointers are owned by whoever holds the mutex around `Central`.
unsafe impl Send for Central {}

impl Central {
    /// No chunks.
    pub(crate) const EMPTY: Central = Central { partial: List::new(), dirty: List::new() };

    /// The first partial chunk.
    #[inline]
    pub(crate) fn first(&self) -> Option<*mut ChunkHeader> {
        self.partial.head()
    }

    /// Puts `h` at the head of the partial list.
    ///
    /// # Safety
    /// `h` is a chunk of this class, not on the list; the caller holds this lock.
    pub(crate) unsafe fn push(&mut self, h: *mut ChunkHeader) {
        // SAFETY: per the contract; listed chunks are live chunks of this class.
        unsafe {
            hak_sync::check!(!(*h).in_partial, "chunk already partial");
            self.partial.push_front(h);
            (*h).in_partial = true;
        }
    }

    /// Takes `h` off the partial list.
    ///
    /// # Safety
    /// `h` is on this list; the caller holds this lock.
    pub(crate) unsafe fn remove(&mut self, h: *mut ChunkHeader) {
        // SAFETY: per the contract.
        unsafe {
            hak_sync::check!((*h).in_partial, "chunk not partial");
            self.partial.remove(h);
            (*h).in_partial = false;
        }
    }

    /// The partial chunks, first to last, and whether both lists are well formed (tests).
    ///
    /// # Safety
    /// The caller holds this lock.
    #[cfg(all(test, not(hak_loom)))]
    pub(crate) unsafe fn check_lists(&self) -> (impl Iterator<Item = *mut ChunkHeader>, bool) {
        // SAFETY: listed chunks are live while the caller holds the lock.
        unsafe { (self.partial.iter(), self.partial.is_consistent() && self.dirty.is_consistent()) }
    }

    /// The chunk whose dirty blocks have waited longest, if any.
    #[inline]
    pub(crate) fn oldest_dirty(&self) -> Option<*mut ChunkHeader> {
        self.dirty.head()
    }

    /// Queues `h` (which just got its first dirty block, at time `since`): at the tail, or at
    /// the head if it is older than the head (blocks drained from an idle shard carry the time
    /// they were freed).
    ///
    /// # Safety
    /// `h` is a chunk of this class, not queued; the caller holds this lock.
    pub(crate) unsafe fn queue_dirty(&mut self, h: *mut ChunkHeader, since: u64) {
        // SAFETY: per the contract; queued chunks are live chunks of this class.
        unsafe {
            hak_sync::check!(!(*h).in_dirty, "chunk already queued");
            (*h).since = since;
            (*h).in_dirty = true;
            match self.dirty.head() {
                Some(head) if since < (*head).since => self.dirty.push_front(h),
                _ => self.dirty.push_back(h),
            }
        }
    }

    /// Takes `h` off the dirty queue if it is on it.
    ///
    /// # Safety
    /// `h` is a chunk of this class; the caller holds this lock.
    pub(crate) unsafe fn unqueue_dirty(&mut self, h: *mut ChunkHeader) {
        // SAFETY: per the contract.
        unsafe {
            if (*h).in_dirty {
                self.dirty.remove(h);
                (*h).in_dirty = false;
            }
        }
    }
}

/// Most cached chunks [`EmptyCache::take`] looks at: all of them, since every chunk is at
/// least 1 MiB and the cache keeps at most [`MAX_EMPTY_BYTES`].
const TAKE_VISITS: usize = MAX_EMPTY_BYTES >> 20;

/// Empty chunks waiting for reuse, most recent first, each stamped (`since`) with when it
/// emptied: the shared region cache, plus what a cached chunk means here (no class).
pub(crate) struct EmptyCache(RegionCache<Empty>);

// SAFETY: as for `Central`.
unsafe impl Send for EmptyCache {}

impl EmptyCache {
    /// Nothing cached.
    pub(crate) const EMPTY: EmptyCache = EmptyCache(RegionCache::new());

    /// Chunks cached.
    pub(crate) fn count(&self) -> usize {
        self.0.count()
    }

    /// Caches `h`, which emptied at time `now`, and takes out what the cache cannot keep
    /// (beyond `max_chunks` chunks or [`MAX_EMPTY_BYTES`]), oldest first, for the caller to
    /// unmap after unlocking.
    ///
    /// # Safety
    /// `h` is an empty chunk on no list but the all-chunks list; the caller holds this lock.
    pub(crate) unsafe fn push(
        &mut self,
        h: *mut ChunkHeader,
        now: u64,
        max_chunks: usize,
    ) -> List<Empty> {
        let limits = Limits { max_count: max_chunks, max_bytes: MAX_EMPTY_BYTES, ttl_ns: u64::MAX };
        // SAFETY: per the contract; cached chunks are live and ours under this lock.
        unsafe {
            (*h).class = NO_CLASS;
            self.0.push(h, now);
            self.0.evict(now, &limits)
        }
    }

    /// Takes the most recent chunk of `bytes` bytes, if any.
    ///
    /// # Safety
    /// The caller holds this lock.
    pub(crate) unsafe fn take(&mut self, bytes: usize) -> Option<*mut ChunkHeader> {
        // SAFETY: cached chunks are live and owned by the cache, under the caller's lock.
        unsafe {
            let h = self.0.find_newest(TAKE_VISITS, |h| (*h).bytes == bytes)?;
            self.0.remove(h);
            Some(h)
        }
    }

    /// Takes the oldest chunk, if any, and if it emptied at or before `older_than`.
    ///
    /// # Safety
    /// The caller holds this lock.
    pub(crate) unsafe fn take_oldest(&mut self, older_than: u64) -> Option<*mut ChunkHeader> {
        // SAFETY: as in `take`.
        unsafe { self.0.take_oldest(older_than) }
    }

    /// Takes every chunk out.
    pub(crate) fn take_all(&mut self) -> List<Empty> {
        self.0.take_all()
    }
}

/// Every chunk mapped by a `Mid`.
pub(crate) struct ChunkList(List<AllChunks>);

// SAFETY: as for `Central`.
unsafe impl Send for ChunkList {}

impl ChunkList {
    /// No chunks.
    pub(crate) const EMPTY: ChunkList = ChunkList(List::new());

    /// Chunks on the list.
    pub(crate) fn count(&self) -> usize {
        self.0.len()
    }

    /// Adds `h`.
    ///
    /// # Safety
    /// `h` is a live chunk not on the list; the caller holds this lock.
    pub(crate) unsafe fn push(&mut self, h: *mut ChunkHeader) {
        // SAFETY: per the contract; listed chunks are live.
        unsafe { self.0.push_front(h) }
    }

    /// Removes `h`.
    ///
    /// # Safety
    /// `h` is on the list; the caller holds this lock.
    pub(crate) unsafe fn remove(&mut self, h: *mut ChunkHeader) {
        // SAFETY: per the contract.
        unsafe { self.0.remove(h) }
    }

    /// Takes any chunk off the list.
    ///
    /// # Safety
    /// The caller holds this lock.
    pub(crate) unsafe fn pop(&mut self) -> Option<*mut ChunkHeader> {
        // SAFETY: listed chunks are live.
        unsafe { self.0.pop_front() }
    }
}

#[cfg(all(test, not(hak_loom)))]
mod tests {
    use super::*;

    /// Headers of chunks of the given sizes (only the header page of each is mapped: the cache
    /// reads `bytes`, never the blocks).
    fn headers(os: &hak_os::Os, sizes: &[usize]) -> std::vec::Vec<*mut ChunkHeader> {
        sizes
            .iter()
            .map(|&bytes| {
                let base = os.map(CHUNK_HEADER, CHUNK_HEADER).expect("map");
                // SAFETY: a fresh mapping of a header's bytes.
                unsafe { ChunkHeader::init(base, bytes) }
            })
            .collect()
    }

    #[test]
    fn the_empty_cache_reuses_the_newest_of_a_size_and_evicts_the_oldest() {
        let os = hak_os::Os::new();
        let h = headers(&os, &[1 << 20, 2 << 20, 1 << 20, 1 << 20, MAX_EMPTY_BYTES]);
        let mut c = EmptyCache::EMPTY;
        // SAFETY: the headers are live for the whole test and cached once at a time.
        unsafe {
            for (i, &x) in h.iter().take(3).enumerate() {
                assert!(c.push(x, 10 * (i as u64 + 1), 8).is_empty());
                assert_eq!((*x).class, NO_CLASS);
            }
            assert_eq!(c.take(1 << 20), Some(h[2]), "the newest of its size");
            assert_eq!(c.take(2 << 20), Some(h[1]));
            assert_eq!(c.take(3 << 20), None);
            assert_eq!(c.count(), 1);
            assert!(c.push(h[2], 40, 2).is_empty());
            let mut victims = c.push(h[3], 50, 2);
            assert_eq!(victims.pop_front(), Some(h[0]), "over the count: the oldest leaves");
            assert!(victims.is_empty());
            assert_eq!(c.count(), 2);
            assert_eq!(c.take_oldest(39), None, "the oldest emptied at 40");
            assert_eq!(c.take_oldest(40), Some(h[2]));
            let mut victims = c.push(h[4], 60, 8);
            assert_eq!(victims.pop_front(), Some(h[3]), "over the bytes: the oldest leaves");
            let mut all = c.take_all();
            assert_eq!((all.pop_front(), all.pop_front()), (Some(h[4]), None));
            assert_eq!(c.count(), 0);
        }
        for x in h {
            // SAFETY: nothing refers to the header any more.
            let _ = unsafe { os.unmap(NonNull::new_unchecked(x.cast()), CHUNK_HEADER) };
        }
    }
}
