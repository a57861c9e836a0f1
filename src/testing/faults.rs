//! Fault injection by wrapping stores, not by editing them (the `object_store` throttle
//! pattern). One [`Faults`] plan is shared by the wrappers of all three stores, so a rule
//! like "crash after the 3rd call" counts calls across the whole write sequence.
//!
//! A crash makes the wrapped process "die": the triggering call and every later call on any
//! wrapper sharing the plan hang forever, heartbeats included. The test then drops the
//! writer's future; recovery runs on the unwrapped stores.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

pub use super::intercept::Op;
use super::intercept::{self, Intercept};
use crate::error::{ErrorKind, StoreError, StoreKind, StoreResult};
use crate::stores::Stores;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The process dies before the call takes effect.
    CrashBefore,
    /// The call takes effect, then the process dies before it sees the response.
    CrashAfter,
    /// The call takes effect, but the response is lost: the caller sees a transient error.
    LoseResponse,
    /// The call fails with a transient error and does not take effect.
    Fail,
    /// The call is held this long before it is sent (a pause, a slow network).
    Delay(Duration),
    /// The caller sees a transient error at once (a timeout, a reset), and the call takes
    /// effect this long afterwards anyway: a request still queued at the server after its
    /// client gave up, an upload the service finalizes after the connection dropped. It
    /// lands even if the caller's process has crashed since: the effect is the server's.
    Straggle(Duration),
}

/// Applies `fault` to calls matching `op` (any op but heartbeats when `None`), starting
/// with the `(skip + 1)`-th matching call, `times` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub op: Option<Op>,
    pub skip: usize,
    pub times: usize,
    pub fault: Fault,
}

impl Rule {
    pub fn nth_call(n: usize, fault: Fault) -> Self {
        Self {
            op: None,
            skip: n,
            times: 1,
            fault,
        }
    }

    pub fn on(op: Op, fault: Fault) -> Self {
        Self {
            op: Some(op),
            skip: 0,
            times: usize::MAX,
            fault,
        }
    }

    pub fn once(op: Op, fault: Fault) -> Self {
        Self {
            op: Some(op),
            skip: 0,
            times: 1,
            fault,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<(Rule, usize)>,
    calls: Vec<Op>,
}

#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<State>,
    crashed: AtomicBool,
    crash: Notify,
    split_batches: AtomicBool,
}

impl Faults {
    pub fn new(rules: impl IntoIterator<Item = Rule>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                rules: rules.into_iter().map(|r| (r, 0)).collect(),
                calls: Vec::new(),
            }),
            ..Default::default()
        })
    }

    /// Wraps all three stores with this plan.
    pub fn wrap(self: &Arc<Self>, stores: &Stores) -> Stores {
        intercept::wrap(self.clone(), stores)
    }

    /// Drops the rules that have not fired yet (a fault already under way runs its course):
    /// the process goes on without restarting.
    pub fn heal(&self) {
        self.lock().rules.clear();
    }

    /// Adds a rule to a running process's plan (counting its calls from now).
    pub fn add(&self, rule: Rule) {
        self.lock().rules.push((rule, 0));
    }

    /// From now on a batched removal leaves as two halves, each its own call meeting the
    /// rules, so that a fault can leave a batch partly done (a `MutateRows` that removed
    /// some rows and then failed). Off by default: call counts see one call per batch.
    pub fn split_batches(&self) {
        self.split_batches.store(true, Ordering::SeqCst);
    }

    /// Whether some rule has yet to fire all its times.
    pub fn pending(&self) -> bool {
        self.lock()
            .rules
            .iter()
            .any(|(rule, seen)| seen.saturating_sub(rule.skip) < rule.times)
    }

    pub fn is_crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// Resolves once the plan has crashed the process.
    pub async fn crashed(&self) {
        let notified = self.crash.notified();
        if !self.is_crashed() {
            notified.await;
        }
    }

    /// Runs `op` as its own task until it finishes or a rule crashes it. A crash aborts the
    /// task where it stands, as a killed process stops; `None` then (or if `op` panicked).
    pub async fn run_until_crash<T: Send + 'static>(
        &self,
        op: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        // In the caller's span, as the request it stands for would be.
        let task = tokio::spawn(tracing::Instrument::in_current_span(op));
        let abort = task.abort_handle();
        tokio::select! {
            r = task => r.ok(),
            _ = self.crashed() => { abort.abort(); None }
        }
    }

    /// The calls seen so far (heartbeats excluded), in order.
    pub fn calls(&self) -> Vec<Op> {
        self.lock().calls.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn crash_now(&self) {
        self.crashed.store(true, Ordering::SeqCst);
        self.crash.notify_waiters();
    }

    fn next_fault(&self, op: Op) -> Option<Fault> {
        let mut state = self.lock();
        if op != Op::Heartbeat {
            state.calls.push(op);
        }
        let seen_of = |rule: &Rule| -> bool {
            match rule.op {
                Some(o) => o == op,
                None => op != Op::Heartbeat,
            }
        };
        let mut hit = None;
        for (rule, seen) in state.rules.iter_mut() {
            if !seen_of(rule) {
                continue;
            }
            *seen += 1;
            if hit.is_none() && *seen > rule.skip && *seen - rule.skip <= rule.times {
                hit = Some(rule.fault);
            }
        }
        hit
    }

    async fn apply<T: Send + 'static>(
        &self,
        op: Op,
        store: StoreKind,
        call: intercept::Call<T>,
    ) -> StoreResult<T> {
        if self.is_crashed() {
            std::future::pending::<()>().await;
        }
        let lost = || {
            StoreError::new(
                store,
                "injected",
                format!("{op:?}"),
                ErrorKind::Transient,
                "injected fault",
            )
        };
        match self.next_fault(op) {
            None => call.await,
            Some(Fault::CrashBefore) => {
                self.crash_now();
                std::future::pending().await
            }
            Some(Fault::CrashAfter) => {
                let _ = call.await;
                self.crash_now();
                std::future::pending().await
            }
            Some(Fault::LoseResponse) => {
                let _ = call.await;
                Err(lost())
            }
            Some(Fault::Fail) => Err(lost()),
            Some(Fault::Straggle(after)) => {
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = call.await;
                });
                Err(lost())
            }
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                if self.is_crashed() {
                    std::future::pending::<()>().await;
                }
                call.await
            }
        }
    }
}

impl Intercept for Faults {
    fn run<T: Send + 'static>(
        &self,
        op: Op,
        store: StoreKind,
        call: intercept::Call<T>,
    ) -> impl Future<Output = StoreResult<T>> + Send {
        self.apply(op, store, call)
    }

    fn splits_batches(&self) -> bool {
        self.split_batches.load(Ordering::SeqCst)
    }
}
