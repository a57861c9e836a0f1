//! The audit's scenarios, written once and run on every backend by
//! [`audit_scenarios!`](crate::audit_scenarios): a bucket holding orphans planted straight
//! into LT (no changelog row, no tombstone) among objects written through the writer, blobs
//! of changes in flight, blobs too young to judge and names that are not tiersweep's. The
//! audit must report exactly the orphans, delete exactly them (through recovery), and fail
//! closed and resume as documented in [`tiersweep::audit`].
//!
//! Time is the stores' (paused for the twin, real on the emulators): the minimum age is a
//! few staleness thresholds, and a scenario sleeps past it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::crash::{INLINE_THRESHOLD, test_writer_config};
use tiersweep::audit::{Audit, AuditConfig, AuditError, AuditReport, Checkpoint, RangeState};
use tiersweep::model::{ChangeId, ChangeRecord, ObjectPath, OwnerToken, Revision};
use tiersweep::protocol::ProtocolConfig;
use tiersweep::stores::Stores;
use tiersweep::testing::faults::{Fault, Faults, Op, Rule};
use tiersweep::testing::trail::MemoryTrail;
use tiersweep::writer::TieredStorage;

/// Expands to one test per audit scenario; the arguments are those of
/// [`safety_schedules!`](crate::safety_schedules).
#[macro_export]
macro_rules! audit_scenarios {
    (#[$attr:meta], $stores:expr, $protocol:expr) => {
        $crate::audit_scenarios!(@each #[$attr], $stores, $protocol, [
            an_audit_finds_exactly_the_orphans_and_recovery_deletes_them,
            a_listing_error_deletes_nothing_in_its_range,
            an_audit_resumes_the_ranges_it_did_not_finish,
            an_audit_reports_exactly_the_dangling_tombstones,
        ]);
    };
    (@each #[$attr:meta], $stores:expr, $protocol:expr, [$($name:ident),* $(,)?]) => {
        $(
            #[$attr]
            async fn $name() {
                let stores = $stores.await;
                $crate::audits::$name(stores, $protocol).await;
            }
        )*
    };
}

pub(crate) fn min_age(protocol: ProtocolConfig) -> Duration {
    protocol.staleness_threshold * 3
}

pub(crate) fn config(protocol: ProtocolConfig, prefix: &str, delete: bool) -> AuditConfig {
    AuditConfig {
        prefix: prefix.to_owned(),
        ranges: 4,
        concurrency: 2,
        min_age: min_age(protocol),
        delete,
        max_deletes_per_s: None,
        max_lists_per_s: None,
        // Real time on the emulators: a failure past the retries in well under a second.
        retry: tiersweep::RetryPolicy::default(),
        ..AuditConfig::default()
    }
}

/// A path under `prefix` whose first character after it is `first`, so a test chooses
/// which of [`tiersweep::audit::ranges::split`]'s ranges its blobs fall in.
pub(crate) fn path_in(prefix: &str, first: char) -> ObjectPath {
    ObjectPath::new(format!(
        "{prefix}{first}{}/obj",
        uuid::Uuid::now_v7().simple()
    ))
    .expect("valid path")
}

pub(crate) fn large(tag: &str) -> Bytes {
    Bytes::from(format!("{tag}:{}", "A".repeat(INLINE_THRESHOLD * 2)))
}

/// A blob with neither a tombstone nor a changelog row: an orphan once old enough.
pub(crate) async fn plant_orphan(stores: &Stores, prefix: &str, first: char) -> String {
    let rev = Revision::mint(&path_in(prefix, first));
    stores
        .lt()
        .put(&rev, large("orphan"))
        .await
        .expect("planting an orphan");
    rev.as_str().to_owned()
}

/// A blob whose writer recorded its change and uploaded, and then stopped: in flight.
pub(crate) async fn plant_in_flight(stores: &Stores, prefix: &str, first: char) -> String {
    let path = path_in(prefix, first);
    let rev = Revision::mint(&path);
    let record = ChangeRecord::new(path, None, Some(rev.clone()), OwnerToken::writer());
    stores
        .changelog()
        .record(&ChangeId::mint(), &record)
        .await
        .expect("recording a change");
    stores
        .lt()
        .put(&rev, large("in flight"))
        .await
        .expect("uploading");
    rev.as_str().to_owned()
}

async fn audit(stores: &Stores, config: AuditConfig, trail: &Arc<MemoryTrail>) -> AuditReport {
    Audit::new(stores.clone(), config)
        .trail(trail.clone())
        .run()
        .await
        .expect("the audit runs")
}

fn orphans_named(report: &AuditReport) -> BTreeSet<String> {
    report
        .orphan_examples
        .iter()
        .map(|o| o.blob.clone())
        .collect()
}

pub(crate) async fn blob_exists(stores: &Stores, name: &str) -> bool {
    let rev = Revision::parse(name).expect("a revision name");
    stores.lt().exists(&rev).await.expect("checking LT")
}

