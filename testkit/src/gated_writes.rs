//! Schedules of the gated write path (a large put's upload starts at once; its final chunk
//! waits until the change's record has landed with the guard valid): the crash matrix's
//! new steps, written once and run on every backend through
//! [`safety_schedules!`](crate::safety_schedules).

use std::time::Duration;

use bytes::Bytes;

use crate::crash::{INLINE_THRESHOLD, test_writer_config, unique_path};
use crate::schedules::{blobs_of, entries_for, recovery_leaves_nothing_of};
use tiersweep::model::ObjectPath;
use tiersweep::protocol::ProtocolConfig;
use tiersweep::stores::Stores;
use tiersweep::testing::faults::{Fault, Faults, Op, Rule};
use tiersweep::writer::{ReadOutcome, TieredStorage, WriteError};

fn large(tag: &str) -> Bytes {
    Bytes::from(format!("{tag}:{}", "G".repeat(INLINE_THRESHOLD * 4)))
}

/// After recovery, nothing of `path`: no row, no blob, no HV value (the put never committed).
async fn nothing_left_of(stores: &Stores, path: &ObjectPath, protocol: ProtocolConfig, what: &str) {
    recovery_leaves_nothing_of(stores, path, protocol, what).await;
    assert_eq!(
        stores.hv().read(path).await.expect("reading HV"),
        None,
        "{what}"
    );
}

/// A body of several chunks whose last one is what the gate holds.
fn chunked(tag: &'static str) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send {
    futures::stream::iter((0..4).map(move |i| Ok(large(&format!("{tag}{i}")))))
}

/// The record is slow; meanwhile the upload is under way (its call was made before the
/// record's) and no blob exists. Then the put completes and reads back.
pub async fn the_upload_overlaps_the_record_and_completes_only_after_it(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let path = unique_path();
    let slow = protocol.safety_margin / 2;
    let faults = Faults::new([Rule::once(Op::Record, Fault::Delay(slow))]);
    let writer = TieredStorage::new(faults.wrap(&stores), test_writer_config(protocol))
        .expect("valid writer config");
    let put = tokio::spawn({
        let path = path.clone();
        async move { writer.put(&path, large("gated")).await }
    });
    tokio::time::sleep(slow / 2).await;
    let calls = faults.calls();
    assert!(
        calls.contains(&Op::LtPut) && calls.contains(&Op::Record),
        "the upload is under way while the record is: {calls:?}"
    );
    assert!(
        blobs_of(&stores, &path).await.is_empty(),
        "no blob before its record has landed"
    );
    put.await
        .expect("the writer's task")
        .expect("the put succeeds once the record lands");
    let read = stores.hv().read(&path).await.expect("reading HV");
    assert!(read.is_some(), "the put committed");
    let writer = TieredStorage::new(stores.clone(), test_writer_config(protocol))
        .expect("valid writer config");
    match writer.get(&path).await.expect("reading back") {
        ReadOutcome::Found(object) => assert_eq!(object.bytes, large("gated")),
        other => panic!("the put reads back: {other:?}"),
    }
}

/// The writer dies while its upload's final chunk is held (the record in flight): the
/// upload never completes, with or without the record landing, and recovery leaves
/// nothing behind.
pub async fn a_crash_while_the_final_chunk_is_held_leaves_no_blob(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    for fault in [Fault::CrashBefore, Fault::CrashAfter] {
        let path = unique_path();
        let faults = Faults::new([Rule::once(Op::Record, fault)]);
        let writer = TieredStorage::new(faults.wrap(&stores), test_writer_config(protocol))
            .expect("valid writer config");
        let crashed = faults
            .run_until_crash({
                let path = path.clone();
                async move { writer.put_stream(&path, chunked("held")).await }
            })
            .await;
        assert!(crashed.is_none(), "{fault:?}: the writer died");
        assert_eq!(
            faults.calls().first(),
            Some(&Op::LtPut),
            "the upload started first"
        );
        // Long enough for any upload still on its way to land, and for recovery.
        tokio::time::sleep(protocol.staleness_threshold * 2).await;
        assert!(
            blobs_of(&stores, &path).await.is_empty(),
            "{fault:?}: an upload whose final chunk was held completed"
        );
        nothing_left_of(&stores, &path, protocol, &format!("{fault:?}")).await;
    }
}

/// The record fails — outright, or it lands and the writer never hears so: the gate stays
/// shut, the upload ends with an error, the put fails, and no blob ever exists; a row that
/// landed is converged by recovery.
pub async fn a_failed_record_stops_the_upload_at_the_gate(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    for fault in [Fault::Fail, Fault::LoseResponse] {
        let path = unique_path();
        let faults = Faults::new([Rule::on(Op::Record, fault)]);
        let writer = TieredStorage::new(faults.wrap(&stores), test_writer_config(protocol))
            .expect("valid writer config");
        let outcome = writer.put(&path, large("unrecorded")).await;
        assert!(
            matches!(outcome, Err(WriteError::Store(_))),
            "{fault:?}: the put fails with the record's error: {outcome:?}"
        );
        assert!(
            blobs_of(&stores, &path).await.is_empty(),
            "{fault:?}: the upload completed without a record"
        );
        let rows = entries_for(&stores, &path).await;
        match fault {
            Fault::Fail => assert!(rows.is_empty(), "nothing was recorded"),
            _ => assert!(!rows.is_empty(), "the lost record landed"),
        }
        tokio::time::sleep(protocol.staleness_threshold * 2).await;
        nothing_left_of(&stores, &path, protocol, &format!("{fault:?}")).await;
    }
}

/// The record lands, but so late that the guard is no longer valid when the gate is
/// reached: the gate shuts, the put reports its change lost to recovery, and no blob
/// exists then or after recovery.
pub async fn a_guard_invalid_at_the_gate_stops_the_upload(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let path = unique_path();
    let late = protocol.guard_validity() + Duration::from_millis(100);
    // The writer cannot delete what it uploaded: only the gate keeps the blob from
    // existing.
    let faults = Faults::new([
        Rule::once(Op::Record, Fault::Delay(late)),
        Rule::on(Op::LtDelete, Fault::Fail),
    ]);
    let writer = TieredStorage::new(faults.wrap(&stores), test_writer_config(protocol))
        .expect("valid writer config");
    let outcome = writer.put_stream(&path, chunked("late")).await;
    assert!(
        matches!(outcome, Err(WriteError::GuardLost { .. })),
        "the put reports its guard lost: {outcome:?}"
    );
    assert!(
        blobs_of(&stores, &path).await.is_empty(),
        "the upload completed past its guard"
    );
    tokio::time::sleep(protocol.staleness_threshold * 2).await;
    nothing_left_of(&stores, &path, protocol, "a guard invalid at the gate").await;
}
