//! hak-bench: the allocator-comparison workloads behind `cargo xtask bench`.
//!
//! This crate owns the workload code only. The binary (`src/main.rs`) picks the
//! `#[global_allocator]` with a cargo feature (`hakmem`, `system`, `mimalloc`, `jemalloc`) and
//! runs one workload per process; the library itself never sets an allocator, so its tests run
//! against the system allocator. Every allocator runs this identical code.
//!
//! Workloads (see `docs/bench.md` for what each one stresses):
//!
//! | function | command line | ops counted |
//! | --- | --- | --- |
//! | [`random_mixed`] | `random_mixed ITER WS SEED` | ITER |
//! | [`tiny_hot`] | `tiny_hot SIZE BATCH CYCLES` | CYCLES × BATCH × 2 |
//! | [`mid_large_mt`] | `mid_large_mt THREADS CYCLES WS SEED` | THREADS × CYCLES |
//! | [`larson`] | `larson THREADS ROUNDS BATCH SEED` | THREADS × ROUNDS × BATCH × 2 |
//! | [`xthread`] | `xthread ROUNDS BATCH SEED` | ROUNDS × BATCH × 2 |
//! | [`mid_mixed`] | `mid_mixed ITER WS SEED` | ITER |
//! | [`big`] | `big ITER WS SEED [dense\|sparse]` | ITER |
//! | [`realloc_grow`] | `realloc_grow REPS MAX [dense\|sparse]` | REPS × (log2(MAX / 8) + 2) |
//! | [`thread_churn`] | `thread_churn THREADS STEPS SEED` | THREADS × STEPS |
//! | [`real::json`] | `json RECORDS SEED` | RECORDS |
//! | [`real::syn_parse`] | `syn ITEMS SEED` | ITEMS |
//! | [`real::regex`] | `regex LINES SEED` | LINES |
//! | [`real::collections`] | `collections KEYS SEED` | KEYS |
//! | [`real::vec_grow`] | `vec_grow N SEED` | elements pushed |
//! | [`real::reserve`] | `reserve ITER WS SEED` | ITER |
//! | [`mt::tokio_msgs`] | `tokio TASKS MSGS SEED` | TASKS × MSGS |
//! | [`mt::rayon_pipeline`] | `rayon ITEMS SEED` | ITEMS |
//!
//! Invariants the raw workloads (this file) keep: blocks are allocated with raw `std::alloc`
//! calls (alignment [`ALIGN`]) so the work is allocator-bound; every block gets a byte pattern
//! when it is allocated and the pattern is checked before it is freed (a wrong byte is an `Err`,
//! which the binary turns into exit code 1). The real-program rows ([`real`], [`mt`]) run
//! ordinary code on real crates (serde_json, syn, regex, tokio, rayon, std's collections) and
//! check their results instead. For every workload the [`Outcome::checksum`] depends only on
//! the arguments, never on addresses or timing, so all allocators must report the same checksum
//! for the same command. The timed region of each workload ends only after every block is freed.

pub mod mt;
pub mod real;

use std::alloc::{alloc, dealloc, realloc, Layout};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::Instant;

/// Alignment of every block the workloads allocate (what `malloc` guarantees on x86-64).
pub const ALIGN: usize = 16;

/// Size of the pages `big` touches, one byte per page.
const PAGE: usize = 4096;

/// One finished workload run.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Row name, e.g. `random_mixed/400`.
    pub name: String,
    /// Operations counted (allocations plus frees, or loop steps; see the crate docs).
    pub ops: u64,
    /// Seconds spent in the timed region.
    pub secs: f64,
    /// Address-independent digest of what was allocated; equal across allocators.
    pub checksum: u64,
}

impl Outcome {
    /// Operations per second (`ops / secs`; 0 for an empty run).
    pub fn ops_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.ops as f64 / self.secs
        } else {
            0.0
        }
    }

    /// The machine-readable line the binary prints on stdout and `xtask` parses:
    /// `RESULT workload=NAME alloc=ALLOC ops=N secs=F ops_per_sec=F checksum=N`.
    pub fn result_line(&self, allocator: &str) -> String {
        format!(
            "RESULT workload={} alloc={} ops={} secs={:.6} ops_per_sec={:.1} checksum={}",
            self.name,
            allocator,
            self.ops,
            self.secs,
            self.ops_per_sec(),
            self.checksum
        )
    }
}

