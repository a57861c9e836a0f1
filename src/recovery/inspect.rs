//! Read-only views for operators: the backlog by age, one change in full, and what
//! recovery would delete. Nothing here claims, fences, deletes or writes.

use std::time::Duration;

use serde::Serialize;

use crate::changelog::{Changelog, ChangelogEntry, Deferral, ScanRequest, ScannedRow};
use crate::clock::SharedClock;
use crate::error::StoreResult;
use crate::model::{ChangeId, HvValue, ShardSet, Timestamp};
use crate::protocol::converge::unreferenced;
use crate::stores::Stores;

/// Upper bounds of the age buckets, beyond the staleness threshold.
const BUCKETS: [(&str, Duration); 5] = [
    ("< 1m", Duration::from_secs(60)),
    ("< 10m", Duration::from_secs(600)),
    ("< 1h", Duration::from_secs(3600)),
    ("< 1d", Duration::from_secs(86_400)),
    (">= 1d", Duration::MAX),
];

/// The changelog's rows by state, as `tiersweep status` reports them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChangelogStatus {
    /// Every row read.
    pub rows: usize,
    /// Stamped within the staleness threshold: writers are still working on them.
    pub live: usize,
    /// Stamped into the future: claimed, with a cleanup job in flight.
    pub claimed: usize,
    /// Owned by a writer yet stamped more than the staleness threshold into the future.
    /// Liveness stamps are the server's time, so this is a writer stamping with its own
    /// clock (an old version, or a bug): recovery cannot see such a row until its stamp
    /// passes, and a crash behind it stays hidden that long.
    pub writer_stamped_in_future: usize,
    /// Past the threshold and waiting for a scanner, by age.
    pub stale: usize,
    /// Stale rows by age bucket (bucket label, count).
    pub stale_by_age: Vec<(String, usize)>,
    /// Rows that do not decode (left alone, reported).
    pub malformed: usize,
    /// The stale row waiting longest, if any.
    pub oldest_stale: Option<OldestStale>,
    /// Rows claimed [`FAILING_AFTER_CLAIMS`](crate::recovery::FAILING_AFTER_CLAIMS) times
    /// or more: changes that keep failing.
    pub failing: usize,
    /// The first `FAILING_LISTED` of them.
    pub failing_rows: Vec<FailingRow>,
}

/// How many failing rows [`ChangelogStatus`] names.
pub const FAILING_LISTED: usize = 20;

/// A change recovery keeps claiming without converging it.
#[derive(Debug, Clone, Serialize)]
pub struct FailingRow {
    /// Its change id (`tiersweep inspect`, `tiersweep reset` take it).
    pub change: String,
    /// Its object.
    pub object: String,
    /// How many times recovery has claimed it.
    pub claims: u32,
}

/// The stale row waiting longest.
#[derive(Debug, Clone, Serialize)]
pub struct OldestStale {
    /// Its change id.
    pub change: String,
    /// Its object.
    pub object: String,
    /// How long past its stamp, in seconds.
    pub age_s: u64,
    /// How many times recovery has claimed it.
    pub claims: u32,
}

