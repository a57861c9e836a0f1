//! The changelog as an audit sees it: which revisions some in-flight change names.
//!
//! Taken once, before any listing, and the order is what makes it sound. A writer records
//! its change before its upload can complete and removes it only after its HV commit, so a
//! blob created before the snapshot began either has its change in the snapshot, or its
//! change was gone before — committed, so the HV read that follows the snapshot sees the
//! reference, or abandoned and converged, so the blob is garbage. The audit only judges
//! blobs created before the snapshot's start (less the minimum age), whatever it lists
//! later.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::changelog::{Changelog, ScanRequest, ScannedRow};
use crate::error::StoreResult;
use crate::model::{Revision, ShardSet, Timestamp};

/// How many rows one scan call reads.
const PAGE: usize = 1000;

/// The revisions the changelog named when the snapshot was taken, as 64-bit hashes: 8
/// bytes per in-flight change whatever the names' length. A collision only makes a blob
/// look in flight, which spares it.
#[derive(Debug)]
pub struct InFlight {
    named: HashSet<u64>,
    /// The changelog's time when the snapshot began.
    pub taken_at: Timestamp,
    /// Rows read.
    pub rows: u64,
    /// Keys of rows that do not decode (at most `MALFORMED_KEPT`), and how many there
    /// were: such a row may name any blob, so an audit that found one deletes nothing.
    pub malformed: Vec<String>,
    /// How many rows did not decode.
    pub malformed_count: u64,
}

/// How many malformed row keys a snapshot keeps for its report.
pub const MALFORMED_KEPT: usize = 20;

impl InFlight {
    /// Reads every row of `changelog`, whatever its stamp, owner or deferral.
    pub async fn take(changelog: &dyn Changelog) -> StoreResult<Self> {
        let mut snapshot = InFlight {
            named: HashSet::new(),
            taken_at: changelog.now().await?,
            rows: 0,
            malformed: Vec::new(),
            malformed_count: 0,
        };
        let mut start_after = None;
        loop {
            let page = changelog
                .scan_stale(&ScanRequest {
                    shards: ShardSet::ALL,
                    // Everything is "stale" and nothing deferred, so every row comes back
                    // whole.
                    cutoff: Timestamp(i64::MAX),
                    stamped_from: None,
                    now: Timestamp(i64::MAX),
                    start_after,
                    limit: PAGE,
                    minted: None,
                    report_waiting: false,
                })
                .await?;
            for row in page.rows {
                snapshot.rows += 1;
                match row {
                    ScannedRow::Entry(e) => {
                        for rev in e.record.revisions() {
                            snapshot.named.insert(hash(rev));
                        }
                    }
                    ScannedRow::Malformed { key, .. } => {
                        snapshot.malformed_count += 1;
                        if snapshot.malformed.len() < MALFORMED_KEPT {
                            snapshot.malformed.push(key);
                        }
                    }
                    ScannedRow::Waiting { .. } => {}
                }
            }
            start_after = page.resume_after;
            if start_after.is_none() {
                return Ok(snapshot);
            }
        }
    }

    /// Whether a change in the snapshot names `rev` (or one whose hash collides with it).
    pub fn names(&self, rev: &Revision) -> bool {
        self.named.contains(&hash(rev))
    }
}

fn hash(rev: &Revision) -> u64 {
    let mut h = DefaultHasher::new();
    rev.as_str().hash(&mut h);
    h.finish()
}
