//! [`Density`]: whether the program fills its big blocks or touches them sparsely, measured
//! from what it does, and what the big tier does about it: transparent huge pages, keeping
//! freed pages resident, and gathering cached blocks.
//!
//! Why: a huge page is faulted in (and zeroed) whole, 2 MiB at a time. For a block the program
//! fills that is 512 faults in one; for a block it touches at both ends (a buffer reserved
//! large and filled partly) it is 4 MiB of zeroing and resident memory where 8 KiB would do.
//! Likewise a cached block's resident pages are worth keeping (and moving into a larger
//! block) only if the next user fills them again; for a sparse program they are scattered
//! pages that accumulate as blocks are reused at other sizes, and a gathering moves a few of
//! them at the cost of several `mremap`s. Neither the size nor the alignment says which kind a
//! block is; the program's own past blocks do.
//!
//! How: the first free of a fresh block of 1 MiB or more (on base pages) asks the kernel how
//! many of its pages are resident (`mincore`, over at most [`PROBE_PAGES`] pages in two
//! windows, at the start and the middle of the block: at most two syscalls whatever the
//! block's size); a
//! block at least half resident is dense. While the program counts as sparse, one block in
//! [`PROBE_REUSED_EVERY`] reused from the cache is measured at its free too (a sparse block's
//! few cached pages do not make it look dense, so what is resident is mostly what its user
//! touched). So that a program which fills its blocks as it gets them need not wait
//! for a free, the next fresh mapping also looks at the previous fresh block while it is still
//! live, and counts it if it is dense already (a sparse answer then proves nothing: the block
//! may fill later). The last block measured decides whether the program counts as dense (at
//! the start it does not). Then:
//! - fresh mappings of 2 MiB or more, dense: `MADV_HUGEPAGE` (in `madvise` mode; `always`
//!   needs nothing), except one fresh single mapping in [`PROBE_EVERY`], which stays on base
//!   pages so the policy keeps learning (a block on huge pages looks dense to `mincore` as
//!   soon as each 2 MiB is touched once);
//! - sparse (and at the start): no advice in `madvise` mode, `MADV_NOHUGEPAGE` in `always`
//!   mode, so a sparse block faults 4 KiB at a time whatever the host's setting; THP mode
//!   `never`: no advice;
//! - freeing (`BigCache::dealloc`): a block measured sparse, or any block while the program
//!   counts as sparse, is decommitted on its way into the cache once [`SPARSE_SPREAD`] of its
//!   users since it was mapped or last decommitted ended in another page than the user
//!   before them (its pages zapped, one syscall). A user of a sparse block leaves its last
//!   pages at its own offset, so blocks reused at changing sizes would collect scattered
//!   pages without bound; blocks reused at the same size touch the same pages again and keep
//!   them (zapping at every free would cost a syscall and fresh faults each time). Dense
//!   blocks stay resident;
//! - a request no cached block fits gathers smaller cached blocks only while the program
//!   counts as dense.
//!
//! So a sparse program never gets a huge page, a dense one switches after its first block,
//! and a change of phase is noticed within [`PROBE_EVERY`] fresh blocks (in sparse mode every
//! fresh block is a probe).
//!
//! A block that `realloc` moves is probed on the spot (its old pages tell whether the program
//! fills it) and advised to match before it grows. The state and the counters are relaxed
//! atomics: hints that no hand-off depends on.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};

use hak_os::{Os, ThpMode};

use crate::cache::HUGE_PAGE;

/// Users ending in a new place a sparse block may have before its pages are decommitted on
/// its way into the cache (see the module docs).
pub(crate) const SPARSE_SPREAD: u32 = 8;
/// Smallest fresh mapping that is probed (1 MiB).
pub(crate) const PROBE_MIN: usize = 1 << 20;
/// Most pages one density probe looks at (64), in at most two windows (the start and the
/// middle of the block): `mincore` costs a syscall and a page-table walk per page, so a probe
/// is a sample.
pub(crate) const PROBE_PAGES: usize = 64;
/// While the program counts as dense, one fresh block in this many stays on base pages to be
/// probed.
pub(crate) const PROBE_EVERY: u32 = 8;
/// While the program counts as sparse, one block in this many reused from the cache is
/// measured at its free.
pub(crate) const PROBE_REUSED_EVERY: u32 = 32;
/// Low bits of [`Density::last`] that hold the block's length in MiB (its base is 1 MiB
/// aligned, so they are free).
const LAST_LEN_BITS: u32 = 20;

