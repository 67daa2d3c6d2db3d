//! The pool's bookkeeping inside each SuperSlab header ([`PoolExt`], in the extension area),
//! slot references, and the intrusive lists built from them. Everything here is touched only
//! under the pool lock.
//!
//! A slot reference ([`Slot`]) is the SuperSlab's base pointer with the slab index in its low
//! bits (bases are at least 1 MiB-aligned), set with `map_addr` so the pointer keeps the
//! mapping's provenance; list links are stored as such pointers, never as integers.

use core::ptr::{self, NonNull};

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
    pub(crate) fn is_none(self) -> bool {
        self.0.is_null()
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

/// Links of a SuperSlab in one of the pool's SuperSlab lists.
#[repr(C)]
pub(crate) struct SsLinks {
    pub(crate) next: *mut SuperSlab,
    pub(crate) prev: *mut SuperSlab,
}

/// The pool's bookkeeping inside a SuperSlab header. Only touched under the pool lock.
#[repr(C)]
pub(crate) struct PoolExt {
    pub(crate) state: [u8; MAX_SLABS],
    pub(crate) class: [u8; MAX_SLABS],
    /// Links of the EMPTY or abandoned list the slot is on.
    pub(crate) next: [Slot; MAX_SLABS],
    pub(crate) prev: [Slot; MAX_SLABS],
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
    /// Links in the list of SuperSlabs with UNUSED slots.
    pub(crate) unused: SsLinks,
    /// Links in the list of every SuperSlab the pool holds (for `Drop`).
    pub(crate) all: SsLinks,
    /// Links in the list of SuperSlabs with dirty EMPTY slots, ordered by `dirty_ms` (a
    /// SuperSlab moves to the tail whenever one of its slots becomes EMPTY).
    pub(crate) dirty: SsLinks,
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
    unsafe { &mut *ss.ext().as_ptr().cast::<PoolExt>() }
}

/// An intrusive doubly-linked list of slots (links in [`PoolExt::next`]/`prev`).
#[derive(Clone, Copy)]
pub(crate) struct SlotList {
    pub(crate) head: Slot,
}

impl SlotList {
    pub(crate) const EMPTY: SlotList = SlotList { head: Slot::NONE };

    /// # Safety
    /// Pool lock held; `s` is on no list; listed slots' SuperSlabs are mapped.
    pub(crate) unsafe fn push(&mut self, s: Slot) {
        // SAFETY: forwarded; each access borrows an extension area briefly.
        unsafe {
            {
                let e = ext(s.ss());
                e.next[s.index()] = self.head;
                e.prev[s.index()] = Slot::NONE;
            }
            if !self.head.is_none() {
                ext(self.head.ss()).prev[self.head.index()] = s;
            }
        }
        self.head = s;
    }

    /// # Safety
    /// Pool lock held; `s` is on this list.
    pub(crate) unsafe fn remove(&mut self, s: Slot) {
        // SAFETY: forwarded.
        unsafe {
            let (n, p) = {
                let e = ext(s.ss());
                (e.next[s.index()], e.prev[s.index()])
            };
            if p.is_none() {
                self.head = n;
            } else {
                ext(p.ss()).next[p.index()] = n;
            }
            if !n.is_none() {
                ext(n.ss()).prev[n.index()] = p;
            }
        }
    }

    /// # Safety
    /// Pool lock held.
    pub(crate) unsafe fn pop(&mut self) -> Option<Slot> {
        let s = self.head;
        if s.is_none() {
            return None;
        }
        // SAFETY: forwarded; `s` is the head.
        unsafe { self.remove(s) };
        Some(s)
    }
}

/// Which SuperSlab list an operation is about.
#[derive(Clone, Copy)]
pub(crate) enum SsList {
    Unused,
    All,
    Dirty,
}

/// Head and tail of a SuperSlab list (tail kept for the FIFO dirty list).
#[derive(Clone, Copy)]
pub(crate) struct SsHead {
    pub(crate) head: *mut SuperSlab,
    pub(crate) tail: *mut SuperSlab,
}

impl SsHead {
    pub(crate) const EMPTY: SsHead = SsHead { head: ptr::null_mut(), tail: ptr::null_mut() };
}

impl SsList {
    fn links(self, e: &mut PoolExt) -> &mut SsLinks {
        match self {
            SsList::Unused => &mut e.unused,
            SsList::All => &mut e.all,
            SsList::Dirty => &mut e.dirty,
        }
    }

    /// Appends `ss` at the tail.
    ///
    /// # Safety
    /// Pool lock held; `ss` is a mapped pool SuperSlab on no list `self`; `h` is this list.
    pub(crate) unsafe fn push_back(self, h: &mut SsHead, ss: SsRef) {
        let p = ss.as_ptr();
        // SAFETY: forwarded; each access borrows an extension area briefly.
        unsafe {
            {
                let l = self.links(ext(ss));
                l.next = ptr::null_mut();
                l.prev = h.tail;
            }
            match NonNull::new(h.tail) {
                Some(t) => self.links(ext(SsRef::from_base(t.cast()))).next = p,
                None => h.head = p,
            }
        }
        h.tail = p;
    }

    /// Unlinks `ss`.
    ///
    /// # Safety
    /// Pool lock held; `ss` is on list `self` whose head is `h`.
    pub(crate) unsafe fn unlink(self, h: &mut SsHead, ss: SsRef) {
        // SAFETY: forwarded; neighbours are listed, mapped SuperSlabs.
        unsafe {
            let (n, p) = {
                let l = self.links(ext(ss));
                let np = (l.next, l.prev);
                l.next = ptr::null_mut();
                l.prev = ptr::null_mut();
                np
            };
            match NonNull::new(p) {
                Some(p) => self.links(ext(SsRef::from_base(p.cast()))).next = n,
                None => h.head = n,
            }
            match NonNull::new(n) {
                Some(n) => self.links(ext(SsRef::from_base(n.cast()))).prev = p,
                None => h.tail = p,
            }
        }
    }

    /// The SuperSlab after `ss` on this list.
    ///
    /// # Safety
    /// Pool lock held; `ss` is on list `self`.
    pub(crate) unsafe fn next(self, ss: SsRef) -> Option<SsRef> {
        // SAFETY: forwarded.
        let n = unsafe { self.links(ext(ss)).next };
        // SAFETY: listed SuperSlabs are formatted and mapped.
        NonNull::new(n).map(|n| unsafe { SsRef::from_base(n.cast()) })
    }
}

/// The first SuperSlab of a list.
pub(crate) fn first(h: &SsHead) -> Option<SsRef> {
    // SAFETY: listed SuperSlabs are formatted and mapped.
    NonNull::new(h.head).map(|n| unsafe { SsRef::from_base(n.cast()) })
}
