//! The two-level page map: `top[i] -> leaf`, `leaf[j] -> base | kind`.
//!
//! `i = addr >> (GRANULE_SHIFT + LEAF_BITS)`, `j = (addr >> GRANULE_SHIFT) & (LEAF_LEN - 1)`.
//! Under `--cfg hak_loom` the levels shrink to 16 slots each (addresses below 256 MiB) so a model
//! stays small; the code is the same.

use core::cell::UnsafeCell;
use core::num::NonZeroU8;
use core::ptr::{self, NonNull};

use hak_os::{Os, OsError};
use hak_sync::atomic::{AtomicPtr, Ordering};
use hak_sync::stat::StatCounter;

/// log2 of the granule the map resolves: 1 MiB, the smallest SuperSlab hakmem supports.
pub const GRANULE_SHIFT: u32 = 20;
/// The granule in bytes (1 MiB).
pub const GRANULE: usize = 1 << GRANULE_SHIFT;

/// log2 of the number of top-level slots (4096: with 16 leaf bits, 48-bit addresses).
#[cfg(not(hak_loom))]
pub const TOP_BITS: u32 = 12;
/// log2 of the number of entries in one leaf (65536 entries: 512 KiB virtual, 64 GiB covered).
#[cfg(not(hak_loom))]
pub const LEAF_BITS: u32 = 16;
/// log2 of the number of top-level slots (shrunk under loom: the map covers 256 MiB, where
/// hak-os hints aligned mappings under loom).
#[cfg(hak_loom)]
pub const TOP_BITS: u32 = 4;
/// log2 of the number of entries in one leaf (shrunk under loom).
#[cfg(hak_loom)]
pub const LEAF_BITS: u32 = 4;

const TOP_LEN: usize = 1 << TOP_BITS;
const LEAF_LEN: usize = 1 << LEAF_BITS;
/// Addresses at or above this are outside the map (not ours).
const ADDR_LIMIT: usize = 1 << (GRANULE_SHIFT + LEAF_BITS + TOP_BITS);
/// The entry bits that hold the kind: the low 8 of a granule-aligned base, which are zero.
const KIND_MASK: usize = 0xFF;
const _: () = assert!(KIND_MASK < GRANULE, "the kind must fit below the granule alignment");

#[cfg(not(hak_loom))]
const _: () = assert!(GRANULE_SHIFT + LEAF_BITS + TOP_BITS == 48);

/// One leaf: `LEAF_LEN` entries, living in memory from hak-os. An entry is the owner's base
/// pointer with the kind in its low 8 bits (`base.map_addr(|a| a | kind)`), so a lookup hands
/// back the pointer the owner registered, provenance included: the owner reaches its header
/// through it without an integer-to-pointer cast.
struct Leaf {
    entries: [AtomicPtr<u8>; LEAF_LEN],
}

/// The top level: one leaf pointer per 64 GiB. The array sits behind one `UnsafeCell` and is
/// only ever touched through the atomics in it; the cell makes a `&Registry` a single
/// interior-mutable range for Miri's borrow trackers, where 4096 separate atomics made
/// retagging every `&self` cost milliseconds.
struct Top(UnsafeCell<[AtomicPtr<Leaf>; TOP_LEN]>);

impl Top {
    #[inline]
    fn slot(&self, i: usize) -> &AtomicPtr<Leaf> {
        // SAFETY: the array is never accessed except through shared references to its atomics,
        // so handing out another one is what `&[AtomicPtr]` indexing would do. `i` is bounds
        // checked by the indexing.
        unsafe { &(*self.0.get())[i] }
    }
}

