//! Size classes of the mid tier: which block size serves a request, and how big a chunk of each
//! class is.
//!
//! Classes: [`PER_DOUBLING`] = 4 per power of two above 2048 B, so class `c = 4(p - 11) + k`
//! (`p` in 11..=19, `k` in 0..4) has size `(5 + k) · 2^(p-2)`: 2560, 3072, 3584, 4096, 5120, …,
//! 917 504, 1 MiB — [`NUM_CLASSES`] = 36 classes. The lookup is arithmetic (one `lzcnt`, two
//! shifts): for `v = max(size, MID_MIN) - 1`, `p = ⌊log2 v⌋`, `k = (v >> (p - 2)) & 3`.
//!
//! Waste: a request `s` in `(2^p, 2^(p+1)]` gets a class `< s + 2^(p-2)`, so
//! `(class - s) / s < 2^(p-2) / 2^p = 25%` (and `(class - s) / class < 20%`).
//!
//! Alignment rule ([`can_serve`]): a power-of-two `align <= MID_MAX_ALIGN` (4096) is served by
//! the class of `round_up(max(size, MID_MIN), align)`, provided that is `<= MID_MAX`. That
//! class's size is always a multiple of `align` (class sizes in `(2^p, 2^(p+1)]` are exactly the
//! multiples of `2^(p-2)` there, so a rounded size is either below the class step — any class
//! is a multiple — or is itself a class size), and blocks sit at `chunk_base + CHUNK_HEADER +
//! i · class_size` with `chunk_base` 1 MiB-aligned and `CHUNK_HEADER = 4096`, so every block is
//! `align`-aligned. Every class is at least [`MIN_CLASS_ALIGN`] (512)-aligned, so requests with
//! `align <= 512` use the plain size class (no rounding).
//!
//! Per-class constants (tables built at compile time): [`TC_CAP`], how many blocks a thread
//! cache starts keeping (`clamp(256 KiB / size, 1, 32)`), [`TC_CEIL`], how many it may grow to
//! (`clamp(512 KiB / size, 1, 64)`; `cache.rs` has the adaptive rule), and [`CHUNK_BYTES`] / [`CHUNK_CAPACITY`]: a chunk is
//! `max(1 MiB, round_up(CHUNK_HEADER + 8 · size, 1 MiB))`, i.e. 1 MiB for classes up to 128 KiB
//! (at least 7 blocks) and whole MiB holding at least 8 blocks above (9 MiB for 1 MiB blocks).

/// One above 2048 B, the power of two below the first class (2560 B): requests up to this size
/// get the first class. Smaller sizes are accepted too (they get the first class as well); the
/// facade sends only requests above the tiny tier's 48 KiB bound.
pub const MID_MIN: usize = 2049;
/// The largest request the mid tier serves (1 MiB), after rounding up to the alignment.
pub const MID_MAX: usize = 1 << 20;
/// The largest alignment the mid tier gives (4096 B, the x86-64/aarch64-4K page size).
pub const MID_MAX_ALIGN: usize = 4096;

/// log2 of the classes per power of two.
pub(crate) const SUB_BITS: u32 = 2;
/// Classes per power of two (4).
pub(crate) const PER_DOUBLING: usize = 1 << SUB_BITS;
/// log2 of 2048 B, the power of two below the first class.
const FIRST_SHIFT: u32 = 11;
/// Number of size classes (36).
pub(crate) const NUM_CLASSES: usize = (20 - FIRST_SHIFT as usize) * PER_DOUBLING;
/// The alignment every class size is a multiple of (512 = 2^(11 - SUB_BITS)).
pub(crate) const MIN_CLASS_ALIGN: usize = 1 << (FIRST_SHIFT - SUB_BITS);
/// Bytes at the start of every chunk reserved for its header; blocks start after them (4096, so
/// block offsets stay page-aligned).
pub(crate) const CHUNK_HEADER: usize = MID_MAX_ALIGN;
/// Chunk sizes are whole registry granules (1 MiB).
pub(crate) const CHUNK_UNIT: usize = 1 << 20;
/// Bytes of blocks a thread cache keeps per class (256 KiB); divided by the class size and
/// clamped to `1..=32` blocks it gives [`TC_CAP`].
const TC_BYTES: usize = 256 << 10;
/// Most blocks a thread cache starts with per class.
const TC_MAX: usize = 32;
/// Bytes and blocks a thread cache's bin may grow to (512 KiB, 64).
const TC_CEIL_BYTES: usize = 512 << 10;
const TC_CEIL_MAX: usize = 64;
/// Blocks a chunk holds at least (except classes up to 128 KiB, which fill 1 MiB).
const MIN_BLOCKS: usize = 8;
/// Bytes of one class a shard keeps at most (1 MiB), rounded to whole batches, at least one.
const SHARD_BYTES: usize = 1 << 20;
/// Most batches of one class in one shard.
const SHARD_MAX_BATCHES: usize = 8;

/// The block size of each class.
pub(crate) const CLASS_SIZE: [usize; NUM_CLASSES] = {
    let mut t = [0; NUM_CLASSES];
    let mut c = 0;
    while c < NUM_CLASSES {
        let p = FIRST_SHIFT as usize + c / PER_DOUBLING;
        let k = c % PER_DOUBLING;
        t[c] = (PER_DOUBLING + k + 1) << (p - SUB_BITS as usize);
        c += 1;
    }
    t
};

