//! hakmem's developer tasks, in the cargo-xtask style (`cargo xtask ...`, aliased in
//! `.cargo/config.toml`; cargo is invoked through `$CARGO`).
//!
//! - `cargo xtask test`: every check CI runs (see `test.rs`).
//! - `cargo xtask loom [CRATE...]`: the loom models alone.
// The clippy.toml ban on `std::env::var` protects the allocator from allocating while it reads
// its options; xtask is an ordinary program run under the system allocator.
#![allow(clippy::disallowed_methods)]

mod test;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("test") => test::run(&args[1..]),
        Some("loom") => test::run_loom(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <test | loom [CRATE...]>");
            2
        }
    };
    std::process::exit(code);
}
