//! The benchmark report: the measurements of one `cargo xtask bench` ([`Report`]) and its three
//! renderings, all pure functions of it: Markdown ([`markdown`]), JSON written by hand
//! ([`json`]) and an SVG bar chart of hakmem's ratios drawn as SVG text ([`svg`]).
//!
//! Summary rules: every number shown is the median over the successful runs of a cell (one
//! workload × one allocator); a ratio is hakmem's median ops/s ÷ the peer's median ops/s, so
//! above 1 means hakmem is faster; a cell with any failed run shows `FAIL`.

use std::fmt::Write as _;

use crate::child::Syscalls;
use crate::machine::Machine;
use crate::workloads::Mode;

/// Everything one bench invocation measured.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    /// Where and when.
    pub(crate) machine: Machine,
    /// Scale of the counts.
    pub(crate) mode: Mode,
    /// Runs per cell that were asked for.
    pub(crate) runs: usize,
    /// Column order; `cells` of every row follow it.
    pub(crate) allocators: Vec<String>,
    /// One per workload, in plan order.
    pub(crate) rows: Vec<Row>,
}

/// One workload's results.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// Row name, e.g. `random_mixed/400`.
    pub(crate) workload: String,
    /// `hak-bench` arguments used.
    pub(crate) command: String,
    /// One per allocator, in `Report::allocators` order.
    pub(crate) cells: Vec<Cell>,
}

/// One workload under one allocator: what each run gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Cell {
    /// ops/s of each successful run, in run order.
    pub(crate) ops_per_sec: Vec<f64>,
    /// Peak RSS of each successful run, KiB.
    pub(crate) rss_kib: Vec<u64>,
    /// hakmem's syscall counts of each successful run (empty for the peers).
    pub(crate) syscalls: Vec<Syscalls>,
    /// The workload's checksum (the same for every run and allocator when all is well).
    pub(crate) checksum: Option<u64>,
    /// What went wrong in failed runs.
    pub(crate) errors: Vec<String>,
}

impl Cell {
    /// Median ops/s, if any run succeeded.
    pub(crate) fn median_ops(&self) -> Option<f64> {
        median(&self.ops_per_sec)
    }

    /// Median peak RSS in KiB.
    pub(crate) fn median_rss_kib(&self) -> Option<u64> {
        median_u64(&self.rss_kib)
    }

    /// Median of each syscall counter.
    pub(crate) fn median_syscalls(&self) -> Option<Syscalls> {
        let col =
            |f: fn(&Syscalls) -> u64| median_u64(&self.syscalls.iter().map(f).collect::<Vec<_>>());
        Some(Syscalls {
            mmap: col(|s| s.mmap)?,
            munmap: col(|s| s.munmap)?,
            madvise: col(|s| s.madvise)?,
        })
    }

    /// Whether any run failed.
    pub(crate) fn failed(&self) -> bool {
        !self.errors.is_empty()
    }
}

impl Row {
    /// hakmem's median ops/s ÷ the median ops/s of the allocator in column `peer`; `None` when
    /// hakmem is not in the report or either side has no successful run.
    pub(crate) fn ratio(&self, allocators: &[String], peer: usize) -> Option<f64> {
        let h = allocators.iter().position(|a| a == "hakmem")?;
        let (hv, pv) = (self.cells[h].median_ops()?, self.cells.get(peer)?.median_ops()?);
        (pv > 0.0).then(|| hv / pv)
    }
}

impl Report {
    /// Column indices of the allocators hakmem is compared with.
    pub(crate) fn peers(&self) -> Vec<usize> {
        if !self.allocators.iter().any(|a| a == "hakmem") {
            return Vec::new();
        }
        (0..self.allocators.len()).filter(|&i| self.allocators[i] != "hakmem").collect()
    }

    /// `(workload, allocator, message)` for every failed run.
    pub(crate) fn failures(&self) -> Vec<(&str, &str, &str)> {
        let mut v = Vec::new();
        for row in &self.rows {
            for (cell, alloc) in row.cells.iter().zip(&self.allocators) {
                for e in &cell.errors {
                    v.push((row.workload.as_str(), alloc.as_str(), e.as_str()));
                }
            }
        }
        v
    }
}

