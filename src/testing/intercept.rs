//! Store wrappers that hand every call to a hook before it reaches the store: the one
//! place that knows which store call is which [`Op`]. Fault injection ([`super::faults`])
//! and the benchmarks' call meter ([`super::meter`]) are hooks.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::changelog::{
    Changelog, ChangelogEntry, Claim, Heartbeat, Removal, ScanPage, ScanRequest,
};
use crate::error::{StoreKind, StoreResult};
use crate::hv::{CasOutcome, Expected, HvStore, HvWrite};
use crate::lt::{ListPage, LtStore};
use crate::model::{ChangeId, ChangeRecord, HvValue, ObjectPath, OwnerToken, Revision, Timestamp};
use crate::stores::Stores;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    HvRead,
    HvCas,
    HvFence,
    LtPut,
    LtGet,
    LtExists,
    LtDelete,
    LtList,
    Record,
    Heartbeat,
    Scan,
    Claim,
    Get,
    Remove,
}

impl Op {
    pub const ALL: [Op; 14] = [
        Op::HvRead,
        Op::HvCas,
        Op::HvFence,
        Op::LtPut,
        Op::LtGet,
        Op::LtExists,
        Op::LtDelete,
        Op::LtList,
        Op::Record,
        Op::Heartbeat,
        Op::Scan,
        Op::Claim,
        Op::Get,
        Op::Remove,
    ];

    pub fn index(self) -> usize {
        Op::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

/// Sees every store call: may delay it, fail it, count it, or never let it finish.
pub trait Intercept: Send + Sync + std::fmt::Debug + 'static {
    fn run<T: Send>(
        &self,
        op: Op,
        store: StoreKind,
        call: impl Future<Output = StoreResult<T>> + Send,
    ) -> impl Future<Output = StoreResult<T>> + Send;
}

/// The three stores, each call going through `hook`.
pub fn wrap<H: Intercept>(hook: Arc<H>, stores: &Stores) -> Stores {
    Stores {
        hv: Arc::new(HookedHv {
            inner: stores.hv.clone(),
            hook: hook.clone(),
        }),
        lt: Arc::new(HookedLt {
            inner: stores.lt.clone(),
            hook: hook.clone(),
        }),
        changelog: Arc::new(HookedChangelog {
            inner: stores.changelog.clone(),
            hook,
        }),
        clock: stores.clock.clone(),
    }
}

#[derive(Debug)]
struct HookedHv<H> {
    inner: Arc<dyn HvStore>,
    hook: Arc<H>,
}

#[async_trait]
impl<H: Intercept> HvStore for HookedHv<H> {
    async fn read(&self, path: &ObjectPath) -> StoreResult<Option<HvValue>> {
        self.hook
            .run(Op::HvRead, StoreKind::Hv, self.inner.read(path))
            .await
    }
    async fn compare_and_write(
        &self,
        path: &ObjectPath,
        expected: &Expected,
        write: &HvWrite,
        change: Option<&ChangeId>,
    ) -> StoreResult<CasOutcome> {
        let call = self.inner.compare_and_write(path, expected, write, change);
        self.hook.run(Op::HvCas, StoreKind::Hv, call).await
    }
    async fn fence(&self, path: &ObjectPath, change: &ChangeId) -> StoreResult<Option<HvValue>> {
        let call = self.inner.fence(path, change);
        self.hook.run(Op::HvFence, StoreKind::Hv, call).await
    }
}

#[derive(Debug)]
struct HookedLt<H> {
    inner: Arc<dyn LtStore>,
    hook: Arc<H>,
}

#[async_trait]
impl<H: Intercept> LtStore for HookedLt<H> {
    async fn put(&self, rev: &Revision, bytes: Bytes) -> StoreResult<()> {
        self.hook
            .run(Op::LtPut, StoreKind::Lt, self.inner.put(rev, bytes))
            .await
    }
    async fn get(&self, rev: &Revision) -> StoreResult<Option<Bytes>> {
        self.hook
            .run(Op::LtGet, StoreKind::Lt, self.inner.get(rev))
            .await
    }
    async fn exists(&self, rev: &Revision) -> StoreResult<bool> {
        self.hook
            .run(Op::LtExists, StoreKind::Lt, self.inner.exists(rev))
            .await
    }
    async fn delete(&self, rev: &Revision) -> StoreResult<()> {
        self.hook
            .run(Op::LtDelete, StoreKind::Lt, self.inner.delete(rev))
            .await
    }
    async fn list(&self, prefix: &str, page_token: Option<String>) -> StoreResult<ListPage> {
        let call = self.inner.list(prefix, page_token);
        self.hook.run(Op::LtList, StoreKind::Lt, call).await
    }
}

#[derive(Debug)]
struct HookedChangelog<H> {
    inner: Arc<dyn Changelog>,
    hook: Arc<H>,
}

#[async_trait]
impl<H: Intercept> Changelog for HookedChangelog<H> {
    async fn record(&self, id: &ChangeId, record: &ChangeRecord) -> StoreResult<Timestamp> {
        let call = self.inner.record(id, record);
        self.hook.run(Op::Record, StoreKind::Changelog, call).await
    }
    async fn heartbeat(&self, id: &ChangeId, owner: &OwnerToken) -> StoreResult<Heartbeat> {
        let call = self.inner.heartbeat(id, owner);
        self.hook
            .run(Op::Heartbeat, StoreKind::Changelog, call)
            .await
    }
    async fn scan_stale(&self, req: &ScanRequest) -> StoreResult<ScanPage> {
        let call = self.inner.scan_stale(req);
        self.hook.run(Op::Scan, StoreKind::Changelog, call).await
    }
    async fn claim(
        &self,
        seen: &ChangelogEntry,
        cutoff: Timestamp,
        claimer: &OwnerToken,
        lease_until: Timestamp,
    ) -> StoreResult<Claim> {
        let call = self.inner.claim(seen, cutoff, claimer, lease_until);
        self.hook.run(Op::Claim, StoreKind::Changelog, call).await
    }
    async fn get(&self, id: &ChangeId) -> StoreResult<Option<ChangelogEntry>> {
        self.hook
            .run(Op::Get, StoreKind::Changelog, self.inner.get(id))
            .await
    }
    async fn remove(&self, id: &ChangeId, owner: &OwnerToken) -> StoreResult<Removal> {
        let call = self.inner.remove(id, owner);
        self.hook.run(Op::Remove, StoreKind::Changelog, call).await
    }
    fn is_noop(&self) -> bool {
        self.inner.is_noop()
    }
}
