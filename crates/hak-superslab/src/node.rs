//! Free-list nodes: how free blocks of a slab are linked, locally and on the remote stack.
//!
//! A node is a free block whose first word links to the next node and whose second word says
//! how many more free blocks it *carries*: that many block pointers follow in its third word
//! on. So a freed block either stands for itself (`n == 0`) or carries up to
//! `block_size / 8 - 2` others, which stay untouched. Whoever hands blocks back in a batch
//! packs them into as few carriers as their size allows ([`pack`]), and whoever takes blocks
//! from a list reads only the carriers ([`take`]): a refill from a list of blocks another
//! core just freed then reads one or a few cache lines per dozens of blocks instead of one
//! per block. Every word is stored as a pointer (links and carried pointers keep their
//! provenance).
//!
//! Invariant of a list: following `next` from the head visits each node once and ends at
//! null; the blocks it holds are the nodes plus everything they carry, all distinct.

use core::ptr::{self, NonNull};

/// Words of a node before the carried pointers.
const HEADER_WORDS: usize = 2;

/// How many pointers a node of `block_size` bytes carries at most.
#[inline]
pub(crate) fn capacity(block_size: usize) -> usize {
    (block_size / 8).saturating_sub(HEADER_WORDS)
}

/// The node after `b`.
///
/// # Safety
/// `b` is a node.
#[inline]
pub(crate) unsafe fn next(b: *mut u8) -> *mut u8 {
    // SAFETY: forwarded; word 0 of a node.
    unsafe { b.cast::<*mut u8>().read() }
}

/// Sets the node after `b`.
///
/// # Safety
/// `b` is a node the caller may write.
#[inline]
pub(crate) unsafe fn set_next(b: *mut u8, next: *mut u8) {
    // SAFETY: forwarded.
    unsafe { b.cast::<*mut u8>().write(next) }
}

/// How many blocks `b` carries.
///
/// # Safety
/// `b` is a node.
#[inline]
pub(crate) unsafe fn carried(b: *mut u8) -> usize {
    // SAFETY: forwarded; word 1 of a node (blocks are at least 16 bytes).
    unsafe { b.cast::<usize>().add(1).read() }
}

/// The carried pointer `i` of `b`.
///
/// # Safety
/// `b` is a node carrying more than `i` blocks.
#[inline]
unsafe fn carried_at(b: *mut u8, i: usize) -> *mut u8 {
    // SAFETY: forwarded.
    unsafe { b.cast::<*mut u8>().add(HEADER_WORDS + i).read() }
}

/// Packs `blocks` (distinct free blocks of `block_size` bytes) into nodes, each carrying as many
/// of the following blocks as fit, linked in order; returns the first and last node. Writes
/// only the nodes.
///
/// # Safety
/// `blocks` is non-empty; every block is free, `block_size` bytes, and the caller's to write.
pub(crate) unsafe fn pack(blocks: &[*mut u8], block_size: usize) -> (NonNull<u8>, NonNull<u8>) {
    let cap = capacity(block_size);
    let mut head: *mut u8 = ptr::null_mut();
    let mut prev: *mut u8 = ptr::null_mut();
    let mut i = 0;
    while i < blocks.len() {
        let node = blocks[i];
        let k = cap.min(blocks.len() - i - 1);
        // SAFETY: the node is the caller's to write, big enough for `k` carried pointers.
        unsafe {
            node.cast::<*mut u8>().write(ptr::null_mut());
            node.cast::<usize>().add(1).write(k);
            ptr::copy_nonoverlapping(
                blocks.as_ptr().add(i + 1),
                node.cast::<*mut u8>().add(HEADER_WORDS),
                k,
            );
            if prev.is_null() {
                head = node;
            } else {
                set_next(prev, node);
            }
        }
        prev = node;
        i += 1 + k;
    }
    // SAFETY: `blocks` is non-empty, so both are non-null blocks.
    unsafe { (NonNull::new_unchecked(head), NonNull::new_unchecked(prev)) }
}

/// Takes up to `out.len()` blocks from the list at `*head`, carried blocks first (last ones
/// first, so a partly taken node only shrinks its count), then the node itself; returns how
/// many. Reads only nodes.
///
/// # Safety
/// `*head` is a list (see the module docs) the caller owns.
pub(crate) unsafe fn take(head: &mut *mut u8, out: &mut [*mut u8]) -> usize {
    let mut n = 0;
    while n < out.len() && !head.is_null() {
        let b = *head;
        // SAFETY: `b` is a node of our list.
        unsafe {
            let k = carried(b);
            let room = out.len() - n;
            if k >= room {
                // Take the last `room` carried pointers; the node stays, carrying fewer.
                for (j, slot) in out[n..].iter_mut().enumerate() {
                    *slot = carried_at(b, k - room + j);
                }
                b.cast::<usize>().add(1).write(k - room);
                return out.len();
            }
            for (j, slot) in out[n..n + k].iter_mut().enumerate() {
                *slot = carried_at(b, j);
            }
            out[n + k] = b;
            n += k + 1;
            *head = next(b);
        }
    }
    n
}

/// Calls `f` with every block of the list at `head` (nodes and carried), and returns the
/// number of nodes, or `None` if more than `limit` blocks were seen (a cycle or corruption).
/// For checks: reads every node.
///
/// # Safety
/// `head` is a list the caller owns.
pub(crate) unsafe fn for_each(
    head: *mut u8,
    limit: usize,
    mut f: impl FnMut(*mut u8) -> Result<(), &'static str>,
) -> Result<usize, &'static str> {
    let (mut seen, mut nodes) = (0usize, 0usize);
    let mut b = head;
    while !b.is_null() {
        f(b)?;
        // SAFETY: a node of the caller's list.
        let k = unsafe { carried(b) };
        seen += 1 + k;
        if seen > limit {
            return Err("free list longer than the slab: a cycle or a double free");
        }
        for i in 0..k {
            // SAFETY: as above.
            f(unsafe { carried_at(b, i) })?;
        }
        nodes += 1;
        // SAFETY: as above.
        b = unsafe { next(b) };
    }
    Ok(nodes)
}
