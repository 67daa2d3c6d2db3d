//! The mapping backend under Miri: allocations from Miri's own heap stand in for mappings, so
//! every layer's unit tests run under Miri's borrow and provenance checks (Miri executes no
//! `mmap`).
//!
//! Model:
//! - A mapping is one `miri_alloc` allocation of the asked alignment (Miri accepts up to
//!   [`MAX_ALIGN`]; a larger alignment over-allocates by `align - MAX_ALIGN` and carves the
//!   aligned part), zero-filled. `miri_alloc` is Miri's allocator entry point that bypasses the
//!   global allocator, so this works when hakmem itself is the `#[global_allocator]`.
//! - Mappings are not heap objects: like the kernel's, they may outlive the program (the table
//!   below keeps every one reachable, so Miri's leak check never reports them). Leaks of
//!   mappings show in [`crate::OsStats::mapped`], as they do with the kernel.
//! - A page-aligned part of a mapping may be unmapped. The table keeps the mapped *pieces* of
//!   every allocation; the allocation is freed when its last piece goes, so using any of it
//!   afterwards is a use-after-free under Miri. A part unmapped while the rest stays mapped
//!   cannot be freed on its own: it is overwritten with uninitialised bytes instead, so reading
//!   it is reported (writing it is not).
//! - Decommit (`MADV_DONTNEED` and `MADV_FREE` alike) writes zeros through the caller's
//!   pointer: the range stays usable through that pointer, and any reference into it that the
//!   write invalidates was a reference to memory the caller gave up.
//! - `mremap` (moving or resizing) copies `min(old, new)` bytes into the destination (a fresh
//!   allocation, or the caller's `dst`), zero-fills the rest and unmaps the source: the
//!   kernel's result, paid for with a copy. Pointers into the old range are dead afterwards,
//!   as they are after a real move.
//! - The address space is modelled as [`ADDRESS_SPACE`] bytes: a request that would exceed it
//!   fails with `ENOMEM`, as a request larger than the process's address space does.
//! - Calls that break their contract (unmapping, advising or moving a range that is not
//!   wholly mapped) abort with a message: the kernel would accept some of them silently, but
//!   under Miri the point is to catch them.
//!
//! The table is a process-wide, lock-protected array of pieces in memory from `miri_alloc`;
//! lookups scan it (tests map a few hundred regions at most).

use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};

use hak_sync::Mutex;

unsafe extern "Rust" {
    /// Miri's heap: `size` bytes aligned to `align`, uninitialised; aborts the interpreter on
    /// an alignment above [`MAX_ALIGN`].
    fn miri_alloc(size: usize, align: usize) -> *mut u8;
    /// Frees a `miri_alloc` allocation with the same size and alignment.
    fn miri_dealloc(ptr: *mut u8, size: usize, align: usize);
}

/// Largest alignment Miri (and rustc) supports for one allocation: 512 MiB.
pub(crate) const MAX_ALIGN: usize = 1 << 29;
/// The modelled address space: at most this many bytes of allocations back mappings at once
/// (Miri materialises every byte on the host).
pub(crate) const ADDRESS_SPACE: usize = 4 << 30;
/// Bytes of uninitialised memory copied at a time when a part of a mapping is unmapped.
const UNINIT_CHUNK: usize = 64 << 10;
/// The source of those uninitialised bytes.
static UNINIT: MaybeUninit<[u8; UNINIT_CHUNK]> = MaybeUninit::uninit();

/// A mapped, page-aligned range and the allocation it lies in.
#[derive(Clone, Copy)]
struct Piece {
    /// First address of the range.
    start: usize,
    /// Length in bytes (non-zero).
    len: usize,
    /// The allocation's base pointer, with its provenance (root of every pointer we derive).
    base: *mut u8,
    /// The allocation's size and alignment, as `miri_dealloc` wants them.
    alloc_size: usize,
    alloc_align: usize,
}

impl Piece {
    fn end(&self) -> usize {
        self.start + self.len
    }
    /// A pointer to address `addr` (inside the allocation) with the allocation's provenance.
    fn ptr_to(&self, addr: usize) -> *mut u8 {
        self.base.wrapping_add(addr - self.base as usize)
    }
}

/// Every mapped piece, unordered; pieces never overlap.
struct Table {
    pieces: *mut Piece,
    len: usize,
    cap: usize,
    /// Bytes of live allocations (what [`ADDRESS_SPACE`] bounds).
    allocated: usize,
}

