//! How a writer writes: [`WriterConfig`].

#[cfg(doc)]
use super::TieredStorage;
use crate::protocol::ProtocolConfig;
use crate::retry::RetryPolicy;

/// How a [`TieredStorage`] writes. `Default` is what production runs with.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Objects up to this many bytes are stored inline in HV; larger ones go to LT.
    pub inline_threshold: usize,
    /// The heartbeat and staleness timings, which must match recovery's.
    pub protocol: ProtocolConfig,
    /// How store calls are retried (and how long a write keeps trying).
    pub retry: RetryPolicy,
    /// 0: a write returns once its change is complete (old revision deleted, changelog row
    /// removed). N > 0: a write returns once HV commits, and up to N completions run in the
    /// background, taking the old-blob delete and the row removal off the write's latency.
    /// The cost: a process that exits before [`TieredStorage::flush`] leaves those changes
    /// to recovery (correct, just later), and an overwritten blob outlives the write a little.
    pub background_completions: usize,
    /// How long after a failed upload the upload may still land: GCS can finalize an
    /// object whose request the client saw fail (a reset after the service had every
    /// byte). The writer deletes what may have landed at once, and leaves its change to
    /// recovery for after this long, so a late landing is deleted too.
    pub upload_settle: std::time::Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            inline_threshold: 64 * 1024,
            protocol: ProtocolConfig::default(),
            retry: RetryPolicy::default(),
            background_completions: 0,
            upload_settle: crate::protocol::UPLOAD_SETTLE,
        }
    }
}