/// What to do with a fresh mapping (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fresh {
    /// `Some(true)`: advise `MADV_HUGEPAGE`; `Some(false)`: `MADV_NOHUGEPAGE`; `None`: nothing.
    pub(crate) advice: Option<bool>,
    /// Whether the block will be backed by huge pages (advised, or the `always` default).
    pub(crate) huge: bool,
    /// Whether its first free should probe its density.
    pub(crate) probe: bool,
}

/// The policy's state. See the module docs.
#[derive(Debug)]
pub(crate) struct Density {
    /// Whether the last block measured was dense.
    dense: AtomicBool,
    /// Fresh mappings made (to pick one in [`PROBE_EVERY`] as a probe).
    fresh: AtomicU32,
    /// Blocks reused while sparse (to pick one in [`PROBE_REUSED_EVERY`] as a probe).
    reused: AtomicU32,
    /// The last fresh block made a probe: its base, with its length in MiB (at most
    /// `2^LAST_LEN_BITS - 1`) in the low bits; 0 if none. A hint: the block may be gone by the
    /// time it is read, which `mincore` answers harmlessly.
    last: AtomicUsize,
    /// `ThpMode as u8`, or 0 to read the host's mode.
    mode: AtomicU8,
}

impl Density {
    pub(crate) const fn new() -> Density {
        Density {
            dense: AtomicBool::new(false),
            fresh: AtomicU32::new(0),
            reused: AtomicU32::new(0),
            last: AtomicUsize::new(0),
            mode: AtomicU8::new(0),
        }
    }

    /// The THP mode in force: the host's, unless a test set one.
    pub(crate) fn mode(&self) -> ThpMode {
        match self.mode.load(Ordering::Relaxed) {
            1 => ThpMode::Always,
            2 => ThpMode::Madvise,
            3 => ThpMode::Never,
            _ => hak_os::thp_mode(),
        }
    }

    /// Makes the policy act as on a host in `mode` (for tests; `None`: the host's).
    pub(crate) fn set_mode(&self, mode: Option<ThpMode>) {
        self.mode.store(mode.map_or(0, |m| m as u8), Ordering::Relaxed);
    }

    /// Whether the program counts as filling its blocks (the last block measured was dense).
    pub(crate) fn dense(&self) -> bool {
        self.dense.load(Ordering::Relaxed)
    }

    /// Records one measured block.
    pub(crate) fn record(&self, dense: bool) {
        self.dense.store(dense, Ordering::Relaxed);
    }

    /// The advice for a fresh mapping of `len` bytes (2 MiB-aligned when `len >= HUGE_PAGE`).
    /// `single`: the block will be one kernel mapping of its own, so it may be made a probe
    /// (a gathered block mixes pages of other blocks and is never probed).
    pub(crate) fn fresh(&self, os: &Os, len: usize, single: bool) -> Fresh {
        if len < PROBE_MIN {
            return Fresh { advice: None, huge: false, probe: false };
        }
        self.look_at_last(os);
        let dense = self.dense();
        let sample =
            single && self.fresh.fetch_add(1, Ordering::Relaxed).is_multiple_of(PROBE_EVERY);
        let probe = single && (!dense || sample);
        // No whole huge page fits below 2 MiB: base pages whatever the mode.
        let mode = if len < HUGE_PAGE { ThpMode::Never } else { self.mode() };
        let (advice, huge) = match (mode, dense && !probe) {
            (ThpMode::Never, _) => (None, false),
            (ThpMode::Always, true) => (None, true),
            (ThpMode::Always, false) => (Some(false), false),
            (ThpMode::Madvise, true) => (Some(true), true),
            (ThpMode::Madvise, false) => (None, false),
        };
        Fresh { advice, huge, probe }
    }