/// Names of the workloads [`run`] accepts.
pub const WORKLOADS: &[&str] = &[
    "random_mixed",
    "tiny_hot",
    "mid_large_mt",
    "larson",
    "xthread",
    "mid_mixed",
    "big",
    "realloc_grow",
    "thread_churn",
    "json",
    "syn",
    "regex",
    "collections",
    "vec_grow",
    "reserve",
    "tokio",
    "rayon",
];

/// Runs the workload named by `args[0]` with the numeric arguments after it; missing arguments
/// take defaults: the C original's for `tiny_hot` (64 100 100000) and `mid_large_mt`
/// (2 40000 2048 42), the full benchmark's counts (`docs/bench.md`) for the others. An unknown name or a bad number is
/// an `Err` as well as a failed content check; the message says which.
pub fn run(args: &[String]) -> Result<Outcome, String> {
    let (name, rest) = args.split_first().ok_or_else(usage)?;
    let a = Args { rest, name };
    match name.as_str() {
        "random_mixed" => random_mixed(a.get(0, 20_000_000)?, a.get(1, 400)?, a.get(2, 1_234_567)?),
        "tiny_hot" => tiny_hot(a.get(0, 64)?, a.get(1, 100)?, a.get(2, 100_000)?),
        "mid_large_mt" => {
            mid_large_mt(a.get(0, 2)?, a.get(1, 40_000)?, a.get(2, 2048)?, a.get(3, 42)?)
        }
        "larson" => larson(a.get(0, 2)?, a.get(1, 10_000)?, a.get(2, 100)?, a.get(3, 7)?),
        "xthread" => xthread(a.get(0, 40_000)?, a.get(1, 100)?, a.get(2, 11)?),
        "mid_mixed" => mid_mixed(a.get(0, 1_200_000)?, a.get(1, 64)?, a.get(2, 5)?),
        "big" => big(a.get(0, 1_000)?, a.get(1, 8)?, a.get(2, 3)?, a.touch(3)?),
        "realloc_grow" => realloc_grow(a.get(0, 8_000)?, a.get(1, 1 << 20)?, a.touch(2)?),
        "thread_churn" => thread_churn(a.get(0, 3_000)?, a.get(1, 400)?, a.get(2, 9)?),
        "json" => real::json(a.get(0, 20_000)?, a.get(1, 1)?),
        "syn" => real::syn_parse(a.get(0, 400)?, a.get(1, 2)?),
        "regex" => real::regex(a.get(0, 50_000)?, a.get(1, 3)?),
        "collections" => real::collections(a.get(0, 100_000)?, a.get(1, 4)?),
        "vec_grow" => real::vec_grow(a.get(0, 8 << 20)?, a.get(1, 5)?),
        "reserve" => real::reserve(a.get(0, 40_000)?, a.get(1, 8)?, a.get(2, 6)?),
        "tokio" => mt::tokio_msgs(a.get(0, 64)?, a.get(1, 8_000)?, a.get(2, 7)?),
        "rayon" => mt::rayon_pipeline(a.get(0, 200_000)?, a.get(1, 8)?),
        _ => Err(format!("unknown workload `{name}`\n{}", usage())),
    }
}

fn usage() -> String {
    format!("usage: hak-bench WORKLOAD [ARGS...]; workloads: {}", WORKLOADS.join(", "))
}

/// Positional numeric arguments of one workload.
struct Args<'a> {
    rest: &'a [String],
    name: &'a str,
}

impl Args<'_> {
    fn get<T: std::str::FromStr>(&self, i: usize, default: T) -> Result<T, String> {
        match self.rest.get(i) {
            None => Ok(default),
            Some(s) => s.parse().map_err(|_| {
                format!("{}: argument {} must be a number, got `{s}`", self.name, i + 1)
            }),
        }
    }

    /// The optional `dense`/`sparse` argument at `i` (default dense).
    fn touch(&self, i: usize) -> Result<Touch, String> {
        match self.rest.get(i).map(String::as_str) {
            None | Some("dense") => Ok(Touch::Dense),
            Some("sparse") => Ok(Touch::Sparse),
            Some(s) => Err(format!(
                "{}: argument {} must be `dense` or `sparse`, got `{s}`",
                self.name,
                i + 1
            )),
        }
    }
}

/// How much of a large block `big` and `realloc_grow` write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// Every page (`big`) or every new byte (`realloc_grow`): the block is used in full.
    Dense,
    /// Only both ends: a buffer reserved for more than it ends up holding.
    Sparse,
}

