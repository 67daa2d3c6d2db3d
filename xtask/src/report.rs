//! The benchmark report: the measurements of one `cargo xtask bench` ([`Report`]) and its three
//! renderings, all pure functions of it: Markdown ([`markdown`]), JSON through serde_json
//! ([`json`]) and an SVG chart drawn with plotters ([`svg`]): grouped bars per workload of
//! hakmem's throughput ratio to each peer and of every allocator's peak RSS.
//!
//! Summary rules: every number shown is the median over the successful runs of a cell (one
//! workload × one allocator); a ratio is hakmem's median ops/s ÷ the peer's median ops/s, so
//! above 1 means hakmem is faster; a cell with any failed run shows `FAIL`.

use std::fmt::Write as _;

use plotters::prelude::*;
use serde::Serialize;

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
    markdown_with(r, "Each row is `target/bench/bin/hak-bench-ALLOC ARGS`:")
}

/// [`markdown`] with the sentence that introduces the commands (the C report's rows are
/// programs run with each allocator preloaded, not the Rust bench binary).
pub(crate) fn markdown_with(r: &Report, commands_intro: &str) -> String {
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
    let mut columns = r.allocators.clone();
    columns.extend(peers.iter().map(|&p| format!("÷ {}", r.allocators[p])));
    table(&mut s, &columns, &r.rows, |row| {
        let ops = row.cells.iter().map(|c| match (c.failed(), c.median_ops()) {
            (true, _) => "FAIL".to_string(),
            (false, Some(v)) => sig3(v / 1e6),
            (false, None) => "–".to_string(),
        });
        let ratios = peers.iter().map(|&p| {
            row.ratio(&r.allocators, p).map_or("–".to_string(), |x| format!("{}×", sig3(x)))
        });
        ops.chain(ratios).collect()
    });

    let h = r.allocators.iter().position(|a| a == "hakmem");
    let _ = writeln!(
        s,
        "\n## Peak RSS of the process (MiB){}\n",
        if h.is_some() { " and hakmem's OS calls (whole process)" } else { "" }
    );
    let mut columns = r.allocators.clone();
    if h.is_some() {
        columns.extend(["mmap", "munmap", "madvise"].map(String::from));
    }
    table(&mut s, &columns, &r.rows, |row| {
        let mut v: Vec<String> =
            row.cells.iter().map(|c| c.median_rss_kib().map_or("–".to_string(), mib)).collect();
        if let Some(h) = h {
            match row.cells[h].median_syscalls() {
                Some(k) => v.extend([k.mmap, k.munmap, k.madvise].map(|n| n.to_string())),
                None => v.extend(["–"; 3].map(String::from)),
            }
        }
        v
    });

    let failures = r.failures();
    if !failures.is_empty() {
        let _ = writeln!(s, "\n## Failures\n");
        for (w, a, e) in failures {
            let _ = writeln!(s, "- {w} / {a}: {}", e.lines().next().unwrap_or(""));
        }
    }

    let _ = writeln!(s, "\n## Commands\n");
    let _ = writeln!(s, "{commands_intro}\n");
    for row in &r.rows {
        let _ = writeln!(s, "- {}: `{}`", row.workload, row.command);
    }
    s
}

/// A Markdown table of one line per row: the workload, then `columns` (right-aligned) with the
/// values `cells` gives for the row.
fn table(s: &mut String, columns: &[String], rows: &[Row], cells: impl Fn(&Row) -> Vec<String>) {
    let line = |first: &str, rest: &[String]| {
        rest.iter().fold(format!("| {first} |"), |l, c| l + " " + c + " |") + "\n"
    };
    s.push_str(&line("workload", columns));
    s.push_str(&line("---", &vec!["---:".to_string(); columns.len()]));
    for row in rows {
        s.push_str(&line(&row.workload, &cells(row)));
    }
}

/// A JSON object whose keys keep the given order (allocators in report order), which a map
/// type would sort.
pub(crate) struct InOrder<'a, T>(pub(crate) Vec<(&'a str, T)>);