// SAFETY: the table is only reached under its mutex; the pointers in it are to allocations the
// table owns, which any thread may use.
unsafe impl Send for Table {}

static TABLE: Mutex<Table> =
    Mutex::new(Table { pieces: ptr::null_mut(), len: 0, cap: 0, allocated: 0 });

impl Table {
    fn pieces(&self) -> &[Piece] {
        if self.pieces.is_null() {
            return &[];
        }
        // SAFETY: `pieces` holds `len` initialised entries owned by the table.
        unsafe { core::slice::from_raw_parts(self.pieces, self.len) }
    }

    fn push(&mut self, p: Piece) {
        if self.len == self.cap {
            let cap = (self.cap * 2).max(64);
            let size = cap * size_of::<Piece>();
            // SAFETY: non-zero size, valid alignment.
            let fresh = unsafe { miri_alloc(size, align_of::<Piece>()) }.cast::<Piece>();
            if !self.pieces.is_null() {
                // SAFETY: both arrays hold at least `len` entries and are distinct allocations;
                // the old one was allocated with `cap` entries.
                unsafe {
                    ptr::copy_nonoverlapping(self.pieces, fresh, self.len);
                    miri_dealloc(
                        self.pieces.cast(),
                        self.cap * size_of::<Piece>(),
                        align_of::<Piece>(),
                    );
                }
            }
            self.pieces = fresh;
            self.cap = cap;
        }
        // SAFETY: `len < cap` now.
        unsafe { self.pieces.add(self.len).write(p) };
        self.len += 1;
    }

    fn swap_remove(&mut self, i: usize) -> Piece {
        // SAFETY: `i < len` (callers index from `pieces()`); the last entry moves into slot `i`.
        unsafe {
            let p = self.pieces.add(i).read();
            self.len -= 1;
            if i != self.len {
                self.pieces.add(i).write(self.pieces.add(self.len).read());
            }
            p
        }
    }

    /// Whether `[addr, addr + len)` is wholly mapped.
    fn covers(&self, addr: usize, len: usize) -> bool {
        let Some(end) = addr.checked_add(len) else { return false };
        let covered: usize =
            self.pieces().iter().map(|p| p.end().min(end).saturating_sub(p.start.max(addr))).sum();
        covered == len
    }

    /// Removes `[addr, addr + len)` (wholly mapped) from the table; frees the allocations left
    /// without pieces and de-initialises the removed parts of the others.
    fn remove(&mut self, addr: usize, len: usize) {
        let end = addr + len;
        let mut i = 0;
        while i < self.len {
            let p = self.pieces()[i];
            if p.end() <= addr || end <= p.start {
                i += 1;
                continue;
            }
            self.swap_remove(i);
            if p.start < addr {
                self.push(Piece { len: addr - p.start, ..p });
            }
            if end < p.end() {
                self.push(Piece { start: end, len: p.end() - end, ..p });
            }
            let (cut, cut_end) = (p.start.max(addr), p.end().min(end));
            if self.pieces().iter().any(|q| q.base == p.base) {
                deinit(p.ptr_to(cut), cut_end - cut);
            } else {
                self.allocated -= p.alloc_size;
                // SAFETY: no piece of this allocation is mapped any more; it was made by
                // `miri_alloc` with this size and alignment.
                unsafe { miri_dealloc(p.base, p.alloc_size, p.alloc_align) };
            }
            // Pieces pushed at the end have been seen; `i` now holds an unvisited one.
        }
    }
}

/// Overwrites `len` bytes at `p` with uninitialised memory.
fn deinit(p: *mut u8, len: usize) {
    let mut done = 0;
    while done < len {
        let n = (len - done).min(UNINIT_CHUNK);
        // SAFETY: `p` carries its allocation's provenance and `[p, p+len)` lies in it; the
        // source is a static of `UNINIT_CHUNK` bytes.
        unsafe { ptr::copy_nonoverlapping(UNINIT.as_ptr().cast::<u8>(), p.wrapping_add(done), n) };
        done += n;
    }
}

/// Reports a broken contract and aborts.
#[cold]
#[track_caller]
fn contract(msg: &str) -> ! {
    hak_sync::fatal(msg)
}

