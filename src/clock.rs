//! Wall-clock time as the changelog sees it.
//!
//! Liveness in the changelog is a comparison of wall-clock timestamps written by different
//! machines, so every component that stamps or judges an entry takes its time from a
//! [`Clock`]. Production uses [`SystemClock`]; tests use [`TokioClock`], which moves with
//! tokio's (pausable) time so that "wait past the staleness threshold" costs nothing.
//!
//! The writer's own guard measures the age of its last heartbeat on both this clock and the
//! local monotonic clock (`tokio::time::Instant`), and trusts the larger: wall-clock steps
//! cannot move the monotonic clock, and the monotonic clock stops while a host is
//! suspended, which the wall clock counts.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::Timestamp;

/// The wall clock a process stamps and judges by; tests substitute skewed or paused ones.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Wall-clock time now, in milliseconds since the Unix epoch.
    fn now(&self) -> Timestamp;

    /// This process's monotonic clock (tokio's, CLOCK_MONOTONIC on Linux): it cannot be
    /// stepped, and it stops while the host is suspended. A test clock can hold it back to
    /// stand for a suspend.
    fn monotonic(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }
}

/// A clock shared by the stores and the workers of a process.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock: what production runs on.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp(millis)
    }
}

/// Wall-clock time anchored once, then advanced by tokio's monotonic clock; under
/// `tokio::time::pause` it jumps exactly as far as the test advances time.
#[derive(Debug, Clone)]
pub struct TokioClock {
    anchor_wall: Timestamp,
    anchor: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading the wall clock now and advancing with tokio's from here.
    pub fn new() -> Self {
        Self {
            anchor_wall: SystemClock.now(),
            anchor: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.anchor_wall.saturating_add(self.anchor.elapsed())
    }
}

/// The default clock for production wiring.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}
