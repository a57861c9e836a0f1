//! Converging one change: the single function both the writer (on completion) and
//! recovery (for an abandoned change) use to bring the tiers back into agreement.
//!
//! The rule is small enough to state whole: *delete each of the change's revisions that HV
//! does not reference, then remove the changelog entry*. It is idempotent (deleting a
//! missing revision succeeds; removing a missing entry is fine), so it may run any number
//! of times, concurrently, or be interrupted at any point.
//!
//! What HV references must be final before anything is deleted. The writer knows it from
//! its own compare-and-write outcome ([`HvView::Known`]). Recovery does not; it fences the
//! row first ([`HvView::Fence`]: a new version, after which the writer's write, which
//! expects the version it read before recording the change, can never land), and only
//! then reads.

use std::time::Duration;

use crate::changelog::{Deferral, Removal};
use crate::error::StoreResult;
use crate::model::{ChangeId, ChangeRecord, HvValue, OwnerToken, Revision, Timestamp};
use crate::retry::RetryPolicy;
use crate::stores::Stores;

/// Where converge learns what HV references.
#[derive(Debug, Clone)]
pub enum HvView {
    /// The caller knows: the revision HV references now (if any) as far as this change goes.
    Known(Option<Revision>),
    /// Fence the row, then read it.
    Fence,
}

/// How converge ends once the deletes are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Remove the row (if `owner` still owns it).
    Remove,
    /// Recovery's ending. The row is removed outright
    /// ([`remove_many`](crate::changelog::Changelog::remove_many), which a cleaner
    /// batches), not on condition of the claim: a later claim of the same change would make
    /// the same decision (why: docs/design/convergence.md). When this pass deleted the
    /// change's `new` revision, whose writer died with the upload perhaps still on its way,
    /// the row is deferred for this long instead, and a later pass deletes the revision
    /// again and removes the row; a change whose record is already `settled` is removed.
    /// Zero removes at once.
    SettleUploads(Duration),
}

/// What became of the changelog row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowFate {
    /// Gone: removed by this call (recovery's unconditional removal cannot tell whether
    /// it was there).
    Removed,
    /// Gone already, or owned by someone else: left as it is.
    NotOwned,
    /// Deferred: due for another pass after this time.
    Deferred(Timestamp),
}

/// What converging one change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvergeReport {
    /// Revisions of the change that HV does not reference, now deleted.
    pub deleted: Vec<Revision>,
    /// The change's revision that HV references, kept.
    pub kept: Option<Revision>,
    /// Set when HV references a revision of this change whose blob is missing: a read of
    /// the object will fail, and an operator must look.
    pub dangling: Option<Revision>,
    /// What became of the changelog row.
    pub row: RowFate,
}

/// The revisions of `record` that may be deleted when HV references `referenced`.
pub fn unreferenced<'a>(
    record: &'a ChangeRecord,
    referenced: Option<&'a Revision>,
) -> impl Iterator<Item = &'a Revision> {
    record.revisions().filter(move |r| Some(*r) != referenced)
}

/// Converges one change: learns what HV references (from `view`), deletes the change's revisions it does not, and ends the row as `ending` says; see the module documentation.
pub async fn converge(
    stores: &Stores,
    id: &ChangeId,
    record: &ChangeRecord,
    owner: &OwnerToken,
    view: HvView,
    ending: Ending,
    retry: &RetryPolicy,
) -> StoreResult<ConvergeReport> {
    // Only recovery has reason to doubt a kept blob, and only a committed one (`new`): the
    // writer uploads before its HV write, so a missing one means a bug somewhere. A kept
    // `old` predates the change, and checking it would cost every recovered change a call.
    let verify_kept = matches!(view, HvView::Fence);
    let referenced = match view {
        HvView::Known(r) => r,
        HvView::Fence => fenced_decision(stores, record, retry).await?,
    };
    if crate::mutants::on(crate::mutants::Mutant::RemoveRowBeforeDeletes) {
        retry
            .run("remove", || stores.changelog.remove(id, owner))
            .await?;
    }
    let deleted = delete_unreferenced(stores, record, referenced.as_ref(), retry).await?;
    let kept = referenced.filter(|r| record.revisions().any(|own| own == r));
    let dangling = match &kept {
        Some(rev) if verify_kept && record.new.as_ref() == Some(rev) => {
            dangling(stores, record, rev, retry).await?
        }
        _ => None,
    };
    if let Some(rev) = &dangling {
        tracing::error!(change_id = %id, revision = %rev, object = %record.object,
            "dangling tombstone: HV references a revision whose LT blob is missing");
    }
    let row = end_row(stores, id, record, owner, ending, &deleted, retry).await?;
    Ok(ConvergeReport {
        deleted,
        kept,
        dangling,
        row,
    })
}

