//! Plumbing the Bigtable HV store and the Bigtable changelog share: one connection, the
//! three RPCs they use (`ReadRows`, `MutateRow`, `CheckAndMutateRow`), the filter and
//! mutation vocabulary, and the mapping of `bigtable_rs` errors onto [`StoreError`].
//!
//! `bigtable_rs` has no retry of its own; the protocol layers (writer, scanner, cleaner)
//! wrap every store call in the one [`RetryPolicy`](crate::RetryPolicy), because
//! whether a retry is safe is a protocol question (see `hv` and `changelog`), not a
//! transport one. Calls here are single attempts.

#[cfg(any(test, feature = "testing"))]
pub mod admin;
pub(crate) mod filter;
pub mod layout;

use std::time::Duration;

use bigtable_rs::bigtable::{
    BigTable, BigTableConnection, Error as BtError, RoutingMetadata, RowCell,
};
use bigtable_rs::google::bigtable::v2::{
    CheckAndMutateRowRequest, MutateRowRequest, MutateRowsRequest, Mutation, ReadRowsRequest,
    RowFilter, RowSet, mutate_rows_request,
};
use serde::Deserialize;

use crate::error::{ErrorKind, StoreError, StoreKind, StoreResult};
use crate::iam::{Method, Resource};

/// Where the tables live and how to reach them.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BigtableConfig {
    /// The Google Cloud project of the Bigtable instance.
    pub project: String,
    /// The Bigtable instance holding both tables.
    pub instance: String,
    /// App profile for data calls. On Cloud Bigtable use one with single-cluster routing and
    /// transactional writes allowed: `CheckAndMutateRow` is refused without them.
    pub app_profile: Option<String>,
    /// `host:port` of an emulator; unset means Cloud Bigtable with Application Default
    /// Credentials. Defaults to `BIGTABLE_EMULATOR_HOST`.
    pub emulator_host: Option<String>,
    /// The HV (object) table.
    pub hv_table: String,
    /// The changelog table (also holding leases, members and audit runs).
    pub changelog_table: String,
    /// HTTP/2 connections to spread calls over.
    pub channels: usize,
    /// Deadline for one RPC.
    #[serde(with = "crate::duration")]
    pub timeout: Duration,
}

impl Default for BigtableConfig {
    fn default() -> Self {
        Self {
            project: "tiersweep-local".into(),
            instance: "tiersweep".into(),
            app_profile: None,
            emulator_host: std::env::var("BIGTABLE_EMULATOR_HOST").ok(),
            hv_table: "objects".into(),
            changelog_table: "changelog".into(),
            channels: 4,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A connected client, cheap to clone. `bigtable_rs` methods take `&mut self`, so every
/// call works on its own clone of the handle (a clone of the channel, not a new connection).
#[derive(Clone)]
pub struct BigtableClient {
    data: BigTable,
    app_profile: String,
    /// Sent with every write as its gRPC deadline (`grpc-timeout`), so the *server* drops
    /// an attempt its client has given up on instead of applying it later (a straggler).
    timeout: Duration,
}

impl std::fmt::Debug for BigtableClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BigtableClient")
            .field("app_profile", &self.app_profile)
            .finish_non_exhaustive()
    }
}

/// One table of one instance, named for requests and for errors.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub(crate) store: StoreKind,
    /// `projects/…/instances/…/tables/…`, as requests want it.
    full_name: String,
    /// The table id, as errors show it.
    pub(crate) id: String,
}

impl Table {
    pub(crate) fn target(&self, row: &[u8]) -> String {
        format!("table {} row {}", self.id, String::from_utf8_lossy(row))
    }
}

