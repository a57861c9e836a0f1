//! Worker CPU per recovered change as a deployment runs the workers: one `tiersweep scan`
//! and one `tiersweep clean` process working together on the emulators, configured by the
//! deployment's own `infra/k8s/base/tiersweep.toml` (production's protocol settings, the
//! 10-minute upload settle, 32 jobs in flight, the paces) and its pods' environment (JSON
//! logs at INFO, read from a pipe as a container runtime reads them; traces exported over
//! OTLP/gRPC to a local collector with the default sampler; metrics scraped from
//! `/metrics`, not exported), over a backlog of each crash shape: after the upload (the
//! first pass deletes a blob) and before it (the first pass finds nothing to delete).
//! Both shapes are recovered before their HV write, so each change gets the settle's
//! second pass, which looks before it deletes.
//!
//! CPU is user + system time from `/proc/<pid>/stat`, from the moment the first prepared
//! row turns stale (start-up excluded) until the last row is removed. A long settle leaves
//! both processes idle between the passes; that idle rate is measured on its own, in a
//! window where no row is due, so the report gives both the CPU a change costs in this run
//! and the work per change with the idle share taken out.
//!
//! Not yet production's: the connections are plaintext and unauthenticated (the
//! emulators'), where production has TLS and an OAuth token on every call.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tiersweep::config::Config;
use tiersweep::telemetry::metrics::registry;
use tiersweep_testkit::emulators::{Emulators, env_for};
use tiersweep_testkit::otlp::Collector;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::Crash;

/// The deployment's configuration file, as its pods mount it.
const DEPLOYED_CONFIG: &str = include_str!("../../../infra/k8s/base/tiersweep.toml");

/// How often the bench reads the cleaner's `/metrics` for progress: a scrape's cost is
/// the cleaner's, so not much more often than a Prometheus would.
const SCRAPE_EVERY: Duration = Duration::from_secs(2);

/// What a run changes from the deployment, to price one part of it by difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// As deployed.
    Deployed,
    /// No trace export (`OTEL_TRACES_EXPORTER=none`): what exporting every recovery's
    /// spans costs.
    Untraced,
    /// No trace export and logs at WARN: the workers' own work.
    Bare,
    /// A runtime with a thread per core (`TIERSWEEP_THREADS=0`) instead of the workers'
    /// one thread: what the threads' wake-ups of each other cost.
    MultiThread,
    /// One recovery in ten traced (`OTEL_TRACES_SAMPLER=parentbased_traceidratio`, 0.1):
    /// what sampling takes off the traces' cost.
    Sampled,
}

impl Variant {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "deployed" => Ok(Self::Deployed),
            "untraced" => Ok(Self::Untraced),
            "bare" => Ok(Self::Bare),
            "multi-thread" => Ok(Self::MultiThread),
            "sampled" => Ok(Self::Sampled),
            other => Err(format!(
                "unknown variant {other:?}; use deployed, untraced, bare, multi-thread or sampled"
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Deployed => "deployed",
            Self::Untraced => "untraced",
            Self::Bare => "bare",
            Self::MultiThread => "multi-thread",
            Self::Sampled => "sampled",
        }
    }

    /// Its environment on top of the deployment's.
    fn env(self) -> Vec<(String, String)> {
        let untraced = ("OTEL_TRACES_EXPORTER".to_owned(), "none".to_owned());
        let set = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        match self {
            Self::Deployed => vec![],
            Self::Untraced => vec![untraced],
            Self::Bare => vec![untraced, set("RUST_LOG", "warn")],
            Self::MultiThread => vec![set("TIERSWEEP_THREADS", "0")],
            Self::Sampled => vec![
                set("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                set("OTEL_TRACES_SAMPLER_ARG", "0.1"),
            ],
        }
    }

    /// Whether its workers export spans.
    fn traced(self) -> bool {
        !matches!(self, Self::Untraced | Self::Bare)
    }
}

/// One backlog of one crash shape, recovered by the two processes together.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerCpuRun {
    /// "deployed", "untraced", "bare", "multi-thread" or "sampled" ([`Variant`]).
    pub variant: String,
    /// "after upload" or "before upload".
    pub shape: String,
    pub changes: u64,
    /// The upload settle the workers ran with (the deployment's unless overridden).
    pub settle_s: f64,
    /// From the first row turning stale to the last row removed.
    pub seconds: f64,
    /// From the first row turning stale to every change's first pass done.
    pub first_pass_s: f64,
    /// CPU seconds over `seconds`, per process.
    pub scan_cpu_s: f64,
    pub clean_cpu_s: f64,
    /// Cores both processes kept busy together while no row was due (between the passes),
    /// and over how long that was measured; absent when the settle was too short for it.
    pub idle_cores: Option<f64>,
    pub idle_window_s: Option<f64>,
    /// Log lines both processes wrote, and spans they exported.
    pub log_lines: u64,
    pub spans: u64,
    /// Spans exported per recovered change, by `service/span name`, most first.
    pub spans_per_change: Vec<(String, f64)>,
    /// Each process's counters at the end (`/metrics`, `tiersweep_*_total` series), per
    /// recovered change: what the CPU was spent on.
    pub counters_per_change: Vec<(String, f64)>,
}