/// Deletes the revisions of `record` HV does not reference; returns them.
async fn delete_unreferenced(
    stores: &Stores,
    record: &ChangeRecord,
    referenced: Option<&Revision>,
    retry: &RetryPolicy,
) -> StoreResult<Vec<Revision>> {
    let mut deleted = Vec::with_capacity(2);
    for rev in unreferenced(record, referenced) {
        // A settled record's pass comes after the settle, when an upload still on its way
        // at the first pass has landed: most find nothing. GCS budgets reads at five times
        // writes, so this pass looks before it deletes (docs/design/deferral.md).
        if record.settled && !still_there(stores, rev, retry).await? {
            deleted.push(rev.clone());
            continue;
        }
        match retry.run("delete", || stores.lt.delete(rev)).await {
            Err(_) if crate::mutants::on(crate::mutants::Mutant::DeleteErrorTakenForGone) => {}
            result => result?,
        }
        deleted.push(rev.clone());
    }
    Ok(deleted)
}

/// `kept`, the change's committed revision HV references, if its blob is missing and HV
/// still points at it. A later change may have moved HV on and deleted the blob,
/// legitimately: only a tombstone that still points at the missing blob is dangling.
async fn dangling(
    stores: &Stores,
    record: &ChangeRecord,
    kept: &Revision,
    retry: &RetryPolicy,
) -> StoreResult<Option<Revision>> {
    if retry.run("exists", || stores.lt.exists(kept)).await? {
        return Ok(None);
    }
    let now = retry.run("read", || stores.hv.read(&record.object)).await?;
    Ok((now.as_ref().and_then(HvValue::tombstone) == Some(kept)).then(|| kept.clone()))
}

/// Ends the change's row as `ending` says, once its unreferenced revisions (`deleted`) are
/// gone: deferred for the settle when recovery deleted an upload that may still land,
/// removed otherwise.
async fn end_row(
    stores: &Stores,
    id: &ChangeId,
    record: &ChangeRecord,
    owner: &OwnerToken,
    ending: Ending,
    deleted: &[Revision],
    retry: &RetryPolicy,
) -> StoreResult<RowFate> {
    let settle = match ending {
        Ending::SettleUploads(settle)
            if !settle.is_zero()
                && !record.settled
                && record.new.as_ref().is_some_and(|n| deleted.contains(n))
                && !crate::mutants::on(crate::mutants::Mutant::RecoveryRemovesAtOnce) =>
        {
            Some(settle)
        }
        _ => None,
    };
    Ok(
        if crate::mutants::on(crate::mutants::Mutant::RemoveRowBeforeDeletes) {
            RowFate::Removed
        } else if let Some(settle) = settle {
            defer_for_settle(stores, id, record, owner, settle, retry).await?
        } else if matches!(ending, Ending::SettleUploads(_)) {
            retry
                .run("remove", || {
                    stores.changelog.remove_many(std::slice::from_ref(id))
                })
                .await?;
            RowFate::Removed
        } else {
            match retry
                .run("remove", || stores.changelog.remove(id, owner))
                .await?
            {
                Removal::Removed => RowFate::Removed,
                Removal::NotOwned => RowFate::NotOwned,
            }
        },
    )
}

