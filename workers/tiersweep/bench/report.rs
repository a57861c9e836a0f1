//! What a bench run reports: the JSON document and the table printed on stdout.

use std::fmt::Write as _;

use serde::Serialize;
use tiersweep::bench::ceiling::CeilingReport;
use tiersweep::bench::lag::LagRun;
use tiersweep::bench::{Run, WriteLatency};
use tiersweep::testing::meter::Latency;

use super::rss::RssRun;

#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: String,
    pub command: String,
    pub latency: Latency,
    pub settings: Vec<Setting>,
    pub write_latency: Vec<WriteLatency>,
    /// The emulators' raw RPC rates, one at a time and concurrently.
    pub ceiling: Vec<CeilingReport>,
    /// Peak RSS of a scanner and a cleaner process over a large backlog.
    pub memory: Vec<RssRun>,
}

#[derive(Debug, Serialize)]
pub struct Setting {
    pub name: String,
    pub baseline: Run,
    pub pipeline: Vec<Run>,
    pub lost_claims: Vec<Run>,
    pub best_ratio: f64,
    pub lag: Option<LagRun>,
}

pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(String::new(), |kb| format!(", {} GiB", kb / 1024 / 1024));
    format!("{cpus} CPUs ({model}){mem}")
}

pub fn table(r: &Report) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "machine: {}", r.machine);
    for s in &r.settings {
        let _ = writeln!(t, "\n== {} ==", s.name);
        let _ = writeln!(
            t,
            "{:<18} {:>9} {:>8} {:>10} {:>9} {:>8} {:>8}",
            "mode", "in flight", "changes", "changes/s", "vs seq", "RPC/chg", "lost"
        );
        for run in std::iter::once(&s.baseline)
            .chain(&s.pipeline)
            .chain(&s.lost_claims)
        {
            let _ = writeln!(
                t,
                "{:<18} {:>9} {:>8} {:>10.0} {:>8.1}x {:>8.2} {:>8}",
                format!("{} ({}s)", run.mode, run.scanners),
                run.in_flight,
                run.changes,
                run.changes_per_s,
                run.changes_per_s / s.baseline.changes_per_s.max(1e-9),
                run.rpcs_per_change,
                run.claims_lost
            );
            if run.timed_out {
                let _ = writeln!(
                    t,
                    "  ^ TIMED OUT: only {} changes converged before the deadline",
                    run.changes
                );
            }
        }
        if let Some(l) = &s.lag {
            let _ = writeln!(
                t,
                "recovery lag under steady load ({} writers, {} crashes/s, idle poll {} ms): \
                 p50 {} ms, p99 {} ms, max {} ms; {} of {} crashed changes converged, {} healthy writes",
                l.writers,
                l.crashes_per_s,
                l.idle_poll_ms,
                l.p50_ms,
                l.p99_ms,
                l.max_ms,
                l.converged,
                l.crashed,
                l.healthy_writes
            );
        }
    }
    for c in &r.ceiling {
        let conc = c.rates.first().map_or(0, |r| r.concurrency);
        let _ = writeln!(t, "\n== emulators' raw rates, {conc} in flight ==");
        for rate in &c.rates {
            let _ = writeln!(
                t,
                "{:<9} {:<24} {:>8.0}/s",
                rate.service, rate.rpc, rate.per_s
            );
        }
        for s in &c.per_service {
            let _ = writeln!(
                t,
                "ceiling from {:<9} {:>8.0} changes/s",
                s.service, s.changes_per_s
            );
        }
        let _ = writeln!(
            t,
            "ceiling {:.0} changes/s (all services on the same cores: {:.0})",
            c.ceiling, c.shared_cpu_ceiling
        );
    }
    for m in &r.memory {
        let _ = writeln!(
            t,
            "\n== memory: {} over {} items ({:.0} s) ==\nidle {:.1} MiB, peak (VmHWM) {:.1} MiB; RSS as it went: {}",
            m.worker,
            m.items,
            m.seconds,
            m.idle_mib,
            m.peak_mib,
            m.samples
                .iter()
                .map(|(done, mib)| format!("{done}: {mib:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !r.write_latency.is_empty() {
        let _ = writeln!(t, "\n== write latency (emulators) ==");
        for w in &r.write_latency {
            let _ = writeln!(
                t,
                "{:<32} {:<20} p50 {:>7} us  p99 {:>7} us  ({} samples)",
                w.changelog, w.op, w.p50_us, w.p99_us, w.samples
            );
        }
    }
    t
}
