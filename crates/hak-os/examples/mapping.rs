//! The OS layer on its own: map an aligned region, write to it, give its pages back with
//! `decommit` (the addresses stay mapped and read as zero), unmap it, and see what a refused
//! mapping looks like. Every step checks its result.
//!
//! Run with `cargo run -p hak-os --example mapping`.

use core::ptr::NonNull;

use hak_os::{page_size, Os, OsError, OsOp};

/// How many pages the example maps.
const PAGES: usize = 16;

fn main() {
    // One `Os` per allocator: it counts every syscall it makes. A `static` works too
    // (`Os::new` is `const`), which is how the layers above share one.
    let os = Os::new();
    let page = page_size();
    let len = PAGES * page;

    // A zeroed, read-write region whose base is a multiple of 2 MiB. Sizes are whole pages;
    // the alignment is any power of two (below a page it means page alignment).
    let align = 2 << 20;
    let base: NonNull<u8> = match os.map(len, align) {
        Ok(p) => p,
        Err(e) => {
            // The kernel can refuse (address space exhausted, `ulimit -v`): failure is a value.
            eprintln!("mapping {len} bytes failed: {e}");
            std::process::exit(1);
        }
    };
    assert_eq!(base.as_ptr() as usize % align, 0, "base is aligned as asked");
    // SAFETY: `[base, base + len)` is the fresh mapping; no one else knows about it.
    let bytes = unsafe { core::slice::from_raw_parts_mut(base.as_ptr(), len) };
    assert!(bytes.iter().all(|&b| b == 0), "a fresh mapping reads as zero");

    // Writing commits the pages (the kernel backs them on first touch).
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    assert_eq!(os.resident_pages(base, len), Ok(PAGES), "every written page is resident");
    assert_eq!(os.stats().mapped.current, len as u64);

    // Decommit the second half: its pages go back to the kernel (MADV_DONTNEED by default),
    // the addresses stay mapped, and the range reads back as zero. The first half is kept.
    let half = len / 2;
    // SAFETY: `base + half` is page-aligned; that half is ours and holds nothing we need.
    let tail = unsafe { NonNull::new_unchecked(base.as_ptr().add(half)) };
    // SAFETY: as above.
    unsafe { os.decommit(tail, half) }.expect("decommit of our own range");
    assert_eq!(os.resident_pages(tail, half), Ok(0), "decommitted pages are gone");
    // SAFETY: still mapped; no reference into it is alive.
    let bytes = unsafe { core::slice::from_raw_parts(base.as_ptr(), len) };
    assert!(bytes[..half].iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    assert!(bytes[half..].iter().all(|&b| b == 0), "decommitted memory reads as zero");
    let s = os.stats();
    assert_eq!(s.decommitted_dontneed, half as u64);

    // SAFETY: the region came from `os.map` with this length, and `bytes` is not used again.
    unsafe { os.unmap(base, len) }.expect("unmap of our own mapping");
    assert_eq!(os.stats().mapped.current, 0, "nothing is mapped any more");

    // Refusals. Arguments that break the preconditions make no syscall:
    let bad = os.map(page + 1, page).unwrap_err();
    assert_eq!(bad, OsError { op: OsOp::Invalid, errno: 0 });
    assert_eq!(os.map(0, page).unwrap_err().op, OsOp::Invalid);
    assert_eq!(os.map(page, 3).unwrap_err().op, OsOp::Invalid, "alignment not a power of two");
    // A size no address space can hold: the kernel says ENOMEM.
    let huge = os.map(1 << 62, page).unwrap_err();
    assert_eq!(huge, OsError { op: OsOp::Map, errno: libc::ENOMEM });
    // The test hook refuses the next N mappings the same way, without a syscall; the one
    // after them works again.
    os.fail_next_maps(1);
    let injected = os.map(page, page).unwrap_err();
    assert_eq!(injected, OsError { op: OsOp::Map, errno: libc::ENOMEM });
    let p = os.map(page, page).expect("mapping works again after the injected failure");
    // SAFETY: the page just mapped, unused.
    unsafe { os.unmap(p, page) }.expect("unmap");

    let s = os.stats();
    assert_eq!(s.map_failures, 2, "the kernel's refusal and the injected one");
    println!(
        "hak-os: mapped {PAGES} pages at {:#x}, decommitted {} KiB, refused: {huge}, {injected}",
        base.as_ptr() as usize,
        half >> 10
    );
    println!(
        "syscalls: {} mmap, {} munmap, {} madvise; peak mapped {} KiB",
        s.mmap_calls,
        s.munmap_calls,
        s.madvise_calls,
        s.mapped.peak >> 10
    );
}
