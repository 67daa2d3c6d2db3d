//! The words a free block keeps in its own first bytes.
//!
//! A free block is at least 2560 B (in loom models, a test buffer of at least
//! [`BLOCK_WORDS`] words) and word-aligned, so its first five words are ours while it is free:
//!
//! | word | meaning                                                                        |
//! | ---- | ------------------------------------------------------------------------------ |
//! | 0    | next block of the list it is on (thread-cache bin, shard batch, chunk list)    |
//! | 1    | the free mark: `address ^ FREE_KEY` while the block is free, anywhere          |
//! | 2    | on a chunk's free list: bytes of its tail decommitted (0: none)                |
//! | 3    | batch heads in a shard: the next batch                                         |
//! | 4    | batch heads in a shard: blocks in the batch                                    |
//!
//! Links (words 0 and 3) are stored as pointers, so they keep the provenance of the chunk the
//! block was carved from.
//!
//! The free mark makes a second free of the same block cheap to detect: `dealloc` reads word 1
//! before it links the block, finds the mark, reports the double free on stderr and ignores it
//! (a list with the block twice would hand it to two users). Every path that hands a block to a
//! user clears the mark. A live block whose user stored exactly its own address XOR
//! [`FREE_KEY`] at bytes 8..16 would be taken for a free one; its free is then refused and the
//! block leaks, which is the whole cost of that (deliberate) coincidence.
//!
//! Whoever holds a list owns these words: the thread cache's owner, or the holder of the shard
//! or central lock the list hangs from. They are plain memory, so they are never a hand-off by
//! themselves; every hand-off between threads goes through a lock, which loom can see (a link
//! written into raw block memory is invisible to it).

use core::ptr;

/// Words a free block must have for its links and marks.
pub(crate) const BLOCK_WORDS: usize = 5;
/// XORed with a free block's address to give its free mark (word 1).
pub(crate) const FREE_KEY: usize = 0x6D69_645F_6672_6565;
/// Word 1: the free mark.
const W_MARK: usize = 1;
/// Word 2: bytes decommitted.
pub(crate) const W_DECOMMITTED: usize = 2;
/// Word 3: next batch.
pub(crate) const W_BATCH_NEXT: usize = 3;
/// Word 4: batch length.
pub(crate) const W_BATCH_LEN: usize = 4;

/// Reads word `i` of free block `b`.
///
/// # Safety
/// `b` is a free block the caller owns (see the module docs), with at least `BLOCK_WORDS`
/// word-aligned words; `i < BLOCK_WORDS`.
#[inline(always)]
pub(crate) unsafe fn word(b: *mut u8, i: usize) -> usize {
    hak_sync::check!(i < BLOCK_WORDS, "block word index");
    // SAFETY: per the contract, word `i` is inside `b` and aligned.
    unsafe { ptr::read(b.cast::<usize>().add(i)) }
}

/// Writes word `i` of free block `b`.
///
/// # Safety
/// As for [`word`].
#[inline(always)]
pub(crate) unsafe fn set_word(b: *mut u8, i: usize, v: usize) {
    hak_sync::check!(i < BLOCK_WORDS, "block word index");
    // SAFETY: per the contract, word `i` is inside `b`, aligned, and ours to write.
    unsafe { ptr::write(b.cast::<usize>().add(i), v) }
}

/// Reads the pointer stored in word `i` of free block `b` (a link).
///
/// # Safety
/// As for [`word`]; word `i` was written by [`set_link`].
#[inline(always)]
pub(crate) unsafe fn link(b: *mut u8, i: usize) -> *mut u8 {
    hak_sync::check!(i < BLOCK_WORDS, "block word index");
    // SAFETY: per the contract, word `i` is inside `b`, aligned, and holds a pointer.
    unsafe { ptr::read(b.cast::<*mut u8>().add(i)) }
}

/// Stores pointer `p` in word `i` of free block `b` (a link), keeping its provenance.
///
/// # Safety
/// As for [`word`].
#[inline(always)]
pub(crate) unsafe fn set_link(b: *mut u8, i: usize, p: *mut u8) {
    hak_sync::check!(i < BLOCK_WORDS, "block word index");
    // SAFETY: per the contract, word `i` is inside `b`, aligned, and ours to write.
    unsafe { ptr::write(b.cast::<*mut u8>().add(i), p) }
}

/// The next block of a list (word 0).
///
/// # Safety
/// As for [`word`].
#[inline(always)]
pub(crate) unsafe fn next(b: *mut u8) -> *mut u8 {
    // SAFETY: forwarded.
    unsafe { ptr::read(b.cast::<*mut u8>()) }
}

/// Sets the next block of a list (word 0).
///
/// # Safety
/// As for [`word`].
#[inline(always)]
pub(crate) unsafe fn set_next(b: *mut u8, n: *mut u8) {
    // SAFETY: forwarded.
    unsafe { ptr::write(b.cast::<*mut u8>(), n) }
}

/// The free mark of block `b`.
#[inline(always)]
fn mark_of(b: *mut u8) -> usize {
    b.addr() ^ FREE_KEY
}

/// Whether `b` carries its free mark, i.e. is (almost certainly) free already.
///
/// # Safety
/// `b` is the start of a block of at least `BLOCK_WORDS` words that the caller may read (a
/// block being freed: its user gave it back).
#[inline(always)]
pub(crate) unsafe fn is_marked_free(b: *mut u8) -> bool {
    // SAFETY: forwarded.
    unsafe { word(b, W_MARK) == mark_of(b) }
}

/// Marks `b` free (see the module docs).
///
/// # Safety
/// `b` is a block the caller owns, of at least `BLOCK_WORDS` words.
#[inline(always)]
pub(crate) unsafe fn mark_free(b: *mut u8) {
    // SAFETY: forwarded.
    unsafe { set_word(b, W_MARK, mark_of(b)) }
}

/// Clears `b`'s free mark before the block goes to a user.
///
/// # Safety
/// As for [`mark_free`].
#[inline(always)]
pub(crate) unsafe fn clear_mark(b: *mut u8) {
    // SAFETY: forwarded.
    unsafe { set_word(b, W_MARK, 0) }
}

/// Length of the null-terminated list at `head`, counting at most `limit + 1` blocks (so a
/// cycle or an overlong list shows as `limit + 1` without looping): for consistency checks.
///
/// # Safety
/// The blocks of the list are the caller's (see the module docs).
pub(crate) unsafe fn list_len(head: *mut u8, limit: usize) -> usize {
    let mut n = 0;
    let mut b = head;
    while !b.is_null() && n <= limit {
        n += 1;
        // SAFETY: forwarded.
        b = unsafe { next(b) };
    }
    n
}

/// `*x -= by`, checked: a counter that would go below zero means a list was corrupted (by a
/// misuse such as a write after free); debug builds stop with a message, release builds wrap
/// rather than panic inside the allocator.
#[inline(always)]
pub(crate) fn dec(x: &mut usize, by: usize) {
    hak_sync::check!(*x >= by, "mid counter underflow");
    *x = x.wrapping_sub(by);
}

/// Reports a double free of a mid block on stderr (one line; the free is ignored).
#[cold]
#[inline(never)]
pub(crate) fn report_double_free() {
    hak_os::write_stderr(b"hakmem: double free of a mid block detected; ignored\n");
}
