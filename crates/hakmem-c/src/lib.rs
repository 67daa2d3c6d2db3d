//! hakmem's C ABI: `malloc`, `free`, `calloc`, `realloc` and the rest of the C library's
//! allocation family, exported unmangled with glibc's behaviour, plus hakmem's own C API
//! (`hakmem_stats_print`, `hakmem_trim`, `hakmem_flush_thread_cache`, `hakmem_stat`), all
//! declared in `include/hakmem.h`.
//!
//! Two ways in:
//! - `libhakmem.so` / `libhakmem.a` (crate `libhakmem`, built from this one) for C and C++
//!   programs: `LD_PRELOAD=.../libhakmem.so program`, or link with `-lhakmem`.
//! - This crate as a Rust dependency: a Rust binary that links it exports `malloc` and friends
//!   itself, so its C dependencies (and libc's own internal allocations) use the same hakmem
//!   instance as its Rust code, one heap instead of two. Add `use hakmem_c as _;` so the crate
//!   is linked, and keep `#[global_allocator] static A: hakmem::Hakmem = hakmem::Hakmem;` for
//!   the Rust side (sized frees skip the registry lookup).
//!
//! Everything forwards to [`hakmem::raw`], which documents the behaviour (errno, zero sizes,
//! refused pointers); the functions here add the C-level argument rules (`posix_memalign`'s
//! `EINVAL`, `reallocarray`'s overflow, `memalign` rounding) and the glibc extras. README's
//! "Use it from C" and "Misuse" sections and `docs/c.md` describe the whole ABI.
//!
//! Invariants: no function here allocates through anything but hakmem itself or panics; none
//! needs libc to be initialised (the first call may come from the dynamic loader).
//!
//! Concurrency: as [`hakmem::raw`]: any thread, any time; a C thread's cache is flushed at its
//! exit by the facade's pthread key.
#![deny(unsafe_op_in_unsafe_fn)]
#![no_std]

use core::ffi::{c_char, c_int, c_void, CStr};
use core::ptr;

use hakmem::raw;

/// `malloc(size)`: at least `size` bytes aligned to 16, or null with `errno = ENOMEM`.
/// `malloc(0)` returns a unique minimal block, as glibc's does.
#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    raw::malloc(size).cast()
}

/// `free(ptr)`: `ptr` null does nothing; a pointer hakmem does not know, or one into the
/// middle of a mid or big block, is refused with one line on stderr.
///
/// # Safety
/// `ptr` is null or a live block from this allocator, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    // SAFETY: forwarded.
    unsafe { raw::free(ptr.cast()) }
}

/// `calloc(n, size)`: `n * size` zeroed bytes; null with `ENOMEM` on overflow or failure.
#[no_mangle]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    raw::calloc(n, size).cast()
}

/// `realloc(ptr, size)`: see [`hakmem::raw::realloc`] (`realloc(p, 0)` frees `p` and returns
/// null, as glibc's does).
///
/// # Safety
/// `ptr` is null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { raw::realloc(ptr.cast(), size).cast() }
}

/// `reallocarray(ptr, n, size)`: `realloc(ptr, n * size)`, or null with `ENOMEM` (and `ptr`
/// untouched) if the product overflows.
///
/// # Safety
/// As for [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn reallocarray(ptr: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: forwarded.
        Some(total) => unsafe { realloc(ptr, total) },
        None => {
            raw::set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `posix_memalign(out, align, size)`: 0 and a block in `*out`; `EINVAL` if `align` is not a
/// power of two multiple of `sizeof(void *)`; `ENOMEM` if memory runs out. `*out` is written
/// only on success.
///
/// # Safety
/// `out` is valid for a pointer-sized write.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    let word = core::mem::size_of::<*mut c_void>();
    if align == 0 || !align.is_multiple_of(word) || !(align / word).is_power_of_two() {
        return libc::EINVAL;
    }
    let p = raw::aligned_alloc(align, size);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller's contract.
    unsafe { out.write(p.cast()) };
    0
}

/// `aligned_alloc(align, size)`: a block aligned to `align`, which must be a power of two
/// (else null with `EINVAL`, as glibc 2.38 and later; C17 allows any size).
#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        raw::set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    raw::aligned_alloc(align, size).cast()
}

