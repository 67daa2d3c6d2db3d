//! [`Slab`] (the record of one 64 KiB slab) and [`SlabRef`] (the raw handle every operation
//! goes through): carving, the local free list, the remote stack, and the full-slab
//! notification that brings a full slab back to its owner without passing through a lock.
//!
//! The remote head is a pointer word `count << 48 | first_block | flags` (blocks are 16-byte
//! aligned, user-space addresses fit 48 bits, a slab has at most 32768 blocks). It is an
//! `AtomicPtr` whose tag bits are set with `map_addr`, so the first block's provenance survives
//! the round trip; block links are stored as pointers for the same reason. Count and list
//! change in one compare-exchange, so the owner takes the list over without walking it.
//!
//! Flags, and who sets them:
//! - `FULL`: the owner found the slab with no free block anywhere ([`SlabRef::mark_full`]),
//!   or the owner is giving up a full slab ([`SlabRef::try_detach`]). The remote push that
//!   finds `FULL` clears it, sets `DELIVERING`, and then *delivers*: to the owner's [`Inbox`] if
//!   the slab has one ([`RemoteFree::Pushed`]), else it tells its caller to publish the
//!   detached slab to the adopters' list ([`RemoteFree::Publish`]), exactly once.
//! - `DELIVERING`: a remote freer is between consuming `FULL` and finishing the delivery. The
//!   owner never changes `owner` while it is set: [`SlabRef::retract_full`] waits for it, so a
//!   delivery can never land in the inbox of a cache that has already been flushed.
//!
//! An owned slab is in the inbox at most once: the owner arms `FULL` only on a slab that is not
//! in its inbox (it drains the inbox whenever [`SlabRef::retract_full`] says a delivery took
//! the flag), and a slab in the inbox is one its owner lists as full.

use core::ptr::{self, NonNull};

use hak_collections::Links;
use hak_sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use hak_sync::cell::UnsafeCell;

use crate::inbox::Inbox;
use crate::node;
use crate::superslab::{SsRef, SuperSlab, LG_SUPERSLAB_MIN, SLABS_OFFSET, SLAB_SHIFT};

/// Remote-head flag: the slab has no free block; the next remote freer delivers it.
const FULL: usize = 1;
/// Remote-head flag: a remote freer is delivering the slab.
const DELIVERING: usize = 2;
const FLAGS: usize = 0b1111;
/// The block count lives in the head's top 16 bits.
const COUNT_SHIFT: u32 = 48;
const COUNT_ONE: usize = 1 << COUNT_SHIFT;
/// The first block's address.
const PTR_MASK: usize = (COUNT_ONE - 1) & !FLAGS;
// Every block of a slab fits the 16-bit counters (blocks are at least 16 bytes).
const _: () = assert!(crate::SLAB_SIZE / 16 <= u16::MAX as usize);

/// Owner-side flag in [`Local::flags`]: this owner set `FULL` and has not seen it consumed.
const ARMED: u8 = 1;

/// Owner-only state of a slab.
#[derive(Debug)]
struct Local {
    /// Head of the intrusive local free list (link in a block's first word, a pointer).
    free: *mut u8,
    /// Links of the owner's list the slab is on (see [`SlabRef::owner_links`]).
    links: Links<*mut Slab>,
    /// Blocks handed out and not yet back on `free` (includes blocks on the remote stack).
    used: u16,
    /// Blocks carved so far, from the slab's data start upwards.
    carved: u16,
    /// Blocks that fit.
    capacity: u16,
    /// A tag the owner's bookkeeping may use (which list the slab is on); opaque here.
    tag: u8,
    /// `ARMED`.
    flags: u8,
}

