//! The change guard: a writer's hold on its changelog entry while a two-tier mutation runs.
//!
//! The guard records the entry, heartbeats it in a background task, and answers one
//! question before the writer's HV compare-and-write: *may I still commit?* It may not when
//!
//! * a heartbeat failed (after retries) or was refused because recovery claimed the entry, or
//! * its last successful heartbeat was *sent* longer than `staleness_threshold − safety_margin`
//!   ago on the local monotonic clock (a paused or starved process learns this on waking).
//!
//! An invalid guard leaves the entry to recovery. Dropping a guard (the writer's future was
//! cancelled, or the process is dying) stops the heartbeat and does nothing else: the entry
//! goes stale and recovery converges it.

use crate::telemetry::metrics::METRICS;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::changelog::{Changelog, Heartbeat};
use crate::config::ProtocolConfig;
use crate::error::StoreResult;
use crate::model::{ChangeId, ChangeRecord};
use crate::retry::RetryPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardState {
    Valid,
    /// The heartbeat failed after retries; recovery may take over at any moment.
    HeartbeatFailed,
    /// Recovery claimed the entry (the heartbeat was refused).
    Fenced,
    /// No heartbeat succeeded within the guard's validity window.
    Expired,
}

#[derive(Debug)]
struct Shared {
    last_sent_ok: Mutex<Instant>,
    failed: AtomicBool,
    fenced: AtomicBool,
}

#[derive(Debug)]
pub struct ChangeGuard {
    pub id: ChangeId,
    pub record: ChangeRecord,
    shared: Arc<Shared>,
    protocol: ProtocolConfig,
    heartbeat: Option<JoinHandle<()>>,
}

impl ChangeGuard {
    /// Records the change and starts heartbeating it.
    pub async fn begin(
        changelog: Arc<dyn Changelog>,
        record: ChangeRecord,
        protocol: ProtocolConfig,
        retry: RetryPolicy,
    ) -> StoreResult<Self> {
        let id = ChangeId::mint();
        let sent = Instant::now();
        retry
            .run("record", || changelog.record(&id, &record))
            .await?;
        let shared = Arc::new(Shared {
            last_sent_ok: Mutex::new(sent),
            failed: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
        });
        let heartbeat = (!changelog.is_noop()).then(|| {
            tokio::spawn(heartbeat_loop(
                changelog,
                id.clone(),
                record.owner.clone(),
                shared.clone(),
                protocol,
                retry,
            ))
        });
        Ok(Self {
            id,
            record,
            shared,
            protocol,
            heartbeat,
        })
    }

    pub fn state(&self) -> GuardState {
        if self.shared.fenced.load(Ordering::SeqCst) {
            GuardState::Fenced
        } else if self.shared.failed.load(Ordering::SeqCst) {
            GuardState::HeartbeatFailed
        } else if self.heartbeat.is_some() && self.age() >= self.protocol.guard_validity() {
            GuardState::Expired
        } else {
            GuardState::Valid
        }
    }

    fn age(&self) -> std::time::Duration {
        self.shared
            .last_sent_ok
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    /// Stops the heartbeat. Call before removing the entry, so that no heartbeat in flight
    /// can overtake the removal.
    pub fn stop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

impl Drop for ChangeGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn heartbeat_loop(
    changelog: Arc<dyn Changelog>,
    id: ChangeId,
    owner: crate::model::OwnerToken,
    shared: Arc<Shared>,
    protocol: ProtocolConfig,
    retry: RetryPolicy,
) {
    let mut next = Instant::now() + protocol.heartbeat_interval;
    loop {
        tokio::time::sleep_until(next).await;
        let sent = Instant::now();
        next = sent + protocol.heartbeat_interval;
        // Retrying past the guard's validity is pointless: the guard is expired by then.
        let deadline = *shared
            .last_sent_ok
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            + protocol.guard_validity();
        let attempt = retry.run("heartbeat", || changelog.heartbeat(&id, &owner));
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(Heartbeat::Refreshed)) => {
                *shared
                    .last_sent_ok
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = sent;
            }
            Ok(Ok(Heartbeat::Refused)) => {
                tracing::warn!(change_id = %id, "heartbeat refused: recovery has claimed this change; the writer is fenced out");
                shared.fenced.store(true, Ordering::SeqCst);
                return;
            }
            Ok(Err(err)) => {
                METRICS.heartbeat_failures.inc();
                tracing::warn!(change_id = %id, error = %err, "heartbeat failed; leaving the change to recovery");
                shared.failed.store(true, Ordering::SeqCst);
                return;
            }
            Err(_) => {
                METRICS.heartbeat_failures.inc();
                tracing::warn!(change_id = %id, "heartbeat did not complete within the guard's validity; leaving the change to recovery");
                shared.failed.store(true, Ordering::SeqCst);
                return;
            }
        }
    }
}
