//! Arenas whose memory is registered in a [`Registry`], so that any address can be traced
//! back to the arena that holds it: the question a `free` without an arena argument asks.
//!
//! Each arena is a bump allocator over chunks mapped from hak-os (1 MiB each, aligned to the
//! registry's granule, or larger for a large request). A chunk starts with a small header
//! naming its arena, and is registered for its whole length; a lookup gives back the chunk's
//! base pointer (with its provenance), through which the header is read. Addresses the
//! registry was never told about give `None`, whatever they are.
//!
//! The chunks are registered under a kind of the program's own (`OwnerKind::user`), not one
//! of hakmem's tiers; a second user kind marks other regions in the same registry, and a
//! lookup tells the two apart by comparing kinds, as an allocator's `free` would.
//!
//! Run with `cargo run -p hak-registry --example arena`.

use core::ptr::NonNull;
use std::thread;

use hak_os::Os;
use hak_registry::{OwnerKind, RegisterError, Registry, GRANULE};

/// What sits at the base of every chunk.
#[repr(C)]
struct ChunkHeader {
    arena: u32,
}

/// Bytes reserved for the header (keeps blocks 64-aligned).
const HEADER: usize = 64;

/// The kind the arenas register their chunks as: a user kind (16..=255; the values below 16
/// are hakmem's tiers, which each take their kind's regions in a registry as their own). One
/// kind for every arena: the chunk header says which arena.
const KIND: OwnerKind = OwnerKind::user(16).unwrap();
/// Another owner of this program's: plain regions, registered under a kind of their own.
const SPARE: OwnerKind = OwnerKind::user(17).unwrap();

struct Arena<'r> {
    id: u32,
    reg: &'r Registry<'r>,
    /// `(base, len)` of every chunk, the current one last.
    chunks: Vec<(NonNull<u8>, usize)>,
    /// Bytes used in the current chunk.
    used: usize,
}

impl<'r> Arena<'r> {
    fn new(id: u32, reg: &'r Registry<'r>) -> Arena<'r> {
        Arena { id, reg, chunks: Vec::new(), used: 0 }
    }

    /// `size` bytes, 16-aligned; `None` if the OS refuses memory.
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        let size = size.max(1).next_multiple_of(16);
        match self.chunks.last() {
            Some(&(base, len)) if len - self.used >= size => {
                // Derived from the chunk's base pointer: the block keeps the mapping's
                // provenance.
                let p = base.as_ptr().wrapping_add(self.used);
                self.used += size;
                NonNull::new(p)
            }
            _ => {
                self.new_chunk(size)?;
                self.alloc(size)
            }
        }
    }

    fn new_chunk(&mut self, size: usize) -> Option<()> {
        let len = (HEADER + size).next_multiple_of(GRANULE);
        let os = self.reg.os();
        let base = os.map(len, GRANULE).ok()?;
        // SAFETY: a fresh mapping of at least HEADER bytes, ours alone; the header is written
        // before the chunk is registered, so a lookup never sees it half made.
        unsafe { base.as_ptr().cast::<ChunkHeader>().write(ChunkHeader { arena: self.id }) };
        if let Err(e) = self.reg.register(base, len, KIND) {
            // Only leaf memory can fail here (the chunk is aligned and new): give it back.
            eprintln!("register failed: {e:?}");
            // SAFETY: the mapping just made, unknown to anyone.
            let _ = unsafe { os.unmap(base, len) };
            return None;
        }
        self.chunks.push((base, len));
        self.used = HEADER;
        Some(())
    }
}

impl Drop for Arena<'_> {
    fn drop(&mut self) {
        for &(base, len) in &self.chunks {
            // Unregister before unmapping: a lookup racing the drop sees the chunk whole or
            // not at all.
            self.reg.unregister(base, len);
            // SAFETY: our mapping; the arena's blocks die with it.
            let _ = unsafe { self.reg.os().unmap(base, len) };
        }
    }
}

/// Which arena holds `addr`, or `None` if no arena's chunk covers it. Any address is fine:
/// the lookup reads only the registry's own tables.
fn arena_of(reg: &Registry<'_>, addr: usize) -> Option<u32> {
    let owner = reg.lookup(addr)?;
    if owner.kind != KIND {
        return None;
    }
    // SAFETY: every region registered as KIND in this registry is an arena chunk whose header
    // was written before it was registered, and it stays mapped while registered (arenas
    // unregister before unmapping, and none is dropped while this runs). `owner.base` is the
    // pointer the chunk was registered with, so it carries the chunk's provenance.
    Some(unsafe { owner.base.as_ptr().cast::<ChunkHeader>().read().arena })
}

