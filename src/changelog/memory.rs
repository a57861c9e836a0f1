//! In-memory changelog with Bigtable's semantics: rows hold the encoded record bytes and a
//! millisecond stamp, scans read in key order, and claims are compare-and-sets on the stamp.
//! Rows are kept encoded so that malformed rows can be planted and are reported the way the
//! Bigtable backend reports them.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{
    Changelog, ChangelogEntry, Claim, Deferral, Extension, Heartbeat, KeyRange, Removal, ScanPage,
    ScanRequest, ScannedRow,
};
use crate::clock::SharedClock;
use crate::error::{ErrorKind, StoreError, StoreKind, StoreResult};
use crate::model::{ChangeId, ChangeRecord, OwnerToken, SHARD_COUNT, Shard, Timestamp};

#[derive(Debug, Clone)]
struct Row {
    bytes: Vec<u8>,
    stamp: Timestamp,
    /// When this incarnation of the row came to exist, in the changelog's time: what the
    /// simulation's liveness oracle compares with the time the row's id was minted (a row
    /// recorded long after its id was minted is, by design, only a full sweep's to find).
    #[cfg(any(test, feature = "testing"))]
    created: Timestamp,
}

/// Removed rows the twin keeps as tombstones at most; beyond, it compacts. Bounds the twin's
/// memory in long simulations, far above what any scan-cost test piles up.
const MAX_TOMBSTONES: usize = 2_000_000;

#[derive(Debug)]
/// The changelog in memory, with Bigtable's semantics (stamps in its clock, conditional
/// writes, deletes that scans still pay for until compaction).
pub struct MemoryChangelog {
    rows: Mutex<BTreeMap<String, Row>>,
    /// Keys of removed rows not yet compacted away. Bigtable deletes by writing tombstones
    /// that every scan over their keys still pays for until a compaction drops them (days
    /// on a busy table); the emulator deletes at once, so only the twin can show what a scan
    /// costs on the real service. They are cost only: no call reads them back.
    removed: Mutex<BTreeSet<String>>,
    /// Rows scans have examined, live or removed: the server-side cost of scanning.
    examined: AtomicU64,
    clock: SharedClock,
}

impl MemoryChangelog {
    /// An empty changelog stamping in `clock`.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            rows: Mutex::new(BTreeMap::new()),
            removed: Mutex::new(BTreeSet::new()),
            examined: AtomicU64::new(0),
            clock,
        }
    }

    fn removed(&self) -> MutexGuard<'_, BTreeSet<String>> {
        let mut removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        if removed.len() > MAX_TOMBSTONES {
            removed.clear();
        }
        removed
    }

    fn rows(&self) -> MutexGuard<'_, BTreeMap<String, Row>> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the tests and the simulation read off the twin.
#[cfg(any(test, feature = "testing"))]
impl MemoryChangelog {
    /// Rows every scan so far has examined, removed-but-not-compacted ones included: what
    /// a scan costs the server, whatever it returned.
    pub fn rows_examined(&self) -> u64 {
        self.examined.load(Ordering::Relaxed)
    }

    /// Removed rows still waiting for compaction.
    pub fn tombstones(&self) -> usize {
        self.removed().len()
    }

    /// Drops the removed rows' tombstones, as a Bigtable compaction does.
    pub fn compact(&self) {
        self.removed().clear();
    }

    /// Plants a raw row, as a buggy or foreign writer might have left it.
    pub fn insert_raw(&self, key: &str, bytes: Vec<u8>, stamp: Timestamp) {
        self.rows().insert(
            key.to_owned(),
            Row {
                bytes,
                stamp,
                #[cfg(any(test, feature = "testing"))]
                created: stamp,
            },
        );
    }

    /// When the live row `id` came to exist (the record that created it), in the
    /// changelog's time.
    pub fn created(&self, id: &ChangeId) -> Option<Timestamp> {
        self.rows().get(id.as_str()).map(|row| row.created)
    }

