//! The high-volume tier: one row per object, holding either the object inline or a
//! tombstone that points at its LT revision, and a **version**.
//!
//! Every write is a compare-and-write on the version: it applies only if the row's version
//! is still the one its writer read, and it leaves a new one. Versions are unique and never
//! written twice to a row (a change's writes leave its change id, other writes and fences a
//! fresh UUID, and a new version is only ever sent with one expected version; see [`Version`] and
//! [`HvStore::compare_and_write`]), so each version value holds a row for one contiguous
//! interval and then never again. Three rules follow, none of which rests on a TTL, a deadline or
//! a clock:
//!
//! * **Idempotent retry.** A write whose response was lost is sent again with the same
//!   new version; when the row's version *is* that one, the first attempt landed and is still
//!   current, and the retry reports [`CasOutcome::Applied`].
//! * **A write lands at most once, and never after a later one.** A straggling attempt
//!   (its client gave up, the server did not) expects a version that stopped being current
//!   the moment anything else wrote the row, including its own retry; it is refused
//!   however late it arrives. (The design this replaces kept an `applied` marker per change,
//!   with a 24-hour TTL, and was unsafe against an attempt held up for longer than that.)
//! * **Fencing.** Recovery, before deciding what to delete for a change, sets the row to
//!   a fresh version ([`HvStore::fence`]). Every write whose writer read the row before —
//!   in particular every write of the change being recovered, whose writer read the row
//!   before recording it — is refused from then on. A fence costs one cell that the row
//!   has anyway: rows stay bounded (data plus one version), however many changes they saw.
//!
//! The cost of this strength: a fence also refuses a concurrent healthy writer of the same
//! object (it re-reads and retries, as after any conflict), and a deleted object leaves its
//! row behind, holding only its version (a deleted row that forgot its version would look
//! never written, and a straggler that expected "never written" could land on it).

pub mod bigtable;
pub mod memory;
mod paced;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::StoreResult;
use crate::model::{ChangeId, HvValue, ObjectMeta, ObjectPath, Revision};

pub use bigtable::BigtableHv;
pub use memory::MemoryHv;
pub use paced::PacedHv;

/// The version a write leaves in a row. Opaque; compared for equality only. (The
/// changelog's liveness *stamps* are times; an HV version is a token.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(String);

impl Version {
    /// The version a change's write leaves: its change id, so that a retry of the write can
    /// recognise its own earlier landing. Change ids contain a `/`; minted versions do not.
    pub fn of_change(change: &ChangeId) -> Self {
        Self(change.as_str().to_owned())
    }

    /// A fresh version, for a write that carries no change and for fences.
    pub fn mint() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// A version as stored.
    pub fn from_stored(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The version as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A row as read: the object's value, its metadata and the version a compare-and-write
/// must name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HvRow {
    /// The object's value: inline bytes or a tombstone; `None` when it has none.
    pub value: Option<HvValue>,
    /// The metadata written with the value; empty when there is no value.
    pub meta: ObjectMeta,
    /// `None`: the row was never written (or predates versions).
    pub version: Option<Version>,
}

/// The value a compare-and-write leaves in the row. The metadata is part of the write, so
/// it is replaced (or removed) with the data, never on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HvWrite {
    /// Small object: its bytes and metadata, inline.
    Inline(Bytes, ObjectMeta),
    /// Large object: the LT revision holding its bytes, and its metadata.
    Tombstone(crate::model::Revision, ObjectMeta),
    /// Removes the object's data and metadata. The row keeps its (new) version.
    Delete,
}

impl HvWrite {
    /// An inline write without metadata.
    #[cfg(any(test, feature = "testing"))]
    pub fn inline(bytes: impl Into<Bytes>) -> Self {
        HvWrite::Inline(bytes.into(), ObjectMeta::default())
    }

    /// A tombstone write without metadata.
    #[cfg(any(test, feature = "testing"))]
    pub fn tombstone(rev: crate::model::Revision) -> Self {
        HvWrite::Tombstone(rev, ObjectMeta::default())
    }

