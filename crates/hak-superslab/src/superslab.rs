//! [`SuperSlab`]: the header at the base of a SuperSlab region, and [`SsRef`], the raw handle
//! every layer reaches it through.
//!
//! Layout: `[header | padding to a page][slab 0 data ...][slab 1][slab 2]...`. Slab `i` covers
//! `[base + i*SLAB_SIZE, base + (i+1)*SLAB_SIZE)`; slab 0's data starts at
//! [`SuperSlab::data_offset`] (a page boundary past the header), so blocks of any class keep
//! their natural alignment up to the page size.
//!
//! Provenance: an [`SsRef`] is a raw pointer to the region's first byte that carries the
//! provenance of the whole mapping (it comes from hak-os, or from a block address through the
//! exposed provenance of the mapping), and block pointers are derived from it. A `&SuperSlab`
//! would carry the header's bytes only, and Stacked/Tree Borrows forbid reaching blocks from
//! it; a reference alive while the region is rewritten (the SuperSlab cache writes its node
//! over the header) or unmapped is undefined behaviour. So nothing here hands out a reference
//! to the header: the handle's accessors read through the raw pointer.

use core::ptr::NonNull;

use hak_sync::atomic::{AtomicU64, Ordering};

use crate::slab::{Slab, SlabRef};

/// log2 of a slab's size: 64 KiB.
#[cfg(not(hak_loom))]
pub const SLAB_SHIFT: u32 = 16;
/// log2 of a slab's size: 512 KiB under loom, so a SuperSlab has 4 slabs and models stay small.
#[cfg(hak_loom)]
pub const SLAB_SHIFT: u32 = 19;
/// A slab's size in bytes.
pub const SLAB_SIZE: usize = 1 << SLAB_SHIFT;
/// log2 of the default SuperSlab size: 2 MiB.
pub const LG_SUPERSLAB_DEFAULT: u32 = 21;
/// log2 of the smallest SuperSlab supported: 1 MiB.
pub const LG_SUPERSLAB_MIN: u32 = 20;
/// Slabs in the largest SuperSlab (2 MiB / 64 KiB).
pub const MAX_SLABS: usize = 1 << (LG_SUPERSLAB_DEFAULT - SLAB_SHIFT);
/// Bytes of the header reserved for the layer above ([`SsRef::ext`]).
pub const EXT_BYTES: usize = 1024;
/// Identifies a live SuperSlab header ("HAKMEMSS").
pub const MAGIC: u64 = 0x4841_4b4d_454d_5353;

/// The SuperSlab header. Only ever reached through an [`SsRef`].
#[repr(C, align(64))]
#[derive(Debug)]
pub struct SuperSlab {
    /// [`MAGIC`] while formatted.
    magic: AtomicU64,
    /// log2 of the region size.
    lg_size: u32,
    /// Slabs in this SuperSlab (`2^(lg_size - SLAB_SHIFT)`).
    nslabs: u32,
    /// Space owned by the layer above (the shared pool keeps its per-slot states here).
    ext: core::cell::UnsafeCell<[u64; EXT_BYTES / 8]>,
    /// Per-slab metadata; only the first `nslabs` are used.
    slabs: [Slab; MAX_SLABS],
}

#[cfg(not(hak_loom))]
const _: () = assert!(core::mem::size_of::<SuperSlab>() <= 4096, "header fits one 4 KiB page");
#[cfg(not(hak_loom))]
const _: () = assert!(core::mem::size_of::<Slab>() == 64, "one cache line per slab record");

/// A raw handle to a formatted SuperSlab: its base pointer, carrying the mapping's provenance.
///
/// Copying a handle is free and says nothing about whether the region is still mapped: every
/// accessor that reads the header is `unsafe` and asks the caller to know that it is (a live
/// block in it, an ACTIVE slot, the pool lock...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SsRef(NonNull<SuperSlab>);

// SAFETY: a handle is an address with provenance; what it points to is shared memory whose
// fields are atomics or guarded by the protocols documented on them.
unsafe impl Send for SsRef {}
// SAFETY: as above.
unsafe impl Sync for SsRef {}

