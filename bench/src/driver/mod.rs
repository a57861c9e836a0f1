//! `tiersweep bench`: recovery throughput (sequential baseline vs the pipeline at growing
//! concurrency) on in-memory stores with cloud-like latency, on in-memory stores without,
//! and on the emulators; RPCs per change; lost claims with and without the shard split;
//! write-path latency with and without the changelog. Prints a table, writes JSON and an
//! SVG plot. The measuring is the rest of this crate; the driver picks settings and backends
//! and reports. The binary's `bench` command is [`BenchArgs`] and [`run`].

mod plot;
mod report;
mod rss;
mod worker_cpu;

use report::{Report, ScanCostReport, ScanCostRun, Setting, commit, machine, table};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::ceiling;
use crate::cpu::CpuProbe;
use crate::lag::{self, SteadyLoad};
use crate::meter::{Latency, Meter};
use crate::{self as bench, PipelineRun, WriteLatency};
use anyhow::{Context, Result, bail};
use tiersweep::queue::{JobQueue, MemoryQueue, PubsubQueue};
use tiersweep::stores::Stores;
use tiersweep::testing::MemoryStores;
use tiersweep::writer::{TieredStorage, WriterConfig};
use tiersweep_testkit::emulators;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Backlog size for the pipeline runs (at high concurrency; low concurrency runs use
    /// 100 changes per job in flight, at least 200, so every run takes seconds).
    #[arg(long, default_value_t = 10_000)]
    changes: usize,
    /// Backlog for the sequential baseline (it is slow by design; its rate is what counts).
    #[arg(long, default_value_t = 300)]
    baseline_changes: usize,
    /// Jobs in flight per run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2,4,8,16,32,64,128,256"
    )]
    in_flight: Vec<usize>,
    /// Scanners in the pipeline runs.
    #[arg(long, default_value_t = 2)]
    scanners: u16,
    /// Writes per writer in the write-latency runs (cloud model and emulators; 0 skips them).
    #[arg(long, default_value_t = 200)]
    writes: usize,
    /// Settings to run: cloud (in-memory stores, cloud-like latency), memory (in-memory,
    /// no latency), emulators; empty runs none (only the runs below that are not
    /// skipped).
    #[arg(long, value_delimiter = ',', default_value = "cloud,memory,emulators")]
    settings: Vec<String>,
    /// Seconds of steady load (writers plus crashing changes) for the recovery-lag run;
    /// 0 skips it.
    #[arg(long, default_value_t = 20)]
    lag_seconds: u64,
    /// Backlog of each run comparing the seed's loop, the embedded passes and the pipeline
    /// at equal concurrency (1, 32, 256 in flight; latency per change measured from claim
    /// to removal), in the cloud setting; 0 skips them
    #[arg(long, default_value_t = 2000)]
    shapes_changes: usize,
    /// Changes crashing per second during the lag run.
    #[arg(long, default_value_t = 50.0)]
    lag_crashes_per_s: f64,
    /// Writers writing (and heartbeating) back to back during the lag run.
    #[arg(long, default_value_t = 4)]
    lag_writers: usize,
    /// Backlog for the memory runs (a scanner and a cleaner process on the emulators, peak
    /// RSS measured); 0 skips them.
    #[arg(long, default_value_t = 100_000)]
    rss_changes: usize,
    /// Backlog of each worker-CPU run: a scanner and a cleaner process as deployed
    /// (infra/k8s/base's configuration and environment, JSON logs, OTLP traces) recovering
    /// changes crashed after and before their upload on the emulators; 0 skips them.
    #[arg(long, default_value_t = 20_000)]
    worker_cpu_changes: usize,
    /// Variants of the worker-CPU runs, comma-separated: deployed (both crash shapes),
    /// untraced (no trace export), bare (no trace export, logs at WARN), multi-thread (a
    /// runtime thread per core), sampled (one recovery in ten traced); all but deployed
    /// over changes crashed after their upload, to price each part by difference.
    #[arg(long, value_delimiter = ',', default_value = "deployed,untraced,bare", value_parser = worker_cpu::Variant::parse)]
    worker_cpu_variants: Vec<worker_cpu::Variant>,
    /// The upload settle of the worker-CPU runs, when not the deployment's (10 min): the
    /// runs wait it out between the passes.
    #[arg(long, value_parser = tiersweep::duration::parse)]
    worker_cpu_settle: Option<Duration>,
    /// Fixed offered loads of the worker-CPU runs, crashes a second (comma-separated):
    /// changes crash at each rate while a scanner and a cleaner run as deployed, and the
    /// CPU per first pass is measured over the steady window; empty skips them.
    #[arg(long, value_delimiter = ',', default_value = "250,500,1000")]
    worker_cpu_rates: Vec<f64>,
    /// How long changes crash at each offered load.
    #[arg(long, default_value_t = 60)]
    worker_cpu_load_seconds: u64,
    /// Size (MiB) of the object a writer process puts from a stream on the emulators, its
    /// peak RSS measured against its idle RSS; 0 skips it.
    #[arg(long, default_value_t = 1024)]
    stream_put_mib: u64,
    /// Bucket sizes (blobs, comma-separated) of the audit memory runs: a `tiersweep audit`
    /// process over each, peak RSS sampled; empty skips them.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    audit_blobs: Vec<usize>,
    /// Internal: be the writer process of the streamed-put memory run (config from the
    /// environment, report as JSON on stdout).
    #[arg(long, hide = true)]
    stream_put_child: bool,
    /// Calls per RPC kind when measuring the emulators' raw rates (the ceiling). The
    /// default matches the largest backlog: fake-gcs-server's calls slow down as its bucket
    /// fills, so the ceiling must be measured at the size the pipeline sees.
    #[arg(long, default_value_t = 10_000)]
    ceiling_calls: usize,
    /// Calls in flight when measuring the raw rates concurrently (they are also measured
    /// one at a time).
    #[arg(long, default_value_t = 32)]
    ceiling_concurrency: usize,
    /// Backlog of the drain run (crashed changes recovered against the capacity-limited
    /// cloud model, writers and 20 fresh crashes/s going on; in-memory stores, virtual
    /// time); 0 skips it.
    #[arg(long, default_value_t = 1_000_000)]
    drain_changes: usize,
    /// The Bigtable pace recovery's workers start at in the capacity-model runs (the drain
    /// and the side by side), rows a second each; production's default when not given. A
    /// rate no run reaches, such as 1e9, measures them unpaced.
    #[arg(long)]
    bigtable_rows_per_s: Option<f64>,
    /// Removed-but-not-compacted rows in the scan-cost run (stale rows found: a tenth as
    /// many), key-bounded against full-range rounds; 0 skips it.
    #[arg(long, default_value_t = 20_000)]
    scan_cost_history: usize,
    /// Backlog of the elasticity run (a scanner pool under shard leases grows 1 -> 4, loses
    /// one to a kill, shrinks to 1, on in-memory stores and virtual time); 0 skips it.
    #[arg(long, default_value_t = 20_000)]
    elastic_changes: usize,
    /// Orphans of the side-by-side run: the pipeline, the seed's loop and a listing GC
    /// (`tiersweep audit --delete`) each remove the same prepared orphans against the
    /// capacity-limited cloud model (in-memory stores, virtual time); 0 skips it.
    #[arg(long, default_value_t = 100_000)]
    peers_orphans: usize,
    /// Live large objects per orphan in the side-by-side run's bucket: what a listing GC
    /// lists and joins too.
    #[arg(long, default_value_t = 10)]
    peers_live_per_orphan: usize,
    /// Give up on a pipeline run after this many seconds (it is then marked TIMED OUT).
    #[arg(long, default_value_t = 120)]
    run_deadline_s: u64,
    /// Directory for bench.json and throughput.svg.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

