//! The put and delete entry points, the change they begin, and the plain write that needs
//! none.

use bytes::Bytes;
use tracing::Instrument;

use super::commit::Uncertain;
use super::read::READ_ROUNDS;
use super::upload::Body;
use super::{ChangeGuard, TieredStorage, WriteError};
use crate::hv::{CasOutcome, HvWrite, Version};
use crate::lt::ByteStream;
use crate::model::{ChangeRecord, HvValue, ObjectMeta, ObjectPath, OwnerToken, Revision};
use crate::mutants::Mutant;

/// What [`TieredStorage::begin_change`] did.
pub(super) enum Begun {
    /// Neither the row nor the write names a blob: nothing recorded; the row's version.
    Unrecorded(Option<Version>),
    /// The change's guard, and the row's version the compare-and-write expects.
    Recorded(Box<ChangeGuard>, Option<Version>),
}

impl TieredStorage {
    /// Puts the object without metadata; see [`put_with_meta`](Self::put_with_meta).
    pub async fn put(&self, path: &ObjectPath, bytes: Bytes) -> Result<(), WriteError> {
        self.put_with_meta(path, bytes, ObjectMeta::default()).await
    }

    /// Puts the object with its metadata, which replaces whatever metadata the object had
    /// and comes back on every read of this value.
    pub async fn put_with_meta(
        &self,
        path: &ObjectPath,
        bytes: Bytes,
        meta: ObjectMeta,
    ) -> Result<(), WriteError> {
        if bytes.len() > self.config.inline_threshold {
            let new = Revision::mint(path);
            let body = Body::Bytes(bytes);
            let write = HvWrite::Tombstone(new.clone(), meta);
            self.mutate(path, write, Some((new, body))).await
        } else {
            self.mutate(path, HvWrite::Inline(bytes, meta), None).await
        }
    }

