//! An audit spread over processes: a coordinator records the run ([`runs`](super::runs))
//! and publishes one job per range; any number of workers take jobs, judge each range
//! exactly as a one-process audit would, and record its summary on the run.
//!
//! # What a job can and cannot do
//!
//! A job names a run and a range index, nothing else. The worker reads every parameter
//! (prefix, range count, minimum age, delete or not) from the run record, and refuses, with
//! nothing read from the bucket, a job that
//! * does not decode, or names a run id that is not a UUID;
//! * names a run that was never recorded (a forged job), or a range the run does not have;
//! * belongs to a run that expired by the changelog's clock (a stale job, replayed late);
//! * asks a worker without an audit trail to delete.
//!
//! A refused job is dead-lettered with its reason. A job for a range already finished is
//! acked and does nothing. A range judged twice (a redelivery while its first worker still
//! works) costs a second listing and may record a second recovery change for an orphan;
//! both converge to the same deletion, which is idempotent.
//!
//! Each worker takes its own changelog snapshot before each range, so the order that makes
//! one audit sound ([`snapshot`](super::snapshot)) holds per range.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::judge::Judge;
use super::report::report;
use super::runs::{AuditRun, AuditRuns, RunState};
use super::{
    AuditConfig, AuditError, AuditReport, AuditTrail, Counts, InFlight, RangeState, RangeSummary,
    ranges,
};
use crate::changelog::Changelog;
use crate::error::{ErrorKind, StoreError};
use crate::queue::{FlowControl, JobQueue, Message};
use crate::stores::Stores;
use crate::telemetry::metrics::METRICS;

/// The attribute that names a range job's run, so a dead letter shows it unparsed.
pub const RUN_ATTRIBUTE: &str = "tiersweep_audit_run";

/// One range of one run: all a job carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeJob {
    /// The run id.
    pub run: String,
    /// The range's index among the run's ranges.
    pub range: usize,
}

impl RangeJob {
    /// The job as a message.
    pub fn encode(&self) -> Message {
        let data = serde_json::to_vec(self).unwrap_or_default();
        Message {
            data: Bytes::from(data),
            attributes: [(RUN_ATTRIBUTE.to_owned(), self.run.clone())].into(),
        }
    }

    /// The job a message carries; the error says why it is none.
    pub fn decode(message: &Message) -> Result<Self, String> {
        let job: RangeJob = serde_json::from_slice(&message.data)
            .map_err(|e| format!("not an audit range job: {e}"))?;
        uuid::Uuid::parse_str(&job.run)
            .map_err(|e| format!("run id {:?} is not a UUID: {e}", job.run))?;
        Ok(job)
    }
}

/// Records a new run of `config`, valid for `ttl` on the changelog's clock, and publishes
/// a job for each of its ranges.
pub async fn start(
    changelog: &dyn Changelog,
    runs: &dyn AuditRuns,
    queue: &dyn JobQueue,
    config: &AuditConfig,
    ttl: Duration,
) -> Result<AuditRun, AuditError> {
    config.validate()?;
    let now = changelog.now().await.map_err(AuditError::Snapshot)?;
    let run = AuditRun::new(config, now, ttl);
    if !runs.create(&run).await.map_err(AuditError::Runs)? {
        return Err(AuditError::Config(format!("audit run {} exists", run.run)));
    }
    publish(
        &run,
        &RunState {
            run: run.clone(),
            done: Default::default(),
        },
        queue,
    )
    .await?;
    tracing::info!(run = %run.run, ranges = run.ranges, expires = %run.expires,
        "audit run recorded; range jobs published");
    Ok(run)
}

/// Publishes again the jobs of run `id`'s unfinished ranges (after a worker outage, or
/// once dead-lettered jobs' cause is fixed); returns the run and how many were published.
pub async fn resume(
    changelog: &dyn Changelog,
    runs: &dyn AuditRuns,
    queue: &dyn JobQueue,
    id: &str,
) -> Result<(AuditRun, usize), AuditError> {
    let state = runs
        .get(id)
        .await
        .map_err(AuditError::Runs)?
        .ok_or_else(|| AuditError::Config(format!("no audit run {id}")))?;
    let now = changelog.now().await.map_err(AuditError::Snapshot)?;
    if now >= state.run.expires {
        return Err(AuditError::Config(format!(
            "audit run {id} expired at {}; start a new one",
            state.run.expires
        )));
    }
    let published = publish(&state.run, &state, queue).await?;
    Ok((state.run, published))
}

async fn publish(
    run: &AuditRun,
    state: &RunState,
    queue: &dyn JobQueue,
) -> Result<usize, AuditError> {
    let jobs: Vec<Message> = (0..run.ranges)
        .filter(|i| !state.done.contains_key(i))
        .map(|range| {
            RangeJob {
                run: run.run.clone(),
                range,
            }
            .encode()
        })
        .collect();
    let n = jobs.len();
    queue.publish(jobs).await.map_err(AuditError::Runs)?;
    Ok(n)
}

