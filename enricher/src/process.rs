//! The process's own series, under the names every Prometheus client
//! library exports (`process_cpu_seconds_total`, ...), so the dashboards
//! and alerts written for them work unchanged. Read from `/proc/self` on
//! the exporter's tick; on a system without `/proc` nothing is exported.

use std::sync::OnceLock;

use crate::metrics as m;

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`), fixed at 100
/// by the Linux ABI whatever the kernel's own tick.
const USER_HZ: f64 = 100.0;

/// What `/proc/self` says of this process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub resident_bytes: f64,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: f64,
    /// Threads.
    pub threads: f64,
    /// Open file descriptors.
    pub open_fds: f64,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<f64>,
}

/// Reads the current sample; `None` without `/proc`.
pub fn sample() -> Option<Sample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    // The command name (field 2) may hold spaces and parentheses: the
    // fields that follow start after its last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14, stime 15.
    let ticks = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);
    Some(Sample {
        cpu_seconds: (ticks(14)? + ticks(15)?) / USER_HZ,
        resident_bytes: kib("VmRSS:").unwrap_or(0.0) * 1024.0,
        virtual_bytes: kib("VmSize:").unwrap_or(0.0) * 1024.0,
        threads: kib("Threads:").unwrap_or(0.0),
        open_fds: open_fds as f64,
        max_fds: max_fds(),
    })
}

/// The soft `Max open files` limit from `/proc/self/limits`.
fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// When this process started, as a Unix timestamp: the boot time from
/// `/proc/stat` plus the start tick from `/proc/self/stat`. Read once.
fn start_time() -> Option<f64> {
    static START: OnceLock<Option<f64>> = OnceLock::new();
    *START.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let after = &stat[stat.rfind(')')? + 1..];
        let start_ticks: f64 = after.split_whitespace().nth(22 - 3)?.parse().ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let btime: f64 = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        Some(btime + start_ticks / USER_HZ)
    })
}

/// Copies the current sample into the exporter.
pub fn publish() {
    let Some(s) = sample() else {
        return;
    };
    // The `metrics` facade's counters are integers: the CPU time goes out
    // as a float gauge under the counter's conventional name, as the
    // `metrics-process` crate does it; `rate()` reads it the same.
    metrics::gauge!(m::PROCESS_CPU).set(s.cpu_seconds);
    metrics::gauge!(m::PROCESS_RESIDENT).set(s.resident_bytes);
    metrics::gauge!(m::PROCESS_VIRTUAL).set(s.virtual_bytes);
    metrics::gauge!(m::PROCESS_THREADS).set(s.threads);
    metrics::gauge!(m::PROCESS_OPEN_FDS).set(s.open_fds);
    if let Some(max) = s.max_fds {
        metrics::gauge!(m::PROCESS_MAX_FDS).set(max);
    }
    if let Some(start) = start_time() {
        metrics::gauge!(m::PROCESS_START).set(start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_as_alive_with_memory_threads_and_files() {
        let Some(s) = sample() else {
            return; // no /proc here
        };
        assert!(s.resident_bytes > 1024.0 * 1024.0, "{s:?}");
        assert!(s.virtual_bytes >= s.resident_bytes, "{s:?}");
        assert!(s.threads >= 1.0 && s.open_fds >= 3.0, "{s:?}");
        assert!(s.max_fds.is_some_and(|m| m >= s.open_fds), "{s:?}");
        let start = start_time().expect("a start time");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );
    }
}