    /// Live rows.
    pub fn len(&self) -> usize {
        self.rows().len()
    }

    /// Whether no row is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every row key, for invariant checks.
    pub fn keys(&self) -> Vec<String> {
        self.rows().keys().cloned().collect()
    }
}

/// The request's key ranges ([`ScanRequest::key_ranges`]) that hold a key, live or
/// removed: the same rows, found by seeking from key to key rather than by building a range
/// for each of up to [`SHARD_COUNT`] shards, most of them empty in a small table.
fn ranges_holding_keys<'a>(
    req: &'a ScanRequest,
    rows: &'a BTreeMap<String, Row>,
    removed: &'a BTreeSet<String>,
) -> impl Iterator<Item = KeyRange> + 'a {
    let mut pos: Bound<String> = req
        .start_after
        .clone()
        .map_or(Bound::Unbounded, Bound::Excluded);
    let mut done = false;
    // A shard's second window (an `ahead` one), returned after its first.
    let mut pending: Vec<KeyRange> = Vec::new();
    std::iter::from_fn(move || {
        if let Some(range) = pending.pop() {
            return Some(range);
        }
        while !done {
            let live = rows
                .range((pos.clone(), Bound::Unbounded))
                .next()
                .map(|(k, _)| k);
            let gone = removed.range((pos.clone(), Bound::Unbounded)).next();
            let Some(key) = live.into_iter().chain(gone).min().cloned() else {
                break;
            };
            let Some(shard) = shard_holding(&key).and_then(|s| req.shards.next_from(s)) else {
                // Before every shard, or past the last one the request reads.
                match req.shards.next_from(Shard(0)) {
                    Some(first) if key < first.start_key() => {
                        pos = Bound::Included(first.start_key());
                        continue;
                    }
                    _ => break,
                }
            };
            if key < shard.start_key() {
                pos = Bound::Included(shard.start_key());
                continue;
            }
            // On to the next shard, whatever this one's ranges hold.
            match shard.end_key() {
                Some(next) => pos = Bound::Included(next),
                None => done = true,
            }
            let mut ranges: Vec<KeyRange> = req
                .windows(shard)
                .into_iter()
                .filter_map(|(start, end)| req.after_cursor(start, end))
                .collect();
            if ranges.is_empty() {
                continue;
            }
            ranges.reverse();
            let first = ranges.pop();
            pending = ranges;
            return first;
        }
        None
    })
}

