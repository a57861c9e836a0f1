//! Telemetry vocabulary: every span name, field and log event tiersweep emits is declared
//! here, so operators, dashboards and tests read one file.

/// Span names, one per pipeline step. Every span carries the change id in [`CHANGE_ID`].
pub mod span {
    pub const SCAN: &str = "scan";
    pub const CLAIM: &str = "claim";
    pub const PUBLISH: &str = "publish";
    pub const PROCESS: &str = "process";
    pub const CONVERGE: &str = "converge";
    pub const RECORD: &str = "record";
    pub const HEARTBEAT: &str = "heartbeat";
    pub const WRITE: &str = "write";
}

/// The span field that identifies a change across every step and process.
pub const CHANGE_ID: &str = "tiersweep.change_id";
