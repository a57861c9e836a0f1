//! The adversarial schedules (`tiersweep_testkit::schedules`) on the in-memory twins,
//! under paused time: waits cost nothing, so each schedule runs in milliseconds.

use std::sync::Arc;
use std::time::Duration;

use tiersweep::config::ProtocolConfig;
use tiersweep_testkit::schedules;

fn protocol() -> ProtocolConfig {
    ProtocolConfig {
        heartbeat_interval: Duration::from_millis(500),
        staleness_threshold: Duration::from_secs(2),
        safety_margin: Duration::from_millis(500),
    }
}

tiersweep_testkit::safety_schedules!(
    #[tokio::test(start_paused = true)],
    async { tiersweep::testing::MemoryStores::new().stores() },
    protocol(),
    paused_time
);

tiersweep_testkit::audit_scenarios!(
    #[tokio::test(start_paused = true)],
    async { tiersweep::testing::MemoryStores::new().stores() },
    protocol()
);

tiersweep_testkit::audit_fanout_scenarios!(
    #[tokio::test(start_paused = true)],
    async {
        let runs: std::sync::Arc<dyn tiersweep::audit::AuditRuns> =
            std::sync::Arc::new(tiersweep::audit::MemoryRuns::new());
        (tiersweep::testing::MemoryStores::new().stores(), runs)
    },
    protocol()
);

/// The writer's and recovery's views of one set of in-memory stores; the writer's process
/// clock is `skew` away. The twin's changelog stamps in its own time, as Bigtable's server
/// does.
fn skewed_pair(ahead: bool) -> (tiersweep::Stores, tiersweep::Stores) {
    let m = tiersweep::testing::MemoryStores::new();
    let clock = tiersweep::testing::SkewedClock::new(m.clock.clone());
    clock.jump(schedules::SKEW, ahead);
    let writer = m.stores().with_clock(clock);
    (m.stores(), writer)
}

