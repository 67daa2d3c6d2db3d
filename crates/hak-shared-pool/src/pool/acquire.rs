//! The stage policy of [`SharedPool::acquire`]: where a slab comes from (an abandoned slab of
//! the class, an EMPTY slot of the class, a warm EMPTY slot of another class, an UNUSED slot,
//! any EMPTY slot, a new SuperSlab), and how a slot becomes ACTIVE. Every choice under the lock
//! is a bounded look at list heads, never a scan.

use hak_registry::OwnerKind;
use hak_superslab::{Inbox, SsRef};

use super::{Acquired, SharedPool, Stage, State, MAX_CLASSES};
use crate::slots::{ext, ss, Slot, ACTIVE};

/// Live SuperSlabs (2 MiB each) from which a fresh one is advised for transparent huge pages:
/// a program whose small-object heap has grown past 16 MiB uses its SuperSlabs densely
/// (slabs are carved in order and stage 2 fills existing SuperSlabs first), so one 2 MiB fault
/// replaces 512 small ones; a small program never pays a 2 MiB fault for a 64 KiB need.
const HUGE_AFTER: usize = 8;

impl SharedPool<'_> {
    /// Hands out a slab for `class` (blocks of `block_size` bytes, see `SlabRef::assign` for
    /// the rules), owned by `owner`. `None` only if the OS refuses memory.
    ///
    /// An adopted slab (stage 0) may have blocks in use and free blocks on its list; any other
    /// slab is empty. `class < MAX_CLASSES`.
    ///
    /// # Safety
    /// `owner` is non-null, and stays valid and in place while it owns the slab (remote freers
    /// deliver into it).
    pub unsafe fn acquire(
        &self,
        class: usize,
        block_size: u32,
        owner: *const Inbox,
    ) -> Option<Acquired> {
        hak_sync::check!(class < MAX_CLASSES && !owner.is_null());
        let got = {
            let mut st = self.state.lock();
            // SAFETY: the lock is held for every list operation below.
            unsafe { Self::take_locked(&mut st, class) }
        };
        let (s, stage) = match got {
            Some(x) => x,
            None => (self.grow(class)?, Stage::NewSuperSlab),
        };
        // SAFETY: pool SuperSlabs stay mapped while they have an ACTIVE slot, and this one does.
        let slab = unsafe { s.slab() };
        match stage {
            Stage::Adopted => {
                // SAFETY: we took it off the abandoned list: exclusive; `owner` per the contract.
                unsafe { slab.adopt(owner) };
                self.counters.stage0_adopted.add(1);
            }
            _ => {
                // SAFETY: the slot was EMPTY or UNUSED and is now ours alone; `owner` per the
                // contract.
                unsafe { slab.assign(owner, class as u32, block_size) };
                match stage {
                    Stage::EmptySameClass | Stage::EmptyOtherClass => {
                        self.counters.stage1_empty.add(1)
                    }
                    Stage::Unused => self.counters.stage2_unused.add(1),
                    _ => self.counters.stage3_new.add(1),
                }
            }
        }
        self.maybe_purge();
        Some(Acquired { slab, stage })
    }

    /// Stages 0-2 under the lock.
    ///
    /// # Safety
    /// `st` is the locked state.
    unsafe fn take_locked(st: &mut State, class: usize) -> Option<(Slot, Stage)> {
        // SAFETY: lock held (caller).
        unsafe {
            if let Some(s) = st.abandoned[class].pop_front() {
                st.abandoned_count -= 1;
                return Some((s, Stage::Adopted));
            }
            if let Some(s) = st.empty[class].pop_front() {
                Self::activate(st, s, class);
                return Some((s, Stage::EmptySameClass));
            }
            // An EMPTY slot of another class whose pages are still resident (not yet purged)
            // before any UNUSED one: it costs no page faults and no new resident memory, where
            // an UNUSED slot faults in fresh pages while the warm one waits for its purge (a
            // program whose live classes shift kept both resident). Newest first: each list's
            // head is the slot emptied last. A bounded look at the list heads.
            for c in 0..MAX_CLASSES {
                let Some(s) = st.empty[c].head() else { continue };
                if ext(s.ss()).dirty_mask & (1u64 << s.index()) != 0 {
                    st.empty[c].remove(s);
                    Self::activate(st, s, class);
                    return Some((s, Stage::EmptyOtherClass));
                }
            }
            if let Some(ss) = Self::pick_unused(st, class) {
                let i = {
                    let e = ext(ss);
                    let i = e.unused_mask.trailing_zeros() as usize;
                    e.unused_mask &= !(1u64 << i);
                    i
                };
                if ext(ss).unused_mask == 0 {
                    st.unused.remove(ss.as_ptr());
                }
                let s = Slot::new(ss, i);
                Self::activate(st, s, class);
                return Some((s, Stage::Unused));
            }
            for c in 0..MAX_CLASSES {
                if let Some(s) = st.empty[c].pop_front() {
                    Self::activate(st, s, class);
                    return Some((s, Stage::Unused));
                }
            }
        }
        None
    }

    /// A SuperSlab with UNUSED slots, preferring one that already serves `class` among the
    /// first few on the list (a bounded look, never a scan of every SuperSlab).
    ///
    /// # Safety
    /// Lock held.
    unsafe fn pick_unused(st: &State, class: usize) -> Option<SsRef> {
        const LOOK: usize = 8;
        // SAFETY: listed SuperSlabs are live; lock held.
        let hit = unsafe { st.unused.find(LOOK, |p| ext(ss(p)).class_mask & (1u64 << class) != 0) };
        hit.or(st.unused.head()).map(ss)
    }

    /// Makes slot `s` ACTIVE for `class`; if it was a dirty EMPTY slot, it stops being a purge
    /// candidate.
    ///
    /// # Safety
    /// Lock held; `s` is on no list and not ACTIVE.
    unsafe fn activate(st: &mut State, s: Slot, class: usize) {
        let ss = s.ss();
        let i = s.index();
        // SAFETY: forwarded; each access borrows the extension area briefly.
        unsafe {
            let was_dirty = {
                let e = ext(ss);
                e.state[i] = ACTIVE;
                e.class[i] = class as u8;
                e.class_mask |= 1u64 << class;
                e.active += 1;
                let d = e.dirty_mask & (1u64 << i) != 0;
                e.dirty_mask &= !(1u64 << i);
                d && e.dirty_mask == 0
            };
            if was_dirty {
                st.dirty.remove(ss.as_ptr());
            }
        }
    }

    /// Stage 3: a SuperSlab from the cache or the OS; returns its slot 0, ACTIVE for `class`,
    /// with the other slots on the UNUSED list.
    #[cold]
    fn grow(&self, class: usize) -> Option<Slot> {
        let size = 1usize << self.lg_size;
        let dense = self.state.lock().live >= HUGE_AFTER;
        let base = match self.cache.pop(size) {
            Some(b) => {
                self.counters.lru_hits.add(1);
                b
            }
            None => {
                let os = self.registry.os();
                let b = os.map(size, size).ok()?;
                if self.registry.register(b, size, OwnerKind::SuperSlab).is_err() {
                    // SAFETY: never shared.
                    let _ = unsafe { os.unmap(b, size) };
                    return None;
                }
                self.counters.superslabs_mapped.add(1);
                b
            }
        };
        if dense {
            // SAFETY: a whole mapping of ours that nobody uses yet; advice changes no contents.
            // Refused advice (no THP in the kernel) only costs the faults it would have saved.
            let _ = unsafe { self.registry.os().advise_huge(base, size, true) };
        }
        // SAFETY: a registered region of the right size that nobody else references (fresh, or
        // popped from the cache). It is formatted before any slot of it is handed out.
        let ss = unsafe { SsRef::init(base, self.lg_size) };
        // SAFETY: just formatted.
        let n = unsafe { ss.nslabs() };
        let mut st = self.state.lock();
        // SAFETY: lock held; the header was just formatted (ext zeroed = all UNUSED).
        unsafe {
            let unused = (if n == 64 { u64::MAX } else { (1u64 << n) - 1 }) & !1;
            ext(ss).unused_mask = unused;
            Self::activate(&mut st, Slot::new(ss, 0), class);
            if unused != 0 {
                st.unused.push_back(ss.as_ptr());
            }
            st.all.push_back(ss.as_ptr());
        }
        st.live += 1;
        Some(Slot::new(ss, 0))
    }
}
