//! The demo behind `tiersweep demo`: writer load with injected crashes, then a scanner pool
//! and a cleaner pool working through what the crashes left, then the invariant checker's
//! verdict. It runs on whatever [`Stores`] and [`JobQueue`] it is given, so the same code
//! demonstrates the in-memory embedded mode and the emulators.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use rand::Rng;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::StoreResult;
use crate::model::ObjectPath;
use crate::protocol::ProtocolConfig;
use crate::queue::JobQueue;
use crate::recovery::pool::{self, Pools};
use crate::recovery::{RecoveryConfig, inspect};
use crate::stores::Stores;
use crate::testing::faults::{Fault, Faults, Rule};
use crate::testing::invariants::{self, Acceptable};
use crate::writer::{TieredStorage, WriterConfig};

#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub writes: usize,
    /// Probability that a write is crashed at a random one of its store calls.
    pub crash_rate: f64,
    pub scanners: u16,
    pub cleaners: usize,
    /// Recovery runs elsewhere (the scanner and cleaner pools of docker-compose or a
    /// cluster): write, then only watch the changelog drain.
    pub external_recovery: bool,
    /// Writes in flight at once.
    pub writer_concurrency: usize,
    /// Writes per object: several writes to one object exercise overwrites and deletes.
    pub writes_per_object: usize,
    /// Short timings, so the demo waits seconds for changes to go stale.
    pub protocol: ProtocolConfig,
    /// Give up waiting for convergence after this long.
    pub deadline: Duration,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            writes: 1000,
            crash_rate: 0.1,
            scanners: 2,
            cleaners: 4,
            external_recovery: false,
            writer_concurrency: 32,
            writes_per_object: 4,
            protocol: ProtocolConfig {
                heartbeat_interval: Duration::from_millis(500),
                staleness_threshold: Duration::from_secs(2),
                safety_margin: Duration::from_millis(500),
            },
            deadline: Duration::from_secs(300),
        }
    }
}

/// How long a writer load must wait, at most, for scanner and cleaner pools running with
/// `recovery` (and the writers' `protocol`) to converge every change it left behind — the
/// bound `tiersweep demo --external-recovery` waits for, and refuses to start beyond.
///
/// A crashed change goes stale after the threshold and is claimed within a scanner's idle
/// poll. One recovered before its HV write (the commonest crash) is deferred by the cleaner
/// for `upload_settle` (its upload may still land) and then needs a second pass: a running
/// scanner reads the deferred row again when the claim's lease ends or, at the latest, at
/// its next full sweep — so the later of the two bounds the wait. A minute of margin covers
/// delivery and the convergence itself.
pub fn external_recovery_bound(protocol: &ProtocolConfig, recovery: &RecoveryConfig) -> Duration {
    let pass = protocol.staleness_threshold + recovery.idle_poll;
    pass + recovery.upload_settle
        + recovery.claim_lease.max(recovery.full_sweep_every)
        + pass
        + Duration::from_secs(60)
}

/// The verdict, as `tiersweep demo --json` prints it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DemoReport {
    pub backend: String,
    pub writes: usize,
    pub acked: usize,
    pub crashes_injected: usize,
    /// Changelog rows recovery removed.
    pub changes_recovered: usize,
    pub orphans: usize,
    pub dangling_tombstones: usize,
    pub lost_objects: usize,
    pub changelog_remaining: usize,
    /// The independent check: `tiersweep audit` over the demo's objects after recovery,
    /// judging every blob (no minimum age). It must find no orphan.
    pub audit_listed: u64,
    pub audit_orphans: u64,
    pub audit_dangling: u64,
    pub elapsed_s: f64,
    pub write_phase_s: f64,
    pub recovery_phase_s: f64,
    pub converged: bool,
}

/// What the demo is doing, for a progress display.
#[derive(Debug, Clone, Copy)]
pub enum DemoProgress {
    Writing {
        done: usize,
        total: usize,
        crashed: usize,
    },
    WaitingForStaleness(Duration),
    Recovering {
        remaining: usize,
        total: usize,
    },
}