impl BigtableClient {
    /// Connects lazily: the first RPC opens the channels, so an unreachable service shows
    /// up as a transient error on that call rather than here.
    pub async fn connect(config: &BigtableConfig) -> StoreResult<Self> {
        let channels = config.channels.max(1);
        let timeout = Some(config.timeout);
        let conn = match &config.emulator_host {
            Some(host) => BigTableConnection::new_with_emulator(
                host,
                &config.project,
                &config.instance,
                false,
                channels,
                timeout,
            ),
            None => {
                BigTableConnection::new(&config.project, &config.instance, false, channels, timeout)
                    .await
            }
        }
        .map_err(|e| {
            let target = format!("instance {}/{}", config.project, config.instance);
            error(StoreKind::Hv, "connect", target, e)
        })?;
        Ok(Self {
            data: conn.client(),
            app_profile: config.app_profile.clone().unwrap_or_default(),
            timeout: config.timeout,
        })
    }

    /// A write request with its deadline and the routing header Cloud Bigtable expects
    /// (what `bigtable_rs` adds to the requests it builds itself).
    fn with_deadline<T: RoutingMetadata>(
        &self,
        message: T,
        table: &Table,
        op: &'static str,
        row: &[u8],
    ) -> StoreResult<tonic::Request<T>> {
        let routing = message.get_routing_header();
        let mut request = tonic::Request::new(message);
        let value = routing.parse().map_err(|e| {
            StoreError::new(
                table.store,
                op,
                table.target(row),
                ErrorKind::Permanent,
                format!("routing header {routing:?}: {e}"),
            )
        })?;
        request
            .metadata_mut()
            .insert("x-goog-request-params", value);
        request.set_timeout(self.timeout);
        Ok(request)
    }

    pub(crate) fn table(&self, store: StoreKind, id: &str) -> Table {
        Table {
            store,
            full_name: self.data.get_full_table_name(id),
            id: id.to_owned(),
        }
    }

    /// Applies `when_matched` if `predicate` yields any cell, else `when_unmatched`.
    /// Returns whether the predicate matched.
    pub(crate) async fn check_and_mutate(
        &self,
        table: &Table,
        row: &[u8],
        predicate: RowFilter,
        when_matched: Vec<Mutation>,
        when_unmatched: Vec<Mutation>,
    ) -> StoreResult<bool> {
        let request = CheckAndMutateRowRequest {
            table_name: table.full_name.clone(),
            app_profile_id: self.app_profile.clone(),
            row_key: row.to_vec(),
            predicate_filter: Some(predicate),
            true_mutations: when_matched,
            false_mutations: when_unmatched,
            ..Default::default()
        };
        let op = rpc_name(Method::BigtableCheckAndMutateRow);
        let request = self.with_deadline(request, table, op, row)?;
        let call = async {
            let mut data = self.data.clone();
            let response = data
                .get_client()
                .check_and_mutate_row(request)
                .await
                .map_err(BtError::RpcError)?;
            Ok(response.into_inner())
        };
        let response = traced(table, Method::BigtableCheckAndMutateRow, call)
            .await
            .map_err(|e| error(table.store, op, table.target(row), e))?;
        Ok(response.predicate_matched)
    }

    pub(crate) async fn mutate_row(
        &self,
        table: &Table,
        row: &[u8],
        mutations: Vec<Mutation>,
    ) -> StoreResult<()> {
        let request = MutateRowRequest {
            table_name: table.full_name.clone(),
            app_profile_id: self.app_profile.clone(),
            row_key: row.to_vec(),
            mutations,
            ..Default::default()
        };
        let op = rpc_name(Method::BigtableMutateRow);
        let request = self.with_deadline(request, table, op, row)?;
        let call = async {
            let mut data = self.data.clone();
            data.get_client()
                .mutate_row(request)
                .await
                .map_err(BtError::RpcError)?;
            Ok(())
        };
        traced(table, Method::BigtableMutateRow, call)
            .await
            .map_err(|e| error(table.store, op, table.target(row), e))?;
        Ok(())
    }

