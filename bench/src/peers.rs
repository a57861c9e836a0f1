//! Side by side: tiersweep and what a team would run instead, on the same orphans, in the
//! capacity-limited cloud model ([`crate::capacity`]) on paused time.
//!
//! Every peer gets a world of its own prepared the same way: `live` large objects (an HV
//! tombstone naming a blob each) and `orphans` blobs that crashed writes left behind. The
//! peers that keep a changelog also find a changelog row per orphan (the write recorded its
//! change before it crashed); the listing collector's world has none (its writers keep no
//! changelog). Then each peer removes the orphans, its calls metered and admitted by the
//! model:
//!
//! * **pipeline**: tiersweep as deployed (production defaults: staleness threshold,
//!   claim lease, `upload_settle`): leased scanners publishing to a queue, cleaners
//!   converging.
//! * **seed loop**: the loop tiersweep replaces: one scan page at a time, per row claim,
//!   read HV, delete, remove, one change at a time.
//! * **listing GC**: `tiersweep audit --delete` ([`listing_config`]) over the whole
//!   bucket, with the pipeline converging the changes it records, as a deployment runs it. JuiceFS `gc`, Neon's scrubber and
//!   Iceberg's `remove_orphan_files` have this shape: list everything, join with the
//!   metadata, delete what nothing references and is old enough.
//!
//! A fourth peer, GCS lifecycle rules, runs no code and is modelled ([`Lifecycle`]).
//!
//! Per peer: virtual time until the last orphan was deleted and until the work was done
//! (every row removed, the settle's second passes included); Bigtable rows read and
//! written; GCS operations by class; Pub/Sub billed bytes; this process's CPU-seconds (the
//! peer's code plus the in-memory stores and the model, so comparable between peers only);
//! per million orphans.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::time::Instant;

use super::cost::{self, CostPerMillion};
use super::elastic::Deployed;
use crate::capacity::{Admissions, Capacity, CloudModel};
use crate::meter::{Latency, Meter};
use tiersweep::audit::{Audit, AuditConfig};
use tiersweep::error::StoreResult;
use tiersweep::hv::{HvWrite, Version};
use tiersweep::model::{ChangeId, ChangeRecord, ObjectMeta, ObjectPath, OwnerToken, Revision};
use tiersweep::queue::MemoryQueue;
use tiersweep::recovery::RecoveryConfig;
use tiersweep::stores::Stores;
use tiersweep::testing::MemoryStores;
use tiersweep::testing::trail::MemoryTrail;

/// What is prepared and who runs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PeersPlan {
    pub orphans: usize,
    /// Live large objects beside them: what a listing collector lists and joins too.
    pub live: usize,
    pub scanners: usize,
    pub cleaners: usize,
    pub cleaner_concurrency: usize,
    /// Changes the seed loop converges at once (its shape: one).
    pub seed_in_flight: usize,
    pub bigtable_nodes: u32,
    /// The pipeline's workers' Bigtable pace to start at (rows a second each): production's
    /// by default; a rate no run reaches turns the pacing off.
    pub bigtable_rows_per_s: f64,
    pub seed: u64,
}

impl PeersPlan {
    /// `orphans` orphans among ten times as many live objects.
    pub fn new(orphans: usize) -> Self {
        Self {
            orphans,
            live: orphans * 10,
            scanners: 2,
            cleaners: 4,
            cleaner_concurrency: 64,
            seed_in_flight: 1,
            bigtable_nodes: 2,
            bigtable_rows_per_s: RecoveryConfig::default().bigtable_rows_per_s,
            seed: 7,
        }
    }
}

