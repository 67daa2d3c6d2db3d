//! The allocator's globals: the layers as statics, the configuration, and one-time
//! initialisation.

use hak_os::Os;
use hak_registry::{CacheLimits, Registry};
use hak_shared_pool::SharedPool;
use hak_superslab::LG_SUPERSLAB_DEFAULT;
use hak_sync::atomic::{AtomicU8, Ordering};

use crate::options::{self, Opt};

/// log2 of the SuperSlab size the facade uses (2 MiB).
pub(crate) const LG_SS: u32 = LG_SUPERSLAB_DEFAULT;

pub(crate) static OS: Os = Os::new();
pub(crate) static REGISTRY: Registry<'static> = Registry::new(&OS);
pub(crate) static POOL: SharedPool<'static> =
    SharedPool::new(&REGISTRY, LG_SS, CacheLimits::DEFAULT);

/// Configuration read at initialisation.
#[derive(Clone, Copy)]
pub(crate) struct Config {
    pub(crate) warm_pool_size: usize,
}

pub(crate) static INIT: AtomicU8 = AtomicU8::new(0);
const UNINIT: u8 = 0;
const RUNNING: u8 = 1;
pub(crate) const DONE: u8 = 2;

struct ConfigCell(core::cell::UnsafeCell<Config>);
// SAFETY: written once by the initialising thread before INIT is set to DONE (release), read
// only after observing DONE (acquire).
unsafe impl Sync for ConfigCell {}
static CONFIG: ConfigCell = ConfigCell(core::cell::UnsafeCell::new(Config { warm_pool_size: 4 }));

/// Initialises the allocator once (options, cache limits, fork handlers, prewarm) and
/// returns the configuration. Never allocates through the global allocator.
#[inline]
pub(crate) fn ensure_init() -> Config {
    if INIT.load(Ordering::Acquire) != DONE {
        init_slow();
    }
    // SAFETY: DONE was observed with acquire ordering; CONFIG is immutable from then on.
    unsafe { *CONFIG.0.get() }
}

#[cold]
fn init_slow() {
    if INIT.compare_exchange(UNINIT, RUNNING, Ordering::Acquire, Ordering::Acquire).is_err() {
        while INIT.load(Ordering::Acquire) != DONE {
            hak_sync::thread::yield_now();
        }
        return;
    }
    let v = options::read_all();
    if v[Opt::DecommitFree as usize] == 1 {
        OS.set_decommit(hak_os::Decommit::Free);
    }
    POOL.cache().set_limits(CacheLimits {
        max_count: v[Opt::SuperslabMaxCached as usize] as usize,
        max_bytes: (v[Opt::SuperslabMaxMemoryMb as usize] as usize).saturating_mul(1 << 20),
        ttl_ns: v[Opt::SuperslabTtlSec as usize].saturating_mul(1_000_000_000),
        decommit: true,
    });
    let big_ttl = v[Opt::BigcacheTtlSec as usize].saturating_mul(1_000_000_000);
    crate::large::BIG.set_limits(hak_bigcache::BigLimits {
        max_bytes: (v[Opt::BigcacheMaxMb as usize] as usize).saturating_mul(1 << 20),
        ttl_ns: big_ttl,
        ..hak_bigcache::BigLimits::DEFAULT
    });
    crate::decay::set_big_ttl(big_ttl);
    crate::large::MID.set_decommit_budget(
        (v[Opt::MidDecommitBudgetMb as usize] as usize).saturating_mul(1 << 20),
    );
    crate::large::MID.set_max_empty_chunks(v[Opt::MidMaxEmptyChunks as usize] as usize);
    POOL.set_purge_delay(v[Opt::PurgeDelayMs as usize].saturating_mul(1_000_000));
    crate::fork::register();
    let prewarm = v[Opt::PrewarmSuperslabs as usize] as usize;
    if prewarm > 0 {
        POOL.cache().prewarm(prewarm, 1 << LG_SS, 1 << LG_SS);
    }
    if v[Opt::Check as usize] == 1 {
        crate::check::enable();
    }
    // No atexit here: under the C ABI this can run inside glibc's atexit, which calls calloc
    // with its handler lock held once its static slots are used up; registering would wait
    // for that lock forever. The printer is an ELF destructor that looks at this flag.
    crate::stats::print_at_exit_if(v[Opt::Stats as usize] == 1);
    // SAFETY: only this thread writes CONFIG, before publishing DONE.
    unsafe {
        *CONFIG.0.get() = Config { warm_pool_size: v[Opt::WarmPoolSize as usize] as usize };
    }
    INIT.store(DONE, Ordering::Release);
}
