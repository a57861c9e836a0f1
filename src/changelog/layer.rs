//! A changelog in front of another one that changes a few calls and passes the rest on.
//!
//! The [`Changelog`] trait has a dozen calls; a wrapper that batches two of them, or a
//! test's ledger that watches claims, would otherwise restate the other ten by hand, and a
//! call added to the trait would have to be threaded through every such copy. A layer
//! implements [`ChangelogLayer::inner`] and only the calls it changes; every other call
//! goes to the inner changelog unchanged, and the blanket impl below makes the layer a
//! [`Changelog`]. Where both traits are in scope, a method call on the concrete layer type
//! names two methods; call it through `&dyn Changelog`, as the pipeline does.
//!
//! Wrappers that treat every call alike (fault injection, the call meter) are hooks on
//! `testing::intercept` instead: they need to know which call is which, not its arguments.

use async_trait::async_trait;

use super::{
    Changelog, ChangelogEntry, Claim, Deferral, Extension, Heartbeat, Removal, ScanPage,
    ScanRequest,
};
use crate::error::StoreResult;
use crate::model::{ChangeId, ChangeRecord, OwnerToken, Timestamp};

/// A changelog that wraps another: each call, unless overridden, is the inner changelog's.
/// The methods mean what [`Changelog`]'s of the same name mean.
#[async_trait]
pub trait ChangelogLayer: Send + Sync + std::fmt::Debug {
    /// The changelog the calls this layer does not change go to.
    fn inner(&self) -> &dyn Changelog;

    /// [`Changelog::record`].
    async fn record(&self, id: &ChangeId, record: &ChangeRecord) -> StoreResult<Timestamp> {
        self.inner().record(id, record).await
    }
    /// [`Changelog::now`].
    async fn now(&self) -> StoreResult<Timestamp> {
        self.inner().now().await
    }
    /// [`Changelog::heartbeat`].
    async fn heartbeat(&self, id: &ChangeId, owner: &OwnerToken) -> StoreResult<Heartbeat> {
        self.inner().heartbeat(id, owner).await
    }
    /// [`Changelog::scan_stale`].
    async fn scan_stale(&self, req: &ScanRequest) -> StoreResult<ScanPage> {
        self.inner().scan_stale(req).await
    }
    /// [`Changelog::claim`].
    async fn claim(
        &self,
        seen: &ChangelogEntry,
        cutoff: Timestamp,
        claimer: &OwnerToken,
        lease_until: Timestamp,
    ) -> StoreResult<Claim> {
        self.inner().claim(seen, cutoff, claimer, lease_until).await
    }
    /// [`Changelog::get`].
    async fn get(&self, id: &ChangeId) -> StoreResult<Option<ChangelogEntry>> {
        self.inner().get(id).await
    }
    /// [`Changelog::get_many`].
    async fn get_many(&self, ids: &[ChangeId]) -> StoreResult<Vec<Option<ChangelogEntry>>> {
        self.inner().get_many(ids).await
    }
    /// [`Changelog::extend_claim`].
    async fn extend_claim(
        &self,
        id: &ChangeId,
        owner: &OwnerToken,
        until: Timestamp,
    ) -> StoreResult<Extension> {
        self.inner().extend_claim(id, owner, until).await
    }
    /// [`Changelog::remove`].
    async fn remove(&self, id: &ChangeId, owner: &OwnerToken) -> StoreResult<Removal> {
        self.inner().remove(id, owner).await
    }
    /// [`Changelog::remove_many`].
    async fn remove_many(&self, ids: &[ChangeId]) -> StoreResult<()> {
        self.inner().remove_many(ids).await
    }
    /// [`Changelog::defer`].
    async fn defer(&self, id: &ChangeId, record: &ChangeRecord) -> StoreResult<Deferral> {
        self.inner().defer(id, record).await
    }
    /// [`Changelog::is_noop`].
    fn is_noop(&self) -> bool {
        self.inner().is_noop()
    }
}