impl<T: Serialize> Serialize for InOrder<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// `report.json`: the schema `docs/bench.md` shows, after the fields of `head` (none for the
/// Rust rows; the C rows add their peers' versions).
#[derive(Serialize)]
struct JsonReport<'a, H> {
    #[serde(flatten)]
    head: H,
    date: &'a str,
    mode: &'a str,
    runs: usize,
    machine: JsonMachine<'a>,
    allocators: &'a [String],
    workloads: Vec<JsonRow<'a>>,
}

#[derive(Serialize)]
struct JsonMachine<'a> {
    nproc: usize,
    cpu: &'a str,
    mem_mib: u64,
    kernel: &'a str,
    toolchain: &'a str,
    git: &'a str,
}

#[derive(Serialize)]
struct JsonRow<'a> {
    name: &'a str,
    command: &'a str,
    results: InOrder<'a, JsonCell<'a>>,
    hakmem_ratio: InOrder<'a, Option<f64>>,
}

/// One cell; medians are `null` when no run succeeded, and non-finite numbers (which JSON
/// lacks) are written as `null` by serde_json.
#[derive(Serialize)]
struct JsonCell<'a> {
    ok: bool,
    ops_per_sec_median: Option<f64>,
    ops_per_sec_runs: &'a [f64],
    peak_rss_kib_median: Option<u64>,
    peak_rss_kib_runs: &'a [u64],
    checksum: Option<u64>,
    syscalls_median: Option<Syscalls>,
    errors: &'a [String],
}

/// The report as JSON (schema in `docs/bench.md`).
pub(crate) fn json(r: &Report) -> String {
    json_with(r, ())
}

/// [`json`] with the fields of `head` (a struct) first.
pub(crate) fn json_with<H: Serialize>(r: &Report, head: H) -> String {
    let m = &r.machine;
    let peers = r.peers();
    let doc = JsonReport {
        head,
        date: &m.date,
        mode: r.mode.name(),
        runs: r.runs,
        machine: JsonMachine {
            nproc: m.nproc,
            cpu: &m.cpu,
            mem_mib: m.mem_mib,
            kernel: &m.kernel,
            toolchain: &m.toolchain,
            git: &m.git,
        },
        allocators: &r.allocators,
        workloads: r
            .rows
            .iter()
            .map(|row| JsonRow {
                name: &row.workload,
                command: &row.command,
                results: InOrder(
                    row.cells
                        .iter()
                        .zip(&r.allocators)
                        .map(|(c, a)| {
                            let cell = JsonCell {
                                ok: !c.failed() && c.median_ops().is_some(),
                                ops_per_sec_median: c.median_ops(),
                                ops_per_sec_runs: &c.ops_per_sec,
                                peak_rss_kib_median: c.median_rss_kib(),
                                peak_rss_kib_runs: &c.rss_kib,
                                checksum: c.checksum,
                                syscalls_median: c.median_syscalls(),
                                errors: &c.errors,
                            };
                            (a.as_str(), cell)
                        })
                        .collect(),
                ),
                hakmem_ratio: InOrder(
                    peers
                        .iter()
                        .map(|&p| (r.allocators[p].as_str(), row.ratio(&r.allocators, p)))
                        .collect(),
                ),
            })
            .collect(),
    };
    // Serialising plain structs of strings and numbers to a String cannot fail.
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// Colours of the allocators, in report column order (hakmem first).
const COLOURS: [RGBColor; 6] = [
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0xb0, 0x7a, 0xa1),
];

/// Pixel height of one bar slot; each workload takes one slot per allocator plus a gap.
const SLOT_PX: u32 = 7;
/// Pixel height a legend entry takes (plotters' default label font and spacing).
const LEGEND_ENTRY_PX: u32 = 19;
/// Chart width in pixels.
const CHART_W: u32 = 1100;

