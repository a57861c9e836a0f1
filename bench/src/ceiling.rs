//! The ceiling: how fast the backends themselves answer the RPCs recovery makes, from a
//! tight client (our store clients, nothing else running), and the recovery rate that
//! implies. A pipeline figure means little without it: on the emulators everything is
//! CPU-bound, so "how close to what the backends allow" is the question, not "how fast".

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

use tiersweep::error::StoreResult;
use tiersweep::model::{ChangeId, ChangeRecord, ObjectPath, OwnerToken, Revision};
use tiersweep::queue::{FlowControl, JobQueue, Message};
use tiersweep::stores::Stores;

use super::cpu::{CpuProbe, CpuUse};

/// The raw rate of one RPC.
#[derive(Debug, Clone, Serialize)]
pub struct RpcRate {
    pub service: &'static str,
    pub rpc: &'static str,
    /// Calls in flight at once.
    pub concurrency: usize,
    pub calls: usize,
    pub per_s: f64,
    /// CPU every watched process used while this RPC was measured; `None` when the
    /// services' processes could not be watched (emulators started by someone else).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuUse>,
}

impl RpcRate {
    /// CPU seconds one call costs, client and server together.
    pub fn cpu_s_per_call(&self) -> Option<f64> {
        Some(self.cpu.as_ref()?.total_s() / self.calls.max(1) as f64)
    }
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

const SERVICES: [&str; 3] = ["bigtable", "gcs", "pubsub"];

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
    /// The changes/s this machine allows when every service runs on it at once, as the
    /// emulators do: its cores divided by the CPU time (every service's and the client's)
    /// that one change's RPCs cost when measured alone. `None` without CPU figures.
    pub cpu_ceiling: Option<f64>,
    /// The cores that bound is computed for.
    pub cores: usize,
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
        cpu: None,
    })
}

/// Runs one measurement with the probe's CPU sampled around it. The CPU figure is kept
/// only when the probe sees every service's process, not just the client's: a figure
/// without the server's share would make the bound look far higher than it is.
async fn with_cpu(
    probe: &CpuProbe,
    measuring: impl std::future::Future<Output = StoreResult<RpcRate>>,
) -> StoreResult<RpcRate> {
    let before = probe.sample();
    let mut r = measuring.await?;
    let used = probe.sample().since(&before);
    let complete = SERVICES.iter().all(|s| used.by_process.contains_key(*s));
    r.cpu = complete.then_some(used);
    Ok(r)
}

impl CeilingReport {
    /// CPU microseconds, by process, that one change's RPCs cost from the tight client:
    /// the least a pipeline can spend, to set its own figure against.
    pub fn cpu_us_per_change(&self) -> Option<std::collections::BTreeMap<String, f64>> {
        let mut by = std::collections::BTreeMap::new();
        for (s, rpc, n) in PER_CHANGE {
            let r = self.rates.iter().find(|r| r.service == s && r.rpc == rpc)?;
            for (process, secs) in &r.cpu.as_ref()?.by_process {
                *by.entry(process.clone()).or_insert(0.0) += n * secs * 1e6 / r.calls.max(1) as f64;
            }
        }
        Some(by)
    }
}

/// Measures every RPC `calls` times at `concurrency`, on fresh rows, blobs and messages
/// named under `run`. `queue` must be a fresh topic and subscription: its backlog is read.
/// `probe` watches the processes whose CPU the measurements cost.
pub async fn measure(
    stores: &Stores,
    queue: Arc<dyn JobQueue>,
    run: &str,
    calls: usize,
    concurrency: usize,
    probe: &CpuProbe,
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
        with_cpu(
            probe,
            rate("bigtable", "MutateRow", calls, c, |i| async move {
                let (id, rec) = &changes[i];
                stores.changelog().record(id, rec).await.map(drop)
            }),
        )
        .await?,
    );
    rates.push(
        with_cpu(
            probe,
            rate("bigtable", "CheckAndMutateRow", calls, c, |i| async move {
                let (id, rec) = &changes[i];
                stores.changelog().heartbeat(id, &rec.owner).await.map(drop)
            }),
        )
        .await?,
    );
    rates.push(
        with_cpu(
            probe,
            rate("bigtable", "ReadRows", calls, c, |i| async move {
                stores.changelog().get(&changes[i].0).await.map(drop)
            }),
        )
        .await?,
    );
    rates.push(
        with_cpu(
            probe,
            rate("gcs", "object upload (2 KiB)", calls, c, |i| {
                let blob = blob.clone();
                async move {
                    let rev = changes[i].1.new.as_ref().expect("minted above");
                    stores.lt().put(rev, blob).await
                }
            }),
        )
        .await?,
    );
    rates.push(
        with_cpu(
            probe,
            rate("gcs", "object delete", calls, c, |i| async move {
                let rev = changes[i].1.new.as_ref().expect("minted above");
                stores.lt().delete(rev).await
            }),
        )
        .await?,
    );
    let job = |i: usize| Message {
        data: Bytes::from(format!("ceiling {run} {i}")),
        attributes: Default::default(),
    };
    let batches = calls.div_ceil(100);
    let publishing = rate("pubsub", "publish (100 per batch)", batches, c, |b| {
        let queue = queue.clone();
        async move {
            let batch = (b * 100..((b + 1) * 100).min(calls)).map(job).collect();
            queue.publish(batch).await
        }
    });
    let mut batched = with_cpu(probe, publishing).await?;
    // Counted per message, as the per-change cost is.
    batched.per_s *= calls as f64 / batches as f64;
    batched.calls = calls;
    rates.push(batched);
    rates.push(with_cpu(probe, pull_and_ack(queue.as_ref(), calls, c)).await?);
    // Not timed: leaves no rows for a later run's scanners to recover.
    rate("bigtable", "cleanup", calls, c, |i| async move {
        let (id, rec) = &changes[i];
        stores.changelog().remove(id, &rec.owner).await.map(drop)
    })
    .await?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    Ok(report(rates, cores))
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
        cpu: None,
    })
}

