//! Multi-threaded rows built on real crates: a tokio runtime whose tasks pass owned messages
//! between workers, and a rayon pipeline whose results are built on one worker and dropped on
//! another. Both use two worker threads (the benchmark machine has two cores).
//!
//! Which worker runs which task is up to the runtime, so the checksums are built only from
//! order-independent sums of values that depend on indices and the seed.

use std::time::Instant;

use rayon::prelude::*;

use crate::real::{mix, splitmix, MIX0};
use crate::Outcome;

/// Worker threads of both runtimes.
const WORKERS: usize = 2;

/// A message of the `tokio` row: owned heap data of the kinds services pass around.
#[derive(Debug)]
enum Msg {
    Text(String),
    Data(Vec<u64>),
    Boxed(Box<Item>),
}

#[derive(Debug)]
struct Item {
    id: u64,
    name: String,
    payload: [u64; 6],
}

/// The message number `n` of producer `p`, built from those numbers alone.
fn make_msg(seed: u64, p: u64, n: u64) -> Msg {
    let r = splitmix(seed ^ (p << 32) ^ n);
    match r % 3 {
        0 => Msg::Text(format!("producer {p} message {n} {:x}", r >> 8)),
        1 => Msg::Data((0..(r >> 8) % 48 + 1).map(|k| r ^ k).collect()),
        _ => Msg::Boxed(Box::new(Item {
            id: n,
            name: format!("item-{p}-{n}"),
            payload: [r, r >> 1, r >> 2, r >> 3, r >> 4, r >> 5],
        })),
    }
}

/// A relay's transformation: the message is consumed and a new one built from it, so the relay
/// frees what a producer allocated and allocates what a consumer frees.
fn relay(m: Msg) -> Msg {
    match m {
        Msg::Text(s) => Msg::Text(s.to_uppercase()),
        Msg::Data(v) => Msg::Data(v.iter().map(|x| x.rotate_left(7)).collect()),
        Msg::Boxed(b) => {
            let Item { id, name, payload } = *b;
            Msg::Boxed(Box::new(Item { id: id + 1, name: name + "!", payload }))
        }
    }
}

/// What a consumer takes from a message before dropping it.
fn digest(m: &Msg) -> u64 {
    match m {
        Msg::Text(s) => mix(MIX0, s.as_bytes()),
        Msg::Data(v) => v.iter().fold(v.len() as u64, |a, &x| a.wrapping_add(x)),
        Msg::Boxed(b) => mix(b.id, b.name.as_bytes())
            .wrapping_add(b.payload.iter().fold(0u64, |a, &x| a.wrapping_add(x))),
    }
}

/// A tokio multi-thread runtime with two workers; `tasks` producer tasks each send `msgs` owned
/// messages (Strings, Vecs, Boxes) over a bounded mpsc channel to a relay task, which rebuilds
/// each message and sends it on to a consumer task, which digests and drops it. Producers,
/// relays and consumers of one chain are separate tasks, so work-stealing spreads them over both
/// workers and messages are allocated on one thread and freed on another. The timed region is
/// the runtime's whole run (block_on until every task finished). Ops: messages.
pub fn tokio_msgs(tasks: u64, msgs: u64, seed: u32) -> Result<Outcome, String> {
    use tokio::sync::mpsc;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .build()
        .map_err(|e| format!("tokio: runtime: {e}"))?;
    let seed = u64::from(seed);
    let start = Instant::now();
    let (sum, received) = rt.block_on(async move {
        let mut consumers = Vec::new();
        let mut others = Vec::new();
        for p in 0..tasks {
            let (tx, mut rx) = mpsc::channel::<Msg>(16);
            let (tx2, mut rx2) = mpsc::channel::<Msg>(16);
            others.push(tokio::spawn(async move {
                for n in 0..msgs {
                    if tx.send(make_msg(seed, p, n)).await.is_err() {
                        return;
                    }
                }
            }));
            others.push(tokio::spawn(async move {
                while let Some(m) = rx.recv().await {
                    if tx2.send(relay(m)).await.is_err() {
                        return;
                    }
                }
            }));
            consumers.push(tokio::spawn(async move {
                let (mut sum, mut n) = (0u64, 0u64);
                while let Some(m) = rx2.recv().await {
                    sum = sum.wrapping_add(digest(&m));
                    n += 1;
                }
                (sum, n)
            }));
        }
        let (mut sum, mut n) = (0u64, 0u64);
        for c in consumers {
            let (s, k) = c.await.map_err(|e| format!("tokio: consumer task: {e}"))?;
            sum = sum.wrapping_add(s);
            n += k;
        }
        for h in others {
            h.await.map_err(|e| format!("tokio: task: {e}"))?;
        }
        Ok::<_, String>((sum, n))
    })?;
    let secs = start.elapsed().as_secs_f64();
    drop(rt);
    if received != tasks * msgs {
        return Err(format!("tokio: consumers got {received} messages, expected {}", tasks * msgs));
    }
    Ok(Outcome { name: "tokio".into(), ops: received, secs, checksum: sum })
}

/// The `i`-th word of the `rayon` row.
fn rayon_word(seed: u64, i: u64) -> String {
    let r = splitmix(seed ^ i);
    format!("{:x}-{}-{}", r % 0xF_FFFF, i % 1000, r >> 44)
}

/// A rayon pool of two threads: `items` Strings built by a parallel map and collected, sorted
/// in parallel, grouped into `Vec<String>` chunks by a parallel map (each word upper-cased and
/// split), flattened into `(String, usize)` pairs, and each collection dropped by a parallel
/// pass over it in reverse order, so the halves built on one worker are freed on the other.
/// Ops: items.
pub fn rayon_pipeline(items: u64, seed: u32) -> Result<Outcome, String> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(WORKERS)
        .build()
        .map_err(|e| format!("rayon: pool: {e}"))?;
    let seed = u64::from(seed);
    let start = Instant::now();
    let checksum = pool.install(|| -> Result<u64, String> {
        let mut words: Vec<String> =
            (0..items).into_par_iter().map(|i| rayon_word(seed, i)).collect();
        words.par_sort_unstable();
        if words.par_windows(2).any(|w| w[0] > w[1]) {
            return Err("rayon: the sorted words are out of order".into());
        }
        let mut groups: Vec<Vec<String>> = words
            .par_chunks(64)
            .map(|c| {
                c.iter()
                    .flat_map(|w| w.to_uppercase().split('-').map(String::from).collect::<Vec<_>>())
                    .collect()
            })
            .collect();
        let mut pairs: Vec<(String, usize)> =
            groups.par_iter().flat_map_iter(|g| g.iter().map(|s| (s.clone(), s.len()))).collect();
        if pairs.len() as u64 != 3 * items {
            return Err(format!("rayon: {} parts, expected {}", pairs.len(), 3 * items));
        }
        let sum = words
            .par_iter()
            .enumerate()
            .map(|(i, w)| mix(i as u64, w.as_bytes()))
            .reduce(|| 0, u64::wrapping_add)
            .wrapping_add(
                pairs
                    .par_iter()
                    .map(|(s, n)| mix(*n as u64, s.as_bytes()))
                    .reduce(|| 0, u64::wrapping_add),
            );
        words.reverse();
        groups.reverse();
        pairs.reverse();
        words.into_par_iter().for_each(drop);
        groups.into_par_iter().for_each(drop);
        pairs.into_par_iter().for_each(drop);
        Ok(sum)
    })?;
    let secs = start.elapsed().as_secs_f64();
    drop(pool);
    Ok(Outcome { name: "rayon".into(), ops: items, secs, checksum })
}
