//! The cleanup worker: consumes jobs and converges the changes they name.
//!
//! Each job is a hint; the changelog row is the authority. For every delivery:
//!
//! 1. decode the job, or dead-letter it as poison (never panic, never delete);
//! 2. re-read the row: gone means already converged (ack); owned by anything but a
//!    recovery claim, or by another claim than this job's, means the job is stale or forged
//!    (ack, touch nothing);
//! 3. check the object lies in the configured scope, or dead-letter;
//! 4. converge with a fenced HV read, removing the row only if it still carries the claim;
//! 5. ack. A transient failure nacks for redelivery; on the last allowed attempt the job is
//!    dead-lettered with the error instead, and the row stays for a later claim (I5).

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::RecoveryConfig;
use super::job::CleanupJob;
use crate::error::{ErrorKind, StoreError};
use crate::pace::{Pace, Paced};
use crate::protocol::converge::{ConvergeReport, Ending, HvView, RowFate, converge};
use crate::queue::{Delivery, FlowControl, JobQueue};
use crate::stores::Stores;
use crate::telemetry::metrics::METRICS;
use crate::telemetry::{attr, propagation, span};
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Leases a cleaner keeps a job's claim alive for at most (see `Cleaner::keep_claim`).
pub const MAX_LEASES_IN_HAND: u32 = 4;

/// What a cleaner did with one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// The change was converged (or deferred to settle, per the report's row fate).
    Converged(ConvergeReport),
    /// The row is gone: someone converged the change already.
    AlreadyConverged,
    /// The row belongs to another claim (a newer job) or to its writer (a forged job).
    NotOurClaim,
    /// The row is deferred until later (`due_at`): a duplicate or redelivered job
    /// for a change recovery already converged once and is letting settle.
    NotDue,
    /// Nacked for redelivery.
    Retry(String),
    /// Dead-lettered with this reason; the row stays for a later claim.
    DeadLettered(String),
}

impl JobOutcome {
    /// A short name for spans and logs.
    pub fn name(&self) -> &'static str {
        match self {
            JobOutcome::Converged(_) => "converged",
            JobOutcome::AlreadyConverged => "already_converged",
            JobOutcome::NotOurClaim => "not_our_claim",
            JobOutcome::NotDue => "not_due",
            JobOutcome::Retry(_) => "retry",
            JobOutcome::DeadLettered(_) => "dead_lettered",
        }
    }
}

/// The cleanup worker: see the module documentation.
#[derive(Debug, Clone)]
pub struct Cleaner {
    stores: Stores,
    queue: Arc<dyn JobQueue>,
    config: RecoveryConfig,
}

enum Failure {
    Transient(String),
    Permanent(String),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e.kind {
            ErrorKind::Transient => Failure::Transient(e.to_string()),
            ErrorKind::Permanent | ErrorKind::Malformed => Failure::Permanent(e.to_string()),
        }
    }
}

/// How long a stopping cleaner waits for its subscription to send its last acks.
const CLOSE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

impl Cleaner {
    /// A cleaner over `stores`, whose changelog reads and removals it batches across the
    /// jobs in flight ([`Batched`](crate::changelog::Batched)).
    pub fn new(mut stores: Stores, queue: Arc<dyn JobQueue>, config: RecoveryConfig) -> Self {
        // Bigtable's rows are shared with the pool's other workers and the writers; the
        // batching sits above the pace, so a batch waits for all its rows' turns.
        let bigtable = Arc::new(Pace::starting_at(Paced::BigtableRows, config.bigtable_rows_per_s));
        stores.hv = Arc::new(crate::hv::PacedHv::new(stores.hv, bigtable.clone()));
        let paced = Arc::new(crate::changelog::PacedChangelog::new(stores.changelog, bigtable));
        stores.changelog = Arc::new(crate::changelog::Batched::new(paced));
        // Deletes share the bucket's limit with the pool's other cleaners and the writers.
        stores.lt = Arc::new(crate::lt::paced::PacedLt::new(
            stores.lt,
            config.gcs_deletes_per_s,
        ));
        Self {
            stores,
            queue,
            config,
        }
    }

