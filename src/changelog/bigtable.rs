//! The changelog on Bigtable. The row key is the change id, whose hash-derived shard prefix
//! spreads writes over the key space (time-ordered keys would hot-spot one tablet) and gives
//! scanners disjoint key ranges. The liveness stamp is the timestamp of the `c:owner` cell
//! ([`layout`](crate::bigtable::layout)), so:
//!
//! * the staleness scan is one `ReadRows` over the shard range whose filter passes a row
//!   only when its owner cell is stamped before the cutoff, with `rows_limit`;
//! * heartbeat, claim and remove are each one `CheckAndMutateRow` conditioned on the owner
//!   cell's value (and, for the claim, its stamp).
//!
//! Liveness stamps are **the server's time** (timestamp −1: Bigtable assigns it, in
//! milliseconds), never the writer's: a writer whose clock runs an hour ahead would
//! otherwise hide its crash for an hour, and one running behind by more than the threshold
//! would have healthy writes taken over. Judges read the same clock through
//! [`Changelog::now`] (a server-stamped cell in a clock row outside every shard range).
//! The one exception is a claim's lease, a stamp in the future computed from that server
//! time. Each write deletes the family before setting cells, so the one-version GC rule,
//! which is applied lazily, never leaves an older stamp visible.

use std::ops::Bound;

use async_trait::async_trait;
use bigtable_rs::bigtable::RowCell;
use bigtable_rs::google::bigtable::v2::{RowRange, RowSet, row_range};

use super::{
    Changelog, ChangelogEntry, Claim, Deferral, Extension, Heartbeat, Removal, ScanPage,
    ScanRequest, ScannedRow,
};
use crate::bigtable::filter::{
    SERVER_TIME, block_all, chain, column, condition, delete_column, delete_family, delete_row,
    family, latest, set_cell, stamped_before, stamped_between, strip_value, value_is,
};
use crate::bigtable::layout::changelog::{CLOCK, CLOCK_ROW, FAMILY, OWNER, RECORD};
use crate::bigtable::{BigtableClient, Table, from_micros, micros};
use crate::clock::SharedClock;
use crate::error::{ErrorKind, StoreError, StoreKind, StoreResult};
use crate::model::{ChangeId, ChangeRecord, OwnerToken, Timestamp};

#[derive(Debug, Clone)]
/// The changelog on Bigtable: one row per change, stamps in the server's time.
pub struct BigtableChangelog {
    client: BigtableClient,
    table: Table,
    clock: SharedClock,
}

impl BigtableChangelog {
    /// The changelog kept in `table_id`; `clock` is the process's, for estimates only
    /// (stamps are the server's).
    pub fn new(client: BigtableClient, table_id: &str, clock: SharedClock) -> Self {
        let table = client.table(StoreKind::Changelog, table_id);
        Self {
            client,
            table,
            clock,
        }
    }

    /// Writes the whole row: record and owner, both stamped `stamp_micros` (a time, or
    /// [`SERVER_TIME`]).
    fn row_cells(
        record: &ChangeRecord,
        stamp_micros: i64,
    ) -> Vec<bigtable_rs::google::bigtable::v2::Mutation> {
        vec![
            delete_family(FAMILY),
            set_cell(FAMILY, RECORD, stamp_micros, record.encode()),
            set_cell(
                FAMILY,
                OWNER,
                stamp_micros,
                record.owner.as_str().as_bytes().to_vec(),
            ),
        ]
    }

    /// Plants a row whose record cell holds `record_bytes`, as a buggy or foreign writer
    /// might have left it.
    #[cfg(any(test, feature = "testing"))]
    pub async fn insert_raw(
        &self,
        key: &str,
        record_bytes: Vec<u8>,
        stamp: Timestamp,
    ) -> StoreResult<()> {
        let cells = vec![
            set_cell(FAMILY, RECORD, micros(stamp), record_bytes),
            set_cell(FAMILY, OWNER, micros(stamp), b"unknown".to_vec()),
        ];
        self.client
            .mutate_row(&self.table, key.as_bytes(), cells)
            .await
    }

