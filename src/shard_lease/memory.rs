//! In-memory leases with the Bigtable backend's semantics: compare-and-sets on (epoch,
//! holder), stamps in the store's clock (the changelog twin's, when they share one).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{Kept, ShardLease, ShardLeaseTable, ShardLeases, Member, MemberId, Taken};
use crate::clock::SharedClock;
use crate::error::StoreResult;
use crate::model::{SHARD_COUNT, Shard, Timestamp};

#[derive(Debug, Default)]
struct State {
    /// Leases ever written; the others read as [`ShardLease::unwritten`].
    leases: BTreeMap<Shard, ShardLease>,
    members: BTreeMap<MemberId, Timestamp>,
}

#[derive(Debug)]
/// Leases and members in memory, stamped in `clock` (the changelog twin's, when they share
/// one).
pub struct MemoryShardLeases {
    state: Mutex<State>,
    clock: SharedClock,
}

impl MemoryShardLeases {
    /// No leases written, no members.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            state: Mutex::new(State::default()),
            clock,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lease(state: &State, shard: Shard) -> ShardLease {
        state
            .leases
            .get(&shard)
            .cloned()
            .unwrap_or_else(|| ShardLease::unwritten(shard))
    }

    /// Moves `shard`'s lease to `holder` at `epoch`, stamped now.
    fn write(&self, state: &mut State, shard: Shard, epoch: u64, holder: Option<MemberId>) {
        let stamp = self.clock.now();
        state.leases.insert(
            shard,
            ShardLease {
                shard,
                epoch,
                holder,
                stamp,
            },
        );
    }
}

#[async_trait]
impl ShardLeases for MemoryShardLeases {
    async fn read(&self) -> StoreResult<ShardLeaseTable> {
        self.read_at(self.clock.now()).await
    }

    async fn read_at(&self, now: Timestamp) -> StoreResult<ShardLeaseTable> {
        let state = self.state();
        Ok(ShardLeaseTable {
            now,
            leases: (0..SHARD_COUNT)
                .map(|s| Self::lease(&state, Shard(s)))
                .collect(),
            members: state
                .members
                .iter()
                .map(|(id, stamp)| Member {
                    id: id.clone(),
                    stamp: *stamp,
                })
                .collect(),
            malformed: Vec::new(),
        })
    }

    async fn announce(&self, member: &MemberId) -> StoreResult<()> {
        let now = self.clock.now();
        self.state().members.insert(member.clone(), now);
        Ok(())
    }

    async fn depart(&self, member: &MemberId) -> StoreResult<()> {
        self.state().members.remove(member);
        Ok(())
    }

    async fn forget(&self, member: &MemberId, stale_before: Timestamp) -> StoreResult<bool> {
        let mut state = self.state();
        let stale = state.members.get(member).is_some_and(|t| *t < stale_before);
        if stale {
            state.members.remove(member);
        }
        Ok(stale)
    }

    async fn acquire(
        &self,
        seen: &ShardLease,
        by: &MemberId,
        expired_before: Timestamp,
    ) -> StoreResult<Taken> {
        let mut state = self.state();
        let now = Self::lease(&state, seen.shard);
        let as_seen = now.epoch == seen.epoch && now.holder == seen.holder;
        let takeable = now.holder.is_none() || now.stamp < expired_before;
        if !as_seen || !takeable {
            return Ok(Taken::Lost);
        }
        let epoch = seen.epoch + 1;
        self.write(&mut state, seen.shard, epoch, Some(by.clone()));
        Ok(Taken::Won { epoch })
    }

    async fn renew(&self, shard: Shard, epoch: u64, by: &MemberId) -> StoreResult<Kept> {
        let stamp = self.clock.now();
        // In place: the commonest call of a pool, every lease every tick.
        match self.state().leases.get_mut(&shard) {
            Some(lease) if lease.epoch == epoch && lease.is_held_by(by) => {
                lease.stamp = stamp;
                Ok(Kept::Done)
            }
            _ => Ok(Kept::NotHeld),
        }
    }

    async fn release(&self, shard: Shard, epoch: u64, by: &MemberId) -> StoreResult<Kept> {
        let mut state = self.state();
        let now = Self::lease(&state, shard);
        if now.epoch != epoch || !now.is_held_by(by) {
            return Ok(Kept::NotHeld);
        }
        self.write(&mut state, shard, epoch + 1, None);
        Ok(Kept::Done)
    }
}
