//! The option table: every `HAKMEM_*` variable, its default, unit and meaning, read once at
//! initialisation with `getenv` (no allocation; `std::env` allocates), or, if the first
//! allocation comes before libc has set up `environ`, from the initial environment (see
//! `environ.rs`). A value that is not a plain decimal number within range is reported once on
//! stderr and the default is used.

use hak_os::write_stderr;

/// One option.
pub(crate) struct OptionDef {
    pub(crate) name: &'static core::ffi::CStr,
    pub(crate) default: u64,
    pub(crate) min: u64,
    pub(crate) max: u64,
    /// Unit and meaning, for the docs and the `HAKMEM_STATS` printout.
    #[allow(dead_code)]
    pub(crate) doc: &'static str,
}

/// Index of each option in [`OPTIONS`].
#[derive(Clone, Copy)]
pub(crate) enum Opt {
    SuperslabMaxCached = 0,
    SuperslabMaxMemoryMb,
    SuperslabTtlSec,
    PrewarmSuperslabs,
    WarmPoolSize,
    Stats,
    DecommitFree,
    BigcacheMaxMb,
    BigcacheTtlSec,
    MidDecommitBudgetMb,
    MidMaxEmptyChunks,
    PurgeDelayMs,
    Check,
}

/// The table: one entry per variable. Keep in the order of [`Opt`].
pub(crate) static OPTIONS: [OptionDef; N] = [
    OptionDef {
        name: c"HAKMEM_SUPERSLAB_MAX_CACHED",
        min: 0,
        default: 256,
        max: 1 << 20,
        doc: "empty SuperSlabs kept in the LRU cache (count)",
    },
    OptionDef {
        name: c"HAKMEM_SUPERSLAB_MAX_MEMORY_MB",
        min: 0,
        default: 512,
        max: 1 << 30,
        doc: "bytes of empty SuperSlabs kept in the LRU cache (MiB)",
    },
    OptionDef {
        name: c"HAKMEM_SUPERSLAB_TTL_SEC",
        min: 0,
        default: 60,
        max: 1 << 30,
        doc: "age after which a cached SuperSlab is unmapped (seconds)",
    },
    OptionDef {
        name: c"HAKMEM_PREWARM_SUPERSLABS",
        min: 0,
        default: 0,
        max: 4096,
        doc: "SuperSlabs mapped into the cache at start-up (count)",
    },
    OptionDef {
        name: c"HAKMEM_WARM_POOL_SIZE",
        min: 1,
        default: 4,
        max: hak_tiny_front::WARM_MAX as u64,
        doc: "empty slabs a thread keeps per size class for reuse instead of returning them to \
              the shared pool (count, 1..=16)",
    },
    OptionDef {
        name: c"HAKMEM_STATS",
        min: 0,
        default: 0,
        max: 1,
        doc: "print statistics at exit (0/1)",
    },
    OptionDef {
        name: c"HAKMEM_DECOMMIT_FREE",
        min: 0,
        default: 0,
        max: 1,
        doc: "decommit with MADV_FREE instead of MADV_DONTNEED (0/1)",
    },
    OptionDef {
        name: c"HAKMEM_BIGCACHE_MAX_MB",
        min: 0,
        default: 64,
        max: 1 << 30,
        doc: "bytes of freed big blocks kept mapped for reuse, or a quarter of the live big bytes if more (MiB)",
    },
    OptionDef {
        name: c"HAKMEM_BIGCACHE_TTL_SEC",
        min: 0,
        default: crate::decay::DEFAULT_BIG_TTL_NS / 1_000_000_000,
        max: 1 << 30,
        doc: "age after which a cached big block is unmapped, checked by every tier's slow paths (seconds)",
    },
    OptionDef {
        name: c"HAKMEM_MID_DECOMMIT_BUDGET_MB",
        min: 0,
        default: (hak_l25::DEFAULT_DECOMMIT_BUDGET >> 20) as u64,
        max: 1 << 30,
        doc: "committed bytes of free mid blocks, plus half the mid bytes in use, above which \
              the oldest free blocks of 16 KiB and more are decommitted at once (MiB)",
    },
    OptionDef {
        name: c"HAKMEM_MID_MAX_EMPTY_CHUNKS",
        min: 0,
        default: 4,
        max: 1 << 20,
        doc: "empty mid-tier chunks kept mapped for reuse (count)",
    },
    OptionDef {
        name: c"HAKMEM_PURGE_DELAY_MS",
        min: 0,
        default: hak_shared_pool::DEFAULT_PURGE_DELAY_NS / 1_000_000,
        max: 1 << 30,
        doc: "how long freed memory that stays unused keeps its pages before they go back to \
              the OS (milliseconds)",
    },
    OptionDef {
        name: c"HAKMEM_CHECK",
        min: 0,
        default: 0,
        max: 1,
        doc: "check mode for the malloc-style functions: refuse tiny double frees and interior \
              pointers, mid double frees (0/1)",
    },
];

