//! Recovery under a backlog the cleaners cannot drain within a claim's lease, with jobs
//! that take longer than a lease and jobs the queue loses: whoever holds a job keeps its
//! claim alive, so no queued or in-hand job's row is claimed twice, and a lost job is
//! published again. Written once, run on the twins (paused time) and on the emulators.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::crash::{crashed_large_puts, test_recovery_config, test_writer_config};
use std::collections::BTreeMap;
use tiersweep::error::StoreResult;
use tiersweep::model::{ObjectPath, ShardRange};
use tiersweep::protocol::ProtocolConfig;
use tiersweep::queue::{Delivery, FlowControl, JobQueue, MemoryQueue, Message, Subscription};
use tiersweep::recovery::{Cleaner, Scanner};
use tiersweep::stores::Stores;
use tiersweep::testing::faults::{Fault, Faults, Op, Rule};
use tiersweep::testing::invariants;
use tiersweep::testing::invariants::Acceptable;

/// What a drain did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    pub changes: usize,
    /// Claims the scanner won, over the whole drain.
    pub claims_won: usize,
    /// Stale rows it left unclaimed for a while (backpressure).
    pub held_back: usize,
    /// Lease extensions the scanner made for its queued claims.
    pub extended_queued: usize,
    /// Lease extensions the cleaner made for jobs in hand.
    pub extended_in_hand: usize,
    /// Jobs the scanner published again.
    pub republished: usize,
    /// How long the drain took, from the scanner's start.
    pub took: Duration,
    /// For the crashes made mid-drain: how long after they turned stale the last of them
    /// converged, and how many backlog rows were still waiting then.
    pub fresh_lag: Option<Duration>,
    pub backlog_left_then: usize,
    /// Rows the scanner read: its rounds, fresh reads, watched rows and overflow spans.
    pub rows_read: usize,
    /// Rows of its waiting claims the scanner re-read (reviews, room made).
    pub rows_reviewed: usize,
}

/// How a drain is made hard.
#[derive(Debug, Clone, Copy, Default)]
pub struct BacklogPlan {
    pub changes: usize,
    /// The scanner's backpressure (0: none).
    pub max_queued_claims: usize,
    /// The cleaner's time per change, in claim leases.
    pub leases_per_change: f64,
    /// Published jobs the queue loses (the first ones), as an emulator that hands them to
    /// a stream that went away.
    pub lost: usize,
    /// Recovery's upload settle (zero: one pass per change, what is measured is claims).
    pub upload_settle: Duration,
    /// Large puts crashed once half the backlog is drained: fresh crashes, which must not
    /// wait behind the rest of it.
    pub fresh_crashes: usize,
    /// The scanner's `max_watched_rows` (`None`: the default).
    pub watch_room: Option<usize>,
}

/// Crashes `n` large puts, then drains them with one scanner and one cleaner that takes a
/// quarter of the claim lease per change, so the backlog takes `n / 4` leases to drain.
/// `max_queued_claims` is the scanner's backpressure (0: none). Checks the stores converge.
pub async fn drain_slower_than_a_lease(
    stores: &Stores,
    protocol: ProtocolConfig,
    n: usize,
    max_queued_claims: usize,
) -> Drain {
    drain(
        stores,
        protocol,
        BacklogPlan {
            changes: n,
            max_queued_claims,
            leases_per_change: 0.25,
            ..BacklogPlan::default()
        },
    )
    .await
}

