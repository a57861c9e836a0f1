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

pub mod dead_letters;
pub mod memory;
pub mod pubsub;
mod pull;

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::StoreResult;

pub use memory::MemoryQueue;
pub use pubsub::PubsubQueue;

/// The attribute that carries a dead-lettered message's reason.
pub const DEAD_LETTER_REASON: &str = "tiersweep_dead_letter_reason";
/// The attribute that carries the id of the message a dead letter copies.
pub const DEAD_LETTER_SOURCE: &str = "tiersweep_source_message_id";
/// The attribute that counts the original attributes a dead letter had to leave out.
pub const DEAD_LETTER_DROPPED: &str = "tiersweep_dropped_attributes";

/// Pub/Sub's limits on one message. Cloud Pub/Sub refuses a message over any of them; the
/// emulator enforces none, so [`Message::check_limits`] is applied before every publish on
/// both backends, and the in-memory queue refuses what Pub/Sub would.
pub mod limits {
    /// Attributes per message.
    pub const MAX_ATTRIBUTES: usize = 100;
    /// Bytes of an attribute key.
    pub const MAX_KEY_BYTES: usize = 256;
    /// Bytes of an attribute value.
    pub const MAX_VALUE_BYTES: usize = 1024;
    /// Bytes of a message: data plus attribute keys and values.
    pub const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
/// One message: opaque data and string attributes.
pub struct Message {
    /// The payload.
    pub data: Bytes,
    /// Attributes (trace context, dead-letter reason, …).
    pub attributes: BTreeMap<String, String>,
}

impl Message {
    /// Its size as Pub/Sub counts it against its limits and bills it: data plus attribute
    /// keys and values.
    pub fn size(&self) -> usize {
        self.data.len()
            + self
                .attributes
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }

    /// Whether Pub/Sub would accept the message; the error names the limit.
    pub fn check_limits(&self) -> Result<(), String> {
        use limits::*;
        if self.attributes.len() > MAX_ATTRIBUTES {
            return Err(format!(
                "{} attributes, more than Pub/Sub's {MAX_ATTRIBUTES}",
                self.attributes.len()
            ));
        }
        for (k, v) in &self.attributes {
            if k.len() > MAX_KEY_BYTES || v.len() > MAX_VALUE_BYTES {
                return Err(format!(
                    "attribute {:?} ({} + {} bytes) exceeds Pub/Sub's {MAX_KEY_BYTES}-byte key or {MAX_VALUE_BYTES}-byte value limit",
                    truncated(k, 64),
                    k.len(),
                    v.len()
                ));
            }
        }
        let size = self.size();
        if size > MAX_MESSAGE_BYTES {
            return Err(format!(
                "{size} bytes, more than Pub/Sub's {MAX_MESSAGE_BYTES}"
            ));
        }
        Ok(())
    }

    /// The copy that goes to the dead-letter topic: this message with `reason` and the
    /// source message id added, kept within Pub/Sub's limits whatever the original carried,
    /// so that dead-lettering itself cannot fail on size (which would loop the job until the
    /// subscription forwarded it *without* a reason, I5). The reason is cut to the value
    /// limit; attribute values over it are cut; when the original has too many attributes,
    /// the last ones (in key order) are left out and counted.
    pub fn dead_letter_copy(&self, reason: &str, source_id: &str) -> Message {
        use limits::*;
        let ours = [DEAD_LETTER_REASON, DEAD_LETTER_SOURCE, DEAD_LETTER_DROPPED];
        let theirs: Vec<(&String, &String)> = self
            .attributes
            .iter()
            .filter(|(k, _)| !ours.contains(&k.as_str()))
            .collect();
        let mut attributes: BTreeMap<String, String> = theirs
            .iter()
            .filter(|(k, _)| k.len() <= MAX_KEY_BYTES)
            .take(MAX_ATTRIBUTES - ours.len())
            .map(|(k, v)| ((*k).clone(), truncated(v, MAX_VALUE_BYTES)))
            .collect();
        let dropped = theirs.len() - attributes.len();
        attributes.insert(
            DEAD_LETTER_REASON.to_owned(),
            truncated(reason, MAX_VALUE_BYTES),
        );
        attributes.insert(
            DEAD_LETTER_SOURCE.to_owned(),
            truncated(source_id, MAX_VALUE_BYTES),
        );
        if dropped > 0 {
            attributes.insert(DEAD_LETTER_DROPPED.to_owned(), dropped.to_string());
        }
        let mut data = self.data.clone();
        let budget = MAX_MESSAGE_BYTES.saturating_sub(
            attributes
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>(),
        );
        data.truncate(budget);
        Message { data, attributes }
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// What a delivery's handle does when the worker is done with it.
pub trait Settle: Send + Sync + std::fmt::Debug {
    /// Acknowledges: the message is done.
    fn ack(self: Box<Self>);
    /// Returns the message for redelivery.
    fn nack(self: Box<Self>);
}

/// One delivery of a message. Dropping it unsettled counts as a nack, as a worker crash does.
#[derive(Debug)]
pub struct Delivery {
    /// The queue's id of the message (stable across redeliveries).
    pub message_id: String,
    /// 1 on first delivery.
    pub attempt: u32,
    /// What was published.
    pub message: Message,
    /// When the message was published, on the queue's clock (Pub/Sub's `publishTime`):
    /// how `tiersweep dlq` tells an old dead letter from a new one.
    pub published: Option<crate::model::Timestamp>,
    handle: Option<Box<dyn Settle>>,
}

impl Delivery {
    /// A delivery settled through `handle`.
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
            published: None,
            handle: Some(handle),
        }
    }

