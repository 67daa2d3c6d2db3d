//! Requests above the tiny tier: each is its own hak-os mapping, unmapped on free. Correct and
//! uncached; the mid (hak-l25) and big (hak-bigcache) tiers take these sizes over.

use core::alloc::Layout;
use core::ptr::{self, NonNull};

use hak_sync::stat::StatCounter;

use crate::global::OS;

pub(crate) static ALLOCS: StatCounter = StatCounter::new();
pub(crate) static FREES: StatCounter = StatCounter::new();

fn span(size: usize) -> Option<usize> {
    let p = hak_os::page_size();
    size.max(1).checked_add(p - 1).map(|s| s & !(p - 1))
}

/// Maps a block for `layout`; fresh mappings are zero, so `zeroed` costs nothing.
pub(crate) fn alloc(layout: Layout) -> *mut u8 {
    let Some(len) = span(layout.size()) else { return ptr::null_mut() };
    match OS.map(len, layout.align()) {
        Ok(p) => {
            ALLOCS.add(1);
            p.as_ptr()
        }
        Err(_) => ptr::null_mut(),
    }
}

/// # Safety
/// `ptr` came from [`alloc`] with `layout`.
pub(crate) unsafe fn dealloc(ptr: *mut u8, layout: Layout) {
    if let (Some(p), Some(len)) = (NonNull::new(ptr), span(layout.size())) {
        FREES.add(1);
        // SAFETY: forwarded: the block is the whole mapping of `len` bytes.
        let _ = unsafe { OS.unmap(p, len) };
    }
}
