//! [`Inbox`]: where remote freers deliver an owner's full slabs that got blocks back.
//!
//! One per owner (a thread cache embeds it; its address is the owner's identity written into
//! the slabs it owns, so it must not move while it owns any). A multi-producer stack of slab
//! records linked through their `inbox_next` words: a deliverer pushes with one
//! compare-exchange, the owner takes the whole stack with one swap. No ABA: nobody pops single
//! nodes, and a slab is pushed at most once per arming (see the `slab` module).

use core::ptr::{self, NonNull};

use hak_sync::atomic::{AtomicPtr, Ordering};

use crate::slab::{Slab, SlabRef};

/// An owner's inbox of delivered full slabs. See the module docs.
#[derive(Debug)]
#[repr(C)]
pub struct Inbox {
    head: AtomicPtr<Slab>,
}

impl Default for Inbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Inbox {
    hak_sync::maybe_const_fn! {
        /// An empty inbox.
        pub fn new() -> Inbox {
            Inbox { head: AtomicPtr::new(ptr::null_mut()) }
        }
    }

    /// Pushes a delivered slab.
    ///
    /// # Safety
    /// The caller consumed the slab's `FULL` flag (so it alone delivers it), and the slab is in
    /// no inbox.
    pub(crate) unsafe fn push(&self, s: SlabRef) {
        let mut h = self.head.load(Ordering::Relaxed);
        loop {
            s.set_inbox_next(h);
            match self.head.compare_exchange_weak(
                h,
                s.as_ptr(),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => h = now,
            }
        }
    }

    /// Whether anything is waiting (a hint: a delivery may land right after).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.head.load(Ordering::Relaxed).is_null()
    }

    /// Takes every delivered slab (owner only).
    pub fn take(&self) -> InboxSlabs {
        if self.is_empty() {
            return InboxSlabs { next: ptr::null_mut() };
        }
        InboxSlabs { next: self.head.swap(ptr::null_mut(), Ordering::Acquire) }
    }
}

/// The slabs taken from an [`Inbox`], most recent first.
#[derive(Debug)]
pub struct InboxSlabs {
    next: *mut Slab,
}

impl Iterator for InboxSlabs {
    type Item = SlabRef;
    fn next(&mut self) -> Option<SlabRef> {
        let s = NonNull::new(self.next)?;
        // SAFETY: delivered slabs are records of live SuperSlabs (their owner has not given
        // them up yet: it drains its inbox before it does).
        let s = unsafe { SlabRef::from_raw(s) };
        self.next = s.inbox_next();
        Some(s)
    }
}
