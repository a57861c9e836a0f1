//! The two-tier writer that object-store services embed: `put`, `get` and `delete` over HV
//! and LT, with a [`ChangeGuard`] around every mutation that touches LT.
//!
//! The sequences are exactly those of the design (DESIGN.md §1–2):
//!
//! ```text
//! large put:            read → record ─┐
//!                       upload new ─────┴ [gate: record landed, guard valid?] final chunk
//!                                         → [guard valid?] CAS old→new → delete old → remove
//! small put over large: record →              [guard valid?] CAS old→inline → delete old → remove
//! delete of large:      record →              [guard valid?] CAS old→∅ → delete old → remove
//! small put / delete of small: CAS only (no LT blob is involved, nothing can be orphaned)
//! ```
//!
//! A large put's upload starts at once, beside the row's read and the change's record; its
//! final chunk waits behind a gate (`src/writer/gate.rs`) until the record has landed with the guard
//! valid. A GCS object exists only once its upload is complete, so the row still names the
//! blob before the blob can exist (I1), while the record's round trip overlaps the upload.
//!
//! With `background_completions`, the write returns after the CAS and "delete old → remove"
//! runs in the background ([`TieredStorage::flush`] waits for it).
//!
//! A crash anywhere leaves a changelog entry that recovery converges. A write that returns
//! `Ok` is readable; a write that returns an error may or may not have happened (as with
//! any storage write whose response is lost) and is safe to retry.

mod gate;
pub mod guard;

use std::sync::Arc;

use crate::telemetry::metrics::METRICS;
use bytes::Bytes;
use tokio::sync::Semaphore;
use tracing::Instrument;

pub use guard::{ChangeGuard, GuardState, GuardWatch};

use crate::config::{ConfigError, ProtocolConfig};
use crate::error::StoreError;
use crate::hv::{CasOutcome, HvWrite, Version};
use crate::lt::ByteStream;
use crate::model::{ChangeId, ChangeRecord, HvValue, ObjectMeta, ObjectPath, OwnerToken, Revision};
use crate::mutants::Mutant;
use crate::recovery::converge::{Ending, HvView, RowFate, converge};
use crate::retry::RetryPolicy;
use crate::stores::Stores;

/// What a large put uploads.
enum Body {
    Bytes(Bytes),
    /// Taken by the first attempt: a stream's bytes are sent once.
    Stream(std::sync::Mutex<Option<ByteStream>>),
}

/// `body`, stopped with an error before any chunk the guard no longer allows: an upload
/// that outlives its guard must not complete (recovery may have converged the change
/// already, and the blob would be an orphan no row names). What completes the object is
/// the stream's *end*, which may come any time after its last chunk (a client that sends
/// its parts in time and completes late), so the last chunk is held until the end and
/// checked then: the gate ([`gate`]), opened at once, since the change is recorded. The
/// object cannot come to exist after the guard lapsed, short of the final request itself
/// being slow (the settle's hypothesis).
fn guarded(body: ByteStream, watch: GuardWatch) -> ByteStream {
    let (body, opener) = gate::gated(body);
    opener.open(watch);
    body
}

