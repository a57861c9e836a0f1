//! The job queue between scanners and cleaners: Pub/Sub in a distributed deployment, an
//! in-process queue in embedded mode. Both give the same contract:
//!
//! * at-least-once delivery, with a delivery-attempt count on every delivery;
//! * a delivery that is neither acked nor nacked (its worker died) is delivered again;
//! * after a bounded number of attempts a message moves to the dead-letter destination,
//!   and a worker can dead-letter a message at once with a reason (poison);
//! * flow control: a subscription never holds more than `max_outstanding` unsettled
//!   deliveries, so a backlog of any size costs a worker bounded memory.
//!
//! Messages are opaque here; the cleanup job format lives in `recovery::job`.

pub mod memory;
pub mod pubsub;

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::StoreResult;

pub use memory::MemoryQueue;
pub use pubsub::PubsubQueue;

/// The attribute that carries a dead-lettered message's reason.
pub const DEAD_LETTER_REASON: &str = "tiersweep_dead_letter_reason";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub data: Bytes,
    pub attributes: BTreeMap<String, String>,
}

/// What a delivery's handle does when the worker is done with it.
pub trait Settle: Send + Sync + std::fmt::Debug {
    fn ack(self: Box<Self>);
    fn nack(self: Box<Self>);
}

/// One delivery of a message. Dropping it unsettled counts as a nack, as a worker crash does.
#[derive(Debug)]
pub struct Delivery {
    pub message_id: String,
    /// 1 on first delivery.
    pub attempt: u32,
    pub message: Message,
    handle: Option<Box<dyn Settle>>,
}

impl Delivery {
    pub fn new(
        message_id: String,
        attempt: u32,
        message: Message,
        handle: Box<dyn Settle>,
    ) -> Self {
        Self {
            message_id,
            attempt,
            message,
            handle: Some(handle),
        }
    }

    pub fn ack(mut self) {
        if let Some(h) = self.handle.take() {
            h.ack();
        }
    }

    pub fn nack(mut self) {
        if let Some(h) = self.handle.take() {
            h.nack();
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.nack();
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct FlowControl {
    /// Unsettled deliveries a subscription may hold at once.
    pub max_outstanding: usize,
    /// Unsettled message bytes a subscription may hold at once. Jobs are small (a row key
    /// and a claim token), so the count binds first; this guards against foreign messages.
    pub max_outstanding_bytes: usize,
}

impl Default for FlowControl {
    fn default() -> Self {
        Self {
            max_outstanding: 64,
            max_outstanding_bytes: 16 << 20,
        }
    }
}

/// A stream of deliveries for one worker.
#[async_trait]
pub trait Subscription: Send {
    /// The next delivery; `None` once the subscription is closed.
    async fn next(&mut self) -> Option<StoreResult<Delivery>>;
}

#[async_trait]
pub trait JobQueue: Send + Sync + std::fmt::Debug {
    /// Publishes a batch; returns once every message is durably accepted.
    async fn publish(&self, batch: Vec<Message>) -> StoreResult<()>;

    async fn subscribe(&self, flow: FlowControl) -> StoreResult<Box<dyn Subscription>>;

    /// Where published jobs go (a topic name), for telemetry.
    fn destination(&self) -> String;

    /// Sends `delivery` to the dead-letter destination with `reason`, then acks it.
    async fn dead_letter(&self, delivery: Delivery, reason: &str) -> StoreResult<()>;
}