/// What owns `addr`, by kind: constants, user kinds included, match like enum variants.
fn describe(reg: &Registry<'_>, addr: usize) -> &'static str {
    match reg.kind(addr) {
        Some(KIND) => "arena",
        Some(SPARE) => "spare region",
        Some(_) => "another owner",
        None => "nobody",
    }
}

fn main() {
    let os = Os::new();
    // 32 KiB of top-level table; leaves (512 KiB of address space each, committed as
    // touched) are mapped from `os` on first use and unmapped when the registry is dropped.
    let reg = Registry::new(&os);

    let mut a = Arena::new(1, &reg);
    let mut b = Arena::new(2, &reg);
    let mut blocks: Vec<(u32, NonNull<u8>)> = Vec::new();
    for i in 0..3000usize {
        // Sizes up to 1.5 KiB, so each arena fills a few 1 MiB chunks; one large request gets
        // a chunk of its own (3 MiB).
        let size = if i == 1500 { 3 << 20 } else { 16 + (i * 37) % 1500 };
        let (arena, p) = if i % 3 == 0 { (b.id, b.alloc(size)) } else { (a.id, a.alloc(size)) };
        blocks.push((arena, p.expect("the OS refused memory")));
    }
    assert!(a.chunks.len() >= 2 && b.chunks.len() >= 2, "several chunks per arena");
    assert!(a.chunks.iter().chain(&b.chunks).any(|&(_, len)| len == 4 << 20), "the large one");

    // Every block traces back to its arena, from any thread: lookups are wait-free reads of
    // an address (no pointer needed).
    let addrs: Vec<(u32, usize)> = blocks.iter().map(|&(a, p)| (a, p.as_ptr() as usize)).collect();
    thread::scope(|s| {
        for part in addrs.chunks(addrs.len() / 2) {
            let reg = &reg;
            s.spawn(move || {
                for &(arena, addr) in part {
                    assert_eq!(arena_of(reg, addr), Some(arena));
                    assert_eq!(reg.lookup(addr).map(|o| o.kind), Some(KIND));
                }
            });
        }
    });
    // The last byte of a chunk belongs to it; the registry resolves whole 1 MiB granules.
    let (base, len) = a.chunks[0];
    assert_eq!(arena_of(&reg, base.as_ptr() as usize + len - 1), Some(a.id));

    // Addresses no arena holds: nothing, whether on the stack, on the heap, null or in the
    // kernel's half of the address space.
    let on_stack = 0u64;
    let on_heap = Box::new(0u64);
    for addr in [&on_stack as *const u64 as usize, &*on_heap as *const u64 as usize, 0, usize::MAX]
    {
        assert_eq!(reg.lookup(addr), None, "{addr:#x} is no arena's");
    }

    // Registration is checked: a region must start on a granule, and a granule has one owner.
    let (base, len) = b.chunks[0];
    let inside = NonNull::new(base.as_ptr().wrapping_add(4096)).unwrap();
    assert_eq!(reg.register(inside, 4096, KIND), Err(RegisterError::Misaligned));
    assert_eq!(reg.register(base, len, KIND), Err(RegisterError::Occupied));
    assert_eq!(arena_of(&reg, base.as_ptr() as usize), Some(b.id), "the failures changed nothing");

    // A region of another kind in the same registry: the arenas' lookups skip it.
    let spare = os.map(GRANULE, GRANULE).expect("the OS refused 1 MiB");
    reg.register(spare, GRANULE, SPARE).expect("a free, aligned region");
    let in_spare = spare.as_ptr() as usize + 100;
    assert_eq!(reg.lookup(in_spare).map(|o| (o.kind, o.base)), Some((SPARE, spare)));
    assert_eq!(arena_of(&reg, in_spare), None, "not an arena's");
    assert_eq!(describe(&reg, in_spare), "spare region");
    assert_eq!(describe(&reg, blocks[0].1.as_ptr() as usize), "arena");
    assert_eq!(describe(&reg, 0), "nobody");
    reg.unregister(spare, GRANULE);
    // SAFETY: our mapping, unregistered, never used.
    unsafe { os.unmap(spare, GRANULE) }.expect("unmap");

    // Dropping an arena unregisters and unmaps its chunks: its addresses are unknown again.
    let b_addrs: Vec<usize> = b.chunks.iter().map(|&(p, _)| p.as_ptr() as usize).collect();
    let (na, nb) = (a.chunks.len(), b.chunks.len());
    drop(b);
    assert!(b_addrs.iter().all(|&addr| reg.lookup(addr).is_none()));
    assert_eq!(arena_of(&reg, a.chunks[0].0.as_ptr() as usize), Some(a.id));
    let leaves = reg.leaf_count();
    drop(a);
    println!(
        "hak-registry: {} blocks in 2 arenas ({na} + {nb} chunks), each traced to its arena; \
         unknown addresses gave None; leaves mapped: {leaves}",
        blocks.len()
    );
    drop(reg);
    assert_eq!(os.stats().mapped.current, 0, "arenas and leaves all unmapped");
}