/// The median of `xs` (mean of the middle two for an even count); `None` when empty. NaNs sort
/// last.
pub(crate) fn median(xs: &[f64]) -> Option<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// [`median`] for integers (an even count rounds the mean down).
pub(crate) fn median_u64(xs: &[u64]) -> Option<u64> {
    let mut v = xs.to_vec();
    v.sort_unstable();
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some(v[n / 2 - 1] / 2 + v[n / 2] / 2 + (v[n / 2 - 1] % 2 + v[n / 2] % 2) / 2),
    }
}

/// `x` with three significant digits, without an exponent from 1e-6 up.
pub(crate) fn sig3(x: f64) -> String {
    let a = x.abs();
    if a == 0.0 || !a.is_finite() {
        return format!("{x:.2}");
    }
    if a < 1e-6 {
        return format!("{x:.2e}");
    }
    let decimals = (2 - a.log10().floor() as i32).clamp(0, 8) as usize;
    format!("{x:.decimals$}")
}

fn mib(kib: u64) -> String {
    sig3(kib as f64 / 1024.0)
}

fn run_word(n: usize) -> &'static str {
    if n == 1 {
        "run"
    } else {
        "runs"
    }
}

/// The report as Markdown: header facts, a throughput table with hakmem's ratios, a memory and
/// syscall table, failures, and the exact commands.
pub(crate) fn markdown(r: &Report) -> String {
    let m = &r.machine;
    let mut s = String::new();
    let _ = writeln!(s, "# hakmem benchmark report\n");
    let _ = writeln!(s, "| | |\n| --- | --- |");
    let _ = writeln!(s, "| date | {} |", m.date);
    let _ = writeln!(
        s,
        "| mode | {}: {} {} per allocator, allocators interleaved run by run; medians shown |",
        r.mode.name(),
        r.runs,
        run_word(r.runs)
    );
    let _ = writeln!(
        s,
        "| machine | {} CPUs ({}), {} MiB RAM, Linux {} |",
        m.nproc, m.cpu, m.mem_mib, m.kernel
    );
    let _ = writeln!(s, "| toolchain | {}, release profile, no LTO |", m.toolchain);
    let _ = writeln!(s, "| commit | {} |", m.git);
    if r.mode == Mode::Smoke {
        let _ = writeln!(
            s,
            "\nSmoke run: tiny counts prove the workloads work; the numbers mean nothing."
        );
    }

    let peers = r.peers();
    let _ = writeln!(s, "\n## Throughput: M ops/s (higher is better) and hakmem ÷ peer\n");
    let mut head = String::from("| workload |");
    let mut rule = String::from("| --- |");
    for a in &r.allocators {
        let _ = write!(head, " {a} |");
        rule.push_str(" ---: |");
    }
    for &p in &peers {
        let _ = write!(head, " ÷ {} |", r.allocators[p]);
        rule.push_str(" ---: |");
    }
    let _ = writeln!(s, "{head}\n{rule}");
    for row in &r.rows {
        let _ = write!(s, "| {} |", row.workload);
        for c in &row.cells {
            let v = match (c.failed(), c.median_ops()) {
                (true, _) => "FAIL".to_string(),
                (false, Some(v)) => sig3(v / 1e6),
                (false, None) => "–".to_string(),
            };
            let _ = write!(s, " {v} |");
        }
        for &p in &peers {
            let v =
                row.ratio(&r.allocators, p).map_or("–".to_string(), |x| format!("{}×", sig3(x)));
            let _ = write!(s, " {v} |");
        }
        s.push('\n');
    }

    let has_hakmem = r.allocators.iter().any(|a| a == "hakmem");
    let _ = writeln!(
        s,
        "\n## Peak RSS of the process (MiB){}\n",
        if has_hakmem { " and hakmem's OS calls (whole process)" } else { "" }
    );
    let mut head = String::from("| workload |");
    let mut rule = String::from("| --- |");
    for a in &r.allocators {
        let _ = write!(head, " {a} |");
        rule.push_str(" ---: |");
    }
    if has_hakmem {
        head.push_str(" mmap | munmap | madvise |");
        rule.push_str(" ---: | ---: | ---: |");
    }
    let _ = writeln!(s, "{head}\n{rule}");
    let h = r.allocators.iter().position(|a| a == "hakmem");
    for row in &r.rows {
        let _ = write!(s, "| {} |", row.workload);
        for c in &row.cells {
            let v = c.median_rss_kib().map_or("–".to_string(), mib);
            let _ = write!(s, " {v} |");
        }
        if let Some(h) = h {
            match row.cells[h].median_syscalls() {
                Some(k) => {
                    let _ = write!(s, " {} | {} | {} |", k.mmap, k.munmap, k.madvise);
                }
                None => s.push_str(" – | – | – |"),
            }
        }
        s.push('\n');
    }

    let failures = r.failures();
    if !failures.is_empty() {
        let _ = writeln!(s, "\n## Failures\n");
        for (w, a, e) in failures {
            let _ = writeln!(s, "- {w} / {a}: {}", e.lines().next().unwrap_or(""));
        }
    }

    let _ = writeln!(s, "\n## Commands\n");
    let _ = writeln!(s, "Each row is `target/bench/bin/hak-bench-ALLOC ARGS`:\n");
    for row in &r.rows {
        let _ = writeln!(s, "- {}: `{}`", row.workload, row.command);
    }
    s
}

