//! Judging one range: list it page by page, join each page with HV and the snapshot, and
//! hold its orphans until the range is listed to its end.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::pacer::Pacer;
use super::report::failed;
use super::{
    AUDIT_OWNER_ROLE, AuditConfig, AuditTrail, Counts, DanglingSeen, DeletionRequested, HV_BATCH,
    InFlight, ORPHAN_EXAMPLES, ORPHAN_REASON, OrphanSeen, RangeState, RangeSummary, age_bucket,
};
use crate::error::StoreResult;
use crate::lt::{ListedBlob, NameRange};
use crate::model::{ChangeId, ChangeRecord, ObjectPath, OwnerToken, Revision, Timestamp};
use crate::stores::Stores;
use crate::telemetry::metrics::METRICS;

/// What judging one range needs, shared by the ranges in progress.
pub(super) struct Judge<'a> {
    stores: &'a Stores,
    config: &'a AuditConfig,
    snapshot: &'a InFlight,
    run: String,
    trail: Option<&'a dyn AuditTrail>,
    cancel: &'a CancellationToken,
    counts: &'a Counts,
    deletes: Pacer,
    lists: Pacer,
    pub(super) examples: std::sync::Mutex<Vec<OrphanSeen>>,
    pub(super) dangling: std::sync::Mutex<Vec<DanglingSeen>>,
}

/// An orphan held until its range is listed to the end.
struct Orphan {
    rev: Revision,
    created: Timestamp,
    age: Duration,
}

impl<'a> Judge<'a> {
    /// What one process needs to judge ranges of one run, with its own pacers.
    pub(super) fn new(
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

    pub(super) async fn range(&self, range: &NameRange) -> (RangeState, RangeSummary) {
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
