//! What a million recovered changes, or a million large writes, cost in billed units,
//! from the call meter's counts (deterministic for a given run shape, so CI can check
//! that they do not grow).
//!
//! The units are the ones the services bill or budget by: Bigtable RPCs and the rows they
//! read or write (node capacity is budgeted in rows per second: a batch of n rows costs n);
//! Cloud Storage operations by class (A: insert, list; B: get, metadata; deletes are
//! free); Pub/Sub requests and billed bytes (each publish request and pull response at
//! least 1,000 bytes: [`crate::meter::Rpcs::pubsub_billed_bytes`]). Worker CPU is
//! measured on real processes (`tiersweep bench` memory runs) and added where known.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;

use super::Run;
use crate::meter::{Latency, Meter, Rpcs};
use tiersweep::error::StoreResult;
use tiersweep::model::ObjectPath;
use tiersweep::stores::Stores;
use tiersweep::writer::{TieredStorage, WriterConfig};

const MILLION: f64 = 1e6;

/// Billed units per million of something (recovered changes, large writes).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CostPerMillion {
    /// What one unit is.
    pub per: String,
    /// Bigtable RPCs, by operation.
    pub bigtable_rpcs: BTreeMap<String, f64>,
    pub bigtable_rpcs_total: f64,
    /// Rows those RPCs read or wrote (a batch of n keys touches n; a scan page's rows are
    /// counted as returned, not as examined: docs/performance.md §14).
    pub bigtable_rows: f64,
    /// Of those, rows read and rows written.
    pub bigtable_row_reads: f64,
    pub bigtable_row_writes: f64,
    pub gcs_class_a: f64,
    pub gcs_class_b: f64,
    /// Deletes: free.
    pub gcs_free: f64,
    /// Publish and acknowledge RPCs.
    pub pubsub_requests: f64,
    pub pubsub_messages: f64,
    /// Publish plus delivery, as billed (per request, at least 1,000 bytes).
    pub pubsub_billed_gb: f64,
    /// Worker CPU-seconds, where a real process's CPU was measured.
    pub cpu_s: Option<f64>,
}

/// The cost of the changes `run` recovered.
pub fn recovery(run: &Run) -> CostPerMillion {
    let mut cost = metered(&run.calls, &run.rows, &run.rpcs, run.changes);
    cost.per = "recovered change".into();
    cost
}

/// Per-million figures, over `units` units, of everything a meter counted: store calls
/// and rows, and queue requests, deliveries and billed bytes.
pub fn metered(
    calls: &BTreeMap<String, u64>,
    rows: &BTreeMap<String, u64>,
    rpcs: &Rpcs,
    units: usize,
) -> CostPerMillion {
    let units = units.max(1) as f64;
    let mut cost = from_calls(calls, rows, units);
    cost.pubsub_requests = (rpcs.pubsub_publish + rpcs.pubsub_ack) as f64 * MILLION / units;
    cost.pubsub_messages = rpcs.pubsub_settle as f64 * MILLION / units;
    cost.pubsub_billed_gb = rpcs.pubsub_billed_bytes as f64 * MILLION / units / 1e9;
    cost
}

/// Per-million figures from per-operation call and row counts over `units` units.
fn from_calls(
    calls: &BTreeMap<String, u64>,
    rows: &BTreeMap<String, u64>,
    units: f64,
) -> CostPerMillion {
    let per_million = |n: f64| n * MILLION / units;
    let mut cost = CostPerMillion::default();
    for (op, &n) in calls {
        let n = n as f64;
        match op.as_str() {
            "LtPut" | "LtList" => cost.gcs_class_a += per_million(n),
            "LtGet" | "LtExists" => cost.gcs_class_b += per_million(n),
            "LtDelete" => cost.gcs_free += per_million(n),
            other => {
                let rpcs = per_million(n * f64::from(crate::meter::round_trips(other)));
                cost.bigtable_rpcs.insert(other.to_owned(), rpcs);
                cost.bigtable_rpcs_total += rpcs;
            }
        }
    }
    for (op, &n) in rows {
        let (reads, writes) = crate::meter::reads_and_writes(op);
        cost.bigtable_row_reads += per_million((reads * n) as f64);
        cost.bigtable_row_writes += per_million((writes * n) as f64);
    }
    cost.bigtable_rows = cost.bigtable_row_reads + cost.bigtable_row_writes;
    cost
}