/// A JSON string literal.
fn jstr(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A JSON number (`null` for NaN and infinities, which JSON lacks).
fn jnum(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".into()
    }
}

fn jopt<T>(x: Option<T>, f: impl Fn(T) -> String) -> String {
    x.map_or("null".into(), f)
}

fn jlist<T>(xs: &[T], f: impl Fn(&T) -> String) -> String {
    format!("[{}]", xs.iter().map(f).collect::<Vec<_>>().join(", "))
}

/// The report as JSON (hand-written; the schema is in `docs/bench.md`).
pub(crate) fn json(r: &Report) -> String {
    let m = &r.machine;
    let mut s = String::from("{\n");
    let _ = writeln!(s, "  \"date\": {},", jstr(&m.date));
    let _ = writeln!(s, "  \"mode\": {},", jstr(r.mode.name()));
    let _ = writeln!(s, "  \"runs\": {},", r.runs);
    let _ = writeln!(
        s,
        "  \"machine\": {{\"nproc\": {}, \"cpu\": {}, \"mem_mib\": {}, \"kernel\": {}, \
         \"toolchain\": {}, \"git\": {}}},",
        m.nproc,
        jstr(&m.cpu),
        m.mem_mib,
        jstr(&m.kernel),
        jstr(&m.toolchain),
        jstr(&m.git)
    );
    let _ = writeln!(s, "  \"allocators\": {},", jlist(&r.allocators, |a| jstr(a)));
    s.push_str("  \"workloads\": [");
    for (i, row) in r.rows.iter().enumerate() {
        s.push_str(if i == 0 { "\n" } else { ",\n" });
        let _ = writeln!(
            s,
            "    {{\"name\": {}, \"command\": {},",
            jstr(&row.workload),
            jstr(&row.command)
        );
        s.push_str("     \"results\": {");
        for (j, (c, a)) in row.cells.iter().zip(&r.allocators).enumerate() {
            s.push_str(if j == 0 { "\n" } else { ",\n" });
            let sys = jopt(c.median_syscalls(), |k| {
                format!(
                    "{{\"mmap\": {}, \"munmap\": {}, \"madvise\": {}}}",
                    k.mmap, k.munmap, k.madvise
                )
            });
            let _ = write!(
                s,
                "       {}: {{\"ok\": {}, \"ops_per_sec_median\": {}, \"ops_per_sec_runs\": {}, \
                 \"peak_rss_kib_median\": {}, \"peak_rss_kib_runs\": {}, \"checksum\": {}, \
                 \"syscalls_median\": {}, \"errors\": {}}}",
                jstr(a),
                !c.failed() && c.median_ops().is_some(),
                jopt(c.median_ops(), jnum),
                jlist(&c.ops_per_sec, |&x| jnum(x)),
                jopt(c.median_rss_kib(), |x| x.to_string()),
                jlist(&c.rss_kib, |x| x.to_string()),
                jopt(c.checksum, |x| x.to_string()),
                sys,
                jlist(&c.errors, |e| jstr(e))
            );
        }
        s.push_str("\n     },\n     \"hakmem_ratio\": {");
        let peers = r.peers();
        for (j, &p) in peers.iter().enumerate() {
            let _ = write!(
                s,
                "{}{}: {}",
                if j == 0 { "" } else { ", " },
                jstr(&r.allocators[p]),
                jopt(row.ratio(&r.allocators, p), jnum)
            );
        }
        s.push_str("}}");
    }
    s.push_str("\n  ]\n}\n");
    s
}

