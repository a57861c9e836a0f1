//! A large put's upload: gated beside the change's record, or guarded once the record is in
//! place; and what a failed upload leaves to recovery.

use bytes::Bytes;

use super::put::Begun;
use super::{ChangeGuard, GuardState, GuardWatch, TieredStorage, WriteError, gate};
use crate::error::StoreError;
use crate::hv::{HvWrite, Version};
use crate::lt::ByteStream;
use crate::model::{ObjectMeta, ObjectPath, Revision};

/// What a large put uploads.
pub(super) enum Body {
    Bytes(Bytes),
    /// Taken by the first attempt: a stream's bytes are sent once.
    Stream(std::sync::Mutex<Option<ByteStream>>),
}

impl Body {
    /// A stream body, for the upload that sends it: `None` when it was a byte body or an
    /// earlier attempt took it.
    fn take_stream(&self) -> Option<ByteStream> {
        match self {
            Self::Bytes(_) => None,
            Self::Stream(stream) => stream.lock().unwrap_or_else(|e| e.into_inner()).take(),
        }
    }
}

/// The metadata a large put's blob carries beside HV's copy, for whoever sees the blob
/// without HV (operators, the audit).
fn blob_meta(write: &HvWrite) -> &ObjectMeta {
    static NONE: std::sync::LazyLock<ObjectMeta> = std::sync::LazyLock::new(ObjectMeta::default);
    match write {
        HvWrite::Tombstone(_, meta) => meta,
        _ => &NONE,
    }
}

/// `body`, stopped with an error before any chunk the guard no longer allows: an upload
/// that outlives its guard must not complete (recovery may have converged the change
/// already, and the blob would be an orphan no row names). What completes the object is
/// the stream's *end*, which may come any time after its last chunk (a client that sends
/// its parts in time and completes late), so the last chunk is held until the end and
/// checked then: the gate ([`gate`](super::gate)), opened at once, since the change is recorded. The
/// object cannot come to exist after the guard lapsed, short of the final request itself
/// being slow (the settle's hypothesis).
fn guarded(body: ByteStream, watch: GuardWatch) -> ByteStream {
    let (body, opener) = gate::gated(body);
    opener.open(watch);
    body
}

/// The chunk size a byte body is uploaded in.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// The last chunk of a byte body, which the gate holds back: small, so that the rest of
/// the body travels while the change is recorded.
const HELD_TAIL: usize = 4 * 1024;

/// `bytes` as a stream of slices of it (no copy), its last [`HELD_TAIL`] bytes a chunk of
/// their own.
fn chunks_of(bytes: Bytes) -> ByteStream {
    let body = bytes.len().saturating_sub(HELD_TAIL);
    let mut chunks: Vec<_> = (0..body)
        .step_by(UPLOAD_CHUNK)
        .map(|at| Ok(bytes.slice(at..(at + UPLOAD_CHUNK).min(body))))
        .collect();
    chunks.push(Ok(bytes.slice(body..)));
    Box::pin(futures::stream::iter(chunks))
}

