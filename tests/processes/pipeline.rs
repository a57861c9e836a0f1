//! The pipeline as it is deployed: `tiersweep scan` and `tiersweep clean` as separate
//! processes against the emulators, each test with its own tables, bucket and topics.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tiersweep::clock;
use tiersweep::config::{Config, ProtocolConfig};
use tiersweep::lt::LtAccess;
use tiersweep::model::{ChangeId, HvValue, ObjectPath, OwnerToken};
use tiersweep::queue::{DEAD_LETTER_REASON, JobQueue, Message, PubsubQueue};
use tiersweep::recovery::{CleanupJob, inspect};
use tiersweep::testing::invariants::{self, Acceptable};
use tiersweep::writer::TieredStorage;
use tiersweep::{StoreResult, Stores};
use tiersweep_testkit::crash::{self, Scenario, test_writer_config};
use tiersweep_testkit::emulators::{emulators, env_for};

fn protocol() -> ProtocolConfig {
    ProtocolConfig {
        heartbeat_interval: Duration::from_millis(200),
        staleness_threshold: Duration::from_millis(1000),
        safety_margin: Duration::from_millis(300),
    }
}

async fn setup() -> (Config, Stores) {
    let mut config = emulators().await.fresh_config(protocol()).await;
    config.recovery.claim_lease = Duration::from_secs(30);
    config.recovery.idle_poll = Duration::from_millis(200);
    let stores = Stores::connect_to(
        &config.bigtable,
        &config.gcs,
        clock::system(),
        LtAccess::Write,
    )
    .await
    .unwrap();
    (config, stores)
}

/// A worker process: killed on drop if the test did not stop it.
struct Worker(Child);

impl Worker {
    fn spawn(config: &Config, args: &[&str]) -> Self {
        Self::spawn_with(config, args)
    }

    fn spawn_with(config: &Config, args: &[&str]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_tiersweep"))
            .args(args)
            .envs(env_for(config))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning tiersweep");
        Self(child)
    }

