//! Scanner and cleaner pools inside one process, for the demo and the benchmarks. In
//! production each worker is its own process (`tiersweep scan` / `clean`); this is the same
//! wiring with the pool members as tasks.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Cleaner, RecoveryConfig, Scanner};
use crate::model::ShardRange;
use crate::queue::JobQueue;
use crate::stores::Stores;

/// The shape of a worker pool run in one process (the demo, the bench, tests).
#[derive(Debug, Clone, Copy)]
pub struct Pools {
    /// How many scanners.
    pub scanners: u16,
    /// Scanners split the shards between them in equal fixed ranges, as a deployment's
    /// shard leases come to; without the split every scanner scans every shard (and they race).
    pub split: bool,
    /// How many cleaners.
    pub cleaners: usize,
    /// How long a cancelled cleaner waits for its in-flight jobs.
    pub drain: Duration,
}

/// Spawns the pools on `tracker`; they run until `cancel`.
pub fn spawn(
    tracker: &TaskTracker,
    cancel: &CancellationToken,
    stores: &Stores,
    queue: &Arc<dyn JobQueue>,
    config: &RecoveryConfig,
    pools: Pools,
) {
    for i in 0..pools.scanners {
        let shards = if pools.split {
            ShardRange::for_member(i, pools.scanners).unwrap_or(ShardRange::ALL)
        } else {
            ShardRange::ALL
        };
        let scanner = Scanner::new(
            stores.changelog.clone(),
            queue.clone(),
            config.clone(),
            shards,
        );
        tracker.spawn(scanner.run(cancel.clone()));
    }
    for _ in 0..pools.cleaners {
        let cleaner = Cleaner::new(stores.clone(), queue.clone(), config.clone());
        tracker.spawn(cleaner.run(cancel.clone(), pools.drain));
    }
}