    /// Puts the object from a stream, without metadata; see
    /// [`put_stream_with_meta`](Self::put_stream_with_meta).
    pub async fn put_stream<S>(&self, path: &ObjectPath, body: S) -> Result<(), WriteError>
    where
        S: futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        self.put_stream_with_meta(path, body, ObjectMeta::default())
            .await
    }

    /// Puts the object from a stream of chunks, holding at most `inline_threshold` bytes
    /// (plus one chunk) and the LT store's upload buffer in memory, whatever its size. The
    /// writer reads up to `inline_threshold` bytes to decide: a stream that ends by then
    /// is stored inline, like a small [`put`](Self::put); a longer one is uploaded to LT
    /// as it arrives, under the change's guard, which keeps heartbeating through the
    /// upload and stops it if it lapses.
    ///
    /// A failed upload is not retried (its bytes were consumed): the put fails and is
    /// safe to retry with a new stream, and its change is left to recovery as for any
    /// failed upload.
    pub async fn put_stream_with_meta<S>(
        &self,
        path: &ObjectPath,
        body: S,
        meta: ObjectMeta,
    ) -> Result<(), WriteError>
    where
        S: futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        use futures::StreamExt as _;
        let mut body: ByteStream = Box::pin(body);
        let mut head = Vec::new();
        let mut len = 0;
        while len <= self.config.inline_threshold {
            match body.next().await {
                Some(Ok(chunk)) => {
                    len += chunk.len();
                    head.push(chunk);
                }
                Some(Err(source)) => {
                    return Err(WriteError::Body {
                        path: path.clone(),
                        source,
                    });
                }
                None => {
                    let mut all = bytes::BytesMut::with_capacity(len);
                    head.iter().for_each(|c| all.extend_from_slice(c));
                    let write = HvWrite::Inline(all.freeze(), meta);
                    return self.mutate(path, write, None).await;
                }
            }
        }
        let rest: ByteStream =
            Box::pin(futures::stream::iter(head.into_iter().map(Ok)).chain(body));
        let new = Revision::mint(path);
        let body = Body::Stream(std::sync::Mutex::new(Some(rest)));
        let write = HvWrite::Tombstone(new.clone(), meta);
        self.mutate(path, write, Some((new, body))).await
    }

    /// Deletes the object (and, for a large one, its LT blob, under a change so that a
    /// crash leaves nothing behind). Deleting a missing object succeeds.
    pub async fn delete(&self, path: &ObjectPath) -> Result<(), WriteError> {
        self.mutate(path, HvWrite::Delete, None).await
    }

    async fn mutate(
        &self,
        path: &ObjectPath,
        write: HvWrite,
        upload: Option<(Revision, Body)>,
    ) -> Result<(), WriteError> {
        let span = tracing::info_span!(crate::telemetry::span::WRITE,
            "tiersweep.object" = %path, "tiersweep.change_id" = tracing::field::Empty,
            "tiersweep.upload.final_chunk_held_us" = tracing::field::Empty);
        self.mutate_in(path, write, upload).instrument(span).await
    }

    async fn mutate_in(
        &self,
        path: &ObjectPath,
        write: HvWrite,
        upload: Option<(Revision, Body)>,
    ) -> Result<(), WriteError> {
        let Some((rev, body)) = upload else {
            let (guard, expected) = match self.begin_change(path, None).await? {
                Begun::Recorded(guard, expected) => (*guard, expected),
                Begun::Unrecorded(version) => {
                    return self.plain_write(path, version, &write).await;
                }
            };
            return self
                .commit(guard, path, expected.as_ref(), &write, None, false)
                .await;
        };
        let (guard, expected, settle) = self.gated_upload(path, &rev, body, &write).await?;
        self.commit(guard, path, expected.as_ref(), &write, Some(rev), settle)
            .await
    }

    /// Reads the object's row and records the change from the revision it names to `new`,
    /// returning the guard and the version the compare-and-write expects; or, when neither
    /// names a blob, the version only (nothing can be orphaned, nothing is recorded).
    pub(super) async fn begin_change(
        &self,
        path: &ObjectPath,
        new: Option<&Revision>,
    ) -> Result<Begun, WriteError> {
        let row = self
            .config
            .retry
            .run("read", || self.stores.hv.read_row(path))
            .await?;
        let old = row.value.as_ref().and_then(HvValue::tombstone).cloned();
        if old.is_none() && new.is_none() {
            return Ok(Begun::Unrecorded(row.version));
        }
        // The writer read the row before recording the change, so recovery's fence, which
        // comes after the record, always refuses this expectation.
        let mut record = ChangeRecord::new(path.clone(), old, new.cloned(), OwnerToken::writer());
        // Recovery links its trace back to this request if the change is abandoned.
        record.traceparent = crate::telemetry::propagation::current_traceparent();
        let guard = ChangeGuard::begin(
            self.stores.changelog.clone(),
            self.stores.clock.clone(),
            record,
            self.config.protocol,
            self.config.retry,
        )
        .await?;
        tracing::Span::current().record("tiersweep.change_id", guard.id.as_str());
        Ok(Begun::Recorded(Box::new(guard), row.version))
    }

    /// A write with nothing in LT before or after: a compare-and-write on the row's version
    /// cannot orphan a blob, so it needs no change. A concurrent small write is overwritten
    /// (last writer wins, re-read and retried); a concurrent large one is a conflict.
    async fn plain_write(
        &self,
        path: &ObjectPath,
        mut expected: Option<Version>,
        write: &HvWrite,
    ) -> Result<(), WriteError> {
        let retry = &self.config.retry;
        let uncertain = Uncertain::default();
        let first = Version::mint();
        for round in 0..READ_ROUNDS {
            // One new version per expected version, for every attempt against it: a retry
            // that finds it in the row knows an earlier attempt landed. One paired with two
            // expectations could be written twice, and a version that returns is one a
            // straggler can land on.
            let new_version = if round == 0 || crate::mutants::on(Mutant::VersionReusedAcrossRounds) {
                first.clone()
            } else {
                Version::mint()
            };
            let outcome = retry
                .run("compare_and_write", || async {
                    let result = self
                        .stores
                        .hv
                        .compare_and_write(path, expected.as_ref(), write, &new_version)
                        .await;
                    uncertain.note(&result);
                    result
                })
                .await?;
            if outcome == CasOutcome::Applied {
                return Ok(());
            }
            let now = retry.run("read", || self.stores.hv.read_row(path)).await?;
            if now.value.as_ref().and_then(HvValue::tombstone).is_some() {
                break;
            }
            expected = now.version;
        }
        Err(if uncertain.is_set() {
            WriteError::OutcomeUnknown { path: path.clone() }
        } else {
            WriteError::Conflict { path: path.clone() }
        })
    }
}
