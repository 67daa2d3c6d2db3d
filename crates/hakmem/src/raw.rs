//! Malloc-style entry points: the operations behind the C ABI (`malloc`, `free`, `realloc`,
//! ..., exported by the `hakmem-c` crate and `libhakmem.so`), with glibc's behaviour. Rust code
//! can call them too, e.g. for a buffer that C code will `free`.
//!
//! Differences from [`GlobalAlloc`]: no layout on free or realloc.
//! The registry says which tier owns an address: a tiny block's class comes from its slab's
//! record (no per-block header), a mid block's from its chunk header, a big block's size from
//! its header. Every block is aligned to [`MALLOC_ALIGN`] (16) unless asked for more.
//!
//! Outcomes, as glibc's:
//! - failure returns null with `errno = ENOMEM`; success leaves `errno` as it was, even when a
//!   slow path made a system call that failed on the way;
//! - `malloc(0)` returns a unique 16-byte block; `realloc(p, 0)` frees `p` and returns null;
//!   `realloc(null, n)` is `malloc(n)`; `free(null)` does nothing; `calloc` whose product
//!   overflows returns null with `ENOMEM`; requests above `isize::MAX` fail with `ENOMEM`;
//! - `free` or `realloc` of a pointer the registry does not know (never returned by hakmem),
//!   or of a pointer into the middle of a mid or big block, is refused with one line on stderr
//!   and changes nothing (`realloc` then returns null with `errno = EINVAL`);
//! - a second free or an interior pointer of a tiny block is not detected by default (the fast
//!   path stays a few instructions); with `HAKMEM_CHECK=1` it is refused (see `check.rs`).
//!
//! Invariants: nothing here allocates through the global allocator or panics; every fast path
//! is the tiny thread cache (a pop or a push after a registry lookup), everything else is in
//! `#[cold]` functions that save and restore `errno`. Those the fast paths call are
//! `extern "C"`: they cannot unwind, so the exported C functions (which must abort rather
//! than unwind) need no landing pad around the call and can tail-call them.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};

use hak_registry::OwnerKind;
use hak_superslab::SsRef;
use hak_tiny_front::{class_of, ThreadCache, CLASS_SIZES, NUM_CLASSES};

use crate::global::{LG_SS, REGISTRY};
use crate::large::{self, BIG, MID};
use crate::{check, thread, Hakmem};

/// The alignment of every block `malloc` returns (glibc's on x86-64 and aarch64).
pub const MALLOC_ALIGN: usize = 16;

/// Largest request that can succeed: anything larger fails with `ENOMEM` at once (glibc
/// refuses requests above `PTRDIFF_MAX` the same way).
const MAX_REQUEST: usize = isize::MAX as usize - 4096;

/// The calling thread's `errno`.
#[inline]
pub fn errno() -> i32 {
    // SAFETY: __errno_location returns a valid pointer to the calling thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno`.
#[inline]
pub fn set_errno(e: i32) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = e };
}

/// `errno` as a slow path found it: one `__errno_location` call, then plain loads and stores
/// through the thread's errno address.
struct SavedErrno {
    loc: *mut i32,
    value: i32,
}

impl SavedErrno {
    #[inline]
    fn new() -> SavedErrno {
        // SAFETY: __errno_location returns a valid pointer to the calling thread's errno, which
        // lives as long as the thread.
        let loc = unsafe { libc::__errno_location() };
        // SAFETY: as above.
        SavedErrno { loc, value: unsafe { *loc } }
    }

    /// Puts `errno` back as it was.
    #[inline]
    fn restore(&self) {
        // SAFETY: the calling thread's errno (a `SavedErrno` never leaves its thread).
        unsafe { *self.loc = self.value };
    }

    /// Sets `errno` to `e`.
    #[inline]
    fn set(&self, e: i32) {
        // SAFETY: as in `restore`.
        unsafe { *self.loc = e };
    }
}

/// `malloc`: a block of at least `size` bytes aligned to [`MALLOC_ALIGN`], or null with
/// `errno = ENOMEM`. `size` 0 gives a unique minimal block.
#[inline(always)]
pub fn malloc(size: usize) -> *mut u8 {
    if let Some(class) = class_of(size, MALLOC_ALIGN) {
        // SAFETY: the calling thread's state (or the sentinel) and a valid class.
        let p = unsafe { ThreadCache::pop(thread::current().cast(), class) };
        if !p.is_null() {
            if check::enabled() {
                return check::on_alloc(p); // a tail call keeps this path free of spills
            }
            return p;
        }
    }
    malloc_slow(size)
}