impl Touch {
    /// `dense` or `sparse`, as in row names.
    pub fn name(self) -> &'static str {
        match self {
            Touch::Dense => "dense",
            Touch::Sparse => "sparse",
        }
    }
}

/// The C original's generator: xorshift32 with shifts 13, 17, 5. A zero seed (a fixed point)
/// is replaced by 1.
#[derive(Debug, Clone)]
pub struct XorShift32(u32);

impl XorShift32 {
    /// A generator seeded with `seed` (0 becomes 1).
    pub fn new(seed: u32) -> Self {
        Self(if seed == 0 { 1 } else { seed })
    }

    /// Advances and returns the new state.
    #[inline]
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}

/// The layout of every workload block of `size` bytes.
#[inline]
fn layout(size: usize) -> Layout {
    debug_assert!(size > 0 && size <= isize::MAX as usize / 2);
    // SAFETY: ALIGN is a non-zero power of two and every size here is far below
    // isize::MAX - ALIGN, which is all `from_size_align_unchecked` requires.
    unsafe { Layout::from_size_align_unchecked(size, ALIGN) }
}

/// The pattern byte for a block of `size` bytes.
#[inline]
fn tag(size: usize) -> u8 {
    (size as u8) ^ ((size >> 8) as u8) ^ 0x5A
}

/// Allocates `size` (> 0) bytes or reports the failure.
#[inline]
fn alloc_block(size: usize) -> Result<*mut u8, String> {
    // SAFETY: `layout(size)` has a non-zero size.
    let p = unsafe { alloc(layout(size)) };
    if p.is_null() {
        Err(format!("allocation of {size} bytes failed"))
    } else {
        Ok(p)
    }
}

/// Checks the byte at `p + off` and fails with a message naming the block otherwise.
///
/// # Safety
/// `p + off` is inside a live block this workload allocated and initialised at that offset.
#[inline]
unsafe fn check(p: *mut u8, off: usize, want: u8, size: usize) -> Result<(), String> {
    // SAFETY: the caller guarantees `p + off` is an initialised byte of a live block.
    let got = unsafe { p.add(off).read() };
    if got == want {
        Ok(())
    } else {
        Err(corrupt(p, off, want, got, size))
    }
}

#[cold]
fn corrupt(p: *mut u8, off: usize, want: u8, got: u8, size: usize) -> String {
    format!(
        "content check failed: block {p:p} of {size} bytes has {got:#04x} at offset {off}, \
         expected {want:#04x}"
    )
}

/// Slot arrays of the random workloads: a null pointer marks an empty slot.
type Slots = Vec<(*mut u8, usize)>;

/// Frees the block in an occupied slot after checking its first and last bytes (the fill
/// functions below write both).
///
/// # Safety
/// `p` is a live block of `size` bytes from [`alloc_block`] whose first and last bytes hold
/// `tag(size)`.
#[inline]
unsafe fn free_checked(p: *mut u8, size: usize) -> Result<(), String> {
    let t = tag(size);
    // SAFETY: both offsets are inside the block and were written at allocation.
    unsafe {
        check(p, 0, t, size)?;
        check(p, size - 1, t, size)?;
    }
    // SAFETY: `p` came from `alloc(layout(size))` and is freed once.
    unsafe { dealloc(p, layout(size)) };
    Ok(())
}

/// Allocates `size` bytes and writes `tag(size)` at the first and last byte.
#[inline]
fn alloc_filled(size: usize) -> Result<*mut u8, String> {
    let p = alloc_block(size)?;
    let t = tag(size);
    // SAFETY: `p` is a fresh block of `size` >= 1 bytes, so offsets 0 and size - 1 are in it.
    unsafe {
        p.write(t);
        p.add(size - 1).write(t);
    }
    Ok(p)
}

/// One step of the random slot loop: an occupied slot is checked and freed, an empty one gets a
/// block of `size_of(r)` bytes. Returns the checksum contribution.
#[inline(always)]
fn slot_step(slots: &mut Slots, r: u32, size_of: impl Fn(u32) -> usize) -> Result<u64, String> {
    let i = r as usize % slots.len();
    let (p, size) = slots[i];
    if p.is_null() {
        let size = size_of(r);
        slots[i] = (alloc_filled(size)?, size);
        Ok(size as u64)
    } else {
        slots[i] = (std::ptr::null_mut(), 0);
        // SAFETY: an occupied slot holds a live block filled by `alloc_filled`.
        unsafe { free_checked(p, size)? };
        Ok(1 << 32)
    }
}

