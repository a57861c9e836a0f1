//! Shared test machinery (feature `testing`): the conformance suites every backend must
//! pass, the invariant checker every test and demo ends with, and store wrappers that
//! inject crashes, lost responses, failures and delays.

pub mod conformance;
pub mod faults;
pub mod intercept;
pub mod invariants;
pub mod trail;

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
    /// The host's clocks run this many parts per million fast (slow when negative), from
    /// the instant given: an oscillator off, NTP not slewing it back.
    rate: std::sync::Mutex<Option<(i64, tokio::time::Instant)>>,
}

impl SkewedClock {
    pub fn new(base: SharedClock) -> Arc<Self> {
        Arc::new(Self {
            base,
            offset_ms: std::sync::atomic::AtomicI64::new(0),
            created: tokio::time::Instant::now(),
            monotonic_lag_ms: std::sync::atomic::AtomicU64::new(0),
            frozen_at: std::sync::Mutex::new(None),
            rate: std::sync::Mutex::new(None),
        })
    }

    /// From now on, both of the host's clocks gain `ppm` parts per million (lose them when
    /// negative; above -1,000,000).
    pub fn set_rate(&self, ppm: i64) {
        *self.rate.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((ppm.max(-999_999), tokio::time::Instant::now()));
    }

    /// How far the rate has moved the clocks by `at`, in milliseconds.
    fn drift_ms(&self, at: tokio::time::Instant) -> i64 {
        let rate = *self.rate.lock().unwrap_or_else(|e| e.into_inner());
        rate.map_or(0, |(ppm, from)| {
            let ms =
                i64::try_from(at.saturating_duration_since(from).as_millis()).unwrap_or(i64::MAX);
            ms.saturating_mul(ppm) / 1_000_000
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
        let offset = self.offset_ms.load(std::sync::atomic::Ordering::SeqCst)
            + self.drift_ms(tokio::time::Instant::now());
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
        let drift = self.drift_ms(now);
        let by = std::time::Duration::from_millis(drift.unsigned_abs());
        if drift >= 0 {
            self.created + counted + by
        } else {
            self.created + counted.saturating_sub(by)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::{Clock, TokioClock};

    /// A rate moves both clocks, from when it is set, by its share of the time passed.
    #[tokio::test(start_paused = true)]
    async fn a_clock_rate_moves_wall_and_monotonic_time() {
        let base: SharedClock = Arc::new(TokioClock::new());
        let (fast, slow) = (
            SkewedClock::new(base.clone()),
            SkewedClock::new(base.clone()),
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        fast.set_rate(10_000);
        slow.set_rate(-10_000);
        let (wall, mono) = (base.now(), tokio::time::Instant::now());
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(fast.now().0 - base.now().0, 1_000, "1 % of 100 s ahead");
        assert_eq!(slow.now().0 - base.now().0, -1_000, "1 % of 100 s behind");
        assert_eq!(base.now().0 - wall.0, 100_000);
        let elapsed = |c: &SkewedClock| c.monotonic().duration_since(mono);
        assert_eq!(elapsed(&fast), Duration::from_secs(101));
        assert_eq!(elapsed(&slow), Duration::from_secs(99));
    }
}