/// Metadata of one slab, 64 bytes: the shared words first, the owner's after them. The slab
/// serves blocks of one size, at least 16 bytes and a multiple of 16, each aligned to the
/// largest power of two dividing the size (capped at the page size); the crate docs give the
/// reasons, and what a caller passes as owner and class.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Slab {
    /// Remote free stack head (see the module docs); any thread pushes, the owner takes.
    remote: AtomicPtr<u8>,
    /// The owner's inbox (its identity); null when detached. Written by the owner or adopter.
    owner: AtomicPtr<Inbox>,
    /// Link while the slab waits in an owner's inbox; written by the deliverer before its
    /// publishing compare-exchange, read by the owner after taking the inbox.
    inbox_next: UnsafeCell<*mut Slab>,
    /// Size class index assigned by the layer above (meaningful while the slab is assigned).
    class: AtomicU32,
    /// Block size in bytes (0 while unassigned).
    block_size: AtomicU32,
    /// Owner-only state.
    local: UnsafeCell<Local>,
}

/// What a remote free asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum RemoteFree {
    /// The blocks are on the remote stack (and, if the slab was full, the slab is in its
    /// owner's inbox); nothing else to do.
    Pushed,
    /// The blocks are on the remote stack of a detached full slab that no list holds: the
    /// caller must hand the slab to whoever adopts abandoned slabs (the shared pool), exactly
    /// once.
    Publish,
}

/// What [`SlabRef::retract_full`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retract {
    /// The slab was not armed, or the owner took `FULL` back before anyone consumed it.
    Retracted,
    /// A remote freer consumed `FULL`: the slab is in the owner's inbox (the delivery has
    /// finished). Drain the inbox before arming it again.
    Delivered,
}

impl Slab {
    /// Formats the record in place (unassigned, detached).
    ///
    /// # Safety
    /// `this` points to writable memory for a `Slab` that no other thread can see yet.
    pub(crate) unsafe fn init(this: *mut Slab) {
        // SAFETY: forwarded from the caller; every field is written before anyone reads it.
        unsafe {
            this.write(Slab {
                remote: AtomicPtr::new(ptr::null_mut()),
                owner: AtomicPtr::new(ptr::null_mut()),
                inbox_next: UnsafeCell::new(ptr::null_mut()),
                class: AtomicU32::new(0),
                block_size: AtomicU32::new(0),
                local: UnsafeCell::new(Local {
                    free: ptr::null_mut(),
                    links: Links::new(),
                    used: 0,
                    carved: 0,
                    capacity: 0,
                    tag: 0,
                    flags: 0,
                }),
            })
        };
    }
}

/// A raw handle to a slab record, carrying the mapping's provenance (from an [`SsRef`]).
/// Block sizes follow the rules on [`Slab`] (and in the crate docs).
///
/// Every operation is `unsafe`: the caller knows the SuperSlab is mapped and formatted, and,
/// for the owner operations, that it owns the slab (`owner() == its inbox`), or holds it
/// exclusively through the layer above (an adopter, the pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlabRef(NonNull<Slab>);

// SAFETY: an address with provenance; the record's shared fields are atomics.
unsafe impl Send for SlabRef {}
// SAFETY: as above.
unsafe impl Sync for SlabRef {}

#[inline]
fn head_ptr(h: *mut u8) -> *mut u8 {
    h.map_addr(|a| a & PTR_MASK)
}
#[inline]
fn head_count(h: *mut u8) -> usize {
    h.addr() >> COUNT_SHIFT
}
#[inline]
fn head_flags(h: *mut u8) -> usize {
    h.addr() & FLAGS
}
/// A head word holding only `flags` (no list, count 0).
#[inline]
fn flags_only(flags: usize) -> *mut u8 {
    ptr::without_provenance_mut(flags)
}

impl SlabRef {
    /// Wraps a record pointer (from [`SsRef::slab`]).
    ///
    /// # Safety
    /// `p` points to a slab record of a formatted SuperSlab, with the mapping's provenance.
    #[inline]
    pub unsafe fn from_raw(p: NonNull<Slab>) -> SlabRef {
        SlabRef(p)
    }

    /// The record pointer.
    #[inline]
    pub fn as_ptr(self) -> *mut Slab {
        self.0.as_ptr()
    }

    #[inline]
    fn rec(&self) -> &Slab {
        // SAFETY: every caller is an `unsafe fn` whose contract says the record is mapped; the
        // reference is short-lived and the record's mutable parts are atomics or UnsafeCells.
        unsafe { self.0.as_ref() }
    }

