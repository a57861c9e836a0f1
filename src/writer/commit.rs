//! A recorded change's guarded compare-and-write and what follows it: completion, now or in
//! the background, or the change left as safe as the outcome allows.

use tracing::Instrument;

use super::{ChangeGuard, GuardState, TieredStorage, WriteError};
use crate::error::StoreError;
use crate::hv::{CasOutcome, HvWrite, Version};
use crate::model::{HvValue, ObjectPath, Revision};
use crate::mutants::Mutant;
use crate::protocol::converge::{Ending, HvView, RowFate, converge};
use crate::telemetry::metrics::METRICS;

/// What became of a change's guarded compare-and-write.
enum Guarded {
    /// The last attempt's outcome, and whether an earlier attempt failed in a way that
    /// leaves it unknown whether it landed.
    Sent(CasOutcome, Uncertain),
    /// The guard was invalid before any attempt was sent: HV does not reference the upload.
    NotSent(GuardState),
    /// The guard lapsed before a retry; an earlier attempt may have landed.
    LapsedAfterSending,
}

/// Set when an attempt of a compare-and-write failed to its caller: it may have landed, or
/// may still land until a later write of the row changes its version.
#[derive(Debug, Default)]
pub(super) struct Uncertain(std::sync::atomic::AtomicBool);

