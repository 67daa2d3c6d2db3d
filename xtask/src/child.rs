//! Running one benchmark process: spawn it with `std::process`, collect stdout and stderr on
//! reader threads, reap it with `wait4` so its own peak RSS (`ru_maxrss`) comes back with its
//! status, and kill it if it runs past a timeout. Also parses `hak-bench`'s output lines.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a finished child went.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    /// `Ok(())` for exit code 0, else a description (exit code, signal, or timeout).
    pub(crate) status: Result<(), String>,
    /// Everything the child wrote to stdout.
    pub(crate) stdout: String,
    /// Everything the child wrote to stderr.
    pub(crate) stderr: String,
    /// The child's peak resident set size in KiB (`ru_maxrss` from `wait4`).
    pub(crate) max_rss_kib: u64,
}

/// Runs `bin args...` with `env` added to its environment (`LD_PRELOAD` for the C rows) to
/// completion (or until `timeout`, then SIGKILL).
pub(crate) fn run(
    bin: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> std::io::Result<Finished> {
    let mut child = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id() as libc::pid_t;
    let out = read_all(child.stdout.take());
    let err = read_all(child.stderr.take());
    let start = Instant::now();
    let mut killed = false;
    let mut nap = Duration::from_millis(1);
    let (wstatus, rusage) = loop {
        let flags = if killed { 0 } else { libc::WNOHANG };
        let mut wstatus: libc::c_int = 0;
        // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our child, not yet reaped (std never waits on it because we never
        // call `Child::wait`); both out-pointers are valid for writes.
        let r = unsafe { libc::wait4(pid, &mut wstatus, flags, &mut ru) };
        if r == pid {
            break (wstatus, ru);
        }
        if r == -1 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
            continue;
        }
        if start.elapsed() > timeout {
            // Still unreaped, so `pid` cannot have been reused: killing it is safe.
            child.kill()?;
            killed = true;
            continue;
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    };
    let status = if killed {
        Err(format!("timed out after {} s and was killed", timeout.as_secs()))
    } else {
        describe(wstatus)
    };
    Ok(Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        max_rss_kib: u64::try_from(rusage.ru_maxrss).unwrap_or(0),
    })
}

/// Reads a pipe to its end on a thread.
fn read_all<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// `Ok` for exit code 0, else what ended the process.
fn describe(wstatus: libc::c_int) -> Result<(), String> {
    if libc::WIFEXITED(wstatus) {
        match libc::WEXITSTATUS(wstatus) {
            0 => Ok(()),
            c => Err(format!("exited with code {c}")),
        }
    } else if libc::WIFSIGNALED(wstatus) {
        Err(format!("killed by signal {}", libc::WTERMSIG(wstatus)))
    } else {
        Err(format!("ended with wait status {wstatus:#x}"))
    }
}

/// hakmem's OS syscall counts from a `HAKMEM_SYSCALLS` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub(crate) struct Syscalls {
    /// `mmap` calls.
    pub(crate) mmap: u64,
    /// `munmap` calls.
    pub(crate) munmap: u64,
    /// `madvise` calls.
    pub(crate) madvise: u64,
}

/// What one `hak-bench` run printed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Parsed {
    /// `workload=` (the row name).
    pub(crate) workload: String,
    /// `alloc=` (the allocator the binary was built with).
    pub(crate) alloc: String,
    /// `ops=`.
    pub(crate) ops: u64,
    /// `secs=`.
    pub(crate) secs: f64,
    /// `ops_per_sec=`.
    pub(crate) ops_per_sec: f64,
    /// `checksum=`.
    pub(crate) checksum: u64,
    /// The `HAKMEM_SYSCALLS` line, if there was one.
    pub(crate) syscalls: Option<Syscalls>,
}

/// Finds and parses the `RESULT` line (required) and the `HAKMEM_SYSCALLS` line (optional) in
/// `stdout`. Unknown keys are ignored so the binary can add fields.
pub(crate) fn parse_output(stdout: &str) -> Result<Parsed, String> {
    let mut result = None;
    let mut syscalls = None;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("RESULT ") {
            result = Some(rest);
        } else if let Some(rest) = line.strip_prefix("HAKMEM_SYSCALLS ") {
            let f = |k: &str| field(rest, k).and_then(|v| num::<u64>(k, v));
            syscalls =
                Some(Syscalls { mmap: f("mmap")?, munmap: f("munmap")?, madvise: f("madvise")? });
        }
    }
    let r = result.ok_or("no RESULT line on stdout")?;
    Ok(Parsed {
        workload: field(r, "workload")?.to_string(),
        alloc: field(r, "alloc")?.to_string(),
        ops: num("ops", field(r, "ops")?)?,
        secs: num("secs", field(r, "secs")?)?,
        ops_per_sec: num("ops_per_sec", field(r, "ops_per_sec")?)?,
        checksum: num("checksum", field(r, "checksum")?)?,
        syscalls,
    })
}

/// The value of `key=value` among space-separated fields.
fn field<'a>(line: &'a str, key: &str) -> Result<&'a str, String> {
    line.split_ascii_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .ok_or_else(|| format!("missing `{key}=` in `{line}`"))
}

fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("`{key}={v}` is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_result_and_syscall_lines() {
        let out = "noise\nRESULT workload=random_mixed/400 alloc=hakmem ops=20 secs=0.5 \
                   ops_per_sec=40.0 checksum=7 extra=1\nHAKMEM_SYSCALLS mmap=3 munmap=2 \
                   madvise=1 mremap=0\n";
        let p = parse_output(out).unwrap();
        assert_eq!(p.workload, "random_mixed/400");
        assert_eq!(p.alloc, "hakmem");
        assert_eq!((p.ops, p.checksum), (20, 7));
        assert_eq!((p.secs, p.ops_per_sec), (0.5, 40.0));
        assert_eq!(p.syscalls, Some(Syscalls { mmap: 3, munmap: 2, madvise: 1 }));
    }

    #[test]
    fn result_without_syscalls_and_bad_lines() {
        let p =
            parse_output("RESULT workload=x alloc=system ops=1 secs=1 ops_per_sec=1 checksum=1")
                .unwrap();
        assert_eq!(p.syscalls, None);
        assert!(parse_output("").is_err());
        assert!(parse_output("RESULT workload=x alloc=s ops=1 secs=1 checksum=1").is_err());
        assert!(parse_output("RESULT workload=x alloc=s ops=z secs=1 ops_per_sec=1 checksum=1")
            .is_err());
        // `ops=` must not match inside `ops_per_sec=`.
        assert!(parse_output("RESULT workload=x alloc=s ops_per_sec=1 secs=1 checksum=1").is_err());
    }

    #[test]
    fn measures_a_child_and_reports_failures() {
        let sh = Path::new("/bin/sh");
        let t = Duration::from_secs(10);
        let ok = run(sh, &["-c", "echo hi $X; echo err >&2"], &[("X", "there")], t).unwrap();
        assert_eq!(ok.status, Ok(()));
        assert_eq!((ok.stdout.as_str(), ok.stderr.as_str()), ("hi there\n", "err\n"));
        assert!(ok.max_rss_kib > 0);
        let failed = run(sh, &["-c", "exit 3"], &[], t).unwrap();
        assert_eq!(failed.status, Err("exited with code 3".into()));
        let slow = run(sh, &["-c", "exec sleep 5"], &[], Duration::from_millis(100)).unwrap();
        assert!(slow.status.unwrap_err().contains("timed out"));
    }
}
