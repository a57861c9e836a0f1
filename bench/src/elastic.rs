//! The elasticity run: a scanner pool under shard leases drains a backlog while it grows
//! from one member to four, loses one to a kill (no release: its leases must expire) and
//! shrinks back to one by clean stops. In-memory stores on paused time, so what decides
//! the timings is the lease arithmetic, not the machine.
//!
//! Measured: rows claimed twice at once (a claim won while another claimer's lease on the
//! row still ran; [`ClaimLedger`]), re-claims (a row claimed again after its lease ran
//! out), rows left unconverged, instants at which two members could read the same shard,
//! and how long the pool took to cover a killed member's shards (target: one lease period).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tiersweep::changelog::Changelog;
use tiersweep::model::ShardSet;
use tiersweep::queue::{JobQueue, MemoryQueue};
use tiersweep::recovery::{Assignment, Cleaner, LeaseKeeper, RecoveryConfig, Scanner};
use tiersweep::shard_lease::{MemberId, MemoryShardLeases, ShardLeases};
use tiersweep::stores::Stores;
use tiersweep::testing::MemoryStores;
use tiersweep::testing::faults::{Fault, Faults, Op, Rule};
use tiersweep::testing::invariants;
use tiersweep_testkit::claims::{ClaimCounts, ClaimLedger};
use tiersweep_testkit::crash::{crashed_large_puts, test_writer_config};

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ElasticPlan {
    pub backlog: usize,
    pub lease_period: Duration,
    /// Jobs the cleaner holds at once, and the time each takes (its LT delete is slow).
    pub cleaner_concurrency: usize,
    pub per_change: Duration,
}

impl ElasticPlan {
    /// What CI runs: seconds of (virtual) drain.
    pub fn smoke() -> Self {
        Self {
            backlog: 300,
            lease_period: Duration::from_secs(8),
            cleaner_concurrency: 2,
            per_change: Duration::from_millis(200),
        }
    }