/// Orphans planted in every range, among referenced blobs written through the writer
/// (large and overwritten ones), inline objects, blobs of changes in flight and young
/// blobs. A dry run reports exactly the orphans and changes nothing; a
/// deleting run hands exactly them to recovery (one trail entry and one changelog row
/// each); after recovery they are gone and everything else is where it was; a last audit
/// finds only the orphan that was young before.
pub async fn an_audit_finds_exactly_the_orphans_and_recovery_deletes_them(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let prefix = format!("audit{}/", uuid::Uuid::now_v7().simple());
    let writer = TieredStorage::new(stores.clone(), test_writer_config(protocol))
        .expect("valid writer config");
    let mut orphans = BTreeSet::new();
    for first in ['0', 'G', 'h', 'x', 'x'] {
        orphans.insert(plant_orphan(&stores, &prefix, first).await);
    }
    let mut live = Vec::new();
    for first in ['1', 'K', 'm', 'z'] {
        let path = path_in(&prefix, first);
        writer.put(&path, large("v1")).await.expect("a put");
        writer.put(&path, large("v2")).await.expect("an overwrite");
        writer
            .put(&path_in(&prefix, first), Bytes::from_static(b"inline"))
            .await
            .expect("an inline put");
        live.push(path);
    }
    let in_flight = [
        plant_in_flight(&stores, &prefix, '2').await,
        plant_in_flight(&stores, &prefix, 'q').await,
    ];
    tokio::time::sleep(min_age(protocol) + protocol.staleness_threshold).await;
    let young_orphan = plant_orphan(&stores, &prefix, 'b').await;
    let young_path = path_in(&prefix, 'c');
    writer
        .put(&young_path, large("young"))
        .await
        .expect("a put");

    let trail = Arc::new(MemoryTrail::default());
    let dry = audit(&stores, config(protocol, &prefix, false), &trail).await;
    assert!(dry.complete(), "{dry:#?}");
    assert_eq!(orphans_named(&dry), orphans, "exactly the planted orphans");
    let t = &dry.totals;
    assert_eq!(
        (t.orphans, t.referenced, t.in_flight, t.young, t.foreign),
        (5, 4, 2, 2, 0),
        "{dry:#?}"
    );
    assert_eq!(t.listed, 13, "5 orphans, 4 live, 2 in flight, 2 young");
    assert_eq!(t.deletes_requested, 0, "a dry run deletes nothing");
    assert!(trail.blobs().is_empty());
    for name in orphans.iter().chain(&in_flight) {
        assert!(blob_exists(&stores, name).await, "{name} is untouched");
    }

    let run = audit(&stores, config(protocol, &prefix, true), &trail).await;
    assert!(run.complete(), "{run:#?}");
    assert_eq!(run.totals.deletes_requested, 5);
    assert_eq!(
        trail.blobs(),
        orphans,
        "one trail entry per orphan, before its deletion"
    );
    crate::crash::recover_settled(&stores, crate::crash::test_recovery_config(protocol)).await;
    for name in &orphans {
        assert!(
            !blob_exists(&stores, name).await,
            "{name} is deleted by recovery"
        );
    }
    assert!(
        blob_exists(&stores, &young_orphan).await,
        "a young blob is left"
    );
    for path in live.iter().chain([&young_path]) {
        let value = writer.get(path).await.expect("reading");
        assert!(
            matches!(value, tiersweep::writer::ReadOutcome::Found(_)),
            "{path} still reads: {value:?}"
        );
    }

    tokio::time::sleep(min_age(protocol)).await;
    let after = audit(&stores, config(protocol, &prefix, false), &trail).await;
    assert_eq!(
        orphans_named(&after),
        BTreeSet::from([young_orphan]),
        "after recovery only the once-young orphan is left: {after:#?}"
    );
    assert_eq!(
        after.totals.in_flight, 0,
        "recovery converged the stopped writers"
    );
}

/// A listing error in one range that outlasts the audit's retries fails that range, and
/// nothing in it is deleted; the other ranges go on. Ranges are listed one at a time here,
/// so the first listing calls are the first range's.
pub async fn a_listing_error_deletes_nothing_in_its_range(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let prefix = format!("audit{}/", uuid::Uuid::now_v7().simple());
    let first_range = plant_orphan(&stores, &prefix, '0').await;
    let last_range = plant_orphan(&stores, &prefix, 'z').await;
    tokio::time::sleep(min_age(protocol) + protocol.staleness_threshold).await;
    let faults = Faults::new([Rule {
        times: tiersweep::RetryPolicy::default().max_attempts,
        ..Rule::once(Op::LtList, Fault::Fail)
    }]);
    let trail = Arc::new(MemoryTrail::default());
    let report = audit(
        &faults.wrap(&stores),
        AuditConfig {
            concurrency: 1,
            ..config(protocol, &prefix, true)
        },
        &trail,
    )
    .await;
    assert!(!report.complete());
    let failed: Vec<usize> = report.failed().map(|r| r.index).collect();
    assert_eq!(failed, vec![0], "{report:#?}");
    assert_eq!(trail.blobs(), BTreeSet::from([last_range]));
    assert!(!trail.blobs().contains(&first_range));
    assert_eq!(report.totals.deletes_requested, 1);
}

