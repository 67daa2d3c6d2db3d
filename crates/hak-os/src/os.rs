//! [`Os`]: mappings, decommit and their counters.
//!
//! Aligned mappings first try an address from a private hint window with `MAP_FIXED_NOREPLACE`
//! (one syscall, and our regions cluster, which keeps the registry's page map dense); when the
//! hint is taken or unaligned they fall back to over-mapping by `align` and trimming both ends
//! (one mmap and up to two munmaps), as mimalloc does. Sanitizer builds (`--cfg hak_sanitize`)
//! skip the hint: ThreadSanitizer keeps its shadow memory where the window lies.
//!
//! Under Miri the syscalls give way to the emulation in `miri.rs` (one allocation per
//! mapping, no hint window); validation, failure injection and the counters stay the same.

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use hak_sync::stat::{StatCounter, StatGauge};

#[cfg(not(miri))]
use crate::platform::errno;
use crate::platform::page_size;

/// Start of the address window aligned mappings are hinted into (32 TiB: far from the
/// executable, the brk heap and the libraries near the top of the 47-bit user space).
#[cfg(not(any(hak_loom, miri)))]
const HINT_START: usize = 0x2000_0000_0000;
/// Size of the hint window (16 TiB). The cursor wraps inside it; a taken address just costs the
/// fallback path.
#[cfg(not(any(hak_loom, miri)))]
const HINT_WINDOW: usize = 0x1000_0000_0000;
/// Under loom the registry's map shrinks to the low 256 MiB, so aligned regions are hinted
/// there (PIE test binaries leave it free).
#[cfg(all(hak_loom, not(miri)))]
const HINT_START: usize = 64 << 20;
/// Under loom: 64 MiB .. 256 MiB.
#[cfg(all(hak_loom, not(miri)))]
const HINT_WINDOW: usize = 192 << 20;

/// The operation an [`OsError`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OsOp {
    /// `mmap`, including a refusal injected by [`Os::fail_next_maps`].
    Map,
    /// `munmap`.
    Unmap,
    /// `madvise`.
    Advise,
    /// `mremap`.
    Remap,
    /// `mincore` (a read-only residency query).
    Probe,
    /// The arguments broke the documented preconditions (size 0, not page-multiple, alignment
    /// not a power of two, overflow); no syscall was made.
    Invalid,
}

/// A failed OS operation: which one, and the `errno` it left (0 for [`OsOp::Invalid`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OsError {
    /// The operation that failed.
    pub op: OsOp,
    /// The kernel's error number (`libc::ENOMEM` for an injected map failure).
    pub errno: i32,
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} failed (errno {})", self.op, self.errno)
    }
}

/// How [`Os::decommit`] gives pages back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Decommit {
    /// `MADV_DONTNEED`: pages are dropped at once and read back as zero. RSS falls immediately.
    DontNeed = 0,
    /// `MADV_FREE`: the kernel reclaims the pages lazily under pressure; cheaper to reuse, but
    /// RSS stays high until then, and the contents are not guaranteed to be zero.
    Free = 1,
}

hak_sync::stats! {
    /// The live counters of an [`Os`].
    pub struct OsCounters => {
        /// A snapshot of [`Os`]'s counters.
        pub struct OsStats;
    }
    /// `mmap` syscalls made (hinted attempts and fallbacks each count).
    mmap_calls: StatCounter,
    /// `munmap` syscalls made (trimming an over-mapped region counts too).
    munmap_calls: StatCounter,
    /// `madvise` syscalls made.
    madvise_calls: StatCounter,
    /// `mremap` syscalls made.
    mremap_calls: StatCounter,
    /// Mappings refused (by the kernel or the test hook).
    map_failures: StatCounter,
    /// Bytes currently mapped through this instance, with peak and total.
    mapped: StatGauge,
    /// Bytes given back with `MADV_DONTNEED` (total).
    decommitted_dontneed: StatCounter,
    /// Bytes given back with `MADV_FREE` (total); RSS may not have fallen for these.
    decommitted_free: StatCounter,
}

