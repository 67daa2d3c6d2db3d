//! [`Header`]: the bookkeeping every big mapping carries in its first page; [`Block`]: the raw
//! handle every access to a header goes through; and the layout arithmetic that places the user
//! block behind the header.
//!
//! Layout of one big mapping (`base` aligned to `max(GRANULE, align)`):
//!
//! ```text
//! base                  base + user_off                 base + block_len      base + map_len
//! | Header ... (page)   | user block: size bytes ... slack |  reserve (untouched)  |
//! ```
//!
//! Equations (for every block, live or cached):
//! - `user_off == max(page_size, align)`, so `(base + user_off) % align == 0` because
//!   `base % max(GRANULE, align) == 0` and `GRANULE >= page_size`;
//! - `map_len % page_size == 0`, `block_len % page_size == 0`,
//!   `user_off + size <= block_len <= map_len`; `usable == block_len - user_off`;
//! - the reserve `[block_len, map_len)` exists only in blocks that `realloc` mapped with room to
//!   grow; no byte of it has been handed out since it was mapped, so it costs no memory. A
//!   cached block has none (`block_len == map_len`);
//! - `magic == MAGIC ^ base` (a header copied to another address does not validate);
//! - `state ∈ {LIVE, CACHED, FREEING}`; a block is in the cache's bins and LRU list iff
//!   `state == CACHED`.
//!
//! Provenance: a [`Block`] is a pointer to the mapping's base that carries the provenance of
//! the whole mapping (it comes from the mapping hak-os returned, from a cache list that stored
//! such a pointer, or from the registry, which hands back the pointer a block was registered
//! with). Fields are read and written through it as raw places, never through a `&Header` or
//! `&mut Header`, and the user block's pointer is derived from it; so no reference into a
//! mapping is alive across a call that rewrites or unmaps it.
//!
//! Ownership: the fields of a LIVE block belong to the thread that owns the block; the fields
//! of a CACHED or FREEING block, and every `state` transition, belong to whoever holds the
//! cache's mutex. The links (`bin`, `lru`: `hak_collections` list links) are meaningful only
//! while `state == CACHED` (and `lru` in a list of victims or pieces its owner holds) and are
//! touched only under that mutex or by that owner.

use core::ptr::NonNull;

use hak_collections::Links;

/// `"HAKBIG01"` as a little-endian word; stored XOR the mapping's base.
pub(crate) const MAGIC: usize = 0x3130_4749_424B_4148;

/// The block is handed out to a user.
pub(crate) const LIVE: usize = 0x4C49_5645;
/// The block sits in the cache (bins + LRU list).
pub(crate) const CACHED: usize = 0x4341_4348;
/// The block is between `dealloc`'s validation and its insertion in the cache (being probed or
/// decommitted outside the lock). Neither live nor findable; a second free sees it as a double
/// free.
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
    /// Length of the whole mapping in bytes (a page multiple), registered as `Big`.
    pub(crate) map_len: usize,
    /// End of the block proper: `map_len` less the reserve kept for growth (a page multiple).
    pub(crate) block_len: usize,
    /// Offset of the user block from `base`, in bytes (`max(page_size, align)`).
    pub(crate) user_off: usize,
    /// The size the user asked for last (alloc or realloc), in bytes.
    pub(crate) size: usize,
    /// Whether the pages past the header page were decommitted when the block was cached.
    pub(crate) decommitted: bool,
    /// Whether the block may span several kernel mappings (it was gathered, or split from a
    /// gathered block). Such a block is never moved with one `mremap`: kernels before 6.17
    /// refuse the move only after unmapping the destination, and later ones may stop part-way.
    pub(crate) multi_map: bool,
    /// Whether the block's range was advised `MADV_HUGEPAGE`.
    pub(crate) huge: bool,
    /// Whether the block is a fresh mapping backed by base pages whose density was not measured
    /// yet: its first free asks the kernel which pages it holds (see the `density` module).
    pub(crate) probe: bool,
    /// Users since the block's pages were last decommitted (or it was mapped) whose block ended
    /// in another page than the user's before: each leaves its last pages at a new place, so
    /// a sparse program's block keeps its scattered pages for a few of them, then drops them.
    pub(crate) spread: u32,
    /// Page index (from `base`) of the last byte of the block's last user (at its free).
    pub(crate) last_end: usize,
    /// `hak_os::monotonic_ns()` when the block entered the cache (the LRU's stamp).
    pub(crate) cached_ns: u64,
    /// Links in the block's size-class bin (cached blocks only).
    pub(crate) bin: Links<*mut Header>,
    /// Links in the LRU list (cached blocks only); also in a list of victims or pieces.
    pub(crate) lru: Links<*mut Header>,
}

