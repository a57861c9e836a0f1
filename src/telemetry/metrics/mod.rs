//! Metrics: one process-wide registry of atomics that feeds both the Prometheus scrape
//! endpoint on the health server ([`render_prometheus`]) and OpenTelemetry metric export
//! ([`install_otel`]), so the two can never disagree.
//!
//! The registry is a `static` because counts are taken deep in the library (a writer's
//! heartbeat task, the converge step) and a process has one scrape endpoint; threading a
//! handle through every constructor would buy nothing. Tests compare [`MetricsSnapshot`]s taken
//! before and after the work they measure.

mod instruments;
mod otel;
mod prometheus;

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

pub use instruments::{Counter, Histogram, LAG_BOUNDS};
pub use otel::install_otel;
#[cfg(any(test, feature = "testing"))]
use prometheus::series;
pub use prometheus::render_prometheus;
#[cfg(any(test, feature = "testing"))]
pub use prometheus::prometheus_name;

/// What the last complete scan pass of one shard range saw.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PassBacklog {
    /// Stale rows the pass found.
    pub stale_rows: u64,
    /// Age of the oldest stale row: now minus its last heartbeat (or claim).
    pub oldest_stale_age: Duration,
}

/// Every metric tiersweep exports. The documentation in `docs/observability.md` lists the
/// same set; a test checks the two agree.
#[derive(Debug)]
pub struct Metrics {
    /// `tiersweep.changelog.rows_scanned`: Stale changelog rows (malformed ones included)
    /// returned by scans.
    pub rows_scanned: Counter,
    /// `tiersweep.changelog.rows_malformed`: Changelog rows a scan could not parse; left in
    /// place for an operator.
    pub rows_malformed: Counter,
    /// `tiersweep.claims{outcome="won"}`: Claims a scanner attempted on stale rows, by
    /// outcome (lost = another scanner won the CAS).
    pub claims_won: Counter,
    /// `tiersweep.claims{outcome="lost"}`: Claims a scanner attempted on stale rows, by
    /// outcome (lost = another scanner won the CAS).
    pub claims_lost: Counter,
    /// `tiersweep.claims{outcome="error"}`: Claims a scanner attempted on stale rows, by
    /// outcome (lost = another scanner won the CAS).
    pub claims_failed: Counter,
    /// `tiersweep.claims.held_back`: Stale rows a scanner left unclaimed for now because as
    /// many of its claims as recovery.max_queued_claims were still waiting for a cleaner
    /// (backpressure).
    pub claims_held_back: Counter,
    /// `tiersweep.claims.extended`: Claim leases moved on by whoever holds the job: the
    /// scanner while it is queued, a cleaner while it works on it.
    pub claims_extended: Counter,
    /// `tiersweep.claims.repeated`: Claims won on rows recovery had already claimed
    /// FAILING_AFTER_CLAIMS (5) times or more: changes that keep failing (tiersweep status
    /// lists them).
    pub claims_repeated: Counter,
    /// `tiersweep.jobs.republished`: Jobs a scanner published again, under the same claim,
    /// because they waited recovery.republish_after without a cleaner taking them (lost or
    /// stranded).
    pub jobs_republished: Counter,
    /// `tiersweep.jobs.published`: Cleanup jobs a scanner published (one per claim won).
    pub jobs_published: Counter,
    /// `tiersweep.jobs.processed{outcome="converged"}`: Cleanup job deliveries a cleaner
    /// finished, by outcome (failed = nacked for redelivery).
    pub jobs_converged: Counter,
    /// `tiersweep.jobs.processed{outcome="already_converged"}`: Cleanup job deliveries a
    /// cleaner finished, by outcome (failed = nacked for redelivery).
    pub jobs_already_converged: Counter,
    /// `tiersweep.jobs.processed{outcome="not_our_claim"}`: Cleanup job deliveries a
    /// cleaner finished, by outcome (failed = nacked for redelivery).
    pub jobs_not_our_claim: Counter,
    /// `tiersweep.jobs.processed{outcome="not_due"}`: Cleanup job deliveries a cleaner
    /// finished, by outcome (failed = nacked for redelivery).
    pub jobs_not_due: Counter,
    /// `tiersweep.jobs.processed{outcome="failed"}`: Cleanup job deliveries a cleaner
    /// finished, by outcome (failed = nacked for redelivery).
    pub jobs_failed: Counter,
    /// `tiersweep.jobs.processed{outcome="dead_lettered"}`: Cleanup job deliveries a
    /// cleaner finished, by outcome (failed = nacked for redelivery).
    pub jobs_dead_lettered: Counter,
    /// `tiersweep.blobs.deleted`: LT blobs recovery deleted because HV does not reference
    /// them.
    pub blobs_deleted: Counter,
    /// `tiersweep.tombstones.dangling`: HV tombstones found referencing a missing LT blob;
    /// each needs an operator.
    pub dangling_tombstones: Counter,
    /// `tiersweep.writer.heartbeat_failures`: Writer heartbeats that failed or timed out;
    /// the change is left to recovery.
    pub heartbeat_failures: Counter,
    /// `tiersweep.writer.fenced`: Writes refused because recovery had claimed or fenced
    /// their change.
    pub writers_fenced: Counter,
    /// `tiersweep.queue.pull_streams_reopened`: Streaming pulls the server ended without an
    /// error, reopened by the cleaner.
    pub pull_streams_reopened: Counter,
    /// `tiersweep.shard_leases{outcome="acquired"}`: Shard lease changes a scanner made or
    /// met, by outcome (lost = taken by another member after this one stalled past its
    /// lease).
    pub leases_acquired: Counter,
    /// `tiersweep.shard_leases{outcome="released"}`: Shard lease changes a scanner made or
    /// met, by outcome (lost = taken by another member after this one stalled past its
    /// lease).
    pub leases_released: Counter,
    /// `tiersweep.shard_leases{outcome="lost"}`: Shard lease changes a scanner made or met,
    /// by outcome (lost = taken by another member after this one stalled past its lease).
    pub leases_lost: Counter,
    /// `tiersweep.audit.blobs_listed`: LT blobs an audit listed and judged.
    pub audit_blobs_listed: Counter,
    /// `tiersweep.audit.orphans{age="lt_1d"}`: Orphan LT blobs an audit found (no HV
    /// tombstone or changelog row names them), by age since GCS created them.
    pub audit_orphans_lt_1d: Counter,
    /// `tiersweep.audit.orphans{age="1d_7d"}`: Orphan LT blobs an audit found (no HV
    /// tombstone or changelog row names them), by age since GCS created them.
    pub audit_orphans_1d_7d: Counter,
    /// `tiersweep.audit.orphans{age="7d_30d"}`: Orphan LT blobs an audit found (no HV
    /// tombstone or changelog row names them), by age since GCS created them.
    pub audit_orphans_7d_30d: Counter,
    /// `tiersweep.audit.orphans{age="ge_30d"}`: Orphan LT blobs an audit found (no HV
    /// tombstone or changelog row names them), by age since GCS created them.
    pub audit_orphans_ge_30d: Counter,
    /// `tiersweep.audit.deletes_requested`: Orphans an audit handed to recovery for
    /// deletion (one changelog row each).
    pub audit_deletes_requested: Counter,
    /// `tiersweep.audit.dangling`: HV tombstones an audit (--dangling) found naming a blob
    /// that does not exist, confirmed by a second look.
    pub audit_dangling: Counter,
    /// `tiersweep.audit.jobs_refused`: Audit range jobs a worker refused unjudged:
    /// malformed, naming no recorded run or range, or of an expired run (forged or stale;
    /// dead-lettered).
    pub audit_jobs_refused: Counter,
    /// `tiersweep.recovery.lag`: Age of a change (since its writer recorded it) when
    /// recovery converged it.
    pub recovery_lag: Histogram,
    backlog: Mutex<BTreeMap<String, PassBacklog>>,
    /// What this process is (`scan`, `clean`, …), for `tiersweep_build_info`.
    role: OnceLock<&'static str>,
}