/// Counts every changelog row, a page at a time (memory stays flat in the backlog). Reads
/// the changelog alone, so `tiersweep status` needs no access to HV or LT.
pub async fn backlog(
    changelog: &dyn Changelog,
    clock: &SharedClock,
    threshold: Duration,
    page: usize,
) -> StoreResult<ChangelogStatus> {
    let now = clock.now();
    let cutoff = now.saturating_sub(threshold);
    let mut b = ChangelogStatus {
        stale_by_age: BUCKETS.iter().map(|(l, _)| ((*l).to_owned(), 0)).collect(),
        ..ChangelogStatus::default()
    };
    let mut start_after = None;
    loop {
        let req = ScanRequest {
            shards: ShardSet::ALL,
            // Everything: rows stamped at any time, whatever their due_at.
            cutoff: Timestamp(i64::MAX),
            stamped_from: None,
            now: Timestamp(i64::MAX),
            start_after,
            limit: page,
            minted: None,
            report_waiting: false,
        };
        let result = changelog.scan_stale(&req).await?;
        for row in result.rows {
            b.rows += 1;
            let e = match row {
                ScannedRow::Entry(e) => e,
                ScannedRow::Malformed { .. } => {
                    b.malformed += 1;
                    continue;
                }
                // Not asked for.
                ScannedRow::Waiting { .. } => continue,
            };
            if e.record.claims >= crate::recovery::FAILING_AFTER_CLAIMS {
                b.failing += 1;
                if b.failing_rows.len() < FAILING_LISTED {
                    b.failing_rows.push(FailingRow {
                        change: e.id.to_string(),
                        object: e.record.object.to_string(),
                        claims: e.record.claims,
                    });
                }
            }
            if e.stamp > now.saturating_add(threshold) && !e.record.owner.is_recovery_claim() {
                b.writer_stamped_in_future += 1;
                tracing::warn!(change = %e.id, object = %e.record.object, owner = %e.record.owner,
                    ahead_ms = e.stamp.0 - now.0,
                    "a writer's row is stamped in the future; recovery cannot see it until then");
            } else if e.stamp > now {
                b.claimed += 1;
            } else if e.stamp >= cutoff {
                b.live += 1;
            } else {
                b.stale += 1;
                let age = e.stamp.age_at(now);
                let i = BUCKETS
                    .iter()
                    .position(|(_, max)| age < *max)
                    .unwrap_or(BUCKETS.len() - 1);
                b.stale_by_age[i].1 += 1;
                if b.oldest_stale
                    .as_ref()
                    .is_none_or(|o| age.as_secs() > o.age_s)
                {
                    b.oldest_stale = Some(OldestStale {
                        change: e.id.to_string(),
                        object: e.record.object.to_string(),
                        age_s: age.as_secs(),
                        claims: e.record.claims,
                    });
                }
            }
        }
        start_after = result.resume_after;
        if start_after.is_none() {
            return Ok(b);
        }
    }
}

/// One change as the stores see it now.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeView {
    /// The change id.
    pub change: String,
    /// The object.
    pub object: String,
    /// The row's owner: the writer, or a recovery claim.
    pub owner: String,
    /// How many times recovery has claimed it.
    pub claims: u32,
    /// The row's liveness stamp, ms since the epoch (the changelog's time).
    pub stamp_ms: i64,
    /// Seconds since the stamp, by this process's clock (negative: stamped ahead).
    pub age_s: i64,
    /// The revision HV referenced when the change began, if any.
    pub old: Option<String>,
    /// The revision the change uploads, if any.
    pub new: Option<String>,
    /// The writer request's W3C `traceparent`, if recorded.
    pub traceparent: Option<String>,
    /// What HV holds for the object: `absent`, `inline (N bytes)` or the tombstone's revision.
    pub hv: String,
    /// Each of the change's revisions and whether its blob exists.
    pub blobs: Vec<(String, bool)>,
    /// What converging now would delete (HV read without a fence: a live writer may still
    /// change it).
    pub would_delete: Vec<String>,
}

/// The change `id` as the stores see it now; `None` when its row is gone.
pub async fn inspect(stores: &Stores, id: &ChangeId) -> StoreResult<Option<ChangeView>> {
    let Some(entry) = stores.changelog.get(id).await? else {
        return Ok(None);
    };
    Ok(Some(view(stores, &entry).await?))
}

