//! Check mode (`HAKMEM_CHECK=1`): catches the misuse the tiny tier does not look for on its
//! fast path, a second free of a tiny block and a pointer into a tiny block's middle, and a
//! second free of a mid block, which neither tier detects otherwise. Used by the malloc-style
//! entry points (`raw.rs`, the C ABI).
//!
//! How: a live bitmap, one bit per 16 bytes of tiny and mid memory, set when a block is handed
//! to the program and cleared when it comes back. A free whose bit is already clear is a double
//! free (or a pointer hakmem never handed out at that spot) and is refused with one line on
//! stderr; a tiny pointer that is not `slab start + k · block size` is an interior pointer,
//! refused the same way. A block handed out while its bit is still set means the heap is
//! corrupt (typically a write to a freed block that overwrote a free-list link): that aborts.
//!
//! Layout: a two-level table keyed by address like the registry's: 4096 top slots of 64 GiB,
//! each a leaf of 32768 slots of 2 MiB, each a 16 KiB bitmap; leaves and bitmaps are mapped
//! from the OS on first use and kept (a SuperSlab or chunk that comes back at the same address
//! reuses its bitmap). Memory: 16 KiB per 2 MiB of tiny or mid address space ever used (0.8%),
//! plus 256 KiB of leaf address space per 64 GiB region, committed as touched.
//!
//! Cost: see `docs/c.md` (measured on the C benchmarks). Off by default; the flag is read once
//! at initialisation, before the first block is handed out. Blocks allocated through
//! `hakmem::Hakmem` (Rust's global allocator) are not tracked: in check mode, a Rust block
//! freed with C `free` is reported as a double free.
//!
//! Concurrency: bits change with atomic read-modify-writes, so two threads racing to free the
//! same block see exactly one success; table slots are published with a compare-exchange (the
//! loser unmaps its copy).

use core::ptr::{self, NonNull};

use hak_registry::OwnerKind;
use hak_superslab::SsRef;
use hak_sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use crate::global::{LG_SS, OS, REGISTRY};

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
static ENABLED: hak_sync::atomic::AtomicBool = hak_sync::atomic::AtomicBool::new(false);

/// log2 of the bytes one bit covers (the smallest block alignment).
const GRAIN_SHIFT: u32 = 4;
/// log2 of the bytes one bitmap covers (2 MiB).
const REGION_SHIFT: u32 = 21;
/// log2 of the bitmaps one leaf holds.
const LEAF_BITS: u32 = 15;
/// log2 of the top-level slots (48-bit addresses).
const TOP_BITS: u32 = 12;
const _: () = assert!(REGION_SHIFT + LEAF_BITS + TOP_BITS == 48);
/// 64-bit words per bitmap.
const WORDS: usize = 1 << (REGION_SHIFT - GRAIN_SHIFT - 6);

struct Bits {
    words: [AtomicU64; WORDS],
}

struct Leaf {
    regions: [AtomicPtr<Bits>; 1 << LEAF_BITS],
}

static TOP: [AtomicPtr<Leaf>; 1 << TOP_BITS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; 1 << TOP_BITS];

// On x86-64 the flag is a hidden byte defined in assembly and read with one RIP-relative
// load: a Rust static read from inlined code in another crate (the exported `malloc` and
// `free`) goes through the GOT in a shared library, one dependent load more on every call.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
core::arch::global_asm!(
    ".pushsection .bss.__hakmem_check_enabled,\"aw\",@nobits",
    ".globl __hakmem_check_enabled",
    ".hidden __hakmem_check_enabled",
    ".type __hakmem_check_enabled,@object",
    ".size __hakmem_check_enabled, 1",
    "__hakmem_check_enabled:",
    ".zero 1",
    ".popsection",
);

/// Whether check mode is on (one load; the flag never changes after initialisation, which
/// sets it before handing out the first block).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[inline(always)]
pub(crate) fn enabled() -> bool {
    let v: u32;
    // SAFETY: reads the one-byte flag defined above; no other memory, no flags.
    unsafe {
        core::arch::asm!(
            "movzx {v:e}, byte ptr [rip + __hakmem_check_enabled]",
            v = out(reg) v,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    v != 0
}

/// Turns check mode on; called by initialisation before any block is handed out (other
/// threads see it after they observe initialisation done, with acquire ordering).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(crate) fn enable() {
    // SAFETY: writes the one-byte flag defined above.
    unsafe {
        core::arch::asm!(
            "mov byte ptr [rip + __hakmem_check_enabled], 1",
            options(nostack, preserves_flags)
        );
    }
}

/// Whether check mode is on (one relaxed load; the flag never changes after initialisation).
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
#[inline(always)]
pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turns check mode on; called by initialisation before any block is handed out.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The table slot below `slot`, mapping and publishing a zeroed `T` if it is empty and
/// `create`. `None` if it is empty and not created (or the OS refused).
fn child<T>(slot: &AtomicPtr<T>, create: bool) -> Option<*mut T> {
    let p = slot.load(Ordering::Acquire);
    if !p.is_null() || !create {
        return (!p.is_null()).then_some(p);
    }
    let bytes = core::mem::size_of::<T>();
    let fresh = OS.map(bytes, hak_os::page_size()).ok()?.as_ptr().cast::<T>();
    // Fresh pages are zero: a valid table of null pointers or a bitmap of clear bits.
    match slot.compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Some(fresh),
        Err(winner) => {
            // SAFETY: our mapping was never published.
            let _ = unsafe { OS.unmap(NonNull::new_unchecked(fresh.cast()), bytes) };
            Some(winner)
        }
    }
}

