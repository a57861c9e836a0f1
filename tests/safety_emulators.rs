//! The adversarial schedules (`tiersweep_testkit::schedules`) on the emulators
//! (cbtemulator, fake-gcs-server), in real time with short timings; each schedule gets
//! fresh tables and a fresh bucket.

use std::time::Duration;

use tiersweep::clock;
use tiersweep::config::ProtocolConfig;
use tiersweep_testkit::emulators::emulators;
use tiersweep_testkit::schedules;

fn protocol() -> ProtocolConfig {
    ProtocolConfig {
        heartbeat_interval: Duration::from_millis(200),
        staleness_threshold: Duration::from_millis(1000),
        safety_margin: Duration::from_millis(300),
    }
}

tiersweep_testkit::safety_schedules!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
    async { emulators().await.stores(clock::system()).await },
    protocol()
);

tiersweep_testkit::audit_scenarios!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
    async { emulators().await.stores(clock::system()).await },
    protocol()
);

tiersweep_testkit::audit_fanout_scenarios!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
    async { emulators().await.stores_and_runs(clock::system()).await },
    protocol()
);

/// The writer's and recovery's views of the same fresh tables and bucket; the writer's
/// process clock (and so its changelog handle's) is `skew` away.
async fn skewed_pair(ahead: bool) -> (tiersweep::Stores, tiersweep::Stores) {
    let clock = tiersweep::testing::SkewedClock::new(clock::system());
    clock.jump(schedules::SKEW, ahead);
    emulators().await.stores_pair(clock::system(), clock).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_clock_running_ahead_does_not_hide_its_crash() {
    let (recovery, writer) = skewed_pair(true).await;
    schedules::a_writer_clock_running_ahead_does_not_hide_its_crash(recovery, writer, protocol())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_clock_running_behind_keeps_its_live_write() {
    let (recovery, writer) = skewed_pair(false).await;
    schedules::a_writer_clock_running_behind_keeps_its_live_write(recovery, writer, protocol())
        .await;
}

// Recovery hosts whose clocks are wrong (tiersweep_testkit::recovery_clocks).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleaner_clock_behind_does_not_cut_the_settle_short() {
    let (honest, behind) = skewed_pair(false).await;
    tiersweep_testkit::recovery_clocks::a_cleaner_clock_behind_does_not_cut_the_settle_short(
        honest,
        behind,
        protocol(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_job_on_a_cleaner_ahead_does_not_cut_the_settle_short() {
    let (honest, ahead) = skewed_pair(true).await;
    tiersweep_testkit::recovery_clocks::a_duplicate_job_on_a_cleaner_ahead_does_not_cut_the_settle_short(
        honest,
        ahead,
        protocol(),
    )
    .await;
}

// Key-bounded scans still find every stale row (tiersweep_testkit::scans).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_behind_the_key_bound_is_found_without_a_sweep() {
    let stores = emulators().await.stores(clock::system()).await;
    tiersweep_testkit::scans::a_crash_behind_the_key_bound_is_found_without_a_sweep(
        stores,
        protocol(),
        10_000,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_behind_the_key_bound_is_found_when_the_watch_set_is_full() {
    let stores = emulators().await.stores(clock::system()).await;
    tiersweep_testkit::scans::a_crash_behind_the_key_bound_is_found_without_a_sweep(
        stores,
        protocol(),
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_pool_rebalances_as_members_join_leave_and_die() {
    let leases = emulators().await.leases().await;
    tiersweep_testkit::membership::a_pool_rebalances_as_members_join_leave_and_die(
        leases,
        Duration::from_secs(4),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_handed_over_is_read_whole_by_its_new_owner() {
    let stores = emulators().await.stores(clock::system()).await;
    tiersweep_testkit::scans::a_shard_handed_over_is_read_whole_by_its_new_owner(
        stores,
        protocol(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_minted_behind_the_key_bound_is_found_by_the_full_sweep() {
    let (recovery, writer) = skewed_pair(false).await;
    tiersweep_testkit::scans::a_row_minted_behind_the_key_bound_is_found_by_the_full_sweep(
        recovery,
        writer,
        protocol(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_deferred_for_its_settle_is_taken_up_at_its_due_time() {
    let stores = emulators().await.stores(clock::system()).await;
    tiersweep_testkit::scans::a_change_deferred_for_its_settle_is_taken_up_at_its_due_time(
        stores,
        protocol(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_its_cleaner_extended_then_deferred_is_taken_up_at_its_due_time() {
    let stores = emulators().await.stores(clock::system()).await;
    tiersweep_testkit::scans::a_claim_its_cleaner_extended_then_deferred_is_taken_up_at_its_due_time(
        stores,
        protocol(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_of_watched_rows_reads_on() {
    let stores = emulators().await.stores(clock::system()).await;
    tiersweep_testkit::scans::a_full_batch_of_watched_rows_reads_on(stores, protocol()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_predecessors_claim_deferred_by_a_cleaner_is_taken_up_at_its_due_time() {
    let stores = emulators().await.stores(clock::system()).await;
    tiersweep_testkit::scans::a_predecessors_claim_deferred_by_a_cleaner_is_taken_up_at_its_due_time(
        stores,
        protocol(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_stale_during_a_handover_is_claimed_ahead_of_the_backlog() {
    let stores = emulators().await.stores(clock::system()).await;
    tiersweep_testkit::scans::a_crash_stale_during_a_handover_is_claimed_ahead_of_the_backlog(
        stores,
        protocol(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_crash_is_claimed_while_the_round_holds_back_at_its_start() {
    let stores = emulators().await.stores(clock::system()).await;
    tiersweep_testkit::scans::a_fresh_crash_is_claimed_while_the_round_holds_back_at_its_start(
        stores,
        protocol(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_of_a_writer_running_ahead_is_found_by_a_running_scanner() {
    let (recovery, writer) = skewed_pair(true).await;
    tiersweep_testkit::scans::a_crash_of_a_writer_running_ahead_is_found_by_a_running_scanner(
        recovery,
        writer,
        protocol(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleaner_clock_behind_keeps_its_claim_while_it_works() {
    let (honest, behind) = skewed_pair(false).await;
    tiersweep_testkit::recovery_clocks::a_cleaner_clock_behind_keeps_its_claim_while_it_works(
        honest,
        behind,
        protocol(),
    )
    .await;
}
