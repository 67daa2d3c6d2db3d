//! Requests above the tiny tier. Mid ones (up to 1 MiB, aligned at most 4 KiB) go to hak-l25
//! through the calling thread's mid cache; big ones (above 1 MiB, or aligned beyond what the
//! mid tier serves) go to hak-bigcache, one mapping each. Zeroed requests of
//! [`ZEROED_BIG_MIN`] and more also go to the big tier, because a fresh mapping is known to be
//! zero: `calloc`-style buffers then cost no memset and commit only the pages the program
//! touches. Frees dispatch on the registry's record of who owns the address, not on the
//! layout, so a block always goes back to the tier that made it. A block that `realloc` grows
//! past the tiny tier or out of its mid class, to [`GROW_TO_BIG_MIN`] or more, moves to the
//! big tier into a mapping with room to grow (copied once), where later growth happens in place
//! or by moving pages instead of a copy at every mid size class.

use core::alloc::Layout;
use core::ptr::{self, NonNull};

use hak_bigcache::{BigCache, BigLimits};
use hak_l25::{Mid, MidThreadCache};
use hak_registry::OwnerKind;

use crate::global::{ensure_init, REGISTRY};
use crate::thread::{self, ThreadState};

pub(crate) static BIG: BigCache<'static> = BigCache::new(&REGISTRY, BigLimits::DEFAULT);
pub(crate) static MID: Mid<'static> = Mid::new(&REGISTRY);

/// Zeroed requests at least this large go to the big tier (see the module docs).
pub(crate) const ZEROED_BIG_MIN: usize = 256 << 10;

#[inline]
fn is_mid(size: usize, align: usize) -> bool {
    hak_l25::can_serve(size, align)
}

/// The calling thread's real state, built on first use; null if the OS refused memory.
#[inline]
fn active_state() -> *mut ThreadState {
    let ts = thread::current();
    // SAFETY: the calling thread's state or the sentinel; `is_active` only reads.
    if unsafe { (*ts).tc.is_active() } {
        ts
    } else {
        thread::current_or_init()
    }
}

/// A block for `layout` above the tiny tier; zero-filled if `zeroed` (fresh mappings are
/// already zero, so only reused big blocks are cleared).
#[cold]
pub(crate) fn alloc(layout: Layout, zeroed: bool) -> *mut u8 {
    ensure_init();
    crate::decay::tick();
    let (size, align) = (layout.size(), layout.align());
    if is_mid(size, align) && !(zeroed && size >= ZEROED_BIG_MIN) {
        let ts = active_state();
        if !ts.is_null() {
            // SAFETY: the calling thread's own, active state.
            let Some(p) = MID.alloc(unsafe { &mut (*ts).mid }, size, align) else {
                return ptr::null_mut();
            };
            if zeroed {
                // SAFETY: the block has at least `size` bytes.
                unsafe { p.as_ptr().write_bytes(0, size) };
            }
            return p.as_ptr();
        }
        // No thread state (the OS refused a few pages): the big tier needs none.
    }
    match BIG.alloc(size, align) {
        Some((p, known_zero)) => {
            if zeroed && !known_zero {
                // SAFETY: the block has at least `size` bytes.
                unsafe { p.as_ptr().write_bytes(0, size) };
            }
            p.as_ptr()
        }
        None => ptr::null_mut(),
    }
}