/// The chart as standalone SVG: one row of grouped horizontal bars per workload, in two panels
/// side by side: left, hakmem's throughput ÷ each peer's (log scale around 1×; bars to the right
/// of the line are workloads where hakmem is faster); right, each allocator's peak RSS (MiB, log
/// scale). Drawn with plotters' SVG backend.
pub(crate) fn svg(r: &Report) -> Result<String, String> {
    let peers = r.peers();
    let k = r.allocators.len() + 1;
    let slots = (r.rows.len() * k).max(1);
    // Empty slots below the last workload where the legends go, so they never cover a bar.
    let legend = (r.allocators.len() as u32 * LEGEND_ENTRY_PX + 20).div_ceil(SLOT_PX) as usize;
    let bottom = -0.5 - legend as f64;
    let h = 110 + SLOT_PX * (slots + legend) as u32;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (CHART_W, h)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<_>| format!("drawing the chart: {e}");
        root.fill(&WHITE).map_err(e)?;
        let title = format!(
            "hakmem vs {} · {} · {} mode, {} {} · {} CPUs · Linux {}",
            peers.iter().map(|&p| r.allocators[p].as_str()).collect::<Vec<_>>().join(", "),
            r.machine.date,
            r.mode.name(),
            r.runs,
            run_word(r.runs),
            r.machine.nproc,
            r.machine.kernel
        );
        let root = root.titled(&title, ("sans-serif", 15)).map_err(e)?;
        let (left, right) = root.split_horizontally(CHART_W * 56 / 100);

        // Left: hakmem ÷ peer.
        let ratios: Vec<f64> = r
            .rows
            .iter()
            .flat_map(|row| peers.iter().filter_map(|&p| row.ratio(&r.allocators, p)))
            .filter(|x| *x > 0.0 && x.is_finite())
            .collect();
        let (lo, hi) = decades(&ratios, 0.1, 10.0);
        let y_of = |row: usize, slot: usize| (slots - 1 - (row * k + slot)) as f64;
        let names = |v: &f64| {
            let i = v.round();
            if !(0.0..slots as f64).contains(&i) {
                return String::new();
            }
            let s = slots - 1 - i as usize;
            // Name the row at its middle bar (bars take slots 0..k-1, the last slot is the gap).
            if s % k == (k - 2) / 2 {
                r.rows.get(s / k).map_or(String::new(), |row| row.workload.clone())
            } else {
                String::new()
            }
        };
        let mut chart = ChartBuilder::on(&left)
            .caption("throughput: hakmem ÷ peer (median ops/s)", ("sans-serif", 13))
            .margin(8)
            .margin_right(28)
            .x_label_area_size(30)
            .y_label_area_size(150)
            .build_cartesian_2d((lo..hi).log_scale(), bottom..slots as f64 - 0.5)
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(slots + legend)
            .y_label_formatter(&names)
            .x_label_formatter(&|x| format!("{}×", short(*x)))
            .x_desc("log scale; right of 1× = hakmem faster")
            .draw()
            .map_err(e)?;
        for (pi, &p) in peers.iter().enumerate() {
            let colour = COLOURS[p % COLOURS.len()];
            let bars: Vec<_> = r
                .rows
                .iter()
                .enumerate()
                .filter_map(|(i, row)| {
                    let v = row.ratio(&r.allocators, p)?.clamp(lo, hi);
                    let y = y_of(i, pi);
                    Some(Rectangle::new([(1.0, y - 0.45), (v, y + 0.45)], colour.filled()))
                })
                .collect();
            chart.draw_series(bars).map_err(e)?.label(format!("÷ {}", r.allocators[p])).legend(
                move |(x, y)| Rectangle::new([(x, y - 4), (x + 12, y + 4)], colour.filled()),
            );
            let labels: Vec<_> = r
                .rows
                .iter()
                .enumerate()
                .map(|(i, row)| {
                    let y = y_of(i, pi);
                    let text = row.ratio(&r.allocators, p).map_or_else(
                        || format!("n/a vs {}", r.allocators[p]),
                        |v| format!("{}×", sig3(v)),
                    );
                    let x = row.ratio(&r.allocators, p).map_or(1.0, |v| v.clamp(lo, hi).max(1.0));
                    Text::new(text, (x, y + 0.5), ("sans-serif", 8).into_font())
                })
                .collect();
            chart.draw_series(labels).map_err(e)?;
        }
        chart
            .draw_series([PathElement::new(vec![(1.0, -0.5), (1.0, slots as f64 - 0.5)], BLACK)])
            .map_err(e)?;
        if peers.is_empty() {
            chart
                .draw_series([Text::new(
                    "no hakmem results to compare",
                    (1.0, slots as f64 / 2.0),
                    ("sans-serif", 12).into_font(),
                )])
                .map_err(e)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;

        // Right: peak RSS per allocator.
        let rss: Vec<f64> = r
            .rows
            .iter()
            .flat_map(|row| row.cells.iter().filter_map(|c| c.median_rss_kib()))
            .map(|kib| kib as f64 / 1024.0)
            .filter(|x| *x > 0.0)
            .collect();
        let (rlo, rhi) = decades(&rss, 1.0, 10.0);
        let mut chart = ChartBuilder::on(&right)
            .caption("peak RSS of the process (MiB, median)", ("sans-serif", 13))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(10)
            .build_cartesian_2d((rlo..rhi).log_scale(), bottom..slots as f64 - 0.5)
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_label_formatter(&|x| short(*x))
            .x_desc("MiB, log scale; shorter = leaner")
            .draw()
            .map_err(e)?;
        for (ai, alloc) in r.allocators.iter().enumerate() {
            let colour = COLOURS[ai % COLOURS.len()];
            let bars: Vec<_> = r
                .rows
                .iter()
                .enumerate()
                .filter_map(|(i, row)| {
                    let mib = row.cells.get(ai)?.median_rss_kib()? as f64 / 1024.0;
                    let y = y_of(i, ai);
                    Some(Rectangle::new(
                        [(rlo, y - 0.45), (mib.clamp(rlo, rhi), y + 0.45)],
                        colour.filled(),
                    ))
                })
                .collect();
            chart.draw_series(bars).map_err(e)?.label(alloc.as_str()).legend(move |(x, y)| {
                Rectangle::new([(x, y - 4), (x + 12, y + 4)], colour.filled())
            });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(out)
}

/// An axis label: [`sig3`] without trailing zeros (`0.01`, `1`, `250`).
fn short(x: f64) -> String {
    let s = sig3(x);
    if s.contains('.') && !s.contains('e') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// An axis range of whole decades covering `xs`, at least `min_lo..min_hi`, at most four
/// decades either side of 1.
fn decades(xs: &[f64], min_lo: f64, min_hi: f64) -> (f64, f64) {
    let lo = xs.iter().fold(min_lo.log10(), |a, x| a.min(x.log10().floor())).max(-4.0);
    let hi = xs.iter().fold(min_hi.log10(), |a, x| a.max(x.log10().ceil())).min(4.0);
    (10f64.powf(lo), 10f64.powf(hi))
}

#[cfg(test)]
pub(crate) mod tests {
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

    /// A report of two rows and three allocators, with a failed cell.
    pub(crate) fn sample() -> Report {
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
    fn markdown_with_names_how_its_rows_were_run() {
        let md = markdown_with(&sample(), "Each row runs X:");
        assert!(md.contains("## Commands\n\nEach row runs X:\n"), "{md}");
        assert!(!md.contains("hak-bench-ALLOC"), "{md}");
        assert!(markdown(&sample()).contains("`target/bench/bin/hak-bench-ALLOC ARGS`"));
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
        // Without hakmem: no ratio columns, no syscall columns.
        let mut no_h = sample();
        no_h.allocators[0] = "jemalloc".into();
        let md = markdown(&no_h);
        assert!(md.contains("| workload | jemalloc | system | mimalloc |\n| --- | ---: | ---: | ---: |\n| random_mixed/400 | 20.0 | 10.0 | 40.0 |\n"), "{md}");
        assert!(md.contains("| random_mixed/400 | 3.00 | 1.00 | 1.00 |\n"), "{md}");
    }

    #[test]
    fn json_has_the_documented_shape() {
        let j = json(&sample());
        let v: serde_json::Value = serde_json::from_str(&j).expect("report.json parses");
        assert_eq!(v["mode"], "quick");
        assert_eq!(v["runs"], 3);
        assert_eq!(v["machine"]["cpu"], "Test CPU");
        assert_eq!(v["allocators"], serde_json::json!(["hakmem", "system", "mimalloc"]));
        let w = &v["workloads"];
        assert_eq!(w[1]["command"], "big 250 8 \"3\"");
        assert_eq!(w[0]["hakmem_ratio"], serde_json::json!({"system": 2.0, "mimalloc": 0.5}));
        assert_eq!(w[1]["hakmem_ratio"]["system"], serde_json::Value::Null);
        let h = &w[0]["results"]["hakmem"];
        assert_eq!(h["ok"], true);
        assert_eq!(h["ops_per_sec_median"], 20e6);
        assert_eq!(h["ops_per_sec_runs"], serde_json::json!([30e6, 10e6, 20e6]));
        assert_eq!(h["peak_rss_kib_median"], 3072);
        assert_eq!(h["checksum"], 42);
        assert_eq!(
            h["syscalls_median"],
            serde_json::json!({"mmap": 10, "munmap": 2, "madvise": 3})
        );
        let sys = &w[1]["results"]["system"];
        assert_eq!(sys["ok"], false);
        assert_eq!(sys["ops_per_sec_median"], serde_json::Value::Null);
        assert_eq!(sys["errors"], serde_json::json!(["exited with code 1"]));
        assert_eq!(w[0]["results"]["system"]["syscalls_median"], serde_json::Value::Null);
        // Allocators keep report order, which a sorted map would lose.
        let order: Vec<_> = w[0]["results"].as_object().unwrap().keys().cloned().collect();
        assert!(j.find("\"hakmem\": {").unwrap() < j.find("\"system\": {").unwrap(), "{order:?}");
        // JSON has no NaN: a non-finite run is null.
        let mut nan = sample();
        nan.rows[0].cells[1].ops_per_sec.push(f64::NAN);
        let v: serde_json::Value = serde_json::from_str(&json(&nan)).unwrap();
        assert_eq!(
            v["workloads"][0]["results"]["system"]["ops_per_sec_runs"][3],
            serde_json::Value::Null
        );
    }

    #[test]
    fn svg_draws_grouped_bars_for_ratios_and_rss() {
        // plotters puts a text element's content on lines of its own.
        let flat = |o: String| o.replace('\n', "");
        let out = flat(svg(&sample()).unwrap());
        assert!(out.starts_with("<svg"), "{out}");
        assert!(out.trim_end().ends_with("</svg>"));
        // Three ratios exist (2, 0.5, 0.5) and one is missing; the missing one is named.
        assert!(out.contains(">2.00×<"), "{out}");
        assert_eq!(out.matches(">0.500×<").count(), 2, "{out}");
        assert!(out.contains("n/a vs system"));
        // Workload names on the left axis, legends for both panels.
        assert!(out.contains(">random_mixed/400<") && out.contains(">big<"), "{out}");
        assert!(out.contains("÷ mimalloc") && out.contains(">hakmem<"), "{out}");
        let bars = |o: &str| o.matches("<rect").count();
        let mut fewer = sample();
        fewer.rows[0].cells[2].rss_kib.clear();
        assert_eq!(bars(&flat(svg(&fewer).unwrap())), bars(&out) - 1, "one RSS bar fewer");
        let mut none = sample();
        none.allocators[0] = "jemalloc".into();
        assert!(svg(&none).unwrap().contains("no hakmem results"));
    }

    #[test]
    fn axis_labels_are_short() {
        assert_eq!(short(0.01), "0.01");
        assert_eq!(short(1.0), "1");
        assert_eq!(short(10.0), "10");
        assert_eq!(short(1000.0), "1000");
        assert_eq!(short(0.125), "0.125");
    }

    #[test]
    fn decade_ranges() {
        assert_eq!(decades(&[], 0.1, 10.0), (0.1, 10.0));
        assert_eq!(decades(&[0.004, 2.0], 0.1, 10.0), (0.001, 10.0));
        assert_eq!(decades(&[3.0, 250.0], 1.0, 10.0), (1.0, 1000.0));
    }
}
