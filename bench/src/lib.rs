//! The measurements behind `tiersweep bench` (feature `testing`): a backlog of crashed
//! changes with real LT blobs, recovered by the seed's shape of loop (one change at a time)
//! and by the pipeline at growing concurrency, with every store call counted and, on
//! in-memory stores, charged a cloud-like latency ([`Latency`](crate::meter::Latency)).
//!
//! The measuring is in the modules named after what they measure; [`driver`] picks settings
//! and backends, prints, plots and writes the JSON: it is the `tiersweep bench` command the
//! binary's `dev` feature mounts.

pub mod capacity;
pub mod ceiling;
pub mod cost;
pub mod cpu;
pub mod drain;
pub mod driver;
pub mod elastic;
pub mod lag;
pub mod meter;
pub mod peers;
pub mod shapes;
pub mod upload_split;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::meter::{Meter, Rpcs};
use tiersweep::error::StoreResult;
use tiersweep::model::{ChangeId, ChangeRecord, ObjectPath, OwnerToken, Revision};
use tiersweep::protocol::ProtocolConfig;
use tiersweep::queue::JobQueue;
use tiersweep::recovery::pool::{self, Pools};
use tiersweep::recovery::{EmbeddedRecovery, RecoveryConfig};
use tiersweep::stores::Stores;

/// Timings short enough that a prepared backlog is stale within seconds.
pub fn protocol() -> ProtocolConfig {
    ProtocolConfig {
        heartbeat_interval: Duration::from_millis(250),
        staleness_threshold: Duration::from_secs(1),
        safety_margin: Duration::from_millis(250),
    }
}

/// Whether a prepared crash left its blob behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// After the upload: recovery must delete an unreferenced blob.
    AfterUpload,
    /// Before the upload: the same work for recovery (its delete finds nothing), without
    /// the upload, for backlogs too large to upload to fake-gcs-server in reasonable time.
    BeforeUpload,
}

/// Leaves `n` changes as large puts that crashed around their upload: a changelog row
/// each, and per `crash` an unreferenced blob. Writes `concurrency` at a time; returns when
/// all are stale.
pub async fn prepare_backlog(
    stores: &Stores,
    run: &str,
    n: usize,
    concurrency: usize,
    crash: Crash,
) -> StoreResult<()> {
    let blob = Bytes::from(vec![b'L'; BLOB_BYTES]);
    let results: Vec<StoreResult<()>> = futures::stream::iter(0..n)
        .map(|i| crash_one(stores, run, i, crash, blob.clone()))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect::<StoreResult<Vec<()>>>()?;
    tokio::time::sleep(protocol().staleness_threshold + Duration::from_millis(100)).await;
    Ok(())
}

/// The size of a prepared crash's blob.
pub const BLOB_BYTES: usize = 2048;

/// Leaves change `i` of `run` as a large put that crashed around its upload (per `crash`,
/// with `blob` uploaded): it turns stale a staleness threshold from now.
pub async fn crash_one(
    stores: &Stores,
    run: &str,
    i: usize,
    crash: Crash,
    blob: Bytes,
) -> StoreResult<()> {
    let path = ObjectPath::new(format!("bench/{run}/{i:07}")).expect("bench paths are valid");
    let rev = Revision::mint(&path);
    let record = ChangeRecord::new(path, None, Some(rev.clone()), OwnerToken::mint("bench"));
    stores
        .changelog()
        .record(&ChangeId::mint(), &record)
        .await?;
    match crash {
        Crash::AfterUpload => stores.lt().put(&rev, blob).await,
        Crash::BeforeUpload => Ok(()),
    }
}

/// One recovery run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub mode: String,
    /// Jobs in flight in the cleaner (1 for the sequential baseline).
    pub in_flight: usize,
    pub scanners: u16,
    pub changes: usize,
    pub seconds: f64,
    pub changes_per_s: f64,
    pub rpcs: Rpcs,
    pub rpcs_per_change: f64,
    /// Store calls per operation over the run (heartbeats included; queue calls are in
    /// `rpcs`): where the RPCs per change go.
    pub calls: std::collections::BTreeMap<String, u64>,
    /// Bigtable rows touched per operation (a batch of n keys counts n).
    pub rows: std::collections::BTreeMap<String, u64>,
    pub claims_lost: u64,
    /// The run hit its deadline before every prepared change converged.
    pub timed_out: bool,
    /// For a run that timed out: every counter that moved during it, to show where the
    /// missing changes stopped (claimed? published? processed how?).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counters: Option<std::collections::BTreeMap<String, u64>>,
    /// CPU each watched process used during the run (the emulators' runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<cpu::CpuUse>,
}

