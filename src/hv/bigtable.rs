//! The HV store on Bigtable. Every write is one `CheckAndMutateRow` whose predicate is "the
//! row's version cell holds the expected version"; the layout is in
//! [`crate::bigtable::layout`].
//!
//! Bigtable predicates can only say "some cell passes this filter", so the two shapes of
//! expectation are phrased from opposite sides:
//!
//! * a version `v`: the predicate is the version cell equal to `v`, and the write goes in
//!   the *matched* branch;
//! * never written: the predicate is "has a version cell", and the write goes in the
//!   *unmatched* branch. This also covers a row that does not exist yet.
//!
//! When the predicate refuses, one read tells a lost-response retry (the row's version is
//! this write's new version) from a conflict, by the shared rule
//! [`outcome_of_refused`](super::outcome_of_refused). Each write deletes the family first
//! and sets the version with the data, so a row never holds both `v:inline` and
//! `v:tombstone`, and always holds a version once written.

use async_trait::async_trait;
use bigtable_rs::bigtable::RowCell;
use bigtable_rs::google::bigtable::v2::{RowRange, RowSet, row_range};
use bytes::Bytes;

use super::{CasOutcome, HvRow, HvStore, HvWrite, TombstonePage, Version};
use crate::bigtable::filter::{
    SERVER_TIME, chain, column, delete_family, family, latest, set_cell, value_is,
};
use crate::bigtable::layout::hv::{DATA, INLINE, META, TOMBSTONE, VERSION};
use crate::bigtable::{BigtableClient, Table};
use crate::error::{ErrorKind, StoreError, StoreKind, StoreResult};
use crate::model::{HvValue, ObjectMeta, ObjectPath, Revision};

#[derive(Debug, Clone)]
/// HV on Bigtable: one row per object; writes are `CheckAndMutateRow` on its version.
pub struct BigtableHv {
    client: BigtableClient,
    table: Table,
}

impl BigtableHv {
    /// The object rows of `table_id`.
    pub fn new(client: BigtableClient, table_id: &str) -> Self {
        let table = client.table(StoreKind::Hv, table_id);
        Self { client, table }
    }

    /// Plants `v:{qualifier}` = `value` in the row, beside what it holds, as a buggy or
    /// foreign writer might.
    #[cfg(any(test, feature = "testing"))]
    pub async fn insert_raw(
        &self,
        path: &ObjectPath,
        qualifier: &[u8],
        value: Vec<u8>,
    ) -> StoreResult<()> {
        let cell = set_cell(DATA, qualifier, SERVER_TIME, value);
        self.client
            .mutate_row(&self.table, path.as_str().as_bytes(), vec![cell])
            .await
    }

    fn decode(&self, key: &[u8], cells: Vec<RowCell>) -> StoreResult<HvRow> {
        let malformed = |reason: String| {
            StoreError::new(
                StoreKind::Hv,
                "decode",
                self.table.target(key),
                ErrorKind::Malformed,
                reason,
            )
        };
        let mut row = HvRow::default();
        for cell in cells {
            match (cell.family_name.as_str(), cell.qualifier.as_slice()) {
                (DATA, VERSION) => {
                    let v = String::from_utf8(cell.value)
                        .map_err(|_| malformed("version is not UTF-8".into()))?;
                    row.version = Some(Version::from_stored(v));
                }
                (DATA, INLINE | TOMBSTONE) if row.value.is_some() => {
                    return Err(malformed(
                        "row holds more than one of v:inline and v:tombstone".into(),
                    ));
                }
                (DATA, INLINE) => row.value = Some(HvValue::Inline(Bytes::from(cell.value))),
                (DATA, TOMBSTONE) => {
                    let name = String::from_utf8(cell.value)
                        .map_err(|_| malformed("tombstone is not UTF-8".into()))?;
                    let rev =
                        Revision::parse(name).map_err(|e| malformed(format!("tombstone: {e}")))?;
                    row.value = Some(HvValue::Tombstone(rev));
                }
                (DATA, META) => {
                    row.meta = ObjectMeta::decode(&cell.value)
                        .map_err(|e| malformed(format!("v:meta: {e}")))?;
                }
                (DATA, q) => {
                    return Err(malformed(format!(
                        "unknown column v:{}",
                        String::from_utf8_lossy(q)
                    )));
                }
                // Families of other tools or of an older layout: not ours to judge.
                _ => {}
            }
        }
        if row.value.is_none() && !row.meta.is_empty() {
            return Err(malformed("row holds v:meta without data".into()));
        }
        Ok(row)
    }
}

fn version_cell() -> bigtable_rs::google::bigtable::v2::RowFilter {
    chain(vec![column(DATA, VERSION), latest()])
}

fn mutations(write: &HvWrite, new_version: &Version) -> Vec<bigtable_rs::google::bigtable::v2::Mutation> {
    let mut m = vec![delete_family(DATA)];
    let meta = match write {
        HvWrite::Inline(bytes, meta) => {
            m.push(set_cell(DATA, INLINE, SERVER_TIME, bytes.to_vec()));
            Some(meta)
        }
        HvWrite::Tombstone(rev, meta) => {
            m.push(set_cell(
                DATA,
                TOMBSTONE,
                SERVER_TIME,
                rev.as_str().as_bytes().to_vec(),
            ));
            Some(meta)
        }
        HvWrite::Delete => None,
    };
    if let Some(meta) = meta.filter(|m| !m.is_empty()) {
        m.push(set_cell(DATA, META, SERVER_TIME, meta.encode()));
    }
    m.push(set_cell(
        DATA,
        VERSION,
        SERVER_TIME,
        new_version.as_str().as_bytes().to_vec(),
    ));
    m
}

