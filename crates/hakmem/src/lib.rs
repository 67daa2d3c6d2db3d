//! hakmem: a general-purpose memory allocator in pure Rust. This crate is the facade: the
//! [`Hakmem`] global allocator, routing by size, configuration, statistics; it owns every
//! global and thread-local of the allocator (the layers below are plain structs).
//!
//! ```no_run
//! #[global_allocator]
//! static A: hakmem::Hakmem = hakmem::Hakmem;
//! ```
//!
//! What it offers: [`Hakmem`]; [`stats()`] and [`Stats`]; [`trim()`]; [`flush_thread_cache()`].
//!
//! Routing: requests of at most `hak_tiny_front::TINY_MAX` bytes (after rounding up to their
//! alignment, up to 4 KiB alignment; 48 KiB) go to the tiny tier: the calling thread's cache,
//! then its warm slabs, then the shared pool of 2 MiB SuperSlabs. Sizes above that up to 1 MiB
//! (alignment up to 4 KiB) go to the mid tier (hak-l25): the thread's mid cache, then sharded
//! free lists, then chunks. Requests above 1 MiB, aligned beyond 4 KiB, or zeroed and at least
//! 256 KiB, go to the big tier (hak-bigcache), one mapping each.
//!
//! Invariants: the allocator never allocates through the global allocator (metadata comes
//! from OS pages), never panics or aborts on a path reachable from `alloc` (failure is null),
//! and reads its configuration (`HAKMEM_*`, see `options.rs` and README) once, with `getenv`.
//!
//! Concurrency: any thread may call anything at any time. A tiny alloc or free that hits the
//! thread cache takes no lock, no atomic read-modify-write and no syscall. Thread exit is
//! handled by a pthread key destructor that flushes the thread's cache; blocks the thread still
//! had out stay valid and may be freed by any thread later.
#![deny(unsafe_op_in_unsafe_fn)]

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};

use hak_superslab::SsRef;
use hak_tiny_front::{class_of, ThreadCache, CLASS_SIZES};

mod check;
mod decay;
mod environ;
mod fork;
mod global;
mod large;
mod options;
pub mod raw;
mod stats;
mod thread;
mod tls;

pub use stats::{stats, BigStats, MidStats, Stats, TinyStats};

/// Walking a [`Stats`] snapshot: [`StatValue::visit`](stat::StatValue::visit) calls back with
/// every value's dotted name (what `HAKMEM_STATS=1` prints), [`StatValue::merge`](stat::StatValue::merge)
/// adds snapshots.
pub mod stat {
    pub use hak_sync::stat::{GaugeValue, StatPath, StatValue};
}

use global::{LG_SS, POOL};

/// The allocator: `#[global_allocator] static A: hakmem::Hakmem = hakmem::Hakmem;`
#[derive(Debug, Clone, Copy, Default)]
pub struct Hakmem;

/// Returns memory the allocator holds but does not use to the OS: abandoned slabs whose blocks
/// all came back are released, expired cached SuperSlabs are unmapped. The calling thread's
/// cache is flushed first.
pub fn trim() {
    thread::flush_current();
    POOL.trim();
    large::MID.trim();
    large::BIG.trim();
}

/// Returns every block cached by the calling thread to its slabs and gives up its slabs
/// (as thread exit does). The thread keeps working; its cache refills on demand.
pub fn flush_thread_cache() {
    thread::flush_current();
}

#[cold]
#[inline(never)]
fn tiny_alloc_slow(class: usize) -> *mut u8 {
    let ts = thread::current_or_init();
    if ts.is_null() {
        return ptr::null_mut();
    }
    decay::tick();
    // SAFETY: the calling thread's own, active state.
    match unsafe { (*ts).tc.alloc_slow(class) } {
        Some(p) => p.as_ptr(),
        None => ptr::null_mut(),
    }
}