    /// `tiersweep bench`: `backlog` changes with production's lease period.
    pub fn full(backlog: usize) -> Self {
        Self {
            backlog,
            lease_period: Duration::from_secs(30),
            cleaner_concurrency: 32,
            per_change: Duration::from_millis(100),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ElasticReport {
    pub backlog: usize,
    pub claims_won: usize,
    /// Claims won while another claimer's lease on the row still ran. Target 0.
    pub claimed_twice_at_once: usize,
    /// Rows claimed again after their lease ran out (the killed member's claims it won but
    /// had not yet published).
    pub reclaims: usize,
    /// Rows not converged at the end. Target 0.
    pub left: usize,
    /// Checks (every 50 ms) at which two members' valid assignments overlapped. Target 0.
    pub shared_shard_instants: usize,
    /// From the fourth member's start until the four held equal shares.
    pub grow: Duration,
    /// From the kill until the live members' valid leases covered every shard.
    pub takeover: Duration,
    /// From the clean stops until the last member held every shard.
    pub shrink: Duration,
    pub lease_period: Duration,
    /// The whole drain, virtual time.
    pub took: Duration,
}

/// One scanner process: its scanner and lease keeper, as tasks.
pub(crate) struct Member {
    scanner: JoinHandle<()>,
    keeper: JoinHandle<()>,
    stop_scanner: CancellationToken,
    stop_keeper: CancellationToken,
    assignment: watch::Receiver<Assignment>,
}

impl Member {
    /// SIGTERM: the scanner stops, then the keeper releases every lease.
    pub(crate) async fn stop(self) {
        self.stop_scanner.cancel();
        let _ = self.scanner.await;
        self.stop_keeper.cancel();
        let _ = self.keeper.await;
    }

    /// kill -9: no release, no depart; its last assignment lapses by itself.
    fn kill(self) -> watch::Receiver<Assignment> {
        self.scanner.abort();
        self.keeper.abort();
        self.assignment
    }
}

/// Starts scanner processes sharing one lease table.
pub(crate) struct Pool {
    pub changelog: Arc<dyn Changelog>,
    pub leases: Arc<dyn ShardLeases>,
    pub queue: Arc<dyn JobQueue>,
    pub config: RecoveryConfig,
    pub period: Duration,
    pub next: usize,
}

impl Pool {
    pub(crate) fn start(&mut self) -> Member {
        let me = MemberId::fresh(&format!("scanner-{}", self.next)).expect("a valid name");
        self.next += 1;
        let (keeper, assignment) = LeaseKeeper::new(self.leases.clone(), me.clone(), self.period);
        let (stop_scanner, stop_keeper) = (CancellationToken::new(), CancellationToken::new());
        let scanner = Scanner::new(
            self.changelog.clone(),
            self.queue.clone(),
            self.config.clone(),
            ShardSet::EMPTY,
        )
        .with_label(me.to_string());
        Member {
            scanner: tokio::spawn(scanner.run_leased(assignment.clone(), stop_scanner.clone())),
            keeper: tokio::spawn(keeper.run(stop_keeper.clone())),
            stop_scanner,
            stop_keeper,
            assignment,
        }
    }
}

/// A recovery deployment: leased scanners and cleaners sharing `queue`, on `stores`.
pub(crate) struct Deployed {
    members: Vec<Member>,
    cleaners: TaskTracker,
    stop_cleaners: CancellationToken,
}

impl Deployed {
    pub(crate) fn start(
        stores: &Stores,
        queue: Arc<dyn JobQueue>,
        config: &RecoveryConfig,
        scanners: usize,
        cleaners: usize,
    ) -> Self {
        let tracker = TaskTracker::new();
        let stop_cleaners = CancellationToken::new();
        for _ in 0..cleaners {
            let cleaner = Cleaner::new(stores.clone(), queue.clone(), config.clone());
            tracker.spawn(cleaner.run(stop_cleaners.clone(), Duration::from_secs(5)));
        }
        let mut pool = Pool {
            changelog: stores.changelog().clone(),
            leases: Arc::new(MemoryShardLeases::new(stores.clock().clone())),
            queue,
            config: config.clone(),
            period: Duration::from_secs(30),
            next: 0,
        };
        let members = (0..scanners).map(|_| pool.start()).collect();
        Self {
            members,
            cleaners: tracker,
            stop_cleaners,
        }
    }

    /// The scanners stop (releasing their leases), then the cleaners.
    pub(crate) async fn stop(self) {
        for m in self.members {
            m.stop().await;
        }
        self.stop_cleaners.cancel();
        self.cleaners.close();
        self.cleaners.wait().await;
    }
}

/// Union of the valid assignments; counts an overlap if two intersect.
fn covered(
    live: &[Member],
    ghosts: &[watch::Receiver<Assignment>],
    overlaps: &mut usize,
) -> ShardSet {
    let now = Instant::now();
    let mut union = ShardSet::EMPTY;
    let mut any_ghost = ShardSet::EMPTY;
    let mut overlap = false;
    for set in live.iter().map(|m| m.assignment.borrow().valid_at(now)) {
        overlap |= !union.intersection(&set).is_empty();
        for s in set.iter() {
            union.insert(s);
        }
    }
    for set in ghosts.iter().map(|g| g.borrow().valid_at(now)) {
        overlap |= !union.intersection(&set).is_empty() || !any_ghost.intersection(&set).is_empty();
        for s in set.iter() {
            any_ghost.insert(s);
        }
    }
    if overlap {
        *overlaps += 1;
    }
    union
}

/// Polls every 50 ms until `done` or `within`; panics naming `what` at the deadline.
async fn until(
    what: &str,
    within: Duration,
    live: &[Member],
    ghosts: &[watch::Receiver<Assignment>],
    overlaps: &mut usize,
    mut done: impl FnMut(ShardSet) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let union = covered(live, ghosts, overlaps);
        if done(union) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "elasticity run: {what} took over {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the plan (see the module doc). Needs paused time in the caller's runtime for its
/// timings to be the lease arithmetic's.
pub async fn run(plan: ElasticPlan) -> ElasticReport {
    let memory = MemoryStores::new();
    let stores = memory.stores();
    let protocol = super::protocol();
    let expected = crashed_large_puts(&stores, test_writer_config(protocol), plan.backlog).await;
    let ledger = Arc::new(ClaimLedger::new(
        stores.changelog().clone(),
        stores.clock().clone(),
    ));
    let period = plan.lease_period;
    let config = RecoveryConfig {
        protocol,
        claim_lease: period * 4,
        republish_after: period * 8,
        upload_settle: Duration::ZERO,
        idle_poll: Duration::from_millis(200),
        cleaner_concurrency: plan.cleaner_concurrency,
        ..RecoveryConfig::default()
    };
    let queue = MemoryQueue::new(plan.backlog * 4 + 64, config.max_delivery_attempts);
    // Cleaners go through the ledger too, so their extensions and removals are counted.
    let slow = Faults::new([Rule::on(Op::LtDelete, Fault::Delay(plan.per_change))]);
    let cleaner_stores = slow.wrap(&stores).with_changelog(ledger.clone());
    let stop_cleaning = CancellationToken::new();
    let cleaning = tokio::spawn(
        Cleaner::new(cleaner_stores, Arc::new(queue.clone()), config.clone())
            .run(stop_cleaning.clone(), Duration::from_secs(1)),
    );
    let mut pool = Pool {
        changelog: ledger.clone(),
        leases: Arc::new(MemoryShardLeases::new(stores.clock().clone())),
        queue: Arc::new(queue),
        config: config.clone(),
        period,
        next: 0,
    };
    let n = plan.backlog;
    let removed = || ledger.counts().removed;
    let started = Instant::now();
    let mut overlaps = 0;
    let mut live = vec![pool.start()];
    let drain_bound = period * 8
        + plan
            .per_change
            .mul_f64(n as f64 / plan.cleaner_concurrency as f64)
            .mul_f64(4.0);
    until(
        "a quarter of the drain",
        drain_bound,
        &live,
        &[],
        &mut overlaps,
        |_| removed() >= n / 4,
    )
    .await;
    for _ in 0..3 {
        live.push(pool.start());
    }
    let grow = until(
        "growing to four",
        period * 2,
        &live,
        &[],
        &mut overlaps,
        |_| {
            let now = Instant::now();
            live_shares(&live, now)
        },
    )
    .await;
    let ghost = live.remove(1).kill();
    let ghosts = [ghost];
    let takeover = until(
        "the takeover",
        period * 2,
        &live,
        &ghosts,
        &mut overlaps,
        |u| u == ShardSet::ALL,
    )
    .await;
    let (last, rest) = (live.remove(0), std::mem::take(&mut live));
    for m in rest {
        m.stop().await;
    }
    live.push(last);
    let shrink = until(
        "shrinking to one",
        period * 2,
        &live,
        &ghosts,
        &mut overlaps,
        |u| u == ShardSet::ALL,
    )
    .await;
    until(
        "the drain",
        drain_bound + config.claim_lease * 2,
        &live,
        &ghosts,
        &mut overlaps,
        |_| removed() >= n,
    )
    .await;
    let took = started.elapsed();
    for m in live {
        m.stop().await;
    }
    stop_cleaning.cancel();
    let _ = cleaning.await;
    let left = invariants::check(&stores, &expected)
        .await
        .expect("invariant check")
        .changelog_remaining;
    let ClaimCounts {
        won,
        reclaims,
        overlapping,
        ..
    } = ledger.counts();
    ElasticReport {
        backlog: n,
        claims_won: won,
        claimed_twice_at_once: overlapping,
        reclaims,
        left,
        shared_shard_instants: overlaps,
        grow,
        takeover,
        shrink,
        lease_period: period,
        took,
    }
}

/// Every live member holds a share of at least a quarter less than equal, and they cover
/// every shard.
fn live_shares(live: &[Member], now: Instant) -> bool {
    let sets: Vec<ShardSet> = live
        .iter()
        .map(|m| m.assignment.borrow().valid_at(now))
        .collect();
    let fair = usize::from(tiersweep::model::SHARD_COUNT) / live.len();
    let total: usize = sets.iter().map(ShardSet::len).sum();
    sets.iter().all(|s| s.len() * 4 >= fair * 3)
        && total == usize::from(tiersweep::model::SHARD_COUNT)
}