const JOBS: &str = "tiersweep.jobs.processed";
const JOBS_HELP: &str =
    "Cleanup job deliveries a cleaner finished, by outcome (failed = nacked for redelivery).";
const LEASES: &str = "tiersweep.shard_leases";
const LEASES_HELP: &str = "Shard lease changes a scanner made or met, by outcome (lost = taken by \
     another member after this one stalled past its lease).";
const ORPHANS: &str = "tiersweep.audit.orphans";
const ORPHANS_HELP: &str = "Orphan LT blobs an audit found (no HV tombstone or changelog row \
     names them), by age since GCS created them.";
const CLAIMS: &str = "tiersweep.claims";
const CLAIMS_HELP: &str =
    "Claims a scanner attempted on stale rows, by outcome (lost = another scanner won the CAS).";

/// The process's registry. Private to the library: an embedder reads it through its own
/// meter provider ([`crate::register_metrics`]) or `/metrics`, and names its process with
/// [`set_role`]; only tests and the benchmark reach it directly ([`registry`]).
pub(crate) static METRICS: Metrics = Metrics::new();

/// Names what this process is in `tiersweep_build_info{role}` (the first call wins). A
/// process that never calls it — a service embedding the writer — reports `embedded`.
pub fn set_role(role: &'static str) {
    METRICS.set_role(role);
}

