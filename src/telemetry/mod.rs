//! Telemetry: the vocabulary every span and attribute uses (here, so operators, dashboards
//! and tests read one file), the process setup ([`setup`]: logs, OTLP trace export), and
//! trace-context propagation through job messages and change records ([`propagation`]).

mod json_log;
pub mod metrics;
pub mod process;
pub mod propagation;
pub mod setup;

pub use setup::{LogFormat, Telemetry, init};

/// Span names, one per pipeline step. Every span carries the change id in [`CHANGE_ID`].
///
/// The messaging spans (`publish`, `process`, `ack`, `nack`) are exported under the names
/// the messaging conventions give them, `{operation} {destination}` — `create cleanup-jobs`,
/// `process cleanup-workers`, `ack cleanup-workers` — through `otel.name`; these are their
/// names in logs.
pub mod span {
    /// A scanner's page of stale rows.
    pub const SCAN: &str = "scan";
    /// One claim, the root of a change's trace.
    pub const CLAIM: &str = "claim";
    /// Publishing a cleanup job.
    pub const PUBLISH: &str = "publish";
    /// A cleaner handling one delivery.
    pub const PROCESS: &str = "process";
    /// Converging one change.
    pub const CONVERGE: &str = "converge";
    /// A writer's put or delete.
    pub const WRITE: &str = "write";
    /// Acknowledging a delivery.
    pub const ACK: &str = "ack";
    /// Returning a delivery.
    pub const NACK: &str = "nack";
}

/// A messaging span's exported name, as the conventions spell it: the operation and the
/// destination's own name (a topic or subscription id, not its full resource path).
pub(crate) fn messaging_span_name(operation: &str, destination: &str) -> String {
    let id = destination.rsplit('/').next().unwrap_or(destination);
    format!("{operation} {id}")
}

/// The span field that identifies a change across every step and process.
#[cfg(any(test, feature = "testing"))]
pub const CHANGE_ID: &str = "tiersweep.change_id";

/// Attribute names from the OpenTelemetry semantic conventions, and the values tiersweep
/// gives them. The span macros must name their fields literally, so most names here are
/// what the tests check the exported spans against, compiled with them.
pub mod attr {
    /// The messaging system attribute.
    #[cfg(any(test, feature = "testing"))]
    pub const MESSAGING_SYSTEM: &str = "messaging.system";
    /// Its value for Pub/Sub.
    pub const GCP_PUBSUB: &str = "gcp_pubsub";
    /// The messaging operation attribute: the system's name for it (`create`, `process`,
    /// `ack`, `nack`).
    #[cfg(any(test, feature = "testing"))]
    pub const MESSAGING_OPERATION: &str = "messaging.operation.name";
    /// The operation's kind across messaging systems: `create`, `process`, `settle`.
    #[cfg(any(test, feature = "testing"))]
    pub const MESSAGING_OPERATION_TYPE: &str = "messaging.operation.type";
    /// The subscription a consumer pulled the message from.
    #[cfg(any(test, feature = "testing"))]
    pub const MESSAGING_SUBSCRIPTION: &str = "messaging.destination.subscription.name";
    /// The topic or subscription attribute.
    #[cfg(any(test, feature = "testing"))]
    pub const MESSAGING_DESTINATION: &str = "messaging.destination.name";
    /// The message id attribute.
    #[cfg(any(test, feature = "testing"))]
    pub const MESSAGING_MESSAGE_ID: &str = "messaging.message.id";
    /// The delivery attempt attribute (Pub/Sub's).
    #[cfg(any(test, feature = "testing"))]
    pub const DELIVERY_ATTEMPT: &str = "messaging.gcp_pubsub.message.delivery_attempt";
    /// The database system attribute.
    #[cfg(any(test, feature = "testing"))]
    pub const DB_SYSTEM: &str = "db.system.name";
    /// Its value for Bigtable.
    pub const GCP_BIGTABLE: &str = "gcp.bigtable";
    /// The database operation attribute.
    #[cfg(any(test, feature = "testing"))]
    pub const DB_OPERATION: &str = "db.operation.name";
    /// The table attribute.
    #[cfg(any(test, feature = "testing"))]
    pub const DB_COLLECTION: &str = "db.collection.name";
    /// The error type attribute.
    #[cfg(any(test, feature = "testing"))]
    pub const ERROR_TYPE: &str = "error.type";
}
