//! The words a free block keeps in its own first bytes.
//!
//! A free block is at least 2560 B (in loom models, a test buffer of at least
//! [`BLOCK_WORDS`] words) and word-aligned, so its first three words are ours while it is free:
//!
//! | word | in a thread cache / shard batch      | in a chunk's free list (central)       |
//! | ---- | ------------------------------------ | -------------------------------------- |
//! | 0    | next block of the list (null ends)   | next free block of the chunk           |
//! | 1    | next batch (batch heads only)        | [`DECOMMITTED`] if its tail was dropped |
//! | 2    | blocks in the batch (heads only)     | bytes decommitted (when word 1 says so) |
//!
//! Whoever holds a list owns these words: the thread cache's owner, or the holder of the shard
//! or central lock the list hangs from. They are plain memory, so they are never a hand-off by
//! themselves; every hand-off between threads goes through a lock (CONVENTIONS.md rule 6).

use core::ptr;

/// Words a free block must have for its links.
pub(crate) const BLOCK_WORDS: usize = 3;
/// Word 1 of a free block in a chunk free list whose pages past the first were decommitted.
pub(crate) const DECOMMITTED: usize = 0xDEC0_4417_DEC0_4417;

/// Reads word `i` of free block `b`.
///
/// # Safety
/// `b` is a free block the caller owns (see the module docs), with at least `BLOCK_WORDS`
/// word-aligned words.
#[inline(always)]
pub(crate) unsafe fn word(b: *mut u8, i: usize) -> usize {
    debug_assert!(i < BLOCK_WORDS);
    // SAFETY: per the contract, word `i` is inside `b` and aligned.
    unsafe { ptr::read(b.cast::<usize>().add(i)) }
}

/// Writes word `i` of free block `b`.
///
/// # Safety
/// As for [`word`].
#[inline(always)]
pub(crate) unsafe fn set_word(b: *mut u8, i: usize, v: usize) {
    debug_assert!(i < BLOCK_WORDS);
    // SAFETY: per the contract, word `i` is inside `b`, aligned, and ours to write.
    unsafe { ptr::write(b.cast::<usize>().add(i), v) }
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

/// Length of the null-terminated list at `head`, counting at most `limit + 1` blocks (so a
/// cycle or an overlong list shows as `limit + 1` without looping): for debug checks and
/// tests.
///
/// # Safety
/// The blocks of the list are the caller's (see the module docs).
#[cfg(any(test, debug_assertions))]
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
