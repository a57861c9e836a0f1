//! The fanned-out audit's scenarios ([`tiersweep::audit::fanout`]), written once and run on
//! every backend by [`audit_fanout_scenarios!`](crate::audit_fanout_scenarios): the run
//! records live beside the changelog (in its table on Bigtable), the jobs go through the
//! in-process queue (Pub/Sub's own behaviour has its conformance suite; the processes'
//! use of it is in the IAM contract test).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::audits::{blob_exists, config, large, min_age, path_in, plant_orphan};
use crate::crash::{test_recovery_config, test_writer_config};
use tiersweep::audit::fanout::{self, progress_report};
use tiersweep::audit::{AuditRun, AuditRuns, AuditWorker, RangeJob, RangeOutcome, RangeSummary};
use tiersweep::protocol::ProtocolConfig;
use tiersweep::queue::{JobQueue, MemoryQueue, Message};
use tiersweep::stores::Stores;
use tiersweep::testing::trail::MemoryTrail;
use tiersweep::writer::TieredStorage;

/// Expands to one test per fan-out scenario. `$fixture` yields `(Stores, Arc<dyn
/// AuditRuns>)` on one backend.
#[macro_export]
macro_rules! audit_fanout_scenarios {
    (#[$attr:meta], $fixture:expr, $protocol:expr) => {
        $crate::audit_fanout_scenarios!(@each #[$attr], $fixture, $protocol, [
            audit_runs_behave_as_documented,
            a_fanned_out_audit_finds_exactly_the_orphans,
            forged_and_stale_audit_jobs_delete_nothing,
        ]);
    };
    (@each #[$attr:meta], $fixture:expr, $protocol:expr, [$($name:ident),* $(,)?]) => {
        $(
            #[$attr]
            async fn $name() {
                let (stores, runs) = $fixture.await;
                $crate::audit_fanout::$name(stores, runs, $protocol).await;
            }
        )*
    };
}