/// One peer's run.
#[derive(Debug, Clone, Serialize)]
pub struct PeerRun {
    pub peer: String,
    /// How long an orphan waits before this peer may touch it: the staleness threshold,
    /// or the listing collector's minimum age.
    pub waits_s: f64,
    /// From the run's start until the last orphan was deleted (virtual time).
    pub deleted_after_s: f64,
    /// Until the work was done: every changelog row removed.
    pub done_after_s: f64,
    /// Orphans still there when the run gave up (0 for a run that finished).
    pub orphans_left: usize,
    /// Live objects' blobs gone at the end: a peer that deletes what HV references loses
    /// data. Must be 0.
    pub live_lost: usize,
    /// Per orphan, scaled to a million.
    pub cost: CostPerMillion,
    /// Calls the model refused, by service (a refused call is retried, and billed by none).
    pub admissions: Admissions,
}

/// GCS lifecycle rules as an orphan collector, modelled: writers upload with a custom time
/// of now and, once the upload is done and before the HV write, set the blob's custom time
/// far in the future (one metadata patch, class A); a rule `daysSinceCustomTime >= 1`
/// deletes what was never marked. GCS applies rules asynchronously, usually within a day of
/// the condition being met, and bills neither the rule's deletions nor its evaluation.
///
/// It gives up coverage, not safety: a crash between the mark and the HV write, and the
/// old blob of an overwrite whose delete was lost, leave blobs no rule will ever match.
#[derive(Debug, Clone, Serialize)]
pub struct Lifecycle {
    /// The earliest and latest an orphan goes after its crash.
    pub deleted_after_s: (f64, f64),
    /// Per million large writes: one metadata patch each.
    pub write_gcs_class_a: f64,
    /// Per million orphans: nothing is billed and no worker runs.
    pub cost: CostPerMillion,
}

impl Lifecycle {
    fn model() -> Self {
        const DAY: f64 = 24.0 * 3600.0;
        Self {
            deleted_after_s: (DAY, 2.0 * DAY),
            write_gcs_class_a: 1e6,
            cost: CostPerMillion {
                per: "orphan (lifecycle rule, modelled)".into(),
                cpu_s: Some(0.0),
                ..CostPerMillion::default()
            },
        }
    }
}

