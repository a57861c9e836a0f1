//! The long-term tier: immutable blobs, one per [`Revision`], in a bucket under a prefix.
//!
//! A store instance is scoped to one bucket and prefix, and names blobs only by revision,
//! so nothing that flows through tiersweep can address an object outside that scope.
//! Deleting a missing blob succeeds: revisions are never reused, so "already gone" is the
//! goal state, and recovery may delete the same revision any number of times.

pub mod gcs;
pub mod memory;
pub mod paced;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use crate::error::StoreResult;
use crate::model::{ObjectMeta, Revision};

pub use gcs::{GcsConfig, GcsLt};
pub use memory::MemoryLt;

/// What a process will do with LT blobs; `GcsLt::connect` checks at start that the
/// caller holds the permissions it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LtAccess {
    /// Check that blobs exist (operators' views).
    Read,
    /// Check and delete (cleaners).
    Clean,
    /// Upload, read and delete (writers).
    Write,
    /// List the bucket (`tiersweep audit`; deletions go through recovery).
    Audit,
}

impl LtAccess {
    /// The bucket permissions the access needs (`crate::iam::Method::permissions` of
    /// the calls it makes).
    pub fn permissions(self) -> &'static [&'static str] {
        match self {
            LtAccess::Read => &["storage.objects.get"],
            LtAccess::Audit => &["storage.objects.list"],
            LtAccess::Clean => &["storage.objects.get", "storage.objects.delete"],
            LtAccess::Write => &[
                "storage.objects.create",
                "storage.objects.get",
                "storage.objects.delete",
            ],
        }
    }

    fn who(self) -> &'static str {
        match self {
            LtAccess::Read => "reading blobs",
            LtAccess::Audit => "an audit",
            LtAccess::Clean => "a cleaner",
            LtAccess::Write => "a writer",
        }
    }
}

/// An object's bytes as a stream of chunks: what a streamed put uploads. A chunk error
/// aborts the upload (the blob is not created), which is also how the writer stops an
/// upload whose guard lapsed.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// Which blob names a listing returns: those under `prefix` and within `[start, end)`
/// (either side open when `None`), in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameRange {
    /// Names start with this.
    pub prefix: String,
    /// The first name the range holds (inclusive).
    pub start: Option<String>,
    /// The first name past the range (exclusive).
    pub end: Option<String>,
}

impl NameRange {
    /// Every name under `prefix`.
    #[cfg(any(test, feature = "testing"))]
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            ..Self::default()
        }
    }

    /// Whether `name` is in the range.
    pub fn contains(&self, name: &str) -> bool {
        name.starts_with(&self.prefix)
            && self.start.as_deref().is_none_or(|s| name >= s)
            && self.end.as_deref().is_none_or(|e| name < e)
    }
}

/// One blob as a listing names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedBlob {
    /// The blob's name (a revision, or anything else in the bucket).
    pub name: String,
    /// When the store created it, on the store's clock (GCS: `timeCreated`). How a
    /// reconciler tells an old orphan from an upload that has just landed.
    pub created: crate::model::Timestamp,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// The blobs, in name order.
    pub blobs: Vec<ListedBlob>,
    /// Pass back to continue; `None` on the last page.
    pub next: Option<String>,
}

impl ListPage {
    /// The page's blob names, in order.
    #[cfg(any(test, feature = "testing"))]
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.blobs.iter().map(|b| b.name.as_str())
    }
}

/// What a blob's metadata says ([`LtStore::stat`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its size in bytes.
    pub size: u64,
    /// The metadata the blob was written with, exactly: a blob written without a content
    /// type has none here, whatever GCS defaulted it to.
    pub meta: ObjectMeta,
}

/// The blob metadata key that carries [`ObjectMeta::expires_at`] (GCS custom metadata is
/// strings; the key is under the prefix user metadata may not use).
pub const EXPIRES_AT_KEY: &str = "tiersweep-expires-at";

/// The blob metadata key that carries [`ObjectMeta::content_type`]. GCS's own
/// `contentType` is set too, so the blob is served with it, but it is not read back:
/// GCS gives an object uploaded without one `application/octet-stream`, and
/// fake-gcs-server takes a multipart upload's content type from its media part, which
/// the official client sends without one, so the field says what the store did rather
/// than what the writer wrote.
pub const CONTENT_TYPE_KEY: &str = "tiersweep-content-type";

/// What a sized upload declares about its body. Both are checked before the body's end
/// is handed to the store, so a body that does not match them creates nothing; GCS checks
/// the CRC32C again on its side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declared {
    /// The body's length in bytes.
    pub size: u64,
    /// The body's CRC32C (Castagnoli), as GCS computes it.
    pub crc32c: u32,
}

impl Declared {
    /// What `bytes` would declare.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            size: bytes.len() as u64,
            crc32c: crc32c::crc32c(bytes),
        }
    }
}

