//! The one retry policy for store calls that have none of their own (`bigtable_rs`, the
//! in-memory stores, the writer's compare-and-write): exponential backoff with jitter,
//! bounded in attempts, retrying only errors the store marked transient.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::error::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// Backoff and attempts for one store call.
pub struct RetryPolicy {
    /// The first delay.
    pub min_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// Attempts in all, the first included.
    pub max_attempts: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            max_attempts: 5,
        }
    }
}

impl RetryPolicy {
    /// For batch work that would rather wait out a rate limit than give up, the audit:
    /// about 40 s of backoff, where the default's 750 ms fails a whole range on one burst
    /// of refusals from a busy cluster.
    pub const PATIENT: RetryPolicy = RetryPolicy {
        min_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(10),
        max_attempts: 10,
    };

    /// The backoff as `backon` takes it, with jitter.
    pub fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1))
            .with_jitter()
    }

    /// Runs `op` until it succeeds, fails permanently, or runs out of attempts.
    pub async fn run<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        op.retry(self.backoff())
            .sleep(tokio::time::sleep)
            .when(StoreError::is_transient)
            .notify(|err, delay| {
                tracing::debug!(step = what, error = %err, ?delay, "retrying after transient error");
            })
            .await
    }
}
