//! The write-ahead changelog: one row per in-flight change, whose timestamp is its
//! liveness signal.
//!
//! * A writer [`record`](Changelog::record)s a change before any LT blob it names can exist
//!   (a large put's upload may already be under way, its final chunk held until the
//!   record lands) and [`heartbeat`](Changelog::heartbeat)s it while it works; the heartbeat succeeds only
//!   while the writer still owns the row.
//! * Recovery [`scan_stale`](Changelog::scan_stale)s for rows stamped before a cutoff and
//!   [`claim`](Changelog::claim)s each with a compare-and-set whose predicate is "still
//!   stale". The claim moves ownership to the claimer and stamps the row into the future
//!   (the claim lease), so the row is not handed out again while its job is in flight.
//! * Whoever converges the change [`remove`](Changelog::remove)s the row, if it still owns it.
//!
//! The row key is the [`ChangeId`], prefixed by a hash-derived shard so that writes spread
//! across the key space and scanners can split it.

pub mod batched;
pub mod bigtable;
mod layer;
mod paced;
pub mod memory;
#[cfg(any(test, feature = "testing"))]
pub mod noop;

use async_trait::async_trait;

use crate::error::{ErrorKind, StoreError, StoreKind, StoreResult};
use std::ops::Bound;

use crate::model::{ChangeId, ChangeRecord, OwnerToken, Shard, ShardSet, Timestamp, minted_key};

pub use batched::Batched;
pub use bigtable::BigtableChangelog;
pub use layer::ChangelogLayer;
pub use memory::MemoryChangelog;
pub use paced::PacedChangelog;
#[cfg(any(test, feature = "testing"))]
pub use noop::NoopChangelog;

/// A decoded changelog row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangelogEntry {
    /// The row key.
    pub id: ChangeId,
    /// The decoded record.
    pub record: ChangeRecord,
    /// The row's liveness timestamp: the last record, heartbeat or claim.
    pub stamp: Timestamp,
}

/// A row as a scan found it. Malformed rows are reported, never dropped or deleted: an
/// operator has to see them, and they may name blobs that still need cleaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScannedRow {
    /// A row that decodes.
    Entry(ChangelogEntry),
    /// A row that does not decode, left in place.
    Malformed {
        /// Its row key.
        key: String,
        /// Why it does not decode.
        reason: String,
    },
    /// A row that is not claimable now, reported only when the scan asks
    /// ([`ScanRequest::report_waiting`]): live (its writer heartbeats it), claimed (its
    /// lease runs), or deferred (`due_at` is later than the scan's `now`; then it is
    /// given). How a scanner learns which rows behind its lower key bound it must come
    /// back to.
    Waiting {
        /// The row key.
        id: ChangeId,
        /// Its liveness stamp.
        stamp: Timestamp,
        /// When the change asked to be left alone until, if it did.
        due_at: Option<Timestamp>,
    },
}

/// Ids minted in `[from, to)` (by key: [`minted_key`]), shard by shard; `None` leaves that
/// side open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MintedWindow {
    /// The first minting time read (`None`: from each shard's first row).
    pub from: Option<Timestamp>,
    /// The minting time read up to, exclusive (`None`: to each shard's end).
    pub to: Option<Timestamp>,
    /// Shards read from their first row whatever `from` says: those a scanner has not read
    /// whole since it gained them, whose older ids it has never seen.
    pub whole: ShardSet,
    /// Also the ids minted in `[start, end)`, after `to`: ids minted in the future, by a
    /// writer whose clock runs ahead (see `RecoveryConfig::max_writer_skew`).
    pub ahead: Option<(Timestamp, Timestamp)>,
}

/// One contiguous key range a scan reads: how a request's shards, minted window and cursor
/// become Bigtable row ranges (and the twin's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyRange {
    pub start: Bound<String>,
    /// Exclusive; `None`: to the end of the table.
    pub end: Option<String>,
}

#[derive(Debug, Clone)]
/// What one [`Changelog::scan_stale`] call reads.
pub struct ScanRequest {
    /// The shards read.
    pub shards: ShardSet,
    /// Rows stamped strictly before this are stale.
    pub cutoff: Timestamp,
    /// Only rows stamped at or after this (`None`: however long ago): how a scanner reads
    /// just the rows that turned stale since its last look, ahead of an outage's backlog.
    pub stamped_from: Option<Timestamp>,
    /// Rows whose record says `due_at` later than this are skipped.
    pub now: Timestamp,
    /// Resume strictly after this row key (from [`ScanPage::resume_after`]).
    pub start_after: Option<String>,
    /// At most this many rows are read; the scan never buffers more.
    pub limit: usize,
    /// Only ids minted in this window, read as one key range per shard; `None`: every row
    /// of the shards. Keys sort by minting time within a shard, so a scanner that knows
    /// which rows it has already seen reads only the part of the key space they are not in,
    /// however many removed rows the rest holds (Bigtable keeps them until compaction).
    pub minted: Option<MintedWindow>,
    /// Also report the rows read that are not claimable now, as [`ScannedRow::Waiting`]
    /// (ignored with `stamped_from`). They count towards `limit`.
    pub report_waiting: bool,
}