#[cold]
#[inline(never)]
unsafe fn tiny_free_slow(class: usize, block: *mut u8) {
    let Some(block) = NonNull::new(block) else { return };
    // SAFETY: a tiny block lies in a mapped SuperSlab (GlobalAlloc's contract); a pointer that
    // does not is misuse we can sometimes detect by the magic.
    if !unsafe { SsRef::from_block(block.as_ptr(), LG_SS).is_valid() } {
        hak_os::write_stderr(
            b"hakmem: dealloc of a pointer that is not a live hakmem block; ignored\n",
        );
        return;
    }
    let ts = thread::current();
    // SAFETY: the calling thread's own state, or the (inactive) sentinel; `block` is live.
    unsafe {
        if (*ts).tc.is_active() {
            decay::tick();
            (*ts).tc.free_slow(class, block);
        } else {
            let n = hak_tiny_front::free_without_cache(&POOL, block);
            stats::UNCACHED_FREE_BYTES.add(n as u64);
        }
    }
}

// SAFETY: tiny blocks come from slabs whose blocks never overlap and are handed out once until
// freed (hak-superslab's invariants); their class size covers the request rounded up to its
// alignment, and classes keep that alignment (hak-tiny-front). Large blocks are whole mappings
// of at least the size, aligned as asked. Failure returns null.
unsafe impl GlobalAlloc for Hakmem {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(class) = class_of(layout.size(), layout.align()) {
            // SAFETY: the thread's state (or the sentinel) and a valid class.
            let p = unsafe { ThreadCache::pop(thread::current().cast(), class) };
            if !p.is_null() {
                return p;
            }
            return tiny_alloc_slow(class);
        }
        large::alloc(layout, false)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(class) = class_of(layout.size(), layout.align()) {
            // SAFETY: `ptr` is a live tiny block of `class` (same layout as its alloc).
            unsafe {
                if ThreadCache::free_fast(thread::current().cast(), class, ptr, LG_SS) {
                    return;
                }
                return tiny_free_slow(class, ptr);
            }
        }
        // SAFETY: forwarded from GlobalAlloc's contract.
        unsafe { large::dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if class_of(layout.size(), layout.align()).is_some() {
            // SAFETY: forwarded.
            let p = unsafe { self.alloc(layout) };
            if !p.is_null() {
                // SAFETY: the block has at least `size` bytes.
                unsafe { p.write_bytes(0, layout.size()) };
            }
            return p;
        }
        // Fresh mappings are zero: only reused blocks are cleared.
        large::alloc(layout, true)
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        let old = class_of(layout.size(), align);
        let new = class_of(new_size, align);
        if old.is_some() && old == new {
            return ptr; // the block's class already holds `new_size` bytes
        }
        if old.is_none() && new.is_none() {
            // SAFETY: forwarded: a live block above the tiny tier.
            if let Some(q) = unsafe { large::realloc_in_tier(ptr, layout, new_size) } {
                return q;
            }
        }
        // SAFETY: GlobalAlloc guarantees `new_size` with `align` forms a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
        let q = if old.is_some() && new.is_none() && new_size > layout.size() {
            // A tiny block growing past the tiny tier: into memory that can grow in place.
            large::alloc_for_growth(new_layout)
        } else {
            // SAFETY: forwarded.
            unsafe { self.alloc(new_layout) }
        };
        if !q.is_null() {
            // SAFETY: both blocks hold at least the copied length and do not overlap.
            unsafe {
                ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        q
    }
}

/// Makes the next `n` OS mappings fail (`usize::MAX`: all of them until called with 0), to
/// test how a program copes with the OS refusing memory. Not part of the stable API.
#[doc(hidden)]
pub fn fail_next_maps(n: usize) {
    global::OS.fail_next_maps(n);
}

/// The tier whose memory holds `addr` (`"tiny"`, `"mid"` or `"big"`), `None` if hakmem does not
/// know the address. For tests and diagnostics; not part of the stable API.
#[doc(hidden)]
pub fn tier_of(addr: usize) -> Option<&'static str> {
    Some(match global::REGISTRY.kind(addr)? {
        hak_registry::OwnerKind::SuperSlab => "tiny",
        hak_registry::OwnerKind::Mid => "mid",
        hak_registry::OwnerKind::Big => "big",
        _ => return None, // hakmem registers no other kind
    })
}

/// Usable size of a tiny class, for tests and diagnostics.
#[doc(hidden)]
pub fn tiny_class_size(size: usize, align: usize) -> Option<usize> {
    class_of(size, align).map(|c| CLASS_SIZES[c] as usize)
}