/// Demo values: large ones go to LT, small ones stay inline.
const INLINE_THRESHOLD: usize = 1024;

fn value(rng: &mut impl Rng, tag: &str) -> Option<Bytes> {
    match rng.random_range(0..10) {
        0 => None,
        1 | 2 => Some(Bytes::from(format!("small {tag}"))),
        _ => Some(Bytes::from(format!(
            "{tag}:{}",
            "L".repeat(INLINE_THRESHOLD * 2)
        ))),
    }
}

enum Outcome {
    Acked,
    Failed,
    Crashed,
}

/// One put (or delete, for `None`) of `path`, crashed where `crash` says.
async fn write_once(
    stores: &Stores,
    config: WriterConfig,
    path: &ObjectPath,
    value: Option<Bytes>,
    crash: Option<Rule>,
) -> Outcome {
    let faults = Faults::new(crash);
    let writer =
        TieredStorage::new(faults.wrap(stores), config).expect("demo writer config is valid");
    let path = path.clone();
    let op = async move {
        let result = match value {
            Some(v) => writer.put(&path, v).await,
            None => writer.delete(&path).await,
        };
        result.map_err(|e| (path, e))
    };
    match faults.run_until_crash(op).await {
        Some(Ok(())) => Outcome::Acked,
        Some(Err((path, e))) => {
            tracing::warn!(object = %path, error = %e, "write failed");
            Outcome::Failed
        }
        None => Outcome::Crashed,
    }
}