    /// Whether a block reused from the cache should be measured at its free: one in
    /// [`PROBE_REUSED_EVERY`] while the program counts as sparse.
    pub(crate) fn probe_reused(&self) -> bool {
        !self.dense()
            && self.reused.fetch_add(1, Ordering::Relaxed).is_multiple_of(PROBE_REUSED_EVERY)
    }

    /// Remembers a fresh probe block of `len` bytes at `base` for the next [`Density::fresh`].
    pub(crate) fn remember(&self, base: usize, len: usize) {
        let mib = (len >> 20).min((1 << LAST_LEN_BITS) - 1);
        self.last.store(base | mib, Ordering::Relaxed);
    }

    /// Counts the last fresh probe block if it is dense already (see the module docs).
    fn look_at_last(&self, os: &Os) {
        let last = self.last.swap(0, Ordering::Relaxed);
        let (base, mib) = (last & !((1 << LAST_LEN_BITS) - 1), last & ((1 << LAST_LEN_BITS) - 1));
        let page = hak_os::page_size();
        let Some(start) = NonNull::new(ptr::without_provenance_mut::<u8>(base + page)) else {
            return;
        };
        if mib == 0 {
            return;
        }
        // The block may have been freed, unmapped or replaced since: `mincore` reads page
        // tables only, so the worst case is a wrong hint.
        if is_dense(os, start, (mib << 20) - page, page) == Some(true) {
            self.record(true);
        }
    }

    /// The advice for a block of `len` bytes that is about to grow, given whether its current
    /// pages are dense and whether it was on huge pages: `(advice, huge)`.
    pub(crate) fn growing(&self, len: usize, dense: bool, was_huge: bool) -> (Option<bool>, bool) {
        let mode = self.mode();
        if len < HUGE_PAGE || mode == ThpMode::Never {
            return (None, false);
        }
        match (dense, was_huge) {
            (true, true) => (None, true),
            (true, false) => (Some(true), true),
            (false, _) if was_huge || mode == ThpMode::Always => (Some(false), false),
            (false, _) => (None, false),
        }
    }
}

/// Whether at least half of the pages of `[start, start + len)` are resident, probing at most
/// [`PROBE_PAGES`] pages in up to two windows (at 0 and 1/2 of the range); `None` if the kernel
/// would not say (the range is empty, or not wholly mapped). `start` is page-aligned.
pub(crate) fn is_dense(os: &Os, start: NonNull<u8>, len: usize, page: usize) -> Option<bool> {
    let pages = len / page;
    if pages == 0 {
        return None;
    }
    let (windows, per) = if pages <= PROBE_PAGES { (1, pages) } else { (2, PROBE_PAGES / 2) };
    // Windows start at 0 and 1/2 of the range.
    let stride = pages / windows;
    let (mut seen, mut resident) = (0, 0);
    for w in 0..windows {
        // An address only (`mincore` touches no memory): `w * stride + per <= pages`.
        let at = NonNull::new(start.as_ptr().wrapping_add(w * stride * page))?;
        resident += os.resident_pages(at, per * page).ok()?;
        seen += per;
    }
    Some(resident * 2 >= seen)
}

