//! The crash matrix: every two-tier mutation, crashed before and after each of its store
//! calls, then recovered; shared by the in-memory tests and the emulator tests.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use tiersweep::model::ObjectPath;
use tiersweep::recovery::embedded::PassReport;
use tiersweep::recovery::{EmbeddedRecovery, RecoveryConfig};
use tiersweep::stores::Stores;
use tiersweep::testing::faults::{Fault, Faults, Op, Rule};
use tiersweep::testing::invariants::{self, Acceptable};
use tiersweep::writer::{TieredStorage, WriteError, WriterConfig};

/// Bytes above the inline threshold used by the scenarios.
pub const INLINE_THRESHOLD: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// A large put of a new object.
    LargePut,
    /// A large put over a large object.
    LargeOverLarge,
    /// A small put over a large object.
    SmallOverLarge,
    /// A delete of a large object.
    DeleteLarge,
}

pub const SCENARIOS: [Scenario; 4] = [
    Scenario::LargePut,
    Scenario::LargeOverLarge,
    Scenario::SmallOverLarge,
    Scenario::DeleteLarge,
];

fn large(tag: &str) -> Bytes {
    Bytes::from(format!("{tag}:{}", "L".repeat(INLINE_THRESHOLD * 2)))
}

impl Scenario {
    /// The value before and after the operation.
    pub fn values(self) -> (Option<Bytes>, Option<Bytes>) {
        match self {
            Scenario::LargePut => (None, Some(large("new"))),
            Scenario::LargeOverLarge => (Some(large("old")), Some(large("new"))),
            Scenario::SmallOverLarge => (Some(large("old")), Some(Bytes::from_static(b"small"))),
            Scenario::DeleteLarge => (Some(large("old")), None),
        }
    }

    pub async fn prepare(self, writer: &TieredStorage, path: &ObjectPath) {
        if let (Some(before), _) = self.values() {
            writer
                .put(path, before)
                .await
                .expect("preparing the scenario");
        }
    }

    pub async fn run(
        self,
        writer: &TieredStorage,
        path: &ObjectPath,
    ) -> Result<(), tiersweep::writer::WriteError> {
        match self.values().1 {
            Some(after) => writer.put(path, after).await,
            None => writer.delete(path).await,
        }
    }
}

/// Protocol timings for tests: short, so emulator runs wait seconds, not minutes.
pub fn test_writer_config(protocol: tiersweep::protocol::ProtocolConfig) -> WriterConfig {
    WriterConfig {
        inline_threshold: INLINE_THRESHOLD,
        protocol,
        // A failed upload's change waits one threshold, not ten minutes, for recovery.
        upload_settle: protocol.staleness_threshold,
        ..Default::default()
    }
}

pub fn test_recovery_config(protocol: tiersweep::protocol::ProtocolConfig) -> RecoveryConfig {
    RecoveryConfig {
        protocol,
        scan_batch: 50,
        claim_lease: protocol.heartbeat_interval * 4,
        republish_after: protocol.heartbeat_interval * 4,
        upload_settle: protocol.staleness_threshold,
        ..Default::default()
    }
}

/// One crash point: the `call`-th store call of the operation, crashed before or after it
/// takes effect.
#[derive(Debug, Clone, Copy)]
pub struct CrashPoint {
    pub call: usize,
    pub fault: Fault,
}

/// The store calls one clean run of `scenario` makes, in order (heartbeats excluded).
pub async fn calls_of(scenario: Scenario, stores: &Stores, config: WriterConfig) -> Vec<Op> {
    let path = unique_path();
    let clean = TieredStorage::new(stores.clone(), config).expect("valid config");
    scenario.prepare(&clean, &path).await;
    let faults = Faults::new([]);
    let writer = TieredStorage::new(faults.wrap(stores), config).expect("valid config");
    scenario
        .run(&writer, &path)
        .await
        .expect("clean run succeeds");
    writer.flush().await;
    faults.calls()
}

pub fn unique_path() -> ObjectPath {
    ObjectPath::new(format!("crash/{}", uuid::Uuid::now_v7())).expect("valid path")
}

/// Runs `scenario` with a crash at `point`, waits past the staleness threshold, runs one
/// recovery pass, and checks that I1 and I2 hold for the object.
pub async fn crash_and_recover(
    scenario: Scenario,
    point: CrashPoint,
    stores: &Stores,
    writer_config: WriterConfig,
    recovery_config: RecoveryConfig,
) {
    let path = unique_path();
    let clean = TieredStorage::new(stores.clone(), writer_config).expect("valid config");
    scenario.prepare(&clean, &path).await;

    let faults = Faults::new([Rule::nth_call(point.call, point.fault)]);
    let writer = TieredStorage::new(faults.wrap(stores), writer_config).expect("valid config");
    let outcome = faults
        .run_until_crash({
            let path = path.clone();
            // A crash while a committed write completes in the background hangs the flush:
            // to recovery, the process died before the change was complete either way.
            async move {
                let outcome = scenario.run(&writer, &path).await;
                writer.flush().await;
                outcome
            }
        })
        .await;
    let acked = matches!(outcome, Some(Ok(())));
    assert!(
        !acked,
        "{scenario:?} {point:?}: the operation must not complete after a crash"
    );

    let pass = recover_settled(stores, recovery_config).await;

    let (before, after) = scenario.values();
    let expected: BTreeMap<ObjectPath, Acceptable> =
        BTreeMap::from([(path.clone(), vec![before, after])]);
    let report = invariants::check(stores, &expected)
        .await
        .expect("invariant check");
    assert!(
        report.is_converged(),
        "{scenario:?} crashed at {point:?}: {report:#?}\nrecovery pass: {pass:#?}"
    );
}

