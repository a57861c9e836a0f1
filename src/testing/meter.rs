//! The benchmarks' call meter: a store and queue hook that counts calls and adds a fixed
//! latency per service. With [`Latency::cloud`] in-memory stores behave like Cloud Bigtable,
//! GCS and Pub/Sub seen from a GKE pod in the same region: every call costs a round trip,
//! so a sequential recovery loop is latency-bound, as it is in production.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::intercept::{self, Intercept, Op};
use crate::error::{StoreKind, StoreResult};
use crate::queue::{Delivery, FlowControl, JobQueue, Message, Subscription};
use crate::stores::Stores;

/// The part of a cloud upload's latency that follows its last byte. Not measured (GCS does
/// not say how its 50 ms split); an assumption the write-latency benchmark also runs at
/// 0 and at the whole 50 ms.
pub const CLOUD_WRITE_TAIL_MS: u64 = 30;

/// Per-call latency by service. The cloud figures are typical same-region medians:
/// Bigtable single-row reads and CheckAndMutateRow ≈ 5 ms, a GCS object delete or
/// metadata read ≈ 30 ms (writes more), a Pub/Sub publish acknowledgement ≈ 20 ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Latency {
    pub bigtable: Duration,
    pub gcs_read: Duration,
    /// An upload: the object is finalized `gcs_write_tail` after its last byte arrives, and
    /// no sooner than `gcs_write` after the request started (the work GCS does before and
    /// while the body arrives). A body sent at once takes `gcs_write`; one whose last
    /// chunk is held takes `gcs_write_tail` after its release, or `gcs_write` if released
    /// early enough.
    pub gcs_write: Duration,
    pub gcs_write_tail: Duration,
    pub gcs_delete: Duration,
    pub publish: Duration,
}

impl Latency {
    pub const NONE: Latency = Latency {
        bigtable: Duration::ZERO,
        gcs_read: Duration::ZERO,
        gcs_write: Duration::ZERO,
        gcs_write_tail: Duration::ZERO,
        gcs_delete: Duration::ZERO,
        publish: Duration::ZERO,
    };

    pub fn cloud() -> Self {
        Self {
            bigtable: Duration::from_millis(5),
            gcs_read: Duration::from_millis(30),
            gcs_write: Duration::from_millis(50),
            gcs_write_tail: Duration::from_millis(CLOUD_WRITE_TAIL_MS),
            gcs_delete: Duration::from_millis(30),
            publish: Duration::from_millis(20),
        }
    }

    /// `cloud()` with an upload finalized `tail` after its last byte (sensitivity runs).
    pub fn cloud_with_write_tail(tail: Duration) -> Self {
        Self {
            gcs_write_tail: tail.min(Self::cloud().gcs_write),
            ..Self::cloud()
        }
    }

    /// The latency added before a call is sent (an upload's is modelled at its end).
    fn of(&self, op: Op) -> Duration {
        match op {
            Op::LtPut => Duration::ZERO,
            Op::LtDelete => self.gcs_delete,
            Op::LtGet | Op::LtExists | Op::LtList => self.gcs_read,
            _ => self.bigtable * bigtable_rpcs(op),
        }
    }
}

/// Round trips the Bigtable backend makes for one call: one for every Bigtable operation
/// (a fence is one CheckAndMutateRow), 0 for GCS operations.
fn bigtable_rpcs(op: Op) -> u32 {
    match op {
        Op::LtPut | Op::LtGet | Op::LtExists | Op::LtDelete | Op::LtList => 0,
        _ => 1,
    }
}

/// Calls per service, as the real backends issue them.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Rpcs {
    pub bigtable: u64,
    pub gcs: u64,
    pub pubsub_publish: u64,
    /// Deliveries settled (each one an ack or nack); not RPCs, see `pubsub_ack`.
    pub pubsub_settle: u64,
    /// The Acknowledge (and nack) RPCs those settles cost: the official client queues
    /// settles and flushes them every [`ACK_FLUSH`], up to 1,000 ids per RPC
    /// (google-cloud-pubsub 1.7, `subscriber/lease_state.rs`), so a subscriber stream
    /// sends one per flush period in which it settled anything. Counted per period in
    /// which a delivery arrived, per subscription. Lease extensions of jobs held longer
    /// than the client's 3 s extension period are not counted.
    pub pubsub_ack: u64,
}

/// How often the Pub/Sub client flushes the acks and nacks it has queued.
pub const ACK_FLUSH: Duration = Duration::from_millis(100);

impl Rpcs {
    pub fn total(&self) -> u64 {
        self.bigtable + self.gcs + self.pubsub_publish + self.pubsub_ack
    }
}

