//! Telemetry: the vocabulary every span and attribute uses (here, so operators, dashboards
//! and tests read one file), the process setup ([`setup`]: logs, OTLP trace export), and
//! trace-context propagation through job messages and change records ([`propagation`]).

mod json_log;
pub mod metrics;
pub(crate) mod process;
pub mod propagation;
pub mod setup;

pub use setup::{LogFormat, Telemetry, init};

/// Span names, one per pipeline step. Every span carries the change id in [`CHANGE_ID`].
pub mod span {
    pub const SCAN: &str = "scan";
    pub const CLAIM: &str = "claim";
    pub const PUBLISH: &str = "publish";
    pub const PROCESS: &str = "process";
    pub const CONVERGE: &str = "converge";
    pub const WRITE: &str = "write";
    pub const ACK: &str = "ack";
    pub const NACK: &str = "nack";
}

/// The span field that identifies a change across every step and process.
pub const CHANGE_ID: &str = "tiersweep.change_id";

/// Attribute names from the OpenTelemetry semantic conventions, and the values tiersweep
/// gives them.
pub mod attr {
    pub const MESSAGING_SYSTEM: &str = "messaging.system";
    pub const GCP_PUBSUB: &str = "gcp_pubsub";
    pub const MESSAGING_OPERATION: &str = "messaging.operation.name";
    pub const MESSAGING_DESTINATION: &str = "messaging.destination.name";
    pub const MESSAGING_MESSAGE_ID: &str = "messaging.message.id";
    pub const DELIVERY_ATTEMPT: &str = "messaging.gcp_pubsub.message.delivery_attempt";
    pub const DB_SYSTEM: &str = "db.system.name";
    pub const GCP_BIGTABLE: &str = "gcp.bigtable";
    pub const DB_OPERATION: &str = "db.operation.name";
    pub const DB_COLLECTION: &str = "db.collection.name";
    pub const ERROR_TYPE: &str = "error.type";
}
