//! Audit runs: the durable record that makes a fanned-out audit's jobs trustworthy.
//!
//! `tiersweep audit --fan-out` records a run — its prefix, range count, minimum age,
//! whether it deletes, and until when its jobs are valid — and then publishes one job per
//! range that names only the run and the range's index. A `tiersweep audit --worker`
//! takes **every parameter from the run record, none from the message**, and refuses a job
//! whose run is unknown, whose index is out of range, or whose run has expired by the
//! changelog's clock. So a forged or tampered job can at most ask for a range of a run the
//! operator started, judged as the operator asked; a stale one (replayed from the
//! dead-letter topic a week later, say) deletes nothing.
//!
//! The records live in the changelog table, in rows outside every shard
//! ([`layout`](crate::bigtable::layout)): writing there is already full authority over
//! recovery (a changelog row can name any blob for deletion), so the audit's authority
//! rests on no new grant, and a worker needs nothing beyond what `tiersweep audit` has.

pub mod bigtable;
#[cfg(any(test, feature = "testing"))]
pub mod memory;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{AuditConfig, RangeSummary};
use crate::error::StoreResult;
use crate::model::Timestamp;

pub use bigtable::BigtableRuns;
#[cfg(any(test, feature = "testing"))]
pub use memory::MemoryRuns;

/// An audit run's parameters, as its coordinator recorded them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRun {
    /// The run id (a UUID).
    pub run: String,
    /// The prefix audited.
    pub prefix: String,
    /// How many ranges the prefix is split into.
    pub ranges: usize,
    /// The minimum age, in milliseconds.
    pub min_age_ms: u64,
    /// Whether orphans are handed to recovery.
    pub delete: bool,
    /// Whether tombstones are checked for dangling blobs.
    pub dangling: bool,
    /// A range with more orphans than this deletes none.
    pub max_orphans_per_range: usize,
    /// When the run was recorded, on the changelog's clock.
    pub created: Timestamp,
    /// After this (changelog time) the run's jobs are refused.
    pub expires: Timestamp,
}

impl AuditRun {
    /// A new run of `config`, recorded at `now` and valid for `ttl`.
    pub fn new(config: &AuditConfig, now: Timestamp, ttl: Duration) -> Self {
        Self {
            run: uuid::Uuid::now_v7().to_string(),
            prefix: config.prefix.clone(),
            ranges: config.ranges,
            min_age_ms: u64::try_from(config.min_age.as_millis()).unwrap_or(u64::MAX),
            delete: config.delete,
            dangling: config.dangling,
            max_orphans_per_range: config.max_orphans_per_range,
            created: now,
            expires: now.saturating_add(ttl),
        }
    }

    /// How a worker judges this run's ranges: the recorded parameters, with the worker's
    /// own rate limits (one range at a time) and retries.
    pub fn config(
        &self,
        max_deletes_per_s: Option<f64>,
        max_lists_per_s: Option<f64>,
    ) -> AuditConfig {
        AuditConfig {
            prefix: self.prefix.clone(),
            ranges: self.ranges,
            concurrency: 1,
            min_age: Duration::from_millis(self.min_age_ms),
            delete: self.delete,
            max_deletes_per_s,
            max_lists_per_s,
            max_orphans_per_range: self.max_orphans_per_range,
            retry: crate::retry::RetryPolicy::PATIENT,
            dangling: self.dangling,
        }
    }
}

/// A run and what its workers have finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunState {
    /// The run as recorded.
    pub run: AuditRun,
    /// The summaries of its finished ranges, by index.
    pub done: BTreeMap<usize, RangeSummary>,
}

/// Where audit runs are recorded. One conformance scenario
/// (`testing::audit_fanout::audit_runs_behave_as_documented`) runs on both backends.
#[async_trait]
pub trait AuditRuns: Send + Sync + std::fmt::Debug {
    /// Records `run`; `false` (and nothing written) when a run with its id exists.
    async fn create(&self, run: &AuditRun) -> StoreResult<bool>;

    /// The run `id` and its finished ranges; `None` when no such run was recorded. A
    /// record that does not decode is a permanent error naming the row.
    async fn get(&self, id: &str) -> StoreResult<Option<RunState>>;

    /// Records that range `index` of run `id` is finished, if the run exists (a finish
    /// never creates a run). A later finish of the same range replaces the summary.
    async fn finish_range(&self, id: &str, index: usize, summary: &RangeSummary)
    -> StoreResult<()>;
}
