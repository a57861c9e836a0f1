// The crate's front page is the architecture document, so that its map and vocabulary are
// read where the code is, and its paths are checked (`tests/doc_paths.rs`).
#![doc = include_str!("../docs/architecture.md")]
//!
//! ## The invariants every test checks (`testing::invariants`, with the `testing` feature)
//!
//! * **I1 no loss** — a blob HV references is never deleted; an acknowledged write stays readable.
//! * **I2 convergence** — once writers are quiet and the threshold has passed, there are no
//!   orphaned blobs, no dangling tombstones, and the changelog is empty.
//! * **I3 fencing** — once recovery has claimed a change, its writer can no longer commit the HV
//!   write for it: the heartbeat is conditional on ownership, the writer's guard expires on its
//!   own monotonic and wall clocks, and recovery fences the HV row (with a fence that never
//!   expires) before it reads it.
//! * **I4 bounded trust** — a job message names a changelog row and a claim, nothing else; what
//!   gets deleted follows from the row and HV alone, and only within the configured scope.
//! * **I5 no silent drop** — a job that cannot be processed is dead-lettered with its reason,
//!   and its changelog row stays until it is converged.
//!
//! ## Embedding the writer
//!
//! An object-store service puts and reads through [`TieredStorage`]; recovery runs as the
//! scanner and cleaner pools, or in the same process with [`EmbeddedRecovery`]. On the
//! in-memory stores (`examples/embed.rs` is the longer version, with a crashed write):
//!
//! ```
//! use bytes::Bytes;
//! use tiersweep::{EmbeddedRecovery, Object, ObjectMeta, ObjectPath, ReadOutcome};
//! use tiersweep::{RecoveryConfig, Stores, TieredStorage, WriterConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! let stores = Stores::in_memory(tiersweep::clock::system());
//! let writer = TieredStorage::new(stores.clone(), WriterConfig::default())?;
//! let photo = ObjectPath::new("photos/cat.jpg")?;
//! let bytes = Bytes::from(vec![7u8; 100 * 1024]); // over the inline threshold: goes to LT
//! let meta = ObjectMeta::default().with_content_type("image/jpeg")?;
//! writer.put_with_meta(&photo, bytes.clone(), meta.clone()).await?;
//! assert_eq!(writer.get(&photo).await?, ReadOutcome::Found(Object { bytes, meta }));
//!
//! // A completed write leaves nothing for recovery.
//! let pass = EmbeddedRecovery::new(stores, RecoveryConfig::default()).run_pass().await?;
//! assert_eq!(pass.converged, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
// Every public item is documented (clippy -D warnings makes a missing doc an error), except
// in the feature-gated test and demo machinery, which production never compiles (the
// test kit and the benchmark are crates of their own: testkit/, bench/).
#![warn(missing_docs)]
// A production function says what it does in under 80 lines (clippy.toml); the test and
// demo machinery is exempt.
#![warn(clippy::too_many_lines)]

/// Declares the modules behind the public API: public when the test machinery is compiled
/// (feature `testing`: the test kit, the demo, the benchmark and the integration tests
/// check the internals), private otherwise. An embedding service and the release binary
/// see only what this file and [`worker`] export.
macro_rules! internal_modules {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "testing")]
        pub mod $name;
        #[cfg(not(feature = "testing"))]
        mod $name;
    )*};
}

internal_modules! {
    audit,
    bigtable,
    changelog,
    config,
    duration,
    error,
    health,
    hv,
    iam,
    shard_lease,
    lt,
    model,
    mutants,
    pace,
    protocol,
    queue,
    recovery,
    stores,
    telemetry,
    writer,
}
pub mod clock;
#[cfg(feature = "dev")]
#[allow(missing_docs, clippy::too_many_lines)]
pub mod demo;
mod retry;
#[cfg(any(test, feature = "testing"))]
#[allow(missing_docs, clippy::too_many_lines)]
pub mod testing;
pub mod worker;

pub use bigtable::BigtableConfig;
pub use error::{ConfigError, ErrorKind, StoreError, StoreKind, StoreResult};
pub use lt::{GcsConfig, LtAccess};
pub use model::meta::{MAX_CONTENT_TYPE_BYTES, MAX_USER_BYTES, RESERVED_PREFIX};
pub use model::{MAX_OBJECT_PATH_BYTES, ModelError, ObjectMeta, ObjectPath, Timestamp};
pub use protocol::ProtocolConfig;
pub use recovery::{EmbeddedRecovery, PassReport, RecoveryConfig, ScanReport};
pub use retry::RetryPolicy;
pub use stores::Stores;
pub use writer::{
    DeferredPut, GuardState, Object, ReadOutcome, StreamOutcome, TieredStorage, WriteError,
    WriterConfig,
};

/// Exports tiersweep's metrics through an embedding service's own OpenTelemetry meter
/// provider: writes, heartbeats, fenced writers, uploads and, if recovery runs in the
/// process, its counters, backlog and lag (`tiersweep_*`; docs/observability.md lists them).
///
/// The counters live in one registry per process, because every [`TieredStorage`] in the
/// process adds to them; registering only makes the provider read them at each collection,
/// so call it once per provider, whenever is convenient (counts made before it are not
/// lost). The recovery-lag histogram is recorded into the first provider registered.
/// tiersweep's own workers call this on the provider they build from `OTEL_*`.
pub fn register_metrics(meter: &opentelemetry::metrics::Meter) {
    telemetry::metrics::install_otel(meter, &telemetry::metrics::METRICS);
}
