//! Recovery lag under steady load: writers keep writing (and heartbeating) while changes
//! crash at a steady rate; each crashed change's lag is the time from turning stale (its
//! stamp plus the staleness threshold) to its row being removed by a cleaner.
//!
//! The removal is observed by [`LagProbe`], a changelog wrapper that timestamps the removal
//! of the rows it was told to watch, so nothing polls the store and the figure is exact to
//! the millisecond (the metrics histogram has a dozen buckets: fine for alerts, too coarse
//! for a p99).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tiersweep::changelog::{Changelog, ChangelogLayer, Removal};
use tiersweep::clock::SharedClock;
use tiersweep::error::StoreResult;
use tiersweep::model::{ChangeId, ChangeRecord, ObjectPath, OwnerToken, Revision, Timestamp};
use tiersweep::queue::JobQueue;
use tiersweep::recovery::RecoveryConfig;
use tiersweep::recovery::pool::{self, Pools};
use tiersweep::stores::Stores;
use tiersweep::writer::{TieredStorage, WriterConfig};

/// Delegates to the real changelog; records when a watched change is recovered: its row
/// removed, or deferred for the upload settle by recovery (its blob is deleted then; the
/// row waits only for the pass that checks for a late landing).
#[derive(Debug)]
pub struct LagProbe {
    inner: Arc<dyn Changelog>,
    clock: SharedClock,
    /// Watched change → when it turns stale. Holds only changes not yet recovered.
    watched: Mutex<HashMap<ChangeId, Timestamp>>,
    /// Watched changes recovered by a deferral whose rows are still there.
    settling: Mutex<std::collections::HashSet<ChangeId>>,
    /// Rows of watched changes removed.
    removed: std::sync::atomic::AtomicUsize,
    lags_ms: Mutex<Vec<u64>>,
}

impl LagProbe {
    pub fn new(inner: Arc<dyn Changelog>, clock: SharedClock) -> Arc<Self> {
        Arc::new(Self {
            inner,
            clock,
            watched: Mutex::default(),
            settling: Mutex::default(),
            removed: Default::default(),
            lags_ms: Mutex::default(),
        })
    }

    pub(crate) fn watch(&self, id: ChangeId, stale_at: Timestamp) {
        self.lock_watched().insert(id, stale_at);
    }

