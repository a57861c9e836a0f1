//! The protocol's crash and race tests on the in-memory stores, under paused tokio time so
//! that waiting out heartbeats and thresholds costs nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use tiersweep::config::ProtocolConfig;
use tiersweep::testing::MemoryStores;
use tiersweep::testing::faults::{Fault, Faults, Op, Rule};
use tiersweep::testing::invariants::{self, Acceptable};
use tiersweep::writer::{GuardState, TieredStorage, WriteError, WriterConfig};
use tiersweep_testkit::backlog::{BacklogPlan, drain};
use tiersweep_testkit::crash::{
    self, CrashPoint, SCENARIOS, Scenario, test_recovery_config, test_writer_config,
};

fn protocol() -> ProtocolConfig {
    ProtocolConfig::default()
}

fn writer(stores: &tiersweep::Stores) -> TieredStorage {
    TieredStorage::new(stores.clone(), test_writer_config(protocol())).unwrap()
}

async fn recover(stores: &tiersweep::Stores) -> tiersweep::recovery::embedded::PassReport {
    crash::recover_settled(stores, test_recovery_config(protocol())).await
}

async fn check(
    stores: &tiersweep::Stores,
    path: &tiersweep::model::ObjectPath,
    acceptable: Acceptable,
) -> invariants::InvariantReport {
    invariants::check(stores, &BTreeMap::from([(path.clone(), acceptable)]))
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_crash_at_every_step_converges_after_one_recovery_pass() {
    crash_at_every_step(test_writer_config(protocol())).await;
}

#[tokio::test(start_paused = true)]
async fn a_crash_at_every_step_converges_with_background_completion_too() {
    crash_at_every_step(WriterConfig {
        background_completions: 4,
        ..test_writer_config(protocol())
    })
    .await;
}

async fn crash_at_every_step(config: WriterConfig) {
    let mut points = 0;
    for scenario in SCENARIOS {
        let calls = crash::calls_of(scenario, &MemoryStores::new().stores(), config).await;
        // read, record, upload (large puts only), CAS, old-blob delete (when there is an
        // old blob), remove.
        assert!(
            calls.contains(&Op::Record)
                && calls.contains(&Op::HvCas)
                && calls.contains(&Op::Remove),
            "{scenario:?} makes the protocol's calls: {calls:?}"
        );
        // A large put's upload is the gated one: sent first, beside the read and the
        // record, so the matrix crashes it with its final chunk held (before the record,
        // after it) as well as after it completed.
        if matches!(scenario, Scenario::LargePut | Scenario::LargeOverLarge) {
            assert_eq!(
                calls[..3],
                [Op::LtPut, Op::HvRead, Op::Record],
                "{scenario:?}: {calls:?}"
            );
        }
        for call in 0..calls.len() {
            for fault in [Fault::CrashBefore, Fault::CrashAfter] {
                let stores = MemoryStores::new().stores();
                crash::crash_and_recover(
                    scenario,
                    CrashPoint { call, fault },
                    &stores,
                    config,
                    test_recovery_config(protocol()),
                )
                .await;
                points += 1;
            }
        }
    }
    assert!(points >= 4 * 2 * 4, "covered {points} crash points");
}

#[tokio::test(start_paused = true)]
async fn a_lost_cas_response_is_retried_idempotently() {
    let stores = MemoryStores::new().stores();
    let path = crash::unique_path();
    let faults = Faults::new([Rule::once(Op::HvCas, Fault::LoseResponse)]);
    let w = TieredStorage::new(faults.wrap(&stores), test_writer_config(protocol())).unwrap();
    let (_, after) = Scenario::LargePut.values();
    w.put(&path, after.clone().unwrap())
        .await
        .expect("the retry sees its own write");
    assert_eq!(
        faults.calls().iter().filter(|o| **o == Op::HvCas).count(),
        2
    );
    check(&stores, &path, vec![after]).await.assert_converged();
}

#[tokio::test(start_paused = true)]
async fn a_cas_whose_responses_are_all_lost_converges_through_recovery() {
    let stores = MemoryStores::new().stores();
    let path = crash::unique_path();
    writer(&stores)
        .put(&path, Scenario::LargeOverLarge.values().0.unwrap())
        .await
        .unwrap();
    let faults = Faults::new([Rule::on(Op::HvCas, Fault::LoseResponse)]);
    let w = TieredStorage::new(faults.wrap(&stores), test_writer_config(protocol())).unwrap();
    let after = Scenario::LargeOverLarge.values().1;
    let err = w.put(&path, after.clone().unwrap()).await.unwrap_err();
    assert!(matches!(err, WriteError::Store(_)), "{err}");
    // The write did land; recovery must keep it and delete the old revision.
    let pass = recover(&stores).await;
    assert_eq!(pass.converged, 1);
    let report = check(&stores, &path, vec![after]).await;
    report.assert_converged();
}

/// The write returns at the CAS; the old blob's delete and the row's removal follow, and
/// `flush` waits for them.
#[tokio::test(start_paused = true)]
async fn background_completion_returns_at_the_commit_and_flush_completes_the_change() {
    let stores = MemoryStores::new().stores();
    let path = crash::unique_path();
    let config = WriterConfig {
        background_completions: 2,
        ..test_writer_config(protocol())
    };
    let old = Bytes::from(format!("old{}", "x".repeat(64)));
    let new = Bytes::from(format!("new{}", "y".repeat(64)));
    TieredStorage::new(stores.clone(), config)
        .unwrap()
        .put(&path, old)
        .await
        .unwrap();
    let slow_remove = Faults::new([Rule::on(Op::Remove, Fault::Delay(Duration::from_secs(3)))]);
    let writer = TieredStorage::new(slow_remove.wrap(&stores), config).unwrap();
    writer.flush().await;

    writer.put(&path, new.clone()).await.unwrap();
    assert_eq!(
        writer.get(&path).await.unwrap(),
        tiersweep::writer::ReadOutcome::Found(new.clone().into()),
        "readable as soon as the write returns"
    );
    let pending = check(&stores, &path, vec![Some(new.clone())]).await;
    assert!(
        !pending.is_converged(),
        "the row is still there: {pending:#?}"
    );

    writer.flush().await;
    check(&stores, &path, vec![Some(new)])
        .await
        .assert_converged();
    assert!(slow_remove.calls().contains(&Op::Remove));
}

#[tokio::test(start_paused = true)]
async fn racing_writers_leave_the_winner_and_clean_the_loser() {
    let stores = MemoryStores::new().stores();
    let path = crash::unique_path();
    // Uploads of different lengths: both writers read HV before either commits.
    let slow_upload =
        |secs| Faults::new([Rule::on(Op::LtPut, Fault::Delay(Duration::from_secs(secs)))]);
    let wa =
        TieredStorage::new(slow_upload(1).wrap(&stores), test_writer_config(protocol())).unwrap();
    let wb =
        TieredStorage::new(slow_upload(2).wrap(&stores), test_writer_config(protocol())).unwrap();
    let a = Bytes::from(format!("A{}", "x".repeat(64)));
    let b = Bytes::from(format!("B{}", "x".repeat(64)));
    let (ra, rb) = tokio::join!(wa.put(&path, a.clone()), wb.put(&path, b.clone()));
    let winner = match (&ra, &rb) {
        (Ok(()), Err(WriteError::Conflict { .. })) => a,
        (Err(WriteError::Conflict { .. }), Ok(())) => b,
        other => panic!("exactly one writer wins: {other:?}"),
    };
    // No recovery needed: the loser cleaned up its own blob.
    check(&stores, &path, vec![Some(winner)])
        .await
        .assert_converged();
}

#[tokio::test(start_paused = true)]
async fn a_failed_heartbeat_aborts_before_the_cas_and_recovery_converges() {
    let stores = MemoryStores::new().stores();
    let (path, before, err, calls) =
        crash::overwrite_with_failing_heartbeats(&stores, test_writer_config(protocol())).await;
    assert!(
        matches!(
            err,
            WriteError::GuardLost {
                state: GuardState::HeartbeatFailed,
                ..
            }
        ),
        "{err}"
    );
    assert!(!calls.contains(&Op::HvCas), "no CAS after the guard failed");
    let pass = recover(&stores).await;
    assert_eq!(pass.converged, 1);
    check(&stores, &path, vec![before]).await.assert_converged();
}

/// Overwrites a large object with a writer that stalls for 60 s where `stalled` says (its
/// heartbeats stall too), runs recovery elsewhere meanwhile, and checks that the object
/// converged to its old value. Returns the writer's error and the calls it made.
async fn stalled_overwrite(stalled: Rule) -> (WriteError, Vec<Op>) {
    let stores = MemoryStores::new().stores();
    let path = crash::unique_path();
    let (before, after) = Scenario::LargeOverLarge.values();
    writer(&stores)
        .put(&path, before.clone().unwrap())
        .await
        .unwrap();
    let faults = Faults::new([Rule::on(Op::Heartbeat, Fault::Delay(STALL)), stalled]);
    let w = TieredStorage::new(faults.wrap(&stores), test_writer_config(protocol())).unwrap();
    let write = tokio::spawn({
        let path = path.clone();
        async move { w.put(&path, after.unwrap()).await }
    });
    // Meanwhile recovery elsewhere finds the entry stale, claims and converges it.
    let pass = recover(&stores).await;
    assert_eq!((pass.scan.won, pass.converged), (1, 1), "{pass:?}");
    let err = write.await.unwrap().unwrap_err();
    check(&stores, &path, vec![before]).await.assert_converged();
    (err, faults.calls())
}

const STALL: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn a_paused_writer_is_fenced_and_leaves_nothing_behind() {
    // The process stalls in the middle of its upload. The upload lands after recovery
    // converged; the writer, finding its guard invalid, deletes it itself.
    let (err, calls) = stalled_overwrite(Rule::on(Op::LtPut, Fault::Delay(STALL))).await;
    // Expired on its own clock, or failed because the heartbeat could not get out in time.
    assert!(matches!(err, WriteError::GuardLost { .. }), "{err}");
    assert!(
        !calls.contains(&Op::HvCas),
        "an invalid guard never sends its CAS"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cas_that_arrives_after_recovery_is_refused_by_the_fence() {
    // The guard is valid when checked, then the process stalls with its CAS unsent.
    let fenced = || {
        tiersweep::telemetry::metrics::registry()
            .writers_fenced
            .get()
    };
    let before = fenced();
    let (err, calls) = stalled_overwrite(Rule::once(Op::HvCas, Fault::Delay(STALL))).await;
    assert!(matches!(err, WriteError::Fenced { .. }), "{err}");
    assert!(calls.contains(&Op::HvCas));
    // Counted once (nextest gives each test its own process, so nothing else moves it).
    assert_eq!(fenced() - before, 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_recoveries_claim_every_stale_entry_exactly_once() {
    crash::concurrent_recoveries(&MemoryStores::new().stores(), protocol(), 60).await;
}

#[tokio::test(start_paused = true)]
async fn a_dangling_tombstone_reads_as_not_found_and_is_reported() {
    let ms = MemoryStores::new();
    let stores = ms.stores();
    let path = crash::unique_path();
    let w = writer(&stores);
    w.put(&path, Scenario::LargePut.values().1.unwrap())
        .await
        .unwrap();
    let Some(tiersweep::model::HvValue::Tombstone(rev)) = stores.hv().read(&path).await.unwrap()
    else {
        panic!("a large put leaves a tombstone");
    };
    stores.lt().delete(&rev).await.unwrap();
    assert_eq!(
        w.get(&path).await.unwrap(),
        tiersweep::writer::ReadOutcome::Dangling(rev.clone())
    );
    let report = check(&stores, &path, vec![]).await;
    assert_eq!(report.dangling, vec![(path, rev)]);
}

#[tokio::test(start_paused = true)]
async fn malformed_rows_are_reported_and_left_in_place() {
    let ms = MemoryStores::new();
    let stores = ms.stores();
    let id = tiersweep::model::ChangeId::mint();
    ms.changelog.insert_raw(
        id.as_str(),
        b"{\"v\":1,\"object\":".to_vec(),
        ms.clock.now(),
    );
    let pass = recover(&stores).await;
    assert_eq!(pass.scan.malformed, 1);
    assert_eq!(pass.scan.won, 0);
    assert_eq!(
        ms.changelog.keys(),
        vec![id.as_str().to_owned()],
        "the row stays for an operator"
    );
}

#[tokio::test(start_paused = true)]
async fn a_backlog_slower_than_a_lease_is_claimed_once_with_backpressure() {
    let stores = MemoryStores::new().stores();
    let d = tiersweep_testkit::backlog::drain_slower_than_a_lease(&stores, protocol(), 12, 2).await;
    assert_eq!(d.claims_won, d.changes, "no row claimed twice: {d:?}");
    assert!(d.held_back > 0, "the scanner held back: {d:?}");
}

#[tokio::test(start_paused = true)]
async fn without_backpressure_the_same_backlog_is_claimed_again() {
    // The control: the schedule is real, queued jobs do outlive their claims.
    let stores = MemoryStores::new().stores();
    let d = tiersweep_testkit::backlog::drain_slower_than_a_lease(&stores, protocol(), 12, 0).await;
    assert!(d.claims_won > d.changes, "re-claims of queued work: {d:?}");
    assert_eq!(d.held_back, 0);
}

#[tokio::test(start_paused = true)]
async fn a_job_in_hand_longer_than_its_lease_is_not_claimed_again() {
    let stores = MemoryStores::new().stores();
    let plan = BacklogPlan {
        changes: 4,
        max_queued_claims: 2,
        leases_per_change: 2.0,
        ..BacklogPlan::default()
    };
    let d = drain(&stores, protocol(), plan).await;
    assert_eq!(d.claims_won, d.changes, "no row claimed twice: {d:?}");
    assert!(
        d.extended_in_hand >= d.changes,
        "the cleaner kept each claim alive: {d:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lost_job_is_published_again_under_its_claim() {
    let stores = MemoryStores::new().stores();
    let plan = BacklogPlan {
        changes: 6,
        max_queued_claims: 10,
        leases_per_change: 0.05,
        lost: 2,
        ..BacklogPlan::default()
    };
    let d = drain(&stores, protocol(), plan).await;
    assert_eq!(
        d.claims_won, d.changes,
        "republished, not claimed again: {d:?}"
    );
    assert_eq!(d.republished, 2, "each lost job once: {d:?}");
    assert!(
        d.extended_queued > 0,
        "the scanner kept the lost jobs' claims alive: {d:?}"
    );
    // The bound: `republish_after` (two leases here) plus a review interval (a quarter of
    // a lease) and the cleaner's time; a lease and a half of slack would be a re-claim's.
    let lease = protocol().staleness_threshold * 2;
    assert!(
        d.took < lease * 3,
        "lost jobs recovered within the bound: {d:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn rows_a_cleaner_deferred_free_the_scanners_room() {
    // Recovered before their HV write, these changes are deferred for the upload settle;
    // a scanner that counted them as still queued would hold back the rest for a settle.
    let stores = MemoryStores::new().stores();
    let lease = protocol().staleness_threshold * 2;
    let plan = BacklogPlan {
        changes: 4,
        max_queued_claims: 2,
        leases_per_change: 0.05,
        upload_settle: lease * 5,
        ..BacklogPlan::default()
    };
    let d = drain(&stores, protocol(), plan).await;
    assert!(d.held_back > 0, "the scanner held back: {d:?}");
    assert!(
        d.took < plan.upload_settle + lease * 2,
        "one settle, not one per max_queued_claims: {d:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn deferred_rows_beyond_the_watch_set_are_read_about_once_more() {
    // Every change is recovered before its HV write, so deferred for the settle, and the
    // scanner watches two rows: the rest wait in overflow spans, read once they fall due.
    let stores = MemoryStores::new().stores();
    let lease = protocol().staleness_threshold * 2;
    let plan = BacklogPlan {
        changes: 60,
        leases_per_change: 0.005,
        upload_settle: lease * 10,
        watch_room: Some(2),
        ..BacklogPlan::default()
    };
    let d = drain(&stores, protocol(), plan).await;
    // Each change is read by a round, when its claim's lease could end and after its
    // settle: about 3. Re-read every round during the settle, about 60.
    let per_change = d.rows_read as f64 / d.changes as f64;
    assert!(
        per_change <= 5.0,
        "{per_change:.1} rows read per change: {d:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_backlog_under_backpressure_is_read_about_once_per_change() {
    // Cleaners slower than the scanner keep its room full through the whole drain, so
    // every page has room for only the few claims taken since the last one.
    let stores = MemoryStores::new().stores();
    let plan = BacklogPlan {
        changes: 300,
        max_queued_claims: 60,
        leases_per_change: 0.01,
        ..BacklogPlan::default()
    };
    let d = drain(&stores, protocol(), plan).await;
    assert_eq!(d.claims_won, d.changes, "no row claimed twice: {d:?}");
    // A page reads as many rows as there is room for and one, and makes room by re-reading
    // its oldest waiting claims: 4.6 rows read per change, two by scans and the rest by
    // reviews. Reading a batch per page, and every waiting claim to make room, read 9.2.
    let per_change = (d.rows_read + d.rows_reviewed) as f64 / d.changes as f64;
    assert!(
        per_change <= 6.0,
        "{per_change:.2} rows read per change: {d:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn fresh_crashes_during_a_drain_do_not_wait_behind_it() {
    let stores = MemoryStores::new().stores();
    let plan = BacklogPlan {
        changes: 120,
        max_queued_claims: 10,
        leases_per_change: 0.05,
        fresh_crashes: 3,
        ..BacklogPlan::default()
    };
    let d = drain(&stores, protocol(), plan).await;
    let lag = d.fresh_lag.expect("the fresh crashes converged");
    // Their jobs queue behind at most `max_queued_claims` others: 10 × 3 s, plus a poll.
    let per_change = protocol().staleness_threshold * 2 / 20;
    let bound = per_change * 10 + protocol().heartbeat_interval * 2;
    assert!(
        lag <= bound,
        "fresh crashes waited {lag:?} (> {bound:?}): {d:?}"
    );
    assert!(
        d.backlog_left_then >= plan.changes / 8,
        "converged ahead of the backlog: {d:?}"
    );
}
