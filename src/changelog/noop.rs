//! A changelog that records nothing, for deployments that opt out of crash recovery
//! (the seed's `ChangeLogConfig::Noop`). Writers behave exactly as with a real changelog,
//! minus the durability: a crash mid-write may leave an orphan that nothing will find.

use async_trait::async_trait;

use super::{
    Changelog, ChangelogEntry, Claim, Deferral, Extension, Heartbeat, Removal, ScanPage,
    ScanRequest,
};
use crate::error::StoreResult;
use crate::model::{ChangeId, ChangeRecord, OwnerToken, Timestamp};

#[derive(Debug, Default, Clone, Copy)]
/// A changelog that records nothing: the design without crash recovery, for comparison
/// (benchmarks) and for writers that opt out. Blobs its writers orphan are found only by
/// `tiersweep audit`.
pub struct NoopChangelog;

#[async_trait]
impl Changelog for NoopChangelog {
    async fn record(&self, _: &ChangeId, _: &ChangeRecord) -> StoreResult<Timestamp> {
        Ok(Timestamp(0))
    }

    async fn now(&self) -> StoreResult<Timestamp> {
        Ok(crate::clock::Clock::now(&crate::clock::SystemClock))
    }

    async fn heartbeat(&self, _: &ChangeId, _: &OwnerToken) -> StoreResult<Heartbeat> {
        Ok(Heartbeat::Refreshed)
    }

    async fn scan_stale(&self, _: &ScanRequest) -> StoreResult<ScanPage> {
        Ok(ScanPage::default())
    }

    async fn claim(
        &self,
        _: &ChangelogEntry,
        _: Timestamp,
        _: &OwnerToken,
        _: Timestamp,
    ) -> StoreResult<Claim> {
        Ok(Claim::Lost)
    }

    async fn get(&self, _: &ChangeId) -> StoreResult<Option<ChangelogEntry>> {
        Ok(None)
    }

    async fn extend_claim(
        &self,
        _: &ChangeId,
        _: &OwnerToken,
        _: Timestamp,
    ) -> StoreResult<Extension> {
        Ok(Extension::Refused)
    }

    async fn remove_many(&self, _: &[ChangeId]) -> StoreResult<()> {
        Ok(())
    }

    async fn remove(&self, _: &ChangeId, _: &OwnerToken) -> StoreResult<Removal> {
        Ok(Removal::Removed)
    }

    async fn defer(&self, _: &ChangeId, _: &ChangeRecord) -> StoreResult<Deferral> {
        Ok(Deferral::Deferred)
    }

    fn is_noop(&self) -> bool {
        true
    }
}
