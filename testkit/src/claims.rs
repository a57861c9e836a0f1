//! A changelog wrapper that keeps a ledger of claims: every claim won, every lease moved,
//! every row removed. How the elasticity run tells a row claimed twice *at once* (a claim
//! won while another claimer's lease on the row still ran: never, by the claim's
//! compare-and-set) from one claimed again after its lease ran out (a re-claim: work done
//! twice, which backpressure and lease extension exist to prevent). It also times each
//! change from its first claim to its row's removal: recovery's latency per change,
//! measured rather than derived from throughput.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use tiersweep::changelog::{Changelog, ChangelogEntry, ChangelogLayer, Claim, Extension, Removal};
use tiersweep::clock::SharedClock;
use tiersweep::error::StoreResult;
use tiersweep::model::{ChangeId, OwnerToken, Timestamp};

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
    /// When each row still in the changelog was first claimed.
    claimed_at: HashMap<ChangeId, tokio::time::Instant>,
    /// From first claim to removal, per change removed.
    latencies: Vec<std::time::Duration>,
}

impl Ledger {
    /// A row is gone: counted, and its latency taken if it was claimed. `known` says the
    /// store confirmed the row was there (a conditional removal); an unconditional one
    /// counts only the first removal of a claimed row, so duplicates count once.
    fn removed(&mut self, id: &ChangeId, known: bool) {
        if self.leases.remove(id).is_some() || known {
            self.counts.removed += 1;
        }
        if let Some(at) = self.claimed_at.remove(id) {
            self.latencies.push(at.elapsed());
        }
    }
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

    /// From first claim to removal, per change removed so far, sorted.
    pub fn latencies(&self) -> Vec<std::time::Duration> {
        let mut l = self.ledger().latencies.clone();
        l.sort_unstable();
        l
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl ChangelogLayer for ClaimLedger {
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
        let outcome = self.inner.claim(seen, cutoff, claimer, lease_until).await?;
        if let Claim::Won(entry) = &outcome {
            let now = self.clock.now();
            let mut ledger = self.ledger();
            let before = ledger
                .leases
                .insert(entry.id.clone(), (claimer.clone(), lease_until));
            ledger
                .claimed_at
                .entry(entry.id.clone())
                .or_insert_with(tokio::time::Instant::now);
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
            self.ledger().removed(id, true);
        }
        Ok(outcome)
    }
    async fn remove_many(&self, ids: &[ChangeId]) -> StoreResult<()> {
        self.inner.remove_many(ids).await?;
        let mut ledger = self.ledger();
        ids.iter().for_each(|id| ledger.removed(id, false));
        Ok(())
    }
}
