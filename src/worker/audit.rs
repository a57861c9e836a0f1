//! `tiersweep audit`: one process, or a run fanned out over a pool — the coordinator
//! records the run and publishes its range jobs, workers take them.

use std::time::Duration;

use super::{Config, PubsubQueue};
use crate::changelog::Changelog;
use crate::clock;
use crate::error::{StoreError, StoreResult};

pub use crate::audit::fanout::progress_report;
pub use crate::audit::{
    Audit, AuditConfig, AuditError, AuditReport, AuditRun, AuditRuns, AuditTrail, AuditWorker,
    BigtableRuns, Checkpoint, CheckpointState, Counts, DanglingSeen, DeletionRequested, FileTrail,
    OrphanSeen, RangeReport, RangeState, RangeSummary, RunState, TopicTrail,
};

/// What the coordinator of a fanned-out run connects to: the changelog (its time), the
/// runs kept in its table, and the audit topic — nothing else.
pub struct Coordinator {
    changelog: std::sync::Arc<dyn Changelog>,
    runs: BigtableRuns,
    queue: PubsubQueue,
}

impl Coordinator {
    /// Connects, checking the table and the topic.
    pub async fn connect(config: &Config) -> StoreResult<Self> {
        Ok(Self {
            changelog: crate::stores::connect_changelog(&config.bigtable, clock::system()).await?,
            runs: BigtableRuns::connect(&config.bigtable).await?,
            queue: PubsubQueue::connect_audit_publisher(&config.pubsub).await?,
        })
    }

    /// Records a new run of `audit`, valid for `ttl` on the changelog's clock, and
    /// publishes a job for each of its ranges.
    pub async fn start(&self, audit: &AuditConfig, ttl: Duration) -> Result<AuditRun, AuditError> {
        crate::audit::fanout::start(self.changelog.as_ref(), &self.runs, &self.queue, audit, ttl)
            .await
    }

    /// Publishes again the jobs of run `id`'s unfinished ranges; returns the run and how
    /// many were published.
    pub async fn resume(&self, id: &str) -> Result<(AuditRun, usize), AuditError> {
        crate::audit::fanout::resume(self.changelog.as_ref(), &self.runs, &self.queue, id).await
    }

    /// The runs, to follow one's progress.
    pub fn runs(&self) -> &BigtableRuns {
        &self.runs
    }
}

/// Takes range jobs from the audit subscription one at a time until the worker's
/// cancellation or the subscription's end.
pub async fn serve(worker: &AuditWorker, queue: &PubsubQueue) -> Result<(), StoreError> {
    worker.serve(queue).await
}