/// What the write path pays per million large writes for a peer's recovery to work.
#[derive(Debug, Clone, Serialize)]
pub struct WriteTax {
    pub peer: String,
    pub bigtable_rows: f64,
    pub gcs_class_a: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeersReport {
    pub plan: PeersPlan,
    pub model: CloudModel,
    pub audit_min_age_s: u64,
    pub audit_lists_per_s: Option<f64>,
    pub audit_deletes_per_s: Option<f64>,
    pub runs: Vec<PeerRun>,
    pub lifecycle: Lifecycle,
    pub write_tax: Vec<WriteTax>,
}

/// Runs every peer (see the module doc). Needs paused time in the caller's runtime.
pub async fn run(plan: PeersPlan) -> StoreResult<PeersReport> {
    let audit = listing_config();
    let runs = vec![
        pipeline(&plan).await,
        seed_loop(&plan).await,
        listing(&plan, &audit).await,
    ];
    let changelog = cost::large_writes(1_000).await?.bigtable_rows;
    let noop = cost::large_writes_without_changelog(1_000)
        .await?
        .bigtable_rows;
    let tax = |peer: &str, bigtable_rows: f64, gcs_class_a: f64| WriteTax {
        peer: peer.into(),
        bigtable_rows,
        gcs_class_a,
    };
    let lifecycle = Lifecycle::model();
    Ok(PeersReport {
        plan,
        model: CloudModel::gcp(plan.bigtable_nodes),
        audit_min_age_s: audit.min_age.as_secs(),
        audit_lists_per_s: audit.max_lists_per_s,
        audit_deletes_per_s: audit.max_deletes_per_s,
        write_tax: vec![
            tax("pipeline", changelog - noop, 0.0),
            tax("seed loop", changelog - noop, 0.0),
            tax("listing GC", 0.0, 0.0),
            tax("lifecycle rule", 0.0, lifecycle.write_gcs_class_a),
        ],
        runs,
        lifecycle,
    })
}

/// `tiersweep audit --delete` as a team would run it beside a live cluster: its defaults
/// (minimum age one day, 16 ranges, 4 at a time) with two rates lowered to what two nodes
/// carry beside recovery:
///
/// * 5 listing calls a second, not 50: each page of 1,000 names is joined with HV in one
///   read of 1,000 rows, and 50,000 rows/s is over two nodes' whole budget (the model
///   refuses the reads, retries run out, and a range fails closed, deleting nothing).
/// * 25 deletion requests a second, not 50: each becomes a change that recovery defers
///   for the upload settle, and at 50/s the deferred rows (30,000) outgrow the scanners'
///   watch sets (10,000 each), which pins their rounds' key bound: every round then
///   re-reads every deferred row, and those reads overload the cluster.
pub fn listing_config() -> AuditConfig {
    AuditConfig {
        delete: true,
        max_lists_per_s: Some(5.0),
        max_deletes_per_s: Some(25.0),
        ..AuditConfig::default()
    }
}

/// A world: live objects and orphans, with a changelog row per orphan if `changelog`.
struct World {
    memory: MemoryStores,
    orphans: Vec<Revision>,
    live: Vec<Revision>,
}

impl World {
    async fn prepare(plan: &PeersPlan, changelog: bool) -> Self {
        let memory = MemoryStores::new();
        let stores = memory.stores();
        let now = stores.clock().now();
        let blob = Bytes::from_static(b"large object bytes");
        let mut live = Vec::with_capacity(plan.live);
        for i in 0..plan.live {
            let path = spread("live", i);
            let rev = Revision::mint(&path);
            memory.lt.plant(&rev, blob.clone(), now);
            live.push(rev.clone());
            let write = HvWrite::Tombstone(rev, ObjectMeta::default());
            stores
                .hv()
                .compare_and_write(&path, None, &write, &Version::mint())
                .await
                .expect("planting a live object");
        }
        let mut orphans = Vec::with_capacity(plan.orphans);
        for i in 0..plan.orphans {
            let path = spread("orphan", i);
            let rev = Revision::mint(&path);
            memory.lt.plant(&rev, blob.clone(), now);
            if changelog {
                let record =
                    ChangeRecord::new(path, None, Some(rev.clone()), OwnerToken::mint("crashed"));
                stores
                    .changelog()
                    .record(&ChangeId::mint_at(now), &record)
                    .await
                    .expect("recording a crashed change");
            }
            orphans.push(rev);
        }
        Self {
            memory,
            orphans,
            live,
        }
    }

    /// The stores through the model (fresh, so its ramps start at the peer's first call),
    /// with a meter behind it: what it counts is what the services admitted (a refused
    /// call is billed by none; the model counts those). Measuring starts now.
    fn cloud(&self, plan: &PeersPlan) -> (Stores, Measuring) {
        let capacity = Arc::new(Capacity::new(
            CloudModel::gcp(plan.bigtable_nodes),
            plan.seed,
        ));
        let meter = Meter::new(Latency::NONE);
        let metered = meter.wrap(&self.memory.stores());
        let modelled = tiersweep::testing::intercept::wrap(capacity.clone(), &metered);
        let measuring = Measuring {
            capacity,
            meter,
            started: Instant::now(),
            cpu_s: cpu_s(),
        };
        (modelled, measuring)
    }

    /// How many live objects' blobs are gone.
    async fn live_lost(&self) -> usize {
        let mut live = self.live.clone();
        self.live.len() - super::still_there(self.memory.lt.as_ref(), &mut live).await
    }

    /// Drops the orphans deleted since the last call; how many are left.
    async fn left(&mut self) -> usize {
        super::still_there(self.memory.lt.as_ref(), &mut self.orphans).await
    }

