//! Peak memory of the real worker processes: `tiersweep scan` over a large changelog, then
//! `tiersweep clean` over the job backlog it published, each a child process of the bench
//! on the emulators. RSS comes from `/proc/<pid>/status` (VmRSS sampled as the work
//! progresses, VmHWM at the end); progress from the worker's own `/metrics`.

use std::process::Stdio;

use futures::StreamExt as _;
use std::time::{Duration, Instant};

use crate::Crash;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use tiersweep::config::Config;
use tiersweep::telemetry::metrics::registry;
use tiersweep_testkit::emulators::{Emulators, env_for};
use tokio::process::{Child, Command};

/// One worker's memory over one run.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RssRun {
    pub worker: String,
    /// Rows scanned or jobs converged.
    pub items: u64,
    pub seconds: f64,
    /// RSS (MiB) when the worker was ready, before any work.
    pub idle_mib: f64,
    /// (items done, RSS MiB), about every tenth of the way.
    pub samples: Vec<(u64, f64)>,
    /// VmHWM: the peak resident set over the worker's life.
    pub peak_mib: f64,
    /// User + system CPU seconds over the worker's life (start-up included), from
    /// `/proc/<pid>/stat`: the worker CPU a recovered change costs, per process.
    #[serde(default)]
    pub cpu_s: Option<f64>,
}

impl RssRun {
    /// CPU microseconds per item (row scanned and published, or job converged).
    pub fn cpu_us_per_item(&self) -> Option<f64> {
        Some(self.cpu_s? * 1e6 / self.items.max(1) as f64)
    }
}

/// A fresh configuration (tables, bucket, topics) and the stores it names, for a writer.
pub(super) async fn fresh_stores(
    emulators: &Emulators,
    protocol: tiersweep::protocol::ProtocolConfig,
) -> Result<(Config, tiersweep::Stores)> {
    let config = emulators.fresh_config(protocol).await;
    let stores = tiersweep::Stores::connect_to(
        &config.bigtable,
        &config.gcs,
        tiersweep::clock::system(),
        tiersweep::lt::LtAccess::Write,
    )
    .await
    .context("connecting to the emulators")?;
    Ok((config, stores))
}

/// Prepares `n` crashed changes (before their upload: fake-gcs-server slows down as it
/// fills, and the cleaner's work and memory per job are the same), then measures a scanner publishing them and a cleaner
/// converging them.
pub async fn measure(emulators: &Emulators, n: usize, deadline: Duration) -> Result<Vec<RssRun>> {
    let (config, stores) = fresh_stores(emulators, crate::protocol()).await?;
    eprintln!("[memory] preparing {n} crashed changes (crashed before their upload)");
    crate::prepare_backlog(&stores, "rss", n, 64, Crash::BeforeUpload)
        .await
        .context("preparing the backlog")?;
    let scan = run_worker(
        &config,
        &["scan"],
        &registry().jobs_published.series(),
        n as u64,
        deadline,
    )
    .await
    .context("the scanner's run")?;
    let clean = run_worker(
        &config,
        &["clean"],
        &registry().jobs_converged.series(),
        n as u64,
        deadline,
    )
    .await
    .context("the cleaner's run")?;
    Ok(vec![scan, clean])
}