/// What [`TieredStorage::begin_change`] did.
enum Begun {
    /// Neither the row nor the write names a blob: nothing recorded; the row's version.
    Unrecorded(Option<Version>),
    /// The change's guard, and the row's version the compare-and-write expects.
    Recorded(Box<ChangeGuard>, Option<Version>),
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

/// What became of a change's guarded compare-and-write.
enum Guarded {
    /// The last attempt's outcome, and whether an earlier attempt failed in a way that
    /// leaves it unknown whether it landed.
    Sent(CasOutcome, Uncertain),
    /// The guard was invalid before any attempt was sent: HV does not reference the upload.
    NotSent(GuardState),
    /// The guard lapsed before a retry; an earlier attempt may have landed.
    LapsedAfterSending,
}

/// How many overwrites in a row a read follows before it gives up with a transient error,
/// and how many concurrent small writes a small write overwrites before it reports a
/// conflict.
const READ_ROUNDS: usize = 4;

/// Set when an attempt of a compare-and-write failed to its caller: it may have landed, or
/// may still land until a later write of the row changes its version.
#[derive(Debug, Default)]
struct Uncertain(std::sync::atomic::AtomicBool);

impl Uncertain {
    fn note<T>(&self, result: &Result<T, StoreError>) {
        if result.is_err() {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// How a [`TieredStorage`] writes. `Default` is what production runs with.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Objects up to this many bytes are stored inline in HV; larger ones go to LT.
    pub inline_threshold: usize,
    /// The heartbeat and staleness timings, which must match recovery's.
    pub protocol: ProtocolConfig,
    /// How store calls are retried (and how long a write keeps trying).
    pub retry: RetryPolicy,
    /// 0: a write returns once its change is complete (old revision deleted, changelog row
    /// removed). N > 0: a write returns once HV commits, and up to N completions run in the
    /// background, taking the old-blob delete and the row removal off the write's latency.
    /// The cost: a process that exits before [`TieredStorage::flush`] leaves those changes
    /// to recovery (correct, just later), and an overwritten blob outlives the write a little.
    pub background_completions: usize,
    /// How long after a failed upload the upload may still land: GCS can finalize an
    /// object whose request the client saw fail (a reset after the service had every
    /// byte). The writer deletes what may have landed at once, and leaves its change to
    /// recovery for after this long, so a late landing is deleted too.
    pub upload_settle: std::time::Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            inline_threshold: 64 * 1024,
            protocol: ProtocolConfig::default(),
            retry: RetryPolicy::default(),
            background_completions: 0,
            upload_settle: crate::config::UPLOAD_SETTLE,
        }
    }
}

/// Why a write did not happen, or may not have. Every variant names the object; each says
/// whether the write can have landed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// A store call failed after its retries. The write may or may not have happened, as
    /// with any storage write whose response is lost; it is safe to retry.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another writer changed the object between this write's read and its write; this
    /// write never landed.
    #[error("object {path} was changed by another writer; re-read and retry")]
    Conflict {
        /// The object written.
        path: ObjectPath,
    },
    /// Recovery took the change over (its writer looked dead) before the write
    /// committed; the write never landed and recovery cleans up after it.
    #[error(
        "change {change} on {path} was taken over by recovery before the write committed; retry the write"
    )]
    Fenced {
        /// The object written.
        path: ObjectPath,
        /// The change recovery took over.
        change: ChangeId,
    },
    /// A retried write was refused after an earlier attempt of it failed to its caller: that
    /// attempt may have landed and been overwritten since. Nothing of it can land any more.
    #[error(
        "the write to {path} may have landed before another write replaced it; re-read and retry"
    )]
    OutcomeUnknown {
        /// The object written.
        path: ObjectPath,
    },
    /// The caller's stream failed before the writer had decided where the object goes:
    /// nothing was written.
    #[error("reading the bytes for {path} failed; nothing was written")]
    Body {
        /// The object written.
        path: ObjectPath,
        /// What the stream reported.
        #[source]
        source: std::io::Error,
    },
    /// A deferred put's deadline leaves no time to write: it must exceed the protocol's
    /// safety margin, which the writer keeps between its last upload and recovery.
    #[error(
        "a deferred put of {path} due within {within:?} leaves no time to write: it must exceed the safety margin ({margin:?})"
    )]
    DeadlineTooShort {
        /// The object written.
        path: ObjectPath,
        /// The deadline asked for.
        within: std::time::Duration,
        /// The protocol's safety margin.
        margin: std::time::Duration,
    },
    /// The change's guard was no longer valid when the write was about to commit (its
    /// heartbeat failed or was refused, or it aged past its validity, e.g. after a freeze):
    /// nothing was committed, and the change is left to recovery.
    #[error(
        "change {change} on {path} lost its guard ({state:?}) before committing; left to recovery, retry the write"
    )]
    GuardLost {
        /// The object written.
        path: ObjectPath,
        /// The change left to recovery.
        change: ChangeId,
        /// How the guard was lost.
        state: GuardState,
    },
}

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

