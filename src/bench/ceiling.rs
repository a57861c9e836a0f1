//! The ceiling: how fast the backends themselves answer the RPCs recovery makes, from a
//! tight client (our store clients, nothing else running), and the recovery rate that
//! implies. A pipeline figure means little without it: on the emulators everything is
//! CPU-bound, so "how close to what the backends allow" is the question, not "how fast".

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

use crate::error::StoreResult;
use crate::model::{ChangeId, ChangeRecord, ObjectPath, OwnerToken, Revision};
use crate::queue::{FlowControl, JobQueue, Message};
use crate::stores::Stores;

/// The raw rate of one RPC.
#[derive(Debug, Clone, Serialize)]
pub struct RpcRate {
    pub service: &'static str,
    pub rpc: &'static str,
    /// Calls in flight at once.
    pub concurrency: usize,
    pub calls: usize,
    pub per_s: f64,
}

/// How many of each RPC one recovered change costs the pipeline, as the call meter counts
/// them: the claim and the final remove are CheckAndMutateRow; the cleaner's re-read and
/// the fence's read are ReadRows (plus a 500-row scan page per 500 changes, counted as
/// one more point read: it is one RPC); the fence's write is a MutateRow; one blob delete;
/// one publish per job, in batches; one pull and ack.
pub const PER_CHANGE: [(&str, &str, f64); 6] = [
    ("bigtable", "CheckAndMutateRow", 2.0),
    ("bigtable", "ReadRows", 2.0 + 1.0 / 500.0),
    ("bigtable", "MutateRow", 1.0),
    ("gcs", "object delete", 1.0),
    ("pubsub", "publish (100 per batch)", 1.0),
    ("pubsub", "pull+ack", 1.0),
];

/// The changes/s a service allows: the inverse of the time its share of one change takes
/// at the measured rates.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub service: &'static str,
    pub changes_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CeilingReport {
    pub rates: Vec<RpcRate>,
    pub per_service: Vec<Ceiling>,
    /// The smallest per-service ceiling: the definition of the ceiling.
    pub ceiling: f64,
    /// All services' shares added up, for when they share the same cores (as the three
    /// emulators do here): a tighter, more honest bound on this machine.
    pub shared_cpu_ceiling: f64,
}

async fn rate<F, Fut>(
    service: &'static str,
    rpc: &'static str,
    calls: usize,
    concurrency: usize,
    op: F,
) -> StoreResult<RpcRate>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = StoreResult<()>>,
{
    let started = Instant::now();
    let results: Vec<StoreResult<()>> = futures::stream::iter(0..calls)
        .map(&op)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let took = started.elapsed();
    results.into_iter().collect::<StoreResult<Vec<()>>>()?;
    Ok(RpcRate {
        service,
        rpc,
        concurrency,
        calls,
        per_s: calls as f64 / took.as_secs_f64().max(1e-9),
    })
}

/// Measures every RPC `calls` times at `concurrency`, on fresh rows, blobs and messages
/// named under `run`. `queue` must be a fresh topic and subscription: its backlog is read.
pub async fn measure(
    stores: &Stores,
    queue: Arc<dyn JobQueue>,
    run: &str,
    calls: usize,
    concurrency: usize,
) -> StoreResult<CeilingReport> {
    let changes: Vec<(ChangeId, ChangeRecord)> = (0..calls)
        .map(|i| {
            let path =
                ObjectPath::new(format!("bench/{run}/c{i:07}")).expect("bench paths are valid");
            let rev = Revision::mint(&path);
            let rec = ChangeRecord::new(path, None, Some(rev), OwnerToken::mint("ceiling"));
            (ChangeId::mint(), rec)
        })
        .collect();
    let changes = &changes;
    let blob = Bytes::from(vec![b'C'; 2048]);
    let c = concurrency;
    let mut rates = Vec::new();

    rates.push(
        rate("bigtable", "MutateRow", calls, c, |i| async move {
            let (id, rec) = &changes[i];
            stores.changelog.record(id, rec).await.map(drop)
        })
        .await?,
    );
    rates.push(
        rate("bigtable", "CheckAndMutateRow", calls, c, |i| async move {
            let (id, rec) = &changes[i];
            stores.changelog.heartbeat(id, &rec.owner).await.map(drop)
        })
        .await?,
    );
    rates.push(
        rate("bigtable", "ReadRows", calls, c, |i| async move {
            stores.changelog.get(&changes[i].0).await.map(drop)
        })
        .await?,
    );
    rates.push(
        rate("gcs", "object upload (2 KiB)", calls, c, |i| {
            let blob = blob.clone();
            async move {
                let rev = changes[i].1.new.as_ref().expect("minted above");
                stores.lt.put(rev, blob).await
            }
        })
        .await?,
    );
    rates.push(
        rate("gcs", "object delete", calls, c, |i| async move {
            let rev = changes[i].1.new.as_ref().expect("minted above");
            stores.lt.delete(rev).await
        })
        .await?,
    );
    let job = |i: usize| Message {
        data: Bytes::from(format!("ceiling {run} {i}")),
        attributes: Default::default(),
    };
    let batches = calls.div_ceil(100);
    let mut batched = rate("pubsub", "publish (100 per batch)", batches, c, |b| {
        let queue = queue.clone();
        async move {
            let batch = (b * 100..((b + 1) * 100).min(calls)).map(job).collect();
            queue.publish(batch).await
        }
    })
    .await?;
    // Counted per message, as the per-change cost is.
    batched.per_s *= calls as f64 / batches as f64;
    batched.calls = calls;
    rates.push(batched);
    rates.push(pull_and_ack(queue.as_ref(), calls, c).await?);
    // Not timed: leaves no rows for a later run's scanners to recover.
    rate("bigtable", "cleanup", calls, c, |i| async move {
        let (id, rec) = &changes[i];
        stores.changelog.remove(id, &rec.owner).await.map(drop)
    })
    .await?;
    Ok(report(rates))
}

