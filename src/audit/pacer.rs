//! The audit's fixed rates: listing calls and deletion requests spaced across ranges.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Spaces calls at least `1 / rate` apart across every task that shares it.
pub(super) struct Pacer {
    every: Option<Duration>,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Pacer {
    pub(super) fn new(rate: Option<f64>) -> Self {
        Self {
            every: rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for this caller's slot; `false` when `cancel` fired first.
    pub(super) async fn wait(&self, cancel: &CancellationToken) -> bool {
        if cancel.is_cancelled() {
            return false;
        }
        let Some(every) = self.every else {
            return true;
        };
        let slot = {
            let mut next = self.next.lock().await;
            let slot = (*next).max(tokio::time::Instant::now());
            *next = slot + every;
            slot
        };
        tokio::select! {
            () = tokio::time::sleep_until(slot) => true,
            () = cancel.cancelled() => false,
        }
    }
}