#[tokio::test(start_paused = true)]
async fn a_writer_clock_running_ahead_does_not_hide_its_crash() {
    let (recovery, writer) = skewed_pair(true);
    schedules::a_writer_clock_running_ahead_does_not_hide_its_crash(recovery, writer, protocol())
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_writer_clock_running_behind_keeps_its_live_write() {
    let (recovery, writer) = skewed_pair(false);
    schedules::a_writer_clock_running_behind_keeps_its_live_write(recovery, writer, protocol())
        .await;
}

// Recovery hosts whose clocks are wrong (tiersweep_testkit::recovery_clocks).

#[tokio::test(start_paused = true)]
async fn a_cleaner_clock_behind_does_not_cut_the_settle_short() {
    let (honest, behind) = skewed_pair(false);
    tiersweep_testkit::recovery_clocks::a_cleaner_clock_behind_does_not_cut_the_settle_short(
        honest,
        behind,
        protocol(),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_job_on_a_cleaner_ahead_does_not_cut_the_settle_short() {
    let (honest, ahead) = skewed_pair(true);
    tiersweep_testkit::recovery_clocks::a_duplicate_job_on_a_cleaner_ahead_does_not_cut_the_settle_short(
        honest,
        ahead,
        protocol(),
    )
    .await;
}

// Key-bounded scans still find every stale row (tiersweep_testkit::scans).

#[tokio::test(start_paused = true)]
async fn a_crash_behind_the_key_bound_is_found_without_a_sweep() {
    let stores = tiersweep::testing::MemoryStores::new().stores();
    tiersweep_testkit::scans::a_crash_behind_the_key_bound_is_found_without_a_sweep(
        stores,
        protocol(),
        10_000,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_crash_behind_the_key_bound_is_found_when_the_watch_set_is_full() {
    let stores = tiersweep::testing::MemoryStores::new().stores();
    tiersweep_testkit::scans::a_crash_behind_the_key_bound_is_found_without_a_sweep(
        stores,
        protocol(),
        0,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_lease_pool_rebalances_as_members_join_leave_and_die() {
    let clock: tiersweep::clock::SharedClock = Arc::new(tiersweep::clock::TokioClock::new());
    let leases = Arc::new(tiersweep::shard_lease::MemoryShardLeases::new(clock));
    tiersweep_testkit::membership::a_pool_rebalances_as_members_join_leave_and_die(
        leases,
        Duration::from_secs(30),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_shard_handed_over_is_read_whole_by_its_new_owner() {
    let stores = tiersweep::testing::MemoryStores::new().stores();
    tiersweep_testkit::scans::a_shard_handed_over_is_read_whole_by_its_new_owner(
        stores,
        protocol(),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_row_minted_behind_the_key_bound_is_found_by_the_full_sweep() {
    let (recovery, writer) = skewed_pair(false);
    tiersweep_testkit::scans::a_row_minted_behind_the_key_bound_is_found_by_the_full_sweep(
        recovery,
        writer,
        protocol(),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn removed_rows_piling_up_are_not_read_again_by_key_bounded_scans() {
    use tiersweep_testkit::scans::scan_cost;
    let (history, crashes) = (2_000, 200);
    let bounded = scan_cost(
        tiersweep::testing::MemoryStores::new(),
        protocol(),
        std::time::Duration::from_secs(86_400),
        history,
        crashes,
        1,
    )
    .await;
    let full = scan_cost(
        tiersweep::testing::MemoryStores::new(),
        protocol(),
        std::time::Duration::ZERO,
        history,
        crashes,
        1,
    )
    .await;
    assert_eq!((bounded.found, full.found), (crashes, crashes));
    assert!(
        bounded.per_found() <= 2.0,
        "a key-bounded scan examines the rows minted since its last round: {bounded:?}"
    );
    assert!(
        full.per_found() >= 10.0,
        "a full-range scan re-reads the removed history every round: {full:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_change_deferred_for_its_settle_is_taken_up_at_its_due_time() {
    let stores = tiersweep::testing::MemoryStores::new().stores();
    tiersweep_testkit::scans::a_change_deferred_for_its_settle_is_taken_up_at_its_due_time(
        stores,
        protocol(),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_claim_its_cleaner_extended_then_deferred_is_taken_up_at_its_due_time() {
    let stores = tiersweep::testing::MemoryStores::new().stores();
    tiersweep_testkit::scans::a_claim_its_cleaner_extended_then_deferred_is_taken_up_at_its_due_time(
        stores,
        protocol(),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_of_watched_rows_reads_on() {
    let stores = tiersweep::testing::MemoryStores::new().stores();
    tiersweep_testkit::scans::a_full_batch_of_watched_rows_reads_on(stores, protocol()).await;
}

#[tokio::test(start_paused = true)]
async fn a_predecessors_claim_deferred_by_a_cleaner_is_taken_up_at_its_due_time() {
    let stores = tiersweep::testing::MemoryStores::new().stores();
    tiersweep_testkit::scans::a_predecessors_claim_deferred_by_a_cleaner_is_taken_up_at_its_due_time(
        stores,
        protocol(),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_crash_stale_during_a_handover_is_claimed_ahead_of_the_backlog() {
    let stores = tiersweep::testing::MemoryStores::new().stores();
    tiersweep_testkit::scans::a_crash_stale_during_a_handover_is_claimed_ahead_of_the_backlog(
        stores,
        protocol(),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_fresh_crash_is_claimed_while_the_round_holds_back_at_its_start() {
    let stores = tiersweep::testing::MemoryStores::new().stores();
    tiersweep_testkit::scans::a_fresh_crash_is_claimed_while_the_round_holds_back_at_its_start(
        stores,
        protocol(),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_crash_of_a_writer_running_ahead_is_found_by_a_running_scanner() {
    let (recovery, writer) = skewed_pair(true);
    tiersweep_testkit::scans::a_crash_of_a_writer_running_ahead_is_found_by_a_running_scanner(
        recovery,
        writer,
        protocol(),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_cleaner_clock_behind_keeps_its_claim_while_it_works() {
    let (honest, behind) = skewed_pair(false);
    tiersweep_testkit::recovery_clocks::a_cleaner_clock_behind_keeps_its_claim_while_it_works(
        honest,
        behind,
        protocol(),
    )
    .await;
}

/// A writer's record lands and its host freezes past the guard's validity before the
/// response arrives; meanwhile recovery claims and converges the change and removes its row.
/// The writer wakes to the error and must not send its record again: the attempt would
/// create the row anew, with an id minted long before, which no scan round would read.
#[tokio::test(start_paused = true)]
async fn a_record_retry_after_a_freeze_past_the_guard_is_not_sent() {
    use tiersweep::testing::faults::Op;
    use tiersweep::testing::{MemoryStores, SkewedClock, intercept};
    use tiersweep_testkit::simulation::hooks::Freeze;
    let protocol = protocol();
    let mem = MemoryStores::new();
    let clock = SkewedClock::new(mem.clock.clone());
    let freeze = protocol.guard_validity() * 3;
    let stores = intercept::wrap(
        Freeze::new(Op::Record, freeze, clock.clone()),
        &mem.stores(),
    )
    .with_clock(clock);
    let writer = tiersweep::TieredStorage::new(
        stores,
        tiersweep_testkit::crash::test_writer_config(protocol),
    )
    .expect("valid config");
    let path = tiersweep::model::ObjectPath::new("freeze/record").expect("valid path");
    let write = tokio::spawn(async move {
        writer
            .put(&path, bytes::Bytes::from("K".repeat(1 << 16)))
            .await
    });
    // While the writer is frozen, recovery converges its change and removes the row.
    tokio::time::sleep(freeze / 2).await;
    let keys = mem.changelog.keys();
    assert_eq!(keys.len(), 1, "the first attempt landed: {keys:?}");
    let id = tiersweep::model::ChangeId::parse(&keys[0]).expect("a change id");
    tiersweep::changelog::Changelog::remove_many(&*mem.changelog, &[id])
        .await
        .expect("removing");
    let outcome = write.await.expect("the write task");
    assert!(
        outcome.is_err(),
        "the write cannot have landed: {outcome:?}"
    );
    assert!(
        mem.changelog.is_empty(),
        "the record was not sent again: {:?}",
        mem.changelog.keys()
    );
}