/// The bitmap word and mask of the block at `addr`.
fn bit_of(addr: usize, create: bool) -> Option<(&'static AtomicU64, u64)> {
    if addr >> 48 != 0 {
        return None;
    }
    let leaf = child(&TOP[addr >> (REGION_SHIFT + LEAF_BITS)], create)?;
    let i = (addr >> REGION_SHIFT) & ((1 << LEAF_BITS) - 1);
    // SAFETY: published leaves and bitmaps are never unmapped.
    let bits = child(unsafe { &(*leaf).regions[i] }, create)?;
    let bit = (addr >> GRAIN_SHIFT) & ((1 << (REGION_SHIFT - GRAIN_SHIFT)) - 1);
    // SAFETY: as above; `bit >> 6 < WORDS`.
    let word = unsafe { &(*bits).words[bit >> 6] };
    Some((word, 1u64 << (bit & 63)))
}

/// Marks a block the program now owns (after any allocation) and returns it. Big blocks are
/// not tracked (the big tier checks its own headers).
#[cold]
#[inline(never)]
pub(crate) extern "C" fn on_alloc(p: *mut u8) -> *mut u8 {
    match REGISTRY.lookup(p as usize).map(|o| o.kind) {
        Some(OwnerKind::SuperSlab | OwnerKind::Mid) => {}
        _ => return p,
    }
    let Some((word, mask)) = bit_of(p as usize, true) else {
        hak_sync::fatal("HAKMEM_CHECK: the OS refused memory for the check bitmap");
    };
    if word.fetch_or(mask, Ordering::AcqRel) & mask != 0 {
        hak_os::write_stderr(
            b"hakmem: HAKMEM_CHECK: a block was handed out while still in use; the heap is \
              corrupt (a write to a freed block?)\n",
        );
        // SAFETY: abort has no preconditions.
        unsafe { libc::abort() }
    }
    p
}

/// Whether the tiny block at `p` starts a block of its slab (else says so on stderr).
///
/// # Safety
/// `p` lies in a registered SuperSlab.
unsafe fn tiny_start(p: *mut u8, what: &[u8]) -> bool {
    // SAFETY: forwarded: a registered SuperSlab is formatted and mapped.
    let ss = unsafe { SsRef::from_block(p, LG_SS) };
    let i = ss.slab_index_of(p.addr());
    let (start, end) = ss.slab_range(i);
    // SAFETY: as above; `i` is below the SuperSlab's slab count (the address lies in it).
    let bs = unsafe { ss.slab(i).block_size() } as usize;
    let (a, s) = (p as usize, start as usize);
    if bs == 0 || a < s || a >= end as usize || (a - s) % bs != 0 {
        say(what, b" of a pointer into the middle of a tiny block");
        return false;
    }
    true
}

fn say(what: &[u8], problem: &[u8]) {
    hak_os::write_stderr(b"hakmem: HAKMEM_CHECK: ");
    hak_os::write_stderr(what);
    hak_os::write_stderr(problem);
    hak_os::write_stderr(b"; refused\n");
}

/// Clears (if `clear`) or tests the bit of a block start; false (with a line on stderr) if it
/// was not live.
fn live(p: *mut u8, what: &[u8], clear: bool) -> bool {
    let ok = match bit_of(p as usize, false) {
        Some((word, mask)) if clear => word.fetch_and(!mask, Ordering::AcqRel) & mask != 0,
        Some((word, mask)) => word.load(Ordering::Acquire) & mask != 0,
        None => false,
    };
    if !ok {
        say(what, b" of a block that is not in use (double free, or never handed out)");
    }
    ok
}

/// Validates and unmarks a tiny block being freed; false if the free must be refused.
///
/// # Safety
/// `p` lies in a registered SuperSlab.
#[cold]
#[inline(never)]
pub(crate) unsafe fn on_free_tiny(p: *mut u8) -> bool {
    // SAFETY: forwarded.
    unsafe { tiny_start(p, b"free") && live(p, b"free", true) }
}

/// Whether a tiny block being resized is a live block start (else says so).
///
/// # Safety
/// `p` lies in a registered SuperSlab.
#[cold]
#[inline(never)]
pub(crate) unsafe fn is_live_tiny(p: *mut u8) -> bool {
    // SAFETY: forwarded.
    unsafe { tiny_start(p, b"realloc") && live(p, b"realloc", false) }
}

/// Unmarks a mid block start being freed; false if it was not live.
#[cold]
#[inline(never)]
pub(crate) fn on_free_block(p: *mut u8) -> bool {
    live(p, b"free", true)
}

/// Whether a mid block start being resized is live.
#[cold]
#[inline(never)]
pub(crate) fn is_live_block(p: *mut u8) -> bool {
    live(p, b"realloc", false)
}