/// The OS box: one per allocator instance, shared by `&` among its layers.
#[derive(Debug)]
pub struct Os {
    /// Statistics (relaxed counters).
    counters: OsCounters,
    /// Test hook: the number of upcoming `map`/`remap` calls to refuse with ENOMEM.
    fail_maps: AtomicUsize,
    /// Mapping calls to let through before the injected failures start.
    fail_skip: AtomicUsize,
    /// `Decommit` as u8.
    decommit: AtomicU8,
    /// Next hint address for aligned maps (offset into the hint window). A hint only: races
    /// lose nothing but a syscall. Unused under Miri, which has no address hints.
    #[cfg_attr(miri, allow(dead_code))]
    hint: AtomicUsize,
}

impl Default for Os {
    fn default() -> Self {
        Self::new()
    }
}

impl Os {
    /// A new OS box with zeroed counters and `Decommit::DontNeed`.
    pub const fn new() -> Os {
        Os {
            counters: OsCounters::new(),
            fail_maps: AtomicUsize::new(0),
            fail_skip: AtomicUsize::new(0),
            decommit: AtomicU8::new(Decommit::DontNeed as u8),
            hint: AtomicUsize::new(0),
        }
    }

    /// Chooses how [`Os::decommit`] releases pages.
    pub fn set_decommit(&self, mode: Decommit) {
        self.decommit.store(mode as u8, Ordering::Relaxed);
    }

    /// The decommit mode in force.
    pub fn decommit_mode(&self) -> Decommit {
        if self.decommit.load(Ordering::Relaxed) == Decommit::Free as u8 {
            Decommit::Free
        } else {
            Decommit::DontNeed
        }
    }

    /// Test hook: the next `n` calls to [`Os::map`] (and [`Os::remap`], [`Os::remap_to`]) fail
    /// with `ENOMEM` without a syscall. `0` cancels.
    pub fn fail_next_maps(&self, n: usize) {
        self.fail_maps_after(0, n);
    }

    /// Test hook: lets the next `skip` calls to [`Os::map`], [`Os::remap`] and
    /// [`Os::remap_to`] through, then fails `n` of them (to reach a failure in the middle of a
    /// sequence, e.g. a move after the mapping it moves into).
    pub fn fail_maps_after(&self, skip: usize, n: usize) {
        self.fail_skip.store(skip, Ordering::Relaxed);
        self.fail_maps.store(n, Ordering::Relaxed);
    }

    fn injected_failure(&self) -> bool {
        if self.fail_maps.load(Ordering::Relaxed) == 0 || take_one(&self.fail_skip) {
            return false;
        }
        if take_one(&self.fail_maps) {
            self.counters.map_failures.add(1);
            return true;
        }
        false
    }

    /// The counters so far.
    pub fn stats(&self) -> OsStats {
        self.counters.snapshot()
    }

    /// Maps `size` bytes of zeroed, read-write, private anonymous memory whose base is a
    /// multiple of `align`.
    ///
    /// Preconditions (checked; a violation returns [`OsOp::Invalid`]): `size > 0` and a
    /// multiple of [`page_size`]; `align` a power of two. Alignments below the page size give
    /// page alignment. Memory is reserved with `MAP_NORESERVE` and committed by the kernel on
    /// first touch.
    pub fn map(&self, size: usize, align: usize) -> Result<NonNull<u8>, OsError> {
        let page = page_size();
        if size == 0 || !size.is_multiple_of(page) || !align.is_power_of_two() {
            return Err(OsError { op: OsOp::Invalid, errno: 0 });
        }
        if self.injected_failure() {
            return Err(OsError { op: OsOp::Map, errno: libc::ENOMEM });
        }
        let align = align.max(page);
        let p = self.map_region(size, align).inspect_err(|_| self.counters.map_failures.add(1))?;
        self.counters.mapped.increase(size as u64);
        Ok(p)
    }

    #[cfg(not(miri))]
    fn map_region(&self, size: usize, align: usize) -> Result<NonNull<u8>, OsError> {
        if align == page_size() {
            self.mmap_raw(core::ptr::null_mut(), size, 0)
        } else {
            self.map_aligned(size, align)
        }
    }

