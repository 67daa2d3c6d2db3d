//! [`Header`]: the bookkeeping every big mapping carries in its first page, and the layout
//! arithmetic that places the user block behind it.
//!
//! Layout of one big mapping (`base` aligned to `max(GRANULE, align)`):
//!
//! ```text
//! base                  base + user_off                      base + map_len
//! | Header ... (page)   | user block: size bytes ... slack   |
//! ```
//!
//! Equations (for every block, live or cached):
//! - `user_off == max(page_size, align)`, so `(base + user_off) % align == 0` because
//!   `base % max(GRANULE, align) == 0` and `GRANULE >= page_size`;
//! - `map_len % page_size == 0` and `user_off + size <= map_len` (`usable == map_len - user_off`);
//! - `magic == MAGIC ^ base` (a header copied to another address does not validate);
//! - `state ∈ {LIVE, CACHED, FREEING}`; a block is in the cache's table and LRU list iff
//!   `state == CACHED`.
//!
//! Ownership: the fields of a LIVE block belong to the thread that owns the block; the fields
//! of a CACHED or FREEING block, and every `state` transition, belong to whoever holds the
//! cache's mutex. The links (`chain_next`, `lru_prev`, `lru_next`) are meaningful only while
//! `state == CACHED` and are touched only under that mutex, which is what orders them for
//! other threads (loom sees the mutex; the header itself is raw OS memory).

use core::ptr;

/// `"HAKBIG01"` as a little-endian word; stored XOR the mapping's base.
pub(crate) const MAGIC: usize = 0x3130_4749_424B_4148;

/// The block is handed out to a user.
pub(crate) const LIVE: usize = 0x4C49_5645;
/// The block sits in the cache (table + LRU list).
pub(crate) const CACHED: usize = 0x4341_4348;
/// The block is between `dealloc`'s validation and its insertion in the cache (being
/// decommitted outside the lock). Neither live nor findable; a second free sees it as a
/// double free.
pub(crate) const FREEING: usize = 0x4652_4545;

/// The header at the base of every big mapping. `repr(C)` so its size is fixed and small
/// (well under the smallest page).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Header {
    /// `MAGIC ^ base`.
    pub(crate) magic: usize,
    /// `LIVE`, `CACHED` or `FREEING`.
    pub(crate) state: usize,
    /// Length of the whole mapping in bytes (a page multiple).
    pub(crate) map_len: usize,
    /// Offset of the user block from `base`, in bytes (`max(page_size, align)`).
    pub(crate) user_off: usize,
    /// The size the user asked for last (alloc or realloc), in bytes.
    pub(crate) size: usize,
    /// Whether the pages past the header page were decommitted when the block was cached.
    pub(crate) decommitted: bool,
    /// Whether the block may span several kernel mappings (it was gathered, or split from a
    /// gathered block). Such a block is never moved with `mremap`: kernels before 6.17 refuse
    /// the move only after unmapping the destination, and later ones may stop part-way.
    pub(crate) multi_map: bool,
    /// `hak_os::monotonic_ns()` when the block entered the cache.
    pub(crate) cached_ns: u64,
    /// Next header in the same hash bucket (cached blocks only).
    pub(crate) chain_next: *mut Header,
    /// Newer neighbour in the LRU list (cached blocks only).
    pub(crate) lru_prev: *mut Header,
    /// Older neighbour in the LRU list (cached blocks only); also links eviction victims.
    pub(crate) lru_next: *mut Header,
}

const _: () = assert!(core::mem::size_of::<Header>() <= 4096);

impl Header {
    /// Writes a fresh LIVE header at `base`.
    ///
    /// # Safety
    /// `base` points to at least `size_of::<Header>()` writable bytes, aligned for `Header`,
    /// that nobody else uses.
    pub(crate) unsafe fn init(base: *mut u8, map_len: usize, user_off: usize, size: usize) {
        let h = Header {
            magic: MAGIC ^ base as usize,
            state: LIVE,
            map_len,
            user_off,
            size,
            decommitted: false,
            multi_map: false,
            cached_ns: 0,
            chain_next: ptr::null_mut(),
            lru_prev: ptr::null_mut(),
            lru_next: ptr::null_mut(),
        };
        // SAFETY: forwarded from the caller's contract.
        unsafe { base.cast::<Header>().write(h) };
    }

    /// Whether the magic matches the header's own address.
    #[inline]
    pub(crate) fn magic_ok(&self) -> bool {
        self.magic == MAGIC ^ (self as *const Header as usize)
    }

    /// The cache key: the mapping length in whole [`crate::KEY_GRANULE`]s.
    #[inline]
    pub(crate) fn key(&self) -> usize {
        key_of(self.map_len)
    }
}

/// The cache key of a mapping of `map_len` bytes.
#[inline]
pub(crate) fn key_of(map_len: usize) -> usize {
    map_len >> crate::KEY_GRANULE_SHIFT
}

/// Where a block of `size` bytes aligned to `align` goes: `(user_off, map_len)`, or `None` on
/// overflow. `align` is a power of two.
#[inline]
pub(crate) fn layout_for(size: usize, align: usize, page: usize) -> Option<(usize, usize)> {
    let user_off = page.max(align);
    let end = user_off.checked_add(size.max(1))?;
    let map_len = end.checked_add(page - 1)? & !(page - 1);
    if map_len > isize::MAX as usize {
        return None;
    }
    Some((user_off, map_len))
}

#[cfg(all(test, not(hak_loom)))]
mod tests {
    use super::*;

    #[test]
    fn layout_puts_the_user_block_behind_one_page_or_one_alignment() {
        assert_eq!(layout_for(1 << 20, 8, 4096), Some((4096, (1 << 20) + 4096)));
        assert_eq!(layout_for((1 << 20) + 1, 8, 4096), Some((4096, (1 << 20) + 8192)));
        assert_eq!(layout_for(1 << 20, 2 << 20, 4096), Some((2 << 20, 3 << 20)));
        assert_eq!(layout_for(0, 8, 4096), Some((4096, 8192)), "size 0 is served as 1");
        assert_eq!(layout_for(usize::MAX - 100, 8, 4096), None);
        assert_eq!(layout_for(isize::MAX as usize, 8, 4096), None);
    }
}