    async fn read(&self, id: &ChangeId) -> StoreResult<Option<ChangelogEntry>> {
        let key = id.as_str().as_bytes();
        let cells = self.client.read_row(&self.table, key, whole_row()).await?;
        cells
            .map(|cells| {
                decode(key, cells).map_err(|reason| {
                    StoreError::new(
                        StoreKind::Changelog,
                        "decode",
                        self.table.target(key),
                        ErrorKind::Malformed,
                        reason,
                    )
                })
            })
            .transpose()
    }
}

/// The table's server time: re-stamps the clock row's cell (timestamp −1, the server's)
/// and reads it back. Two calls; how every judge of a stamp in this table reads the clock
/// the stamps are in.
pub(crate) async fn server_now(client: &BigtableClient, table: &Table) -> StoreResult<Timestamp> {
    let key = CLOCK_ROW.as_bytes();
    let tick = vec![
        delete_column(FAMILY, CLOCK),
        set_cell(FAMILY, CLOCK, SERVER_TIME, Vec::new()),
    ];
    client.mutate_row(table, key, tick).await?;
    let cells = client
        .read_row(table, key, chain(vec![column(FAMILY, CLOCK), latest()]))
        .await?;
    cells
        .and_then(|c| c.into_iter().next())
        .map(|cell| from_micros(cell.timestamp_micros))
        .ok_or_else(|| {
            StoreError::new(
                table.store,
                "now",
                table.target(key),
                ErrorKind::Transient,
                "the clock cell just written is not there",
            )
        })
}

fn whole_row() -> bigtable_rs::google::bigtable::v2::RowFilter {
    chain(vec![family(FAMILY), latest()])
}

/// Any owner cell: the row exists (a malformed row without one may be overwritten).
fn any_owner() -> bigtable_rs::google::bigtable::v2::RowFilter {
    chain(vec![column(FAMILY, OWNER), latest()])
}

/// The newest owner cell, if its value is `owner`.
fn owned_by(owner: &OwnerToken) -> bigtable_rs::google::bigtable::v2::RowFilter {
    chain(vec![
        column(FAMILY, OWNER),
        latest(),
        value_is(owner.as_str().as_bytes()),
    ])
}

fn decode(key: &[u8], cells: Vec<RowCell>) -> Result<ChangelogEntry, String> {
    let key = std::str::from_utf8(key).map_err(|_| "row key is not UTF-8".to_owned())?;
    let id = ChangeId::parse(key).map_err(|e| e.to_string())?;
    let (mut record, mut owner) = (None, None);
    for cell in cells {
        match cell.qualifier.as_slice() {
            RECORD => record = Some(cell.value),
            OWNER => owner = Some((cell.value, cell.timestamp_micros)),
            _ => {}
        }
    }
    let record = record.ok_or("no c:record cell")?;
    let (owner, stamp) = owner.ok_or("no c:owner cell")?;
    let record = ChangeRecord::decode(&record).map_err(|e| e.to_string())?;
    if owner != record.owner.as_str().as_bytes() {
        return Err(format!(
            "c:owner {:?} disagrees with the record's owner {}",
            String::from_utf8_lossy(&owner),
            record.owner
        ));
    }
    Ok(ChangelogEntry {
        id,
        record,
        stamp: from_micros(stamp),
    })
}

/// A row the scan's filter let through as its owner cell's stamp alone (not stale), or
/// `None` for one it let through whole.
fn waiting(key: &[u8], cells: &[RowCell], cutoff: Timestamp) -> Option<ScannedRow> {
    let [cell] = cells else { return None };
    let stamp = from_micros(cell.timestamp_micros);
    if cell.qualifier != OWNER || stamp < cutoff {
        return None;
    }
    let key = String::from_utf8_lossy(key);
    Some(match ChangeId::parse(&key) {
        Ok(id) => ScannedRow::Waiting {
            id,
            stamp,
            due_at: None,
        },
        Err(e) => ScannedRow::Malformed {
            key: key.into_owned(),
            reason: e.to_string(),
        },
    })
}