    /// Applies each row's mutations in one MutateRows call. Each row's mutations are atomic,
    /// the batch is not; any row the server reports failed fails the call (transient, so
    /// the caller retries the batch: these mutations are idempotent).
    pub(crate) async fn mutate_rows(
        &self,
        table: &Table,
        rows: Vec<(Vec<u8>, Vec<Mutation>)>,
    ) -> StoreResult<()> {
        let op = rpc_name(Method::BigtableMutateRows);
        let Some((first, _)) = rows.first() else {
            return Ok(());
        };
        let target = format!("{} (+{} more)", table.target(first), rows.len() - 1);
        let request = MutateRowsRequest {
            table_name: table.full_name.clone(),
            app_profile_id: self.app_profile.clone(),
            entries: rows
                .into_iter()
                .map(|(row_key, mutations)| mutate_rows_request::Entry {
                    row_key,
                    mutations,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let request = self.with_deadline(request, table, op, &[])?;
        let call = async {
            let mut data = self.data.clone();
            let mut responses = data
                .get_client()
                .mutate_rows(request)
                .await
                .map_err(BtError::RpcError)?
                .into_inner();
            let mut failed = Vec::new();
            while let Some(response) = responses.message().await.map_err(BtError::RpcError)? {
                failed.extend(
                    response
                        .entries
                        .into_iter()
                        .filter_map(|e| e.status.filter(|s| s.code != 0).map(|s| (e.index, s))),
                );
            }
            Ok(failed)
        };
        let failed = traced(table, Method::BigtableMutateRows, call)
            .await
            .map_err(|e| error(table.store, op, target.clone(), e))?;
        match failed.first() {
            None => Ok(()),
            Some((index, status)) => Err(StoreError::new(
                table.store,
                op,
                target,
                ErrorKind::Transient,
                format!(
                    "{} of the batch's rows failed, the first (entry {index}) with code {}: {}",
                    failed.len(),
                    status.code,
                    status.message
                ),
            )),
        }
    }

    /// The cells of one row that `filter` passes; `None` when it passes none.
    pub(crate) async fn read_row(
        &self,
        table: &Table,
        row: &[u8],
        filter: RowFilter,
    ) -> StoreResult<Option<Vec<RowCell>>> {
        let rows = RowSet {
            row_keys: vec![row.to_vec()],
            row_ranges: vec![],
        };
        let mut found = self
            .read_rows_in(table, rows, filter, 1, || table.target(row))
            .await?;
        Ok(found.pop().map(|(_, cells)| cells))
    }

    /// Up to `limit` rows of `rows` (in key order) for which `filter` passes any cell.
    /// Rows the filter empties are skipped by the server and do not count toward `limit`.
    pub(crate) async fn read_rows(
        &self,
        table: &Table,
        rows: RowSet,
        filter: RowFilter,
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<RowCell>)>> {
        let what = || format!("table {} (range scan)", table.id);
        self.read_rows_in(table, rows, filter, limit, what).await
    }

    async fn read_rows_in(
        &self,
        table: &Table,
        rows: RowSet,
        filter: RowFilter,
        limit: usize,
        target: impl FnOnce() -> String,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<RowCell>)>> {
        let request = ReadRowsRequest {
            table_name: table.full_name.clone(),
            app_profile_id: self.app_profile.clone(),
            rows: Some(rows),
            filter: Some(filter),
            rows_limit: i64::try_from(limit).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let op = rpc_name(Method::BigtableReadRows);
        // `bigtable_rs` checks its deadline only between response messages, so a stream
        // that stops mid-read would wait for HTTP/2 keep-alive to notice; the whole read
        // gets the deadline here.
        let deadline = self.timeout;
        let read = async {
            tokio::time::timeout(deadline, self.data.clone().read_rows(request))
                .await
                .unwrap_or(Err(BtError::TimeoutError(deadline.as_secs())))
        };
        traced(table, Method::BigtableReadRows, read)
            .await
            .map_err(|e| error(table.store, op, target(), e))
    }
}

/// Runs one RPC inside a CLIENT span named and attributed by the OpenTelemetry database
/// conventions; a failure is recorded on the span that failed.
async fn traced<T>(
    table: &Table,
    method: Method,
    call: impl std::future::Future<Output = Result<T, BtError>>,
) -> Result<T, BtError> {
    use tracing::Instrument;
    let resource = match table.store {
        StoreKind::Hv => Resource::HvTable,
        _ => Resource::ChangelogTable,
    };
    crate::iam::record(method, resource);
    let op = rpc_name(method);
    let span = tracing::info_span!("bigtable",
        otel.name = %format!("{op} {}", table.id),
        otel.kind = "client",
        db.system.name = crate::telemetry::attr::GCP_BIGTABLE,
        db.operation.name = op,
        db.collection.name = %table.id,
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let result = call.instrument(span.clone()).await;
    if let Err(e) = &result {
        let kind = match e {
            BtError::RpcError(status) => format!("{:?}", status.code()),
            other => format!("{other}")
                .split(':')
                .next()
                .unwrap_or("error")
                .to_owned(),
        };
        span.record("error.type", kind.as_str());
        span.record("otel.status_code", "ERROR");
    }
    result
}

/// The RPC's own name, as spans and errors show it (`CheckAndMutateRow`).
fn rpc_name(method: Method) -> &'static str {
    let name = method.name();
    name.strip_prefix("bigtable.").unwrap_or(name)
}

/// Bigtable timestamps are microseconds at millisecond granularity.
pub(crate) fn micros(t: crate::model::Timestamp) -> i64 {
    t.millis().saturating_mul(1000)
}

pub(crate) fn from_micros(us: i64) -> crate::model::Timestamp {
    crate::model::Timestamp(us.div_euclid(1000))
}

fn error(store: StoreKind, op: &'static str, target: String, err: BtError) -> StoreError {
    use tonic::Code;
    let (kind, hint) = match &err {
        BtError::RpcError(status) => match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Internal
            | Code::Unknown
            | Code::Cancelled => (ErrorKind::Transient, ""),
            Code::NotFound => (
                ErrorKind::Permanent,
                "; does the table exist? Create it with infra/local/provision.sh (emulator) \
                 or infra/terraform (Cloud Bigtable)",
            ),
            Code::PermissionDenied | Code::Unauthenticated => (
                ErrorKind::Permanent,
                "; check the service account's Bigtable roles and the app profile",
            ),
            _ => (ErrorKind::Permanent, ""),
        },
        BtError::TransportError(_)
        | BtError::IoError(_)
        | BtError::TimeoutError(_)
        | BtError::AccessTokenError(_)
        | BtError::ChunkError(_) => (ErrorKind::Transient, ""),
        _ => (ErrorKind::Permanent, ""),
    };
    let message = format!("{err}{hint}");
    StoreError::new(store, op, target, kind, message).with_source(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write carries its deadline to the server, so an attempt the client gave up on is
    /// dropped there rather than applied later; and the routing header Cloud Bigtable needs.
    #[tokio::test]
    async fn writes_carry_their_deadline_and_routing() {
        let config = BigtableConfig {
            emulator_host: Some("127.0.0.1:9".into()),
            timeout: Duration::from_millis(1500),
            ..BigtableConfig::default()
        };
        let client = BigtableClient::connect(&config).await.unwrap();
        let table = client.table(StoreKind::Hv, "objects");
        let message = MutateRowRequest {
            table_name: table.full_name.clone(),
            ..Default::default()
        };
        let request = client
            .with_deadline(message, &table, "MutateRow", b"row")
            .unwrap();
        let meta = request.metadata();
        assert_eq!(meta.get("grpc-timeout").unwrap(), "1500000u");
        let routing = meta.get("x-goog-request-params").unwrap().to_str().unwrap();
        assert!(routing.starts_with("table_name=projects%2F"), "{routing}");
    }
}
