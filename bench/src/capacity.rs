//! A capacity-limited model of the cloud services, for benchmarks: each call waits a latency
//! drawn from a distribution with a tail, and a service refuses calls beyond its rate
//! (`429`/`UNAVAILABLE`, a transient error the callers' retry policy backs off on). A fixed
//! sleep per call, what [`super::meter::Latency`] charges, makes throughput concurrency ÷
//! latency (Little's law) without bound; real services have capacity.
//!
//! The model, and where its figures come from (assumptions are named as such):
//!
//! | service | limit | latency p50 / p99 |
//! |---|---|---|
//! | GCS, one bucket | object writes + deletes: 1,000/s at first, doubling every 20 min of sustained load (Cloud Storage's request-rate guidelines); reads 5,000/s | delete and metadata read 30 / 150 ms, write 50 / 250 ms (assumed) |
//! | Bigtable, one cluster | 10,000 operations/s per node (assumed; Bigtable's documentation plans ~10–17k small reads or writes/s per SSD node) | 5 / 20 ms (assumed) |
//!
//! Pub/Sub is not limited here: its per-topic limits (GB/s) are far above recovery's
//! message sizes. Time is tokio's, so under paused time a 20-minute ramp costs nothing.
//! Latencies are log-normal, fitted to p50 and p99.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::time::Instant;

use tiersweep::error::{ErrorKind, StoreError, StoreKind, StoreResult};
use tiersweep::testing::intercept::{Call, Intercept, Op};

/// A latency distribution: log-normal with this median and 99th percentile.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Tail {
    pub p50: Duration,
    pub p99: Duration,
}

/// The 99th percentile of the standard normal distribution.
const Z99: f64 = 2.326_347_874;

impl Tail {
    pub const fn ms(p50: u64, p99: u64) -> Self {
        Self {
            p50: Duration::from_millis(p50),
            p99: Duration::from_millis(p99),
        }
    }

    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        let median = self.p50.as_secs_f64();
        if median <= 0.0 {
            return Duration::ZERO;
        }
        let sigma = (self.p99.as_secs_f64().max(median) / median).ln() / Z99;
        // Box–Muller: one standard normal from two uniforms.
        let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        Duration::from_secs_f64(median * (sigma * z).exp())
    }
}

/// A rate limit that may grow under sustained load.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Limit {
    pub initial_per_s: f64,
    /// The limit doubles after each of these since the first call (`None`: fixed).
    pub doubling_every: Option<Duration>,
    pub max_per_s: f64,
}

impl Limit {
    pub const fn fixed(per_s: f64) -> Self {
        Self {
            initial_per_s: per_s,
            doubling_every: None,
            max_per_s: per_s,
        }
    }

    /// The limit `elapsed` after the first call.
    pub fn at(&self, elapsed: Duration) -> f64 {
        let doublings = self.doubling_every.filter(|d| !d.is_zero()).map_or(0, |d| {
            (elapsed.as_secs_f64() / d.as_secs_f64()).floor() as i32
        });
        (self.initial_per_s * 2f64.powi(doublings.min(30))).min(self.max_per_s)
    }
}

/// The services' figures.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CloudModel {
    pub bigtable: Tail,
    pub gcs_read: Tail,
    pub gcs_write: Tail,
    pub gcs_delete: Tail,
    /// GCS object writes and deletes, one bucket.
    pub gcs_mutations: Limit,
    pub gcs_reads: Limit,
    /// Bigtable operations, the whole cluster.
    pub bigtable_ops: Limit,
}

