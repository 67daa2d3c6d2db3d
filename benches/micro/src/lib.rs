//! Criterion micro-benchmarks of hakmem's layers live in `benches/layers.rs`
//! (`cargo bench -p hak-micro`); this library is empty. The comparisons against other
//! allocators are `cargo xtask bench` (crate `hak-bench`).