/// An audit stopped part-way (a range failed) keeps its finished ranges in the checkpoint;
/// the next run judges only the rest, reports the others resumed with their counts, and
/// removes the checkpoint once every range is done. A checkpoint of another audit is
/// refused, and a cancelled audit requests nothing.
pub async fn an_audit_resumes_the_ranges_it_did_not_finish(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let prefix = format!("audit{}/", uuid::Uuid::now_v7().simple());
    for first in ['0', 'H', 'j', 'y'] {
        plant_orphan(&stores, &prefix, first).await;
    }
    tokio::time::sleep(min_age(protocol) + protocol.staleness_threshold).await;
    let dir = std::env::temp_dir().join(format!("tiersweep-audit-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let checkpoint = Checkpoint::new(dir.join("checkpoint.json"));
    let dry = || AuditConfig {
        concurrency: 1,
        ..config(protocol, &prefix, false)
    };

    let cancel = tokio_util::sync::CancellationToken::new();
    cancel.cancel();
    let cancelled = Audit::new(stores.clone(), dry())
        .checkpoint(checkpoint.clone())
        .cancel_on(cancel)
        .run()
        .await
        .expect("a cancelled audit reports");
    assert!(
        cancelled
            .ranges
            .iter()
            .all(|r| r.state == RangeState::Interrupted),
        "{cancelled:#?}"
    );

    // The third range's listing fails past the audit's retries.
    let faults = Faults::new([Rule {
        skip: 2,
        times: tiersweep::RetryPolicy::default().max_attempts,
        ..Rule::once(Op::LtList, Fault::Fail)
    }]);
    let first = Audit::new(faults.wrap(&stores), dry())
        .checkpoint(checkpoint.clone())
        .run()
        .await
        .expect("the audit reports");
    assert_eq!(first.failed().map(|r| r.index).collect::<Vec<_>>(), vec![2]);
    let saved = checkpoint
        .load()
        .await
        .expect("reading")
        .expect("a checkpoint");
    assert_eq!(
        saved.done.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 3]
    );

    let other = Audit::new(stores.clone(), AuditConfig { ranges: 5, ..dry() })
        .checkpoint(checkpoint.clone())
        .run()
        .await;
    assert!(
        matches!(other, Err(AuditError::CheckpointMismatch { .. })),
        "{other:?}"
    );

    let resumed = Audit::new(stores.clone(), dry())
        .checkpoint(checkpoint.clone())
        .run()
        .await
        .expect("the resumed audit reports");
    assert!(resumed.complete());
    assert_eq!(resumed.run, saved.run, "a resume continues the same run");
    let states: Vec<_> = resumed.ranges.iter().map(|r| r.state.clone()).collect();
    assert_eq!(
        states,
        vec![
            RangeState::Resumed,
            RangeState::Resumed,
            RangeState::Done,
            RangeState::Resumed
        ]
    );
    assert_eq!(
        resumed.totals.orphans, 4,
        "the resumed ranges' counts are kept"
    );
    assert_eq!(
        checkpoint.load().await.expect("reading"),
        None,
        "removed when complete"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tombstone whose blob was lost (deleted behind the writer's back) is reported; the
/// tombstones of live objects, overwritten ones included, are not. Nothing is repaired.
pub async fn an_audit_reports_exactly_the_dangling_tombstones(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let prefix = format!("audit{}/", uuid::Uuid::now_v7().simple());
    let writer = TieredStorage::new(stores.clone(), test_writer_config(protocol))
        .expect("valid writer config");
    let (lost, kept, overwritten) = (
        path_in(&prefix, 'a'),
        path_in(&prefix, 'M'),
        path_in(&prefix, '3'),
    );
    for path in [&lost, &kept, &overwritten] {
        writer.put(path, large("v1")).await.expect("a put");
    }
    writer
        .put(&overwritten, large("v2"))
        .await
        .expect("an overwrite");
    let blob = match stores.hv().read(&lost).await.expect("reading HV") {
        Some(tiersweep::model::HvValue::Tombstone(rev)) => rev,
        other => panic!("a large object is a tombstone: {other:?}"),
    };
    stores.lt().delete(&blob).await.expect("losing the blob");
    let trail = Arc::new(MemoryTrail::default());
    let report = audit(
        &stores,
        AuditConfig {
            dangling: true,
            ..config(protocol, &prefix, false)
        },
        &trail,
    )
    .await;
    assert!(report.complete(), "{report:#?}");
    assert_eq!(report.totals.tombstones_checked, 3, "{report:#?}");
    assert_eq!(report.totals.dangling, 1);
    assert_eq!(
        report.dangling_examples,
        vec![tiersweep::audit::DanglingSeen {
            object: lost.to_string(),
            blob: blob.to_string(),
        }]
    );
    assert!(
        matches!(stores.hv().read(&lost).await.expect("reading HV"), Some(tiersweep::model::HvValue::Tombstone(r)) if r == blob),
        "reported, not repaired"
    );
}
