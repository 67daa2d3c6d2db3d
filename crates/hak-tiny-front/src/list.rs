//! [`SlabList`]: an owner's intrusive doubly-linked list of the slabs it owns, linked through
//! the owner-only links of each slab record (`SlabRef::links`), with a tag saying which list a
//! slab is on. Owner-only: no synchronisation.

use hak_superslab::{OwnerLinks, SlabRef};

/// Tag of a slab on no list of this cache.
pub(crate) const ON_NONE: u8 = 0;
/// Tag of a slab on a class's list of slabs with free blocks.
pub(crate) const ON_AVAIL: u8 = 1;
/// Tag of a slab on a class's list of full slabs.
pub(crate) const ON_FULL: u8 = 2;
/// Tag of a slab on a class's list of slabs with no block in use.
pub(crate) const ON_EMPTY: u8 = 3;

#[derive(Clone, Copy, Debug)]
pub(crate) struct SlabList {
    pub(crate) head: Option<SlabRef>,
    pub(crate) tail: Option<SlabRef>,
    pub(crate) len: u32,
    tag: u8,
}

impl SlabList {
    pub(crate) const fn new(tag: u8) -> SlabList {
        SlabList { head: None, tail: None, len: 0, tag }
    }

    /// Pushes `s` at the front.
    ///
    /// # Safety
    /// The caller owns `s` and every listed slab, and `s` is on no list.
    pub(crate) unsafe fn push_front(&mut self, s: SlabRef) {
        // SAFETY: owner-only links of slabs we own.
        unsafe {
            hak_sync::check!(s.links().tag == ON_NONE, "slab already on a list");
            s.set_links(OwnerLinks { next: self.head, prev: None, tag: self.tag });
            match self.head {
                Some(h) => {
                    let mut l = h.links();
                    l.prev = Some(s);
                    h.set_links(l);
                }
                None => self.tail = Some(s),
            }
        }
        self.head = Some(s);
        self.len += 1;
    }

    /// Unlinks `s`.
    ///
    /// # Safety
    /// The caller owns `s` and every listed slab, and `s` is on this list.
    pub(crate) unsafe fn remove(&mut self, s: SlabRef) {
        // SAFETY: owner-only links of slabs we own.
        unsafe {
            let l = s.links();
            hak_sync::check!(l.tag == self.tag, "slab on another list");
            match l.prev {
                Some(p) => {
                    let mut pl = p.links();
                    pl.next = l.next;
                    p.set_links(pl);
                }
                None => self.head = l.next,
            }
            match l.next {
                Some(n) => {
                    let mut nl = n.links();
                    nl.prev = l.prev;
                    n.set_links(nl);
                }
                None => self.tail = l.prev,
            }
            s.set_links(OwnerLinks { next: None, prev: None, tag: ON_NONE });
        }
        self.len -= 1;
    }

    /// Pops the front slab.
    ///
    /// # Safety
    /// As for [`SlabList::remove`].
    pub(crate) unsafe fn pop_front(&mut self) -> Option<SlabRef> {
        let s = self.head?;
        // SAFETY: forwarded; `s` is on this list.
        unsafe { self.remove(s) };
        Some(s)
    }
}

impl SlabList {
    /// Pops the back (oldest pushed) slab.
    ///
    /// # Safety
    /// As for [`SlabList::remove`].
    pub(crate) unsafe fn pop_back(&mut self) -> Option<SlabRef> {
        let s = self.tail?;
        // SAFETY: forwarded; `s` is on this list.
        unsafe { self.remove(s) };
        Some(s)
    }
}
