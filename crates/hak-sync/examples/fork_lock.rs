//! hak-sync's [`Mutex`] held across `fork()`: the convention every hakmem layer with locks
//! follows. A type that owns mutexes offers `prefork` (take all of them, in a fixed order,
//! with `fork_lock`) and `postfork` (release them with `fork_unlock`); `pthread_atfork`
//! handlers call them, so a child never starts with a lock that a thread of the parent held
//! (that thread does not exist in the child, and the lock would stay held forever).
//!
//! Here a thread keeps changing two counters under two locks while the main thread forks
//! repeatedly; each child takes both locks and checks that the counters agree. Without the
//! handlers a child can find a lock held for ever and hang, or see the counters half updated.
//!
//! Run with `cargo run -p hak-sync --example fork_lock`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use hak_sync::Mutex;

/// State split over two locks, always taken in the order `a`, then `b`.
struct Counters {
    a: Mutex<u64>,
    b: Mutex<u64>,
}

impl Counters {
    /// Adds one to both counters, holding both locks.
    fn bump(&self) {
        let mut a = self.a.lock();
        let mut b = self.b.lock();
        *a += 1;
        *b += 1;
    }

    /// Whether the counters agree, read under both locks.
    fn consistent(&self) -> bool {
        let a = self.a.lock();
        let b = self.b.lock();
        *a == *b
    }

    /// Takes every lock, in the same order as every other path takes them (so it cannot
    /// deadlock with them), and keeps them without guards.
    fn prefork(&self) {
        self.a.fork_lock();
        self.b.fork_lock();
    }

    /// Releases what `prefork` took, in reverse order.
    ///
    /// # Safety
    /// The calling thread ran `prefork` (or is the child of the thread that did), once.
    unsafe fn postfork(&self) {
        // SAFETY: forwarded: both locks were taken by `prefork`, without guards.
        unsafe {
            self.b.fork_unlock();
            self.a.fork_unlock();
        }
    }
}

static COUNTERS: Counters = Counters { a: Mutex::new(0), b: Mutex::new(0) };

extern "C" fn prepare() {
    COUNTERS.prefork();
}

extern "C" fn after() {
    // SAFETY: `prepare` ran in this thread (parent) or in the thread this child forked from.
    unsafe { COUNTERS.postfork() };
}

fn main() {
    // SAFETY: plain extern "C" functions; registered once, before any fork.
    let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(after), Some(after)) };
    assert_eq!(rc, 0);

    let stop = AtomicBool::new(false);
    let forks = 50;
    thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                COUNTERS.bump();
            }
        });
        for _ in 0..forks {
            // SAFETY: the child only takes our locks, reads, and leaves with `_exit` (no
            // allocation, no std teardown).
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                let ok = COUNTERS.consistent();
                // SAFETY: ends the child at once.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            let mut status = 0;
            // SAFETY: waits for our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "child saw a lock held or torn state"
            );
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(COUNTERS.consistent());
    println!(
        "hak-sync: {forks} forks while another thread held the locks in turn; every child \
         found them free and the state whole ({} updates)",
        *COUNTERS.a.lock()
    );
}