/// `memalign(align, size)`, glibc's rules: an alignment that is not a power of two is rounded
/// up to one; one above `SIZE_MAX / 2 + 1` fails with `EINVAL`.
#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    if align > usize::MAX / 2 + 1 {
        raw::set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    raw::aligned_alloc(align.max(1).next_power_of_two(), size).cast()
}

/// `valloc(size)`: `memalign(page size, size)`.
#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    raw::aligned_alloc(page_size(), size).cast()
}

/// `pvalloc(size)`: page-aligned, `size` rounded up to whole pages (at least one).
#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = page_size();
    let Some(rounded) = size.max(1).checked_next_multiple_of(page) else {
        raw::set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    raw::aligned_alloc(page, rounded).cast()
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions; glibc answers from the loader's data.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// `malloc_usable_size(ptr)`: the bytes usable at `ptr`; 0 for null or a foreign pointer.
///
/// # Safety
/// `ptr` is null, foreign, or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    // SAFETY: forwarded.
    unsafe { raw::usable_size(ptr.cast()) }
}

/// C23 `free_sized(ptr, size)`: frees like [`free`]; the size is not needed (the registry
/// knows the block) and not trusted.
///
/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn free_sized(ptr: *mut c_void, _size: usize) {
    // SAFETY: forwarded.
    unsafe { raw::free(ptr.cast()) }
}

/// C23 `free_aligned_sized(ptr, align, size)`: frees like [`free`].
///
/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(ptr: *mut c_void, _align: usize, _size: usize) {
    // SAFETY: forwarded.
    unsafe { raw::free(ptr.cast()) }
}

/// glibc's internal name for [`malloc`], which some programs call directly.
#[no_mangle]
pub extern "C" fn __libc_malloc(size: usize) -> *mut c_void {
    raw::malloc(size).cast()
}

/// glibc's internal name for [`free`].
///
/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn __libc_free(ptr: *mut c_void) {
    // SAFETY: forwarded.
    unsafe { raw::free(ptr.cast()) }
}

/// glibc's internal name for [`calloc`].
#[no_mangle]
pub extern "C" fn __libc_calloc(n: usize, size: usize) -> *mut c_void {
    raw::calloc(n, size).cast()
}

/// glibc's internal name for [`realloc`].
///
/// # Safety
/// As for [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { raw::realloc(ptr.cast(), size).cast() }
}

/// glibc's internal name for [`memalign`].
#[no_mangle]
pub extern "C" fn __libc_memalign(align: usize, size: usize) -> *mut c_void {
    memalign(align, size)
}

/// glibc's internal name for [`valloc`].
#[no_mangle]
pub extern "C" fn __libc_valloc(size: usize) -> *mut c_void {
    valloc(size)
}

/// glibc's internal name for [`pvalloc`].
#[no_mangle]
pub extern "C" fn __libc_pvalloc(size: usize) -> *mut c_void {
    pvalloc(size)
}

/// `malloc_trim(pad)`: returns unused memory to the OS ([`hakmem::trim`]: the calling
/// thread's cache, empty slabs, expired cached SuperSlabs, mid chunks and big blocks). `pad` is
/// ignored. Returns 1 if memory was released (an `munmap` or `madvise` happened), else 0.
#[no_mangle]
pub extern "C" fn malloc_trim(_pad: usize) -> c_int {
    let saved = raw::errno();
    let released = |s: hakmem::Stats| s.os.munmap_calls + s.os.madvise_calls;
    let before = released(hakmem::stats());
    hakmem::trim();
    let after = released(hakmem::stats());
    raw::set_errno(saved);
    c_int::from(after > before)
}

/// `mallopt(param, value)`: hakmem takes its settings from `HAKMEM_*` variables at start-up;
/// every parameter is accepted and ignored, and 1 (success) is returned so programs that
/// tune glibc's malloc keep running.
#[no_mangle]
pub extern "C" fn mallopt(_param: c_int, _value: c_int) -> c_int {
    1
}

