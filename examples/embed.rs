//! Embedding tiersweep in an object-store service: the writer for puts and reads, and
//! recovery in the same process, on the in-memory stores.
//!
//! It writes a few objects, then leaves behind what a writer that died mid-put leaves (a
//! changelog entry and an uploaded blob nothing references), waits past the staleness
//! threshold, and lets one recovery pass converge it.
//!
//! Run with `cargo run -p tiersweep --example embed`.

use std::time::Duration;

use bytes::Bytes;
use tiersweep::model::{ChangeId, ChangeRecord, OwnerToken, Revision};
use tiersweep::{
    EmbeddedRecovery, ObjectPath, ProtocolConfig, ReadOutcome, RecoveryConfig, Stores,
    TieredStorage, WriterConfig,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Short timings so the example finishes in a second; production keeps the defaults
    // (heartbeat 10 s, stale after 30 s).
    let protocol = ProtocolConfig {
        heartbeat_interval: Duration::from_millis(100),
        staleness_threshold: Duration::from_millis(500),
        safety_margin: Duration::from_millis(100),
    };
    let stores = Stores::in_memory(tiersweep::clock::system());
    let writer = TieredStorage::new(
        stores.clone(),
        WriterConfig {
            protocol,
            ..WriterConfig::default()
        },
    )?;

    let small = ObjectPath::new("docs/readme.txt")?;
    let large = ObjectPath::new("photos/cat.jpg")?;
    writer.put(&small, Bytes::from_static(b"hello")).await?;
    writer
        .put(&large, Bytes::from(vec![7u8; 256 * 1024]))
        .await?;
    println!("wrote {small} (inline in HV) and {large} (in LT, a tombstone in HV)");

    // What a writer that died after its upload leaves: its changelog entry and the blob.
    // Staging it takes the internals (`tiersweep::model`, the stores' traits), public
    // only with the `testing` feature this example is built with; a service never needs
    // them.
    let lost = ObjectPath::new("photos/dog.jpg")?;
    let orphan = Revision::mint(&lost);
    let record = ChangeRecord::new(
        lost.clone(),
        None,
        Some(orphan.clone()),
        OwnerToken::writer(),
    );
    stores
        .changelog()
        .record(&ChangeId::mint(), &record)
        .await?;
    stores
        .lt()
        .put(&orphan, Bytes::from_static(b"half a dog"))
        .await?;
    println!("a writer died mid-put of {lost}: blob {orphan} is referenced by nothing");

    tokio::time::sleep(protocol.staleness_threshold * 2).await;
    let recovery = EmbeddedRecovery::new(
        stores.clone(),
        RecoveryConfig {
            protocol,
            ..RecoveryConfig::default()
        },
    );
    let pass = recovery.run_pass().await?;
    println!(
        "recovery pass: {} stale changes claimed, {} converged ({} kept for a second pass: \
         a dead writer's upload may still land for recovery.upload_settle)",
        pass.scan.won, pass.converged, pass.deferred
    );

    assert_eq!((pass.converged, pass.deferred), (1, 1));
    assert!(!stores.lt().exists(&orphan).await?, "the orphan is deleted");
    assert_eq!(writer.get(&lost).await?, ReadOutcome::NotFound);
    assert!(
        matches!(writer.get(&large).await?, ReadOutcome::Found(o) if o.bytes.len() == 256 * 1024)
    );
    println!("converged: the orphan is gone, every written object reads back");
    Ok(())
}