async fn run_worker(
    config: &Config,
    args: &[&str],
    series: &str,
    target: u64,
    deadline: Duration,
) -> Result<RssRun> {
    let addr = tiersweep::testing::free_local_addr().context("finding a free port")?;
    let exe = std::env::current_exe().context("locating the tiersweep binary")?;
    let mut child = Command::new(exe)
        .args(args)
        .args(["--health-listen", &addr.to_string()])
        .envs(env_for(config))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("spawning a worker")?;
    let pid = child.id().context("the worker exited at once")?;
    let url = format!("http://{addr}/metrics");
    let http = reqwest::Client::new();
    eprintln!("[memory] {} (pid {pid}) over {target} items", args[0]);

    let started = Instant::now();
    let mut idle = None;
    let mut samples = Vec::new();
    let mut next_sample = 0;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the worker exited early with {status}");
        }
        if started.elapsed() > deadline {
            stop(&mut child, pid).await;
            bail!("the worker did not get through {target} items within {deadline:?}");
        }
        let done = match progress(&http, &url, series).await {
            Some(done) => done,
            None => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let rss = status_mib(pid, "VmRSS:")?;
        idle.get_or_insert(rss);
        if done >= next_sample {
            samples.push((done, rss));
            next_sample = done + (target / 10).max(1);
        }
        if done >= target {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peak = status_mib(pid, "VmHWM:")?;
    let cpu = crate::cpu::cpu_s(pid);
    let seconds = started.elapsed().as_secs_f64();
    stop(&mut child, pid).await;
    Ok(RssRun {
        worker: args[0].to_owned(),
        items: target,
        seconds,
        idle_mib: idle.unwrap_or(0.0),
        samples,
        peak_mib: peak,
        cpu_s: cpu,
    })
}

/// Peak memory of a writer process putting a `mib`-MiB object from a stream (generated
/// chunk by chunk, so the object never exists whole in the writer): the bench re-runs
/// itself as that process, on a fresh bucket of the emulators, and reads its report.
pub async fn stream_put(emulators: &Emulators, mib: u64, deadline: Duration) -> Result<RssRun> {
    let config = emulators.fresh_config(crate::protocol()).await;
    let exe = std::env::current_exe().context("locating the tiersweep binary")?;
    eprintln!("[memory] a writer putting {mib} MiB from a stream");
    let child = Command::new(exe)
        .args([
            "bench",
            "--stream-put-child",
            "--stream-put-mib",
            &mib.to_string(),
        ])
        .envs(env_for(&config))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("spawning the writer process")?;
    let output = tokio::time::timeout(deadline, child.wait_with_output())
        .await
        .with_context(|| format!("the streamed put did not finish within {deadline:?}"))?
        .context("waiting for the writer process")?;
    if !output.status.success() {
        bail!("the writer process failed with {}", output.status);
    }
    serde_json::from_slice(&output.stdout).context("reading the writer process's report")
}

/// The writer process of [`stream_put`]: connects as the config in its environment says,
/// puts the object, deletes it (the emulator's bucket is on a tmpfs), and prints its
/// [`RssRun`] as JSON.
pub async fn stream_put_child(mib: u64) -> Result<()> {
    const CHUNK: usize = 1024 * 1024;
    let config = Config::load(None, std::env::vars(), &[]).context("the writer's config")?;
    let stores = tiersweep::Stores::connect_to(
        &config.bigtable,
        &config.gcs,
        tiersweep::clock::system(),
        tiersweep::lt::LtAccess::Write,
    )
    .await
    .context("connecting to the emulators")?;
    let writer = tiersweep::TieredStorage::new(
        stores,
        tiersweep::WriterConfig {
            protocol: config.protocol,
            ..Default::default()
        },
    )?;
    let mib_now = || status_mib(std::process::id(), "VmRSS:").unwrap_or(0.0);
    let idle = mib_now();
    let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let body = futures::stream::iter(0..mib).map({
        let samples = samples.clone();
        move |i| {
            if i % (mib / 10).max(1) == 0
                && let Ok(mut s) = samples.lock()
            {
                s.push((i, mib_now()));
            }
            // A new buffer per chunk, as a request body arrives.
            Ok::<_, std::io::Error>(bytes::Bytes::from(vec![(i % 251) as u8; CHUNK]))
        }
    });
    let path = tiersweep::ObjectPath::new(format!("bench/stream-put-{mib}"))?;
    let started = Instant::now();
    writer
        .put_stream(&path, body)
        .await
        .context("the streamed put")?;
    let seconds = started.elapsed().as_secs_f64();
    let peak = status_mib(std::process::id(), "VmHWM:")?;
    writer.delete(&path).await.context("deleting the object")?;
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let run = RssRun {
        worker: format!("writer put_stream ({mib} MiB; items = MiB sent)"),
        items: mib,
        seconds,
        idle_mib: idle,
        samples,
        peak_mib: peak,
        cpu_s: crate::cpu::cpu_s(std::process::id()),
    };
    println!("{}", serde_json::to_string(&run)?);
    Ok(())
}

/// The worker's counter, once its health server answers.
pub(super) async fn progress(http: &reqwest::Client, url: &str, series: &str) -> Option<u64> {
    let body = http.get(url).send().await.ok()?.text().await.ok()?;
    Some(
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0),
    )
}

