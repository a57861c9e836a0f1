//! Wrong configuration and outages against the real clients: each fails with an error that
//! says which store, which table/row or bucket/object, whether retrying can help, and what
//! to do.

use tiersweep::ErrorKind;
use tiersweep::bigtable::BigtableClient;
use tiersweep::hv::{BigtableHv, HvStore};
use tiersweep::lt::GcsLt;
use tiersweep::model::ObjectPath;
use tiersweep::testing::emulators::emulators;

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