/// Number of options.
pub(crate) const N: usize = 13;

/// Reads every option; `values[i]` is option `i`'s value.
pub(crate) fn read_all() -> [u64; N] {
    let mut out = [0u64; N];
    if crate::environ::getenv_works() {
        for (i, o) in OPTIONS.iter().enumerate() {
            // SAFETY: getenv takes a NUL-terminated name and returns null or a NUL-terminated
            // string that stays valid until the environment is modified; we read it at once.
            let p = unsafe { libc::getenv(o.name.as_ptr()) };
            // SAFETY: a non-null getenv result is a valid C string.
            let value = (!p.is_null()).then(|| unsafe { core::ffi::CStr::from_ptr(p) }.to_bytes());
            out[i] = value_of(o, value);
        }
        return out;
    }
    // Before libc's start-up code: the initial environment, one pass over all entries.
    for (i, o) in OPTIONS.iter().enumerate() {
        out[i] = o.default;
    }
    crate::environ::scan_initial(|name, value| {
        if let Some(i) = OPTIONS.iter().position(|o| o.name.to_bytes() == name) {
            // An over-long value is no valid number: report it as such.
            out[i] = value_of(&OPTIONS[i], Some(value.unwrap_or(b"(too long)")));
        }
    });
    out
}

/// The value of option `o` given the variable's text (`None`: not set).
fn value_of(o: &OptionDef, text: Option<&[u8]>) -> u64 {
    let Some(bytes) = text else { return o.default };
    match parse(bytes) {
        Some(v) if (o.min..=o.max).contains(&v) => v,
        _ => {
            write_stderr(b"hakmem: ignoring invalid ");
            write_stderr(o.name.to_bytes());
            write_stderr(b" (want a number from ");
            hak_os::write_stderr_u64(o.min);
            write_stderr(b" to ");
            hak_os::write_stderr_u64(o.max);
            write_stderr(b"); using the default ");
            hak_os::write_stderr_u64(o.default);
            write_stderr(b"\n");
            o.default
        }
    }
}