impl Run {
    /// CPU microseconds per converged change, by process.
    pub fn cpu_us_per_change(&self) -> Option<std::collections::BTreeMap<String, f64>> {
        let per = 1e6 / self.changes.max(1) as f64;
        let cpu = self.cpu.as_ref()?;
        Some(
            cpu.by_process
                .iter()
                .map(|(n, s)| (n.clone(), s * per))
                .collect(),
        )
    }
}

impl Run {
    fn new(
        mode: &str,
        in_flight: usize,
        scanners: u16,
        changes: usize,
        took: Duration,
        meter: &Meter,
        lost: u64,
    ) -> Self {
        let rpcs = meter.rpcs();
        let seconds = took.as_secs_f64();
        Self {
            mode: mode.to_owned(),
            in_flight,
            scanners,
            changes,
            seconds,
            changes_per_s: changes as f64 / seconds.max(1e-9),
            rpcs,
            rpcs_per_change: rpcs.total() as f64 / changes.max(1) as f64,
            calls: meter.calls(),
            rows: meter.rows(),
            claims_lost: lost,
            timed_out: false,
            counters: None,
            cpu: None,
        }
    }
}

pub(crate) fn recovery_config(in_flight: usize) -> RecoveryConfig {
    RecoveryConfig {
        protocol: protocol(),
        scan_batch: 500,
        claim_concurrency: in_flight.clamp(1, 64),
        claim_lease: Duration::from_secs(120),
        idle_poll: Duration::from_millis(50),
        cleaner_concurrency: in_flight.max(1),
        // One pass per change: the figures are the cost of that pass. The settle adds a
        // second one for changes recovered before their HV write (docs/performance.md).
        upload_settle: Duration::ZERO,
        // No bucket limit in these models: the pipeline's own cost is measured, so the
        // cleaners' delete pace must never bind (the capacity-model runs pace as deployed).
        gcs_deletes_per_s: UNPACED,
        bigtable_rows_per_s: UNPACED,
        ..RecoveryConfig::default()
    }
}

/// A delete pace no benchmark reaches.
pub(crate) const UNPACED: f64 = 1e9;

/// The seed's shape: one loop, one change at a time (claim, publish, converge, next).
pub async fn baseline(stores: &Stores, meter: &Arc<Meter>, changes: usize) -> StoreResult<Run> {
    meter.reset();
    let metered = meter.wrap(stores);
    let mut config = recovery_config(1);
    config.claim_concurrency = 1;
    let started = Instant::now();
    let recovery = EmbeddedRecovery::new(metered, config);
    let mut converged = 0;
    while converged < changes {
        let pass = recovery.run_pass().await?;
        if pass.converged == 0 {
            break;
        }
        converged += pass.converged;
    }
    Ok(Run::new(
        "sequential",
        1,
        1,
        converged,
        started.elapsed(),
        meter,
        0,
    ))
}

/// The shape of one pipeline run.
#[derive(Debug, Clone, Copy)]
pub struct PipelineRun {
    /// Stop once this many changes have converged...
    pub changes: usize,
    /// ...or this much time has passed.
    pub deadline: Duration,
    pub scanners: u16,
    /// Scanners split the shards between them in equal fixed ranges (a deployment's shard
    /// leases come to the same split) or all scan every shard.
    pub split: bool,
    /// Jobs in flight in the one cleaner.
    pub in_flight: usize,
}

