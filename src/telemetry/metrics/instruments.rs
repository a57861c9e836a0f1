//! The instruments the registry is made of: counters and the lag histogram, atomics that
//! both exporters read.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonic count, optionally one series of a labelled family (same `name`).
#[derive(Debug)]
pub struct Counter {
    /// The OpenTelemetry name; Prometheus gets it with `.` → `_` and a `_total` suffix.
    pub name: &'static str,
    /// The help text exported with it.
    pub help: &'static str,
    /// Its label (name, value), when it is one series of a family.
    pub label: Option<(&'static str, &'static str)>,
    value: AtomicU64,
}

impl Counter {
    pub(super) const fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            label: None,
            value: AtomicU64::new(0),
        }
    }

    pub(super) const fn labelled(
        name: &'static str,
        help: &'static str,
        key: &'static str,
        value: &'static str,
    ) -> Self {
        Self {
            name,
            help,
            label: Some((key, value)),
            value: AtomicU64::new(0),
        }
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }

    /// This counter's Prometheus series (`name_total{label="v"}`), as `/metrics` shows it.
    #[cfg(any(test, feature = "testing"))]
    pub fn series(&self) -> String {
        super::prometheus::series(self)
    }
}

/// Bucket bounds of the recovery-lag histogram, in seconds: a change is at least one
/// staleness threshold (default 60 s) old when recovery may touch it, and an hour-old
/// change is an incident.
pub const LAG_BOUNDS: [f64; 12] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 90.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug)]
pub struct Histogram {
    /// The OpenTelemetry name.
    pub name: &'static str,
    /// The help text exported with it.
    pub help: &'static str,
    /// Counts per bucket of [`LAG_BOUNDS`], the last one for values above every bound.
    buckets: [AtomicU64; LAG_BOUNDS.len() + 1],
    sum_micros: AtomicU64,
    pub(super) otel: OnceLock<opentelemetry::metrics::Histogram<f64>>,
}

impl Histogram {
    pub(super) const fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            buckets: [const { AtomicU64::new(0) }; LAG_BOUNDS.len() + 1],
            sum_micros: AtomicU64::new(0),
            otel: OnceLock::new(),
        }
    }

    /// Counts one duration.
    pub fn record(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LAG_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LAG_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        if let Some(h) = self.otel.get() {
            h.record(secs, &[]);
        }
    }

    /// Durations recorded.
    #[cfg(any(test, feature = "testing"))]
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Their sum.
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_micros.load(Ordering::Relaxed))
    }

    /// Cumulative counts per bound, as Prometheus wants them (the last is `+Inf`).
    pub(super) fn cumulative(&self) -> Vec<u64> {
        let mut total = 0;
        self.buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect()
    }
}
