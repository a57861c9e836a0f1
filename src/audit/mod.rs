//! `tiersweep audit`: the slow, independent check beside the changelog. It lists the LT
//! bucket, joins every blob with what HV references and with what the changelog has in
//! flight, and finds **orphans**: blobs neither references, older than a minimum age.
//!
//! What the changelog cannot see, this can: blobs orphaned before tiersweep was deployed,
//! by writers running with the no-op changelog, or by a bug in the changelog path (a clean
//! audit after recovery is evidence that the path leaked nothing).
//!
//! # Why it never deletes what it should not
//!
//! * **It never deletes directly.** With `delete`, each orphan becomes a recovery change
//!   (a changelog row naming the blob as the change's `new`), and recovery's fenced
//!   converge deletes it with the same guarantee as any other change: it fences the
//!   object's HV row and keeps the blob if the row names it. A wrong judgement here costs
//!   at most a refused concurrent write of that object, never a dangling tombstone.
//! * **It judges in a safe order** ([`snapshot`]): the changelog first, then per page the
//!   listing and HV, and only blobs created before the snapshot began, less `min_age`.
//! * **It fails closed.** A listing or read error ends its range with nothing deleted there;
//!   ranges are judged whole (orphans are held until the range is listed to its end); a
//!   malformed changelog row (which may name any blob) stops every deletion; a range with
//!   more orphans than `max_orphans_per_range` (an HV table misconfigured, a prefix that is
//!   not tiersweep's) deletes nothing.
//!
//! Memory is bounded: one listing page, the changelog's in-flight revisions as 8-byte
//! hashes, and with `delete` the orphans of the ranges in progress (at most
//! `max_orphans_per_range` each).

pub mod checkpoint;
pub mod fanout;
pub mod ranges;
pub mod runs;
pub mod snapshot;
pub mod trail;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::{StoreError, StoreResult};
use crate::lt::{ListedBlob, NameRange};
use crate::model::{ChangeId, ChangeRecord, ObjectPath, OwnerToken, Revision, Timestamp};
use crate::retry::RetryPolicy;
use crate::stores::Stores;
use crate::telemetry::metrics::METRICS;

pub use checkpoint::{Checkpoint, Progress};
pub use fanout::{AuditWorker, JobOutcome, RangeJob};
pub use runs::{AuditRun, AuditRuns, BigtableRuns, MemoryRuns, RunState};
pub use snapshot::InFlight;
pub use trail::{AuditTrail, DeletionRequested, FileTrail, TopicTrail};

/// How many object rows one HV read joins.
const HV_BATCH: usize = 500;

/// How many orphans a report names (the counts are complete; the trail has every deletion).
pub const ORPHAN_EXAMPLES: usize = 100;

/// The owner role of the changes an audit records: `tiersweep inspect` shows it.
pub const AUDIT_OWNER_ROLE: &str = "audit";

/// Why an audit judged a blob an orphan, as the trail records it.
pub const ORPHAN_REASON: &str =
    "no HV tombstone and no changelog row named it, and it was older than the minimum age";

/// What to audit and how hard.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    /// Only blobs whose names start with this (`""`: the whole bucket).
    pub prefix: String,
    /// How many name ranges the prefix is split into ([`ranges::split`]).
    pub ranges: usize,
    /// How many ranges are listed at once.
    pub concurrency: usize,
    /// A blob younger than this (by its GCS creation time, against the changelog's time
    /// when the audit began) is never judged: an upload may have just landed.
    pub min_age: Duration,
    /// Request the deletion of the orphans found (through recovery); otherwise report only.
    pub delete: bool,
    /// Deletion requests per second, across ranges (`None`: unlimited).
    pub max_deletes_per_s: Option<f64>,
    /// Listing calls per second, across ranges (`None`: unlimited).
    pub max_lists_per_s: Option<f64>,
    /// A range with more orphans than this deletes none of them and is reported failed.
    pub max_orphans_per_range: usize,
    /// How long a listing, HV read or deletion request that the store refuses (a busy
    /// cluster, a rate limit) is retried before its range fails: by default about 40 s
    /// ([`RetryPolicy::PATIENT`]); a batch job would rather wait than give up a range.
    pub retry: RetryPolicy,
    /// Also scan HV for **dangling tombstones** (naming a blob that does not exist): one
    /// blob check per large object, so off by default. Reported, never repaired.
    pub dangling: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            prefix: String::new(),
            ranges: 16,
            concurrency: 4,
            min_age: Duration::from_secs(24 * 3600),
            delete: false,
            max_deletes_per_s: Some(50.0),
            max_lists_per_s: Some(50.0),
            max_orphans_per_range: 100_000,
            retry: RetryPolicy::PATIENT,
            dangling: false,
        }
    }
}