    /// Under Miri: one emulated mapping, counted as one `mmap` (what the hinted path costs).
    #[cfg(miri)]
    fn map_region(&self, size: usize, align: usize) -> Result<NonNull<u8>, OsError> {
        self.counters.mmap_calls.add(1);
        crate::miri::map(size, align).ok_or(OsError { op: OsOp::Map, errno: libc::ENOMEM })
    }

    #[cfg(not(miri))]
    fn map_aligned(&self, size: usize, align: usize) -> Result<NonNull<u8>, OsError> {
        // Hinted attempts: fresh aligned addresses in our window, refused by the kernel if
        // anything is there (another allocator instance, or a foreign mapping); a few tries
        // step past such neighbours before paying for the over-map.
        //
        // Under `--cfg hak_sanitize` (sanitizer builds) there are no hints: the window lies
        // in ThreadSanitizer's shadow memory, and where the sanitizers reserve memory is
        // theirs to choose; the kernel's placement is always inside their application range.
        const HINT_TRIES: usize = 4;
        let span = size.checked_add(align - 1).map(|s| s & !(align - 1));
        if let Some(span) = span.filter(|&s| !cfg!(hak_sanitize) && s <= HINT_WINDOW / 4) {
            for _ in 0..HINT_TRIES {
                let off = self.hint.fetch_add(span, Ordering::Relaxed) % HINT_WINDOW;
                let off = (off + align - 1) & !(align - 1);
                if off + span > HINT_WINDOW {
                    continue;
                }
                let want = (HINT_START + off) as *mut libc::c_void;
                if let Ok(p) = self.mmap_raw(want, size, libc::MAP_FIXED_NOREPLACE) {
                    if (p.as_ptr() as usize).is_multiple_of(align) {
                        return Ok(p);
                    }
                    // A kernel that ignores the flag may place it elsewhere: undo, fall back.
                    // SAFETY: `p` is the `size`-byte mapping just made and not yet shared.
                    let _ = unsafe { self.munmap_raw(p.as_ptr(), size) };
                    break;
                }
            }
        }
        // Fallback: over-map, then trim the unaligned head and the surplus tail.
        let total =
            size.checked_add(align - page_size()).ok_or(OsError { op: OsOp::Invalid, errno: 0 })?;
        let raw = self.mmap_raw(core::ptr::null_mut(), total, 0)?.as_ptr() as usize;
        let base = (raw + align - 1) & !(align - 1);
        let head = base - raw;
        let tail = total - head - size;
        if head > 0 {
            // SAFETY: [raw, raw+head) is part of the mapping just made and holds nothing yet.
            let _ = unsafe { self.munmap_raw(raw as *mut u8, head) };
        }
        if tail > 0 {
            // SAFETY: [base+size, base+size+tail) is the unused end of the same mapping.
            let _ = unsafe { self.munmap_raw((base + size) as *mut u8, tail) };
        }
        // SAFETY: base lies inside a successful mapping, so it is not null.
        Ok(unsafe { NonNull::new_unchecked(base as *mut u8) })
    }