/// The pipeline: scanners publishing to `queue`, one cleaner consuming it. Use a fresh
/// queue per run: a real subscription may still hold a finished run's leased messages.
pub async fn pipeline(
    stores: &Stores,
    queue: Arc<dyn JobQueue>,
    meter: &Arc<Meter>,
    shape: PipelineRun,
) -> StoreResult<Run> {
    let PipelineRun {
        changes,
        deadline,
        scanners,
        split,
        in_flight,
    } = shape;
    meter.reset();
    let metered = meter.wrap(stores);
    let queue = meter.wrap_queue(queue);
    let config = recovery_config(in_flight);
    let before = tiersweep::telemetry::metrics::registry().snapshot();
    let converged_before = tiersweep::telemetry::metrics::registry()
        .jobs_converged
        .get();
    let lost_before = tiersweep::telemetry::metrics::registry().claims_lost.get();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let started = Instant::now();
    let pools = Pools {
        scanners: scanners.max(1),
        split,
        cleaners: 1,
        drain: Duration::from_secs(10),
    };
    pool::spawn(&tracker, &cancel, &metered, &queue, &config, pools);
    tracker.close();
    let give_up = started + deadline;
    let converged = loop {
        let converged = (tiersweep::telemetry::metrics::registry()
            .jobs_converged
            .get()
            - converged_before) as usize;
        if converged >= changes || Instant::now() > give_up {
            break converged;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = started.elapsed();
    cancel.cancel();
    tracker.wait().await;
    let lost = tiersweep::telemetry::metrics::registry().claims_lost.get() - lost_before;
    let mode = if split {
        "pipeline"
    } else {
        "pipeline-unsplit"
    };
    let mut run = Run::new(mode, in_flight, scanners, converged, took, meter, lost);
    if converged < changes {
        let moved = tiersweep::telemetry::metrics::registry()
            .snapshot()
            .since(&before);
        tracing::warn!(converged, changes, ?moved, "pipeline run timed out");
        run.timed_out = true;
        run.counters = Some(moved);
    }
    Ok(run)
}

/// Keeps the blobs of `revs` that still exist in `lt`; how many that is.
pub(crate) async fn still_there(
    lt: &dyn tiersweep::lt::LtStore,
    revs: &mut Vec<Revision>,
) -> usize {
    let mut kept = Vec::with_capacity(revs.len());
    for rev in revs.drain(..) {
        if lt.stat(&rev).await.ok().flatten().is_some() {
            kept.push(rev);
        }
    }
    *revs = kept;
    revs.len()
}

/// The `q` quantile of sorted samples (nearest rank); 0 when there are none.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(0)
}

/// Latency of single writes, in microseconds, sorted.
#[derive(Debug, Clone, Serialize)]
pub struct WriteLatency {
    /// Where: `emulators` or `cloud` (the cloud model), and under which variant of the
    /// model (the cloud model's upload split), empty if none.
    pub setting: String,
    pub model: String,
    /// `bigtable`, `bigtable, background completion` or `noop`.
    pub changelog: String,
    pub op: String,
    pub p50_us: u64,
    pub p99_us: u64,
    pub samples: usize,
}

impl WriteLatency {
    pub fn from_samples(
        (setting, model): (&str, &str),
        changelog: &str,
        op: &str,
        mut us: Vec<u64>,
    ) -> Self {
        us.sort_unstable();
        Self {
            setting: setting.to_owned(),
            model: model.to_owned(),
            changelog: changelog.to_owned(),
            op: op.to_owned(),
            p50_us: percentile(&us, 0.5),
            p99_us: percentile(&us, 0.99),
            samples: us.len(),
        }
    }
}

/// Times `n` large puts then `n` deletes of fresh objects, one at a time.
pub async fn write_latency(
    writer: &tiersweep::writer::TieredStorage,
    setting: (&str, &str),
    changelog: &str,
    run: &str,
    n: usize,
) -> Result<[WriteLatency; 2], tiersweep::writer::WriteError> {
    let value = Bytes::from(vec![b'W'; 64 * 1024]);
    let mut puts = Vec::with_capacity(n);
    let mut deletes = Vec::with_capacity(n);
    for i in 0..n {
        let path = ObjectPath::new(format!("bench/{run}/w{i:06}")).expect("bench paths are valid");
        let t = Instant::now();
        writer.put(&path, value.clone()).await?;
        puts.push(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        writer.delete(&path).await?;
        deletes.push(t.elapsed().as_micros() as u64);
    }
    Ok([
        WriteLatency::from_samples(setting, changelog, "large put (64 KiB)", puts),
        WriteLatency::from_samples(setting, changelog, "delete", deletes),
    ])
}
