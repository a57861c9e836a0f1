//! The drain: an outage's backlog of crashed changes recovered against the
//! capacity-limited cloud model ([`crate::capacity`]), with writers still writing
//! and fresh crashes arriving, by a leased scanner pool and a cleaner pool. In-memory stores
//! on paused time: the model's rate limits and latency tails decide the timings.
//!
//! Measured against the bound, the backlog ÷ the limiting service's rate over the drain
//! (GCS object mutations: a crashed upload costs one delete — with the default settle, the
//! pass after it checks existence, a read; the limit starts at 1,000/s and doubles every
//! 20 minutes): the time until the backlog's blobs are deleted and until its rows are
//! removed, re-claims of queued work (a claim won
//! on a row claimed before: its first claim's lease ran out with its job undone), claims
//! won while another claim's lease still ran, the fresh crashes' recovery lag, and this
//! process's resident memory as the drain goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::elastic::Deployed;
use super::lag::LagProbe;
use crate::capacity::{Admissions, Capacity, CloudModel};
use tiersweep::model::{ChangeId, ChangeRecord, ObjectPath, OwnerToken, Revision, Timestamp};
use tiersweep::queue::MemoryQueue;
use tiersweep::recovery::RecoveryConfig;
use tiersweep::stores::Stores;
use tiersweep::testing::MemoryStores;
use tiersweep::writer::{TieredStorage, WriterConfig};
use tiersweep_testkit::claims::ClaimLedger;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct DrainPlan {
    pub backlog: usize,
    pub fresh_crashes_per_s: f64,
    /// Writers writing small objects back to back (HV and changelog only).
    pub writers: usize,
    pub scanners: usize,
    pub cleaners: usize,
    pub cleaner_concurrency: usize,
    pub bigtable_nodes: u32,
    /// Recovery's upload settle: production's by default, so every backlog change gets the
    /// pass after it (an existence check) ten minutes after its first.
    pub upload_settle: Duration,
    /// Each scanner's and cleaner's Bigtable pace to start at (rows a second): production's
    /// by default; a rate no drain reaches turns the pacing off.
    pub bigtable_rows_per_s: f64,
    pub seed: u64,
}