/// Turns raw rates into per-service ceilings on changes/s, and CPU costs into the bound
/// for a machine of `cores` that runs every service.
pub fn report(rates: Vec<RpcRate>, cores: usize) -> CeilingReport {
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
    let per_service: Vec<Ceiling> = SERVICES
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
    // Every RPC of a change must have a CPU figure, or no bound is claimed.
    let cpu_per_change: Option<f64> = PER_CHANGE
        .iter()
        .map(|(s, rpc, n)| {
            let r = rates.iter().find(|r| r.service == *s && r.rpc == *rpc)?;
            Some(n * r.cpu_s_per_call()?)
        })
        .sum();
    let cpu_ceiling = cpu_per_change.map(|s| cores as f64 / s.max(1e-12));
    CeilingReport {
        rates,
        per_service,
        ceiling,
        cpu_ceiling,
        cores,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rate measured over one call that cost `cpu_ms` of CPU, split between the client
    /// and the service.
    fn rate(service: &'static str, rpc: &'static str, per_s: f64, cpu_ms: f64) -> RpcRate {
        let half = cpu_ms / 2000.0;
        RpcRate {
            service,
            rpc,
            concurrency: 1,
            calls: 1,
            per_s,
            cpu: Some(CpuUse {
                wall_s: 1.0,
                by_process: [("tiersweep".to_owned(), half), (service.to_owned(), half)].into(),
            }),
        }
    }

    fn rates() -> Vec<RpcRate> {
        vec![
            rate("bigtable", "MutateRow", 1000.0, 0.1),
            rate("bigtable", "CheckAndMutateRow", 1000.0, 0.1),
            // 2.002 per change at 1001/s: 2 ms.
            rate("bigtable", "ReadRows", 1001.0, 0.1),
            rate("gcs", "object upload (2 KiB)", 1.0, 1000.0),
            rate("gcs", "object delete", 500.0, 0.3),
            rate("pubsub", "publish (100 per batch)", 1e9, 0.0),
            rate("pubsub", "pull+ack", 2000.0, 0.2),
        ]
    }

    #[test]
    fn the_ceiling_is_the_slowest_service_and_the_cpu_bound_adds_every_share() {
        let r = report(rates(), 2);
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
        // CPU per change: 0.1 + 2 × 0.1 + 2.002 × 0.1 + 0.3 + 0.2 ms = 1.0002 ms; the
        // upload is not part of a change. Two cores: 1,999.6 changes/s.
        let cpu = r.cpu_ceiling.expect("every RPC has a CPU figure");
        assert!((cpu - 2.0 / 1.0002e-3).abs() < 0.5, "{r:?}");
        // Half of each call's CPU is the client's; the service's half is its own.
        let by = r.cpu_us_per_change().expect("every RPC has a CPU figure");
        assert!((by["tiersweep"] - 500.1).abs() < 0.01, "{by:?}");
        assert!((by["bigtable"] - 250.1).abs() < 0.01, "{by:?}");
        assert!((by["gcs"] - 150.0).abs() < 0.01, "{by:?}");
        assert!((by["pubsub"] - 100.0).abs() < 0.01, "{by:?}");
    }

    #[test]
    fn a_service_without_a_measurement_allows_nothing() {
        let r = report(vec![rate("gcs", "object delete", 500.0, 1.0)], 2);
        assert_eq!(r.ceiling, 0.0);
        assert_eq!(r.cpu_ceiling, None);
    }

    #[test]
    fn one_rpc_without_a_cpu_figure_claims_no_cpu_bound() {
        let mut rs = rates();
        rs[4].cpu = None;
        let r = report(rs, 2);
        assert!(r.ceiling > 0.0);
        assert_eq!(r.cpu_ceiling, None);
    }
}