/// A plain decimal number without sign or spaces.
pub(crate) fn parse(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 19 {
        return None;
    }
    let mut v = 0u64;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (b - b'0') as u64;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_plain_decimals_only() {
        assert_eq!(parse(b"0"), Some(0));
        assert_eq!(parse(b"256"), Some(256));
        for bad in [&b""[..], b"-1", b" 5", b"5 ", b"1e3", b"0x10", b"99999999999999999999"] {
            assert_eq!(parse(bad), None, "{:?}", core::str::from_utf8(bad));
        }
    }

    #[test]
    fn table_order_matches_the_enum() {
        assert_eq!(OPTIONS[Opt::WarmPoolSize as usize].name, c"HAKMEM_WARM_POOL_SIZE");
        assert_eq!(OPTIONS[Opt::DecommitFree as usize].name, c"HAKMEM_DECOMMIT_FREE");
        assert_eq!(OPTIONS[Opt::SuperslabMaxCached as usize].default, 256);
        assert_eq!(OPTIONS[Opt::BigcacheTtlSec as usize].name, c"HAKMEM_BIGCACHE_TTL_SEC");
        assert_eq!(OPTIONS[Opt::MidMaxEmptyChunks as usize].name, c"HAKMEM_MID_MAX_EMPTY_CHUNKS");
        assert_eq!(OPTIONS[Opt::PurgeDelayMs as usize].name, c"HAKMEM_PURGE_DELAY_MS");
        assert_eq!(OPTIONS[Opt::Check as usize].name, c"HAKMEM_CHECK");
        assert_eq!(OPTIONS.len(), N);
        assert_eq!(OPTIONS.len(), Opt::Check as usize + 1);
        for o in &OPTIONS {
            assert!(o.min <= o.default && o.default <= o.max, "{:?}", o.name);
        }
    }

    #[test]
    fn values_fall_back_to_the_default_when_unset_or_invalid() {
        let o = &OPTIONS[Opt::WarmPoolSize as usize];
        assert_eq!(value_of(o, None), o.default);
        assert_eq!(value_of(o, Some(b"8")), 8);
        assert_eq!(value_of(o, Some(b"99")), o.default, "above the maximum");
        assert_eq!(value_of(o, Some(b"(too long)")), o.default);
    }

    /// README's configuration table is what users read: every option has a row, every row an
    /// option, and the defaults it states are the table's.
    #[test]
    fn readme_lists_every_option_with_its_default() {
        let readme = include_str!("../../../README.md");
        let rows: std::vec::Vec<(&str, &str)> = readme
            .lines()
            .filter_map(|l| l.strip_prefix("| `HAKMEM_"))
            .filter_map(|l| {
                let mut cells = l.split('|').map(str::trim);
                let name = cells.next()?.strip_suffix('`')?;
                Some((name, cells.next()?))
            })
            .collect();
        assert_eq!(rows.len(), OPTIONS.len(), "README rows: {rows:?}");
        for o in &OPTIONS {
            let name = o.name.to_str().unwrap().strip_prefix("HAKMEM_").unwrap();
            let Some(&(_, default)) = rows.iter().find(|(n, _)| *n == name) else {
                panic!("README has no row for HAKMEM_{name}");
            };
            assert_eq!(default, std::format!("{}", o.default), "HAKMEM_{name}'s default");
        }
    }

    /// The defaults the options give the layers are the layers' own defaults, so a program
    /// that builds a layer by hand gets what the docs say.
    #[test]
    fn option_defaults_are_the_layers_defaults() {
        let ss = hak_registry::CacheLimits::DEFAULT;
        assert_eq!(OPTIONS[Opt::SuperslabMaxCached as usize].default, ss.max_count as u64);
        assert_eq!(
            OPTIONS[Opt::SuperslabMaxMemoryMb as usize].default,
            (ss.max_bytes >> 20) as u64
        );
        assert_eq!(OPTIONS[Opt::SuperslabTtlSec as usize].default, ss.ttl_ns / 1_000_000_000);
        let big = hak_bigcache::BigLimits::DEFAULT;
        assert_eq!(OPTIONS[Opt::BigcacheMaxMb as usize].default, (big.max_bytes >> 20) as u64);
        assert_eq!(OPTIONS[Opt::BigcacheTtlSec as usize].default, big.ttl_ns / 1_000_000_000);
        assert_eq!(
            OPTIONS[Opt::PurgeDelayMs as usize].default,
            hak_shared_pool::DEFAULT_PURGE_DELAY_NS / 1_000_000
        );
        assert_eq!(hak_l25::DEFAULT_PURGE_DELAY_NS, hak_shared_pool::DEFAULT_PURGE_DELAY_NS);
    }
}
