//! The adversarial schedules: faults that production has and the crash matrix cannot
//! express (a job carrying someone else's token, a store call whose effect lands after its
//! caller saw an error, a write in flight for longer than every TTL, a read racing an
//! overwrite). Each broke an invariant before its fix; each is written once here and run
//! on every backend by [`safety_schedules!`](crate::safety_schedules), so a fix that holds
//! on the in-memory twin but not on the emulators (or the other way round) shows up.
//!
//! A schedule takes fresh stores and the protocol timings of its backend, and waits with
//! `tokio::time::sleep`: under paused time (the in-memory run) that costs nothing, on the
//! emulators it is real time with short timings.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::crash::{INLINE_THRESHOLD, test_recovery_config, test_writer_config, unique_path};
use tiersweep::changelog::{ChangelogEntry, ScanRequest, ScannedRow};
use tiersweep::model::{HvValue, ObjectMeta, ObjectPath, ShardSet, Timestamp};
use tiersweep::protocol::ProtocolConfig;
use tiersweep::queue::{FlowControl, JobQueue, MemoryQueue};
use tiersweep::recovery::{Cleaner, CleanupJob, JobOutcome};
use tiersweep::stores::Stores;
use tiersweep::testing::faults::{Fault, Faults, Op, Rule};
use tiersweep::writer::{Object, ReadOutcome, StreamOutcome, TieredStorage};

pub use crate::gated_writes::*;

/// Expands to one test per schedule. `$attr` is the test attribute (paused time for the
/// twin, a multi-threaded runtime for the emulators), `$stores` an async expression that
/// yields fresh [`Stores`], `$protocol` the [`ProtocolConfig`] to run with. With a
/// trailing `paused_time`, also the schedules that wait out day-long TTLs, which only
/// paused time can afford.
#[macro_export]
macro_rules! safety_schedules {
    (#[$attr:meta], $stores:expr, $protocol:expr, paused_time) => {
        $crate::safety_schedules!(#[$attr], $stores, $protocol);
        $crate::safety_schedules!(@each #[$attr], $stores, $protocol, [
            a_write_held_longer_than_every_ttl_is_refused,
            a_retry_after_a_day_long_stall_does_not_land,
            an_upload_retry_after_a_freeze_is_not_sent,
            a_retry_after_a_freeze_the_guard_survived_does_not_land,
        ]);
    };
    (#[$attr:meta], $stores:expr, $protocol:expr) => {
        $crate::safety_schedules!(@each #[$attr], $stores, $protocol, [
            a_job_carrying_the_writers_token_leaves_the_live_change_alone,
            a_straggling_write_after_a_conflict_is_refused,
            a_read_racing_an_overwrite_finds_the_new_value,
            recovery_does_not_report_a_tombstone_a_later_write_replaced,
            an_upload_that_lands_after_its_error_is_deleted,
            an_upload_landing_after_its_dead_writers_recovery_is_deleted,
            a_streamed_put_round_trips_inline_and_large,
            a_streamed_get_reads_what_get_reads,
            a_long_streamed_upload_keeps_its_change_alive,
            a_streamed_upload_that_outlives_its_guard_never_completes,
            metadata_comes_back_with_its_value,
            a_deferred_put_is_left_alone_until_its_deadline,
            a_deferred_put_whose_stream_ends_after_its_deadline_creates_nothing,
            a_deferred_put_whose_upload_fails_keeps_its_deadline,
            the_upload_overlaps_the_record_and_completes_only_after_it,
            a_crash_while_the_final_chunk_is_held_leaves_no_blob,
            a_failed_record_stops_the_upload_at_the_gate,
            a_guard_invalid_at_the_gate_stops_the_upload,
        ]);
    };
    (@each #[$attr:meta], $stores:expr, $protocol:expr, [$($name:ident),* $(,)?]) => {
        $(
            #[$attr]
            async fn $name() {
                let stores = $stores.await;
                $crate::schedules::$name(stores, $protocol).await;
            }
        )*
    };
}

/// Longer than a day: more than the 24-hour TTLs an earlier design of HV rested on, and
/// than any deadline a store call carries.
const LONGER_THAN_A_DAY: Duration = Duration::from_secs(25 * 3600);

pub(crate) fn large(tag: &str) -> Bytes {
    Bytes::from(format!("{tag}:{}", "S".repeat(INLINE_THRESHOLD * 2)))
}

/// A large put of a fresh object on `stores` that meets `faults` and dies at the crash
/// among them (asserted); returns the object. What it leaves (a row, maybe an upload) is
/// the schedule's to recover.
pub(crate) async fn dead_large_put(
    stores: &Stores,
    protocol: ProtocolConfig,
    faults: impl IntoIterator<Item = Rule>,
    tag: &str,
) -> ObjectPath {
    let path = unique_path();
    let faults = Faults::new(faults);
    let writer = TieredStorage::new(faults.wrap(stores), test_writer_config(protocol))
        .expect("valid writer config");
    let crashed = faults
        .run_until_crash({
            let (path, bytes) = (path.clone(), large(tag));
            async move { writer.put(&path, bytes).await }
        })
        .await;
    assert!(
        crashed.is_none(),
        "the writer died at its crash: {crashed:?}"
    );
    path
}

/// Every changelog row for `path`, whatever its stamp.
pub async fn entries_for(stores: &Stores, path: &ObjectPath) -> Vec<ChangelogEntry> {
    let mut out = Vec::new();
    let mut start_after = None;
    loop {
        let page = stores
            .changelog()
            .scan_stale(&ScanRequest {
                shards: ShardSet::ALL,
                cutoff: Timestamp(i64::MAX),
                stamped_from: None,
                now: Timestamp(i64::MAX),
                start_after,
                limit: 500,
                minted: None,
                report_waiting: false,
            })
            .await
            .expect("scanning the changelog");
        for row in page.rows {
            if let ScannedRow::Entry(e) = row
                && e.record.object == *path
            {
                out.push(e);
            }
        }
        match page.resume_after {
            Some(after) => start_after = Some(after),
            None => return out,
        }
    }
}

/// The names of every LT blob of `path` (its revisions are `{path}/{uuid}`).
pub async fn blobs_of(stores: &Stores, path: &ObjectPath) -> Vec<String> {
    stores
        .lt()
        .list(&tiersweep::lt::NameRange::prefix(path.as_str()), None)
        .await
        .expect("listing LT")
        .blobs
        .into_iter()
        .map(|b| b.name)
        .collect()
}

/// One embedded recovery pass over `stores` with the test timings (and the second pass of
/// the changes it deferred, after their settle).
async fn recovery_pass(
    stores: &Stores,
    protocol: ProtocolConfig,
) -> tiersweep::recovery::embedded::PassReport {
    crate::crash::pass_settled(stores, test_recovery_config(protocol)).await
}