    /// The SuperSlab this record belongs to (records live in the first 1 MiB of a region
    /// aligned to at least 1 MiB, so masking finds the base).
    #[inline]
    pub fn superslab(self) -> SsRef {
        let base = self.0.as_ptr().cast::<u8>();
        let base = base.wrapping_sub(base.addr() & ((1usize << LG_SUPERSLAB_MIN) - 1));
        // SAFETY: derived from a non-null record pointer of a formatted SuperSlab.
        unsafe { SsRef::from_base(NonNull::new_unchecked(base)) }
    }

    /// The slab's index in its SuperSlab.
    #[inline]
    pub fn index(self) -> usize {
        let off = self.0.as_ptr().addr() & ((1usize << LG_SUPERSLAB_MIN) - 1);
        (off - SLABS_OFFSET) / core::mem::size_of::<Slab>()
    }

    /// The first byte blocks are carved from, with the mapping's provenance.
    #[inline]
    fn data_start(self) -> *mut u8 {
        let i = self.index();
        let ss = self.superslab();
        let lo = if i == 0 { SuperSlab::data_offset() } else { i << SLAB_SHIFT };
        ss.base().as_ptr().wrapping_add(lo)
    }

    /// The owner's inbox (its identity), null when detached. A thread that reads its own
    /// inbox here owns the slab, since only the owner (or an adopter holding the slab
    /// exclusively) ever writes it.
    ///
    /// # Safety
    /// The record is mapped.
    #[inline]
    pub unsafe fn owner(self) -> *const Inbox {
        self.rec().owner.load(Ordering::Relaxed)
    }

    /// The size class the slab serves.
    ///
    /// # Safety
    /// The record is mapped.
    #[inline]
    pub unsafe fn class(self) -> u32 {
        self.rec().class.load(Ordering::Relaxed)
    }

    /// The block size in bytes (0 if unassigned).
    ///
    /// # Safety
    /// The record is mapped.
    #[inline]
    pub unsafe fn block_size(self) -> u32 {
        self.rec().block_size.load(Ordering::Relaxed)
    }

    /// Gives the (empty) slab to `owner` to serve `class` in blocks of `block_size` bytes,
    /// carved from the slab's data range. Blocks are carved lazily, so this touches no block.
    ///
    /// Block sizes: at least 16 and a multiple of 16 (blocks hold a link, and the remote head
    /// keeps flags in the low 4 bits); a block's alignment is the largest power of two
    /// dividing its size, capped at the page size (slab data starts page-aligned).
    ///
    /// # Safety
    /// The caller holds the slab exclusively (the shared pool just handed it out), no block of
    /// it is live, `block_size` follows the rules above, and `owner` is non-null, stays valid
    /// and does not move while it owns the slab (its address is the identity other threads
    /// compare against and deliver to; the crate docs say what a standalone pool passes).
    pub unsafe fn assign(self, owner: *const Inbox, class: u32, block_size: u32) {
        hak_sync::check!(block_size >= 16 && block_size.is_multiple_of(16));
        hak_sync::check!(!owner.is_null());
        let (lo, hi) = self.superslab().slab_range(self.index());
        let capacity = ((hi.addr() - lo.addr()) / block_size as usize) as u16;
        let r = self.rec();
        // SAFETY: exclusive access per the contract.
        r.local.with_mut(|l| unsafe {
            *l = Local {
                free: ptr::null_mut(),
                links: Links::new(),
                used: 0,
                carved: 0,
                capacity,
                tag: 0,
                flags: 0,
            };
        });
        r.class.store(class, Ordering::Relaxed);
        r.block_size.store(block_size, Ordering::Relaxed);
        r.remote.store(ptr::null_mut(), Ordering::Relaxed);
        r.owner.store(owner.cast_mut(), Ordering::Release);
    }

    /// One block: the local free list first, then a freshly carved one. `None` when the slab
    /// has nothing locally (remote frees are not looked at: see [`SlabRef::collect_remote`]).
    ///
    /// # Safety
    /// The caller owns the slab.
    #[inline]
    pub unsafe fn alloc(self) -> Option<NonNull<u8>> {
        let mut out = [ptr::null_mut(); 1];
        // SAFETY: forwarded.
        (unsafe { self.alloc_batch(&mut out) } == 1).then(|| {
            // SAFETY: alloc_batch wrote a non-null block.
            unsafe { NonNull::new_unchecked(out[0]) }
        })
    }

