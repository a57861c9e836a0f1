//! Embedded mode: scanner and cleaner in one process over an in-process queue.
//!
//! This is the shape of the original single-process recovery, kept for small deployments,
//! demos and tests. It is the same [`Scanner`] and [`Cleaner`] as the distributed pipeline;
//! only the queue differs. With `cleaner_concurrency = 1` it converges one change at a time,
//! as the seed's recovery did, which is the baseline the benchmarks compare against.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::RecoveryConfig;
use super::cleaner::{Cleaner, JobOutcome};
use super::scanner::{ScanReport, Scanner};
use crate::error::StoreResult;
use crate::model::ShardRange;
use crate::protocol::converge::RowFate;
use crate::queue::{FlowControl, JobQueue, MemoryQueue};
use crate::stores::Stores;

/// What one recovery pass did.
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    /// What the pass's scans did.
    pub scan: ScanReport,
    /// Changes converged (deferred ones included).
    pub converged: usize,
    /// Of `converged`, the changes whose row was kept for a later pass
    /// ([`RecoveryConfig::upload_settle`]).
    pub deferred: usize,
    /// Jobs whose row was gone: converged already.
    pub already_converged: usize,
    /// Jobs whose row another claim or its writer owned: stale or forged, left alone.
    pub not_our_claim: usize,
    /// Jobs whose row was deferred to a later pass.
    pub not_due: usize,
    /// Jobs that failed and were put back for another attempt.
    pub retried: usize,
    /// Jobs dead-lettered.
    pub dead_lettered: usize,
    /// Converged changes whose kept revision's blob was missing.
    pub dangling: usize,
}

impl PassReport {
    fn count(&mut self, outcome: &JobOutcome) {
        match outcome {
            JobOutcome::Converged(r) => {
                self.converged += 1;
                self.deferred += usize::from(matches!(r.row, RowFate::Deferred(_)));
                self.dangling += usize::from(r.dangling.is_some());
            }
            JobOutcome::AlreadyConverged => self.already_converged += 1,
            JobOutcome::NotOurClaim => self.not_our_claim += 1,
            JobOutcome::NotDue => self.not_due += 1,
            JobOutcome::Retry(_) => self.retried += 1,
            JobOutcome::DeadLettered(_) => self.dead_lettered += 1,
        }
    }
}

/// Recovery in the writer's own process: a scanner and a cleaner joined by an in-process queue (no Pub/Sub).
#[derive(Debug)]
pub struct EmbeddedRecovery {
    stores: Stores,
    queue: MemoryQueue,
    config: RecoveryConfig,
}

impl EmbeddedRecovery {
    /// Recovery over `stores` with `config`.
    pub fn new(stores: Stores, config: RecoveryConfig) -> Self {
        let capacity = config.scan_batch.max(config.cleaner_concurrency) * 2;
        let queue = MemoryQueue::new(capacity, config.max_delivery_attempts);
        Self {
            stores,
            queue,
            config,
        }
    }

    /// The in-process queue, for publishing into it directly (tests).
    #[cfg(any(test, feature = "testing"))]
    pub fn queue(&self) -> &MemoryQueue {
        &self.queue
    }

    fn scanner(&self) -> Scanner {
        Scanner::new(
            self.stores.changelog.clone(),
            Arc::new(self.queue.clone()),
            self.config.clone(),
            ShardRange::ALL,
        )
    }

    fn cleaner(&self) -> Cleaner {
        Cleaner::new(
            self.stores.clone(),
            Arc::new(self.queue.clone()),
            self.config.clone(),
        )
    }

    /// One complete pass: scan every shard once, then converge every job that produced,
    /// including redeliveries. Returns when the queue is empty. For tests and one-shot use.
    pub async fn run_pass(&self) -> StoreResult<PassReport> {
        let mut report = PassReport::default();
        let mut scanner = self.scanner();
        let cleaner = self.cleaner();
        let mut subscription = self
            .queue
            .subscribe(FlowControl {
                max_outstanding: self.config.cleaner_concurrency,
                ..FlowControl::default()
            })
            .await?;
        loop {
            let page = scanner.scan_page().await?;
            report.scan.add(&page);
            // Drain after every page so the bounded queue never blocks the scan.
            while self.queue.stats().ready > 0 {
                let Some(delivery) = subscription.next().await.transpose()? else {
                    break;
                };
                let outcome = cleaner.process(delivery).await;
                report.count(&outcome);
            }
            if !page.more {
                return Ok(report);
            }
        }
    }

    /// Runs scanner and cleaner until cancelled, then drains in-flight jobs.
    pub async fn run(self, cancel: CancellationToken, drain_deadline: Duration) {
        let tracker = TaskTracker::new();
        tracker.spawn(self.scanner().run(cancel.clone()));
        tracker.spawn(self.cleaner().run(cancel.clone(), drain_deadline));
        tracker.close();
        tracker.wait().await;
    }
}
