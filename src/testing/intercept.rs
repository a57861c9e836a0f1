//! Store wrappers that hand every call to a hook before it reaches the store: the one
//! place that knows which store call is which [`Op`]. Fault injection ([`super::faults`])
//! and the benchmark's call meter (`tiersweep_bench::meter`) are hooks.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;

use crate::changelog::{
    Changelog, ChangelogEntry, Claim, Deferral, Extension, Heartbeat, Removal, ScanPage,
    ScanRequest,
};
use crate::error::{StoreKind, StoreResult};
use crate::hv::{CasOutcome, HvRow, HvStore, HvWrite, Version};
use crate::lt::{BlobInfo, ByteStream, ListPage, LtStore, NameRange};
use crate::model::{
    ChangeId, ChangeRecord, ObjectMeta, ObjectPath, OwnerToken, Revision, Timestamp,
};
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
    RemoveMany,
    Defer,
    Now,
    Extend,
}

impl Op {
    pub const ALL: [Op; 18] = [
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
        Op::RemoveMany,
        Op::Defer,
        Op::Now,
        Op::Extend,
    ];

    pub fn index(self) -> usize {
        Op::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

/// One store call, owning its arguments, so that a hook can also run it later than its
/// caller (a straggler whose effect lands after the caller gave up).
pub type Call<T> = BoxFuture<'static, StoreResult<T>>;

/// Sees every store call: may delay it, fail it, count it, never let it finish, or let it
/// take effect after its caller saw an error.
pub trait Intercept: Send + Sync + std::fmt::Debug + 'static {
    fn run<T: Send + 'static>(
        &self,
        op: Op,
        store: StoreKind,
        call: Call<T>,
    ) -> impl Future<Output = StoreResult<T>> + Send;

    /// Whether a batched removal is sent as two halves, each a call the hook sees, so that
    /// a fault on the second leaves the first done: a `MutateRows` that removed some rows
    /// and then failed. Off by default (the call meter counts one call per batch).
    fn splits_batches(&self) -> bool {
        false
    }

    /// The rows one Bigtable call read or wrote, for a call that can touch more than one
    /// (a batch of n keys, a scan), told once the call succeeded: a refused or failed call
    /// is not charged its rows. Bigtable's capacity and a bill count rows, not calls.
    /// Nothing by default.
    fn rows(&self, op: Op, rows: usize) {
        let _ = (op, rows);
    }

    /// How long the store takes to finish an upload once its last byte has arrived, for an
    /// upload whose call started at `started`: the call meter's model of GCS (an object is
    /// finalized after its last byte). Nothing by default.
    fn after_last_byte(&self, started: tokio::time::Instant) -> std::time::Duration {
        let _ = started;
        std::time::Duration::ZERO
    }
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
    async fn read_row(&self, path: &ObjectPath) -> StoreResult<HvRow> {
        let (inner, path) = (self.inner.clone(), path.clone());
        let call = Box::pin(async move { inner.read_row(&path).await });
        self.hook.run(Op::HvRead, StoreKind::Hv, call).await
    }
    async fn scan_tombstones(
        &self,
        range: &crate::lt::NameRange,
        start_after: Option<&ObjectPath>,
        limit: usize,
    ) -> StoreResult<crate::hv::TombstonePage> {
        let (inner, range, after) = (self.inner.clone(), range.clone(), start_after.cloned());
        let call =
            Box::pin(async move { inner.scan_tombstones(&range, after.as_ref(), limit).await });
        let page = self.hook.run(Op::HvRead, StoreKind::Hv, call).await?;
        self.hook.rows(Op::HvRead, page.tombstones.len());
        Ok(page)
    }
    async fn tombstones(&self, paths: &[ObjectPath]) -> StoreResult<Vec<Option<Revision>>> {
        let (inner, paths) = (self.inner.clone(), paths.to_vec());
        let rows = paths.len();
        let call = Box::pin(async move { inner.tombstones(&paths).await });
        let read = self.hook.run(Op::HvRead, StoreKind::Hv, call).await?;
        self.hook.rows(Op::HvRead, rows);
        Ok(read)
    }
    async fn compare_and_write(
        &self,
        path: &ObjectPath,
        expected: Option<&Version>,
        write: &HvWrite,
        stamp: &Version,
    ) -> StoreResult<CasOutcome> {
        let inner = self.inner.clone();
        let (path, expected, write) = (path.clone(), expected.cloned(), write.clone());
        let stamp = stamp.clone();
        let call = Box::pin(async move {
            inner
                .compare_and_write(&path, expected.as_ref(), &write, &stamp)
                .await
        });
        self.hook.run(Op::HvCas, StoreKind::Hv, call).await
    }
    async fn fence(&self, path: &ObjectPath, rev: &Revision) -> StoreResult<bool> {
        let (inner, path, rev) = (self.inner.clone(), path.clone(), rev.clone());
        let call = Box::pin(async move { inner.fence(&path, &rev).await });
        self.hook.run(Op::HvFence, StoreKind::Hv, call).await
    }
}