pub async fn run(args: &BenchArgs) -> Result<()> {
    if args.stream_put_child {
        return rss::stream_put_child(args.stream_put_mib).await;
    }
    if args.in_flight.contains(&0) || args.changes == 0 || args.baseline_changes == 0 {
        bail!("--changes, --baseline-changes and every --in-flight value must be at least 1");
    }
    for s in args.settings.iter().filter(|s| !s.is_empty()) {
        if !["cloud", "memory", "emulators"].contains(&s.as_str()) {
            bail!("--settings: unknown setting {s:?}; use cloud, memory or emulators");
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut report = Report {
        machine: machine(),
        commit: commit(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        latency: Latency::cloud(),
        settings: Vec::new(),
        write_latency: Vec::new(),
        upload_split: None,
        ceiling: Vec::new(),
        memory: Vec::new(),
        worker_cpu: Vec::new(),
        offered_load: Vec::new(),
        elastic: None,
        scan_cost: None,
        drain: None,
        peers: None,
        cost: Vec::new(),
    };
    for name in args.settings.iter().filter(|s| !s.is_empty()) {
        let (stores, queues, latency) = match name.as_str() {
            "cloud" => (
                MemoryStores::new().stores(),
                Queues::Memory,
                Latency::cloud(),
            ),
            "memory" => (MemoryStores::new().stores(), Queues::Memory, Latency::NONE),
            _ => {
                let e = emulators::start_or_reuse()
                    .await
                    .map_err(anyhow::Error::msg)?;
                let stores = e.stores(tiersweep::clock::system()).await;
                (stores, Queues::Emulator(e), Latency::NONE)
            }
        };
        let probe = cpu_probe(&queues);
        if let Queues::Emulator(_) = queues {
            for c in [1, args.ceiling_concurrency] {
                eprintln!("[{name}] raw RPC rates, {c} in flight");
                let run = uuid::Uuid::now_v7().simple().to_string();
                let queue = queues.fresh().await?;
                let r = ceiling::measure(&stores, queue, &run, args.ceiling_calls, c, &probe)
                    .await
                    .context("measuring the emulators' raw rates")?;
                report.ceiling.push(r);
            }
        }
        report
            .settings
            .push(setting(name, &stores, &queues, latency, args, &probe).await?);
        if name == "cloud" && args.writes > 0 {
            report
                .write_latency
                .extend(cloud_write_latency(args.writes).await?);
        }
        if let Queues::Emulator(e) = &queues {
            if args.writes > 0 {
                report
                    .write_latency
                    .extend(write_latency(&stores, args.writes).await?);
                let run = uuid::Uuid::now_v7().simple().to_string();
                let n = args.writes.div_ceil(4);
                report.upload_split = Some(
                    crate::upload_split::measure(stores.lt().as_ref(), &run, 64 * 1024, n)
                        .await
                        .context("measuring the upload's split around its last byte")?,
                );
            }
            write_json(&args.out, &report)?;
            if args.rss_changes > 0 {
                // The scanner runs alone there, so it gives up on claims nobody takes and
                // claims them again, about 190 rows a second on this machine (549 s for
                // 100,000): a deadline that grows with the backlog, not a fixed one.
                let per_backlog = (args.rss_changes / 100) as u64;
                let deadline = Duration::from_secs(args.run_deadline_s.max(600).max(per_backlog));
                report.memory = rss::measure(e, args.rss_changes, deadline).await?;
            }
            if args.worker_cpu_changes > 0 {
                let deadline = Duration::from_secs(args.run_deadline_s.max(600));
                for run in worker_cpu::plan(&args.worker_cpu_variants) {
                    report.worker_cpu.push(
                        worker_cpu::measure(
                            e,
                            args.worker_cpu_changes,
                            run,
                            args.worker_cpu_settle,
                            deadline,
                        )
                        .await?,
                    );
                    // After every run: one takes minutes (the settle), and a stopped
                    // bench keeps what it measured.
                    write_json(&args.out, &report)?;
                }
            }
            for &rate in args.worker_cpu_rates.iter().filter(|r| **r > 0.0) {
                let deadline = Duration::from_secs(args.run_deadline_s.max(600));
                report.offered_load.push(
                    worker_cpu::offered_load(e, rate, args.worker_cpu_load_seconds, deadline)
                        .await
                        .with_context(|| format!("the worker CPU run at {rate} crashes/s"))?,
                );
                write_json(&args.out, &report)?;
            }
            if args.stream_put_mib > 0 {
                let deadline = Duration::from_secs(args.run_deadline_s.max(600));
                report
                    .memory
                    .push(rss::stream_put(e, args.stream_put_mib, deadline).await?);
            }
            for &n in args.audit_blobs.iter().filter(|n| **n > 0) {
                let deadline = Duration::from_secs(args.run_deadline_s.max(600));
                report.memory.push(rss::audit(e, n, deadline).await?);
                write_json(&args.out, &report)?;
            }
        }
        // After every setting, so a long run that is stopped keeps what it measured.
        write_json(&args.out, &report)?;
    }
    if args.drain_changes > 0 {
        eprintln!(
            "[drain] {} changes against the capacity model",
            args.drain_changes
        );
        let mut plan = crate::drain::DrainPlan::new(args.drain_changes);
        if let Some(per_s) = args.bigtable_rows_per_s {
            plan.bigtable_rows_per_s = per_s;
        }
        report.drain = Some(paused("the drain run", move || crate::drain::run(plan)).await?);
        write_json(&args.out, &report)?;
    }
    if args.peers_orphans > 0 {
        let plan = crate::peers::PeersPlan {
            live: args.peers_orphans * args.peers_live_per_orphan,
            bigtable_rows_per_s: args
                .bigtable_rows_per_s
                .unwrap_or(tiersweep::recovery::RecoveryConfig::default().bigtable_rows_per_s),
            ..crate::peers::PeersPlan::new(args.peers_orphans)
        };
        eprintln!(
            "[peers] {} orphans among {} live objects, against the capacity model",
            plan.orphans, plan.live
        );
        let peers = paused("the side-by-side run", move || crate::peers::run(plan))
            .await?
            .context("the side-by-side run")?;
        report.peers = Some(peers);
        write_json(&args.out, &report)?;
    }
    if args.scan_cost_history > 0 {
        eprintln!("[scan cost] {} removed rows", args.scan_cost_history);
        report.scan_cost = Some(scan_cost(args.scan_cost_history).await?);
    }
    if args.elastic_changes > 0 {
        eprintln!(
            "[elastic] a leased scanner pool over {} changes",
            args.elastic_changes
        );
        report.elastic = Some(elastic(args.elastic_changes).await?);
    }
    report.cost = cost(&report).await?;
    let json = write_json(&args.out, &report)?;
    let svg = args.out.join("throughput.svg");
    std::fs::write(&svg, plot::plot(&report))
        .with_context(|| format!("writing {}", svg.display()))?;
    print!("{}", table(&report));
    eprintln!("wrote {} and {}", json.display(), svg.display());
    Ok(())
}

/// Billed units per million: of recovered changes in each setting, from its pipeline run
/// with the most jobs in flight (worker CPU from the real processes of the memory runs,
/// where they ran), and of large writes.
async fn cost(report: &Report) -> Result<Vec<crate::cost::CostPerMillion>> {
    use crate::cost;
    let cpu_us: Option<f64> = {
        let per: Vec<f64> = report
            .memory
            .iter()
            .filter(|m| m.worker == "scan" || m.worker == "clean")
            .filter_map(|m| m.cpu_us_per_item())
            .collect();
        (per.len() == 2).then(|| per.iter().sum())
    };
    let mut out = Vec::new();
    for s in &report.settings {
        let Some(run) = s.pipeline.iter().max_by_key(|r| r.in_flight) else {
            continue;
        };
        let mut c = cost::recovery(run);
        c.per = format!("recovered change ({}, M = {})", s.name, run.in_flight);
        if s.name == "emulators" {
            // µs per change is CPU-seconds per million changes.
            c.cpu_s = cpu_us;
        }
        out.push(c);
    }
    out.push(
        cost::large_writes(1_000)
            .await
            .context("metering large writes")?,
    );
    Ok(out)
}

/// The elasticity run on a runtime of its own with paused time: the lease arithmetic, not
/// this machine's load, decides its timings.
async fn elastic(changes: usize) -> Result<crate::elastic::ElasticReport> {
    use crate::elastic::{ElasticPlan, run};
    let plan = if changes <= ElasticPlan::smoke().backlog {
        ElasticPlan {
            backlog: changes,
            ..ElasticPlan::smoke()
        }
    } else {
        ElasticPlan::full(changes)
    };
    paused("the elasticity run", move || run(plan)).await
}

/// Runs `f`'s future on a runtime of its own with paused time, on a blocking thread.
async fn paused<F, T>(what: &'static str, f: impl FnOnce() -> F + Send + 'static) -> Result<T>
where
    F: std::future::Future<Output = T>,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .with_context(|| format!("building the runtime of {what}"))?;
        Ok(rt.block_on(f()))
    })
    .await
    .with_context(|| what.to_owned())?
}

