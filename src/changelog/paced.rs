//! A recovery worker's changelog calls at its Bigtable pace ([`crate::pace`]), each charged
//! the rows it touched: a cluster's budget is in rows, and a batch of n rows costs n.

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    Changelog, ChangelogEntry, ChangelogLayer, Claim, Deferral, Extension, Heartbeat, Removal,
    ScanPage, ScanRequest,
};
use crate::error::StoreResult;
use crate::model::{ChangeId, ChangeRecord, OwnerToken, Timestamp};
use crate::pace::Pace;

/// A changelog whose calls wait for turns at a [`Pace`] shared with the worker's other
/// Bigtable calls (its HV calls: [`crate::hv::PacedHv`]).
#[derive(Debug)]
pub struct PacedChangelog {
    inner: Arc<dyn Changelog>,
    pace: Arc<Pace>,
}

impl PacedChangelog {
    /// `inner`, paced by `pace`.
    pub fn new(inner: Arc<dyn Changelog>, pace: Arc<Pace>) -> Self {
        Self { inner, pace }
    }
}

/// One row, whatever the outcome.
fn one<T>(_: &StoreResult<T>) -> usize {
    1
}

#[async_trait]
impl ChangelogLayer for PacedChangelog {
    fn inner(&self) -> &dyn Changelog {
        &*self.inner
    }
    async fn record(&self, id: &ChangeId, record: &ChangeRecord) -> StoreResult<Timestamp> {
        self.pace.run(self.inner.record(id, record), one).await
    }
    async fn now(&self) -> StoreResult<Timestamp> {
        self.pace.run(self.inner.now(), one).await
    }
    async fn heartbeat(&self, id: &ChangeId, owner: &OwnerToken) -> StoreResult<Heartbeat> {
        self.pace.run(self.inner.heartbeat(id, owner), one).await
    }
    async fn scan_stale(&self, req: &ScanRequest) -> StoreResult<ScanPage> {
        let rows = |page: &StoreResult<ScanPage>| page.as_ref().map_or(1, |p| p.rows.len());
        self.pace.run(self.inner.scan_stale(req), rows).await
    }
    async fn claim(
        &self,
        seen: &ChangelogEntry,
        cutoff: Timestamp,
        claimer: &OwnerToken,
        lease_until: Timestamp,
    ) -> StoreResult<Claim> {
        let call = self.inner.claim(seen, cutoff, claimer, lease_until);
        self.pace.run(call, one).await
    }
    async fn get(&self, id: &ChangeId) -> StoreResult<Option<ChangelogEntry>> {
        self.pace.run(self.inner.get(id), one).await
    }
    async fn get_many(&self, ids: &[ChangeId]) -> StoreResult<Vec<Option<ChangelogEntry>>> {
        self.pace.run(self.inner.get_many(ids), |_| ids.len()).await
    }
    async fn extend_claim(
        &self,
        id: &ChangeId,
        owner: &OwnerToken,
        until: Timestamp,
    ) -> StoreResult<Extension> {
        self.pace.run(self.inner.extend_claim(id, owner, until), one).await
    }
    async fn remove(&self, id: &ChangeId, owner: &OwnerToken) -> StoreResult<Removal> {
        self.pace.run(self.inner.remove(id, owner), one).await
    }
    async fn remove_many(&self, ids: &[ChangeId]) -> StoreResult<()> {
        self.pace.run(self.inner.remove_many(ids), |_| ids.len()).await
    }
    async fn defer(&self, id: &ChangeId, record: &ChangeRecord) -> StoreResult<Deferral> {
        self.pace.run(self.inner.defer(id, record), one).await
    }
}
