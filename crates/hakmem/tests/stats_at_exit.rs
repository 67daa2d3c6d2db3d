//! `HAKMEM_STATS=1` prints the report when a Rust program using `hakmem::Hakmem` exits. The
//! report is an ELF destructor (`.fini_array`, see `stats.rs`), so this checks that it is linked
//! into an ordinary executable and runs: the test runs itself again as a child with the
//! variable set and reads the child's stderr. A plain `main` (no libtest harness).
#![allow(clippy::disallowed_methods)] // reads its own marker variable in the child

#[global_allocator]
static A: hakmem::Hakmem = hakmem::Hakmem;

fn main() {
    if std::env::var_os("HAKMEM_TEST_CHILD").is_some() {
        let v: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        println!("{}", v.len());
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    for (stats, want) in [("1", true), ("0", false)] {
        let out = std::process::Command::new(&exe)
            .env("HAKMEM_TEST_CHILD", "1")
            .env("HAKMEM_STATS", stats)
            .output()
            .expect("run the child");
        assert!(out.status.success(), "child failed: {:?}", out.status);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.contains("hakmem stats"), want, "HAKMEM_STATS={stats}; stderr:\n{err}");
        if want {
            // Every layer's counters, one dotted name per line.
            for line in [
                "  os.mmap_calls: ",
                "  pool.cache.hits: ",
                "  tiny.refills: ",
                "  mid.allocs: ",
                "  big.live_bytes.peak: ",
                "  registry_leaves: ",
            ] {
                assert!(err.contains(line), "no {line:?} in the report:\n{err}");
            }
        }
    }
    println!("1 passed, 0 failed");
}