#[async_trait]
impl Changelog for BigtableChangelog {
    async fn record(&self, id: &ChangeId, record: &ChangeRecord) -> StoreResult<Timestamp> {
        let key = id.as_str().as_bytes();
        let cells = Self::row_cells(record, SERVER_TIME);
        // Written only where no owner cell is: an attempt that lands after an earlier one
        // (a retry after a lost response or a freeze) must not take the row back from a
        // recovery claim.
        let existed = self
            .client
            .check_and_mutate(&self.table, key, any_owner(), vec![], cells)
            .await?;
        if existed {
            let found = self.read(id).await?;
            return super::record_found(
                id,
                record,
                found.map(|e| e.record.owner),
                &self.table.target(key),
            )
            .map(|()| self.clock.now());
        }
        Ok(self.clock.now())
    }

    async fn now(&self) -> StoreResult<Timestamp> {
        server_now(&self.client, &self.table).await
    }

    async fn heartbeat(&self, id: &ChangeId, owner: &OwnerToken) -> StoreResult<Heartbeat> {
        let key = id.as_str().as_bytes();
        // Only the owner cell is re-stamped, with the server's time; its delete-then-set
        // keeps one version.
        let restamp = vec![
            delete_column(FAMILY, OWNER),
            set_cell(
                FAMILY,
                OWNER,
                SERVER_TIME,
                owner.as_str().as_bytes().to_vec(),
            ),
        ];
        let matched = self
            .client
            .check_and_mutate(&self.table, key, owned_by(owner), restamp, vec![])
            .await?;
        Ok(if matched {
            Heartbeat::Refreshed
        } else {
            Heartbeat::Refused
        })
    }

