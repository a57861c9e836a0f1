//! The read path: HV followed to the object's value, re-checked when a blob is missing.

use bytes::Bytes;

use super::TieredStorage;
use crate::error::StoreError;
use crate::lt::ByteStream;
use crate::model::{HvValue, ObjectMeta, ObjectPath, Revision};

/// How many overwrites in a row a read follows before it gives up with a transient error,
/// and how many concurrent small writes a small write overwrites before it reports a
/// conflict.
pub(super) const READ_ROUNDS: usize = 4;

/// An object as read: its bytes and the metadata written with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The object's bytes.
    pub bytes: Bytes,
    /// The metadata written with them.
    pub meta: ObjectMeta,
}

/// An object without metadata.
impl From<Bytes> for Object {
    fn from(bytes: Bytes) -> Self {
        Self {
            bytes,
            meta: ObjectMeta::default(),
        }
    }
}

/// The outcome of a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The object, as the last committed write left it.
    Found(Object),
    /// No such object (never written, or deleted).
    NotFound,
    /// HV points at an LT revision that does not exist: reads as not found, and is reported.
    Dangling(Revision),
}

/// The outcome of a streamed read ([`TieredStorage::get_stream`]).
pub enum StreamOutcome {
    /// The object's metadata, and its bytes chunk by chunk. A chunk that fails ends the
    /// read: the blob was deleted part-way (overwritten since it was opened) or its
    /// download broke.
    Found(ByteStream, ObjectMeta),
    /// No such object (never written, or deleted).
    NotFound,
    /// HV points at an LT revision that does not exist: reads as not found, and is reported.
    Dangling(Revision),
}

impl std::fmt::Debug for StreamOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Found(_, meta) => f.debug_tuple("Found").field(&"..").field(meta).finish(),
            Self::NotFound => f.write_str("NotFound"),
            Self::Dangling(rev) => f.debug_tuple("Dangling").field(rev).finish(),
        }
    }
}

/// is the row's, read with the value it describes.
enum Followed<T> {
    Inline(Bytes, ObjectMeta),
    /// What was fetched from the revision HV references.
    Blob(T, ObjectMeta),
    NotFound,
    Dangling(Revision),
}

impl TieredStorage {
    /// Reads the object. A tombstone whose blob is missing is re-checked against HV before
    /// it is reported: a concurrent overwrite commits a new revision and then deletes the
    /// one this read was about to fetch, and the object had a value all along.
    pub async fn get(&self, path: &ObjectPath) -> Result<ReadOutcome, StoreError> {
        let retry = &self.config.retry;
        let followed = self
            .follow(path, |rev| async move {
                retry.run("get", || self.stores.lt.get(&rev)).await
            })
            .await?;
        Ok(match followed {
            Followed::Inline(bytes, meta) | Followed::Blob(bytes, meta) => {
                ReadOutcome::Found(Object { bytes, meta })
            }
            Followed::NotFound => ReadOutcome::NotFound,
            Followed::Dangling(rev) => ReadOutcome::Dangling(rev),
        })
    }

    /// Reads the object as a stream of chunks, holding about one chunk in memory whatever
    /// its size. Which revision is read is decided when the read is opened, as [`get`]
    /// decides it (following overwrites that land meanwhile); the bytes then come from that
    /// revision, so an overwrite after the open ends the stream with an error rather than
    /// mixing two objects.
    ///
    /// [`get`]: Self::get
    pub async fn get_stream(&self, path: &ObjectPath) -> Result<StreamOutcome, StoreError> {
        let retry = &self.config.retry;
        let followed = self
            .follow(path, |rev| async move {
                retry.run("get", || self.stores.lt.get_stream(&rev)).await
            })
            .await?;
        Ok(match followed {
            Followed::Blob(stream, meta) => StreamOutcome::Found(stream, meta),
            Followed::Inline(inline, meta) => {
                StreamOutcome::Found(Box::pin(futures::stream::iter([Ok(inline)])), meta)
            }
            Followed::NotFound => StreamOutcome::NotFound,
            Followed::Dangling(rev) => StreamOutcome::Dangling(rev),
        })
    }

    /// Follows HV to the object's value: inline, or what `fetch` got from the revision HV
    /// references. A revision that is
    /// missing is re-checked against HV: overwritten meanwhile, the new value is followed;
    /// still referenced, it is a dangling tombstone.
    async fn follow<T, F, Fut>(
        &self,
        path: &ObjectPath,
        fetch: F,
    ) -> Result<Followed<T>, StoreError>
    where
        F: Fn(Revision) -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, StoreError>>,
    {
        let retry = &self.config.retry;
        let mut current = retry.run("read", || self.stores.hv.read_row(path)).await?;
        // Each round follows one overwrite; more than a few in a row is a hot object, and
        // the last answer is as good as any.
        for _ in 0..READ_ROUNDS {
            let rev = match current.value {
                None => return Ok(Followed::NotFound),
                Some(HvValue::Inline(bytes)) => return Ok(Followed::Inline(bytes, current.meta)),
                Some(HvValue::Tombstone(rev)) => rev,
            };
            if let Some(found) = fetch(rev.clone()).await? {
                return Ok(Followed::Blob(found, current.meta));
            }
            current = retry.run("read", || self.stores.hv.read_row(path)).await?;
            if current.value.as_ref().and_then(HvValue::tombstone) == Some(&rev)
                || crate::mutants::on(crate::mutants::Mutant::ReadTrustsFirstMiss)
            {
                tracing::error!(object = %path, revision = %rev,
                    "dangling tombstone: HV references a missing LT blob");
                return Ok(Followed::Dangling(rev));
            }
        }
        Err(StoreError::new(
            crate::error::StoreKind::Hv,
            "read",
            path.to_string(),
            crate::error::ErrorKind::Transient,
            "the object was overwritten during every read attempt; retry",
        ))
    }
}