/// A worker with `trail` serving `queue` until `cancel`, in its own task.
fn serve(
    stores: &Stores,
    runs: &Arc<dyn AuditRuns>,
    trail: &Arc<MemoryTrail>,
    queue: &MemoryQueue,
    cancel: &tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Result<(), tiersweep::error::StoreError>> {
    let worker = AuditWorker::new(stores.clone(), runs.clone())
        .trail(trail.clone())
        .cancel_on(cancel.clone());
    let queue = queue.clone();
    tokio::spawn(async move { tiersweep::audit::fanout::serve(&worker, &queue).await })
}

/// The runs store's contract: a run is created once, read back whole, and finishes are
/// recorded only for recorded runs.
pub async fn audit_runs_behave_as_documented(
    stores: Stores,
    runs: Arc<dyn AuditRuns>,
    protocol: ProtocolConfig,
) {
    let now = stores
        .changelog()
        .now()
        .await
        .expect("the changelog's time");
    let run = AuditRun::new(
        &config(protocol, "p/", true),
        now,
        Duration::from_secs(3600),
    );
    assert_eq!(runs.get(&run.run).await.expect("reading"), None);
    assert!(runs.create(&run).await.expect("creating"));
    let mut other = run.clone();
    other.delete = false;
    assert!(
        !runs.create(&other).await.expect("creating again"),
        "a run is never overwritten"
    );
    let state = runs
        .get(&run.run)
        .await
        .expect("reading")
        .expect("recorded");
    assert_eq!((&state.run, state.done.len()), (&run, 0));

    let summary = |listed| RangeSummary {
        listed,
        ..RangeSummary::default()
    };
    runs.finish_range(&run.run, 2, &summary(7))
        .await
        .expect("finishing");
    runs.finish_range(&run.run, 3, &summary(1))
        .await
        .expect("finishing");
    runs.finish_range(&run.run, 2, &summary(9))
        .await
        .expect("finishing again");
    let state = runs
        .get(&run.run)
        .await
        .expect("reading")
        .expect("recorded");
    assert_eq!(
        state.done.into_iter().collect::<Vec<_>>(),
        vec![(2, summary(9)), (3, summary(1))]
    );

    let unknown = uuid::Uuid::now_v7().to_string();
    runs.finish_range(&unknown, 0, &summary(1))
        .await
        .expect("finishing");
    assert_eq!(
        runs.get(&unknown).await.expect("reading"),
        None,
        "a finish never creates a run"
    );
}

/// Two workers share a run's range jobs: together they report and hand to recovery exactly
/// the orphans, leave the referenced blobs, and the run records every range once; recovery
/// deletes the orphans and the changelog (beside which the run row lives) stays clean.
pub async fn a_fanned_out_audit_finds_exactly_the_orphans(
    stores: Stores,
    runs: Arc<dyn AuditRuns>,
    protocol: ProtocolConfig,
) {
    let prefix = format!("fanout{}/", uuid::Uuid::now_v7().simple());
    let writer = TieredStorage::new(stores.clone(), test_writer_config(protocol))
        .expect("valid writer config");
    let mut orphans = BTreeSet::new();
    for first in ['0', 'G', 'h', 'x'] {
        orphans.insert(plant_orphan(&stores, &prefix, first).await);
    }
    let mut live = Vec::new();
    for first in ['1', 'm'] {
        let path = path_in(&prefix, first);
        writer.put(&path, large("live")).await.expect("a put");
        live.push(path);
    }
    tokio::time::sleep(min_age(protocol) + protocol.staleness_threshold).await;

    let queue = MemoryQueue::new(64, 5);
    let run = fanout::start(
        stores.changelog().as_ref(),
        runs.as_ref(),
        &queue,
        &config(protocol, &prefix, true),
        Duration::from_secs(3600),
    )
    .await
    .expect("the run starts");
    let trail = Arc::new(MemoryTrail::default());
    let cancel = tokio_util::sync::CancellationToken::new();
    let workers: Vec<_> = (0..2)
        .map(|_| serve(&stores, &runs, &trail, &queue, &cancel))
        .collect();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    let state = loop {
        let state = runs
            .get(&run.run)
            .await
            .expect("reading the run")
            .expect("recorded");
        if state.done.len() == run.ranges {
            break state;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "ranges unfinished: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    cancel.cancel();
    for w in workers {
        w.await
            .expect("the worker task")
            .expect("the worker serves");
    }
    let report = progress_report(&state);
    assert!(report.complete(), "{report:#?}");
    let t = &report.totals;
    assert_eq!(
        (t.orphans, t.referenced, t.deletes_requested),
        (4, 2, 4),
        "{report:#?}"
    );
    assert_eq!(trail.blobs(), orphans, "one trail entry per orphan");
    assert_eq!(queue.stats().dead_lettered, 0);

    crate::crash::recover_settled(&stores, test_recovery_config(protocol)).await;
    for name in &orphans {
        assert!(
            !blob_exists(&stores, name).await,
            "{name} is deleted by recovery"
        );
    }
    for path in &live {
        let value = writer.get(path).await.expect("reading");
        assert!(
            matches!(value, tiersweep::writer::ReadOutcome::Found(_)),
            "{path} still reads: {value:?}"
        );
    }
    let snapshot = tiersweep::audit::InFlight::take(stores.changelog().as_ref())
        .await
        .expect("reading the changelog");
    assert_eq!(
        (snapshot.rows, snapshot.malformed_count),
        (0, 0),
        "the run's row is not a changelog row"
    );
}

/// Jobs that are not the operator's deletes nothing: garbage, a run id that is no UUID,
/// a run never recorded, a range the run does not have, a job that tries to carry its own
/// parameters, a job of an expired run, and a deleting run's job at a worker without a
/// trail are refused unjudged; a dry run's genuine job judges without deleting, whatever
/// the job says; a finished range is not judged again; a resume republishes exactly the
/// unfinished ranges, and refuses expired and unknown runs. The worker dead-letters what
/// it refuses.
pub async fn forged_and_stale_audit_jobs_delete_nothing(
    stores: Stores,
    runs: Arc<dyn AuditRuns>,
    protocol: ProtocolConfig,
) {
    let prefix = format!("forged{}/", uuid::Uuid::now_v7().simple());
    let mut orphans = BTreeSet::new();
    for first in ['0', 'z'] {
        orphans.insert(plant_orphan(&stores, &prefix, first).await);
    }
    tokio::time::sleep(min_age(protocol) + protocol.staleness_threshold).await;
    let now = stores
        .changelog()
        .now()
        .await
        .expect("the changelog's time");
    let hour = Duration::from_secs(3600);
    let deleting = AuditRun::new(&config(protocol, &prefix, true), now, hour);
    let dry = AuditRun::new(&config(protocol, &prefix, false), now, hour);
    let expired = AuditRun::new(
        &config(protocol, &prefix, true),
        now.saturating_sub(2 * hour),
        hour,
    );
    for run in [&deleting, &dry, &expired] {
        assert!(runs.create(run).await.expect("recording a run"));
    }
    let job = |run: &str, range: usize| {
        RangeJob {
            run: run.to_owned(),
            range,
        }
        .encode()
    };
    let raw = |data: String| Message {
        data: Bytes::from(data),
        attributes: Default::default(),
    };
    let trail = Arc::new(MemoryTrail::default());
    let worker = AuditWorker::new(stores.clone(), runs.clone()).trail(trail.clone());
    let refused = [
        ("garbage", raw("{not json".into())),
        ("no uuid", job("../../etc", 0)),
        ("never recorded", job(&uuid::Uuid::now_v7().to_string(), 0)),
        ("no such range", job(&deleting.run, deleting.ranges)),
        (
            "own parameters",
            raw(format!(
                r#"{{"run":"{}","range":0,"min_age_ms":0,"delete":true}}"#,
                dry.run
            )),
        ),
        ("expired", job(&expired.run, 0)),
    ];
    for (what, message) in &refused {
        let outcome = tiersweep::audit::fanout::handle(&worker, message).await;
        assert!(
            matches!(outcome, RangeOutcome::Refused(_)),
            "{what}: {outcome:?}"
        );
    }
    let untrailed = AuditWorker::new(stores.clone(), runs.clone());
    let outcome = tiersweep::audit::fanout::handle(&untrailed, &job(&deleting.run, 0)).await;
    assert!(
        matches!(&outcome, RangeOutcome::Refused(r) if r.contains("trail")),
        "{outcome:?}"
    );

    // Half the dry run's ranges judged; a resume publishes exactly the others, and the
    // worker finishes them from the republished jobs.
    let half = dry.ranges / 2;
    for range in 0..half {
        let outcome = tiersweep::audit::fanout::handle(&worker, &job(&dry.run, range)).await;
        assert!(matches!(outcome, RangeOutcome::Done(_)), "{outcome:?}");
    }
    let republished = MemoryQueue::new(16, 5);
    let (_, n) = fanout::resume(
        stores.changelog().as_ref(),
        runs.as_ref(),
        &republished,
        &dry.run,
    )
    .await
    .expect("a live run resumes");
    assert_eq!(n, dry.ranges - half, "only the unfinished ranges");
    let mut sub = republished
        .subscribe(tiersweep::queue::FlowControl::default())
        .await
        .expect("subscribed");
    for _ in 0..n {
        let d = sub.next().await.expect("open").expect("a republished job");
        let outcome = tiersweep::audit::fanout::handle(&worker, &d.message).await;
        assert!(matches!(outcome, RangeOutcome::Done(_)), "{outcome:?}");
        d.ack();
    }
    for (what, id) in [
        ("expired", expired.run.clone()),
        ("unknown", uuid::Uuid::now_v7().to_string()),
    ] {
        let refused = fanout::resume(
            stores.changelog().as_ref(),
            runs.as_ref(),
            &republished,
            &id,
        )
        .await;
        assert!(refused.is_err(), "{what} run: {refused:?}");
    }
    assert_eq!(
        republished.stats().published,
        n as u64,
        "refused resumes publish nothing"
    );
    let state = runs
        .get(&dry.run)
        .await
        .expect("reading")
        .expect("recorded");
    let report = progress_report(&state);
    assert_eq!(
        (report.totals.orphans, report.totals.deletes_requested),
        (2, 0)
    );
    assert_eq!(
        tiersweep::audit::fanout::handle(&worker, &job(&dry.run, 0)).await,
        RangeOutcome::AlreadyDone
    );

    // Through the queue: a forged job is dead-lettered with the reason.
    let queue = MemoryQueue::new(8, 5);
    queue
        .publish(vec![job(&uuid::Uuid::now_v7().to_string(), 0)])
        .await
        .expect("publishing");
    let cancel = tokio_util::sync::CancellationToken::new();
    let serving = serve(&stores, &runs, &trail, &queue, &cancel);
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    while queue.dead_letters().is_empty() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "the forged job is not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    serving
        .await
        .expect("the worker task")
        .expect("the worker serves");
    let dead = queue.dead_letters();
    assert!(
        dead[0].attributes[tiersweep::queue::DEAD_LETTER_REASON].contains("no audit run"),
        "{dead:?}"
    );

    assert!(
        trail.blobs().is_empty(),
        "nothing was requested: {:?}",
        trail.blobs()
    );
    for name in &orphans {
        assert!(blob_exists(&stores, name).await, "{name} is untouched");
    }
    let snapshot = tiersweep::audit::InFlight::take(stores.changelog().as_ref())
        .await
        .expect("reading the changelog");
    assert_eq!(snapshot.rows, 0, "no recovery change was recorded");
}
