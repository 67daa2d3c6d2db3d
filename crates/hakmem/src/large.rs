//! Requests above the tiny tier. Big ones (above 1 MiB, or aligned beyond a page) go to
//! hak-bigcache. Mid ones (48 KiB .. 1 MiB) go there too until hak-l25 serves them: its cache
//! of freed mappings makes their steady state syscall-free, at the price of a header page per
//! block. Frees dispatch on the registry's record of who owns the address, not on the layout,
//! so a block always goes back to the tier that made it.

use core::alloc::Layout;
use core::ptr::{self, NonNull};

use hak_bigcache::{BigCache, BigLimits};
use hak_registry::OwnerKind;
use hak_sync::stat::StatCounter;

use crate::global::{ensure_init, REGISTRY};

/// Largest request the mid tier serves.
pub(crate) const MID_MAX: usize = 1 << 20;

pub(crate) static BIG: BigCache<'static> = BigCache::new(&REGISTRY, BigLimits::DEFAULT);

pub(crate) static MID_ALLOCS: StatCounter = StatCounter::new();
pub(crate) static MID_FREES: StatCounter = StatCounter::new();

#[inline]
fn is_big(size: usize, align: usize) -> bool {
    size > MID_MAX || align > hak_os::page_size()
}

/// A block for `layout` above the tiny tier; zero-filled if `zeroed` (fresh mappings are
/// already zero, so only reused big blocks are cleared).
#[cold]
pub(crate) fn alloc(layout: Layout, zeroed: bool) -> *mut u8 {
    ensure_init();
    if is_big(layout.size(), layout.align()) {
        return match BIG.alloc(layout.size(), layout.align()) {
            Some((p, known_zero)) => {
                if zeroed && !known_zero {
                    // SAFETY: the block has at least `size` bytes.
                    unsafe { p.as_ptr().write_bytes(0, layout.size()) };
                }
                p.as_ptr()
            }
            None => ptr::null_mut(),
        };
    }
    MID_ALLOCS.add(1);
    match BIG.alloc(layout.size(), layout.align()) {
        Some((p, known_zero)) => {
            if zeroed && !known_zero {
                // SAFETY: the block has at least `size` bytes.
                unsafe { p.as_ptr().write_bytes(0, layout.size()) };
            }
            p.as_ptr()
        }
        None => ptr::null_mut(),
    }
}

/// Frees a block above the tiny tier.
///
/// # Safety
/// `ptr` came from [`alloc`] (or [`realloc`]) with `layout` and is live.
#[cold]
pub(crate) unsafe fn dealloc(ptr: *mut u8, layout: Layout) {
    let Some(p) = NonNull::new(ptr) else { return };
    if !is_big(layout.size(), layout.align()) {
        MID_FREES.add(1);
    }
    match REGISTRY.lookup(ptr as usize) {
        Some(o) if o.kind == OwnerKind::Big => {
            // SAFETY: forwarded; the big tier checks its header and refuses bad pointers.
            if unsafe { BIG.dealloc(p) }.is_err() {
                hak_os::write_stderr(b"hakmem: invalid or double free of a big block; ignored\n");
            }
        }
        _ => {
            hak_os::write_stderr(
                b"hakmem: dealloc of a pointer that is not a live hakmem block; ignored\n",
            );
        }
    }
}

/// Resizes in place when the block stays in the big tier (`mremap` or the mapping's slack);
/// `None` when the caller must move it (different tier, or the big tier could not).
///
/// # Safety
/// `ptr` is a live block above the tiny tier allocated with `layout`.
pub(crate) unsafe fn realloc_in_tier(
    ptr: *mut u8,
    layout: Layout,
    new_size: usize,
) -> Option<*mut u8> {
    if is_big(layout.size(), layout.align()) != is_big(new_size, layout.align()) {
        return None;
    }
    let p = NonNull::new(ptr)?;
    if REGISTRY.lookup(ptr as usize)?.kind != OwnerKind::Big {
        return None;
    }
    // SAFETY: forwarded: a live big block.
    unsafe { BIG.realloc(p, new_size) }.map(NonNull::as_ptr)
}
