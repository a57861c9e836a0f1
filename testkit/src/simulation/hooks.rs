//! Store hooks the simulation adds to processes: a little latency on every call (so that
//! concurrent processes interleave), a host suspend, and a witness of what recovery
//! touches outside its prefix.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use tiersweep::changelog::{Changelog, ChangelogEntry, ChangelogLayer, Claim, Deferral};
use tiersweep::error::{ErrorKind, StoreError, StoreKind, StoreResult};
use tiersweep::hv::{CasOutcome, HvRow, HvStore, HvWrite, Version};
use tiersweep::model::{ChangeId, ChangeRecord, ObjectPath, OwnerToken, Revision, Timestamp};
use tiersweep::testing::SkewedClock;
use tiersweep::testing::intercept::{Call, Intercept, Op};

/// Up to `max` of latency per call, drawn from a seeded generator.
#[derive(Debug)]
pub struct Jitter {
    rng: Mutex<StdRng>,
    max_ms: u64,
}

impl Jitter {
    pub fn new(seed: u64, max: Duration) -> Arc<Self> {
        Arc::new(Self {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            max_ms: u64::try_from(max.as_millis()).unwrap_or(u64::MAX).max(1),
        })
    }
}

impl Intercept for Jitter {
    fn run<T: Send + 'static>(
        &self,
        _op: Op,
        _store: StoreKind,
        call: Call<T>,
    ) -> impl Future<Output = StoreResult<T>> + Send {
        let ms = self
            .rng
            .lock()
            .map(|mut r| r.random_range(0..self.max_ms))
            .unwrap_or(0);
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            call.await
        }
    }
}

/// A host that freezes: the first call of `op` lands, then the process sleeps for `d`
/// (nothing it sends leaves it meanwhile; its monotonic clock does not count the time),
/// then the call's connection is found reset.
#[derive(Debug)]
pub struct Freeze {
    op: Op,
    d: Duration,
    clock: Arc<SkewedClock>,
    until: Mutex<Option<Instant>>,
}

impl Freeze {
    pub fn new(op: Op, d: Duration, clock: Arc<SkewedClock>) -> Arc<Self> {
        Arc::new(Self {
            op,
            d,
            clock,
            until: Mutex::new(None),
        })
    }

    async fn apply<T: Send + 'static>(
        &self,
        op: Op,
        store: StoreKind,
        call: Call<T>,
    ) -> StoreResult<T> {
        let frozen = *self.until.lock().unwrap_or_else(|e| e.into_inner());
        match frozen {
            Some(until) => {
                tokio::time::sleep_until(until).await;
                call.await
            }
            None if op == self.op => {
                let _ = call.await;
                let until = Instant::now() + self.d;
                *self.until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
                self.clock.freeze();
                tokio::time::sleep_until(until).await;
                self.clock.thaw();
                Err(StoreError::new(
                    store,
                    "simulated",
                    format!("{op:?}"),
                    ErrorKind::Transient,
                    "connection reset while the host was suspended",
                ))
            }
            None => call.await,
        }
    }
}

impl Intercept for Freeze {
    fn run<T: Send + 'static>(
        &self,
        op: Op,
        store: StoreKind,
        call: Call<T>,
    ) -> impl Future<Output = StoreResult<T>> + Send {
        self.apply(op, store, call)
    }
}

/// Records every object recovery fences outside its prefix (invariant I4: it never acts
/// there).
#[derive(Debug)]
pub struct ScopeWitness {
    pub inner: Arc<dyn HvStore>,
    pub prefix: String,
    pub trespasses: Arc<Mutex<Vec<ObjectPath>>>,
}

impl ScopeWitness {
    fn note(&self, path: &ObjectPath) {
        // Its own rule, not `ObjectPath::is_under`: the witness must not share a mutant.
        let p = path.as_str();
        let inside = p == self.prefix || p.starts_with(&format!("{}/", self.prefix));
        if !inside {
            self.trespasses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(path.clone());
        }
    }
}

#[async_trait]
impl HvStore for ScopeWitness {
    async fn read_row(&self, path: &ObjectPath) -> StoreResult<HvRow> {
        self.inner.read_row(path).await
    }
    async fn scan_tombstones(
        &self,
        range: &tiersweep::lt::NameRange,
        start_after: Option<&ObjectPath>,
        limit: usize,
    ) -> StoreResult<tiersweep::hv::TombstonePage> {
        self.inner.scan_tombstones(range, start_after, limit).await
    }
    async fn compare_and_write(
        &self,
        path: &ObjectPath,
        expected: Option<&Version>,
        write: &HvWrite,
        stamp: &Version,
    ) -> StoreResult<CasOutcome> {
        self.note(path);
        self.inner
            .compare_and_write(path, expected, write, stamp)
            .await
    }
    async fn fence(&self, path: &ObjectPath, rev: &Revision) -> StoreResult<bool> {
        self.note(path);
        self.inner.fence(path, rev).await
    }
}