    /// The delivery with its publish time.
    pub fn published_at(mut self, at: crate::model::Timestamp) -> Self {
        self.published = Some(at);
        self
    }

    /// Acknowledges the delivery: it is not delivered again.
    pub fn ack(mut self) {
        if let Some(h) = self.handle.take() {
            h.ack();
        }
    }

    /// Returns the delivery for redelivery (with the subscription's backoff).
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
/// How much a subscription may hold unsettled.
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

    /// Stops pulling: no more deliveries, and (Pub/Sub) nothing nacked from now on is
    /// redelivered to this stream. Deliveries in hand can still be settled. Call it before
    /// settling what a one-shot run holds, then [`Subscription::close`].
    async fn stop_pulling(&mut self) {}

    /// Stops pulling if not stopped yet, and waits until the acks and nacks of every
    /// delivery are sent and what the client pulled ahead is returned. Without it a
    /// one-shot process loses its last settlements, and the messages the client had
    /// prefetched stay invisible for their ack deadline. Call it once every delivery is
    /// settled.
    async fn close(&mut self) {}
}

#[async_trait]
/// A job queue: Pub/Sub in a deployment, in memory for embedded mode and tests. One
/// conformance suite runs on both.
pub trait JobQueue: Send + Sync + std::fmt::Debug {
    /// Publishes a batch; returns once every message is durably accepted.
    async fn publish(&self, batch: Vec<Message>) -> StoreResult<()>;

    /// A stream of deliveries holding at most `flow`'s bounds unsettled.
    async fn subscribe(&self, flow: FlowControl) -> StoreResult<Box<dyn Subscription>>;

    /// Where published jobs go (a topic name), for telemetry.
    fn destination(&self) -> String;

    /// Where consumers pull jobs from (a subscription name), for telemetry
    /// (`messaging.destination.subscription.name`, consumer and settle span names). A queue
    /// without subscriptions names its destination.
    fn subscription(&self) -> String {
        self.destination()
    }

    /// Sends `delivery` to the dead-letter destination with `reason`, then acks it.
    async fn dead_letter(&self, delivery: Delivery, reason: &str) -> StoreResult<()>;
}

#[cfg(test)]
mod tests {
    use super::limits::*;
    use super::*;

    fn crowded() -> Message {
        Message {
            data: Bytes::from_static(b"job"),
            attributes: (0..MAX_ATTRIBUTES)
                .map(|i| (format!("k{i:03}"), "v".repeat(MAX_VALUE_BYTES)))
                .collect(),
        }
    }

    #[test]
    fn a_dead_letter_of_a_message_at_every_limit_stays_within_them() {
        let original = crowded();
        assert_eq!(original.check_limits(), Ok(()));
        let reason = "é".repeat(3000); // 6,000 bytes, two per character
        let dead = original.dead_letter_copy(&reason, "m-1");
        assert_eq!(dead.check_limits(), Ok(()));
        assert_eq!(dead.attributes.len(), MAX_ATTRIBUTES);
        let kept_reason = &dead.attributes[DEAD_LETTER_REASON];
        assert!(kept_reason.len() <= MAX_VALUE_BYTES && reason.starts_with(kept_reason.as_str()));
        assert_eq!(dead.attributes[DEAD_LETTER_SOURCE], "m-1");
        assert_eq!(dead.attributes[DEAD_LETTER_DROPPED], "3");
        assert_eq!(dead.data, original.data);
    }

    #[test]
    fn a_dead_letter_of_a_small_message_keeps_everything() {
        let mut original = Message::default();
        original
            .attributes
            .insert("traceparent".into(), "00-ab".into());
        let dead = original.dead_letter_copy("poison", "m-2");
        assert_eq!(dead.attributes.len(), 3);
        assert_eq!(dead.attributes["traceparent"], "00-ab");
        assert!(!dead.attributes.contains_key(DEAD_LETTER_DROPPED));
    }

    #[test]
    fn limits_name_what_they_refuse() {
        let mut m = crowded();
        m.attributes.insert("one-more".into(), "x".into());
        assert!(m.check_limits().unwrap_err().contains("101 attributes"));
        let mut m = Message::default();
        m.attributes
            .insert("big".into(), "x".repeat(MAX_VALUE_BYTES + 1));
        assert!(m.check_limits().unwrap_err().contains("\"big\""));
        let m = Message {
            data: Bytes::from(vec![0; MAX_MESSAGE_BYTES + 1]),
            attributes: BTreeMap::new(),
        };
        assert!(m.check_limits().is_err());
    }
}
