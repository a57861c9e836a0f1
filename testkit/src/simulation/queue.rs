//! The simulation's queue: Pub/Sub's delivery contract at its most awkward.
//!
//! At-least-once, with an ack deadline: a delivery not settled within it is delivered
//! again, to any subscriber, while the first consumer may still be working on it, and an
//! ack that arrives after the deadline is lost (the message comes back). Ready messages are
//! handed out in random order. On command it delivers the next publishes twice, loses them
//! after accepting them, or holds them back. After `max_attempts` deliveries the
//! subscription's policy forwards a message to the dead letters *without* a reason, as
//! Pub/Sub does; a cleaner's own dead-lettering carries one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::plan::QueueFault;
use tiersweep::error::StoreResult;
use tiersweep::queue::{
    DEAD_LETTER_REASON, Delivery, FlowControl, JobQueue, Message, Settle, Subscription,
};

/// A message that reached the dead letters, and how.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message: Message,
    /// Forwarded by the subscription's policy (no reason is expected), not by a cleaner.
    pub by_policy: bool,
}

impl DeadLetter {
    pub fn reason(&self) -> Option<&str> {
        self.message
            .attributes
            .get(DEAD_LETTER_REASON)
            .map(String::as_str)
    }
}

#[derive(Debug)]
enum Status {
    Ready(Instant),
    /// Handed out under this lease until the deadline.
    Out {
        lease: u64,
        deadline: Instant,
    },
}

#[derive(Debug)]
struct Held {
    message: Message,
    attempts: u32,
    status: Status,
}

#[derive(Debug)]
struct State {
    messages: BTreeMap<u64, Held>,
    dead: Vec<DeadLetter>,
    next_id: u64,
    next_lease: u64,
    duplicate: u32,
    drop: u32,
    delay: (u32, Duration),
    rng: StdRng,
    published: u64,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    changed: Notify,
    ack_deadline: Duration,
    max_attempts: u32,
    backoff: Duration,
}

#[derive(Debug, Clone)]
pub struct ChaosQueue {
    inner: Arc<Inner>,
}

