//! Reading `HAKMEM_*` variables before libc has set up `environ`.
//!
//! hakmem reads its options at its first allocation. In a C program that can happen before
//! libc's own initialisation has stored the environment in `environ`: the dynamic loader
//! allocates once relocation is done, and so may `.preinit_array` functions and the
//! constructors of libraries initialised before libc. There `getenv` answers "not set" for
//! everything, so [`scan_initial`] reads the initial environment from `/proc/self/environ`
//! instead, with `open`/`read` into a stack buffer (no allocation, no libc state needed).
//! Once `environ` is set ([`getenv_works`]), `getenv` is used, which also sees variables a
//! program set itself before its first allocation.
//!
//! Without `/proc` mounted, options read that early keep their defaults.

use core::ffi::CStr;

/// Whether libc has published the environment (`environ` is non-null).
pub(crate) fn getenv_works() -> bool {
    // SAFETY: reading the pointer value of libc's `environ` (set once at start-up, before
    // threads exist, or by the program's own setenv calls).
    unsafe { !ptr_read_volatile_environ().is_null() }
}

/// # Safety
/// Reads libc's `environ` pointer.
unsafe fn ptr_read_volatile_environ() -> *mut *mut core::ffi::c_char {
    // SAFETY: `environ` is a plain pointer-sized global of libc; a volatile read keeps the
    // compiler from assuming anything about it.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(libc::environ)) }
}

/// The longest `NAME=VALUE` entry [`scan_initial`] reports whole; longer ones are reported with
/// `None` as their value (no hakmem option name or valid value comes near it).
const ENTRY_MAX: usize = 96;

/// Calls `f(name, value)` for every `HAKMEM_*` entry of the process's initial environment
/// (`/proc/self/environ`), `value` being `None` if the entry is longer than [`ENTRY_MAX`]
/// bytes. Returns false if the file could not be read.
pub(crate) fn scan_initial(mut f: impl FnMut(&[u8], Option<&[u8]>)) -> bool {
    const PATH: &CStr = c"/proc/self/environ";
    // SAFETY: a NUL-terminated path; the flags ask for nothing that allocates.
    let fd = unsafe { libc::open(PATH.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    let mut buf = [0u8; 1024];
    let mut entry = [0u8; ENTRY_MAX];
    let mut len = 0usize;
    let mut long = false;
    let mut ok = true;
    loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            if hak_os_errno() == libc::EINTR {
                continue;
            }
            ok = false;
            break;
        }
        if n == 0 {
            break;
        }
        for &b in &buf[..n as usize] {
            if b == 0 {
                entry_done(&entry[..len], long, &mut f);
                len = 0;
                long = false;
            } else if len < ENTRY_MAX {
                entry[len] = b;
                len += 1;
            } else {
                long = true;
            }
        }
    }
    if len > 0 {
        entry_done(&entry[..len], long, &mut f);
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    ok
}

fn entry_done(e: &[u8], long: bool, f: &mut impl FnMut(&[u8], Option<&[u8]>)) {
    if !e.starts_with(b"HAKMEM_") {
        return;
    }
    let Some(eq) = e.iter().position(|&b| b == b'=') else { return };
    f(&e[..eq], if long { None } else { Some(&e[eq + 1..]) });
}

fn hak_os_errno() -> i32 {
    // SAFETY: __errno_location always returns this thread's errno.
    unsafe { *libc::__errno_location() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_environment_is_readable_and_parsed_per_entry() {
        // The test process's own environment: whatever HAKMEM_* variables it has must be
        // reported with the value getenv gives (nobody sets them during the test run).
        let mut seen = 0;
        let ok = scan_initial(|name, value| {
            seen += 1;
            let mut cname = [0u8; ENTRY_MAX + 1];
            cname[..name.len()].copy_from_slice(name);
            // SAFETY: a NUL-terminated name.
            let v = unsafe { libc::getenv(cname.as_ptr().cast()) };
            if let (false, Some(value)) = (v.is_null(), value) {
                // SAFETY: getenv returned a C string.
                assert_eq!(unsafe { CStr::from_ptr(v) }.to_bytes(), value);
            }
        });
        assert!(ok, "/proc/self/environ readable");
        assert!(seen < 1000);
        assert!(getenv_works());
    }

    #[test]
    fn entries_are_split_and_filtered() {
        let mut got = std::vec::Vec::new();
        let mut f = |n: &[u8], v: Option<&[u8]>| got.push((n.to_vec(), v.map(<[u8]>::to_vec)));
        entry_done(b"PATH=/bin", false, &mut f);
        entry_done(b"HAKMEM_STATS=1", false, &mut f);
        entry_done(b"HAKMEM_X", false, &mut f);
        entry_done(b"HAKMEM_LONG=123", true, &mut f);
        assert_eq!(
            got,
            [(b"HAKMEM_STATS".to_vec(), Some(b"1".to_vec())), (b"HAKMEM_LONG".to_vec(), None)]
        );
    }
}