    #[cfg(not(miri))]
    fn mmap_raw(
        &self,
        addr: *mut libc::c_void,
        size: usize,
        extra: libc::c_int,
    ) -> Result<NonNull<u8>, OsError> {
        self.counters.mmap_calls.add(1);
        // SAFETY: an anonymous private mapping touches no existing memory: without MAP_FIXED the
        // kernel never replaces an existing mapping (MAP_FIXED_NOREPLACE fails instead).
        let p = unsafe {
            libc::mmap(
                addr,
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | extra,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(OsError { op: OsOp::Map, errno: errno() });
        }
        // SAFETY: mmap never returns null for a successful non-fixed anonymous mapping.
        Ok(unsafe { NonNull::new_unchecked(p.cast()) })
    }

    /// # Safety
    /// `[ptr, ptr+size)` must be mapped memory nobody uses any more.
    #[cfg(not(miri))]
    unsafe fn munmap_raw(&self, ptr: *mut u8, size: usize) -> Result<(), OsError> {
        self.counters.munmap_calls.add(1);
        // SAFETY: forwarded from the caller's contract.
        if unsafe { libc::munmap(ptr.cast(), size) } != 0 {
            return Err(OsError { op: OsOp::Unmap, errno: errno() });
        }
        Ok(())
    }

    /// # Safety
    /// As the syscall version; under Miri a range that is not wholly mapped aborts.
    #[cfg(miri)]
    unsafe fn munmap_raw(&self, ptr: *mut u8, size: usize) -> Result<(), OsError> {
        self.counters.munmap_calls.add(1);
        // SAFETY: forwarded from the caller's contract.
        unsafe { crate::miri::unmap(ptr, size) };
        Ok(())
    }

    /// Unmaps a region returned by [`Os::map`] (or a page-aligned part of one).
    ///
    /// # Safety
    /// `[ptr, ptr+size)` lies inside mappings made by this `Os`, `size` is a multiple of the
    /// page size, and no one will touch the range again.
    pub unsafe fn unmap(&self, ptr: NonNull<u8>, size: usize) -> Result<(), OsError> {
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.munmap_raw(ptr.as_ptr(), size) }?;
        self.counters.mapped.decrease(size as u64);
        Ok(())
    }

