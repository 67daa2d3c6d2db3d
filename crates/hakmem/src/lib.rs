//! hakmem's facade (interim): every request is one hak-os mapping. The tiny, mid and big tiers
//! replace this routing as their issues land; the public API (`Hakmem`, `stats`) stays.
#![deny(unsafe_op_in_unsafe_fn)]

use core::alloc::{GlobalAlloc, Layout};

use hak_os::{page_size, Os, OsStats};

static OS: Os = Os::new();

/// The allocator: `#[global_allocator] static A: hakmem::Hakmem = hakmem::Hakmem;`
#[derive(Debug, Clone, Copy, Default)]
pub struct Hakmem;

/// Allocator-wide counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// The OS box's syscall and mapping counters.
    pub os: OsStats,
}

/// A snapshot of the counters.
pub fn stats() -> Stats {
    Stats { os: OS.stats() }
}

fn span(layout: Layout) -> Option<usize> {
    let p = page_size();
    layout.size().max(1).checked_add(p - 1).map(|s| s & !(p - 1))
}

// SAFETY: every block is its own mapping of at least `size` bytes aligned to `align`, so blocks
// never overlap, and dealloc unmaps exactly what alloc mapped for that layout.
unsafe impl GlobalAlloc for Hakmem {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match span(layout).map(|s| OS.map(s, layout.align())) {
            Some(Ok(p)) => p.as_ptr(),
            _ => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let (Some(p), Some(s)) = (core::ptr::NonNull::new(ptr), span(layout)) {
            // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with this layout.
            let _ = unsafe { OS.unmap(p, s) };
        }
    }
}
