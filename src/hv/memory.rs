//! In-memory HV store with the same compare-and-write semantics as the Bigtable one, for
//! unit tests, the simulation and the embedded demo. Like the real table, a row that was
//! ever written stays, holding at least its version.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{CasOutcome, HvRow, HvStore, HvWrite, TombstonePage, Version};
use crate::error::StoreResult;
use crate::model::{HvValue, ObjectPath, Revision};

#[derive(Debug, Default)]
/// HV in memory, with Bigtable's semantics (versions, compare-and-write, key order).
pub struct MemoryHv {
    /// In key order, as Bigtable keeps rows, so that range scans page like the real one.
    rows: Mutex<BTreeMap<ObjectPath, HvRow>>,
}

impl MemoryHv {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every object and its value, for invariant checks.
    #[cfg(any(test, feature = "testing"))]
    pub fn snapshot(&self) -> Vec<(ObjectPath, HvValue)> {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        rows.iter()
            .filter_map(|(p, r)| r.value.clone().map(|v| (p.clone(), v)))
            .collect()
    }

    /// How many rows the table holds, with or without data.
    #[cfg(any(test, feature = "testing"))]
    pub fn rows(&self) -> usize {
        self.rows.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn with_row<T>(&self, path: &ObjectPath, f: impl FnOnce(&mut HvRow) -> T) -> T {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let row = rows.entry(path.clone()).or_default();
        let out = f(row);
        if row.value.is_none() && row.version.is_none() {
            rows.remove(path);
        }
        out
    }
}

#[async_trait]
impl HvStore for MemoryHv {
    async fn scan_tombstones(
        &self,
        range: &crate::lt::NameRange,
        start_after: Option<&ObjectPath>,
        limit: usize,
    ) -> StoreResult<TombstonePage> {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let mut page = TombstonePage::default();
        let mut read = 0;
        for (path, row) in rows.iter() {
            if start_after.is_some_and(|after| path <= after) || !range.contains(path.as_str()) {
                continue;
            }
            if read == limit {
                page.resume_after = page.tombstones.last().map(|(p, _)| p.clone());
                break;
            }
            if let Some(HvValue::Tombstone(rev)) = &row.value {
                read += 1;
                page.tombstones.push((path.clone(), rev.clone()));
            }
        }
        Ok(page)
    }

    async fn read_row(&self, path: &ObjectPath) -> StoreResult<HvRow> {
        Ok(self.with_row(path, |row| row.clone()))
    }

    async fn compare_and_write(
        &self,
        path: &ObjectPath,
        expected: Option<&Version>,
        write: &HvWrite,
        new_version: &Version,
    ) -> StoreResult<CasOutcome> {
        use crate::mutants::{Mutant, on};
        Ok(self.with_row(path, |row| {
            if row.version.as_ref() != expected {
                return super::outcome_of_refused(new_version, row.version.as_ref());
            }
            (row.value, row.meta) = write.clone().into_value();
            if on(Mutant::DeleteDropsVersion) && row.value.is_none() {
                row.version = None;
            } else if !on(Mutant::WriteKeepsVersion) {
                row.version = Some(new_version.clone());
            }
            CasOutcome::Applied
        }))
    }

    async fn fence(&self, path: &ObjectPath, rev: &Revision) -> StoreResult<bool> {
        Ok(self.with_row(path, |row| {
            row.version = Some(Version::mint());
            row.value.as_ref().and_then(HvValue::tombstone) == Some(rev)
        }))
    }
}
