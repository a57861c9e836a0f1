//! In-memory HV store with the same compare-and-write and fencing semantics as the
//! Bigtable one, for unit tests and the embedded demo.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{APPLIED_TTL, CasOutcome, Expected, Fence, HvStore, HvWrite};
use crate::clock::SharedClock;
use crate::error::StoreResult;
use crate::model::{ChangeId, HvValue, ObjectPath, Timestamp};

#[derive(Debug, Default)]
struct Row {
    value: Option<HvValue>,
    /// Changes whose write landed here, and when; pruned after [`APPLIED_TTL`] like
    /// Bigtable's max-age GC of their family.
    applied: HashMap<ChangeId, Timestamp>,
    /// Changes recovery took over (or their writer gave up): kept forever, like the
    /// Bigtable family without an age limit. (When each was written matters only to the
    /// `ExpiringRecoveryFences` mutant.)
    recovery: HashMap<ChangeId, Timestamp>,
}

impl Row {
    fn fence(&self, change: &ChangeId) -> Option<Fence> {
        if self.applied.contains_key(change) {
            Some(Fence::Applied)
        } else if self.recovery.contains_key(change) {
            Some(Fence::Recovery)
        } else {
            None
        }
    }
}

#[derive(Debug)]
pub struct MemoryHv {
    rows: Mutex<HashMap<ObjectPath, Row>>,
    clock: SharedClock,
    /// The `applied` markers' max age: [`APPLIED_TTL`], as the Bigtable table's GC rule.
    applied_ttl: std::time::Duration,
}

impl MemoryHv {
    pub fn new(clock: SharedClock) -> Self {
        Self::with_applied_ttl(clock, APPLIED_TTL)
    }

    /// As [`Self::new`] with another max age for `applied` markers (a table created with
    /// another GC rule): the simulation shortens it so that "longer than every TTL" costs
    /// minutes of virtual time, not a day. It must exceed the writers' guard validity.
    pub fn with_applied_ttl(clock: SharedClock, applied_ttl: std::time::Duration) -> Self {
        Self {
            rows: Mutex::new(HashMap::new()),
            clock,
            applied_ttl,
        }
    }

    /// Every object and its value, for invariant checks.
    pub fn snapshot(&self) -> Vec<(ObjectPath, HvValue)> {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        rows.iter()
            .filter_map(|(p, r)| r.value.clone().map(|v| (p.clone(), v)))
            .collect()
    }

    fn with_row<T>(&self, path: &ObjectPath, f: impl FnOnce(&mut Row, Timestamp) -> T) -> T {
        let now = self.clock.now();
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let row = rows.entry(path.clone()).or_default();
        row.applied
            .retain(|_, at| at.saturating_add(self.applied_ttl) > now);
        if crate::mutants::on(crate::mutants::Mutant::ExpiringRecoveryFences) {
            row.recovery
                .retain(|_, at| at.saturating_add(self.applied_ttl) > now);
        }
        let out = f(row, now);
        if row.value.is_none() && row.applied.is_empty() && row.recovery.is_empty() {
            rows.remove(path);
        }
        out
    }
}

#[async_trait]
impl HvStore for MemoryHv {
    async fn read(&self, path: &ObjectPath) -> StoreResult<Option<HvValue>> {
        Ok(self.with_row(path, |row, _| row.value.clone()))
    }

    async fn compare_and_write(
        &self,
        path: &ObjectPath,
        expected: &Expected,
        write: &HvWrite,
        change: Option<&ChangeId>,
    ) -> StoreResult<CasOutcome> {
        Ok(self.with_row(path, |row, now| {
            let fence = change.and_then(|c| row.fence(c));
            if fence.is_none() && expected.matches(row.value.as_ref()) {
                row.value = write.clone().into_value();
                if let Some(c) = change
                    && !crate::mutants::on(crate::mutants::Mutant::NoAppliedMarker)
                {
                    row.applied.insert(c.clone(), now);
                }
                return CasOutcome::Applied;
            }
            super::outcome_of_refused(write, row.value.as_ref(), fence)
        }))
    }

    async fn fence(&self, path: &ObjectPath, change: &ChangeId) -> StoreResult<Option<HvValue>> {
        Ok(self.with_row(path, |row, now| {
            row.recovery.insert(change.clone(), now);
            row.value.clone()
        }))
    }
}
