//! [`SuperSlab`]: the header at the base of a SuperSlab region.
//!
//! Layout: `[header | padding to a page][slab 0 data ...][slab 1][slab 2]...`. Slab `i` covers
//! `[base + i*SLAB_SIZE, base + (i+1)*SLAB_SIZE)`; slab 0's data starts at
//! [`SuperSlab::data_offset`] (a page boundary past the header), so blocks of any class keep
//! their natural alignment up to the page size.

use core::ptr::NonNull;

use hak_sync::atomic::{AtomicU64, Ordering};

use crate::slab::Slab;

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
/// Bytes of the header reserved for the layer above ([`SuperSlab::ext`]).
pub const EXT_BYTES: usize = 1024;
/// Identifies a live SuperSlab header ("HAKMEMSS").
pub const MAGIC: u64 = 0x4841_4b4d_454d_5353;

/// The SuperSlab header.
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

impl SuperSlab {
    /// Formats the region at `base` as a SuperSlab of `2^lg_size` bytes (all slabs unassigned,
    /// detached) and returns its header.
    ///
    /// # Safety
    /// `base` is the start of a writable region of `2^lg_size` bytes aligned to its size (from
    /// hak-os), `LG_SUPERSLAB_MIN <= lg_size <= LG_SUPERSLAB_DEFAULT`, and no other thread can
    /// see the region yet (publish it afterwards, e.g. by registering it).
    pub unsafe fn init<'a>(base: NonNull<u8>, lg_size: u32) -> &'a SuperSlab {
        debug_assert!((LG_SUPERSLAB_MIN..=LG_SUPERSLAB_DEFAULT).contains(&lg_size));
        debug_assert_eq!(base.as_ptr() as usize & ((1usize << lg_size) - 1), 0);
        let ss = base.as_ptr().cast::<SuperSlab>();
        let nslabs = 1u32 << (lg_size - SLAB_SHIFT);
        // SAFETY: the region is ours and large enough; each field is written before use.
        unsafe {
            core::ptr::addr_of_mut!((*ss).magic).write(AtomicU64::new(MAGIC));
            core::ptr::addr_of_mut!((*ss).lg_size).write(lg_size);
            core::ptr::addr_of_mut!((*ss).nslabs).write(nslabs);
            core::ptr::addr_of_mut!((*ss).ext).cast::<u8>().write_bytes(0, EXT_BYTES);
            for i in 0..MAX_SLABS {
                Slab::init(core::ptr::addr_of_mut!((*ss).slabs[i]));
            }
            &*ss
        }
    }

    /// The header of the SuperSlab of `2^lg_size` bytes that contains `block` (by masking).
    ///
    /// # Safety
    /// `block` lies in a formatted SuperSlab of that size that stays mapped for `'a`.
    #[inline]
    pub unsafe fn from_block<'a>(block: *const u8, lg_size: u32) -> &'a SuperSlab {
        let base = block as usize & !((1usize << lg_size) - 1);
        // SAFETY: forwarded from the caller.
        unsafe { &*(base as *const SuperSlab) }
    }

    /// Whether the header carries the magic (a stale or foreign region does not).
    #[inline]
    pub fn is_valid(&self) -> bool {
        self.magic.load(Ordering::Relaxed) == MAGIC
    }

    /// Clears the magic, before the region is cached or unmapped.
    pub fn invalidate(&self) {
        self.magic.store(0, Ordering::Relaxed);
    }

    /// The region's first byte.
    #[inline]
    pub fn base(&self) -> NonNull<u8> {
        NonNull::from(self).cast()
    }

    /// log2 of the region size.
    #[inline]
    pub fn lg_size(&self) -> u32 {
        self.lg_size
    }

    /// The region size in bytes.
    #[inline]
    pub fn size(&self) -> usize {
        1 << self.lg_size
    }

    /// Number of slabs.
    #[inline]
    pub fn nslabs(&self) -> usize {
        self.nslabs as usize
    }

    /// Slab `i`'s metadata.
    ///
    /// # Panics
    /// Never in release for `i < nslabs()`; debug builds check the bound.
    #[inline]
    pub fn slab(&self, i: usize) -> &Slab {
        debug_assert!(i < self.nslabs());
        &self.slabs[i]
    }

    /// The index of the slab holding `addr` (which must lie in this SuperSlab).
    #[inline]
    pub fn slab_index_of(&self, addr: *const u8) -> usize {
        (addr as usize - self.base().as_ptr() as usize) >> SLAB_SHIFT
    }

    /// The slab holding `addr` (which must lie in this SuperSlab).
    #[inline]
    pub fn slab_of(&self, addr: *const u8) -> &Slab {
        &self.slabs[self.slab_index_of(addr)]
    }

    /// Offset of slab 0's first block: the header rounded up to the page size.
    #[inline]
    pub fn data_offset() -> usize {
        let page = hak_os::page_size();
        (core::mem::size_of::<SuperSlab>() + page - 1) & !(page - 1)
    }

    /// The data range `[start, end)` of slab `i`: where its blocks may be carved.
    #[inline]
    pub fn slab_range(&self, i: usize) -> (*mut u8, *mut u8) {
        let base = self.base().as_ptr();
        let lo = if i == 0 { Self::data_offset() } else { i << SLAB_SHIFT };
        // SAFETY: both offsets are within the region.
        unsafe { (base.add(lo), base.add((i + 1) << SLAB_SHIFT)) }
    }

    /// The extension area of [`EXT_BYTES`] bytes, 8-byte aligned and zeroed by `init`, owned
    /// by the layer above; this crate never reads or writes it after `init`.
    #[inline]
    pub fn ext(&self) -> NonNull<u8> {
        // SAFETY: UnsafeCell::get never returns null.
        unsafe { NonNull::new_unchecked(self.ext.get().cast()) }
    }
}

// SAFETY: shared fields are atomics; owner-only fields are guarded by the ownership protocol
// documented on `Slab`.
unsafe impl Sync for SuperSlab {}
// SAFETY: as above.
unsafe impl Send for SuperSlab {}
// SAFETY: as above.
unsafe impl Sync for Slab {}
// SAFETY: as above.
unsafe impl Send for Slab {}