impl ScanRequest {
    /// The key ranges this request reads, in key order, after `start_after`: one per
    /// contiguous run of shards, or one per shard with a minted window.
    pub(crate) fn key_ranges(&self) -> Vec<KeyRange> {
        let windows: Vec<(String, Option<String>)> = match self.minted {
            None => self
                .shards
                .runs()
                .map(|r| (r.start_key(), r.end_key()))
                .collect(),
            Some(_) => self.shards.iter().flat_map(|s| self.windows(s)).collect(),
        };
        windows
            .into_iter()
            .filter_map(|(start, end)| self.after_cursor(start, end))
            .collect()
    }

    /// The keys of `shard` this request reads, `start_after` aside, in key order: one
    /// range, or two with an `ahead` window that does not touch the first.
    pub(crate) fn windows(&self, shard: Shard) -> Vec<(String, Option<String>)> {
        let Some(w) = self.minted else {
            return vec![(shard.start_key(), shard.end_key())];
        };
        let start = match w.from {
            Some(t) if !w.whole.contains(shard) => minted_key(shard, t),
            _ => shard.start_key(),
        };
        let (to, ahead) = match (w.to, w.ahead) {
            // Overlapping or touching: one range to the later end.
            (Some(to), Some((from, end))) if from <= to => (Some(to.max(end)), None),
            (to, ahead) => (to, ahead),
        };
        let end = match to {
            Some(t) => Some(minted_key(shard, t)),
            None => shard.end_key(),
        };
        let mut out = vec![(start, end)];
        if let (Some(_), Some((from, until))) = (to, ahead) {
            out.push((minted_key(shard, from), Some(minted_key(shard, until))));
        }
        out
    }

    /// `[start, end)` less the keys up to `start_after`; `None` when nothing is left.
    pub(crate) fn after_cursor(&self, start: String, end: Option<String>) -> Option<KeyRange> {
        if end.as_ref().is_some_and(|e| *e <= start) {
            return None;
        }
        match &self.start_after {
            Some(after) if end.as_ref().is_some_and(|e| e <= after) => None,
            Some(after) if *after >= start => Some(KeyRange {
                start: Bound::Excluded(after.clone()),
                end,
            }),
            _ => Some(KeyRange {
                start: Bound::Included(start),
                end,
            }),
        }
    }
}

#[derive(Debug, Clone, Default)]
/// One page of a stale scan.
pub struct ScanPage {
    /// The rows read, in key order.
    pub rows: Vec<ScannedRow>,
    /// The last key this page read when it stopped at the limit; `None` when the range is done.
    pub resume_after: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// How a heartbeat ended.
pub enum Heartbeat {
    /// The row is the caller's, stamped now.
    Refreshed,
    /// The row is gone or owned by someone else: the writer has been fenced out.
    Refused,
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// How a claim ended.
pub enum Claim {
    /// The row is the claimer's now, leased; the entry as claimed.
    Won(ChangelogEntry),
    /// Someone refreshed or claimed the row since the scan saw it, or it is gone.
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// How a claim extension ended.
pub enum Extension {
    /// The claim's lease runs to the asked time.
    Extended,
    /// The row is gone, owned by someone else, or already stamped at or after the asked
    /// time: it was left as it is.
    Refused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// How a deferral ended.
pub enum Deferral {
    /// The row waits until the record's `due_at`.
    Deferred,
    /// The row is gone or owned by someone else; it was left as it is.
    NotOwned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// How a removal ended.
pub enum Removal {
    /// The row is gone.
    Removed,
    /// The row is gone or owned by someone else; it was left as it is.
    NotOwned,
}

#[async_trait]
/// The write-ahead changelog (see the module documentation). Bigtable and memory implement
/// it; one conformance suite runs on both.
pub trait Changelog: Send + Sync + std::fmt::Debug {
    /// Writes the row for a new change, stamped now in the changelog's own time
    /// ([`Changelog::now`]). Returns the caller's estimate of the stamp; the stamp itself is
    /// what [`Changelog::get`] reads back (Bigtable's server assigns it).
    ///
    /// Create-or-confirm: a row that already exists is never written over. If its owner is
    /// `record.owner`, an earlier attempt of this call landed (its response was lost) and
    /// this one succeeds without writing; any other owner means recovery claimed the change
    /// while this attempt was on its way — the caller froze past the staleness threshold
    /// between attempts — and the call fails, permanently, leaving the change to recovery.
    /// A blind write would take the row back from its claim and erase recovery's deferral,
    /// hiding the change from the scanner that watched it.
    async fn record(&self, id: &ChangeId, record: &ChangeRecord) -> StoreResult<Timestamp>;