impl Header {
    /// A LIVE header at `addr` with no reserve (`block_len == map_len`), no flags, unlinked.
    pub(crate) const fn live(addr: usize, map_len: usize, user_off: usize, size: usize) -> Header {
        Header {
            magic: MAGIC ^ addr,
            state: LIVE,
            map_len,
            block_len: map_len,
            user_off,
            size,
            decommitted: false,
            multi_map: false,
            huge: false,
            probe: false,
            spread: 0,
            last_end: 0,
            cached_ns: 0,
            bin: Links::new(),
            lru: Links::new(),
        }
    }
}

const _: () = assert!(core::mem::size_of::<Header>() <= 4096);

/// A raw handle to the header at the base of a big mapping, carrying the mapping's provenance
/// (see the module docs). Copying it copies no ownership: every accessor states whose the
/// fields must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block(NonNull<Header>);

// SAFETY: a handle is an address with provenance; what a thread may do through it is governed
// by the ownership rules above (the block's owner, or the cache's mutex), not by which thread
// holds the handle.
unsafe impl Send for Block {}

/// Generates a getter and a setter for a header field, reading and writing the raw place.
macro_rules! field {
    ($get:ident, $set:ident, $ty:ty) => {
        #[doc = concat!("Reads `", stringify!($get), "`.")]
        ///
        /// # Safety
        /// The header is mapped and the caller may read it (see the module docs).
        #[inline]
        pub(crate) unsafe fn $get(self) -> $ty {
            // SAFETY: forwarded; a raw place read creates no reference.
            unsafe { (*self.0.as_ptr()).$get }
        }

        #[doc = concat!("Writes `", stringify!($get), "`.")]
        ///
        /// # Safety
        /// The header is mapped and the caller may write it (see the module docs).
        #[inline]
        pub(crate) unsafe fn $set(self, v: $ty) {
            // SAFETY: forwarded; a raw place write creates no reference.
            unsafe { (*self.0.as_ptr()).$get = v }
        }
    };
}

impl Block {
    /// The handle of the mapping at `base`.
    ///
    /// # Safety
    /// `base` is the first byte of a big mapping (mapped, page-aligned, at least a page) and
    /// carries its provenance.
    #[inline]
    pub(crate) unsafe fn from_base(base: NonNull<u8>) -> Block {
        Block(base.cast())
    }

    /// A handle from a list link (null: `None`).
    #[inline]
    pub(crate) fn from_link(p: *mut Header) -> Option<Block> {
        NonNull::new(p).map(Block)
    }

    /// The header pointer, for list links.
    #[inline]
    pub(crate) fn link(self) -> *mut Header {
        self.0.as_ptr()
    }

    /// The mapping's first byte.
    #[inline]
    pub(crate) fn base(self) -> NonNull<u8> {
        self.0.cast()
    }

    /// The mapping's address.
    #[inline]
    pub(crate) fn addr(self) -> usize {
        self.0.as_ptr() as usize
    }

    /// The byte `off` bytes into the mapping, with the mapping's provenance.
    ///
    /// # Safety
    /// `off <= map_len` of the mapping.
    #[inline]
    pub(crate) unsafe fn at(self, off: usize) -> NonNull<u8> {
        // SAFETY: inside (or one past) the mapping, so in bounds of its provenance, not null.
        unsafe { self.base().add(off) }
    }

    /// Writes a fresh LIVE header with no reserve (`block_len == map_len`), no flags.
    ///
    /// # Safety
    /// The block's first page is writable and nobody else uses it.
    pub(crate) unsafe fn init(self, map_len: usize, user_off: usize, size: usize) {
        let h = Header::live(self.addr(), map_len, user_off, size);
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.0.as_ptr().write(h) };
    }

    /// Whether the magic matches the header's own address.
    ///
    /// # Safety
    /// The header is mapped and the caller may read it.
    #[inline]
    pub(crate) unsafe fn magic_ok(self) -> bool {
        // SAFETY: forwarded.
        unsafe { (*self.0.as_ptr()).magic == MAGIC ^ self.addr() }
    }

    field!(state, set_state, usize);
    field!(map_len, set_map_len, usize);
    field!(block_len, set_block_len, usize);
    field!(user_off, set_user_off, usize);
    field!(size, set_size, usize);
    field!(decommitted, set_decommitted, bool);
    field!(multi_map, set_multi_map, bool);
    field!(huge, set_huge, bool);
    field!(probe, set_probe, bool);
    field!(spread, set_spread, u32);
    field!(last_end, set_last_end, usize);
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

    #[test]
    fn a_handle_reads_and_writes_the_header_in_place() {
        let mut mem = std::vec![0u64; 4096 / 8];
        let base = NonNull::new(mem.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `mem` is a writable, 8-aligned page that outlives the handle.
        unsafe {
            let b = Block::from_base(base);
            b.init(1 << 20, 4096, 5);
            assert!(b.magic_ok());
            assert_eq!(
                (b.state(), b.map_len(), b.block_len(), b.size()),
                (LIVE, 1 << 20, 1 << 20, 5)
            );
            b.set_size(7);
            assert_eq!(b.size(), 7);
            assert_eq!(b.at(8).as_ptr(), base.as_ptr().add(8));
        }
    }
}