#[derive(Debug, Default)]
pub struct Meter {
    latency: Latency,
    calls: [AtomicU64; Op::ALL.len()],
    publishes: AtomicU64,
    settled: AtomicU64,
    ack_rpcs: AtomicU64,
}

impl Meter {
    pub fn new(latency: Latency) -> Arc<Self> {
        Arc::new(Self {
            latency,
            ..Self::default()
        })
    }

    pub fn wrap(self: &Arc<Self>, stores: &Stores) -> Stores {
        intercept::wrap(self.clone(), stores)
    }

    pub fn wrap_queue(self: &Arc<Self>, queue: Arc<dyn JobQueue>) -> Arc<dyn JobQueue> {
        Arc::new(MeteredQueue {
            inner: queue,
            meter: self.clone(),
        })
    }

    /// Calls per operation (heartbeats included), leaving out those never made.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        Op::ALL
            .iter()
            .map(|op| {
                (
                    format!("{op:?}"),
                    self.calls[op.index()].load(Ordering::Relaxed),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    pub fn rpcs(&self) -> Rpcs {
        let mut r = Rpcs {
            pubsub_publish: self.publishes.load(Ordering::Relaxed),
            pubsub_settle: self.settled.load(Ordering::Relaxed),
            pubsub_ack: self.ack_rpcs.load(Ordering::Relaxed),
            ..Rpcs::default()
        };
        for op in Op::ALL {
            let n = self.calls[op.index()].load(Ordering::Relaxed);
            match bigtable_rpcs(op) {
                0 => r.gcs += n,
                rpcs => r.bigtable += u64::from(rpcs) * n,
            }
        }
        r
    }

    pub fn reset(&self) {
        for c in &self.calls {
            c.store(0, Ordering::Relaxed);
        }
        self.publishes.store(0, Ordering::Relaxed);
        self.settled.store(0, Ordering::Relaxed);
        self.ack_rpcs.store(0, Ordering::Relaxed);
    }

    async fn delay(d: Duration) {
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

impl Intercept for Meter {
    fn run<T: Send + 'static>(
        &self,
        op: Op,
        _store: StoreKind,
        call: intercept::Call<T>,
    ) -> impl Future<Output = StoreResult<T>> + Send {
        self.calls[op.index()].fetch_add(1, Ordering::Relaxed);
        let d = self.latency.of(op);
        async move {
            Self::delay(d).await;
            call.await
        }
    }

    fn after_last_byte(&self, started: tokio::time::Instant) -> Duration {
        let head = self
            .latency
            .gcs_write
            .saturating_sub(self.latency.gcs_write_tail);
        head.saturating_sub(started.elapsed()) + self.latency.gcs_write_tail
    }
}

#[derive(Debug)]
struct MeteredQueue {
    inner: Arc<dyn JobQueue>,
    meter: Arc<Meter>,
}

#[async_trait]
impl JobQueue for MeteredQueue {
    async fn publish(&self, batch: Vec<Message>) -> StoreResult<()> {
        self.meter.publishes.fetch_add(1, Ordering::Relaxed);
        Meter::delay(self.meter.latency.publish).await;
        self.inner.publish(batch).await
    }

    async fn subscribe(&self, flow: FlowControl) -> StoreResult<Box<dyn Subscription>> {
        let inner = self.inner.subscribe(flow).await?;
        Ok(Box::new(MeteredSubscription {
            inner,
            meter: self.meter.clone(),
            since: tokio::time::Instant::now(),
            flushed: None,
        }))
    }

    fn destination(&self) -> String {
        self.inner.destination()
    }
    fn subscription(&self) -> String {
        self.inner.subscription()
    }

    async fn dead_letter(&self, delivery: Delivery, reason: &str) -> StoreResult<()> {
        self.meter.publishes.fetch_add(1, Ordering::Relaxed);
        self.inner.dead_letter(delivery, reason).await
    }
}

struct MeteredSubscription {
    inner: Box<dyn Subscription>,
    meter: Arc<Meter>,
    since: tokio::time::Instant,
    /// The last flush period that counted an ack RPC.
    flushed: Option<u128>,
}

#[async_trait]
impl Subscription for MeteredSubscription {
    async fn next(&mut self) -> Option<StoreResult<Delivery>> {
        let d = self.inner.next().await;
        if matches!(d, Some(Ok(_))) {
            // Every delivery is settled exactly once (ack, nack, or nack on drop).
            self.meter.settled.fetch_add(1, Ordering::Relaxed);
            let period = self.since.elapsed().as_millis() / ACK_FLUSH.as_millis();
            if self.flushed.replace(period) != Some(period) {
                self.meter.ack_rpcs.fetch_add(1, Ordering::Relaxed);
            }
        }
        d
    }
}