    /// Returns the physical pages of `[ptr, ptr+size)` to the kernel, keeping the addresses
    /// mapped. With [`Decommit::DontNeed`] the range reads back as zero; with
    /// [`Decommit::Free`] its contents are undefined until written.
    ///
    /// # Safety
    /// The range is page-aligned, inside a mapping of this `Os`, and holds nothing anyone
    /// still needs.
    pub unsafe fn decommit(&self, ptr: NonNull<u8>, size: usize) -> Result<(), OsError> {
        let mode = self.decommit_mode();
        let advice = match mode {
            Decommit::DontNeed => libc::MADV_DONTNEED,
            Decommit::Free => libc::MADV_FREE,
        };
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.madvise_raw(ptr, size, advice) }?;
        match mode {
            Decommit::DontNeed => self.counters.decommitted_dontneed.add(size as u64),
            Decommit::Free => self.counters.decommitted_free.add(size as u64),
        }
        Ok(())
    }

    /// Makes a decommitted range usable again. On Linux an anonymous mapping is committed on
    /// first touch, so this makes no syscall; it exists so callers state the transition and a
    /// port to a system with explicit commit has one place to change.
    ///
    /// # Safety
    /// The range is page-aligned and inside a mapping of this `Os`.
    #[inline]
    pub unsafe fn commit(&self, _ptr: NonNull<u8>, _size: usize) -> Result<(), OsError> {
        Ok(())
    }

    /// Advises the kernel to back `[ptr, ptr+size)` with transparent huge pages (`on`) or not.
    ///
    /// # Safety
    /// The range is page-aligned and inside a mapping of this `Os`.
    pub unsafe fn advise_huge(
        &self,
        ptr: NonNull<u8>,
        size: usize,
        on: bool,
    ) -> Result<(), OsError> {
        let advice = if on { libc::MADV_HUGEPAGE } else { libc::MADV_NOHUGEPAGE };
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.madvise_raw(ptr, size, advice) }
    }

    /// # Safety
    /// The range is page-aligned and inside a mapping of this `Os`; `advice` does not destroy
    /// data anyone needs.
    #[cfg(not(miri))]
    unsafe fn madvise_raw(
        &self,
        ptr: NonNull<u8>,
        size: usize,
        advice: i32,
    ) -> Result<(), OsError> {
        self.counters.madvise_calls.add(1);
        // SAFETY: forwarded from the caller's contract.
        if unsafe { libc::madvise(ptr.as_ptr().cast(), size, advice) } != 0 {
            return Err(OsError { op: OsOp::Advise, errno: errno() });
        }
        Ok(())
    }

    /// Under Miri: the decommit advice zero-fills the range (both modes; zero is one of the
    /// contents `MADV_FREE` may leave), huge-page advice only checks that the range is mapped.
    ///
    /// # Safety
    /// As the syscall version.
    #[cfg(miri)]
    unsafe fn madvise_raw(
        &self,
        ptr: NonNull<u8>,
        size: usize,
        advice: i32,
    ) -> Result<(), OsError> {
        self.counters.madvise_calls.add(1);
        if advice == libc::MADV_DONTNEED || advice == libc::MADV_FREE {
            // SAFETY: forwarded from the caller's contract.
            unsafe { crate::miri::decommit(ptr.as_ptr(), size) };
        } else {
            crate::miri::check_mapped(
                ptr.as_ptr(),
                size,
                "hak-os (Miri backend): madvise of a range that is not mapped",
            );
        }
        Ok(())
    }

    /// Resizes a mapping, moving it if needed (`mremap` with `MREMAP_MAYMOVE`); the contents
    /// up to `min(old, new)` are kept and the rest reads as zero. On failure the old mapping
    /// is untouched. The result is page-aligned only: callers needing more alignment check it.
    ///
    /// # Safety
    /// `[ptr, ptr+old_size)` is one whole mapping of this `Os`; both sizes are non-zero page
    /// multiples. On success the old range must not be used again.
    pub unsafe fn remap(
        &self,
        ptr: NonNull<u8>,
        old_size: usize,
        new_size: usize,
    ) -> Result<NonNull<u8>, OsError> {
        let page = page_size();
        if old_size == 0
            || new_size == 0
            || !old_size.is_multiple_of(page)
            || !new_size.is_multiple_of(page)
        {
            return Err(OsError { op: OsOp::Invalid, errno: 0 });
        }
        if self.injected_failure() {
            return Err(OsError { op: OsOp::Remap, errno: libc::ENOMEM });
        }
        self.counters.mremap_calls.add(1);
        // SAFETY: forwarded from the caller's contract.
        let p = unsafe { mremap_maymove(ptr, old_size, new_size) }?;
        if new_size >= old_size {
            self.counters.mapped.increase((new_size - old_size) as u64);
        } else {
            self.counters.mapped.decrease((old_size - new_size) as u64);
        }
        Ok(p)
    }

    /// Moves the pages of `[ptr, ptr+old_size)` to `dst`, resized to `new_size` (`mremap` with
    /// `MREMAP_MAYMOVE | MREMAP_FIXED`). The kernel moves page-table entries, so committed pages
    /// stay committed and nothing is copied or faulted in; the range `[dst, dst+new_size)` is
    /// replaced, and past `min(old, new)` it reads as zero. Unlike [`Os::remap`] the caller
    /// picks the address, so the result keeps whatever alignment `dst` has.
    ///
    /// On failure the destination must be treated as lost: kernels before 6.17 unmap
    /// `[dst, dst+new_size)` before checking the source (a source spanning several kernel
    /// mappings is refused only then), and since 6.17 a move of several mappings can stop
    /// part-way, leaving some of them moved. A source that is one whole mapping is left in
    /// place on failure; callers move only such sources.
    ///
    /// # Safety
    /// `[ptr, ptr+old_size)` lies inside one mapping of this `Os` (a part of it may be moved)
    /// and `[dst, dst+new_size)` inside another (or several) that the caller owns and gives up;
    /// the two ranges do not overlap; all are page multiples. On success the old range must
    /// not be used again.
    pub unsafe fn remap_to(
        &self,
        ptr: NonNull<u8>,
        old_size: usize,
        dst: NonNull<u8>,
        new_size: usize,
    ) -> Result<(), OsError> {
        let page = page_size();
        let (src, to) = (ptr.as_ptr() as usize, dst.as_ptr() as usize);
        if old_size == 0
            || new_size == 0
            || !old_size.is_multiple_of(page)
            || !new_size.is_multiple_of(page)
            || !src.is_multiple_of(page)
            || !to.is_multiple_of(page)
            || (src < to.saturating_add(new_size) && to < src.saturating_add(old_size))
        {
            return Err(OsError { op: OsOp::Invalid, errno: 0 });
        }
        if self.injected_failure() {
            return Err(OsError { op: OsOp::Remap, errno: libc::ENOMEM });
        }
        self.counters.mremap_calls.add(1);
        // SAFETY: forwarded from the caller's contract.
        unsafe { mremap_fixed(ptr, old_size, dst, new_size) }?;
        // The destination was already counted as mapped; the source range is gone.
        self.counters.mapped.decrease(old_size as u64);
        Ok(())
    }
}

