//! Leases on Bigtable, in the changelog table (rows outside every shard: see
//! [`layout`](crate::bigtable::layout)), so the scanners need no grant beyond the table they
//! already scan. Each lease write is one `CheckAndMutateRow` whose predicate compares the
//! lease cell's whole value, `{epoch}/{holder}`, and for a takeover also its stamp; stamps
//! are the server's time.

use async_trait::async_trait;
use bigtable_rs::google::bigtable::v2::{RowFilter, RowRange, RowSet, row_range};

use super::{Kept, ShardLease, ShardLeaseTable, ShardLeases, Member, MemberId, Taken};
use crate::bigtable::filter::{
    SERVER_TIME, chain, column, delete_column, delete_row, latest, set_cell, stamped_before,
    value_is,
};
use crate::bigtable::layout::changelog::{FAMILY, LEASE, LEASE_PREFIX, MEMBER, MEMBER_PREFIX};
use crate::bigtable::{BigtableClient, Table, from_micros, micros};
use crate::changelog::bigtable::server_now;
use crate::error::{StoreKind, StoreResult};
use crate::model::{SHARD_COUNT, Shard, Timestamp};

#[derive(Debug, Clone)]
/// Leases and members on Bigtable, in the changelog table.
pub struct BigtableShardLeases {
    client: BigtableClient,
    table: Table,
}

impl BigtableShardLeases {
    /// The leases kept in `changelog_table`.
    pub fn new(client: BigtableClient, changelog_table: &str) -> Self {
        let table = client.table(StoreKind::ShardLeases, changelog_table);
        Self { client, table }
    }

    fn lease_key(shard: Shard) -> Vec<u8> {
        format!("{LEASE_PREFIX}{shard}").into_bytes()
    }

    fn member_key(member: &MemberId) -> Vec<u8> {
        format!("{MEMBER_PREFIX}{member}").into_bytes()
    }

    /// The lease cell, if its value is exactly (epoch, holder).
    fn lease_is(epoch: u64, holder: Option<&MemberId>) -> RowFilter {
        chain(vec![
            column(FAMILY, LEASE),
            latest(),
            value_is(ShardLease::encode_value(epoch, holder).as_bytes()),
        ])
    }

    fn write_lease(
        epoch: u64,
        holder: Option<&MemberId>,
    ) -> Vec<bigtable_rs::google::bigtable::v2::Mutation> {
        vec![
            delete_column(FAMILY, LEASE),
            set_cell(
                FAMILY,
                LEASE,
                SERVER_TIME,
                ShardLease::encode_value(epoch, holder).into_bytes(),
            ),
        ]
    }

    /// Applies `write` to `shard`'s lease if `by` holds it at `epoch`.
    async fn if_held(
        &self,
        shard: Shard,
        epoch: u64,
        by: &MemberId,
        write: Vec<bigtable_rs::google::bigtable::v2::Mutation>,
    ) -> StoreResult<Kept> {
        let matched = self
            .client
            .check_and_mutate(
                &self.table,
                &Self::lease_key(shard),
                Self::lease_is(epoch, Some(by)),
                write,
                vec![],
            )
            .await?;
        Ok(if matched { Kept::Done } else { Kept::NotHeld })
    }

    async fn read_lease(&self, shard: Shard) -> StoreResult<Option<ShardLease>> {
        let key = Self::lease_key(shard);
        let cells = self
            .client
            .read_row(
                &self.table,
                &key,
                chain(vec![column(FAMILY, LEASE), latest()]),
            )
            .await?;
        Ok(cells.and_then(|c| c.into_iter().next()).and_then(|c| {
            ShardLease::decode_value(shard, &c.value, from_micros(c.timestamp_micros)).ok()
        }))
    }
}

/// The keys starting with `prefix`.
fn prefix_range(prefix: &str) -> RowRange {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    RowRange {
        start_key: Some(row_range::StartKey::StartKeyClosed(
            prefix.as_bytes().to_vec(),
        )),
        end_key: Some(row_range::EndKey::EndKeyOpen(end)),
    }
}

#[async_trait]
impl ShardLeases for BigtableShardLeases {
    async fn read(&self) -> StoreResult<ShardLeaseTable> {
        let now = server_now(&self.client, &self.table).await?;
        self.read_at(now).await
    }

