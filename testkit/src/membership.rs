//! Shard leases under a changing pool: scenarios written once and run on both backends
//! (by `tests/safety_*.rs`). Keepers are ticked in turn, as many processes would tick; at
//! every step no two members may read the same shard at once (their *valid* assignments
//! are disjoint, a dead member's included, until its validity lapses), and once the pool
//! settles every shard is held by exactly one member.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use tiersweep::model::{SHARD_COUNT, ShardSet};
use tiersweep::recovery::{Assignment, LeaseKeeper};
use tiersweep::shard_lease::{MemberId, ShardLeases};

struct Member {
    keeper: LeaseKeeper,
    assignment: watch::Receiver<Assignment>,
}

fn join(leases: &Arc<dyn ShardLeases>, name: &str, period: Duration) -> Member {
    let id = MemberId::fresh(name).expect("a valid member name");
    let (keeper, assignment) = LeaseKeeper::new(leases.clone(), id, period);
    Member { keeper, assignment }
}

/// No shard is readable by two members at once, counting `ghosts` (dead members whose
/// last assignment may still be valid).
fn assert_disjoint(live: &[Member], ghosts: &[watch::Receiver<Assignment>], when: &str) {
    let now = Instant::now();
    let mut seen = ShardSet::EMPTY;
    let sets = live
        .iter()
        .map(|m| m.assignment.borrow().valid_at(now))
        .chain(ghosts.iter().map(|g| g.borrow().valid_at(now)));
    for set in sets {
        let both = seen.intersection(&set);
        assert!(
            both.is_empty(),
            "{when}: shards {both} readable by two members at once"
        );
        for s in set.iter() {
            seen.insert(s);
        }
    }
}

/// Every shard held by exactly one live member, each within its share.
fn partitioned(live: &[Member]) -> bool {
    let share = usize::from(SHARD_COUNT).div_ceil(live.len());
    let mut union = ShardSet::EMPTY;
    let mut total = 0;
    for m in live {
        let held = m.keeper.held();
        if held.len() > share {
            return false;
        }
        total += held.len();
        for s in held.iter() {
            union.insert(s);
        }
    }
    union == ShardSet::ALL && total == usize::from(SHARD_COUNT)
}

/// Ticks every live member in turn, a tick apart, until the shards are partitioned;
/// returns how many rounds that took. Checks disjointness after every tick.
async fn settle(live: &mut [Member], ghosts: &[watch::Receiver<Assignment>], when: &str) -> usize {
    let tick = live[0].keeper.tick_every();
    for round in 1..=12 {
        for i in 0..live.len() {
            live[i].keeper.tick().await.expect("a lease tick");
            assert_disjoint(live, ghosts, when);
        }
        if partitioned(live) {
            return round;
        }
        tokio::time::sleep(tick).await;
    }
    let held: Vec<usize> = live.iter().map(|m| m.keeper.held().len()).collect();
    panic!("{when}: the pool did not settle in 12 rounds: {held:?}");
}

/// One member takes every shard; three join one by one, each taking its equal share
/// within a lease period; one leaves cleanly (its shards are taken at the others' next
/// tick); one dies (its shards are taken within one lease period of its last renewal, and
/// never while it could still read them).
pub async fn a_pool_rebalances_as_members_join_leave_and_die(
    leases: Arc<dyn ShardLeases>,
    period: Duration,
) {
    let mut live = vec![join(&leases, "scanner-0", period)];
    assert_eq!(settle(&mut live, &[], "one member").await, 1);
    assert_eq!(live[0].keeper.held(), ShardSet::ALL);
    for n in 1..4 {
        live.push(join(&leases, &format!("scanner-{n}"), period));
        let rounds = settle(&mut live, &[], &format!("{} members", n + 1)).await;
        assert!(
            rounds <= 3,
            "a joiner has its share within 3 ticks, took {rounds}"
        );
    }
    assert!(live.iter().all(|m| m.keeper.held().len() == 256));

    let mut leaving = live.remove(1);
    leaving.keeper.stop().await.expect("a clean stop");
    assert!(
        leaving
            .assignment
            .borrow()
            .valid_at(Instant::now())
            .is_empty()
    );
    let rounds = settle(&mut live, &[], "after one left").await;
    assert!(
        rounds <= 2,
        "a leaver's shards are taken at the next tick, took {rounds}"
    );

    // It stops ticking (dead, or frozen: a GC pause, a suspended VM).
    let mut stalled = live.remove(0);
    let ghost = stalled.assignment.clone();
    let orphaned = stalled.keeper.held();
    let last_renewal = Instant::now();
    let rounds = settle(&mut live, std::slice::from_ref(&ghost), "after one stalled").await;
    let took = last_renewal.elapsed();
    assert!(rounds >= 2, "not taken while the dead member's leases ran");
    assert!(
        took <= period + period / 4,
        "a dead member's shards are taken within a lease period (and a tick): {took:?}"
    );
    let now_held: ShardSet = live.iter().fold(ShardSet::EMPTY, |acc, m| {
        let mut acc = acc;
        for s in m.keeper.held().iter() {
            acc.insert(s);
        }
        acc
    });
    assert_eq!(orphaned.difference(&now_held), ShardSet::EMPTY);

    // The frozen one wakes: its renewals are refused (the epochs moved), it drops them,
    // and it rejoins as a member like any other.
    let woke = stalled.keeper.tick().await.expect("a lease tick");
    assert_eq!(woke.lost, orphaned.len(), "{woke:?}");
    assert!(
        stalled
            .assignment
            .borrow()
            .valid_at(Instant::now())
            .is_empty()
    );
    live.push(stalled);
    settle(&mut live, &[], "after it woke").await;
}