/// Takes jobs from `queue` one at a time with `worker` (the test machinery's way in: the
/// binary's is `worker::audit::serve`, on the Pub/Sub connection).
#[cfg(any(test, feature = "testing"))]
pub async fn serve(worker: &AuditWorker, queue: &dyn JobQueue) -> Result<(), StoreError> {
    worker.serve(queue).await
}

/// Judges the range the job in `message` names, with `worker`.
#[cfg(any(test, feature = "testing"))]
pub async fn handle(worker: &AuditWorker, message: &Message) -> RangeOutcome {
    worker.handle(message).await
}

/// What a fanned-out run has found so far: finished ranges as done, the others as
/// interrupted (not finished yet). Orphan examples are in the workers' logs and the trail.
pub fn progress_report(state: &RunState) -> AuditReport {
    let run = &state.run;
    let all = ranges::split(&run.prefix, run.ranges);
    let mut totals = RangeSummary::default();
    let ranges = all
        .iter()
        .enumerate()
        .map(|(i, range)| match state.done.get(&i) {
            Some(summary) => {
                totals.add(summary);
                report(i, range, RangeState::Done, summary.clone())
            }
            None => report(i, range, RangeState::Interrupted, RangeSummary::default()),
        })
        .collect();
    AuditReport {
        run: run.run.clone(),
        prefix: run.prefix.clone(),
        min_age_s: run.min_age_ms / 1000,
        delete: run.delete,
        judged_at: run.created,
        changelog_rows: 0,
        malformed_changelog_rows: 0,
        totals,
        ranges,
        orphan_examples: Vec::new(),
        dangling_examples: Vec::new(),
    }
}

/// How a worker settled one job.
#[derive(Debug, Clone, PartialEq)]
pub enum RangeOutcome {
    /// The range was judged (and its deletions requested); its summary is on the run.
    Done(RangeSummary),
    /// The run had this range finished already: nothing done.
    AlreadyDone,
    /// The job was refused, with nothing read from the bucket (dead-lettered).
    Refused(String),
    /// The range failed (as a one-process audit's range fails: nothing deleted after the
    /// error); the job is nacked and retried.
    Failed(String),
    /// Shutdown came first; the job is nacked.
    Interrupted,
}

/// A `tiersweep audit --worker`: takes range jobs until cancelled.
#[derive(Debug)]
pub struct AuditWorker {
    stores: Stores,
    runs: Arc<dyn AuditRuns>,
    trail: Option<Arc<dyn AuditTrail>>,
    max_deletes_per_s: Option<f64>,
    max_lists_per_s: Option<f64>,
    cancel: CancellationToken,
    counts: Arc<Counts>,
}

impl AuditWorker {
    /// A worker on `stores` reading runs from `runs`; no trail (so it refuses deleting
    /// runs), no rate limits, never cancelled.
    pub fn new(stores: Stores, runs: Arc<dyn AuditRuns>) -> Self {
        Self {
            stores,
            runs,
            trail: None,
            max_deletes_per_s: None,
            max_lists_per_s: None,
            cancel: CancellationToken::new(),
            counts: Arc::default(),
        }
    }

    /// Records every deletion in `trail` first; without one, deleting runs are refused.
    pub fn trail(mut self, trail: Arc<dyn AuditTrail>) -> Self {
        self.trail = Some(trail);
        self
    }

    /// This worker's own rate limits, per range (`None`: unlimited).
    pub fn rates(mut self, max_deletes_per_s: Option<f64>, max_lists_per_s: Option<f64>) -> Self {
        self.max_deletes_per_s = max_deletes_per_s;
        self.max_lists_per_s = max_lists_per_s;
        self
    }