    /// Fills `out` with up to `out.len()` blocks (local free list, then carving); returns how
    /// many. Each is counted in `used`.
    ///
    /// # Safety
    /// The caller owns the slab.
    pub unsafe fn alloc_batch(self, out: &mut [*mut u8]) -> usize {
        let bs = self.rec().block_size.load(Ordering::Relaxed) as usize;
        let start = self.data_start();
        // SAFETY: owner-only state, caller owns the slab; list nodes are free blocks.
        self.rec().local.with_mut(|l| unsafe {
            let l = &mut *l;
            let mut free = l.free;
            let mut n = node::take(&mut free, out);
            l.free = free;
            let carve = ((l.capacity - l.carved) as usize).min(out.len() - n);
            let mut p = start.add(l.carved as usize * bs);
            for slot in &mut out[n..n + carve] {
                *slot = p;
                p = p.add(bs);
            }
            l.carved += carve as u16;
            n += carve;
            l.used += n as u16;
            n
        })
    }

    /// Returns a block to the local free list; gives the new `used`.
    ///
    /// # Safety
    /// The caller owns the slab and `block` is a live block of it.
    #[inline]
    pub unsafe fn free_local(self, block: NonNull<u8>) -> u32 {
        // SAFETY: forwarded (a batch of one).
        unsafe { self.free_local_batch(&[block.as_ptr()]) }
    }

    /// Returns live blocks of this slab to the local free list, packed into carriers (see the
    /// `node` module), with one splice; gives the new `used`.
    ///
    /// # Safety
    /// The caller owns the slab; `blocks` is non-empty and holds distinct live blocks of it.
    #[inline]
    pub unsafe fn free_local_batch(self, blocks: &[*mut u8]) -> u32 {
        let bs = self.rec().block_size.load(Ordering::Relaxed) as usize;
        // SAFETY: the blocks are ours to overwrite.
        let (head, tail) = unsafe { node::pack(blocks, bs) };
        let n = blocks.len() as u32;
        // SAFETY: owner-only state.
        self.rec().local.with_mut(|l| unsafe {
            let l = &mut *l;
            hak_sync::check!(l.used as u32 >= n, "slab used count underflow (double free?)");
            node::set_next(tail.as_ptr(), l.free);
            l.free = head.as_ptr();
            l.used -= n as u16;
            l.used as u32
        })
    }

    /// Pushes a block onto the remote stack. Any thread may call it.
    ///
    /// # Safety
    /// `block` is a live block of this slab that the caller gives up.
    #[inline]
    pub unsafe fn free_remote(self, block: NonNull<u8>) -> RemoteFree {
        // SAFETY: forwarded (a batch of one).
        unsafe { self.free_remote_batch(&[block.as_ptr()]) }
    }