    fn lock_watched(&self) -> std::sync::MutexGuard<'_, HashMap<ChangeId, Timestamp>> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn outstanding(&self) -> usize {
        self.lock_watched().len()
    }

    /// Rows of watched changes removed so far.
    pub(crate) fn removed(&self) -> usize {
        self.removed.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn take_lags(&self) -> Vec<u64> {
        std::mem::take(&mut *self.lags_ms.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[async_trait]
impl ChangelogLayer for LagProbe {
    fn inner(&self) -> &dyn Changelog {
        &*self.inner
    }
    async fn defer(
        &self,
        id: &ChangeId,
        record: &ChangeRecord,
    ) -> StoreResult<tiersweep::changelog::Deferral> {
        let deferral = self.inner.defer(id, record).await?;
        if deferral == tiersweep::changelog::Deferral::Deferred && self.recovered(id) {
            self.settling
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone());
        }
        Ok(deferral)
    }
    async fn remove(&self, id: &ChangeId, owner: &OwnerToken) -> StoreResult<Removal> {
        let removal = self.inner.remove(id, owner).await?;
        if removal == Removal::Removed {
            self.row_removed(id);
        }
        Ok(removal)
    }
    async fn remove_many(&self, ids: &[ChangeId]) -> StoreResult<()> {
        self.inner.remove_many(ids).await?;
        ids.iter().for_each(|id| self.row_removed(id));
        Ok(())
    }
}

impl LagProbe {
    /// Records the lag of a watched change just recovered; whether it was watched.
    fn recovered(&self, id: &ChangeId) -> bool {
        let Some(stale_at) = self.lock_watched().remove(id) else {
            return false;
        };
        let now = self.clock.now();
        let lag = u64::try_from(now.millis() - stale_at.millis()).unwrap_or(0);
        self.lags_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(lag);
        true
    }

    /// A row was removed: a watched change's recovery, or the end of its settle.
    fn row_removed(&self, id: &ChangeId) {
        let settled = self
            .settling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if settled || self.recovered(id) {
            self.removed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The shape of a steady-load run.
#[derive(Debug, Clone, Copy)]
pub struct SteadyLoad {
    /// Crashed changes per second.
    pub crashes_per_s: f64,
    /// Writers doing put-then-delete back to back (heartbeating, finishing cleanly).
    pub writers: usize,
    pub duration: Duration,
    pub scanners: u16,
    pub in_flight: usize,
    /// How long an idle scanner waits before scanning again: with the threshold, what
    /// bounds the lag.
    pub idle_poll: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct LagRun {
    pub crashes_per_s: f64,
    pub writers: usize,
    pub healthy_writes: u64,
    pub crashed: usize,
    pub converged: usize,
    pub idle_poll_ms: u64,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

/// Runs writers and a crash generator for `load.duration` against a running pipeline, then
/// waits (up to a minute) for the last crashed changes to converge.
pub async fn steady_load(
    stores: &Stores,
    queue: Arc<dyn JobQueue>,
    run: &str,
    load: SteadyLoad,
) -> StoreResult<LagRun> {
    let protocol = super::protocol();
    let probe = LagProbe::new(stores.changelog().clone(), stores.clock().clone());
    let probed = stores.clone().with_changelog(probe.clone());
    let config = RecoveryConfig {
        idle_poll: load.idle_poll,
        ..super::recovery_config(load.in_flight)
    };
    let cancel = CancellationToken::new();
    let recovery = TaskTracker::new();
    let pools = Pools {
        scanners: load.scanners.max(1),
        split: true,
        cleaners: 1,
        drain: Duration::from_secs(10),
    };
    pool::spawn(&recovery, &cancel, &probed, &queue, &config, pools);
    recovery.close();

    let stop_load = CancellationToken::new();
    let load_tasks = TaskTracker::new();
    let healthy = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer_config = WriterConfig {
        inline_threshold: 1024,
        protocol,
        ..WriterConfig::default()
    };
    for w in 0..load.writers {
        let writer = TieredStorage::new(probed.clone(), writer_config)
            .expect("the bench's writer settings are valid");
        let (stop, healthy, run) = (stop_load.clone(), healthy.clone(), run.to_owned());
        load_tasks.spawn(async move {
            let value = Bytes::from(vec![b'H'; 4096]);
            let mut i = 0u64;
            while !stop.is_cancelled() {
                let path = ObjectPath::new(format!("bench/{run}/h{w}-{i}"))
                    .expect("bench paths are valid");
                let ok = writer.put(&path, value.clone()).await.is_ok()
                    && writer.delete(&path).await.is_ok();
                if ok {
                    healthy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                i += 1;
                // In-memory stores never make a writer wait: without this, writers would
                // hold every runtime thread.
                tokio::task::yield_now().await;
            }
        });
    }
    let crashed = crash_steadily(stores, &probe, run, &load, protocol.staleness_threshold).await?;
    stop_load.cancel();
    load_tasks.close();
    load_tasks.wait().await;

    let give_up = Instant::now() + Duration::from_secs(60);
    while probe.outstanding() > 0 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    recovery.wait().await;

    let mut lags = probe.take_lags();
    lags.sort_unstable();
    Ok(LagRun {
        crashes_per_s: load.crashes_per_s,
        writers: load.writers,
        healthy_writes: healthy.load(std::sync::atomic::Ordering::Relaxed),
        crashed,
        converged: lags.len(),
        idle_poll_ms: load.idle_poll.as_millis() as u64,
        p50_ms: super::percentile(&lags, 0.5),
        p99_ms: super::percentile(&lags, 0.99),
        max_ms: lags.last().copied().unwrap_or(0),
    })
}

/// Leaves a crashed large put (row and unreferenced blob) every `1 / crashes_per_s`,
/// telling the probe when each turns stale. Each crash runs on its own task (at most 64 at
/// once), so store latency does not slow the rate down. Returns how many it left.
async fn crash_steadily(
    stores: &Stores,
    probe: &Arc<LagProbe>,
    run: &str,
    load: &SteadyLoad,
    threshold: Duration,
) -> StoreResult<usize> {
    let period = Duration::from_secs_f64(1.0 / load.crashes_per_s.max(0.01));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let blob = Bytes::from(vec![b'L'; 2048]);
    let slots = Arc::new(tokio::sync::Semaphore::new(64));
    let crashes = TaskTracker::new();
    let failed: Arc<Mutex<Option<tiersweep::error::StoreError>>> = Arc::default();
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < load.duration {
        ticks.tick().await;
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let path = ObjectPath::new(format!("bench/{run}/x{n:07}")).expect("bench paths are valid");
        let (stores, probe, blob, failed) =
            (stores.clone(), probe.clone(), blob.clone(), failed.clone());
        crashes.spawn(async move {
            let _slot = slot;
            let rev = Revision::mint(&path);
            let record =
                ChangeRecord::new(path, None, Some(rev.clone()), OwnerToken::mint("crash"));
            let id = ChangeId::mint();
            let result = async {
                let stamp = stores.changelog().record(&id, &record).await?;
                probe.watch(id, Timestamp(stamp.millis() + threshold.as_millis() as i64));
                stores.lt().put(&rev, blob).await
            }
            .await;
            if let Err(e) = result {
                failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(e);
            }
        });
        n += 1;
    }
    crashes.close();
    crashes.wait().await;
    let failed = failed.lock().unwrap_or_else(|e| e.into_inner()).take();
    match failed {
        Some(e) => Err(e),
        None => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiersweep::testing::MemoryStores;

    #[tokio::test]
    async fn only_watched_removals_are_timed_from_when_they_turned_stale() {
        let stores = MemoryStores::new().stores();
        let probe = LagProbe::new(stores.changelog().clone(), stores.clock().clone());
        let change = |name: &str| {
            let path = ObjectPath::new(format!("lag/{name}")).unwrap();
            let rev = Revision::mint(&path);
            (
                ChangeId::mint(),
                ChangeRecord::new(path, None, Some(rev), OwnerToken::mint("t")),
            )
        };
        let (watched, rec) = change("watched");
        let (other, other_rec) = change("other");
        // Calls go through the trait the pipeline uses.
        let log: &dyn Changelog = &*probe;
        log.record(&watched, &rec).await.unwrap();
        log.record(&other, &other_rec).await.unwrap();
        let stale_at = Timestamp(stores.clock().now().millis() - 250);
        probe.watch(watched.clone(), stale_at);

        // Not the owner: nothing removed, nothing timed, still outstanding.
        let stranger = OwnerToken::mint("stranger");
        assert_eq!(
            log.remove(&watched, &stranger).await.unwrap(),
            Removal::NotOwned
        );
        assert_eq!(probe.outstanding(), 1);

        log.remove(&other, &other_rec.owner).await.unwrap();
        log.remove(&watched, &rec.owner).await.unwrap();
        let lags = probe.take_lags();
        assert_eq!(lags.len(), 1, "only the watched change is timed: {lags:?}");
        assert!((250..5_000).contains(&lags[0]), "{lags:?}");
        assert_eq!(probe.outstanding(), 0);
    }
}
