//! The metrics registry moves by exactly what a known recovery scenario did.
//!
//! The registry is process-wide; nextest runs every test in its own process, and this file
//! holds one test, so the deltas below are this scenario's alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tiersweep::config::ProtocolConfig;
use tiersweep::model::{ChangeId, ChangeRecord, HvValue, OwnerToken, ShardRange};
use tiersweep::queue::{JobQueue, MemoryQueue, Message};
use tiersweep::recovery::{CleanupJob, EmbeddedRecovery, Scanner};
use tiersweep::telemetry::metrics::{registry, render_prometheus};
use tiersweep::testing::MemoryStores;
use tiersweep::testing::faults::{Fault, Faults, Op, Rule};
use tiersweep::writer::{GuardState, TieredStorage, WriteError};
use tiersweep_testkit::crash::{self, Scenario, test_recovery_config, test_writer_config};

fn series(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test(start_paused = true)]
async fn metrics_move_by_what_a_known_scenario_did() {
    let ms = MemoryStores::new();
    let stores = ms.stores();
    let protocol = ProtocolConfig::default();
    let wconf = test_writer_config(protocol);
    let mut rconf = test_recovery_config(protocol);
    // One pass per change, so each phase's counts are its own (the settle's second pass
    // is tested with the protocol).
    rconf.upload_settle = Duration::ZERO;
    let start = registry().snapshot();

    // Phase 1. Three large puts crashed after their upload: one unreferenced blob each.
    crash::crashed_large_puts(&stores, wconf, 3).await;
    let crashed_put = ms.changelog.keys()[0].clone();
    // A large put crashed after its CAS whose blob then went missing: a dangling tombstone.
    let path = crash::unique_path();
    let faults = Faults::new([Rule::once(Op::HvCas, Fault::CrashAfter)]);
    let w = TieredStorage::new(faults.wrap(&stores), wconf).unwrap();
    let p = path.clone();
    let crashed = faults
        .run_until_crash(async move { Scenario::LargePut.run(&w, &p).await })
        .await;
    assert!(crashed.is_none());
    let Some(HvValue::Tombstone(rev)) = stores.hv().read(&path).await.unwrap() else {
        panic!("the CAS landed a tombstone");
    };
    stores.lt().delete(&rev).await.unwrap();
    // An overwrite whose heartbeats fail: the writer gives up before its CAS and leaves the
    // new blob to recovery.
    let (_, _, err, _) = crash::overwrite_with_failing_heartbeats(&stores, wconf).await;
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
    // A row nobody can parse.
    ms.changelog.insert_raw(
        ChangeId::mint().as_str(),
        b"{\"v\":1".to_vec(),
        ms.clock.now(),
    );

    tokio::time::sleep(protocol.staleness_threshold + Duration::from_secs(1)).await;
    let recovery = EmbeddedRecovery::new(stores.clone(), rconf.clone());
    // A poison message waiting in the queue.
    let poison = Message {
        data: Bytes::from_static(b"not a job"),
        attributes: BTreeMap::new(),
    };
    recovery.queue().publish(vec![poison]).await.unwrap();
    let pass = recovery.run_pass().await.unwrap();
    assert_eq!((pass.converged, pass.dangling), (5, 1), "{pass:?}");

    // Phase 2. A duplicate job for a converged change, and a forged one for a live change.
    let live = ChangeId::mint();
    let record = ChangeRecord::new(crash::unique_path(), None, None, OwnerToken::mint("writer"));
    stores.changelog().record(&live, &record).await.unwrap();
    let jobs = [ChangeId::parse(&crashed_put).unwrap(), live.clone()]
        .map(|id| CleanupJob::new(id, OwnerToken::mint("recovery")).to_message(BTreeMap::new()));
    recovery.queue().publish(jobs.to_vec()).await.unwrap();
    let pass = recovery.run_pass().await.unwrap();
    assert_eq!(
        (pass.already_converged, pass.not_our_claim),
        (1, 1),
        "{pass:?}"
    );
    // Its writer finishes, so phase 3 does not find it stale.
    stores
        .changelog()
        .remove(&live, &record.owner)
        .await
        .unwrap();

    // Phase 3. Two scanners see the same two stale rows; one is slow to claim and loses both.
    crash::crashed_large_puts(&stores, wconf, 2).await;
    tokio::time::sleep(protocol.staleness_threshold + Duration::from_secs(1)).await;
    let slow = Faults::new([Rule::on(Op::Claim, Fault::Delay(Duration::from_secs(1)))]);
    let mut slow_scanner = Scanner::new(
        slow.wrap(&stores).changelog().clone(),
        Arc::new(MemoryQueue::new(16, 5)),
        rconf.clone(),
        ShardRange::ALL,
    );
    let fast = EmbeddedRecovery::new(stores.clone(), rconf);
    let (slow_page, fast_pass) = tokio::join!(slow_scanner.scan_page(), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        fast.run_pass().await
    });
    let (slow_page, fast_pass) = (slow_page.unwrap(), fast_pass.unwrap());
    assert_eq!((slow_page.lost, fast_pass.scan.won), (2, 2));

    let moved = registry().snapshot().since(&start);
    let expected = series(&[
        // 6 + 1 + (3 + 3): the malformed row is seen by every scan (each is a new scanner's
        // first, a full sweep); + 1: phase 2's live row, read as waiting.
        ("tiersweep_changelog_rows_scanned_total", 14),
        ("tiersweep_changelog_rows_malformed_total", 4),
        ("tiersweep_claims_total{outcome=\"won\"}", 7),
        ("tiersweep_claims_total{outcome=\"lost\"}", 2),
        ("tiersweep_jobs_published_total", 7),
        ("tiersweep_jobs_processed_total{outcome=\"converged\"}", 7),
        (
            "tiersweep_jobs_processed_total{outcome=\"already_converged\"}",
            1,
        ),
        (
            "tiersweep_jobs_processed_total{outcome=\"not_our_claim\"}",
            1,
        ),
        (
            "tiersweep_jobs_processed_total{outcome=\"dead_lettered\"}",
            1,
        ),
        // 3 crashed puts + 1 abandoned overwrite + 2 in phase 3; the dangling change keeps its blob.
        ("tiersweep_blobs_deleted_total", 6),
        ("tiersweep_tombstones_dangling_total", 1),
        ("tiersweep_writer_heartbeat_failures_total", 1),
    ]);
    assert_eq!(moved, expected);

    // Every converged change was at least one staleness threshold old.
    let lag = &registry().recovery_lag;
    assert_eq!(lag.count() - start.lag_count, 7);
    assert!(
        lag.sum() >= protocol.staleness_threshold * 7,
        "{:?}",
        lag.sum()
    );

    // The last complete pass saw the malformed row and the two crashed puts.
    let backlog = registry().backlog();
    let all = &backlog[&ShardRange::ALL.to_string()];
    assert_eq!(all.stale_rows, 3, "{backlog:?}");
    assert!(
        all.oldest_stale_age >= protocol.staleness_threshold,
        "{all:?}"
    );

    let text = render_prometheus(registry());
    assert!(text.contains("tiersweep_jobs_processed_total{outcome=\"converged\"} 7\n"));
    assert!(text.contains("tiersweep_backlog_stale_rows{shards=\"000-3ff\"} 3\n"));
}
