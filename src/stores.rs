//! The three stores a two-tier mutation touches, bundled, because the writer, converge and
//! every recovery worker need all three and must agree on which.
//!
//! Each process connects only to what it uses and checks only that, with calls its
//! service account is granted (`infra/terraform/iam.tf`, the contract in [`crate::iam`]):
//! the scanner and `tiersweep status` open the changelog alone ([`connect_changelog`],
//! [`connect_scanner`] with the shard leases kept in its table);
//! cleaners, writers and the other operator views open all three ([`Stores::connect_to`]),
//! with the bucket access they need.

use std::sync::Arc;

use crate::bigtable::BigtableConfig;
use crate::changelog::{BigtableChangelog, Changelog};
use crate::clock::SharedClock;
use crate::error::StoreResult;
use crate::hv::{BigtableHv, HvStore};
use crate::lt::{GcsLt, LtAccess, LtStore};
use crate::model::{ChangeId, ObjectPath};

/// The three stores a writer and recovery work on, and the clock they judge time by. Cheap
/// to clone; wrappers (fault injection, metering) replace a field with a wrapped one.
///
/// The stores themselves are the protocol's internals, reached from outside only by the
/// test machinery (feature `testing`); a service works through [`TieredStorage`] and
/// [`EmbeddedRecovery`].
///
/// [`TieredStorage`]: crate::TieredStorage
/// [`EmbeddedRecovery`]: crate::EmbeddedRecovery
#[derive(Debug, Clone)]
pub struct Stores {
    /// The hot tier: object rows (inline values, tombstones).
    pub(crate) hv: Arc<dyn HvStore>,
    /// The large-object tier: revision blobs.
    pub(crate) lt: Arc<dyn LtStore>,
    /// The write-ahead changelog.
    pub(crate) changelog: Arc<dyn Changelog>,
    /// The wall clock that stamps and judges changelog entries.
    pub(crate) clock: SharedClock,
}

impl Stores {
    /// The wall clock that stamps and judges changelog entries.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The hot tier: object rows (inline values, tombstones).
    #[cfg(any(test, feature = "testing"))]
    pub fn hv(&self) -> &Arc<dyn HvStore> {
        &self.hv
    }

    /// The large-object tier: revision blobs.
    #[cfg(any(test, feature = "testing"))]
    pub fn lt(&self) -> &Arc<dyn LtStore> {
        &self.lt
    }

    /// The write-ahead changelog.
    #[cfg(any(test, feature = "testing"))]
    pub fn changelog(&self) -> &Arc<dyn Changelog> {
        &self.changelog
    }

    /// Stores from their parts (the test machinery's fixtures and wrappers).
    #[cfg(any(test, feature = "testing"))]
    pub fn from_parts(
        hv: Arc<dyn HvStore>,
        lt: Arc<dyn LtStore>,
        changelog: Arc<dyn Changelog>,
        clock: SharedClock,
    ) -> Self {
        Self {
            hv,
            lt,
            changelog,
            clock,
        }
    }

    /// The same stores judging time by another clock (a skewed one).
    #[cfg(any(test, feature = "testing"))]
    pub fn with_clock(self, clock: SharedClock) -> Self {
        Self { clock, ..self }
    }

    /// The same stores with another HV store (a wrapped one).
    #[cfg(any(test, feature = "testing"))]
    pub fn with_hv(self, hv: Arc<dyn HvStore>) -> Self {
        Self { hv, ..self }
    }

    /// The same stores with another changelog (the no-op one, a wrapped one).
    #[cfg(any(test, feature = "testing"))]
    pub fn with_changelog(self, changelog: Arc<dyn Changelog>) -> Self {
        Self { changelog, ..self }
    }

    /// The three in-memory twins on one clock: for an embedder's tests, local development
    /// and single-process use. They keep the real stores' semantics (conditional writes,
    /// fences, create-only uploads), not their durability.
    pub fn in_memory(clock: SharedClock) -> Self {
        Self {
            hv: Arc::new(crate::hv::MemoryHv::new()),
            lt: Arc::new(crate::lt::MemoryLt::with_clock(clock.clone())),
            changelog: Arc::new(crate::changelog::MemoryChangelog::new(clock.clone())),
            clock,
        }
    }

    /// Connects the three stores, Bigtable for HV and the changelog, GCS for LT, and
    /// checks each: one probe read of each table, and the bucket's existence and the
    /// permissions `access` needs. Fails, naming the store and target, when a table or
    /// bucket is missing or a grant is.
    pub async fn connect_to(
        bigtable: &BigtableConfig,
        gcs: &crate::lt::gcs::GcsConfig,
        clock: SharedClock,
        access: LtAccess,
    ) -> StoreResult<Self> {
        let client = crate::bigtable::BigtableClient::connect(bigtable).await?;
        let hv = BigtableHv::new(client.clone(), &bigtable.hv_table);
        hv.read(&probe_path()).await?;
        let changelog = BigtableChangelog::new(client, &bigtable.changelog_table, clock.clone());
        changelog.get(&ChangeId::mint()).await?;
        let lt = GcsLt::connect(gcs, access).await?;
        Ok(Self {
            hv: Arc::new(hv),
            lt: Arc::new(lt),
            changelog: Arc::new(changelog),
            clock,
        })
    }
}

/// Connects the changelog alone and checks its table with one probe read: all that the
/// scanner and `tiersweep status` use.
pub async fn connect_changelog(
    bigtable: &BigtableConfig,
    clock: SharedClock,
) -> StoreResult<Arc<dyn Changelog>> {
    let client = crate::bigtable::BigtableClient::connect(bigtable).await?;
    let changelog = BigtableChangelog::new(client, &bigtable.changelog_table, clock);
    changelog.get(&ChangeId::mint()).await?;
    Ok(Arc::new(changelog))
}

/// What a scanner under shard leases uses: the changelog and the leases kept in its table,
/// on one connection; the table checked with one probe read.
pub async fn connect_scanner(
    bigtable: &BigtableConfig,
    clock: SharedClock,
) -> StoreResult<(Arc<dyn Changelog>, Arc<dyn crate::shard_lease::ShardLeases>)> {
    let client = crate::bigtable::BigtableClient::connect(bigtable).await?;
    let table = &bigtable.changelog_table;
    let changelog = BigtableChangelog::new(client.clone(), table, clock);
    changelog.get(&ChangeId::mint()).await?;
    let leases = crate::shard_lease::BigtableShardLeases::new(client, table);
    Ok((Arc::new(changelog), Arc::new(leases)))
}

fn probe_path() -> ObjectPath {
    ObjectPath::new("tiersweep-readiness-probe").expect("a valid constant path")
}
