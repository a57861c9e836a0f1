//! The worker facade: what the `tiersweep` binary (workers/) builds its roles and operator
//! commands from, and nothing an embedding service needs (that is the crate root).
//!
//! The binary parses arguments, wires signals and health, and prints; the work is here.
//! Everything else in the library is private to it, so that the protocol's internals can
//! change without breaking a caller.

pub mod audit;
pub mod dead_letters;
pub mod operator;
mod roles;

pub use crate::config::{Config, LoadError, WorkerConfig};
pub use crate::duration::parse as parse_duration;
pub use crate::health::{Readiness, serve as serve_health};
pub use crate::iam::calls_summary;
pub use crate::model::{ChangeId, Shard, ShardRange};
pub use crate::queue::pubsub::{PubsubConfig, PubsubQueue};
pub use roles::{CleanerConnections, ScannerConnections, WorkerError, clean, scan};

/// Logs, traces and metrics for a worker process.
pub mod telemetry {
    pub use crate::telemetry::metrics::set_role;
    pub use crate::telemetry::{LogFormat, Telemetry, init};
}