impl WorkerCpuRun {
    /// CPU µs per recovered change, both processes, idle time included.
    pub fn us_per_change(&self) -> f64 {
        (self.scan_cpu_s + self.clean_cpu_s) * 1e6 / self.changes.max(1) as f64
    }

    /// CPU µs per recovered change, both processes, the idle rate's share over the run
    /// taken out: the work the changes themselves cost.
    pub fn work_us_per_change(&self) -> Option<f64> {
        let idle = self.idle_cores? * self.seconds;
        Some(((self.scan_cpu_s + self.clean_cpu_s - idle).max(0.0)) * 1e6 / self.changes as f64)
    }
}

/// The runs of `variants`: the deployment over both crash shapes, each other variant over
/// changes crashed after their upload.
pub fn plan(variants: &[Variant]) -> Vec<(Variant, Crash)> {
    let mut runs = Vec::new();
    for &variant in variants {
        runs.push((variant, Crash::AfterUpload));
        if variant == Variant::Deployed {
            runs.push((variant, Crash::BeforeUpload));
        }
    }
    runs
}

/// One run of `n` changes, with the deployment's settle unless `settle` says otherwise.
pub async fn measure(
    emulators: &Emulators,
    n: usize,
    (variant, crash): (Variant, Crash),
    settle: Option<Duration>,
    deadline: Duration,
) -> Result<WorkerCpuRun> {
    one_run(emulators, n, variant, crash, settle, deadline)
        .await
        .with_context(|| {
            format!(
                "the worker CPU run ({}, crashed {})",
                variant.name(),
                shape(crash)
            )
        })
}

fn shape(crash: Crash) -> &'static str {
    match crash {
        Crash::AfterUpload => "after upload",
        Crash::BeforeUpload => "before upload",
    }
}