impl AuditConfig {
    /// Refuses settings the audit cannot run with, naming the setting.
    pub fn validate(&self) -> Result<(), AuditError> {
        let bad = |what: &str| Err(AuditError::Config(what.to_owned()));
        if self.ranges == 0 || self.ranges > ranges::MAX_RANGES {
            return bad(&format!("ranges must be 1..={}", ranges::MAX_RANGES));
        }
        if self.concurrency == 0 {
            return bad("concurrency must be at least 1");
        }
        for (name, rate) in [
            ("max deletes per second", self.max_deletes_per_s),
            ("max lists per second", self.max_lists_per_s),
        ] {
            if rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                return bad(&format!("{name} must be a positive number"));
            }
        }
        if self.max_orphans_per_range == 0 {
            return bad("max orphans per range must be at least 1");
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
/// Why an audit could not run (a range's failure is in its [`RangeReport`] instead).
#[non_exhaustive]
pub enum AuditError {
    #[error("invalid audit configuration: {0}")]
    /// A setting is out of range, or `delete` was asked without a trail.
    Config(String),
    #[error("audit checkpoint {path}: {reason}")]
    /// The checkpoint file cannot be read, parsed or written.
    Checkpoint {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    #[error(
        "audit checkpoint {path} belongs to another audit ({theirs}); pass the same \
         parameters to resume it, or remove the file to start over"
    )]
    /// The checkpoint file records an audit with other parameters.
    CheckpointMismatch {
        /// The file.
        path: String,
        /// The parameters it records.
        theirs: String,
    },
    #[error("reading the changelog before the audit: {0}")]
    /// The changelog could not be read before listing.
    Snapshot(StoreError),
    #[error(
        "the changelog holds {count} malformed row(s) (first: {first}); such a row may name \
         any blob, so the audit deletes nothing until they are repaired (tiersweep inspect)"
    )]
    /// The changelog holds rows that do not decode, and the audit was to delete.
    MalformedChangelog {
        /// How many.
        count: u64,
        /// The first one's row key.
        first: String,
    },
    /// Recording or reading an audit run, or publishing its jobs, failed.
    #[error("audit run: {0}")]
    Runs(StoreError),
    #[error("audit trail {target}: {reason}")]
    /// The trail refused an entry: no deletion is requested without one.
    Trail {
        /// Where the trail is kept.
        target: String,
        /// What went wrong.
        reason: String,
    },
}

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
    /// Orphans by age bucket ([`age_bucket`]).
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
    fn add(&mut self, other: &RangeSummary) {
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
    /// The first orphans found (at most [`ORPHAN_EXAMPLES`]).
    pub orphan_examples: Vec<OrphanSeen>,
    /// The first dangling tombstones found (at most [`ORPHAN_EXAMPLES`]).
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
        let mut progress = Progress {
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
            progress = saved;
        }

        let snapshot = InFlight::take(self.stores.changelog.as_ref())
            .await
            .map_err(AuditError::Snapshot)?;
        if snapshot.malformed_count > 0 {
            let first = snapshot.malformed.first().cloned().unwrap_or_default();
            if config.delete {
                return Err(AuditError::MalformedChangelog {
                    count: snapshot.malformed_count,
                    first,
                });
            }
            tracing::warn!(count = snapshot.malformed_count, %first,
                "malformed changelog rows: blobs they name may be reported as orphans");
        }
        tracing::info!(run = %progress.run, rows = snapshot.rows, judged_at = %snapshot.taken_at,
            "changelog read; listing the bucket");

        let judge = Judge::new(
            &self.stores,
            config,
            &snapshot,
            progress.run.clone(),
            self.trail.as_deref(),
            &self.cancel,
            &self.counts,
        );
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
            .map(|(i, range)| {
                let judge = &judge;
                async move {
                    let (state, summary) = judge.range(&range).await;
                    (i, range, state, summary)
                }
            })
            .buffer_unordered(config.concurrency);
        while let Some((i, range, state, summary)) = finished.next().await {
            self.counts.ranges_finished.fetch_add(1, Ordering::Relaxed);
            match &state {
                RangeState::Done => {
                    progress.done.insert(i, summary.clone());
                    if let Some(cp) = &self.checkpoint {
                        cp.save(&progress).await?;
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
}

fn report(
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

/// What judging one range needs, shared by the ranges in progress.
struct Judge<'a> {
    stores: &'a Stores,
    config: &'a AuditConfig,
    snapshot: &'a InFlight,
    run: String,
    trail: Option<&'a dyn AuditTrail>,
    cancel: &'a CancellationToken,
    counts: &'a Counts,
    deletes: Pacer,
    lists: Pacer,
    examples: std::sync::Mutex<Vec<OrphanSeen>>,
    dangling: std::sync::Mutex<Vec<DanglingSeen>>,
}

/// An orphan held until its range is listed to the end.
struct Orphan {
    rev: Revision,
    created: Timestamp,
    age: Duration,
}

impl<'a> Judge<'a> {
    /// What one process needs to judge ranges of one run, with its own pacers.
    fn new(
        stores: &'a Stores,
        config: &'a AuditConfig,
        snapshot: &'a InFlight,
        run: String,
        trail: Option<&'a dyn AuditTrail>,
        cancel: &'a CancellationToken,
        counts: &'a Counts,
    ) -> Self {
        Self {
            stores,
            config,
            snapshot,
            run,
            trail,
            cancel,
            counts,
            deletes: Pacer::new(config.max_deletes_per_s),
            lists: Pacer::new(config.max_lists_per_s),
            examples: std::sync::Mutex::new(Vec::new()),
            dangling: std::sync::Mutex::new(Vec::new()),
        }
    }

    async fn range(&self, range: &NameRange) -> (RangeState, RangeSummary) {
        let mut summary = RangeSummary::default();
        let mut orphans = Vec::new();
        let mut token = None;
        loop {
            if !self.lists.wait(self.cancel).await {
                return (RangeState::Interrupted, summary);
            }
            let list = || self.stores.lt.list(range, token.clone());
            let page = match self.config.retry.run("list", list).await {
                Ok(page) => page,
                Err(e) => return (failed(format!("listing: {e}")), summary),
            };
            if let Err(e) = self
                .judge_page(page.blobs, &mut summary, &mut orphans)
                .await
            {
                return (failed(format!("reading HV: {e}")), summary);
            }
            if orphans.len() > self.config.max_orphans_per_range {
                return (
                    failed(format!(
                        "more than {} orphans in one range: nothing deleted in it; check that \
                         the HV table is this bucket's, or split the audit into more ranges",
                        self.config.max_orphans_per_range
                    )),
                    summary,
                );
            }
            token = page.next;
            if token.is_none() {
                break;
            }
        }
        if self.config.dangling
            && let Err(e) = self.check_tombstones(range, &mut summary).await
        {
            return (failed(format!("checking tombstones: {e}")), summary);
        }
        for orphan in orphans {
            if !self.deletes.wait(self.cancel).await {
                return (RangeState::Interrupted, summary);
            }
            if let Err(e) = self.request_deletion(&orphan).await {
                return (failed(format!("requesting a deletion: {e}")), summary);
            }
            summary.deletes_requested += 1;
            self.counts
                .deletes_requested
                .fetch_add(1, Ordering::Relaxed);
            METRICS.audit_deletes_requested.inc();
        }
        (RangeState::Done, summary)
    }

    /// Classifies one listing page, counting into `summary`; with `delete`, keeps its
    /// orphans in `orphans`.
    async fn judge_page(
        &self,
        blobs: Vec<ListedBlob>,
        summary: &mut RangeSummary,
        orphans: &mut Vec<Orphan>,
    ) -> StoreResult<()> {
        let newest_judged = self.snapshot.taken_at.saturating_sub(self.config.min_age);
        let mut candidates = Vec::new();
        let listed = blobs.len() as u64;
        summary.listed += listed;
        self.counts.listed.fetch_add(listed, Ordering::Relaxed);
        METRICS.audit_blobs_listed.add(listed);
        for blob in blobs {
            let parsed = Revision::parse(blob.name.as_str())
                .ok()
                .and_then(|rev| Some((ObjectPath::new(rev.object()).ok()?, rev)));
            let Some((path, rev)) = parsed else {
                summary.foreign += 1;
                continue;
            };
            if blob.created >= newest_judged
                && !crate::mutants::on(crate::mutants::Mutant::AuditJudgesYoungBlobs)
            {
                summary.young += 1;
            } else if self.snapshot.names(&rev) {
                summary.in_flight += 1;
            } else {
                candidates.push((path, rev, blob.created));
            }
        }
        for chunk in candidates.chunks(HV_BATCH) {
            let paths: Vec<ObjectPath> = chunk.iter().map(|(p, _, _)| p.clone()).collect();
            let read = || self.stores.hv.tombstones(&paths);
            let tombstones = self.config.retry.run("read HV", read).await?;
            for ((_, rev, created), tombstone) in chunk.iter().zip(tombstones) {
                if tombstone.as_ref() == Some(rev) {
                    summary.referenced += 1;
                    continue;
                }
                let age = created.age_at(self.snapshot.taken_at);
                self.found(rev, *created, age, summary);
                if self.config.delete {
                    orphans.push(Orphan {
                        rev: rev.clone(),
                        created: *created,
                        age,
                    });
                }
            }
        }
        Ok(())
    }

    fn found(&self, rev: &Revision, created: Timestamp, age: Duration, summary: &mut RangeSummary) {
        let bucket = age_bucket(age);
        summary.orphans += 1;
        *summary.orphans_by_age.entry(bucket.to_owned()).or_default() += 1;
        self.counts.orphans.fetch_add(1, Ordering::Relaxed);
        METRICS.audit_orphans(bucket).inc();
        tracing::info!(blob = %rev, age_s = age.as_secs(), "orphan found");
        let mut examples = self.examples.lock().unwrap_or_else(|e| e.into_inner());
        if examples.len() < ORPHAN_EXAMPLES {
            examples.push(OrphanSeen {
                blob: rev.as_str().to_owned(),
                created,
                age_s: age.as_secs(),
            });
        }
    }

    /// Scans the range's HV rows for tombstones and checks that each names a blob that
    /// exists. A missing one is looked at again — HV first, then LT — before it is
    /// reported: an overwrite or delete that committed meanwhile moved HV off it.
    async fn check_tombstones(
        &self,
        range: &NameRange,
        summary: &mut RangeSummary,
    ) -> StoreResult<()> {
        let mut after: Option<ObjectPath> = None;
        loop {
            if !self.lists.wait(self.cancel).await {
                return Ok(());
            }
            let page = self
                .stores
                .hv
                .scan_tombstones(range, after.as_ref(), HV_BATCH)
                .await?;
            summary.tombstones_checked += page.tombstones.len() as u64;
            let lt = &self.stores.lt;
            let missing: Vec<(ObjectPath, Revision)> = futures::stream::iter(page.tombstones)
                .map(|(path, rev)| async move {
                    lt.exists(&rev)
                        .await
                        .map(|found| (!found).then_some((path, rev)))
                })
                .buffer_unordered(16)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .filter_map(Result::transpose)
                .collect::<StoreResult<_>>()?;
            for (path, rev) in missing {
                let now = self
                    .stores
                    .hv
                    .tombstones(std::slice::from_ref(&path))
                    .await?;
                if now.first().cloned().flatten().as_ref() != Some(&rev) || lt.exists(&rev).await? {
                    continue;
                }
                summary.dangling += 1;
                METRICS.audit_dangling.inc();
                tracing::error!(object = %path, blob = %rev,
                    "dangling tombstone: HV names a blob that does not exist");
                let mut seen = self.dangling.lock().unwrap_or_else(|e| e.into_inner());
                if seen.len() < ORPHAN_EXAMPLES {
                    seen.push(DanglingSeen {
                        object: path.to_string(),
                        blob: rev.to_string(),
                    });
                }
            }
            after = page.resume_after;
            if after.is_none() {
                return Ok(());
            }
        }
    }

    /// Writes the trail entry, then the recovery change that deletes the orphan.
    async fn request_deletion(&self, orphan: &Orphan) -> Result<(), String> {
        let trail = self.trail.ok_or("no audit trail")?;
        let object = ObjectPath::new(orphan.rev.object()).map_err(|e| e.to_string())?;
        // Minted on this process's clock, as a writer mints its changes: the scanners'
        // rounds read ids by mint time, so the row is found by the next round, not a sweep.
        let change = ChangeId::mint_at(self.stores.clock.now());
        let entry = DeletionRequested {
            run: self.run.clone(),
            blob: orphan.rev.as_str().to_owned(),
            change: change.clone(),
            created: orphan.created,
            age_s: orphan.age.as_secs(),
            reason: ORPHAN_REASON,
            judged_at: self.snapshot.taken_at,
        };
        trail.requested(&entry).await.map_err(|e| e.to_string())?;
        let record = ChangeRecord::new(
            object,
            None,
            Some(orphan.rev.clone()),
            OwnerToken::mint(AUDIT_OWNER_ROLE),
        );
        // Create-or-confirm: a retry after a lost response finds its own row and succeeds.
        let write = || self.stores.changelog.record(&change, &record);
        self.config
            .retry
            .run("record", write)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(blob = %orphan.rev, %change, "deletion requested");
        Ok(())
    }
}

fn failed(error: String) -> RangeState {
    RangeState::Failed { error }
}

/// Spaces calls at least `1 / rate` apart across every task that shares it.
struct Pacer {
    every: Option<Duration>,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Pacer {
    fn new(rate: Option<f64>) -> Self {
        Self {
            every: rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for this caller's slot; `false` when `cancel` fired first.
    async fn wait(&self, cancel: &CancellationToken) -> bool {
        if cancel.is_cancelled() {
            return false;
        }
        let Some(every) = self.every else {
            return true;
        };
        let slot = {
            let mut next = self.next.lock().await;
            let slot = (*next).max(tokio::time::Instant::now());
            *next = slot + every;
            slot
        };
        tokio::select! {
            () = tokio::time::sleep_until(slot) => true,
            () = cancel.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemoryStores;
    use crate::testing::audits::MemoryTrail;
    use crate::testing::faults::{Fault, Faults, Op, Rule};

    const DAY: Duration = Duration::from_secs(24 * 3600);

    /// `n` orphans two days old under `prefix`, all in the first of two ranges.
    fn plant(m: &MemoryStores, prefix: &str, n: usize) {
        let created = m.clock.now().saturating_sub(2 * DAY);
        for _ in 0..n {
            let path = ObjectPath::new(format!("{prefix}0{}/o", uuid::Uuid::now_v7().simple()))
                .expect("valid path");
            m.lt.plant(
                &Revision::mint(&path),
                bytes::Bytes::from_static(b"x"),
                created,
            );
        }
    }

    fn deleting(prefix: &str) -> AuditConfig {
        AuditConfig {
            prefix: prefix.to_owned(),
            ranges: 2,
            delete: true,
            max_deletes_per_s: None,
            max_lists_per_s: None,
            ..AuditConfig::default()
        }
    }

    /// A listing, HV read or deletion request refused for a while (a busy cluster, a rate
    /// limit) is waited out, not taken for a failed range.
    #[tokio::test(start_paused = true)]
    async fn a_brief_refusal_is_waited_out() {
        let m = MemoryStores::new();
        plant(&m, "p/", 1500);
        let faults = Faults::new([Op::LtList, Op::HvRead, Op::Record].map(|op| Rule {
            skip: 1,
            times: RetryPolicy::PATIENT.max_attempts - 1,
            ..Rule::once(op, Fault::Fail)
        }));
        let report = Audit::new(faults.wrap(&m.stores()), deleting("p/"))
            .trail(Arc::new(MemoryTrail::default()))
            .run()
            .await
            .expect("the audit reports");
        assert!(report.complete(), "{report:#?}");
        assert_eq!(report.totals.deletes_requested, 1500);
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_on_a_later_page_deletes_nothing_in_the_range() {
        let m = MemoryStores::new();
        plant(&m, "p/", 1500);
        // An outage that outlasts the retries.
        let faults = Faults::new([Rule {
            skip: 1,
            times: RetryPolicy::PATIENT.max_attempts,
            ..Rule::once(Op::LtList, Fault::Fail)
        }]);
        let trail = Arc::new(MemoryTrail::default());
        let report = Audit::new(
            faults.wrap(&m.stores()),
            AuditConfig {
                concurrency: 1,
                ..deleting("p/")
            },
        )
        .trail(trail.clone())
        .run()
        .await
        .expect("the audit reports");
        assert_eq!(report.failed().count(), 1, "{report:#?}");
        assert_eq!(
            report.ranges[0].summary.listed, 1000,
            "the first page was judged"
        );
        assert_eq!(report.totals.deletes_requested, 0);
        assert!(
            trail.blobs().is_empty(),
            "a range is never judged on part of it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_orphans_in_a_range_deletes_none() {
        let m = MemoryStores::new();
        plant(&m, "p/", 30);
        let trail = Arc::new(MemoryTrail::default());
        let report = Audit::new(
            m.stores(),
            AuditConfig {
                max_orphans_per_range: 20,
                ..deleting("p/")
            },
        )
        .trail(trail.clone())
        .run()
        .await
        .expect("the audit reports");
        let failed: Vec<_> = report.failed().collect();
        assert_eq!(failed.len(), 1);
        assert!(
            matches!(&failed[0].state, RangeState::Failed { error } if error.contains("HV table")),
            "{failed:?}"
        );
        assert!(trail.blobs().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_malformed_changelog_row_stops_every_deletion() {
        let m = MemoryStores::new();
        plant(&m, "p/", 3);
        let key = format!("{}garbage", ChangeId::mint().shard().start_key());
        m.changelog
            .insert_raw(&key, b"{not json".to_vec(), m.clock.now());
        let trail = Arc::new(MemoryTrail::default());
        let refused = Audit::new(m.stores(), deleting("p/"))
            .trail(trail.clone())
            .run()
            .await;
        assert!(
            matches!(
                &refused,
                Err(AuditError::MalformedChangelog { count: 1, .. })
            ),
            "{refused:?}"
        );
        let dry = Audit::new(
            m.stores(),
            AuditConfig {
                delete: false,
                ..deleting("p/")
            },
        )
        .run()
        .await
        .expect("a dry run reports");
        assert_eq!((dry.malformed_changelog_rows, dry.totals.orphans), (1, 3));
        assert!(trail.blobs().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn deletions_are_paced_and_need_a_trail() {
        let m = MemoryStores::new();
        plant(&m, "p/", 5);
        let no_trail = Audit::new(m.stores(), deleting("p/")).run().await;
        assert!(
            matches!(no_trail, Err(AuditError::Config(_))),
            "{no_trail:?}"
        );
        let trail = Arc::new(MemoryTrail::default());
        let start = tokio::time::Instant::now();
        let report = Audit::new(
            m.stores(),
            AuditConfig {
                max_deletes_per_s: Some(2.0),
                ..deleting("p/")
            },
        )
        .trail(trail.clone())
        .run()
        .await
        .expect("the audit reports");
        assert_eq!(report.totals.deletes_requested, 5);
        assert!(
            start.elapsed() >= Duration::from_secs(2),
            "5 deletions at 2/s take 2 s after the first: {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn ages_fall_in_their_buckets() {
        assert_eq!(age_bucket(Duration::from_secs(3600)), "lt_1d");
        assert_eq!(age_bucket(DAY), "1d_7d");
        assert_eq!(age_bucket(7 * DAY), "7d_30d");
        assert_eq!(age_bucket(400 * DAY), "ge_30d");
    }
}