/// Checks and frees every occupied slot.
fn drain(slots: &mut Slots) -> Result<u64, String> {
    let mut sum = 0u64;
    for slot in slots.iter_mut() {
        let (p, size) = std::mem::replace(slot, (std::ptr::null_mut(), 0));
        if !p.is_null() {
            // SAFETY: an occupied slot holds a live block filled by `alloc_filled`.
            unsafe { free_checked(p, size)? };
            sum = sum.wrapping_add(1 << 32);
        }
    }
    Ok(sum)
}

/// Runs `iters` random slot steps over `ws` slots and drains them (the per-thread loop of the
/// random workloads, without prefault). Returns the checksum.
fn random_loop(
    iters: u64,
    ws: usize,
    seed: u32,
    size_of: impl Fn(u32) -> usize + Copy,
) -> Result<u64, String> {
    let mut slots: Slots = vec![(std::ptr::null_mut(), 0); ws.max(1)];
    let mut rng = XorShift32::new(seed);
    let mut sum = 0u64;
    for _ in 0..iters {
        sum = sum.wrapping_add(slot_step(&mut slots, rng.next(), size_of)?);
    }
    Ok(sum.wrapping_add(drain(&mut slots)?))
}

/// Tiny request sizes of `random_mixed`: 16..=1039 bytes.
#[inline(always)]
fn tiny_size(r: u32) -> usize {
    16 + (r & 0x3FF) as usize
}

/// The C original's headline benchmark. `ws` slots; each of `iters` steps draws one xorshift32
/// value `r`: slot `r % ws` is freed if occupied, else gets `16 + (r & 0x3FF)` bytes. Before the
/// timer starts, `iters / 10` steps seeded with `seed + 0xDEADBEEF` prefault the slots and are
/// left in place; the timed region is the `iters` steps seeded with `seed` plus the final drain.
pub fn random_mixed(iters: u64, ws: usize, seed: u32) -> Result<Outcome, String> {
    let mut slots: Slots = vec![(std::ptr::null_mut(), 0); ws.max(1)];
    let mut rng = XorShift32::new(seed.wrapping_add(0xDEAD_BEEF));
    let mut sum = 0u64;
    for _ in 0..iters / 10 {
        sum = sum.wrapping_add(slot_step(&mut slots, rng.next(), tiny_size)?);
    }
    let start = Instant::now();
    let mut rng = XorShift32::new(seed);
    for _ in 0..iters {
        sum = sum.wrapping_add(slot_step(&mut slots, rng.next(), tiny_size)?);
    }
    sum = sum.wrapping_add(drain(&mut slots)?);
    let secs = start.elapsed().as_secs_f64();
    Ok(Outcome { name: format!("random_mixed/{ws}"), ops: iters, secs, checksum: sum })
}

/// The hot tiny path: `cycles` times, allocate `batch` blocks of `size` bytes and free them in
/// reverse order (LIFO, so a thread cache serves every request).
pub fn tiny_hot(size: usize, batch: usize, cycles: u64) -> Result<Outcome, String> {
    let size = size.max(1);
    let mut blocks: Vec<*mut u8> = Vec::with_capacity(batch);
    let start = Instant::now();
    for _ in 0..cycles {
        for _ in 0..batch {
            blocks.push(alloc_filled(size)?);
        }
        while let Some(p) = blocks.pop() {
            // SAFETY: `p` was filled by `alloc_filled(size)` in this cycle and is freed once.
            unsafe { free_checked(p, size)? };
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let checksum = cycles.wrapping_mul(batch as u64).wrapping_mul(size as u64);
    Ok(Outcome {
        name: "tiny_hot".into(),
        ops: cycles.wrapping_mul(batch as u64) * 2,
        secs,
        checksum,
    })
}

/// Mid-size requests of `mid_large_mt`: `2^(13 + r % 3) + (r & 0x7FF)`, 8 KiB ..= 34 KiB.
#[inline(always)]
fn mid_large_size(r: u32) -> usize {
    (1usize << (13 + r % 3)) + (r & 0x7FF) as usize
}

/// `threads` threads, each running the random slot loop (`cycles` steps over `ws` slots, seed
/// `seed + thread index`) with 8–34 KiB requests, then draining. Timed from the first spawn to
/// the last join.
pub fn mid_large_mt(threads: usize, cycles: u64, ws: usize, seed: u32) -> Result<Outcome, String> {
    let threads = threads.max(1);
    let start = Instant::now();
    let sums = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    random_loop(cycles, ws, seed.wrapping_add(t as u32), mid_large_size)
                })
            })
            .collect();
        join_all(handles)
    })?;
    let secs = start.elapsed().as_secs_f64();
    Ok(Outcome {
        name: "mid_large_mt".into(),
        ops: cycles * threads as u64,
        secs,
        checksum: sums.iter().fold(0u64, |a, &b| a.wrapping_add(b)),
    })
}