impl Uncertain {
    pub(super) fn note<T>(&self, result: &Result<T, StoreError>) {
        if result.is_err() {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    pub(super) fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl TieredStorage {
    /// The guarded compare-and-write of a recorded change whose new revision (if any) is
    /// uploaded, and what follows it: completing the change, or, when the guard lapsed or
    /// the write was refused, leaving it as safe as the outcome allows. `settle`: an upload
    /// attempt failed, so the change goes to recovery after `upload_settle` instead of
    /// being removed (a failed attempt may still land).
    pub(super) async fn commit(
        &self,
        guard: ChangeGuard,
        path: &ObjectPath,
        expected: Option<&Version>,
        write: &HvWrite,
        new: Option<Revision>,
        settle: bool,
    ) -> Result<(), WriteError> {
        let retry = &self.config.retry;
        let (outcome, uncertain) = match self.guarded_cas(&guard, path, expected, write).await? {
            Guarded::Sent(outcome, uncertain) => (outcome, uncertain),
            Guarded::NotSent(state) => {
                if state == GuardState::Fenced {
                    METRICS.writers_fenced.inc();
                }
                self.abandon(&guard).await;
                return Err(WriteError::GuardLost {
                    path: path.clone(),
                    change: guard.id.clone(),
                    state,
                });
            }
            Guarded::LapsedAfterSending => {
                // A retry after a long stall. An earlier attempt may have landed, so the
                // outcome is unknown and the upload is not ours to delete: recovery fences
                // the row and decides. Dropping the guard stops the heartbeat.
                return Err(WriteError::Store(StoreError::new(
                    crate::error::StoreKind::Hv,
                    "compare_and_write",
                    path.to_string(),
                    crate::error::ErrorKind::Transient,
                    format!(
                        "change {}: the guard lapsed before a retry could be sent, and an \
                         earlier attempt may have landed; left to recovery, re-read and retry",
                        guard.id
                    ),
                )));
            }
        };
        let referenced = match outcome {
            CasOutcome::Applied => new,
            CasOutcome::Conflict => {
                // Another write or recovery's fence changed the row first. The version this
                // write expected never returns, so no attempt of it can land any more, not
                // even one still queued at the server: the refusal is the change's fence,
                // and a plain read of HV is final as far as this change goes.
                let now = retry.run("read", || self.stores.hv.read(path)).await?;
                let referenced = now.as_ref().and_then(HvValue::tombstone).cloned();
                let change = guard.id.clone();
                // The row is no longer the writer's when recovery claimed it: its fence
                // is what refused the write.
                let still_ours = if settle {
                    self.complete_deferred(guard, referenced).await?
                } else {
                    self.complete(guard, referenced).await?
                };
                return Err(if !still_ours {
                    METRICS.writers_fenced.inc();
                    WriteError::Fenced {
                        path: path.clone(),
                        change,
                    }
                } else if uncertain.is_set() {
                    WriteError::OutcomeUnknown { path: path.clone() }
                } else {
                    WriteError::Conflict { path: path.clone() }
                });
            }
        };
        if settle {
            self.complete_deferred(guard, referenced).await?;
        } else {
            self.finish(guard, referenced).await?;
        }
        Ok(())
    }

    /// Completes a committed change now, or in the background when configured to.
    async fn finish(
        &self,
        guard: ChangeGuard,
        referenced: Option<Revision>,
    ) -> Result<(), StoreError> {
        if self.config.background_completions == 0 {
            return self.complete(guard, referenced).await.map(drop);
        }
        // Waits when N completions are already running: backpressure, not an unbounded queue.
        let Ok(slot) = self.completions.clone().acquire_owned().await else {
            return self.complete(guard, referenced).await.map(drop);
        };
        let this = self.clone();
        tokio::spawn(
            async move {
                let _slot = slot;
                let change = guard.id.clone();
                if let Err(err) = this.complete(guard, referenced).await {
                    tracing::warn!(change_id = %change, error = %err,
                        "completing a committed write failed; recovery converges it once its entry is stale");
                }
            }
            .in_current_span(),
        );
        Ok(())
    }

    /// The change's compare-and-write, retried, with the guard checked before *every*
    /// attempt: an attempt is sent only while the guard is valid, so none leaves the writer
    /// after its entry could have gone stale. (Recovery's fence refuses a late attempt
    /// anyway; the check keeps a writer from committing a change it no longer owns.)
    async fn guarded_cas(
        &self,
        guard: &ChangeGuard,
        path: &ObjectPath,
        expected: Option<&Version>,
        write: &HvWrite,
    ) -> Result<Guarded, StoreError> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let new_version = Version::of_change(&guard.id);
        let sent = AtomicUsize::new(0);
        let uncertain = Uncertain::default();
        let lapsed = std::sync::Mutex::new(None);
        let result = self
            .config
            .retry
            .run("compare_and_write", || {
                let state = if sent.load(Ordering::SeqCst) > 0
                    && crate::mutants::on(Mutant::GuardCheckedOnce)
                {
                    GuardState::Valid
                } else {
                    guard.state()
                };
                if state == GuardState::Valid {
                    sent.fetch_add(1, Ordering::SeqCst);
                } else if let Ok(mut l) = lapsed.lock() {
                    *l = Some(state);
                }
                let (new_version, uncertain) = (&new_version, &uncertain);
                async move {
                    if state != GuardState::Valid {
                        return Err(StoreError::new(
                            crate::error::StoreKind::Hv,
                            "compare_and_write",
                            path.to_string(),
                            crate::error::ErrorKind::Permanent,
                            "the change's guard lapsed before this attempt; not sent",
                        ));
                    }
                    let result = self
                        .stores
                        .hv
                        .compare_and_write(path, expected, write, new_version)
                        .await;
                    uncertain.note(&result);
                    result
                }
            })
            .await;
        let lapsed = lapsed.lock().ok().and_then(|l| *l);
        match (result, lapsed) {
            (Err(_), Some(state)) if sent.load(Ordering::SeqCst) == 0 => {
                Ok(Guarded::NotSent(state))
            }
            (Err(_), Some(_)) => Ok(Guarded::LapsedAfterSending),
            (result, _) => result.map(|outcome| Guarded::Sent(outcome, uncertain)),
        }
    }

    /// Gives the change up to recovery without committing it. The entry is recovery's now,
    /// but the revision this writer uploaded is its own to delete: no write referencing it
    /// was or will be committed, and recovery may have converged before the upload landed
    /// (a paused writer), in which case only this writer knows the blob exists.
    async fn abandon(&self, guard: &ChangeGuard) {
        if let Some(new) = &guard.record.new
            && let Err(err) = self
                .config
                .retry
                .run("delete", || self.stores.lt.delete(new))
                .await
        {
            tracing::warn!(change_id = %guard.id, revision = %new, error = %err,
                "could not delete the uncommitted upload; recovery deletes it if its entry is still there");
        }
    }

    /// Converges the guard's change with what the writer knows HV references, then releases
    /// it. Returns whether the row was still the writer's to remove.
    pub(super) async fn complete(
        &self,
        mut guard: ChangeGuard,
        referenced: Option<Revision>,
    ) -> Result<bool, StoreError> {
        guard.stop();
        let report = converge(
            &self.stores,
            &guard.id,
            &guard.record,
            &guard.record.owner,
            HvView::Known(referenced),
            Ending::Remove,
            &self.config.retry,
        )
        .await?;
        Ok(report.row == RowFate::Removed)
    }
}