/// The process's registry, for tests and the benchmark.
#[cfg(any(test, feature = "testing"))]
pub fn registry() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    /// A zeroed registry. Processes use the one registry (`METRICS`); tests make their own.
    // One entry per metric, its name and description: a table, not logic.
    #[allow(clippy::too_many_lines)]
    pub const fn new() -> Self {
        Self {
            rows_scanned: Counter::new(
                "tiersweep.changelog.rows_scanned",
                "Stale changelog rows (malformed ones included) returned by scans.",
            ),
            rows_malformed: Counter::new(
                "tiersweep.changelog.rows_malformed",
                "Changelog rows a scan could not parse; left in place for an operator.",
            ),
            claims_won: Counter::labelled(CLAIMS, CLAIMS_HELP, "outcome", "won"),
            claims_lost: Counter::labelled(CLAIMS, CLAIMS_HELP, "outcome", "lost"),
            claims_failed: Counter::labelled(CLAIMS, CLAIMS_HELP, "outcome", "error"),
            claims_held_back: Counter::new(
                "tiersweep.claims.held_back",
                "Stale rows a scanner left unclaimed for now because as many of its claims as \
                 recovery.max_queued_claims were still waiting for a cleaner (backpressure).",
            ),
            claims_extended: Counter::new(
                "tiersweep.claims.extended",
                "Claim leases moved on by whoever holds the job: the scanner while it is queued, \
                 a cleaner while it works on it.",
            ),
            claims_repeated: Counter::new(
                "tiersweep.claims.repeated",
                "Claims won on rows recovery had already claimed FAILING_AFTER_CLAIMS (5) times or \
                 more: changes that keep failing (tiersweep status lists them).",
            ),
            jobs_republished: Counter::new(
                "tiersweep.jobs.republished",
                "Jobs a scanner published again, under the same claim, because they waited \
                 recovery.republish_after without a cleaner taking them (lost or stranded).",
            ),
            jobs_published: Counter::new(
                "tiersweep.jobs.published",
                "Cleanup jobs a scanner published (one per claim won).",
            ),
            jobs_converged: Counter::labelled(JOBS, JOBS_HELP, "outcome", "converged"),
            jobs_already_converged: Counter::labelled(
                JOBS,
                JOBS_HELP,
                "outcome",
                "already_converged",
            ),
            jobs_not_our_claim: Counter::labelled(JOBS, JOBS_HELP, "outcome", "not_our_claim"),
            jobs_not_due: Counter::labelled(JOBS, JOBS_HELP, "outcome", "not_due"),
            jobs_failed: Counter::labelled(JOBS, JOBS_HELP, "outcome", "failed"),
            jobs_dead_lettered: Counter::labelled(JOBS, JOBS_HELP, "outcome", "dead_lettered"),
            blobs_deleted: Counter::new(
                "tiersweep.blobs.deleted",
                "LT blobs recovery deleted because HV does not reference them.",
            ),
            dangling_tombstones: Counter::new(
                "tiersweep.tombstones.dangling",
                "HV tombstones found referencing a missing LT blob; each needs an operator.",
            ),
            heartbeat_failures: Counter::new(
                "tiersweep.writer.heartbeat_failures",
                "Writer heartbeats that failed or timed out; the change is left to recovery.",
            ),
            writers_fenced: Counter::new(
                "tiersweep.writer.fenced",
                "Writes refused because recovery had claimed or fenced their change.",
            ),
            pull_streams_reopened: Counter::new(
                "tiersweep.queue.pull_streams_reopened",
                "Streaming pulls the server ended without an error, reopened by the cleaner.",
            ),
            leases_acquired: Counter::labelled(LEASES, LEASES_HELP, "outcome", "acquired"),
            leases_released: Counter::labelled(LEASES, LEASES_HELP, "outcome", "released"),
            leases_lost: Counter::labelled(LEASES, LEASES_HELP, "outcome", "lost"),
            audit_blobs_listed: Counter::new(
                "tiersweep.audit.blobs_listed",
                "LT blobs an audit listed and judged.",
            ),
            audit_orphans_lt_1d: Counter::labelled(ORPHANS, ORPHANS_HELP, "age", "lt_1d"),
            audit_orphans_1d_7d: Counter::labelled(ORPHANS, ORPHANS_HELP, "age", "1d_7d"),
            audit_orphans_7d_30d: Counter::labelled(ORPHANS, ORPHANS_HELP, "age", "7d_30d"),
            audit_orphans_ge_30d: Counter::labelled(ORPHANS, ORPHANS_HELP, "age", "ge_30d"),
            audit_dangling: Counter::new(
                "tiersweep.audit.dangling",
                "HV tombstones an audit (--dangling) found naming a blob that does not exist, \
                 confirmed by a second look.",
            ),
            audit_jobs_refused: Counter::new(
                "tiersweep.audit.jobs_refused",
                "Audit range jobs a worker refused unjudged: malformed, naming no recorded run \
                 or range, or of an expired run (forged or stale; dead-lettered).",
            ),
            audit_deletes_requested: Counter::new(
                "tiersweep.audit.deletes_requested",
                "Orphans an audit handed to recovery for deletion (one changelog row each).",
            ),
            recovery_lag: Histogram::new(
                "tiersweep.recovery.lag",
                "Age of a change (since its writer recorded it) when recovery converged it.",
            ),
            backlog: Mutex::new(BTreeMap::new()),
            role: OnceLock::new(),
        }
    }

    /// See [`set_role`](fn@set_role).
    pub fn set_role(&self, role: &'static str) {
        let _ = self.role.set(role);
    }

    fn role(&self) -> &'static str {
        self.role.get().copied().unwrap_or("embedded")
    }

    /// The orphan counter of an age bucket ([`crate::audit::age_bucket`]).
    pub fn audit_orphans(&self, bucket: &str) -> &Counter {
        match bucket {
            "lt_1d" => &self.audit_orphans_lt_1d,
            "1d_7d" => &self.audit_orphans_1d_7d,
            "7d_30d" => &self.audit_orphans_7d_30d,
            _ => &self.audit_orphans_ge_30d,
        }
    }
}

