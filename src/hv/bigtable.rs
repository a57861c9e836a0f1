//! The HV store on Bigtable. Every write is one `CheckAndMutateRow` whose predicate states
//! what the row must hold now *and* that the change is not fenced there; the layout is in
//! [`crate::bigtable::layout`].
//!
//! Bigtable predicates can only say "some cell passes this filter", so the two shapes of
//! [`Expected`] are phrased from opposite sides:
//!
//! * `NoTombstone`: the predicate matches a tombstone **or** the change's fence, and the write
//!   goes in the *unmatched* branch. This also covers a row that does not exist yet.
//! * `Tombstone(rev)`: the predicate is "if the change is fenced, nothing; else the tombstone
//!   cell equal to `rev`", and the write goes in the *matched* branch.
//!
//! When the predicate refuses, one read tells a lost-response retry (the row already holds
//! the target, or carries this change's `applied` fence) from a conflict or a fence, by the
//! shared rule [`outcome_of_refused`](super::outcome_of_refused).

use async_trait::async_trait;
use bigtable_rs::bigtable::RowCell;
use bytes::Bytes;

use super::{CasOutcome, Expected, Fence, HvStore, HvWrite};
use crate::bigtable::filter::{
    SERVER_TIME, block_all, chain, column, condition, delete_family, family, interleave, latest,
    set_cell, value_is,
};
use crate::bigtable::layout::hv::{
    APPLIED, DATA, FENCES, INLINE, RECOVERY, RECOVERY_FENCES, TOMBSTONE,
};
use crate::bigtable::{BigtableClient, Table};
use crate::error::{ErrorKind, StoreError, StoreKind, StoreResult};
use crate::model::{ChangeId, HvValue, ObjectPath, Revision};

#[derive(Debug, Clone)]
pub struct BigtableHv {
    client: BigtableClient,
    table: Table,
}

impl BigtableHv {
    pub fn new(client: BigtableClient, table_id: &str) -> Self {
        let table = client.table(StoreKind::Hv, table_id);
        Self { client, table }
    }

    /// The row's value and the fence `change` has there, in one read.
    async fn state(
        &self,
        path: &ObjectPath,
        change: Option<&ChangeId>,
    ) -> StoreResult<(Option<HvValue>, Option<Fence>)> {
        let key = path.as_str().as_bytes();
        let data = chain(vec![family(DATA), latest()]);
        let filter = match change {
            Some(c) => interleave(vec![data, fenced_for(c)]),
            None => data,
        };
        let cells = self.client.read_row(&self.table, key, filter).await?;
        self.decode(key, cells.unwrap_or_default())
    }

    fn decode(
        &self,
        key: &[u8],
        cells: Vec<RowCell>,
    ) -> StoreResult<(Option<HvValue>, Option<Fence>)> {
        let malformed = |reason: String| {
            StoreError::new(
                StoreKind::Hv,
                "decode",
                self.table.target(key),
                ErrorKind::Malformed,
                reason,
            )
        };
        let (mut value, mut fence) = (None, None);
        for cell in cells {
            match (cell.family_name.as_str(), cell.qualifier.as_slice()) {
                (DATA, INLINE) if value.is_none() => {
                    value = Some(HvValue::Inline(Bytes::from(cell.value)));
                }
                (DATA, TOMBSTONE) if value.is_none() => {
                    let name = String::from_utf8(cell.value)
                        .map_err(|_| malformed("tombstone is not UTF-8".into()))?;
                    let rev =
                        Revision::parse(name).map_err(|e| malformed(format!("tombstone: {e}")))?;
                    value = Some(HvValue::Tombstone(rev));
                }
                (DATA, _) => {
                    return Err(malformed(
                        "row holds more than one of v:inline and v:tombstone".into(),
                    ));
                }
                (FENCES, _) if cell.value == APPLIED => fence = Some(Fence::Applied),
                (RECOVERY_FENCES, _) if cell.value == RECOVERY => {
                    // Applied wins: the change's write did land.
                    fence = fence.or(Some(Fence::Recovery));
                }
                (FENCES | RECOVERY_FENCES, _) => {
                    return Err(malformed(format!(
                        "fence cell {}:{} holds {:?}",
                        cell.family_name,
                        String::from_utf8_lossy(&cell.qualifier),
                        String::from_utf8_lossy(&cell.value)
                    )));
                }
                _ => {}
            }
        }
        Ok((value, fence))
    }
}

/// The cells that fence `change` on a row, of either kind: a predicate that matches them
/// says "this change may not write here".
fn fenced_for(change: &ChangeId) -> bigtable_rs::google::bigtable::v2::RowFilter {
    let q = change.as_str().as_bytes();
    interleave(vec![
        chain(vec![column(FENCES, q), latest()]),
        chain(vec![column(RECOVERY_FENCES, q), latest()]),
    ])
}

fn mutations(
    write: &HvWrite,
    change: Option<&ChangeId>,
) -> Vec<bigtable_rs::google::bigtable::v2::Mutation> {
    let mut m = vec![delete_family(DATA)];
    match write {
        HvWrite::Inline(bytes) => m.push(set_cell(DATA, INLINE, SERVER_TIME, bytes.to_vec())),
        HvWrite::Tombstone(rev) => {
            m.push(set_cell(
                DATA,
                TOMBSTONE,
                SERVER_TIME,
                rev.as_str().as_bytes().to_vec(),
            ));
        }
        HvWrite::Delete => {}
    }
    if let Some(c) = change {
        m.push(set_cell(
            FENCES,
            c.as_str().as_bytes(),
            SERVER_TIME,
            APPLIED.to_vec(),
        ));
    }
    m
}

#[async_trait]
impl HvStore for BigtableHv {
    async fn read(&self, path: &ObjectPath) -> StoreResult<Option<HvValue>> {
        Ok(self.state(path, None).await?.0)
    }

    async fn compare_and_write(
        &self,
        path: &ObjectPath,
        expected: &Expected,
        write: &HvWrite,
        change: Option<&ChangeId>,
    ) -> StoreResult<CasOutcome> {
        let key = path.as_str().as_bytes();
        let tombstone = || chain(vec![column(DATA, TOMBSTONE), latest()]);
        let fenced = change.map(fenced_for);
        let writes = mutations(write, change);
        let applied = match expected {
            Expected::NoTombstone => {
                let predicate = match fenced {
                    Some(f) => interleave(vec![tombstone(), f]),
                    None => tombstone(),
                };
                let matched = self
                    .client
                    .check_and_mutate(&self.table, key, predicate, vec![], writes)
                    .await?;
                !matched
            }
            Expected::Tombstone(rev) => {
                let holds_rev = chain(vec![tombstone(), value_is(rev.as_str().as_bytes())]);
                let predicate = match fenced {
                    Some(f) => condition(f, block_all(), holds_rev),
                    None => holds_rev,
                };
                self.client
                    .check_and_mutate(&self.table, key, predicate, writes, vec![])
                    .await?
            }
        };
        if applied {
            return Ok(CasOutcome::Applied);
        }
        let (current, fence) = self.state(path, change).await?;
        Ok(super::outcome_of_refused(write, current.as_ref(), fence))
    }

    async fn fence(&self, path: &ObjectPath, change: &ChangeId) -> StoreResult<Option<HvValue>> {
        let key = path.as_str().as_bytes();
        let fence = set_cell(
            RECOVERY_FENCES,
            change.as_str().as_bytes(),
            SERVER_TIME,
            RECOVERY.to_vec(),
        );
        self.client
            .mutate_row(&self.table, key, vec![fence])
            .await?;
        self.read(path).await
    }
}