    /// Processes one delivery to the end: it is acked, nacked or dead-lettered on return.
    pub async fn process(&self, delivery: Delivery) -> JobOutcome {
        let outcome = self.process_traced(delivery).await;
        let m = &METRICS;
        match &outcome {
            JobOutcome::Converged(r) => {
                m.jobs_converged.inc();
                m.blobs_deleted.add(r.deleted.len() as u64);
                if r.dangling.is_some() {
                    m.dangling_tombstones.inc();
                }
            }
            JobOutcome::AlreadyConverged => m.jobs_already_converged.inc(),
            JobOutcome::NotOurClaim => m.jobs_not_our_claim.inc(),
            JobOutcome::NotDue => m.jobs_not_due.inc(),
            JobOutcome::Retry(_) => m.jobs_failed.inc(),
            JobOutcome::DeadLettered(_) => m.jobs_dead_lettered.inc(),
        }
        outcome
    }

    async fn process_traced(&self, delivery: Delivery) -> JobOutcome {
        let subscription = self.queue.subscription();
        let span = tracing::info_span!(parent: None, span::PROCESS,
            otel.name = %crate::telemetry::messaging_span_name("process", &subscription),
            otel.kind = "consumer",
            "messaging.system" = attr::GCP_PUBSUB,
            "messaging.operation.name" = "process",
            "messaging.operation.type" = "process",
            "messaging.destination.name" = %self.queue.destination(),
            "messaging.destination.subscription.name" = %subscription,
            "messaging.message.id" = %delivery.message_id,
            "messaging.gcp_pubsub.message.delivery_attempt" = delivery.attempt,
            "tiersweep.change_id" = tracing::field::Empty,
            "tiersweep.outcome" = tracing::field::Empty,
            error.type = tracing::field::Empty,
            otel.status_code = tracing::field::Empty);
        // Same trace as the scan that claimed the change, and linked to the job's producer
        // span as the messaging conventions ask.
        let producer = propagation::extract(&delivery.message.attributes);
        let producer_span = producer.span().span_context().clone();
        if producer_span.is_valid() {
            // Errs only without an OpenTelemetry layer, when there is nothing to parent.
            let _ = span.set_parent(producer);
            span.add_link(producer_span);
        }
        async move {
            let result = self.try_process(&delivery).await;
            let current = tracing::Span::current();
            let outcome = match result {
                Ok(outcome) => outcome,
                Err(Failure::Transient(reason))
                    if delivery.attempt < self.config.max_delivery_attempts =>
                {
                    tracing::warn!(%reason, attempt = delivery.attempt, "job failed; nacking for redelivery");
                    current.record("error.type", "transient");
                    current.record("otel.status_code", "ERROR");
                    settle_span(false, &subscription).in_scope(|| delivery.nack());
                    return JobOutcome::Retry(reason);
                }
                Err(Failure::Transient(reason) | Failure::Permanent(reason)) => {
                    current.record("error.type", "dead_letter");
                    current.record("otel.status_code", "ERROR");
                    return self.dead_letter(delivery, reason).await;
                }
            };
            current.record("tiersweep.outcome", outcome.name());
            settle_span(true, &subscription).in_scope(|| delivery.ack());
            outcome
        }
        .instrument(span)
        .await
    }

    async fn dead_letter(&self, delivery: Delivery, reason: String) -> JobOutcome {
        tracing::error!(%reason, message_id = %delivery.message_id, "dead-lettering job");
        let reason = if crate::mutants::on(crate::mutants::Mutant::DeadLetterWithoutReason) {
            String::new()
        } else {
            reason
        };
        match self.queue.dead_letter(delivery, &reason).await {
            Ok(()) => JobOutcome::DeadLettered(reason),
            // The delivery was dropped unsettled, so it will be redelivered.
            Err(e) => JobOutcome::Retry(format!("{reason}; dead-lettering failed too: {e}")),
        }
    }