/// Runs a recovery pass and asserts that nothing of `path` is left: no LT blob (`what`
/// says which one the schedule cares about) and no changelog row.
pub(crate) async fn recovery_leaves_nothing_of(
    stores: &Stores,
    path: &ObjectPath,
    protocol: ProtocolConfig,
    what: &str,
) {
    recovery_pass(stores, protocol).await;
    let left = blobs_of(stores, path).await;
    assert!(left.is_empty(), "{what}: {left:?}");
    assert!(entries_for(stores, path).await.is_empty());
}

/// The end of a schedule whose writer's retry came too late to be sent while the object was
/// deleted meanwhile: the writer reports an unknown outcome, and the delete stands.
async fn assert_retry_did_not_land_and_delete_stands(
    stores: &Stores,
    path: &ObjectPath,
    outcome: &Result<(), tiersweep::writer::WriteError>,
) {
    use tiersweep::writer::WriteError;
    assert!(
        matches!(outcome, Err(WriteError::OutcomeUnknown { .. }))
            || matches!(outcome, Err(WriteError::Store(e)) if e.to_string().contains("guard lapsed before a retry")),
        "the first attempt's response was lost, so the outcome is reported unknown: {outcome:?}"
    );
    assert_eq!(
        stores.hv().read(path).await.expect("reading HV"),
        None,
        "the acknowledged delete stands"
    );
}

