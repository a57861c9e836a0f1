//! Wrong configuration and outages against the real clients: each fails with an error that
//! says which store, which table/row or bucket/object, whether retrying can help, and what
//! to do.

use tiersweep::ErrorKind;
use tiersweep::bigtable::BigtableClient;
use tiersweep::hv::{BigtableHv, HvStore};
use tiersweep::lt::GcsLt;
use tiersweep::model::ObjectPath;
use tiersweep_testkit::emulators::emulators;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_refused_at_connect_by_name() {
    let e = emulators().await;
    let mut config = e.gcs_config().await;
    config.bucket = "tiersweep-no-such-bucket".into();
    let err = GcsLt::connect(&config, tiersweep::lt::LtAccess::Write)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    assert!(err.target.contains("tiersweep-no-such-bucket"), "{err}");
    assert!(err.message.contains("does not exist"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_is_a_permanent_error_naming_table_and_row() {
    let e = emulators().await;
    let config = e.bigtable_config("no-such-table", "no-such-changelog");
    let client = BigtableClient::connect(&config).await.unwrap();
    let hv = BigtableHv::new(client, "no-such-table");
    let err = hv.read(&ObjectPath::new("a/b").unwrap()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    assert!(
        err.target.contains("no-such-table") && err.target.contains("a/b"),
        "{err}"
    );
    assert!(err.message.contains("does the table exist"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bigtable_is_a_transient_error() {
    let e = emulators().await;
    let mut config = e.bigtable_config("objects", "changelog");
    // Nothing listens on the discard port on loopback.
    config.emulator_host = Some("127.0.0.1:9".into());
    let client = BigtableClient::connect(&config).await.unwrap();
    let hv = BigtableHv::new(client, "objects");
    let err = hv.read(&ObjectPath::new("a/b").unwrap()).await.unwrap_err();
    assert!(err.is_transient(), "retrying may help: {err}");
    assert_eq!(err.op, "ReadRows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_gcs_is_a_transient_error_at_connect() {
    let e = emulators().await;
    let mut config = e.gcs_config().await;
    config.emulator_url = Some("http://127.0.0.1:9".into());
    let err = GcsLt::connect(&config, tiersweep::lt::LtAccess::Write)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "retrying may help: {err}");
}

/// A peer that stops answering mid-call (the connection kept open, every byte held) must
/// fail the call within its deadline, not hold the caller forever: the official GCS and
/// Pub/Sub clients set no deadline of their own on uploads, reads and publishes.
mod stalled {
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use tiersweep::lt::{GcsLt, LtAccess, LtStore};
    use tiersweep::model::{ObjectPath, Revision};
    use tiersweep::queue::{JobQueue, Message, PubsubQueue};
    use tiersweep_testkit::emulators::emulators;
    use tiersweep_testkit::proxy::ChaosProxy;

    const DEADLINE: Duration = Duration::from_secs(2);

    /// Fails the test if `call` takes far longer than its deadline.
    async fn bounded<T>(call: impl std::future::Future<Output = T>) -> (T, Duration) {
        let start = Instant::now();
        let out = tokio::time::timeout(Duration::from_secs(60), call)
            .await
            .expect("the call hung past 60 s: no deadline applied");
        (out, start.elapsed())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_gcs_fails_uploads_and_reads_within_the_deadline() {
        let e = emulators().await;
        let mut config = e.gcs_config().await;
        let target = config
            .emulator_url
            .clone()
            .expect("gcs emulator")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let proxy = ChaosProxy::start(target).await.unwrap();
        config.emulator_url = Some(format!("http://{}", proxy.addr()));
        config.timeout = DEADLINE;
        let lt = GcsLt::connect(&config, LtAccess::Write).await.unwrap();
        let kept = Revision::mint(&ObjectPath::new("stall/kept").unwrap());
        lt.put(&kept, Bytes::from_static(b"before the stall"))
            .await
            .unwrap();

        proxy.set_stalled(true);
        let rev = Revision::mint(&ObjectPath::new("stall/put").unwrap());
        let (put, took) = bounded(lt.put(&rev, Bytes::from_static(b"held"))).await;
        let err = put.expect_err("a stalled upload fails");
        assert!(err.is_transient(), "{err}");
        assert!(err.message.contains("gcs.timeout"), "{err}");
        assert!(took < DEADLINE * 5, "failed after {took:?}");
        let (get, _) = bounded(lt.get(&kept)).await;
        let err = get.expect_err("a stalled read fails");
        assert!(err.is_transient(), "{err}");
        proxy.heal();
    }

    /// A stall from the first byte: the channel's deadline ends it. (A stream that stops
    /// mid-read is bounded by the whole-read deadline in `BigtableClient::read_rows_in`;
    /// this proxy cannot stall after a given number of bytes.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_bigtable_fails_a_read_within_the_deadline() {
        use tiersweep::hv::{BigtableHv, HvStore};
        let e = emulators().await;
        let (_, mut config) = e.new_tables().await;
        let proxy = ChaosProxy::start(config.emulator_host.clone().expect("bigtable emulator"))
            .await
            .unwrap();
        config.emulator_host = Some(proxy.addr().to_string());
        config.timeout = DEADLINE;
        let client = tiersweep::bigtable::BigtableClient::connect(&config)
            .await
            .unwrap();
        let hv = BigtableHv::new(client, &config.hv_table);
        let path = ObjectPath::new("stall/row").unwrap();
        hv.read(&path).await.expect("a read before the stall");
        proxy.set_stalled(true);
        let (read, took) = bounded(hv.read(&path)).await;
        let err = read.expect_err("a stalled read fails");
        assert!(err.is_transient(), "{err}");
        assert!(took < DEADLINE * 5, "failed after {took:?}");
        proxy.heal();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_pubsub_fails_a_publish_within_the_deadline() {
        let e = emulators().await;
        let mut config = e.pubsub_config().await;
        let proxy = ChaosProxy::start(config.emulator_host.clone().expect("pubsub emulator"))
            .await
            .unwrap();
        config.emulator_host = Some(proxy.addr().to_string());
        config.timeout = DEADLINE;
        let queue = PubsubQueue::connect_publisher(&config).await.unwrap();
        proxy.set_stalled(true);
        let (published, took) = bounded(queue.publish(vec![Message {
            data: Bytes::from_static(b"held"),
            attributes: Default::default(),
        }]))
        .await;
        let err = published.expect_err("a stalled publish fails");
        assert!(err.is_transient(), "{err}");
        assert!(err.message.contains("pubsub.timeout"), "{err}");
        assert!(took < DEADLINE * 5, "failed after {took:?}");
        proxy.heal();
    }
}
