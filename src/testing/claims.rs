//! A changelog wrapper that keeps a ledger of claims: every claim won, every lease moved,
//! every row removed. How the elasticity run tells a row claimed twice *at once* (a claim
//! won while another claimer's lease on the row still ran: never, by the claim's
//! compare-and-set) from one claimed again after its lease ran out (a re-claim: work done
//! twice, which backpressure and lease extension exist to prevent).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::changelog::{
    Changelog, ChangelogEntry, Claim, Deferral, Extension, Heartbeat, Removal, ScanPage,
    ScanRequest,
};
use crate::clock::SharedClock;
use crate::error::StoreResult;
use crate::model::{ChangeId, ChangeRecord, OwnerToken, Timestamp};

/// What the ledger counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClaimCounts {
    pub won: usize,
    /// Claims of rows claimed before (the record's claim counter above one).
    pub reclaims: usize,
    /// Claims won while another claimer's lease on the row had not run out.
    pub overlapping: usize,
    /// Rows removed (changes converged).
    pub removed: usize,
}

#[derive(Debug, Default)]
struct Ledger {
    counts: ClaimCounts,
    /// Per claimed row: its claimer and when its lease runs out.
    leases: HashMap<ChangeId, (OwnerToken, Timestamp)>,
}

#[derive(Debug)]
pub struct ClaimLedger {
    inner: Arc<dyn Changelog>,
    /// The clock the changelog's stamps are in.
    clock: SharedClock,
    ledger: Mutex<Ledger>,
}

impl ClaimLedger {
    pub fn new(inner: Arc<dyn Changelog>, clock: SharedClock) -> Self {
        Self {
            inner,
            clock,
            ledger: Mutex::new(Ledger::default()),
        }
    }

    pub fn counts(&self) -> ClaimCounts {
        self.ledger().counts
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Changelog for ClaimLedger {
    async fn record(&self, id: &ChangeId, record: &ChangeRecord) -> StoreResult<Timestamp> {
        self.inner.record(id, record).await
    }
    async fn now(&self) -> StoreResult<Timestamp> {
        self.inner.now().await
    }
    async fn heartbeat(&self, id: &ChangeId, owner: &OwnerToken) -> StoreResult<Heartbeat> {
        self.inner.heartbeat(id, owner).await
    }
    async fn scan_stale(&self, req: &ScanRequest) -> StoreResult<ScanPage> {
        self.inner.scan_stale(req).await
    }
    async fn claim(
        &self,
        seen: &ChangelogEntry,
        cutoff: Timestamp,
        claimer: &OwnerToken,
        lease_until: Timestamp,
    ) -> StoreResult<Claim> {
        let outcome = self.inner.claim(seen, cutoff, claimer, lease_until).await?;
        if let Claim::Won(entry) = &outcome {
            let now = self.clock.now();
            let mut ledger = self.ledger();
            let before = ledger
                .leases
                .insert(entry.id.clone(), (claimer.clone(), lease_until));
            let c = &mut ledger.counts;
            c.won += 1;
            if entry.record.claims > 1 {
                c.reclaims += 1;
            }
            if before.is_some_and(|(other, until)| other != *claimer && until > now) {
                c.overlapping += 1;
            }
        }
        Ok(outcome)
    }
    async fn get(&self, id: &ChangeId) -> StoreResult<Option<ChangelogEntry>> {
        self.inner.get(id).await
    }
    async fn get_many(&self, ids: &[ChangeId]) -> StoreResult<Vec<Option<ChangelogEntry>>> {
        self.inner.get_many(ids).await
    }
    async fn extend_claim(
        &self,
        id: &ChangeId,
        owner: &OwnerToken,
        until: Timestamp,
    ) -> StoreResult<Extension> {
        let outcome = self.inner.extend_claim(id, owner, until).await?;
        if outcome == Extension::Extended {
            self.ledger()
                .leases
                .insert(id.clone(), (owner.clone(), until));
        }
        Ok(outcome)
    }
    async fn remove(&self, id: &ChangeId, owner: &OwnerToken) -> StoreResult<Removal> {
        let outcome = self.inner.remove(id, owner).await?;
        if outcome == Removal::Removed {
            let mut ledger = self.ledger();
            ledger.leases.remove(id);
            ledger.counts.removed += 1;
        }
        Ok(outcome)
    }
    async fn remove_many(&self, ids: &[ChangeId]) -> StoreResult<()> {
        self.inner.remove_many(ids).await?;
        let mut ledger = self.ledger();
        for id in ids {
            if ledger.leases.remove(id).is_some() {
                ledger.counts.removed += 1;
            }
        }
        Ok(())
    }
    async fn defer(&self, id: &ChangeId, record: &ChangeRecord) -> StoreResult<Deferral> {
        self.inner.defer(id, record).await
    }
}
