//! The protocol's crash and race tests on the emulator backends (cbtemulator for HV and the
//! changelog, fake-gcs-server for LT), in real time with a short protocol so that waiting
//! out the staleness threshold costs about a second. Each test gets fresh tables and bucket.

use std::collections::BTreeMap;
use std::time::Duration;

use tiersweep::clock;
use tiersweep::config::ProtocolConfig;
use tiersweep::recovery::embedded::PassReport;
use tiersweep::testing::faults::{Fault, Faults, Op, Rule};
use tiersweep::testing::invariants;
use tiersweep::writer::{TieredStorage, WriteError};
use tiersweep_testkit::backlog::{BacklogPlan, drain};
use tiersweep_testkit::crash::{
    self, CrashPoint, Scenario, test_recovery_config, test_writer_config,
};
use tiersweep_testkit::emulators::emulators;

fn protocol() -> ProtocolConfig {
    let p = ProtocolConfig {
        heartbeat_interval: Duration::from_millis(200),
        staleness_threshold: Duration::from_millis(1000),
        safety_margin: Duration::from_millis(300),
    };
    p.validate().expect("test protocol is valid");
    p
}

async fn stores() -> tiersweep::Stores {
    emulators().await.stores(clock::system()).await
}

async fn recover(stores: &tiersweep::Stores) -> PassReport {
    crash::recover_settled(stores, test_recovery_config(protocol())).await
}

