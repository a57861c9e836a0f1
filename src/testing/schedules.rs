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

use super::crash::{INLINE_THRESHOLD, test_recovery_config, test_writer_config, unique_path};
use super::faults::{Fault, Faults, Op, Rule};
use crate::changelog::{ChangelogEntry, ScanRequest, ScannedRow};
use crate::config::ProtocolConfig;
use crate::model::{HvValue, ObjectPath, ShardRange, Timestamp};
use crate::queue::{FlowControl, JobQueue, MemoryQueue};
use crate::recovery::{Cleaner, CleanupJob, JobOutcome};
use crate::stores::Stores;
use crate::writer::{ReadOutcome, TieredStorage};

/// Expands to one test per schedule. `$attr` is the test attribute (paused time for the
/// twin, a multi-threaded runtime for the emulators), `$stores` an async expression that
/// yields fresh [`Stores`], `$protocol` the [`ProtocolConfig`] to run with.
#[macro_export]
macro_rules! safety_schedules {
    (#[$attr:meta], $stores:expr, $protocol:expr) => {
        $crate::safety_schedules!(@each #[$attr], $stores, $protocol, [
            a_job_carrying_the_writers_token_leaves_the_live_change_alone,
        ]);
    };
    (@each #[$attr:meta], $stores:expr, $protocol:expr, [$($name:ident),* $(,)?]) => {
        $(
            #[$attr]
            async fn $name() {
                let stores = $stores.await;
                $crate::testing::schedules::$name(stores, $protocol).await;
            }
        )*
    };
}

fn large(tag: &str) -> Bytes {
    Bytes::from(format!("{tag}:{}", "S".repeat(INLINE_THRESHOLD * 2)))
}

/// Every changelog row for `path`, whatever its stamp.
pub async fn entries_for(stores: &Stores, path: &ObjectPath) -> Vec<ChangelogEntry> {
    let mut out = Vec::new();
    let mut start_after = None;
    loop {
        let page = stores
            .changelog
            .scan_stale(&ScanRequest {
                shards: ShardRange::ALL,
                cutoff: Timestamp(i64::MAX),
                now: Timestamp(i64::MAX),
                start_after,
                limit: 500,
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

/// Polls until `path` has a changelog row whose new revision is in LT (the writer has
/// recorded and uploaded), and returns the row.
async fn wait_for_upload(stores: &Stores, path: &ObjectPath) -> ChangelogEntry {
    for _ in 0..2000 {
        if let Some(e) = entries_for(stores, path).await.into_iter().next()
            && let Some(new) = &e.record.new
            && stores.lt.exists(new).await.expect("checking LT")
        {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the writer never recorded and uploaded {path}");
}

/// One delivery of `job` from a fresh in-process queue, handed to a cleaner on `stores`.
async fn deliver(stores: &Stores, protocol: ProtocolConfig, job: CleanupJob) -> JobOutcome {
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
        ReadOutcome::Found(bytes),
        "the acknowledged write reads back"
    );
    let new = entry.record.new.expect("a large put has a new revision");
    assert_eq!(
        stores.hv.read(&path).await.expect("reading HV"),
        Some(HvValue::Tombstone(new.clone()))
    );
    assert!(stores.lt.exists(&new).await.expect("checking LT"));
    assert!(
        entries_for(&stores, &path).await.is_empty(),
        "the writer completed its change"
    );
}
