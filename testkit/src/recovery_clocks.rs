//! Schedules for recovery hosts whose clocks are wrong, on one backend at a time (run on
//! the twins by `tests/safety_memory.rs`, on the emulators by `tests/safety_emulators.rs`).
//!
//! Every time a recovery decision depends on is the changelog's (Bigtable's server): a
//! cleaner's or scanner's own clock may be off by hours. Each schedule takes the honest view
//! of the stores and a skewed one (the same tables and bucket; only `Stores::clock`
//! differs), off by more than [`settle`] (the tests use [`crate::schedules::SKEW`], an hour).

use std::time::Duration;

use crate::crash::test_recovery_config;
use crate::schedules::{blobs_of, dead_large_put, deliver, entries_for};
use tiersweep::model::ObjectPath;
use tiersweep::protocol::ProtocolConfig;
use tiersweep::recovery::{CleanupJob, EmbeddedRecovery, JobOutcome, RecoveryConfig};
use tiersweep::stores::Stores;
use tiersweep::testing::faults::{Fault, Faults, Op, Rule};

/// The settle these schedules run with: much longer than the staleness threshold, as
/// deployed (10 min against 30 s), so that a settle cut short shows.
pub fn settle(protocol: ProtocolConfig) -> Duration {
    protocol.staleness_threshold * 8
}

fn config(protocol: ProtocolConfig) -> RecoveryConfig {
    RecoveryConfig {
        upload_settle: settle(protocol),
        ..test_recovery_config(protocol)
    }
}

/// A writer whose first upload attempt fails to it but is still on its way, lands at
/// `lands_after` from now, and who dies before its HV write: the change recovery must
/// converge twice, its second pass after the straggler can no longer land.
async fn dead_writer_with_a_straggling_upload(
    stores: &Stores,
    protocol: ProtocolConfig,
    lands_after: Duration,
) -> ObjectPath {
    let faults = [
        Rule::once(Op::LtPut, Fault::Straggle(lands_after)),
        Rule::once(Op::HvCas, Fault::CrashBefore),
    ];
    dead_large_put(stores, protocol, faults, "dead").await
}

/// The end every schedule here must reach: once the straggler has landed and the settle
/// is over, recovery deletes it and removes the row (I2).
async fn converges_in_the_end(stores: &Stores, path: &ObjectPath, protocol: ProtocolConfig) {
    tokio::time::sleep(settle(protocol) + protocol.staleness_threshold * 2).await;
    let pass = EmbeddedRecovery::new(stores.clone(), config(protocol))
        .run_pass()
        .await
        .expect("a recovery pass");
    assert_eq!(pass.deferred, 0, "the second pass defers nothing: {pass:?}");
    let left = blobs_of(stores, path).await;
    assert!(left.is_empty(), "the late upload is deleted: {left:?}");
    assert!(
        entries_for(stores, path).await.is_empty(),
        "the row is gone"
    );
}

/// A cleaner whose clock runs behind by more than the settle deletes a dead writer's
/// upload and defers the row for the settle. When `due_at` was the cleaner's clock
/// plus the settle, the row was due at once in the changelog's time: the next pass
/// removed it, and the writer's upload, landing within the settle, was an orphan no row
/// names (I2). The settle is stamped in the changelog's time.
pub async fn a_cleaner_clock_behind_does_not_cut_the_settle_short(
    honest: Stores,
    behind: Stores,
    protocol: ProtocolConfig,
) {
    let threshold = protocol.staleness_threshold;
    let lands_after = threshold + settle(protocol) / 2;
    let path = dead_writer_with_a_straggling_upload(&honest, protocol, lands_after).await;
    tokio::time::sleep(threshold + Duration::from_millis(50)).await;
    let first = EmbeddedRecovery::new(behind, config(protocol))
        .run_pass()
        .await
        .expect("a recovery pass on the skewed host");
    assert_eq!(
        (first.converged, first.deferred),
        (1, 1),
        "the skewed cleaner deletes the upload and defers the row: {first:?}"
    );
    // Past the row's staleness, well inside the settle.
    tokio::time::sleep(threshold * 2).await;
    let early = EmbeddedRecovery::new(honest.clone(), config(protocol))
        .run_pass()
        .await
        .expect("a recovery pass");
    assert_eq!(
        (early.converged, entries_for(&honest, &path).await.len()),
        (0, 1),
        "inside the settle the row is not due, whatever the deferring host's clock said: {early:?}"
    );
    tokio::time::sleep(lands_after.saturating_sub(threshold * 3)).await;
    assert!(
        !blobs_of(&honest, &path).await.is_empty(),
        "the schedule is real: the straggling upload landed after the first pass"
    );
    converges_in_the_end(&honest, &path, protocol).await;
}