/// Frees a block above the tiny tier.
///
/// # Safety
/// `ptr` came from [`alloc`] (or [`realloc_in_tier`]) with `layout` and is live.
#[cold]
pub(crate) unsafe fn dealloc(ptr: *mut u8, layout: Layout) {
    let Some(p) = NonNull::new(ptr) else { return };
    crate::decay::tick();
    match REGISTRY.lookup(ptr as usize).map(|o| o.kind) {
        // SAFETY: forwarded.
        Some(OwnerKind::Mid) => unsafe { mid_dealloc(p, layout) },
        Some(OwnerKind::Big) => {
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

/// # Safety
/// `p` lies in a registered mid chunk and, by the caller's contract, is a live block allocated
/// with `layout`.
unsafe fn mid_dealloc(p: NonNull<u8>, layout: Layout) {
    let (size, align) = (layout.size(), layout.align());
    // A layout of another class would put the block on the wrong free list, which later hands
    // out too few bytes: refuse it. `usable_size` is `None` for a pointer into a block's
    // middle, so those are refused too. A second free of the same block is not detected.
    // SAFETY: `p` is in a mid chunk and live (contract).
    let usable = unsafe { MID.usable_size(p) };
    if usable.is_none() || usable != hak_l25::block_size(size, align) {
        hak_os::write_stderr(
            b"hakmem: dealloc of a mid block with a layout it was not allocated with; ignored\n",
        );
        return;
    }
    let ts = thread::current();
    // SAFETY: the calling thread's own state (or the inactive sentinel, whose mid cache is
    // never touched); `p` is a live mid block of this class.
    unsafe {
        if (*ts).tc.is_active() {
            MID.dealloc(&mut (*ts).mid, p, size, align);
        } else {
            // A thread being torn down: go through a cache that lives for this call only. Each
            // such free takes the central lock; rare enough (frees after a thread's state is
            // gone) that no per-thread state is rebuilt for it.
            let mut tc = MidThreadCache::new();
            MID.dealloc(&mut tc, p, size, align);
            MID.flush_thread(&mut tc);
        }
    }
}

/// Blocks that `realloc` grows to at least this many bytes out of the tiny tier, or out of a
/// mid size class, move to the big tier into a mapping with room to grow (64 KiB, so every
/// growth past the tiny tier): a block that keeps growing, as `Vec` and `String` do, is then
/// copied once, at that step, and grows in place or by `mremap` from there on, where the mid
/// tier would copy it at every size class. The cost is a mapping per such block (its pages
/// are committed only as written, and freed ones are cached for the next growing block).
pub(crate) const GROW_TO_BIG_MIN: usize = 64 << 10;

/// A block for a tiny block that `realloc` grows past the tiny tier (`layout` is the new one):
/// from [`GROW_TO_BIG_MIN`] on a big block with room to grow
/// ([`BigCache::alloc_growing`](hak_bigcache::BigCache::alloc_growing)), else (or if the OS
/// refuses) what [`alloc`] gives. Null on failure. The caller copies and frees the old block.
pub(crate) fn alloc_for_growth(layout: Layout) -> *mut u8 {
    ensure_init();
    if layout.size() >= GROW_TO_BIG_MIN {
        crate::decay::tick();
        if let Some((p, _)) = BIG.alloc_growing(layout.size(), layout.align()) {
            return p.as_ptr();
        }
    }
    alloc(layout, false)
}

/// Resizes a block above the tiny tier, within its tier when it can: a big block in its
/// mapping, its reserve or by `mremap`; a mid block when the new size has the same class. A mid
/// block growing to [`GROW_TO_BIG_MIN`] or more moves to the big tier
/// ([`BigCache::alloc_growing`](hak_bigcache::BigCache::alloc_growing)): its first
/// `layout.size()` bytes are copied and the old block is freed. `None` when the caller must
/// move it (allocate, copy, free); the old block is then untouched.
///
/// # Safety
/// `ptr` is a live block above the tiny tier allocated with `layout`; on `Some` only the
/// returned pointer may be used (it holds `new_size` bytes with the old contents).
pub(crate) unsafe fn realloc_in_tier(
    ptr: *mut u8,
    layout: Layout,
    new_size: usize,
) -> Option<*mut u8> {
    let p = NonNull::new(ptr)?;
    let align = layout.align();
    match REGISTRY.lookup(ptr as usize)?.kind {
        OwnerKind::Big => {
            // A block above 1 MiB shrinking to a mid size moves to the mid tier, where it
            // takes a fraction of the memory. A big block of mid size (a zeroed request of
            // 256 KiB or more, or a mid block that grew here) stays big on any later resize:
            // its mapping already holds the bytes, and moving it would cost a copy for no
            // memory gained.
            if layout.size() > hak_l25::MID_MAX && is_mid(new_size, align) {
                return None;
            }
            // SAFETY: forwarded: a live big block.
            unsafe { BIG.realloc(p, new_size) }.map(NonNull::as_ptr)
        }
        OwnerKind::Mid => {
            if MID.realloc_in_place(layout.size(), align, new_size) {
                return Some(ptr);
            }
            if new_size <= layout.size() || new_size < GROW_TO_BIG_MIN {
                return None;
            }
            let (q, _) = BIG.alloc_growing(new_size, align)?;
            // SAFETY: distinct blocks; the old one holds `layout.size()` bytes, the new one
            // `new_size`, which is more; the old one is a live mid block of `layout`.
            unsafe {
                ptr::copy_nonoverlapping(ptr, q.as_ptr(), layout.size());
                mid_dealloc(p, layout);
            }
            Some(q.as_ptr())
        }
        _ => None,
    }
}