    /// The value and metadata the row holds once the write applied.
    pub fn into_value(self) -> (Option<HvValue>, ObjectMeta) {
        match self {
            HvWrite::Inline(b, m) => (Some(HvValue::Inline(b)), m),
            HvWrite::Tombstone(r, m) => (Some(HvValue::Tombstone(r)), m),
            HvWrite::Delete => (None, ObjectMeta::default()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// How a compare-and-write ended.
pub enum CasOutcome {
    /// The row now holds the write (applied now, or by an earlier attempt with the same
    /// new version, which is still current).
    Applied,
    /// The row's version is not the expected one, nor this write's new version: nothing was
    /// written. Another write, or a fence, came first.
    Conflict,
}

/// The outcome of a compare-and-write whose predicate did not hold, given the row's
/// version now. One rule for every backend.
pub fn outcome_of_refused(new_version: &Version, current: Option<&Version>) -> CasOutcome {
    if current == Some(new_version) {
        CasOutcome::Applied
    } else {
        CasOutcome::Conflict
    }
}

/// One page of [`HvStore::scan_tombstones`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TombstonePage {
    /// Objects whose row holds a tombstone, in key order, with the revision it names.
    pub tombstones: Vec<(ObjectPath, Revision)>,
    /// Pass back as `start_after` to continue; `None` once the range is done.
    pub resume_after: Option<ObjectPath>,
}

/// The hot tier: object rows written by compare-and-write on their version. Bigtable and
/// memory implement it; one conformance suite runs on both.
#[async_trait]
pub trait HvStore: Send + Sync + std::fmt::Debug {
    /// The row's value and version, in one read.
    async fn read_row(&self, path: &ObjectPath) -> StoreResult<HvRow>;

    /// The row's value alone.
    async fn read(&self, path: &ObjectPath) -> StoreResult<Option<HvValue>> {
        Ok(self.read_row(path).await?.value)
    }

    /// The revision each row's tombstone names (`None`: no row, an inline value or no
    /// value), in the order asked: how `tiersweep audit` joins a page of listed blobs with
    /// HV. Bigtable reads all rows in one ReadRows of the tombstone cell alone (inline
    /// values are not transferred); the default reads them one by one. A row that does
    /// not decode is an error, never a `None`: a reconciler must not take an unreadable
    /// row for one that references nothing.
    async fn tombstones(&self, paths: &[ObjectPath]) -> StoreResult<Vec<Option<Revision>>> {
        let mut out = Vec::with_capacity(paths.len());
        for path in paths {
            out.push(self.read(path).await?.and_then(|v| v.tombstone().cloned()));
        }
        Ok(out)
    }

    /// Writes `write`, leaving `new_version`, if the row's version is `expected` (`None`: the row
    /// was never written). Otherwise writes nothing and reports [`outcome_of_refused`].
    ///
    /// A caller pairs each new version with one expectation only (retries of the same write
    /// reuse both). That is what makes every version current for one interval at most: a
    /// new version sent with two expectations could land twice, and the version its first landing
    /// replaced would then be current again for anything that expected it.
    async fn compare_and_write(
        &self,
        path: &ObjectPath,
        expected: Option<&Version>,
        write: &HvWrite,
        new_version: &Version,
    ) -> StoreResult<CasOutcome>;

    /// Up to `limit` rows of `range` (object paths, compared like blob names) after
    /// `start_after` that hold a tombstone, in key order: how `tiersweep audit --dangling`
    /// finds tombstones whose blob is missing. Bigtable reads the tombstone cell alone, and
    /// rows without one are skipped by the server.
    async fn scan_tombstones(
        &self,
        range: &crate::lt::NameRange,
        start_after: Option<&ObjectPath>,
        limit: usize,
    ) -> StoreResult<TombstonePage>;

    /// Stamps the row with a fresh version, unconditionally, and answers in the same call
    /// whether the row's tombstone names `rev` at that moment (an absent row and an inline
    /// value do not). Once this returns, no write whose writer read the row before the
    /// fence can land, so as far as those writes go, the answer stays true only until a
    /// later writer moves the row on, and a `false` is final: recovery's one fenced
    /// decision (one CheckAndMutateRow on Bigtable).
    async fn fence(&self, path: &ObjectPath, rev: &Revision) -> StoreResult<bool>;
}
