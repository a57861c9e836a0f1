//! The change guard: a writer's hold on its changelog entry while a two-tier mutation runs.
//!
//! The guard records the entry, heartbeats it in a background task, and answers one
//! question before the writer's HV compare-and-write: *may I still commit?* It may not when
//!
//! * a heartbeat failed (after retries) or was refused because recovery claimed the entry, or
//! * its last successful heartbeat was *sent* longer than `staleness_threshold − safety_margin`
//!   ago, on the local monotonic clock **or** on the wall clock. Both, because each misses
//!   something: Linux's monotonic clock (tokio's `Instant`) stops while a host is suspended,
//!   so a VM that slept for a day would wake up thinking no time had passed; the wall clock
//!   counts the suspension but can be stepped backwards. A step forward only expires the
//!   guard early, which is safe.
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
use crate::clock::SharedClock;
use crate::error::StoreResult;
use crate::model::{ChangeId, ChangeRecord, Timestamp};
use crate::protocol::ProtocolConfig;
use crate::retry::RetryPolicy;

/// Whether a writer may still act on its change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardState {
    /// It may: recovery cannot take the change over before the guard lapses.
    Valid,
    /// The heartbeat failed after retries; recovery may take over at any moment.
    HeartbeatFailed,
    /// Recovery claimed the entry (the heartbeat was refused).
    Fenced,
    /// No heartbeat succeeded within the guard's validity window.
    Expired,
}

/// A moment on both of the process's clocks: when the last successful heartbeat (or the
/// record) was sent.
#[derive(Debug, Clone, Copy)]
struct Sent {
    monotonic: Instant,
    wall: Timestamp,
}

#[derive(Debug)]
struct Shared {
    last_sent_ok: Mutex<Sent>,
    failed: AtomicBool,
    fenced: AtomicBool,
}

/// A guard's state, read from a clone: see [`ChangeGuard::watch`].
#[derive(Debug, Clone)]
pub struct GuardWatch {
    shared: Arc<Shared>,
    validity: std::time::Duration,
    clock: SharedClock,
    /// Whether the guard heartbeats and so can expire (a no-op changelog does not).
    expires: bool,
}

impl GuardWatch {
    /// The guard's state now.
    pub fn state(&self) -> GuardState {
        state_of(&self.shared, self.validity, &self.clock, self.expires)
    }
}

fn state_of(
    shared: &Shared,
    validity: std::time::Duration,
    clock: &SharedClock,
    expires: bool,
) -> GuardState {
    if shared.fenced.load(Ordering::SeqCst) {
        GuardState::Fenced
    } else if shared.failed.load(Ordering::SeqCst) {
        GuardState::HeartbeatFailed
    } else if expires && age(shared, clock) >= validity {
        GuardState::Expired
    } else {
        GuardState::Valid
    }
}

/// The age of the last successful heartbeat.
fn age(shared: &Shared, clock: &SharedClock) -> std::time::Duration {
    let sent = *shared
        .last_sent_ok
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    age_of(clock, sent)
}

/// How long ago `sent` was: the larger of its monotonic and its wall-clock age (a wall
/// clock stepped backwards gives 0 and leaves it to the other).
fn age_of(clock: &SharedClock, sent: Sent) -> std::time::Duration {
    let wall = clock.now().0.saturating_sub(sent.wall.0).max(0);
    let wall = std::time::Duration::from_millis(u64::try_from(wall).unwrap_or(0));
    let monotonic = clock.monotonic().saturating_duration_since(sent.monotonic);
    if crate::mutants::on(crate::mutants::Mutant::GuardMonotonicOnly) {
        return monotonic;
    }
    monotonic.max(wall)
}

/// A writer's hold on its changelog entry: see the module documentation.
#[derive(Debug)]
pub struct ChangeGuard {
    /// The change's id (its changelog row key).
    pub id: ChangeId,
    /// The record as written.
    pub record: ChangeRecord,
    shared: Arc<Shared>,
    /// How long after the last successful heartbeat (or the record) the guard stays valid.
    validity: std::time::Duration,
    /// Whether it can expire: it heartbeats, or it is a deferred change's deadline. A
    /// no-op changelog's guard never expires.
    expires: bool,
    clock: SharedClock,
    heartbeat: Option<JoinHandle<()>>,
}