/// The shard whose keys `key` falls among, if it falls among any.
fn shard_holding(key: &str) -> Option<Shard> {
    if key < Shard(0).start_key().as_str() {
        return None;
    }
    // The last shard whose first key is at or before `key`.
    let (mut lo, mut hi) = (0u16, SHARD_COUNT);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if Shard(mid).start_key().as_str() <= key {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(Shard(lo))
}

fn decode(key: &str, row: &Row) -> Result<ChangelogEntry, String> {
    let id = ChangeId::parse(key).map_err(|e| e.to_string())?;
    let record = ChangeRecord::decode(&row.bytes).map_err(|e| e.to_string())?;
    Ok(ChangelogEntry {
        id,
        record,
        stamp: row.stamp,
    })
}

fn malformed(op: &'static str, key: &str, reason: String) -> StoreError {
    StoreError::new(StoreKind::Changelog, op, key, ErrorKind::Malformed, reason)
}

#[async_trait]
impl Changelog for MemoryChangelog {
    async fn record(&self, id: &ChangeId, record: &ChangeRecord) -> StoreResult<Timestamp> {
        let stamp = self.clock.now();
        let bytes = record.encode();
        let mut rows = self.rows();
        if let Some(row) = rows.get(id.as_str()) {
            // As on Bigtable: an existing row is never written over; one that does not
            // decode is reported, as Bigtable's read of it after the refused write is.
            let found =
                decode(id.as_str(), row).map_err(|r| malformed("record", id.as_str(), r))?;
            return super::record_found(id, record, Some(found.record.owner), id.as_str())
                .map(|()| stamp);
        }
        self.removed().remove(id.as_str());
        rows.insert(
            id.as_str().to_owned(),
            Row {
                bytes,
                stamp,
                #[cfg(any(test, feature = "testing"))]
                created: stamp,
            },
        );
        Ok(stamp)
    }

    async fn now(&self) -> StoreResult<Timestamp> {
        Ok(self.clock.now())
    }

    async fn heartbeat(&self, id: &ChangeId, owner: &OwnerToken) -> StoreResult<Heartbeat> {
        let now = self.clock.now();
        let mut rows = self.rows();
        if crate::mutants::on(crate::mutants::Mutant::UnconditionalHeartbeat) {
            // A blind SetCell on Bigtable creates the row it names: a stamp without a record.
            let row = rows.entry(id.as_str().to_owned()).or_insert(Row {
                bytes: Vec::new(),
                stamp: now,
                #[cfg(any(test, feature = "testing"))]
                created: now,
            });
            row.stamp = now;
            return Ok(Heartbeat::Refreshed);
        }
        let Some(row) = rows.get_mut(id.as_str()) else {
            return Ok(Heartbeat::Refused);
        };
        let entry = decode(id.as_str(), row).map_err(|r| malformed("heartbeat", id.as_str(), r))?;
        if &entry.record.owner != owner {
            return Ok(Heartbeat::Refused);
        }
        // Bigtable re-stamps the owner cell with the server's time now, which may be
        // earlier than the current stamp (a claim's lease): so does the twin.
        row.stamp = now;
        Ok(Heartbeat::Refreshed)
    }

    async fn get_many(&self, ids: &[ChangeId]) -> StoreResult<Vec<Option<ChangelogEntry>>> {
        let rows = self.rows();
        Ok(ids
            .iter()
            .map(|id| {
                rows.get(id.as_str())
                    .and_then(|row| decode(id.as_str(), row).ok())
            })
            .collect())
    }

    async fn extend_claim(
        &self,
        id: &ChangeId,
        owner: &OwnerToken,
        until: Timestamp,
    ) -> StoreResult<Extension> {
        let mut rows = self.rows();
        let Some(row) = rows.get_mut(id.as_str()) else {
            return Ok(Extension::Refused);
        };
        let owned = decode(id.as_str(), row).is_ok_and(|e| &e.record.owner == owner);
        if !owned || row.stamp >= until {
            return Ok(Extension::Refused);
        }
        row.stamp = until;
        Ok(Extension::Extended)
    }

    async fn scan_stale(&self, req: &ScanRequest) -> StoreResult<ScanPage> {
        let rows = self.rows();
        let removed = self.removed();
        let report_waiting = req.report_waiting && req.stamped_from.is_none();
        let mut page = ScanPage::default();
        let mut read = 0;
        let mut examined = 0u64;
        for range in ranges_holding_keys(req, &rows, &removed) {
            let end = range.end.clone().map_or(Bound::Unbounded, Bound::Excluded);
            // Removed rows cost the scan until compaction, as on Bigtable; they are counted
            // up to where the scan stops.
            let mut stopped_at = None;
            for (key, row) in rows.range((range.start.clone(), end.clone())) {
                examined += 1;
                let stale = row.stamp < req.cutoff;
                let in_window = req.stamped_from.is_none_or(|from| row.stamp >= from);
                let reported = if stale && in_window {
                    match decode(key, row) {
                        Ok(e) if e.record.due_at.is_none_or(|t| t <= req.now) => {
                            Some(ScannedRow::Entry(e))
                        }
                        Ok(e) => report_waiting.then_some(ScannedRow::Waiting {
                            id: e.id,
                            stamp: e.stamp,
                            due_at: e.record.due_at,
                        }),
                        Err(reason) => Some(ScannedRow::Malformed {
                            key: key.clone(),
                            reason,
                        }),
                    }
                } else if report_waiting {
                    Some(match ChangeId::parse(key) {
                        Ok(id) => ScannedRow::Waiting {
                            id,
                            stamp: row.stamp,
                            due_at: None,
                        },
                        Err(e) => ScannedRow::Malformed {
                            key: key.clone(),
                            reason: e.to_string(),
                        },
                    })
                } else {
                    None
                };
                // Like Bigtable's rows_limit, the limit counts the rows the filter lets
                // through (a deferred row is one: its cleanup time is read client-side).
                let counted = reported.is_some() || (stale && in_window);
                page.rows.extend(reported);
                if counted {
                    read += 1;
                }
                if read == req.limit {
                    page.resume_after = Some(key.clone());
                    stopped_at = Some(key.clone());
                }
                if stopped_at.is_some() {
                    break;
                }
            }
            let upto = stopped_at.map_or(end, Bound::Included);
            examined += removed.range((range.start, upto)).count() as u64;
            if page.resume_after.is_some() {
                break;
            }
        }
        self.examined.fetch_add(examined, Ordering::Relaxed);
        Ok(page)
    }

    async fn claim(
        &self,
        seen: &ChangelogEntry,
        cutoff: Timestamp,
        claimer: &OwnerToken,
        lease_until: Timestamp,
    ) -> StoreResult<Claim> {
        let key = seen.id.as_str();
        let mut rows = self.rows();
        let Some(row) = rows.get_mut(key) else {
            return Ok(Claim::Lost);
        };
        let mut entry = decode(key, row).map_err(|r| malformed("claim", key, r))?;
        if &entry.record.owner == claimer {
            return Ok(Claim::Won(entry));
        }
        let fresh = row.stamp >= cutoff
            && !crate::mutants::on(crate::mutants::Mutant::ClaimWithoutStalenessCheck);
        if fresh || entry.record.owner != seen.record.owner {
            return Ok(Claim::Lost);
        }
        entry.record.owner = claimer.clone();
        entry.record.claims = entry.record.claims.saturating_add(1);
        entry.stamp = lease_until;
        row.bytes = entry.record.encode();
        row.stamp = lease_until;
        Ok(Claim::Won(entry))
    }

    async fn get(&self, id: &ChangeId) -> StoreResult<Option<ChangelogEntry>> {
        let rows = self.rows();
        rows.get(id.as_str())
            .map(|row| decode(id.as_str(), row).map_err(|r| malformed("get", id.as_str(), r)))
            .transpose()
    }

    async fn defer(&self, id: &ChangeId, record: &ChangeRecord) -> StoreResult<Deferral> {
        let now = self.clock.now();
        let mut rows = self.rows();
        let Some(row) = rows.get_mut(id.as_str()) else {
            return Ok(Deferral::NotOwned);
        };
        let entry = decode(id.as_str(), row).map_err(|r| malformed("defer", id.as_str(), r))?;
        if entry.record.owner != record.owner {
            return Ok(Deferral::NotOwned);
        }
        row.bytes = record.encode();
        row.stamp = now;
        Ok(Deferral::Deferred)
    }

    async fn remove_many(&self, ids: &[ChangeId]) -> StoreResult<()> {
        let mut rows = self.rows();
        for id in ids {
            if rows.remove(id.as_str()).is_some() {
                self.removed().insert(id.as_str().to_owned());
            }
        }
        Ok(())
    }

    async fn remove(&self, id: &ChangeId, owner: &OwnerToken) -> StoreResult<Removal> {
        let mut rows = self.rows();
        let owned = match rows.get(id.as_str()) {
            None => false,
            Some(row) => decode(id.as_str(), row).is_ok_and(|e| &e.record.owner == owner),
        };
        if owned {
            rows.remove(id.as_str());
            self.removed().insert(id.as_str().to_owned());
            Ok(Removal::Removed)
        } else {
            Ok(Removal::NotOwned)
        }
    }
}
