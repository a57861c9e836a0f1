//! In-process job queue for embedded mode and tests, with Pub/Sub's delivery contract
//! (see the module above). It is bounded: a publisher waits while `capacity` messages are
//! queued or in flight, which is how embedded mode keeps scanners from outrunning cleaners.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::{Delivery, FlowControl, JobQueue, Message, Settle, Subscription};
use crate::error::StoreResult;

#[derive(Debug)]
struct Pending {
    id: u64,
    attempt: u32,
    message: Message,
    published: crate::model::Timestamp,
    /// The message's place in the bounded queue, held until it is acked or dead-lettered.
    _slot: OwnedSemaphorePermit,
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<Pending>,
    dead: Vec<Message>,
    next_id: u64,
    published: u64,
    acked: u64,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    ready: Notify,
    slots: Arc<Semaphore>,
    max_attempts: u32,
    /// Publish times: wall-clock time that moves with tokio's (paused in tests).
    clock: crate::clock::TokioClock,
    /// Redelivery delay after the first nack; doubles per attempt up to `max_backoff`.
    min_backoff: Duration,
    max_backoff: Duration,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn retry_backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(16);
        self.min_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}

#[derive(Debug, Clone)]
/// The queue in memory: at-least-once, redelivery with backoff, dead-lettering after
/// `max_attempts`, bounded by `capacity`.
pub struct MemoryQueue {
    inner: Arc<Inner>,
}

/// Counts for tests and the demo's progress line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages published.
    pub published: u64,
    /// Deliveries acked.
    pub acked: u64,
    /// Messages waiting for a subscriber.
    pub ready: usize,
    /// Messages dead-lettered.
    pub dead_lettered: usize,
}

impl MemoryQueue {
    /// `capacity` bounds queued plus in-flight messages; after `max_attempts` deliveries a
    /// nacked message is dead-lettered. A nacked message comes back after a backoff of
    /// 100 ms doubling per attempt up to 10 s ([`Self::with_retry_backoff`] sets another).
    pub fn new(capacity: usize, max_attempts: u32) -> Self {
        Self::with_retry_backoff(
            capacity,
            max_attempts,
            Duration::from_millis(100),
            Duration::from_secs(10),
        )
    }

    /// As [`Self::new`], with the redelivery backoff after a nack that a subscription's
    /// retry policy would set: `min` after the first, doubling up to `max`.
    pub fn with_retry_backoff(
        capacity: usize,
        max_attempts: u32,
        min: Duration,
        max: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                ready: Notify::new(),
                slots: Arc::new(Semaphore::new(capacity.max(1))),
                max_attempts: max_attempts.max(1),
                clock: crate::clock::TokioClock::new(),
                min_backoff: min,
                max_backoff: max.max(min),
            }),
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> QueueStats {
        let s = self.inner.state();
        QueueStats {
            published: s.published,
            acked: s.acked,
            ready: s.ready.len(),
            dead_lettered: s.dead.len(),
        }
    }

    /// What was dead-lettered, with its reason attributes.
    #[cfg(any(test, feature = "testing"))]
    pub fn dead_letters(&self) -> Vec<Message> {
        self.inner.state().dead.clone()
    }
}

#[derive(Debug)]
struct Handle {
    inner: Arc<Inner>,
    pending: Pending,
    _flow: OwnedSemaphorePermit,
}

impl Settle for Handle {
    fn ack(self: Box<Self>) {
        self.inner.state().acked += 1;
    }

    fn nack(self: Box<Self>) {
        let Handle {
            inner, mut pending, ..
        } = *self;
        let mut state = inner.state();
        if pending.attempt >= inner.max_attempts {
            let reason = format!("not acked after {} delivery attempts", pending.attempt);
            let message = pending
                .message
                .dead_letter_copy(&reason, &pending.id.to_string());
            state.dead.push(message);
        } else {
            // Like a subscription's retry policy: redelivered after a backoff that grows
            // with the attempt, not at once (a failing job would otherwise spin).
            let backoff = inner.retry_backoff(pending.attempt);
            pending.attempt += 1;
            drop(state);
            let requeue = move |inner: Arc<Inner>, pending: Pending| {
                inner.state().ready.push_back(pending);
                inner.ready.notify_one();
            };
            match tokio::runtime::Handle::try_current() {
                Ok(rt) if !backoff.is_zero() => {
                    rt.spawn(async move {
                        tokio::time::sleep(backoff).await;
                        requeue(inner, pending);
                    });
                }
                // No runtime (a delivery dropped at exit): no one is waiting anyway.
                _ => requeue(inner, pending),
            }
        }
    }
}

struct MemorySubscription {
    inner: Arc<Inner>,
    flow: Arc<Semaphore>,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Option<StoreResult<Delivery>> {
        let flow = self.flow.clone().acquire_owned().await.ok()?;
        loop {
            // Register interest before checking, so a push between the check and the
            // wait is not missed.
            let notified = self.inner.ready.notified();
            let popped = self.inner.state().ready.pop_front();
            if let Some(pending) = popped {
                let published = pending.published;
                return Some(Ok(Delivery::new(
                    pending.id.to_string(),
                    pending.attempt,
                    pending.message.clone(),
                    Box::new(Handle {
                        inner: self.inner.clone(),
                        pending,
                        _flow: flow,
                    }),
                )
                .published_at(published)));
            }
            notified.await;
        }
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    fn destination(&self) -> String {
        "in-process".to_owned()
    }

    async fn publish(&self, batch: Vec<Message>) -> StoreResult<()> {
        // Refuse what Pub/Sub would, before any of the batch is queued.
        for message in &batch {
            message.check_limits().map_err(|e| {
                crate::error::StoreError::new(
                    crate::error::StoreKind::Queue,
                    "publish",
                    "in-process",
                    crate::error::ErrorKind::Permanent,
                    format!("message over Pub/Sub's limits: {e}"),
                )
            })?;
        }
        for message in batch {
            let slot = self
                .inner
                .slots
                .clone()
                .acquire_owned()
                .await
                .expect("the queue's semaphore is never closed");
            let mut state = self.inner.state();
            state.next_id += 1;
            state.published += 1;
            let id = state.next_id;
            state.ready.push_back(Pending {
                id,
                attempt: 1,
                message,
                published: crate::clock::Clock::now(&self.inner.clock),
                _slot: slot,
            });
            drop(state);
            self.inner.ready.notify_one();
        }
        Ok(())
    }

    async fn subscribe(&self, flow: FlowControl) -> StoreResult<Box<dyn Subscription>> {
        Ok(Box::new(MemorySubscription {
            inner: self.inner.clone(),
            flow: Arc::new(Semaphore::new(flow.max_outstanding.max(1))),
        }))
    }

    async fn dead_letter(&self, delivery: Delivery, reason: &str) -> StoreResult<()> {
        let message = delivery
            .message
            .dead_letter_copy(reason, &delivery.message_id);
        message.check_limits().map_err(|e| {
            crate::error::StoreError::new(
                crate::error::StoreKind::Queue,
                "dead_letter",
                "in-process",
                crate::error::ErrorKind::Permanent,
                e,
            )
        })?;
        self.inner.state().dead.push(message);
        delivery.ack();
        Ok(())
    }
}