/// What kind of owner a granule belongs to: a small non-zero number, stored in the low 8 bits
/// of the map entry beside the region's base (which is granule-aligned, so those bits are
/// free). Values `1..FIRST_USER` are hakmem's tiers, three of them named here;
/// [`OwnerKind::FIRST_USER`]`..=255` are open to allocators built from the layers, which
/// register regions of their own under them ([`OwnerKind::user`]) and tell them apart by
/// comparing kinds after a lookup.
///
/// The built-in kinds keep the names they had when this was an enum, so matching reads as
/// before (`Some(OwnerKind::Mid) => ..`, a compare against a constant); a match must now end
/// with a catch-all arm for the other kinds.
///
/// Kinds are only labels: the registry attaches no meaning to any value. One registry shared
/// by several owners of one kind is the owners' business (hak-l25's `Mid`, for one, takes
/// every `Mid` region of its registry as its own), so a custom allocator that shares a
/// registry with hakmem's tiers should pick a user kind.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct OwnerKind(NonZeroU8);

// The built-in kinds are named like the enum variants they were (see the type's docs).
#[allow(non_upper_case_globals)]
impl OwnerKind {
    /// A SuperSlab of the tiny tier (its header is at `base`).
    pub const SuperSlab: OwnerKind = OwnerKind(NonZeroU8::new(1).unwrap());
    /// A chunk of the mid tier.
    pub const Mid: OwnerKind = OwnerKind(NonZeroU8::new(2).unwrap());
    /// A big-tier mapping.
    pub const Big: OwnerKind = OwnerKind(NonZeroU8::new(3).unwrap());
}

impl OwnerKind {
    /// The first value open to user kinds. `1..FIRST_USER` is kept for hakmem's tiers.
    pub const FIRST_USER: u8 = 16;

    /// A kind of the caller's own: `value` in [`OwnerKind::FIRST_USER`]`..=255`, `None`
    /// otherwise. `const`, so `const ARENA: OwnerKind = OwnerKind::user(16).unwrap();` checks
    /// the range at compile time.
    pub const fn user(value: u8) -> Option<OwnerKind> {
        match NonZeroU8::new(value) {
            Some(v) if value >= Self::FIRST_USER => Some(OwnerKind(v)),
            _ => None,
        }
    }

    /// The kind's number (1..=255).
    #[inline]
    pub const fn get(self) -> u8 {
        self.0.get()
    }

    /// Whether this is a user kind (at least [`OwnerKind::FIRST_USER`]).
    #[inline]
    pub const fn is_user(self) -> bool {
        self.get() >= Self::FIRST_USER
    }
}

impl core::fmt::Debug for OwnerKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            OwnerKind::SuperSlab => f.write_str("SuperSlab"),
            OwnerKind::Mid => f.write_str("Mid"),
            OwnerKind::Big => f.write_str("Big"),
            k if k.is_user() => write!(f, "User({})", k.get()),
            k => write!(f, "Reserved({})", k.get()),
        }
    }
}

/// The owner of a granule: its kind and the base of the region it registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Which tier (or user kind) owns the region.
    pub kind: OwnerKind,
    /// The first byte of the registered region: the pointer given to [`Registry::register`],
    /// with its provenance, so the owner can reach its header through it.
    pub base: NonNull<u8>,
}

/// Why [`Registry::register`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterError {
    /// `base` is null, not [`GRANULE`]-aligned, or `len` is 0.
    Misaligned,
    /// The region reaches past the 48-bit address space the map covers.
    OutOfRange,
    /// A granule of the region is already owned (double registration); nothing changed.
    Occupied,
    /// Mapping a leaf failed.
    NoMemory(OsError),
}

/// The address -> owner map. See the crate docs for invariants and the concurrency contract.
pub struct Registry<'os> {
    os: &'os Os,
    top: Top,
    leaves: StatCounter,
}

impl core::fmt::Debug for Registry<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Registry").field("leaves", &self.leaves.get()).finish_non_exhaustive()
    }
}

impl<'os> Registry<'os> {
    /// An empty map that takes its leaves from `os`.
    #[cfg(not(hak_loom))]
    pub const fn new(os: &'os Os) -> Registry<'os> {
        Registry {
            os,
            top: Top(UnsafeCell::new([const { AtomicPtr::new(ptr::null_mut()) }; TOP_LEN])),
            leaves: StatCounter::new(),
        }
    }

    /// An empty map that takes its leaves from `os`.
    #[cfg(hak_loom)]
    pub fn new(os: &'os Os) -> Registry<'os> {
        Registry {
            os,
            top: Top(UnsafeCell::new(core::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())))),
            leaves: StatCounter::new(),
        }
    }

