//! The [`ShardLeases`] contract: every write is a compare-and-set on (epoch, holder), so of two
//! members racing for a lease one wins, a late renewal cannot undo a takeover, and a
//! renewal that lands first defeats one.

use std::time::Duration;

use crate::model::{SHARD_COUNT, Shard, Timestamp};
use crate::shard_lease::{Kept, MemberId, ShardLease, ShardLeases, Taken};

fn member(name: &str) -> MemberId {
    MemberId::fresh(name).expect("a valid member name")
}

async fn lease(store: &dyn ShardLeases, shard: Shard) -> ShardLease {
    let table = store.read().await.expect("reading leases");
    assert_eq!(table.leases.len(), usize::from(SHARD_COUNT));
    table.leases[usize::from(shard.0)].clone()
}

/// Waits until the store's time has passed `t`.
async fn past(store: &dyn ShardLeases, t: Timestamp) -> Timestamp {
    loop {
        let now = store.read().await.expect("reading leases").now;
        if now > t {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub async fn an_unwritten_lease_is_free_and_taken_once(store: &dyn ShardLeases) {
    let table = store.read().await.expect("reading leases");
    assert!(
        table
            .leases
            .iter()
            .all(|l| l.holder.is_none() && l.epoch == 0)
    );
    assert!(table.members.is_empty() && table.malformed.is_empty());
    let shard = Shard(0x123);
    let seen = lease(store, shard).await;
    let (a, b) = (member("a"), member("b"));
    let (ta, tb) = tokio::join!(
        store.acquire(&seen, &a, Timestamp(0)),
        store.acquire(&seen, &b, Timestamp(0))
    );
    let outcomes = [ta.expect("acquiring"), tb.expect("acquiring")];
    let won: Vec<_> = outcomes
        .iter()
        .filter(|t| matches!(t, Taken::Won { epoch: 1 }))
        .collect();
    assert_eq!(
        won.len(),
        1,
        "exactly one of two racing members wins: {outcomes:?}"
    );
    let now = lease(store, shard).await;
    assert_eq!(now.epoch, 1);
    let winner = if outcomes[0] == (Taken::Won { epoch: 1 }) {
        &a
    } else {
        &b
    };
    assert!(now.is_held_by(winner));
    // Other shards are untouched.
    assert_eq!(
        lease(store, Shard(0x124)).await,
        ShardLease::unwritten(Shard(0x124))
    );
}

pub async fn a_held_lease_is_taken_only_once_it_expired(store: &dyn ShardLeases) {
    let (a, b) = (member("a"), member("b"));
    let shard = Shard(7);
    let free = lease(store, shard).await;
    assert_eq!(
        store.acquire(&free, &a, Timestamp(0)).await.unwrap(),
        Taken::Won { epoch: 1 }
    );
    let held = lease(store, shard).await;
    // Not expired: its stamp is not before the bound.
    assert_eq!(
        store.acquire(&held, &b, held.stamp).await.unwrap(),
        Taken::Lost
    );
    // A stale read (the free lease) cannot take it either, however expired.
    assert_eq!(
        store.acquire(&free, &b, Timestamp(i64::MAX)).await.unwrap(),
        Taken::Lost
    );
    let later = past(store, held.stamp).await;
    assert_eq!(
        store.acquire(&held, &b, later).await.unwrap(),
        Taken::Won { epoch: 2 }
    );
    assert!(lease(store, shard).await.is_held_by(&b));
}

pub async fn a_renewal_after_a_takeover_is_refused(store: &dyn ShardLeases) {
    let (a, b) = (member("a"), member("b"));
    let shard = Shard::LAST;
    let free = lease(store, shard).await;
    let Taken::Won { epoch } = store.acquire(&free, &a, Timestamp(0)).await.unwrap() else {
        panic!("a free lease is taken");
    };
    let held = lease(store, shard).await;
    let later = past(store, held.stamp).await;
    assert_eq!(
        store.acquire(&held, &b, later).await.unwrap(),
        Taken::Won { epoch: epoch + 1 }
    );
    // The old holder's late calls are refused: the epoch moved.
    assert_eq!(store.renew(shard, epoch, &a).await.unwrap(), Kept::NotHeld);
    assert_eq!(
        store.release(shard, epoch, &a).await.unwrap(),
        Kept::NotHeld
    );
    // Even at the new epoch, a renewal names its holder.
    assert_eq!(
        store.renew(shard, epoch + 1, &a).await.unwrap(),
        Kept::NotHeld
    );
    assert_eq!(store.renew(shard, epoch + 1, &b).await.unwrap(), Kept::Done);
    assert!(lease(store, shard).await.is_held_by(&b));
}

pub async fn a_renewal_before_a_takeover_defeats_it(store: &dyn ShardLeases) {
    let (a, b) = (member("a"), member("b"));
    let shard = Shard(0);
    let free = lease(store, shard).await;
    let Taken::Won { epoch } = store.acquire(&free, &a, Timestamp(0)).await.unwrap() else {
        panic!("a free lease is taken");
    };
    let seen = lease(store, shard).await;
    let bound = past(store, seen.stamp).await;
    assert_eq!(store.renew(shard, epoch, &a).await.unwrap(), Kept::Done);
    let renewed = lease(store, shard).await;
    assert!(
        renewed.stamp >= bound,
        "a renewal stamps the store's time now"
    );
    // B judged the lease expired from its earlier read; the renewal landed first.
    assert_eq!(store.acquire(&seen, &b, bound).await.unwrap(), Taken::Lost);
    assert!(lease(store, shard).await.is_held_by(&a));
}

pub async fn a_release_frees_the_lease_at_the_next_epoch(store: &dyn ShardLeases) {
    let (a, b) = (member("a"), member("b"));
    let shard = Shard(0x200);
    let free = lease(store, shard).await;
    let Taken::Won { epoch } = store.acquire(&free, &a, Timestamp(0)).await.unwrap() else {
        panic!("a free lease is taken");
    };
    assert_eq!(store.release(shard, epoch, &a).await.unwrap(), Kept::Done);
    let released = lease(store, shard).await;
    assert_eq!(
        (released.epoch, released.holder.as_ref()),
        (epoch + 1, None)
    );
    // Free: taken at once, however recently it was stamped.
    assert_eq!(
        store.acquire(&released, &b, Timestamp(0)).await.unwrap(),
        Taken::Won { epoch: epoch + 2 }
    );
    // A release is not undone by the old holder's second try.
    assert_eq!(
        store.release(shard, epoch, &a).await.unwrap(),
        Kept::NotHeld
    );
    assert!(lease(store, shard).await.is_held_by(&b));
}

pub async fn members_announce_depart_and_are_forgotten_only_when_stale(store: &dyn ShardLeases) {
    let (a, b) = (member("a"), member("b"));
    store.announce(&a).await.unwrap();
    store.announce(&b).await.unwrap();
    let table = store.read().await.unwrap();
    let mut ids: Vec<_> = table.members.iter().map(|m| m.id.clone()).collect();
    ids.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(ids, want);
    let stamp_b = table.members.iter().find(|m| m.id == b).unwrap().stamp;
    assert!(stamp_b <= table.now);
    store.depart(&a).await.unwrap();
    assert!(
        !store.forget(&b, stamp_b).await.unwrap(),
        "not stale before its own stamp"
    );
    let table = store.read().await.unwrap();
    assert_eq!(table.members.len(), 1);
    assert_eq!(table.members[0].id, b);
    let later = past(store, stamp_b).await;
    assert!(store.forget(&b, later).await.unwrap());
    assert!(store.read().await.unwrap().members.is_empty());
    // A read judged by the caller's clock sees the same rows.
    let at = store.read_at(Timestamp(42)).await.unwrap();
    assert_eq!((at.now, at.members.len()), (Timestamp(42), 0));
    // Departing twice, or forgetting the gone, is fine.
    store.depart(&a).await.unwrap();
    assert!(!store.forget(&a, later).await.unwrap());
}
