//! `libhakmem.so` and `libhakmem.a`: hakmem as the C library's `malloc`.
//!
//! This crate only packages [`hakmem_c`] (which defines every exported function) as a shared
//! and a static library named `hakmem`. Build with `cargo build --release -p libhakmem`; the
//! files land in `target/release/`. Use:
//!
//! ```sh
//! LD_PRELOAD=$PWD/target/release/libhakmem.so python3 -c 'print(sum(range(10)))'
//! cc prog.c -Iinclude -Ltarget/release -lhakmem -Wl,-rpath,$PWD/target/release   # link it
//! ```
//!
//! The tests in `tests/` compile C programs and run them, and real programs from the system,
//! with the library preloaded (see `tests/preload.rs`).
#![no_std]

extern crate hakmem_c;