    /// Waits until the orphans are gone and the changelog is empty, or `give_up` passes.
    /// Returns (deleted after, done after) from `started`.
    async fn watch(&mut self, started: Instant, give_up: Duration) -> (Duration, Duration) {
        let mut deleted = None;
        loop {
            if deleted.is_none() && self.left().await == 0 {
                deleted = Some(started.elapsed());
            }
            if let Some(d) = deleted
                && self.memory.changelog.is_empty()
            {
                return (d, started.elapsed());
            }
            if started.elapsed() > give_up {
                let _ = self.left().await;
                let d = deleted.unwrap_or(give_up);
                return (d, started.elapsed());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Object paths whose first character varies, so a listing split into name ranges
/// ([`tiersweep::audit::ranges::split`]) gives every range its share.
fn spread(kind: &str, i: usize) -> ObjectPath {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let c = ALPHABET[i % ALPHABET.len()] as char;
    ObjectPath::new(format!("{c}{:x}/{kind}/{i:08}", i / ALPHABET.len() % 256))
        .expect("bench paths are valid")
}

/// Scanners and cleaners as deployed, on `stores`, their jobs metered by `meter`.
fn start_recovery(
    stores: &Stores,
    meter: &Arc<Meter>,
    config: &RecoveryConfig,
    plan: &PeersPlan,
) -> Deployed {
    let queue = MemoryQueue::new(
        plan.scanners * config.max_queued_claims * 2 + 10_000,
        config.max_delivery_attempts,
    );
    let queue = meter.wrap_queue(Arc::new(queue));
    Deployed::start(stores, queue, config, plan.scanners, plan.cleaners)
}

fn production(plan: &PeersPlan) -> RecoveryConfig {
    RecoveryConfig {
        cleaner_concurrency: plan.cleaner_concurrency,
        bigtable_rows_per_s: plan.bigtable_rows_per_s,
        ..RecoveryConfig::default()
    }
}

/// How long a peer may take, in virtual time, before its run is reported unfinished.
fn give_up(plan: &PeersPlan) -> Duration {
    Duration::from_secs(3600 + plan.orphans as u64)
}

/// This process's CPU-seconds so far.
fn cpu_s() -> f64 {
    super::cpu::cpu_s(std::process::id()).unwrap_or(0.0)
}

/// A peer's run in progress: the model, the meter behind it, and when (and at what CPU
/// time) it began.
struct Measuring {
    capacity: Arc<Capacity>,
    meter: Arc<Meter>,
    started: Instant,
    cpu_s: f64,
}

impl Measuring {
    /// The run's figures, per million orphans; `waits` is how long an orphan waits before
    /// the peer may touch it, `times` what [`World::watch`] returned.
    async fn finish(
        self,
        peer: &str,
        plan: &PeersPlan,
        waits: Duration,
        (deleted, done): (Duration, Duration),
        world: &mut World,
    ) -> PeerRun {
        let cpu = cpu_s() - self.cpu_s;
        let left = world.left().await;
        let meter = &self.meter;
        let rows = meter.rows();
        let mut cost = cost::metered(&meter.calls(), &rows, &meter.rpcs(), plan.orphans);
        cost.per = format!("orphan ({peer})");
        cost.cpu_s = Some(cpu * 1e6 / plan.orphans.max(1) as f64);
        let live_lost = world.live_lost().await;
        eprintln!(
            "[peers] {peer}: orphans deleted after {:.0} s, done after {:.0} s (virtual), {left} left",
            deleted.as_secs_f64(),
            done.as_secs_f64()
        );
        PeerRun {
            peer: peer.into(),
            waits_s: waits.as_secs_f64(),
            deleted_after_s: deleted.as_secs_f64(),
            done_after_s: done.as_secs_f64(),
            orphans_left: left,
            live_lost,
            cost,
            admissions: self.capacity.admissions(),
        }
    }
}

async fn pipeline(plan: &PeersPlan) -> PeerRun {
    let mut world = World::prepare(plan, true).await;
    let config = production(plan);
    tokio::time::sleep(config.protocol.staleness_threshold).await;
    let (stores, measuring) = world.cloud(plan);
    let recovery = start_recovery(&stores, &measuring.meter, &config, plan);
    let times = world.watch(measuring.started, give_up(plan)).await;
    recovery.stop().await;
    let waits = config.protocol.staleness_threshold;
    measuring
        .finish("pipeline", plan, waits, times, &mut world)
        .await
}

async fn seed_loop(plan: &PeersPlan) -> PeerRun {
    let mut world = World::prepare(plan, true).await;
    let threshold = production(plan).protocol.staleness_threshold;
    tokio::time::sleep(threshold).await;
    let (stores, measuring) = world.cloud(plan);
    // The loop wraps its stores in the meter it is given: the one behind the model counts.
    let outer = Meter::new(Latency::NONE);
    let run = super::shapes::seed(&stores, &outer, plan.orphans, plan.seed_in_flight);
    if let Err(e) = run.await {
        tracing::warn!(error = %e, "the seed loop stopped on an error");
    }
    let times = world.watch(measuring.started, Duration::ZERO).await;
    measuring
        .finish("seed loop", plan, threshold, times, &mut world)
        .await
}

async fn listing(plan: &PeersPlan, audit: &AuditConfig) -> PeerRun {
    let mut world = World::prepare(plan, false).await;
    tokio::time::sleep(audit.min_age + Duration::from_secs(1)).await;
    let (stores, measuring) = world.cloud(plan);
    let config = production(plan);
    let started = measuring.started;
    let recovery = start_recovery(&stores, &measuring.meter, &config, plan);
    let run = Audit::new(stores.clone(), audit.clone())
        .trail(Arc::new(MemoryTrail::default()))
        .run();
    // An audit that did not finish leaves orphans nobody will take: waiting for them
    // would only idle; recovery gets the time its settle needs for what was recorded.
    let give_up = match run.await {
        Ok(report) if report.complete() => give_up(plan),
        Ok(report) => {
            tracing::warn!(failed = report.failed().count(), "the audit left ranges");
            started.elapsed() + config.upload_settle + Duration::from_secs(600)
        }
        Err(e) => {
            tracing::warn!(error = %e, "the audit failed");
            started.elapsed() + config.upload_settle + Duration::from_secs(600)
        }
    };
    let times = world.watch(started, give_up).await;
    recovery.stop().await;
    measuring
        .finish("listing GC", plan, audit.min_age, times, &mut world)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every peer removes every orphan and leaves the live objects; the listing collector
    /// reads a row per live object and lists every blob, the pipeline and the seed loop
    /// touch only the orphans' rows.
    #[tokio::test(start_paused = true)]
    async fn every_peer_removes_the_orphans_and_only_them() {
        let plan = PeersPlan::new(60);
        let report = run(plan).await.expect("the peers' runs");
        assert_eq!(report.runs.len(), 3);
        for r in &report.runs {
            assert_eq!(r.orphans_left, 0, "{r:#?}");
            assert_eq!(r.live_lost, 0, "{r:#?}");
            assert!(r.done_after_s >= r.deleted_after_s, "{r:#?}");
            assert!(
                r.cost.gcs_free >= 1e6,
                "a delete per orphan at least: {r:#?}"
            );
        }
        let by = |peer: &str| report.runs.iter().find(|r| r.peer == peer).expect(peer);
        let listing = by("listing GC");
        assert_eq!(listing.waits_s, 24.0 * 3600.0);
        assert!(listing.cost.gcs_class_a > 0.0, "it lists: {listing:#?}");
        assert!(
            listing.cost.bigtable_rows > by("pipeline").cost.bigtable_rows,
            "it joins every live object with HV: {report:#?}"
        );
        assert_eq!(by("seed loop").cost.gcs_class_a, 0.0);
        assert_eq!(by("seed loop").cost.pubsub_billed_gb, 0.0, "no queue");
        assert!(
            by("pipeline").cost.pubsub_billed_gb > 0.0,
            "jobs published and delivered"
        );
        assert_eq!(
            report.write_tax[0].bigtable_rows, 2e6,
            "{:#?}",
            report.write_tax
        );
    }
}
