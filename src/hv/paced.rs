//! A recovery worker's HV calls at its Bigtable pace ([`crate::pace`]), each charged the
//! rows it touched.

use std::sync::Arc;

use async_trait::async_trait;

use super::{CasOutcome, HvRow, HvStore, HvWrite, TombstonePage, Version};
use crate::error::StoreResult;
use crate::lt::NameRange;
use crate::model::{ObjectPath, Revision};
use crate::pace::Pace;

/// An HV store whose calls wait for turns at a [`Pace`] shared with the worker's changelog
/// calls ([`crate::changelog::PacedChangelog`]).
#[derive(Debug)]
pub struct PacedHv {
    inner: Arc<dyn HvStore>,
    pace: Arc<Pace>,
}

impl PacedHv {
    /// `inner`, paced by `pace`.
    pub fn new(inner: Arc<dyn HvStore>, pace: Arc<Pace>) -> Self {
        Self { inner, pace }
    }
}

#[async_trait]
impl HvStore for PacedHv {
    async fn read_row(&self, path: &ObjectPath) -> StoreResult<HvRow> {
        self.pace.run(self.inner.read_row(path), |_| 1).await
    }
    async fn tombstones(&self, paths: &[ObjectPath]) -> StoreResult<Vec<Option<Revision>>> {
        self.pace
            .run(self.inner.tombstones(paths), |_| paths.len())
            .await
    }
    async fn compare_and_write(
        &self,
        path: &ObjectPath,
        expected: Option<&Version>,
        write: &HvWrite,
        new_version: &Version,
    ) -> StoreResult<CasOutcome> {
        let call = self
            .inner
            .compare_and_write(path, expected, write, new_version);
        self.pace.run(call, |_| 1).await
    }
    async fn scan_tombstones(
        &self,
        range: &NameRange,
        start_after: Option<&ObjectPath>,
        limit: usize,
    ) -> StoreResult<TombstonePage> {
        let rows =
            |page: &StoreResult<TombstonePage>| page.as_ref().map_or(1, |p| p.tombstones.len());
        let call = self.inner.scan_tombstones(range, start_after, limit);
        self.pace.run(call, rows).await
    }
    async fn fence(&self, path: &ObjectPath, rev: &Revision) -> StoreResult<bool> {
        self.pace.run(self.inner.fence(path, rev), |_| 1).await
    }
}
