//! Deferred puts (recorded now, written later) and the settle that hands a change to
//! recovery once a late upload can no longer land.

use bytes::Bytes;
use tracing::Instrument;

use super::upload::Body;
use super::{ChangeGuard, GuardState, TieredStorage, WriteError};
use crate::error::StoreError;
use crate::hv::{HvWrite, Version};
use crate::model::{ChangeId, ChangeRecord, HvValue, ObjectMeta, ObjectPath, OwnerToken, Revision};

/// A put recorded now and written later, like a multipart upload a client assembles over
/// hours: see [`TieredStorage::begin_deferred_put`]. Finish it with
/// [`finish_deferred_put`](TieredStorage::finish_deferred_put) or give it up with
/// [`abort_deferred_put`](TieredStorage::abort_deferred_put); dropped, or its process
/// gone, recovery converges it once its deadline has passed.
#[derive(Debug)]
pub struct DeferredPut {
    path: ObjectPath,
    meta: ObjectMeta,
    new: Revision,
    /// The row's version when the change began: the commit expects it, so once recovery
    /// fenced the row after the deadline, no commit of this put can land.
    expected: Option<Version>,
    /// What HV referenced when the change began.
    old: Option<Revision>,
    guard: ChangeGuard,
}

impl DeferredPut {
    /// The object being put.
    pub fn path(&self) -> &ObjectPath {
        &self.path
    }

    /// The change's id: what a service hands its client as the upload's id.
    pub fn change(&self) -> &ChangeId {
        &self.guard.id
    }

    /// When recovery may take the change over, by the changelog's clock.
    pub fn deadline(&self) -> Option<crate::model::Timestamp> {
        self.guard.record.due_at
    }

    /// Whether the put may still be finished: `Expired` once less than the safety margin
    /// is left before the deadline.
    pub fn state(&self) -> GuardState {
        self.guard.state()
    }
}

impl TieredStorage {
    /// Records a large put that will be written later, over as long as `within`: a
    /// multipart upload a client assembles over hours, say. The change is due for recovery
    /// only `within` from now, by the changelog's clock, and is not heartbeated meanwhile,
    /// so the writer need not stay up between the parts; recovery leaves it alone until
    /// then. The put must be finished a safety margin before that deadline (measured from
    /// before the record, on this process's clocks, as every guard is); a put finished
    /// later, or never, is converged by recovery, and the object keeps its earlier value.
    ///
    /// The object goes to LT whatever its size. Its metadata is set now and written with
    /// the bytes.
    pub async fn begin_deferred_put(
        &self,
        path: &ObjectPath,
        meta: ObjectMeta,
        within: std::time::Duration,
    ) -> Result<DeferredPut, WriteError> {
        let margin = self.config.protocol.safety_margin;
        if within <= margin {
            return Err(WriteError::DeadlineTooShort {
                path: path.clone(),
                within,
                margin,
            });
        }
        let span = tracing::info_span!(crate::telemetry::span::WRITE,
            "tiersweep.object" = %path, "tiersweep.change_id" = tracing::field::Empty);
        async {
            let retry = &self.config.retry;
            let row = retry.run("read", || self.stores.hv.read_row(path)).await?;
            let old = row.value.as_ref().and_then(HvValue::tombstone).cloned();
            let new = Revision::mint(path);
            let mut record = ChangeRecord::new(
                path.clone(),
                old.clone(),
                Some(new.clone()),
                OwnerToken::writer(),
            );
            record.traceparent = crate::telemetry::propagation::current_traceparent();
            let guard = ChangeGuard::begin_deferred(
                self.stores.changelog.clone(),
                self.stores.clock.clone(),
                record,
                self.config.protocol,
                self.config.retry,
                within,
            )
            .await?;
            tracing::Span::current().record("tiersweep.change_id", guard.id.as_str());
            Ok(DeferredPut {
                path: path.clone(),
                meta,
                new,
                expected: row.version,
                old,
                guard,
            })
        }
        .instrument(span)
        .await
    }