/// The cost of `n` large puts, each overwriting a large object (record, upload, HV write,
/// delete of the old blob, remove), on in-memory stores with no latency (so no heartbeat
/// falls due: one per `heartbeat_interval` of a write's duration comes on top).
pub async fn large_writes(n: usize) -> StoreResult<CostPerMillion> {
    large_writes_on(n, true).await
}

/// [`large_writes`] by writers with the no-op changelog: the difference is what the
/// changelog costs the write path.
pub async fn large_writes_without_changelog(n: usize) -> StoreResult<CostPerMillion> {
    large_writes_on(n, false).await
}

async fn large_writes_on(n: usize, changelog: bool) -> StoreResult<CostPerMillion> {
    let meter = Meter::new(Latency::NONE);
    let mut stores = Stores::in_memory(tiersweep::clock::system());
    let mut metered = meter.wrap(&stores);
    if !changelog {
        // Outside the meter: the no-op changelog makes no call.
        let noop = std::sync::Arc::new(tiersweep::changelog::NoopChangelog);
        stores = stores.with_changelog(noop.clone());
        metered = metered.with_changelog(noop);
    }
    // The default configuration is valid.
    let plain = TieredStorage::new(stores, WriterConfig::default()).expect("valid writer");
    let metered = TieredStorage::new(metered, WriterConfig::default()).expect("valid writer");
    let body = Bytes::from(vec![b'W'; 256 * 1024]);
    let paths: Vec<ObjectPath> = (0..n)
        .map(|i| ObjectPath::new(format!("bench/cost/{i:07}")).expect("bench paths are valid"))
        .collect();
    for path in &paths {
        plain.put(path, body.clone()).await.map_err(into_store)?;
    }
    meter.reset();
    for path in &paths {
        metered.put(path, body.clone()).await.map_err(into_store)?;
    }
    let mut cost = from_calls(&meter.calls(), &meter.rows(), n.max(1) as f64);
    cost.per = "large write (overwrite)".into();
    Ok(cost)
}

/// A put on stores no one else writes fails only in a store.
fn into_store(e: tiersweep::writer::WriteError) -> tiersweep::error::StoreError {
    match e {
        tiersweep::writer::WriteError::Store(e) => e,
        other => tiersweep::error::StoreError::new(
            tiersweep::error::StoreKind::Hv,
            "put",
            "bench object",
            tiersweep::error::ErrorKind::Permanent,
            other.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The write path's bill, exactly: per overwrite, Bigtable reads the row, records the
    /// change, writes HV and removes the change (4 RPCs, one row each), GCS uploads once
    /// (class A) and deletes the old blob (free). A new call on the path shows up here.
    #[tokio::test]
    async fn a_large_overwrite_costs_four_bigtable_rpcs_an_upload_and_a_delete() {
        let cost = large_writes(50).await.expect("metered writes");
        let per = |op: &str| cost.bigtable_rpcs.get(op).copied().unwrap_or(0.0);
        assert_eq!(
            (per("HvRead"), per("Record"), per("HvCas"), per("Remove")),
            (MILLION, MILLION, MILLION, MILLION),
            "{cost:#?}"
        );
        assert_eq!(cost.bigtable_rpcs_total, 4.0 * MILLION, "{cost:#?}");
        assert_eq!(cost.bigtable_rows, 4.0 * MILLION);
        assert_eq!(
            (cost.bigtable_row_reads, cost.bigtable_row_writes),
            (MILLION, 3.0 * MILLION)
        );
        assert_eq!(
            (cost.gcs_class_a, cost.gcs_class_b, cost.gcs_free),
            (MILLION, 0.0, MILLION)
        );
        // Without the changelog, the record and the removal are what goes.
        let bare = large_writes_without_changelog(50)
            .await
            .expect("metered writes");
        assert_eq!(
            cost.bigtable_rows - bare.bigtable_rows,
            2.0 * MILLION,
            "{bare:#?}"
        );
        assert_eq!(bare.gcs_class_a, MILLION);
    }
}