    async fn try_process(&self, delivery: &Delivery) -> Result<JobOutcome, Failure> {
        let job = CleanupJob::from_message(&delivery.message)
            .map_err(|e| Failure::Permanent(format!("poison message: {e}")))?;
        tracing::Span::current().record("tiersweep.change_id", job.change.as_str());
        let retry = &self.config.retry;
        let Some(entry) = retry
            .run("get", || self.stores.changelog.get(&job.change))
            .await?
        else {
            return Ok(JobOutcome::AlreadyConverged);
        };
        if let Some(writer) = entry
            .record
            .traceparent
            .as_deref()
            .and_then(propagation::span_context)
        {
            tracing::Span::current().add_link(writer);
        }
        // The row must be owned by a recovery claim, and by this job's: a job naming the
        // writer's own token (tokens are not secret) would otherwise converge a live change.
        use crate::mutants::{Mutant, on};
        let recovery_owned = entry.record.owner.is_recovery_claim()
            || on(Mutant::WriterTokenAccepted)
            || on(Mutant::NoClaimCheck);
        let this_claim = entry.record.owner == job.claim || on(Mutant::NoClaimCheck);
        if !recovery_owned || !this_claim {
            tracing::info!(owner = %entry.record.owner, claim = %job.claim,
                "row is not owned by this job's recovery claim; job is stale or forged, touching nothing");
            return Ok(JobOutcome::NotOurClaim);
        }
        // A deferred row is not due: the job that deferred it may be delivered again (a
        // duplicate, a redelivery after its ack deadline), and converging now would cut the
        // settle short. Judged in the changelog's time, as the deferral was stamped and as
        // the scanners judge it: a cleaner whose clock runs ahead must not see it due early.
        if let Some(due) = entry.record.due_at
            && !on(Mutant::RecoveryRemovesAtOnce)
        {
            let now = if on(Mutant::SettleOnHostClock) {
                self.stores.clock.now()
            } else {
                retry.run("now", || self.stores.changelog.now()).await?
            };
            if due > now {
                tracing::info!(due = %due, "row is deferred until later; a duplicate or early job, touching nothing");
                return Ok(JobOutcome::NotDue);
            }
        }
        if !entry.record.object.is_under(&self.config.object_prefix) && !on(Mutant::NoScopeCheck) {
            return Err(Failure::Permanent(format!(
                "object {} lies outside the configured prefix {:?}; refusing to converge",
                entry.record.object, self.config.object_prefix
            )));
        }
        let converging = converge(
            &self.stores,
            &entry.id,
            &entry.record,
            &job.claim,
            HvView::Fence,
            Ending::SettleUploads(self.config.upload_settle),
            retry,
        )
        .instrument(tracing::info_span!(span::CONVERGE, "tiersweep.change_id" = %entry.id));
        let report = tokio::select! {
            biased;
            report = converging => report?,
            never = self.keep_claim(&entry) => match never {},
        };
        let age = entry
            .id
            .minted_at()
            .map(|t| t.age_at(self.stores.clock.now()));
        if let RowFate::Deferred(due) = report.row {
            tracing::info!(change = %entry.id, object = %entry.record.object,
                deleted = report.deleted.len(), ?age, due = %due,
                "deleted the change's uncommitted upload; its row waits until a late landing of the upload is no longer possible");
            return Ok(JobOutcome::Converged(report));
        }
        if let Some(age) = age {
            METRICS.recovery_lag.record(age);
        }
        tracing::info!(change = %entry.id, object = %entry.record.object,
            deleted = report.deleted.len(), ?age, "converged change");
        Ok(JobOutcome::Converged(report))
    }

