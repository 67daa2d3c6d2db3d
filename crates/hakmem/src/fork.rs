//! `fork()` safety: `pthread_atfork` handlers, registered once at initialisation, that hold
//! every allocator lock across the fork.
//!
//! Without them a process that forks while another thread is inside an allocator slow path
//! (holding the shared pool's lock, a mid-tier lock, the big tier's lock...) gets a child in
//! which that lock is held forever: only the forking thread exists there, and the child's
//! first allocation that needs the lock hangs. The prepare handler takes every lock, in one
//! fixed order that no allocator path inverts (no path holds a lock of one tier while taking
//! another tier's): the free list of thread states, the shared pool (with its SuperSlab cache),
//! the mid tier (shards, class locks, empty cache, chunk list), the big tier. The parent and
//! child handlers release them in reverse order.
//!
//! What the child inherits: its own thread's state, intact. The other threads of the parent
//! do not exist in the child, but their caches do (a snapshot, possibly mid-operation): they
//! are left alone, never flushed (a snapshot taken in the middle of an operation is not safe
//! to walk). Their cached blocks and the free blocks of their slabs stay unusable in the child
//! — at most a thread cache's bins, stash and partly used slabs per parent thread — which is
//! the cost of a fork, and nothing for the common fork-then-exec.

use hak_sync::atomic::Ordering;

use crate::global::{INIT, POOL};
use crate::large::{BIG, MID};
use crate::thread::THREADS;

/// Registers the handlers. Called once, from initialisation.
pub(crate) fn register() {
    // SAFETY: plain extern "C" functions without arguments; pthread_atfork copies pointers.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

extern "C" fn prepare() {
    // A thread still finishing initialisation would leave the child waiting for it forever.
    while INIT.load(Ordering::Acquire) != crate::global::DONE {
        hak_sync::thread::yield_now();
    }
    THREADS.prefork();
    POOL.prefork();
    MID.prefork();
    BIG.prefork();
}

/// Releases what `prepare` took, in reverse order.
fn release_all() {
    // SAFETY: `prepare` took each of these in this thread (or in the parent thread this child
    // was forked from) and no guard of them exists.
    unsafe {
        BIG.postfork();
        MID.postfork();
        POOL.postfork();
        THREADS.postfork();
    }
}

extern "C" fn parent() {
    release_all();
}

extern "C" fn child() {
    release_all();
    // A delivery another parent thread had half done can never finish here; see
    // `ThreadCache::after_fork_in_child`.
    let ts = crate::thread::current();
    // SAFETY: the calling thread's own state (or the sentinel, which is inactive and skipped),
    // in the child, where it is the only thread.
    unsafe {
        if (*ts).tc.is_active() {
            (*ts).tc.after_fork_in_child();
        }
    }
}