#[cold]
#[inline(never)]
extern "C" fn malloc_slow(size: usize) -> *mut u8 {
    let saved = SavedErrno::new();
    let p = if let Some(class) = class_of(size, MALLOC_ALIGN) {
        crate::tiny_alloc_slow(class)
    } else {
        large_layout(size).map_or(ptr::null_mut(), |l| large::alloc(l, false))
    };
    finish_alloc(p, saved)
}

/// The layout of a malloc-style request above the tiny tier, `None` past [`MAX_REQUEST`].
#[inline]
fn large_layout(size: usize) -> Option<Layout> {
    // SAFETY: size <= MAX_REQUEST, so rounding it up to 16 stays within isize::MAX.
    (size <= MAX_REQUEST).then(|| unsafe { Layout::from_size_align_unchecked(size, MALLOC_ALIGN) })
}

/// Common tail of the slow allocation paths: `errno` back to `saved` on success, `ENOMEM` on
/// failure; check mode marks the block live.
#[inline]
fn finish_alloc(p: *mut u8, saved: SavedErrno) -> *mut u8 {
    if p.is_null() {
        saved.set(libc::ENOMEM);
    } else {
        saved.restore();
        if check::enabled() {
            return check::on_alloc(p);
        }
    }
    p
}

/// `calloc`: `n * size` zeroed bytes; null with `ENOMEM` if the product overflows or memory
/// runs out.
#[inline(always)]
pub fn calloc(n: usize, size: usize) -> *mut u8 {
    let Some(total) = n.checked_mul(size) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    if let Some(class) = class_of(total, MALLOC_ALIGN) {
        // SAFETY: as in `malloc`.
        let p = unsafe { ThreadCache::pop(thread::current().cast(), class) };
        if !p.is_null() {
            if check::enabled() {
                check::on_alloc(p);
            }
            // SAFETY: the block holds at least `total` bytes.
            unsafe { p.write_bytes(0, total) };
            return p;
        }
    }
    calloc_slow(total)
}

#[cold]
#[inline(never)]
extern "C" fn calloc_slow(total: usize) -> *mut u8 {
    let saved = SavedErrno::new();
    let p = if let Some(class) = class_of(total, MALLOC_ALIGN) {
        let p = crate::tiny_alloc_slow(class);
        if !p.is_null() {
            // SAFETY: the block holds at least `total` bytes.
            unsafe { p.write_bytes(0, total) };
        }
        p
    } else if total > MAX_REQUEST {
        ptr::null_mut()
    } else {
        // Fresh big mappings are known to be zero: the tier clears only reused blocks.
        // SAFETY: total <= MAX_REQUEST (see malloc_slow).
        large::alloc(unsafe { Layout::from_size_align_unchecked(total, MALLOC_ALIGN) }, true)
    };
    finish_alloc(p, saved)
}

/// An aligned block: `align` must be a power of two (the C functions check their own rules
/// first). Null with `ENOMEM` on failure.
pub fn aligned_alloc(align: usize, size: usize) -> *mut u8 {
    if align <= MALLOC_ALIGN {
        return malloc(size);
    }
    let saved = SavedErrno::new();
    // `GlobalAlloc` wants a non-zero size; a zero-size request gets one aligned byte.
    let p = match Layout::from_size_align(size.max(1), align) {
        Ok(l) if size <= MAX_REQUEST => {
            // SAFETY: a valid layout of non-zero size; `Hakmem` routes it to the tier that
            // serves the alignment (tiny and mid up to 4 KiB, big beyond).
            unsafe { Hakmem.alloc(l) }
        }
        _ => ptr::null_mut(),
    };
    finish_alloc(p, saved)
}

/// `free`: returns a block from any of the functions above (or from `Hakmem` with an
/// alignment of at most 4 KiB) to its tier. Null does nothing; a pointer hakmem does not know
/// is refused with one line on stderr.
///
/// # Safety
/// `ptr` is null, or a block from this allocator that is not used afterwards. (Foreign and
/// interior pointers are refused where the module docs say so; a tiny double free outside
/// check mode is undefined behaviour.)
#[inline(always)]
pub unsafe fn free(ptr: *mut u8) {
    // Null needs no test of its own on the fast path: the registry never knows address 0.
    match REGISTRY.kind(ptr as usize) {
        Some(OwnerKind::SuperSlab) => {
            // SAFETY: the registry says a SuperSlab owns the address: it is mapped and
            // formatted while registered, and a live block keeps it registered.
            let class = unsafe { tiny_class_of(ptr) };
            if check::enabled() {
                // SAFETY: as above. A tail call keeps this path free of spills.
                return unsafe { free_tiny_checked(class, ptr) };
            }
            // SAFETY: a live tiny block of `class` (caller's contract).
            unsafe { free_tiny(class, ptr) }
        }
        // SAFETY: forwarded.
        Some(kind) => unsafe { free_large(ptr, kind) },
        None => {
            if !ptr.is_null() {
                refuse_foreign_free();
            }
        }
    }
}

