//! [`Slab`]: metadata of one 64 KiB slab, carving, the local free list and the remote stack.
//!
//! The remote stack's head word is `count << 48 | first_block | NOTIFY`. Blocks are at least
//! 16-byte aligned, so the low bits are free, and user-space addresses are below 2^48 (as the
//! registry assumes too), so the top 16 bits hold the number of blocks on the stack (a slab has
//! at most 32768). Count and list change in the same compare-exchange, so they always agree,
//! and the owner can take the list over without walking it. `NOTIFY` is set only by the owner,
//! in [`Slab::try_detach`], and only on an empty stack; the remote freer whose push clears it
//! is told [`RemoteFree::Publish`].

use core::ptr::{self, NonNull};

use hak_sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use hak_sync::cell::UnsafeCell;

/// Flag in the remote head: the slab is detached and listed nowhere; the next remote freer
/// must publish it.
const NOTIFY: usize = 1;
const FLAGS: usize = 0b1111;
/// The block count lives in the head's top 16 bits.
const COUNT_SHIFT: u32 = 48;
const COUNT_ONE: usize = 1 << COUNT_SHIFT;
/// The first block's address.
const PTR_MASK: usize = (COUNT_ONE - 1) & !FLAGS;
// Every block of a slab fits in the 16-bit count (blocks are at least 16 bytes).
const _: () = assert!(crate::SLAB_SIZE / 16 < 1 << 16);

/// Owner-only state of a slab.
#[derive(Debug)]
struct Local {
    /// Head of the intrusive local free list (link in a block's first word).
    free: *mut u8,
    /// Blocks handed out and not yet back on `free` (includes blocks on the remote stack).
    used: u32,
    /// Blocks carved so far, from `start` upwards.
    carved: u32,
    /// Blocks that fit.
    capacity: u32,
    /// First block's address.
    start: *mut u8,
}

/// Metadata of one slab. 64-byte aligned so slabs' hot words do not share cache lines.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Slab {
    /// Remote free stack head (`block | NOTIFY`); any thread pushes, the owner swaps it out.
    remote: AtomicUsize,
    /// Owning thread-cache id, 0 when detached. Written by the owner (or the adopter).
    owner: AtomicUsize,
    /// Size class index assigned by the layer above (meaningful while the slab is assigned).
    class: AtomicU32,
    /// Block size in bytes (0 while unassigned).
    block_size: AtomicU32,
    /// Owner-only state.
    local: UnsafeCell<Local>,
}

/// What [`Slab::free_remote`] asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum RemoteFree {
    /// The block is on the remote stack; nothing else to do.
    Pushed,
    /// The block is on the remote stack of a detached slab that no list holds: the caller must
    /// hand the slab to whoever adopts abandoned slabs (the shared pool), exactly once.
    Publish,
}

impl Slab {
    /// Formats the metadata in place (unassigned, detached).
    ///
    /// # Safety
    /// `this` points to writable memory for a `Slab` that no other thread can see yet.
    pub(crate) unsafe fn init(this: *mut Slab) {
        // SAFETY: forwarded from the caller; every field is written before anyone reads it.
        unsafe {
            this.write(Slab {
                remote: AtomicUsize::new(0),
                owner: AtomicUsize::new(0),
                class: AtomicU32::new(0),
                block_size: AtomicU32::new(0),
                local: UnsafeCell::new(Local {
                    free: ptr::null_mut(),
                    used: 0,
                    carved: 0,
                    capacity: 0,
                    start: ptr::null_mut(),
                }),
            })
        };
    }

    /// The owning thread-cache id (0: detached). A plain load: a thread that reads its own id
    /// here owns the slab, since only the owner ever writes its own id.
    #[inline]
    pub fn owner(&self) -> usize {
        self.owner.load(Ordering::Relaxed)
    }

    /// The size class the slab serves.
    #[inline]
    pub fn class(&self) -> u32 {
        self.class.load(Ordering::Relaxed)
    }

    /// The block size in bytes (0 if unassigned).
    #[inline]
    pub fn block_size(&self) -> u32 {
        self.block_size.load(Ordering::Relaxed)
    }

