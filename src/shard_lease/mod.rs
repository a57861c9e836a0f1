//! Shard leases: how a pool of scanners shares the changelog's shards with no configured
//! membership, so that it can grow, shrink and lose members without a restart.
//!
//! Each shard has one lease row, and each scanner process (a [`MemberId`], fresh per
//! start) a member row it re-stamps while it runs. A lease names its holder and an
//! **epoch** that grows by one at every change of holder; every write to a lease is one
//! compare-and-set on exactly the (epoch, holder) its writer last read:
//!
//! * [`acquire`](ShardLeases::acquire) takes a lease that is free, or whose holder stopped
//!   renewing it (stamped before `expired_before`), moving it to the next epoch;
//! * [`renew`](ShardLeases::renew) re-stamps a lease its holder still holds at its epoch;
//! * [`release`](ShardLeases::release) frees one, moving it to the next epoch.
//!
//! So a renewal that lands late, after another member took the lease, is refused (the
//! epoch moved); one that lands before the takeover refreshes the stamp and the takeover is
//! refused instead. Stamps are the store's time, as the changelog's are.
//!
//! **What leases are for, and what not.** They decide who *reads* which shards: a pool
//! scans each row about once, and a dead scanner's shards are read again within one lease
//! period. They do not carry safety: a claim is a compare-and-set on the row itself, so two
//! scanners that both believe they own a shard (one frozen past its lease, say) cost a
//! duplicate read and a lost claim, never a row claimed twice. The invariants I1–I5 hold
//! with any assignment of shards, including none and all-to-everyone
//! ([`crate::recovery::membership`] says how holders stop in time).

pub mod bigtable;
#[cfg(any(test, feature = "testing"))]
pub mod memory;

use async_trait::async_trait;

use crate::error::StoreResult;
use crate::model::{ModelError, Shard, Timestamp};

pub use bigtable::BigtableShardLeases;
#[cfg(any(test, feature = "testing"))]
pub use memory::MemoryShardLeases;

/// One scanner process, for its life. A restarted process is a new member: its
/// predecessor's leases are released on a clean stop and expire otherwise.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(String);

impl MemberId {
    const MAX_LEN: usize = 120;

    /// `name` (a pod name, say) with a fresh suffix, so that two starts never share an id.
    pub fn fresh(name: &str) -> Result<Self, ModelError> {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Self::parse(&format!("{name}-{}", &suffix[..8]))
    }

    /// An id as a lease row stores it: 1 to 120 of `a-z A-Z 0-9 - _ .`.
    pub fn parse(id: &str) -> Result<Self, ModelError> {
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if id.is_empty() || id.len() > Self::MAX_LEN || !id.chars().all(valid) {
            return Err(ModelError::new(
                "member id",
                id,
                "must be 1-120 characters of a-z, A-Z, 0-9, '-', '_' or '.'",
            ));
        }
        Ok(Self(id.to_owned()))
    }

    /// The id as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A shard's lease as read. A lease never written reads as epoch 0, free, stamped 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLease {
    /// The shard leased.
    pub shard: Shard,
    /// Grows by one at every change of holder.
    pub epoch: u64,
    /// Who holds it; `None` when free.
    pub holder: Option<MemberId>,
    /// When it was last acquired, renewed or released (the store's time).
    pub stamp: Timestamp,
}

impl ShardLease {
    /// How a lease never written reads: epoch 0, free, stamped 0.
    pub fn unwritten(shard: Shard) -> Self {
        Self {
            shard,
            epoch: 0,
            holder: None,
            stamp: Timestamp(0),
        }
    }

    /// The stored form of (epoch, holder): `{epoch}/{holder}`, `{epoch}/` when free. The
    /// compare-and-sets compare it whole.
    pub(crate) fn encode_value(epoch: u64, holder: Option<&MemberId>) -> String {
        format!("{epoch}/{}", holder.map_or("", MemberId::as_str))
    }

