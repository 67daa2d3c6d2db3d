//! Tiny size classes and the size -> class table.
//!
//! Classes: 16..=128 in steps of 16, then four per power of two (128·{1.25, 1.5, 1.75, 2}, ...)
//! up to 32 KiB, then 40 and 48 KiB. The bound is above the more common 1 KiB because
//! benchmarks said so: blocks up to 48 KiB still fit at least once in slab 0 (64 KiB minus the
//! header page, with pages up to 16 KiB) and reuse resident slab memory, where a mapping per
//! block pays page faults on every reuse and a shared lock on every call. A slab's tail beyond
//! its last block is never touched, so it costs address space, not RSS. For a request `s > 128` the next class is at most `s + 2^(k-2)` with `2^k < s`,
//! so waste stays under 25%; between 64 and 128 the 16-byte steps waste under 25% too.
//!
//! Alignment: every class size in `(2^k, 2^(k+1)]` is a multiple of `2^(k-2)` (or of 16), and a
//! request rounded up to a multiple of a power-of-two `a` lands in a class that is a multiple of
//! `a` (the only class sizes in a range whose spacing is below `a` are `1.5·2^k` and `2^(k+1)`,
//! themselves multiples of `a`). Slabs start page-aligned, so such blocks are `a`-aligned.

/// Largest request (after alignment rounding) the tiny tier serves.
pub const TINY_MAX: usize = 48 << 10;
/// Largest alignment the tiny tier serves (slab data starts page-aligned).
pub const MAX_TINY_ALIGN: usize = 4096;
/// Number of tiny classes.
pub const NUM_CLASSES: usize = 42;
/// Block size of each class, in bytes.
pub const CLASS_SIZES: [u32; NUM_CLASSES] = [
    16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024,
    1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, 10240, 12288, 14336,
    16384, 20480, 24576, 28672, 32768, 40960, 49152,
];

const TABLE_LEN: usize = TINY_MAX / 16 + 1;

/// `TABLE[(s + 15) / 16]` is the smallest class holding `s` bytes.
static TABLE: [u8; TABLE_LEN] = build_table();

const fn build_table() -> [u8; TABLE_LEN] {
    let mut t = [0u8; TABLE_LEN];
    let mut i = 0;
    let mut c = 0;
    while i < TABLE_LEN {
        while (CLASS_SIZES[c] as usize) < i * 16 {
            c += 1;
        }
        t[i] = c as u8;
        i += 1;
    }
    t
}

const _: () = assert!(CLASS_SIZES[NUM_CLASSES - 1] as usize == TINY_MAX);
const _: () = assert!(NUM_CLASSES <= hak_shared_pool::MAX_CLASSES);

/// The tiny class for a request of `size` bytes aligned to `align` (a power of two), or `None`
/// if the tiny tier does not serve it. `size` 0 maps to the smallest class.
#[inline]
pub fn class_of(size: usize, align: usize) -> Option<usize> {
    let s = if align <= 16 {
        size
    } else if align <= MAX_TINY_ALIGN {
        size.checked_add(align - 1)? & !(align - 1)
    } else {
        return None;
    };
    if s > TINY_MAX {
        return None;
    }
    // SAFETY: s <= TINY_MAX, so the index is below TABLE_LEN.
    Some(unsafe { *TABLE.get_unchecked((s + 15) >> 4) } as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size natively; under Miri, which interprets each iteration, every 13th.
    const STEP: usize = if cfg!(miri) { 13 } else { 1 };

    #[test]
    fn every_size_gets_the_smallest_class_that_fits() {
        for s in (1..=TINY_MAX).step_by(STEP) {
            let c = class_of(s, 8).unwrap();
            assert!(CLASS_SIZES[c] as usize >= s, "size {s}");
            assert!(c == 0 || (CLASS_SIZES[c - 1] as usize) < s, "size {s} not the smallest");
        }
        assert_eq!(class_of(0, 1), Some(0));
        assert_eq!(class_of(TINY_MAX + 1, 8), None);
    }

    #[test]
    fn waste_is_at_most_25_percent_from_64_bytes() {
        for s in (64..=TINY_MAX).step_by(STEP) {
            let b = CLASS_SIZES[class_of(s, 8).unwrap()] as usize;
            assert!((b - s) * 4 <= s, "size {s} -> {b}");
        }
    }

    #[test]
    fn aligned_requests_land_in_classes_that_are_multiples_of_the_alignment() {
        let mut a = 1;
        while a <= MAX_TINY_ALIGN {
            for s in (1..=TINY_MAX).step_by(STEP) {
                if let Some(c) = class_of(s, a) {
                    let b = CLASS_SIZES[c] as usize;
                    assert!(b >= s && b.is_multiple_of(a.max(16)), "size {s} align {a} -> {b}");
                }
            }
            a *= 2;
        }
        assert_eq!(class_of(8, 4096), Some(27), "page-aligned small requests get the 4 KiB class");
        assert_eq!(class_of(8, 8192), None);
        assert_eq!(class_of(1500, 1024), Some(23));
        assert_eq!(class_of(TINY_MAX, 4096), Some(NUM_CLASSES - 1));
    }
}