/// Text safe inside SVG/XML.
fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Bar colours for the peers, in column order.
const COLOURS: &[&str] = &["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2"];

/// A horizontal bar chart of hakmem's ratio to each peer per workload on a log scale centred
/// on 1× (bars to the right: hakmem faster; to the left: slower), as standalone SVG text.
pub(crate) fn svg(r: &Report) -> String {
    const W: f64 = 900.0;
    const LEFT: f64 = 170.0;
    const RIGHT: f64 = 60.0;
    const TOP: f64 = 78.0;
    const BAR: f64 = 12.0;
    const GAP: f64 = 2.0;
    const PAD: f64 = 12.0;
    let peers = r.peers();
    let ratios: Vec<f64> = r
        .rows
        .iter()
        .flat_map(|row| peers.iter().filter_map(|&p| row.ratio(&r.allocators, p)))
        .filter(|x| *x > 0.0 && x.is_finite())
        .collect();
    // Axis: whole decades from at most 0.1 to at least 10, at most 4 decades each way.
    let lo = ratios.iter().fold(-1.0f64, |a, x| a.min(x.log10().floor())).max(-4.0);
    let hi = ratios.iter().fold(1.0f64, |a, x| a.max(x.log10().ceil())).min(4.0);
    let pw = W - LEFT - RIGHT;
    let x_of = |ratio: f64| LEFT + (ratio.log10().clamp(lo, hi) - lo) / (hi - lo) * pw;
    let group = peers.len().max(1) as f64 * (BAR + GAP) - GAP + PAD;
    let plot_h = group * r.rows.len() as f64;
    let h = TOP + plot_h + 40.0;

    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" \
         viewBox=\"0 0 {W} {h}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(s, "<rect width=\"{W}\" height=\"{h}\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"20\" font-size=\"14\" font-weight=\"bold\">hakmem throughput ÷ \
         peer (median ops/s; log scale; right of 1× = hakmem faster)</text>",
        10
    );
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"38\" fill=\"#555\">{} · {} mode, {} {} · {} CPUs · Linux {}</text>",
        xml(&r.machine.date),
        r.mode.name(),
        r.runs,
        run_word(r.runs),
        r.machine.nproc,
        xml(&r.machine.kernel)
    );
    if peers.is_empty() {
        let _ = writeln!(s, "<text x=\"10\" y=\"60\">no hakmem results to compare</text>\n</svg>");
        return s;
    }
    for (k, &p) in peers.iter().enumerate() {
        let x = LEFT + k as f64 * 120.0;
        let _ = writeln!(
            s,
            "<rect x=\"{x}\" y=\"50\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"60\">vs {}</text>",
            COLOURS[k % COLOURS.len()],
            x + 16.0,
            xml(&r.allocators[p])
        );
    }
    // Grid: each decade, plus 0.5× and 2× inside the central decade pair.
    let bottom = TOP + plot_h;
    let mut ticks: Vec<(f64, String)> =
        (lo as i32..=hi as i32).map(|d| (10f64.powi(d), format!("{}×", tick(d)))).collect();
    ticks.push((0.5, "0.5×".into()));
    ticks.push((2.0, "2×".into()));
    for (v, label) in &ticks {
        let x = x_of(*v);
        let (stroke, width) = if *v == 1.0 { ("#333", 1.5) } else { ("#ddd", 1.0) };
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{bottom}\" stroke=\"{stroke}\" \
             stroke-width=\"{width}\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" \
             fill=\"#555\">{label}</text>",
            bottom + 16.0
        );
    }
    let one = x_of(1.0);
    for (i, row) in r.rows.iter().enumerate() {
        let y0 = TOP + i as f64 * group + PAD / 2.0;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 8.0,
            y0 + (group - PAD) / 2.0 + 4.0,
            xml(&row.workload)
        );
        for (k, &p) in peers.iter().enumerate() {
            let y = y0 + k as f64 * (BAR + GAP);
            let ty = y + BAR - 2.0;
            match row.ratio(&r.allocators, p) {
                Some(v) if v > 0.0 && v.is_finite() => {
                    let x = x_of(v);
                    let (bx, bw) = (one.min(x), (x - one).abs().max(1.0));
                    let _ = writeln!(
                        s,
                        "<rect x=\"{bx:.1}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{BAR}\" \
                         fill=\"{}\"><title>{} vs {}: {}×</title></rect>",
                        COLOURS[k % COLOURS.len()],
                        xml(&row.workload),
                        xml(&r.allocators[p]),
                        sig3(v)
                    );
                    let (tx, anchor) = if v >= 1.0 || x - 40.0 < LEFT {
                        (one.max(x) + 3.0, "start")
                    } else {
                        (x - 3.0, "end")
                    };
                    let _ = writeln!(
                        s,
                        "<text x=\"{tx:.1}\" y=\"{ty:.1}\" text-anchor=\"{anchor}\" \
                         font-size=\"10\">{}×</text>",
                        sig3(v)
                    );
                }
                _ => {
                    let _ = writeln!(
                        s,
                        "<text x=\"{:.1}\" y=\"{ty:.1}\" font-size=\"10\" fill=\"#c00\">n/a \
                         vs {}</text>",
                        one + 3.0,
                        xml(&r.allocators[p])
                    );
                }
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Decade tick label: 10^d without an exponent.
fn tick(d: i32) -> String {
    if d >= 0 {
        format!("{}", 10u64.pow(d as u32))
    } else {
        format!("{:.*}", (-d) as usize, 10f64.powi(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(ops: &[f64], rss: &[u64], sys: &[Syscalls]) -> Cell {
        Cell {
            ops_per_sec: ops.to_vec(),
            rss_kib: rss.to_vec(),
            syscalls: sys.to_vec(),
            checksum: Some(42),
            errors: vec![],
        }
    }

    fn sample() -> Report {
        let k = Syscalls { mmap: 10, munmap: 2, madvise: 3 };
        Report {
            machine: Machine {
                date: "2026-01-02 03:04:05 UTC".into(),
                nproc: 2,
                kernel: "6.1.0".into(),
                cpu: "Test CPU".into(),
                mem_mib: 4096,
                toolchain: "cargo 1.95.0".into(),
                git: "abc123".into(),
            },
            mode: Mode::Quick,
            runs: 3,
            allocators: vec!["hakmem".into(), "system".into(), "mimalloc".into()],
            rows: vec![
                Row {
                    workload: "random_mixed/400".into(),
                    command: "random_mixed 5000000 400 1234567".into(),
                    cells: vec![
                        cell(&[30e6, 10e6, 20e6], &[2048, 4096, 3072], &[k, k, k]),
                        cell(&[10e6, 10e6, 10e6], &[1024; 3], &[]),
                        cell(&[40e6, 40e6, 40e6], &[1024; 3], &[]),
                    ],
                },
                Row {
                    workload: "big".into(),
                    command: "big 250 8 \"3\"".into(),
                    cells: vec![
                        cell(&[1e3], &[1024], &[k]),
                        Cell { errors: vec!["exited with code 1".into()], ..Cell::default() },
                        cell(&[2e3], &[1024], &[]),
                    ],
                },
            ],
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[5.0]), Some(5.0));
        assert_eq!(median_u64(&[]), None);
        assert_eq!(median_u64(&[9, 1, 5]), Some(5));
        assert_eq!(median_u64(&[1, 2]), Some(1));
        assert_eq!(median_u64(&[3, 5]), Some(4));
        assert_eq!(median_u64(&[u64::MAX, u64::MAX]), Some(u64::MAX));
    }

    #[test]
    fn ratios_are_hakmem_over_peer() {
        let r = sample();
        assert_eq!(r.peers(), vec![1, 2]);
        assert_eq!(r.rows[0].ratio(&r.allocators, 1), Some(2.0));
        assert_eq!(r.rows[0].ratio(&r.allocators, 2), Some(0.5));
        assert_eq!(r.rows[1].ratio(&r.allocators, 1), None);
        let mut no_h = r.clone();
        no_h.allocators[0] = "jemalloc".into();
        assert!(no_h.peers().is_empty());
        assert_eq!(no_h.rows[0].ratio(&no_h.allocators, 1), None);
    }

    #[test]
    fn sig3_formats() {
        assert_eq!(sig3(123.456), "123");
        assert_eq!(sig3(12.345), "12.3");
        assert_eq!(sig3(1.2345), "1.23");
        assert_eq!(sig3(0.5), "0.500");
        assert_eq!(sig3(0.01234), "0.0123");
        assert_eq!(sig3(0.0), "0.00");
        assert_eq!(sig3(0.0001234), "0.000123");
        assert_eq!(sig3(1.234e-7), "1.23e-7");
    }

    #[test]
    fn markdown_has_header_tables_and_failures() {
        let md = markdown(&sample());
        assert!(md.contains("| date | 2026-01-02 03:04:05 UTC |"), "{md}");
        assert!(md.contains("2 CPUs (Test CPU), 4096 MiB RAM, Linux 6.1.0"), "{md}");
        assert!(md.contains("| workload | hakmem | system | mimalloc | ÷ system | ÷ mimalloc |"));
        assert!(md.contains("| random_mixed/400 | 20.0 | 10.0 | 40.0 | 2.00× | 0.500× |"), "{md}");
        assert!(md.contains("| big | 0.00100 | FAIL | 0.00200 | – | 0.500× |"), "{md}");
        assert!(md.contains("| random_mixed/400 | 3.00 | 1.00 | 1.00 | 10 | 2 | 3 |"), "{md}");
        assert!(md.contains("- big / system: exited with code 1"), "{md}");
        assert!(md.contains("- random_mixed/400: `random_mixed 5000000 400 1234567`"), "{md}");
    }

    #[test]
    fn json_is_well_formed_and_escaped() {
        let j = json(&sample());
        assert!(j.contains("\"command\": \"big 250 8 \\\"3\\\"\""), "{j}");
        assert!(j.contains("\"hakmem_ratio\": {\"system\": 2, \"mimalloc\": 0.5}"), "{j}");
        assert!(j.contains("\"system\": {\"ok\": false, \"ops_per_sec_median\": null"), "{j}");
        assert!(j.contains("\"syscalls_median\": {\"mmap\": 10, \"munmap\": 2, \"madvise\": 3}"));
        assert_eq!(jstr("a\u{1}\n"), "\"a\\u0001\\n\"");
        assert_eq!(jnum(f64::NAN), "null");
        assert_balanced(&j, '{', '}');
        assert_balanced(&j, '[', ']');
    }

    fn assert_balanced(s: &str, open: char, close: char) {
        let mut depth = 0i32;
        let mut in_str = false;
        let mut esc = false;
        for c in s.chars() {
            if in_str {
                match (esc, c) {
                    (true, _) => esc = false,
                    (false, '\\') => esc = true,
                    (false, '"') => in_str = false,
                    _ => {}
                }
                continue;
            }
            if c == '"' {
                in_str = true;
            } else if c == open {
                depth += 1;
            } else if c == close {
                depth -= 1;
                assert!(depth >= 0);
            }
        }
        assert_eq!(depth, 0);
    }

    #[test]
    fn svg_draws_a_bar_per_ratio() {
        let out = svg(&sample());
        assert!(out.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(out.trim_end().ends_with("</svg>"));
        // Three ratios exist (2, 0.5, 0.5) and one is missing.
        assert_eq!(out.matches("<title>").count(), 3);
        assert!(out.contains(">2.00×</text>"));
        assert!(out.contains("n/a vs system"));
        assert!(out.contains("random_mixed/400"));
        assert_balanced(&out, '<', '>');
        let mut none = sample();
        none.allocators[0] = "jemalloc".into();
        assert!(svg(&none).contains("no hakmem results"));
    }

    #[test]
    fn tick_labels() {
        assert_eq!(tick(0), "1");
        assert_eq!(tick(2), "100");
        assert_eq!(tick(-2), "0.01");
    }
}
