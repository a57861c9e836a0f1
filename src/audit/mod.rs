//! `tiersweep audit`: the slow, independent check beside the changelog. It lists the LT
//! bucket, joins every blob with what HV references and with what the changelog has in
//! flight, and finds **orphans**: blobs neither references, older than a minimum age.
//!
//! What the changelog cannot see, this can: blobs orphaned before tiersweep was deployed,
//! by writers running with the no-op changelog, or by a bug in the changelog path (a clean
//! audit after recovery is evidence that the path leaked nothing).
//!
//! # Why it never deletes what it should not
//!
//! * **It never deletes directly.** With `delete`, each orphan becomes a recovery change
//!   (a changelog row naming the blob as the change's `new`), and recovery's fenced
//!   converge deletes it with the same guarantee as any other change: it fences the
//!   object's HV row and keeps the blob if the row names it. A wrong judgement here costs
//!   at most a refused concurrent write of that object, never a dangling tombstone.
//! * **It judges in a safe order** ([`snapshot`]): the changelog first, then per page the
//!   listing and HV, and only blobs created before the snapshot began, less `min_age`.
//! * **It fails closed.** A listing or read error ends its range with nothing deleted there;
//!   ranges are judged whole (orphans are held until the range is listed to its end); a
//!   malformed changelog row (which may name any blob) stops every deletion; a range with
//!   more orphans than `max_orphans_per_range` (an HV table misconfigured, a prefix that is
//!   not tiersweep's) deletes nothing.
//!
//! Memory is bounded: one listing page, the changelog's in-flight revisions as 8-byte
//! hashes, and with `delete` the orphans of the ranges in progress (at most
//! `max_orphans_per_range` each).

pub mod checkpoint;
mod config;
pub mod fanout;
mod judge;
mod pacer;
pub mod ranges;
mod report;
mod run;
pub mod runs;
pub mod snapshot;
pub mod trail;

use crate::error::StoreError;

pub use checkpoint::{Checkpoint, CheckpointState};
pub use config::AuditConfig;
pub use fanout::AuditWorker;
#[cfg(any(test, feature = "testing"))]
pub use fanout::{RangeOutcome, RangeJob};
pub use report::{
    AuditReport, Counts, DanglingSeen, OrphanSeen, RangeReport, RangeState, RangeSummary,
    age_bucket,
};
pub use run::Audit;
pub use runs::{AuditRun, AuditRuns, BigtableRuns, RunState};
#[cfg(any(test, feature = "testing"))]
pub use runs::MemoryRuns;
pub use snapshot::InFlight;
pub use trail::{AuditTrail, DeletionRequested, FileTrail, TopicTrail};

/// How many object rows one HV read joins.
const HV_BATCH: usize = 500;

/// How many orphans a report names (the counts are complete; the trail has every deletion).
pub const ORPHAN_EXAMPLES: usize = 100;

/// The owner role of the changes an audit records: `tiersweep inspect` shows it.
pub const AUDIT_OWNER_ROLE: &str = "audit";

/// Why an audit judged a blob an orphan, as the trail records it.
pub const ORPHAN_REASON: &str =
    "no HV tombstone and no changelog row named it, and it was older than the minimum age";

