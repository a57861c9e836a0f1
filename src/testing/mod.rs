//! Shared test machinery (feature `testing`): the conformance suites every backend must
//! pass, the invariant checker every test and demo ends with, and store wrappers that
//! inject crashes, lost responses, failures and delays.

pub mod audit_fanout;
pub mod audits;
pub mod backlog;
pub mod capacity;
pub mod claims;
pub mod conformance;
pub mod crash;
pub mod emulators;
pub mod faults;
pub mod gated_writes;
pub mod intercept;
pub mod invariants;
pub mod membership;
pub mod meter;
pub mod proxy;
pub mod recovery_clocks;
pub mod scans;
pub mod schedules;
pub mod simulation;

use std::sync::Arc;

use crate::changelog::MemoryChangelog;
use crate::clock::{SharedClock, TokioClock};
use crate::hv::MemoryHv;
use crate::lt::MemoryLt;
use crate::stores::Stores;

/// In-memory stores on a [`TokioClock`], with the concrete handles kept for inspection.
#[derive(Debug, Clone)]
pub struct MemoryStores {
    pub hv: Arc<MemoryHv>,
    pub lt: Arc<MemoryLt>,
    pub changelog: Arc<MemoryChangelog>,
    pub clock: SharedClock,
}

impl MemoryStores {
    pub fn new() -> Self {
        let clock: SharedClock = Arc::new(TokioClock::new());
        Self {
            hv: Arc::new(MemoryHv::new()),
            lt: Arc::new(MemoryLt::with_clock(clock.clone())),
            changelog: Arc::new(MemoryChangelog::new(clock.clone())),
            clock,
        }
    }

    pub fn stores(&self) -> Stores {
        Stores {
            hv: self.hv.clone(),
            lt: self.lt.clone(),
            changelog: self.changelog.clone(),
            clock: self.clock.clone(),
        }
    }
}

impl Default for MemoryStores {
    fn default() -> Self {
        Self::new()
    }
}

/// A loopback address nothing listens on right now, for a child process's health server.
pub fn free_local_addr() -> std::io::Result<std::net::SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// A process's own wall clock: another clock plus an offset a test can move, for clock skew
/// between processes and for a host suspend (its wall clock jumps, its monotonic clock does
/// not).
#[derive(Debug)]
pub struct SkewedClock {
    base: SharedClock,
    offset_ms: std::sync::atomic::AtomicI64,
    /// When this clock was made, on tokio's clock, and how far its monotonic clock has
    /// fallen behind since (suspends it slept through).
    created: tokio::time::Instant,
    monotonic_lag_ms: std::sync::atomic::AtomicU64,
    /// Set while the host is suspended: its monotonic clock stands still.
    frozen_at: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl SkewedClock {
    pub fn new(base: SharedClock) -> Arc<Self> {
        Arc::new(Self {
            base,
            offset_ms: std::sync::atomic::AtomicI64::new(0),
            created: tokio::time::Instant::now(),
            monotonic_lag_ms: std::sync::atomic::AtomicU64::new(0),
            frozen_at: std::sync::Mutex::new(None),
        })
    }

    /// Moves this clock by `by` (forward when positive) relative to its base.
    pub fn jump(&self, by: std::time::Duration, forward: bool) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let ms = if forward { ms } else { -ms };
        self.offset_ms
            .fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// The host is suspended from now: its monotonic clock stops until [`Self::thaw`].
    pub fn freeze(&self) {
        let mut f = self.frozen_at.lock().unwrap_or_else(|e| e.into_inner());
        f.get_or_insert_with(tokio::time::Instant::now);
    }

    /// The host resumes: its monotonic clock goes on from where it stopped.
    pub fn thaw(&self) {
        let since = self
            .frozen_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(since) = since {
            self.slept(since.elapsed());
        }
    }

    /// The host slept for `d` (suspended VM, SIGSTOP, live migration): its wall clock is
    /// still right, its monotonic clock did not count the time. Call after the sleep.
    pub fn slept(&self, d: std::time::Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.monotonic_lag_ms
            .fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl crate::clock::Clock for SkewedClock {
    fn now(&self) -> crate::model::Timestamp {
        let offset = self.offset_ms.load(std::sync::atomic::Ordering::SeqCst);
        crate::model::Timestamp(self.base.now().0.saturating_add(offset))
    }

    fn monotonic(&self) -> tokio::time::Instant {
        let frozen = *self.frozen_at.lock().unwrap_or_else(|e| e.into_inner());
        let now = frozen.unwrap_or_else(tokio::time::Instant::now);
        let lag = self
            .monotonic_lag_ms
            .load(std::sync::atomic::Ordering::SeqCst);
        let counted = now
            .saturating_duration_since(self.created)
            .saturating_sub(std::time::Duration::from_millis(lag));
        self.created + counted
    }
}