    /// Pushes live blocks of this slab onto the remote stack with one compare-exchange, packed
    /// into carriers (see the `node` module), so the owner reads a few nodes, not every block.
    /// Any thread may call it. If the slab was marked full, delivers it (see the module docs).
    ///
    /// # Safety
    /// `blocks` is non-empty and holds distinct live blocks of this slab, which the caller
    /// gives up; the owner's inbox, if any, stays valid (hakmem never unmaps thread states).
    pub unsafe fn free_remote_batch(self, blocks: &[*mut u8]) -> RemoteFree {
        let r = self.rec();
        let bs = r.block_size.load(Ordering::Relaxed) as usize;
        // SAFETY: the blocks are ours until the compare-exchange publishes them.
        let (head, tail) = unsafe { node::pack(blocks, bs) };
        hak_sync::check!(head.as_ptr().addr() & !PTR_MASK == 0, "block address outside 48 bits");
        let n = blocks.len();
        let mut h = r.remote.load(Ordering::Relaxed);
        loop {
            // SAFETY: the nodes are ours until the compare-exchange publishes them.
            unsafe { node::set_next(tail.as_ptr(), head_ptr(h)) };
            let f = head_flags(h);
            let nf = if f & FULL != 0 { (f & !FULL) | DELIVERING } else { f };
            let count = head_count(h) + n;
            let new = head.as_ptr().map_addr(|a| a | (count << COUNT_SHIFT) | nf);
            match r.remote.compare_exchange_weak(h, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) if f & FULL != 0 => {
                    // Pair with the owner's release in `mark_full`/`try_detach`, so the owner
                    // word and the slab's state are seen as they were when it was marked.
                    hak_sync::atomic::acquire_fence_after(&r.remote);
                    // SAFETY: we consumed FULL, so the delivery is ours.
                    return unsafe { self.deliver() };
                }
                Ok(_) => return RemoteFree::Pushed,
                Err(now) => h = now,
            }
        }
    }

    /// Delivers a slab whose `FULL` flag this thread consumed: into the owner's inbox, or, if
    /// detached, back to the caller for publication. Clears `DELIVERING` when done.
    ///
    /// # Safety
    /// The caller consumed `FULL` (so `DELIVERING` is set by it).
    unsafe fn deliver(self) -> RemoteFree {
        let r = self.rec();
        let owner = r.owner.load(Ordering::Acquire);
        let out = if owner.is_null() {
            RemoteFree::Publish
        } else {
            // SAFETY: the owner cannot change while DELIVERING is set (it waits in
            // `retract_full`), and owners' inboxes outlive their slabs; the link is ours to
            // write: the slab is in no inbox (it was armed, see the module docs).
            unsafe { (*owner).push(self) };
            RemoteFree::Pushed
        };
        let mut h = r.remote.load(Ordering::Relaxed);
        loop {
            let new = h.map_addr(|a| a & !DELIVERING);
            match r.remote.compare_exchange_weak(h, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return out,
                Err(now) => h = now,
            }
        }
    }

    /// Writes the inbox link (for [`Inbox`]); the writer holds the delivery.
    pub(crate) fn set_inbox_next(self, next: *mut Slab) {
        // SAFETY: only the deliverer writes it, before its publishing compare-exchange.
        self.rec().inbox_next.with_mut(|p| unsafe { *p = next });
    }

    /// Reads the inbox link (for [`Inbox`]); the reader took the inbox.
    pub(crate) fn inbox_next(self) -> *mut Slab {
        // SAFETY: read by the owner after the acquire that took the list.
        self.rec().inbox_next.with(|p| unsafe { *p })
    }

    /// Whether remote frees are waiting (a hint: one may arrive right after).
    ///
    /// # Safety
    /// The record is mapped.
    #[inline]
    pub unsafe fn has_remote(self) -> bool {
        !head_ptr(self.rec().remote.load(Ordering::Relaxed)).is_null()
    }

    /// Takes every remotely freed block onto the local free list with one compare-exchange
    /// (flags stay); returns how many came back (they leave `used`). Walks the taken list's
    /// nodes only if the local list is not empty (never on the refill path, which collects when
    /// it is).
    ///
    /// # Safety
    /// The caller owns the slab.
    pub unsafe fn collect_remote(self) -> u32 {
        let r = self.rec();
        let mut h = r.remote.load(Ordering::Relaxed);
        loop {
            if head_ptr(h).is_null() {
                return 0;
            }
            let new = flags_only(head_flags(h));
            match r.remote.compare_exchange_weak(h, new, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => h = now,
            }
        }
        let first = head_ptr(h);
        let n = head_count(h) as u32;
        // SAFETY: the taken list is ours alone; owner-only state.
        r.local.with_mut(|l| unsafe {
            let l = &mut *l;
            if !l.free.is_null() {
                let mut tail = first;
                loop {
                    let next = node::next(tail);
                    if next.is_null() {
                        break;
                    }
                    tail = next;
                }
                node::set_next(tail, l.free);
            }
            l.free = first;
            hak_sync::check!(l.used as u32 >= n, "remote frees exceed blocks in use");
            l.used -= n as u16;
            n
        })
    }

    /// `(used, carved, capacity)` as the owner sees them.
    ///
    /// # Safety
    /// The caller owns the slab.
    #[inline]
    pub unsafe fn counts(self) -> (u32, u32, u32) {
        // SAFETY: owner-only state.
        self.rec()
            .local
            .with(|l| unsafe { ((*l).used as u32, (*l).carved as u32, (*l).capacity as u32) })
    }

    /// Whether the owner can get a block without collecting remote frees.
    ///
    /// # Safety
    /// The caller owns the slab.
    #[inline]
    pub unsafe fn has_local(self) -> bool {
        // SAFETY: owner-only state.
        self.rec().local.with(|l| unsafe { !(*l).free.is_null() || (*l).carved < (*l).capacity })
    }

    /// Whether every block is back (`used == 0`), remote frees not counted until collected.
    ///
    /// # Safety
    /// The caller owns the slab.
    #[inline]
    pub unsafe fn is_empty(self) -> bool {
        // SAFETY: owner-only state.
        self.rec().local.with(|l| unsafe { (*l).used == 0 })
    }

    /// Where the owner keeps the slab's links for its own intrusive list (a
    /// `hak_collections::List` of `*mut Slab`): a pointer derived from the record pointer, so
    /// it carries the mapping's provenance; nothing is read. Cleared by [`SlabRef::assign`].
    ///
    /// # Safety
    /// The caller owns the slab (or holds it exclusively) for as long as it uses the pointer.
    #[inline]
    pub unsafe fn owner_links(self) -> *mut Links<*mut Slab> {
        // SAFETY: owner-only state; only a place is computed. (Under loom the owner's later
        // accesses through the pointer are not tracked; they are the owner's alone.)
        self.rec().local.with_mut(|l| unsafe { &raw mut (*l).links })
    }

    /// The owner's tag (which of its lists the slab is on; 0 after [`SlabRef::assign`]).
    ///
    /// # Safety
    /// As for [`SlabRef::owner_links`].
    #[inline]
    pub unsafe fn tag(self) -> u8 {
        // SAFETY: owner-only state.
        self.rec().local.with(|l| unsafe { (*l).tag })
    }

    /// Sets the owner's tag.
    ///
    /// # Safety
    /// As for [`SlabRef::owner_links`].
    #[inline]
    pub unsafe fn set_tag(self, tag: u8) {
        // SAFETY: owner-only state.
        self.rec().local.with_mut(|l| unsafe { (*l).tag = tag })
    }

    /// Arms the full-slab notification on a slab with no free block anywhere: the next
    /// remote free delivers it to the owner's inbox. Returns `false` (nothing armed) if remote
    /// frees are waiting: collect them instead.
    ///
    /// # Safety
    /// The caller owns the slab, it has no local block, and it is not in the owner's inbox.
    pub unsafe fn mark_full(self) -> bool {
        let r = self.rec();
        if r.remote
            .compare_exchange(
                ptr::null_mut(),
                flags_only(FULL),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false;
        }
        // SAFETY: owner-only state.
        r.local.with_mut(|l| unsafe { (*l).flags |= ARMED });
        true
    }

    /// Disarms the full-slab notification (the owner got blocks back by itself, or is about to
    /// give the slab up). Waits while a remote freer is delivering the slab, so afterwards no
    /// delivery is in flight. [`Retract::Delivered`]: the slab is in the owner's inbox.
    ///
    /// # Safety
    /// The caller owns the slab.
    pub unsafe fn retract_full(self) -> Retract {
        let r = self.rec();
        // SAFETY: owner-only state.
        let armed = r.local.with(|l| unsafe { (*l).flags & ARMED != 0 });
        if !armed {
            return Retract::Retracted;
        }
        // SAFETY: owner-only state.
        r.local.with_mut(|l| unsafe { (*l).flags &= !ARMED });
        let mut h = r.remote.load(Ordering::Acquire);
        loop {
            let f = head_flags(h);
            if f & DELIVERING != 0 {
                hak_sync::thread::yield_now();
                h = r.remote.load(Ordering::Acquire);
                continue;
            }
            if f & FULL == 0 {
                return Retract::Delivered;
            }
            let new = h.map_addr(|a| a & !FULL);
            match r.remote.compare_exchange_weak(h, new, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => return Retract::Retracted,
                Err(now) => h = now,
            }
        }
    }

    /// Clears a `DELIVERING` mark that no thread will clear: after `fork()`, in the child, the
    /// thread that was delivering the slab does not exist. Returns whether it was set.
    ///
    /// # Safety
    /// The caller owns the slab and no other thread can be delivering it (a forked child,
    /// before it starts threads).
    pub unsafe fn forget_delivery(self) -> bool {
        let r = self.rec();
        let mut h = r.remote.load(Ordering::Relaxed);
        loop {
            if head_flags(h) & DELIVERING == 0 {
                return false;
            }
            let new = h.map_addr(|a| a & !DELIVERING);
            match r.remote.compare_exchange_weak(h, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => h = now,
            }
        }
    }

    /// Gives up ownership of a slab that has no free block anywhere, so that the first block
    /// freed back to it makes its freer publish it ([`RemoteFree::Publish`]). Returns `false`
    /// (and keeps ownership) if remote frees are waiting: collect them instead.
    ///
    /// # Safety
    /// The caller owns the slab and has disarmed it ([`SlabRef::retract_full`]).
    pub unsafe fn try_detach(self) -> bool {
        let r = self.rec();
        let me = r.owner.load(Ordering::Relaxed);
        r.owner.store(ptr::null_mut(), Ordering::Relaxed);
        if r.remote
            .compare_exchange(
                ptr::null_mut(),
                flags_only(FULL),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            return true;
        }
        r.owner.store(me, Ordering::Relaxed);
        false
    }

    /// Gives up ownership without asking for a notification: for a slab the caller is about to
    /// list itself (one with free blocks, at thread exit), or to release.
    ///
    /// # Safety
    /// The caller owns the slab, has disarmed it, and will hand it to the adopters' list or
    /// the pool.
    pub unsafe fn disown(self) {
        self.rec().owner.store(ptr::null_mut(), Ordering::Release);
    }

    /// Takes ownership of a detached slab handed over by the adopters' list, and collects its
    /// remote frees. Returns the number collected.
    ///
    /// # Safety
    /// The caller took the slab from that list (so it has exclusive access), and `owner` is
    /// non-null and stays valid while it owns the slab.
    pub unsafe fn adopt(self, owner: *const Inbox) -> u32 {
        let r = self.rec();
        // (The list the slab came from hands it over under the pool's lock: that orders what
        // its former owner and publisher wrote before what we do.)
        // SAFETY: exclusive; a detached slab carries no armed flag of a former owner.
        r.local.with_mut(|l| unsafe { (*l).flags = 0 });
        r.owner.store(owner.cast_mut(), Ordering::Release);
        // SAFETY: we own it now.
        unsafe { self.collect_remote() }
    }

    /// Checks `used + |free| == carved <= capacity` and that free blocks lie on block
    /// boundaries inside the slab; returns a description of the first violation. Walks the
    /// free list: for tests and debugging.
    ///
    /// # Safety
    /// The caller owns the slab and no remote frees race with the call.
    pub unsafe fn check_invariants(self) -> Result<(), &'static str> {
        // SAFETY: forwarded.
        let bs = unsafe { self.block_size() } as usize;
        let start = self.data_start();
        // SAFETY: owner-only state; list nodes are free blocks of this slab.
        self.rec().local.with(|l| unsafe {
            let l = &*l;
            if l.carved > l.capacity {
                return Err("carved > capacity");
            }
            let mut n = 0u32;
            let carved = l.carved as usize;
            node::for_each(l.free, l.capacity as usize, |p| {
                let off = p.addr().wrapping_sub(start.addr());
                if p.addr() < start.addr() || !off.is_multiple_of(bs) || off / bs >= carved {
                    return Err("free block outside the carved range or misaligned");
                }
                n += 1;
                Ok(())
            })?;
            if l.used as u32 + n != l.carved as u32 {
                return Err("used + |free| != carved");
            }
            Ok(())
        })
    }
}

// SAFETY: shared fields are atomics; owner-only fields are guarded by the ownership protocol.
unsafe impl Sync for Slab {}
// SAFETY: as above.
unsafe impl Send for Slab {}
