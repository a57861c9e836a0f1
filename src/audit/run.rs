//! One audit run from start to end: the snapshot, the ranges in turn, the report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::judge::Judge;
use super::report::report;
use super::{
    AuditConfig, AuditError, AuditReport, AuditTrail, Checkpoint, Counts, InFlight, CheckpointState,
    RangeReport, RangeState, RangeSummary, ranges,
};
use crate::lt::NameRange;
use crate::stores::Stores;

/// One audit run: [`Audit::new`], options, then [`Audit::run`].
#[derive(Debug)]
pub struct Audit {
    stores: Stores,
    config: AuditConfig,
    checkpoint: Option<Checkpoint>,
    trail: Option<Arc<dyn AuditTrail>>,
    cancel: CancellationToken,
    counts: Arc<Counts>,
}

impl Audit {
    /// An audit of `stores` with `config`; no checkpoint, no trail, never cancelled.
    pub fn new(stores: Stores, config: AuditConfig) -> Self {
        Self {
            stores,
            config,
            checkpoint: None,
            trail: None,
            cancel: CancellationToken::new(),
            counts: Arc::default(),
        }
    }

    /// Saves progress to `checkpoint` after each range, and resumes from it.
    pub fn checkpoint(mut self, checkpoint: Checkpoint) -> Self {
        self.checkpoint = Some(checkpoint);
        self
    }

    /// Records every deletion requested in `trail` first. Required with `delete`.
    pub fn trail(mut self, trail: Arc<dyn AuditTrail>) -> Self {
        self.trail = Some(trail);
        self
    }

    /// Stops at the next page or deletion once `cancel` fires; unfinished ranges are
    /// reported interrupted and stay in the checkpoint for a resume.
    pub fn cancel_on(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// The live counts, for a progress display.
    pub fn counts(&self) -> Arc<Counts> {
        self.counts.clone()
    }

    /// Runs the audit to its end (or its cancellation): every range not finished by an earlier run of its checkpoint.
    pub async fn run(self) -> Result<AuditReport, AuditError> {
        let config = &self.config;
        config.validate()?;
        if config.delete && self.trail.is_none() {
            return Err(AuditError::Config(
                "deleting needs an audit trail to record each deletion in".into(),
            ));
        }
        let mut progress = self.progress().await?;
        let snapshot = self.snapshot(&progress.run).await?;

        let judge = Judge::new(
            &self.stores,
            config,
            &snapshot,
            progress.run.clone(),
            self.trail.as_deref(),
            &self.cancel,
            &self.counts,
        );
        let reports = self.audit_ranges(&judge, &mut progress).await?;

        let mut totals = RangeSummary::default();
        for r in &reports {
            totals.add(&r.summary);
        }
        let out = AuditReport {
            run: progress.run.clone(),
            prefix: config.prefix.clone(),
            min_age_s: config.min_age.as_secs(),
            delete: config.delete,
            judged_at: snapshot.taken_at,
            changelog_rows: snapshot.rows,
            malformed_changelog_rows: snapshot.malformed_count,
            totals,
            ranges: reports,
            orphan_examples: judge
                .examples
                .into_inner()
                .unwrap_or_else(|e| e.into_inner()),
            dangling_examples: judge
                .dangling
                .into_inner()
                .unwrap_or_else(|e| e.into_inner()),
        };
        if out.complete()
            && let Some(cp) = &self.checkpoint
        {
            cp.remove().await?;
        }
        Ok(out)
    }

    /// A new run's progress, or the checkpoint's if it holds one of the same audit.
    async fn progress(&self) -> Result<CheckpointState, AuditError> {
        let config = &self.config;
        let progress = CheckpointState {
            run: uuid::Uuid::now_v7().to_string(),
            prefix: config.prefix.clone(),
            ranges: config.ranges,
            min_age_ms: u64::try_from(config.min_age.as_millis()).unwrap_or(u64::MAX),
            delete: config.delete,
            done: BTreeMap::new(),
        };
        if let Some(cp) = &self.checkpoint
            && let Some(saved) = cp.load().await?
        {
            if !saved.same_audit(&progress) {
                return Err(AuditError::CheckpointMismatch {
                    path: cp.path().display().to_string(),
                    theirs: format!(
                        "prefix {:?}, {} ranges, min age {} ms, delete {}",
                        saved.prefix, saved.ranges, saved.min_age_ms, saved.delete
                    ),
                });
            }
            tracing::info!(run = %saved.run, finished = saved.done.len(),
                "resuming the audit from its checkpoint");
            return Ok(saved);
        }
        Ok(progress)
    }

    /// The changelog's in-flight changes, against which listed blobs are judged. Malformed
    /// rows fail a deleting audit: a blob one names could be taken for an orphan.
    async fn snapshot(&self, run: &str) -> Result<InFlight, AuditError> {
        let snapshot = InFlight::take(self.stores.changelog.as_ref())
            .await
            .map_err(AuditError::Snapshot)?;
        if snapshot.malformed_count > 0 {
            let first = snapshot.malformed.first().cloned().unwrap_or_default();
            if self.config.delete {
                return Err(AuditError::MalformedChangelog {
                    count: snapshot.malformed_count,
                    first,
                });
            }
            tracing::warn!(count = snapshot.malformed_count, %first,
                "malformed changelog rows: blobs they name may be reported as orphans");
        }
        tracing::info!(run = %run, rows = snapshot.rows, judged_at = %snapshot.taken_at,
            "changelog read; listing the bucket");
        Ok(snapshot)
    }

    /// Audits the ranges `progress` has not finished, `concurrency` at a time, saving the
    /// checkpoint after each; returns every range's report, in order.
    async fn audit_ranges(
        &self,
        judge: &Judge<'_>,
        progress: &mut CheckpointState,
    ) -> Result<Vec<RangeReport>, AuditError> {
        let config = &self.config;
        let all = ranges::split(&config.prefix, config.ranges);
        let mut reports: Vec<RangeReport> = Vec::with_capacity(all.len());
        let todo: Vec<(usize, NameRange)> = all
            .iter()
            .cloned()
            .enumerate()
            .filter(|(i, range)| match progress.done.get(i) {
                Some(summary) => {
                    reports.push(report(*i, range, RangeState::Resumed, summary.clone()));
                    false
                }
                None => true,
            })
            .collect();
        let mut finished = futures::stream::iter(todo)
            .map(|(i, range)| async move {
                let (state, summary) = judge.range(&range).await;
                (i, range, state, summary)
            })
            .buffer_unordered(config.concurrency);
        while let Some((i, range, state, summary)) = finished.next().await {
            self.counts.ranges_finished.fetch_add(1, Ordering::Relaxed);
            match &state {
                RangeState::Done => {
                    progress.done.insert(i, summary.clone());
                    if let Some(cp) = &self.checkpoint {
                        cp.save(progress).await?;
                    }
                    tracing::info!(
                        range = i,
                        listed = summary.listed,
                        orphans = summary.orphans,
                        deletes_requested = summary.deletes_requested,
                        "range audited"
                    );
                }
                RangeState::Failed { error } => {
                    tracing::error!(range = i, %error, "range failed; nothing more deleted in it");
                }
                RangeState::Interrupted | RangeState::Resumed => {}
            }
            reports.push(report(i, &range, state, summary));
        }
        drop(finished);
        reports.sort_by_key(|r| r.index);
        Ok(reports)
    }
}
