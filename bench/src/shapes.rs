//! Three shapes of recovery at equal concurrency, each with its latency per change
//! *measured* — from a change's first claim to its row's removal, by a ledger wrapped
//! around the changelog ([`ClaimLedger`]) — beside its throughput and RPCs:
//!
//! * **seed**: the loop the design replaces (objectstore's recover loop): scan a page,
//!   and for each row claim, read HV, delete what HV does not reference, remove the row
//!   unconditionally; `in_flight` rows of a page at a time. No fence, so it is unsafe
//!   against a slow writer (the point of tiersweep); here it is the cost baseline.
//! * **embedded**: [`EmbeddedRecovery::run`] (scanner and cleaner in one process, an
//!   in-process queue) with `in_flight` jobs converging at once.
//! * **pipeline**: scanners publishing to a queue, one cleaner with `in_flight` in hand.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures::StreamExt as _;
use serde::Serialize;

use super::{PipelineRun, Run, pipeline, protocol, recovery_config};
use crate::meter::Meter;
use tiersweep::changelog::{Claim, ScanRequest, ScannedRow};
use tiersweep::error::StoreResult;
use tiersweep::model::{HvValue, OwnerToken, ShardSet};
use tiersweep::queue::JobQueue;
use tiersweep::recovery::EmbeddedRecovery;
use tiersweep::stores::Stores;
use tiersweep_testkit::claims::ClaimLedger;

/// One shape's run at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct ShapeRun {
    pub shape: String,
    pub in_flight: usize,
    pub changes: usize,
    pub changes_per_s: f64,
    pub rpcs_per_change: f64,
    /// From first claim to removal, per change: median and 99th percentile, ms.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

impl ShapeRun {
    fn new(shape: &str, run: &Run, ledger: &ClaimLedger) -> Self {
        let l: Vec<u64> = ledger
            .latencies()
            .iter()
            .map(|d| d.as_micros() as u64)
            .collect();
        Self {
            shape: shape.to_owned(),
            in_flight: run.in_flight,
            changes: run.changes,
            changes_per_s: run.changes_per_s,
            rpcs_per_change: run.rpcs_per_change,
            latency_p50_ms: super::percentile(&l, 0.5) as f64 / 1e3,
            latency_p99_ms: super::percentile(&l, 0.99) as f64 / 1e3,
        }
    }
}

/// `stores` with a claim ledger around the changelog.
fn timed(stores: &Stores) -> (Stores, Arc<ClaimLedger>) {
    let ledger = Arc::new(ClaimLedger::new(
        stores.changelog().clone(),
        stores.clock().clone(),
    ));
    (stores.clone().with_changelog(ledger.clone()), ledger)
}

/// The seed's loop over a prepared backlog of `changes`, `in_flight` rows at a time.
pub async fn seed(
    stores: &Stores,
    meter: &Arc<Meter>,
    changes: usize,
    in_flight: usize,
) -> StoreResult<ShapeRun> {
    meter.reset();
    let (timed, ledger) = timed(&meter.wrap(stores));
    let claimer = OwnerToken::recovery_claim();
    let lease = Duration::from_secs(120);
    let started = Instant::now();
    let mut converged = 0;
    while converged < changes {
        let now = timed.changelog().now().await?;
        let page = timed
            .changelog()
            .scan_stale(&ScanRequest {
                shards: ShardSet::ALL,
                cutoff: now.saturating_sub(protocol().staleness_threshold),
                stamped_from: None,
                now,
                start_after: None,
                limit: 500,
                minted: None,
                report_waiting: false,
            })
            .await?;
        let cutoff = now.saturating_sub(protocol().staleness_threshold);
        let rows: Vec<_> = page
            .rows
            .into_iter()
            .filter_map(|r| match r {
                ScannedRow::Entry(e) => Some(e),
                _ => None,
            })
            .collect();
        if rows.is_empty() {
            break;
        }
        let done: Vec<StoreResult<bool>> = futures::stream::iter(rows)
            .map(|seen| {
                let (timed, claimer) = (&timed, &claimer);
                async move {
                    let lease_until = now.saturating_add(lease);
                    let Claim::Won(entry) = timed
                        .changelog()
                        .claim(&seen, cutoff, claimer, lease_until)
                        .await?
                    else {
                        return Ok(false);
                    };
                    let value = timed.hv().read(&entry.record.object).await?;
                    let referenced = value.as_ref().and_then(HvValue::tombstone);
                    for rev in entry.record.revisions().filter(|r| Some(*r) != referenced) {
                        timed.lt().delete(rev).await?;
                    }
                    timed
                        .changelog()
                        .remove_many(std::slice::from_ref(&entry.id))
                        .await?;
                    Ok(true)
                }
            })
            .buffer_unordered(in_flight.max(1))
            .collect()
            .await;
        for d in done {
            converged += usize::from(d?);
        }
    }
    let run = Run::new("seed", in_flight, 1, converged, started.elapsed(), meter, 0);
    Ok(ShapeRun::new("seed", &run, &ledger))
}

/// Embedded recovery over a prepared backlog, `in_flight` jobs converging at once, until
/// `changes` rows are removed (or five minutes pass).
pub async fn embedded(
    stores: &Stores,
    meter: &Arc<Meter>,
    changes: usize,
    in_flight: usize,
) -> StoreResult<ShapeRun> {
    meter.reset();
    let (timed, ledger) = timed(&meter.wrap(stores));
    let recovery = EmbeddedRecovery::new(timed, recovery_config(in_flight));
    let cancel = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(recovery.run(cancel.clone(), Duration::from_secs(10)));
    let give_up = started + Duration::from_secs(300);
    let converged = loop {
        let removed = ledger.counts().removed;
        if removed >= changes || Instant::now() > give_up {
            break removed;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = started.elapsed();
    cancel.cancel();
    let _ = task.await;
    let run = Run::new("embedded", in_flight, 1, converged, took, meter, 0);
    Ok(ShapeRun::new("embedded", &run, &ledger))
}

/// The pipeline over a prepared backlog: 2 scanners, one cleaner with `in_flight` in hand.
pub async fn pipelined(
    stores: &Stores,
    queue: Arc<dyn JobQueue>,
    meter: &Arc<Meter>,
    changes: usize,
    in_flight: usize,
) -> StoreResult<ShapeRun> {
    let (timed, ledger) = timed(stores);
    let shape = PipelineRun {
        changes,
        deadline: Duration::from_secs(300),
        scanners: 2,
        split: true,
        in_flight,
    };
    let run = pipeline(&timed, queue, meter, shape).await?;
    Ok(ShapeRun::new("pipeline", &run, &ledger))
}
