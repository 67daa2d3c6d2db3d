//! The pool's bookkeeping inside each SuperSlab header ([`PoolExt`], in the extension area),
//! slot references, and the adapters that string slots and SuperSlabs on
//! `hak_collections::List`s through links kept in [`PoolExt`]. Everything here is touched only
//! under the pool lock.
//!
//! A slot reference ([`Slot`]) is the SuperSlab's base pointer with the slab index in its low
//! bits (bases are at least 1 MiB-aligned), set with `map_addr` so the pointer keeps the
//! mapping's provenance; list links are stored as such pointers, never as integers. The
//! adapters derive every link pointer from the handle (no reference into the header).

use core::ptr::{self, NonNull};

use hak_collections::{Adapter, Handle, Links, List};
use hak_superslab::{SlabRef, SsRef, SuperSlab, EXT_BYTES, MAX_SLABS};

/// Slot states.
pub(crate) const UNUSED: u8 = 0;
pub(crate) const ACTIVE: u8 = 1;
pub(crate) const EMPTY: u8 = 2;
/// Taken off the lists by a purge while its pages are decommitted outside the lock; counted in
/// `active` so that its SuperSlab is not cached meanwhile.
pub(crate) const PURGING: u8 = 3;

const IDX_MASK: usize = MAX_SLABS - 1;

/// A slot: SuperSlab base | slab index, as a pointer (null is "none").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Slot(*mut u8);

impl Slot {
    pub(crate) const NONE: Slot = Slot(ptr::null_mut());

    #[inline]
    pub(crate) fn new(ss: SsRef, i: usize) -> Slot {
        Slot(ss.base().as_ptr().map_addr(|a| a | i))
    }

    #[inline]
    pub(crate) fn of(slab: SlabRef) -> Slot {
        Slot::new(slab.superslab(), slab.index())
    }

    #[inline]
    pub(crate) fn ss(self) -> SsRef {
        // SAFETY: a slot is only built from a formatted SuperSlab's base (non-null).
        unsafe { SsRef::from_base(NonNull::new_unchecked(self.0.map_addr(|a| a & !IDX_MASK))) }
    }

    #[inline]
    pub(crate) fn index(self) -> usize {
        self.0.addr() & IDX_MASK
    }

    /// The slot's slab record.
    ///
    /// # Safety
    /// The SuperSlab is mapped.
    #[inline]
    pub(crate) unsafe fn slab(self) -> SlabRef {
        // SAFETY: forwarded.
        unsafe { self.ss().slab(self.index()) }
    }
}

impl Handle for Slot {
    const NONE: Slot = Slot::NONE;
}

/// The pool's bookkeeping inside a SuperSlab header. Only touched under the pool lock.
#[repr(C)]
pub(crate) struct PoolExt {
    pub(crate) state: [u8; MAX_SLABS],
    pub(crate) class: [u8; MAX_SLABS],
    /// Links of the EMPTY or abandoned list the slot is on ([`SlotLinks`]).
    links: [Links<Slot>; MAX_SLABS],
    /// When the newest dirty slot became EMPTY, in wrapping milliseconds of the monotonic
    /// clock (the dirty list is ordered by it).
    pub(crate) dirty_ms: u32,
    /// Bit `i` set: slot `i` is UNUSED.
    pub(crate) unused_mask: u64,
    /// Bit `c` set: an ACTIVE slot serves class `c` (a hint for class affinity).
    pub(crate) class_mask: u64,
    /// Bit `i` set: slot `i` is EMPTY and its pages are still committed (a purge candidate).
    pub(crate) dirty_mask: u64,
    /// ACTIVE (and PURGING) slots.
    pub(crate) active: u32,
    /// Links in the SuperSlab lists ([`SsLinks`]), indexed by [`ON_UNUSED`], [`ON_ALL`] and
    /// [`ON_DIRTY`].
    ss_links: [Links<*mut SuperSlab>; 3],
}

const _: () = assert!(core::mem::size_of::<PoolExt>() <= EXT_BYTES);
const _: () = assert!(MAX_SLABS <= 64);

/// The extension area of `ss`, formatted by the pool.
///
/// # Safety
/// `ss` is a mapped SuperSlab of the pool, the pool lock is held, and no other borrow of this
/// area is alive (each access borrows it afresh and briefly).
#[allow(clippy::mut_from_ref)]
#[inline]
pub(crate) unsafe fn ext<'x>(ss: SsRef) -> &'x mut PoolExt {
    // SAFETY: the extension area is ours, aligned and large enough (checked above); the
    // pointer carries the mapping's provenance; the lock serialises every access.
    unsafe { &mut *ext_ptr(ss) }
}

/// The extension area of `ss` as a raw pointer with the mapping's provenance (no read).
#[inline]
fn ext_ptr(ss: SsRef) -> *mut PoolExt {
    ss.ext().as_ptr().cast::<PoolExt>()
}

/// The slot lists (EMPTY and abandoned, per class): slots linked through
/// [`PoolExt`]`::links`.
pub(crate) struct SlotLinks;

// SAFETY: the pointer is derived from the slot's base pointer (the mapping's provenance) by
// address arithmetic; each slot has its own array entry (`index() < MAX_SLABS`); no reference
// is made. Callers of the list's unsafe methods hold the pool lock with every listed slot's
// SuperSlab mapped, and no borrow from `ext` alive across the call.
unsafe impl Adapter for SlotLinks {
    type Node = Slot;
    #[inline]
    unsafe fn links(s: Slot) -> *mut Links<Slot> {
        // SAFETY: in bounds of the extension area (see above); no read.
        unsafe { &raw mut (*ext_ptr(s.ss())).links[s.index()] }
    }
}

/// A list of slots.
pub(crate) type SlotList = List<SlotLinks>;

/// Index of the links in the list of SuperSlabs with UNUSED slots.
pub(crate) const ON_UNUSED: usize = 0;
/// Index of the links in the list of every SuperSlab the pool holds (for `Drop`).
pub(crate) const ON_ALL: usize = 1;
/// Index of the links in the list of SuperSlabs with dirty EMPTY slots, ordered by `dirty_ms`
/// (a SuperSlab moves to the tail whenever one of its slots becomes EMPTY).
pub(crate) const ON_DIRTY: usize = 2;

/// One of the SuperSlab lists: SuperSlabs linked through [`PoolExt`]`::ss_links[L]`, handled
/// as header pointers (null is none).
pub(crate) struct SsLinks<const L: usize>;

// SAFETY: as for `SlotLinks`; `L` is one of the three indices (checked at compile time), so
// each list has its own links.
unsafe impl<const L: usize> Adapter for SsLinks<L> {
    type Node = *mut SuperSlab;
    #[inline]
    unsafe fn links(p: *mut SuperSlab) -> *mut Links<*mut SuperSlab> {
        const { assert!(L < 3) };
        // SAFETY: in bounds of the extension area; no read.
        unsafe { &raw mut (*ext_ptr(ss(p))).ss_links[L] }
    }
}

/// A list of SuperSlabs.
pub(crate) type SsList<const L: usize> = List<SsLinks<L>>;

/// The handle of a listed SuperSlab.
#[inline]
pub(crate) fn ss(p: *mut SuperSlab) -> SsRef {
    // SAFETY: only listed (non-null, formatted) SuperSlab headers are passed here.
    unsafe { SsRef::from_base(NonNull::new_unchecked(p.cast())) }
}