impl ChaosQueue {
    pub fn new(seed: u64, ack_deadline: Duration, max_attempts: u32) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    messages: BTreeMap::new(),
                    dead: Vec::new(),
                    next_id: 0,
                    next_lease: 0,
                    duplicate: 0,
                    drop: 0,
                    delay: (0, Duration::ZERO),
                    rng: StdRng::seed_from_u64(seed),
                    published: 0,
                }),
                changed: Notify::new(),
                ack_deadline,
                max_attempts,
                backoff: Duration::from_secs(1),
            }),
        }
    }

    pub fn inject(&self, fault: QueueFault) {
        let mut s = self.inner.state();
        match fault {
            QueueFault::Duplicate(n) => s.duplicate += n,
            QueueFault::Drop(n) => s.drop += n,
            QueueFault::Delay(n, d) => s.delay = (n, d),
        }
    }

    /// Stops injecting queue faults (for quiescence).
    pub fn heal(&self) {
        let mut s = self.inner.state();
        s.duplicate = 0;
        s.drop = 0;
        s.delay = (0, Duration::ZERO);
    }

    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.inner.state().dead.clone()
    }

    /// The first message a worker dead-lettered without saying why (the policy's own
    /// forwarding gives none, and is not counted).
    pub fn unexplained_dead_letter(&self) -> Option<Message> {
        self.inner
            .state()
            .dead
            .iter()
            .find(|d| !d.by_policy && d.reason().is_none_or(str::is_empty))
            .map(|d| d.message.clone())
    }

    pub fn published(&self) -> u64 {
        self.inner.state().published
    }

    /// Messages not yet acked or dead-lettered.
    pub fn pending(&self) -> usize {
        self.inner.state().messages.len()
    }

    fn enqueue(&self, s: &mut State, message: Message, at: Instant) {
        s.next_id += 1;
        let id = s.next_id;
        s.messages.insert(
            id,
            Held {
                message,
                attempts: 0,
                status: Status::Ready(at),
            },
        );
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ChaosQueue {
    /// Takes one deliverable message, at random among those due, or says when to look again.
    fn take(&self) -> Result<(u64, u64, u32, Message), Option<Instant>> {
        let now = Instant::now();
        let mut s = self.inner.state();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        let mut forward = Vec::new();
        for (id, held) in &s.messages {
            let at = match held.status {
                Status::Ready(at) => at,
                Status::Out { deadline, .. } => deadline,
            };
            if at <= now {
                if held.attempts >= self.inner.max_attempts {
                    forward.push(*id);
                } else {
                    due.push(*id);
                }
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        for id in forward {
            if let Some(held) = s.messages.remove(&id) {
                s.dead.push(DeadLetter {
                    message: held.message,
                    by_policy: true,
                });
            }
        }
        if due.is_empty() {
            return Err(next);
        }
        let pick = due[s.rng.random_range(0..due.len())];
        s.next_lease += 1;
        let lease = s.next_lease;
        let deadline = now + self.inner.ack_deadline;
        let held = s.messages.get_mut(&pick).ok_or(next)?;
        held.attempts += 1;
        held.status = Status::Out { lease, deadline };
        Ok((pick, lease, held.attempts, held.message.clone()))
    }
}

#[derive(Debug)]
struct Handle {
    inner: Arc<Inner>,
    id: u64,
    lease: u64,
    _flow: OwnedSemaphorePermit,
}

impl Handle {
    /// The message, if this delivery's lease is still the current one: a settle after the
    /// ack deadline (another delivery has been made since, or is due) is lost.
    fn current<'a>(&self, s: &'a mut State) -> Option<&'a mut Held> {
        let now = Instant::now();
        s.messages.get_mut(&self.id).filter(|h| {
            matches!(h.status, Status::Out { lease, deadline } if lease == self.lease && deadline > now)
        })
    }
}

impl Settle for Handle {
    fn ack(self: Box<Self>) {
        let mut s = self.inner.state();
        if self.current(&mut s).is_some() {
            s.messages.remove(&self.id);
        }
    }

    fn nack(self: Box<Self>) {
        let mut s = self.inner.state();
        let at = Instant::now() + self.inner.backoff;
        if let Some(held) = self.current(&mut s) {
            held.status = Status::Ready(at);
        }
        drop(s);
        self.inner.changed.notify_waiters();
    }
}

struct ChaosSubscription {
    queue: ChaosQueue,
    flow: Arc<Semaphore>,
}

#[async_trait]
impl Subscription for ChaosSubscription {
    async fn next(&mut self) -> Option<StoreResult<Delivery>> {
        let flow = self.flow.clone().acquire_owned().await.ok()?;
        loop {
            let changed = self.queue.inner.changed.notified();
            match self.queue.take() {
                Ok((id, lease, attempt, message)) => {
                    let handle = Handle {
                        inner: self.queue.inner.clone(),
                        id,
                        lease,
                        _flow: flow,
                    };
                    return Some(Ok(Delivery::new(
                        id.to_string(),
                        attempt,
                        message,
                        Box::new(handle),
                    )));
                }
                Err(next) => {
                    let wake = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                    tokio::select! {
                        _ = changed => {}
                        _ = tokio::time::sleep_until(wake) => {}
                    }
                }
            }
        }
    }
}

#[async_trait]
impl JobQueue for ChaosQueue {
    fn destination(&self) -> String {
        "simulated".to_owned()
    }

    async fn publish(&self, batch: Vec<Message>) -> StoreResult<()> {
        let now = Instant::now();
        {
            let mut s = self.inner.state();
            for message in batch {
                s.published += 1;
                if s.drop > 0 {
                    s.drop -= 1;
                    continue;
                }
                let at = if s.delay.0 > 0 {
                    s.delay.0 -= 1;
                    now + s.delay.1
                } else {
                    now
                };
                if s.duplicate > 0 {
                    s.duplicate -= 1;
                    self.enqueue(&mut s, message.clone(), at);
                }
                self.enqueue(&mut s, message, at);
            }
        }
        self.inner.changed.notify_waiters();
        Ok(())
    }

    async fn subscribe(&self, flow: FlowControl) -> StoreResult<Box<dyn Subscription>> {
        Ok(Box::new(ChaosSubscription {
            queue: self.clone(),
            flow: Arc::new(Semaphore::new(flow.max_outstanding.max(1))),
        }))
    }

    async fn dead_letter(&self, delivery: Delivery, reason: &str) -> StoreResult<()> {
        let copy = delivery
            .message
            .dead_letter_copy(reason, &delivery.message_id);
        self.inner.state().dead.push(DeadLetter {
            message: copy,
            by_policy: false,
        });
        delivery.ack();
        Ok(())
    }
}