    /// The OS box this registry maps from.
    #[inline]
    pub fn os(&self) -> &'os Os {
        self.os
    }

    /// Leaves mapped so far (each 512 KiB of address space, committed as touched).
    pub fn leaf_count(&self) -> u64 {
        self.leaves.get()
    }

    /// The owner of the granule holding `addr`, or `None` if no region claims it.
    ///
    /// Wait-free; safe for any address, including null and kernel addresses.
    #[inline]
    pub fn lookup(&self, addr: usize) -> Option<Owner> {
        decode(self.entry(addr))
    }

    /// The raw entry of the granule holding `addr` (null if no region claims it): the one
    /// walk [`Registry::lookup`] and [`Registry::kind`] share.
    #[inline(always)]
    fn entry(&self, addr: usize) -> *mut u8 {
        if addr >= ADDR_LIMIT {
            return ptr::null_mut();
        }
        let leaf = self.top.slot(addr >> (GRANULE_SHIFT + LEAF_BITS)).load(Ordering::Acquire);
        if leaf.is_null() {
            return ptr::null_mut();
        }
        let j = (addr >> GRANULE_SHIFT) & (LEAF_LEN - 1);
        // SAFETY: a published leaf is never unmapped while the registry lives, and the acquire
        // load above synchronises with its initialisation.
        unsafe { (*leaf).entries[j].load(Ordering::Acquire) }
    }

    /// The kind of owner of the granule holding `addr`, without the base: [`Registry::lookup`]
    /// cut to what a `free` without a size needs first, a few instructions shorter (one bounds
    /// check for the address range, no decoding of the base). Wait-free; safe for any address.
    #[inline(always)]
    pub fn kind(&self, addr: usize) -> Option<OwnerKind> {
        kind_of(self.entry(addr))
    }

    /// Claims every granule of `[base, base + len)` for `kind`.
    ///
    /// `base` must be [`GRANULE`]-aligned; `len` may be any non-zero size (the last granule is
    /// claimed whole). Call it after the region's owner header is initialised and before its
    /// address is handed to anyone. On error the map is unchanged. `base` should carry the
    /// mapping's provenance (derived from the pointer `Os::map` returned, not from a reference
    /// into the region): lookups hand it back as [`Owner::base`].
    pub fn register(
        &self,
        base: NonNull<u8>,
        len: usize,
        kind: OwnerKind,
    ) -> Result<(), RegisterError> {
        let (first, count) = granules(base, len)?;
        let value = base.as_ptr().map_addr(|a| a | kind.get() as usize);
        for k in 0..count {
            let g = first + k;
            let slot = match self.slot(g, true) {
                Ok(s) => s,
                Err(e) => {
                    self.clear(first, k);
                    return Err(e);
                }
            };
            if slot
                .compare_exchange(ptr::null_mut(), value, Ordering::Release, Ordering::Relaxed)
                .is_err()
            {
                self.clear(first, k);
                return Err(RegisterError::Occupied);
            }
        }
        Ok(())
    }

    /// Releases the granules of a region registered with the same `base` and `len`.
    /// Granules owned by another region are left alone. Call it before unmapping the region.
    pub fn unregister(&self, base: NonNull<u8>, len: usize) {
        let Ok((first, count)) = granules(base, len) else { return };
        let value = base.as_ptr().addr();
        for g in first..first + count {
            if let Ok(slot) = self.slot(g, false) {
                let cur = slot.load(Ordering::Relaxed);
                if cur.addr() & !KIND_MASK == value {
                    slot.store(ptr::null_mut(), Ordering::Release);
                }
            }
        }
    }

    fn clear(&self, first: usize, count: usize) {
        for g in first..first + count {
            if let Ok(slot) = self.slot(g, false) {
                slot.store(ptr::null_mut(), Ordering::Release);
            }
        }
    }

    /// The entry for granule number `g`, mapping its leaf if `create`.
    fn slot(&self, g: usize, create: bool) -> Result<&AtomicPtr<u8>, RegisterError> {
        let top = self.top.slot(g >> LEAF_BITS);
        let mut leaf = top.load(Ordering::Acquire);
        if leaf.is_null() {
            if !create {
                return Err(RegisterError::OutOfRange);
            }
            leaf = self.new_leaf(top)?;
        }
        // SAFETY: published leaves live as long as the registry.
        Ok(unsafe { &(*leaf).entries[g & (LEAF_LEN - 1)] })
    }

    #[cold]
    fn new_leaf(&self, top: &AtomicPtr<Leaf>) -> Result<*mut Leaf, RegisterError> {
        let bytes = leaf_bytes();
        let mem = self.os.map(bytes, 1).map_err(RegisterError::NoMemory)?;
        let fresh = mem.as_ptr().cast::<Leaf>();
        // Fresh mappings are zero, which is a valid null `AtomicPtr`; loom's atomics must be
        // constructed.
        #[cfg(hak_loom)]
        for i in 0..LEAF_LEN {
            // SAFETY: `fresh` points to `bytes >= size_of::<Leaf>()` writable bytes.
            unsafe {
                ptr::addr_of_mut!((*fresh).entries[i]).write(AtomicPtr::new(ptr::null_mut()))
            };
        }
        match top.compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                self.leaves.add(1);
                Ok(fresh)
            }
            Err(winner) => {
                // SAFETY: our leaf was never published; nobody else can see it.
                let _ = unsafe { self.os.unmap(mem, bytes) };
                Ok(winner)
            }
        }
    }
}

