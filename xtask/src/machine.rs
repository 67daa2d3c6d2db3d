//! Facts about the host for the report header: UTC date and time, CPU count and model, kernel,
//! memory, toolchain and git revision. Every fact is best effort: a missing one reads "unknown".

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// What the report header says about where and when it ran.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Machine {
    /// UTC time the run started, `YYYY-MM-DD HH:MM:SS UTC`.
    pub(crate) date: String,
    /// CPUs this process may use.
    pub(crate) nproc: usize,
    /// `/proc/sys/kernel/osrelease`.
    pub(crate) kernel: String,
    /// First `model name` in `/proc/cpuinfo`.
    pub(crate) cpu: String,
    /// `MemTotal` from `/proc/meminfo`, in MiB.
    pub(crate) mem_mib: u64,
    /// `cargo -V` of the cargo that builds the binaries.
    pub(crate) toolchain: String,
    /// `git describe --always --dirty` of the workspace.
    pub(crate) git: String,
}

impl Machine {
    /// Looks everything up now.
    pub(crate) fn probe() -> Self {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Machine {
            date: utc_string(secs),
            nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            kernel: nonempty(read("/proc/sys/kernel/osrelease").trim().to_string()),
            cpu: nonempty(
                read("/proc/cpuinfo")
                    .lines()
                    .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start()))
                    .and_then(|v| v.strip_prefix(':'))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_default(),
            ),
            mem_mib: read("/proc/meminfo")
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kib| kib / 1024),
            toolchain: nonempty(output(Command::new(crate::cargo()).arg("-V"))),
            git: nonempty(output(
                Command::new("git")
                    .args(["describe", "--always", "--dirty"])
                    .current_dir(crate::workspace_root()),
            )),
        }
    }
}

fn nonempty(s: String) -> String {
    if s.is_empty() {
        "unknown".into()
    } else {
        s
    }
}

/// A command's trimmed stdout, or empty if it failed.
fn output(cmd: &mut Command) -> String {
    match cmd.output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => String::new(),
    }
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian calendar;
/// Howard Hinnant's `civil_from_days`).
pub(crate) fn utc_string(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_are_right() {
        assert_eq!(utc_string(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_string(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_string(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc_string(4_102_444_799), "2099-12-31 23:59:59 UTC");
    }

    #[test]
    fn probe_finds_the_cpu_count() {
        assert!(Machine::probe().nproc >= 1);
    }
}