/// glibc's `struct mallinfo2`, filled from hakmem's statistics (see [`mallinfo2`]).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MallInfo2 {
    /// Bytes mapped by hakmem (every tier, metadata included).
    pub arena: usize,
    /// Free chunks: hakmem reports 0.
    pub ordblks: usize,
    /// Free fastbin blocks: 0.
    pub smblks: usize,
    /// Live big blocks (one mapping each).
    pub hblks: usize,
    /// Bytes of live big blocks.
    pub hblkhd: usize,
    /// Peak bytes mapped.
    pub usmblks: usize,
    /// Bytes in freed fastbin blocks: 0.
    pub fsmblks: usize,
    /// Bytes in use by the program (tiny blocks out of their slabs, including thread caches;
    /// mid bytes in use; big bytes live).
    pub uordblks: usize,
    /// `arena - uordblks` (free bytes hakmem holds, and metadata).
    pub fordblks: usize,
    /// Bytes of cached (freed, still mapped) big blocks.
    pub keepcost: usize,
}

fn info() -> MallInfo2 {
    let s = hakmem::stats();
    let used = s.tiny.bytes_held + s.mid.bytes_in_use.current + s.big.live_bytes.current;
    let arena = s.os.mapped.current;
    MallInfo2 {
        arena: arena as usize,
        hblks: s.big.live_blocks.current as usize,
        hblkhd: s.big.live_bytes.current as usize,
        usmblks: s.os.mapped.peak as usize,
        uordblks: used as usize,
        fordblks: arena.saturating_sub(used) as usize,
        keepcost: s.big.cached_bytes as usize,
        ..MallInfo2::default()
    }
}

/// `mallinfo2()`: hakmem's statistics in glibc's structure (fields as documented on
/// [`MallInfo2`]).
#[no_mangle]
pub extern "C" fn mallinfo2() -> MallInfo2 {
    let saved = raw::errno();
    let i = info();
    raw::set_errno(saved);
    i
}

/// glibc's deprecated `struct mallinfo`: [`MallInfo2`] with `int` fields (saturated).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MallInfo {
    /// See [`MallInfo2::arena`].
    pub arena: c_int,
    /// See [`MallInfo2::ordblks`].
    pub ordblks: c_int,
    /// See [`MallInfo2::smblks`].
    pub smblks: c_int,
    /// See [`MallInfo2::hblks`].
    pub hblks: c_int,
    /// See [`MallInfo2::hblkhd`].
    pub hblkhd: c_int,
    /// See [`MallInfo2::usmblks`].
    pub usmblks: c_int,
    /// See [`MallInfo2::fsmblks`].
    pub fsmblks: c_int,
    /// See [`MallInfo2::uordblks`].
    pub uordblks: c_int,
    /// See [`MallInfo2::fordblks`].
    pub fordblks: c_int,
    /// See [`MallInfo2::keepcost`].
    pub keepcost: c_int,
}

/// `mallinfo()`: [`mallinfo2`] with every field saturated to `int`.
#[no_mangle]
pub extern "C" fn mallinfo() -> MallInfo {
    let i = mallinfo2();
    let c = |v: usize| c_int::try_from(v).unwrap_or(c_int::MAX);
    MallInfo {
        arena: c(i.arena),
        ordblks: c(i.ordblks),
        smblks: c(i.smblks),
        hblks: c(i.hblks),
        hblkhd: c(i.hblkhd),
        usmblks: c(i.usmblks),
        fsmblks: c(i.fsmblks),
        uordblks: c(i.uordblks),
        fordblks: c(i.fordblks),
        keepcost: c(i.keepcost),
    }
}

/// `malloc_stats()`: prints hakmem's statistics to stderr (the `HAKMEM_STATS=1` report).
#[no_mangle]
pub extern "C" fn malloc_stats() {
    raw::print_stats();
}

/// `hakmem_stats_print()`: the same report as [`malloc_stats`].
#[no_mangle]
pub extern "C" fn hakmem_stats_print() {
    raw::print_stats();
}

/// `hakmem_trim()`: [`hakmem::trim`].
#[no_mangle]
pub extern "C" fn hakmem_trim() {
    let saved = raw::errno();
    hakmem::trim();
    raw::set_errno(saved);
}

/// `hakmem_flush_thread_cache()`: [`hakmem::flush_thread_cache`].
#[no_mangle]
pub extern "C" fn hakmem_flush_thread_cache() {
    let saved = raw::errno();
    hakmem::flush_thread_cache();
    raw::set_errno(saved);
}