    /// Stops taking jobs, and the range in progress at its next page, once `cancel` fires.
    pub fn cancel_on(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// The live counts, for a progress display.
    pub fn counts(&self) -> Arc<Counts> {
        self.counts.clone()
    }

    /// Takes jobs from `queue` one at a time until cancelled or the subscription ends.
    pub(crate) async fn serve(&self, queue: &dyn JobQueue) -> Result<(), StoreError> {
        let flow = FlowControl {
            max_outstanding: 1,
            ..FlowControl::default()
        };
        let mut subscription = queue.subscribe(flow).await?;
        loop {
            let delivery = tokio::select! {
                () = self.cancel.cancelled() => break,
                next = subscription.next() => match next {
                    None => break,
                    Some(Err(e)) if e.kind == ErrorKind::Permanent => return Err(e),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "pulling audit jobs; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    Some(Ok(d)) => d,
                },
            };
            match self.handle(&delivery.message).await {
                RangeOutcome::Done(_) | RangeOutcome::AlreadyDone => delivery.ack(),
                RangeOutcome::Refused(reason) => {
                    if let Err(e) = queue.dead_letter(delivery, &reason).await {
                        tracing::error!(error = %e, "dead-lettering a refused audit job");
                    }
                }
                RangeOutcome::Failed(_) | RangeOutcome::Interrupted => delivery.nack(),
            }
        }
        subscription.stop_pulling().await;
        subscription.close().await;
        Ok(())
    }

    /// Judges the range one job names, if the job is genuine and current.
    pub(crate) async fn handle(&self, message: &Message) -> RangeOutcome {
        let outcome = self.judge(message).await;
        match &outcome {
            RangeOutcome::Refused(reason) => {
                METRICS.audit_jobs_refused.inc();
                tracing::error!(%reason, "audit job refused: nothing judged or deleted");
            }
            RangeOutcome::Failed(error) => {
                tracing::error!(%error, "audit range failed; the job will be retried");
            }
            _ => {}
        }
        outcome
    }

    /// The job in `message` and its run's state, if the job is one to judge now: it
    /// decodes, names a recorded, unexpired run and one of its ranges not yet done, and
    /// this worker can record the deletions the run asks for. Otherwise, the outcome.
    async fn admit(&self, message: &Message) -> Result<(RangeJob, RunState), RangeOutcome> {
        let job = match RangeJob::decode(message) {
            Ok(job) => job,
            Err(reason) => return Err(RangeOutcome::Refused(reason)),
        };
        let state = match self.runs.get(&job.run).await {
            Ok(Some(state)) => state,
            Ok(None) => {
                return Err(RangeOutcome::Refused(format!(
                    "no audit run {} is recorded (a forged job, or one for another table)",
                    job.run
                )));
            }
            Err(e) if e.kind == ErrorKind::Permanent => {
                return Err(RangeOutcome::Refused(e.to_string()));
            }
            Err(e) => return Err(RangeOutcome::Failed(e.to_string())),
        };
        let run = &state.run;
        if job.range >= run.ranges {
            return Err(RangeOutcome::Refused(format!(
                "audit run {} has {} ranges; the job names range {}",
                run.run, run.ranges, job.range
            )));
        }
        let now = match self.stores.changelog.now().await {
            Ok(now) => now,
            Err(e) => return Err(RangeOutcome::Failed(e.to_string())),
        };
        if now >= run.expires && !crate::mutants::on(crate::mutants::Mutant::ExpiredRunJobsJudged) {
            return Err(RangeOutcome::Refused(format!(
                "audit run {} expired at {} (now {now}): a stale job",
                run.run, run.expires
            )));
        }
        if state.done.contains_key(&job.range) {
            tracing::info!(run = %run.run, range = job.range, "range already audited");
            return Err(RangeOutcome::AlreadyDone);
        }
        if run.delete && self.trail.is_none() {
            return Err(RangeOutcome::Refused(format!(
                "audit run {} deletes, and this worker has no audit trail to record deletions in",
                run.run
            )));
        }
        Ok((job, state))
    }

    async fn judge(&self, message: &Message) -> RangeOutcome {
        let (job, state) = match self.admit(message).await {
            Ok(admitted) => admitted,
            Err(outcome) => return outcome,
        };
        let run = &state.run;
        let config = run.config(self.max_deletes_per_s, self.max_lists_per_s);
        if let Err(e) = config.validate() {
            return RangeOutcome::Refused(e.to_string());
        }
        let snapshot = match InFlight::take(self.stores.changelog.as_ref()).await {
            Ok(s) => s,
            Err(e) => return RangeOutcome::Failed(format!("reading the changelog: {e}")),
        };
        if run.delete && snapshot.malformed_count > 0 {
            return RangeOutcome::Failed(
                AuditError::MalformedChangelog {
                    count: snapshot.malformed_count,
                    first: snapshot.malformed.first().cloned().unwrap_or_default(),
                }
                .to_string(),
            );
        }
        let judge = Judge::new(
            &self.stores,
            &config,
            &snapshot,
            run.run.clone(),
            self.trail.as_deref(),
            &self.cancel,
            &self.counts,
        );
        let range = &ranges::split(&run.prefix, run.ranges)[job.range];
        let (state, summary) = judge.range(range).await;
        self.counts
            .ranges_finished
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match state {
            RangeState::Done | RangeState::Resumed => {
                if let Err(e) = self.runs.finish_range(&run.run, job.range, &summary).await {
                    return RangeOutcome::Failed(format!("recording the range finished: {e}"));
                }
                tracing::info!(run = %run.run, range = job.range, listed = summary.listed,
                    orphans = summary.orphans, deletes_requested = summary.deletes_requested,
                    "range audited");
                RangeOutcome::Done(summary)
            }
            RangeState::Failed { error } => RangeOutcome::Failed(error),
            RangeState::Interrupted => RangeOutcome::Interrupted,
        }
    }
}
