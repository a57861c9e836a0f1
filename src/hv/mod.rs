//! The high-volume tier: one row per object, holding either the object inline or a
//! tombstone that points at its LT revision.
//!
//! Every write is a compare-and-write, because the LT blobs' safety rests on knowing what
//! the row held at the instant it changed. Two rules make the protocol work:
//!
//! * **Idempotent retry.** A write whose response was lost can be sent again: when the row
//!   already holds the target, the retry reports [`CasOutcome::Applied`].
//! * **A change writes at most once.** A write made for a change leaves a fence for that
//!   change in the row ([`Fence::Applied`]). Without it, a retry whose first attempt landed
//!   could land *again* after other writers moved the row on and back (A→B→A): it would
//!   re-point the row at a revision that the intervening writer already deleted.
//! * **Fencing.** Recovery, before deciding what to delete for a change, fences the row for
//!   that change ([`HvStore::fence`], [`Fence::Recovery`]). A compare-and-write made on behalf
//!   of a fenced change is refused from then on, however late it arrives. This closes the
//!   window that a writer-side validity check alone cannot: a writer that checked its
//!   guard, then stalled before its CAS reached the server.

pub mod bigtable;
pub mod memory;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::StoreResult;
use crate::model::{ChangeId, HvValue, ObjectPath, Revision};

pub use bigtable::BigtableHv;
pub use memory::MemoryHv;

/// How long a change's `applied` marker stays in the row. It only has to outlive the
/// retries of that change's own write, which a writer sends only while its guard is valid
/// (seconds), so a day is generous. Implemented as a max-age GC rule on its column family;
/// the cost is one small cell per guarded write per row per day.
///
/// Recovery fences ([`Fence::Recovery`]) do not expire: no TTL can be longer than every
/// stall of a writer whose write is already on its way.
pub const APPLIED_TTL: Duration = Duration::from_secs(24 * 3600);

/// What the row must hold for a compare-and-write to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// Absent or inline: no LT revision is referenced, so none can be orphaned by the write.
    NoTombstone,
    /// Exactly this tombstone.
    Tombstone(Revision),
}

impl Expected {
    pub fn from_current(current: Option<&HvValue>) -> Self {
        match current.and_then(HvValue::tombstone) {
            Some(rev) => Expected::Tombstone(rev.clone()),
            None => Expected::NoTombstone,
        }
    }

    pub fn matches(&self, current: Option<&HvValue>) -> bool {
        match self {
            Expected::NoTombstone => current.and_then(HvValue::tombstone).is_none(),
            Expected::Tombstone(rev) => current.and_then(HvValue::tombstone) == Some(rev),
        }
    }
}

/// Why a change may no longer write to a row. A change can have both; `Applied` then
/// wins, because its write did land (and may since have been superseded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// The change's own write landed; a retry must not land again. Expires after
    /// [`APPLIED_TTL`].
    Applied,
    /// Recovery took the change over (or its writer gave it up). Never expires.
    Recovery,
}

/// The outcome of a compare-and-write whose predicate did not hold, given what the row
/// holds and how the change is fenced there. One rule for every backend.
pub fn outcome_of_refused(
    write: &HvWrite,
    current: Option<&HvValue>,
    fence: Option<Fence>,
) -> CasOutcome {
    if write.is_held_by(current) {
        CasOutcome::Applied
    } else {
        match fence {
            // An earlier attempt landed and has since been superseded by another writer.
            Some(Fence::Applied) => CasOutcome::Applied,
            Some(Fence::Recovery) => CasOutcome::Fenced,
            None => CasOutcome::Conflict,
        }
    }
}

/// The value a compare-and-write leaves in the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HvWrite {
    Inline(Bytes),
    Tombstone(Revision),
    /// Removes the object's data. Fences survive it: they are not object data.
    Delete,
}

impl HvWrite {
    /// True when the row already holds what this write would leave, which is how a retried
    /// write recognises that its first attempt was applied.
    pub fn is_held_by(&self, current: Option<&HvValue>) -> bool {
        match (self, current) {
            (HvWrite::Delete, None) => true,
            (HvWrite::Inline(b), Some(HvValue::Inline(c))) => b == c,
            (HvWrite::Tombstone(r), Some(HvValue::Tombstone(c))) => r == c,
            _ => false,
        }
    }

    pub fn into_value(self) -> Option<HvValue> {
        match self {
            HvWrite::Inline(b) => Some(HvValue::Inline(b)),
            HvWrite::Tombstone(r) => Some(HvValue::Tombstone(r)),
            HvWrite::Delete => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    /// The row now holds the write's target (applied now, or by an earlier attempt).
    Applied,
    /// The row held something else; nothing was written.
    Conflict,
    /// Recovery has fenced the change this write was made for; nothing was written.
    Fenced,
}

#[async_trait]
pub trait HvStore: Send + Sync + std::fmt::Debug {
    async fn read(&self, path: &ObjectPath) -> StoreResult<Option<HvValue>>;

    /// Writes `write` if the row matches `expected` and, when `change` is given, the row is
    /// not fenced for that change (and then fences it, [`Fence::Applied`]). Otherwise writes
    /// nothing and reports [`outcome_of_refused`].
    async fn compare_and_write(
        &self,
        path: &ObjectPath,
        expected: &Expected,
        write: &HvWrite,
        change: Option<&ChangeId>,
    ) -> StoreResult<CasOutcome>;

    /// Fences `change` on the row, then returns what the row holds. Once this returns, no
    /// write for `change` can land, so the returned state is final as far as `change` goes.
    async fn fence(&self, path: &ObjectPath, change: &ChangeId) -> StoreResult<Option<HvValue>>;
}