impl Shared {
    fn new(sent: Sent) -> Arc<Self> {
        Arc::new(Self {
            last_sent_ok: Mutex::new(sent),
            failed: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
        })
    }
}

/// Records the change, retrying only while the guard the record starts (valid for
/// `validity` from `sent`) is valid: past that, an earlier attempt may have landed and been
/// claimed and converged by recovery, and another would create the row again — with an id
/// minted long ago, which only a full sweep would find if this process then died.
async fn record_while_valid(
    changelog: &Arc<dyn Changelog>,
    id: &ChangeId,
    record: &ChangeRecord,
    clock: &SharedClock,
    sent: Sent,
    validity: std::time::Duration,
    retry: &RetryPolicy,
) -> StoreResult<()> {
    retry
        .run("record", || {
            let lapsed = age_of(clock, sent) >= validity;
            async move {
                if lapsed {
                    return Err(crate::error::StoreError::new(
                        crate::error::StoreKind::Changelog,
                        "record",
                        id.to_string(),
                        crate::error::ErrorKind::Permanent,
                        "the change's guard lapsed before its record was confirmed (the \
                         process stalled): not sent again; if an earlier attempt landed, \
                         recovery takes the change over",
                    ));
                }
                changelog.record(id, record).await
            }
        })
        .await
        .map(drop)
}

impl ChangeGuard {
    /// Records the change and starts heartbeating it.
    pub async fn begin(
        changelog: Arc<dyn Changelog>,
        clock: SharedClock,
        record: ChangeRecord,
        protocol: ProtocolConfig,
        retry: RetryPolicy,
    ) -> StoreResult<Self> {
        // Minted on the writer's clock: the key sorts by it, which is what bounds scans.
        let id = ChangeId::mint_at(clock.now());
        let sent = Sent {
            monotonic: clock.monotonic(),
            wall: clock.now(),
        };
        let validity = protocol.guard_validity();
        record_while_valid(&changelog, &id, &record, &clock, sent, validity, &retry).await?;
        let shared = Shared::new(sent);
        let heartbeat = (!changelog.is_noop()).then(|| {
            tokio::spawn(heartbeat_loop(
                changelog,
                id.clone(),
                record.owner.clone(),
                shared.clone(),
                clock.clone(),
                protocol,
                retry,
            ))
        });
        Ok(Self {
            id,
            record,
            shared,
            validity,
            expires: heartbeat.is_some(),
            clock,
            heartbeat,
        })
    }

    /// Records a deferred change: due for recovery `within` from now by the changelog's
    /// clock, and not heartbeated. Valid for `within − safety_margin` from a moment taken
    /// *before* asking the changelog its time, on both of the process's clocks as any
    /// guard: whatever the request's latency, the guard lapses at least a safety margin
    /// before recovery may take the change.
    pub async fn begin_deferred(
        changelog: Arc<dyn Changelog>,
        clock: SharedClock,
        mut record: ChangeRecord,
        protocol: ProtocolConfig,
        retry: RetryPolicy,
        within: std::time::Duration,
    ) -> StoreResult<Self> {
        let id = ChangeId::mint_at(clock.now());
        let sent = Sent {
            monotonic: clock.monotonic(),
            wall: clock.now(),
        };
        let validity = within.saturating_sub(protocol.safety_margin);
        let now = retry.run("now", || changelog.now()).await?;
        record.due_at = Some(now.saturating_add(within));
        record_while_valid(&changelog, &id, &record, &clock, sent, validity, &retry).await?;
        Ok(Self {
            id,
            record,
            shared: Shared::new(sent),
            validity,
            expires: true,
            clock,
            heartbeat: None,
        })
    }

    /// The guard's state now: checked before every attempt the writer sends.
    pub fn state(&self) -> GuardState {
        state_of(&self.shared, self.validity, &self.clock, self.expires)
    }