impl SsRef {
    /// Formats the region at `base` as a SuperSlab of `2^lg_size` bytes (all slabs unassigned,
    /// detached) and returns its handle. Exposes the mapping's provenance, so that
    /// [`SsRef::from_block`] can recover it from any block address.
    ///
    /// # Safety
    /// `base` is the start of a writable region of `2^lg_size` bytes aligned to its size (from
    /// hak-os; the pointer carries the whole mapping's provenance),
    /// `LG_SUPERSLAB_MIN <= lg_size <= LG_SUPERSLAB_DEFAULT`, and no other thread can see the
    /// region yet (publish it afterwards, e.g. by registering it).
    pub unsafe fn init(base: NonNull<u8>, lg_size: u32) -> SsRef {
        hak_sync::check!((LG_SUPERSLAB_MIN..=LG_SUPERSLAB_DEFAULT).contains(&lg_size));
        hak_sync::check!(base.as_ptr() as usize & ((1usize << lg_size) - 1) == 0);
        let _ = base.as_ptr().expose_provenance();
        let ss = base.as_ptr().cast::<SuperSlab>();
        let nslabs = 1u32 << (lg_size - SLAB_SHIFT);
        // SAFETY: the region is ours and large enough; each field is written before use, and
        // only through raw pointers derived from `base`.
        unsafe {
            core::ptr::addr_of_mut!((*ss).magic).write(AtomicU64::new(MAGIC));
            core::ptr::addr_of_mut!((*ss).lg_size).write(lg_size);
            core::ptr::addr_of_mut!((*ss).nslabs).write(nslabs);
            core::ptr::addr_of_mut!((*ss).ext).cast::<u8>().write_bytes(0, EXT_BYTES);
            for i in 0..MAX_SLABS {
                Slab::init(core::ptr::addr_of_mut!((*ss).slabs[i]));
            }
        }
        SsRef(base.cast())
    }

    /// The handle of a region whose base pointer the caller holds (with the mapping's
    /// provenance). Formats nothing.
    ///
    /// # Safety
    /// `base` is the base of a region formatted by [`SsRef::init`] (or about to be read only
    /// for its magic, see [`SsRef::is_valid`]).
    #[inline]
    pub unsafe fn from_base(base: NonNull<u8>) -> SsRef {
        SsRef(base.cast())
    }

    /// The handle of the SuperSlab of `2^lg_size` bytes that contains `block`, found by masking
    /// its address; the pointer gets the mapping's exposed provenance, whatever provenance
    /// `block` had (a user's pointer may carry only its own block's).
    ///
    /// # Safety
    /// `block` lies in a region of that size formatted by [`SsRef::init`] (so its provenance
    /// was exposed), or the caller only reads the magic through the result while the region
    /// is known to be mapped.
    #[inline]
    pub unsafe fn from_block(block: *const u8, lg_size: u32) -> SsRef {
        let base = block.addr() & !((1usize << lg_size) - 1);
        // SAFETY: a formatted SuperSlab's base is never null (addresses below 1 MiB are never
        // mapped by hak-os).
        SsRef(unsafe {
            NonNull::new_unchecked(core::ptr::with_exposed_provenance_mut::<SuperSlab>(base))
        })
    }

    /// The region's first byte, with the mapping's provenance.
    #[inline]
    pub fn base(self) -> NonNull<u8> {
        self.0.cast()
    }

    /// The header as a raw pointer.
    #[inline]
    pub fn as_ptr(self) -> *mut SuperSlab {
        self.0.as_ptr()
    }

    /// Whether the header carries the magic (a stale or foreign region does not).
    ///
    /// # Safety
    /// The region's first page is mapped.
    #[inline]
    pub unsafe fn is_valid(self) -> bool {
        // SAFETY: forwarded; the magic is an atomic at the base.
        unsafe { (*core::ptr::addr_of!((*self.as_ptr()).magic)).load(Ordering::Relaxed) == MAGIC }
    }

    /// Clears the magic, before the region is cached or unmapped.
    ///
    /// # Safety
    /// The region is mapped.
    pub unsafe fn invalidate(self) {
        // SAFETY: forwarded.
        unsafe { (*core::ptr::addr_of!((*self.as_ptr()).magic)).store(0, Ordering::Relaxed) }
    }