pub async fn run(
    backend: &str,
    stores: Stores,
    queue: Arc<dyn JobQueue>,
    config: &DemoConfig,
    progress: impl Fn(DemoProgress) + Send + Sync,
) -> StoreResult<DemoReport> {
    let started = Instant::now();
    let writer_config = WriterConfig {
        inline_threshold: INLINE_THRESHOLD,
        protocol: config.protocol,
        ..WriterConfig::default()
    };
    let recovery = RecoveryConfig {
        protocol: config.protocol,
        scan_batch: 200,
        // A settled change's second pass is read again when its claim lease ends (the
        // scanner watches a claimed row until then; the cleaner's deferral does not tell
        // it), so a lease much longer than the settle would hold the second pass back.
        // Cleaners extend the lease of a job they are working on.
        claim_lease: config.protocol.staleness_threshold * 3,
        // The Pub/Sub emulator never redelivers what it handed to a pull stream that went
        // away (a cleaner stopped mid-run): its scanner publishes such a job again.
        republish_after: config.protocol.staleness_threshold * 2,
        idle_poll: Duration::from_millis(200),
        cleaner_concurrency: 32,
        // On loopback nothing stays in flight for long; a short settle shows the second
        // pass of changes recovered before their HV write without a ten-minute wait.
        upload_settle: config.protocol.staleness_threshold,
        ..RecoveryConfig::default()
    };
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let objects = config.writes.div_ceil(config.writes_per_object.max(1));
    let done = AtomicUsize::new(0);
    let crashed = AtomicUsize::new(0);
    let acked = AtomicUsize::new(0);

    // Phase 1: writers, each object's writes in order, objects concurrently.
    let expected: BTreeMap<ObjectPath, Acceptable> = futures::stream::iter(0..objects)
        .map(|o| {
            let stores = stores.clone();
            let (done, crashed, acked, progress) = (&done, &crashed, &acked, &progress);
            let path = ObjectPath::new(format!("demo/{run_id}/{o:06}")).expect("valid path");
            let writes = config
                .writes_per_object
                .min(config.writes - o * config.writes_per_object);
            async move {
                let mut acceptable: Acceptable = vec![None];
                for w in 0..writes {
                    let (next, crash) = {
                        let mut rng = rand::rng();
                        let crash = rng.random_bool(config.crash_rate.clamp(0.0, 1.0)).then(|| {
                            let fault = if rng.random_bool(0.5) {
                                Fault::CrashBefore
                            } else {
                                Fault::CrashAfter
                            };
                            Rule::nth_call(rng.random_range(0..5), fault)
                        });
                        (value(&mut rng, &format!("{o}.{w}")), crash)
                    };
                    match write_once(&stores, writer_config, &path, next.clone(), crash).await {
                        Outcome::Acked => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            acceptable = vec![next];
                        }
                        Outcome::Failed => acceptable.push(next),
                        Outcome::Crashed => {
                            crashed.fetch_add(1, Ordering::Relaxed);
                            acceptable.push(next);
                        }
                    }
                    let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if d % 50 == 0 || d == config.writes {
                        progress(DemoProgress::Writing {
                            done: d,
                            total: config.writes,
                            crashed: crashed.load(Ordering::Relaxed),
                        });
                    }
                }
                (path, acceptable)
            }
        })
        .buffer_unordered(config.writer_concurrency.max(1))
        .collect()
        .await;
    let write_phase = started.elapsed();

    // Phase 2: let what the crashes left go stale.
    let wait = config.protocol.staleness_threshold + Duration::from_millis(200);
    progress(DemoProgress::WaitingForStaleness(wait));
    tokio::time::sleep(wait).await;

    // Phase 3: the pools, until the changelog is empty.
    let recovery_started = Instant::now();
    let page = recovery.scan_batch;
    let threshold = config.protocol.staleness_threshold;
    let initial = inspect::backlog(stores.changelog.as_ref(), &stores.clock, threshold, page)
        .await?
        .rows;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    if !config.external_recovery {
        let pools = Pools {
            scanners: config.scanners.max(1),
            split: true,
            cleaners: config.cleaners.max(1),
            drain: Duration::from_secs(5),
        };
        pool::spawn(&tracker, &cancel, &stores, &queue, &recovery, pools);
    }
    tracker.close();
    let give_up = Instant::now() + config.deadline;
    let remaining = loop {
        let remaining = inspect::backlog(stores.changelog.as_ref(), &stores.clock, threshold, page)
            .await?
            .rows;
        progress(DemoProgress::Recovering {
            remaining,
            total: initial,
        });
        if remaining == 0 || Instant::now() > give_up {
            break remaining;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    cancel.cancel();
    tracker.wait().await;
    let recovery_phase = recovery_started.elapsed();

    let check = invariants::check(&stores, &expected).await?;
    let audit = crate::audit::Audit::new(
        stores.clone(),
        crate::audit::AuditConfig {
            prefix: format!("demo/{run_id}/"),
            min_age: Duration::ZERO,
            max_lists_per_s: None,
            dangling: true,
            ..crate::audit::AuditConfig::default()
        },
    )
    .run()
    .await
    .map_err(|e| {
        crate::error::StoreError::new(
            crate::error::StoreKind::Lt,
            "audit",
            format!("demo/{run_id}/"),
            crate::error::ErrorKind::Permanent,
            e.to_string(),
        )
    })?;
    let audit_clean = audit.complete() && audit.totals.orphans == 0 && audit.totals.dangling == 0;
    Ok(DemoReport {
        backend: backend.to_owned(),
        writes: config.writes,
        acked: acked.into_inner(),
        crashes_injected: crashed.into_inner(),
        changes_recovered: initial.saturating_sub(remaining),
        orphans: check.orphans.len(),
        dangling_tombstones: check.dangling.len(),
        lost_objects: check.lost.len(),
        changelog_remaining: check.changelog_remaining,
        audit_listed: audit.totals.listed,
        audit_orphans: audit.totals.orphans,
        audit_dangling: audit.totals.dangling,
        elapsed_s: started.elapsed().as_secs_f64(),
        write_phase_s: write_phase.as_secs_f64(),
        recovery_phase_s: recovery_phase.as_secs_f64(),
        converged: check.is_converged() && audit_clean,
    })
}
