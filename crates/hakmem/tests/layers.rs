//! The layer order of docs/architecture.md, checked against every crate's manifest: a crate
//! may depend only on crates above it.

use std::path::Path;

/// Crates in dependency order; each may use only those before it.
const ORDER: &[&str] = &[
    "hak-sync",
    "hak-os",
    "hak-superslab",
    "hak-registry",
    "hak-shared-pool",
    "hak-tiny-front",
    "hak-l25",
    "hak-bigcache",
    "hakmem",
];

/// Names of the workspace crates listed under `[dependencies]` in a manifest.
fn hak_deps(manifest: &str) -> Vec<String> {
    let mut in_deps = false;
    let mut out = Vec::new();
    for line in manifest.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_deps = l == "[dependencies]";
            continue;
        }
        if in_deps {
            if let Some(name) = l.split(['=', ' ']).next() {
                if ORDER.contains(&name) {
                    out.push(name.to_string());
                }
            }
        }
    }
    out
}

#[test]
fn every_crate_depends_only_on_layers_above_it() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for (i, name) in ORDER.iter().enumerate() {
        let manifest = std::fs::read_to_string(crates.join(name).join("Cargo.toml")).unwrap();
        for dep in hak_deps(&manifest) {
            let j = ORDER.iter().position(|n| *n == dep).unwrap();
            assert!(j < i, "{name} depends on {dep}, which is not above it");
        }
    }
}

#[test]
fn the_parser_sees_dependencies_and_ignores_dev_dependencies() {
    let m = "[package]\nname = \"x\"\n[dependencies]\nhak-os = { workspace = true }\nlibc = \"0.2\"\n[dev-dependencies]\nhakmem = { workspace = true }\n";
    assert_eq!(hak_deps(m), vec!["hak-os".to_string()]);
}
