//! Drives carve / local free / remote free / collect sequences through one slab of a real
//! SuperSlab and checks that no live block is handed out twice and the slab's counts hold.
#![no_main]

use std::collections::HashSet;
use std::ptr::NonNull;

use hak_os::Os;
use hak_superslab::{Inbox, SsRef, LG_SUPERSLAB_DEFAULT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let os = Os::new();
    let len = 1usize << LG_SUPERSLAB_DEFAULT;
    let base = os.map(len, len).unwrap();
    // SAFETY: fresh aligned mapping.
    let ss = unsafe { SsRef::init(base, LG_SUPERSLAB_DEFAULT) };
    let bs = [16u32, 48, 208, 1024, 2048][data[0] as usize % 5];
    let owner = Inbox::new();
    // SAFETY: fresh slab of a mapped SuperSlab, exclusive; the owner outlives its use here.
    let slab = unsafe { ss.slab(3) };
    // SAFETY: as above.
    unsafe { slab.assign(&owner, 0, bs) };
    let mut live: Vec<usize> = Vec::new();
    let mut set = HashSet::new();
    for &b in &data[1..] {
        // SAFETY: this thread is the owner; freed blocks come from `live`.
        unsafe {
            match b % 4 {
                0 | 1 => {
                    if let Some(p) = slab.alloc() {
                        assert!(set.insert(p.as_ptr() as usize), "block handed out twice");
                        live.push(p.as_ptr() as usize);
                    }
                }
                2 if !live.is_empty() => {
                    let p = live.swap_remove(b as usize % live.len());
                    set.remove(&p);
                    slab.free_local(NonNull::new(p as *mut u8).unwrap());
                }
                3 if !live.is_empty() => {
                    let p = live.swap_remove(b as usize % live.len());
                    set.remove(&p);
                    let _ = slab.free_remote(NonNull::new(p as *mut u8).unwrap());
                    if b & 0x40 != 0 {
                        slab.collect_remote();
                    }
                }
                _ => {}
            }
        }
    }
    // SAFETY: owner, no concurrency.
    unsafe {
        slab.collect_remote();
        assert_eq!(slab.counts().0 as usize, live.len());
        slab.check_invariants().unwrap();
        os.unmap(base, len).unwrap();
    }
});