/// The class of the tiny block at `ptr`, from its slab's record.
///
/// # Safety
/// `ptr` lies in a registered SuperSlab.
#[inline(always)]
unsafe fn tiny_class_of(ptr: *mut u8) -> usize {
    // SAFETY: forwarded: a registered SuperSlab is formatted and mapped.
    let class = unsafe { SsRef::from_block(ptr, LG_SS).slab_of(ptr.addr()).class() } as usize;
    hak_sync::check!(class < NUM_CLASSES, "slab record holds a class out of range");
    class
}

/// # Safety
/// `ptr` is a live tiny block of `class`.
#[inline(always)]
unsafe fn free_tiny(class: usize, ptr: *mut u8) {
    // SAFETY: forwarded.
    unsafe {
        if !ThreadCache::free_fast(thread::current().cast(), class, ptr, LG_SS) {
            free_tiny_slow(class, ptr)
        }
    }
}

/// Check mode's tiny free: refused unless `ptr` is a live block start.
///
/// # Safety
/// `ptr` lies in a registered SuperSlab and its slab serves `class`.
#[cold]
#[inline(never)]
unsafe extern "C" fn free_tiny_checked(class: usize, ptr: *mut u8) {
    // SAFETY: forwarded; once checked, a live block of `class`.
    unsafe {
        if check::on_free_tiny(ptr) {
            free_tiny(class, ptr)
        }
    }
}

/// # Safety
/// `ptr` is a live tiny block of `class`.
#[cold]
#[inline(never)]
unsafe extern "C" fn free_tiny_slow(class: usize, ptr: *mut u8) {
    let saved = SavedErrno::new();
    // SAFETY: forwarded.
    unsafe { crate::tiny_free_slow(class, ptr) };
    saved.restore();
}

/// Frees a mid or big block (the registry said `kind`).
///
/// # Safety
/// As for [`free`].
#[cold]
#[inline(never)]
unsafe extern "C" fn free_large(ptr: *mut u8, kind: OwnerKind) {
    let saved = errno();
    let size = if kind == OwnerKind::Mid {
        // SAFETY: a registered mid address; live if it is a block start (contract).
        match unsafe { MID.usable_size(NonNull::new_unchecked(ptr)) } {
            Some(n) if !check::enabled() || check::on_free_block(ptr) => Some(n),
            Some(_) => None,
            None => {
                refuse(b"hakmem: free of a pointer into the middle of a mid block; ignored\n");
                None
            }
        }
    } else {
        // The big tier checks the pointer against its header itself (and says so on stderr).
        Some(1)
    };
    if let Some(size) = size {
        // SAFETY: a live block of that tier; the layout is one it accepts (a mid block's class
        // size; any layout for a big block). Sizes are far below isize::MAX.
        unsafe { large::dealloc(ptr, Layout::from_size_align_unchecked(size, MALLOC_ALIGN)) };
    }
    set_errno(saved);
}

#[cold]
#[inline(never)]
extern "C" fn refuse_foreign_free() {
    refuse(b"hakmem: free of a pointer hakmem never returned; ignored\n");
}

#[cold]
#[inline(never)]
fn refuse(msg: &[u8]) {
    let saved = errno();
    hak_os::write_stderr(msg);
    set_errno(saved);
}

/// `realloc`: resizes a block, keeping its first `min(old, new)` bytes. `ptr` null is
/// `malloc(size)`; `size` 0 frees `ptr` and returns null (glibc's behaviour). On failure the
/// old block is untouched and null is returned with `errno = ENOMEM`; a pointer hakmem does not
/// know (or an interior one) is refused: one line on stderr, null, `errno = EINVAL`.
///
/// # Safety
/// `ptr` is null or a live block from this allocator, not used afterwards when the result is
/// non-null (or when `size` is 0).
pub unsafe fn realloc(ptr: *mut u8, size: usize) -> *mut u8 {
    if ptr.is_null() {
        return malloc(size);
    }
    if size == 0 {
        // SAFETY: forwarded.
        unsafe { free(ptr) };
        return ptr::null_mut();
    }
    let Some(o) = REGISTRY.lookup(ptr as usize) else {
        refuse(b"hakmem: realloc of a pointer hakmem never returned; refused\n");
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    };
    let old_usable = if o.kind == OwnerKind::SuperSlab {
        // SAFETY: a registered SuperSlab address.
        let class = unsafe { tiny_class_of(ptr) };
        // SAFETY: as above.
        if check::enabled() && !unsafe { check::is_live_tiny(ptr) } {
            set_errno(libc::EINVAL);
            return ptr::null_mut();
        }
        if class_of(size, MALLOC_ALIGN) == Some(class) {
            return ptr; // the block's class already holds `size` bytes
        }
        CLASS_SIZES[class] as usize
    } else {
        // SAFETY: forwarded.
        match unsafe { realloc_large(ptr, o.kind, size) } {
            Large::Done(q) => return q,
            Large::Move(old) => old,
        }
    };
    let q = if o.kind == OwnerKind::SuperSlab && class_of(size, MALLOC_ALIGN).is_none() {
        // A tiny block growing past the tiny tier: into memory that can grow in place, as the
        // Rust path does.
        let saved = SavedErrno::new();
        finish_alloc(large_layout(size).map_or(ptr::null_mut(), large::alloc_for_growth), saved)
    } else {
        malloc(size)
    };
    if !q.is_null() {
        // SAFETY: both blocks hold at least the copied length and do not overlap; the old
        // block is then freed once.
        unsafe {
            ptr::copy_nonoverlapping(ptr, q, old_usable.min(size));
            free(ptr);
        }
    }
    q
}