impl Drop for Registry<'_> {
    fn drop(&mut self) {
        // Stop once every published leaf is unmapped: most maps use one or two top slots.
        let mut left = self.leaves.get();
        for i in 0..TOP_LEN {
            if left == 0 {
                break;
            }
            let leaf = self.top.slot(i).load(Ordering::Acquire);
            if let Some(p) = NonNull::new(leaf.cast::<u8>()) {
                left -= 1;
                // SAFETY: `&mut self` means no lookups are running; the leaf came from `os.map`.
                let _ = unsafe { self.os.unmap(p, leaf_bytes()) };
            }
        }
    }
}

#[cfg(all(test, not(hak_loom)))]
pub(crate) const LEAF_BYTES_FOR_TESTS: usize = core::mem::size_of::<Leaf>();

fn leaf_bytes() -> usize {
    let page = hak_os::page_size();
    (core::mem::size_of::<Leaf>() + page - 1) & !(page - 1)
}

fn granules(base: NonNull<u8>, len: usize) -> Result<(usize, usize), RegisterError> {
    let b = base.as_ptr() as usize;
    if b & (GRANULE - 1) != 0 || len == 0 {
        return Err(RegisterError::Misaligned);
    }
    let end = b.checked_add(len).ok_or(RegisterError::OutOfRange)?;
    if end > ADDR_LIMIT {
        return Err(RegisterError::OutOfRange);
    }
    let first = b >> GRANULE_SHIFT;
    let count = (len + GRANULE - 1) >> GRANULE_SHIFT;
    Ok((first, count))
}

#[inline]
fn decode(e: *mut u8) -> Option<Owner> {
    let kind = kind_of(e)?;
    Some(Owner { kind, base: NonNull::new(e.map_addr(|a| a & !KIND_MASK))? })
}

/// The owner kind an entry's low bits encode (`None` for an empty entry, whose bits are 0):
/// a mask, no table and no branch.
#[inline(always)]
fn kind_of(e: *mut u8) -> Option<OwnerKind> {
    NonZeroU8::new((e.addr() & KIND_MASK) as u8).map(OwnerKind)
}

// SAFETY: all shared state is atomics (the top array is only reached through its atomics);
// leaves are immutable once published apart from their atomic entries.
unsafe impl Send for Registry<'_> {}
// SAFETY: as above.
unsafe impl Sync for Registry<'_> {}