fn status_mib(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(kib / 1024.0)
}

/// SIGTERM (the worker drains and exits), then a kill if it does not within 30 s.
pub(super) async fn stop(child: &mut Child, pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await;
    if tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Peak memory of a `tiersweep audit` process (dry run, every blob judged) over a fresh
/// bucket of `n` blobs, none referenced: each is listed, joined with HV and counted as an
/// orphan. Memory must not grow with `n` (the audit holds one listing page, and with
/// `--delete` the orphans of the ranges in progress). RSS is sampled every 50 ms while the
/// process runs (its VmHWM is gone once it exits).
pub async fn audit(emulators: &Emulators, n: usize, deadline: Duration) -> Result<RssRun> {
    let (config, stores) = fresh_stores(emulators, crate::protocol()).await?;
    eprintln!("[memory] planting {n} blobs for the audit");
    let planted = futures::stream::iter(0..n)
        .map(|i| {
            let lt = stores.lt().clone();
            async move {
                let path = tiersweep::ObjectPath::new(format!("a{:02x}/{i}", i % 251))?;
                lt.put(
                    &tiersweep::model::Revision::mint(&path),
                    bytes::Bytes::from_static(b"x"),
                )
                .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    planted.into_iter().collect::<Result<Vec<_>>>()?;
    let exe = std::env::current_exe().context("locating the tiersweep binary")?;
    eprintln!("[memory] tiersweep audit over {n} blobs");
    let mut child = Command::new(exe)
        .args([
            "audit",
            "--min-age",
            "0s",
            "--json",
            "--max-lists-per-s",
            "1000",
        ])
        .envs(env_for(&config))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("spawning the audit")?;
    let pid = child.id().context("the audit exited at once")?;
    let started = Instant::now();
    let (mut idle, mut peak, mut cpu) = (None, 0.0_f64, None);
    let mut samples = Vec::new();
    while child.try_wait()?.is_none() {
        if started.elapsed() > deadline {
            stop(&mut child, pid).await;
            bail!("the audit of {n} blobs did not finish within {deadline:?}");
        }
        if let Ok(rss) = status_mib(pid, "VmRSS:")
            && rss > 0.0
        {
            idle.get_or_insert(rss);
            peak = peak.max(rss);
            if samples.len() < 1000 {
                samples.push((samples.len() as u64, rss));
            }
            cpu = crate::cpu::cpu_s(pid).or(cpu);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let output = child
        .wait_with_output()
        .await
        .context("the audit's output")?;
    if !output.status.success() {
        bail!("the audit failed with {}", output.status);
    }
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("reading the audit's report")?;
    let listed = report["totals"]["listed"].as_u64().unwrap_or(0);
    if listed != n as u64 {
        bail!("the audit listed {listed} blobs of {n}");
    }
    // Every tenth of the samples, as the other memory runs report them.
    let step = (samples.len() / 10).max(1);
    let samples = samples.into_iter().step_by(step).collect();
    Ok(RssRun {
        worker: format!("audit ({n} blobs; items = blobs listed)"),
        items: listed,
        seconds,
        idle_mib: idle.unwrap_or(0.0),
        samples,
        peak_mib: peak,
        cpu_s: cpu,
    })
}