/// Crashes `scenario` before and after each of its store calls, recovering after each.
async fn crash_matrix(scenario: Scenario) {
    let config = test_writer_config(protocol());
    let calls = crash::calls_of(scenario, &stores().await, config).await;
    assert!(calls.contains(&Op::HvCas), "{calls:?}");
    for call in 0..calls.len() {
        for fault in [Fault::CrashBefore, Fault::CrashAfter] {
            crash::crash_and_recover(
                scenario,
                CrashPoint { call, fault },
                &stores().await,
                config,
                test_recovery_config(protocol()),
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_matrix_large_put() {
    crash_matrix(Scenario::LargePut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_matrix_large_over_large() {
    crash_matrix(Scenario::LargeOverLarge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_matrix_small_over_large() {
    crash_matrix(Scenario::SmallOverLarge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_matrix_delete_large() {
    crash_matrix(Scenario::DeleteLarge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_cas_response_is_retried_idempotently() {
    let stores = stores().await;
    let path = crash::unique_path();
    let faults = Faults::new([Rule::once(Op::HvCas, Fault::LoseResponse)]);
    let w = TieredStorage::new(faults.wrap(&stores), test_writer_config(protocol())).unwrap();
    let (_, after) = Scenario::LargePut.values();
    w.put(&path, after.clone().unwrap())
        .await
        .expect("the retry finds its own write and succeeds");
    let expected = BTreeMap::from([(path, vec![after])]);
    invariants::check(&stores, &expected)
        .await
        .unwrap()
        .assert_converged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cas_that_arrives_after_recovery_is_refused_by_the_fence() {
    let stores = stores().await;
    let path = crash::unique_path();
    let (before, after) = Scenario::LargeOverLarge.values();
    let config = test_writer_config(protocol());
    TieredStorage::new(stores.clone(), config)
        .unwrap()
        .put(&path, before.clone().unwrap())
        .await
        .unwrap();
    // Heartbeats stall, and the CAS stalls after its guard check, past the threshold.
    let stall = protocol().staleness_threshold * 3;
    let faults = Faults::new([
        Rule::on(Op::Heartbeat, Fault::Delay(stall)),
        Rule::once(Op::HvCas, Fault::Delay(stall)),
    ]);
    let w = TieredStorage::new(faults.wrap(&stores), config).unwrap();
    let write = tokio::spawn({
        let path = path.clone();
        async move { w.put(&path, after.unwrap()).await }
    });
    let pass = recover(&stores).await;
    assert_eq!((pass.scan.won, pass.converged), (1, 1), "{pass:?}");
    let err = write.await.unwrap().unwrap_err();
    assert!(matches!(err, WriteError::Fenced { .. }), "{err}");
    let expected = BTreeMap::from([(path, vec![before])]);
    invariants::check(&stores, &expected)
        .await
        .unwrap()
        .assert_converged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_recoveries_claim_every_stale_entry_exactly_once() {
    crash::concurrent_recoveries(&stores().await, protocol(), 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_rows_are_reported_and_left_in_place() {
    let e = emulators().await;
    let (client, config) = e.new_tables().await;
    let changelog = tiersweep::changelog::BigtableChangelog::new(
        client,
        &config.changelog_table,
        clock::system(),
    );
    let id = tiersweep::model::ChangeId::mint();
    let stamp = clock::system().now();
    changelog
        .insert_raw(id.as_str(), b"{\"v\":1,\"object\":".to_vec(), stamp)
        .await
        .unwrap();
    let stores = e
        .stores(clock::system())
        .await
        .with_changelog(std::sync::Arc::new(changelog));
    let pass = recover(&stores).await;
    assert_eq!((pass.scan.malformed, pass.scan.won), (1, 0), "{pass:?}");
    let err = stores.changelog().get(&id).await.unwrap_err();
    assert_eq!(err.kind, tiersweep::ErrorKind::Malformed, "{err}");
    assert!(
        err.target.contains(id.as_str()),
        "the error names the row: {err}"
    );
}

/// Metadata someone else wrote into a row is input: a cell that is not tiersweep's JSON,
/// or breaks a limit, or sits in a row without data, is a malformed row naming it, and the
/// write path refuses to guess over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_metadata_cells_are_reported_by_row() {
    use tiersweep::hv::{BigtableHv, HvStore as _};
    let e = emulators().await;
    let (client, config) = e.new_tables().await;
    let hv = BigtableHv::new(client, &config.hv_table);
    let cases: [(&str, &[u8], &[u8]); 3] = [
        ("not-json", b"meta", b"{\"content_type\":"),
        (
            "reserved-key",
            b"meta",
            br#"{"user":{"tiersweep-expires-at":"1"}}"#,
        ),
        (
            "meta-without-data",
            b"meta",
            br#"{"content_type":"text/plain"}"#,
        ),
    ];
    for (name, qualifier, value) in cases {
        let path = tiersweep::ObjectPath::new(format!("malformed/{name}")).unwrap();
        if name != "meta-without-data" {
            hv.insert_raw(&path, b"inline", b"bytes".to_vec())
                .await
                .unwrap();
        }
        hv.insert_raw(&path, qualifier, value.to_vec())
            .await
            .unwrap();
        let err = hv.read_row(&path).await.unwrap_err();
        assert_eq!(err.kind, tiersweep::ErrorKind::Malformed, "{name}: {err}");
        assert!(
            err.target.contains(path.as_str()),
            "{name}: the error names the row: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_slower_than_a_lease_is_claimed_once_with_backpressure() {
    let d =
        tiersweep_testkit::backlog::drain_slower_than_a_lease(&stores().await, protocol(), 8, 2)
            .await;
    assert_eq!(d.claims_won, d.changes, "no row claimed twice: {d:?}");
    assert!(d.held_back > 0, "the scanner held back: {d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_backpressure_the_same_backlog_is_claimed_again() {
    let d =
        tiersweep_testkit::backlog::drain_slower_than_a_lease(&stores().await, protocol(), 8, 0)
            .await;
    assert!(d.claims_won > d.changes, "re-claims of queued work: {d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_in_hand_longer_than_its_lease_is_not_claimed_again() {
    let plan = BacklogPlan {
        changes: 3,
        max_queued_claims: 2,
        leases_per_change: 2.0,
        ..BacklogPlan::default()
    };
    let d = drain(&stores().await, protocol(), plan).await;
    assert_eq!(d.claims_won, d.changes, "no row claimed twice: {d:?}");
    assert!(
        d.extended_in_hand >= d.changes,
        "the cleaner kept each claim alive: {d:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_job_is_published_again_under_its_claim() {
    let plan = BacklogPlan {
        changes: 4,
        max_queued_claims: 10,
        leases_per_change: 0.05,
        lost: 2,
        ..BacklogPlan::default()
    };
    let d = drain(&stores().await, protocol(), plan).await;
    assert_eq!(
        d.claims_won, d.changes,
        "republished, not claimed again: {d:?}"
    );
    assert_eq!(d.republished, 2, "each lost job once: {d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_crashes_during_a_drain_do_not_wait_behind_it() {
    let plan = BacklogPlan {
        changes: 80,
        max_queued_claims: 10,
        leases_per_change: 0.05,
        fresh_crashes: 3,
        ..BacklogPlan::default()
    };
    let d = drain(&stores().await, protocol(), plan).await;
    assert!(d.fresh_lag.is_some(), "the fresh crashes converged: {d:?}");
    // An order, not a time: they converged while much of the backlog still waited.
    assert!(
        d.backlog_left_then >= plan.changes / 8,
        "converged ahead of the backlog: {d:?}"
    );
}
