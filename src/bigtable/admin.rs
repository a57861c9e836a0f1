//! Table creation for the emulator: tests make their own uniquely named tables, and the
//! demo provisions the default ones when it starts the emulators itself. Cloud Bigtable
//! tables come from `infra/terraform`, never from the workers, whose service accounts
//! have no admin rights.

use std::collections::HashMap;

use bigtable_admin::google::bigtable::admin::v2::bigtable_table_admin_client::BigtableTableAdminClient;
use bigtable_admin::google::bigtable::admin::v2::{
    ColumnFamily, CreateTableRequest, GcRule, Table, gc_rule,
};
use tonic::transport::Endpoint;

use super::layout::{self, Gc};
use crate::error::{ErrorKind, StoreError, StoreKind, StoreResult};

/// Creates the HV and changelog tables with their families, unless they exist.
pub async fn ensure_tables_on_emulator(
    emulator_host: &str,
    project: &str,
    instance: &str,
    hv_table: &str,
    changelog_table: &str,
) -> StoreResult<()> {
    let unreachable = |e: tonic::transport::Error| {
        StoreError::new(
            StoreKind::Hv,
            "connect",
            format!("Bigtable emulator at {emulator_host}"),
            ErrorKind::Transient,
            "cannot reach the Bigtable emulator; start it with infra/local/start.sh",
        )
        .with_source(e)
    };
    let channel = Endpoint::from_shared(format!("http://{emulator_host}"))
        .map_err(unreachable)?
        .connect()
        .await
        .map_err(unreachable)?;
    let mut admin = BigtableTableAdminClient::new(channel);
    let parent = format!("projects/{project}/instances/{instance}");
    let tables = [
        (StoreKind::Hv, hv_table, families(&layout::hv_families())),
        (
            StoreKind::Changelog,
            changelog_table,
            families(&layout::changelog_families()),
        ),
    ];
    for (store, id, column_families) in tables {
        let request = CreateTableRequest {
            parent: parent.clone(),
            table_id: id.to_owned(),
            table: Some(Table {
                column_families,
                ..Default::default()
            }),
            ..Default::default()
        };
        match admin.create_table(request).await {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::AlreadyExists => {}
            Err(status) => {
                return Err(StoreError::new(
                    store,
                    "CreateTable",
                    format!("table {id}"),
                    ErrorKind::Permanent,
                    status.message().to_owned(),
                )
                .with_source(status));
            }
        }
    }
    Ok(())
}

fn families(spec: &[(&'static str, Gc)]) -> HashMap<String, ColumnFamily> {
    spec.iter()
        .map(|(name, gc)| {
            let rule = match gc {
                Gc::MaxVersions(n) => gc_rule::Rule::MaxNumVersions(*n),
                Gc::MaxAge(age) => gc_rule::Rule::MaxAge(prost_types::Duration {
                    seconds: i64::try_from(age.as_secs()).unwrap_or(i64::MAX),
                    nanos: 0,
                }),
            };
            let family = ColumnFamily {
                gc_rule: Some(GcRule { rule: Some(rule) }),
                ..Default::default()
            };
            ((*name).to_owned(), family)
        })
        .collect()
}
