//! In-memory LT store, for unit tests and the embedded demo.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;

use super::{BlobInfo, ByteStream, ListPage, ListedBlob, LtStore, NameRange};
use crate::clock::SharedClock;
use crate::error::{ErrorKind, StoreError, StoreKind, StoreResult};
use crate::model::{ObjectMeta, Revision, Timestamp};

const PAGE: usize = 1000;

/// Blobs in a map, each stamped with its creation time on the twin's clock (GCS's
/// `timeCreated`), which listings return.
#[derive(Debug)]
pub struct MemoryLt {
    blobs: Mutex<BTreeMap<String, Blob>>,
    clock: SharedClock,
}

#[derive(Debug, Clone)]
struct Blob {
    bytes: Bytes,
    meta: ObjectMeta,
    created: Timestamp,
}

impl Default for MemoryLt {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLt {
    /// A twin whose blobs are created on the system clock.
    pub fn new() -> Self {
        Self::with_clock(crate::clock::system())
    }

    /// A twin whose blobs are created on `clock` (tests: the stores' paused clock).
    pub fn with_clock(clock: SharedClock) -> Self {
        Self {
            blobs: Mutex::default(),
            clock,
        }
    }

    /// Stores a blob at `rev` as if created at `created`, whatever the clock says, or
    /// replaces one: how a test plants a blob older than its run.
    #[cfg(any(test, feature = "testing"))]
    pub fn plant(&self, rev: &Revision, bytes: Bytes, created: Timestamp) {
        self.blobs().insert(
            rev.as_str().to_owned(),
            Blob {
                bytes,
                meta: ObjectMeta::default(),
                created,
            },
        );
    }

    fn blobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Blob>> {
        self.blobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The chunk size of the twin's streamed reads.
const READ_CHUNK: usize = 64 * 1024;

#[async_trait]
impl LtStore for MemoryLt {
    async fn put_with_meta(
        &self,
        rev: &Revision,
        bytes: Bytes,
        meta: &ObjectMeta,
    ) -> StoreResult<()> {
        // Create-only, like the GCS backend's `ifGenerationMatch=0`.
        let created = self.clock.now();
        self.blobs()
            .entry(rev.as_str().to_owned())
            .or_insert_with(|| Blob {
                bytes,
                meta: meta.clone(),
                created,
            });
        Ok(())
    }

    async fn put_stream(
        &self,
        rev: &Revision,
        mut body: ByteStream,
        meta: &ObjectMeta,
    ) -> StoreResult<u64> {
        // Like GCS: nothing is visible until the whole stream has arrived, and a stream
        // that fails part-way creates nothing.
        let mut all = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                StoreError::new(
                    StoreKind::Lt,
                    "upload",
                    rev.to_string(),
                    ErrorKind::Permanent,
                    format!("the upload's stream failed: {e}"),
                )
            })?;
            all.extend_from_slice(&chunk);
        }
        let size = all.len() as u64;
        let created = self.clock.now();
        self.blobs()
            .entry(rev.as_str().to_owned())
            .or_insert_with(|| Blob {
                bytes: all.freeze(),
                meta: meta.clone(),
                created,
            });
        Ok(size)
    }

    async fn get(&self, rev: &Revision) -> StoreResult<Option<Bytes>> {
        Ok(self.blobs().get(rev.as_str()).map(|b| b.bytes.clone()))
    }

    async fn get_stream(&self, rev: &Revision) -> StoreResult<Option<ByteStream>> {
        // A snapshot at open, as GCS reads one generation; chunked, as a download arrives,
        // so callers that assume one chunk are caught here too.
        let Some(blob) = self.blobs().get(rev.as_str()).map(|b| b.bytes.clone()) else {
            return Ok(None);
        };
        let chunks = (0..blob.len())
            .step_by(READ_CHUNK)
            .map(move |at| Ok(blob.slice(at..(at + READ_CHUNK).min(blob.len()))))
            .collect::<Vec<_>>();
        Ok(Some(Box::pin(futures::stream::iter(chunks))))
    }

    async fn stat(&self, rev: &Revision) -> StoreResult<Option<BlobInfo>> {
        Ok(self.blobs().get(rev.as_str()).map(|b| BlobInfo {
            size: b.bytes.len() as u64,
            meta: b.meta.clone(),
        }))
    }

    async fn delete(&self, rev: &Revision) -> StoreResult<()> {
        self.blobs().remove(rev.as_str());
        Ok(())
    }

    async fn list(&self, range: &NameRange, page_token: Option<String>) -> StoreResult<ListPage> {
        use std::ops::Bound;
        let blobs = self.blobs();
        let from = match (&range.start, &range.prefix) {
            (Some(s), p) if s.as_str() > p.as_str() => s.clone(),
            (_, p) => p.clone(),
        };
        let start = match page_token {
            Some(after) => Bound::Excluded(after),
            None => Bound::Included(from),
        };
        let listed: Vec<ListedBlob> = blobs
            .range::<String, _>((start, Bound::Unbounded))
            .take_while(|(k, _)| {
                k.starts_with(&range.prefix) && range.end.as_deref().is_none_or(|e| k.as_str() < e)
            })
            .filter(|(k, _)| range.contains(k))
            .take(PAGE)
            .map(|(k, b)| ListedBlob {
                name: k.clone(),
                created: b.created,
            })
            .collect();
        let next = (listed.len() == PAGE).then(|| listed[PAGE - 1].name.clone());
        Ok(ListPage {
            blobs: listed,
            next,
        })
    }
}