/// A put recorded now and written later, like a multipart upload a client assembles over
/// hours: see [`TieredStorage::begin_deferred_put`]. Finish it with
/// [`finish_deferred_put`](TieredStorage::finish_deferred_put) or give it up with
/// [`abort_deferred_put`](TieredStorage::abort_deferred_put); dropped, or its process
/// gone, recovery converges it once its deadline has passed.
#[derive(Debug)]
pub struct DeferredPut {
    path: ObjectPath,
    meta: ObjectMeta,
    new: Revision,
    /// The row's version when the change began: the commit expects it, so once recovery
    /// fenced the row after the deadline, no commit of this put can land.
    expected: Option<Version>,
    /// What HV referenced when the change began.
    old: Option<Revision>,
    guard: ChangeGuard,
}

impl DeferredPut {
    /// The object being put.
    pub fn path(&self) -> &ObjectPath {
        &self.path
    }

    /// The change's id: what a service hands its client as the upload's id.
    pub fn change(&self) -> &ChangeId {
        &self.guard.id
    }

    /// When recovery may take the change over, by the changelog's clock.
    pub fn deadline(&self) -> Option<crate::model::Timestamp> {
        self.guard.record.cleanup_after
    }

    /// Whether the put may still be finished: `Expired` once less than the safety margin
    /// is left before the deadline.
    pub fn state(&self) -> GuardState {
        self.guard.state()
    }
}

/// What following HV to a value found, before it is shaped into an outcome; the metadata
/// is the row's, read with the value it describes.
enum Followed<T> {
    Inline(Bytes, ObjectMeta),
    /// What was fetched from the revision HV references.
    Blob(T, ObjectMeta),
    NotFound,
    Dangling(Revision),
}

/// The two-tier object store's write and read path: see the module documentation. Cheap
/// to clone (clones share the stores and the background completions).
#[derive(Debug, Clone)]
pub struct TieredStorage {
    stores: Stores,
    config: WriterConfig,
    /// One permit per background completion allowed at once; all of them free means none
    /// is running (what [`TieredStorage::flush`] waits for). Shared by clones.
    completions: Arc<Semaphore>,
}

impl TieredStorage {
    /// A writer over `stores`; fails if `config`'s protocol timings are inconsistent.
    pub fn new(stores: Stores, config: WriterConfig) -> Result<Self, ConfigError> {
        config.protocol.validate()?;
        let completions = Arc::new(Semaphore::new(config.background_completions));
        Ok(Self {
            stores,
            config,
            completions,
        })
    }

    /// Waits until every write completing in the background has completed (or failed and
    /// been left to recovery). Call it before a graceful shutdown; a no-op when
    /// `background_completions` is 0.
    pub async fn flush(&self) {
        let all = u32::try_from(self.config.background_completions).unwrap_or(u32::MAX);
        if all > 0 {
            // Errs only if the semaphore were closed, which it never is.
            let _ = self.completions.acquire_many(all).await;
        }
    }

    /// The stores this writer writes to.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

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