/// Pulls and acks `calls` messages with `concurrency` unsettled at a time.
async fn pull_and_ack(
    queue: &dyn JobQueue,
    calls: usize,
    concurrency: usize,
) -> StoreResult<RpcRate> {
    let flow = FlowControl {
        max_outstanding: concurrency.max(1),
        ..FlowControl::default()
    };
    let mut sub = queue.subscribe(flow).await?;
    let started = Instant::now();
    let mut acked = 0;
    while acked < calls {
        match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
            Ok(Some(Ok(d))) => {
                d.ack();
                acked += 1;
            }
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) | Err(_) => break,
        }
    }
    Ok(RpcRate {
        service: "pubsub",
        rpc: "pull+ack",
        concurrency,
        calls: acked,
        per_s: acked as f64 / started.elapsed().as_secs_f64().max(1e-9),
    })
}

/// Turns raw rates into per-service ceilings on changes/s.
pub fn report(rates: Vec<RpcRate>) -> CeilingReport {
    let seconds_per_change = |service: Option<&str>| -> f64 {
        PER_CHANGE
            .iter()
            .filter(|(s, _, _)| service.is_none_or(|want| want == *s))
            .map(|(s, rpc, n)| {
                let measured = rates
                    .iter()
                    .find(|r| r.service == *s && r.rpc == *rpc)
                    // Unmeasured counts as unavailable: no ceiling is claimed for it.
                    .map_or(0.0, |r| r.per_s);
                n / measured
            })
            .sum()
    };
    let per_service: Vec<Ceiling> = ["bigtable", "gcs", "pubsub"]
        .into_iter()
        .map(|service| Ceiling {
            service,
            changes_per_s: 1.0 / seconds_per_change(Some(service)),
        })
        .collect();
    let ceiling = per_service
        .iter()
        .map(|c| c.changes_per_s)
        .fold(f64::INFINITY, f64::min);
    let shared_cpu_ceiling = 1.0 / seconds_per_change(None);
    CeilingReport {
        rates,
        per_service,
        ceiling,
        shared_cpu_ceiling,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(service: &'static str, rpc: &'static str, per_s: f64) -> RpcRate {
        RpcRate {
            service,
            rpc,
            concurrency: 1,
            calls: 1,
            per_s,
        }
    }

    #[test]
    fn the_ceiling_is_the_slowest_service_and_the_shared_bound_adds_every_share() {
        let r = report(vec![
            rate("bigtable", "MutateRow", 1000.0),
            rate("bigtable", "CheckAndMutateRow", 1000.0),
            // 2.002 per change at 1001/s: 2 ms.
            rate("bigtable", "ReadRows", 1001.0),
            rate("gcs", "object upload (2 KiB)", 1.0),
            rate("gcs", "object delete", 500.0),
            rate("pubsub", "publish (100 per batch)", 1e9),
            rate("pubsub", "pull+ack", 2000.0),
        ]);
        let by = |s: &str| {
            r.per_service
                .iter()
                .find(|c| c.service == s)
                .map(|c| c.changes_per_s)
                .unwrap()
        };
        // Bigtable: 1 + 2 + 2 ms per change; GCS 2 ms; Pub/Sub 0.5 ms (+ 1 ns).
        assert!((by("bigtable") - 200.0).abs() < 0.01, "{r:?}");
        assert!((by("gcs") - 500.0).abs() < 0.01, "{r:?}");
        assert!((by("pubsub") - 2000.0).abs() < 0.01, "{r:?}");
        assert!((r.ceiling - 200.0).abs() < 0.01);
        // 5 + 2 + 0.5 ms: the upload is not part of a change's cost.
        assert!((r.shared_cpu_ceiling - 1000.0 / 7.5).abs() < 0.01, "{r:?}");
    }

    #[test]
    fn a_service_without_a_measurement_allows_nothing() {
        let r = report(vec![rate("gcs", "object delete", 500.0)]);
        assert_eq!(r.ceiling, 0.0);
        assert_eq!(r.shared_cpu_ceiling, 0.0);
    }
}