/// Polls until `path` has a changelog row whose new revision is in LT (the writer has
/// recorded and uploaded), and returns the row.
async fn wait_for_upload(stores: &Stores, path: &ObjectPath) -> ChangelogEntry {
    for _ in 0..2000 {
        if let Some(e) = entries_for(stores, path).await.into_iter().next()
            && let Some(new) = &e.record.new
            && stores.lt().exists(new).await.expect("checking LT")
        {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the writer never recorded and uploaded {path}");
}

/// One delivery of `job` from a fresh in-process queue, handed to a cleaner on `stores`.
pub(crate) async fn deliver(
    stores: &Stores,
    protocol: ProtocolConfig,
    job: CleanupJob,
) -> JobOutcome {
    let queue = Arc::new(MemoryQueue::new(16, 5));
    queue
        .publish(vec![job.to_message(Default::default())])
        .await
        .expect("publishing the job");
    let mut subscription = queue
        .subscribe(FlowControl::default())
        .await
        .expect("subscribing");
    let delivery = subscription
        .next()
        .await
        .expect("a delivery")
        .expect("a delivery, not an error");
    Cleaner::new(stores.clone(), queue, test_recovery_config(protocol))
        .process(delivery)
        .await
}

/// Owner tokens are not secret: they are in the row, in `inspect`'s output, in log lines.
/// A job naming a live change and its *writer's* token used to pass the cleaner's
/// "owner == claim" check, and the cleaner fenced the row and deleted the in-flight upload
/// (I4). Only a row owned by a recovery claim may be converged.
pub async fn a_job_carrying_the_writers_token_leaves_the_live_change_alone(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let path = unique_path();
    let bytes = large("live");
    // The writer is held just before its compare-and-write reaches HV: recorded, uploaded,
    // heartbeating, valid.
    let hold = protocol.heartbeat_interval * 2;
    let faults = Faults::new([Rule::once(Op::HvCas, Fault::Delay(hold))]);
    let writer = TieredStorage::new(faults.wrap(&stores), test_writer_config(protocol))
        .expect("valid writer config");
    let put = tokio::spawn({
        let (path, bytes) = (path.clone(), bytes.clone());
        async move { writer.put(&path, bytes).await }
    });
    let entry = wait_for_upload(&stores, &path).await;
    assert!(!entry.record.owner.is_recovery_claim());

    let forged = CleanupJob::new(entry.id.clone(), entry.record.owner.clone());
    let outcome = deliver(&stores, protocol, forged).await;
    assert_eq!(
        outcome,
        JobOutcome::NotOurClaim,
        "the forged job is refused"
    );

    put.await
        .expect("the writer's task")
        .expect("the live write commits: nothing fenced it");
    let reader = TieredStorage::new(stores.clone(), test_writer_config(protocol))
        .expect("valid writer config");
    assert_eq!(
        reader.get(&path).await.expect("reading back"),
        ReadOutcome::Found(bytes.into()),
        "the acknowledged write reads back"
    );
    let new = entry.record.new.expect("a large put has a new revision");
    assert_eq!(
        stores.hv().read(&path).await.expect("reading HV"),
        Some(HvValue::Tombstone(new.clone()))
    );
    assert!(stores.lt().exists(&new).await.expect("checking LT"));
    assert!(
        entries_for(&stores, &path).await.is_empty(),
        "the writer completed its change"
    );
}

/// Waits until `faults` has seen `n` calls of `op`.
async fn wait_for_calls(faults: &Faults, op: Op, n: usize) {
    for _ in 0..2000 {
        if faults.calls().iter().filter(|o| **o == op).count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never saw {n} calls of {op:?}");
}

/// A writer's first compare-and-write times out on the client but is still queued at the
/// server; its retry finds that another writer has committed meanwhile (a conflict), so it
/// cleans up: deletes its upload and removes its row. A third writer deletes the object.
/// Then the first attempt executes, against a row it now matches, and points HV at the
/// upload that was deleted, with no changelog row left to repair it (I1, I2). The first
/// attempt expects a version the other writer replaced, and the writer fences the row
/// before it cleans up.
pub async fn a_straggling_write_after_a_conflict_is_refused(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let path = unique_path();
    let lands_after = protocol.staleness_threshold * 3;
    let faults = Faults::new([
        Rule::once(Op::HvCas, Fault::Straggle(lands_after)),
        // Holds the retry long enough for the other writer to commit first.
        Rule {
            op: Some(Op::HvCas),
            skip: 1,
            times: 1,
            fault: Fault::Delay(protocol.heartbeat_interval * 2),
        },
    ]);
    let config = test_writer_config(protocol);
    let slow = TieredStorage::new(faults.wrap(&stores), config).expect("valid writer config");
    let other = TieredStorage::new(stores.clone(), config).expect("valid writer config");
    let first = tokio::spawn({
        let path = path.clone();
        async move { slow.put(&path, large("straggler")).await }
    });
    wait_for_calls(&faults, Op::HvCas, 2).await;
    other
        .put(&path, large("winner"))
        .await
        .expect("the other writer commits while the first one retries");
    let outcome = first.await.expect("the first writer's task");
    // Its first attempt failed to it and may yet land, for all it knows: not a plain
    // conflict (which promises the write never lands).
    assert!(
        matches!(
            outcome,
            Err(tiersweep::writer::WriteError::OutcomeUnknown { .. })
        ),
        "the first writer is told its outcome is unknown: {outcome:?}"
    );
    other
        .delete(&path)
        .await
        .expect("a later delete is acknowledged");

    // The first attempt lands now, if anything lets it.
    tokio::time::sleep(lands_after + protocol.staleness_threshold).await;
    assert_eq!(
        stores.hv().read(&path).await.expect("reading HV"),
        None,
        "the acknowledged delete stands; the straggling write was refused"
    );
    assert!(entries_for(&stores, &path).await.is_empty());
    let leftover = blobs_of(&stores, &path).await;
    assert!(
        leftover.is_empty(),
        "no blob of the object is left: {leftover:?}"
    );
}

/// A writer passes its guard check, then its compare-and-write is held for longer than a
/// day (its VM suspended, a live-migration stall, a request stuck in a queue) while
/// recovery claims the change, fences the row, deletes the new upload and removes the row.
/// When fences expired after 24 h, the late write then matched and pointed HV at the
/// deleted blob, and the writer deleted the old one and returned Ok: an acknowledged write
/// with both revisions gone (I1). A recovery fence must never expire: it is a new version,
/// and the late write expects the one before it.
pub async fn a_write_held_longer_than_every_ttl_is_refused(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let path = unique_path();
    let config = test_writer_config(protocol);
    let clean = TieredStorage::new(stores.clone(), config).expect("valid writer config");
    let before = large("before");
    clean
        .put(&path, before.clone())
        .await
        .expect("preparing the object");

    let held = LONGER_THAN_A_DAY;
    // The whole process stalls: its write and its heartbeats.
    let faults = Faults::new([
        Rule::once(Op::HvCas, Fault::Delay(held)),
        Rule::on(Op::Heartbeat, Fault::Delay(held)),
    ]);
    let slow = TieredStorage::new(faults.wrap(&stores), config).expect("valid writer config");
    let late = tokio::spawn({
        let path = path.clone();
        async move { slow.put(&path, large("late")).await }
    });
    wait_for_calls(&faults, Op::HvCas, 1).await;

    tokio::time::sleep(protocol.staleness_threshold * 2).await;
    let pass = recovery_pass(&stores, protocol).await;
    assert_eq!(
        pass.converged, 1,
        "recovery converges the held change: {pass:?}"
    );

    let outcome = late.await.expect("the held writer's task");
    assert!(
        matches!(outcome, Err(tiersweep::writer::WriteError::Fenced { .. })),
        "the write that arrives a day late is refused: {outcome:?}"
    );
    assert_eq!(
        clean.get(&path).await.expect("reading back"),
        ReadOutcome::Found(before.into()),
        "the object still reads as before"
    );
    assert!(entries_for(&stores, &path).await.is_empty());
    let blobs = blobs_of(&stores, &path).await;
    assert_eq!(
        blobs.len(),
        1,
        "only the referenced blob is left: {blobs:?}"
    );
}

/// A writer's compare-and-write lands but its response is lost; the writer's process then
/// stalls for more than a day before it retries (its heartbeats stall with it). Meanwhile
/// the object is deleted. When a change's write left an `applied` marker with a 24-hour
/// TTL, the retry matched the now-empty row and resurrected the object as a tombstone to a
/// deleted blob, undoing an acknowledged delete (I1, I2). Now the retry expects a version
/// the delete replaced, and is not even sent: the guard counts the stall on the wall clock.
pub async fn a_retry_after_a_day_long_stall_does_not_land(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let path = unique_path();
    let stall = LONGER_THAN_A_DAY;
    let mut config = test_writer_config(protocol);
    // The stall falls between the first attempt and its retry.
    config.retry.min_delay = stall;
    config.retry.max_delay = stall;
    let faults = Faults::new([
        Rule::once(Op::HvCas, Fault::LoseResponse),
        Rule::on(Op::Heartbeat, Fault::Delay(stall * 2)),
    ]);
    let slow = TieredStorage::new(faults.wrap(&stores), config).expect("valid writer config");
    let stalled = tokio::spawn({
        let path = path.clone();
        async move { slow.put(&path, large("stalled")).await }
    });
    wait_for_calls(&faults, Op::HvCas, 1).await;
    let other = TieredStorage::new(stores.clone(), test_writer_config(protocol))
        .expect("valid writer config");
    other
        .delete(&path)
        .await
        .expect("the delete is acknowledged");

    let outcome = stalled.await.expect("the stalled writer's task");
    assert_retry_did_not_land_and_delete_stands(&stores, &path, &outcome).await;
    tokio::time::sleep(protocol.staleness_threshold * 2).await;
    recovery_leaves_nothing_of(&stores, &path, protocol, "nothing of the object is left").await;
}

/// A read fetches the tombstone of revision `a`; before it reads `a` from LT, an overwrite
/// commits `b` and deletes `a`. The read used to report the object gone (`Dangling`) and
/// log an error, though it had a value throughout. It must re-check HV and read `b`.
pub async fn a_read_racing_an_overwrite_finds_the_new_value(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let path = unique_path();
    let config = test_writer_config(protocol);
    let writer = TieredStorage::new(stores.clone(), config).expect("valid writer config");
    writer
        .put_with_meta(&path, large("a"), tagged("a"))
        .await
        .expect("writing the first value");
    let faults = Faults::new([Rule::once(
        Op::LtGet,
        Fault::Delay(protocol.heartbeat_interval * 2),
    )]);
    let reader = TieredStorage::new(faults.wrap(&stores), config).expect("valid writer config");
    let read = tokio::spawn({
        let path = path.clone();
        async move { reader.get(&path).await }
    });
    wait_for_calls(&faults, Op::LtGet, 1).await;
    writer
        .put_with_meta(&path, large("b"), tagged("b"))
        .await
        .expect("the overwrite commits while the read waits");
    let outcome = read.await.expect("the reader's task").expect("the read");
    // The metadata is the one written with the bytes returned, never the first value's.
    let b = Object {
        bytes: large("b"),
        meta: tagged("b"),
    };
    assert_eq!(outcome, ReadOutcome::Found(b));
}

/// Metadata with a content type, one user entry naming `tag`, and an expiry.
fn tagged(tag: &str) -> ObjectMeta {
    ObjectMeta::default()
        .with_content_type(format!("application/x-{tag}"))
        .expect("a valid content type")
        .with_user("tag", tag)
        .expect("a valid entry")
        .with_expiry(Timestamp(1_800_000_000_000))
}

/// Metadata comes back with the value it was written with, inline or large, put whole or
/// streamed, read whole or streamed; the blob carries it too; a later write without
/// metadata leaves none of the earlier one.
pub async fn metadata_comes_back_with_its_value(stores: Stores, protocol: ProtocolConfig) {
    use futures::StreamExt as _;
    let writer = TieredStorage::new(stores.clone(), test_writer_config(protocol))
        .expect("valid writer config");
    let read = |path: ObjectPath| {
        let writer = writer.clone();
        async move {
            let whole = match writer.get(&path).await.expect("reading") {
                ReadOutcome::Found(object) => object,
                other => panic!("{path}: {other:?}"),
            };
            let StreamOutcome::Found(body, meta) =
                writer.get_stream(&path).await.expect("opening a read")
            else {
                panic!("{path}: not found by a streamed read");
            };
            let chunks: Vec<Bytes> = body.map(|c| c.expect("a chunk")).collect().await;
            assert_eq!(
                (concat(&chunks), meta),
                (whole.bytes.clone(), whole.meta.clone()),
                "a streamed read returns what a whole read returns"
            );
            whole
        }
    };
    let path = unique_path();
    let small = Bytes::from_static(b"small");
    writer
        .put_with_meta(&path, small.clone(), tagged("inline"))
        .await
        .expect("an inline put");
    assert_eq!(read(path.clone()).await.meta, tagged("inline"));

    writer
        .put_with_meta(&path, large("whole"), tagged("whole"))
        .await
        .expect("a large put");
    assert_eq!(read(path.clone()).await.meta, tagged("whole"));
    let blobs = blobs_of(&stores, &path).await;
    let [blob] = blobs.as_slice() else {
        panic!("one blob: {blobs:?}");
    };
    let rev = tiersweep::model::Revision::parse(blob.clone()).expect("a revision name");
    let info = stores
        .lt()
        .stat(&rev)
        .await
        .expect("stat")
        .expect("the blob");
    assert_eq!(
        info.meta,
        tagged("whole"),
        "the blob carries the metadata too"
    );

    let parts: Vec<Bytes> = (0..3).map(|i| large(&format!("part{i}"))).collect();
    let body = futures::stream::iter(parts.clone().into_iter().map(Ok));
    writer
        .put_stream_with_meta(&path, body, tagged("streamed"))
        .await
        .expect("a streamed put");
    let object = read(path.clone()).await;
    assert_eq!(
        (object.bytes, object.meta),
        (concat(&parts), tagged("streamed"))
    );

    writer
        .put(&path, large("plain"))
        .await
        .expect("a put without metadata");
    assert!(read(path.clone()).await.meta.is_empty());
    writer
        .put_with_meta(&path, small.clone(), tagged("again"))
        .await
        .expect("an inline put");
    writer.put(&path, small).await.expect("an inline put");
    assert!(read(path.clone()).await.meta.is_empty());
    assert!(entries_for(&stores, &path).await.is_empty());
}

/// A writer crashes right after its HV write, so recovery keeps its new revision and checks
/// that the blob exists. Between recovery's fenced read and that check, a later writer
/// overwrites the object and deletes the revision. The blob is missing, but nothing dangles:
/// recovery used to report (and count) a dangling tombstone anyway.
pub async fn recovery_does_not_report_a_tombstone_a_later_write_replaced(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let path = unique_path();
    let config = test_writer_config(protocol);
    let crashing = Faults::new([Rule::once(Op::HvCas, Fault::CrashAfter)]);
    let writer = TieredStorage::new(crashing.wrap(&stores), config).expect("valid writer config");
    let crashed = crashing
        .run_until_crash({
            let path = path.clone();
            async move { writer.put(&path, large("crashed")).await }
        })
        .await;
    assert!(crashed.is_none(), "the writer crashed after its HV write");

    tokio::time::sleep(protocol.staleness_threshold * 2).await;
    let slow_check = Faults::new([Rule::once(
        Op::LtExists,
        Fault::Delay(protocol.heartbeat_interval * 2),
    )]);
    let recovery = tiersweep::recovery::EmbeddedRecovery::new(
        slow_check.wrap(&stores),
        test_recovery_config(protocol),
    );
    let pass = tokio::spawn(async move { recovery.run_pass().await });
    wait_for_calls(&slow_check, Op::LtExists, 1).await;
    let later = TieredStorage::new(stores.clone(), config).expect("valid writer config");
    later
        .put(&path, large("later"))
        .await
        .expect("a later overwrite commits");
    let pass = pass
        .await
        .expect("the recovery task")
        .expect("a recovery pass");
    assert_eq!(pass.converged, 1, "{pass:?}");
    assert_eq!(pass.dangling, 0, "nothing dangles: {pass:?}");
    assert_eq!(
        later.get(&path).await.expect("reading back"),
        ReadOutcome::Found(large("later").into())
    );
}

/// The upload call fails to its caller (a timeout, a reset) but the service finalizes the
/// object afterwards. The writer used to delete `new` (404), remove its row and return the
/// error, leaving a blob that no row names, forever (I2). It must keep its row, due for
/// recovery once a late upload can no longer land.
pub async fn an_upload_that_lands_after_its_error_is_deleted(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let path = unique_path();
    let lands_after = protocol.heartbeat_interval * 2;
    let mut config = test_writer_config(protocol);
    config.upload_settle = lands_after * 2;
    // Every attempt fails to the writer, and lands anyway.
    let faults = Faults::new([Rule::on(Op::LtPut, Fault::Straggle(lands_after))]);
    let writer = TieredStorage::new(faults.wrap(&stores), config).expect("valid writer config");
    let outcome = writer.put(&path, large("unlucky")).await;
    assert!(
        outcome.is_err(),
        "the upload failed to the writer: {outcome:?}"
    );
    assert_eq!(stores.hv().read(&path).await.expect("reading HV"), None);

    tokio::time::sleep(lands_after * 2).await;
    let landed = blobs_of(&stores, &path).await;
    assert!(
        !landed.is_empty(),
        "the schedule is real: the upload landed after its error"
    );
    let rows = entries_for(&stores, &path).await;
    assert_eq!(rows.len(), 1, "the writer kept its row for recovery");

    tokio::time::sleep(config.upload_settle + protocol.staleness_threshold * 2).await;
    recovery_leaves_nothing_of(&stores, &path, protocol, "the late upload is deleted").await;
}

/// A writer's first upload attempt fails to it but is still on its way (bytes in a proxy, a
/// retransmission); the retry lands; the writer dies before its HV write. Recovery deletes
/// the upload and used to remove the row; then the first attempt landed, a blob no row
/// names (I2). Recovery keeps the row for the settle and converges it again.
pub async fn an_upload_landing_after_its_dead_writers_recovery_is_deleted(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let path = unique_path();
    let recovery = test_recovery_config(protocol);
    // After recovery's first pass (one threshold in), halfway through its settle.
    let half = recovery.upload_settle / 2;
    let lands_after = protocol.staleness_threshold + half;
    let faults = Faults::new([
        Rule::once(Op::LtPut, Fault::Straggle(lands_after)),
        Rule::once(Op::HvCas, Fault::CrashBefore),
    ]);
    let writer = TieredStorage::new(faults.wrap(&stores), test_writer_config(protocol))
        .expect("valid writer config");
    let crashed = faults
        .run_until_crash({
            let path = path.clone();
            async move { writer.put(&path, large("dead")).await }
        })
        .await;
    assert!(crashed.is_none(), "the writer died before its HV write");

    tokio::time::sleep(protocol.staleness_threshold + Duration::from_millis(50)).await;
    let first = tiersweep::recovery::EmbeddedRecovery::new(stores.clone(), recovery.clone())
        .run_pass()
        .await
        .expect("a recovery pass");
    assert_eq!(
        (first.converged, first.deferred),
        (1, 1),
        "recovery deletes the upload and keeps the row: {first:?}"
    );
    assert!(
        blobs_of(&stores, &path).await.is_empty(),
        "the upload is deleted"
    );
    tokio::time::sleep(half).await;
    assert!(
        !blobs_of(&stores, &path).await.is_empty(),
        "the schedule is real: the first attempt landed after recovery deleted the upload"
    );
    assert_eq!(entries_for(&stores, &path).await.len(), 1, "the row waits");
    tokio::time::sleep(half + protocol.staleness_threshold * 2).await;
    // The pass after the settle looks before it deletes; one that cannot look (GCS down)
    // deletes nothing and keeps the row, whose claim then lapses for a later pass.
    let blind = Faults::new([Rule::on(Op::LtExists, Fault::Fail)]);
    let failed = tiersweep::recovery::EmbeddedRecovery::new(blind.wrap(&stores), recovery.clone())
        .run_pass()
        .await
        .expect("a recovery pass");
    assert_eq!(failed.converged, 0, "{failed:?}");
    assert!(
        !blobs_of(&stores, &path).await.is_empty(),
        "a pass that could not look deleted nothing"
    );
    assert_eq!(
        entries_for(&stores, &path).await.len(),
        1,
        "a pass that could not look kept the row"
    );
    tokio::time::sleep(recovery.claim_lease + protocol.staleness_threshold).await;
    recovery_leaves_nothing_of(&stores, &path, protocol, "the late landing is deleted").await;
    assert_eq!(stores.hv().read(&path).await.expect("reading HV"), None);
}

/// The writer's view of `stores` from a host that freezes (VM suspend, SIGSTOP) for `d`
/// right after its first call of `op` lands: nothing it sends leaves meanwhile, its
/// monotonic clock does not count the time, and the call's connection is found reset.
fn frozen_writer(stores: &Stores, op: Op, d: Duration) -> Stores {
    let clock = tiersweep::testing::SkewedClock::new(stores.clock().clone());
    let hook = crate::simulation::hooks::Freeze::new(op, d, clock.clone());
    tiersweep::testing::intercept::wrap(hook, stores).with_clock(clock)
}

/// A writer's upload lands, then its host freezes for longer than the staleness threshold.
/// Recovery converges the change meanwhile (deletes the upload, removes the row). On waking,
/// the writer saw its upload fail and used to retry it at once; when its process then died,
/// the retry had landed with no row naming it, an orphan forever (I2). An upload attempt is
/// sent only while the guard is valid, like an HV write.
pub async fn an_upload_retry_after_a_freeze_is_not_sent(stores: Stores, protocol: ProtocolConfig) {
    let path = unique_path();
    let freeze = protocol.staleness_threshold * 3;
    // The process dies right after a retried upload lands, if one is sent.
    let faults = Faults::new([Rule {
        op: Some(Op::LtPut),
        skip: 1,
        times: 1,
        fault: Fault::CrashAfter,
    }]);
    let writer = TieredStorage::new(
        frozen_writer(&faults.wrap(&stores), Op::LtPut, freeze),
        test_writer_config(protocol),
    )
    .expect("valid writer config");
    let frozen = tokio::spawn({
        let path = path.clone();
        async move { writer.put(&path, large("frozen")).await }
    });
    tokio::time::sleep(protocol.staleness_threshold * 2).await;
    let pass = recovery_pass(&stores, protocol).await;
    assert_eq!(
        pass.converged, 1,
        "recovery converges the frozen change: {pass:?}"
    );

    tokio::time::sleep(freeze).await;
    assert!(
        !faults.is_crashed(),
        "no upload attempt was sent after the freeze"
    );
    let outcome = frozen.await.expect("the frozen writer's task");
    assert!(
        outcome.is_err(),
        "the write fails after the freeze: {outcome:?}"
    );
    tokio::time::sleep(protocol.staleness_threshold * 2).await;
    recovery_leaves_nothing_of(&stores, &path, protocol, "no upload is left behind").await;
    assert_eq!(stores.hv().read(&path).await.expect("reading HV"), None);
}

/// A writer's compare-and-write lands, then its host freezes for more than a day while
/// recovery is down, and the object is deleted meanwhile. On waking, a heartbeat succeeds
/// (the row is still the writer's), so the guard is valid again and the retry is sent.
/// When the first attempt's `applied` marker aged out after 24 hours, the retry matched the
/// empty row and resurrected the object as a tombstone to the blob the delete had removed
/// (I1). Now it expects the version the delete replaced and is refused; the writer fences
/// the row and reports the outcome unknown.
pub async fn a_retry_after_a_freeze_the_guard_survived_does_not_land(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let path = unique_path();
    let freeze = LONGER_THAN_A_DAY;
    let writer = TieredStorage::new(
        frozen_writer(&stores, Op::HvCas, freeze),
        test_writer_config(protocol),
    )
    .expect("valid writer config");
    let frozen = tokio::spawn({
        let path = path.clone();
        async move { writer.put(&path, large("frozen")).await }
    });
    tokio::time::sleep(protocol.heartbeat_interval).await;
    assert!(
        matches!(
            stores.hv().read(&path).await.expect("reading HV"),
            Some(HvValue::Tombstone(_))
        ),
        "the first attempt landed"
    );
    TieredStorage::new(stores.clone(), test_writer_config(protocol))
        .expect("valid writer config")
        .delete(&path)
        .await
        .expect("the delete is acknowledged");

    let outcome = frozen.await.expect("the frozen writer's task");
    assert_retry_did_not_land_and_delete_stands(&stores, &path, &outcome).await;
    tokio::time::sleep(protocol.staleness_threshold * 2).await;
    recovery_leaves_nothing_of(&stores, &path, protocol, "nothing of the object is left").await;
}

/// The clock skew between hosts that these schedules give a writer: far more than the
/// staleness threshold, as a host whose NTP broke can drift.
pub const SKEW: Duration = Duration::from_secs(3600);

/// A writer whose clock runs an hour ahead records a change, uploads, and crashes. When
/// liveness stamps were the writer's own time, its row looked fresh for an hour and its
/// crash stayed hidden from recovery that long. Stamps are the changelog's own time, so
/// recovery converges it after the threshold. `writer` is the writer's view of the stores
/// (its process clock is [`SKEW`] ahead), `recovery` the recovery process's view.
pub async fn a_writer_clock_running_ahead_does_not_hide_its_crash(
    recovery: Stores,
    writer: Stores,
    protocol: ProtocolConfig,
) {
    let path = dead_large_put(
        &writer,
        protocol,
        [Rule::once(Op::LtPut, Fault::CrashAfter)],
        "ahead",
    )
    .await;
    tokio::time::sleep(protocol.staleness_threshold * 2).await;
    let pass = recovery_pass(&recovery, protocol).await;
    assert_eq!(
        pass.converged, 1,
        "the crash is recovered after the threshold: {pass:?}"
    );
    let left = blobs_of(&recovery, &path).await;
    assert!(left.is_empty(), "the upload is deleted: {left:?}");
}

/// A writer whose clock runs an hour behind is alive and heartbeating while a recovery
/// pass runs. When stamps were the writer's time, its row looked an hour old, recovery
/// claimed it and fenced a healthy write. It must be left alone.
pub async fn a_writer_clock_running_behind_keeps_its_live_write(
    recovery: Stores,
    writer: Stores,
    protocol: ProtocolConfig,
) {
    let path = unique_path();
    let bytes = large("behind");
    let hold = protocol.heartbeat_interval * 2;
    let faults = Faults::new([Rule::once(Op::HvCas, Fault::Delay(hold))]);
    let w = TieredStorage::new(faults.wrap(&writer), test_writer_config(protocol))
        .expect("valid writer config");
    let put = tokio::spawn({
        let (path, bytes) = (path.clone(), bytes.clone());
        async move { w.put(&path, bytes).await }
    });
    wait_for_upload(&recovery, &path).await;
    let pass = recovery_pass(&recovery, protocol).await;
    assert_eq!(pass.scan.won, 0, "nothing is claimed: {pass:?}");
    put.await
        .expect("the writer's task")
        .expect("the live write commits");
    let reader = TieredStorage::new(recovery.clone(), test_writer_config(protocol))
        .expect("valid writer config");
    assert_eq!(
        reader.get(&path).await.expect("reading back"),
        ReadOutcome::Found(bytes.into())
    );
}

/// `parts` as a stream that waits `gap` before each part after the first: a client
/// sending an object slowly.
fn slow_stream(
    parts: Vec<Bytes>,
    gap: Duration,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::unfold(
        (parts.into_iter(), true),
        move |(mut parts, first)| async move {
            let part = parts.next()?;
            if !first {
                tokio::time::sleep(gap).await;
            }
            Some((Ok(part), (parts, false)))
        },
    )
}

fn concat(parts: &[Bytes]) -> Bytes {
    parts
        .iter()
        .flat_map(|p| p.iter().copied())
        .collect::<Vec<u8>>()
        .into()
}

/// A streamed put stores what a `put` of the same bytes would: inline when the stream
/// ends within the inline threshold (whatever its chunking), in LT when it does not, and
/// leaves no changelog row behind.
pub async fn a_streamed_put_round_trips_inline_and_large(stores: Stores, protocol: ProtocolConfig) {
    let writer = TieredStorage::new(stores.clone(), test_writer_config(protocol))
        .expect("valid writer config");
    let small = unique_path();
    let parts = vec![Bytes::from_static(b"tiny "), Bytes::from_static(b"object")];
    writer
        .put_stream(
            &small,
            futures::stream::iter(parts.clone().into_iter().map(Ok)),
        )
        .await
        .expect("a small streamed put");
    assert_eq!(
        stores.hv().read(&small).await.expect("reading HV"),
        Some(HvValue::Inline(concat(&parts))),
        "a stream within the threshold is stored inline"
    );
    let big = unique_path();
    let parts: Vec<Bytes> = (0..5).map(|i| large(&format!("part{i}"))).collect();
    writer
        .put_stream(
            &big,
            futures::stream::iter(parts.clone().into_iter().map(Ok)),
        )
        .await
        .expect("a large streamed put");
    assert_eq!(
        writer.get(&big).await.expect("reading it back"),
        ReadOutcome::Found(concat(&parts).into())
    );
    assert_eq!(blobs_of(&stores, &big).await.len(), 1);
    assert!(entries_for(&stores, &big).await.is_empty());
    // A stream that fails before the writer decided writes nothing.
    let failed = unique_path();
    let err = writer
        .put_stream(
            &failed,
            futures::stream::iter([Err(std::io::Error::other("client went away"))]),
        )
        .await
        .expect_err("a failing stream");
    assert!(
        matches!(err, tiersweep::writer::WriteError::Body { .. }),
        "{err}"
    );
    assert_eq!(stores.hv().read(&failed).await.expect("reading HV"), None);
    assert!(entries_for(&stores, &failed).await.is_empty());
}

/// A streamed get reads what `get` reads: inline values, LT blobs, not found; and, like
/// `get`, it follows an overwrite that commits (and deletes the revision it was about to
/// open) between its HV read and its LT open.
pub async fn a_streamed_get_reads_what_get_reads(stores: Stores, protocol: ProtocolConfig) {
    async fn collect(outcome: StreamOutcome) -> Option<Bytes> {
        use futures::StreamExt as _;
        let StreamOutcome::Found(mut stream, _) = outcome else {
            return None;
        };
        let mut all = Vec::new();
        while let Some(chunk) = stream.next().await {
            all.extend_from_slice(&chunk.expect("a chunk of the object"));
        }
        Some(all.into())
    }
    let config = test_writer_config(protocol);
    let writer = TieredStorage::new(stores.clone(), config).expect("valid writer config");
    let (small, big) = (unique_path(), unique_path());
    writer
        .put(&small, Bytes::from_static(b"inline"))
        .await
        .expect("a small put");
    writer.put(&big, large("big")).await.expect("a large put");
    for (path, value) in [
        (&small, Bytes::from_static(b"inline")),
        (&big, large("big")),
    ] {
        let outcome = writer.get_stream(path).await.expect("a streamed read");
        assert_eq!(collect(outcome).await, Some(value));
    }
    let missing = writer
        .get_stream(&unique_path())
        .await
        .expect("a streamed read");
    assert!(matches!(missing, StreamOutcome::NotFound), "{missing:?}");

    let faults = Faults::new([Rule::once(
        Op::LtGet,
        Fault::Delay(protocol.heartbeat_interval * 2),
    )]);
    let reader = TieredStorage::new(faults.wrap(&stores), config).expect("valid writer config");
    let read = tokio::spawn({
        let path = big.clone();
        async move { reader.get_stream(&path).await }
    });
    wait_for_calls(&faults, Op::LtGet, 1).await;
    writer
        .put(&big, large("newer"))
        .await
        .expect("the overwrite commits while the read waits");
    let outcome = read.await.expect("the reader's task").expect("the read");
    assert_eq!(collect(outcome).await, Some(large("newer")));
}

/// An upload that takes several staleness thresholds: the guard heartbeats all along, so
/// recovery, running meanwhile, leaves the change alone, and the put lands.
pub async fn a_long_streamed_upload_keeps_its_change_alive(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let path = unique_path();
    let writer = TieredStorage::new(stores.clone(), test_writer_config(protocol))
        .expect("valid writer config");
    let parts: Vec<Bytes> = (0..4).map(|i| large(&format!("slow{i}"))).collect();
    let put = tokio::spawn({
        let (path, body) = (
            path.clone(),
            slow_stream(parts.clone(), protocol.staleness_threshold),
        );
        async move { writer.put_stream(&path, body).await }
    });
    tokio::time::sleep(protocol.staleness_threshold * 2).await;
    let pass = recovery_pass(&stores, protocol).await;
    assert_eq!(
        pass.converged, 0,
        "a heartbeated upload is not stale: {pass:?}"
    );
    put.await
        .expect("the writer's task")
        .expect("the slow upload lands");
    let reader = TieredStorage::new(stores.clone(), test_writer_config(protocol))
        .expect("valid writer config");
    assert_eq!(
        reader.get(&path).await.expect("reading it back"),
        ReadOutcome::Found(concat(&parts).into())
    );
    assert!(entries_for(&stores, &path).await.is_empty());
}

/// The writer's heartbeats fail while its client is still sending the object slowly;
/// recovery claims the stale change and converges it (deletes the revision that does not
/// exist yet, removes the row). If the rest of the stream were still sent, the upload
/// would complete after that, and with the writer's process dead right after, the blob
/// would be an orphan no row names (I2). The upload is checked against the guard before
/// every chunk, so it stops instead and never completes.
pub async fn a_streamed_upload_that_outlives_its_guard_never_completes(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let path = unique_path();
    let faults = Faults::new([
        Rule {
            op: Some(Op::Heartbeat),
            skip: 0,
            times: usize::MAX,
            fault: Fault::Fail,
        },
        // The process dies as soon as the upload call returns, whatever it returned.
        Rule {
            op: Some(Op::LtPut),
            skip: 0,
            times: 1,
            fault: Fault::CrashAfter,
        },
    ]);
    let writer = TieredStorage::new(faults.wrap(&stores), test_writer_config(protocol))
        .expect("valid writer config");
    // The late chunk is sent only once recovery has converged the change, so if the
    // upload went on regardless, the blob would land after recovery's delete.
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let body = futures::StreamExt::chain(
        futures::stream::iter([Ok(large("first"))]),
        futures::stream::once(async move {
            let _ = released.await;
            Ok(large("late"))
        }),
    );
    let put = tokio::spawn({
        let (faults, path) = (faults.clone(), path.clone());
        async move {
            faults
                .run_until_crash(async move { writer.put_stream(&path, body).await })
                .await
        }
    });
    tokio::time::sleep(protocol.staleness_threshold * 2).await;
    let pass = recovery_pass(&stores, protocol).await;
    assert_eq!(
        pass.converged, 1,
        "recovery converges the stale change: {pass:?}"
    );
    assert!(entries_for(&stores, &path).await.is_empty());
    release
        .send(())
        .expect("the upload still waits for its late chunk");
    let outcome = put.await.expect("the writer's task");
    assert!(
        faults.is_crashed(),
        "the writer died after its upload call: {outcome:?}"
    );
    let left = blobs_of(&stores, &path).await;
    assert!(
        left.is_empty(),
        "the upload completed after its change was converged: {left:?}"
    );
    assert_eq!(stores.hv().read(&path).await.expect("reading HV"), None);
}

/// A deferred put (a multipart upload a client assembles over hours) is recorded with a
/// deadline and not heartbeated. Recovery leaves it alone until the deadline, however long
/// its parts take past the staleness threshold, and the put lands with its metadata. One
/// its client abandons is converged once the deadline has passed (a settle pass included:
/// the client may be sending the last bytes at the deadline), and the object keeps its
/// earlier value; finishing it after that is refused and writes nothing. An aborted one
/// leaves no row; a deadline within the safety margin is refused.
pub async fn a_deferred_put_is_left_alone_until_its_deadline(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    use tiersweep::writer::{GuardState, WriteError};
    let writer = TieredStorage::new(stores.clone(), test_writer_config(protocol))
        .expect("valid writer config");
    let threshold = protocol.staleness_threshold;
    let within = threshold * 4;
    let read = |path: ObjectPath| {
        let writer = writer.clone();
        async move {
            match writer.get(&path).await.expect("reading") {
                ReadOutcome::Found(object) => object,
                other => panic!("{path}: {other:?}"),
            }
        }
    };

    let path = unique_path();
    writer.put(&path, large("before")).await.expect("a put");
    let put = writer
        .begin_deferred_put(&path, tagged("deferred"), within)
        .await
        .expect("beginning a deferred put");
    let parts: Vec<Bytes> = (0..3).map(|i| large(&format!("part{i}"))).collect();
    let finish = tokio::spawn({
        let (writer, body) = (writer.clone(), slow_stream(parts.clone(), threshold));
        async move { writer.finish_deferred_put(put, body).await }
    });
    tokio::time::sleep(threshold * 2).await;
    let pass = recovery_pass(&stores, protocol).await;
    assert_eq!(
        (pass.converged, pass.deferred),
        (0, 0),
        "a deferred put is not due before its deadline: {pass:?}"
    );
    finish
        .await
        .expect("the writer's task")
        .expect("the deferred put lands");
    let object = read(path.clone()).await;
    assert_eq!(
        (object.bytes, object.meta),
        (concat(&parts), tagged("deferred"))
    );
    assert_eq!(
        blobs_of(&stores, &path).await.len(),
        1,
        "the old value is deleted"
    );
    assert!(entries_for(&stores, &path).await.is_empty());

    let abandoned = unique_path();
    writer.put(&abandoned, large("kept")).await.expect("a put");
    let put = writer
        .begin_deferred_put(&abandoned, ObjectMeta::default(), within)
        .await
        .expect("beginning a deferred put");
    let deadline = put.deadline().expect("a deferred put has a deadline");
    tokio::time::sleep(threshold * 2).await;
    recovery_pass(&stores, protocol).await;
    assert_eq!(
        entries_for(&stores, &abandoned).await.len(),
        1,
        "the change waits for its deadline"
    );
    assert_eq!(put.state(), GuardState::Valid);
    tokio::time::sleep(within + threshold).await;
    assert_eq!(
        put.state(),
        GuardState::Expired,
        "the put may not be finished past its deadline"
    );
    assert!(
        stores
            .changelog()
            .now()
            .await
            .expect("the changelog's time")
            > deadline,
        "the schedule waited past the deadline"
    );
    let pass = recovery_pass(&stores, protocol).await;
    assert_eq!(
        pass.deferred, 1,
        "recovery settles an abandoned upload: {pass:?}"
    );
    assert!(entries_for(&stores, &abandoned).await.is_empty());
    let late = writer
        .finish_deferred_put(put, futures::stream::iter([Ok(large("late"))]))
        .await;
    assert!(
        matches!(
            late,
            Err(WriteError::GuardLost {
                state: GuardState::Expired,
                ..
            })
        ),
        "{late:?}"
    );
    assert_eq!(read(abandoned.clone()).await.bytes, large("kept"));
    assert_eq!(blobs_of(&stores, &abandoned).await.len(), 1);
    assert!(entries_for(&stores, &abandoned).await.is_empty());

    let put = writer
        .begin_deferred_put(&abandoned, ObjectMeta::default(), within)
        .await
        .expect("beginning a deferred put");
    writer
        .abort_deferred_put(put)
        .await
        .expect("aborting a deferred put");
    assert!(entries_for(&stores, &abandoned).await.is_empty());
    assert_eq!(read(abandoned.clone()).await.bytes, large("kept"));

    let short = writer
        .begin_deferred_put(&abandoned, ObjectMeta::default(), protocol.safety_margin)
        .await;
    assert!(
        matches!(short, Err(WriteError::DeadlineTooShort { .. })),
        "{short:?}"
    );
    assert!(entries_for(&stores, &abandoned).await.is_empty());
}

/// A writer meeting `faults` that has begun a deferred put of a fresh object, due `within`.
async fn begin_deferred(
    stores: &Stores,
    protocol: ProtocolConfig,
    faults: &Arc<Faults>,
    within: Duration,
) -> (TieredStorage, ObjectPath, tiersweep::writer::DeferredPut) {
    let writer = TieredStorage::new(faults.wrap(stores), test_writer_config(protocol))
        .expect("valid writer config");
    let path = unique_path();
    let put = writer
        .begin_deferred_put(&path, ObjectMeta::default(), within)
        .await
        .expect("beginning a deferred put");
    (writer, path, put)
}

/// A deferred put's upload fails long before its deadline. The writer hands the change to
/// recovery due after its upload settle — but never earlier than the deadline the row
/// already carries: a scanner that saw the row watches it until the time it saw, so an
/// earlier due time would only be taken up then anyway, and a due time written means
/// "not before", which a later one keeps.
pub async fn a_deferred_put_whose_upload_fails_keeps_its_deadline(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let failing = Faults::new([Rule::once(Op::LtPut, Fault::Fail)]);
    let (writer, path, put) = begin_deferred(
        &stores,
        protocol,
        &failing,
        protocol.staleness_threshold * 8,
    )
    .await;
    let [before] = &entries_for(&stores, &path).await[..] else {
        panic!("a deferred put is recorded");
    };
    let deadline = before
        .record
        .due_at
        .expect("a deferred put carries its deadline");
    let body = futures::stream::iter([Ok::<Bytes, std::io::Error>(large("failing"))]);
    let finished = writer.finish_deferred_put(put, body).await;
    assert!(finished.is_err(), "the upload failed: {finished:?}");
    let [after] = &entries_for(&stores, &path).await[..] else {
        panic!("the failed put's change is left to recovery");
    };
    assert!(
        after.record.settled,
        "deferred for its upload settle: {after:?}"
    );
    assert!(
        after.record.due_at >= Some(deadline),
        "due no earlier than the put's deadline {deadline:?}: {after:?}"
    );
}

/// A deferred put's client sends every part in time but ends its stream (completes the
/// upload) long after the put's deadline, after recovery has converged the change and
/// removed its row; the writer dies right after its upload call returns. The end of the
/// stream used to be unchecked (each chunk was checked as it was yielded), so the object
/// came to exist then, with no row naming it and no writer left to delete it: an orphan
/// (I2) that no settle covers, since the end can come at any time. The last chunk is held
/// until the end and goes only while the guard is valid: nothing is created.
pub async fn a_deferred_put_whose_stream_ends_after_its_deadline_creates_nothing(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let threshold = protocol.staleness_threshold;
    let within = threshold * 4;
    let hold = within + threshold * 6;
    let dying = Faults::new([Rule::once(Op::LtPut, Fault::CrashAfter)]);
    let (writer, path, put) = begin_deferred(&stores, protocol, &dying, within).await;
    let parts: Vec<Bytes> = (0..3).map(|i| large(&format!("late{i}"))).collect();
    // Every part at once; the end only after `hold`.
    let body = futures::stream::unfold(parts.into_iter(), move |mut parts| async move {
        match parts.next() {
            Some(part) => Some((Ok::<Bytes, std::io::Error>(part), parts)),
            None => {
                tokio::time::sleep(hold).await;
                None
            }
        }
    });
    let finish = tokio::spawn(async move {
        dying
            .run_until_crash(async move { writer.finish_deferred_put(put, body).await })
            .await
    });
    tokio::time::sleep(within + threshold).await;
    crate::crash::pass_settled(&stores, test_recovery_config(protocol)).await;
    assert!(
        entries_for(&stores, &path).await.is_empty(),
        "recovery converged the expired change before its stream ended"
    );
    let outcome = finish.await.expect("the writer's task");
    assert!(
        !matches!(outcome, Some(Ok(()))),
        "the put cannot succeed after its deadline: {outcome:?}"
    );
    recovery_leaves_nothing_of(&stores, &path, protocol, "a late end created nothing").await;
}