/// `hakmem_stat(name)`: one counter of [`hakmem::stats`] by name (see `include/hakmem.h` for
/// the names); `UINT64_MAX` for an unknown name or null.
///
/// # Safety
/// `name` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn hakmem_stat(name: *const c_char) -> u64 {
    if name.is_null() {
        return u64::MAX;
    }
    // SAFETY: the caller's contract.
    let name = unsafe { CStr::from_ptr(name) }.to_bytes();
    let saved = raw::errno();
    let v = stat_by_name(&hakmem::stats(), name).unwrap_or(u64::MAX);
    raw::set_errno(saved);
    v
}

/// The short names `hakmem_stat` knew before it took the report's dotted names, each with the
/// dotted name it stands for (a gauge's bare name is its current value).
pub const STAT_ALIASES: &[(&str, &str)] = &[
    ("mmap_calls", "os.mmap_calls"),
    ("munmap_calls", "os.munmap_calls"),
    ("madvise_calls", "os.madvise_calls"),
    ("mremap_calls", "os.mremap_calls"),
    ("mapped_bytes", "os.mapped"),
    ("mapped_bytes_peak", "os.mapped.peak"),
    ("tiny_bytes_held", "tiny.bytes_held"),
    ("tiny_remote_frees", "tiny.remote_frees"),
    ("superslabs_live", "pool.superslabs_live"),
    ("mid_bytes_in_use", "mid.bytes_in_use"),
    ("big_bytes_live", "big.live_bytes"),
    ("big_blocks_live", "big.live_blocks"),
    ("big_invalid_frees", "big.invalid_frees"),
];

/// The value of counter `name`: a short name of [`STAT_ALIASES`], or any dotted name the
/// `HAKMEM_STATS=1` report prints (`pool.cache.hits`, `os.mapped.peak`, ...).
pub fn stat_by_name(s: &hakmem::Stats, name: &[u8]) -> Option<u64> {
    let dotted = STAT_ALIASES
        .iter()
        .find(|(short, _)| short.as_bytes() == name)
        .map_or(name, |(_, dotted)| dotted.as_bytes());
    s.value(dotted)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn every_stat_name_is_known() {
        let s = hakmem::stats();
        for (n, _) in STAT_ALIASES {
            assert!(stat_by_name(&s, n.as_bytes()).is_some(), "{n}");
        }
        // The short names read the fields they always read.
        assert_eq!(stat_by_name(&s, b"mapped_bytes"), Some(s.os.mapped.current));
        assert_eq!(stat_by_name(&s, b"mapped_bytes_peak"), Some(s.os.mapped.peak));
        assert_eq!(stat_by_name(&s, b"superslabs_live"), Some(s.pool.superslabs_live));
        assert_eq!(stat_by_name(&s, b"big_bytes_live"), Some(s.big.live_bytes.current));
        assert_eq!(stat_by_name(&s, b"nope"), None);
    }

    #[test]
    fn every_name_of_the_report_is_known_with_its_value() {
        use hakmem::stat::{StatPath, StatValue};
        let s = hakmem::stats();
        let mut n = 0;
        s.visit(StatPath::root(), &mut |p, v| {
            let mut name = std::vec::Vec::new();
            for (i, part) in p.parts().iter().enumerate() {
                if i > 0 {
                    name.push(b'.');
                }
                name.extend_from_slice(part.as_bytes());
            }
            assert_eq!(
                stat_by_name(&s, &name),
                Some(v),
                "{}",
                std::string::String::from_utf8_lossy(&name)
            );
            n += 1;
        });
        assert!(n > 50, "the report names every layer's counters ({n})");
        assert_eq!(stat_by_name(&s, b"os.mmap_calls"), Some(s.os.mmap_calls));
        assert_eq!(stat_by_name(&s, b"pool.cache.hits"), Some(s.pool.cache.hits));
        assert_eq!(stat_by_name(&s, b"os.mapped.peak"), Some(s.os.mapped.peak));
        for bad in [&b"os"[..], b"os.", b".os.mmap_calls", b"os.mmap_calls.x", b"osmmap_calls"] {
            assert_eq!(
                stat_by_name(&s, bad),
                None,
                "{:?}",
                std::string::String::from_utf8_lossy(bad)
            );
        }
    }
}