    pub(crate) fn decode_value(
        shard: Shard,
        value: &[u8],
        stamp: Timestamp,
    ) -> Result<Self, String> {
        let text = std::str::from_utf8(value).map_err(|_| "lease value is not UTF-8")?;
        let (epoch, holder) = text
            .split_once('/')
            .ok_or_else(|| format!("lease value {text:?} is not '{{epoch}}/{{holder}}'"))?;
        let epoch = epoch
            .parse()
            .map_err(|_| format!("lease epoch {epoch:?} is not a number"))?;
        let holder = match holder {
            "" => None,
            h => Some(MemberId::parse(h).map_err(|e| e.to_string())?),
        };
        Ok(Self {
            shard,
            epoch,
            holder,
            stamp,
        })
    }

    /// Held by `member`.
    pub fn is_held_by(&self, member: &MemberId) -> bool {
        self.holder.as_ref() == Some(member)
    }
}

/// A member as its row was read: when it last announced itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member.
    pub id: MemberId,
    /// Its last announcement (the store's time).
    pub stamp: Timestamp,
}

/// Every lease and member, read at once, with the store's time of the read.
#[derive(Debug, Clone)]
pub struct ShardLeaseTable {
    /// The store's time of the read.
    pub now: Timestamp,
    /// One per shard, in shard order ([`ShardLease::unwritten`] for those never written).
    pub leases: Vec<ShardLease>,
    /// Every member row read.
    pub members: Vec<Member>,
    /// Lease rows that did not decode, reported (key, reason) and left alone: their shards
    /// are nobody's until an operator looks, and that is visible in the logs and metrics.
    pub malformed: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// How an acquisition ended.
pub enum Taken {
    /// The lease is the caller's, at this epoch.
    Won {
        /// The epoch the caller now holds it at.
        epoch: u64,
    },
    /// It was not as the caller read it: renewed, taken or released since.
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// How a renewal or release ended.
pub enum Kept {
    /// Renewed (or released) as asked.
    Done,
    /// The caller no longer held it at that epoch.
    NotHeld,
}

#[async_trait]
/// Shard leases and members (see the module documentation). Bigtable and memory implement
/// it; one conformance suite runs on both.
pub trait ShardLeases: Send + Sync + std::fmt::Debug {
    /// Every lease and member, and the store's time (which costs a write: the clock row's
    /// re-stamp).
    async fn read(&self) -> StoreResult<ShardLeaseTable>;

    /// Every lease and member, judged at `now` (a caller's clock): reads only, for views
    /// whose role may not write (`tiersweep status`).
    async fn read_at(&self, now: Timestamp) -> StoreResult<ShardLeaseTable>;

    /// Stamps `member`'s row now: it is alive. Members count towards the pool's size from
    /// their first announcement until they [`depart`](ShardLeases::depart) or stop announcing.
    async fn announce(&self, member: &MemberId) -> StoreResult<()>;

    /// Deletes `member`'s row (a clean stop).
    async fn depart(&self, member: &MemberId) -> StoreResult<()>;

    /// Deletes `member`'s row if it was last stamped before `stale_before` (a member that
    /// died without departing, long ago). False if it was not.
    async fn forget(&self, member: &MemberId, stale_before: Timestamp) -> StoreResult<bool>;

    /// Takes `seen` for `by` if the lease is still exactly as seen and free, or held but
    /// stamped before `expired_before`; the lease moves to the next epoch.
    async fn acquire(
        &self,
        seen: &ShardLease,
        by: &MemberId,
        expired_before: Timestamp,
    ) -> StoreResult<Taken>;

    /// Re-stamps `shard`'s lease now if `by` holds it at `epoch`.
    async fn renew(&self, shard: Shard, epoch: u64, by: &MemberId) -> StoreResult<Kept>;

    /// Frees `shard`'s lease (next epoch) if `by` holds it at `epoch`.
    async fn release(&self, shard: Shard, epoch: u64, by: &MemberId) -> StoreResult<Kept>;
}
