//! What a process costs, read from `/proc` (Linux; elsewhere every reading is `None`): the
//! standard Prometheus process metrics on `/metrics`, and the per-process CPU the
//! benchmarks attribute to each emulator.

use std::time::Duration;

/// Linux reports `/proc` times in USER_HZ, which is 100 on every architecture tiersweep
/// builds for (the kernel fixes it for user space whatever its internal tick).
const TICKS_PER_S: f64 = 100.0;

/// The fields of `/proc/<pid>/stat` after the parenthesised command name (which may hold
/// spaces and parentheses), so that field `n` of proc(5) is index `n - 3`.
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(stat: &str) -> Option<Vec<String>> {
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn field(fields: &[String], n: usize) -> Option<u64> {
    fields.get(n.checked_sub(3)?)?.parse().ok()
}

/// User + system CPU time of `pid` (`self` for this process) since it started.
pub fn cpu_time(pid: &str) -> Option<Duration> {
    let f = stat_fields(pid)?;
    let ticks = field(&f, 14)? + field(&f, 15)?;
    Some(Duration::from_secs_f64(ticks as f64 / TICKS_PER_S))
}

/// The start time of `pid` in clock ticks since boot (proc(5) field 22): with the pid,
/// what tells one process from a later one given the same pid.
pub fn start_ticks(pid: &str) -> Option<u64> {
    field(&stat_fields(pid)?, 22)
}

/// This process's resident set, from `VmRSS` in `/proc/self/status`.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// File descriptors this process holds open.
pub fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

/// When this process started, in seconds since the Unix epoch: boot time (`btime` in
/// `/proc/stat`) plus the start tick.
pub fn start_time_unix() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(btime as f64 + start_ticks("self")? as f64 / TICKS_PER_S)
}

/// The process metrics in the Prometheus text format, with the standard client names
/// (`process_cpu_seconds_total`, …); a metric that cannot be read here is left out.
pub fn render_prometheus(out: &mut String) {
    use std::fmt::Write as _;
    let metrics = [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            cpu_time("self").map(|d| d.as_secs_f64()),
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            resident_bytes().map(|b| b as f64),
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            open_fds().map(|n| n as f64),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            start_time_unix(),
        ),
    ];
    for (name, kind, help, value) in metrics {
        if let Some(v) = value {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn now_unix() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_reads_as_running_now_with_memory_and_files() {
        let started = start_time_unix().expect("/proc/stat and /proc/self/stat");
        // Started in the past, and not before the test binary could have been built.
        assert!(started <= now_unix() + 1.0, "{started}");
        assert!(started > now_unix() - 86_400.0, "{started}");
        assert!(resident_bytes().expect("VmRSS") > 1024 * 1024);
        assert!(open_fds().expect("/proc/self/fd") >= 3);
        assert!(cpu_time("self").is_some());
        assert_eq!(cpu_time("4294967295"), None, "no such process");
        let mut out = String::new();
        render_prometheus(&mut out);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(out.contains(&format!("# TYPE {name} ")), "{out}");
        }
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let line = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 777 0 0";
        let f = parse_stat(line).unwrap();
        assert_eq!(field(&f, 14), Some(250));
        assert_eq!(field(&f, 15), Some(50));
        assert_eq!(field(&f, 22), Some(777));
    }
}
