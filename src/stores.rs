//! The three stores a two-tier mutation touches, bundled, because the writer, converge and
//! every recovery worker need all three and must agree on which.

use std::sync::Arc;

use crate::changelog::Changelog;
use crate::clock::SharedClock;
use crate::hv::HvStore;
use crate::lt::LtStore;

#[derive(Debug, Clone)]
pub struct Stores {
    pub hv: Arc<dyn HvStore>,
    pub lt: Arc<dyn LtStore>,
    pub changelog: Arc<dyn Changelog>,
    /// The wall clock that stamps and judges changelog entries.
    pub clock: SharedClock,
}

impl Stores {
    /// Connects the three stores `config` names: Bigtable for HV and the changelog, GCS for
    /// LT. Fails, naming the store and target, when a table or bucket is missing.
    pub async fn connect(
        config: &crate::config::Config,
        clock: SharedClock,
    ) -> crate::error::StoreResult<Self> {
        let client = crate::bigtable::BigtableClient::connect(&config.bigtable).await?;
        let hv = crate::hv::BigtableHv::new(client.clone(), &config.bigtable.hv_table);
        let changelog = crate::changelog::BigtableChangelog::new(
            client,
            &config.bigtable.changelog_table,
            clock.clone(),
        );
        let lt = crate::lt::GcsLt::connect(&config.gcs).await?;
        Ok(Self {
            hv: Arc::new(hv),
            lt: Arc::new(lt),
            changelog: Arc::new(changelog),
            clock,
        })
    }
}

impl Stores {
    /// One cheap read from each store, so that a missing table or an unreachable service
    /// shows up at start (and in readiness) rather than on the first job.
    pub async fn check(&self) -> crate::error::StoreResult<()> {
        let probe = crate::model::ObjectPath::new("tiersweep-readiness-probe")
            .expect("a valid constant path");
        self.hv.read(&probe).await?;
        self.changelog.get(&crate::model::ChangeId::mint()).await?;
        self.lt
            .exists(&crate::model::Revision::mint(&probe))
            .await?;
        Ok(())
    }
}