/// Joins scoped threads, turning a panic or an `Err` of any of them into an `Err`.
fn join_all<T>(
    handles: Vec<std::thread::ScopedJoinHandle<'_, Result<T, String>>>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::with_capacity(handles.len());
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert_with(|| "a worker thread panicked".to_string());
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Blocks handed from one thread to another: (pointer, size) pairs.
struct Batch(Vec<(*mut u8, usize)>);

// SAFETY: the blocks in a batch are plain heap memory owned by whoever holds the batch; the
// sender gives them up when it sends, so exactly one thread touches them at a time.
unsafe impl Send for Batch {}

/// Allocates `n` filled blocks of random tiny size (16..=1039 bytes); returns the batch and the
/// sum of the sizes.
fn alloc_batch(rng: &mut XorShift32, n: usize) -> Result<(Batch, u64), String> {
    let mut v = Vec::with_capacity(n);
    let mut sum = 0u64;
    for _ in 0..n {
        let size = tiny_size(rng.next());
        v.push((alloc_filled(size)?, size));
        sum += size as u64;
    }
    Ok((Batch(v), sum))
}

/// Checks and frees every block of a batch.
fn free_batch(batch: Batch) -> Result<(), String> {
    for (p, size) in batch.0 {
        // SAFETY: batches hold live blocks filled by `alloc_filled`, each freed once here.
        unsafe { free_checked(p, size)? };
    }
    Ok(())
}

/// Larson-style cross-thread frees: `threads` threads in a ring; each round a thread allocates
/// `batch` blocks of 16..=1039 bytes, sends them to the next thread, and checks and frees the
/// batch it receives from the previous one. So every block is freed by a thread that did not
/// allocate it.
pub fn larson(threads: usize, rounds: u64, batch: usize, seed: u32) -> Result<Outcome, String> {
    let threads = threads.max(2);
    let (txs, rxs): (Vec<SyncSender<Batch>>, Vec<Receiver<Batch>>) =
        (0..threads).map(|_| sync_channel::<Batch>(2)).unzip();
    // Thread t sends on channel t and receives on channel t - 1.
    let mut rxs: Vec<Option<Receiver<Batch>>> = rxs.into_iter().map(Some).collect();
    rxs.rotate_right(1);
    let start = Instant::now();
    let sums = std::thread::scope(|s| {
        let handles: Vec<_> = txs
            .into_iter()
            .zip(rxs.iter_mut())
            .enumerate()
            .map(|(t, (tx, rx))| {
                let rx = rx.take().expect("each receiver is taken once");
                s.spawn(move || -> Result<u64, String> {
                    let mut rng = XorShift32::new(seed.wrapping_add(t as u32 * 7919));
                    let mut sum = 0u64;
                    for _ in 0..rounds {
                        let (b, bytes) = alloc_batch(&mut rng, batch)?;
                        sum = sum.wrapping_add(bytes);
                        tx.send(b).map_err(|_| "larson: peer thread stopped".to_string())?;
                        let got = rx.recv().map_err(|_| "larson: peer thread stopped")?;
                        free_batch(got)?;
                    }
                    Ok(sum)
                })
            })
            .collect();
        join_all(handles)
    })?;
    let secs = start.elapsed().as_secs_f64();
    Ok(Outcome {
        name: "larson".into(),
        ops: threads as u64 * rounds * batch as u64 * 2,
        secs,
        checksum: sums.iter().fold(0u64, |a, &b| a.wrapping_add(b)),
    })
}

/// Producer/consumer: one thread allocates `rounds` batches of `batch` blocks (16..=1039 bytes)
/// and hands each over a bounded channel to a second thread, which checks and frees them.
pub fn xthread(rounds: u64, batch: usize, seed: u32) -> Result<Outcome, String> {
    let (tx, rx) = sync_channel::<Batch>(4);
    let start = Instant::now();
    let (sent, freed) = std::thread::scope(|s| {
        let producer = s.spawn(move || -> Result<u64, String> {
            let mut rng = XorShift32::new(seed);
            let mut sum = 0u64;
            for _ in 0..rounds {
                let (b, bytes) = alloc_batch(&mut rng, batch)?;
                sum = sum.wrapping_add(bytes);
                tx.send(b).map_err(|_| "xthread: consumer stopped".to_string())?;
            }
            Ok(sum)
        });
        let consumer = s.spawn(move || -> Result<u64, String> {
            let mut n = 0u64;
            while let Ok(b) = rx.recv() {
                n += b.0.len() as u64;
                free_batch(b)?;
            }
            Ok(n)
        });
        let r = join_all(vec![producer, consumer])?;
        Ok::<_, String>((r[0], r[1]))
    })?;
    let secs = start.elapsed().as_secs_f64();
    if freed != rounds * batch as u64 {
        return Err(format!("xthread: freed {freed} blocks, expected {}", rounds * batch as u64));
    }
    Ok(Outcome { name: "xthread".into(), ops: freed * 2, secs, checksum: sent })
}

/// Random slots (as `random_mixed`, no prefault) with sizes uniform in 1 KiB ..= 1 MiB.
pub fn mid_mixed(iters: u64, ws: usize, seed: u32) -> Result<Outcome, String> {
    const LO: usize = 1 << 10;
    const HI: usize = 1 << 20;
    let size_of = |r: u32| LO + r as usize % (HI - LO + 1);
    let start = Instant::now();
    let checksum = random_loop(iters, ws, seed, size_of)?;
    let secs = start.elapsed().as_secs_f64();
    Ok(Outcome { name: "mid_mixed".into(), ops: iters, secs, checksum })
}

/// Random slots with sizes uniform in 1 MiB ..= 8 MiB. `Dense`: every page of a block is
/// written once at allocation and every page's byte is checked before the free. `Sparse`: only
/// the first and the last byte are (a buffer reserved large and filled partly).
pub fn big(iters: u64, ws: usize, seed: u32, touch: Touch) -> Result<Outcome, String> {
    const LO: usize = 1 << 20;
    const HI: usize = 8 << 20;
    let mut slots: Slots = vec![(std::ptr::null_mut(), 0); ws.max(1)];
    let mut rng = XorShift32::new(seed);
    let mut sum = 0u64;
    let start = Instant::now();
    for _ in 0..iters {
        let r = rng.next();
        let i = r as usize % slots.len();
        let (p, size) = std::mem::replace(&mut slots[i], (std::ptr::null_mut(), 0));
        if p.is_null() {
            let size = LO + r as usize % (HI - LO + 1);
            slots[i] = (alloc_touched(size, touch)?, size);
            sum = sum.wrapping_add(size as u64);
        } else {
            // SAFETY: an occupied slot holds a live block written by `alloc_touched(_, touch)`.
            unsafe { free_touched(p, size, touch)? };
            sum = sum.wrapping_add(1 << 32);
        }
    }
    for slot in slots.iter_mut() {
        let (p, size) = std::mem::replace(slot, (std::ptr::null_mut(), 0));
        if !p.is_null() {
            // SAFETY: as above.
            unsafe { free_touched(p, size, touch)? };
            sum = sum.wrapping_add(1 << 32);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Outcome { name: format!("big/{}", touch.name()), ops: iters, secs, checksum: sum })
}

/// The byte `big` writes at `off` in a block of `size` bytes.
#[inline]
fn page_tag(size: usize, off: usize) -> u8 {
    tag(size) ^ ((off / PAGE) as u8)
}

/// The offsets `big` writes in a block of `size` bytes: one per page plus the last byte
/// (`Dense`), or the first and the last byte (`Sparse`).
fn touched_offsets(size: usize, touch: Touch) -> impl Iterator<Item = usize> {
    let step = match touch {
        Touch::Dense => PAGE,
        Touch::Sparse => size,
    };
    (0..size).step_by(step).chain(std::iter::once(size - 1))
}

/// Allocates `size` bytes and writes the bytes [`touched_offsets`] names.
fn alloc_touched(size: usize, touch: Touch) -> Result<*mut u8, String> {
    let p = alloc_block(size)?;
    for off in touched_offsets(size, touch) {
        // SAFETY: `off < size`, so the byte is inside the fresh block.
        unsafe { p.add(off).write(page_tag(size, off)) };
    }
    Ok(p)
}

/// Checks every byte `alloc_touched` wrote, then frees the block.
///
/// # Safety
/// `p` is a live block of `size` bytes from [`alloc_touched`] with the same `touch`.
unsafe fn free_touched(p: *mut u8, size: usize, touch: Touch) -> Result<(), String> {
    for off in touched_offsets(size, touch) {
        // SAFETY: the caller guarantees the block is live; `alloc_touched` wrote this offset.
        unsafe { check(p, off, page_tag(size, off), size)? };
    }
    // SAFETY: `p` came from `alloc(layout(size))` and is freed once.
    unsafe { dealloc(p, layout(size)) };
    Ok(())
}

/// Smallest size of `realloc_grow`.
const GROW_FROM: usize = 8;

/// A byte size as a short row-name label: `1m`, `64m`, `512k`, `4096b`.
fn size_label(bytes: usize) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{}m", bytes >> 20)
    } else if bytes.is_multiple_of(1 << 10) {
        format!("{}k", bytes >> 10)
    } else {
        format!("{bytes}b")
    }
}

