//! `tiersweep dlq`: the dead-letter subscription, listed by reason, replayed after a fix,
//! purged when old. Each works on a snapshot of the subscription (`SnapshotOptions` says how
//! one is taken); the connection is `PubsubQueue::connect_dead_letters`, which reads the
//! dead letters and publishes to the jobs topic.

use super::PubsubQueue;
use crate::Timestamp;
use crate::error::StoreResult;
use crate::queue::dead_letters as dl;

pub use dl::{Listing, ReasonCount, Settled, SnapshotOptions};

/// Counts the dead letters by reason; consumes nothing.
pub async fn list(dlq: &PubsubQueue, how: SnapshotOptions) -> StoreResult<Listing> {
    dl::list(dlq, how).await
}

/// Republishes to the jobs topic the dead letters whose reason contains `filter` (all
/// when empty), and acks exactly those once the publish has succeeded.
pub async fn replay(dlq: &PubsubQueue, filter: &str, how: SnapshotOptions) -> StoreResult<Settled> {
    dl::replay(dlq, dlq, filter, how).await
}

/// Acks (deletes) the dead letters published before `before`; leaves the rest.
pub async fn purge(
    dlq: &PubsubQueue,
    before: Timestamp,
    how: SnapshotOptions,
) -> StoreResult<Settled> {
    dl::purge(dlq, before, how).await
}
