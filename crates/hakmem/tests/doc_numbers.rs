//! The numbers docs/architecture.md states are the code's: each claim below is formatted from
//! the constant it describes and must appear in the document word for word. A constant that
//! changes without its sentence (or a sentence edited without the code) fails here.

const ARCH: &str = include_str!("../../../docs/architecture.md");

/// `n` bytes the way the docs write them: "48 KiB", "1 MiB", "2560 B".
fn size(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

fn claim(text: String) {
    assert!(ARCH.contains(&text), "docs/architecture.md does not say: {text:?}");
}

#[test]
fn tier_bounds_are_the_routing_constants() {
    use hak_l25::{MID_MAX, MID_MAX_ALIGN};
    use hak_tiny_front::{MAX_TINY_ALIGN, TINY_MAX};
    claim(format!("| ≤ {}, alignment ≤ {} | tiny |", size(TINY_MAX), size(MAX_TINY_ALIGN)));
    claim(format!(
        "| {} < size ≤ {}, alignment ≤ {} | mid |",
        size(TINY_MAX),
        size(MID_MAX),
        size(MID_MAX_ALIGN)
    ));
    claim(format!("mid tier ({} .. {})", size(TINY_MAX), size(MID_MAX)));
    claim(format!("big tier (> {}, big alignments)", size(MID_MAX)));
}

#[test]
fn superslab_slab_and_registry_geometry() {
    use hak_superslab::{LG_SUPERSLAB_DEFAULT, LG_SUPERSLAB_MIN, SLAB_SIZE};
    claim(format!(
        "A SuperSlab is `2^lg` bytes ({}; {} supported)",
        size(1 << LG_SUPERSLAB_DEFAULT),
        size(1 << LG_SUPERSLAB_MIN)
    ));
    claim(format!("`i` covers `[base + i·{s}, base + (i+1)·{s})`", s = size(SLAB_SIZE)));
    claim(format!(
        "Two-level page map over {} granules ({} top slots × {}-entry leaves",
        size(hak_registry::GRANULE),
        1usize << hak_registry::TOP_BITS,
        1usize << hak_registry::LEAF_BITS
    ));
}

#[test]
fn big_cache_limits_are_the_defaults() {
    let d = hak_bigcache::BigLimits::DEFAULT;
    claim(format!("limits on bytes ({}", size(d.max_bytes)));
}