/// Recovery defers a dead writer's row for the settle; the job that deferred it is
/// delivered again (Pub/Sub is at-least-once) to a cleaner whose clock runs ahead by more
/// than the settle. When that cleaner judged `due_at` on its own clock, it found the
/// row due, converged it and removed it, and the upload landing within the settle was an
/// orphan (I2). The cleaner judges it in the changelog's time: not due.
pub async fn a_duplicate_job_on_a_cleaner_ahead_does_not_cut_the_settle_short(
    honest: Stores,
    ahead: Stores,
    protocol: ProtocolConfig,
) {
    let threshold = protocol.staleness_threshold;
    let lands_after = threshold + settle(protocol) / 2;
    let path = dead_writer_with_a_straggling_upload(&honest, protocol, lands_after).await;
    tokio::time::sleep(threshold + Duration::from_millis(50)).await;
    let first = EmbeddedRecovery::new(honest.clone(), config(protocol))
        .run_pass()
        .await
        .expect("a recovery pass");
    assert_eq!((first.converged, first.deferred), (1, 1), "{first:?}");
    let rows = entries_for(&honest, &path).await;
    let [row] = rows.as_slice() else {
        panic!("one deferred row: {rows:?}");
    };
    assert!(row.record.due_at.is_some(), "the row is deferred");
    // The same job again: the deferring claim is still the row's owner.
    let duplicate = CleanupJob::new(row.id.clone(), row.record.owner.clone());
    assert_eq!(
        deliver(&ahead, protocol, duplicate).await,
        JobOutcome::NotDue,
        "a duplicate inside the settle touches nothing, whatever the cleaner's clock says"
    );
    assert_eq!(entries_for(&honest, &path).await.len(), 1, "the row waits");
    tokio::time::sleep(lands_after.saturating_sub(threshold)).await;
    assert!(
        !blobs_of(&honest, &path).await.is_empty(),
        "the schedule is real: the straggling upload landed after the first pass"
    );
    converges_in_the_end(&honest, &path, protocol).await;
}

/// A cleaner whose clock runs behind by more than a claim's lease works on a job longer
/// than the lease (a slow call). It keeps the claim alive as it works; when it extended
/// the lease to its own clock plus a lease — a time already past in the changelog's time —
/// the extension was refused (a lease is never shortened), the lease ran out mid-work and
/// the row could be claimed again while its job was still in hand. Extensions are in the
/// changelog's time: the row stays leased to the working cleaner.
pub async fn a_cleaner_clock_behind_keeps_its_claim_while_it_works(
    honest: Stores,
    behind: Stores,
    protocol: ProtocolConfig,
) {
    let lease = test_recovery_config(protocol).claim_lease;
    let faults = [Rule::once(Op::HvCas, Fault::CrashBefore)];
    let path = dead_large_put(&honest, protocol, faults, "slow").await;
    tokio::time::sleep(protocol.staleness_threshold + Duration::from_millis(50)).await;
    let rows = entries_for(&honest, &path).await;
    let [row] = rows.as_slice() else {
        panic!("one row: {rows:?}");
    };
    let now = honest
        .changelog()
        .now()
        .await
        .expect("the changelog's time");
    let claimer = tiersweep::model::OwnerToken::recovery_claim();
    let claimed = honest
        .changelog()
        .claim(
            row,
            now.saturating_sub(protocol.staleness_threshold),
            &claimer,
            now.saturating_add(lease),
        )
        .await
        .expect("claiming");
    assert!(
        matches!(claimed, tiersweep::changelog::Claim::Won(_)),
        "{claimed:?}"
    );
    // The cleaner's fence is held for three leases.
    let slow = Faults::new([Rule::once(Op::HvFence, Fault::Delay(lease * 3))]);
    let job = CleanupJob::new(row.id.clone(), claimer.clone());
    let working = tokio::spawn({
        let stores = slow.wrap(&behind);
        async move { deliver(&stores, protocol, job).await }
    });
    tokio::time::sleep(lease * 2).await;
    let rows = entries_for(&honest, &path).await;
    let now = honest
        .changelog()
        .now()
        .await
        .expect("the changelog's time");
    let [row] = rows.as_slice() else {
        panic!("one row: {rows:?}");
    };
    assert_eq!(
        row.record.owner, claimer,
        "still the working cleaner's claim"
    );
    assert!(
        row.stamp > now,
        "two leases in, the claim is still leased (stamp {:?}, now {now:?}): the cleaner kept it alive",
        row.stamp
    );
    assert!(
        matches!(
            working.await.expect("the cleaner's task"),
            JobOutcome::Converged(_)
        ),
        "the slow job converges"
    );
}
