//! Audits spread over workers (`audit::fanout`) in the simulation: runs started racing
//! writers and recovery, two workers taking their range jobs from a queue as unreliable as
//! the cleanup queue, and jobs a bystander publishes — one for a run never recorded, one
//! replayed for a run long expired, a duplicate of a current one.
//!
//! What must hold whatever the queue and the bystanders do: a range is judged only for a
//! run recorded and current when its job is taken, and never asks a report-only run to
//! delete; every deletion it asks for is of a blob older than the run's minimum age when the
//! range's snapshot was taken (the one-process audit's rule, per range); a refused job is
//! dead-lettered with its reason; every current run's ranges are all judged at quiescence.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::plan::Replay;
use super::queue::ChaosQueue;
use tiersweep::audit::{AuditConfig, AuditRun, AuditRuns, AuditWorker, MemoryRuns, RangeJob};
use tiersweep::model::Timestamp;
use tiersweep::queue::JobQueue;
use tiersweep::stores::Stores;
use tiersweep::testing::faults::{Fault, Faults, Op, Rule};
use tiersweep::testing::trail::MemoryTrail;

/// How long a run's jobs are valid (`--run-ttl` defaults to a week; a schedule lasts hours,
/// so a job replayed for a run this much older is stale).
const RUN_TTL: Duration = Duration::from_secs(3 * 3600);

/// The runs started, their workers and what they asked for.
pub(super) struct FannedAudits {
    runs: Arc<MemoryRuns>,
    queue: ChaosQueue,
    trail: Arc<MemoryTrail>,
    /// Runs recorded by a coordinator (current when started).
    started: Vec<AuditRun>,
    /// Runs recorded already expired, whose jobs a bystander replays.
    expired: Vec<AuditRun>,
    cancel: CancellationToken,
    workers: Vec<JoinHandle<()>>,
}

impl FannedAudits {
    /// Two workers on `stores`, each listing call held `list_delay` (a big bucket: writes
    /// land between a range's snapshot and its listing).
    pub(super) fn new(seed: u64, stores: &Stores, list_delay: Duration) -> Self {
        let runs = Arc::new(MemoryRuns::new());
        let queue = ChaosQueue::new(seed, super::ACK_DEADLINE, 5);
        let trail = Arc::new(MemoryTrail::default());
        let cancel = CancellationToken::new();
        let slow_listing = Faults::new([Rule::on(Op::LtList, Fault::Delay(list_delay))]);
        let workers = (0..2)
            .map(|_| {
                let worker = AuditWorker::new(slow_listing.wrap(stores), runs.clone())
                    .trail(trail.clone())
                    .cancel_on(cancel.clone());
                let queue = queue.clone();
                tokio::spawn(async move {
                    let _ = tiersweep::audit::fanout::serve(&worker, &queue).await;
                })
            })
            .collect();
        Self {
            runs,
            queue,
            trail,
            started: Vec::new(),
            expired: Vec::new(),
            cancel,
            workers,
        }
    }

    /// Starts a run of the simulation's prefix, then publishes what `replay` says.
    pub(super) async fn start(
        &mut self,
        stores: &Stores,
        prefix: &str,
        min_age: Duration,
        delete: bool,
        replay: Option<Replay>,
    ) {
        let config = AuditConfig {
            prefix: format!("{prefix}/"),
            ranges: 4,
            min_age,
            delete,
            ..AuditConfig::default()
        };
        let changelog = stores.changelog().as_ref();
        let Ok(run) = tiersweep::audit::fanout::start(
            changelog,
            self.runs.as_ref(),
            &self.queue,
            &config,
            RUN_TTL,
        )
        .await
        else {
            return;
        };
        let job = match replay {
            None => return self.started.push(run),
            // A job naming a run nobody recorded.
            Some(Replay::Forged) => RangeJob {
                run: uuid::Uuid::now_v7().to_string(),
                range: 0,
            },
            // A job of a run that expired long ago, replayed (a backlog drained late).
            Some(Replay::Expired) => {
                let old = AuditRun::new(&config, run.created.saturating_sub(RUN_TTL * 2), RUN_TTL);
                if self.runs.create(&old).await.is_ok() {
                    self.expired.push(old.clone());
                }
                RangeJob {
                    run: old.run,
                    range: 0,
                }
            }
            // One of this run's jobs published twice.
            Some(Replay::Duplicate) => RangeJob {
                run: run.run.clone(),
                range: 0,
            },
            // A range the run does not have.
            Some(Replay::NoSuchRange) => RangeJob {
                run: run.run.clone(),
                range: run.ranges,
            },
        };
        self.started.push(run);
        let _ = self.queue.publish(vec![job.encode()]).await;
    }

    /// The deletions the workers asked for.
    pub(super) fn trail(&self) -> &MemoryTrail {
        &self.trail
    }

    /// What the workers did, judged against what each run allowed.
    pub(super) async fn check(&self) -> Result<(), String> {
        let entries = self
            .trail
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for e in &entries {
            let Some(run) = self.started.iter().find(|r| r.run == e.run) else {
                return Err(format!(
                    "a fanned-out audit asked to delete {} for run {}, which no coordinator started (forged or expired)",
                    e.blob, e.run
                ));
            };
            if !run.delete {
                return Err(format!(
                    "report-only audit run {} asked to delete {}",
                    run.run, e.blob
                ));
            }
            let min_age = Duration::from_millis(run.min_age_ms);
            if e.judged_at < run.created || e.created.saturating_add(min_age) >= e.judged_at {
                return Err(format!(
                    "audit run {} (created {}, minimum age {min_age:?}) asked to delete {}, created {}, in a range judged at {}",
                    run.run, run.created, e.blob, e.created, e.judged_at
                ));
            }
        }
        for old in &self.expired {
            if let Ok(Some(state)) = self.runs.get(&old.run).await
                && !state.done.is_empty()
            {
                return Err(format!(
                    "a replayed job of audit run {}, expired at {}, was judged: ranges {:?}",
                    old.run,
                    old.expires,
                    state.done.keys().collect::<Vec<_>>()
                ));
            }
        }
        if let Some(message) = self.queue.unexplained_dead_letter() {
            return Err(format!(
                "an audit job was dead-lettered without its reason: {message:?}"
            ));
        }
        Ok(())
    }

    /// Every started run has all its ranges judged.
    pub(super) async fn finished(&self) -> bool {
        for run in &self.started {
            match self.runs.get(&run.run).await {
                Ok(Some(state)) if state.done.len() == run.ranges => {}
                _ => return false,
            }
        }
        true
    }

    /// Runs still unfinished, for a failure message.
    pub(super) async fn unfinished(&self, now: Timestamp) -> Vec<String> {
        let mut out = Vec::new();
        for run in &self.started {
            if let Ok(Some(state)) = self.runs.get(&run.run).await
                && state.done.len() < run.ranges
            {
                out.push(format!(
                    "run {} ({} of {} ranges judged, created {:?} ago; queue {} pending)",
                    run.run,
                    state.done.len(),
                    run.ranges,
                    run.created.age_at(now),
                    self.queue.pending()
                ));
            }
        }
        out
    }

    /// The queue heals (the chaos stops) so the last jobs are delivered.
    pub(super) fn heal(&self) {
        self.queue.heal();
    }
}

impl Drop for FannedAudits {
    fn drop(&mut self) {
        self.cancel.cancel();
        for w in &self.workers {
            w.abort();
        }
    }
}