#[cfg(all(test, not(hak_loom)))]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn starts_sparse_and_the_last_block_measured_decides() {
        let p = Density::new();
        assert!(!p.dense());
        p.record(true);
        assert!(p.dense());
        p.record(false);
        assert!(!p.dense());
    }

    #[test]
    fn fresh_advice_follows_mode_and_density_and_keeps_probing_while_dense() {
        let os = Os::new();
        let p = Density::new();
        let f = |len, single| p.fresh(&os, len, single);
        p.set_mode(Some(ThpMode::Madvise));
        assert_eq!(f(MIB / 2, true), Fresh { advice: None, huge: false, probe: false }, "small");
        assert_eq!(f(MIB, true), Fresh { advice: None, huge: false, probe: true }, "no huge page");
        assert_eq!(f(8 * MIB, false), Fresh { advice: None, huge: false, probe: false });
        for _ in 0..3 {
            assert_eq!(f(8 * MIB, true), Fresh { advice: None, huge: false, probe: true });
        }
        p.set_mode(Some(ThpMode::Always));
        assert_eq!(f(8 * MIB, true), Fresh { advice: Some(false), huge: false, probe: true });
        p.record(true);
        let huge = (0..PROBE_EVERY).filter(|_| f(8 * MIB, true).huge).count();
        assert_eq!(huge as u32, PROBE_EVERY - 1, "one in PROBE_EVERY stays a probe");
        assert!((0..PROBE_EVERY).all(|_| f(8 * MIB, false).huge), "gathered blocks: never");
        p.set_mode(Some(ThpMode::Madvise));
        let advised = (0..PROBE_EVERY).filter(|_| f(8 * MIB, true).advice == Some(true)).count();
        assert_eq!(advised as u32, PROBE_EVERY - 1);
        p.set_mode(Some(ThpMode::Never));
        let probes = (0..PROBE_EVERY).filter(|_| f(8 * MIB, true).probe).count();
        assert_eq!(probes, 1, "never: no advice, but still one probe in PROBE_EVERY");
        assert!((0..PROBE_EVERY).all(|_| f(8 * MIB, true).advice.is_none()));
    }

    #[cfg(not(miri))]
    #[test]
    fn the_next_fresh_mapping_counts_the_last_one_if_it_is_dense_already() {
        let os = Os::new();
        let page = hak_os::page_size();
        let p = Density::new();
        p.set_mode(Some(ThpMode::Madvise));
        let len = 4 * MIB;
        let m = os.map(len, 2 * MIB).unwrap();
        p.remember(m.as_ptr() as usize, len);
        let _ = p.fresh(&os, 4 * MIB, true);
        assert!(!p.dense(), "an untouched block proves nothing");
        p.remember(m.as_ptr() as usize, len);
        // SAFETY: our fresh mapping.
        unsafe { m.as_ptr().add(page).write_bytes(1, len - page) };
        let _ = p.fresh(&os, 4 * MIB, true);
        assert!(p.dense(), "a block filled before its free counts at the next mapping");
        let _ = p.fresh(&os, 4 * MIB, true);
        // SAFETY: ours, unused from here on.
        unsafe { os.unmap(m, len) }.unwrap();
        p.remember(m.as_ptr() as usize, len);
        let _ = p.fresh(&os, 4 * MIB, true); // a stale hint: harmless
    }

    #[test]
    fn a_growing_block_is_advised_by_its_own_density() {
        let p = Density::new();
        p.set_mode(Some(ThpMode::Madvise));
        assert_eq!(p.growing(8 * MIB, true, false), (Some(true), true));
        assert_eq!(p.growing(8 * MIB, true, true), (None, true));
        assert_eq!(p.growing(8 * MIB, false, true), (Some(false), false));
        assert_eq!(p.growing(8 * MIB, false, false), (None, false));
        assert_eq!(p.growing(MIB, true, false), (None, false));
        p.set_mode(Some(ThpMode::Always));
        assert_eq!(p.growing(8 * MIB, false, false), (Some(false), false));
    }

    #[cfg(not(miri))]
    #[test]
    fn density_is_measured_from_resident_pages() {
        let os = Os::new();
        let page = hak_os::page_size();
        for pages in [PROBE_PAGES, 3000] {
            let len = pages * page;
            let p = os.map(len, page).unwrap();
            assert_eq!(is_dense(&os, p, len, page), Some(false));
            // SAFETY: a fresh mapping of ours, on base pages (not advised).
            unsafe {
                p.as_ptr().write_bytes(1, 64);
                p.as_ptr().add(len - 64).write_bytes(1, 64);
            }
            assert_eq!(is_dense(&os, p, len, page), Some(false), "both ends only");
            // SAFETY: as above.
            unsafe { p.as_ptr().write_bytes(1, len) };
            assert_eq!(is_dense(&os, p, len, page), Some(true), "every page");
            // SAFETY: ours, unused from here on.
            unsafe { os.unmap(p, len) }.unwrap();
        }
        assert_eq!(is_dense(&os, NonNull::dangling(), 0, page), None, "an empty range");
    }
}
