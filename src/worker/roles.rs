//! `tiersweep scan` and `tiersweep clean` behind two calls each: connect what the role's
//! service account is granted, then run until cancelled. The scanner, cleaner and lease
//! keeper stay private, with the step-by-step methods the tests drive.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Config;
use crate::changelog::Changelog;
use crate::clock;
use crate::error::StoreResult;
use crate::lt::LtAccess;
use crate::model::{ModelError, ShardSet};
use crate::queue::PubsubQueue;
use crate::recovery::{Cleaner, LeaseKeeper, Scanner};
use crate::shard_lease::{MemberId, ShardLeases};
use crate::stores::Stores;

/// Why a worker stopped other than by being cancelled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The scanner's member name (worker.member_name, or HOSTNAME) is not a valid one.
    #[error("member name {name:?} (worker.member_name or HOSTNAME): {source}")]
    MemberName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        source: ModelError,
    },
    /// The lease keeper's task ended abnormally (a panic): its leases expire on their own.
    #[error("the lease keeper task: {0}")]
    LeaseKeeper(String),
}

/// What `tiersweep scan` uses, connected and checked: the changelog table (its rows and
/// the shard leases kept in it, one connection) and the jobs topic — nothing more, which
/// is all the scanner's service account is granted.
#[derive(Clone)]
pub struct ScannerConnections {
    changelog: Arc<dyn Changelog>,
    leases: Arc<dyn ShardLeases>,
    queue: Arc<PubsubQueue>,
}

impl ScannerConnections {
    /// Connects, checking the table with one probe read and the topic with one lookup.
    pub async fn connect(config: &Config) -> StoreResult<Self> {
        let (changelog, leases) =
            crate::stores::connect_scanner(&config.bigtable, clock::system()).await?;
        let queue = PubsubQueue::connect_publisher(&config.pubsub).await?;
        Ok(Self {
            changelog,
            leases,
            queue: Arc::new(queue),
        })
    }
}

/// Scans until `cancel` the shards this member's shard leases hold (taken, renewed and
/// released by a lease keeper beside the scanner). Returns once the last page is done and
/// every lease is released.
pub async fn scan(
    connections: ScannerConnections,
    config: &Config,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    let ScannerConnections {
        changelog,
        leases,
        queue,
    } = connections;
    let recovery = config.recovery();
    let name = config
        .worker
        .member_name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "scanner".to_owned());
    let me = MemberId::fresh(&name).map_err(|source| WorkerError::MemberName { name, source })?;
    let period = config.worker.lease_period;
    tracing::info!(member = %me, lease_period = ?period,
        "scanning the shards this member's leases hold");
    let (keeper, assignment) = LeaseKeeper::new(leases, me.clone(), period);
    // The keeper releases every lease once stopped, after the scanner's last page.
    let keeper_stop = CancellationToken::new();
    let keeper = tokio::spawn(keeper.run(keeper_stop.clone()));
    Scanner::new(changelog, queue, recovery, ShardSet::EMPTY)
        .with_label(me.to_string())
        .run_leased(assignment, cancel)
        .await;
    keeper_stop.cancel();
    keeper
        .await
        .map_err(|e| WorkerError::LeaseKeeper(e.to_string()))?;
    Ok(())
}

/// What `tiersweep clean` uses, connected and checked: both tables, get and delete on the
/// bucket, the jobs subscription and the dead-letter topic.
#[derive(Clone)]
pub struct CleanerConnections {
    stores: Stores,
    queue: Arc<PubsubQueue>,
}

impl CleanerConnections {
    /// Connects, checking each resource the cleaner uses.
    pub async fn connect(config: &Config) -> StoreResult<Self> {
        let stores = Stores::connect_to(
            &config.bigtable,
            &config.gcs,
            clock::system(),
            LtAccess::Clean,
        )
        .await?;
        let queue = PubsubQueue::connect(&config.pubsub).await?;
        Ok(Self {
            stores,
            queue: Arc::new(queue),
        })
    }

    /// After how many deliveries the subscription dead-letters a job, if it has a policy:
    /// it must agree with `recovery.max_delivery_attempts`, or jobs reach the dead-letter
    /// topic without the cleaner's reason (or later than needed).
    pub fn max_delivery_attempts(&self) -> Option<u32> {
        self.queue.max_delivery_attempts()
    }
}

/// Cleans until `cancel`, then lets in-flight jobs finish for up to
/// `worker.shutdown_deadline`.
pub async fn clean(connections: CleanerConnections, config: &Config, cancel: CancellationToken) {
    tracing::info!(subscription = %config.pubsub.subscription,
        concurrency = config.recovery.cleaner_concurrency, "cleaning");
    Cleaner::new(connections.stores, connections.queue, config.recovery())
        .run(cancel, config.worker.shutdown_deadline)
        .await;
}