#[async_trait]
impl HvStore for BigtableHv {
    async fn read_row(&self, path: &ObjectPath) -> StoreResult<HvRow> {
        let key = path.as_str().as_bytes();
        let filter = chain(vec![family(DATA), latest()]);
        let cells = self.client.read_row(&self.table, key, filter).await?;
        self.decode(key, cells.unwrap_or_default())
    }

    async fn tombstones(&self, paths: &[ObjectPath]) -> StoreResult<Vec<Option<Revision>>> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let rows = RowSet {
            row_keys: paths
                .iter()
                .map(|p| p.as_str().as_bytes().to_vec())
                .collect(),
            row_ranges: vec![],
        };
        let filter = chain(vec![column(DATA, TOMBSTONE), latest()]);
        let found = self
            .client
            .read_rows(&self.table, rows, filter, paths.len())
            .await?;
        let mut by_key = std::collections::HashMap::with_capacity(found.len());
        for (key, cells) in found {
            let row = self.decode(&key, cells)?;
            if let Some(HvValue::Tombstone(rev)) = row.value {
                by_key.insert(key, rev);
            }
        }
        Ok(paths
            .iter()
            .map(|p| by_key.get(p.as_str().as_bytes()).cloned())
            .collect())
    }

    async fn scan_tombstones(
        &self,
        range: &crate::lt::NameRange,
        start_after: Option<&ObjectPath>,
        limit: usize,
    ) -> StoreResult<TombstonePage> {
        let from = match &range.start {
            Some(s) if s.as_str() > range.prefix.as_str() => s.clone(),
            _ => range.prefix.clone(),
        };
        let start_key = match start_after {
            Some(after) if after.as_str() >= from.as_str() => {
                row_range::StartKey::StartKeyOpen(after.as_str().as_bytes().to_vec())
            }
            _ => row_range::StartKey::StartKeyClosed(from.into_bytes()),
        };
        let end = range.end.clone().or_else(|| prefix_end(&range.prefix));
        let rows = RowSet {
            row_keys: vec![],
            row_ranges: vec![RowRange {
                start_key: Some(start_key),
                end_key: end.map(|e| row_range::EndKey::EndKeyOpen(e.into_bytes())),
            }],
        };
        let filter = chain(vec![column(DATA, TOMBSTONE), latest()]);
        let found = self
            .client
            .read_rows(&self.table, rows, filter, limit)
            .await?;
        let mut page = TombstonePage::default();
        let full = found.len() >= limit;
        for (key, cells) in found {
            let row = self.decode(&key, cells)?;
            let path = String::from_utf8(key.clone())
                .ok()
                .and_then(|k| ObjectPath::new(k).ok());
            let Some(path) = path else {
                tracing::warn!(row = %String::from_utf8_lossy(&key), "HV row key is not an object path; skipped");
                continue;
            };
            if let Some(HvValue::Tombstone(rev)) = row.value
                && range.contains(path.as_str())
            {
                page.tombstones.push((path.clone(), rev));
            }
            if full {
                page.resume_after = Some(path);
            }
        }
        Ok(page)
    }

    async fn compare_and_write(
        &self,
        path: &ObjectPath,
        expected: Option<&Version>,
        write: &HvWrite,
        new_version: &Version,
    ) -> StoreResult<CasOutcome> {
        let key = path.as_str().as_bytes();
        let writes = mutations(write, new_version);
        let applied = match expected {
            Some(v) => {
                let predicate = chain(vec![version_cell(), value_is(v.as_str().as_bytes())]);
                self.client
                    .check_and_mutate(&self.table, key, predicate, writes, vec![])
                    .await?
            }
            None => {
                let matched = self
                    .client
                    .check_and_mutate(&self.table, key, version_cell(), vec![], writes)
                    .await?;
                !matched
            }
        };
        if applied {
            return Ok(CasOutcome::Applied);
        }
        let now = self.read_row(path).await?;
        Ok(super::outcome_of_refused(new_version, now.version.as_ref()))
    }

    async fn fence(&self, path: &ObjectPath, rev: &Revision) -> StoreResult<bool> {
        let key = path.as_str().as_bytes();
        let fence = || {
            vec![set_cell(
                DATA,
                VERSION,
                SERVER_TIME,
                Version::mint().as_str().as_bytes().to_vec(),
            )]
        };
        // Both branches write the same fence: the predicate only reports what it saw.
        let names_rev = chain(vec![
            column(DATA, TOMBSTONE),
            latest(),
            value_is(rev.as_str().as_bytes()),
        ]);
        self.client
            .check_and_mutate(&self.table, key, names_rev, fence(), fence())
            .await
    }
}

/// The first key past every key that starts with `prefix` (`None`: no such key, or an empty
/// prefix, which covers the whole table).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0xff {
            bytes.push(last + 1);
            return String::from_utf8(bytes).ok();
        }
    }
    None
}