/// Witnesses invariant I4 — recovery takes over only changes whose writer has gone quiet —
/// on both sides. Wrapping a scanner's changelog, it records every claim won on a row that
/// was fresh when the claim landed (it reads the row just before passing the claim on; with
/// the in-memory changelog nothing runs in between), and remembers every claim token won.
/// Wrapping a cleaner's, it records every row the cleaner removes or defers while the row
/// is owned by anything but a token a scanner won: a cleaner that acted on a forged job.
#[derive(Debug)]
pub struct ClaimWitness {
    pub inner: Arc<dyn Changelog>,
    pub cutoff_age: Duration,
    pub violations: Arc<Mutex<Vec<String>>>,
    pub won: WonClaims,
    /// The scanner whose changelog this wraps (a cleaner's wins no claim).
    pub scanner: usize,
}

/// Every claim token a scanner won, with the scanner that won it.
pub type WonClaims = Arc<Mutex<std::collections::HashMap<OwnerToken, usize>>>;

impl ClaimWitness {
    /// Notes a cleaner's `op` on `id` if the row is owned by no claim a scanner won.
    async fn check_converged(&self, op: &str, id: &ChangeId) -> StoreResult<()> {
        let Some(row) = self.inner.get(id).await? else {
            return Ok(());
        };
        let claimed = self
            .won
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&row.record.owner);
        if !claimed {
            self.violations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!(
                    "a cleaner's {op} reached change {id}, owned by {}, a token no scanner won",
                    row.record.owner
                ));
        }
        Ok(())
    }
}

#[async_trait]
impl ChangelogLayer for ClaimWitness {
    fn inner(&self) -> &dyn Changelog {
        &*self.inner
    }
    async fn claim(
        &self,
        seen: &ChangelogEntry,
        cutoff: Timestamp,
        claimer: &OwnerToken,
        lease_until: Timestamp,
    ) -> StoreResult<Claim> {
        let now = self.inner.now().await?;
        let before = self.inner.get(&seen.id).await?;
        let outcome = self.inner.claim(seen, cutoff, claimer, lease_until).await?;
        if matches!(outcome, Claim::Won(_)) {
            self.won
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(claimer.clone(), self.scanner);
        }
        if let (Claim::Won(_), Some(before)) = (&outcome, before)
            && before.record.owner != *claimer
            && before.stamp > now.saturating_sub(self.cutoff_age)
        {
            self.violations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!(
                    "change {} was claimed though its owner {} stamped it {} ms before the claim",
                    seen.id,
                    before.record.owner,
                    now.0 - before.stamp.0
                ));
        }
        Ok(outcome)
    }
    async fn remove_many(&self, ids: &[ChangeId]) -> StoreResult<()> {
        for id in ids {
            self.check_converged("remove", id).await?;
        }
        self.inner.remove_many(ids).await
    }
    async fn defer(&self, id: &ChangeId, record: &ChangeRecord) -> StoreResult<Deferral> {
        self.check_converged("defer", id).await?;
        self.inner.defer(id, record).await
    }
}

/// A scanner host's shard leases, frozen with the host: while `until` lies ahead every
/// lease call waits for it (the keeper neither renews nor reads), as a suspended process's
/// would.
#[derive(Debug)]
pub struct FrozenLeases {
    pub inner: Arc<dyn tiersweep::shard_lease::ShardLeases>,
    pub until: Arc<Mutex<Option<Instant>>>,
}

impl FrozenLeases {
    async fn thaw(&self) {
        let until = *self.until.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }
}

#[async_trait]
impl tiersweep::shard_lease::ShardLeases for FrozenLeases {
    async fn read(&self) -> StoreResult<tiersweep::shard_lease::ShardLeaseTable> {
        self.thaw().await;
        self.inner.read().await
    }
    async fn read_at(
        &self,
        now: Timestamp,
    ) -> StoreResult<tiersweep::shard_lease::ShardLeaseTable> {
        self.thaw().await;
        self.inner.read_at(now).await
    }
    async fn announce(&self, member: &tiersweep::shard_lease::MemberId) -> StoreResult<()> {
        self.thaw().await;
        self.inner.announce(member).await
    }
    async fn depart(&self, member: &tiersweep::shard_lease::MemberId) -> StoreResult<()> {
        self.thaw().await;
        self.inner.depart(member).await
    }
    async fn forget(
        &self,
        member: &tiersweep::shard_lease::MemberId,
        stale_before: Timestamp,
    ) -> StoreResult<bool> {
        self.thaw().await;
        self.inner.forget(member, stale_before).await
    }
    async fn acquire(
        &self,
        seen: &tiersweep::shard_lease::ShardLease,
        by: &tiersweep::shard_lease::MemberId,
        expired_before: Timestamp,
    ) -> StoreResult<tiersweep::shard_lease::Taken> {
        self.thaw().await;
        self.inner.acquire(seen, by, expired_before).await
    }
    async fn renew(
        &self,
        shard: tiersweep::model::Shard,
        epoch: u64,
        by: &tiersweep::shard_lease::MemberId,
    ) -> StoreResult<tiersweep::shard_lease::Kept> {
        self.thaw().await;
        self.inner.renew(shard, epoch, by).await
    }
    async fn release(
        &self,
        shard: tiersweep::model::Shard,
        epoch: u64,
        by: &tiersweep::shard_lease::MemberId,
    ) -> StoreResult<tiersweep::shard_lease::Kept> {
        self.thaw().await;
        self.inner.release(shard, epoch, by).await
    }
}