/// The change of `entry` as the stores see it now (reads HV and LT; changes nothing).
pub async fn view(stores: &Stores, entry: &ChangelogEntry) -> StoreResult<ChangeView> {
    let r = &entry.record;
    let hv = stores.hv.read(&r.object).await?;
    let referenced = hv.as_ref().and_then(HvValue::tombstone);
    let mut blobs = Vec::new();
    for rev in r.revisions() {
        blobs.push((rev.to_string(), stores.lt.exists(rev).await?));
    }
    let now = stores.clock.now();
    Ok(ChangeView {
        change: entry.id.to_string(),
        object: r.object.to_string(),
        owner: r.owner.to_string(),
        claims: r.claims,
        stamp_ms: entry.stamp.millis(),
        age_s: (now.millis() - entry.stamp.millis()) / 1000,
        old: r.old.as_ref().map(ToString::to_string),
        new: r.new.as_ref().map(ToString::to_string),
        traceparent: r.traceparent.clone(),
        hv: match &hv {
            None => "absent".into(),
            Some(HvValue::Inline(b)) => format!("inline ({} bytes)", b.len()),
            Some(HvValue::Tombstone(rev)) => format!("tombstone {rev}"),
        },
        blobs,
        would_delete: unreferenced(r, referenced)
            .map(ToString::to_string)
            .collect(),
    })
}

/// Calls `each` with the view of every stale change, in key order, a page at a time.
/// Returns how many there were and how many rows were malformed.
pub async fn dry_run(
    stores: &Stores,
    threshold: Duration,
    page: usize,
    mut each: impl FnMut(ChangeView),
) -> StoreResult<(usize, usize)> {
    let now = stores.clock.now();
    let (mut seen, mut malformed) = (0, 0);
    let mut start_after = None;
    loop {
        let req = ScanRequest {
            shards: ShardSet::ALL,
            cutoff: now.saturating_sub(threshold),
            stamped_from: None,
            now,
            start_after,
            limit: page,
            minted: None,
            report_waiting: false,
        };
        let result = stores.changelog.scan_stale(&req).await?;
        for row in result.rows {
            match row {
                ScannedRow::Entry(e) => {
                    seen += 1;
                    each(view(stores, &e).await?);
                }
                ScannedRow::Malformed { .. } => malformed += 1,
                ScannedRow::Waiting { .. } => {}
            }
        }
        start_after = result.resume_after;
        if start_after.is_none() {
            return Ok((seen, malformed));
        }
    }
}

/// What a reset did (`tiersweep reset`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reset {
    /// The row's claim count is back to zero and its stamp is now: recovery takes it up
    /// one staleness threshold from now, with the base claim lease.
    Reset {
        /// The object the change writes.
        object: String,
        /// How many times it had been claimed.
        claims: u32,
    },
    /// No such row: converged already, or never recorded.
    NotFound,
    /// The row changed owner while being reset (a claim or its removal): read it again.
    Moved,
}