    /// Writes a deferred put's bytes and commits it, as [`put_stream`](Self::put_stream)
    /// does a large object. The stream may take until the put's deadline less the safety
    /// margin; the upload stops at the first chunk after that, and the put fails with the
    /// object unchanged.
    pub async fn finish_deferred_put<S>(&self, put: DeferredPut, body: S) -> Result<(), WriteError>
    where
        S: futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let DeferredPut {
            path,
            meta,
            new,
            expected,
            guard,
            ..
        } = put;
        let span = tracing::info_span!(crate::telemetry::span::WRITE,
            "tiersweep.object" = %path, "tiersweep.change_id" = guard.id.as_str());
        async {
            // Past its deadline less the margin: nothing is sent, and the change is
            // recovery's (due at the deadline).
            let state = guard.state();
            if state != GuardState::Valid {
                return Err(WriteError::GuardLost {
                    path: path.clone(),
                    change: guard.id.clone(),
                    state,
                });
            }
            let write = HvWrite::Tombstone(new.clone(), meta);
            let body = Body::Stream(std::sync::Mutex::new(Some(Box::pin(body))));
            let (guard, settle) = self.upload(guard, &new, body, &write).await?;
            self.commit(guard, &path, expected.as_ref(), &write, Some(new), settle)
                .await
        }
        .instrument(span)
        .await
    }

    /// Gives a deferred put up before any of it was written: its change is removed now
    /// rather than at its deadline. The object keeps its earlier value.
    pub async fn abort_deferred_put(&self, put: DeferredPut) -> Result<(), WriteError> {
        self.complete(put.guard, put.old).await?;
        Ok(())
    }

    /// Completes a change whose upload needed a retry (committed, or refused by a
    /// conflict): deletes what HV does not reference now, but leaves the row to recovery
    /// until `upload_settle` has passed instead of removing it. A failed attempt of the
    /// upload may still land, and if this revision is unreferenced by then (overwritten and
    /// deleted, or never committed), nothing else would ever delete it; recovery fences,
    /// re-reads HV and deletes it unless HV still references it.
    /// Returns whether the row was still the writer's.
    pub(super) async fn complete_deferred(
        &self,
        mut guard: ChangeGuard,
        referenced: Option<Revision>,
    ) -> Result<bool, StoreError> {
        guard.stop();
        let retry = &self.config.retry;
        for rev in crate::protocol::converge::unreferenced(&guard.record, referenced.as_ref()) {
            retry.run("delete", || self.stores.lt.delete(rev)).await?;
        }
        let record = self.due_after_upload_settle(&guard).await?;
        let deferral = retry
            .run("defer", || self.stores.changelog.defer(&guard.id, &record))
            .await?;
        Ok(deferral == crate::changelog::Deferral::Deferred)
    }

    /// The guard's record, due for recovery once a late upload can no longer land. Due by
    /// the changelog's own time, as every liveness stamp is: on this host's clock, a writer
    /// running ahead would hide its change from recovery for its skew, and one running
    /// behind would make it due at once — recovery would then delete before a late attempt
    /// lands, and that blob would be an orphan. No fallback to the host clock: if the
    /// changelog cannot say, the change is not deferred, and recovery takes it when it
    /// turns stale, with a settle pass of its own.
    pub(super) async fn due_after_upload_settle(
        &self,
        guard: &ChangeGuard,
    ) -> Result<ChangeRecord, StoreError> {
        let now = if crate::mutants::on(crate::mutants::Mutant::WriterSettleOnHostClock) {
            self.stores.clock.now()
        } else {
            self.config
                .retry
                .run("now", || self.stores.changelog.now())
                .await?
        };
        let mut record = guard.record.clone();
        // Never earlier than a due time the row already carries (a deferred put's
        // deadline): a scanner that saw the row watches it until the time it saw, so an
        // earlier one would be taken up only then anyway; later is always safe.
        let settled = now.saturating_add(self.config.upload_settle);
        record.due_at = match record.due_at {
            Some(due) if !crate::mutants::on(crate::mutants::Mutant::SettleMovesDueEarlier) => {
                Some(due.max(settled))
            }
            _ => Some(settled),
        };
        record.settled = true;
        Ok(record)
    }
}