/// What [`realloc_large`] decided.
enum Large {
    /// Finished: the resized block, or null (refused or out of memory, `errno` set).
    Done(*mut u8),
    /// The block must move; it has this many usable bytes.
    Move(usize),
}

/// Resizes a mid or big block within its tier when it can.
///
/// # Safety
/// As for [`realloc`], with the registry saying `kind` owns `ptr`.
#[cold]
#[inline(never)]
unsafe fn realloc_large(ptr: *mut u8, kind: OwnerKind, size: usize) -> Large {
    // SAFETY: registered, so non-null.
    let p = unsafe { NonNull::new_unchecked(ptr) };
    let usable = if kind == OwnerKind::Mid {
        // SAFETY: a registered mid address; live if it is a block start (contract).
        match unsafe { MID.usable_size(p) } {
            Some(n) if !check::enabled() || check::is_live_block(ptr) => n,
            Some(_) => return refused(b""),
            None => {
                return refused(
                    b"hakmem: realloc of a pointer into the middle of a mid block; refused\n",
                )
            }
        }
    } else {
        match BIG.live_usable_size(p) {
            Some(n) => n,
            None => {
                return refused(
                    b"hakmem: realloc of a pointer that is not a live big block; refused\n",
                )
            }
        }
    };
    if size > MAX_REQUEST {
        set_errno(libc::ENOMEM);
        return Large::Done(ptr::null_mut());
    }
    let saved = errno();
    // SAFETY: a live block of that tier with a layout it accepts (its usable size; class sizes
    // and mappings are far below isize::MAX).
    let q = unsafe {
        large::realloc_in_tier(ptr, Layout::from_size_align_unchecked(usable, MALLOC_ALIGN), size)
    };
    set_errno(saved);
    match q {
        Some(q) => Large::Done(q),
        None => Large::Move(usable),
    }
}

/// A refused `realloc`: the message (if any) on stderr, `errno = EINVAL`, null.
#[cold]
fn refused(msg: &[u8]) -> Large {
    if !msg.is_empty() {
        refuse(msg);
    }
    set_errno(libc::EINVAL);
    Large::Done(ptr::null_mut())
}

/// `malloc_usable_size`: the bytes usable at `ptr` (its class size for tiny and mid blocks,
/// the mapping's remainder for big ones); 0 for null or a pointer hakmem does not know.
///
/// # Safety
/// `ptr` is null, foreign, or a live block from this allocator.
pub unsafe fn usable_size(ptr: *mut u8) -> usize {
    if ptr.is_null() {
        return 0;
    }
    let Some(nn) = NonNull::new(ptr) else { return 0 };
    match REGISTRY.lookup(ptr as usize).map(|o| o.kind) {
        // SAFETY: a registered SuperSlab address.
        Some(OwnerKind::SuperSlab) => CLASS_SIZES[unsafe { tiny_class_of(ptr) }] as usize,
        // SAFETY: a registered mid address, live by the contract.
        Some(OwnerKind::Mid) => unsafe { MID.usable_size(nn) }.unwrap_or(0),
        Some(OwnerKind::Big) => BIG.live_usable_size(nn).unwrap_or(0),
        _ => 0, // unknown, or a kind hakmem never registers
    }
}

/// Prints the statistics to stderr (what `HAKMEM_STATS=1` prints at exit; `malloc_stats()`).
/// Flushes the calling thread's cache first, so the counts include it.
pub fn print_stats() {
    let saved = errno();
    crate::stats::print_at_exit();
    set_errno(saved);
}

#[cfg(test)]
mod tests;