    /// Records a large put that will be written later, over as long as `within`: a
    /// multipart upload a client assembles over hours, say. The change is due for recovery
    /// only `within` from now, by the changelog's clock, and is not heartbeated meanwhile,
    /// so the writer need not stay up between the parts; recovery leaves it alone until
    /// then. The put must be finished a safety margin before that deadline (measured from
    /// before the record, on this process's clocks, as every guard is); a put finished
    /// later, or never, is converged by recovery, and the object keeps its earlier value.
    ///
    /// The object goes to LT whatever its size. Its metadata is set now and written with
    /// the bytes.
    pub async fn begin_deferred_put(
        &self,
        path: &ObjectPath,
        meta: ObjectMeta,
        within: std::time::Duration,
    ) -> Result<DeferredPut, WriteError> {
        let margin = self.config.protocol.safety_margin;
        if within <= margin {
            return Err(WriteError::DeadlineTooShort {
                path: path.clone(),
                within,
                margin,
            });
        }
        let span = tracing::info_span!(crate::telemetry::span::WRITE,
            "tiersweep.object" = %path, "tiersweep.change_id" = tracing::field::Empty);
        async {
            let retry = &self.config.retry;
            let row = retry.run("read", || self.stores.hv.read_row(path)).await?;
            let old = row.value.as_ref().and_then(HvValue::tombstone).cloned();
            let new = Revision::mint(path);
            let mut record = ChangeRecord::new(
                path.clone(),
                old.clone(),
                Some(new.clone()),
                OwnerToken::writer(),
            );
            record.traceparent = crate::telemetry::propagation::current_traceparent();
            let guard = ChangeGuard::begin_deferred(
                self.stores.changelog.clone(),
                self.stores.clock.clone(),
                record,
                self.config.protocol,
                self.config.retry,
                within,
            )
            .await?;
            tracing::Span::current().record("tiersweep.change_id", guard.id.as_str());
            Ok(DeferredPut {
                path: path.clone(),
                meta,
                new,
                expected: row.version,
                old,
                guard,
            })
        }
        .instrument(span)
        .await
    }