impl CloudModel {
    /// A new bucket and a Bigtable cluster of `nodes` nodes (see the module's table).
    pub fn gcp(nodes: u32) -> Self {
        Self {
            bigtable: Tail::ms(5, 20),
            gcs_read: Tail::ms(30, 150),
            gcs_write: Tail::ms(50, 250),
            gcs_delete: Tail::ms(30, 150),
            gcs_mutations: Limit {
                initial_per_s: 1_000.0,
                doubling_every: Some(Duration::from_secs(20 * 60)),
                max_per_s: 1_000_000.0,
            },
            gcs_reads: Limit {
                initial_per_s: 5_000.0,
                doubling_every: Some(Duration::from_secs(20 * 60)),
                max_per_s: 1_000_000.0,
            },
            bigtable_ops: Limit::fixed(10_000.0 * f64::from(nodes.max(1))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    GcsMutation,
    GcsRead,
    Bigtable,
}

fn service_of(op: Op) -> Service {
    match op {
        Op::LtPut | Op::LtDelete => Service::GcsMutation,
        Op::LtGet | Op::LtExists | Op::LtList => Service::GcsRead,
        _ => Service::Bigtable,
    }
}

/// A token bucket holding at most one second of the current rate.
#[derive(Debug)]
struct Bucket {
    limit: Limit,
    tokens: f64,
    started: Option<Instant>,
    refilled: Option<Instant>,
}

impl Bucket {
    fn new(limit: Limit) -> Self {
        Self {
            limit,
            tokens: limit.initial_per_s,
            started: None,
            refilled: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let started = *self.started.get_or_insert(now);
        let rate = self.limit.at(now - started);
        if let Some(last) = self.refilled {
            self.tokens = (self.tokens + (now - last).as_secs_f64() * rate).min(rate);
        }
        self.refilled = Some(now);
    }

    fn admit(&mut self, now: Instant, cost: f64) -> bool {
        self.refill(now);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// Takes `cost` more for a call already admitted (the rows of a batch beyond its
    /// first): the bucket may go into debt, which refuses the calls that follow until it
    /// refills, as a node busy with a large batch does.
    fn charge(&mut self, now: Instant, cost: f64) {
        self.refill(now);
        self.tokens -= cost;
    }
}

/// Calls the model admitted and refused, per service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Admissions {
    pub gcs_mutations: u64,
    pub gcs_mutations_refused: u64,
    pub gcs_reads: u64,
    pub gcs_reads_refused: u64,
    pub bigtable: u64,
    pub bigtable_refused: u64,
    /// Rows the admitted Bigtable calls were charged: a batch of n rows counts n, so this,
    /// not the calls, is what the cluster's budget is spent on.
    pub bigtable_rows: u64,
}

/// The hook: wrap stores with [`tiersweep::testing::intercept::wrap`].
#[derive(Debug)]
pub struct Capacity {
    model: CloudModel,
    state: Mutex<(StdRng, [Bucket; 3])>,
    counts: [AtomicU64; 6],
    /// Rows charged beyond each admitted Bigtable call's first.
    extra_rows: AtomicU64,
    refused_by_op: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Bigtable rows charged to admitted calls, by call: where the cluster's budget went.
    rows_by_op: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Capacity {
    pub fn new(model: CloudModel, seed: u64) -> Self {
        let buckets = [
            Bucket::new(model.gcs_mutations),
            Bucket::new(model.gcs_reads),
            Bucket::new(model.bigtable_ops),
        ];
        Self {
            model,
            state: Mutex::new((StdRng::seed_from_u64(seed), buckets)),
            counts: Default::default(),
            extra_rows: AtomicU64::new(0),
            refused_by_op: Mutex::default(),
            rows_by_op: Mutex::default(),
        }
    }

    /// Bigtable rows charged so far, by call.
    pub fn rows_by_op(&self) -> std::collections::BTreeMap<String, u64> {
        self.rows_by_op
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn count_rows(&self, op: Op, rows: u64) {
        *self
            .rows_by_op
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(format!("{op:?}"))
            .or_default() += rows;
    }

    /// Calls refused so far, by call.
    pub fn refused_by_op(&self) -> std::collections::BTreeMap<String, u64> {
        self.refused_by_op
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn admissions(&self) -> Admissions {
        let c = |i: usize| self.counts[i].load(Ordering::Relaxed);
        Admissions {
            gcs_mutations: c(0),
            gcs_mutations_refused: c(1),
            gcs_reads: c(2),
            gcs_reads_refused: c(3),
            bigtable: c(4),
            bigtable_refused: c(5),
            bigtable_rows: c(4) + self.extra_rows.load(Ordering::Relaxed),
        }
    }

    fn tail(&self, op: Op) -> (Tail, f64) {
        let m = &self.model;
        match op {
            Op::LtPut => (m.gcs_write, 1.0),
            Op::LtDelete => (m.gcs_delete, 1.0),
            Op::LtGet | Op::LtExists | Op::LtList => (m.gcs_read, 1.0),
            _ => (m.bigtable, 1.0),
        }
    }

    /// Draws the call's latency and asks its service to admit it.
    fn admit(&self, op: Op) -> (Duration, bool) {
        let (tail, cost) = self.tail(op);
        let service = service_of(op);
        let index = match service {
            Service::GcsMutation => 0,
            Service::GcsRead => 1,
            Service::Bigtable => 2,
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (rng, buckets) = &mut *state;
        let latency = tail.sample(rng);
        let admitted = buckets[index].admit(Instant::now(), cost);
        drop(state);
        let counter = index * 2 + usize::from(!admitted);
        self.counts[counter].fetch_add(1, Ordering::Relaxed);
        (latency, admitted)
    }
}

impl Intercept for Capacity {
    /// A Bigtable node's budget is in rows: a batch's rows beyond the one its call was
    /// admitted for are charged too.
    fn rows(&self, op: Op, rows: usize) {
        if service_of(op) != Service::Bigtable || rows <= 1 {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1[2].charge(Instant::now(), (rows - 1) as f64);
        self.extra_rows
            .fetch_add((rows - 1) as u64, Ordering::Relaxed);
        self.count_rows(op, (rows - 1) as u64);
    }

    async fn run<T: Send + 'static>(
        &self,
        op: Op,
        store: StoreKind,
        call: Call<T>,
    ) -> StoreResult<T> {
        let (latency, admitted) = self.admit(op);
        if !admitted {
            *self
                .refused_by_op
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(format!("{op:?}"))
                .or_default() += 1;
            // Refused at the front door: a fraction of a round trip.
            tokio::time::sleep(latency / 4).await;
            return Err(StoreError::new(
                store,
                "rate limit",
                format!("{op:?}"),
                ErrorKind::Transient,
                "429 / UNAVAILABLE: over the service's modelled rate",
            ));
        }
        if service_of(op) == Service::Bigtable {
            self.count_rows(op, 1);
        }
        tokio::time::sleep(latency).await;
        call.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_keeps_its_median_and_99th_percentile() {
        let tail = Tail::ms(30, 150);
        let mut rng = StdRng::seed_from_u64(7);
        let mut samples: Vec<Duration> = (0..20_000).map(|_| tail.sample(&mut rng)).collect();
        samples.sort();
        let p = |q: f64| samples[(q * samples.len() as f64) as usize].as_secs_f64() * 1000.0;
        assert!((p(0.50) - 30.0).abs() < 2.0, "p50 {}", p(0.50));
        assert!((p(0.99) - 150.0).abs() < 20.0, "p99 {}", p(0.99));
    }

    #[test]
    fn a_limit_doubles_on_schedule_and_stops_at_its_maximum() {
        let l = CloudModel::gcp(1).gcs_mutations;
        assert_eq!(l.at(Duration::ZERO), 1_000.0);
        assert_eq!(l.at(Duration::from_secs(19 * 60)), 1_000.0);
        assert_eq!(l.at(Duration::from_secs(20 * 60)), 2_000.0);
        assert_eq!(l.at(Duration::from_secs(60 * 60)), 8_000.0);
        assert_eq!(l.at(Duration::from_secs(100 * 3600)), 1_000_000.0);
        assert_eq!(Limit::fixed(5.0).at(Duration::from_secs(1 << 20)), 5.0);
    }

    #[tokio::test(start_paused = true)]
    async fn calls_beyond_a_services_rate_are_refused_and_its_rate_is_kept() {
        let capacity = Capacity::new(CloudModel::gcp(1), 1);
        // Two seconds of deletes offered at 5,000/s against 1,000/s.
        let mut admitted = 0;
        for _ in 0..10_000 {
            if capacity.admit(Op::LtDelete).1 {
                admitted += 1;
            }
            tokio::time::advance(Duration::from_micros(200)).await;
        }
        // One second's burst, then 1,000/s for two seconds.
        assert!((2_900..=3_100).contains(&admitted), "admitted {admitted}");
        let a = capacity.admissions();
        assert_eq!(a.gcs_mutations + a.gcs_mutations_refused, 10_000);
        assert_eq!(a.bigtable, 0, "services are limited separately");
        // Bigtable at 5,000/s is under its 10,000/s: nothing refused.
        for _ in 0..10_000 {
            assert!(capacity.admit(Op::Claim).1);
            tokio::time::advance(Duration::from_micros(200)).await;
        }
    }

    /// A batch is charged per row: a call admitted for 10,000 rows on a one-node cluster
    /// (10,000 rows/s) leaves no room for the next call until the budget refills.
    #[tokio::test(start_paused = true)]
    async fn a_batch_is_charged_for_every_row_it_touches() {
        let capacity = Capacity::new(CloudModel::gcp(1), 1);
        assert!(capacity.admit(Op::RemoveMany).1);
        capacity.rows(Op::RemoveMany, 10_000);
        assert!(
            !capacity.admit(Op::Claim).1,
            "the batch took the second's budget"
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(capacity.admit(Op::Claim).1, "refilled");
        // GCS calls are not rows: a listing of 1,000 names costs one call.
        capacity.rows(Op::LtList, 1_000);
        assert!(capacity.admit(Op::LtList).1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_a_transient_error_naming_the_call() {
        let capacity = Capacity::new(CloudModel::gcp(1), 1);
        // 2,000 deletes at the same instant: one second's burst is admitted.
        let calls = (0..2_000).map(|_| {
            let call: Call<()> = Box::pin(async { Ok(()) });
            capacity.run(Op::LtDelete, StoreKind::Lt, call)
        });
        let results = futures::future::join_all(calls).await;
        let refused: Vec<StoreError> = results.into_iter().filter_map(Result::err).collect();
        assert_eq!(refused.len(), 1_000, "the burst beyond one second's rate");
        let refused = refused.into_iter().next();
        let e = refused.expect("a refusal");
        assert_eq!(e.kind, ErrorKind::Transient);
        assert!(e.to_string().contains("LtDelete"), "{e}");
    }
}
