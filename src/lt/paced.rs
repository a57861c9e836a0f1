//! Cleaners' deletes paced to what the bucket takes ([`crate::pace`]): a bucket limits
//! object writes and deletes together, and the limit is shared by every cleaner of a pool
//! and by the writers. Nothing else is paced: existence checks are reads, which GCS
//! budgets at five times writes.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{BlobInfo, ByteStream, Declared, ListPage, LtStore, NameRange};
use crate::error::StoreResult;
use crate::model::{ObjectMeta, Revision};
use crate::pace::{Pace, Paced};

/// The rate a cleaner starts at by default (`recovery.gcs_deletes_per_s`), deletes a
/// second: a quarter of a new bucket's limit.
pub const START_PER_S: f64 = 250.0;

/// An LT store whose deletes go at a [`Pace`]; everything else passes through.
#[derive(Debug)]
pub struct PacedLt {
    inner: Arc<dyn LtStore>,
    pace: Pace,
}

impl PacedLt {
    /// `inner`, its deletes starting at `per_s` a second.
    pub fn new(inner: Arc<dyn LtStore>, per_s: f64) -> Self {
        Self {
            inner,
            pace: Pace::starting_at(Paced::GcsDeletes, per_s),
        }
    }
}

#[async_trait]
impl LtStore for PacedLt {
    async fn put_with_meta(
        &self,
        rev: &Revision,
        bytes: Bytes,
        meta: &ObjectMeta,
    ) -> StoreResult<()> {
        self.inner.put_with_meta(rev, bytes, meta).await
    }
    async fn put_stream(
        &self,
        rev: &Revision,
        body: ByteStream,
        meta: &ObjectMeta,
    ) -> StoreResult<u64> {
        self.inner.put_stream(rev, body, meta).await
    }
    async fn put_stream_sized(
        &self,
        rev: &Revision,
        body: ByteStream,
        declared: Declared,
        meta: &ObjectMeta,
    ) -> StoreResult<u64> {
        self.inner.put_stream_sized(rev, body, declared, meta).await
    }
    async fn get(&self, rev: &Revision) -> StoreResult<Option<Bytes>> {
        self.inner.get(rev).await
    }
    async fn get_stream(&self, rev: &Revision) -> StoreResult<Option<ByteStream>> {
        self.inner.get_stream(rev).await
    }
    async fn stat(&self, rev: &Revision) -> StoreResult<Option<BlobInfo>> {
        self.inner.stat(rev).await
    }
    async fn exists(&self, rev: &Revision) -> StoreResult<bool> {
        self.inner.exists(rev).await
    }
    async fn delete(&self, rev: &Revision) -> StoreResult<()> {
        self.pace.run(self.inner.delete(rev), |_| 1).await
    }
    async fn list(&self, range: &NameRange, page_token: Option<String>) -> StoreResult<ListPage> {
        self.inner.list(range, page_token).await
    }
}