    async fn read_at(&self, now: Timestamp) -> StoreResult<ShardLeaseTable> {
        let rows = RowSet {
            row_keys: vec![],
            row_ranges: vec![prefix_range(LEASE_PREFIX), prefix_range(MEMBER_PREFIX)],
        };
        let filter = chain(vec![crate::bigtable::filter::family(FAMILY), latest()]);
        let found = self.client.read_rows(&self.table, rows, filter, 0).await?;
        let mut table = ShardLeaseTable {
            now,
            leases: (0..SHARD_COUNT)
                .map(|s| ShardLease::unwritten(Shard(s)))
                .collect(),
            members: Vec::new(),
            malformed: Vec::new(),
        };
        for (key, cells) in found {
            let key = String::from_utf8_lossy(&key).into_owned();
            let Some(cell) = cells.into_iter().next() else {
                continue;
            };
            let stamp = from_micros(cell.timestamp_micros);
            if let Some(id) = key.strip_prefix(MEMBER_PREFIX) {
                match MemberId::parse(id) {
                    Ok(id) => table.members.push(Member { id, stamp }),
                    Err(e) => table.malformed.push((key, e.to_string())),
                }
                continue;
            }
            let shard = key
                .strip_prefix(LEASE_PREFIX)
                .and_then(|s| u16::from_str_radix(s, 16).ok())
                .filter(|s| *s < SHARD_COUNT && key.len() == LEASE_PREFIX.len() + 3)
                .map(Shard);
            let decoded = match shard {
                Some(shard) => ShardLease::decode_value(shard, &cell.value, stamp),
                None => Err("not a lease row of any shard".to_owned()),
            };
            match decoded {
                Ok(lease) => {
                    let i = usize::from(lease.shard.0);
                    table.leases[i] = lease;
                }
                Err(reason) => table.malformed.push((key, reason)),
            }
        }
        Ok(table)
    }

    async fn announce(&self, member: &MemberId) -> StoreResult<()> {
        let stamp = vec![
            delete_column(FAMILY, MEMBER),
            set_cell(FAMILY, MEMBER, SERVER_TIME, Vec::new()),
        ];
        self.client
            .mutate_row(&self.table, &Self::member_key(member), stamp)
            .await
    }

    async fn depart(&self, member: &MemberId) -> StoreResult<()> {
        self.client
            .mutate_row(&self.table, &Self::member_key(member), vec![delete_row()])
            .await
    }

    async fn forget(&self, member: &MemberId, stale_before: Timestamp) -> StoreResult<bool> {
        let stale = chain(vec![
            column(FAMILY, MEMBER),
            latest(),
            stamped_before(micros(stale_before)),
        ]);
        self.client
            .check_and_mutate(
                &self.table,
                &Self::member_key(member),
                stale,
                vec![delete_row()],
                vec![],
            )
            .await
    }

    async fn acquire(
        &self,
        seen: &ShardLease,
        by: &MemberId,
        expired_before: Timestamp,
    ) -> StoreResult<Taken> {
        let key = Self::lease_key(seen.shard);
        let epoch = seen.epoch + 1;
        let write = Self::write_lease(epoch, Some(by));
        let won = if seen.epoch == 0 && seen.holder.is_none() {
            // Never written: written now only if it still has no lease cell.
            let any = chain(vec![column(FAMILY, LEASE), latest()]);
            !self
                .client
                .check_and_mutate(&self.table, &key, any, vec![], write)
                .await?
        } else {
            let mut as_seen = vec![
                column(FAMILY, LEASE),
                latest(),
                value_is(ShardLease::encode_value(seen.epoch, seen.holder.as_ref()).as_bytes()),
            ];
            if seen.holder.is_some() {
                as_seen.push(stamped_before(micros(expired_before)));
            }
            self.client
                .check_and_mutate(&self.table, &key, chain(as_seen), write, vec![])
                .await?
        };
        if won {
            return Ok(Taken::Won { epoch });
        }
        // Refused, or a retry whose first attempt landed: only this acquisition writes
        // (epoch + 1, by), since member ids are unique per process.
        Ok(match self.read_lease(seen.shard).await? {
            Some(now) if now.epoch == epoch && now.is_held_by(by) => Taken::Won { epoch },
            _ => Taken::Lost,
        })
    }

    async fn renew(&self, shard: Shard, epoch: u64, by: &MemberId) -> StoreResult<Kept> {
        self.if_held(shard, epoch, by, Self::write_lease(epoch, Some(by)))
            .await
    }

    async fn release(&self, shard: Shard, epoch: u64, by: &MemberId) -> StoreResult<Kept> {
        self.if_held(shard, epoch, by, Self::write_lease(epoch + 1, None))
            .await
    }
}