    async fn scan_stale(&self, req: &ScanRequest) -> StoreResult<ScanPage> {
        let ranges = req.key_ranges();
        if ranges.is_empty() {
            return Ok(ScanPage::default());
        }
        let rows = RowSet {
            row_keys: vec![],
            row_ranges: ranges
                .into_iter()
                .map(|r| RowRange {
                    start_key: Some(match r.start {
                        Bound::Excluded(k) => row_range::StartKey::StartKeyOpen(k.into_bytes()),
                        Bound::Included(k) => row_range::StartKey::StartKeyClosed(k.into_bytes()),
                        Bound::Unbounded => row_range::StartKey::StartKeyClosed(Vec::new()),
                    }),
                    end_key: r.end.map(|k| row_range::EndKey::EndKeyOpen(k.into_bytes())),
                })
                .collect(),
        };
        let from = req.stamped_from.map_or(0, micros);
        let stale = chain(vec![
            column(FAMILY, OWNER),
            latest(),
            stamped_between(from, micros(req.cutoff)),
        ]);
        let report_waiting = req.report_waiting && req.stamped_from.is_none();
        // Rows not stale come back as their owner cell's stamp alone, when asked for.
        let otherwise = if report_waiting {
            chain(vec![column(FAMILY, OWNER), latest(), strip_value()])
        } else {
            block_all()
        };
        let filter = condition(stale, whole_row(), otherwise);
        let found = self
            .client
            .read_rows(&self.table, rows, filter, req.limit)
            .await?;
        let mut page = ScanPage::default();
        if found.len() >= req.limit {
            page.resume_after = found
                .last()
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned());
        }
        for (key, cells) in found {
            if report_waiting && let Some(row) = waiting(&key, &cells, req.cutoff) {
                page.rows.push(row);
                continue;
            }
            match decode(&key, cells) {
                Ok(entry) if entry.record.due_at.is_none_or(|t| t <= req.now) => {
                    page.rows.push(ScannedRow::Entry(entry));
                }
                Ok(entry) => {
                    if report_waiting {
                        page.rows.push(ScannedRow::Waiting {
                            id: entry.id,
                            stamp: entry.stamp,
                            due_at: entry.record.due_at,
                        });
                    }
                }
                Err(reason) => page.rows.push(ScannedRow::Malformed {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason,
                }),
            }
        }
        Ok(page)
    }

    async fn claim(
        &self,
        seen: &ChangelogEntry,
        cutoff: Timestamp,
        claimer: &OwnerToken,
        lease_until: Timestamp,
    ) -> StoreResult<Claim> {
        let key = seen.id.as_str().as_bytes();
        let mut record = seen.record.clone();
        record.owner = claimer.clone();
        record.claims = record.claims.saturating_add(1);
        let still_stale = chain(vec![
            column(FAMILY, OWNER),
            latest(),
            value_is(seen.record.owner.as_str().as_bytes()),
            stamped_before(micros(cutoff)),
        ]);
        let matched = self
            .client
            .check_and_mutate(
                &self.table,
                key,
                still_stale,
                Self::row_cells(&record, micros(lease_until)),
                vec![],
            )
            .await?;
        if matched {
            return Ok(Claim::Won(ChangelogEntry {
                id: seen.id.clone(),
                record,
                stamp: lease_until,
            }));
        }
        // Refused: either someone else moved the row on, or this is a retry whose first
        // attempt landed. Claimer tokens are unique per claim, so the row tells which.
        Ok(match self.read(&seen.id).await? {
            Some(entry) if &entry.record.owner == claimer => Claim::Won(entry),
            _ => Claim::Lost,
        })
    }

    async fn get(&self, id: &ChangeId) -> StoreResult<Option<ChangelogEntry>> {
        self.read(id).await
    }

    async fn get_many(&self, ids: &[ChangeId]) -> StoreResult<Vec<Option<ChangelogEntry>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = RowSet {
            row_keys: ids
                .iter()
                .map(|id| id.as_str().as_bytes().to_vec())
                .collect(),
            row_ranges: vec![],
        };
        let found = self
            .client
            .read_rows(&self.table, rows, whole_row(), ids.len())
            .await?;
        let mut by_key: std::collections::HashMap<Vec<u8>, ChangelogEntry> =
            std::collections::HashMap::with_capacity(found.len());
        for (key, cells) in found {
            match decode(&key, cells) {
                Ok(entry) => {
                    by_key.insert(key, entry);
                }
                Err(reason) => tracing::warn!(row = %String::from_utf8_lossy(&key), %reason,
                    "malformed changelog row read back as missing"),
            }
        }
        Ok(ids
            .iter()
            .map(|id| by_key.get(id.as_str().as_bytes()).cloned())
            .collect())
    }

    async fn extend_claim(
        &self,
        id: &ChangeId,
        owner: &OwnerToken,
        until: Timestamp,
    ) -> StoreResult<Extension> {
        let key = id.as_str().as_bytes();
        let earlier = chain(vec![
            column(FAMILY, OWNER),
            latest(),
            value_is(owner.as_str().as_bytes()),
            stamped_before(micros(until)),
        ]);
        let restamp = vec![
            delete_column(FAMILY, OWNER),
            set_cell(
                FAMILY,
                OWNER,
                micros(until),
                owner.as_str().as_bytes().to_vec(),
            ),
        ];
        let matched = self
            .client
            .check_and_mutate(&self.table, key, earlier, restamp, vec![])
            .await?;
        Ok(if matched {
            Extension::Extended
        } else {
            Extension::Refused
        })
    }

    async fn defer(&self, id: &ChangeId, record: &ChangeRecord) -> StoreResult<Deferral> {
        let key = id.as_str().as_bytes();
        let matched = self
            .client
            .check_and_mutate(
                &self.table,
                key,
                owned_by(&record.owner),
                Self::row_cells(record, SERVER_TIME),
                vec![],
            )
            .await?;
        Ok(if matched {
            Deferral::Deferred
        } else {
            Deferral::NotOwned
        })
    }

    async fn remove_many(&self, ids: &[ChangeId]) -> StoreResult<()> {
        let rows = ids
            .iter()
            .map(|id| (id.as_str().as_bytes().to_vec(), vec![delete_row()]))
            .collect();
        self.client.mutate_rows(&self.table, rows).await
    }

    async fn remove(&self, id: &ChangeId, owner: &OwnerToken) -> StoreResult<Removal> {
        let key = id.as_str().as_bytes();
        let matched = self
            .client
            .check_and_mutate(
                &self.table,
                key,
                owned_by(owner),
                vec![delete_row()],
                vec![],
            )
            .await?;
        Ok(if matched {
            Removal::Removed
        } else {
            Removal::NotOwned
        })
    }
}