    /// Gives the (empty) slab to `owner` to serve `class` in blocks of `block_size` bytes carved
    /// from `[start, end)`. Blocks are carved lazily, so assigning touches no block memory.
    ///
    /// # Safety
    /// The caller holds the slab exclusively (the shared pool just handed it out), no block of
    /// it is live, `[start, end)` is the slab's data range, `start` is aligned for the class,
    /// `block_size >= 16` and a multiple of 16, and `owner != 0`.
    pub unsafe fn assign(
        &self,
        owner: usize,
        class: u32,
        block_size: u32,
        start: *mut u8,
        end: *mut u8,
    ) {
        debug_assert!(block_size >= 16 && block_size.is_multiple_of(16));
        let capacity = ((end as usize - start as usize) / block_size as usize) as u32;
        // SAFETY: exclusive access per the contract.
        self.local.with_mut(|l| unsafe {
            *l = Local { free: ptr::null_mut(), used: 0, carved: 0, capacity, start };
        });
        self.class.store(class, Ordering::Relaxed);
        self.block_size.store(block_size, Ordering::Relaxed);
        self.remote.store(0, Ordering::Relaxed);
        self.owner.store(owner, Ordering::Release);
    }

    /// One block: the local free list first, then a freshly carved one. `None` when the slab
    /// has nothing locally (remote frees are not looked at: see [`Slab::collect_remote`]).
    ///
    /// # Safety
    /// The caller owns the slab.
    #[inline]
    pub unsafe fn alloc(&self) -> Option<NonNull<u8>> {
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
    pub unsafe fn alloc_batch(&self, out: &mut [*mut u8]) -> usize {
        // SAFETY: owner-only state, caller owns the slab.
        self.local.with_mut(|l| unsafe {
            let l = &mut *l;
            let mut n = 0;
            while n < out.len() && !l.free.is_null() {
                let b = l.free;
                l.free = b.cast::<*mut u8>().read();
                out[n] = b;
                n += 1;
            }
            let bs = self.block_size.load(Ordering::Relaxed) as usize;
            let carve = ((l.capacity - l.carved) as usize).min(out.len() - n);
            let mut p = l.start.add(l.carved as usize * bs);
            for slot in &mut out[n..n + carve] {
                *slot = p;
                p = p.add(bs);
            }
            l.carved += carve as u32;
            n += carve;
            l.used += n as u32;
            n
        })
    }

    /// Returns a block to the local free list; gives the new `used`.
    ///
    /// # Safety
    /// The caller owns the slab and `block` is a live block of it.
    #[inline]
    pub unsafe fn free_local(&self, block: NonNull<u8>) -> u32 {
        // SAFETY: owner-only state; `block` is ours to overwrite.
        self.local.with_mut(|l| unsafe {
            let l = &mut *l;
            block.as_ptr().cast::<*mut u8>().write(l.free);
            l.free = block.as_ptr();
            l.used -= 1;
            l.used
        })
    }

    /// Pushes a block onto the remote stack. Any thread may call it.
    ///
    /// # Safety
    /// `block` is a live block of this slab that the caller gives up.
    #[inline]
    pub unsafe fn free_remote(&self, block: NonNull<u8>) -> RemoteFree {
        let b = block.as_ptr();
        debug_assert_eq!(b as usize & !PTR_MASK, 0, "block address outside 48 bits or unaligned");
        let mut head = self.remote.load(Ordering::Relaxed);
        loop {
            // SAFETY: the block is ours until the CAS publishes it.
            unsafe { b.cast::<usize>().write(head & PTR_MASK) };
            let new = ((head & !(COUNT_ONE - 1)) + COUNT_ONE) | b as usize;
            match self.remote.compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) if head & NOTIFY != 0 => {
                    // Pair with the owner's release in `try_detach` so the publisher (and the
                    // adopter after it) sees the detached slab's state.
                    hak_sync::atomic::fence(Ordering::Acquire);
                    return RemoteFree::Publish;
                }
                Ok(_) => return RemoteFree::Pushed,
                Err(now) => head = now,
            }
        }
    }

    /// Whether remote frees are waiting (a hint: one may arrive right after).
    #[inline]
    pub fn has_remote(&self) -> bool {
        self.remote.load(Ordering::Relaxed) & PTR_MASK != 0
    }

    /// Takes every remotely freed block onto the local free list with one swap; returns how
    /// many came back (they leave `used`).
    ///
    /// # Safety
    /// The caller owns the slab.
    pub unsafe fn collect_remote(&self) -> u32 {
        if self.remote.load(Ordering::Relaxed) & PTR_MASK == 0 {
            return 0;
        }
        let word = self.remote.swap(0, Ordering::Acquire);
        let head = word & PTR_MASK;
        if head == 0 {
            return 0;
        }
        let n = (word >> COUNT_SHIFT) as u32;
        // SAFETY: the swapped-out list is ours alone; owner-only state.
        self.local.with_mut(|l| unsafe {
            let l = &mut *l;
            if !l.free.is_null() {
                // Splice in front of the local list: only now is the tail needed.
                let mut tail = head as *mut usize;
                while *tail != 0 {
                    tail = *tail as *mut usize;
                }
                *tail = l.free as usize;
            }
            l.free = head as *mut u8;
            l.used -= n;
            n
        })
    }

    /// `(used, carved, capacity)` as the owner sees them.
    ///
    /// # Safety
    /// The caller owns the slab.
    #[inline]
    pub unsafe fn counts(&self) -> (u32, u32, u32) {
        // SAFETY: owner-only state.
        self.local.with(|l| unsafe { ((*l).used, (*l).carved, (*l).capacity) })
    }

    /// Whether the owner can get a block without collecting remote frees.
    ///
    /// # Safety
    /// The caller owns the slab.
    #[inline]
    pub unsafe fn has_local(&self) -> bool {
        // SAFETY: owner-only state.
        self.local.with(|l| unsafe { !(*l).free.is_null() || (*l).carved < (*l).capacity })
    }

    /// Whether every block is back (`used == 0`), remote frees not counted until collected.
    ///
    /// # Safety
    /// The caller owns the slab.
    #[inline]
    pub unsafe fn is_empty(&self) -> bool {
        // SAFETY: owner-only state.
        self.local.with(|l| unsafe { (*l).used == 0 })
    }

    /// Gives up ownership of a slab that has no free block anywhere, so that the first block
    /// freed back to it makes its freer publish it ([`RemoteFree::Publish`]).
    ///
    /// Returns `false` (and keeps ownership) if remote frees are waiting: collect them instead.
    ///
    /// # Safety
    /// The caller owns the slab.
    pub unsafe fn try_detach(&self) -> bool {
        let me = self.owner.load(Ordering::Relaxed);
        self.owner.store(0, Ordering::Relaxed);
        if self.remote.compare_exchange(0, NOTIFY, Ordering::Release, Ordering::Relaxed).is_ok() {
            return true;
        }
        self.owner.store(me, Ordering::Relaxed);
        false
    }

    /// Gives up ownership without asking for a notification: for a slab the caller is about to
    /// list itself (one with free blocks, at thread exit).
    ///
    /// # Safety
    /// The caller owns the slab and will hand it to the adopters' list.
    pub unsafe fn disown(&self) {
        self.owner.store(0, Ordering::Release);
    }

    /// Takes ownership of a detached slab handed over by the adopters' list, and collects its
    /// remote frees. Returns the number collected.
    ///
    /// # Safety
    /// The caller took the slab from that list (so it has exclusive access), and `owner != 0`.
    pub unsafe fn adopt(&self, owner: usize) -> u32 {
        hak_sync::atomic::fence(Ordering::Acquire);
        self.owner.store(owner, Ordering::Release);
        // SAFETY: we own it now.
        unsafe { self.collect_remote() }
    }

    /// Checks `used + |free| == carved <= capacity` and that free blocks lie on block
    /// boundaries inside the slab; returns a description of the first violation. Walks the
    /// free list: for tests and debugging.
    ///
    /// # Safety
    /// The caller owns the slab and no remote frees race with the call.
    pub unsafe fn check_invariants(&self) -> Result<(), &'static str> {
        let bs = self.block_size() as usize;
        // SAFETY: owner-only state; list nodes are free blocks of this slab.
        self.local.with(|l| unsafe {
            let l = &*l;
            if l.carved > l.capacity {
                return Err("carved > capacity");
            }
            let mut n = 0u32;
            let mut p = l.free;
            while !p.is_null() {
                let off = p as usize - l.start as usize;
                if p < l.start || !off.is_multiple_of(bs) || off / bs >= l.carved as usize {
                    return Err("free block outside the carved range or misaligned");
                }
                n += 1;
                if n > l.capacity {
                    return Err("free list has a cycle");
                }
                p = p.cast::<*mut u8>().read();
            }
            if l.used + n != l.carved {
                return Err("used + |free| != carved");
            }
            Ok(())
        })
    }
}