/// Thread-cache capacity (and shard batch size) per class, in blocks.
pub(crate) const TC_CAP: [u32; NUM_CLASSES] = {
    let mut t = [0; NUM_CLASSES];
    let mut c = 0;
    while c < NUM_CLASSES {
        let n = TC_BYTES / CLASS_SIZE[c];
        t[c] = if n < 1 {
            1
        } else if n > TC_MAX {
            TC_MAX as u32
        } else {
            n as u32
        };
        c += 1;
    }
    t
};

/// Most blocks a thread cache's bin may hold per class, after growing.
pub(crate) const TC_CEIL: [u32; NUM_CLASSES] = {
    let mut t = [0; NUM_CLASSES];
    let mut c = 0;
    while c < NUM_CLASSES {
        let n = TC_CEIL_BYTES / CLASS_SIZE[c];
        t[c] = if n < 1 {
            1
        } else if n > TC_CEIL_MAX {
            TC_CEIL_MAX as u32
        } else {
            n as u32
        };
        c += 1;
    }
    t
};

/// Most batches a shard keeps per class: `clamp(SHARD_BYTES / (TC_CAP · size), 1, 8)`
/// (1 under loom, so models reach the "shard full" path).
pub(crate) const SHARD_BATCHES: [u32; NUM_CLASSES] = {
    let mut t = [0; NUM_CLASSES];
    let mut c = 0;
    while c < NUM_CLASSES {
        let n = SHARD_BYTES / (TC_CAP[c] as usize * CLASS_SIZE[c]);
        t[c] = if cfg!(hak_loom) || n < 1 {
            1
        } else if n > SHARD_MAX_BATCHES {
            SHARD_MAX_BATCHES as u32
        } else {
            n as u32
        };
        c += 1;
    }
    t
};

/// Bytes mapped per chunk of each class (a multiple of [`CHUNK_UNIT`]).
pub(crate) const CHUNK_BYTES: [usize; NUM_CLASSES] = {
    let mut t = [0; NUM_CLASSES];
    let mut c = 0;
    while c < NUM_CLASSES {
        let want = CHUNK_HEADER + MIN_BLOCKS * CLASS_SIZE[c];
        let bytes = want.div_ceil(CHUNK_UNIT) * CHUNK_UNIT;
        t[c] = if bytes < CHUNK_UNIT { CHUNK_UNIT } else { bytes };
        c += 1;
    }
    t
};

/// Blocks per chunk of each class: `(CHUNK_BYTES - CHUNK_HEADER) / CLASS_SIZE`.
pub(crate) const CHUNK_CAPACITY: [usize; NUM_CLASSES] = {
    let mut t = [0; NUM_CLASSES];
    let mut c = 0;
    while c < NUM_CLASSES {
        t[c] = (CHUNK_BYTES[c] - CHUNK_HEADER) / CLASS_SIZE[c];
        c += 1;
    }
    t
};

const _: () = assert!(NUM_CLASSES == 36);
const _: () = assert!(CLASS_SIZE[0] == 2560 && CLASS_SIZE[NUM_CLASSES - 1] == MID_MAX);
const _: () = assert!(class_of(MID_MAX) == NUM_CLASSES - 1 && class_of(MID_MIN) == 0);
const _: () = assert!(CHUNK_CAPACITY[NUM_CLASSES - 1] == MIN_BLOCKS);
const _: () = assert!(MID_MIN - 1 == 1 << FIRST_SHIFT);
const _: () = assert!(TC_CEIL_MAX <= u16::MAX as usize);

/// The class serving `size` bytes at alignment `<= MIN_CLASS_ALIGN`. Sizes below [`MID_MIN`]
/// give class 0; the caller guarantees `size <= MID_MAX`.
#[inline]
pub(crate) const fn class_of(size: usize) -> usize {
    let v = if size < MID_MIN { MID_MIN } else { size } - 1;
    let p = usize::BITS - 1 - v.leading_zeros();
    let k = (v >> (p - SUB_BITS)) & (PER_DOUBLING - 1);
    (p - FIRST_SHIFT) as usize * PER_DOUBLING + k
}

/// The class serving a `(size, align)` request, or `None` if the mid tier cannot (see the
/// module docs for the rule). `align` 0 counts as 1.
#[inline]
pub(crate) fn class_for(size: usize, align: usize) -> Option<usize> {
    if align <= MIN_CLASS_ALIGN && align.is_power_of_two() {
        if size > MID_MAX {
            return None;
        }
        return Some(class_of(size));
    }
    class_for_aligned(size, align)
}

#[cold]
fn class_for_aligned(size: usize, align: usize) -> Option<usize> {
    let align = align.max(1);
    if !align.is_power_of_two() || align > MID_MAX_ALIGN {
        return None;
    }
    let s = size.max(MID_MIN).checked_next_multiple_of(align)?;
    if s > MID_MAX {
        return None;
    }
    Some(class_of(s))
}

/// Whether the mid tier serves a request of `size` bytes aligned to `align`: `align` a power of
/// two `<= MID_MAX_ALIGN` (4096) and `round_up(max(size, MID_MIN), align) <= MID_MAX`.
/// The facade sends requests in `MID_MIN..=MID_MAX` that fail this (larger alignments) to the
/// big tier.
#[inline]
pub fn can_serve(size: usize, align: usize) -> bool {
    class_for(size, align).is_some()
}

/// The usable size of the block [`Mid::alloc`](crate::Mid::alloc) would return for
/// `(size, align)`, or `None` if [`can_serve`] is false. Equal to
/// [`Mid::usable_size`](crate::Mid::usable_size) of that block.
#[inline]
pub fn block_size(size: usize, align: usize) -> Option<usize> {
    class_for(size, align).map(|c| CLASS_SIZE[c])
}