impl TieredStorage {
    /// A large put's upload, started at once, beside the row's read and the change's
    /// record; its final chunk waits behind a gate (`gate`) that opens only once the
    /// record has landed with the guard valid, so the blob cannot exist before a row names
    /// it, while the rest of the upload overlaps the record. Returns the guard, the
    /// version the compare-and-write expects, and whether an attempt failed (the change
    /// then settles before removal).
    ///
    /// A byte body whose gated attempt fails is retried as an ordinary guarded upload (its
    /// record is in place by then); a stream is sent once, and its failure fails the put.
    pub(super) async fn gated_upload(
        &self,
        path: &ObjectPath,
        rev: &Revision,
        body: Body,
        write: &HvWrite,
    ) -> Result<(ChangeGuard, Option<Version>, bool), WriteError> {
        let meta = blob_meta(write);
        let (stream, size) = match &body {
            Body::Bytes(bytes) => (
                chunks_of(bytes.clone()),
                Some(crate::lt::Declared::of(bytes)),
            ),
            Body::Stream(_) => (
                body.take_stream()
                    .unwrap_or_else(|| Box::pin(futures::stream::empty())),
                None,
            ),
        };
        let (stream, opener) = gate::gated(stream);
        let timing = opener.timing();
        let upload = async {
            match size {
                Some(declared) => {
                    self.stores
                        .lt
                        .put_stream_sized(rev, stream, declared, meta)
                        .await
                }
                None => self.stores.lt.put_stream(rev, stream, meta).await,
            }
        };
        let begin = async {
            let begun = self.begin_change(path, Some(rev)).await;
            match &begun {
                Ok(Begun::Recorded(guard, _)) => {
                    opener.open(guard.watch());
                }
                Ok(Begun::Unrecorded(_)) => opener.close("nothing was recorded"),
                Err(e) => opener.close(format!("the change could not be recorded: {e}")),
            }
            begun
        };
        let (uploaded, begun) = tokio::join!(upload, begin);
        // How much of the record the upload did not hide: the final chunk's wait (0 when
        // the record landed before the body ended).
        let held = timing.held().unwrap_or_default();
        tracing::Span::current().record(
            "tiersweep.upload.final_chunk_held_us",
            u64::try_from(held.as_micros()).unwrap_or(u64::MAX),
        );
        let Begun::Recorded(guard, expected) = begun? else {
            unreachable!("a change with a new revision is always recorded")
        };
        let guard = *guard;
        let Err(err) = uploaded else {
            return Ok((guard, expected, false));
        };
        match (body, guard.state()) {
            (Body::Bytes(bytes), GuardState::Valid) => {
                tracing::debug!(change_id = %guard.id, error = %err,
                    "the gated upload failed; retrying it as a guarded upload");
                let (guard, _) = self.upload(guard, rev, Body::Bytes(bytes), write).await?;
                Ok((guard, expected, true))
            }
            (_, GuardState::Valid) => {
                let mut err = err;
                err.kind = crate::error::ErrorKind::Permanent;
                self.give_up_upload(guard, rev).await;
                Err(err.into())
            }
            (_, state) => {
                let change = guard.id.clone();
                self.give_up_upload(guard, rev).await;
                Err(WriteError::GuardLost {
                    path: path.clone(),
                    change,
                    state,
                })
            }
        }
    }