/// Rows examined per stale row found on a changelog of `history` removed rows (plus one
/// removed row per crash), key-bounded rounds against full-range ones.
async fn scan_cost(history: usize) -> Result<ScanCostReport> {
    use tiersweep_testkit::scans::scan_cost;
    let crashes = (history / 10).max(5);
    let protocol = crate::protocol();
    let measure = move |sweep_every: Duration| async move {
        scan_cost(
            MemoryStores::new(),
            protocol,
            sweep_every,
            history,
            crashes,
            1,
        )
        .await
    };
    let bounded = paused("the scan-cost run", move || {
        measure(Duration::from_secs(86_400))
    })
    .await?;
    let full = paused("the scan-cost run", move || measure(Duration::ZERO)).await?;
    Ok(ScanCostReport {
        removed_rows: history + crashes,
        stale_rows: crashes,
        key_bounded: ScanCostRun::from(bounded),
        full_range: ScanCostRun::from(full),
    })
}

fn write_json(out: &std::path::Path, report: &Report) -> Result<PathBuf> {
    let json = out.join("bench.json");
    std::fs::write(&json, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    Ok(json)
}

/// What the CPU figures watch: this process, and on the emulators the ones
/// `infra/local/start.sh` started (emulators started some other way cannot be watched, and
/// the bench says so instead of reporting the client's share as the whole).
fn cpu_probe(queues: &Queues) -> CpuProbe {
    let others = match queues {
        Queues::Memory => Vec::new(),
        Queues::Emulator(_) => tiersweep_testkit::emulators::started_processes(),
    };
    let probe = CpuProbe::new(others);
    if matches!(queues, Queues::Emulator(_)) {
        eprintln!(
            "[emulators] CPU time watched for: {}",
            probe.watched().join(", ")
        );
    }
    probe
}

/// Where each run's fresh queue comes from.
enum Queues {
    Memory,
    Emulator(emulators::Emulators),
}

impl Queues {
    async fn fresh(&self) -> Result<Arc<dyn JobQueue>> {
        Ok(match self {
            // Room for full scan pages, so publishing never waits on the cleaner.
            Queues::Memory => Arc::new(MemoryQueue::new(4096, 5)),
            // The shortest lease: the emulator may hand a job to a stream that is gone (see
            // docs/development.md), and the job then waits one lease before it comes back.
            Queues::Emulator(e) => Arc::new(
                PubsubQueue::connect(&tiersweep::queue::pubsub::PubsubConfig {
                    lease_extension: Duration::from_secs(10),
                    ..e.pubsub_config().await
                })
                .await
                .context("connecting to the Pub/Sub emulator")?,
            ),
        })
    }
}

async fn setting(
    name: &str,
    stores: &Stores,
    queues: &Queues,
    latency: Latency,
    args: &BenchArgs,
    probe: &CpuProbe,
) -> Result<Setting> {
    let meter = Meter::new(latency);
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let prepare = |n: usize, tag: String| {
        let stores = stores.clone();
        let run = format!("{run_id}-{tag}");
        async move {
            eprintln!("[{name}] preparing {n} crashed changes ({tag})");
            bench::prepare_backlog(&stores, &run, n, 64, bench::Crash::AfterUpload)
                .await
                .context("preparing the backlog")
        }
    };
    let deadline = Duration::from_secs(args.run_deadline_s.max(1));

    prepare(args.baseline_changes, "baseline".into()).await?;
    eprintln!("[{name}] sequential baseline");
    let baseline = bench::baseline(stores, &meter, args.baseline_changes).await?;
    eprintln!("[{name}]   {:.0} changes/s", baseline.changes_per_s);

    let mut pipeline = Vec::new();
    for &m in &args.in_flight {
        // On the emulators the same backlog for every M: fake-gcs-server's and
        // cbtemulator's costs grow with what they hold, so a backlog growing with M would
        // bend the curve by itself. Elsewhere 100 per job in flight, so short runs stay
        // short.
        let n = if matches!(queues, Queues::Emulator(_)) {
            args.changes
        } else {
            (m * 100)
                .clamp(200, args.changes.max(200))
                .min(args.changes)
        };
        prepare(n, format!("m{m}")).await?;
        eprintln!(
            "[{name}] pipeline, {} scanners, {m} in flight",
            args.scanners
        );
        let shape = PipelineRun {
            changes: n,
            deadline,
            scanners: args.scanners,
            split: true,
            in_flight: m,
        };
        let queue = queues.fresh().await?;
        let before = probe.sample();
        let mut r = bench::pipeline(stores, queue, &meter, shape).await?;
        r.cpu = Some(probe.sample().since(&before));
        eprintln!(
            "[{name}]   {:.0} changes/s, {:.2} RPCs/change",
            r.changes_per_s, r.rpcs_per_change
        );
        pipeline.push(r);
    }

    let mut lost_claims = Vec::new();
    let n = args.changes.min(2000);
    for split in [true, false] {
        prepare(n, format!("lost-{split}")).await?;
        eprintln!("[{name}] 4 scanners, shard split {split}");
        let shape = PipelineRun {
            changes: n,
            deadline,
            scanners: 4,
            split,
            in_flight: 64,
        };
        let r = bench::pipeline(stores, queues.fresh().await?, &meter, shape).await?;
        lost_claims.push(r);
    }
    let lag = if args.lag_seconds > 0 {
        eprintln!(
            "[{name}] steady load for {} s: {} writers, {} crashes/s",
            args.lag_seconds, args.lag_writers, args.lag_crashes_per_s
        );
        let load = SteadyLoad {
            crashes_per_s: args.lag_crashes_per_s,
            writers: args.lag_writers,
            duration: Duration::from_secs(args.lag_seconds),
            scanners: args.scanners,
            in_flight: 64,
            idle_poll: Duration::from_secs(1),
        };
        meter.reset();
        let (metered, queue) = (meter.wrap(stores), meter.wrap_queue(queues.fresh().await?));
        let r = lag::steady_load(&metered, queue, &format!("{run_id}-lag"), load)
            .await
            .context("the steady-load run")?;
        eprintln!(
            "[{name}]   lag p50 {} ms, p99 {} ms ({} of {} crashed changes converged)",
            r.p50_ms, r.p99_ms, r.converged, r.crashed
        );
        Some(r)
    } else {
        None
    };
    let mut shapes = Vec::new();
    if name == "cloud" && args.shapes_changes > 0 {
        use crate::shapes;
        for m in [1, 32, 256] {
            // Alone in flight a change costs ~100 ms of latency: a smaller backlog.
            let n = if m == 1 {
                args.shapes_changes.min(200)
            } else {
                args.shapes_changes
            };
            for shape in ["seed", "embedded", "pipeline"] {
                prepare(n, format!("{shape}-{m}")).await?;
                eprintln!("[{name}] {shape}, {m} in flight");
                let r = match shape {
                    "seed" => shapes::seed(stores, &meter, n, m).await?,
                    "embedded" => shapes::embedded(stores, &meter, n, m).await?,
                    _ => {
                        let queue = queues.fresh().await?;
                        shapes::pipelined(stores, queue, &meter, n, m).await?
                    }
                };
                eprintln!(
                    "[{name}]   {:.0} changes/s, latency p50 {:.1} ms p99 {:.1} ms, {:.2} RPCs/change",
                    r.changes_per_s, r.latency_p50_ms, r.latency_p99_ms, r.rpcs_per_change
                );
                shapes.push(r);
            }
        }
    }
    let best = pipeline.iter().map(|r| r.changes_per_s).fold(0.0, f64::max);
    Ok(Setting {
        shapes,
        lag,
        name: name.to_owned(),
        best_ratio: best / baseline.changes_per_s.max(1e-9),
        baseline,
        pipeline,
        lost_claims,
    })
}

/// The write path's latency on `stores` (the emulators): with the Bigtable changelog, with
/// it and background completion, and with the no-op changelog.
async fn write_latency(stores: &Stores, n: usize) -> Result<Vec<WriteLatency>> {
    write_latency_of("emulators", writer_setups("", stores), n).await
}

/// The write path's latency in the cloud model (in-memory stores, each call at its cloud
/// latency), at the assumed split of an upload's latency around its last byte and at both
/// extremes: nothing after the last byte (all of it can overlap the record) and all of
/// it (none can).
async fn cloud_write_latency(n: usize) -> Result<Vec<WriteLatency>> {
    let mut setups = Vec::new();
    for tail_ms in [crate::meter::CLOUD_WRITE_TAIL_MS, 0, 50] {
        let latency = Latency::cloud_with_write_tail(Duration::from_millis(tail_ms));
        let stores = Meter::new(latency).wrap(&MemoryStores::new().stores());
        setups.extend(writer_setups(
            &format!("{tail_ms} ms of 50 after the last byte"),
            &stores,
        ));
    }
    write_latency_of("cloud", setups, n).await
}

/// The three writers compared: the changelog (`stores`'), with background completion, and
/// the no-op changelog on the same stores.
fn writer_setups(model: &str, stores: &Stores) -> Vec<WriterSetup> {
    let inline = WriterConfig {
        inline_threshold: 1024,
        protocol: bench::protocol(),
        ..WriterConfig::default()
    };
    let background = WriterConfig {
        background_completions: 64,
        ..inline
    };
    let noop = stores
        .clone()
        .with_changelog(Arc::new(tiersweep::changelog::NoopChangelog));
    let setup = |changelog: &str, stores: &Stores, config| WriterSetup {
        model: model.to_owned(),
        changelog: changelog.to_owned(),
        stores: stores.clone(),
        config,
    };
    vec![
        setup("bigtable", stores, inline),
        setup("bigtable, background completion", stores, background),
        setup("noop", &noop, inline),
    ]
}

/// One writer whose write latency is measured.
struct WriterSetup {
    model: String,
    changelog: String,
    stores: Stores,
    config: WriterConfig,
}

async fn write_latency_of(
    setting: &str,
    setups: Vec<WriterSetup>,
    n: usize,
) -> Result<Vec<WriteLatency>> {
    let run = uuid::Uuid::now_v7().simple().to_string();
    // Interleaved rounds, so drift on a shared machine hits every setup alike.
    let mut samples: Vec<Vec<WriteLatency>> = vec![Vec::new(); setups.len()];
    for round in 0..4 {
        for (i, w) in setups.iter().enumerate() {
            let writer = TieredStorage::new(w.stores.clone(), w.config).context("writer config")?;
            let tag = format!("{run}-{i}-{round}");
            let r = bench::write_latency(&writer, (setting, &w.model), &w.changelog, &tag, n / 4)
                .await
                .context("timing writes")?;
            // Background completions finish before the next setup's round starts.
            writer.flush().await;
            samples[i].extend(r);
        }
    }
    eprintln!("[{setting}] write latency measured over {n} puts and deletes per setup");
    Ok(samples.into_iter().flat_map(merge).collect())
}

/// Rounds of the same (changelog, op) merged by their medians' median (robust on a noisy box).
fn merge(rounds: Vec<WriteLatency>) -> Vec<WriteLatency> {
    type Key = (String, String, String, String);
    let mut by: std::collections::BTreeMap<Key, Vec<WriteLatency>> = Default::default();
    for r in rounds {
        let key = (
            r.setting.clone(),
            r.model.clone(),
            r.changelog.clone(),
            r.op.clone(),
        );
        by.entry(key).or_default().push(r);
    }
    by.into_iter()
        .map(|((setting, model, changelog, op), rs)| {
            let mut p50: Vec<u64> = rs.iter().map(|r| r.p50_us).collect();
            let mut p99: Vec<u64> = rs.iter().map(|r| r.p99_us).collect();
            p50.sort_unstable();
            p99.sort_unstable();
            WriteLatency {
                setting,
                model,
                changelog,
                op,
                p50_us: p50[p50.len() / 2],
                p99_us: p99[p99.len() / 2],
                samples: rs.iter().map(|r| r.samples).sum(),
            }
        })
        .collect()
}
