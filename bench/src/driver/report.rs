//! What a bench run reports: the JSON document and the table printed on stdout.

use std::fmt::Write as _;

use crate::ceiling::CeilingReport;
use crate::lag::LagRun;
use crate::meter::Latency;
use crate::{Run, WriteLatency};
use serde::Serialize;

use super::rss::RssRun;

#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: String,
    /// The commit the bench was built from (`git describe`, `-dirty` with uncommitted
    /// changes): what a figure quoted from this file names.
    pub commit: String,
    pub command: String,
    pub latency: Latency,
    pub settings: Vec<Setting>,
    pub write_latency: Vec<WriteLatency>,
    /// How the emulated LT's upload time splits around its last byte.
    pub upload_split: Option<crate::upload_split::UploadSplit>,
    /// The emulators' raw RPC rates, one at a time and concurrently.
    pub ceiling: Vec<CeilingReport>,
    /// Peak RSS of a scanner and a cleaner process over a large backlog.
    pub memory: Vec<RssRun>,
    /// CPU per recovered change of a scanner and a cleaner process as deployed.
    pub worker_cpu: Vec<super::worker_cpu::WorkerCpuRun>,
    /// Worker CPU at fixed rates of crashes.
    #[serde(default)]
    pub offered_load: Vec<super::worker_cpu::OfferedLoadRun>,
    /// The leased scanner pool growing, losing a member and shrinking during a drain.
    pub elastic: Option<crate::elastic::ElasticReport>,
    /// Rows scans examine per stale row found, on a changelog full of removed rows.
    pub scan_cost: Option<ScanCostReport>,
    /// An outage's backlog drained against the capacity-limited model.
    pub drain: Option<crate::drain::DrainReport>,
    /// The pipeline, the seed's loop, a listing GC and lifecycle rules on the same orphans.
    pub peers: Option<crate::peers::PeersReport>,
    /// Billed units per million recovered changes and per million large writes.
    pub cost: Vec<crate::cost::CostPerMillion>,
}

#[derive(Debug, Serialize)]
pub struct ScanCostReport {
    pub removed_rows: usize,
    pub stale_rows: usize,
    pub key_bounded: ScanCostRun,
    pub full_range: ScanCostRun,
}

#[derive(Debug, Serialize)]
pub struct ScanCostRun {
    pub found: usize,
    pub examined: u64,
    pub examined_per_found: f64,
    /// The scanner's first round, a sweep of everything (not in the ratio).
    pub first_round: u64,
}