    /// log2 of the region size.
    ///
    /// # Safety
    /// The region is formatted and mapped.
    #[inline]
    pub unsafe fn lg_size(self) -> u32 {
        // SAFETY: forwarded; written once by `init`.
        unsafe { core::ptr::addr_of!((*self.as_ptr()).lg_size).read() }
    }

    /// The region size in bytes.
    ///
    /// # Safety
    /// As for [`SsRef::lg_size`].
    #[inline]
    pub unsafe fn size(self) -> usize {
        // SAFETY: forwarded.
        1 << unsafe { self.lg_size() }
    }

    /// Number of slabs.
    ///
    /// # Safety
    /// As for [`SsRef::lg_size`].
    #[inline]
    pub unsafe fn nslabs(self) -> usize {
        // SAFETY: forwarded; written once by `init`.
        unsafe { core::ptr::addr_of!((*self.as_ptr()).nslabs).read() as usize }
    }

    /// Slab `i`'s record (`i < MAX_SLABS`; only the first `nslabs` are used).
    ///
    /// # Safety
    /// The region is formatted and mapped for as long as the result is used.
    #[inline]
    pub unsafe fn slab(self, i: usize) -> SlabRef {
        hak_sync::check!(i < MAX_SLABS);
        let p = self
            .base()
            .as_ptr()
            .wrapping_add(SLABS_OFFSET + i * core::mem::size_of::<Slab>())
            .cast::<Slab>();
        // SAFETY: in bounds of the header, so not null; the pointer keeps the handle's
        // provenance, and the caller vouches that the record is formatted and mapped.
        unsafe { SlabRef::from_raw(NonNull::new_unchecked(p)) }
    }

    /// The index of the slab holding `addr` (which must lie in this SuperSlab).
    #[inline]
    pub fn slab_index_of(self, addr: usize) -> usize {
        (addr - self.0.as_ptr().addr()) >> SLAB_SHIFT
    }

    /// The record of the slab holding `addr` (which must lie in this SuperSlab).
    ///
    /// # Safety
    /// As for [`SsRef::slab`].
    #[inline]
    pub unsafe fn slab_of(self, addr: usize) -> SlabRef {
        // SAFETY: forwarded.
        unsafe { self.slab(self.slab_index_of(addr)) }
    }

    /// The data range `[start, end)` of slab `i`: where its blocks may be carved. Pure address
    /// arithmetic on the handle (no read).
    #[inline]
    pub fn slab_range(self, i: usize) -> (*mut u8, *mut u8) {
        let base = self.0.as_ptr().cast::<u8>();
        let lo = if i == 0 { SuperSlab::data_offset() } else { i << SLAB_SHIFT };
        (base.wrapping_add(lo), base.wrapping_add((i + 1) << SLAB_SHIFT))
    }

    /// The extension area of [`EXT_BYTES`] bytes, 8-byte aligned and zeroed by `init`, owned
    /// by the layer above; this crate never reads or writes it after `init`.
    #[inline]
    pub fn ext(self) -> NonNull<u8> {
        let p = self.base().as_ptr().wrapping_add(core::mem::offset_of!(SuperSlab, ext));
        // SAFETY: an offset inside the region from a non-null base (no read).
        unsafe { NonNull::new_unchecked(p) }
    }
}

impl SuperSlab {
    /// Offset of slab 0's first block: the header rounded up to the page size.
    #[inline]
    pub fn data_offset() -> usize {
        let page = hak_os::page_size();
        (core::mem::size_of::<SuperSlab>() + page - 1) & !(page - 1)
    }
}

// SAFETY: shared fields are atomics; owner-only fields are guarded by the ownership protocol
// documented on `Slab`.
unsafe impl Sync for SuperSlab {}
// SAFETY: as above.
unsafe impl Send for SuperSlab {}

/// Offset of slab record 0 inside the header.
pub(crate) const SLABS_OFFSET: usize = core::mem::offset_of!(SuperSlab, slabs);
