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

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable, for terminals.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the process's tracing subscriber: a log layer on stderr filtered by `RUST_LOG`
/// (default `default_level`). The filter sits on the log layer only: a global filter would also
/// silence the spans that trace export and context propagation need.
pub fn init_logging(format: LogFormat, default_level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    // A second init (tests running several commands in one process) keeps the first.
    let _ = tracing_subscriber::registry().with(layer).try_init();
}
