//! The invariant checker (DESIGN.md §4) that every test, simulation and demo ends with.
//! It works through the store traits only, so it checks emulator backends as well as the
//! in-memory ones.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;

use crate::changelog::{ScanRequest, ScannedRow};
use crate::error::StoreResult;
use crate::model::{HvValue, ObjectPath, Revision, ShardSet, Timestamp};
use crate::stores::Stores;

/// What a reader may legitimately see for an object: the last acknowledged value, plus the
/// values of later writes whose outcome the caller could not know (they returned an error).
/// `None` stands for "absent".
pub type Acceptable = Vec<Option<Bytes>>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvariantReport {
    /// LT blobs no HV row references (I2).
    pub orphans: Vec<String>,
    /// HV tombstones whose LT blob is missing (I1/I2).
    pub dangling: Vec<(ObjectPath, Revision)>,
    /// Objects that read back as something no acknowledged write left (I1).
    pub lost: Vec<ObjectPath>,
    /// Changelog rows still present (I2).
    pub changelog_remaining: usize,
}

impl InvariantReport {
    pub fn is_converged(&self) -> bool {
        self.orphans.is_empty()
            && self.dangling.is_empty()
            && self.lost.is_empty()
            && self.changelog_remaining == 0
    }

    /// Panics with the whole report unless I1 (no loss, no dangling tombstone) holds.
    pub fn assert_no_loss(&self) {
        assert!(
            self.lost.is_empty() && self.dangling.is_empty(),
            "I1 violated: {self:#?}"
        );
    }

    pub fn assert_converged(&self) {
        assert!(self.is_converged(), "I1/I2 violated: {self:#?}");
    }
}

/// Checks the stores for the objects named in `expected` (every object the workload
/// touched): their contents, their LT revisions and their changelog rows. Scoping the check
/// to the workload's objects lets tests share a table or bucket.
pub async fn check(
    stores: &Stores,
    expected: &BTreeMap<ObjectPath, Acceptable>,
) -> StoreResult<InvariantReport> {
    let mut report = InvariantReport::default();
    let mut referenced = HashSet::new();
    for (path, acceptable) in expected {
        let value = stores.hv.read(path).await?;
        let content = match &value {
            None => None,
            Some(HvValue::Inline(b)) => Some(b.clone()),
            Some(HvValue::Tombstone(rev)) => {
                referenced.insert(rev.as_str().to_owned());
                match stores.lt.get(rev).await? {
                    Some(b) => Some(b),
                    None => {
                        report.dangling.push((path.clone(), rev.clone()));
                        continue;
                    }
                }
            }
        };
        if !acceptable.contains(&content) {
            report.lost.push(path.clone());
        }
    }

    for path in expected.keys() {
        let prefix = format!("{path}/");
        let mut token = None;
        loop {
            let page = stores
                .lt
                .list(&crate::lt::NameRange::prefix(prefix.as_str()), token)
                .await?;
            // A blob under `{path}/` may belong to a deeper object (`{path}/x/{uuid}`), which
            // the caller did not name: only direct revisions of `path` are judged.
            report
                .orphans
                .extend(page.blobs.into_iter().map(|b| b.name).filter(|n| {
                    !referenced.contains(n.as_str())
                        && Revision::parse(n.as_str()).is_ok_and(|r| r.object() == path.as_str())
                }));
            token = page.next;
            if token.is_none() {
                break;
            }
        }
    }

    let mut start_after = None;
    loop {
        let page = stores
            .changelog
            .scan_stale(&ScanRequest {
                shards: ShardSet::ALL,
                cutoff: Timestamp(i64::MAX),
                stamped_from: None,
                now: Timestamp(i64::MAX),
                start_after,
                limit: 1000,
                minted: None,
                report_waiting: false,
            })
            .await?;
        // Malformed rows count too: they are rows nobody has converged.
        report.changelog_remaining += page
            .rows
            .iter()
            .filter(|row| match row {
                ScannedRow::Entry(e) => expected.contains_key(&e.record.object),
                ScannedRow::Malformed { .. } => true,
                ScannedRow::Waiting { .. } => false,
            })
            .count();
        start_after = page.resume_after;
        if start_after.is_none() {
            break;
        }
    }
    Ok(report)
}