/// Sets a failing row's claim count back to zero and restamps it now, for an operator who
/// has fixed what made it fail. Conditional on the row's owner as read, so a claim that
/// moves the row on meanwhile makes the reset refuse; recovery's fence makes a reset
/// harmless whatever it races with.
pub async fn reset(changelog: &dyn Changelog, id: &ChangeId) -> StoreResult<Reset> {
    let Some(entry) = changelog.get(id).await? else {
        return Ok(Reset::NotFound);
    };
    let mut record = entry.record;
    let claims = record.claims;
    record.claims = 0;
    Ok(match changelog.defer(id, &record).await? {
        Deferral::Deferred => Reset::Reset {
            object: record.object.to_string(),
            claims,
        },
        Deferral::NotOwned => Reset::Moved,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rows_claimed_again_and_again_are_listed_as_failing() {
        use crate::changelog::{Changelog as _, MemoryChangelog};
        use crate::model::{ChangeRecord, ObjectPath, OwnerToken};
        let clock: SharedClock = std::sync::Arc::new(crate::clock::TokioClock::new());
        let changelog = MemoryChangelog::new(clock.clone());
        let path = ObjectPath::new("failing/x").unwrap();
        let id = crate::model::ChangeId::mint();
        let record = ChangeRecord::new(path, None, None, OwnerToken::writer());
        changelog.record(&id, &record).await.unwrap();
        for n in 1..=crate::recovery::FAILING_AFTER_CLAIMS {
            // A claim by the owner already is idempotent: each retry is a new claimer.
            let claimer = OwnerToken::recovery_claim();
            tokio::time::sleep(Duration::from_secs(10)).await;
            let seen = changelog.get(&id).await.unwrap().unwrap();
            let now = clock.now();
            let won = changelog.claim(&seen, now, &claimer, now).await.unwrap();
            assert!(matches!(won, crate::changelog::Claim::Won(_)), "claim {n}");
            let b = backlog(&changelog, &clock, Duration::from_secs(1), 100)
                .await
                .unwrap();
            let failing = n >= crate::recovery::FAILING_AFTER_CLAIMS;
            assert_eq!(b.failing, usize::from(failing), "after {n} claims");
            assert_eq!(b.failing_rows.len(), b.failing);
        }
    }
    use crate::changelog::MemoryChangelog;
    use crate::clock::TokioClock;
    use crate::model::{ChangeRecord, ObjectPath, OwnerToken, Revision};

    /// A reset puts a claimed row back to no claims and restamps it now; a row that is
    /// gone is reported as such, not recreated.
    #[tokio::test(start_paused = true)]
    async fn a_reset_clears_the_claims_and_restamps_the_row() {
        use crate::changelog::Changelog as _;
        let clock: SharedClock = Arc::new(TokioClock::new());
        let changelog = MemoryChangelog::new(clock.clone());
        let path = ObjectPath::new("inspect/reset").unwrap();
        let id = ChangeId::mint();
        let record = ChangeRecord::new(path, None, None, OwnerToken::writer());
        changelog.record(&id, &record).await.unwrap();
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let seen = changelog.get(&id).await.unwrap().unwrap();
            let now = clock.now();
            let claimer = OwnerToken::recovery_claim();
            changelog.claim(&seen, now, &claimer, now).await.unwrap();
        }
        let claimed = changelog.get(&id).await.unwrap().unwrap();
        assert_eq!(claimed.record.claims, 3);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let out = reset(&changelog, &id).await.unwrap();
        assert_eq!(
            out,
            Reset::Reset {
                object: "inspect/reset".to_owned(),
                claims: 3
            }
        );
        let after = changelog.get(&id).await.unwrap().unwrap();
        assert_eq!(after.record.claims, 0);
        assert_eq!(after.stamp, clock.now(), "restamped now");
        changelog.remove(&id, &after.record.owner).await.unwrap();
        assert_eq!(reset(&changelog, &id).await.unwrap(), Reset::NotFound);
        assert!(changelog.get(&id).await.unwrap().is_none(), "not recreated");
    }

    /// A writer-owned row stamped an hour ahead is reported, not counted as a claim; a
    /// claim's lease in the future is a claim.
    #[tokio::test(start_paused = true)]
    async fn a_writer_row_stamped_in_the_future_is_reported() {
        let clock: SharedClock = Arc::new(TokioClock::new());
        let changelog = MemoryChangelog::new(clock.clone());
        let path = ObjectPath::new("inspect/future").unwrap();
        let row = |owner: OwnerToken| {
            ChangeRecord::new(path.clone(), None, Some(Revision::mint(&path)), owner).encode()
        };
        let ahead = clock.now().saturating_add(Duration::from_secs(3600));
        let lease = clock.now().saturating_add(Duration::from_secs(60));
        changelog.insert_raw(ChangeId::mint().as_str(), row(OwnerToken::writer()), ahead);
        changelog.insert_raw(
            ChangeId::mint().as_str(),
            row(OwnerToken::recovery_claim()),
            lease,
        );
        let b = backlog(&changelog, &clock, Duration::from_secs(30), 10)
            .await
            .unwrap();
        assert_eq!((b.rows, b.writer_stamped_in_future, b.claimed), (2, 1, 1));
    }
}