async fn one_run(
    emulators: &Emulators,
    n: usize,
    variant: Variant,
    crash: Crash,
    settle: Option<Duration>,
    deadline: Duration,
) -> Result<WorkerCpuRun> {
    let (dir, config_file, deployed) = deployed_file("worker-cpu")?;
    let protocol = deployed.protocol;
    let settle = settle.unwrap_or(deployed.recovery.upload_settle);
    let (config, stores) = super::rss::fresh_stores(emulators, protocol).await?;

    let (collector, otlp) = Collector::start(false)
        .await
        .context("starting the OTLP collector")?;
    let mut env = deployment_env(&config, &config_file, settle, otlp);
    env.extend(variant.env());

    eprintln!(
        "[worker cpu] {}: preparing {n} changes crashed {}",
        variant.name(),
        shape(crash)
    );
    let prepared_from = Instant::now();
    crate::prepare_backlog(&stores, "cpu", n, 64, crash)
        .await
        .context("preparing the backlog")?;
    let http = reqwest::Client::new();
    let (scanner, mut cleaner) = Worker::spawn_pair(&env, &http).await?;
    // The first prepared row turns stale a threshold after it was recorded.
    tokio::time::sleep_until((prepared_from + protocol.staleness_threshold).into()).await;
    let t0 = Instant::now();
    let c0 = (scanner.cpu_s()?, cleaner.cpu_s()?);
    eprintln!(
        "[worker cpu] scan (pid {}) and clean (pid {}) over {n} changes, settle {settle:?}",
        scanner.pid, cleaner.pid
    );

    let converged = registry().jobs_converged.series();
    let passes = if settle.is_zero() { 1 } else { 2 };
    let until = t0 + deadline + settle;
    cleaner.wait_for(&http, &converged, n as u64, until).await?;
    let t1 = Instant::now();
    eprintln!(
        "[worker cpu] first pass done after {:.1} s",
        (t1 - t0).as_secs_f64()
    );
    // No row is due before the first deferral's settle ends, and none was deferred before
    // t0: the window up to then (less a margin) is idle time.
    let idle_end = t0 + settle.saturating_sub(Duration::from_secs(2));
    let idle = if idle_end > t1 + Duration::from_secs(5) {
        let before = scanner.cpu_s()? + cleaner.cpu_s()?;
        tokio::time::sleep_until(idle_end.into()).await;
        let used = scanner.cpu_s()? + cleaner.cpu_s()? - before;
        let window = (idle_end - t1).as_secs_f64();
        Some((used / window, window))
    } else {
        None
    };
    if passes == 2 {
        cleaner
            .wait_for(&http, &converged, 2 * n as u64, until)
            .await?;
    }
    let t2 = Instant::now();
    let c2 = (scanner.cpu_s()?, cleaner.cpu_s()?);
    let left = tiersweep::recovery::inspect::backlog(
        stores.changelog().as_ref(),
        stores.clock(),
        Duration::ZERO,
        1000,
    )
    .await
    .context("reading the changelog after the run")?
    .rows;
    let mut counters_per_change = Vec::new();
    for (name, w) in [("scan", &scanner), ("clean", &cleaner)] {
        for (series, v) in w.counters(&http).await {
            counters_per_change.push((format!("{name}/{series}"), v / n as f64));
        }
    }
    let log_lines = scanner.stop().await + cleaner.stop().await;
    if left > 0 {
        bail!("{left} of {n} rows were left in the changelog after the run");
    }
    let counts = collector.span_counts();
    let spans = counts.values().sum();
    let mut spans_per_change: Vec<(String, f64)> = counts
        .into_iter()
        .map(|((service, name), c)| (format!("{service}/{name}"), c as f64 / n as f64))
        .collect();
    spans_per_change.sort_by(|a, b| b.1.total_cmp(&a.1));
    if (spans > 0) != variant.traced() {
        bail!(
            "the workers exported {spans} spans to the collector at {otlp} as {}",
            variant.name()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(WorkerCpuRun {
        variant: variant.name().to_owned(),
        shape: shape(crash).to_owned(),
        changes: n as u64,
        settle_s: settle.as_secs_f64(),
        seconds: (t2 - t0).as_secs_f64(),
        first_pass_s: (t1 - t0).as_secs_f64(),
        scan_cpu_s: c2.0 - c0.0,
        clean_cpu_s: c2.1 - c0.1,
        idle_cores: idle.map(|(cores, _)| cores),
        idle_window_s: idle.map(|(_, window)| window),
        log_lines,
        spans,
        spans_per_change,
        counters_per_change,
    })
}

/// Changes crashing at a fixed rate while the two processes run as deployed: the CPU a
/// recovery costs at that load, the idle share of that load included.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OfferedLoadRun {
    /// Crashes a second asked for, and recorded (the bench's writers can fall short of a
    /// rate the machine cannot carry along with the workers and the emulators).
    pub offered_per_s: f64,
    pub crashed_per_s: f64,
    /// The measured window: from a warm-up after the first crash turned stale until the
    /// last crash turned stale.
    pub window_s: f64,
    /// First passes the cleaner completed in the window, and how many a second.
    pub passes: u64,
    pub passes_per_s: f64,
    /// CPU seconds over the window, per process.
    pub scan_cpu_s: f64,
    pub clean_cpu_s: f64,
}

impl OfferedLoadRun {
    /// CPU µs per first pass, both processes, everything they did in the window included.
    pub fn us_per_pass(&self) -> f64 {
        (self.scan_cpu_s + self.clean_cpu_s) * 1e6 / self.passes.max(1) as f64
    }

    /// Cores both processes kept busy.
    pub fn cores(&self) -> f64 {
        (self.scan_cpu_s + self.clean_cpu_s) / self.window_s.max(1e-9)
    }
}

/// Warm-up before the offered-load window: the scanner's first rounds and the cleaner's
/// first pulls, before recovery keeps pace with the crashes.
const WARM_UP: Duration = Duration::from_secs(10);

/// One offered load: `rate` crashes a second (after their upload) for `seconds`, recovered
/// by a scanner and a cleaner as deployed. The window covers first passes only: with the
/// deployment's 10-minute settle the second passes come after it, and the run stops
/// before them (a backlog run measures both).
pub async fn offered_load(
    emulators: &Emulators,
    rate: f64,
    seconds: u64,
    deadline: Duration,
) -> Result<OfferedLoadRun> {
    let (dir, config_file, deployed) = deployed_file("offered")?;
    let threshold = deployed.protocol.staleness_threshold;
    let settle = deployed.recovery.upload_settle;
    let (config, stores) = super::rss::fresh_stores(emulators, deployed.protocol).await?;
    let (_collector, otlp) = Collector::start(false)
        .await
        .context("starting the OTLP collector")?;
    let env = deployment_env(&config, &config_file, settle, otlp);
    let http = reqwest::Client::new();
    let (scanner, mut cleaner) = Worker::spawn_pair(&env, &http).await?;
    let n = (rate * seconds as f64).round() as usize;
    eprintln!(
        "[worker cpu] offered load: {rate}/s for {seconds} s ({n} crashes), threshold {threshold:?}"
    );
    let start = tokio::time::Instant::now();
    let blob = bytes::Bytes::from(vec![b'L'; crate::BLOB_BYTES]);
    let crashing = {
        use futures::StreamExt;
        let stores = stores.clone();
        tokio::spawn(async move {
            let crashed: Vec<_> = futures::stream::iter(0..n)
                .map(|i| {
                    let (stores, blob) = (&stores, blob.clone());
                    async move {
                        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate))
                            .await;
                        crate::crash_one(stores, "offered", i, Crash::AfterUpload, blob).await
                    }
                })
                .buffer_unordered(256)
                .collect()
                .await;
            (
                crashed.into_iter().filter(Result::is_ok).count(),
                start.elapsed(),
            )
        })
    };
    let converged = registry().jobs_converged.series();
    let from = start + threshold + WARM_UP;
    let to = start + threshold + Duration::from_secs(seconds);
    // Both processes' CPU seconds and the cleaner's passes so far.
    let sample = async || -> Result<((f64, f64), u64)> {
        let passes = super::rss::progress(&http, &cleaner.metrics, &converged).await;
        Ok(((scanner.cpu_s()?, cleaner.cpu_s()?), passes.unwrap_or(0)))
    };
    tokio::time::sleep_until(from).await;
    let (c0, p0) = sample().await?;
    tokio::time::sleep_until(to).await;
    let (c1, p1) = sample().await?;
    let (crashed, crash_time) = crashing.await.context("the crashing task")?;
    // Every crash gets its first pass before the run ends: a load the workers could not
    // carry shows here rather than as a figure.
    cleaner
        .wait_for(&http, &converged, crashed as u64, Instant::now() + deadline)
        .await?;
    scanner.stop().await;
    cleaner.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    if crashed < n {
        bail!("{} of {n} crashes could not be recorded", n - crashed);
    }
    let window_s = (to - from).as_secs_f64();
    Ok(OfferedLoadRun {
        offered_per_s: rate,
        crashed_per_s: crashed as f64 / crash_time.as_secs_f64().max(1e-9),
        window_s,
        passes: p1.saturating_sub(p0),
        passes_per_s: p1.saturating_sub(p0) as f64 / window_s,
        scan_cpu_s: c1.0 - c0.0,
        clean_cpu_s: c1.1 - c0.1,
    })
}

