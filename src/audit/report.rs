//! What an audit found: per range, added up, and while it runs.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::lt::NameRange;
use crate::model::Timestamp;

/// What an audit found in one range (or in all: [`AuditReport::totals`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeSummary {
    /// Blobs listed.
    pub listed: u64,
    /// HV's tombstone names it.
    pub referenced: u64,
    /// A changelog row names it.
    pub in_flight: u64,
    /// Created after the snapshot began less the minimum age: not judged.
    pub young: u64,
    /// Not a revision name: not tiersweep's, never judged.
    pub foreign: u64,
    /// Blobs judged orphans.
    pub orphans: u64,
    /// Orphans by age bucket (`age_bucket`).
    pub orphans_by_age: BTreeMap<String, u64>,
    /// Orphans handed to recovery (with `delete`).
    pub deletes_requested: u64,
    /// HV tombstones checked (with `dangling`).
    #[serde(default)]
    pub tombstones_checked: u64,
    /// Tombstones naming a blob that does not exist, confirmed by a second look.
    #[serde(default)]
    pub dangling: u64,
}

impl RangeSummary {
    pub(super) fn add(&mut self, other: &RangeSummary) {
        self.listed += other.listed;
        self.referenced += other.referenced;
        self.in_flight += other.in_flight;
        self.young += other.young;
        self.foreign += other.foreign;
        self.orphans += other.orphans;
        self.deletes_requested += other.deletes_requested;
        self.tombstones_checked += other.tombstones_checked;
        self.dangling += other.dangling;
        for (bucket, n) in &other.orphans_by_age {
            *self.orphans_by_age.entry(bucket.clone()).or_default() += n;
        }
    }
}

/// How a range ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RangeState {
    /// Listed to its end and judged (and with `delete`, its deletions requested).
    Done,
    /// Finished by an earlier run of the same audit (its checkpoint).
    Resumed,
    /// Stopped by an error; nothing was deleted in it after the error, and nothing at all
    /// unless the error came while requesting deletions.
    Failed {
        /// The error, as the report shows it.
        error: String,
    },
    /// Stopped by shutdown before its end; no deletion requested.
    Interrupted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
/// One range of an audit and how it ended.
pub struct RangeReport {
    /// Its index among the audit's ranges (what the checkpoint records).
    pub index: usize,
    /// Its first name, inclusive (`None`: from the prefix on).
    pub start: Option<String>,
    /// The first name past it (`None`: to the end of the prefix).
    pub end: Option<String>,
    #[serde(flatten)]
    /// How it ended.
    pub state: RangeState,
    /// What it found.
    pub summary: RangeSummary,
}

/// One orphan, as a report names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrphanSeen {
    /// The blob's name (its revision).
    pub blob: String,
    /// When GCS created it.
    pub created: Timestamp,
    /// Its age when the audit began judging, in seconds.
    pub age_s: u64,
}

/// A tombstone whose blob is missing, as a report names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DanglingSeen {
    /// The object whose HV row holds the tombstone.
    pub object: String,
    /// The blob the tombstone names, which does not exist.
    pub blob: String,
}

/// The outcome of an audit (JSON with `tiersweep audit --report`).
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// The run id (a resumed audit keeps its first run's).
    pub run: String,
    /// The prefix audited.
    pub prefix: String,
    /// The minimum age, in seconds.
    pub min_age_s: u64,
    /// Whether orphans were handed to recovery.
    pub delete: bool,
    /// The changelog's time when the audit began judging.
    pub judged_at: Timestamp,
    /// Changelog rows read for the snapshot.
    pub changelog_rows: u64,
    /// Of them, rows that do not decode.
    pub malformed_changelog_rows: u64,
    /// What every range found, added up.
    pub totals: RangeSummary,
    /// Every range, in order.
    pub ranges: Vec<RangeReport>,
    /// The first orphans found (at most `ORPHAN_EXAMPLES`).
    pub orphan_examples: Vec<OrphanSeen>,
    /// The first dangling tombstones found (at most `ORPHAN_EXAMPLES`).
    pub dangling_examples: Vec<DanglingSeen>,
}

impl AuditReport {
    /// Every range is done (now or by an earlier run).
    pub fn complete(&self) -> bool {
        self.ranges
            .iter()
            .all(|r| matches!(r.state, RangeState::Done | RangeState::Resumed))
    }

    /// The ranges that failed.
    pub fn failed(&self) -> impl Iterator<Item = &RangeReport> {
        self.ranges
            .iter()
            .filter(|r| matches!(r.state, RangeState::Failed { .. }))
    }
}

/// The age bucket an orphan is counted in (report and metric label).
pub fn age_bucket(age: Duration) -> &'static str {
    const DAY: u64 = 24 * 3600;
    match age.as_secs() {
        s if s < DAY => "lt_1d",
        s if s < 7 * DAY => "1d_7d",
        s if s < 30 * DAY => "7d_30d",
        _ => "ge_30d",
    }
}

/// Live counts of an audit in progress, for a progress display.
#[derive(Debug, Default)]
pub struct Counts {
    /// Blobs listed so far.
    pub listed: AtomicU64,
    /// Orphans found so far.
    pub orphans: AtomicU64,
    /// Deletions requested so far.
    pub deletes_requested: AtomicU64,
    /// Ranges finished (done, failed or interrupted).
    pub ranges_finished: AtomicU64,
}

pub(super) fn report(
    index: usize,
    range: &NameRange,
    state: RangeState,
    summary: RangeSummary,
) -> RangeReport {
    RangeReport {
        index,
        start: range.start.clone(),
        end: range.end.clone(),
        state,
        summary,
    }
}

pub(super) fn failed(error: String) -> RangeState {
    RangeState::Failed { error }
}