/// Waits past the staleness threshold and runs one recovery pass; when that pass deferred
/// changes (it deleted their uploads and keeps their rows until a late landing is no longer
/// possible), waits out the settle and runs the second pass that removes them. Returns the
/// first pass's report.
pub async fn recover_settled(stores: &Stores, config: RecoveryConfig) -> PassReport {
    tokio::time::sleep(config.protocol.staleness_threshold + Duration::from_millis(50)).await;
    pass_settled(stores, config).await
}

/// One recovery pass now, and the second one after the settle if it deferred changes
/// (see [`recover_settled`]). Returns the first pass's report.
pub async fn pass_settled(stores: &Stores, config: RecoveryConfig) -> PassReport {
    let threshold = config.protocol.staleness_threshold;
    let settle = config.upload_settle;
    let recovery = EmbeddedRecovery::new(stores.clone(), config);
    let first = recovery.run_pass().await.expect("recovery pass");
    if first.deferred > 0 {
        tokio::time::sleep(settle + threshold + Duration::from_millis(50)).await;
        let second = recovery.run_pass().await.expect("second recovery pass");
        assert_eq!(
            (second.converged, second.deferred),
            (first.deferred, 0),
            "the second pass converges exactly the deferred changes, and defers none: {second:#?}"
        );
    }
    first
}

/// Leaves `n` large puts of new objects crashed right after their upload: a changelog row
/// and a not-yet-referenced blob each. Returns what each object may read as.
pub async fn crashed_large_puts(
    stores: &Stores,
    config: WriterConfig,
    n: usize,
) -> BTreeMap<ObjectPath, Acceptable> {
    let mut expected = BTreeMap::new();
    for _ in 0..n {
        let path = unique_path();
        let (before, after) = Scenario::LargePut.values();
        let faults = Faults::new([Rule::once(Op::LtPut, Fault::CrashAfter)]);
        let writer = TieredStorage::new(faults.wrap(stores), config).expect("valid config");
        let outcome = faults
            .run_until_crash({
                let path = path.clone();
                async move { Scenario::LargePut.run(&writer, &path).await }
            })
            .await;
        assert!(outcome.is_none(), "the put crashes after its upload");
        expected.insert(path, vec![before, after]);
    }
    expected
}

/// Overwrites a large object with a writer whose heartbeats all fail while its upload is
/// slow (15 s): the guard fails, the writer gives up before its CAS and leaves the new blob
/// to recovery. Returns the object, the value it must converge to, the writer's error and
/// the calls it made.
pub async fn overwrite_with_failing_heartbeats(
    stores: &Stores,
    config: WriterConfig,
) -> (ObjectPath, Option<Bytes>, WriteError, Vec<Op>) {
    let path = unique_path();
    let (before, after) = Scenario::LargeOverLarge.values();
    let clean = TieredStorage::new(stores.clone(), config).expect("valid config");
    let old = before.clone().expect("the scenario has an old value");
    clean.put(&path, old).await.expect("clean put");
    let faults = Faults::new([
        Rule::on(Op::Heartbeat, Fault::Fail),
        Rule::on(Op::LtPut, Fault::Delay(Duration::from_secs(15))),
    ]);
    let writer = TieredStorage::new(faults.wrap(stores), config).expect("valid config");
    let new = after.expect("the scenario has a new value");
    let err = writer
        .put(&path, new)
        .await
        .expect_err("a writer without heartbeats must not complete");
    (path, before, err, faults.calls())
}

/// Two recovery passes run at once over `n` crashed changes: every change is claimed and
/// converged exactly once between them, and the stores converge.
pub async fn concurrent_recoveries(
    stores: &Stores,
    protocol: tiersweep::protocol::ProtocolConfig,
    n: usize,
) {
    let expected = crashed_large_puts(stores, test_writer_config(protocol), n).await;
    tokio::time::sleep(protocol.staleness_threshold + Duration::from_millis(100)).await;
    let config = test_recovery_config(protocol);
    let r1 = EmbeddedRecovery::new(stores.clone(), config.clone());
    let r2 = EmbeddedRecovery::new(stores.clone(), config.clone());
    let (p1, p2) = tokio::join!(r1.run_pass(), r2.run_pass());
    let (p1, p2) = (p1.expect("recovery pass"), p2.expect("recovery pass"));
    // Every put crashed after its upload: recovery deletes each upload and keeps the row
    // for the settle; one more pass after it removes them all.
    assert_eq!(p1.deferred + p2.deferred, n, "{p1:?} {p2:?}");
    tokio::time::sleep(config.upload_settle + protocol.staleness_threshold * 2).await;
    let last = r1.run_pass().await.expect("recovery pass");
    assert_eq!((last.converged, last.deferred), (n, 0), "{last:?}");
    assert_eq!(
        p1.scan.won + p2.scan.won,
        n,
        "each claimed once: {p1:?} {p2:?}"
    );
    assert_eq!(p1.converged + p2.converged, n, "{p1:?} {p2:?}");
    invariants::check(stores, &expected)
        .await
        .expect("invariant check")
        .assert_converged();
}