const BUILD_INFO: (&str, &str) = (
    "tiersweep.build_info",
    "Always 1: the tiersweep version and the role of the process that exports it.",
);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counted by [`crate::iam`], which every backend reports its calls to; exported here.
const GCP_CALLS: (&str, &str) = (
    "tiersweep.gcp.calls",
    "Calls this process made to Bigtable, Cloud Storage and Pub/Sub, by method and resource \
     (Pub/Sub publishes and acks per message).",
);

const STALE_ROWS: (&str, &str) = (
    "tiersweep.backlog.stale_rows",
    "Stale changelog rows seen by the last complete scan pass of a shard range.",
);
const OLDEST_STALE: (&str, &str) = (
    "tiersweep.backlog.oldest_stale_age",
    "Age of the oldest stale row in the last complete scan pass of a shard range.",
);

impl Metrics {
    /// Every counter, in export order.
    pub fn counters(&self) -> [&Counter; 32] {
        [
            &self.rows_scanned,
            &self.rows_malformed,
            &self.claims_won,
            &self.claims_lost,
            &self.claims_failed,
            &self.claims_held_back,
            &self.claims_extended,
            &self.claims_repeated,
            &self.jobs_republished,
            &self.jobs_published,
            &self.jobs_converged,
            &self.jobs_already_converged,
            &self.jobs_not_our_claim,
            &self.jobs_not_due,
            &self.jobs_failed,
            &self.jobs_dead_lettered,
            &self.blobs_deleted,
            &self.dangling_tombstones,
            &self.heartbeat_failures,
            &self.writers_fenced,
            &self.pull_streams_reopened,
            &self.leases_acquired,
            &self.leases_released,
            &self.leases_lost,
            &self.audit_blobs_listed,
            &self.audit_orphans_lt_1d,
            &self.audit_orphans_1d_7d,
            &self.audit_orphans_7d_30d,
            &self.audit_orphans_ge_30d,
            &self.audit_deletes_requested,
            &self.audit_jobs_refused,
            &self.audit_dangling,
        ]
    }