/// `reps` times: allocate 8 bytes, then double the block with `realloc` up to `max` bytes (a
/// power of two, at least 16), then free it. After each step the old contents must have moved:
/// the first byte and the last byte written before the step are checked. `Dense` then fills the
/// whole new tail (a Vec pushed full); `Sparse` writes only the new last byte (a buffer grown
/// ahead of its use), so an allocator that copies or faults in the untouched tail pays for it.
/// Ops per rep: 1 alloc + log2(max / 8) reallocs + 1 free.
pub fn realloc_grow(reps: u64, max: usize, touch: Touch) -> Result<Outcome, String> {
    if !max.is_power_of_two() || max <= GROW_FROM || max > 1 << 40 {
        return Err(format!(
            "realloc_grow: argument 2 must be a power of two above {GROW_FROM}, got {max}"
        ));
    }
    let steps = u64::from((max / GROW_FROM).trailing_zeros());
    let start = Instant::now();
    for _ in 0..reps {
        let mut size = GROW_FROM;
        let mut p = alloc_block(size)?;
        // SAFETY: `p` is a fresh block of `size` bytes.
        unsafe { p.write_bytes(0xA0, size) };
        let mut fill = 0xA0u8;
        while size < max {
            let new = size * 2;
            // SAFETY: `p` is live with layout(size); `new` is non-zero and < isize::MAX.
            let q = unsafe { realloc(p, layout(size), new) };
            if q.is_null() {
                return Err(format!("realloc from {size} to {new} bytes failed"));
            }
            p = q;
            // SAFETY: realloc kept the first `size` bytes; bytes 0 and size - 1 were written.
            unsafe {
                check(p, 0, 0xA0, new)?;
                check(p, size - 1, fill, new)?;
            }
            fill = fill.wrapping_add(1);
            match touch {
                // SAFETY: bytes size..new are inside the new block.
                Touch::Dense => unsafe { p.add(size).write_bytes(fill, new - size) },
                // SAFETY: new - 1 is inside the new block.
                Touch::Sparse => unsafe { p.add(new - 1).write(fill) },
            }
            size = new;
        }
        // SAFETY: the last byte was written with `fill`; `p` is live with layout(size).
        unsafe {
            check(p, size - 1, fill, size)?;
            dealloc(p, layout(size));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Outcome {
        name: format!("realloc_grow/{}_{}", size_label(max), touch.name()),
        ops: reps * (steps + 2),
        secs,
        checksum: reps.wrapping_mul(max as u64).wrapping_add(steps),
    })
}

/// Threads alive at once in `thread_churn`.
const CHURN_WAVE: usize = 2;

/// `threads` short-lived threads, `CHURN_WAVE` at a time; each runs `steps` random slot steps
/// over 32 slots with 16..=1039-byte requests, drains, and exits (so the allocator sets up and
/// tears down its per-thread state `threads` times).
pub fn thread_churn(threads: usize, steps: u64, seed: u32) -> Result<Outcome, String> {
    let mut sum = 0u64;
    let start = Instant::now();
    let mut t = 0usize;
    while t < threads {
        let wave = CHURN_WAVE.min(threads - t);
        let sums = std::thread::scope(|s| {
            let handles: Vec<_> = (t..t + wave)
                .map(|i| {
                    s.spawn(move || random_loop(steps, 32, seed.wrapping_add(i as u32), tiny_size))
                })
                .collect();
            join_all(handles)
        })?;
        sum = sums.iter().fold(sum, |a, &b| a.wrapping_add(b));
        t += wave;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Outcome { name: "thread_churn".into(), ops: threads as u64 * steps, secs, checksum: sum })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn xorshift_matches_the_c_sequence() {
        // x = 1: 1 ^ 1<<13 = 0x2001; ^ >>17 = 0x2001; ^ <<5 = 0x42021.
        let mut r = XorShift32::new(1);
        assert_eq!(r.next(), 0x0004_2021);
        let mut z = XorShift32::new(0);
        assert_ne!(z.next(), 0);
    }

    #[test]
    fn every_workload_runs_at_tiny_size_on_the_system_allocator() {
        let cases = [
            ("random_mixed 20000 64 1234567", "random_mixed/64", 20_000),
            ("tiny_hot 64 10 100", "tiny_hot", 2_000),
            ("mid_large_mt 2 500 64 42", "mid_large_mt", 1_000),
            ("larson 2 50 10 7", "larson", 2_000),
            ("xthread 50 10 11", "xthread", 1_000),
            ("mid_mixed 200 8 5", "mid_mixed", 200),
            ("big 20 2 3", "big/dense", 20),
            ("big 20 2 3 sparse", "big/sparse", 20),
            ("realloc_grow 3", "realloc_grow/1m_dense", 57),
            ("realloc_grow 2 65536 sparse", "realloc_grow/64k_sparse", 30),
            ("thread_churn 5 100 9", "thread_churn", 500),
            ("json 50 1", "json", 50),
            ("syn 5 2", "syn", 5),
            ("regex 300 3", "regex", 300),
            ("collections 500 4", "collections", 500),
            ("vec_grow 1000 5", "vec_grow", 0),
            ("reserve 20 2 6", "reserve", 20),
            ("tokio 4 20 7", "tokio", 80),
            ("rayon 500 8", "rayon", 500),
        ];
        let names: std::collections::BTreeSet<&str> =
            cases.iter().map(|c| c.0.split(' ').next().unwrap()).collect();
        assert_eq!(names.len(), WORKLOADS.len());
        for (cmd, name, ops) in cases {
            let out = run(&args(cmd)).unwrap_or_else(|e| panic!("{cmd}: {e}"));
            assert_eq!(out.name, name, "{cmd}");
            // vec_grow counts the pushes it made, which depend on the words drawn.
            if ops != 0 {
                assert_eq!(out.ops, ops, "{cmd}");
            }
            assert!(out.secs >= 0.0);
            assert_ne!(out.checksum, 0, "{cmd}");
        }
    }

    #[test]
    fn checksums_depend_only_on_arguments() {
        for cmd in [
            "random_mixed 5000 32 9",
            "larson 3 20 5 1",
            "xthread 20 5 2",
            "json 30 3",
            "tokio 3 30 1",
            "rayon 300 2",
        ] {
            let a = run(&args(cmd)).unwrap();
            let b = run(&args(cmd)).unwrap();
            assert_eq!(a.checksum, b.checksum, "{cmd}");
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(run(&args("nope")).is_err());
        assert!(run(&args("tiny_hot x")).is_err());
        assert!(run(&args("big 1 1 1 half")).is_err());
        assert!(run(&args("realloc_grow 1 1000")).is_err());
        assert!(run(&[]).is_err());
    }

    #[test]
    fn a_corrupted_block_is_reported() {
        let p = alloc_filled(32).unwrap();
        // SAFETY: offset 0 is inside the 32-byte block.
        unsafe { p.write(!tag(32)) };
        // SAFETY: the block is live and its first and last bytes were written.
        let err = unsafe { free_checked(p, 32) }.unwrap_err();
        assert!(err.contains("content check failed"), "{err}");
        // SAFETY: free_checked failed before freeing, so the block is still live.
        unsafe { dealloc(p, layout(32)) };
    }

    #[test]
    fn result_line_has_every_field() {
        let o = Outcome { name: "x/1".into(), ops: 10, secs: 2.0, checksum: 3 };
        assert_eq!(
            o.result_line("system"),
            "RESULT workload=x/1 alloc=system ops=10 secs=2.000000 ops_per_sec=5.0 checksum=3"
        );
    }

    #[test]
    fn size_functions_stay_in_their_ranges() {
        for r in [0u32, 1, 0x3FF, 0x7FF, u32::MAX, 12345] {
            assert!((16..=1039).contains(&tiny_size(r)));
            assert!((8 << 10..=(32 << 10) + 0x7FF).contains(&mid_large_size(r)));
        }
    }
}
