//! Checks that never unwind.
//!
//! A `panic!` (and so `assert!`, `debug_assert!`, `unwrap`) inside an allocator does not report
//! and stop: the panic machinery allocates its payload, which calls back into the allocator,
//! often from a slow path that holds one of its locks, and the process hangs. Every
//! consistency check on a path reachable from the allocator uses [`check!`] instead: in builds
//! with debug assertions a failed check writes one line to stderr (without allocating) and
//! aborts the process; in release builds it compiles to nothing, like `debug_assert!`.
//! [`fatal`] is the unconditional form, for states from which no sane continuation exists.

/// Writes `hakmem: internal check failed: MSG at FILE:LINE` to stderr and aborts. Never
/// allocates, never unwinds.
#[cold]
#[inline(never)]
pub fn fatal_at(msg: &str, file: &str, line: u32) -> ! {
    write_all(b"hakmem: internal check failed: ");
    write_all(msg.as_bytes());
    write_all(b" at ");
    write_all(file.as_bytes());
    write_all(b":");
    let mut buf = [0u8; 10];
    let mut i = buf.len();
    let mut v = line;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    write_all(&buf[i..]);
    write_all(b"\n");
    // SAFETY: abort has no preconditions; it raises SIGABRT and never returns.
    unsafe { libc::abort() }
}

/// [`fatal_at`] with the caller's location.
#[cold]
#[inline(never)]
#[track_caller]
pub fn fatal(msg: &str) -> ! {
    let loc = core::panic::Location::caller();
    fatal_at(msg, loc.file(), loc.line())
}

fn write_all(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: the pointer and length describe the live slice.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            // SAFETY: __errno_location always returns this thread's errno.
            if n < 0 && unsafe { *libc::__errno_location() } == libc::EINTR {
                continue;
            }
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// `check!(cond, "message")`: in builds with debug assertions, aborts with the message and
/// location on stderr if `cond` is false (see the module docs); nothing in release builds.
/// `check!(a == b, ...)` style only: no formatting, which would allocate.
#[macro_export]
macro_rules! check {
    ($cond:expr, $msg:literal $(,)?) => {
        if cfg!(debug_assertions) && !$cond {
            $crate::fatal_at(concat!($msg, " (", stringify!($cond), ")"), file!(), line!());
        }
    };
    ($cond:expr $(,)?) => {
        if cfg!(debug_assertions) && !$cond {
            $crate::fatal_at(stringify!($cond), file!(), line!());
        }
    };
}