#[async_trait]
impl<L: ChangelogLayer> Changelog for L {
    async fn record(&self, id: &ChangeId, record: &ChangeRecord) -> StoreResult<Timestamp> {
        ChangelogLayer::record(self, id, record).await
    }
    async fn now(&self) -> StoreResult<Timestamp> {
        ChangelogLayer::now(self).await
    }
    async fn heartbeat(&self, id: &ChangeId, owner: &OwnerToken) -> StoreResult<Heartbeat> {
        ChangelogLayer::heartbeat(self, id, owner).await
    }
    async fn scan_stale(&self, req: &ScanRequest) -> StoreResult<ScanPage> {
        ChangelogLayer::scan_stale(self, req).await
    }
    async fn claim(
        &self,
        seen: &ChangelogEntry,
        cutoff: Timestamp,
        claimer: &OwnerToken,
        lease_until: Timestamp,
    ) -> StoreResult<Claim> {
        ChangelogLayer::claim(self, seen, cutoff, claimer, lease_until).await
    }
    async fn get(&self, id: &ChangeId) -> StoreResult<Option<ChangelogEntry>> {
        ChangelogLayer::get(self, id).await
    }
    async fn get_many(&self, ids: &[ChangeId]) -> StoreResult<Vec<Option<ChangelogEntry>>> {
        ChangelogLayer::get_many(self, ids).await
    }
    async fn extend_claim(
        &self,
        id: &ChangeId,
        owner: &OwnerToken,
        until: Timestamp,
    ) -> StoreResult<Extension> {
        ChangelogLayer::extend_claim(self, id, owner, until).await
    }
    async fn remove(&self, id: &ChangeId, owner: &OwnerToken) -> StoreResult<Removal> {
        ChangelogLayer::remove(self, id, owner).await
    }
    async fn remove_many(&self, ids: &[ChangeId]) -> StoreResult<()> {
        ChangelogLayer::remove_many(self, ids).await
    }
    async fn defer(&self, id: &ChangeId, record: &ChangeRecord) -> StoreResult<Deferral> {
        ChangelogLayer::defer(self, id, record).await
    }
    fn is_noop(&self) -> bool {
        ChangelogLayer::is_noop(self)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::changelog::MemoryChangelog;
    use crate::model::{ObjectPath, Revision};

    /// Counts removals, changes nothing.
    #[derive(Debug)]
    struct Counting {
        inner: Arc<dyn Changelog>,
        removals: AtomicUsize,
    }

    #[async_trait]
    impl ChangelogLayer for Counting {
        fn inner(&self) -> &dyn Changelog {
            &*self.inner
        }
        async fn remove(&self, id: &ChangeId, owner: &OwnerToken) -> StoreResult<Removal> {
            self.removals.fetch_add(1, Ordering::SeqCst);
            self.inner.remove(id, owner).await
        }
    }

    /// A layer's own call runs in place of the inner one; every other call reaches the
    /// inner changelog and its effect is the inner changelog's.
    #[tokio::test]
    async fn a_layer_changes_its_own_calls_and_passes_the_others_on() {
        let inner: Arc<dyn Changelog> = Arc::new(MemoryChangelog::new(crate::clock::system()));
        let counting = Arc::new(Counting {
            inner: inner.clone(),
            removals: AtomicUsize::new(0),
        });
        let layer: Arc<dyn Changelog> = counting.clone();
        let path = ObjectPath::new("layer/a").unwrap();
        let owner = OwnerToken::writer();
        let record = ChangeRecord::new(path.clone(), None, Some(Revision::mint(&path)), owner.clone());
        let id = ChangeId::mint();
        layer.record(&id, &record).await.unwrap();
        assert!(inner.get(&id).await.unwrap().is_some(), "record reached the inner changelog");
        assert_eq!(layer.heartbeat(&id, &owner).await.unwrap(), Heartbeat::Refreshed);
        assert_eq!(counting.removals.load(Ordering::SeqCst), 0);
        assert_eq!(layer.remove(&id, &owner).await.unwrap(), Removal::Removed);
        assert_eq!(counting.removals.load(Ordering::SeqCst), 1, "the layer's own call ran");
        assert!(inner.get(&id).await.unwrap().is_none(), "and reached the inner changelog");
        assert!(!layer.is_noop());
    }
}