    /// A handle that reads this guard's state from elsewhere (a streamed upload checks it
    /// before each chunk), without owning the guard.
    pub fn watch(&self) -> GuardWatch {
        GuardWatch {
            shared: self.shared.clone(),
            validity: self.validity,
            clock: self.clock.clone(),
            expires: self.expires,
        }
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
    clock: SharedClock,
    protocol: ProtocolConfig,
    retry: RetryPolicy,
) {
    let mut next = Instant::now() + protocol.heartbeat_interval;
    loop {
        tokio::time::sleep_until(next).await;
        let sent = Sent {
            monotonic: clock.monotonic(),
            wall: clock.now(),
        };
        // Timers run on tokio's clock; ages are measured on the process's (`sent`).
        next = Instant::now() + protocol.heartbeat_interval;
        // Retrying past the guard's validity is pointless: the guard is expired by then.
        let last = shared
            .last_sent_ok
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .monotonic;
        let attempt = retry.run("heartbeat", || changelog.heartbeat(&id, &owner));
        match within_validity(attempt, &clock, last, protocol.guard_validity()).await {
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

/// Runs `attempt` until it finishes or the guard's validity, counted from `last` on the
/// process's monotonic clock, runs out (`Err`). A timer alone would measure tokio's clock;
/// re-checking the process's clock on each wake keeps the two notions of "how long"
/// the same one the guard's state uses.
async fn within_validity<T>(
    attempt: impl std::future::Future<Output = T>,
    clock: &SharedClock,
    last: Instant,
    validity: std::time::Duration,
) -> Result<T, ()> {
    let mut attempt = std::pin::pin!(attempt);
    loop {
        let age = clock.monotonic().saturating_duration_since(last);
        let remaining = validity.saturating_sub(age);
        if remaining.is_zero() {
            return Err(());
        }
        tokio::select! {
            biased;
            r = &mut attempt => return Ok(r),
            _ = tokio::time::sleep(remaining) => {}
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::changelog::MemoryChangelog;
    use crate::clock::TokioClock;
    use crate::model::{ObjectPath, OwnerToken, Revision};
    use crate::testing::SkewedClock;

    fn protocol() -> ProtocolConfig {
        ProtocolConfig {
            heartbeat_interval: std::time::Duration::from_millis(500),
            staleness_threshold: std::time::Duration::from_secs(2),
            safety_margin: std::time::Duration::from_millis(500),
        }
    }

    /// A valid guard on a memory changelog, with short test timings.
    pub(in crate::writer) async fn guard(clock: SharedClock) -> ChangeGuard {
        let path = ObjectPath::new("guard/test").unwrap();
        let record = ChangeRecord::new(
            path.clone(),
            None,
            Some(Revision::mint(&path)),
            OwnerToken::writer(),
        );
        let changelog = Arc::new(MemoryChangelog::new(clock.clone()));
        ChangeGuard::begin(changelog, clock, record, protocol(), RetryPolicy::default())
            .await
            .unwrap()
    }

    /// A host suspend stops the monotonic clock but not the wall clock: a guard that only
    /// looked at the monotonic clock would still be valid when the process wakes a day
    /// later, and send its write.
    #[tokio::test(start_paused = true)]
    async fn a_suspend_the_monotonic_clock_misses_expires_the_guard() {
        let clock = SkewedClock::new(Arc::new(TokioClock::new()));
        let g = guard(clock.clone()).await;
        assert_eq!(g.state(), GuardState::Valid);
        clock.jump(std::time::Duration::from_secs(24 * 3600), true);
        assert_eq!(g.state(), GuardState::Expired);
    }

    /// A wall clock stepped backwards (NTP) must not make an old heartbeat look fresh: the
    /// monotonic age still counts.
    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_stepped_back_does_not_revive_the_guard() {
        let clock = SkewedClock::new(Arc::new(TokioClock::new()));
        let mut g = guard(clock.clone()).await;
        g.stop(); // no heartbeats: the last one ages
        clock.jump(std::time::Duration::from_secs(3600), false);
        tokio::time::advance(protocol().guard_validity()).await;
        assert!(age(&g.shared, &g.clock) >= protocol().guard_validity());
    }
}