/// `body`, ending with an error instead of its end (or instead of the chunk that overruns)
/// when it is not what `declared` says.
pub(crate) fn exactly(body: ByteStream, declared: Declared) -> ByteStream {
    use futures::StreamExt as _;
    let checked = futures::stream::unfold(Some((body, 0u64, 0u32)), move |state| async move {
        let (mut body, seen, crc) = state?;
        let mismatch = |what: String| {
            std::io::Error::other(format!(
                "the body is not what was declared ({} bytes, CRC32C {:#010x}): {what}",
                declared.size, declared.crc32c
            ))
        };
        match body.next().await {
            Some(Ok(chunk)) => {
                let seen = seen + chunk.len() as u64;
                if seen > declared.size {
                    Some((Err(mismatch(format!("{seen} bytes or more"))), None))
                } else {
                    let crc = crc32c::crc32c_append(crc, &chunk);
                    Some((Ok(chunk), Some((body, seen, crc))))
                }
            }
            Some(Err(e)) => Some((Err(e), None)),
            None if seen != declared.size => Some((Err(mismatch(format!("{seen} bytes"))), None)),
            None if crc != declared.crc32c => {
                Some((Err(mismatch(format!("CRC32C {crc:#010x}"))), None))
            }
            None => None,
        }
    });
    Box::pin(checked)
}

/// The large-object tier: blobs named by revision, created once, never overwritten. GCS and
/// memory implement it; one conformance suite runs on both.
#[async_trait]
pub trait LtStore: Send + Sync + std::fmt::Debug {
    /// Creates the blob without metadata; see [`LtStore::put_with_meta`].
    #[cfg(any(test, feature = "testing"))]
    async fn put(&self, rev: &Revision, bytes: Bytes) -> StoreResult<()> {
        self.put_with_meta(rev, bytes, &ObjectMeta::default()).await
    }
    /// Creates the blob, with `meta` on it (GCS: its content type and custom metadata).
    /// Create-only: when it exists already (an earlier attempt of the same upload landed;
    /// revision names are never reused) the put succeeds and leaves it.
    async fn put_with_meta(
        &self,
        rev: &Revision,
        bytes: Bytes,
        meta: &ObjectMeta,
    ) -> StoreResult<()>;
    /// Creates the blob from a stream, holding at most one upload buffer in memory
    /// whatever the size (GCS: a resumable upload once the bytes pass its threshold). The
    /// blob exists only once the stream has ended and the upload completed: a stream that
    /// fails, or a failed upload, creates nothing that a read sees (though, as with
    /// [`LtStore::put`], GCS may still finalize an upload whose response was lost). Not
    /// retried: the stream's bytes are consumed. Sent create-only like `put`, though
    /// nothing relies on it: a stream is sent once, under a revision minted for it.
    /// Returns the size.
    async fn put_stream(
        &self,
        rev: &Revision,
        body: ByteStream,
        meta: &ObjectMeta,
    ) -> StoreResult<u64>;
    /// [`LtStore::put_stream`] for a body whose size and checksum are known, sent as it
    /// arrives: below GCS's resumable threshold one request streams it (the writer's gated
    /// upload holds the final chunk back while the first ones travel), where `put_stream`
    /// of an unknown size opens a resumable upload first. A body that is not what was
    /// declared fails the upload and creates nothing.
    async fn put_stream_sized(
        &self,
        rev: &Revision,
        body: ByteStream,
        declared: Declared,
        meta: &ObjectMeta,
    ) -> StoreResult<u64> {
        self.put_stream(rev, exactly(body, declared), meta).await
    }
    /// The blob's bytes; `None` when it does not exist.
    async fn get(&self, rev: &Revision) -> StoreResult<Option<Bytes>>;
    /// Opens the blob for reading as a stream of chunks, holding about one chunk in memory
    /// whatever its size; `None` when it does not exist. The read is of the blob as it was
    /// when opened (GCS pins the generation): a delete that lands meanwhile may end the
    /// stream with an error, never with another object's bytes.
    async fn get_stream(&self, rev: &Revision) -> StoreResult<Option<ByteStream>>;
    /// The blob's size and metadata; `None` when it does not exist.
    async fn stat(&self, rev: &Revision) -> StoreResult<Option<BlobInfo>>;
    /// Whether the blob exists (a metadata read).
    async fn exists(&self, rev: &Revision) -> StoreResult<bool> {
        Ok(self.stat(rev).await?.is_some())
    }
    /// Deletes the blob; a missing blob is success.
    async fn delete(&self, rev: &Revision) -> StoreResult<()>;
    /// Lists the blobs in `range`, page by page, in name order: for `tiersweep audit`,
    /// invariant checks and operators' tools. Only the audit role is granted it.
    async fn list(&self, range: &NameRange, page_token: Option<String>) -> StoreResult<ListPage>;
}