#[derive(Debug, thiserror::Error)]
/// Why an audit could not run (a range's failure is in its [`RangeReport`] instead).
#[non_exhaustive]
pub enum AuditError {
    #[error("invalid audit configuration: {0}")]
    /// A setting is out of range, or `delete` was asked without a trail.
    Config(String),
    #[error("audit checkpoint {path}: {reason}")]
    /// The checkpoint file cannot be read, parsed or written.
    Checkpoint {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    #[error(
        "audit checkpoint {path} belongs to another audit ({theirs}); pass the same \
         parameters to resume it, or remove the file to start over"
    )]
    /// The checkpoint file records an audit with other parameters.
    CheckpointMismatch {
        /// The file.
        path: String,
        /// The parameters it records.
        theirs: String,
    },
    #[error("reading the changelog before the audit: {0}")]
    /// The changelog could not be read before listing.
    Snapshot(StoreError),
    #[error(
        "the changelog holds {count} malformed row(s) (first: {first}); such a row may name \
         any blob, so the audit deletes nothing until they are repaired (tiersweep inspect)"
    )]
    /// The changelog holds rows that do not decode, and the audit was to delete.
    MalformedChangelog {
        /// How many.
        count: u64,
        /// The first one's row key.
        first: String,
    },
    /// Recording or reading an audit run, or publishing its jobs, failed.
    #[error("audit run: {0}")]
    Runs(StoreError),
    #[error("audit trail {target}: {reason}")]
    /// The trail refused an entry: no deletion is requested without one.
    Trail {
        /// Where the trail is kept.
        target: String,
        /// What went wrong.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::model::{ChangeId, ObjectPath, Revision};
    use crate::retry::RetryPolicy;
    use crate::testing::MemoryStores;
    use crate::testing::trail::MemoryTrail;
    use crate::testing::faults::{Fault, Faults, Op, Rule};

    const DAY: Duration = Duration::from_secs(24 * 3600);

    /// `n` orphans two days old under `prefix`, all in the first of two ranges.
    fn plant(m: &MemoryStores, prefix: &str, n: usize) {
        let created = m.clock.now().saturating_sub(2 * DAY);
        for _ in 0..n {
            let path = ObjectPath::new(format!("{prefix}0{}/o", uuid::Uuid::now_v7().simple()))
                .expect("valid path");
            m.lt.plant(
                &Revision::mint(&path),
                bytes::Bytes::from_static(b"x"),
                created,
            );
        }
    }

    fn deleting(prefix: &str) -> AuditConfig {
        AuditConfig {
            prefix: prefix.to_owned(),
            ranges: 2,
            delete: true,
            max_deletes_per_s: None,
            max_lists_per_s: None,
            ..AuditConfig::default()
        }
    }

    /// A listing, HV read or deletion request refused for a while (a busy cluster, a rate
    /// limit) is waited out, not taken for a failed range.
    #[tokio::test(start_paused = true)]
    async fn a_brief_refusal_is_waited_out() {
        let m = MemoryStores::new();
        plant(&m, "p/", 1500);
        let faults = Faults::new([Op::LtList, Op::HvRead, Op::Record].map(|op| Rule {
            skip: 1,
            times: RetryPolicy::PATIENT.max_attempts - 1,
            ..Rule::once(op, Fault::Fail)
        }));
        let report = Audit::new(faults.wrap(&m.stores()), deleting("p/"))
            .trail(Arc::new(MemoryTrail::default()))
            .run()
            .await
            .expect("the audit reports");
        assert!(report.complete(), "{report:#?}");
        assert_eq!(report.totals.deletes_requested, 1500);
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_on_a_later_page_deletes_nothing_in_the_range() {
        let m = MemoryStores::new();
        plant(&m, "p/", 1500);
        // An outage that outlasts the retries.
        let faults = Faults::new([Rule {
            skip: 1,
            times: RetryPolicy::PATIENT.max_attempts,
            ..Rule::once(Op::LtList, Fault::Fail)
        }]);
        let trail = Arc::new(MemoryTrail::default());
        let report = Audit::new(
            faults.wrap(&m.stores()),
            AuditConfig {
                concurrency: 1,
                ..deleting("p/")
            },
        )
        .trail(trail.clone())
        .run()
        .await
        .expect("the audit reports");
        assert_eq!(report.failed().count(), 1, "{report:#?}");
        assert_eq!(
            report.ranges[0].summary.listed, 1000,
            "the first page was judged"
        );
        assert_eq!(report.totals.deletes_requested, 0);
        assert!(
            trail.blobs().is_empty(),
            "a range is never judged on part of it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_orphans_in_a_range_deletes_none() {
        let m = MemoryStores::new();
        plant(&m, "p/", 30);
        let trail = Arc::new(MemoryTrail::default());
        let report = Audit::new(
            m.stores(),
            AuditConfig {
                max_orphans_per_range: 20,
                ..deleting("p/")
            },
        )
        .trail(trail.clone())
        .run()
        .await
        .expect("the audit reports");
        let failed: Vec<_> = report.failed().collect();
        assert_eq!(failed.len(), 1);
        assert!(
            matches!(&failed[0].state, RangeState::Failed { error } if error.contains("HV table")),
            "{failed:?}"
        );
        assert!(trail.blobs().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_malformed_changelog_row_stops_every_deletion() {
        let m = MemoryStores::new();
        plant(&m, "p/", 3);
        let key = format!("{}garbage", ChangeId::mint().shard().start_key());
        m.changelog
            .insert_raw(&key, b"{not json".to_vec(), m.clock.now());
        let trail = Arc::new(MemoryTrail::default());
        let refused = Audit::new(m.stores(), deleting("p/"))
            .trail(trail.clone())
            .run()
            .await;
        assert!(
            matches!(
                &refused,
                Err(AuditError::MalformedChangelog { count: 1, .. })
            ),
            "{refused:?}"
        );
        let dry = Audit::new(
            m.stores(),
            AuditConfig {
                delete: false,
                ..deleting("p/")
            },
        )
        .run()
        .await
        .expect("a dry run reports");
        assert_eq!((dry.malformed_changelog_rows, dry.totals.orphans), (1, 3));
        assert!(trail.blobs().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn deletions_are_paced_and_need_a_trail() {
        let m = MemoryStores::new();
        plant(&m, "p/", 5);
        let no_trail = Audit::new(m.stores(), deleting("p/")).run().await;
        assert!(
            matches!(no_trail, Err(AuditError::Config(_))),
            "{no_trail:?}"
        );
        let trail = Arc::new(MemoryTrail::default());
        let start = tokio::time::Instant::now();
        let report = Audit::new(
            m.stores(),
            AuditConfig {
                max_deletes_per_s: Some(2.0),
                ..deleting("p/")
            },
        )
        .trail(trail.clone())
        .run()
        .await
        .expect("the audit reports");
        assert_eq!(report.totals.deletes_requested, 5);
        assert!(
            start.elapsed() >= Duration::from_secs(2),
            "5 deletions at 2/s take 2 s after the first: {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn ages_fall_in_their_buckets() {
        assert_eq!(age_bucket(Duration::from_secs(3600)), "lt_1d");
        assert_eq!(age_bucket(DAY), "1d_7d");
        assert_eq!(age_bucket(7 * DAY), "7d_30d");
        assert_eq!(age_bucket(400 * DAY), "ge_30d");
    }
}