async fn pause(d: std::time::Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

impl<H: Intercept> HookedLt<H> {
    /// An upload's body as the store receives it: sent as fast as the writer yields it,
    /// the way an HTTP client sends a request body, whether or not the hook has let the
    /// call through yet. So a call that a hook runs late (a straggler, a frozen host's
    /// request) finds the bytes that had left the writer in time, each checked by the
    /// writer's guard and gate when it left, not when it lands: a request that was on its
    /// way when its guard lapsed still lands, as in production. Its end reaches the store
    /// [`Intercept::after_last_byte`] after the last byte.
    fn on_the_wire(&self, mut body: ByteStream) -> ByteStream {
        use futures::StreamExt as _;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(item) = body.next().await {
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    break;
                }
            }
        });
        let (hook, started) = (self.hook.clone(), tokio::time::Instant::now());
        Box::pin(futures::stream::unfold(Some(rx), move |rx| {
            let hook = hook.clone();
            async move {
                let mut rx = rx?;
                match rx.recv().await {
                    Some(item) => Some((item, Some(rx))),
                    None => {
                        pause(hook.after_last_byte(started)).await;
                        None
                    }
                }
            }
        }))
    }
}

#[derive(Debug)]
struct HookedLt<H> {
    inner: Arc<dyn LtStore>,
    hook: Arc<H>,
}

#[async_trait]
impl<H: Intercept> LtStore for HookedLt<H> {
    async fn put_with_meta(
        &self,
        rev: &Revision,
        bytes: Bytes,
        meta: &ObjectMeta,
    ) -> StoreResult<()> {
        let (inner, rev, meta) = (self.inner.clone(), rev.clone(), meta.clone());
        // The bytes are all there at once: the upload ends `after_last_byte` of its start.
        let (hook, started) = (self.hook.clone(), tokio::time::Instant::now());
        let call = Box::pin(async move {
            pause(hook.after_last_byte(started)).await;
            inner.put_with_meta(&rev, bytes, &meta).await
        });
        self.hook.run(Op::LtPut, StoreKind::Lt, call).await
    }
    async fn put_stream(
        &self,
        rev: &Revision,
        body: ByteStream,
        meta: &ObjectMeta,
    ) -> StoreResult<u64> {
        // One upload, as `put` is: faults before it send nothing, faults after it let it
        // land and report an error.
        let (inner, rev, meta) = (self.inner.clone(), rev.clone(), meta.clone());
        let body = self.on_the_wire(body);
        let call = Box::pin(async move { inner.put_stream(&rev, body, &meta).await });
        self.hook.run(Op::LtPut, StoreKind::Lt, call).await
    }
    async fn put_stream_sized(
        &self,
        rev: &Revision,
        body: ByteStream,
        declared: crate::lt::Declared,
        meta: &ObjectMeta,
    ) -> StoreResult<u64> {
        let (inner, rev, meta) = (self.inner.clone(), rev.clone(), meta.clone());
        let body = self.on_the_wire(body);
        let call =
            Box::pin(async move { inner.put_stream_sized(&rev, body, declared, &meta).await });
        self.hook.run(Op::LtPut, StoreKind::Lt, call).await
    }
    async fn get(&self, rev: &Revision) -> StoreResult<Option<Bytes>> {
        let (inner, rev) = (self.inner.clone(), rev.clone());
        let call = Box::pin(async move { inner.get(&rev).await });
        self.hook.run(Op::LtGet, StoreKind::Lt, call).await
    }
    async fn get_stream(&self, rev: &Revision) -> StoreResult<Option<ByteStream>> {
        // Faults apply to opening the read, which is the call that reaches the store.
        let (inner, rev) = (self.inner.clone(), rev.clone());
        let call = Box::pin(async move { inner.get_stream(&rev).await });
        self.hook.run(Op::LtGet, StoreKind::Lt, call).await
    }
    async fn stat(&self, rev: &Revision) -> StoreResult<Option<BlobInfo>> {
        let (inner, rev) = (self.inner.clone(), rev.clone());
        let call = Box::pin(async move { inner.stat(&rev).await });
        self.hook.run(Op::LtExists, StoreKind::Lt, call).await
    }
    async fn delete(&self, rev: &Revision) -> StoreResult<()> {
        let (inner, rev) = (self.inner.clone(), rev.clone());
        let call = Box::pin(async move { inner.delete(&rev).await });
        self.hook.run(Op::LtDelete, StoreKind::Lt, call).await
    }
    async fn list(&self, range: &NameRange, page_token: Option<String>) -> StoreResult<ListPage> {
        let (inner, range) = (self.inner.clone(), range.clone());
        let call = Box::pin(async move { inner.list(&range, page_token).await });
        self.hook.run(Op::LtList, StoreKind::Lt, call).await
    }
}