/// Crashes `plan.changes` large puts, then drains them with one scanner and one cleaner
/// (one job at a time, each taking `plan.leases_per_change` claim leases) over a queue that
/// loses the first `plan.lost` jobs. Checks the stores converge.
pub async fn drain(stores: &Stores, protocol: ProtocolConfig, plan: BacklogPlan) -> Drain {
    let n = plan.changes;
    let expected = crashed_large_puts(stores, test_writer_config(protocol), n).await;
    let mut config = test_recovery_config(protocol);
    config.claim_lease = protocol.staleness_threshold * 2;
    config.republish_after = config.claim_lease * 2;
    config.idle_poll = protocol.heartbeat_interval;
    config.cleaner_concurrency = 1;
    config.max_queued_claims = plan.max_queued_claims;
    config.upload_settle = plan.upload_settle;
    if let Some(room) = plan.watch_room {
        config.max_watched_rows = room;
    }
    // The per-change time: the cleaner's delete of the unreferenced upload is slow.
    let per_change = config.claim_lease.mul_f64(plan.leases_per_change);
    let slow = Faults::new([Rule::on(Op::LtDelete, Fault::Delay(per_change))]);
    let queue = MemoryQueue::new(4 * n.max(1), config.max_delivery_attempts);
    let losing: Arc<dyn JobQueue> = Arc::new(Losing {
        inner: queue.clone(),
        left_to_lose: AtomicUsize::new(plan.lost),
    });
    let cleaner = Cleaner::new(slow.wrap(stores), Arc::new(queue), config.clone());
    let cancel = CancellationToken::new();
    let cleaning = tokio::spawn(cleaner.run(cancel.clone(), Duration::from_secs(1)));

    tokio::time::sleep(protocol.staleness_threshold + Duration::from_millis(50)).await;
    let scanner_calls = Faults::new([]);
    let mut scanner = Scanner::new(
        scanner_calls.wrap(stores).changelog().clone(),
        losing,
        config.clone(),
        ShardRange::ALL,
    );
    let mut drain = Drain {
        changes: n,
        claims_won: 0,
        held_back: 0,
        extended_queued: 0,
        extended_in_hand: 0,
        republished: 0,
        took: Duration::ZERO,
        fresh_lag: None,
        backlog_left_then: 0,
        rows_read: 0,
        rows_reviewed: 0,
    };
    let mut fresh: Option<(BTreeMap<ObjectPath, Acceptable>, tokio::time::Instant)> = None;
    let mut expected = expected;
    let started = tokio::time::Instant::now();
    // Long enough for the unbounded scanner's re-claims to drain too.
    let leases = (n as f64 * plan.leases_per_change.max(0.25) * 4.0) as u32 + 8;
    let deadline = started + config.claim_lease * leases + config.republish_after * 3;
    loop {
        let page = scanner.scan_page().await.expect("a scan page");
        drain.claims_won += page.won;
        drain.held_back += page.held_back;
        drain.republished += page.republished;
        drain.rows_read += page.scanned + page.rechecked;
        drain.rows_reviewed += page.reviewed;
        let left = invariants::check(stores, &expected)
            .await
            .expect("invariant check");
        if let Some((crashed, stale_at)) = &fresh
            && drain.fresh_lag.is_none()
        {
            let report = invariants::check(stores, crashed)
                .await
                .expect("invariant check");
            if report.orphans.is_empty() && report.lost.is_empty() {
                drain.fresh_lag =
                    Some(tokio::time::Instant::now().saturating_duration_since(*stale_at));
                drain.backlog_left_then = left.changelog_remaining;
            }
        }
        if left.is_converged() {
            break;
        }
        if plan.fresh_crashes > 0 && fresh.is_none() && left.changelog_remaining <= n / 2 {
            let crashed =
                crashed_large_puts(stores, test_writer_config(protocol), plan.fresh_crashes).await;
            expected.extend(crashed.clone());
            fresh = Some((
                crashed,
                tokio::time::Instant::now() + protocol.staleness_threshold,
            ));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backlog did not drain: {left:#?} {drain:?}"
        );
        tokio::time::sleep(config.idle_poll).await;
    }
    drain.took = started.elapsed();
    cancel.cancel();
    cleaning.await.expect("the cleaner's task");
    let extends = |calls: Vec<Op>| calls.iter().filter(|op| **op == Op::Extend).count();
    drain.extended_queued = extends(scanner_calls.calls());
    drain.extended_in_hand = extends(slow.calls());
    drain
}

/// A queue that loses the first jobs published to it.
#[derive(Debug)]
struct Losing {
    inner: MemoryQueue,
    left_to_lose: AtomicUsize,
}

#[async_trait::async_trait]
impl JobQueue for Losing {
    async fn publish(&self, mut batch: Vec<Message>) -> StoreResult<()> {
        let lose = self
            .left_to_lose
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                Some(left.saturating_sub(batch.len()))
            })
            .unwrap_or(0)
            .min(batch.len());
        batch.drain(..lose);
        if batch.is_empty() {
            return Ok(());
        }
        self.inner.publish(batch).await
    }
    async fn subscribe(&self, flow: FlowControl) -> StoreResult<Box<dyn Subscription>> {
        self.inner.subscribe(flow).await
    }
    fn destination(&self) -> String {
        self.inner.destination()
    }
    fn subscription(&self) -> String {
        self.inner.subscription()
    }
    async fn dead_letter(&self, delivery: Delivery, reason: &str) -> StoreResult<()> {
        self.inner.dead_letter(delivery, reason).await
    }
}
