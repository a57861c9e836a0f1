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

use tiersweep::error::{StoreKind, StoreResult};
use tiersweep::queue::{Delivery, FlowControl, JobQueue, Message, Subscription};
use tiersweep::stores::Stores;
use tiersweep::testing::intercept::{self, Intercept, Op};

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
/// (a fence is one CheckAndMutateRow) except the server's time (a write to the clock row,
/// then its read), 0 for GCS operations.
fn bigtable_rpcs(op: Op) -> u32 {
    match op {
        Op::LtPut | Op::LtGet | Op::LtExists | Op::LtDelete | Op::LtList => 0,
        Op::Now => 2,
        _ => 1,
    }
}

/// Round trips per call of an operation, by its name as [`Meter::calls`] reports it: one
/// per Bigtable call, two for the changelog's time, none for GCS.
pub fn round_trips(op: &str) -> u32 {
    Op::ALL
        .iter()
        .find(|o| format!("{o:?}") == op)
        .map_or(1, |o| bigtable_rpcs(*o))
}

/// Rows a Bigtable operation reads and writes per row it touches: reads are ReadRows
/// (HV reads, scans, re-reads), the server's time writes then reads its row, everything
/// else is a mutation (a CheckAndMutateRow is billed as one).
pub fn reads_and_writes(op: &str) -> (u64, u64) {
    match op {
        "HvRead" | "Scan" | "Get" => (1, 0),
        "Now" => (1, 1),
        _ => (0, 1),
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
    /// Bytes Pub/Sub bills for publishing and delivering: each request (a publish batch, a
    /// pull response) at least [`MIN_BILLED_REQUEST_BYTES`]. Responses are modelled as one
    /// per subscription per [`ACK_FLUSH`] period in which something arrived (the streaming
    /// pull sends what is ready together); a dead letter is one publish.
    pub pubsub_billed_bytes: u64,
}

/// The smallest volume Pub/Sub bills per request (publish, pull response), whatever the
/// messages' size.
pub const MIN_BILLED_REQUEST_BYTES: u64 = 1_000;

/// What Pub/Sub bills for one request carrying `bytes` of messages.
pub fn billed(bytes: u64) -> u64 {
    bytes.max(MIN_BILLED_REQUEST_BYTES)
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
    /// Per operation, the calls that said how many rows they touched, and those rows.
    batched_calls: [AtomicU64; Op::ALL.len()],
    batched_rows: [AtomicU64; Op::ALL.len()],
    publishes: AtomicU64,
    settled: AtomicU64,
    ack_rpcs: AtomicU64,
    billed_bytes: AtomicU64,
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

    /// Rows touched per Bigtable operation (a call touches one unless it said otherwise),
    /// leaving out operations never called; GCS operations are not rows.
    pub fn rows(&self) -> BTreeMap<String, u64> {
        Op::ALL
            .iter()
            .filter(|op| bigtable_rpcs(**op) > 0)
            .map(|op| {
                let i = op.index();
                let load = |a: &[AtomicU64]| a[i].load(Ordering::Relaxed);
                let single = load(&self.calls).saturating_sub(load(&self.batched_calls));
                (format!("{op:?}"), single + load(&self.batched_rows))
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    pub fn rpcs(&self) -> Rpcs {
        let mut r = Rpcs {
            pubsub_publish: self.publishes.load(Ordering::Relaxed),
            pubsub_settle: self.settled.load(Ordering::Relaxed),
            pubsub_ack: self.ack_rpcs.load(Ordering::Relaxed),
            pubsub_billed_bytes: self.billed_bytes.load(Ordering::Relaxed),
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
        let counters = self.calls.iter().chain(&self.batched_calls);
        let counters = counters.chain(&self.batched_rows).chain([
            &self.publishes,
            &self.settled,
            &self.ack_rpcs,
            &self.billed_bytes,
        ]);
        for c in counters {
            c.store(0, Ordering::Relaxed);
        }
    }

    fn bill(&self, bytes: u64) {
        self.billed_bytes
            .fetch_add(billed(bytes), Ordering::Relaxed);
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

    fn rows(&self, op: Op, rows: usize) {
        self.batched_calls[op.index()].fetch_add(1, Ordering::Relaxed);
        self.batched_rows[op.index()].fetch_add(rows as u64, Ordering::Relaxed);
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
        let bytes = batch.iter().map(Message::size).sum::<usize>();
        self.meter.bill(bytes as u64);
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
            response_bytes: (0, 0),
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
        let copy = delivery
            .message
            .dead_letter_copy(reason, &delivery.message_id);
        self.meter.bill(copy.size() as u64);
        self.inner.dead_letter(delivery, reason).await
    }
}

struct MeteredSubscription {
    inner: Box<dyn Subscription>,
    meter: Arc<Meter>,
    since: tokio::time::Instant,
    /// The last flush period that counted an ack RPC.
    flushed: Option<u128>,
    /// The bytes delivered in that period (one pull response's) and what they were billed.
    response_bytes: (u64, u64),
}

#[async_trait]
impl Subscription for MeteredSubscription {
    async fn next(&mut self) -> Option<StoreResult<Delivery>> {
        let d = self.inner.next().await;
        if let Some(Ok(delivery)) = &d {
            // Every delivery is settled exactly once (ack, nack, or nack on drop).
            self.meter.settled.fetch_add(1, Ordering::Relaxed);
            let period = self.since.elapsed().as_millis() / ACK_FLUSH.as_millis();
            if self.flushed.replace(period) != Some(period) {
                self.meter.ack_rpcs.fetch_add(1, Ordering::Relaxed);
                self.response_bytes = (0, 0);
            }
            // The response's bill: its first delivery pays the minimum, the next ones
            // what they add above it.
            self.response_bytes.0 += delivery.message.size() as u64;
            let bill = billed(self.response_bytes.0);
            let added = bill - self.response_bytes.1;
            self.response_bytes.1 = bill;
            self.meter.billed_bytes.fetch_add(added, Ordering::Relaxed);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiersweep::model::{ChangeId, ChangeRecord, ObjectPath, OwnerToken};
    use tiersweep::queue::MemoryQueue;
    use tiersweep::testing::MemoryStores;

    fn message(bytes: usize) -> Message {
        Message {
            data: bytes::Bytes::from(vec![b'j'; bytes]),
            attributes: BTreeMap::new(),
        }
    }

    /// Pub/Sub's minimum is per request: a publish of ten small jobs is billed once, at
    /// 1,000 bytes, and the ten deliveries that arrive together as one response; a large
    /// message is billed at its size.
    #[tokio::test(start_paused = true)]
    async fn pubsub_bills_the_minimum_per_request_not_per_message() {
        let meter = Meter::new(Latency::NONE);
        let queue = meter.wrap_queue(Arc::new(MemoryQueue::new(100, 5)));
        queue
            .publish((0..10).map(|_| message(60)).collect())
            .await
            .unwrap();
        assert_eq!(meter.rpcs().pubsub_billed_bytes, 1_000);
        queue.publish(vec![message(4_000)]).await.unwrap();
        assert_eq!(meter.rpcs().pubsub_billed_bytes, 5_000);

        meter.reset();
        let mut sub = queue.subscribe(FlowControl::default()).await.unwrap();
        for _ in 0..10 {
            sub.next().await.unwrap().unwrap().ack();
        }
        assert_eq!(meter.rpcs().pubsub_billed_bytes, 1_000, "one response");
        tokio::time::advance(ACK_FLUSH).await;
        sub.next().await.unwrap().unwrap().ack();
        assert_eq!(
            meter.rpcs().pubsub_billed_bytes,
            5_000,
            "a later response, 4,000 bytes"
        );
    }

    /// A batch call counts the rows it touched, a single-row call one; GCS calls are not
    /// rows.
    #[tokio::test]
    async fn a_batch_counts_its_rows_a_single_call_one() {
        let meter = Meter::new(Latency::NONE);
        let stores = meter.wrap(&MemoryStores::new().stores());
        let mut ids = Vec::new();
        for i in 0..5 {
            let path = ObjectPath::new(format!("meter/{i}")).unwrap();
            let record = ChangeRecord::new(path, None, None, OwnerToken::mint("meter"));
            let id = ChangeId::mint();
            stores.changelog().record(&id, &record).await.unwrap();
            ids.push(id);
        }
        stores.changelog().get_many(&ids).await.unwrap();
        stores.changelog().remove_many(&ids).await.unwrap();
        stores
            .lt()
            .delete(&tiersweep::model::Revision::mint(
                &ObjectPath::new("meter/x").unwrap(),
            ))
            .await
            .unwrap();
        let rows = meter.rows();
        assert_eq!(rows.get("Record"), Some(&5));
        assert_eq!(rows.get("Get"), Some(&5), "one call, five rows");
        assert_eq!(rows.get("RemoveMany"), Some(&5), "one call, five rows");
        assert_eq!(rows.get("LtDelete"), None);
        assert_eq!(meter.calls().get("Get"), Some(&1));
    }
}
