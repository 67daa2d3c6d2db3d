//! hakmem's OS box (layer 1): the only code that asks the kernel for memory.
//!
//! What it offers:
//! - [`Os`]: one instance per allocator. [`Os::map`] maps a zeroed, read-write region of a given
//!   size and power-of-two alignment; [`Os::unmap`], [`Os::decommit`], [`Os::commit`],
//!   [`Os::advise_huge`], [`Os::remap`]; [`Os::stats`] counts every syscall it makes;
//!   [`Os::fail_next_maps`] is the test hook that makes the next N mappings fail.
//! - [`Decommit`]: `MADV_DONTNEED` (default: RSS falls at once) or `MADV_FREE` (cheaper, RSS
//!   falls only under memory pressure, so it is reported separately in the stats).
//! - [`Os::resident_pages`] (`mincore`) and [`thp_mode`] ([`ThpMode`]): read-only questions
//!   about which pages a range holds and whether the kernel gives huge pages unasked.
//! - [`page_size`], [`monotonic_ns`], [`write_stderr`]: platform facts and the one way hakmem
//!   prints (straight to fd 2, never through `std::io`, which allocates).
//! - [`OsError`]: which operation failed and its `errno`.
//!
//! Invariants: every region returned by `map` has `base % align == 0`, `len % page_size() == 0`,
//! is zero-filled, and is counted in `mapped` until it is unmapped. Failure is always a value:
//! nothing here panics or aborts.
//!
//! Concurrency: every method takes `&self` and may be called from any thread at once; the
//! counters are relaxed statistics and the address hint is only a hint (see `map`), so none of
//! the state here is part of a hand-off between threads.
//!
//! Platform: Linux only. Other systems fail to compile with a clear message, because the
//! decommit semantics (`MADV_DONTNEED` zero-fills, `MADV_FREE`, `mremap`,
//! `MAP_FIXED_NOREPLACE`) are Linux's; a port would add a sibling module here and nowhere else.
//!
//! # Example
//!
//! ```rust
//! use hak_os::{page_size, Os, OsOp};
//!
//! let os = Os::new();
//! let len = 4 * page_size();
//! let p = os.map(len, 1 << 20).expect("the OS refused 4 pages");
//! assert_eq!(p.as_ptr() as usize % (1 << 20), 0);
//! // SAFETY: `[p, p + len)` is our fresh mapping and nobody else uses it.
//! unsafe {
//!     p.as_ptr().write_bytes(7, len);
//!     os.decommit(p, len).expect("decommit"); // MADV_DONTNEED: the pages go back...
//!     assert_eq!(p.as_ptr().read(), 0); // ...and the range reads as zero
//!     os.unmap(p, len).expect("unmap");
//! }
//! assert_eq!(os.stats().mapped.current, 0);
//! // Failure is a value: here a size that is not whole pages.
//! assert_eq!(os.map(len + 1, 8).unwrap_err().op, OsOp::Invalid);
//! ```
//!
//! A complete program (residency, refusals by the kernel and by the test hook, counters):
//! `cargo run -p hak-os --example mapping` (`examples/mapping.rs`).
#![deny(unsafe_op_in_unsafe_fn)]
#![allow(clippy::disallowed_methods)] // this crate is the one allowed to call mmap/munmap/madvise
#![no_std]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "hak-os supports Linux only: hakmem relies on Linux mmap/madvise/mremap semantics. \
     Port it by adding a platform module to crates/hak-os."
);

#[cfg(miri)]
mod miri;
mod os;
mod platform;
mod probe;

pub use os::{Decommit, Os, OsCounters, OsError, OsOp, OsStats};
pub use platform::{monotonic_ns, page_size, write_stderr, write_stderr_u64};
pub use probe::{thp_mode, ThpMode};