    /// Keeps the job's claim alive while the cleaner works on it, as a writer heartbeats its
    /// change: whenever less than half its lease is left, the lease is moved on by a whole
    /// one. Costs nothing for a job that finishes within half a lease of its claim; a job
    /// that waited long, or converges slowly, is not claimed again meanwhile. A refused
    /// extension means the row moved on (a duplicate converged it, or a later claim took it
    /// over): converging goes on regardless, as it is safe concurrently, and this stops. So
    /// does it after [`MAX_LEASES_IN_HAND`] leases: a cleaner stuck on a call must not hold
    /// a row forever. Never returns.
    ///
    /// Every time written or compared here is the changelog's (Bigtable's server), as the
    /// lease is stamped and judged: on this host's clock a cleaner behind by a lease would
    /// extend to a time already past and lose the row while it works, and one ahead would
    /// hold a dead job's row for its skew. Only the first look is timed by this host's
    /// clock (at most half a lease away). Waits run on the local timer and are re-checked
    /// against the changelog's time, so a host suspended meanwhile extends from the time it
    /// wakes to, not the time it slept at.
    async fn keep_claim(
        &self,
        entry: &crate::changelog::ChangelogEntry,
    ) -> std::convert::Infallible {
        let changelog = &self.stores.changelog;
        let lease = self.config.lease_for(entry.record.claims.saturating_sub(1));
        let mut stamp = entry.stamp;
        let mut give_up = None;
        // When to look first is this host's guess, never longer than half a lease: a job
        // that converges within it costs no call at all (the common case), and a host clock
        // that is wrong only moves that first look, not any time written.
        let first_look = self
            .stores
            .clock
            .now()
            .age_at(stamp.saturating_sub(lease / 2))
            .min(lease / 2);
        tokio::time::sleep(first_look).await;
        loop {
            let host_clock = crate::mutants::on(crate::mutants::Mutant::KeepClaimOnHostClock);
            let now = match changelog.now().await {
                Ok(_) if host_clock => self.stores.clock.now(),
                Ok(now) => now,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the changelog's time to keep a claim failed; retrying");
                    tokio::time::sleep(self.config.retry.max_delay).await;
                    continue;
                }
            };
            let give_up = *give_up.get_or_insert(now.saturating_add(lease * MAX_LEASES_IN_HAND));
            let due = stamp.saturating_sub(lease / 2);
            if due >= give_up {
                tracing::warn!(change = %entry.id, ?lease, leases = MAX_LEASES_IN_HAND,
                    "job still in hand after this many claim leases; letting its lease end so the row is claimed again");
                break;
            }
            if now < due {
                // `now` seen from `due`: the time left until then; then look again.
                tokio::time::sleep(now.age_at(due)).await;
                continue;
            }
            let until = now.saturating_add(lease);
            match changelog
                .extend_claim(&entry.id, &entry.record.owner, until)
                .await
            {
                Ok(crate::changelog::Extension::Extended) => {
                    METRICS.claims_extended.inc();
                    stamp = until;
                }
                Ok(crate::changelog::Extension::Refused) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "extending the claim of a job in hand failed; retrying");
                    tokio::time::sleep(self.config.retry.max_delay).await;
                }
            }
        }
        std::future::pending().await
    }

    /// Pulls and processes jobs until cancelled, `cleaner_concurrency` at a time. On
    /// cancellation it stops pulling, lets in-flight jobs finish within `drain_deadline`,
    /// and abandons the rest unsettled, so they are redelivered.
    pub async fn run(self, cancel: CancellationToken, drain_deadline: std::time::Duration) {
        let flow = FlowControl {
            max_outstanding: self.config.cleaner_concurrency,
            ..FlowControl::default()
        };
        let mut subscription = loop {
            match self.queue.subscribe(flow).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(error = %e, "subscribe failed; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(self.config.retry.max_delay) => {}
                    }
                }
            }
        };
        let tracker = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(self.config.cleaner_concurrency));
        let this = Arc::new(self);
        loop {
            let permit = tokio::select! {
                _ = cancel.cancelled() => break,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let next = tokio::select! {
                _ = cancel.cancelled() => break,
                n = subscription.next() => n,
            };
            match next {
                None => {
                    tracing::warn!("the subscription closed; the cleaner stops pulling");
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "pull failed; backing off");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(this.config.retry.min_delay) => {}
                    }
                }
                Some(Ok(delivery)) => {
                    let this = this.clone();
                    tracker.spawn(async move {
                        let _permit = permit;
                        this.process(delivery).await;
                    });
                }
            }
        }
        // No more deliveries, and what the client pulled ahead goes back to the pool once
        // the stream closes, instead of waiting out its lease with a process that is gone.
        subscription.stop_pulling().await;
        tracker.close();
        if tokio::time::timeout(drain_deadline, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "in-flight jobs did not finish within the drain deadline; they will be redelivered"
            );
        } else if tokio::time::timeout(CLOSE_DEADLINE, subscription.close())
            .await
            .is_err()
        {
            tracing::warn!("the subscription did not close in time; unsent acks are redelivered");
        }
        tracing::info!("cleaner stopped");
    }
}

/// A settle span (ack or nack) as the messaging conventions name it: a client call to the
/// subscription, of operation type `settle`, exported as `ack <subscription>` or
/// `nack <subscription>`.
fn settle_span(ack: bool, subscription: &str) -> tracing::Span {
    // tracing takes a span's name as a literal: one invocation per name, same fields.
    macro_rules! settle {
        ($name:expr, $operation:literal) => {
            tracing::info_span!($name,
                otel.name = %crate::telemetry::messaging_span_name($operation, subscription),
                otel.kind = "client",
                "messaging.system" = attr::GCP_PUBSUB,
                "messaging.operation.name" = $operation,
                "messaging.operation.type" = "settle",
                "messaging.destination.subscription.name" = %subscription)
        };
    }
    if ack {
        settle!(span::ACK, "ack")
    } else {
        settle!(span::NACK, "nack")
    }
}