/// Defers the row until `settle` from now, when an upload still on its way can no longer
/// land, for a second pass.
async fn defer_for_settle(
    stores: &Stores,
    id: &ChangeId,
    record: &ChangeRecord,
    owner: &OwnerToken,
    settle: std::time::Duration,
    retry: &RetryPolicy,
) -> StoreResult<RowFate> {
    // In the changelog's time (Bigtable's server), the clock the scanners judge
    // `due_at` by: a cleaner host's clock behind by the settle would make the row
    // due at once, and the dead writer's upload could then land after the second pass, an
    // orphan. No fallback to the host clock: a failed read fails the job, which is retried.
    let now = if crate::mutants::on(crate::mutants::Mutant::SettleOnHostClock) {
        stores.clock.now()
    } else {
        retry.run("now", || stores.changelog.now()).await?
    };
    let due = now.saturating_add(settle);
    let mut deferred = record.clone();
    deferred.owner = owner.clone();
    deferred.due_at = Some(due);
    deferred.settled = true;
    // Not a failed attempt: the second pass starts from the base lease.
    deferred.claims = 0;
    Ok(
        match retry
            .run("defer", || stores.changelog.defer(id, &deferred))
            .await?
        {
            Deferral::Deferred => RowFate::Deferred(due),
            Deferral::NotOwned => RowFate::NotOwned,
        },
    )
}

/// Whether `rev`'s blob exists, for a pass after the settle. An error is an error: taken
/// for "absent", the row would go with the blob still there, an orphan no row names.
async fn still_there(stores: &Stores, rev: &Revision, retry: &RetryPolicy) -> StoreResult<bool> {
    match retry.run("exists", || stores.lt.exists(rev)).await {
        Err(_) if crate::mutants::on(crate::mutants::Mutant::ExistsErrorTakenForAbsent) => {
            Ok(false)
        }
        result => result,
    }
}

/// Fences the row and decides which of the change's revisions HV references, if any, in one
/// fenced call per revision asked about: `old` first, as a change is most often abandoned
/// before its HV write (then one call decides), and `new` only when HV no longer names
/// `old`. Asking twice is sound: once the first fence has landed, no write of this change
/// can land (its writer expects the version it read before recording the change), and no
/// other write ever names `old` or `new` again (revisions are minted per write), so
/// "references `new`" can only turn false between the calls, never true, and what the
/// second call sees is as final as a single fence followed by a read.
async fn fenced_decision(
    stores: &Stores,
    record: &ChangeRecord,
    retry: &RetryPolicy,
) -> StoreResult<Option<Revision>> {
    use crate::mutants::{Mutant, on};
    let path = &record.object;
    if on(Mutant::NoHvFence) || on(Mutant::FenceAfterRead) {
        let value = retry.run("read", || stores.hv.read(path)).await?;
        if on(Mutant::FenceAfterRead) {
            for rev in record.revisions() {
                retry.run("fence", || stores.hv.fence(path, rev)).await?;
            }
        }
        let referenced = value.as_ref().and_then(HvValue::tombstone);
        return Ok(record.revisions().find(|r| Some(*r) == referenced).cloned());
    }
    for rev in record.revisions() {
        if retry.run("fence", || stores.hv.fence(path, rev)).await? {
            return Ok(Some(rev.clone()));
        }
        if on(Mutant::FenceAsksOnce) {
            break;
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectPath;

    #[test]
    fn unreferenced_keeps_exactly_what_hv_points_at() {
        let p = ObjectPath::new("o").unwrap();
        let (old, new) = (Revision::mint(&p), Revision::mint(&p));
        let rec = ChangeRecord::new(
            p,
            Some(old.clone()),
            Some(new.clone()),
            OwnerToken::mint("w"),
        );
        let del = |r: Option<&Revision>| unreferenced(&rec, r).cloned().collect::<Vec<_>>();
        assert_eq!(del(Some(&old)), vec![new.clone()]);
        assert_eq!(del(Some(&new)), vec![old.clone()]);
        assert_eq!(del(None), vec![old, new]);
    }
}
