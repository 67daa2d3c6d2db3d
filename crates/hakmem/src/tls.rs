//! The thread-local slot that holds the calling thread's state pointer ([`get`], [`set`]).
//!
//! Why not plain `thread_local!`: in a shared library (`libhakmem.so`, loaded with
//! `LD_PRELOAD` or linked) rustc compiles a thread-local with the general-dynamic TLS model, so
//! every access is a call to `__tls_get_addr` (about a dozen instructions, on both the malloc
//! and the free fast path). Stable Rust offers no way to ask for another model (`-Z tls-model`
//! and `#[thread_local]` are nightly-only), so on x86-64 Linux this module defines the slot in
//! assembly (`.tdata`) and reads it with the initial-exec model: one load of the slot's offset
//! from the GOT and one `%fs`-relative load, inlined, no call. When the code is linked into an
//! executable (a Rust program using `hakmem::Hakmem`), the linker relaxes that to local-exec,
//! a single `%fs`-relative load, which is what `thread_local!` gives there. `docs/c.md` has the
//! measurements behind this choice.
//!
//! The price of initial-exec: the shared library asks for static TLS (`DF_STATIC_TLS`), so it
//! must be loaded at start-up (`LD_PRELOAD`, or a `DT_NEEDED` entry from linking it), or
//! `dlopen`ed while glibc still has surplus static TLS (it reserves some for this; the slot
//! is 8 bytes). A malloc replacement is loaded at start-up anyway.
//!
//! Elsewhere (aarch64, where the default TLS dialect already uses cheap TLS descriptors) the
//! slot is an ordinary const-initialised `thread_local!`.
//!
//! Every thread's slot starts out pointing at the sentinel state of `thread::THREADS` (the
//! per-thread kit from hak-tiny-front, which reads and writes the slot through
//! `thread::Tls` on its slow paths).

use crate::thread::ThreadState;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use hak_tiny_front::ThreadStates;

    use crate::thread::{ThreadState, Tls, THREADS};

    // The slot: 8 bytes of initialised TLS whose initial value is the sentinel's address, the
    // kit's static plus the sentinel's offset in it (the dynamic loader relocates the TLS
    // image before any thread copies it). Global but hidden: the accessors below are inlined
    // into other crates, whose code must still find the symbol at link time, yet it is never
    // exported from a shared library.
    core::arch::global_asm!(
        ".pushsection .tdata,\"awT\",@progbits",
        ".p2align 3",
        ".globl __hakmem_tls_state",
        ".hidden __hakmem_tls_state",
        ".type __hakmem_tls_state,@object",
        ".size __hakmem_tls_state, 8",
        "__hakmem_tls_state:",
        ".quad {states} + {offset}",
        ".popsection",
        states = sym THREADS,
        offset = const ThreadStates::<ThreadState, Tls>::SENTINEL_OFFSET,
    );

    #[inline(always)]
    pub(super) fn get() -> *mut ThreadState {
        let v: *mut ThreadState;
        // SAFETY: reads this thread's slot (initial-exec access to a TLS symbol defined above);
        // touches no other memory and no flags. `pure` + `readonly`: the compiler may merge two
        // reads with no write to memory between them, never move one across `set`.
        unsafe {
            core::arch::asm!(
                "mov {v}, qword ptr [rip + __hakmem_tls_state@GOTTPOFF]",
                "mov {v}, qword ptr fs:[{v}]",
                v = out(reg) v,
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        v
    }

    #[inline(always)]
    pub(super) fn set(ts: *mut ThreadState) {
        // SAFETY: writes this thread's slot only.
        unsafe {
            core::arch::asm!(
                "mov {t}, qword ptr [rip + __hakmem_tls_state@GOTTPOFF]",
                "mov qword ptr fs:[{t}], {v}",
                t = out(reg) _,
                v = in(reg) ts,
                options(nostack, preserves_flags),
            );
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    use core::cell::Cell;

    use crate::thread::{ThreadState, THREADS};

    thread_local! {
        /// Const-initialised and without `Drop`: a plain TLS access, no lazy-init check and no
        /// registered destructor.
        static STATE: Cell<*mut ThreadState> = const { Cell::new(THREADS.sentinel()) };
    }

    #[inline(always)]
    pub(super) fn get() -> *mut ThreadState {
        STATE.with(|s| s.get())
    }

    #[inline(always)]
    pub(super) fn set(ts: *mut ThreadState) {
        STATE.with(|s| s.set(ts))
    }
}

/// The calling thread's state pointer (the sentinel until the thread's first slow path).
#[inline(always)]
pub(crate) fn get() -> *mut ThreadState {
    imp::get()
}

/// Sets the calling thread's state pointer.
#[inline(always)]
pub(crate) fn set(ts: *mut ThreadState) {
    imp::set(ts)
}