/// A zeroed mapping of `size` bytes aligned to `align` (a power of two, at least a page), or
/// `None` when the modelled address space is exhausted.
pub(crate) fn map(size: usize, align: usize) -> Option<NonNull<u8>> {
    let (alloc_size, alloc_align) = if align <= MAX_ALIGN {
        (size, align)
    } else {
        (size.checked_add(align - MAX_ALIGN)?, MAX_ALIGN)
    };
    let mut t = TABLE.lock();
    if alloc_size > ADDRESS_SPACE - t.allocated {
        return None;
    }
    // SAFETY: non-zero size (callers check), power-of-two alignment within Miri's limit.
    let base = unsafe { miri_alloc(alloc_size, alloc_align) };
    let p = Piece { start: 0, len: size, base, alloc_size, alloc_align };
    let start = (base as usize).next_multiple_of(align);
    let p = Piece { start, ..p };
    let ptr = p.ptr_to(start);
    // SAFETY: `[start, start + size)` lies in the fresh allocation (`alloc_size` covers the
    // carving); a mapping reads as zero.
    unsafe { ptr.write_bytes(0, size) };
    t.allocated += alloc_size;
    t.push(p);
    NonNull::new(ptr)
}

/// Unmaps `[ptr, ptr + size)`.
///
/// # Safety
/// As [`crate::Os::unmap`]; a range that is not wholly mapped aborts.
pub(crate) unsafe fn unmap(ptr: *mut u8, size: usize) {
    let mut t = TABLE.lock();
    if !t.covers(ptr as usize, size) {
        contract("hak-os (Miri backend): unmap of a range that is not wholly mapped");
    }
    t.remove(ptr as usize, size);
}

/// Decommits `[ptr, ptr + size)`: zero-fills it through `ptr`.
///
/// # Safety
/// As [`crate::Os::decommit`]; a range that is not wholly mapped aborts.
pub(crate) unsafe fn decommit(ptr: *mut u8, size: usize) {
    check_mapped(ptr, size, "hak-os (Miri backend): decommit of a range that is not mapped");
    // SAFETY: the caller gives the range up and its pointer covers it.
    unsafe { ptr.write_bytes(0, size) };
}

/// Aborts unless `[ptr, ptr + size)` is wholly mapped (the advice calls check no more).
#[track_caller]
pub(crate) fn check_mapped(ptr: *mut u8, size: usize, msg: &str) {
    if !TABLE.lock().covers(ptr as usize, size) {
        contract(msg);
    }
}

/// `mremap(MAYMOVE)`: a fresh page-aligned mapping of `new` bytes holding the first
/// `min(old, new)` bytes of `[ptr, ptr + old)`, which is unmapped. `None` (and nothing
/// changed) when the address space is exhausted.
///
/// # Safety
/// As [`crate::Os::remap`]; a source that is not wholly mapped aborts.
pub(crate) unsafe fn remap(ptr: *mut u8, old: usize, new: usize) -> Option<NonNull<u8>> {
    check_mapped(ptr, old, "hak-os (Miri backend): remap of a range that is not mapped");
    let q = map(new, crate::page_size())?;
    // SAFETY: the source is mapped and the caller's pointer covers it; `q` is fresh.
    unsafe { ptr::copy_nonoverlapping(ptr, q.as_ptr(), old.min(new)) };
    // SAFETY: the caller gives the source up on success.
    unsafe { unmap(ptr, old) };
    Some(q)
}

/// `mremap(MAYMOVE | FIXED)`: `[dst, dst + new)` takes the first `min(old, new)` bytes of
/// `[ptr, ptr + old)` and zeros after them; the source is unmapped.
///
/// # Safety
/// As [`crate::Os::remap_to`]; a source or destination that is not wholly mapped aborts.
pub(crate) unsafe fn remap_to(ptr: *mut u8, old: usize, dst: *mut u8, new: usize) {
    check_mapped(ptr, old, "hak-os (Miri backend): remap_to from a range that is not mapped");
    check_mapped(dst, new, "hak-os (Miri backend): remap_to into a range that is not mapped");
    let kept = old.min(new);
    // SAFETY: both ranges are mapped, disjoint (checked by the caller) and covered by the
    // caller's pointers; the destination is given up by the caller.
    unsafe {
        ptr::copy_nonoverlapping(ptr, dst, kept);
        dst.add(kept).write_bytes(0, new - kept);
    }
    // SAFETY: the caller gives the source up on success.
    unsafe { unmap(ptr, old) };
}