/// `mremap(ptr, old, new, MREMAP_MAYMOVE)`.
///
/// # Safety
/// As [`Os::remap`].
#[cfg(not(miri))]
unsafe fn mremap_maymove(
    ptr: NonNull<u8>,
    old_size: usize,
    new_size: usize,
) -> Result<NonNull<u8>, OsError> {
    // SAFETY: forwarded from the caller's contract; MAYMOVE never overwrites other mappings.
    let p = unsafe { libc::mremap(ptr.as_ptr().cast(), old_size, new_size, libc::MREMAP_MAYMOVE) };
    if p == libc::MAP_FAILED {
        return Err(OsError { op: OsOp::Remap, errno: errno() });
    }
    // SAFETY: a successful mremap never returns null.
    Ok(unsafe { NonNull::new_unchecked(p.cast()) })
}

/// Under Miri: a copy into a fresh emulated mapping; the source is unmapped.
///
/// # Safety
/// As [`Os::remap`].
#[cfg(miri)]
unsafe fn mremap_maymove(
    ptr: NonNull<u8>,
    old_size: usize,
    new_size: usize,
) -> Result<NonNull<u8>, OsError> {
    // SAFETY: forwarded from the caller's contract.
    unsafe { crate::miri::remap(ptr.as_ptr(), old_size, new_size) }
        .ok_or(OsError { op: OsOp::Remap, errno: libc::ENOMEM })
}

/// `mremap(ptr, old, new, MREMAP_MAYMOVE | MREMAP_FIXED, dst)`.
///
/// # Safety
/// As [`Os::remap_to`].
#[cfg(not(miri))]
unsafe fn mremap_fixed(
    ptr: NonNull<u8>,
    old_size: usize,
    dst: NonNull<u8>,
    new_size: usize,
) -> Result<(), OsError> {
    // SAFETY: forwarded from the caller's contract: FIXED replaces only `[dst, dst+new)`,
    // which the caller gave up.
    let p = unsafe {
        libc::mremap(
            ptr.as_ptr().cast(),
            old_size,
            new_size,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            dst.as_ptr().cast::<libc::c_void>(),
        )
    };
    if p == libc::MAP_FAILED {
        return Err(OsError { op: OsOp::Remap, errno: errno() });
    }
    Ok(())
}

/// Under Miri: a copy into the destination; the source is unmapped.
///
/// # Safety
/// As [`Os::remap_to`].
#[cfg(miri)]
unsafe fn mremap_fixed(
    ptr: NonNull<u8>,
    old_size: usize,
    dst: NonNull<u8>,
    new_size: usize,
) -> Result<(), OsError> {
    // SAFETY: forwarded from the caller's contract.
    unsafe { crate::miri::remap_to(ptr.as_ptr(), old_size, dst.as_ptr(), new_size) };
    Ok(())
}