    /// Uploads a recorded change's new revision under its guard: no attempt leaves once the
    /// guard is invalid, and a stream stops at the first chunk it no longer allows. On
    /// failure the change is handed to recovery ([`give_up_upload`](Self::give_up_upload))
    /// and the guard is gone. Returns the guard, and whether an attempt failed before one
    /// succeeded (a failed attempt may still land: the change settles before removal).
    pub(super) async fn upload(
        &self,
        guard: ChangeGuard,
        rev: &Revision,
        body: Body,
        write: &HvWrite,
    ) -> Result<(ChangeGuard, bool), WriteError> {
        // Failed upload attempts, even when a retry then succeeds: a failed attempt may
        // still land later, possibly after this revision has been overwritten and deleted.
        let failed_uploads = std::sync::atomic::AtomicUsize::new(0);
        let retry = &self.config.retry;
        if let Err(err) = retry
                .run("upload", || async {
                    // Like the compare-and-write, an upload attempt leaves only while the
                    // guard is valid: a retry sent after a long freeze could land after
                    // recovery converged the change, an orphan no row names.
                    let state = guard.state();
                    if state != GuardState::Valid {
                        return Err(StoreError::new(
                            crate::error::StoreKind::Lt,
                            "upload",
                            rev.to_string(),
                            crate::error::ErrorKind::Permanent,
                            format!("the change's guard lapsed ({state:?}) before this attempt; not sent"),
                        ));
                    }
                    let meta = blob_meta(write);
                    let result = match &body {
                        Body::Bytes(bytes) => self.stores.lt.put_with_meta(rev, bytes.clone(), meta).await,
                        Body::Stream(_) => {
                            let Some(stream) = body.take_stream() else {
                                return Err(StoreError::new(
                                    crate::error::StoreKind::Lt,
                                    "upload",
                                    rev.to_string(),
                                    crate::error::ErrorKind::Permanent,
                                    "a streamed upload is sent once and its attempt failed; retry the put with a new stream",
                                ));
                            };
                            let body = guarded(stream, guard.watch());
                            // Whatever failed, this upload cannot be attempted again:
                            // the error is final for the retry loop, and the caller sees
                            // what happened.
                            self.stores.lt.put_stream(rev, body, meta).await.map(drop).map_err(
                                |mut e| {
                                    e.kind = crate::error::ErrorKind::Permanent;
                                    e
                                },
                            )
                        }
                    };
                    if result.is_err() {
                        failed_uploads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    result
                })
                .await
        {
            self.give_up_upload(guard, rev).await;
            return Err(err.into());
        }
        Ok((
            guard,
            failed_uploads.load(std::sync::atomic::Ordering::SeqCst) > 0,
        ))
    }

    /// After a failed upload, HV still references `old`, and the upload may have landed or
    /// may still land. The writer deletes what is there now and hands the change to
    /// recovery, due once `upload_settle` has passed, rather than removing it: a blob that
    /// lands after its error would otherwise be an orphan no row names (I2).
    async fn give_up_upload(&self, mut guard: ChangeGuard, rev: &Revision) {
        guard.stop();
        let retry = &self.config.retry;
        if crate::mutants::on(crate::mutants::Mutant::UploadErrorRemovesRow) {
            let _ = retry.run("delete", || self.stores.lt.delete(rev)).await;
            let owner = &guard.record.owner;
            let _ = retry
                .run("remove", || self.stores.changelog.remove(&guard.id, owner))
                .await;
            return;
        }
        let deferred = match self.due_after_upload_settle(&guard).await {
            Ok(record) => {
                retry
                    .run("defer", || self.stores.changelog.defer(&guard.id, &record))
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = deferred {
            tracing::warn!(change_id = %guard.id, error = %e,
                "could not defer the change after a failed upload; recovery converges it once it is stale");
        }
        if let Err(e) = retry.run("delete", || self.stores.lt.delete(rev)).await {
            tracing::warn!(change_id = %guard.id, revision = %rev, error = %e,
                "could not delete the failed upload; recovery deletes it");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::testing::MemoryStores;
    use crate::writer::WriterConfig;

    /// Collects the values recorded into one span field, whichever span.
    struct Field(&'static str, Arc<Mutex<Vec<u64>>>);

    impl tracing::field::Visit for Field {
        fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
            if field.name() == self.0 {
                self.1.lock().unwrap().push(value);
            }
        }
        fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
    }

    struct Capture(&'static str, Arc<Mutex<Vec<u64>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_record(
            &self,
            _: &tracing::span::Id,
            values: &tracing::span::Record<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            values.record(&mut Field(self.0, self.1.clone()));
        }
    }

    /// A large put's `write` span says how long its final chunk waited for the record: the
    /// figure that tells, in production, whether the gate hides the record.
    #[tokio::test(start_paused = true)]
    async fn a_large_puts_span_says_how_long_its_final_chunk_waited() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(
            "tiersweep.upload.final_chunk_held_us",
            seen.clone(),
        ));
        let _default = tracing::subscriber::set_default(subscriber);
        let slow = std::time::Duration::from_millis(40);
        let faults = crate::testing::faults::Faults::new([crate::testing::faults::Rule::once(
            crate::testing::faults::Op::Record,
            crate::testing::faults::Fault::Delay(slow),
        )]);
        let stores = faults.wrap(&MemoryStores::new().stores());
        let writer = TieredStorage::new(stores, WriterConfig::default()).unwrap();
        let path = ObjectPath::new("gate/span").unwrap();
        writer
            .put(&path, Bytes::from(vec![b'x'; 256 * 1024]))
            .await
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0] >= slow.as_micros() as u64, "held {} us", seen[0]);
    }
}