    /// The changelog's own time: the clock its stamps are in. Staleness is judged against
    /// this, never against the judge's own clock, so that neither a writer's nor a
    /// scanner's clock skew moves a row's liveness: Bigtable stamps with its server's
    /// time, and this reads the server's time.
    async fn now(&self) -> StoreResult<Timestamp>;

    /// Re-stamps the row now, if `owner` still owns it.
    async fn heartbeat(&self, id: &ChangeId, owner: &OwnerToken) -> StoreResult<Heartbeat>;

    /// Reads up to `limit` stale rows in key order.
    async fn scan_stale(&self, req: &ScanRequest) -> StoreResult<ScanPage>;

    /// If the row is still as the scan saw it (`seen`: same owner) and stamped before
    /// `cutoff`, makes `claimer` its owner, counts the claim and stamps it `lease_until`.
    ///
    /// Taking the scanned entry lets a backend claim in one compare-and-set, without reading
    /// the row first. A claim is idempotent for its claimer: when `claimer` already owns the
    /// row (an earlier attempt landed but its response was lost), the claim is won.
    async fn claim(
        &self,
        seen: &ChangelogEntry,
        cutoff: Timestamp,
        claimer: &OwnerToken,
        lease_until: Timestamp,
    ) -> StoreResult<Claim>;

    /// Reads one row; the authority a cleaner consults, whatever its job message says.
    async fn get(&self, id: &ChangeId) -> StoreResult<Option<ChangelogEntry>>;

    /// Reads several rows in one call, in the order asked (`None`: no such row, or one that
    /// does not decode, which [`Changelog::get`] reports): how a scanner re-reads the claims
    /// it published to learn which still wait for a cleaner. Backends read all rows in one
    /// call; the default reads them one by one.
    async fn get_many(&self, ids: &[ChangeId]) -> StoreResult<Vec<Option<ChangelogEntry>>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(match self.get(id).await {
                Ok(entry) => entry,
                Err(e) if e.kind == crate::error::ErrorKind::Malformed => None,
                Err(e) => return Err(e),
            });
        }
        Ok(out)
    }

    /// Moves a claim's lease on to `until`, if `owner` still owns the row and its stamp is
    /// earlier (a lease is never shortened): how whoever holds a claimed row's job, the
    /// scanner while the job is queued and the cleaner while it works on it, keeps the row
    /// from being claimed again. Leases are liveness only; no invariant rests on them.
    async fn extend_claim(
        &self,
        id: &ChangeId,
        owner: &OwnerToken,
        until: Timestamp,
    ) -> StoreResult<Extension>;

    /// Deletes the row if `owner` owns it.
    async fn remove(&self, id: &ChangeId, owner: &OwnerToken) -> StoreResult<Removal>;

    /// Deletes the rows outright, whoever owns them, in one call (Bigtable: MutateRows);
    /// rows already gone are fine. Recovery's removal of changes it converged under a
    /// claim it verified: unconditional so that it can be batched, and sound for that
    /// use only (`protocol::converge` says why). Writers remove with [`Changelog::remove`].
    async fn remove_many(&self, ids: &[ChangeId]) -> StoreResult<()>;

    /// Rewrites the row's record as `record`, stamped now, if `record.owner` owns it: how a
    /// writer hands a change to recovery for later (a later `due_at`), e.g. after an
    /// upload failed in a way that may still let it land.
    async fn defer(&self, id: &ChangeId, record: &ChangeRecord) -> StoreResult<Deferral>;

    /// True for [`NoopChangelog`]: writers skip heartbeats, recovery has nothing to do.
    fn is_noop(&self) -> bool {
        false
    }
}

/// What `record` concludes from the row it found already there: the caller's own earlier
/// attempt, or a change recovery has taken over (see [`Changelog::record`]).
pub(crate) fn record_found(
    id: &ChangeId,
    record: &ChangeRecord,
    owner: Option<OwnerToken>,
    target: &str,
) -> StoreResult<()> {
    match owner {
        Some(owner) if owner == record.owner => Ok(()),
        found => Err(StoreError::new(
            StoreKind::Changelog,
            "record",
            target.to_owned(),
            ErrorKind::Permanent,
            format!(
                "change {id} is already recorded, owned by {}: recovery took it over while this \
                 attempt was on its way",
                found.map_or_else(|| "nobody".to_owned(), |o| o.to_string())
            ),
        )),
    }
}