impl DrainPlan {
    pub fn new(backlog: usize) -> Self {
        Self {
            backlog,
            fresh_crashes_per_s: 20.0,
            writers: 4,
            scanners: 2,
            cleaners: 4,
            cleaner_concurrency: 64,
            bigtable_nodes: 2,
            upload_settle: tiersweep::protocol::UPLOAD_SETTLE,
            bigtable_rows_per_s: tiersweep::recovery::RecoveryConfig::default().bigtable_rows_per_s,
            seed: 7,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DrainReport {
    pub plan: DrainPlan,
    pub model: CloudModel,
    /// Until the last backlog blob was deleted, virtual time.
    pub took_s: f64,
    /// Until the last backlog row was removed (the settle's passes included).
    pub done_s: f64,
    /// The backlog's GCS deletes at the model's limit over the same time.
    pub bound_s: f64,
    /// `bound_s / took_s`. Target ≥ 0.9.
    pub of_bound: f64,
    /// GCS mutations admitted ÷ the limit's capacity over the drain.
    pub gcs_utilisation: f64,
    /// Bigtable operations admitted ÷ the cluster's capacity over the drain (until the
    /// backlog's blobs were deleted, as the GCS figure and `admissions`).
    pub bigtable_utilisation: f64,
    /// Bigtable rows charged ÷ the cluster's capacity over the same time: a batch of n rows
    /// costs n, so this is the budget's use; `bigtable_utilisation` counts calls.
    pub bigtable_row_utilisation: f64,
    /// Calls admitted and refused until the backlog's blobs were deleted: the window the
    /// utilisations above describe.
    pub admissions: Admissions,
    /// The same over the whole drain, the settle's second passes included, as
    /// `refused_by_op`: the two windows differ where the second passes come due together.
    pub admissions_whole: Admissions,
    /// Calls the model refused over the whole drain, by call.
    pub refused_by_op: std::collections::BTreeMap<String, u64>,
    /// Bigtable rows charged to admitted calls, by call (a scan page of n rows counts n).
    pub bigtable_rows_by_op: std::collections::BTreeMap<String, u64>,
    pub claims_won: usize,
    /// Claims of rows claimed before. Target 0.
    pub reclaims: usize,
    /// Claims won while another claimer's lease on the row ran. Target 0.
    pub claimed_twice_at_once: usize,
    pub fresh_crashed: usize,
    pub fresh_converged: usize,
    pub staleness_threshold_ms: u64,
    /// From turning stale to removed. Target p99 ≤ threshold + 10 s.
    pub fresh_lag_p50_ms: u64,
    pub fresh_lag_p99_ms: u64,
    pub fresh_lag_max_ms: u64,
    pub healthy_writes: u64,
    /// (backlog rows removed, this process's VmRSS in MiB), ten samples over the drain.
    pub rss_mib: Vec<(usize, f64)>,
}

/// This process's resident set, from /proc (Linux); 0 elsewhere.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Leaves `n` changes that crashed after their upload, straight in the twins (the outage
/// happened before the drain; its writes are not charged to the model). Returns their
/// blobs.
async fn prepare(stores: &Stores, n: usize) -> Vec<Revision> {
    let blob = Bytes::from_static(b"orphaned upload");
    let prepared: Vec<Revision> = futures::stream::iter(0..n)
        .map(|i| {
            let blob = blob.clone();
            async move {
                let path =
                    ObjectPath::new(format!("drain/backlog/{i:08}")).expect("valid bench path");
                let rev = Revision::mint(&path);
                let record =
                    ChangeRecord::new(path, None, Some(rev.clone()), OwnerToken::mint("outage"));
                let id = ChangeId::mint_at(stores.clock().now());
                stores
                    .changelog()
                    .record(&id, &record)
                    .await
                    .expect("recording");
                stores.lt().put(&rev, blob).await.expect("uploading");
                rev
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    debug_assert_eq!(prepared.len(), n);
    prepared
}

/// Runs the plan (see the module doc). Needs paused time in the caller's runtime.
pub async fn run(plan: DrainPlan) -> DrainReport {
    let memory = MemoryStores::new();
    let twins = memory.stores();
    let protocol = super::protocol();
    let mut blobs = prepare(&twins, plan.backlog).await;
    tokio::time::sleep(protocol.staleness_threshold + Duration::from_millis(100)).await;

    let model = CloudModel::gcp(plan.bigtable_nodes);
    let capacity = Arc::new(Capacity::new(model, plan.seed));
    let cloud = tiersweep::testing::intercept::wrap(capacity.clone(), &twins);
    let probe = LagProbe::new(cloud.changelog().clone(), twins.clock().clone());
    let ledger = Arc::new(ClaimLedger::new(probe.clone(), twins.clock().clone()));
    let stores = cloud.clone().with_changelog(ledger.clone());
    let config = RecoveryConfig {
        protocol,
        idle_poll: Duration::from_millis(200),
        cleaner_concurrency: plan.cleaner_concurrency,
        upload_settle: plan.upload_settle,
        bigtable_rows_per_s: plan.bigtable_rows_per_s,
        ..RecoveryConfig::default()
    };
    let queue = MemoryQueue::new(
        plan.scanners * config.max_queued_claims * 2 + 10_000,
        config.max_delivery_attempts,
    );
    let recovery = Deployed::start(
        &stores,
        Arc::new(queue),
        &config,
        plan.scanners,
        plan.cleaners,
    );

    // The load that goes on meanwhile: writers, and fresh crashes through the model.
    let stop_load = CancellationToken::new();
    let load = TaskTracker::new();
    let healthy = Arc::new(AtomicUsize::new(0));
    let writer_config = WriterConfig {
        inline_threshold: 1024,
        protocol,
        ..WriterConfig::default()
    };
    for w in 0..plan.writers {
        let writer = TieredStorage::new(stores.clone(), writer_config).expect("valid writer");
        let (stop, healthy) = (stop_load.clone(), healthy.clone());
        load.spawn(async move {
            let value = Bytes::from_static(b"a small object, inline in HV");
            let mut i = 0u64;
            while !stop.is_cancelled() {
                let path = ObjectPath::new(format!("drain/w{w}/{i}")).expect("valid path");
                if writer.put(&path, value.clone()).await.is_ok() {
                    healthy.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        });
    }
    let fresh = Arc::new(AtomicUsize::new(0));
    {
        let (stop, fresh) = (stop_load.clone(), fresh.clone());
        let (stores, probe) = (stores.clone(), probe.clone());
        let threshold = protocol.staleness_threshold;
        let every = Duration::from_secs_f64(1.0 / plan.fresh_crashes_per_s.max(0.01));
        let crashes = load.clone();
        load.spawn(async move {
            let mut ticks = tokio::time::interval(every);
            let mut n = 0u64;
            while !stop.is_cancelled() {
                ticks.tick().await;
                let (stores, probe, fresh) = (stores.clone(), probe.clone(), fresh.clone());
                let path = ObjectPath::new(format!("drain/fresh/{n:08}")).expect("valid path");
                n += 1;
                crashes.spawn(async move {
                    let rev = Revision::mint(&path);
                    let record =
                        ChangeRecord::new(path, None, Some(rev.clone()), OwnerToken::mint("fresh"));
                    let id = ChangeId::mint_at(stores.clock().now());
                    // A crash that could not even record its change (refused by a limit)
                    // left nothing to recover; one that recorded it is counted and
                    // watched, whether or not its upload then landed.
                    if let Ok(stamp) = stores.changelog().record(&id, &record).await {
                        fresh.fetch_add(1, Ordering::Relaxed);
                        probe.watch(id, Timestamp(stamp.0 + threshold.as_millis() as i64));
                        let _ = stores
                            .lt()
                            .put(&rev, Bytes::from_static(b"fresh upload"))
                            .await;
                    }
                });
            }
        });
    }

    let started = Instant::now();
    let mut rss = vec![(0, rss_mib())];
    let backlog_removed = || ledger.counts().removed.saturating_sub(probe.removed());
    let mut next_sample = plan.backlog / 10;
    let deadline =
        started + plan.upload_settle + Duration::from_secs((plan.backlog as u64 / 100).max(600));
    // When the backlog's blobs were all deleted, and what the services had admitted by
    // then: the drain's figures stop there, not a settle later.
    let mut deleted = None;
    loop {
        // Looked for only once enough deletes were admitted: a million lookups a tick
        // would cost more than the drain.
        let deletes_enough = capacity.admissions().gcs_mutations >= plan.backlog as u64;
        if deleted.is_none()
            && deletes_enough
            && super::still_there(twins.lt().as_ref(), &mut blobs).await == 0
        {
            deleted = Some((started.elapsed(), capacity.admissions()));
        }
        let removed = backlog_removed();
        if removed >= next_sample && next_sample > 0 {
            rss.push((removed, rss_mib()));
            eprintln!(
                "[drain] {removed} of {} removed, {:.0} s (virtual)",
                plan.backlog,
                started.elapsed().as_secs_f64()
            );
            next_sample += plan.backlog / 10;
        }
        if removed >= plan.backlog {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the drain did not finish: {removed} of {} removed",
            plan.backlog
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let done = started.elapsed();
    let (took, admissions) = deleted.unwrap_or_else(|| (done, capacity.admissions()));
    stop_load.cancel();
    load.close();
    load.wait().await;
    // The fresh crashes still in flight converge before the pools stop.
    let give_up = Instant::now() + Duration::from_secs(120);
    while probe.outstanding() > 0 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    recovery.stop().await;

    let capacity_over = |limit: crate::capacity::Limit| {
        let secs = took.as_secs_f64();
        let whole = secs.floor() as u64;
        (0..whole)
            .map(|s| limit.at(Duration::from_secs(s)))
            .sum::<f64>()
            + (secs - whole as f64) * limit.at(took)
    };
    let gcs_capacity = capacity_over(model.gcs_mutations);
    let bound_s = {
        // The time the backlog's deletes take at the limit, from the drain's start.
        let mut left = plan.backlog as f64;
        let mut t = 0.0;
        while left > 0.0 {
            let rate = model.gcs_mutations.at(Duration::from_secs_f64(t));
            let step = (left / rate).min(1.0);
            left -= rate * step;
            t += step;
        }
        t
    };
    let mut lags = probe.take_lags();
    lags.sort_unstable();
    let counts = ledger.counts();
    DrainReport {
        plan,
        model,
        took_s: took.as_secs_f64(),
        done_s: done.as_secs_f64(),
        bound_s,
        of_bound: bound_s / took.as_secs_f64().max(f64::EPSILON),
        gcs_utilisation: admissions.gcs_mutations as f64 / gcs_capacity.max(1.0),
        bigtable_utilisation: admissions.bigtable as f64
            / capacity_over(model.bigtable_ops).max(1.0),
        bigtable_row_utilisation: admissions.bigtable_rows as f64
            / capacity_over(model.bigtable_ops).max(1.0),
        admissions,
        admissions_whole: capacity.admissions(),
        refused_by_op: capacity.refused_by_op(),
        bigtable_rows_by_op: capacity.rows_by_op(),
        claims_won: counts.won,
        reclaims: counts.reclaims,
        claimed_twice_at_once: counts.overlapping,
        fresh_crashed: fresh.load(Ordering::Relaxed),
        fresh_converged: lags.len(),
        staleness_threshold_ms: protocol.staleness_threshold.as_millis() as u64,
        fresh_lag_p50_ms: super::percentile(&lags, 0.5),
        fresh_lag_p99_ms: super::percentile(&lags, 0.99),
        fresh_lag_max_ms: lags.last().copied().unwrap_or(0),
        healthy_writes: healthy.load(Ordering::Relaxed) as u64,
        rss_mib: rss,
    }
}
