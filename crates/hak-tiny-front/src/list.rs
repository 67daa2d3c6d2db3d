//! [`SlabList`]: an owner's list of the slabs it owns, a `hak_collections::List` linked through
//! the owner-only links of each slab record ([`SlabRef::owner_links`]), with a tag in the
//! record saying which list a slab is on. Owner-only: no synchronisation.

use core::ptr::NonNull;

use hak_collections::{Adapter, Links, List};
use hak_superslab::{Slab, SlabRef};

/// Tag of a slab on no list of this cache.
pub(crate) const ON_NONE: u8 = 0;
/// Tag of a slab on a class's list of slabs with free blocks.
pub(crate) const ON_AVAIL: u8 = 1;
/// Tag of a slab on a class's list of full slabs.
pub(crate) const ON_FULL: u8 = 2;
/// Tag of a slab on a class's list of slabs with no block in use.
pub(crate) const ON_EMPTY: u8 = 3;

/// The owner's view of a slab record: its owner-only links.
pub(crate) struct Owned;

// SAFETY: `owner_links` derives the pointer from the record pointer (the mapping's
// provenance), one per record, without reading it; listed slabs are ours and mapped (every
// `SlabList` method's contract).
unsafe impl Adapter for Owned {
    type Node = *mut Slab;
    #[inline]
    unsafe fn links(n: *mut Slab) -> *mut Links<*mut Slab> {
        // SAFETY: `n` is a listed (non-null) record of a mapped SuperSlab (trait contract).
        unsafe { slab(n).owner_links() }
    }
}

/// The handle of a listed record.
#[inline]
fn slab(n: *mut Slab) -> SlabRef {
    // SAFETY: only non-null record pointers of formatted SuperSlabs are listed.
    unsafe { SlabRef::from_raw(NonNull::new_unchecked(n)) }
}

#[derive(Debug)]
pub(crate) struct SlabList {
    list: List<Owned>,
    tag: u8,
}

impl SlabList {
    pub(crate) const fn new(tag: u8) -> SlabList {
        SlabList { list: List::new(), tag }
    }

    /// The front slab.
    #[inline]
    pub(crate) fn head(&self) -> Option<SlabRef> {
        self.list.head().map(slab)
    }

    /// Slabs on the list.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// The slab after `s`.
    ///
    /// # Safety
    /// The caller owns every listed slab, and `s` is on this list.
    #[inline]
    pub(crate) unsafe fn next(&self, s: SlabRef) -> Option<SlabRef> {
        // SAFETY: forwarded.
        unsafe { self.list.next(s.as_ptr()) }.map(slab)
    }

    /// Pushes `s` at the front.
    ///
    /// # Safety
    /// The caller owns `s` and every listed slab, and `s` is on no list.
    pub(crate) unsafe fn push_front(&mut self, s: SlabRef) {
        // SAFETY: owner-only state of slabs we own.
        unsafe {
            hak_sync::check!(s.tag() == ON_NONE, "slab already on a list");
            s.set_tag(self.tag);
            self.list.push_front(s.as_ptr());
        }
    }

    /// Unlinks `s`.
    ///
    /// # Safety
    /// The caller owns `s` and every listed slab, and `s` is on this list.
    pub(crate) unsafe fn remove(&mut self, s: SlabRef) {
        // SAFETY: owner-only state of slabs we own.
        unsafe {
            hak_sync::check!(s.tag() == self.tag, "slab on another list");
            self.list.remove(s.as_ptr());
            s.set_tag(ON_NONE);
        }
    }

    /// Pops the front slab.
    ///
    /// # Safety
    /// As for [`SlabList::remove`].
    pub(crate) unsafe fn pop_front(&mut self) -> Option<SlabRef> {
        let s = self.head()?;
        // SAFETY: forwarded; `s` is on this list.
        unsafe { self.remove(s) };
        Some(s)
    }

    /// Pops the back (oldest pushed) slab.
    ///
    /// # Safety
    /// As for [`SlabList::remove`].
    pub(crate) unsafe fn pop_back(&mut self) -> Option<SlabRef> {
        let s = self.list.tail().map(slab)?;
        // SAFETY: forwarded; `s` is on this list.
        unsafe { self.remove(s) };
        Some(s)
    }
}