#[derive(Debug)]
struct HookedChangelog<H> {
    inner: Arc<dyn Changelog>,
    hook: Arc<H>,
}

impl<H: Intercept> HookedChangelog<H> {
    async fn remove_part(&self, ids: &[ChangeId]) -> StoreResult<()> {
        let (inner, ids) = (self.inner.clone(), ids.to_vec());
        let rows = ids.len();
        let call = Box::pin(async move { inner.remove_many(&ids).await });
        self.hook
            .run(Op::RemoveMany, StoreKind::Changelog, call)
            .await?;
        self.hook.rows(Op::RemoveMany, rows);
        Ok(())
    }
}

#[async_trait]
impl<H: Intercept> Changelog for HookedChangelog<H> {
    async fn record(&self, id: &ChangeId, record: &ChangeRecord) -> StoreResult<Timestamp> {
        let (inner, id, record) = (self.inner.clone(), id.clone(), record.clone());
        let call = Box::pin(async move { inner.record(&id, &record).await });
        self.hook.run(Op::Record, StoreKind::Changelog, call).await
    }
    async fn now(&self) -> StoreResult<Timestamp> {
        let inner = self.inner.clone();
        let call = Box::pin(async move { inner.now().await });
        self.hook.run(Op::Now, StoreKind::Changelog, call).await
    }
    async fn heartbeat(&self, id: &ChangeId, owner: &OwnerToken) -> StoreResult<Heartbeat> {
        let (inner, id, owner) = (self.inner.clone(), id.clone(), owner.clone());
        let call = Box::pin(async move { inner.heartbeat(&id, &owner).await });
        self.hook
            .run(Op::Heartbeat, StoreKind::Changelog, call)
            .await
    }
    async fn scan_stale(&self, req: &ScanRequest) -> StoreResult<ScanPage> {
        let (inner, req) = (self.inner.clone(), req.clone());
        let call = Box::pin(async move { inner.scan_stale(&req).await });
        let page = self.hook.run(Op::Scan, StoreKind::Changelog, call).await?;
        self.hook.rows(Op::Scan, page.rows.len());
        Ok(page)
    }
    async fn claim(
        &self,
        seen: &ChangelogEntry,
        cutoff: Timestamp,
        claimer: &OwnerToken,
        lease_until: Timestamp,
    ) -> StoreResult<Claim> {
        let (inner, seen, claimer) = (self.inner.clone(), seen.clone(), claimer.clone());
        let call = Box::pin(async move { inner.claim(&seen, cutoff, &claimer, lease_until).await });
        self.hook.run(Op::Claim, StoreKind::Changelog, call).await
    }
    async fn get(&self, id: &ChangeId) -> StoreResult<Option<ChangelogEntry>> {
        let (inner, id) = (self.inner.clone(), id.clone());
        let call = Box::pin(async move { inner.get(&id).await });
        self.hook.run(Op::Get, StoreKind::Changelog, call).await
    }
    /// One ReadRows, like `get`: the same call to the meter and the IAM table.
    async fn get_many(&self, ids: &[ChangeId]) -> StoreResult<Vec<Option<ChangelogEntry>>> {
        let (inner, ids) = (self.inner.clone(), ids.to_vec());
        let rows = ids.len();
        let call = Box::pin(async move { inner.get_many(&ids).await });
        let read = self.hook.run(Op::Get, StoreKind::Changelog, call).await?;
        self.hook.rows(Op::Get, rows);
        Ok(read)
    }
    async fn extend_claim(
        &self,
        id: &ChangeId,
        owner: &OwnerToken,
        until: Timestamp,
    ) -> StoreResult<Extension> {
        let (inner, id, owner) = (self.inner.clone(), id.clone(), owner.clone());
        let call = Box::pin(async move { inner.extend_claim(&id, &owner, until).await });
        self.hook.run(Op::Extend, StoreKind::Changelog, call).await
    }
    async fn remove_many(&self, ids: &[ChangeId]) -> StoreResult<()> {
        if ids.len() > 1 && self.hook.splits_batches() {
            let (first, second) = ids.split_at(ids.len() / 2);
            self.remove_part(first).await?;
            return self.remove_part(second).await;
        }
        self.remove_part(ids).await
    }
    async fn remove(&self, id: &ChangeId, owner: &OwnerToken) -> StoreResult<Removal> {
        let (inner, id, owner) = (self.inner.clone(), id.clone(), owner.clone());
        let call = Box::pin(async move { inner.remove(&id, &owner).await });
        self.hook.run(Op::Remove, StoreKind::Changelog, call).await
    }
    async fn defer(&self, id: &ChangeId, record: &ChangeRecord) -> StoreResult<Deferral> {
        let (inner, id, record) = (self.inner.clone(), id.clone(), record.clone());
        let call = Box::pin(async move { inner.defer(&id, &record).await });
        self.hook.run(Op::Defer, StoreKind::Changelog, call).await
    }
    fn is_noop(&self) -> bool {
        self.inner.is_noop()
    }
}
