//! Read-only questions to the kernel about memory: which pages of a range are resident
//! ([`Os::resident_pages`], `mincore`) and the transparent huge page mode ([`thp_mode`]).
//! Neither changes any mapping; the big tier uses both to decide huge-page advice from what a
//! program does with its blocks rather than from their size alone.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::os::{Os, OsError, OsOp};
use crate::platform::page_size;

/// The kernel's transparent huge page mode, from `/sys/kernel/mm/transparent_hugepage/enabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ThpMode {
    /// Every anonymous mapping may get huge pages unless advised `MADV_NOHUGEPAGE`.
    Always = 1,
    /// Only ranges advised `MADV_HUGEPAGE` get huge pages.
    Madvise = 2,
    /// No huge pages (also: the file is missing or unreadable, or under Miri).
    Never = 3,
}

/// 0 until [`thp_mode`] has read the file once.
static THP_MODE: AtomicU8 = AtomicU8::new(0);

/// The transparent huge page mode, read from sysfs on the first call (three syscalls, no
/// allocation) and remembered; a file that is missing or does not parse counts as
/// [`ThpMode::Never`]. Racing first calls both read the file, with the same answer.
pub fn thp_mode() -> ThpMode {
    match THP_MODE.load(Ordering::Relaxed) {
        1 => return ThpMode::Always,
        2 => return ThpMode::Madvise,
        3 => return ThpMode::Never,
        _ => {}
    }
    let mode = read_thp_mode();
    THP_MODE.store(mode as u8, Ordering::Relaxed);
    mode
}

#[cfg(not(miri))]
fn read_thp_mode() -> ThpMode {
    const PATH: &[u8] = b"/sys/kernel/mm/transparent_hugepage/enabled\0";
    let mut buf = [0u8; 96];
    // SAFETY: `PATH` is NUL-terminated; the flags ask for nothing but reading.
    let fd = unsafe { libc::open(PATH.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return ThpMode::Never;
    }
    // SAFETY: `buf` is writable for its whole length; `fd` is ours.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    if n <= 0 {
        return ThpMode::Never;
    }
    parse_thp_mode(buf.get(..n as usize).unwrap_or(&[]))
}

#[cfg(miri)]
fn read_thp_mode() -> ThpMode {
    ThpMode::Never
}

/// The bracketed word of a sysfs mode line such as `always [madvise] never`.
#[cfg_attr(miri, allow(dead_code))]
fn parse_thp_mode(line: &[u8]) -> ThpMode {
    let Some(open) = line.iter().position(|&b| b == b'[') else { return ThpMode::Never };
    let rest = line.get(open + 1..).unwrap_or(&[]);
    if rest.starts_with(b"always]") {
        ThpMode::Always
    } else if rest.starts_with(b"madvise]") {
        ThpMode::Madvise
    } else {
        ThpMode::Never
    }
}

impl Os {
    /// How many pages of `[ptr, ptr+len)` are resident (`mincore`): pages the program touched
    /// that were not given back since, or, for a range backed by huge pages, every page of a
    /// huge page any byte of which was touched. `ptr` must be page-aligned; `len` is rounded up
    /// to whole pages. The work is one syscall per 1024 pages, so callers bound `len`.
    ///
    /// Safe for any range: the kernel reads its page tables and touches no memory; a range
    /// that is not (wholly) mapped fails with `ENOMEM`.
    pub fn resident_pages(&self, ptr: NonNull<u8>, len: usize) -> Result<usize, OsError> {
        let page = page_size();
        if !(ptr.as_ptr() as usize).is_multiple_of(page) {
            return Err(OsError { op: OsOp::Invalid, errno: 0 });
        }
        mincore_count(ptr, len.div_ceil(page), page)
    }
}

#[cfg(not(miri))]
fn mincore_count(ptr: NonNull<u8>, pages: usize, page: usize) -> Result<usize, OsError> {
    const CHUNK: usize = 1024;
    let mut vec = [0u8; CHUNK];
    let (mut done, mut resident) = (0, 0);
    while done < pages {
        let n = (pages - done).min(CHUNK);
        let at = ptr.as_ptr().wrapping_add(done * page);
        // SAFETY: mincore writes one byte per page of the range into `vec`, which holds
        // `n <= CHUNK` bytes, and reads nothing but page tables.
        let rc = unsafe { libc::mincore(at.cast(), n * page, vec.as_mut_ptr()) };
        if rc != 0 {
            return Err(OsError { op: OsOp::Probe, errno: crate::platform::errno() });
        }
        resident += vec.iter().take(n).filter(|&&b| b & 1 != 0).count();
        done += n;
    }
    Ok(resident)
}

/// Miri cannot ask the kernel: residency is unknown.
#[cfg(miri)]
fn mincore_count(_ptr: NonNull<u8>, _pages: usize, _page: usize) -> Result<usize, OsError> {
    Err(OsError { op: OsOp::Probe, errno: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bracketed_word_is_the_mode() {
        assert_eq!(parse_thp_mode(b"always [madvise] never\n"), ThpMode::Madvise);
        assert_eq!(parse_thp_mode(b"[always] madvise never\n"), ThpMode::Always);
        assert_eq!(parse_thp_mode(b"always madvise [never]\n"), ThpMode::Never);
        assert_eq!(parse_thp_mode(b""), ThpMode::Never);
        assert_eq!(parse_thp_mode(b"garbage [x"), ThpMode::Never);
        let m = thp_mode();
        assert_eq!(thp_mode(), m, "read once, then remembered");
    }

    #[cfg(not(miri))]
    #[test]
    fn resident_pages_counts_the_pages_written() {
        let os = Os::new();
        let page = page_size();
        let len = 3000 * page; // more than one chunk
        let p = os.map(len, page).unwrap();
        assert_eq!(os.resident_pages(p, len), Ok(0));
        for i in [0, 1, 1500, 2999] {
            // SAFETY: inside a fresh mapping of ours, not advised for huge pages.
            unsafe { p.as_ptr().add(i * page).write(1) };
        }
        assert_eq!(os.resident_pages(p, len), Ok(4));
        assert_eq!(os.resident_pages(p, page), Ok(1));
        let odd = NonNull::new(p.as_ptr().wrapping_add(1)).unwrap();
        assert_eq!(os.resident_pages(odd, page).map_err(|e| e.op), Err(OsOp::Invalid));
        // SAFETY: ours, unused from here on.
        unsafe { os.unmap(p, len) }.unwrap();
        assert_eq!(os.resident_pages(p, len).map_err(|e| e.errno), Err(libc::ENOMEM), "unmapped");
    }
}