/// The deployment's configuration file written where this run's workers read it (a
/// directory of its own), and as they load it: (directory, file, configuration).
fn deployed_file(purpose: &str) -> Result<(std::path::PathBuf, std::path::PathBuf, Config)> {
    let dir = std::env::temp_dir().join(format!("tiersweep-{purpose}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join("tiersweep.toml");
    std::fs::write(&file, DEPLOYED_CONFIG)
        .with_context(|| format!("writing {}", file.display()))?;
    let config = Config::load(Some(&file), std::iter::empty(), &[])
        .context("reading the deployment's configuration")?;
    Ok((dir, file, config))
}

/// The pods' environment (infra/k8s/base): the configuration file, JSON logs, traces over
/// OTLP/gRPC, metrics scraped rather than exported; plus where this run's tables, bucket
/// and topics are (the emulators'). Nothing else of the test configuration: the file
/// decides the rest.
fn deployment_env(
    config: &Config,
    file: &std::path::Path,
    settle: Duration,
    otlp: std::net::SocketAddr,
) -> Vec<(String, String)> {
    let places = [
        "TIERSWEEP_BIGTABLE__",
        "TIERSWEEP_GCS__",
        "TIERSWEEP_PUBSUB__",
    ];
    let mut env: Vec<(String, String)> = env_for(config)
        .into_iter()
        .filter(|(k, _)| places.iter().any(|p| k.starts_with(p)) || k.ends_with("_EMULATOR_HOST"))
        .collect();
    env.extend(Collector::env(otlp));
    env.extend(
        [
            ("TIERSWEEP_CONFIG", file.display().to_string()),
            ("TIERSWEEP_LOG_FORMAT", "json".to_owned()),
            ("OTEL_METRICS_EXPORTER", "none".to_owned()),
            (
                "TIERSWEEP_RECOVERY__UPLOAD_SETTLE",
                tiersweep::duration::format(settle),
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    env
}

/// A worker process, its log lines counted as they come.
struct Worker {
    child: Child,
    pid: u32,
    metrics: String,
    lines: tokio::task::JoinHandle<u64>,
}

impl Worker {
    async fn spawn(command: &str, env: &[(String, String)]) -> Result<Self> {
        let addr = tiersweep::testing::free_local_addr().context("finding a free port")?;
        let exe = std::env::current_exe().context("locating the tiersweep binary")?;
        let mut child = Command::new(exe)
            .arg(command)
            .args(["--health-listen", &addr.to_string()])
            // The deployment's default filter unless the run's environment sets one.
            .env_remove("RUST_LOG")
            .envs(env.iter().cloned())
            .env("OTEL_SERVICE_NAME", format!("tiersweep-{command}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning tiersweep {command}"))?;
        let pid = child.id().context("the worker exited at once")?;
        let stderr = child.stderr.take().context("the worker's stderr")?;
        let lines = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut n = 0;
            while let Ok(Some(_)) = lines.next_line().await {
                n += 1;
            }
            n
        });
        Ok(Self {
            child,
            pid,
            metrics: format!("http://{addr}/metrics"),
            lines,
        })
    }

    /// A scanner and a cleaner with `env`, once both answer.
    async fn spawn_pair(env: &[(String, String)], http: &reqwest::Client) -> Result<(Self, Self)> {
        let scanner = Self::spawn("scan", env).await?;
        let cleaner = Self::spawn("clean", env).await?;
        for w in [&scanner, &cleaner] {
            w.wait_ready(http, Duration::from_secs(60)).await?;
        }
        Ok((scanner, cleaner))
    }

    fn cpu_s(&self) -> Result<f64> {
        crate::cpu::cpu_s(self.pid)
            .with_context(|| format!("reading the CPU time of pid {}", self.pid))
    }

    async fn wait_ready(&self, http: &reqwest::Client, within: Duration) -> Result<()> {
        let until = Instant::now() + within;
        while super::rss::progress(http, &self.metrics, "")
            .await
            .is_none()
        {
            if Instant::now() > until {
                bail!("{} did not answer within {within:?}", self.metrics);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// The worker's nonzero `tiersweep_*_total` counters.
    async fn counters(&self, http: &reqwest::Client) -> Vec<(String, f64)> {
        let Ok(response) = http.get(&self.metrics).send().await else {
            return Vec::new();
        };
        let body = response.text().await.unwrap_or_default();
        body.lines()
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let value: f64 = value.parse().ok()?;
                let counter = series.starts_with("tiersweep_")
                    && series.split('{').next()?.ends_with("_total");
                (counter && value > 0.0).then(|| (series.to_owned(), value))
            })
            .collect()
    }

    /// Waits until the worker's counter `series` reaches `target`.
    async fn wait_for(
        &mut self,
        http: &reqwest::Client,
        series: &str,
        target: u64,
        until: Instant,
    ) -> Result<()> {
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("pid {} exited early with {status}", self.pid);
            }
            let done = super::rss::progress(http, &self.metrics, series)
                .await
                .unwrap_or(0);
            if done >= target {
                return Ok(());
            }
            if Instant::now() > until {
                bail!("{series} reached {done} of {target} by the deadline");
            }
            tokio::time::sleep(SCRAPE_EVERY).await;
        }
    }

    /// Stops the worker as Kubernetes would; returns the log lines it wrote.
    async fn stop(mut self) -> u64 {
        super::rss::stop(&mut self.child, self.pid).await;
        self.lines.await.unwrap_or(0)
    }
}
