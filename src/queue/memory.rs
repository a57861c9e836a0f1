//! In-process job queue for embedded mode and tests, with Pub/Sub's delivery contract
//! (see the module above). It is bounded: a publisher waits while `capacity` messages are
//! queued or in flight, which is how embedded mode keeps scanners from outrunning cleaners.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::{DEAD_LETTER_REASON, Delivery, FlowControl, JobQueue, Message, Settle, Subscription};
use crate::error::StoreResult;

#[derive(Debug)]
struct Pending {
    id: u64,
    attempt: u32,
    message: Message,
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
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Clone)]
pub struct MemoryQueue {
    inner: Arc<Inner>,
}

/// Counts for tests and the demo's progress line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub published: u64,
    pub acked: u64,
    pub ready: usize,
    pub dead_lettered: usize,
}

impl MemoryQueue {
    /// `capacity` bounds queued plus in-flight messages; after `max_attempts` deliveries a
    /// nacked message is dead-lettered.
    pub fn new(capacity: usize, max_attempts: u32) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                ready: Notify::new(),
                slots: Arc::new(Semaphore::new(capacity.max(1))),
                max_attempts: max_attempts.max(1),
            }),
        }
    }

    pub fn stats(&self) -> QueueStats {
        let s = self.inner.state();
        QueueStats {
            published: s.published,
            acked: s.acked,
            ready: s.ready.len(),
            dead_lettered: s.dead.len(),
        }
    }

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
            let mut message = pending.message;
            message.attributes.insert(
                DEAD_LETTER_REASON.to_owned(),
                format!("not acked after {} delivery attempts", pending.attempt),
            );
            state.dead.push(message);
        } else {
            pending.attempt += 1;
            state.ready.push_back(pending);
            drop(state);
            inner.ready.notify_one();
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
                return Some(Ok(Delivery::new(
                    pending.id.to_string(),
                    pending.attempt,
                    pending.message.clone(),
                    Box::new(Handle {
                        inner: self.inner.clone(),
                        pending,
                        _flow: flow,
                    }),
                )));
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
        let mut message = delivery.message.clone();
        message
            .attributes
            .insert(DEAD_LETTER_REASON.to_owned(), reason.to_owned());
        self.inner.state().dead.push(message);
        delivery.ack();
        Ok(())
    }
}