#[cfg(all(test, not(hak_loom)))]
mod tests {
    use super::*;

    /// A region address for registration tests: nothing is mapped there, so it has no
    /// provenance.
    fn nn(a: usize) -> NonNull<u8> {
        NonNull::new(ptr::without_provenance_mut(a)).unwrap()
    }

    #[test]
    fn unknown_addresses_are_none() {
        let os = Os::new();
        let r = Registry::new(&os);
        for a in [0usize, 1, 0x1234_5678, usize::MAX, ADDR_LIMIT, 0x7fff_ffff_f000] {
            assert_eq!(r.lookup(a), None, "{a:#x}");
            assert_eq!(r.kind(a), None, "{a:#x}");
        }
        assert_eq!(os.stats().mmap_calls, 0, "lookups never map");
    }

    #[test]
    fn register_covers_every_byte_and_only_those_granules() {
        let os = Os::new();
        let r = Registry::new(&os);
        let base = 0x2000_0040_0000usize; // 4 MiB-aligned
        r.register(nn(base), 2 * GRANULE + 1, OwnerKind::Big).unwrap();
        let owner = Owner { kind: OwnerKind::Big, base: nn(base) };
        for a in [base, base + 5, base + GRANULE, base + 3 * GRANULE - 1] {
            assert_eq!(r.lookup(a), Some(owner), "{a:#x}");
        }
        assert_eq!(r.lookup(base - 1), None);
        assert_eq!(r.lookup(base + 3 * GRANULE), None);
        for a in [base, base + 5, base + GRANULE, base + 3 * GRANULE - 1] {
            assert_eq!(r.kind(a), Some(OwnerKind::Big), "{a:#x}");
        }
        assert_eq!(r.kind(base - 1), None);
        r.unregister(nn(base), 2 * GRANULE + 1);
        assert_eq!(r.lookup(base), None);
        assert_eq!(r.kind(base), None);
        assert_eq!(r.lookup(base + 2 * GRANULE), None);
    }

    #[test]
    fn double_registration_is_rejected_and_changes_nothing() {
        let os = Os::new();
        let r = Registry::new(&os);
        let a = 0x1000_0000usize;
        r.register(nn(a + GRANULE), GRANULE, OwnerKind::SuperSlab).unwrap();
        // Overlaps the second granule of the first region.
        assert_eq!(r.register(nn(a), 2 * GRANULE, OwnerKind::Mid), Err(RegisterError::Occupied));
        assert_eq!(r.lookup(a), None, "rolled back");
        assert_eq!(r.lookup(a + GRANULE).unwrap().kind, OwnerKind::SuperSlab);
    }

    #[test]
    fn misaligned_and_out_of_range_regions_are_rejected() {
        let os = Os::new();
        let r = Registry::new(&os);
        assert_eq!(
            r.register(nn(GRANULE + 4096), 10, OwnerKind::Mid),
            Err(RegisterError::Misaligned)
        );
        assert_eq!(r.register(nn(GRANULE), 0, OwnerKind::Mid), Err(RegisterError::Misaligned));
        assert_eq!(
            r.register(nn(ADDR_LIMIT - GRANULE), 2 * GRANULE, OwnerKind::Mid),
            Err(RegisterError::OutOfRange)
        );
    }

    #[test]
    fn leaf_mapping_failure_is_an_error_and_registration_works_after() {
        let os = Os::new();
        let r = Registry::new(&os);
        os.fail_next_maps(1);
        let err = r.register(nn(GRANULE), GRANULE, OwnerKind::Mid).unwrap_err();
        assert!(matches!(err, RegisterError::NoMemory(_)));
        r.register(nn(GRANULE), GRANULE, OwnerKind::Mid).unwrap();
        assert_eq!(r.leaf_count(), 1);
    }

    #[test]
    fn unregister_leaves_other_owners_alone() {
        let os = Os::new();
        let r = Registry::new(&os);
        r.register(nn(4 * GRANULE), GRANULE, OwnerKind::Mid).unwrap();
        r.unregister(nn(3 * GRANULE), 2 * GRANULE); // a region that was never registered
        assert!(r.lookup(4 * GRANULE).is_some());
    }