    /// SIGTERM, then the exit status (within 30 s).
    fn terminate(mut self) -> ExitStatus {
        let pid = self.0.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "worker {pid} ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn crashed_puts(stores: &Stores, n: usize) -> BTreeMap<ObjectPath, Acceptable> {
    crash::crashed_large_puts(stores, test_writer_config(protocol()), n).await
}

async fn rows(stores: &Stores) -> StoreResult<usize> {
    Ok(inspect::backlog(
        stores.changelog().as_ref(),
        stores.clock(),
        protocol().staleness_threshold,
        500,
    )
    .await?
    .rows)
}

async fn wait_until_empty(stores: &Stores, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let n = rows(stores).await.unwrap();
        if n == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} changelog rows left after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanner_and_cleaner_processes_converge_stale_changes_and_exit_cleanly_on_sigterm() {
    let (config, stores) = setup().await;
    let expected = crashed_puts(&stores, 20).await;
    assert_eq!(rows(&stores).await.unwrap(), 20);
    // Two scanners over the same shards race for every row; two cleaners share the jobs.
    let health = tiersweep::testing::free_local_addr().unwrap();
    let scanners = [
        Worker::spawn(&config, &["scan", "--health-listen", &health.to_string()]),
        Worker::spawn(&config, &["scan"]),
    ];
    let cleaners = [
        Worker::spawn(&config, &["clean"]),
        Worker::spawn(&config, &["clean"]),
    ];
    wait_for_ready(health).await;
    wait_until_empty(&stores, Duration::from_secs(60)).await;
    for w in scanners.into_iter().chain(cleaners) {
        let status = w.terminate();
        assert!(status.success(), "a worker exits 0 on SIGTERM: {status}");
    }
    invariants::check(&stores, &expected)
        .await
        .unwrap()
        .assert_converged();
}

async fn wait_for_ready(addr: std::net::SocketAddr) {
    let url = format!("http://{addr}/readyz");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(&url).await
            && r.status().is_success()
        {
            let live = reqwest::get(format!("http://{addr}/healthz"))
                .await
                .unwrap();
            assert!(live.status().is_success());
            return;
        }
        assert!(Instant::now() < deadline, "{url} never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_forged_and_duplicate_jobs_delete_nothing_they_should_not() {
    let (mut config, stores) = setup().await;
    config.recovery.object_prefix = "crash/".into();
    // Only a cleaner runs here: no scanner would take a settled change's second pass.
    config.recovery.upload_settle = Duration::ZERO;
    let queue = Arc::new(PubsubQueue::connect(&config.pubsub).await.unwrap());

    // A live object written cleanly: its blob must survive everything below.
    let live = crash::unique_path();
    let writer = TieredStorage::new(stores.clone(), test_writer_config(protocol())).unwrap();
    writer
        .put(&live, Scenario::LargePut.values().1.unwrap())
        .await
        .unwrap();
    let Some(HvValue::Tombstone(live_rev)) = stores.hv().read(&live).await.unwrap() else {
        panic!("a large put leaves a tombstone");
    };

    // A change whose writer is still working: it has uploaded `pending` and not yet
    // swapped HV. A cleaner that obeyed a forged job for it would delete that upload.
    let in_flight = ChangeId::mint();
    let pending = tiersweep::model::Revision::mint(&live);
    stores.lt().put(&pending, "uploading".into()).await.unwrap();
    let record = tiersweep::model::ChangeRecord::new(
        live.clone(),
        Some(live_rev.clone()),
        Some(pending.clone()),
        OwnerToken::mint("writer"),
    );
    stores
        .changelog()
        .record(&in_flight, &record)
        .await
        .unwrap();

    // A crashed change, claimed once, and its job delivered twice.
    let expected = crashed_puts(&stores, 1).await;
    tokio::time::sleep(protocol().staleness_threshold + Duration::from_millis(100)).await;
    let page = stores
        .changelog()
        .scan_stale(&tiersweep::changelog::ScanRequest {
            shards: tiersweep::model::ShardSet::ALL,
            cutoff: stores
                .clock()
                .now()
                .saturating_sub(protocol().staleness_threshold),
            stamped_from: None,
            now: stores.clock().now(),
            start_after: None,
            limit: 10,
            minted: None,
            report_waiting: false,
        })
        .await
        .unwrap();
    let crashed = page
        .rows
        .into_iter()
        .find_map(|r| match r {
            tiersweep::changelog::ScannedRow::Entry(e) if e.id != in_flight => Some(e),
            _ => None,
        })
        .expect("the crashed change is stale");
    let claimer = OwnerToken::mint("recovery");
    let lease = stores.clock().now().saturating_add(Duration::from_secs(30));
    let cutoff = stores
        .clock()
        .now()
        .saturating_sub(protocol().staleness_threshold);
    assert!(matches!(
        stores
            .changelog()
            .claim(&crashed, cutoff, &claimer, lease)
            .await
            .unwrap(),
        tiersweep::changelog::Claim::Won(_)
    ));
    let job = CleanupJob::new(crashed.id.clone(), claimer).to_message(BTreeMap::new());

    queue
        .publish(vec![
            // Poison: not a job at all.
            Message {
                data: "{\"rm\": \"-rf /\"}".into(),
                attributes: BTreeMap::new(),
            },
            // Forged: names the live object's in-flight change with a made-up claim.
            CleanupJob::new(in_flight.clone(), OwnerToken::mint("recovery"))
                .to_message(BTreeMap::new()),
            // The real job, twice (Pub/Sub may deliver any message more than once).
            job.clone(),
            job,
        ])
        .await
        .unwrap();

    let cleaner = Worker::spawn(&config, &["clean"]);
    let dead = emulators()
        .await
        .dead_letters(&config.pubsub, 1, Duration::from_secs(30))
        .await;
    wait_until_only(&stores, &in_flight, Duration::from_secs(30)).await;
    assert!(cleaner.terminate().success());

    assert_eq!(
        dead.len(),
        1,
        "only the poison message is dead-lettered: {dead:?}"
    );
    assert!(
        dead[0].attributes[DEAD_LETTER_REASON].contains("poison"),
        "{:?}",
        dead[0].attributes
    );
    assert!(
        stores.lt().exists(&live_rev).await.unwrap(),
        "the live object's blob survives (I4)"
    );
    assert!(
        stores.lt().exists(&pending).await.unwrap(),
        "the in-flight writer's upload survives the forged job (I4)"
    );
    assert_eq!(
        stores
            .changelog()
            .get(&in_flight)
            .await
            .unwrap()
            .map(|e| e.record.owner),
        Some(record.owner),
        "the forged job left the writer's row alone"
    );
    // The crashed change converged despite its duplicate job (the writer's in-flight row,
    // checked above, is outside the objects this report covers).
    invariants::check(&stores, &expected)
        .await
        .unwrap()
        .assert_converged();
}

/// Waits until the changelog holds only `keep`.
async fn wait_until_only(stores: &Stores, keep: &ChangeId, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let n = rows(stores).await.unwrap();
        if n == 1 && stores.changelog().get(keep).await.unwrap().is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "{n} changelog rows left");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn run_cli(config: &Config, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tiersweep"))
        .args(args)
        .envs(env_for(config))
        .output()
        .expect("running tiersweep");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_inspect_and_dry_run_report_without_changing_anything() {
    let (config, stores) = setup().await;
    let expected = crashed_puts(&stores, 3).await;
    tokio::time::sleep(protocol().staleness_threshold + Duration::from_millis(100)).await;

    let (ok, out, err) = run_cli(&config, &["status", "--json"]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (status["rows"].as_u64(), status["stale"].as_u64()),
        (Some(3), Some(3)),
        "{status}"
    );
    assert!(status["oldest_stale"]["change"].is_string(), "{status}");
    // No scanner runs here: every shard is unheld.
    assert_eq!(status["leases"]["unheld"].as_u64(), Some(1024), "{status}");
    assert_eq!(
        status["leases"]["members"].as_array().map(Vec::len),
        Some(0)
    );

    let (ok, out, err) = run_cli(&config, &["recover", "--dry-run", "--json"]);
    assert!(ok, "{err}");
    let views: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(views.len(), 3, "{out}");
    for v in &views {
        // Each crashed put uploaded its new revision; HV does not reference it.
        let doomed = v["would_delete"][0]
            .as_str()
            .expect("one revision to delete");
        assert_eq!(Some(doomed), v["new"].as_str(), "{v}");
        let rev = tiersweep::model::Revision::parse(doomed).unwrap();
        assert!(
            stores.lt().exists(&rev).await.unwrap(),
            "a dry run deletes nothing"
        );
    }
    assert!(err.contains("nothing was changed"), "{err}");

    let change = views[0]["change"].as_str().unwrap();
    let (ok, out, err) = run_cli(&config, &["inspect", change]);
    assert!(ok, "{err}");
    let view: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(view["change"].as_str(), Some(change));
    assert_eq!(view["hv"].as_str(), Some("absent"));

    let (ok, _, err) = run_cli(&config, &["inspect", "not-a-change"]);
    assert!(!ok && err.contains("not a change id"), "{err}");
    let (ok, _, err) = run_cli(&config, &["recover"]);
    assert!(!ok && err.contains("--dry-run"), "{err}");

    // Still all there: nothing above claimed, fenced or deleted.
    assert_eq!(rows(&stores).await.unwrap(), 3);
    let report = invariants::check(&stores, &expected).await.unwrap();
    assert_eq!(report.orphans.len(), 3, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_setting_stops_a_worker_with_the_field_named() {
    let (config, _) = setup().await;
    let (ok, _, err) = run_cli(
        &config,
        &["scan", "--set", "protocol.staleness_threshold=300ms"],
    );
    assert!(!ok);
    assert!(err.contains("protocol.staleness_threshold"), "{err}");
    assert_eq!(
        exit_code(
            &config,
            &["scan", "--set", "protocol.staleness_threshold=300ms"]
        ),
        3
    );
    let (ok, _, err) = run_cli(
        &config,
        &["clean", "--set", "gcs.bucket=no-such-bucket-here"],
    );
    assert!(!ok);
    assert!(
        err.contains("no-such-bucket-here") && err.contains("does not exist"),
        "{err}"
    );
    // Under JSON logs the failure is a JSON line too, with the same words and exit code.
    let (ok, _, err) = run_cli(
        &config,
        &[
            "--log-format",
            "json",
            "clean",
            "--set",
            "gcs.bucket=no-such-bucket-here",
        ],
    );
    assert!(!ok);
    let last: serde_json::Value = serde_json::from_str(err.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the last line is not JSON ({e}): {err}"));
    assert_eq!(last["severity"], "ERROR", "{last}");
    assert_eq!(last["fields"]["exit_code"], 4, "{last}");
    let error = last["fields"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("no-such-bucket-here"), "{last}");
    assert_eq!(
        exit_code(
            &config,
            &["clean", "--set", "gcs.bucket=no-such-bucket-here"]
        ),
        4
    );
    // A cleaner that would dead-letter later than the subscription does: jobs would reach
    // the dead-letter topic without the cleaner's reason.
    let (ok, _, err) = run_cli(
        &config,
        &["clean", "--set", "recovery.max_delivery_attempts=7"],
    );
    assert!(!ok);
    assert!(
        err.contains("recovery.max_delivery_attempts is 7") && err.contains("after 5 deliveries"),
        "{err}"
    );
    assert_eq!(
        exit_code(
            &config,
            &["clean", "--set", "recovery.max_delivery_attempts=7"]
        ),
        3
    );
}

/// The exit code of a one-shot run (`tiersweep --help` lists them).
fn exit_code(config: &Config, args: &[&str]) -> i32 {
    Command::new(env!("CARGO_BIN_EXE_tiersweep"))
        .args(args)
        .envs(env_for(config))
        .output()
        .expect("running tiersweep")
        .status
        .code()
        .expect("an exit code, not a signal")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_cleaner_is_killed_mid_job_is_converged_by_another() {
    let (config, stores) = setup().await;
    let expected = crashed_puts(&stores, 1).await;
    tokio::time::sleep(protocol().staleness_threshold + Duration::from_millis(100)).await;

    // Cleaner A reaches Bigtable through a proxy we can freeze, with a long RPC deadline,
    // so that it hangs inside its job until we kill it.
    let bigtable = config.bigtable.emulator_host.clone().unwrap();
    let proxy = tiersweep_testkit::proxy::ChaosProxy::start(bigtable)
        .await
        .unwrap();
    let mut a_config = config.clone();
    a_config.bigtable.emulator_host = Some(proxy.addr().to_string());
    let health = tiersweep::testing::free_local_addr().unwrap();
    let a = Worker::spawn_with(
        &a_config,
        &[
            "clean",
            "--health-listen",
            &health.to_string(),
            "--set",
            "bigtable.timeout=120s",
            "--set",
            "pubsub.lease_extension=10s",
        ],
    );
    wait_for_ready(health).await;
    proxy.set_stalled(true);

    let queue: Arc<dyn JobQueue> = Arc::new(PubsubQueue::connect(&config.pubsub).await.unwrap());
    let mut scanner = tiersweep::recovery::Scanner::new(
        stores.changelog().clone(),
        queue,
        config.recovery(),
        tiersweep::model::ShardRange::ALL,
    );
    let scan = scanner.scan_page().await.unwrap();
    assert_eq!(scan.published, 1, "{scan:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rows(&stores).await.unwrap(), 1, "A is stuck inside the job");
    drop(a); // SIGKILL: no nack, no drain; the delivery's ack deadline has to run out.

    let b = Worker::spawn(&config, &["clean"]);
    // A's lease extension is 10 s, so its job returns to the pool about 10 s after the kill.
    // The Pub/Sub emulator (0.8.20) fails to close the stream of a client that went away
    // (a NoSuchMethodError in its reset handler) and may redeliver to that dead stream
    // again, each time for another 10 s: runs of this test took 12, 23, 23, 47 and 12 s,
    // and one CI run saw nothing redelivered for 3 minutes. Cloud Pub/Sub drops a dead
    // stream's leases. Liveness must not rest on the queue returning the job, so a scanner
    // keeps running: once the claim's lease (30 s here) runs out, the row is claimed again
    // and a fresh job reaches B, whichever comes first.
    let cancel = tokio_util::sync::CancellationToken::new();
    let rescan = tokio::spawn({
        let cancel = cancel.clone();
        async move { scanner.run(cancel).await }
    });
    wait_until_empty(&stores, Duration::from_secs(120)).await;
    cancel.cancel();
    let _ = rescan.await;
    assert!(b.terminate().success());
    invariants::check(&stores, &expected)
        .await
        .unwrap()
        .assert_converged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_for_an_object_outside_the_prefix_is_dead_lettered_and_deletes_nothing() {
    let (mut config, stores) = setup().await;
    // The crashed object lives under crash/; this pool may only touch tenant-a/.
    config.recovery.object_prefix = "tenant-a/".into();
    let expected = crashed_puts(&stores, 1).await;
    tokio::time::sleep(protocol().staleness_threshold + Duration::from_millis(100)).await;
    let queue: Arc<dyn JobQueue> = Arc::new(PubsubQueue::connect(&config.pubsub).await.unwrap());
    let mut scanner = tiersweep::recovery::Scanner::new(
        stores.changelog().clone(),
        queue,
        config.recovery(),
        tiersweep::model::ShardRange::ALL,
    );
    assert_eq!(scanner.scan_page().await.unwrap().published, 1);

    let cleaner = Worker::spawn(&config, &["clean"]);
    let dead = emulators()
        .await
        .dead_letters(&config.pubsub, 1, Duration::from_secs(30))
        .await;
    assert!(cleaner.terminate().success());
    assert_eq!(dead.len(), 1);
    let reason = &dead[0].attributes[DEAD_LETTER_REASON];
    assert!(reason.contains("outside the configured prefix"), "{reason}");
    // Nothing deleted, the row kept for an operator (I4, I5).
    let report = invariants::check(&stores, &expected).await.unwrap();
    assert_eq!(
        (report.orphans.len(), report.changelog_remaining),
        (1, 1),
        "{report:#?}"
    );
}

mod iam_contract;

/// Runs `tiersweep` with `args` to completion and returns the Google Cloud calls it
/// reported at exit.
fn one_shot_calls(config: &Config, args: &[&str]) -> BTreeSet<tiersweep::iam::Call> {
    one_shot(config, args).1
}

/// Runs `tiersweep` with `args` to completion; returns its stdout and the Google Cloud
/// calls it reported at exit.
fn one_shot(config: &Config, args: &[&str]) -> (String, BTreeSet<tiersweep::iam::Call>) {
    let out = Command::new(env!("CARGO_BIN_EXE_tiersweep"))
        .args(["--log-format", "json"])
        .args(args)
        .envs(env_for(config))
        .env("RUST_LOG", "warn,tiersweep::gcp_calls=debug")
        .output()
        .expect("running tiersweep");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tiersweep {args:?} failed: {stderr}");
    let calls = iam_contract::calls_from_log(&stderr)
        .unwrap_or_else(|| panic!("tiersweep {args:?} logged no calls: {stderr}"));
    (String::from_utf8_lossy(&out.stdout).into_owned(), calls)
}

/// A worker whose stderr goes to a file, to read its exit log after SIGTERM.
fn logged_worker(config: &Config, args: &[&str], log: &std::path::Path) -> Worker {
    let file = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tiersweep"))
        .args(["--log-format", "json"])
        .args(args)
        .envs(env_for(config))
        .env("RUST_LOG", "warn,tiersweep::gcp_calls=debug")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawning tiersweep");
    Worker(child)
}

/// Every role, run as the real binary on the emulators through the work it exists for,
/// calls exactly what infra/terraform grants its service account: every permission its
/// calls need is granted on that resource, and every binding is needed by some call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_calls_exactly_what_terraform_grants_it() {
    use tiersweep::iam::Role;
    let grants = iam_contract::bindings(include_str!("../../infra/terraform/iam.tf")).unwrap();
    let (config, stores) = setup().await;
    let expected = crashed_puts(&stores, 4).await;
    tokio::time::sleep(protocol().staleness_threshold * 2).await;
    let page = stores
        .changelog()
        .scan_stale(&tiersweep::changelog::ScanRequest {
            shards: tiersweep::model::ShardSet::ALL,
            cutoff: tiersweep::model::Timestamp(i64::MAX),
            stamped_from: None,
            now: tiersweep::model::Timestamp(i64::MAX),
            start_after: None,
            limit: 10,
            minted: None,
            report_waiting: false,
        })
        .await
        .unwrap();
    let Some(tiersweep::changelog::ScannedRow::Entry(entry)) = page.rows.first() else {
        panic!("no changelog row to inspect");
    };

    // The operator's views, before recovery, while there is something to show.
    let mut operator = one_shot_calls(&config, &["status"]);
    operator.extend(one_shot_calls(&config, &["inspect", &entry.id.to_string()]));
    operator.extend(one_shot_calls(&config, &["recover", "--dry-run"]));
    // `reset` writes the changelog: the auditor's account runs it (the operator's reads).
    let mut auditor = one_shot_calls(&config, &["reset", &entry.id.to_string()]);

    // The pools, through a whole recovery: claims, publishes, pulls, converges, acks, and a
    // poison message the cleaner dead-letters.
    let queue = PubsubQueue::connect(&config.pubsub).await.unwrap();
    queue
        .publish(vec![Message {
            data: "not a cleanup job".into(),
            attributes: BTreeMap::new(),
        }])
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tiersweep-iam-{}", ChangeId::mint()));
    std::fs::create_dir_all(&dir).unwrap();
    let scanner = logged_worker(&config, &["scan"], &dir.join("scan.log"));
    let cleaner = logged_worker(&config, &["clean"], &dir.join("clean.log"));
    wait_until_empty(&stores, Duration::from_secs(120)).await;
    // The operator's dead-letter tools: list the poison message (the cleaner dead-letters
    // it), replay it, purge nothing younger than a day.
    let json = |out: &str| -> serde_json::Value {
        serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    };
    // Each retried while it sees nothing (a pull may answer empty).
    let retried = |args: &[&str], key: &str| {
        let give_up = std::time::Instant::now() + Duration::from_secs(90);
        let mut calls = BTreeSet::new();
        loop {
            let (out, more) = one_shot(&config, args);
            calls.extend(more);
            if json(&out)[key] == 1 || std::time::Instant::now() > give_up {
                return (out, calls);
            }
        }
    };
    let (listed, calls) = retried(
        &[
            "dlq",
            "list",
            "--json",
            "--quiet",
            "1s",
            "--first-wait",
            "25s",
        ],
        "total",
    );
    assert_eq!(
        json(&listed)["total"],
        1,
        "the poison message is dead-lettered: {listed}"
    );
    operator.extend(calls);
    let (replayed, calls) = retried(
        &[
            "dlq",
            "replay",
            "--json",
            "--quiet",
            "1s",
            "--first-wait",
            "25s",
        ],
        "done",
    );
    assert_eq!(json(&replayed)["done"], 1, "{replayed}");
    operator.extend(calls);
    operator.extend(one_shot_calls(
        &config,
        &["dlq", "purge", "--older-than", "1d", "--quiet", "1s"],
    ));
    assert!(scanner.terminate().success());
    assert!(cleaner.terminate().success());
    invariants::check(&stores, &expected)
        .await
        .unwrap()
        .assert_converged();
    let read = |name: &str| {
        let log = std::fs::read_to_string(dir.join(name)).unwrap();
        iam_contract::calls_from_log(&log).unwrap_or_else(|| panic!("{name}: no calls: {log}"))
    };
    let scanner_calls = read("scan.log");
    let cleaner_calls = read("clean.log");
    // The audit after recovery, deleting: it finds nothing to delete, but takes the
    // changelog's time (a write) as it would before requesting a deletion.
    let trail = dir.join("audit-trail.jsonl");
    auditor.extend(one_shot_calls(
        &config,
        &[
            "audit",
            "--min-age",
            "0s",
            "--delete",
            "--trail",
            trail.to_str().unwrap(),
        ],
    ));
    // The fanned-out audit: a worker pool of one takes the run's range jobs and refuses a
    // forged one (dead-lettering it); the coordinator waits for every range. An orphan
    // planted after recovery is the one it finds and hands to recovery, its trail entry
    // published to the trail topic first.
    let orphan = tiersweep::model::Revision::mint(&ObjectPath::new("fanned/orphan").unwrap());
    stores
        .lt()
        .put(&orphan, bytes::Bytes::from_static(b"nobody's"))
        .await
        .unwrap();
    let audit_worker = logged_worker(
        &config,
        &["audit", "--worker", "--trail-topic"],
        &dir.join("audit-worker.log"),
    );
    let forged = tiersweep::audit::RangeJob {
        run: uuid::Uuid::now_v7().to_string(),
        range: 0,
    };
    PubsubQueue::connect_audit_publisher(&config.pubsub)
        .await
        .unwrap()
        .publish(vec![forged.encode()])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (fanned, calls) = one_shot(
        &config,
        &[
            "audit",
            "--fan-out",
            "--ranges",
            "3",
            "--min-age",
            "0s",
            "--delete",
            "--json",
        ],
    );
    auditor.extend(calls);
    let fanned = json(&fanned);
    assert_eq!(fanned["totals"]["orphans"], 1, "{fanned}");
    assert_eq!(fanned["totals"]["deletes_requested"], 1, "{fanned}");
    assert_eq!(
        fanned["ranges"].as_array().map(Vec::len),
        Some(3),
        "{fanned}"
    );
    let worker_log = dir.join("audit-worker.log");
    let give_up = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&worker_log)
        .unwrap_or_default()
        .contains("audit job refused")
    {
        assert!(
            Instant::now() < give_up,
            "the forged audit job was not refused"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(audit_worker.terminate().success());
    auditor.extend(read("audit-worker.log"));
    let _ = std::fs::remove_dir_all(&dir);

    let mut problems = Vec::new();
    for (role, calls) in [
        (Role::Scanner, &scanner_calls),
        (Role::Cleaner, &cleaner_calls),
        (Role::Operator, &operator),
        (Role::Auditor, &auditor),
    ] {
        assert!(!calls.is_empty(), "{role:?} reported no calls");
        problems.extend(iam_contract::problems(role, calls, &grants));
    }
    assert!(
        problems.is_empty(),
        "IAM contract broken:\n{}",
        problems.join("\n")
    );

    // The check can fail: without any one binding, some call is no longer covered; and a
    // call a role does not make today (a scanner listing the bucket) is not granted.
    for removed in 0..grants.len() {
        let mut fewer = grants.clone();
        let gone = fewer.remove(removed);
        let broken = [
            (Role::Scanner, &scanner_calls),
            (Role::Cleaner, &cleaner_calls),
            (Role::Operator, &operator),
            (Role::Auditor, &auditor),
        ]
        .into_iter()
        .any(|(role, calls)| !iam_contract::problems(role, calls, &fewer).is_empty());
        assert!(
            broken,
            "removing {} broke nothing: the check is blind to it",
            gone.name
        );
    }
    let mut more = scanner_calls.clone();
    more.insert(tiersweep::iam::Call {
        method: tiersweep::iam::Method::GcsObjectsList,
        resource: tiersweep::iam::Resource::Bucket,
    });
    assert!(!iam_contract::problems(Role::Scanner, &more, &grants).is_empty());
}