    /// Replaces the backlog a scanner of `shards` saw in its last complete pass.
    pub fn set_backlog(&self, shards: &str, backlog: PassBacklog) {
        self.backlog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(shards.to_owned(), backlog);
    }

    /// The last complete pass of every shard range, by range.
    pub fn backlog(&self) -> BTreeMap<String, PassBacklog> {
        self.backlog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every counter's value now.
    #[cfg(any(test, feature = "testing"))]
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            counters: self
                .counters()
                .iter()
                .map(|c| (series(c), c.get()))
                .collect(),
            lag_count: self.recovery_lag.count(),
        }
    }
}

/// Counter values at one moment, keyed by Prometheus series (`name{label="v"}`).
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Values by Prometheus series.
    pub counters: BTreeMap<String, u64>,
    /// Recovery-lag observations.
    pub lag_count: u64,
}

#[cfg(any(test, feature = "testing"))]
impl MetricsSnapshot {
    /// What moved since `earlier`, leaving out what did not.
    pub fn since(&self, earlier: &MetricsSnapshot) -> BTreeMap<String, u64> {
        self.counters
            .iter()
            .map(|(k, v)| (k.clone(), v - earlier.counters.get(k).copied().unwrap_or(0)))
            .filter(|(_, d)| *d > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An embedder registers the metrics in its own provider (no global provider, no
    /// OTLP) and reads what its writers counted, including counts made before it did.
    #[test]
    fn an_embedders_provider_reads_the_writer_counters() {
        use opentelemetry::metrics::MeterProvider as _;
        use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
        let before = METRICS.writers_fenced.get();
        METRICS.writers_fenced.add(2);
        let exporter = opentelemetry_sdk::metrics::InMemoryMetricExporter::default();
        let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
            .with_reader(
                opentelemetry_sdk::metrics::PeriodicReader::builder(exporter.clone()).build(),
            )
            .build();
        crate::register_metrics(&provider.meter("embedding-service"));
        provider.force_flush().expect("collecting");
        let exported = exporter.get_finished_metrics().expect("the export");
        let rm = exported.last().expect("one collection");
        let names: Vec<String> = rm
            .scope_metrics()
            .flat_map(|s| s.metrics())
            .map(|m| m.name().to_owned())
            .collect();
        for name in [METRICS.writers_fenced.name, BUILD_INFO.0] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        let fenced = rm
            .scope_metrics()
            .flat_map(|s| s.metrics())
            .find(|m| m.name() == METRICS.writers_fenced.name)
            .expect("the counter");
        let AggregatedMetrics::U64(MetricData::Sum(sum)) = fenced.data() else {
            panic!("a u64 sum: {:?}", fenced.data());
        };
        let value: u64 = sum.data_points().map(|p| p.value()).sum();
        assert!(value >= before + 2, "{value} after {before} + 2");
    }

    #[test]
    fn prometheus_text_has_one_header_per_family_and_cumulative_buckets() {
        let m = Metrics::new();
        m.claims_won.add(3);
        m.claims_lost.inc();
        m.recovery_lag.record(Duration::from_secs(2));
        m.recovery_lag.record(Duration::from_secs(100));
        m.set_backlog(
            "00-7f",
            PassBacklog {
                stale_rows: 7,
                oldest_stale_age: Duration::from_millis(1500),
            },
        );
        let text = render_prometheus(&m);
        let build = format!(
            "tiersweep_build_info{{version=\"{}\",role=\"embedded\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build), "{text}");
        m.set_role("clean");
        m.set_role("scan");
        let text = render_prometheus(&m);
        assert!(
            text.contains("role=\"clean\"} 1\n"),
            "the first role set wins"
        );
        assert_eq!(
            text.matches("# TYPE tiersweep_claims_total counter")
                .count(),
            1
        );
        assert!(text.contains("tiersweep_claims_total{outcome=\"won\"} 3\n"));
        assert!(text.contains("tiersweep_claims_total{outcome=\"lost\"} 1\n"));
        assert!(text.contains("tiersweep_recovery_lag_seconds_bucket{le=\"1\"} 0\n"));
        assert!(text.contains("tiersweep_recovery_lag_seconds_bucket{le=\"5\"} 1\n"));
        assert!(text.contains("tiersweep_recovery_lag_seconds_bucket{le=\"120\"} 2\n"));
        assert!(text.contains("tiersweep_recovery_lag_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("tiersweep_recovery_lag_seconds_sum 102\n"));
        assert!(text.contains("tiersweep_backlog_stale_rows{shards=\"00-7f\"} 7\n"));
        assert!(
            text.contains("tiersweep_backlog_oldest_stale_age_seconds{shards=\"00-7f\"} 1.5\n")
        );
        // Every sample line belongs to a family declared above it.
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap_or_default().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                assert!(
                    declared.iter().any(|d| name.starts_with(d.as_str())),
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn the_observability_guide_lists_every_metric() {
        let doc = include_str!("../../../docs/observability.md");
        let m = Metrics::new();
        let mut names: Vec<String> = m
            .counters()
            .iter()
            .flat_map(|c| [c.name.to_owned(), prometheus_name(c.name, "_total")])
            .collect();
        names.extend([
            m.recovery_lag.name.to_owned(),
            prometheus_name(m.recovery_lag.name, "_seconds"),
            STALE_ROWS.0.to_owned(),
            prometheus_name(STALE_ROWS.0, ""),
            OLDEST_STALE.0.to_owned(),
            prometheus_name(OLDEST_STALE.0, "_seconds"),
            GCP_CALLS.0.to_owned(),
            prometheus_name(GCP_CALLS.0, "_total"),
            BUILD_INFO.0.to_owned(),
            prometheus_name(BUILD_INFO.0, ""),
            "process_cpu_seconds_total".to_owned(),
        ]);
        for name in names {
            assert!(
                doc.contains(&format!("`{name}`")),
                "docs/observability.md does not list {name}"
            );
        }
        for c in m.counters() {
            if let Some((_, value)) = c.label {
                assert!(doc.contains(&format!("`{value}`")), "label value {value}");
            }
        }
    }

    #[test]
    fn snapshots_report_only_what_moved() {
        let m = Metrics::new();
        let before = m.snapshot();
        m.jobs_converged.add(2);
        m.blobs_deleted.inc();
        let moved = m.snapshot().since(&before);
        assert_eq!(
            moved,
            BTreeMap::from([
                ("tiersweep_blobs_deleted_total".to_owned(), 1),
                (
                    "tiersweep_jobs_processed_total{outcome=\"converged\"}".to_owned(),
                    2
                ),
            ])
        );
    }
}