impl From<tiersweep_testkit::scans::ScanCost> for ScanCostRun {
    fn from(c: tiersweep_testkit::scans::ScanCost) -> Self {
        Self {
            found: c.found,
            examined: c.examined,
            examined_per_found: c.per_found(),
            first_round: c.first_round,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Setting {
    pub name: String,
    pub baseline: Run,
    pub pipeline: Vec<Run>,
    pub lost_claims: Vec<Run>,
    pub best_ratio: f64,
    pub lag: Option<LagRun>,
    /// The seed's loop, embedded passes and the pipeline at equal concurrency.
    pub shapes: Vec<crate::shapes::ShapeRun>,
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

/// The working tree's commit, as `git describe --always --dirty --abbrev=7` prints it; the
/// bench runs from a checkout, so a figure can name the code that produced it.
pub fn commit() -> String {
    std::process::Command::new("git")
        .args([
            "describe",
            "--always",
            "--dirty",
            "--abbrev=7",
            "--exclude=*",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown".to_owned(), |s| s.trim().to_owned())
}

pub fn table(r: &Report) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "machine: {}", r.machine);
    let _ = writeln!(t, "commit: {}", r.commit);
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
            let cpu = rate
                .cpu_s_per_call()
                .map_or(String::new(), |s| format!("  {:>6.0} CPU-us/call", s * 1e6));
            let _ = writeln!(
                t,
                "{:<9} {:<24} {:>8.0}/s{cpu}",
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
            "ceiling {:.0} changes/s (the slowest service)",
            c.ceiling
        );
        match c.cpu_ceiling {
            Some(cpu) => {
                let _ = writeln!(
                    t,
                    "CPU bound {cpu:.0} changes/s ({} cores running every service and the client)",
                    c.cores
                );
            }
            None => {
                let _ = writeln!(
                    t,
                    "CPU bound: not measured (the emulators' processes were not started by infra/local/start.sh)"
                );
            }
        }
        let best = r
            .settings
            .iter()
            .filter(|s| s.name == "emulators")
            .flat_map(|s| &s.pipeline)
            .filter(|p| !p.timed_out)
            .max_by(|a, b| a.changes_per_s.total_cmp(&b.changes_per_s));
        // Against the concurrent ceiling only: the pipeline has many calls in flight.
        if let Some(p) = best.filter(|_| conc > 1) {
            let _ = writeln!(
                t,
                "pipeline at its best (M = {}): {:.0} changes/s = {:.2} of the ceiling",
                p.in_flight,
                p.changes_per_s,
                p.changes_per_s / c.ceiling.max(1e-9)
            );
            if let Some(cpu) = c.cpu_ceiling {
                let _ = writeln!(
                    t,
                    "                              = {:.2} of the CPU bound",
                    p.changes_per_s / cpu.max(1e-9)
                );
            }
            if let (Some(per), Some(used)) = (p.cpu_us_per_change(), &p.cpu) {
                let _ = writeln!(
                    t,
                    "pipeline CPU per change: {:.0} us ({}); {:.2} cores busy",
                    per.values().sum::<f64>(),
                    per.iter()
                        .map(|(n, us)| format!("{n} {us:.0}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    used.cores_busy()
                );
            }
            if let Some(least) = c.cpu_us_per_change() {
                let _ = writeln!(
                    t,
                    "tight client's CPU per change: {:.0} us ({})",
                    least.values().sum::<f64>(),
                    least
                        .iter()
                        .map(|(n, us)| format!("{n} {us:.0}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    }
    for m in &r.memory {
        let cpu = m
            .cpu_us_per_item()
            .map_or(String::new(), |us| format!("; CPU {us:.0} µs per item"));
        let _ = writeln!(
            t,
            "\n== memory: {} over {} items ({:.0} s) ==\nidle {:.1} MiB, peak (VmHWM) {:.1} MiB{cpu}; RSS as it went: {}",
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
    for w in &r.worker_cpu {
        let idle = match (w.idle_cores, w.idle_window_s, w.work_us_per_change()) {
            (Some(cores), Some(window), Some(work)) => format!(
                "; idle between the passes {:.3} cores (over {window:.0} s), so the work is {work:.0} µs per change",
                cores
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            t,
            "\n== worker CPU, {}: {} changes crashed {}, settle {:.0} s ==\n\
             first pass {:.1} s, all removed after {:.1} s; CPU: scan {:.2} s + clean {:.2} s = {:.0} µs per change{idle}; {} log lines, {} spans",
            w.variant,
            w.changes,
            w.shape,
            w.settle_s,
            w.first_pass_s,
            w.seconds,
            w.scan_cpu_s,
            w.clean_cpu_s,
            w.us_per_change(),
            w.log_lines,
            w.spans,
        );
        let top: Vec<String> = w
            .spans_per_change
            .iter()
            .take(8)
            .map(|(name, per)| format!("{name} {per:.2}"))
            .collect();
        let _ = writeln!(t, "spans per change, most first: {}", top.join(", "));
        let counters: Vec<String> = w
            .counters_per_change
            .iter()
            .map(|(name, per)| format!("{name} {per:.2}"))
            .collect();
        let _ = writeln!(t, "counters per change: {}", counters.join(", "));
    }
    for o in &r.offered_load {
        let _ = writeln!(
            t,
            "\n== worker CPU at {:.0} crashes/s offered ({:.0} recorded) ==\n\
             {} first passes in {:.0} s ({:.0}/s); CPU: scan {:.2} s + clean {:.2} s = {:.0} µs per pass, {:.3} cores",
            o.offered_per_s,
            o.crashed_per_s,
            o.passes,
            o.window_s,
            o.passes_per_s,
            o.scan_cpu_s,
            o.clean_cpu_s,
            o.us_per_pass(),
            o.cores(),
        );
    }
    if let Some(d) = &r.drain {
        let _ = writeln!(
            t,
            "\n== drain: {} changes against the capacity model ({} Bigtable nodes; {} writers, {}/s fresh crashes; virtual time) ==\n\
             blobs deleted after {:.0} s (rows removed after {:.0} s, settle {} s), bound {:.0} s (backlog / GCS mutation limit): {:.2} of the bound; \
             GCS utilisation {:.2}, Bigtable {:.2} of calls, {:.2} of rows; refused until the blobs were deleted: GCS {}, Bigtable {}; over the whole drain: GCS {}, Bigtable {} (by call: {})\n\
             Bigtable rows per backlog change, by call (whole drain, both passes): {}\n\
             claims won {}, re-claims {}, claimed twice at once {}\n\
             fresh crashes {} converged {}: lag p50 {} ms, p99 {} ms, max {} ms (threshold {} ms)\n\
             RSS (removed, MiB): {}",
            d.plan.backlog,
            d.plan.bigtable_nodes,
            d.plan.writers,
            d.plan.fresh_crashes_per_s,
            d.took_s,
            d.done_s,
            d.plan.upload_settle.as_secs(),
            d.bound_s,
            d.of_bound,
            d.gcs_utilisation,
            d.bigtable_utilisation,
            d.bigtable_row_utilisation,
            d.admissions.gcs_mutations_refused,
            d.admissions.bigtable_refused,
            d.admissions_whole.gcs_mutations_refused,
            d.admissions_whole.bigtable_refused,
            d.refused_by_op
                .iter()
                .map(|(op, n)| format!("{op} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            d.bigtable_rows_by_op
                .iter()
                .map(|(op, n)| format!("{op} {:.2}", *n as f64 / d.plan.backlog.max(1) as f64))
                .collect::<Vec<_>>()
                .join(", "),
            d.claims_won,
            d.reclaims,
            d.claimed_twice_at_once,
            d.fresh_crashed,
            d.fresh_converged,
            d.fresh_lag_p50_ms,
            d.fresh_lag_p99_ms,
            d.fresh_lag_max_ms,
            d.staleness_threshold_ms,
            d.rss_mib
                .iter()
                .map(|(n, m)| format!("{n}: {m:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(c) = &r.scan_cost {
        let _ = writeln!(
            t,
            "\n== scan cost: {} removed rows not compacted, {} stale rows found after the first round ==",
            c.removed_rows, c.stale_rows
        );
        for (name, run) in [
            ("key-bounded", &c.key_bounded),
            ("full-range", &c.full_range),
        ] {
            let _ = writeln!(
                t,
                "{name:<12} examined {:>9} for {:>6} found: {:.2} per found",
                run.examined, run.found, run.examined_per_found
            );
        }
    }
    if let Some(e) = &r.elastic {
        let _ = writeln!(
            t,
            "\n== elasticity: {} changes, lease period {:?} (virtual time) ==\n\
             pool 1 -> 4 -> (kill one) -> 1: claims won {}, claimed twice at once {}, re-claims {}, \
             left unconverged {}, instants two members could read one shard {}\n\
             grow to 4 {:.1} s; takeover of the killed member's shards {:.1} s ({:.2} lease periods); \
             shrink to 1 {:.1} s; drain {:.1} s",
            e.backlog,
            e.lease_period,
            e.claims_won,
            e.claimed_twice_at_once,
            e.reclaims,
            e.left,
            e.shared_shard_instants,
            e.grow.as_secs_f64(),
            e.takeover.as_secs_f64(),
            e.takeover.as_secs_f64() / e.lease_period.as_secs_f64(),
            e.shrink.as_secs_f64(),
            e.took.as_secs_f64()
        );
    }
    if !r.write_latency.is_empty() {
        let mut settings: Vec<&str> = r.write_latency.iter().map(|w| w.setting.as_str()).collect();
        settings.dedup();
        for setting in settings {
            let _ = writeln!(t, "\n== write latency ({setting}) ==");
            let of: Vec<&WriteLatency> = r
                .write_latency
                .iter()
                .filter(|w| w.setting == setting)
                .collect();
            for w in &of {
                // Against the no-op changelog's, for the same op under the same model.
                let noop = of
                    .iter()
                    .find(|n| n.changelog == "noop" && n.op == w.op && n.model == w.model);
                let _ = writeln!(
                    t,
                    "{:<28} {:<32} {:<18} p50 {:>7} us  p99 {:>7} us  ({} samples){}",
                    w.model,
                    w.changelog,
                    w.op,
                    w.p50_us,
                    w.p99_us,
                    w.samples,
                    noop.map(|n| format!(
                        "  {:.2}x / {:.2}x of no-op",
                        w.p50_us as f64 / n.p50_us.max(1) as f64,
                        w.p99_us as f64 / n.p99_us.max(1) as f64
                    ))
                    .unwrap_or_default()
                );
            }
        }
    }
    if let Some(u) = &r.upload_split {
        let _ = writeln!(
            t,
            "\n== LT upload time around its last byte (emulators, {} bytes, {} samples) ==\n\
             whole upload p50 {} us; from the release of a held last chunk to the answer p50 {} us ({:.0} %)",
            u.bytes,
            u.samples,
            u.whole_p50_us,
            u.after_last_byte_p50_us,
            100.0 * u.after_last_byte_p50_us as f64 / u.whole_p50_us.max(1) as f64
        );
    }
    for s in r.settings.iter().filter(|s| !s.shapes.is_empty()) {
        let _ = writeln!(
            t,
            "\n== {}: latency per change at equal concurrency (claim to removal) ==\n{:<10} {:>9} {:>8} {:>11} {:>11} {:>11} {:>8}",
            s.name, "shape", "in flight", "changes", "changes/s", "p50 ms", "p99 ms", "RPC/chg"
        );
        for x in &s.shapes {
            let _ = writeln!(
                t,
                "{:<10} {:>9} {:>8} {:>11.0} {:>11.1} {:>11.1} {:>8.2}",
                x.shape,
                x.in_flight,
                x.changes,
                x.changes_per_s,
                x.latency_p50_ms,
                x.latency_p99_ms,
                x.rpcs_per_change
            );
        }
    }
    if let Some(p) = &r.peers {
        t.push_str(&peers_table(p));
    }
    if !r.cost.is_empty() {
        let _ = writeln!(
            t,
            "\n== cost per million ==\n{:<40} {:>10} {:>10} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8}",
            "per million",
            "BT RPCs",
            "BT rows",
            "GCS A",
            "GCS B",
            "GCS del",
            "PS reqs",
            "PS msgs",
            "PS GB",
            "CPU s"
        );
        for c in &r.cost {
            let cpu = c.cpu_s.map_or("-".into(), |s| format!("{s:.0}"));
            let _ = writeln!(
                t,
                "{:<40} {:>10.0} {:>10.0} {:>8.0} {:>8.0} {:>8.0} {:>9.0} {:>9.0} {:>8.2} {:>8}",
                c.per,
                c.bigtable_rpcs_total,
                c.bigtable_rows,
                c.gcs_class_a,
                c.gcs_class_b,
                c.gcs_free,
                c.pubsub_requests,
                c.pubsub_messages,
                c.pubsub_billed_gb,
                cpu
            );
            let ops: Vec<String> = c
                .bigtable_rpcs
                .iter()
                .map(|(op, n)| format!("{op} {n:.0}"))
                .collect();
            let _ = writeln!(t, "{:<40} Bigtable RPCs by call: {}", "", ops.join(", "));
        }
    }
    t
}

/// The side-by-side run: one line per peer, per million orphans.
fn peers_table(p: &crate::peers::PeersReport) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\n== side by side: {} orphans among {} live objects, capacity model, virtual time; per million orphans ==\n\
         {:<16} {:>9} {:>10} {:>10} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7} {:>7} {:>13}",
        p.plan.orphans,
        p.plan.live,
        "peer",
        "waits s",
        "deleted s",
        "done s",
        "BT reads",
        "BT writes",
        "GCS A",
        "GCS B",
        "GCS del",
        "PS GB",
        "CPU s",
        "refused GCS/BT"
    );
    for r in &p.runs {
        let a = &r.admissions;
        let per = |refused: u64, admitted: u64| refused as f64 / admitted.max(1) as f64;
        let c = &r.cost;
        let _ = writeln!(
            t,
            "{:<16} {:>9.0} {:>10.0} {:>10.0} {:>9.0} {:>9.0} {:>8.0} {:>8.0} {:>8.0} {:>7.3} {:>7.0} {:>6.2}/{:<6.2}{}",
            r.peer,
            r.waits_s,
            r.deleted_after_s,
            r.done_after_s,
            c.bigtable_row_reads,
            c.bigtable_row_writes,
            c.gcs_class_a,
            c.gcs_class_b,
            c.gcs_free,
            c.pubsub_billed_gb,
            c.cpu_s.unwrap_or(0.0),
            per(a.gcs_mutations_refused, a.gcs_mutations),
            per(a.bigtable_refused, a.bigtable),
            if r.orphans_left > 0 {
                format!("  ({} orphans LEFT)", r.orphans_left)
            } else {
                String::new()
            }
        );
    }
    let (first, last) = p.lifecycle.deleted_after_s;
    let _ = writeln!(
        t,
        "{:<16} {:>9.0} {:>10} {:>10} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7} {:>7}  (modelled: rule applied within a day)",
        "lifecycle rule",
        first,
        format!("≤{last:.0}"),
        "-",
        0,
        0,
        0,
        0,
        0,
        0,
        0
    );
    let _ = writeln!(t, "write-path tax per million large writes:");
    for w in &p.write_tax {
        let _ = writeln!(
            t,
            "  {:<16} Bigtable rows {:>9.0}  GCS class A {:>9.0}",
            w.peer, w.bigtable_rows, w.gcs_class_a
        );
    }
    t
}
