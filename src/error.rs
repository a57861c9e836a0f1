//! The one error type every store returns.
//!
//! All four stores fail in the same few ways (the service is unreachable or overloaded, it
//! refused the request, or it returned data we cannot read), and every caller needs the same
//! two answers from an error: *is it worth retrying*, and *what exactly failed* (which table
//! and row, which bucket and object, which subscription). One type answers both for all
//! backends, so retry policy and error reporting each have a single home.

use std::fmt;

/// Which store an operation ran against (more may come: match with a wildcard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreKind {
    /// The hot tier: the object table in Bigtable.
    Hv,
    /// The large-object tier: the GCS bucket.
    Lt,
    /// The write-ahead changelog table.
    Changelog,
    /// The job queue (Pub/Sub).
    Queue,
    /// The scanners' shard leases (rows of the changelog table outside every shard).
    ShardLeases,
    /// The audit's run records (rows of the changelog table outside every shard).
    AuditRuns,
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreKind::Hv => "HV store",
            StoreKind::Lt => "LT store",
            StoreKind::Changelog => "changelog",
            StoreKind::Queue => "job queue",
            StoreKind::ShardLeases => "shard leases",
            StoreKind::AuditRuns => "audit runs",
        })
    }
}

/// What a caller can do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Unavailable, deadline exceeded, overloaded, aborted: retrying may succeed.
    Transient,
    /// Refused (permission, not found where it must exist, bad request): retrying will not help.
    Permanent,
    /// The store returned data that does not decode; the data stays where it is.
    Malformed,
}

/// A store call that failed, naming the store, the call and what it ran against.
#[derive(Debug, thiserror::Error)]
#[error("{store} {op} on {target} failed ({kind:?}): {message}")]
pub struct StoreError {
    /// The store the call went to.
    pub store: StoreKind,
    /// The RPC or method, e.g. `CheckAndMutateRow` or `delete`.
    pub op: &'static str,
    /// What it ran against: `table/row`, `bucket/object`, a subscription.
    pub target: String,
    /// Whether retrying may help.
    pub kind: ErrorKind,
    /// What went wrong, in the store's or tiersweep's words.
    pub message: String,
    /// The client library's error, where there was one.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// An error without an underlying client error.
    pub fn new(
        store: StoreKind,
        op: &'static str,
        target: impl Into<String>,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> Self {
        Self {
            store,
            op,
            target: target.into(),
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// The same error, carrying the client library's error as its source.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Whether retrying may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}

/// The result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// A configuration value that cannot work, named by its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    /// The setting, by its name in the configuration file.
    pub field: &'static str,
    /// Why it cannot work.
    pub reason: String,
}

impl ConfigError {
    /// An error naming `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}