    /// Writes a deferred put's bytes and commits it, as [`put_stream`](Self::put_stream)
    /// does a large object. The stream may take until the put's deadline less the safety
    /// margin; the upload stops at the first chunk after that, and the put fails with the
    /// object unchanged.
    pub async fn finish_deferred_put<S>(&self, put: DeferredPut, body: S) -> Result<(), WriteError>
    where
        S: futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let DeferredPut {
            path,
            meta,
            new,
            expected,
            guard,
            ..
        } = put;
        let span = tracing::info_span!(crate::telemetry::span::WRITE,
            "tiersweep.object" = %path, "tiersweep.change_id" = guard.id.as_str());
        async {
            // Past its deadline less the margin: nothing is sent, and the change is
            // recovery's (due at the deadline).
            let state = guard.state();
            if state != GuardState::Valid {
                return Err(WriteError::GuardLost {
                    path: path.clone(),
                    change: guard.id.clone(),
                    state,
                });
            }
            let write = HvWrite::Tombstone(new.clone(), meta);
            let body = Body::Stream(std::sync::Mutex::new(Some(Box::pin(body))));
            let (guard, settle) = self.upload(guard, &new, body, &write).await?;
            self.commit(guard, &path, expected.as_ref(), &write, Some(new), settle)
                .await
        }
        .instrument(span)
        .await
    }

    /// Gives a deferred put up before any of it was written: its change is removed now
    /// rather than at its deadline. The object keeps its earlier value.
    pub async fn abort_deferred_put(&self, put: DeferredPut) -> Result<(), WriteError> {
        self.complete(put.guard, put.old).await?;
        Ok(())
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
    async fn begin_change(
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

    /// A large put's upload, started at once, beside the row's read and the change's
    /// record; its final chunk waits behind a gate (`gate`) that opens only once the
    /// record has landed with the guard valid, so the blob cannot exist before a row names
    /// it, while the rest of the upload overlaps the record. Returns the guard, the
    /// version the compare-and-write expects, and whether an attempt failed (the change
    /// then settles before removal).
    ///
    /// A byte body whose gated attempt fails is retried as an ordinary guarded upload (its
    /// record is in place by then); a stream is sent once, and its failure fails the put.
    async fn gated_upload(
        &self,
        path: &ObjectPath,
        rev: &Revision,
        body: Body,
        write: &HvWrite,
    ) -> Result<(ChangeGuard, Option<Version>, bool), WriteError> {
        let meta = match write {
            HvWrite::Tombstone(_, meta) => meta,
            _ => &ObjectMeta::default(),
        };
        let (stream, size) = match &body {
            Body::Bytes(bytes) => (
                chunks_of(bytes.clone()),
                Some(crate::lt::Declared::of(bytes)),
            ),
            Body::Stream(stream) => {
                let taken = stream.lock().unwrap_or_else(|e| e.into_inner()).take();
                (
                    taken.unwrap_or_else(|| Box::pin(futures::stream::empty())),
                    None,
                )
            }
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
    async fn upload(
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
                    // The blob carries the object's metadata too, for whoever sees it
                    // without HV (operators, the audit).
                    let meta = match write {
                        HvWrite::Tombstone(_, meta) => meta,
                        _ => &ObjectMeta::default(),
                    };
                    let result = match &body {
                        Body::Bytes(bytes) => self.stores.lt.put_with_meta(rev, bytes.clone(), meta).await,
                        Body::Stream(stream) => {
                            let taken = stream.lock().unwrap_or_else(|e| e.into_inner()).take();
                            let Some(stream) = taken else {
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

    /// The guarded compare-and-write of a recorded change whose new revision (if any) is
    /// uploaded, and what follows it: completing the change, or, when the guard lapsed or
    /// the write was refused, leaving it as safe as the outcome allows. `settle`: an upload
    /// attempt failed, so the change goes to recovery after `upload_settle` instead of
    /// being removed (a failed attempt may still land).
    async fn commit(
        &self,
        guard: ChangeGuard,
        path: &ObjectPath,
        expected: Option<&Version>,
        write: &HvWrite,
        new: Option<Revision>,
        settle: bool,
    ) -> Result<(), WriteError> {
        let retry = &self.config.retry;
        let (outcome, uncertain) = match self.guarded_cas(&guard, path, expected, write).await? {
            Guarded::Sent(outcome, uncertain) => (outcome, uncertain),
            Guarded::NotSent(state) => {
                if state == GuardState::Fenced {
                    METRICS.writers_fenced.inc();
                }
                self.abandon(&guard).await;
                return Err(WriteError::GuardLost {
                    path: path.clone(),
                    change: guard.id.clone(),
                    state,
                });
            }
            Guarded::LapsedAfterSending => {
                // A retry after a long stall. An earlier attempt may have landed, so the
                // outcome is unknown and the upload is not ours to delete: recovery fences
                // the row and decides. Dropping the guard stops the heartbeat.
                return Err(WriteError::Store(StoreError::new(
                    crate::error::StoreKind::Hv,
                    "compare_and_write",
                    path.to_string(),
                    crate::error::ErrorKind::Transient,
                    format!(
                        "change {}: the guard lapsed before a retry could be sent, and an \
                         earlier attempt may have landed; left to recovery, re-read and retry",
                        guard.id
                    ),
                )));
            }
        };
        let referenced = match outcome {
            CasOutcome::Applied => new,
            CasOutcome::Conflict => {
                // Another write or recovery's fence changed the row first. The version this
                // write expected never returns, so no attempt of it can land any more, not
                // even one still queued at the server: the refusal is the change's fence,
                // and a plain read of HV is final as far as this change goes.
                let now = retry.run("read", || self.stores.hv.read(path)).await?;
                let referenced = now.as_ref().and_then(HvValue::tombstone).cloned();
                let change = guard.id.clone();
                // The row is no longer the writer's when recovery claimed it: its fence
                // is what refused the write.
                let still_ours = if settle {
                    self.complete_deferred(guard, referenced).await?
                } else {
                    self.complete(guard, referenced).await?
                };
                return Err(if !still_ours {
                    METRICS.writers_fenced.inc();
                    WriteError::Fenced {
                        path: path.clone(),
                        change,
                    }
                } else if uncertain.is_set() {
                    WriteError::OutcomeUnknown { path: path.clone() }
                } else {
                    WriteError::Conflict { path: path.clone() }
                });
            }
        };
        if settle {
            self.complete_deferred(guard, referenced).await?;
        } else {
            self.finish(guard, referenced).await?;
        }
        Ok(())
    }

    /// Completes a committed change now, or in the background when configured to.
    async fn finish(
        &self,
        guard: ChangeGuard,
        referenced: Option<Revision>,
    ) -> Result<(), StoreError> {
        if self.config.background_completions == 0 {
            return self.complete(guard, referenced).await.map(drop);
        }
        // Waits when N completions are already running: backpressure, not an unbounded queue.
        let Ok(slot) = self.completions.clone().acquire_owned().await else {
            return self.complete(guard, referenced).await.map(drop);
        };
        let this = self.clone();
        tokio::spawn(
            async move {
                let _slot = slot;
                let change = guard.id.clone();
                if let Err(err) = this.complete(guard, referenced).await {
                    tracing::warn!(change_id = %change, error = %err,
                        "completing a committed write failed; recovery converges it once its entry is stale");
                }
            }
            .in_current_span(),
        );
        Ok(())
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
            // One stamp per expected version, for every attempt against it: a retry that
            // finds it in the row knows an earlier attempt landed. A stamp paired with two
            // expectations could be written twice, and a version that returns is one a
            // straggler can land on.
            let stamp = if round == 0 || crate::mutants::on(Mutant::StampReusedAcrossRounds) {
                first.clone()
            } else {
                Version::mint()
            };
            let outcome = retry
                .run("compare_and_write", || async {
                    let result = self
                        .stores
                        .hv
                        .compare_and_write(path, expected.as_ref(), write, &stamp)
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

    /// Completes a change whose upload needed a retry (committed, or refused by a
    /// conflict): deletes what HV does not reference now, but leaves the row to recovery
    /// until `upload_settle` has passed instead of removing it. A failed attempt of the
    /// upload may still land, and if this revision is unreferenced by then (overwritten and
    /// deleted, or never committed), nothing else would ever delete it; recovery fences,
    /// re-reads HV and deletes it unless HV still references it.
    /// Returns whether the row was still the writer's.
    async fn complete_deferred(
        &self,
        mut guard: ChangeGuard,
        referenced: Option<Revision>,
    ) -> Result<bool, StoreError> {
        guard.stop();
        let retry = &self.config.retry;
        for rev in crate::recovery::converge::unreferenced(&guard.record, referenced.as_ref()) {
            retry.run("delete", || self.stores.lt.delete(rev)).await?;
        }
        let record = self.due_after_upload_settle(&guard).await?;
        let deferral = retry
            .run("defer", || self.stores.changelog.defer(&guard.id, &record))
            .await?;
        Ok(deferral == crate::changelog::Deferral::Deferred)
    }

    /// The guard's record, due for recovery once a late upload can no longer land. Due by
    /// the changelog's own time, as every liveness stamp is: on this host's clock, a writer
    /// running ahead would hide its change from recovery for its skew, and one running
    /// behind would make it due at once — recovery would then delete before a late attempt
    /// lands, and that blob would be an orphan. No fallback to the host clock: if the
    /// changelog cannot say, the change is not deferred, and recovery takes it when it
    /// turns stale, with a settle pass of its own.
    async fn due_after_upload_settle(
        &self,
        guard: &ChangeGuard,
    ) -> Result<ChangeRecord, StoreError> {
        let now = if crate::mutants::on(crate::mutants::Mutant::WriterSettleOnHostClock) {
            self.stores.clock.now()
        } else {
            self.config
                .retry
                .run("now", || self.stores.changelog.now())
                .await?
        };
        let mut record = guard.record.clone();
        // Never earlier than a due time the row already carries (a deferred put's
        // deadline): a scanner that saw the row watches it until the time it saw, so an
        // earlier one would be taken up only then anyway; later is always safe.
        let settled = now.saturating_add(self.config.upload_settle);
        record.cleanup_after = match record.cleanup_after {
            Some(due) if !crate::mutants::on(crate::mutants::Mutant::SettleMovesDueEarlier) => {
                Some(due.max(settled))
            }
            _ => Some(settled),
        };
        record.settled = true;
        Ok(record)
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

    /// The change's compare-and-write, retried, with the guard checked before *every*
    /// attempt: an attempt is sent only while the guard is valid, so none leaves the writer
    /// after its entry could have gone stale. (Recovery's fence refuses a late attempt
    /// anyway; the check keeps a writer from committing a change it no longer owns.)
    async fn guarded_cas(
        &self,
        guard: &ChangeGuard,
        path: &ObjectPath,
        expected: Option<&Version>,
        write: &HvWrite,
    ) -> Result<Guarded, StoreError> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let stamp = Version::of_change(&guard.id);
        let sent = AtomicUsize::new(0);
        let uncertain = Uncertain::default();
        let lapsed = std::sync::Mutex::new(None);
        let result = self
            .config
            .retry
            .run("compare_and_write", || {
                let state = if sent.load(Ordering::SeqCst) > 0
                    && crate::mutants::on(Mutant::GuardCheckedOnce)
                {
                    GuardState::Valid
                } else {
                    guard.state()
                };
                if state == GuardState::Valid {
                    sent.fetch_add(1, Ordering::SeqCst);
                } else if let Ok(mut l) = lapsed.lock() {
                    *l = Some(state);
                }
                let (stamp, uncertain) = (&stamp, &uncertain);
                async move {
                    if state != GuardState::Valid {
                        return Err(StoreError::new(
                            crate::error::StoreKind::Hv,
                            "compare_and_write",
                            path.to_string(),
                            crate::error::ErrorKind::Permanent,
                            "the change's guard lapsed before this attempt; not sent",
                        ));
                    }
                    let result = self
                        .stores
                        .hv
                        .compare_and_write(path, expected, write, stamp)
                        .await;
                    uncertain.note(&result);
                    result
                }
            })
            .await;
        let lapsed = lapsed.lock().ok().and_then(|l| *l);
        match (result, lapsed) {
            (Err(_), Some(state)) if sent.load(Ordering::SeqCst) == 0 => {
                Ok(Guarded::NotSent(state))
            }
            (Err(_), Some(_)) => Ok(Guarded::LapsedAfterSending),
            (result, _) => result.map(|outcome| Guarded::Sent(outcome, uncertain)),
        }
    }

    /// Gives the change up to recovery without committing it. The entry is recovery's now,
    /// but the revision this writer uploaded is its own to delete: no write referencing it
    /// was or will be committed, and recovery may have converged before the upload landed
    /// (a paused writer), in which case only this writer knows the blob exists.
    async fn abandon(&self, guard: &ChangeGuard) {
        if let Some(new) = &guard.record.new
            && let Err(err) = self
                .config
                .retry
                .run("delete", || self.stores.lt.delete(new))
                .await
        {
            tracing::warn!(change_id = %guard.id, revision = %new, error = %err,
                "could not delete the uncommitted upload; recovery deletes it if its entry is still there");
        }
    }

    /// Converges the guard's change with what the writer knows HV references, then releases
    /// it. Returns whether the row was still the writer's to remove.
    async fn complete(
        &self,
        mut guard: ChangeGuard,
        referenced: Option<Revision>,
    ) -> Result<bool, StoreError> {
        guard.stop();
        let report = converge(
            &self.stores,
            &guard.id,
            &guard.record,
            &guard.record.owner,
            HvView::Known(referenced),
            Ending::Remove,
            &self.config.retry,
        )
        .await?;
        Ok(report.row == RowFate::Removed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::testing::MemoryStores;

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