    #[test]
    fn a_user_kind_is_registered_and_looked_up_beside_the_built_in_ones() {
        const ARENA: OwnerKind = OwnerKind::user(200).unwrap();
        let os = Os::new();
        let r = Registry::new(&os);
        let (a, b) = (0x3000_0000usize, 0x3000_0000usize + 2 * GRANULE);
        r.register(nn(a), 2 * GRANULE, ARENA).unwrap();
        r.register(nn(b), GRANULE, OwnerKind::Mid).unwrap();
        for x in [a, a + 1, a + 2 * GRANULE - 1] {
            assert_eq!(r.lookup(x), Some(Owner { kind: ARENA, base: nn(a) }), "{x:#x}");
            assert_eq!(r.kind(x), Some(ARENA));
        }
        assert_eq!(r.kind(b), Some(OwnerKind::Mid), "the neighbour keeps its own kind");
        // A granule has one owner whatever the kinds.
        assert_eq!(r.register(nn(a), GRANULE, OwnerKind::Big), Err(RegisterError::Occupied));
        r.unregister(nn(a), 2 * GRANULE);
        assert_eq!(r.lookup(a), None);
        assert_eq!(r.kind(b), Some(OwnerKind::Mid));
    }

    #[test]
    fn every_kind_value_survives_the_entry_encoding() {
        let os = Os::new();
        let r = Registry::new(&os);
        let kinds = [OwnerKind::SuperSlab, OwnerKind::Mid, OwnerKind::Big]
            .into_iter()
            .chain((OwnerKind::FIRST_USER..=u8::MAX).map(|v| OwnerKind::user(v).unwrap()));
        for (i, k) in kinds.enumerate() {
            // Neighbouring granules under different kinds: a decoding that mixed base and kind
            // bits, or lost a kind bit, would show.
            let base = (1usize << 40) + (i * 3 + 1) * GRANULE;
            r.register(nn(base), GRANULE, k).unwrap();
            assert_eq!(r.lookup(base + 7), Some(Owner { kind: k, base: nn(base) }), "{k:?}");
            assert_eq!(r.kind(base + GRANULE - 1), Some(k));
        }
    }

    #[test]
    fn user_kinds_are_the_documented_range_and_built_in_kinds_are_not_user_kinds() {
        for v in 0..OwnerKind::FIRST_USER {
            assert_eq!(OwnerKind::user(v), None, "{v} is reserved");
        }
        assert_eq!(OwnerKind::user(16).map(OwnerKind::get), Some(16));
        assert_eq!(OwnerKind::user(255).map(OwnerKind::get), Some(255));
        assert!(OwnerKind::user(16).unwrap().is_user());
        for k in [OwnerKind::SuperSlab, OwnerKind::Mid, OwnerKind::Big] {
            assert!(!k.is_user() && k.get() < OwnerKind::FIRST_USER);
        }
        assert_eq!(std::format!("{:?}", OwnerKind::user(42).unwrap()), "User(42)");
        assert_eq!(std::format!("{:?}", OwnerKind::Mid), "Mid");
        assert_eq!(core::mem::size_of::<Option<OwnerKind>>(), 1, "0 is the niche for None");
    }

    #[test]
    fn concurrent_registration_of_disjoint_regions_shares_leaves() {
        let os = Os::new();
        let r = Registry::new(&os);
        std::thread::scope(|s| {
            for t in 0..4usize {
                let r = &r;
                s.spawn(move || {
                    for k in 0..256usize {
                        let a = (1usize << 40) + (t * 256 + k) * GRANULE;
                        r.register(nn(a), GRANULE, OwnerKind::SuperSlab).unwrap();
                    }
                });
            }
        });
        assert_eq!(r.leaf_count(), 1, "racing leaf creation publishes exactly one leaf");
        for k in 0..1024usize {
            assert!(r.lookup((1usize << 40) + k * GRANULE).is_some());
        }
    }
}
