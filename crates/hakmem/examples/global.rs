//! The one-line setup: make hakmem the program's allocator, then use Rust as usual.
//!
//! Run: `cargo run --release -p hakmem --example global` (add `HAKMEM_STATS=1` to see counters).

#[global_allocator]
static GLOBAL: hakmem::Hakmem = hakmem::Hakmem;

fn main() {
    let words: Vec<String> = (0..100_000).map(|i| format!("word{i}")).collect();
    let total: usize = words.iter().map(String::len).sum();
    let s = hakmem::stats();
    println!(
        "{} strings, {total} bytes; hakmem: {} SuperSlabs, {} mmap calls, {} munmap calls",
        words.len(),
        s.pool.superslabs_live,
        s.os.mmap_calls,
        s.os.munmap_calls
    );
}
