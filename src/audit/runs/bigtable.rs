//! Audit runs on Bigtable, in the changelog table: one row per run, `!audit/{run}`, outside
//! every shard ([`layout`](crate::bigtable::layout)). Creating a run and finishing a range
//! are each one `CheckAndMutateRow` on the run cell's presence, so a run is never
//! overwritten and a finish never creates a run.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{AuditRun, AuditRuns, RunState};
use crate::audit::RangeSummary;
use crate::bigtable::filter::{SERVER_TIME, chain, column, family, latest, set_cell};
use crate::bigtable::layout::changelog::{AUDIT_DONE, AUDIT_PREFIX, AUDIT_RUN, FAMILY};
use crate::bigtable::{BigtableClient, Table};
use crate::error::{ErrorKind, StoreError, StoreKind, StoreResult};

/// Audit runs kept in the changelog table.
#[derive(Debug, Clone)]
pub struct BigtableRuns {
    client: BigtableClient,
    table: Table,
}

impl BigtableRuns {
    /// The runs kept in `changelog_table`.
    pub(crate) fn new(client: BigtableClient, changelog_table: &str) -> Self {
        let table = client.table(StoreKind::AuditRuns, changelog_table);
        Self { client, table }
    }

    /// Connects to the runs kept in the changelog table `config` names, and checks the
    /// table with one probe read of a run that does not exist.
    pub async fn connect(config: &crate::bigtable::BigtableConfig) -> StoreResult<Self> {
        let client = BigtableClient::connect(config).await?;
        let runs = Self::new(client, &config.changelog_table);
        runs.get(&uuid::Uuid::nil().to_string()).await?;
        Ok(runs)
    }

    fn key(id: &str) -> Vec<u8> {
        format!("{AUDIT_PREFIX}{id}").into_bytes()
    }

    fn malformed(&self, id: &str, reason: String) -> StoreError {
        StoreError::new(
            StoreKind::AuditRuns,
            "read",
            self.table.target(&Self::key(id)),
            ErrorKind::Permanent,
            reason,
        )
    }
}

#[async_trait]
impl AuditRuns for BigtableRuns {
    async fn create(&self, run: &AuditRun) -> StoreResult<bool> {
        let value = serde_json::to_vec(run).map_err(|e| self.malformed(&run.run, e.to_string()))?;
        let existed = self
            .client
            .check_and_mutate(
                &self.table,
                &Self::key(&run.run),
                chain(vec![column(FAMILY, AUDIT_RUN), latest()]),
                vec![],
                vec![set_cell(FAMILY, AUDIT_RUN, SERVER_TIME, value)],
            )
            .await?;
        Ok(!existed)
    }

    async fn get(&self, id: &str) -> StoreResult<Option<RunState>> {
        let Some(cells) = self
            .client
            .read_row(
                &self.table,
                &Self::key(id),
                chain(vec![family(FAMILY), latest()]),
            )
            .await?
        else {
            return Ok(None);
        };
        let mut run = None;
        let mut done = BTreeMap::new();
        for cell in cells {
            let qualifier = String::from_utf8_lossy(&cell.qualifier);
            if cell.qualifier == AUDIT_RUN {
                let decoded: AuditRun = serde_json::from_slice(&cell.value).map_err(|e| {
                    self.malformed(id, format!("the run record does not decode: {e}"))
                })?;
                run = Some(decoded);
            } else if let Some(index) = qualifier.strip_prefix(AUDIT_DONE) {
                let index: usize = index
                    .parse()
                    .map_err(|_| self.malformed(id, format!("column {qualifier} is no range")))?;
                let summary: RangeSummary = serde_json::from_slice(&cell.value).map_err(|e| {
                    self.malformed(id, format!("range {index}'s summary does not decode: {e}"))
                })?;
                done.insert(index, summary);
            }
        }
        match run {
            Some(run) if run.run == id => Ok(Some(RunState { run, done })),
            Some(run) => Err(self.malformed(id, format!("the record names run {}", run.run))),
            None => Ok(None),
        }
    }

    async fn finish_range(
        &self,
        id: &str,
        index: usize,
        summary: &RangeSummary,
    ) -> StoreResult<()> {
        let value = serde_json::to_vec(summary).map_err(|e| self.malformed(id, e.to_string()))?;
        let qualifier = format!("{AUDIT_DONE}{index}");
        self.client
            .check_and_mutate(
                &self.table,
                &Self::key(id),
                chain(vec![column(FAMILY, AUDIT_RUN), latest()]),
                vec![set_cell(FAMILY, qualifier.as_bytes(), SERVER_TIME, value)],
                vec![],
            )
            .await?;
        Ok(())
    }
}