/// Takes one from a test-hook counter if it is above zero; whether it did.
fn take_one(n: &AtomicUsize) -> bool {
    n.try_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn remap_to_moves_committed_pages_to_the_chosen_address() {
        let os = Os::new();
        let page = page_size();
        let a = os.map(2 * page, page).unwrap();
        let b = os.map(4 * page, MIB).unwrap();
        // SAFETY: fresh mappings of ours.
        unsafe {
            a.as_ptr().write(7);
            a.as_ptr().add(2 * page - 1).write(9);
            b.as_ptr().add(3 * page).write(5);
        }
        let before = os.stats().mapped.current;
        // SAFETY: `a` is ours and given up; `b` is ours and replaced; they do not overlap.
        unsafe { os.remap_to(a, 2 * page, b, 4 * page) }.unwrap();
        assert_eq!(os.stats().mapped.current, before - 2 * page as u64);
        // SAFETY: `b` now holds `a`'s pages, and fresh zero pages after them.
        unsafe {
            assert_eq!((b.as_ptr().read(), b.as_ptr().add(2 * page - 1).read()), (7, 9));
            assert_eq!(b.as_ptr().add(3 * page).read(), 0, "the replaced range reads as zero");
            assert_eq!(b.as_ptr() as usize % MIB, 0, "the destination keeps its alignment");
            os.unmap(b, 4 * page).unwrap();
        }
        // Overlapping ranges are refused before any syscall.
        let c = os.map(4 * page, page).unwrap();
        // SAFETY: refused without touching anything.
        let r = unsafe {
            os.remap_to(c, 2 * page, NonNull::new_unchecked(c.as_ptr().add(page)), 2 * page)
        };
        assert_eq!(r.unwrap_err().op, OsOp::Invalid);
        // SAFETY: ours.
        unsafe { os.unmap(c, 4 * page).unwrap() };
    }

    #[test]
    fn map_returns_zeroed_writable_aligned_memory() {
        let os = Os::new();
        for &align in &[page_size(), MIB, 2 * MIB, 8 * MIB] {
            let size = 2 * MIB;
            let p = os.map(size, align).expect("map");
            assert_eq!(p.as_ptr() as usize % align, 0, "align {align}");
            // SAFETY: the mapping is `size` bytes and ours.
            let s = unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), size) };
            assert!(s.iter().step_by(4096).all(|&b| b == 0));
            s[0] = 1;
            s[size - 1] = 2;
            // SAFETY: unmapping the region we mapped.
            unsafe { os.unmap(p, size) }.expect("unmap");
        }
        let st = os.stats();
        assert_eq!(st.mapped.current, 0);
        assert_eq!(st.mapped.total, 8 * MIB as u64);
        assert!(st.mmap_calls >= 4);
    }

    #[test]
    fn invalid_arguments_are_rejected_without_a_syscall() {
        let os = Os::new();
        assert_eq!(os.map(0, 4096).unwrap_err().op, OsOp::Invalid);
        assert_eq!(os.map(100, 4096).unwrap_err().op, OsOp::Invalid);
        assert_eq!(os.map(4096, 3000).unwrap_err().op, OsOp::Invalid);
        assert_eq!(os.stats().mmap_calls, 0);
    }

    #[test]
    fn refused_mapping_is_an_error_with_errno() {
        let os = Os::new();
        // More than the 47-bit address space: the kernel must refuse.
        let err = os.map(1usize << 50, 4096).unwrap_err();
        assert_eq!(err.op, OsOp::Map);
        assert_eq!(err.errno, libc::ENOMEM);
        assert_eq!(os.stats().map_failures, 1);
    }

    #[test]
    fn injected_failures_can_start_after_some_calls() {
        let os = Os::new();
        os.fail_maps_after(1, 1);
        let p = os.map(4096, 4096).expect("the first map is let through");
        assert!(os.map(4096, 4096).is_err(), "the second fails");
        let q = os.map(4096, 4096).expect("then mapping works again");
        // SAFETY: unmapping what we mapped.
        unsafe {
            os.unmap(p, 4096).unwrap();
            os.unmap(q, 4096).unwrap();
        }
    }

    #[test]
    fn injected_failures_fail_exactly_n_maps() {
        let os = Os::new();
        os.fail_next_maps(2);
        assert_eq!(os.map(4096, 4096).unwrap_err(), OsError { op: OsOp::Map, errno: libc::ENOMEM });
        assert!(os.map(4096, 2 * MIB).is_err());
        let p = os.map(4096, 4096).expect("third map succeeds");
        // SAFETY: unmapping what we mapped.
        unsafe { os.unmap(p, 4096) }.unwrap();
        assert_eq!(os.stats().mmap_calls, 1);
    }

    #[test]
    fn decommit_dontneed_zeroes_and_counts() {
        let os = Os::new();
        let size = 16 * 4096;
        let p = os.map(size, 4096).unwrap();
        // SAFETY: the mapping is ours and `size` bytes long.
        unsafe {
            p.as_ptr().write_bytes(0xAB, size);
            os.decommit(p, size).unwrap();
            assert_eq!(*p.as_ptr().add(100), 0);
            os.commit(p, size).unwrap();
            *p.as_ptr() = 7;
            os.unmap(p, size).unwrap();
        }
        let st = os.stats();
        assert_eq!(st.madvise_calls, 1);
        assert_eq!(st.decommitted_dontneed, size as u64);
        assert_eq!(st.decommitted_free, 0);
    }

    #[test]
    fn decommit_free_is_reported_separately() {
        let os = Os::new();
        os.set_decommit(Decommit::Free);
        let p = os.map(4096, 4096).unwrap();
        // SAFETY: the mapping is ours.
        unsafe {
            os.decommit(p, 4096).unwrap();
            os.unmap(p, 4096).unwrap();
        }
        assert_eq!(os.stats().decommitted_free, 4096);
        assert_eq!(os.stats().decommitted_dontneed, 0);
    }

    #[test]
    fn remap_grows_keeping_contents() {
        let os = Os::new();
        let p = os.map(4096, 4096).unwrap();
        // SAFETY: the mapping is ours; after remap only the new one is used.
        unsafe {
            p.as_ptr().write_bytes(0x5A, 4096);
            let q = os.remap(p, 4096, 64 * 4096).unwrap();
            assert_eq!(*q.as_ptr().add(4095), 0x5A);
            assert_eq!(*q.as_ptr().add(4096), 0);
            assert_eq!(os.stats().mapped.current, 64 * 4096);
            os.unmap(q, 64 * 4096).unwrap();
        }
    }

    #[test]
    fn unmapping_part_of_a_mapping_keeps_the_rest() {
        let os = Os::new();
        let page = page_size();
        let p = os.map(4 * page, page).unwrap();
        // SAFETY: the mapping is ours; only the pages still mapped are touched after each unmap.
        unsafe {
            p.as_ptr().write_bytes(3, 4 * page);
            os.unmap(NonNull::new_unchecked(p.as_ptr().add(page)), 2 * page).unwrap();
            assert_eq!(os.stats().mapped.current, 2 * page as u64);
            assert_eq!((*p.as_ptr(), *p.as_ptr().add(4 * page - 1)), (3, 3));
            p.as_ptr().add(3 * page).write(4);
            os.unmap(p, page).unwrap();
            assert_eq!(*p.as_ptr().add(3 * page), 4, "the last page is still mapped");
            os.unmap(NonNull::new_unchecked(p.as_ptr().add(3 * page)), page).unwrap();
        }
        assert_eq!(os.stats().mapped.current, 0);
        assert_eq!(os.stats().munmap_calls, 3);
    }

    #[test]
    fn alignment_beyond_half_a_gib_is_honoured() {
        // Larger than any one allocation Miri can align, so its backend carves it.
        let os = Os::new();
        let align = 1 << 30;
        let p = os.map(2 * page_size(), align).unwrap();
        assert_eq!(p.as_ptr() as usize % align, 0);
        // SAFETY: the mapping is ours and two pages long.
        unsafe {
            assert_eq!(*p.as_ptr().add(2 * page_size() - 1), 0);
            p.as_ptr().write(1);
            os.unmap(p, 2 * page_size()).unwrap();
        }
        assert_eq!(os.stats().mapped.current, 0);
    }

    #[test]
    fn huge_page_advice_is_accepted_on_an_aligned_region() {
        let os = Os::new();
        let p = os.map(2 * MIB, 2 * MIB).unwrap();
        // SAFETY: the mapping is ours. THP may be disabled system-wide; madvise still accepts it
        // unless the kernel lacks THP entirely (EINVAL), which we tolerate.
        unsafe {
            let r = os.advise_huge(p, 2 * MIB, true);
            assert!(r.is_ok() || r.unwrap_err().errno == libc::EINVAL);
            os.unmap(p, 2 * MIB).unwrap();
        }
    }
}
